//! The application side end to end: join + uplinks produce ChirpStack-shaped MQTT events
//! with the decoded object, downlinks come from MQTT commands and REST, history is stored,
//! and a broker outage loses nothing. Embedded broker + SQLite, real Mosquitto + PostgreSQL.

mod common;
#[path = "../app-server/tests/mqtt_support/mod.rs"]
mod mqtt_support;

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine;
use common::device::Device;
use common::gateway::{rxpk, FakeGateway, PULL_ACK, PUSH_ACK};
use common::provision::{self, Provisioned};
use common::{Api, Backend, TestServer};
use mqtt_support::{Mosquitto, Subscriber};
use serde_json::{json, Value};

const APP_KEY: &str = "000102030405060708090a0b0c0d0e0f";
const DEV_EUI: &str = "70b3d57ed0000001";
const GATEWAYS: [&str; 2] = ["00000000000000b1", "00000000000000b2"];

struct World {
    server: TestServer,
    api: Api,
    gws: Vec<FakeGateway>,
    p: Provisioned,
    sub: Subscriber,
    dev: Device,
}

fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

async fn world(backend: Backend, env: &[(&str, &str)], broker: Option<SocketAddr>) -> World {
    let mut env: Vec<(&str, &str)> = env.to_vec();
    env.push(("LORAFLOW_NETWORK__DEDUP_WINDOW_MS", "50"));
    let server = TestServer::start(backend, &env).await;
    let api = server.client();
    let p = provision::application_and_profile(&api, "CAYENNE_LPP", "").await;
    let mut gws = Vec::new();
    for id in GATEWAYS {
        provision::gateway(&api, id).await;
        let mut gw = FakeGateway::new(id, server.gateway).await;
        let t = gw.pull_data().await;
        gw.expect_ack(PULL_ACK, t).await;
        gws.push(gw);
    }
    provision::otaa_device(&api, &p, DEV_EUI, APP_KEY).await;
    let broker = broker.or(server.mqtt).expect("an MQTT broker");
    let sub = Subscriber::connect(broker, "application/#", true).await;
    World { server, api, gws, p, sub, dev: Device::otaa(DEV_EUI, APP_KEY) }
}

async fn broadcast(w: &mut World, phy: &[u8], tmst: u32) {
    for (i, gw) in w.gws.iter_mut().enumerate() {
        let t = gw.push_rxpk(vec![rxpk(phy, tmst, -50 - 10 * i as i32, 8.0 - 4.0 * i as f64)]).await;
        gw.expect_ack(PUSH_ACK, t).await;
    }
}

/// The next event of `kind` for our device (other kinds are skipped).
async fn event(w: &mut World, kind: &str) -> Value {
    let want = format!("application/{}/device/{DEV_EUI}/event/{kind}", w.p.application_id);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (topic, payload) = tokio::time::timeout_at(deadline, w.sub.messages.recv())
            .await
            .unwrap_or_else(|_| panic!("no {kind} event"))
            .expect("subscriber open");
        if topic == want {
            return serde_json::from_slice(&payload).expect("event JSON");
        }
    }
}

async fn join(w: &mut World) {
    let jr = w.dev.join_request();
    broadcast(w, &jr, 1_000_000).await;
    let resp = w.gws[0].next_pull_resp(Duration::from_secs(5)).await.expect("join-accept");
    w.dev.accept(&resp.phy_payload(), [0, 0, 0]);
    w.gws[0].tx_ack(resp.token, "NONE").await;
    let ev = event(w, "join").await;
    assert_eq!(ev["devAddr"], w.dev.dev_addr.to_string());
    assert_eq!(ev["deviceInfo"]["devEui"], DEV_EUI);
    assert_eq!(ev["deviceInfo"]["applicationId"], w.p.application_id);
    assert_eq!(ev["regionConfigId"], "eu868");
}

/// Cayenne LPP: temperature 27.2 °C on channel 3, humidity 48.5 % on channel 5.
const LPP: [u8; 7] = [0x03, 0x67, 0x01, 0x10, 0x05, 0x68, 0x61];

async fn uplinks_events_and_history(w: &mut World) {
    join(w).await;

    let up = w.dev.uplink(false, 2, &LPP);
    broadcast(w, &up, 2_000_000).await;
    let ev = event(w, "up").await;
    assert_eq!(ev["fCnt"], 0);
    assert_eq!(ev["fPort"], 2);
    assert_eq!(ev["confirmed"], false);
    assert_eq!(ev["adr"], false);
    assert_eq!(ev["dr"], 5);
    assert_eq!(ev["data"], b64(&LPP));
    assert_eq!(ev["object"]["temperatureSensor"]["3"], 27.2);
    assert_eq!(ev["object"]["humiditySensor"]["5"], 48.5);
    assert_eq!(ev["devAddr"], w.dev.dev_addr.to_string());
    assert_eq!(ev["deviceInfo"]["deviceName"], format!("dev-{DEV_EUI}"));
    assert_eq!(ev["deviceInfo"]["deviceProfileId"], w.p.device_profile_id);
    assert_eq!(ev["txInfo"]["frequency"], 868_100_000);
    assert_eq!(ev["txInfo"]["modulation"]["lora"]["spreadingFactor"], 7);
    let rx = ev["rxInfo"].as_array().unwrap();
    assert_eq!(rx.len(), 2, "both gateways: {rx:?}");
    assert_eq!(rx[0]["gatewayId"], GATEWAYS[0], "best SNR first");
    assert_eq!(rx[0]["metadata"]["region_common_name"], "EU868");
    let dedup_id = ev["deduplicationId"].as_str().unwrap().to_string();

    // The server asks for the device status (once a day); the device answers in its next
    // uplink (the `status` event is checked in mac_engine.rs).
    let resp = w.gws[0].next_pull_resp(Duration::from_secs(5)).await.expect("DevStatusReq");
    assert_eq!(w.dev.read_downlink(&resp.phy_payload(), 0).f_opts, vec![0x06]);
    w.gws[0].tx_ack(resp.token, "NONE").await;

    // A payload the codec cannot decode is still published and stored, without object.
    let up = w.dev.uplink_with(false, false, Some(2), &[0x03, 0x67], &[0x06, 254, 5]);
    broadcast(w, &up, 3_000_000).await;
    let log = event(w, "log").await;
    assert_eq!(log["code"], "UPLINK_CODEC");
    let ev = event(w, "up").await;
    assert_eq!(ev["fCnt"], 1);
    assert!(ev.get("object").is_none(), "{ev}");

    // History over REST matches what was published, newest first.
    let history = common::eventually(Duration::from_secs(5), || async {
        let (s, h) = w.api.get(&format!("/api/devices/{DEV_EUI}/uplinks")).await;
        assert_eq!(s, 200, "{h}");
        (h["result"].as_array().unwrap().len() == 2).then_some(h)
    })
    .await
    .expect("two stored uplinks");
    let rows = history["result"].as_array().unwrap();
    assert_eq!(rows[0]["fCnt"], 1);
    assert!(rows[0].get("object").is_none());
    assert_eq!(rows[1]["fCnt"], 0);
    assert_eq!(rows[1]["deduplicationId"], dedup_id);
    assert_eq!(rows[1]["data"], b64(&LPP));
    assert_eq!(rows[1]["object"]["temperatureSensor"]["3"], 27.2);
    assert_eq!(rows[1]["rxInfo"].as_array().unwrap().len(), 2);
    let (_, h) = w.api.get(&format!("/api/devices/{DEV_EUI}/uplinks?limit=1")).await;
    assert_eq!(h["result"].as_array().unwrap().len(), 1);
    let (s, e) = w.api.get(&format!("/api/devices/{DEV_EUI}/uplinks?since=yesterday")).await;
    assert_eq!(s, 400);
    assert!(e["error"].as_str().unwrap().starts_with("since"));
    let (_, d) = w.api.get(&format!("/api/devices/{DEV_EUI}")).await;
    assert!(
        d["lastSeenAt"].is_string() || {
            tokio::time::sleep(Duration::from_secs(3)).await;
            w.api.get(&format!("/api/devices/{DEV_EUI}")).await.1["lastSeenAt"].is_string()
        }
    );
}

async fn downlinks_from_mqtt_and_rest(w: &mut World, broker: SocketAddr) {
    // A confirmed downlink command over MQTT, encoded by the Cayenne codec from `object`.
    let publisher = rumqttc_publisher(broker).await;
    let topic = format!("application/{}/device/{DEV_EUI}/command/down", w.p.application_id);
    let cmd = json!({"devEui": DEV_EUI, "confirmed": true, "fPort": 3, "object": {"digitalOutput": {"1": 1}}});
    publisher.0.publish(topic, rumqttc::QoS::AtLeastOnce, false, cmd.to_string()).await.unwrap();
    let queued = common::eventually(Duration::from_secs(5), || async {
        let (_, q) = w.api.get(&format!("/api/devices/{DEV_EUI}/queue")).await;
        (q["totalCount"] == 1).then_some(q)
    })
    .await
    .expect("command queued");
    let item_id = queued["result"][0]["id"].as_str().unwrap().to_string();

    let up = w.dev.uplink(false, 2, &LPP);
    broadcast(w, &up, 10_000_000).await;
    let resp = w.gws[0].next_pull_resp(Duration::from_secs(5)).await.expect("downlink");
    let dl = w.dev.read_downlink(&resp.phy_payload(), 1);
    assert_eq!((dl.f_port, dl.confirmed, dl.payload.as_slice()), (Some(3), true, &[0x01, 0x01, 0x01][..]));
    w.gws[0].tx_ack(resp.token, "NONE").await;
    let txack = event(w, "txack").await;
    assert_eq!(txack["queueItemId"], item_id);
    assert_eq!(txack["fCntDown"], 1);
    assert_eq!(txack["gatewayId"], GATEWAYS[0]);

    // The device acknowledges in its next uplink: an ack event, and the item is gone.
    let up = w.dev.uplink_with(false, true, Some(2), &LPP, &[]);
    broadcast(w, &up, 20_000_000).await;
    let ack = event(w, "ack").await;
    assert_eq!(ack["queueItemId"], item_id);
    assert_eq!(ack["acknowledged"], true);
    assert_eq!(ack["fCntDown"], 1);
    let (_, q) = w.api.get(&format!("/api/devices/{DEV_EUI}/queue")).await;
    assert_eq!(q["totalCount"], 0);

    // A REST queue item with raw data.
    let (s, _) = w.api.post(&format!("/api/devices/{DEV_EUI}/queue"), json!({"fPort": 4, "data": b64(b"rest")})).await;
    assert_eq!(s, 201);
    let up = w.dev.uplink(false, 2, &LPP);
    broadcast(w, &up, 30_000_000).await;
    let resp = w.gws[0].next_pull_resp(Duration::from_secs(5)).await.expect("REST downlink");
    let dl = w.dev.read_downlink(&resp.phy_payload(), 2);
    assert_eq!((dl.f_port, dl.payload.as_slice()), (Some(4), &b"rest"[..]));
    w.gws[0].tx_ack(resp.token, "NONE").await;
    assert_eq!(event(w, "txack").await["fCntDown"], 2);
}

async fn rumqttc_publisher(broker: SocketAddr) -> (rumqttc::AsyncClient, tokio::task::JoinHandle<()>) {
    let opts = rumqttc::MqttOptions::new(format!("pub-{}", uuid::Uuid::new_v4().simple()), broker.ip().to_string(), broker.port());
    let (client, mut el) = rumqttc::AsyncClient::new(opts, 10);
    let task = tokio::spawn(async move { while el.poll().await.is_ok() {} });
    (client, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_broker_and_sqlite_publish_decode_store_and_take_downlinks() {
    let mut w = world(Backend::Sqlite, &[], None).await;
    uplinks_events_and_history(&mut w).await;
    let broker = w.server.mqtt.unwrap();
    downlinks_from_mqtt_and_rest(&mut w, broker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_and_postgres_deliver_every_uplink_across_a_broker_restart() {
    let mut broker = Mosquitto::start_new();
    let url = broker.url();
    let mut w = world(Backend::Postgres, &[("LORAFLOW_MQTT__URL", &url)], Some(broker.addr())).await;
    assert!(w.server.mqtt.is_none(), "no embedded broker with mqtt.url set");
    uplinks_events_and_history(&mut w).await;
    downlinks_from_mqtt_and_rest(&mut w, broker.addr()).await;

    // Broker down: uplinks are accepted (and stored); their events wait for the broker.
    broker.stop();
    let mut sent = Vec::new();
    for i in 0..5u32 {
        let up = w.dev.uplink(false, 7, &LPP);
        sent.push(w.dev.f_cnt_up - 1);
        broadcast(&mut w, &up, 40_000_000 + i * 1_000_000).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    broker.restart();
    let mut seen = Vec::new();
    while seen.len() < sent.len() {
        let ev = event(&mut w, "up").await;
        let f = ev["fCnt"].as_u64().unwrap() as u32;
        if ev["fPort"] == 7 && !seen.contains(&f) {
            seen.push(f);
        }
    }
    seen.sort();
    assert_eq!(seen, sent, "every uplink sent during the outage was delivered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_downlinks_and_frame_counter_resets_are_reported_as_log_events() {
    let mut w = world(Backend::Sqlite, &[], None).await;
    let (nwk, app) = ("44024241ed4ce9a68c6a8bc055233fd3", "ec925802ae430ca77fd3dd73cb2cc588");
    // Replace the OTAA device by an ABP one with the same DevEUI.
    assert_eq!(w.api.delete(&format!("/api/devices/{DEV_EUI}")).await.0, 204);
    provision::abp_device(&w.api, &w.p, DEV_EUI, "26011234", nwk, app).await;
    w.dev = Device::abp(DEV_EUI, "26011234", nwk, app);

    // 100 bytes fit DR5 (enqueue accepts up to 242) but not DR0, where N is 51 bytes.
    let (s, b) = w.api.post(&format!("/api/devices/{DEV_EUI}/queue"), json!({"fPort": 9, "data": b64(&[7u8; 100])})).await;
    assert_eq!(s, 201, "{b}");
    let up = w.dev.uplink(false, 2, &LPP);
    for gw in w.gws.iter_mut() {
        let mut pk = rxpk(&up, 5_000_000, -100, -15.0);
        pk["datr"] = json!("SF12BW125");
        let t = gw.push_rxpk(vec![pk]).await;
        gw.expect_ack(PUSH_ACK, t).await;
    }
    let log = event(&mut w, "log").await;
    assert_eq!(log["code"], "DOWNLINK_PAYLOAD_SIZE", "{log}");
    let (_, q) = w.api.get(&format!("/api/devices/{DEV_EUI}/queue")).await;
    assert_eq!(q["totalCount"], 0);

    // The device restarts from FCnt 0: rejected and reported.
    let up = w.dev.uplink(false, 2, &LPP);
    broadcast(&mut w, &up, 6_000_000).await;
    assert_eq!(event(&mut w, "up").await["fCnt"], 1);
    w.dev.f_cnt_up = 0;
    // Another payload than the first FCnt 0 frame, which would be a replay.
    let up = w.dev.uplink(false, 2, &[0x01, 0x67, 0xff, 0xd7]);
    broadcast(&mut w, &up, 7_000_000).await;
    let log = event(&mut w, "log").await;
    assert_eq!(log["code"], "UPLINK_F_CNT_RESET", "{log}");
    assert_eq!(log["level"], "WARNING");
}

/// Makes the server's PostgreSQL database refuse connections (or accept them again).
async fn set_database_reachable(database_url: &str, reachable: bool) {
    use sqlx::Executor;
    let name = database_url.rsplit('/').next().unwrap().to_string();
    let admin = loraflow_network_server::storage::testing::test_postgres_server_url();
    let mut conn: sqlx::PgConnection = sqlx::Connection::connect(&admin).await.unwrap();
    conn.execute(format!("ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS {reachable}").as_str()).await.unwrap();
    if !reachable {
        conn.execute(format!("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'").as_str()).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_delays_storage_but_not_mqtt_delivery() {
    let mut w = world(Backend::Postgres, &[], None).await;
    let (nwk, app) = ("44024241ed4ce9a68c6a8bc055233fd3", "ec925802ae430ca77fd3dd73cb2cc588");
    assert_eq!(w.api.delete(&format!("/api/devices/{DEV_EUI}")).await.0, 204);
    provision::abp_device(&w.api, &w.p, DEV_EUI, "26011234", nwk, app).await;
    w.dev = Device::abp(DEV_EUI, "26011234", nwk, app);
    let up = w.dev.uplink(false, 2, &LPP);
    broadcast(&mut w, &up, 1_000_000).await;
    assert_eq!(event(&mut w, "up").await["fCnt"], 0);

    set_database_reachable(&w.server.database_url, false).await;
    let mut during = Vec::new();
    for i in 0..3u32 {
        let up = w.dev.uplink(false, 2, &[0x01, 0x67, 0x00, i as u8]);
        during.push(up.clone());
        broadcast(&mut w, &up, 2_000_000 + i * 1_000_000).await;
        let ev = event(&mut w, "up").await;
        assert_eq!(ev["fCnt"], i + 1, "delivered while the database is down");
    }
    let text = reqwest::get(w.server.url("/metrics")).await.unwrap().text().await.unwrap();
    assert_eq!(common::metric(&text, "loraflow_fcnt_unpersisted_devices", &[]), 1.0, "the outage was real");
    // A copy replayed during the outage is still refused (the counter is kept in memory).
    tokio::time::sleep(Duration::from_millis(600)).await;
    broadcast(&mut w, &during[0], 9_000_000).await;

    set_database_reachable(&w.server.database_url, true).await;
    let rows = common::eventually(Duration::from_secs(20), || async {
        let (s, h) = w.api.get(&format!("/api/devices/{DEV_EUI}/uplinks")).await;
        (s == 200 && h["result"].as_array().unwrap().len() == 4).then_some(h)
    })
    .await
    .expect("all four uplinks stored once the database is back");
    assert_eq!(rows["result"][0]["fCnt"], 3);
    // The history and the counters are written forward by different tasks: wait for both.
    common::eventually(Duration::from_secs(20), || async {
        let text = reqwest::get(w.server.url("/metrics")).await.unwrap().text().await.unwrap();
        (common::metric(&text, "loraflow_fcnt_unpersisted_devices", &[]) == 0.0).then_some(())
    })
    .await
    .expect("the counters kept in memory are written once the database is back");

    // The counters reached the database: after a restart an outage-time frame is a replay.
    w.server = w.server.restart();
    w.api = w.server.client();
    for gw in w.gws.iter_mut() {
        gw.server = w.server.gateway;
    }
    broadcast(&mut w, &during[1], 20_000_000).await;
    let replays = common::eventually(Duration::from_secs(5), || async {
        let text = reqwest::get(w.server.url("/metrics")).await.unwrap().text().await.unwrap();
        let n = common::metric(&text, "loraflow_uplinks_rejected_total", &[("reason", "replay")]);
        (n >= 1.0).then_some(n)
    })
    .await;
    assert_eq!(replays, Some(1.0));
    let text = reqwest::get(w.server.url("/metrics")).await.unwrap().text().await.unwrap();
    assert_eq!(common::metric(&text, "loraflow_uplinks_accepted_total", &[]), 0.0);
}
