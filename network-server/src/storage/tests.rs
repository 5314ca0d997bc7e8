//! The repository contract, checked on both backends: every test function below runs once
//! on a temporary SQLite file and once on a fresh PostgreSQL database
//! (`LORAFLOW_TEST_POSTGRES_URL`, default the local server).

use std::path::PathBuf;

use chrono::{DateTime, Duration, TimeZone, Utc};
use serde_json::json;
use uuid::Uuid;

use super::testing::{drop_postgres_database, fresh_postgres_url, temp_sqlite_url};
use super::*;
use crate::types::{AesKey, DevAddr, Eui64};

struct TestDb {
    cfg: DatabaseConfig,
    s: Storage,
    dir: Option<PathBuf>,
}

impl TestDb {
    async fn sqlite() -> TestDb {
        let dir = std::env::temp_dir().join(format!("loraflow-storage-test-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let cfg = DatabaseConfig { url: temp_sqlite_url(&dir), ..Default::default() };
        let s = Storage::connect(&cfg).await.unwrap();
        assert_eq!(s.backend_name(), "sqlite");
        TestDb { cfg, s, dir: Some(dir) }
    }

    async fn postgres() -> TestDb {
        let cfg = DatabaseConfig { url: fresh_postgres_url().await, max_connections: 4, ..Default::default() };
        let s = Storage::connect(&cfg).await.unwrap();
        assert_eq!(s.backend_name(), "postgres");
        TestDb { cfg, s, dir: None }
    }

    async fn reconnect(&mut self) {
        self.s.close().await;
        self.s = Storage::connect(&self.cfg).await.unwrap();
    }

    /// Runs `test` in a task so that the database is removed even when the test panics,
    /// then re-raises the panic.
    async fn run<F>(self, test: F)
    where
        F: for<'a> FnOnce(&'a mut TestDb) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>> + Send + 'static,
    {
        let (url, dir) = (self.cfg.url.clone(), self.dir.clone());
        let outcome = tokio::spawn(async move {
            let mut db = self;
            test(&mut db).await;
            db.s.close().await;
        })
        .await;
        match dir {
            Some(dir) => {
                let _ = std::fs::remove_dir_all(dir);
            }
            None => drop_postgres_database(&url).await,
        }
        if let Err(e) = outcome {
            std::panic::resume_unwind(e.into_panic());
        }
    }
}

/// Generates `sqlite::<name>` and `postgres::<name>` tests from `async fn <name>(&mut TestDb)`.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::TestDb::sqlite().await.run(|db| Box::pin(super::$name(db))).await;
                }
            )*
        }

        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::TestDb::postgres().await.run(|db| Box::pin(super::$name(db))).await;
                }
            )*
        }
    };
}

on_both_backends!(
    gateway_crud_round_trips,
    duplicate_gateway_and_device_are_already_exists,
    last_seen_only_moves_forward_and_ignores_unknown_ids,
    application_crud_and_delete_cascades_to_devices,
    device_profile_in_use_cannot_be_deleted,
    profiles_from_before_the_adr_fields_read_back_with_their_defaults,
    unknown_references_are_conflicts_naming_the_field,
    device_crud_list_filter_and_context,
    device_keys_are_replaced_and_need_a_device,
    dev_nonce_reuse_is_refused_until_cleared,
    sessions_are_found_by_shared_dev_addr,
    cas_applies_only_the_first_of_two_updates_with_the_same_expected,
    concurrent_cas_batches_let_exactly_one_win,
    next_f_cnt_down_returns_and_increments,
    advance_f_cnt_up_only_moves_forward,
    sessions_are_read_in_bulk,
    sessions_are_read_in_bulk_with_their_profiles_adr,
    queue_is_oldest_first_and_items_update,
    uplink_history_is_newest_first_with_since_and_limit,
    event_history_is_newest_first_with_since_and_limit,
    uplink_pages_walk_every_row_once_across_equal_times,
    event_pages_filter_by_kind_and_count_honestly,
    recent_events_span_devices_newest_first_and_filter,
    a_history_batch_is_stored_all_or_nothing,
    measurements_are_stored_with_their_uplink_and_read_back_latest_first,
    the_hourly_rollup_sums_every_batch_and_keeps_the_latest_value,
    profile_measurement_definitions_round_trip,
    data_survives_close_and_reconnect,
    api_key_exists_only_for_the_stored_hash,
);

fn t(secs: i64) -> DateTime<Utc> {
    // Microsecond precision, as stored.
    Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap() + Duration::seconds(secs) + Duration::microseconds(123_456)
}

fn eui(n: u64) -> Eui64 {
    Eui64::from_u64(n)
}

fn gateway(n: u64, created: i64) -> Gateway {
    Gateway {
        gateway_id: eui(0xaa00 + n),
        name: format!("gw-{n}"),
        description: "roof".into(),
        location: Some(Location { latitude: 52.5, longitude: 13.25, altitude: 40.0 }),
        created_at: t(created),
        updated_at: t(created),
        last_seen_at: None,
        region_config_id: None,
        allowed_networks: AllowedNetworks::anywhere(),
    }
}

fn application(name: &str) -> Application {
    Application { id: Uuid::new_v4(), name: name.into(), description: String::new(), created_at: t(0), updated_at: t(0) }
}

fn profile() -> DeviceProfile {
    DeviceProfile {
        id: Uuid::new_v4(),
        name: "eu868-a".into(),
        region: "EU868".into(),
        mac_version: "1.0.3".into(),
        reg_params_revision: "RP002-1.0.3".into(),
        supports_otaa: true,
        supports_class_c: false,
        adr_enabled: true,
        // Not the defaults, so that a column left out of a query shows.
        adr_min_dr: 1,
        adr_max_dr: 4,
        adr_installation_margin_db: 12.5,
        dev_status_req_freq: 24,
        class_c_timeout: 5,
        payload_codec: "JS".into(),
        payload_codec_script: "function decodeUplink(i) { return {data: {}}; }".into(),
        measurements: Default::default(),
        auto_detect_measurements: true,
        created_at: t(0),
        updated_at: t(0),
    }
}

fn device(n: u64, app: &Application, dp: &DeviceProfile) -> Device {
    Device {
        dev_eui: eui(0x0100 + n),
        name: format!("dev-{n}"),
        description: String::new(),
        application_id: app.id,
        device_profile_id: dp.id,
        join_eui: eui(0x7000),
        skip_fcnt_check: false,
        is_disabled: false,
        tags: json!({"room": "kitchen"}),
        last_seen_at: None,
        dev_addr: None,
        created_at: t(n as i64),
        updated_at: t(n as i64),
    }
}

fn session(dev_eui: Eui64, addr: u32) -> DeviceSession {
    DeviceSession {
        dev_eui,
        dev_addr: DevAddr::from_u32(addr),
        mac_version: "1.0.3".into(),
        f_nwk_s_int_key: AesKey([1; 16]),
        s_nwk_s_int_key: AesKey([1; 16]),
        nwk_s_enc_key: AesKey([1; 16]),
        app_s_key: AesKey([2; 16]),
        f_cnt_up: 10,
        n_f_cnt_down: 5,
        rx1_delay: 1,
        rx1_dr_offset: 0,
        rx2_dr: 0,
        rx2_frequency: 869_525_000,
        pending_ack_f_cnt: Some(9),
        mac_state: Default::default(),
        is_otaa: true,
        created_at: t(0),
        updated_at: t(0),
    }
}

/// An application, a profile and `n` devices in it.
async fn fleet(s: &Storage, n: u64) -> (Application, DeviceProfile, Vec<Device>) {
    let app = application("fleet");
    let dp = profile();
    s.applications.create(&app).await.unwrap();
    s.device_profiles.create(&dp).await.unwrap();
    let mut devs = Vec::new();
    for i in 0..n {
        let d = device(i, &app, &dp);
        s.devices.create(&d).await.unwrap();
        devs.push(d);
    }
    (app, dp, devs)
}

fn uplink(dev: &Device, f_cnt: u32, time: DateTime<Utc>) -> UplinkRecord {
    UplinkRecord {
        deduplication_id: Uuid::new_v4(),
        time,
        dev_eui: dev.dev_eui,
        application_id: dev.application_id,
        dev_addr: DevAddr::from_u32(0x2601_1234),
        f_cnt,
        f_port: if f_cnt % 2 == 0 { Some(1) } else { None },
        confirmed: f_cnt % 3 == 0,
        dr: 5,
        frequency: 868_100_000,
        rssi: -57,
        snr: 9.5,
        gateway_count: 2,
        data: vec![1, 2, 3, f_cnt as u8],
        object: if f_cnt % 2 == 0 { Some(json!({"temperature": 21.5})) } else { None },
        rx_info: json!([{"gatewayId": "0102030405060708", "rssi": -57}]),
        tx_info: json!({"frequency": 868100000}),
        // Every other row carries an ADR decision, so both the NULL and the set columns
        // round-trip.
        adr_decision: (f_cnt % 2 == 1).then_some(crate::mac::adr::AdrDecision {
            dr: 5,
            tx_power_index: 2,
            nb_trans: 1 + (f_cnt % 3) as u8,
        }),
        measurements: Vec::new(),
    }
}

fn is_conflict_on(e: &StorageError, field: &str) -> bool {
    matches!(e, StorageError::Conflict(m) if m.starts_with(field))
}

async fn gateway_crud_round_trips(db: &mut TestDb) {
    let s = &db.s;
    let (a, b, c) = (gateway(1, 20), gateway(2, 10), gateway(3, 30));
    for g in [&a, &b, &c] {
        s.gateways.create(g).await.unwrap();
    }
    assert_eq!(s.gateways.get(a.gateway_id).await.unwrap(), a);

    let page = s.gateways.list(2, 0).await.unwrap();
    assert_eq!(page.total_count, 3);
    assert_eq!(page.result, vec![b.clone(), a.clone()], "oldest first");
    assert_eq!(s.gateways.list(2, 2).await.unwrap().result, vec![c.clone()]);

    let mut ids = s.gateways.all_ids().await.unwrap();
    ids.sort();
    assert_eq!(ids, vec![a.gateway_id, b.gateway_id, c.gateway_id]);

    assert_eq!(s.gateways.region_config_ids().await.unwrap(), vec![]);
    let anywhere = AllowedNetworks::anywhere();
    assert_eq!(
        s.gateways.allowed_networks().await.unwrap(),
        vec![(a.gateway_id, anywhere.clone()), (b.gateway_id, anywhere.clone()), (c.gateway_id, anywhere.clone())]
    );
    let networks = AllowedNetworks::parse(&["192.0.2.0/24", "2001:db8::/32"]).unwrap();
    let changed = Gateway {
        region_config_id: Some("us915_1".into()),
        allowed_networks: networks.clone(),
        name: "renamed".into(),
        description: "mast".into(),
        location: None,
        updated_at: t(99),
        // Not updatable through `update`.
        created_at: t(1000),
        last_seen_at: Some(t(1000)),
        ..a.clone()
    };
    s.gateways.update(&changed).await.unwrap();
    let got = s.gateways.get(a.gateway_id).await.unwrap();
    assert_eq!(got, Gateway { created_at: a.created_at, last_seen_at: None, ..changed });
    assert_eq!(s.gateways.region_config_ids().await.unwrap(), vec![(a.gateway_id, "us915_1".to_string())]);
    assert_eq!(s.gateways.allowed_networks().await.unwrap()[0], (a.gateway_id, networks));

    s.gateways.delete(a.gateway_id).await.unwrap();
    assert!(matches!(s.gateways.get(a.gateway_id).await, Err(StorageError::NotFound)));
    assert!(matches!(s.gateways.delete(a.gateway_id).await, Err(StorageError::NotFound)));
    assert!(matches!(s.gateways.update(&a).await, Err(StorageError::NotFound)));
    assert_eq!(s.gateways.list(10, 0).await.unwrap().total_count, 2);
}

async fn duplicate_gateway_and_device_are_already_exists(db: &mut TestDb) {
    let s = &db.s;
    let g = gateway(1, 0);
    s.gateways.create(&g).await.unwrap();
    assert!(matches!(s.gateways.create(&g).await, Err(StorageError::AlreadyExists)));

    let (_, _, devs) = fleet(s, 1).await;
    assert!(matches!(s.devices.create(&devs[0]).await, Err(StorageError::AlreadyExists)));
}

async fn last_seen_only_moves_forward_and_ignores_unknown_ids(db: &mut TestDb) {
    let s = &db.s;
    let (g1, g2) = (gateway(1, 0), gateway(2, 0));
    s.gateways.create(&g1).await.unwrap();
    s.gateways.create(&g2).await.unwrap();

    s.gateways
        .touch_last_seen(&[(g1.gateway_id, t(10)), (g1.gateway_id, t(30)), (g1.gateway_id, t(20)), (eui(0xdead), t(5))])
        .await
        .unwrap();
    assert_eq!(s.gateways.get(g1.gateway_id).await.unwrap().last_seen_at, Some(t(30)), "latest of the batch");
    assert_eq!(s.gateways.get(g2.gateway_id).await.unwrap().last_seen_at, None);

    s.gateways.touch_last_seen(&[(g1.gateway_id, t(15)), (g2.gateway_id, t(15))]).await.unwrap();
    assert_eq!(s.gateways.get(g1.gateway_id).await.unwrap().last_seen_at, Some(t(30)), "never moves back");
    assert_eq!(s.gateways.get(g2.gateway_id).await.unwrap().last_seen_at, Some(t(15)));
    s.gateways.touch_last_seen(&[]).await.unwrap();

    let (_, _, devs) = fleet(s, 2).await;
    let d = devs[0].dev_eui;
    s.devices.touch_last_seen(&[(d, t(50)), (eui(0xbeef), t(1))]).await.unwrap();
    s.devices.touch_last_seen(&[(d, t(40))]).await.unwrap();
    assert_eq!(s.devices.get(d).await.unwrap().last_seen_at, Some(t(50)));
    assert_eq!(s.devices.get(devs[1].dev_eui).await.unwrap().last_seen_at, None);
    // Sub-microsecond precision is dropped, the same on both backends.
    s.devices.touch_last_seen(&[(d, t(60) + Duration::nanoseconds(700))]).await.unwrap();
    assert_eq!(s.devices.get(d).await.unwrap().last_seen_at, Some(t(60)));
}

async fn application_crud_and_delete_cascades_to_devices(db: &mut TestDb) {
    let s = &db.s;
    let (app, _, devs) = fleet(s, 2).await;
    assert_eq!(s.applications.get(app.id).await.unwrap(), app);
    let other = Application { created_at: t(5), updated_at: t(5), ..application("other") };
    s.applications.create(&other).await.unwrap();
    assert!(matches!(s.applications.create(&other).await, Err(StorageError::AlreadyExists)));
    let page = s.applications.list(10, 0).await.unwrap();
    assert_eq!(page.total_count, 2);
    assert_eq!(page.result, vec![app.clone(), other.clone()]);

    let renamed = Application { name: "renamed".into(), description: "d".into(), updated_at: t(9), ..app.clone() };
    s.applications.update(&renamed).await.unwrap();
    assert_eq!(s.applications.get(app.id).await.unwrap(), renamed);

    // Everything hanging off a device goes with the application.
    let d = devs[0].dev_eui;
    s.devices.set_keys(&DeviceKeys { dev_eui: d, app_key: AesKey([3; 16]), nwk_key: None }).await.unwrap();
    s.sessions.save(&session(d, 0x2601_0001)).await.unwrap();
    assert!(s.devices.insert_dev_nonce(d, eui(0x7000), 1).await.unwrap());
    let item = QueueItem {
        id: Uuid::new_v4(),
        dev_eui: d,
        f_port: 1,
        confirmed: false,
        data: vec![1],
        f_cnt_down: None,
        is_pending: false,
        timeout_at: None,
        retries: 0,
        created_at: t(0),
    };
    s.queue.enqueue(&item).await.unwrap();

    s.applications.delete(app.id).await.unwrap();
    assert!(matches!(s.applications.get(app.id).await, Err(StorageError::NotFound)));
    assert!(matches!(s.applications.delete(app.id).await, Err(StorageError::NotFound)));
    assert!(matches!(s.applications.update(&renamed).await, Err(StorageError::NotFound)));
    for dev in &devs {
        assert!(matches!(s.devices.get(dev.dev_eui).await, Err(StorageError::NotFound)));
    }
    assert!(matches!(s.devices.get_keys(d).await, Err(StorageError::NotFound)));
    assert!(matches!(s.sessions.get(d).await, Err(StorageError::NotFound)));
    assert!(s.sessions.get_by_dev_addr(DevAddr::from_u32(0x2601_0001)).await.unwrap().is_empty());
    assert_eq!(s.devices.max_dev_nonce(d).await.unwrap(), None);
    assert!(matches!(s.queue.get(item.id).await, Err(StorageError::NotFound)));
    assert_eq!(s.devices.list(None, 10, 0).await.unwrap().total_count, 0);
}

async fn device_profile_in_use_cannot_be_deleted(db: &mut TestDb) {
    let s = &db.s;
    let (_, dp, devs) = fleet(s, 1).await;
    assert_eq!(s.device_profiles.get(dp.id).await.unwrap(), dp);
    let changed = DeviceProfile {
        name: "b".into(),
        adr_enabled: false,
        adr_min_dr: 0,
        adr_max_dr: 5,
        adr_installation_margin_db: 0.25,
        dev_status_req_freq: 288,
        class_c_timeout: 3600,
        payload_codec: "NONE".into(),
        updated_at: t(3),
        ..dp.clone()
    };
    s.device_profiles.update(&changed).await.unwrap();
    assert_eq!(s.device_profiles.get(dp.id).await.unwrap(), changed);
    let page = s.device_profiles.list(10, 0).await.unwrap();
    assert_eq!((page.total_count, page.result), (1, vec![changed.clone()]));

    let e = s.device_profiles.delete(dp.id).await.unwrap_err();
    assert!(is_conflict_on(&e, "deviceProfileId"), "{e:?}");
    assert_eq!(s.device_profiles.get(dp.id).await.unwrap(), changed, "still there");

    s.devices.delete(devs[0].dev_eui).await.unwrap();
    s.device_profiles.delete(dp.id).await.unwrap();
    assert!(matches!(s.device_profiles.get(dp.id).await, Err(StorageError::NotFound)));
    assert!(matches!(s.device_profiles.delete(dp.id).await, Err(StorageError::NotFound)));
    assert!(matches!(s.device_profiles.update(&dp).await, Err(StorageError::NotFound)));
}

/// A profile written without the ADR and Class C columns, as every profile created before they existed,
/// reads back with the defaults the REST API gives new profiles.
async fn profiles_from_before_the_adr_fields_read_back_with_their_defaults(db: &mut TestDb) {
    let id = Uuid::new_v4();
    let insert = "INSERT INTO device_profiles (id, name, region, mac_version, reg_params_revision, supports_otaa, \
                  supports_class_c, adr_enabled, payload_codec, payload_codec_script, created_at, updated_at) \
                  VALUES ($1, 'old', 'EU868', '1.0.3', 'RP002-1.0.3', TRUE, FALSE, TRUE, 'NONE', '', $2, $2)";
    if db.cfg.url.starts_with("sqlite") {
        let pool = sqlx::SqlitePool::connect(&db.cfg.url).await.unwrap();
        sqlx::query(insert).bind(id).bind(t(0)).execute(&pool).await.unwrap();
        pool.close().await;
    } else {
        let pool = sqlx::PgPool::connect(&db.cfg.url).await.unwrap();
        sqlx::query(insert).bind(id).bind(t(0)).execute(&pool).await.unwrap();
        pool.close().await;
    }
    let dp = db.s.device_profiles.get(id).await.unwrap();
    assert_eq!((dp.adr_min_dr, dp.adr_max_dr, dp.adr_installation_margin_db, dp.dev_status_req_freq), (0, 5, 10.0, 1), "{dp:?}");
    assert_eq!(dp.class_c_timeout, 5, "classCTimeout default");
}

async fn unknown_references_are_conflicts_naming_the_field(db: &mut TestDb) {
    let s = &db.s;
    let (app, dp, devs) = fleet(s, 1).await;
    let e = s.devices.create(&Device { application_id: Uuid::new_v4(), ..device(5, &app, &dp) }).await.unwrap_err();
    assert!(is_conflict_on(&e, "applicationId"), "{e:?}");
    let e = s.devices.create(&Device { device_profile_id: Uuid::new_v4(), ..device(5, &app, &dp) }).await.unwrap_err();
    assert!(is_conflict_on(&e, "deviceProfileId"), "{e:?}");
    let e = s.devices.update(&Device { application_id: Uuid::new_v4(), ..devs[0].clone() }).await.unwrap_err();
    assert!(is_conflict_on(&e, "applicationId"), "{e:?}");
    let e = s.devices.update(&Device { device_profile_id: Uuid::new_v4(), ..devs[0].clone() }).await.unwrap_err();
    assert!(is_conflict_on(&e, "deviceProfileId"), "{e:?}");
    assert_eq!(s.devices.get(devs[0].dev_eui).await.unwrap(), devs[0]);
}

async fn device_crud_list_filter_and_context(db: &mut TestDb) {
    let s = &db.s;
    let (app, dp, devs) = fleet(s, 3).await;
    let app2 = application("second");
    s.applications.create(&app2).await.unwrap();
    let lone = device(9, &app2, &dp);
    s.devices.create(&lone).await.unwrap();

    assert_eq!(s.devices.get(devs[1].dev_eui).await.unwrap(), devs[1]);
    let all = s.devices.list(None, 100, 0).await.unwrap();
    assert_eq!(all.total_count, 4);
    assert_eq!(all.result, vec![devs[0].clone(), devs[1].clone(), devs[2].clone(), lone.clone()]);
    let in_app = s.devices.list(Some(app.id), 2, 1).await.unwrap();
    assert_eq!(in_app.total_count, 3);
    assert_eq!(in_app.result, vec![devs[1].clone(), devs[2].clone()]);
    assert_eq!(s.devices.list(Some(app2.id), 10, 0).await.unwrap().result, vec![lone.clone()]);

    let moved = Device {
        name: "moved".into(),
        description: "now in app2".into(),
        application_id: app2.id,
        join_eui: eui(0x7001),
        skip_fcnt_check: true,
        is_disabled: true,
        tags: json!({"floor": 2}),
        updated_at: t(77),
        ..devs[0].clone()
    };
    s.devices.update(&moved).await.unwrap();
    assert_eq!(s.devices.get(moved.dev_eui).await.unwrap(), moved);
    assert!(matches!(s.devices.update(&device(42, &app, &dp)).await, Err(StorageError::NotFound)));

    let ctx = s.devices.context(moved.dev_eui).await.unwrap();
    assert_eq!(ctx, DeviceContext { device: moved.clone(), profile: dp.clone(), application_name: "second".into() });
    assert!(matches!(s.devices.context(eui(0xdead)).await, Err(StorageError::NotFound)));

    s.devices.delete(moved.dev_eui).await.unwrap();
    assert!(matches!(s.devices.get(moved.dev_eui).await, Err(StorageError::NotFound)));
    assert!(matches!(s.devices.delete(moved.dev_eui).await, Err(StorageError::NotFound)));
}

async fn device_keys_are_replaced_and_need_a_device(db: &mut TestDb) {
    let s = &db.s;
    let (_, _, devs) = fleet(s, 1).await;
    let d = devs[0].dev_eui;
    assert!(matches!(s.devices.get_keys(d).await, Err(StorageError::NotFound)));
    let k11 = DeviceKeys { dev_eui: d, app_key: AesKey([4; 16]), nwk_key: Some(AesKey([5; 16])) };
    s.devices.set_keys(&k11).await.unwrap();
    assert_eq!(s.devices.get_keys(d).await.unwrap(), k11);
    let k10 = DeviceKeys { dev_eui: d, app_key: AesKey([6; 16]), nwk_key: None };
    s.devices.set_keys(&k10).await.unwrap();
    assert_eq!(s.devices.get_keys(d).await.unwrap(), k10);

    // JoinNonce counts up per device and survives a key change.
    assert_eq!(s.devices.next_join_nonce(d).await.unwrap(), 1);
    assert_eq!(s.devices.next_join_nonce(d).await.unwrap(), 2);
    s.devices.set_keys(&k11).await.unwrap();
    assert_eq!(s.devices.next_join_nonce(d).await.unwrap(), 3);
    s.devices.set_keys(&k10).await.unwrap();
    assert!(matches!(s.devices.next_join_nonce(eui(0xdead)).await, Err(StorageError::NotFound)));

    let orphan = DeviceKeys { dev_eui: eui(0xdead), ..k10 };
    assert!(matches!(s.devices.set_keys(&orphan).await, Err(StorageError::NotFound)));
    s.devices.delete(d).await.unwrap();
    assert!(matches!(s.devices.get_keys(d).await, Err(StorageError::NotFound)));
}

async fn dev_nonce_reuse_is_refused_until_cleared(db: &mut TestDb) {
    let s = &db.s;
    let (_, _, devs) = fleet(s, 2).await;
    let (d, other) = (devs[0].dev_eui, devs[1].dev_eui);
    let join = eui(0x7000);
    assert_eq!(s.devices.max_dev_nonce(d).await.unwrap(), None);
    assert_eq!(s.devices.dev_nonce_used_at(d, join, 7).await.unwrap(), None);
    let before = chrono::Utc::now() - chrono::Duration::milliseconds(1);
    assert!(s.devices.insert_dev_nonce(d, join, 7).await.unwrap());
    let used_at = s.devices.dev_nonce_used_at(d, join, 7).await.unwrap().expect("dated");
    assert!(used_at >= before && used_at <= chrono::Utc::now(), "{used_at}");
    assert_eq!(s.devices.dev_nonce_used_at(d, eui(0x7001), 7).await.unwrap(), None, "per JoinEUI");
    assert!(!s.devices.insert_dev_nonce(d, join, 7).await.unwrap(), "reused");
    assert_eq!(s.devices.dev_nonce_used_at(d, join, 7).await.unwrap(), Some(used_at), "a refused reuse changes nothing");
    assert!(s.devices.insert_dev_nonce(d, join, 65535).await.unwrap());
    assert!(s.devices.insert_dev_nonce(d, join, 3).await.unwrap());
    assert!(s.devices.insert_dev_nonce(other, join, 7).await.unwrap(), "per device");
    assert_eq!(s.devices.max_dev_nonce(d).await.unwrap(), Some(65535));
    assert_eq!(s.devices.max_dev_nonce(other).await.unwrap(), Some(7));

    s.devices.clear_dev_nonces(d).await.unwrap();
    assert_eq!(s.devices.max_dev_nonce(d).await.unwrap(), None);
    assert!(s.devices.insert_dev_nonce(d, join, 7).await.unwrap(), "usable again after clear");
    assert_eq!(s.devices.max_dev_nonce(other).await.unwrap(), Some(7), "other device untouched");

    assert!(matches!(s.devices.insert_dev_nonce(eui(0xdead), join, 1).await, Err(StorageError::NotFound)));
}

async fn sessions_are_found_by_shared_dev_addr(db: &mut TestDb) {
    let s = &db.s;
    let (_, _, devs) = fleet(s, 3).await;
    let shared = 0x2601_1234;
    let (a, b, c) = (session(devs[0].dev_eui, shared), session(devs[1].dev_eui, shared), session(devs[2].dev_eui, 0x2601_9999));
    for x in [&a, &b, &c] {
        s.sessions.save(x).await.unwrap();
    }
    assert_eq!(s.sessions.get(a.dev_eui).await.unwrap(), a);
    let mut found = s.sessions.get_by_dev_addr(DevAddr::from_u32(shared)).await.unwrap();
    found.sort_by_key(|x| x.dev_eui);
    assert_eq!(found, vec![a.clone(), b.clone()]);
    assert_eq!(s.devices.get(a.dev_eui).await.unwrap().dev_addr, Some(DevAddr::from_u32(shared)));
    assert_eq!(s.sessions.all().await.unwrap().len(), 3);

    // A new session (rejoin) replaces the old one and moves the device's address.
    let rejoined = DeviceSession {
        f_cnt_up: 0,
        n_f_cnt_down: 0,
        pending_ack_f_cnt: None,
        mac_state: Default::default(),
        app_s_key: AesKey([9; 16]),
        created_at: t(50),
        updated_at: t(50),
        ..session(a.dev_eui, 0x2601_9999)
    };
    s.sessions.save(&rejoined).await.unwrap();
    assert_eq!(s.sessions.get(a.dev_eui).await.unwrap(), rejoined);
    assert_eq!(s.sessions.get_by_dev_addr(DevAddr::from_u32(shared)).await.unwrap(), vec![b.clone()]);
    assert_eq!(s.sessions.get_by_dev_addr(DevAddr::from_u32(0x2601_9999)).await.unwrap().len(), 2);
    assert_eq!(s.devices.get(a.dev_eui).await.unwrap().dev_addr, Some(DevAddr::from_u32(0x2601_9999)));

    s.sessions.delete(b.dev_eui).await.unwrap();
    assert!(matches!(s.sessions.get(b.dev_eui).await, Err(StorageError::NotFound)));
    assert!(matches!(s.sessions.delete(b.dev_eui).await, Err(StorageError::NotFound)));
    assert_eq!(s.devices.get(b.dev_eui).await.unwrap().dev_addr, None);
    assert!(s.sessions.get_by_dev_addr(DevAddr::from_u32(shared)).await.unwrap().is_empty());
    assert!(matches!(s.sessions.save(&session(eui(0xdead), 1)).await, Err(StorageError::NotFound)));
}

async fn cas_applies_only_the_first_of_two_updates_with_the_same_expected(db: &mut TestDb) {
    let s = &db.s;
    let (_, _, devs) = fleet(s, 2).await;
    let (a, b) = (devs[0].dev_eui, devs[1].dev_eui);
    s.sessions.save(&session(a, 1)).await.unwrap(); // f_cnt_up 10
    s.sessions.save(&session(b, 2)).await.unwrap();

    // b sorts after a; listing it first checks that results come back in input order.
    let res = s
        .sessions
        .cas_f_cnt_up(&[
            FCntUpdate { dev_eui: b, expected: 10, next: 11 },
            FCntUpdate { dev_eui: a, expected: 10, next: 11 },
            FCntUpdate { dev_eui: a, expected: 10, next: 12 },
            FCntUpdate { dev_eui: eui(0xdead), expected: 0, next: 1 },
            FCntUpdate { dev_eui: b, expected: 11, next: 15 },
        ])
        .await
        .unwrap();
    assert_eq!(res, vec![true, true, false, false, true]);
    assert_eq!(s.sessions.get(a).await.unwrap().f_cnt_up, 11);
    assert_eq!(s.sessions.get(b).await.unwrap().f_cnt_up, 15);

    let stale = s.sessions.cas_f_cnt_up(&[FCntUpdate { dev_eui: a, expected: 10, next: 13 }]).await.unwrap();
    assert_eq!(stale, vec![false], "a replay with the old counter loses");
    assert_eq!(s.sessions.cas_f_cnt_up(&[]).await.unwrap(), Vec::<bool>::new());
    // The full u32 range survives the BIGINT column.
    assert_eq!(s.sessions.cas_f_cnt_up(&[FCntUpdate { dev_eui: a, expected: 11, next: u32::MAX }]).await.unwrap(), vec![true]);
    assert_eq!(s.sessions.get(a).await.unwrap().f_cnt_up, u32::MAX);
}

async fn concurrent_cas_batches_let_exactly_one_win(db: &mut TestDb) {
    let s = &db.s;
    let (_, _, devs) = fleet(s, 2).await;
    let (a, b) = (devs[0].dev_eui, devs[1].dev_eui);
    s.sessions.save(&session(a, 1)).await.unwrap();
    s.sessions.save(&session(b, 2)).await.unwrap();

    for round in 0..20u32 {
        let expected = 10 + round;
        // Both batches touch both devices, in opposite orders.
        let one = vec![FCntUpdate { dev_eui: a, expected, next: expected + 1 }, FCntUpdate { dev_eui: b, expected, next: expected + 1 }];
        let two = vec![FCntUpdate { dev_eui: b, expected, next: expected + 1 }, FCntUpdate { dev_eui: a, expected, next: expected + 1 }];
        let (s1, s2) = (s.clone(), s.clone());
        let h1 = tokio::spawn(async move { s1.sessions.cas_f_cnt_up(&one).await });
        let h2 = tokio::spawn(async move { s2.sessions.cas_f_cnt_up(&two).await });
        let (r1, r2) = (h1.await.unwrap().unwrap(), h2.await.unwrap().unwrap());
        // r1 is [a, b], r2 is [b, a].
        assert_eq!(u8::from(r1[0]) + u8::from(r2[1]), 1, "round {round}: device a applied exactly once");
        assert_eq!(u8::from(r1[1]) + u8::from(r2[0]), 1, "round {round}: device b applied exactly once");
        assert_eq!(s.sessions.get(a).await.unwrap().f_cnt_up, expected + 1);
        assert_eq!(s.sessions.get(b).await.unwrap().f_cnt_up, expected + 1);
    }
}

async fn sessions_are_read_in_bulk(db: &mut TestDb) {
    let s = &db.s;
    let (_, _, devs) = fleet(s, 3).await;
    s.sessions.save(&session(devs[0].dev_eui, 1)).await.unwrap();
    s.sessions.save(&session(devs[2].dev_eui, 3)).await.unwrap();
    let ask: Vec<Eui64> = devs.iter().map(|d| d.dev_eui).chain([eui(0xdead)]).collect();
    let mut got: Vec<Eui64> = s.sessions.get_many(&ask).await.unwrap().into_iter().map(|x| x.dev_eui).collect();
    got.sort();
    let mut want = vec![devs[0].dev_eui, devs[2].dev_eui];
    want.sort();
    assert_eq!(got, want);
    assert!(s.sessions.get_many(&[]).await.unwrap().is_empty());
}

async fn sessions_are_read_in_bulk_with_their_profiles_adr(db: &mut TestDb) {
    let s = &db.s;
    let (_, mut dp, devs) = fleet(s, 3).await;
    dp.adr_enabled = false;
    s.device_profiles.update(&dp).await.unwrap();
    let adr_profile = DeviceProfile { adr_enabled: true, ..profile() };
    s.device_profiles.create(&adr_profile).await.unwrap();
    let mut moved = devs[2].clone();
    moved.device_profile_id = adr_profile.id;
    s.devices.update(&moved).await.unwrap();
    let mut with_state = session(devs[2].dev_eui, 3);
    with_state.mac_state.dr = Some(4);
    with_state.mac_state.nb_trans = 2;
    s.sessions.save(&session(devs[0].dev_eui, 1)).await.unwrap();
    s.sessions.save(&with_state).await.unwrap();
    let ask: Vec<Eui64> = devs.iter().map(|d| d.dev_eui).chain([eui(0xdead)]).collect();
    let mut got = s.sessions.get_many_with_adr(&ask).await.unwrap();
    got.sort_by_key(|(x, _)| x.dev_eui);
    let summary: Vec<(Eui64, bool, Option<u8>, u8)> =
        got.iter().map(|(x, adr)| (x.dev_eui, *adr, x.mac_state.dr, x.mac_state.nb_trans)).collect();
    let mut want = vec![(devs[0].dev_eui, false, None, 1), (devs[2].dev_eui, true, Some(4), 2)];
    want.sort_by_key(|w| w.0);
    assert_eq!(summary, want);
    assert!(s.sessions.get_many_with_adr(&[]).await.unwrap().is_empty());
}

async fn advance_f_cnt_up_only_moves_forward(db: &mut TestDb) {
    let s = &db.s;
    let (_, _, devs) = fleet(s, 2).await;
    let (a, b) = (devs[0].dev_eui, devs[1].dev_eui);
    s.sessions.save(&session(a, 1)).await.unwrap();
    s.sessions.save(&session(b, 2)).await.unwrap();
    let before_b = s.sessions.get(b).await.unwrap().f_cnt_up;
    s.sessions.advance_f_cnt_up(&[(a, before_b + 100), (b, 0), (eui(0xdead), 9)]).await.unwrap();
    assert_eq!(s.sessions.get(a).await.unwrap().f_cnt_up, before_b + 100);
    assert_eq!(s.sessions.get(b).await.unwrap().f_cnt_up, before_b, "never moves back");
}

async fn next_f_cnt_down_returns_and_increments(db: &mut TestDb) {
    let s = &db.s;
    let (_, _, devs) = fleet(s, 1).await;
    let d = devs[0].dev_eui;
    s.sessions.save(&session(d, 1)).await.unwrap(); // n_f_cnt_down 5
    assert_eq!(s.sessions.next_f_cnt_down(d).await.unwrap(), 5);
    assert_eq!(s.sessions.next_f_cnt_down(d).await.unwrap(), 6);
    assert_eq!(s.sessions.get(d).await.unwrap().n_f_cnt_down, 7);

    let mut handles = Vec::new();
    for _ in 0..10 {
        let s = s.clone();
        handles.push(tokio::spawn(async move { s.sessions.next_f_cnt_down(d).await.unwrap() }));
    }
    let mut got = Vec::new();
    for h in handles {
        got.push(h.await.unwrap());
    }
    got.sort();
    assert_eq!(got, (7..17).collect::<Vec<u32>>(), "no counter handed out twice");
    assert!(matches!(s.sessions.next_f_cnt_down(eui(0xdead)).await, Err(StorageError::NotFound)));
}

async fn queue_is_oldest_first_and_items_update(db: &mut TestDb) {
    let s = &db.s;
    let (_, _, devs) = fleet(s, 2).await;
    let d = devs[0].dev_eui;
    let item = |n: u8, created: i64| QueueItem {
        id: Uuid::new_v4(),
        dev_eui: d,
        f_port: n,
        confirmed: n % 2 == 0,
        data: vec![n; 3],
        f_cnt_down: None,
        is_pending: false,
        timeout_at: None,
        retries: 0,
        created_at: t(created),
    };
    // Same created_at for the first three: insertion order decides.
    let items = [item(1, 0), item(2, 0), item(3, 0), item(4, -10)];
    for i in &items {
        s.queue.enqueue(i).await.unwrap();
    }
    let other = QueueItem { dev_eui: devs[1].dev_eui, ..item(9, 0) };
    s.queue.enqueue(&other).await.unwrap();
    assert!(matches!(s.queue.enqueue(&items[0]).await, Err(StorageError::AlreadyExists)));

    let listed = s.queue.list(d).await.unwrap();
    assert_eq!(listed, vec![items[3].clone(), items[0].clone(), items[1].clone(), items[2].clone()]);

    let sent = QueueItem { f_cnt_down: Some(42), is_pending: true, timeout_at: Some(t(60)), retries: 1, ..items[0].clone() };
    s.queue.update(&sent).await.unwrap();
    assert_eq!(s.queue.get(sent.id).await.unwrap(), sent);
    s.queue.delete(sent.id).await.unwrap();
    assert!(matches!(s.queue.get(sent.id).await, Err(StorageError::NotFound)));
    assert!(matches!(s.queue.delete(sent.id).await, Err(StorageError::NotFound)));
    assert!(matches!(s.queue.update(&sent).await, Err(StorageError::NotFound)));
    assert_eq!(s.queue.list(d).await.unwrap().len(), 3);

    s.queue.flush(d).await.unwrap();
    assert!(s.queue.list(d).await.unwrap().is_empty());
    assert_eq!(s.queue.list(devs[1].dev_eui).await.unwrap(), vec![other], "other device's queue kept");
    let orphan = QueueItem { dev_eui: eui(0xdead), ..item(1, 0) };
    assert!(matches!(s.queue.enqueue(&orphan).await, Err(StorageError::NotFound)));
}

async fn uplink_history_is_newest_first_with_since_and_limit(db: &mut TestDb) {
    let s = &db.s;
    let (_, _, devs) = fleet(s, 2).await;
    let (d, other) = (&devs[0], &devs[1]);
    // Out of order, and larger than one multi-row INSERT chunk.
    let n = (sql::INSERT_CHUNK + 100) as u32;
    let mut rows: Vec<UplinkRecord> = (0..n).map(|i| uplink(d, i, t(i64::from((i * 7) % n)))).collect();
    rows.push(uplink(other, 0, t(10_000)));
    s.history.insert_uplinks(&rows).await.unwrap();
    s.history.insert_uplinks(&[]).await.unwrap();

    let mut newest_first: Vec<UplinkRecord> = rows[..n as usize].to_vec();
    newest_first.sort_by_key(|r| std::cmp::Reverse(r.time));

    let got = s.history.list_uplinks(d.dev_eui, None, 3).await.unwrap();
    assert_eq!(got, newest_first[..3].to_vec());
    let all = s.history.list_uplinks(d.dev_eui, None, 10_000).await.unwrap();
    assert_eq!(all.len(), n as usize);
    assert!(all.iter().all(|u| u.dev_eui == d.dev_eui));

    let since = s.history.list_uplinks(d.dev_eui, Some(t(i64::from(n) - 5)), 100).await.unwrap();
    assert_eq!(since, newest_first[..5].to_vec(), "since is inclusive");
    // A `since` between two stored times, finer than a second.
    let between = t(i64::from(n) - 3) - Duration::microseconds(1);
    assert_eq!(s.history.list_uplinks(d.dev_eui, Some(between), 100).await.unwrap().len(), 3);
    assert!(s.history.list_uplinks(d.dev_eui, Some(t(100_000)), 100).await.unwrap().is_empty());
    assert!(s.history.list_uplinks(eui(0xdead), None, 100).await.unwrap().is_empty());
}

async fn event_history_is_newest_first_with_since_and_limit(db: &mut TestDb) {
    let s = &db.s;
    let (_, _, devs) = fleet(s, 1).await;
    let d = &devs[0];
    let ev = |i: i64, kind: &str| EventRecord {
        id: Uuid::new_v4(),
        time: t(i),
        dev_eui: d.dev_eui,
        application_id: d.application_id,
        kind: kind.into(),
        body: json!({"n": i, "kind": kind}),
    };
    let rows = vec![ev(2, "join"), ev(5, "ack"), ev(1, "status"), ev(4, "log"), ev(3, "txack")];
    s.history.insert_events(&rows).await.unwrap();

    let got = s.history.list_events(d.dev_eui, None, 2).await.unwrap();
    assert_eq!(got, vec![rows[1].clone(), rows[3].clone()]);
    let since = s.history.list_events(d.dev_eui, Some(t(3)), 10).await.unwrap();
    assert_eq!(since, vec![rows[1].clone(), rows[3].clone(), rows[4].clone()]);
    assert!(s.history.list_events(eui(0xdead), None, 10).await.unwrap().is_empty());
}

/// Walks `page` from the newest row to the end, `limit` rows at a time.
async fn walk<T, F, Fut>(limit: usize, mut page: F, key: fn(&T) -> HistoryCursor) -> Vec<Vec<T>>
where
    F: FnMut(Option<HistoryCursor>) -> Fut,
    Fut: std::future::Future<Output = Vec<T>>,
{
    let mut pages = Vec::new();
    let mut after = None;
    loop {
        let rows = page(after).await;
        assert!(rows.len() <= limit);
        let full = rows.len() == limit;
        after = rows.last().map(key);
        pages.push(rows);
        if !full {
            return pages;
        }
        assert!(pages.len() < 1000, "paging does not end");
    }
}

async fn uplink_pages_walk_every_row_once_across_equal_times(db: &mut TestDb) {
    let s = &db.s;
    let (_, _, devs) = fleet(s, 2).await;
    let (d, other) = (&devs[0], &devs[1]);
    // Groups of four uplinks share a time, so a page boundary falls inside a group.
    let rows: Vec<UplinkRecord> = (0..23u32).map(|i| uplink(d, i, t(i64::from(i / 4)))).collect();
    s.history.insert_uplinks(&rows).await.unwrap();
    s.history.insert_uplinks(&[uplink(other, 0, t(1))]).await.unwrap();

    let key = |u: &UplinkRecord| HistoryCursor { time: u.time, id: u.deduplication_id };
    let q = |after, since| HistoryQuery { dev_eui: d.dev_eui, since, after, limit: 3 };
    let pages = walk(3, |after| async move { s.history.uplinks_page(&q(after, None)).await.unwrap() }, key).await;
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), vec![3, 3, 3, 3, 3, 3, 3, 2]);
    let walked: Vec<UplinkRecord> = pages.concat();
    let mut f_cnts: Vec<u32> = walked.iter().map(|u| u.f_cnt).collect();
    f_cnts.sort_unstable();
    assert_eq!(f_cnts, (0..23).collect::<Vec<_>>(), "every uplink exactly once");
    assert!(walked.windows(2).all(|w| (w[0].time, w[0].deduplication_id) > (w[1].time, w[1].deduplication_id)), "newest first");
    assert_eq!(s.history.count_uplinks(d.dev_eui, None).await.unwrap(), 23);

    // `since` and the cursor together: times 3..=5 are f_cnt 12..=22.
    let pages = walk(3, |after| async move { s.history.uplinks_page(&q(after, Some(t(3)))).await.unwrap() }, key).await;
    let mut f_cnts: Vec<u32> = pages.concat().iter().map(|u| u.f_cnt).collect();
    f_cnts.sort_unstable();
    assert_eq!(f_cnts, (12..23).collect::<Vec<_>>());
    assert_eq!(s.history.count_uplinks(d.dev_eui, Some(t(3))).await.unwrap(), 11);
    assert_eq!(s.history.count_uplinks(eui(0xdead), None).await.unwrap(), 0);
}

async fn event_pages_filter_by_kind_and_count_honestly(db: &mut TestDb) {
    let s = &db.s;
    let (_, _, devs) = fleet(s, 1).await;
    let d = &devs[0];
    let ev = |i: i64, kind: EventKind| EventRecord {
        id: Uuid::new_v4(),
        time: t(i / 2),
        dev_eui: d.dev_eui,
        application_id: d.application_id,
        kind: kind.as_str().into(),
        body: json!({"n": i}),
    };
    let rows: Vec<EventRecord> =
        (0..10).map(|i| ev(i, EventKind::ALL[i as usize % 5])).chain((10..17).map(|i| ev(i, EventKind::Log))).collect();
    s.history.insert_events(&rows).await.unwrap();

    let key = |e: &EventRecord| HistoryCursor { time: e.time, id: e.id };
    let q = |after| HistoryQuery { dev_eui: d.dev_eui, since: None, after, limit: 2 };
    let logs = walk(2, |after| async move { s.history.events_page(&q(after), Some(EventKind::Log)).await.unwrap() }, key).await.concat();
    let mut ns: Vec<i64> = logs.iter().map(|e| e.body["n"].as_i64().unwrap()).collect();
    ns.sort_unstable();
    assert_eq!(ns, vec![4, 9, 10, 11, 12, 13, 14, 15, 16]);
    assert!(logs.iter().all(|e| e.kind == "log"));
    assert_eq!(s.history.count_events(d.dev_eui, None, Some(EventKind::Log)).await.unwrap(), 9);
    assert_eq!(s.history.count_events(d.dev_eui, None, Some(EventKind::Join)).await.unwrap(), 2);
    assert_eq!(s.history.count_events(d.dev_eui, None, None).await.unwrap(), 17);
    assert_eq!(s.history.count_events(d.dev_eui, Some(t(5)), None).await.unwrap(), 7, "times 5..=8");

    let all = walk(2, |after| async move { s.history.events_page(&q(after), None).await.unwrap() }, key).await.concat();
    let mut ids: Vec<Uuid> = all.iter().map(|e| e.id).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 17, "every event exactly once");
}

async fn recent_events_span_devices_newest_first_and_filter(db: &mut TestDb) {
    let s = &db.s;
    let (_, _, devs) = fleet(s, 2).await;
    let other_app = Uuid::new_v4();
    let ev = |i: i64, dev: usize, kind: EventKind, level: Option<&str>| EventRecord {
        id: Uuid::new_v4(),
        time: t(i),
        dev_eui: devs[dev].dev_eui,
        // The second device's events were published to another application.
        application_id: if dev == 0 { devs[0].application_id } else { other_app },
        kind: kind.as_str().into(),
        body: match level {
            Some(l) => json!({"n": i, "level": l}),
            None => json!({"n": i}),
        },
    };
    let rows = vec![
        ev(1, 0, EventKind::Join, None),
        ev(2, 1, EventKind::Join, None),
        ev(3, 0, EventKind::Log, Some("ERROR")),
        ev(4, 1, EventKind::Log, Some("WARNING")),
        ev(5, 0, EventKind::Status, None),
        ev(6, 1, EventKind::Log, Some("ERROR")),
    ];
    s.history.insert_events(&rows).await.unwrap();
    let ns = |got: Vec<EventRecord>| got.iter().map(|e| e.body["n"].as_i64().unwrap()).collect::<Vec<_>>();

    let all = EventFilter::default();
    assert_eq!(ns(s.history.recent_events(&all, 10).await.unwrap()), vec![6, 5, 4, 3, 2, 1]);
    assert_eq!(ns(s.history.recent_events(&all, 2).await.unwrap()), vec![6, 5]);
    assert_eq!(s.history.count_recent_events(&all).await.unwrap(), 6);

    let logs = EventFilter { kind: Some(EventKind::Log), ..all };
    assert_eq!(ns(s.history.recent_events(&logs, 10).await.unwrap()), vec![6, 4, 3]);
    let errors = EventFilter { level: Some(LogLevel::Error), ..all };
    assert_eq!(ns(s.history.recent_events(&errors, 10).await.unwrap()), vec![6, 3]);
    assert_eq!(s.history.count_recent_events(&errors).await.unwrap(), 2);
    let joins_at_error = EventFilter { kind: Some(EventKind::Join), level: Some(LogLevel::Error), ..all };
    assert_eq!(s.history.count_recent_events(&joins_at_error).await.unwrap(), 0, "only log events have a level");

    let mine = EventFilter { application_id: Some(devs[0].application_id), ..all };
    assert_eq!(ns(s.history.recent_events(&mine, 10).await.unwrap()), vec![5, 3, 1]);
    let mine_errors = EventFilter { level: Some(LogLevel::Error), ..mine };
    assert_eq!(ns(s.history.recent_events(&mine_errors, 10).await.unwrap()), vec![3]);
    assert_eq!(s.history.count_recent_events(&EventFilter { application_id: Some(Uuid::new_v4()), ..all }).await.unwrap(), 0);
}

async fn a_history_batch_is_stored_all_or_nothing(db: &mut TestDb) {
    let s = &db.s;
    let (_, _, devs) = fleet(s, 1).await;
    let d = &devs[0];
    let ev = |i: i64| EventRecord {
        id: Uuid::new_v4(),
        time: t(i),
        dev_eui: d.dev_eui,
        application_id: d.application_id,
        kind: "log".into(),
        body: json!({"n": i}),
    };
    // Uplinks and events of one batch together, more than one INSERT chunk of each.
    let n = sql::INSERT_CHUNK as i64 + 3;
    let uplinks: Vec<UplinkRecord> = (0..n).map(|i| uplink(d, i as u32, t(i))).collect();
    let events: Vec<EventRecord> = (0..n).map(ev).collect();
    s.history.insert_history(&uplinks, &events).await.unwrap();
    s.history.insert_history(&[], &[]).await.unwrap();
    let mut stored = s.history.list_uplinks(d.dev_eui, None, 10_000).await.unwrap();
    stored.reverse();
    assert_eq!(stored, uplinks);
    assert_eq!(s.history.list_events(d.dev_eui, None, 10_000).await.unwrap().len(), n as usize);

    // The events table gone: the batch fails at its second insert and its uplinks are not
    // stored either.
    let rename = |from: &str, to: &str| format!("ALTER TABLE {from} RENAME TO {to}");
    let exec = |sql: String| async move {
        match &s.pool {
            Pool::Postgres(p) => sqlx::query(&sql).execute(p).await.map(|_| ()),
            Pool::Sqlite(p) => sqlx::query(&sql).execute(p).await.map(|_| ()),
        }
        .unwrap()
    };
    exec(rename("events", "events_away")).await;
    assert!(s.history.insert_history(&[uplink(d, 9_000, t(9_000))], &[ev(9_000)]).await.is_err());
    exec(rename("events_away", "events")).await;
    assert_eq!(s.history.list_uplinks(d.dev_eui, None, 10_000).await.unwrap().len(), n as usize, "a failed batch stores nothing");
    // Nothing was left holding a transaction: the next writes go through at once, on every
    // connection of the pool.
    let started = std::time::Instant::now();
    for i in 0..8 {
        s.history.insert_history(&[uplink(d, 10_000 + i, t(10_000))], &[ev(10_000)]).await.unwrap();
        s.sessions.save(&session(d.dev_eui, 0x2601_0001)).await.unwrap();
    }
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "a write waited for a lock");
    assert_eq!(s.history.list_uplinks(d.dev_eui, None, 10_000).await.unwrap().len(), n as usize + 8);
}

async fn measurements_are_stored_with_their_uplink_and_read_back_latest_first(db: &mut TestDb) {
    let s = &db.s;
    let (_, _, devs) = fleet(s, 2).await;
    let (d, other) = (&devs[0], &devs[1]);
    let num = |name: &str, kind: MeasurementKind, v: f64| Measurement { name: name.into(), kind, value: MeasurementValue::Number(v) };
    let with = |dev: &Device, f_cnt: u32, time: i64, ms: Vec<Measurement>| UplinkRecord { measurements: ms, ..uplink(dev, f_cnt, t(time)) };
    let batch = [
        with(d, 1, 10, vec![num("temp", MeasurementKind::Gauge, 20.5), num("energy", MeasurementKind::Counter, 100.0)]),
        with(
            d,
            2,
            20,
            vec![
                num("temp", MeasurementKind::Gauge, 21.25),
                Measurement { name: "state".into(), kind: MeasurementKind::String, value: MeasurementValue::Text("open".into()) },
            ],
        ),
        with(other, 1, 30, vec![num("temp", MeasurementKind::Gauge, -3.0)]),
    ];
    s.history.insert_uplinks(&batch).await.unwrap();
    let latest = s.measurements.latest_measurements(d.dev_eui).await.unwrap();
    let sm = |time: i64, name: &str, kind: MeasurementKind, value: MeasurementValue| StoredMeasurement {
        time: t(time),
        name: name.into(),
        kind,
        value,
    };
    assert_eq!(
        latest,
        [
            sm(10, "energy", MeasurementKind::Counter, MeasurementValue::Number(100.0)),
            sm(20, "state", MeasurementKind::String, MeasurementValue::Text("open".into())),
            sm(20, "temp", MeasurementKind::Gauge, MeasurementValue::Number(21.25)),
        ]
    );
    assert_eq!(s.measurements.latest_measurements(other.dev_eui).await.unwrap().len(), 1);
    assert!(s.measurements.latest_measurements(eui(99)).await.unwrap().is_empty());

    // A series in a half-open range, oldest first, paged; and per application by device.
    let temps = |r: Vec<StoredMeasurement>| r.into_iter().map(|m| (m.time, m.value)).collect::<Vec<_>>();
    let n = |v: f64| MeasurementValue::Number(v);
    assert_eq!(temps(s.measurements.series(d.dev_eui, "temp", t(10), t(20), 100, 0).await.unwrap()), [(t(10), n(20.5))], "to is exclusive");
    assert_eq!(temps(s.measurements.series(d.dev_eui, "temp", t(0), t(21), 100, 0).await.unwrap()), [(t(10), n(20.5)), (t(20), n(21.25))]);
    assert_eq!(temps(s.measurements.series(d.dev_eui, "temp", t(0), t(21), 1, 1).await.unwrap()), [(t(20), n(21.25))]);
    assert!(s.measurements.series(d.dev_eui, "temp", t(11), t(20), 100, 0).await.unwrap().is_empty());
    let app = s.measurements.application_series(d.application_id, "temp", t(0), t(100), 100, 0).await.unwrap();
    let mut want = vec![(d.dev_eui, t(10), n(20.5)), (d.dev_eui, t(20), n(21.25)), (other.dev_eui, t(30), n(-3.0))];
    want.sort_by_key(|w| (w.0 .0, w.1));
    assert_eq!(app.iter().map(|(e, _, m)| (*e, m.time, m.value.clone())).collect::<Vec<_>>(), want);
    assert!(app.iter().all(|(e, name, _)| name.as_deref() == Some(if *e == d.dev_eui { d.name.as_str() } else { other.name.as_str() })));
}

async fn the_hourly_rollup_sums_every_batch_and_keeps_the_latest_value(db: &mut TestDb) {
    let s = &db.s;
    let (_, _, devs) = fleet(s, 2).await;
    let (d, other) = (&devs[0], &devs[1]);
    let num = |name: &str, kind: MeasurementKind, v: f64| Measurement { name: name.into(), kind, value: MeasurementValue::Number(v) };
    let with = |dev: &Device, f_cnt: u32, time: i64, ms: Vec<Measurement>| UplinkRecord { measurements: ms, ..uplink(dev, f_cnt, t(time)) };
    let text = Measurement { name: "temp".into(), kind: MeasurementKind::String, value: MeasurementValue::Text("n/a".into()) };
    // t(0) is 12:00:00.123456: hour 12 gets 20, 24 and (a later batch) 22;
    // hour 13 gets -1 and a text value (not rolled up); `other` 7 in hour 12. The second batch's 22 is older
    // than the first batch's 24, so 24 stays the last value.
    s.history
        .insert_uplinks(&[
            with(d, 1, 60, vec![num("temp", MeasurementKind::Gauge, 20.0), num("energy", MeasurementKind::Counter, 5.0)]),
            with(d, 2, 1200, vec![num("temp", MeasurementKind::Gauge, 24.0)]),
            with(other, 1, 300, vec![num("temp", MeasurementKind::Gauge, 7.0)]),
        ])
        .await
        .unwrap();
    s.history
        .insert_uplinks(&[
            with(d, 3, 600, vec![num("temp", MeasurementKind::Gauge, 22.0)]),
            with(d, 4, 3600, vec![num("temp", MeasurementKind::Gauge, -1.0)]),
            with(d, 5, 3700, vec![text]),
        ])
        .await
        .unwrap();
    let hour = |h: u32| Utc.with_ymd_and_hms(2026, 3, 1, h, 0, 0).unwrap();
    let got = s.measurements.hourly_series(SeriesScope::Device(d.dev_eui), "temp", hour(0), hour(23), 100).await.unwrap();
    let want = [
        HourlyMeasurement { bucket: hour(12), sum: 66.0, count: 3, min: 20.0, max: 24.0, last: 24.0, last_time: t(1200) },
        HourlyMeasurement { bucket: hour(13), sum: -1.0, count: 1, min: -1.0, max: -1.0, last: -1.0, last_time: t(3600) },
    ];
    assert_eq!(got.iter().map(|(e, _, h)| (*e, *h)).collect::<Vec<_>>(), want.map(|h| (d.dev_eui, h)));
    assert_eq!(got[0].1.as_deref(), Some(d.name.as_str()));
    // Half-open on whole hours, and per application by device.
    let one = s.measurements.hourly_series(SeriesScope::Device(d.dev_eui), "temp", hour(13), hour(14), 100).await.unwrap();
    assert_eq!(one.len(), 1);
    let app = s.measurements.hourly_series(SeriesScope::Application(d.application_id), "temp", hour(12), hour(14), 100).await.unwrap();
    let mut want = vec![(d.dev_eui, hour(12)), (d.dev_eui, hour(13)), (other.dev_eui, hour(12))];
    want.sort_by_key(|w| (w.0 .0, w.1));
    assert_eq!(app.iter().map(|(e, _, h)| (*e, h.bucket)).collect::<Vec<_>>(), want);
    assert_eq!(
        s.measurements.hourly_series(SeriesScope::Application(d.application_id), "temp", hour(12), hour(14), 2).await.unwrap().len(),
        2
    );

    // The kind of the newest value; the newest number before a time, per device.
    assert_eq!(s.measurements.series_kind(SeriesScope::Device(d.dev_eui), "energy").await.unwrap(), Some(MeasurementKind::Counter));
    assert_eq!(s.measurements.series_kind(SeriesScope::Device(d.dev_eui), "temp").await.unwrap(), Some(MeasurementKind::String));
    assert_eq!(s.measurements.series_kind(SeriesScope::Application(d.application_id), "nothing").await.unwrap(), None);
    let mut before = s.measurements.last_values_before(SeriesScope::Application(d.application_id), "temp", t(1200)).await.unwrap();
    before.sort_by_key(|(e, _)| e.0);
    let mut want = vec![(d.dev_eui, 22.0), (other.dev_eui, 7.0)];
    want.sort_by_key(|(e, _)| e.0);
    assert_eq!(before, want);
    assert_eq!(s.measurements.last_values_before(SeriesScope::Device(d.dev_eui), "temp", t(60)).await.unwrap(), []);
}

async fn profile_measurement_definitions_round_trip(db: &mut TestDb) {
    let s = &db.s;
    let mut dp = profile();
    s.device_profiles.create(&dp).await.unwrap();
    let got = s.device_profiles.get(dp.id).await.unwrap();
    assert!(got.measurements.is_empty() && got.auto_detect_measurements);
    dp.measurements = std::collections::BTreeMap::from([
        ("temperatureSensor.1".to_string(), MeasurementDefinition { name: "room".into(), kind: MeasurementKind::Absolute }),
        ("state".to_string(), MeasurementDefinition { name: "state".into(), kind: MeasurementKind::String }),
    ]);
    dp.auto_detect_measurements = false;
    s.device_profiles.update(&dp).await.unwrap();
    assert_eq!(s.device_profiles.get(dp.id).await.unwrap(), dp);
    let (app, _, _) = fleet(s, 0).await;
    let d = device(5, &app, &dp);
    s.devices.create(&d).await.unwrap();
    assert_eq!(s.devices.context(d.dev_eui).await.unwrap().profile, dp);
}

async fn data_survives_close_and_reconnect(db: &mut TestDb) {
    let (app, dp, devs) = fleet(&db.s, 1).await;
    let d = devs[0].dev_eui;
    db.s.sessions.save(&session(d, 0x2601_0001)).await.unwrap();
    assert_eq!(db.s.sessions.cas_f_cnt_up(&[FCntUpdate { dev_eui: d, expected: 10, next: 11 }]).await.unwrap(), vec![true]);
    db.s.history.insert_uplinks(&[uplink(&devs[0], 11, t(1))]).await.unwrap();
    db.s.api_keys.insert(&ApiKey::new("admin"), &[7; 32]).await.unwrap();

    db.reconnect().await;
    let s = &db.s;
    assert_eq!(s.applications.get(app.id).await.unwrap(), app);
    assert_eq!(s.device_profiles.get(dp.id).await.unwrap(), dp);
    assert_eq!(s.devices.get(d).await.unwrap().dev_addr, Some(DevAddr::from_u32(0x2601_0001)));
    assert_eq!(s.sessions.get(d).await.unwrap().f_cnt_up, 11);
    assert_eq!(s.history.list_uplinks(d, None, 10).await.unwrap().len(), 1);
    assert!(s.api_keys.find(&[7; 32]).await.unwrap().is_some());
    // Migrations already applied are not applied again.
    db.reconnect().await;
    assert_eq!(db.s.devices.list(None, 10, 0).await.unwrap().total_count, 1);
}

async fn api_key_exists_only_for_the_stored_hash(db: &mut TestDb) {
    let s = &db.s;
    assert_eq!(s.api_keys.count().await.unwrap(), 0);
    assert_eq!(s.api_keys.find(&[1; 32]).await.unwrap(), None);
    let admin = ApiKey { generated: true, ..ApiKey::new("admin") };
    s.api_keys.insert(&admin, &[1; 32]).await.unwrap();
    let mut found = s.api_keys.find(&[1; 32]).await.unwrap().unwrap();
    assert_eq!((found.id, found.generated, found.application_id, found.read_only), (admin.id, true, None, false));
    assert!(s.api_keys.find(&[2; 32]).await.unwrap().is_none());
    assert_eq!(s.api_keys.count().await.unwrap(), 1);
    assert!(matches!(s.api_keys.insert(&ApiKey::new("again"), &[1; 32]).await, Err(StorageError::AlreadyExists)));
    assert_eq!(s.api_keys.count().await.unwrap(), 1);

    // Scoped keys need their application and go with it.
    let (app, _, _) = fleet(s, 0).await;
    let scoped = ApiKey { application_id: Some(app.id), read_only: true, ..ApiKey::new("reader") };
    s.api_keys.insert(&scoped, &[3; 32]).await.unwrap();
    let nowhere = ApiKey { application_id: Some(Uuid::new_v4()), ..ApiKey::new("lost") };
    assert!(is_conflict_on(&s.api_keys.insert(&nowhere, &[4; 32]).await.unwrap_err(), "applicationId"));
    assert_eq!(s.api_keys.list().await.unwrap().iter().map(|k| k.id).collect::<Vec<_>>(), [admin.id, scoped.id]);
    s.applications.delete(app.id).await.unwrap();
    assert_eq!(s.api_keys.find(&[3; 32]).await.unwrap(), None);

    // Rotation replaces the generated key only; a deleted key is gone at once.
    let other = ApiKey::new("ci");
    s.api_keys.insert(&other, &[5; 32]).await.unwrap();
    let rotated = ApiKey { generated: true, ..ApiKey::new("admin (generated)") };
    s.api_keys.replace_generated(&rotated, &[6; 32]).await.unwrap();
    assert_eq!(s.api_keys.find(&[1; 32]).await.unwrap(), None);
    found = s.api_keys.find(&[6; 32]).await.unwrap().unwrap();
    assert_eq!(found.id, rotated.id);
    s.api_keys.delete(other.id).await.unwrap();
    assert!(matches!(s.api_keys.delete(other.id).await, Err(StorageError::NotFound)));
    assert_eq!(s.api_keys.list().await.unwrap().len(), 1);
}

#[tokio::test]
async fn unknown_url_schemes_are_unsupported_without_echoing_the_url() {
    let cfg = DatabaseConfig { url: "mysql://root:secret@localhost/db".into(), ..Default::default() };
    match Storage::connect(&cfg).await {
        Err(e @ StorageError::UnsupportedUrl(_)) => {
            assert!(!e.to_string().contains("secret"), "{e}")
        }
        other => panic!("expected UnsupportedUrl, got {other:?}"),
    }
}

#[tokio::test]
async fn in_memory_sqlite_keeps_its_data_while_open() {
    let cfg = DatabaseConfig { url: "sqlite::memory:".into(), ..Default::default() };
    let s = Storage::connect(&cfg).await.unwrap();
    assert!(!s.timescale_enabled());
    s.gateways.create(&gateway(1, 0)).await.unwrap();
    // Another checkout of the single connection sees the same database.
    let s2 = s.clone();
    tokio::spawn(async move { assert_eq!(s2.gateways.all_ids().await.unwrap().len(), 1) }).await.unwrap();
    s.ping().await.unwrap();
    s.close().await;
}

#[tokio::test]
async fn postgres_without_timescaledb_uses_plain_tables() {
    let cfg = DatabaseConfig { url: fresh_postgres_url().await, ..Default::default() };
    let s = Storage::connect(&cfg).await.unwrap();
    // This machine has no TimescaleDB; where it exists this documents the other outcome.
    let available = {
        use sqlx::Connection;
        let mut c = sqlx::PgConnection::connect(&cfg.url).await.unwrap();
        let v: Option<i32> =
            sqlx::query_scalar("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'").fetch_optional(&mut c).await.unwrap();
        v.is_some()
    };
    if !available {
        assert!(!s.timescale_enabled());
    }
    s.ping().await.unwrap();
    s.close().await;
    drop_postgres_database(&cfg.url).await;
}
