//! `loraflow simulate` against a real server: every simulated device joins, and every uplink
//! the simulator says it sent comes out of the server as an MQTT `up` event.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;

use common::{Backend, TestServer, TOKEN};

/// (kind, devEui, JSON) of every event published after the subscription.
async fn subscribe_events(broker: std::net::SocketAddr) -> mpsc::UnboundedReceiver<(String, String, serde_json::Value)> {
    let mut opts = MqttOptions::new("simulate-e2e", broker.ip().to_string(), broker.port());
    opts.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut eventloop) = AsyncClient::new(opts, 100);
    client.subscribe("application/+/device/+/event/+", QoS::AtLeastOnce).await.unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    let (subscribed_tx, subscribed_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let _client = client;
        let mut subscribed_tx = Some(subscribed_tx);
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    if let Some(s) = subscribed_tx.take() {
                        let _ = s.send(());
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let parts: Vec<&str> = p.topic.split('/').collect();
                    let json = serde_json::from_slice(&p.payload).unwrap_or(serde_json::Value::Null);
                    if tx.send((parts[5].to_string(), parts[3].to_string(), json)).is_err() {
                        break;
                    }
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(10), subscribed_rx).await.expect("SUBACK").unwrap();
    rx
}

/// `simulate done: sent=N joined=M downlinks=K errors=E …` as a map.
fn summary(stdout: &str) -> HashMap<String, u64> {
    let line = stdout.lines().rev().find_map(|l| l.strip_prefix("simulate done: ")).unwrap_or_else(|| panic!("no summary in {stdout:?}"));
    line.split_whitespace().filter_map(|kv| kv.split_once('=')).map(|(k, v)| (k.to_string(), v.parse().unwrap())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_devices_join_and_every_uplink_becomes_an_up_event() {
    let server = TestServer::start(Backend::Sqlite, &[]).await;
    let mut events = subscribe_events(server.mqtt.expect("embedded MQTT broker")).await;

    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_loraflow"))
        .args(["simulate", "--server", &server.gateway.to_string(), "--api", &server.url(""), "--token", TOKEN])
        .args(["--gateways", "2", "--devices", "3", "--interval", "1", "--seconds", "6", "--lpp"])
        .current_dir(server.state_dir())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .output()
        .await
        .expect("run loraflow simulate");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "simulate failed: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let s = summary(&stdout);
    assert_eq!(s["joined"], 3, "{stdout}");
    assert_eq!(s["errors"], 0, "{stdout}");
    assert!(s["downlinks"] >= 3, "one join-accept per device: {stdout}");
    assert!(s["sent"] >= 3 * 3, "about 5 uplinks per device in 6 s: {stdout}");
    assert!(stdout.lines().filter(|l| l.contains(" sent=")).count() >= 5, "a status line per second: {stdout}");

    // The last uplinks wait out the dedup window in the server.
    let mut joins = HashSet::new();
    let mut ups: HashSet<(String, u64)> = HashSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while ups.len() < s["sent"] as usize || joins.len() < 3 {
        let Ok(Some((kind, dev_eui, json))) = tokio::time::timeout_at(deadline, events.recv()).await else { break };
        match kind.as_str() {
            "join" => {
                joins.insert(dev_eui);
            }
            "up" => {
                assert!(json["object"].is_object(), "the CAYENNE_LPP codec decoded the payload: {json}");
                assert_eq!(json["rxInfo"].as_array().map(Vec::len), Some(2), "both gateways heard it: {json}");
                assert!(ups.insert((dev_eui, json["fCnt"].as_u64().unwrap())), "one event per uplink: {json}");
            }
            _ => {}
        }
    }
    assert_eq!(joins.len(), 3, "a join event per device: {joins:?}");
    assert_eq!(ups.len() as u64, s["sent"], "an up event for every uplink sent");
    let devices: HashSet<&String> = ups.iter().map(|(d, _)| d).collect();
    assert_eq!(devices.len(), 3, "every device sent uplinks");
}
