//! Access control of the embedded broker on the real binary: with anonymous access off a
//! client without (or with wrong) credentials is refused; an application's client
//! (user name = application id, password = an API key of it) gets its own application's
//! events only, cannot subscribe to another application's topics nor publish its commands,
//! and can send commands to its own devices.

mod common;
#[path = "../app-server/tests/mqtt_support/mod.rs"]
mod mqtt_support;

use std::net::SocketAddr;
use std::time::Duration;

use rumqttc::{AsyncClient, ConnectReturnCode, ConnectionError, Event, Incoming, MqttOptions, QoS};
use serde_json::json;
use tokio::sync::mpsc;

use common::device::Device;
use common::gateway::{rxpk, FakeGateway, PULL_ACK, PUSH_ACK};
use common::provision;
use common::{Api, Backend, TestServer};

const GATEWAY: &str = "00000000000000c7";
const DEV_A: &str = "70b3d57ed000c0a1";
const DEV_B: &str = "70b3d57ed000c0b1";
const NWK_S_KEY: &str = "2b7e151628aed2a6abf7158809cf4f3c";
const APP_S_KEY: &str = "000102030405060708090a0b0c0d0e0f";

/// A client that reports what happens to it and stops at its first error (no reconnect).
struct Client {
    client: AsyncClient,
    events: mpsc::UnboundedReceiver<Result<Event, ConnectionError>>,
}

impl Client {
    fn connect(broker: SocketAddr, login: Option<(&str, &str)>) -> Client {
        let mut opts = MqttOptions::new(format!("t-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]), "127.0.0.1", broker.port());
        opts.set_keep_alive(Duration::from_secs(5));
        if let Some((user, password)) = login {
            opts.set_credentials(user, password);
        }
        let (client, mut el) = AsyncClient::new(opts, 10);
        let (tx, events) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                let e = el.poll().await;
                let stop = e.is_err();
                if tx.send(e).is_err() || stop {
                    return;
                }
            }
        });
        Client { client, events }
    }

    /// The next incoming packet (or the error that ended the connection), within 5 s.
    async fn next(&mut self) -> Result<Incoming, ConnectionError> {
        loop {
            match tokio::time::timeout(Duration::from_secs(5), self.events.recv()).await.expect("no MQTT event within 5 s") {
                Some(Ok(Event::Incoming(i))) => return Ok(i),
                Some(Ok(Event::Outgoing(_))) => {}
                Some(Err(e)) => return Err(e),
                None => panic!("client task ended"),
            }
        }
    }

    async fn connected(broker: SocketAddr, login: Option<(&str, &str)>) -> Client {
        let mut c = Client::connect(broker, login);
        match c.next().await {
            Ok(Incoming::ConnAck(a)) if a.code == ConnectReturnCode::Success => c,
            other => panic!("not connected: {other:?}"),
        }
    }

    async fn subscribed(broker: SocketAddr, login: Option<(&str, &str)>, filter: &str) -> Client {
        let mut c = Client::connected(broker, login).await;
        c.client.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
        match c.next().await {
            Ok(Incoming::SubAck(_)) => c,
            other => panic!("not subscribed to {filter}: {other:?}"),
        }
    }

    /// Topics of the messages received within `within`, until the connection ends.
    async fn topics_within(&mut self, within: Duration) -> Vec<String> {
        let mut topics = Vec::new();
        let deadline = tokio::time::Instant::now() + within;
        while let Ok(Some(e)) = tokio::time::timeout_at(deadline, self.events.recv()).await {
            match e {
                Ok(Event::Incoming(Incoming::Publish(p))) => topics.push(p.topic),
                Ok(_) => {}
                Err(_) => break,
            }
        }
        topics
    }

    /// Waits for the connection to be closed by the broker.
    async fn closed(&mut self) -> bool {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while let Ok(Some(e)) = tokio::time::timeout_at(deadline, self.events.recv()).await {
            if e.is_err() {
                return true;
            }
        }
        false
    }
}

fn refused(r: Result<Incoming, ConnectionError>) -> bool {
    matches!(r, Err(ConnectionError::ConnectionRefused(ConnectReturnCode::NotAuthorized)))
}

async fn key(api: &Api, application_id: &str, read_only: bool) -> String {
    let (s, k) = api.post("/api/api-keys", json!({"name": "mqtt", "applicationId": application_id, "readOnly": read_only})).await;
    assert_eq!(s, 201, "{k}");
    k["token"].as_str().unwrap().to_string()
}

async fn queue_len(api: &Api, dev: &str) -> u64 {
    let (s, q) = api.get(&format!("/api/devices/{dev}/queue")).await;
    assert_eq!(s, 200, "{q}");
    q["totalCount"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn application_clients_see_and_command_only_their_application() {
    let server = TestServer::start(
        Backend::Sqlite,
        &[("LORAFLOW_MQTT__EMBEDDED_ALLOW_ANONYMOUS", "false"), ("LORAFLOW_NETWORK__DEDUP_WINDOW_MS", "50")],
    )
    .await;
    let broker = server.mqtt.expect("embedded broker");
    let api = server.client();
    let a = provision::application_and_profile(&api, "NONE", "").await;
    let (s, b) = api.post("/api/applications", json!({"name": "b"})).await;
    assert_eq!(s, 201);
    let b_id = b["id"].as_str().unwrap().to_string();
    let b = provision::Provisioned { application_id: b_id.clone(), device_profile_id: a.device_profile_id.clone() };
    provision::gateway(&api, GATEWAY).await;
    provision::abp_device(&api, &a, DEV_A, "2601c0a1", NWK_S_KEY, APP_S_KEY).await;
    provision::abp_device(&api, &b, DEV_B, "2601c0b1", NWK_S_KEY, APP_S_KEY).await;
    let (key_a, reader_a, key_b) =
        (key(&api, &a.application_id, false).await, key(&api, &a.application_id, true).await, key(&api, &b_id, false).await);
    let login_a = Some((a.application_id.as_str(), key_a.as_str()));

    // No credentials, wrong ones, or a key of another application under this user name.
    assert!(refused(Client::connect(broker, None).next().await), "anonymous");
    assert!(refused(Client::connect(broker, Some((&a.application_id, "lf_wrong"))).next().await), "wrong password");
    assert!(refused(Client::connect(broker, Some((&a.application_id, &key_b))).next().await), "b's key as a");

    // Subscribing to another application's topics, or to everything, ends the connection.
    for filter in [format!("application/{b_id}/#"), "#".to_string(), "application/+/device/+/event/up".to_string()] {
        let mut c = Client::connected(broker, login_a).await;
        c.client.subscribe(&filter, QoS::AtLeastOnce).await.unwrap();
        assert!(c.closed().await, "{filter} was allowed");
    }

    // Its own events only: uplinks of both devices, a's subscriber sees a's.
    let mut sub_a = Client::subscribed(broker, login_a, &format!("application/{}/#", a.application_id)).await;
    let mut admin = Client::subscribed(broker, Some(("admin", common::TOKEN)), "application/#").await;
    let mut gw = FakeGateway::new(GATEWAY, server.gateway).await;
    let t = gw.pull_data().await;
    gw.expect_ack(PULL_ACK, t).await;
    for (i, dev) in [DEV_A, DEV_B].into_iter().enumerate() {
        let mut d = Device::abp(dev, if i == 0 { "2601c0a1" } else { "2601c0b1" }, NWK_S_KEY, APP_S_KEY);
        let t = gw.push_rxpk(vec![rxpk(&d.uplink(false, 1, &[i as u8]), 1_000_000 + i as u32 * 10_000_000, -60, 7.0)]).await;
        gw.expect_ack(PUSH_ACK, t).await;
    }
    let admin_topics = admin.topics_within(Duration::from_secs(3)).await;
    assert!(admin_topics.iter().any(|t| t.contains(DEV_B) && t.ends_with("/event/up")), "{admin_topics:?}");
    let a_topics = sub_a.topics_within(Duration::from_millis(500)).await;
    assert!(a_topics.iter().any(|t| t.contains(DEV_A) && t.ends_with("/event/up")), "{a_topics:?}");
    assert!(a_topics.iter().all(|t| t.starts_with(&format!("application/{}/", a.application_id))), "{a_topics:?}");

    // Commands: its own devices yes, b's no (and the connection ends), read-only never.
    let down = |app: &str, dev: &str| format!("application/{app}/device/{dev}/command/down");
    let body = serde_json::to_vec(&json!({"devEui": DEV_A, "fPort": 3, "data": "AQID"})).unwrap();
    let c = Client::connected(broker, login_a).await;
    c.client.publish(down(&a.application_id, DEV_A), QoS::AtLeastOnce, false, body.clone()).await.unwrap();
    assert!(common::eventually(Duration::from_secs(5), || async { (queue_len(&api, DEV_A).await == 1).then_some(()) }).await.is_some());
    let mut c = Client::connected(broker, login_a).await;
    let body_b = serde_json::to_vec(&json!({"devEui": DEV_B, "fPort": 3, "data": "AQID"})).unwrap();
    c.client.publish(down(&b_id, DEV_B), QoS::AtLeastOnce, false, body_b).await.unwrap();
    assert!(c.closed().await, "a published b's command");
    let mut r = Client::connected(broker, Some((a.application_id.as_str(), reader_a.as_str()))).await;
    r.client.publish(down(&a.application_id, DEV_A), QoS::AtLeastOnce, false, body).await.unwrap();
    assert!(r.closed().await, "a read-only key published");
    // Forged events are refused too.
    let mut f = Client::connected(broker, login_a).await;
    f.client
        .publish(format!("application/{}/device/{DEV_A}/event/up", a.application_id), QoS::AtLeastOnce, false, b"{}".to_vec())
        .await
        .unwrap();
    assert!(f.closed().await, "a forged an event");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(queue_len(&api, DEV_B).await, 0);
    assert_eq!(queue_len(&api, DEV_A).await, 1);

    let m = server.client().metrics().await;
    for (reason, at_least) in [("anonymous", 1.0), ("credentials", 2.0), ("subscribe", 3.0), ("publish", 3.0)] {
        let n = common::metric(&m, "loraflow_mqtt_embedded_denied_total", &[("reason", reason)]);
        assert!(n >= at_least, "{reason}: {n}");
    }
}

/// The same isolation on Mosquitto with the documented ACL (deploy/mosquitto/acl) and a
/// password file holding loraflow's own user and one entry per application (user name =
/// application id, password = an API key of it). Mosquitto delivers nothing a read rule
/// forbids and drops a forbidden publish silently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_mosquitto_acl_isolates_applications() {
    let acl = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/mosquitto/acl")).unwrap();
    let (app_a, app_b) = (uuid::Uuid::new_v4().to_string(), uuid::Uuid::new_v4().to_string());
    let mosquitto = mqtt_support::Mosquitto::start_with(|dir| {
        std::fs::write(dir.join("acl"), &acl).unwrap();
        let passwd = dir.join("passwd");
        for (i, (user, password)) in
            [("loraflow", "loraflow-secret"), (app_a.as_str(), "key-a"), (app_b.as_str(), "key-b")].into_iter().enumerate()
        {
            let mut cmd = std::process::Command::new("mosquitto_passwd");
            if i == 0 {
                cmd.arg("-c");
            }
            assert!(cmd.arg("-b").arg(&passwd).arg(user).arg(password).status().unwrap().success());
        }
        // Mosquitto drops to its own user, which must read them.
        for f in ["acl", "passwd"] {
            std::fs::set_permissions(dir.join(f), std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
        }
        format!("allow_anonymous false\npassword_file {}\nacl_file {}", passwd.display(), dir.join("acl").display())
    });
    let broker = mosquitto.addr();
    assert!(refused(Client::connect(broker, None).next().await), "anonymous");
    assert!(refused(Client::connect(broker, Some((&app_a, "key-b"))).next().await), "wrong password");

    // loraflow's user publishes events of both applications; a sees only its own.
    let mut sub_a = Client::subscribed(broker, Some((&app_a, "key-a")), &format!("application/{app_a}/#")).await;
    let mut c = Client::connected(broker, Some((&app_a, "key-a"))).await;
    c.client.subscribe(format!("application/{app_b}/#"), QoS::AtLeastOnce).await.unwrap();
    // Mosquitto 2.0 may grant the subscription; its read rule filters every message.
    assert!(matches!(c.next().await, Ok(Incoming::SubAck(_))));
    let mut all = Client::subscribed(broker, Some(("loraflow", "loraflow-secret")), "application/+/device/+/command/down").await;
    let lf = Client::connected(broker, Some(("loraflow", "loraflow-secret"))).await;
    for app in [&app_a, &app_b] {
        lf.client
            .publish(format!("application/{app}/device/0102030405060708/event/up"), QoS::AtLeastOnce, false, b"{}".to_vec())
            .await
            .unwrap();
    }
    // a's commands for its devices reach loraflow; for b's, and forged events, do not.
    let a_pub = Client::connected(broker, Some((&app_a, "key-a"))).await;
    for topic in [
        format!("application/{app_b}/device/0102030405060708/command/down"),
        format!("application/{app_a}/device/0102030405060708/event/up"),
        format!("application/{app_a}/device/0102030405060708/command/down"),
    ] {
        a_pub.client.publish(topic, QoS::AtLeastOnce, false, b"x".to_vec()).await.unwrap();
    }
    let seen_by_a = sub_a.topics_within(Duration::from_secs(1)).await;
    // loraflow's event (once: a's forged one was dropped) and a's own command.
    assert_eq!(
        seen_by_a,
        [
            format!("application/{app_a}/device/0102030405060708/event/up"),
            format!("application/{app_a}/device/0102030405060708/command/down")
        ],
        "a's subscription"
    );
    assert_eq!(c.topics_within(Duration::from_millis(300)).await, Vec::<String>::new(), "b's events reached a");
    let commands = all.topics_within(Duration::from_millis(500)).await;
    assert_eq!(commands, [format!("application/{app_a}/device/0102030405060708/command/down")], "commands loraflow receives");
}
