//! Test helpers: a recording publisher, SQLite storage in a temporary directory, rows.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use chrono::Utc;
use serde_json::json;
use uuid::Uuid;

use loraflow_network_server::handle::NetworkHandle;
use loraflow_network_server::storage::{self, Application, DatabaseConfig, Device, DeviceContext, DeviceProfile, Storage, UplinkRecord};
use loraflow_network_server::types::{DevAddr, Eui64};

use super::commands::CommandHandler;
use super::{Emitter, EventPublisher, HistoryWriter, IntegrationConfig, IntegrationMetrics, Message};
use crate::codec::{CodecConfig, Codecs};
use crate::mqtt::MqttQueueFull;

/// A directory removed when dropped.
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new() -> Self {
        let p = std::env::temp_dir().join(format!("loraflow-integration-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Keeps what is published; refuses everything once `full` is set.
#[derive(Default)]
pub(crate) struct Recorder {
    pub(crate) messages: Mutex<Vec<(String, Vec<u8>)>>,
    pub(crate) full: std::sync::atomic::AtomicBool,
}

impl EventPublisher for Recorder {
    fn publish(&self, m: Message) -> Result<(), MqttQueueFull> {
        if self.full.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(MqttQueueFull);
        }
        self.messages.lock().unwrap().push((m.topic, m.payload));
        Ok(())
    }
}

pub(crate) async fn sqlite_storage(dir: &TempDir) -> Storage {
    Storage::connect(&DatabaseConfig { url: storage::testing::temp_sqlite_url(dir.path()), ..DatabaseConfig::default() }).await.unwrap()
}

pub(crate) async fn insert_device(storage: &Storage) -> DeviceContext {
    insert_device_with_codec(storage, "NONE", "").await
}

/// A new application, profile (with this codec) and device; returns the device context.
pub(crate) async fn insert_device_with_codec(storage: &Storage, codec: &str, script: &str) -> DeviceContext {
    let now = Utc::now();
    let app = Application { id: Uuid::new_v4(), name: "farm".into(), description: String::new(), created_at: now, updated_at: now };
    storage.applications.create(&app).await.unwrap();
    let profile = DeviceProfile {
        id: Uuid::new_v4(),
        name: format!("profile-{codec}"),
        region: "EU868".into(),
        mac_version: "1.0.3".into(),
        reg_params_revision: "RP002-1.0.3".into(),
        supports_otaa: true,
        supports_class_c: false,
        adr_enabled: true,
        adr_min_dr: 0,
        adr_max_dr: 5,
        adr_installation_margin_db: 10.0,
        dev_status_req_freq: 1,
        class_c_timeout: 5,
        payload_codec: codec.into(),
        payload_codec_script: script.into(),
        measurements: Default::default(),
        auto_detect_measurements: true,
        created_at: now,
        updated_at: now,
    };
    storage.device_profiles.create(&profile).await.unwrap();
    let device = Device {
        dev_eui: Eui64(rand::random()),
        name: "sensor".into(),
        description: String::new(),
        application_id: app.id,
        device_profile_id: profile.id,
        join_eui: Eui64::default(),
        skip_fcnt_check: false,
        is_disabled: false,
        tags: json!({}),
        last_seen_at: None,
        dev_addr: None,
        created_at: now,
        updated_at: now,
    };
    storage.devices.create(&device).await.unwrap();
    storage.devices.context(device.dev_eui).await.unwrap()
}

pub(crate) fn uplink_record(dev_eui: Eui64, application_id: Uuid, f_cnt: u32) -> UplinkRecord {
    UplinkRecord {
        deduplication_id: Uuid::new_v4(),
        time: Utc::now(),
        dev_eui,
        application_id,
        dev_addr: DevAddr([0x26, 0x01, 0x12, 0x34]),
        f_cnt,
        f_port: Some(1),
        confirmed: false,
        dr: 5,
        frequency: 868_100_000,
        rssi: -57,
        snr: 9.5,
        gateway_count: 1,
        data: vec![1, 2, 3],
        object: None,
        rx_info: json!([]),
        tx_info: json!({}),
        adr_decision: None,
        measurements: Vec::new(),
    }
}

/// Storage, a recorder and an emitter whose history writer is not running (rows stay in
/// its buffer), for testing the parts one by one.
pub(crate) struct Harness {
    pub(crate) storage: Storage,
    pub(crate) recorder: Arc<Recorder>,
    pub(crate) metrics: IntegrationMetrics,
    pub(crate) emitter: Emitter,
    writer: std::sync::Mutex<HistoryWriter>,
    _dir: TempDir,
}

impl Harness {
    pub(crate) async fn sqlite() -> Harness {
        let dir = TempDir::new();
        let storage = sqlite_storage(&dir).await;
        let recorder = Arc::new(Recorder::default());
        let metrics = IntegrationMetrics::register(&prometheus::Registry::new()).unwrap();
        let (history, writer) =
            HistoryWriter::new(storage.history.clone(), recorder.clone(), &IntegrationConfig::default(), metrics.clone());
        let emitter = Emitter { history, metrics: metrics.clone() };
        Harness { storage, recorder, metrics, emitter, writer: std::sync::Mutex::new(writer), _dir: dir }
    }

    pub(crate) fn commands(&self) -> CommandHandler {
        CommandHandler::new(
            self.storage.clone(),
            Codecs::new(CodecConfig::default()),
            NetworkHandle::new(self.storage.clone(), loraflow_packet_forwarder::KnownGateways::new(false)),
            self.emitter.clone(),
        )
    }

    /// What the emitter handed over for publishing so far (passed through the recorder
    /// without storing the rows).
    pub(crate) fn published(&self) -> Vec<(String, Vec<u8>)> {
        for m in self.writer.lock().unwrap().take_messages() {
            let _ = self.recorder.publish(m);
        }
        self.recorder.messages.lock().unwrap().clone()
    }

    pub(crate) async fn close(self) {
        self.storage.close().await;
    }
}
