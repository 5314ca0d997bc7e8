//! Hostile and unlucky MQTT clients against the real binary (issue 8, items 4, 5, 7, 10):
//! the embedded broker survives CONNECT + reset with one client id, an oversized publish
//! on a command topic cannot disconnect loraflow's client (embedded broker and Mosquitto),
//! a duplicate command id is the sender's mistake, and `/health/ready` follows an
//! external broker going away and coming back.

mod common;
#[path = "../app-server/tests/mqtt_support/mod.rs"]
mod mqtt_support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use base64::Engine;
use common::device::Device;
use common::gateway::{rxpk, FakeGateway, PULL_ACK, PUSH_ACK};
use common::provision::{self, Provisioned};
use common::{Api, Backend, TestServer};
use mqtt_support::{Mosquitto, Subscriber};
use serde_json::{json, Value};

const DEV_EUI: &str = "70b3d57ed0000042";
const GATEWAY: &str = "00000000000000c1";
const DEV_ADDR: &str = "26014242";
const NWK_S_KEY: &str = "44024241ed4ce9a68c6a8bc055233fd3";
const APP_S_KEY: &str = "ec925802ae430ca77fd3dd73cb2cc588";

struct World {
    server: TestServer,
    api: Api,
    p: Provisioned,
    gw: FakeGateway,
    dev: Device,
}

async fn world(env: &[(&str, &str)]) -> World {
    let server = TestServer::start(Backend::Sqlite, env).await;
    let api = server.client();
    let p = provision::application_and_profile(&api, "NONE", "").await;
    provision::gateway(&api, GATEWAY).await;
    let mut gw = FakeGateway::new(GATEWAY, server.gateway).await;
    let t = gw.pull_data().await;
    gw.expect_ack(PULL_ACK, t).await;
    provision::abp_device(&api, &p, DEV_EUI, DEV_ADDR, NWK_S_KEY, APP_S_KEY).await;
    World { server, api, p, gw, dev: Device::abp(DEV_EUI, DEV_ADDR, NWK_S_KEY, APP_S_KEY) }
}

async fn metrics(server: &TestServer) -> String {
    reqwest::get(server.url("/metrics")).await.unwrap().text().await.unwrap()
}

fn command_topic(w: &World) -> String {
    format!("application/{}/device/{DEV_EUI}/command/down", w.p.application_id)
}

/// A plain publisher allowed to send large packets.
async fn publisher(broker: SocketAddr) -> (rumqttc::AsyncClient, tokio::task::JoinHandle<()>) {
    let mut opts = rumqttc::MqttOptions::new(
        format!("pub-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]),
        broker.ip().to_string(),
        broker.port(),
    );
    opts.set_max_packet_size(2 << 20, 2 << 20);
    let (client, mut el) = rumqttc::AsyncClient::new(opts, 100);
    // Keeps polling through disconnects: the embedded broker drops a sender whose
    // publish is over its limit, and rumqttc then reconnects.
    let task = tokio::spawn(async move {
        loop {
            if el.poll().await.is_err() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    });
    (client, task)
}

async fn queue_len(api: &Api) -> u64 {
    let (s, q) = api.get(&format!("/api/devices/{DEV_EUI}/queue")).await;
    assert_eq!(s, 200, "{q}");
    q["totalCount"].as_u64().unwrap()
}

/// MQTT 3.1.1 CONNECT (§3.1), clean session, written by hand.
fn connect_packet(client_id: &str) -> Vec<u8> {
    let mut body = vec![0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 30];
    body.extend_from_slice(&(client_id.len() as u16).to_be_bytes());
    body.extend_from_slice(client_id.as_bytes());
    assert!(body.len() < 128);
    let mut packet = vec![0x10, body.len() as u8];
    packet.extend_from_slice(&body);
    packet
}

/// CONNECT, then close with SO_LINGER 0: the kernel answers with a TCP reset.
async fn connect_and_reset(addr: SocketAddr, client_id: &str) {
    if let Ok(mut s) = tokio::net::TcpStream::connect(addr).await {
        let _ = tokio::io::AsyncWriteExt::write_all(&mut s, &connect_packet(client_id)).await;
        let _ = s.set_zero_linger();
    }
}

/// A hand-written MQTT connection with `client_id`: `true` on an accepting CONNACK.
fn connack(addr: SocketAddr, client_id: &str) -> bool {
    let Ok(mut s) = TcpStream::connect(addr) else { return false };
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    if s.write_all(&connect_packet(client_id)).is_err() {
        return false;
    }
    let mut ack = [0u8; 4];
    let ok = s.read_exact(&mut ack).is_ok() && ack == [0x20, 0x02, 0x00, 0x00];
    let _ = s.write_all(&[0xe0, 0x00]);
    ok
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_broker_survives_connect_and_reset_with_one_client_id() {
    let mut w = world(&[]).await;
    let broker = w.server.mqtt.expect("embedded broker");

    for _ in 0..3 {
        tokio::join!(connect_and_reset(broker, "hostile-twin"), connect_and_reset(broker, "hostile-twin"));
    }
    // The client id that breaks rumqttd 0.20 once it has been reset in the handshake.
    let same_id_accepted = common::eventually(Duration::from_secs(5), || async move {
        tokio::task::spawn_blocking(move || connack(broker, "hostile-twin")).await.unwrap().then_some(())
    })
    .await;
    assert!(same_id_accepted.is_some(), "a client with the attackers' id is served again");

    let mut sub = Subscriber::connect(broker, "application/#", false).await;
    let up = w.dev.uplink(false, 2, &[1, 2, 3]);
    let t = w.gw.push_rxpk(vec![rxpk(&up, 1_000_000, -50, 8.0)]).await;
    w.gw.expect_ack(PUSH_ACK, t).await;
    let want = format!("application/{}/device/{DEV_EUI}/event/up", w.p.application_id);
    let ev: Value = loop {
        let (topic, payload) = tokio::time::timeout(Duration::from_secs(10), sub.messages.recv())
            .await
            .expect("an up event after the attack")
            .expect("subscriber open");
        if topic == want {
            break serde_json::from_slice(&payload).unwrap();
        }
    };
    assert_eq!(ev["fCnt"], 0);

    let connected = common::eventually(Duration::from_secs(5), || async {
        (common::metric(&metrics(&w.server).await, "loraflow_mqtt_connected", &[]) == 1.0).then_some(())
    })
    .await;
    assert!(connected.is_some(), "loraflow's own client is connected");
    let text = metrics(&w.server).await;
    assert_eq!(common::metric(&text, "loraflow_mqtt_queue_depth", &[]), 0.0, "nothing stuck in the queue");
    eprintln!("embedded broker restarts: {}", common::metric(&text, "loraflow_mqtt_embedded_restarts_total", &[]));
    let (s, ready) = w.api.get("/health/ready").await;
    assert_eq!(s, 200, "{ready}");
}

/// Oversized publishes on the device's command topic, each followed at once by a real
/// command: every real command is queued and loraflow's client never reconnects.
async fn oversized_commands_do_not_disconnect_loraflow(w: &World, broker: SocketAddr) {
    let (client, _task) = publisher(broker).await;
    let topic = command_topic(w);
    let rounds = 5;
    for i in 0..rounds {
        client.publish(topic.clone(), rumqttc::QoS::AtMostOnce, false, vec![b'x'; 300 * 1024]).await.unwrap();
        let data = base64::engine::general_purpose::STANDARD.encode([i as u8]);
        client.publish(topic.clone(), rumqttc::QoS::AtLeastOnce, false, json!({"fPort": 5, "data": data}).to_string()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let queued = common::eventually(Duration::from_secs(15), || async { (queue_len(&w.api).await == rounds).then_some(()) }).await;
    assert!(queued.is_some(), "every legitimate command was queued, got {}", queue_len(&w.api).await);

    let text = metrics(&w.server).await;
    assert_eq!(common::metric(&text, "loraflow_mqtt_connected", &[]), 1.0);
    assert_eq!(common::metric(&text, "loraflow_mqtt_connection_losses_total", &[]), 0.0, "loraflow's client never reconnected");
    // Both brokers pass 300 KiB on; loraflow ignores each one and counts it.
    assert_eq!(common::metric(&text, "loraflow_mqtt_commands_rejected_total", &[]), rounds as f64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_command_publish_does_not_disconnect_loraflow_from_the_embedded_broker() {
    let w = world(&[]).await;
    let broker = w.server.mqtt.unwrap();
    oversized_commands_do_not_disconnect_loraflow(&w, broker).await;

    // Above the embedded broker's 1 MiB limit: the broker drops the sender, not loraflow.
    let (client, _task) = publisher(broker).await;
    client.publish(command_topic(&w), rumqttc::QoS::AtMostOnce, false, vec![b'x'; 1536 * 1024]).await.unwrap();
    let (client2, _task2) = publisher(broker).await;
    client2.publish(command_topic(&w), rumqttc::QoS::AtLeastOnce, false, json!({"fPort": 5, "data": "/w=="}).to_string()).await.unwrap();
    let queued = common::eventually(Duration::from_secs(15), || async { (queue_len(&w.api).await == 6).then_some(()) }).await;
    assert!(queued.is_some(), "the command after the 1.5 MiB publish was queued");
    let text = metrics(&w.server).await;
    assert_eq!(common::metric(&text, "loraflow_mqtt_connection_losses_total", &[]), 0.0);
    assert_eq!(common::metric(&text, "loraflow_mqtt_commands_rejected_total", &[]), 5.0, "never reached loraflow");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_command_publish_does_not_disconnect_loraflow_from_mosquitto() {
    let broker = Mosquitto::start_new();
    let url = broker.url();
    let w = world(&[("LORAFLOW_MQTT__URL", &url)]).await;
    let ready = common::eventually(Duration::from_secs(10), || async { (w.api.get("/health/ready").await.0 == 200).then_some(()) }).await;
    assert!(ready.is_some(), "connected to mosquitto");
    oversized_commands_do_not_disconnect_loraflow(&w, broker.addr()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_command_id_is_a_log_event_naming_the_id() {
    let w = world(&[]).await;
    let broker = w.server.mqtt.unwrap();
    let mut sub = Subscriber::connect(broker, &format!("application/{}/device/+/event/log", w.p.application_id), false).await;
    let (client, _task) = publisher(broker).await;
    let id = uuid::Uuid::new_v4().to_string();
    let cmd = json!({"id": id, "fPort": 3, "data": "AQI="}).to_string();
    client.publish(command_topic(&w), rumqttc::QoS::AtLeastOnce, false, cmd.clone()).await.unwrap();
    let queued = common::eventually(Duration::from_secs(10), || async { (queue_len(&w.api).await == 1).then_some(()) }).await;
    assert!(queued.is_some(), "the first command is queued");
    client.publish(command_topic(&w), rumqttc::QoS::AtLeastOnce, false, cmd).await.unwrap();

    let (topic, payload) = tokio::time::timeout(Duration::from_secs(10), sub.messages.recv()).await.expect("a log event").unwrap();
    assert_eq!(topic, format!("application/{}/device/{DEV_EUI}/event/log", w.p.application_id));
    let log: Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(log["level"], "WARNING", "{log}");
    assert!(log["description"].as_str().unwrap().contains(&id), "{log}");
    assert_eq!(log["context"]["id"], id, "{log}");
    assert_eq!(queue_len(&w.api).await, 1, "queued once");
    let text = metrics(&w.server).await;
    assert_eq!(common::metric(&text, "loraflow_downlink_commands_total", &[("outcome", "error")]), 0.0);
    assert_eq!(common::metric(&text, "loraflow_downlink_commands_total", &[("outcome", "invalid")]), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_ready_reports_an_external_broker_that_is_down_and_back() {
    let mut broker = Mosquitto::start_new();
    let url = broker.url();
    let w = world(&[("LORAFLOW_MQTT__URL", &url)]).await;
    let up = common::eventually(Duration::from_secs(10), || async {
        let (s, b) = w.api.get("/health/ready").await;
        (s == 200).then_some(b)
    })
    .await
    .expect("ready once connected");
    assert_eq!(up["checks"]["mqtt"]["status"], "up", "{up}");

    broker.kill();
    let down = common::eventually(Duration::from_secs(10), || async {
        let (s, b) = w.api.get("/health/ready").await;
        (s == 503).then_some(b)
    })
    .await
    .expect("503 while the broker is down");
    assert_eq!(down["status"], "unavailable", "{down}");
    assert_eq!(down["checks"]["mqtt"]["status"], "down", "{down}");
    assert_eq!(down["checks"]["mqtt"]["broker"], format!("127.0.0.1:{}", broker.port), "{down}");
    assert!(!down["checks"]["mqtt"]["reason"].as_str().unwrap_or("").is_empty(), "{down}");
    // Liveness stays up: restarting loraflow would not bring the broker back.
    let (s, live) = w.api.get("/health").await;
    assert_eq!((s, &live["status"], &live["mqtt"]), (200, &json!("ok"), &json!("disconnected")), "{live}");

    broker.restart();
    let back = common::eventually(Duration::from_secs(15), || async {
        let (s, b) = w.api.get("/health/ready").await;
        (s == 200).then_some(b)
    })
    .await
    .expect("ready again once the broker is back");
    assert_eq!(back["status"], "ready", "{back}");
    let (_, live) = w.api.get("/health").await;
    assert_eq!(live["mqtt"], "connected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_broker_connection_limit_leaves_room_for_loraflow() {
    let mut w = world(&[("LORAFLOW_MQTT__EMBEDDED_MAX_CONNECTIONS", "3")]).await;
    let broker = w.server.mqtt.unwrap();
    let mut sub = Subscriber::connect(broker, "application/#", false).await;
    let idle: Vec<TcpStream> = (0..2).map(|_| TcpStream::connect(broker).unwrap()).collect();
    let full = common::eventually(Duration::from_secs(5), || async {
        (common::metric(&metrics(&w.server).await, "loraflow_mqtt_embedded_connections", &[]) == 3.0).then_some(())
    })
    .await;
    assert!(full.is_some(), "three client connections counted");
    assert!(!tokio::task::spawn_blocking(move || connack(broker, "fourth")).await.unwrap(), "a fourth client is refused");
    let text = metrics(&w.server).await;
    assert_eq!(common::metric(&text, "loraflow_mqtt_embedded_refused_total", &[]), 1.0);
    assert_eq!(common::metric(&text, "loraflow_mqtt_connected", &[]), 1.0, "loraflow's own client is not counted");

    // loraflow still publishes to the subscriber that got in.
    let up = w.dev.uplink(false, 2, &[9]);
    let t = w.gw.push_rxpk(vec![rxpk(&up, 1_000_000, -50, 8.0)]).await;
    w.gw.expect_ack(PUSH_ACK, t).await;
    let want = format!("application/{}/device/{DEV_EUI}/event/up", w.p.application_id);
    loop {
        let (topic, _) = tokio::time::timeout(Duration::from_secs(10), sub.messages.recv()).await.expect("an up event").unwrap();
        if topic == want {
            break;
        }
    }

    drop(idle);
    let again = common::eventually(Duration::from_secs(10), || async move {
        tokio::task::spawn_blocking(move || connack(broker, "later")).await.unwrap().then_some(())
    })
    .await;
    assert!(again.is_some(), "room again once connections close");
}

/// Starts the binary with its stderr captured (the shared `TestServer` passes it through).
/// Returns the child, the API and embedded broker addresses, and a thread collecting stderr.
fn spawn_capturing_logs(dir: &std::path::Path) -> (std::process::Child, SocketAddr, SocketAddr, std::thread::JoinHandle<Vec<String>>) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_loraflow"))
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "warn")
        .env("LORAFLOW_GATEWAY__BIND", "127.0.0.1:0")
        .env("LORAFLOW_API__BIND", "127.0.0.1:0")
        .env("LORAFLOW_API__ADMIN_TOKEN", common::TOKEN)
        .env("LORAFLOW_MQTT__EMBEDDED_BIND", "127.0.0.1:0")
        .env("LORAFLOW_DATABASE__URL", format!("sqlite://{}", dir.join("loraflow.db").display()))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn loraflow");
    let stderr = child.stderr.take().unwrap();
    let logs = std::thread::spawn(move || std::io::BufReader::new(stderr).lines().map_while(Result::ok).collect::<Vec<_>>());
    let mut ready = String::new();
    for line in std::io::BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if let Some(rest) = line.strip_prefix("loraflow ready: ") {
            ready = rest.to_string();
            break;
        }
    }
    let field = |name: &str| -> SocketAddr {
        ready
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('=').map(|v| v.trim_start_matches("http://").parse().unwrap()))
            .unwrap_or_else(|| panic!("{name} in {ready:?}"))
    };
    (child, field("api"), field("mqtt_embedded"), logs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_commands_log_a_handful_of_lines_not_one_each() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, api, broker, logs) = spawn_capturing_logs(dir.path());
    let (client, _task) = publisher(broker).await;
    let topic = format!("application/{}/device/0102030405060708/command/down", uuid::Uuid::new_v4());
    let (unknown_device, oversized) = (300, 100);
    for i in 0..unknown_device {
        client
            .publish(topic.clone(), rumqttc::QoS::AtLeastOnce, false, json!({"fPort": 1, "data": "AQ==", "n": i}).to_string())
            .await
            .unwrap();
        if i < oversized {
            client.publish(topic.clone(), rumqttc::QoS::AtLeastOnce, false, vec![b'{'; 70 * 1024]).await.unwrap();
        }
    }
    let counted = common::eventually(Duration::from_secs(30), || async {
        let text = reqwest::get(format!("http://{api}/metrics")).await.unwrap().text().await.unwrap();
        let invalid = common::metric(&text, "loraflow_downlink_commands_total", &[("outcome", "invalid")]);
        let too_large = common::metric(&text, "loraflow_mqtt_commands_rejected_total", &[]);
        (invalid == unknown_device as f64 && too_large == oversized as f64).then_some(())
    })
    .await;
    std::process::Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().unwrap();
    child.wait().unwrap();
    let logs = logs.join().unwrap();
    assert!(counted.is_some(), "every command was handled and counted; log: {logs:?}");
    let about_commands: Vec<&String> = logs.iter().filter(|l| l.contains("downlink command")).collect();
    // One line per kind of rejection within the interval, each with the count left out.
    assert!(!about_commands.is_empty() && about_commands.len() <= 4, "{about_commands:#?}");
}
