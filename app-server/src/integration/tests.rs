//! Tests of the whole pipeline: events in, MQTT messages and stored rows out.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use loraflow_network_server::events::{AckInfo, AppEvent, DataUp, JoinInfo, LogCode, LogInfo, LogLevel, StatusInfo};
use loraflow_network_server::handle::NetworkHandle;
use loraflow_network_server::lorawan::encrypt_frm_payload;
use loraflow_network_server::storage::{DeviceContext, Storage};
use loraflow_network_server::types::AesKey;

use super::testing::{insert_device_with_codec, sqlite_storage, Recorder, TempDir};
use super::*;
use crate::codec::CodecConfig;

struct Run {
    events: mpsc::Sender<AppEvent>,
    commands: mpsc::Sender<DownlinkCommand>,
    task: tokio::task::JoinHandle<()>,
    recorder: Arc<Recorder>,
    storage: Storage,
    registry: prometheus::Registry,
    shutdown: CancellationToken,
    _dir: TempDir,
}

async fn start() -> Run {
    let dir = TempDir::new();
    let storage = sqlite_storage(&dir).await;
    start_with(storage, dir, IntegrationConfig::default())
}

fn start_with(storage: Storage, dir: TempDir, config: IntegrationConfig) -> Run {
    start_with_codecs(storage, dir, config, CodecConfig::default())
}

fn start_with_codecs(storage: Storage, dir: TempDir, config: IntegrationConfig, codecs: CodecConfig) -> Run {
    let recorder = Arc::new(Recorder::default());
    let registry = prometheus::Registry::new();
    let deps = IntegrationDeps {
        storage: storage.clone(),
        publisher: recorder.clone(),
        codecs: Codecs::new(codecs),
        network: NetworkHandle::new(storage.clone(), loraflow_packet_forwarder::KnownGateways::new(false)),
    };
    let integration = Integration::new(&config, deps, &registry).unwrap();
    let (events, events_rx) = mpsc::channel(1024);
    let (commands, commands_rx) = mpsc::channel(16);
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(integration.run(events_rx, commands_rx, shutdown.clone()));
    Run { events, commands, task, recorder, storage, registry, shutdown, _dir: dir }
}

impl Run {
    /// Closes the inputs and waits until everything is published and stored.
    async fn finish(self) -> Finished {
        drop(self.events);
        drop(self.commands);
        tokio::time::timeout(Duration::from_secs(10), self.task).await.expect("integration stopped").unwrap();
        let published = self.recorder.messages.lock().unwrap().clone();
        Finished { published, storage: self.storage, registry: self.registry, _dir: self._dir }
    }
}

struct Finished {
    published: Vec<(String, Vec<u8>)>,
    storage: Storage,
    registry: prometheus::Registry,
    /// Kept so that the SQLite file outlives the checks (the pool may open new connections).
    _dir: TempDir,
}

impl Finished {
    fn json(&self, i: usize) -> Value {
        serde_json::from_slice(&self.published[i].1).unwrap()
    }

    fn topics(&self) -> Vec<String> {
        self.published.iter().map(|(t, _)| t.clone()).collect()
    }

    fn metric(&self, name: &str, label: Option<(&str, &str)>) -> f64 {
        for family in self.registry.gather() {
            if family.name() != name {
                continue;
            }
            for m in family.get_metric() {
                let matches = label.is_none_or(|(k, v)| m.get_label().iter().any(|l| l.name() == k && l.value() == v));
                if matches {
                    return match family.get_field_type() {
                        prometheus::proto::MetricType::HISTOGRAM => m.get_histogram().get_sample_count() as f64,
                        _ => m.get_counter().get_value(),
                    };
                }
            }
        }
        0.0
    }
}

fn topic(ctx: &DeviceContext, kind: &str) -> String {
    format!("application/{}/device/{}/event/{kind}", ctx.device.application_id, ctx.device.dev_eui)
}

/// A data uplink of `ctx` whose FRMPayload is `plain` encrypted with the session's AppSKey.
fn uplink(ctx: &DeviceContext, f_cnt: u32, f_port: Option<u8>, plain: &[u8]) -> AppEvent {
    let mut up: DataUp = super::json::tests::data_up(Arc::new(ctx.clone()), f_port, Vec::new());
    up.deduplication_id = Uuid::new_v4();
    up.f_cnt = f_cnt;
    up.frm_payload = encrypt_frm_payload(&up.app_s_key, true, up.dev_addr, f_cnt, plain);
    AppEvent::Up(Box::new(up))
}

#[tokio::test]
async fn frm_payload_is_decrypted_with_the_app_s_key() {
    // lora-packet README vector: PHYPayload 40f17dbe4900020001954378762b11ff0d.
    let run = start().await;
    let ctx = insert_device_with_codec(&run.storage, "NONE", "").await;
    let mut up: DataUp = super::json::tests::data_up(Arc::new(ctx.clone()), Some(1), vec![0x95, 0x43, 0x78, 0x76]);
    up.dev_addr = "49be7df1".parse().unwrap();
    up.f_cnt = 2;
    up.app_s_key = "ec925802ae430ca77fd3dd73cb2cc588".parse::<AesKey>().unwrap();
    run.events.send(AppEvent::Up(Box::new(up))).await.unwrap();
    let done = run.finish().await;

    assert_eq!(done.topics(), vec![topic(&ctx, "up")]);
    let ev = done.json(0);
    assert_eq!(ev["data"], "dGVzdA=="); // "test"
    assert!(ev.get("object").is_none());
    assert_eq!(ev["devAddr"], "49be7df1");
    let stored = done.storage.history.list_uplinks(ctx.device.dev_eui, None, 10).await.unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].data, b"test");
    assert_eq!(stored[0].object, None);
    assert_eq!(stored[0].f_cnt, 2);
    assert_eq!(stored[0].rssi, -57);
    assert_eq!(stored[0].gateway_count, 1);
    assert_eq!(stored[0].rx_info[0]["gatewayId"], "aa555a0000000101");
    assert_eq!(stored[0].tx_info["modulation"]["lora"]["spreadingFactor"], 7);
    assert_eq!(done.metric("loraflow_uplinks_published_total", None), 1.0);
    assert_eq!(done.metric("loraflow_codec_seconds", None), 0.0);
}

#[tokio::test]
async fn a_codec_object_is_published_and_stored() {
    let run = start().await;
    let ctx = insert_device_with_codec(&run.storage, "CAYENNE_LPP", "").await;
    run.events.send(uplink(&ctx, 9, Some(2), &[3, 0x67, 1, 0x10])).await.unwrap();
    let done = run.finish().await;
    let ev = done.json(0);
    assert_eq!(ev["object"], json!({"temperatureSensor": {"3": 27.2}}));
    assert_eq!(ev["data"], "A2cBEA==");
    assert_eq!(ev["fCnt"], 9);
    let stored = done.storage.history.list_uplinks(ctx.device.dev_eui, None, 10).await.unwrap();
    assert_eq!(stored[0].object, Some(json!({"temperatureSensor": {"3": 27.2}})));
    assert_eq!(done.metric("loraflow_codec_seconds", None), 1.0);
}

#[tokio::test]
async fn a_codec_error_keeps_the_uplink_and_adds_a_log_event() {
    let run = start().await;
    let ctx = insert_device_with_codec(&run.storage, "JS", "function decodeUplink(input) { throw new Error('boom'); }").await;
    run.events.send(uplink(&ctx, 1, Some(5), &[1, 2])).await.unwrap();
    let done = run.finish().await;

    assert_eq!(done.topics(), vec![topic(&ctx, "log"), topic(&ctx, "up")]);
    let log = done.json(0);
    assert_eq!(log["code"], "UPLINK_CODEC");
    assert_eq!(log["level"], "ERROR");
    assert!(log["description"].as_str().unwrap().contains("boom"), "{log}");
    assert_eq!(log["context"]["f_cnt"], "1");
    let up = done.json(1);
    assert_eq!(up["data"], "AQI=");
    assert!(up.get("object").is_none());

    let uplinks = done.storage.history.list_uplinks(ctx.device.dev_eui, None, 10).await.unwrap();
    assert_eq!(uplinks.len(), 1);
    assert_eq!(uplinks[0].data, vec![1, 2]);
    let events = done.storage.history.list_events(ctx.device.dev_eui, None, 10).await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].kind, "log");
    assert_eq!(events[0].body["code"], "UPLINK_CODEC");
    assert_eq!(done.metric("loraflow_codec_errors_total", None), 1.0);
}

#[tokio::test]
async fn codec_warnings_are_published_as_a_warning_log_next_to_the_object() {
    let run = start().await;
    let script = "function decodeUplink(input) { return { data: { a: 1 }, warnings: ['low battery'] }; }";
    let ctx = insert_device_with_codec(&run.storage, "JS", script).await;
    run.events.send(uplink(&ctx, 1, Some(5), &[1])).await.unwrap();
    let done = run.finish().await;
    assert_eq!(done.topics(), vec![topic(&ctx, "log"), topic(&ctx, "up")]);
    assert_eq!(done.json(0)["level"], "WARNING");
    assert_eq!(done.json(0)["code"], "UPLINK_CODEC");
    assert!(done.json(0)["description"].as_str().unwrap().contains("low battery"));
    assert_eq!(done.json(1)["object"], json!({"a": 1}));
    assert_eq!(done.metric("loraflow_codec_errors_total", None), 0.0);
}

#[tokio::test]
async fn an_unknown_profile_codec_is_reported_like_a_codec_error() {
    let run = start().await;
    let ctx = insert_device_with_codec(&run.storage, "NONE", "").await;
    let mut ctx2 = ctx.clone();
    ctx2.profile.payload_codec = "PROTOBUF".into();
    run.events.send(uplink(&ctx2, 1, Some(5), &[1])).await.unwrap();
    let done = run.finish().await;
    assert_eq!(done.topics(), vec![topic(&ctx, "log"), topic(&ctx, "up")]);
    assert!(done.json(0)["description"].as_str().unwrap().contains("PROTOBUF"));
}

#[tokio::test]
async fn fport_zero_uplinks_carry_no_data_and_run_no_codec() {
    let run = start().await;
    let ctx = insert_device_with_codec(&run.storage, "CAYENNE_LPP", "").await;
    let mut ev = uplink(&ctx, 3, Some(0), &[]);
    if let AppEvent::Up(up) = &mut ev {
        up.frm_payload = vec![0x02]; // a MAC command encrypted with the NwkSKey
    }
    run.events.send(ev).await.unwrap();
    let done = run.finish().await;
    let up = done.json(0);
    assert_eq!(up["data"], "");
    assert_eq!(up["fPort"], 0);
    assert!(up.get("object").is_none());
    assert_eq!(done.metric("loraflow_codec_seconds", None), 0.0);
}

#[tokio::test]
async fn events_leave_in_arrival_order_while_codecs_run_in_parallel() {
    let dir = TempDir::new();
    let storage = sqlite_storage(&dir).await;
    let run = start_with(storage, dir, IntegrationConfig { codec_concurrency: 4, ..IntegrationConfig::default() });
    // Even frame counters make the script busy for 30 ms, so later ones finish first.
    let script = "function decodeUplink(input) { \
        if (input.bytes[0] % 2 == 0) { var t = Date.now(); while (Date.now() - t < 30) {} } \
        return { data: { n: input.bytes[0] } }; }";
    let ctx = insert_device_with_codec(&run.storage, "JS", script).await;
    let mut expected = Vec::new();
    for n in 0..12u8 {
        run.events.send(uplink(&ctx, u32::from(n), Some(1), &[n])).await.unwrap();
        expected.push(format!("up:{n}"));
        if n % 4 == 0 {
            run.events
                .send(AppEvent::Join(JoinInfo {
                    deduplication_id: Uuid::new_v4(),
                    time: chrono::Utc::now(),
                    device: Arc::new(ctx.clone()),
                    dev_addr: "26011234".parse().unwrap(),
                    region_config_id: "eu868".into(),
                }))
                .await
                .unwrap();
            expected.push("join".into());
        }
    }
    let done = run.finish().await;
    let seen: Vec<String> = (0..done.published.len())
        .map(|i| {
            let v = done.json(i);
            match v.get("object") {
                Some(o) => format!("up:{}", o["n"]),
                None => "join".to_string(),
            }
        })
        .collect();
    assert_eq!(seen, expected);
}

#[tokio::test]
async fn a_slow_codec_delays_only_its_own_devices_events() {
    let dir = TempDir::new();
    let storage = sqlite_storage(&dir).await;
    let run = start_with(storage, dir, IntegrationConfig { codec_concurrency: 8, ..IntegrationConfig::default() });
    let slow_script =
        "function decodeUplink(input) { var t = Date.now(); while (Date.now() - t < 60) {} return { data: { n: input.bytes[0] } }; }";
    let slow = insert_device_with_codec(&run.storage, "JS", slow_script).await;
    let fast =
        insert_device_with_codec(&run.storage, "JS", "function decodeUplink(input) { return { data: { n: input.bytes[0] } }; }").await;
    run.events.send(uplink(&slow, 1, Some(1), &[1])).await.unwrap();
    run.events
        .send(AppEvent::Join(JoinInfo {
            deduplication_id: Uuid::new_v4(),
            time: chrono::Utc::now(),
            device: Arc::new(slow.clone()),
            dev_addr: "26011234".parse().unwrap(),
            region_config_id: "eu868".into(),
        }))
        .await
        .unwrap();
    run.events.send(uplink(&fast, 1, Some(1), &[10])).await.unwrap();
    run.events.send(uplink(&slow, 2, Some(1), &[2])).await.unwrap();
    let done = run.finish().await;
    let topics = done.topics();
    let seen: Vec<(String, Value)> = topics.iter().enumerate().map(|(i, t)| (t.clone(), done.json(i)["object"]["n"].clone())).collect();
    // The fast device's uplink did not wait for the slow one's 60 ms codec…
    assert_eq!(seen[0], (topic(&fast, "up"), json!(10)), "{seen:?}");
    // …and the slow device's events kept their order.
    let slow_only: Vec<_> = seen.iter().filter(|(t, _)| !t.contains(&fast.device.dev_eui.to_string())).cloned().collect();
    assert_eq!(slow_only, vec![(topic(&slow, "up"), json!(1)), (topic(&slow, "join"), Value::Null), (topic(&slow, "up"), json!(2))]);
}

#[tokio::test]
async fn an_unresponsive_codec_gives_a_log_event_and_the_uplink_without_object() {
    let run = start().await;
    let script = "function decodeUplink(input) { return { data: { m: /^(a+)+$/.test('a'.repeat(30) + 'b') } }; }";
    let ctx = insert_device_with_codec(&run.storage, "JS", script).await;
    run.events.send(uplink(&ctx, 1, Some(1), &[1])).await.unwrap();
    let done = run.finish().await;
    assert_eq!(done.topics(), vec![topic(&ctx, "log"), topic(&ctx, "up")]);
    let log = done.json(0);
    assert_eq!((log["level"].as_str(), log["code"].as_str()), (Some("ERROR"), Some("UPLINK_CODEC")));
    assert!(log["description"].as_str().unwrap().contains("did not stop at its time limit"), "{log}");
    assert!(done.json(1).get("object").is_none());
}

#[tokio::test]
async fn other_events_are_published_on_their_topics_and_stored() {
    let run = start().await;
    let ctx = insert_device_with_codec(&run.storage, "NONE", "").await;
    let device = Arc::new(ctx.clone());
    let now = chrono::Utc::now();
    let dedup = Uuid::new_v4();
    let sends = vec![
        AppEvent::Join(JoinInfo {
            deduplication_id: dedup,
            time: now,
            device: device.clone(),
            dev_addr: "26011234".parse().unwrap(),
            region_config_id: "eu868".into(),
        }),
        AppEvent::Ack(AckInfo {
            deduplication_id: dedup,
            time: now,
            device: device.clone(),
            queue_item_id: Uuid::new_v4(),
            acknowledged: true,
            f_cnt_down: 4,
        }),
        AppEvent::Status(StatusInfo {
            deduplication_id: dedup,
            time: now,
            device: device.clone(),
            margin: 10,
            external_power_source: true,
            battery_level_unavailable: false,
            battery_level: 0.0,
        }),
        AppEvent::Log(LogInfo {
            time: now,
            device: device.clone(),
            level: LogLevel::Warning,
            code: LogCode::UplinkFCntRetransmission,
            description: "retransmission".into(),
            context: Default::default(),
        }),
    ];
    for ev in sends {
        run.events.send(ev).await.unwrap();
    }
    let done = run.finish().await;
    assert_eq!(done.topics(), vec![topic(&ctx, "join"), topic(&ctx, "ack"), topic(&ctx, "status"), topic(&ctx, "log")]);
    assert_eq!(done.json(1)["fCntDown"], 4);
    assert_eq!(done.json(3)["code"], "UPLINK_F_CNT_RETRANSMISSION");
    let mut kinds: Vec<String> =
        done.storage.history.list_events(ctx.device.dev_eui, None, 10).await.unwrap().into_iter().map(|e| e.kind).collect();
    kinds.sort();
    assert_eq!(kinds, vec!["ack", "join", "log", "status"]);
    assert_eq!(done.metric("loraflow_events_published_total", Some(("kind", "status"))), 1.0);
}

#[tokio::test]
async fn uplinks_are_stored_when_mqtt_refuses_them() {
    let run = start().await;
    run.recorder.full.store(true, Ordering::Relaxed);
    let ctx = insert_device_with_codec(&run.storage, "NONE", "").await;
    run.events.send(uplink(&ctx, 1, Some(1), &[1])).await.unwrap();
    let done = run.finish().await;
    assert!(done.published.is_empty());
    assert_eq!(done.storage.history.list_uplinks(ctx.device.dev_eui, None, 10).await.unwrap().len(), 1);
    assert_eq!(done.metric("loraflow_uplinks_published_total", None), 0.0);
}

#[tokio::test]
async fn shutdown_stops_the_integration_while_its_inputs_stay_open() {
    let run = start().await;
    let ctx = insert_device_with_codec(&run.storage, "NONE", "").await;
    run.events.send(uplink(&ctx, 1, Some(1), &[1])).await.unwrap();
    let started = std::time::Instant::now();
    run.shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(4), run.task).await.expect("stopped").unwrap();
    assert!(started.elapsed() < Duration::from_secs(3));
    // The event sent before shutdown was still published and stored.
    assert_eq!(run.recorder.messages.lock().unwrap().len(), 1);
    assert_eq!(run.storage.history.list_uplinks(ctx.device.dev_eui, None, 10).await.unwrap().len(), 1);
    drop(run.events);
    drop(run.commands);
}

const MQTT_LIMIT: usize = crate::mqtt::MAX_PUBLISH_PACKET;

#[tokio::test]
async fn a_codec_result_too_large_for_mqtt_is_published_without_object_next_to_a_log_event() {
    // The codec's own result limit (256 KiB by default) would refuse the result first; an
    // operator may raise it above the MQTT limit, and then the event limit applies.
    let codecs = CodecConfig { js_max_result_bytes: 8 * 1024 * 1024, js_time_limit_ms: 5000, ..CodecConfig::default() };
    let dir = TempDir::new();
    let storage = sqlite_storage(&dir).await;
    let run = start_with_codecs(storage, dir, IntegrationConfig::default(), codecs);
    let script = "function decodeUplink(input) { return { data: { blob: 'x'.repeat(3 * 1024 * 1024) } }; }";
    let ctx = insert_device_with_codec(&run.storage, "JS", script).await;
    run.events.send(uplink(&ctx, 4, Some(5), &[1, 2])).await.unwrap();
    let done = run.finish().await;

    assert_eq!(done.topics(), vec![topic(&ctx, "log"), topic(&ctx, "up")]);
    let log = done.json(0);
    assert_eq!(log["code"], "UPLINK_CODEC");
    assert_eq!(log["level"], "ERROR");
    let description = log["description"].as_str().unwrap();
    assert!(description.contains(&MQTT_LIMIT.to_string()), "names the limit: {description}");
    let size: usize = log["context"]["size"].as_str().unwrap().parse().unwrap();
    assert!(size > 3 * 1024 * 1024, "names the size: {log}");
    assert_eq!(log["context"]["f_cnt"], "4");
    let up = done.json(1);
    assert!(up.get("object").is_none());
    assert_eq!(up["data"], "AQI=");

    let stored = done.storage.history.list_uplinks(ctx.device.dev_eui, None, 10).await.unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].object, None, "stored as published");
    let events = done.storage.history.list_events(ctx.device.dev_eui, None, 10).await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].body["code"], "UPLINK_CODEC");
    assert_eq!(done.metric("loraflow_uplinks_published_total", None), 1.0);
}

#[tokio::test]
async fn an_event_too_large_even_without_object_is_stored_and_reported_by_a_log_event_that_fits() {
    let run = start().await;
    let mut ctx = insert_device_with_codec(&run.storage, "NONE", "").await;
    // Tags as big as the storage layer lets through today; they travel in every event.
    ctx.device.tags = json!({"notes": "y".repeat(MQTT_LIMIT + 10)});
    run.events.send(uplink(&ctx, 7, Some(1), &[1])).await.unwrap();
    let done = run.finish().await;

    assert_eq!(done.topics(), vec![topic(&ctx, "log")], "the uplink itself cannot be published");
    assert!(done.published[0].1.len() < MQTT_LIMIT);
    let log = done.json(0);
    assert_eq!(log["level"], "ERROR");
    assert_eq!(log["code"], "UNKNOWN");
    assert!(log["description"].as_str().unwrap().contains("up event of"), "{}", log["description"]);
    assert_eq!(log["context"]["event"], "up");
    assert_eq!(log["context"]["limit"], MQTT_LIMIT.to_string());
    assert_eq!(log["context"]["device_tags"], "omitted: too large for an MQTT message");
    assert_eq!(log["deviceInfo"]["tags"], json!({}));
    assert_eq!(done.storage.history.list_uplinks(ctx.device.dev_eui, None, 10).await.unwrap().len(), 1, "still stored");
    assert_eq!(done.metric("loraflow_uplinks_published_total", None), 0.0);
}

#[tokio::test]
async fn a_network_log_event_too_large_for_mqtt_is_replaced_by_one_that_fits() {
    let run = start().await;
    let ctx = insert_device_with_codec(&run.storage, "NONE", "").await;
    let log = LogInfo {
        device: Arc::new(ctx.clone()),
        time: chrono::Utc::now(),
        level: LogLevel::Error,
        code: LogCode::UplinkMic,
        description: "z".repeat(MQTT_LIMIT + 1),
        context: Default::default(),
    };
    run.events.send(AppEvent::Log(log)).await.unwrap();
    let done = run.finish().await;
    assert_eq!(done.topics(), vec![topic(&ctx, "log")]);
    let published = done.json(0);
    assert_eq!(published["context"]["event"], "log");
    assert!(published["description"].as_str().unwrap().contains("above the MQTT limit"));
    // Both are stored: the original and the report about it.
    assert_eq!(done.storage.history.list_events(ctx.device.dev_eui, None, 10).await.unwrap().len(), 2);
}
