//! What both backends share: the store type, value conversions, error mapping, and the
//! repository implementations whose SQL is the same on PostgreSQL and SQLite
//! (`impl_repos!`, instantiated once per backend). sqlx binds `$N` placeholders on SQLite
//! too (they are numbered parameters there), so one text serves both.

use std::collections::HashMap;

use chrono::{DateTime, SubsecRound, Utc};

use loraflow_packet_forwarder::AllowedNetworks;

use super::StorageError;
use crate::types::{AesKey, DevAddr, Eui64};

/// One backend's repositories; every repository trait is implemented on it.
pub(crate) struct Store<DB: sqlx::Database> {
    pub(crate) pool: sqlx::Pool<DB>,
    /// Whether the history writer keeps `measurements_hourly` up to date itself (false where
    /// TimescaleDB's continuous aggregate of that name does it).
    pub(crate) hourly_rollup: bool,
}

/// Rows per multi-row INSERT. uplinks has 17 columns: 500 rows are 8 500 parameters,
/// under SQLite's 32 766 and PostgreSQL's 65 535.
pub(crate) const INSERT_CHUNK: usize = 500;

/// The WHERE clause of a history page and the number of its next placeholder. Placeholders
/// in this order: dev_eui, since, cursor time, cursor id, kind.
pub(crate) struct HistoryWhere {
    pub(crate) sql: String,
    pub(crate) next: usize,
}

pub(crate) fn history_where(id_col: &str, since: bool, after: bool, kind: bool) -> HistoryWhere {
    let mut sql = String::from("dev_eui = $1");
    let mut next = 2;
    if since {
        sql += &format!(" AND time >= ${next}");
        next += 1;
    }
    if after {
        // `time <= t` alone can use the (dev_eui, time DESC) index; the OR breaks ties.
        let (t, id) = (next, next + 1);
        sql += &format!(" AND time <= ${t} AND (time < ${t} OR {id_col} < ${id})");
        next += 2;
    }
    if kind {
        sql += &format!(" AND kind = ${next}");
        next += 1;
    }
    HistoryWhere { sql, next }
}

/// The WHERE clause of a list of events across devices ([`crate::storage::EventFilter`]);
/// placeholders in this order: application_id, kind, level. `level_of_body` is the backend's
/// expression for the body's `level` text.
pub(crate) fn recent_events_where(filter: &crate::storage::EventFilter, level_of_body: &str) -> HistoryWhere {
    let mut clauses = Vec::new();
    let mut next = 1;
    if filter.application_id.is_some() {
        clauses.push(format!("application_id = ${next}"));
        next += 1;
    }
    if filter.kind.is_some() {
        clauses.push(format!("kind = ${next}"));
        next += 1;
    }
    if filter.level.is_some() {
        // Only log events have a level.
        clauses.push(format!("kind = 'log' AND {level_of_body} = ${next}"));
        next += 1;
    }
    let sql = if clauses.is_empty() { "1 = 1".to_string() } else { clauses.join(" AND ") };
    HistoryWhere { sql, next }
}

/// PostgreSQL keeps microseconds; truncating on both backends makes a value read back
/// equal to the one written, whichever backend is used.
pub(crate) fn ts(t: DateTime<Utc>) -> DateTime<Utc> {
    t.trunc_subsecs(6)
}

pub(crate) fn now() -> DateTime<Utc> {
    ts(Utc::now())
}

pub(crate) fn decode_err(what: &str, detail: impl std::fmt::Display) -> sqlx::Error {
    sqlx::Error::Decode(format!("{what}: {detail}").into())
}

pub(crate) fn eui(v: Vec<u8>) -> Result<Eui64, sqlx::Error> {
    <[u8; 8]>::try_from(v.as_slice()).map(Eui64).map_err(|_| decode_err("EUI-64", format!("{} bytes", v.len())))
}

pub(crate) fn dev_addr(v: Vec<u8>) -> Result<DevAddr, sqlx::Error> {
    <[u8; 4]>::try_from(v.as_slice()).map(DevAddr).map_err(|_| decode_err("DevAddr", format!("{} bytes", v.len())))
}

pub(crate) fn aes_key(v: Vec<u8>) -> Result<AesKey, sqlx::Error> {
    <[u8; 16]>::try_from(v.as_slice()).map(AesKey).map_err(|_| decode_err("AES key", format!("{} bytes", v.len())))
}

pub(crate) fn u32_of(v: i64) -> Result<u32, sqlx::Error> {
    u32::try_from(v).map_err(|_| decode_err("u32 counter", v))
}

pub(crate) fn u8_of(v: i16) -> Result<u8, sqlx::Error> {
    u8::try_from(v).map_err(|_| decode_err("u8 value", v))
}

/// A stored MAC state. NULL (a session from before the column) is "nothing known"; a value
/// this version cannot read is logged and treated the same, so that one bad row never
/// stops its device.
pub(crate) fn mac_state(v: Option<sqlx::types::Json<serde_json::Value>>) -> crate::mac::state::MacState {
    match v.map(|j| serde_json::from_value(j.0)) {
        None => Default::default(),
        Some(Ok(s)) => s,
        Some(Err(e)) => {
            tracing::warn!(error = %e, "stored MAC state unreadable; starting from defaults");
            Default::default()
        }
    }
}

/// A profile's measurement definitions, stored as JSON text (`{"path": {"name", "kind"}}`).
/// Only the REST API writes them, after validating them, so unreadable text is corrupt data.
pub(crate) fn measurement_definitions(
    text: String,
) -> Result<std::collections::BTreeMap<String, crate::storage::MeasurementDefinition>, sqlx::Error> {
    serde_json::from_str(&text).map_err(|e| decode_err("measurements", e))
}

/// A gateway's allowed networks, stored as a JSON array of CIDR strings. Only the REST API
/// writes them, after parsing them, so unreadable text is corrupt data.
pub(crate) fn allowed_networks(text: String) -> Result<AllowedNetworks, sqlx::Error> {
    serde_json::from_str(&text).map_err(|e| decode_err("allowed_networks", e))
}

pub(crate) fn allowed_networks_text(networks: &AllowedNetworks) -> String {
    // A list of networks always serialises.
    serde_json::to_string(networks).unwrap_or_else(|_| "[]".to_string())
}

pub(crate) fn measurement_definitions_text(defs: &std::collections::BTreeMap<String, crate::storage::MeasurementDefinition>) -> String {
    // A map of strings and unit enums always serialises.
    serde_json::to_string(defs).unwrap_or_else(|_| "{}".to_string())
}

/// Every measurement of a batch of uplinks, with the uplink it belongs to.
pub(crate) fn measurement_rows(
    uplinks: &[crate::storage::UplinkRecord],
) -> Vec<(&crate::storage::UplinkRecord, &crate::storage::Measurement)> {
    uplinks.iter().flat_map(|u| u.measurements.iter().map(move |m| (u, m))).collect()
}

/// A batch's rows for the hourly rollup: its numeric values summed up per device, series and
/// hour (an upsert may touch a row once per statement), ordered by that key so two batches
/// written at once lock their common rows in the same order and never deadlock.
pub(crate) fn hourly_rows(uplinks: &[crate::storage::UplinkRecord]) -> Vec<HourlyRow<'_>> {
    let mut rows: std::collections::BTreeMap<(Eui64, &str, DateTime<Utc>), HourlyRow<'_>> = std::collections::BTreeMap::new();
    for (u, m) in measurement_rows(uplinks) {
        let Some(value) = measurement_number(m) else { continue };
        let hour = crate::storage::HourlyMeasurement::of(ts(u.time), value);
        rows.entry((u.dev_eui, m.name.as_str(), hour.bucket)).and_modify(|r| r.hour.merge(&hour)).or_insert(HourlyRow {
            dev_eui: u.dev_eui,
            application_id: u.application_id,
            name: &m.name,
            hour,
        });
    }
    rows.into_values().collect()
}

/// The column a [`crate::storage::SeriesScope`] selects on.
pub(crate) fn scope_column(scope: crate::storage::SeriesScope) -> &'static str {
    match scope {
        crate::storage::SeriesScope::Device(_) => "dev_eui",
        crate::storage::SeriesScope::Application(_) => "application_id",
    }
}

/// A row of [`hourly_rows`].
#[derive(Debug, PartialEq)]
pub(crate) struct HourlyRow<'a> {
    pub(crate) dev_eui: Eui64,
    pub(crate) application_id: uuid::Uuid,
    pub(crate) name: &'a str,
    pub(crate) hour: crate::storage::HourlyMeasurement,
}

/// How a stored hour takes in a batch's (`excluded`) on both backends; `min`/`max` of two
/// values are `least`/`greatest` on PostgreSQL (the caller substitutes them).
pub(crate) fn hourly_upsert(least: &str, greatest: &str) -> String {
    format!(
        "ON CONFLICT (dev_eui, name, bucket) DO UPDATE SET \
         sum = measurements_hourly.sum + excluded.sum, count = measurements_hourly.count + excluded.count, \
         min = {least}(measurements_hourly.min, excluded.min), max = {greatest}(measurements_hourly.max, excluded.max), \
         last = CASE WHEN excluded.last_time >= measurements_hourly.last_time THEN excluded.last ELSE measurements_hourly.last END, \
         last_time = {greatest}(measurements_hourly.last_time, excluded.last_time)"
    )
}

pub(crate) fn measurement_number(m: &crate::storage::Measurement) -> Option<f64> {
    match m.value {
        crate::storage::MeasurementValue::Number(n) => Some(n),
        crate::storage::MeasurementValue::Text(_) => None,
    }
}

pub(crate) fn measurement_text(m: &crate::storage::Measurement) -> Option<&str> {
    match &m.value {
        crate::storage::MeasurementValue::Number(_) => None,
        crate::storage::MeasurementValue::Text(t) => Some(t),
    }
}

/// Unique violation -> `AlreadyExists`, missing row -> `NotFound`, broken reference ->
/// a generic `Conflict` (callers that know which field it was use [`fk_or`]).
pub(crate) fn db_err(e: sqlx::Error) -> StorageError {
    match &e {
        sqlx::Error::RowNotFound => StorageError::NotFound,
        sqlx::Error::Database(d) if d.is_unique_violation() => StorageError::AlreadyExists,
        _ if is_fk_violation(&e) => StorageError::Conflict("a referenced record does not exist or is still in use".into()),
        _ => StorageError::Db(e),
    }
}

pub(crate) fn is_fk_violation(e: &sqlx::Error) -> bool {
    match e {
        // SQLite reports an ON DELETE RESTRICT failure as SQLITE_CONSTRAINT_TRIGGER (1811),
        // which sqlx does not classify as a foreign-key violation.
        sqlx::Error::Database(d) => {
            d.is_foreign_key_violation() || (d.code().as_deref() == Some("1811") && d.message().contains("FOREIGN KEY constraint failed"))
        }
        _ => false,
    }
}

/// `db_err`, except that a foreign-key violation becomes `on_fk`.
pub(crate) fn fk_or(e: sqlx::Error, on_fk: StorageError) -> StorageError {
    if is_fk_violation(&e) {
        on_fk
    } else {
        db_err(e)
    }
}

/// The latest time per id, sorted by id: one row update per id, and a fixed lock order so
/// that two concurrent batches cannot deadlock on PostgreSQL.
pub(crate) fn latest_per_id(seen: &[(Eui64, DateTime<Utc>)]) -> Vec<(Eui64, DateTime<Utc>)> {
    let mut latest: HashMap<Eui64, DateTime<Utc>> = HashMap::with_capacity(seen.len());
    for &(id, t) in seen {
        let t = ts(t);
        latest.entry(id).and_modify(|cur| *cur = (*cur).max(t)).or_insert(t);
    }
    let mut out: Vec<_> = latest.into_iter().collect();
    out.sort_unstable_by_key(|&(id, _)| id);
    out
}

/// The tables with a `last_seen_at` keyed by an EUI.
#[derive(Debug, Clone, Copy)]
pub(crate) enum SeenTable {
    Gateways,
    Devices,
}

impl SeenTable {
    pub(crate) fn table(self) -> &'static str {
        match self {
            SeenTable::Gateways => "gateways",
            SeenTable::Devices => "devices",
        }
    }

    pub(crate) fn key(self) -> &'static str {
        match self {
            SeenTable::Gateways => "gateway_id",
            SeenTable::Devices => "dev_eui",
        }
    }
}

/// Implements every repository trait on `Store<$db>`. The backend module must provide the
/// inherent methods `begin_write(&self)` (a transaction that takes the write lock up front)
/// and `touch_last_seen_in(&self, SeenTable, &[(Eui64, DateTime<Utc>)])`.
macro_rules! impl_repos {
    ($db:ty) => {
        mod repos {
            use async_trait::async_trait;
            use chrono::{DateTime, Utc};
            use sqlx::types::Json;
            use sqlx::{QueryBuilder, Row};
            use uuid::Uuid;

            use $crate::storage::sql::{self as s, SeenTable, Store};
            use $crate::storage::*;
            use $crate::types::{DevAddr, Eui64};

            type Db = $db;
            type DbRow = <Db as sqlx::Database>::Row;
            type RowResult<T> = std::result::Result<T, sqlx::Error>;

            fn location_cols(l: &Option<Location>) -> (Option<f64>, Option<f64>, Option<f64>) {
                match l {
                    Some(l) => (Some(l.latitude), Some(l.longitude), Some(l.altitude)),
                    None => (None, None, None),
                }
            }

            fn gateway_row(r: &DbRow) -> RowResult<Gateway> {
                let lat: Option<f64> = r.try_get("latitude")?;
                let lon: Option<f64> = r.try_get("longitude")?;
                let alt: Option<f64> = r.try_get("altitude")?;
                Ok(Gateway {
                    gateway_id: s::eui(r.try_get("gateway_id")?)?,
                    name: r.try_get("name")?,
                    description: r.try_get("description")?,
                    location: match (lat, lon) {
                        (Some(latitude), Some(longitude)) => Some(Location { latitude, longitude, altitude: alt.unwrap_or(0.0) }),
                        _ => None,
                    },
                    created_at: r.try_get("created_at")?,
                    updated_at: r.try_get("updated_at")?,
                    last_seen_at: r.try_get("last_seen_at")?,
                    region_config_id: r.try_get("region_config_id")?,
                    allowed_networks: s::allowed_networks(r.try_get("allowed_networks")?)?,
                })
            }

            fn application_row(r: &DbRow) -> RowResult<Application> {
                Ok(Application {
                    id: r.try_get("id")?,
                    name: r.try_get("name")?,
                    description: r.try_get("description")?,
                    created_at: r.try_get("created_at")?,
                    updated_at: r.try_get("updated_at")?,
                })
            }

            /// `p` is the column prefix (`""`, or `"p_"` in the device context join).
            fn profile_row(r: &DbRow, p: &str) -> RowResult<DeviceProfile> {
                let c = |name: &str| format!("{p}{name}");
                Ok(DeviceProfile {
                    id: r.try_get(c("id").as_str())?,
                    name: r.try_get(c("name").as_str())?,
                    region: r.try_get(c("region").as_str())?,
                    mac_version: r.try_get(c("mac_version").as_str())?,
                    reg_params_revision: r.try_get(c("reg_params_revision").as_str())?,
                    supports_otaa: r.try_get(c("supports_otaa").as_str())?,
                    supports_class_c: r.try_get(c("supports_class_c").as_str())?,
                    adr_enabled: r.try_get(c("adr_enabled").as_str())?,
                    adr_min_dr: s::u8_of(r.try_get(c("adr_min_dr").as_str())?)?,
                    adr_max_dr: s::u8_of(r.try_get(c("adr_max_dr").as_str())?)?,
                    adr_installation_margin_db: r.try_get(c("adr_installation_margin_db").as_str())?,
                    dev_status_req_freq: s::u32_of(r.try_get(c("dev_status_req_freq").as_str())?)?,
                    class_c_timeout: s::u32_of(r.try_get(c("class_c_timeout").as_str())?)?,
                    payload_codec: r.try_get(c("payload_codec").as_str())?,
                    payload_codec_script: r.try_get(c("payload_codec_script").as_str())?,
                    measurements: s::measurement_definitions(r.try_get(c("measurements").as_str())?)?,
                    auto_detect_measurements: r.try_get(c("auto_detect_measurements").as_str())?,
                    created_at: r.try_get(c("created_at").as_str())?,
                    updated_at: r.try_get(c("updated_at").as_str())?,
                })
            }

            fn device_row(r: &DbRow) -> RowResult<Device> {
                let dev_addr: Option<Vec<u8>> = r.try_get("dev_addr")?;
                Ok(Device {
                    dev_eui: s::eui(r.try_get("dev_eui")?)?,
                    name: r.try_get("name")?,
                    description: r.try_get("description")?,
                    application_id: r.try_get("application_id")?,
                    device_profile_id: r.try_get("device_profile_id")?,
                    join_eui: s::eui(r.try_get("join_eui")?)?,
                    skip_fcnt_check: r.try_get("skip_fcnt_check")?,
                    is_disabled: r.try_get("is_disabled")?,
                    tags: r.try_get::<Json<serde_json::Value>, _>("tags")?.0,
                    last_seen_at: r.try_get("last_seen_at")?,
                    dev_addr: dev_addr.map(s::dev_addr).transpose()?,
                    created_at: r.try_get("created_at")?,
                    updated_at: r.try_get("updated_at")?,
                })
            }

            fn session_row(r: &DbRow) -> RowResult<DeviceSession> {
                let pending: Option<i64> = r.try_get("pending_ack_f_cnt")?;
                Ok(DeviceSession {
                    dev_eui: s::eui(r.try_get("dev_eui")?)?,
                    dev_addr: s::dev_addr(r.try_get("dev_addr")?)?,
                    mac_version: r.try_get("mac_version")?,
                    f_nwk_s_int_key: s::aes_key(r.try_get("f_nwk_s_int_key")?)?,
                    s_nwk_s_int_key: s::aes_key(r.try_get("s_nwk_s_int_key")?)?,
                    nwk_s_enc_key: s::aes_key(r.try_get("nwk_s_enc_key")?)?,
                    app_s_key: s::aes_key(r.try_get("app_s_key")?)?,
                    f_cnt_up: s::u32_of(r.try_get("f_cnt_up")?)?,
                    n_f_cnt_down: s::u32_of(r.try_get("n_f_cnt_down")?)?,
                    rx1_delay: s::u8_of(r.try_get("rx1_delay")?)?,
                    rx1_dr_offset: s::u8_of(r.try_get("rx1_dr_offset")?)?,
                    rx2_dr: s::u8_of(r.try_get("rx2_dr")?)?,
                    rx2_frequency: s::u32_of(r.try_get("rx2_frequency")?)?,
                    pending_ack_f_cnt: pending.map(s::u32_of).transpose()?,
                    is_otaa: r.try_get("is_otaa")?,
                    mac_state: s::mac_state(r.try_get::<Option<Json<serde_json::Value>>, _>("mac_state")?),
                    created_at: r.try_get("created_at")?,
                    updated_at: r.try_get("updated_at")?,
                })
            }

            fn queue_row(r: &DbRow) -> RowResult<QueueItem> {
                let f_cnt_down: Option<i64> = r.try_get("f_cnt_down")?;
                Ok(QueueItem {
                    id: r.try_get("id")?,
                    dev_eui: s::eui(r.try_get("dev_eui")?)?,
                    f_port: s::u8_of(r.try_get("f_port")?)?,
                    confirmed: r.try_get("confirmed")?,
                    data: r.try_get("data")?,
                    f_cnt_down: f_cnt_down.map(s::u32_of).transpose()?,
                    is_pending: r.try_get("is_pending")?,
                    timeout_at: r.try_get("timeout_at")?,
                    retries: s::u32_of(r.try_get("retries")?)?,
                    created_at: r.try_get("created_at")?,
                })
            }

            fn uplink_row(r: &DbRow) -> RowResult<UplinkRecord> {
                let f_port: Option<i16> = r.try_get("f_port")?;
                let object: Option<Json<serde_json::Value>> = r.try_get("object")?;
                Ok(UplinkRecord {
                    deduplication_id: r.try_get("deduplication_id")?,
                    time: r.try_get("time")?,
                    dev_eui: s::eui(r.try_get("dev_eui")?)?,
                    application_id: r.try_get("application_id")?,
                    dev_addr: s::dev_addr(r.try_get("dev_addr")?)?,
                    f_cnt: s::u32_of(r.try_get("f_cnt")?)?,
                    f_port: f_port.map(s::u8_of).transpose()?,
                    confirmed: r.try_get("confirmed")?,
                    dr: s::u8_of(r.try_get("dr")?)?,
                    frequency: s::u32_of(r.try_get("frequency")?)?,
                    rssi: r.try_get("rssi")?,
                    snr: r.try_get("snr")?,
                    gateway_count: s::u32_of(r.try_get("gateway_count")?)?,
                    data: r.try_get("data")?,
                    object: object.map(|j| j.0),
                    rx_info: r.try_get::<Json<serde_json::Value>, _>("rx_info")?.0,
                    tx_info: r.try_get::<Json<serde_json::Value>, _>("tx_info")?.0,
                    adr_decision: adr_decision_of(r)?,
                    // Read through the measurement queries, not with the uplink.
                    measurements: Vec::new(),
                })
            }

            /// The three ADR columns are written together: all set or all NULL.
            fn measurement_row(r: &DbRow) -> RowResult<StoredMeasurement> {
                let kind: String = r.try_get("kind")?;
                let kind =
                    MeasurementKind::parse(&kind).ok_or_else(|| s::decode_err("kind", format!("{kind:?} is not a measurement kind")))?;
                let value = match (r.try_get::<Option<f64>, _>("value")?, r.try_get::<Option<String>, _>("text_value")?) {
                    (Some(n), _) => MeasurementValue::Number(n),
                    (None, Some(t)) => MeasurementValue::Text(t),
                    (None, None) => return Err(s::decode_err("value", "neither value nor text_value is set")),
                };
                Ok(StoredMeasurement { time: r.try_get("time")?, name: r.try_get("name")?, kind, value })
            }

            fn adr_decision_of(r: &DbRow) -> RowResult<Option<crate::mac::adr::AdrDecision>> {
                let dr: Option<i16> = r.try_get("adr_dr")?;
                let tx: Option<i16> = r.try_get("adr_tx_power_index")?;
                let nb: Option<i16> = r.try_get("adr_nb_trans")?;
                Ok(match (dr, tx, nb) {
                    (Some(dr), Some(tx), Some(nb)) => {
                        Some(crate::mac::adr::AdrDecision { dr: s::u8_of(dr)?, tx_power_index: s::u8_of(tx)?, nb_trans: s::u8_of(nb)? })
                    }
                    _ => None,
                })
            }

            fn event_row(r: &DbRow) -> RowResult<EventRecord> {
                Ok(EventRecord {
                    id: r.try_get("id")?,
                    time: r.try_get("time")?,
                    dev_eui: s::eui(r.try_get("dev_eui")?)?,
                    application_id: r.try_get("application_id")?,
                    kind: r.try_get("kind")?,
                    body: r.try_get::<Json<serde_json::Value>, _>("body")?.0,
                })
            }

            async fn insert_api_key<'e, E: sqlx::Executor<'e, Database = Db>>(
                ex: E,
                key: &ApiKey,
                token_sha256: &[u8],
            ) -> sqlx::Result<()> {
                sqlx::query(
                    "INSERT INTO api_keys (id, name, token_sha256, created_at, application_id, read_only, generated) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(key.id)
                .bind(&key.name)
                .bind(token_sha256)
                .bind(s::ts(key.created_at))
                .bind(key.application_id)
                .bind(key.read_only)
                .bind(key.generated)
                .execute(ex)
                .await
                .map(|_| ())
            }

            fn api_key_row(r: &DbRow) -> RowResult<ApiKey> {
                Ok(ApiKey {
                    id: r.try_get("id")?,
                    name: r.try_get("name")?,
                    application_id: r.try_get("application_id")?,
                    read_only: r.try_get("read_only")?,
                    generated: r.try_get("generated")?,
                    created_at: r.try_get("created_at")?,
                })
            }

            /// Binds the key of a [`SeriesScope`] (see [`s::scope_column`]).
            fn bind_scope(q: Query<'_>, scope: SeriesScope) -> Query<'_> {
                match scope {
                    SeriesScope::Device(eui) => q.bind(eui.0.to_vec()),
                    SeriesScope::Application(id) => q.bind(id),
                }
            }

            fn rows<T>(rows: Vec<DbRow>, f: fn(&DbRow) -> RowResult<T>) -> Result<Vec<T>> {
                rows.iter().map(|r| f(r).map_err(StorageError::Db)).collect()
            }

            fn one<T>(row: Option<DbRow>, f: fn(&DbRow) -> RowResult<T>) -> Result<T> {
                match row {
                    Some(r) => f(&r).map_err(StorageError::Db),
                    None => Err(StorageError::NotFound),
                }
            }

            fn affected_one(n: u64) -> Result<()> {
                if n == 0 {
                    Err(StorageError::NotFound)
                } else {
                    Ok(())
                }
            }

            fn limit_offset(limit: u32, offset: u32) -> (i64, i64) {
                (i64::from(limit), i64::from(offset))
            }

            impl Store<Db> {
                async fn count_rows(&self, sql: &str) -> Result<u64> {
                    let n: i64 = sqlx::query_scalar(sql).fetch_one(&self.pool).await.map_err(s::db_err)?;
                    Ok(n as u64)
                }

                async fn row_exists(&self, sql: &str, id: Uuid) -> Result<bool> {
                    let n: i64 = sqlx::query_scalar(sql).bind(id).fetch_one(&self.pool).await.map_err(s::db_err)?;
                    Ok(n > 0)
                }

                /// Names the field behind a foreign-key violation on `devices`; SQLite's
                /// error does not say which constraint failed.
                async fn device_reference_conflict(&self, dev: &Device) -> StorageError {
                    match self.row_exists("SELECT COUNT(*) FROM applications WHERE id = $1", dev.application_id).await {
                        Ok(false) => StorageError::Conflict(format!("applicationId {} does not exist", dev.application_id)),
                        Ok(true) => StorageError::Conflict(format!("deviceProfileId {} does not exist", dev.device_profile_id)),
                        Err(e) => e,
                    }
                }
            }

            #[async_trait]
            impl GatewayRepo for Store<Db> {
                async fn create(&self, gw: &Gateway) -> Result<()> {
                    let (lat, lon, alt) = location_cols(&gw.location);
                    sqlx::query(
                        "INSERT INTO gateways (gateway_id, name, description, latitude, longitude, altitude, \
                         created_at, updated_at, last_seen_at, region_config_id, allowed_networks) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                    )
                    .bind(&gw.gateway_id.0[..])
                    .bind(&gw.name)
                    .bind(&gw.description)
                    .bind(lat)
                    .bind(lon)
                    .bind(alt)
                    .bind(s::ts(gw.created_at))
                    .bind(s::ts(gw.updated_at))
                    .bind(gw.last_seen_at.map(s::ts))
                    .bind(&gw.region_config_id)
                    .bind(s::allowed_networks_text(&gw.allowed_networks))
                    .execute(&self.pool)
                    .await
                    .map_err(s::db_err)?;
                    Ok(())
                }

                async fn get(&self, id: Eui64) -> Result<Gateway> {
                    let row = sqlx::query("SELECT * FROM gateways WHERE gateway_id = $1")
                        .bind(&id.0[..])
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(s::db_err)?;
                    one(row, gateway_row)
                }

                async fn list(&self, limit: u32, offset: u32) -> Result<Page<Gateway>> {
                    let total_count = self.count_rows("SELECT COUNT(*) FROM gateways").await?;
                    let (limit, offset) = limit_offset(limit, offset);
                    let r = sqlx::query("SELECT * FROM gateways ORDER BY created_at, gateway_id LIMIT $1 OFFSET $2")
                        .bind(limit)
                        .bind(offset)
                        .fetch_all(&self.pool)
                        .await
                        .map_err(s::db_err)?;
                    Ok(Page { total_count, result: rows(r, gateway_row)? })
                }

                async fn update(&self, gw: &Gateway) -> Result<()> {
                    let (lat, lon, alt) = location_cols(&gw.location);
                    let r = sqlx::query(
                        "UPDATE gateways SET name = $2, description = $3, latitude = $4, longitude = $5, \
                         altitude = $6, updated_at = $7, region_config_id = $8, allowed_networks = $9 WHERE gateway_id = $1",
                    )
                    .bind(&gw.gateway_id.0[..])
                    .bind(&gw.name)
                    .bind(&gw.description)
                    .bind(lat)
                    .bind(lon)
                    .bind(alt)
                    .bind(s::ts(gw.updated_at))
                    .bind(&gw.region_config_id)
                    .bind(s::allowed_networks_text(&gw.allowed_networks))
                    .execute(&self.pool)
                    .await
                    .map_err(s::db_err)?;
                    affected_one(r.rows_affected())
                }

                async fn delete(&self, id: Eui64) -> Result<()> {
                    let r = sqlx::query("DELETE FROM gateways WHERE gateway_id = $1")
                        .bind(&id.0[..])
                        .execute(&self.pool)
                        .await
                        .map_err(s::db_err)?;
                    affected_one(r.rows_affected())
                }

                async fn all_ids(&self) -> Result<Vec<Eui64>> {
                    let ids: Vec<Vec<u8>> = sqlx::query_scalar("SELECT gateway_id FROM gateways ORDER BY gateway_id")
                        .fetch_all(&self.pool)
                        .await
                        .map_err(s::db_err)?;
                    ids.into_iter().map(|v| s::eui(v).map_err(StorageError::Db)).collect()
                }

                async fn allowed_networks(&self) -> Result<Vec<(Eui64, AllowedNetworks)>> {
                    let rows: Vec<(Vec<u8>, String)> =
                        sqlx::query_as("SELECT gateway_id, allowed_networks FROM gateways ORDER BY gateway_id")
                            .fetch_all(&self.pool)
                            .await
                            .map_err(s::db_err)?;
                    rows.into_iter()
                        .map(|(g, n)| Ok((s::eui(g).map_err(StorageError::Db)?, s::allowed_networks(n).map_err(StorageError::Db)?)))
                        .collect()
                }

                async fn region_config_ids(&self) -> Result<Vec<(Eui64, String)>> {
                    let rows: Vec<(Vec<u8>, String)> = sqlx::query_as(
                        "SELECT gateway_id, region_config_id FROM gateways WHERE region_config_id IS NOT NULL ORDER BY gateway_id",
                    )
                    .fetch_all(&self.pool)
                    .await
                    .map_err(s::db_err)?;
                    rows.into_iter().map(|(g, r)| Ok((s::eui(g).map_err(StorageError::Db)?, r))).collect()
                }

                async fn touch_last_seen(&self, seen: &[(Eui64, DateTime<Utc>)]) -> Result<()> {
                    self.touch_last_seen_in(SeenTable::Gateways, seen).await
                }
            }

            #[async_trait]
            impl ApplicationRepo for Store<Db> {
                async fn create(&self, app: &Application) -> Result<()> {
                    sqlx::query(
                        "INSERT INTO applications (id, name, description, created_at, updated_at) \
                         VALUES ($1, $2, $3, $4, $5)",
                    )
                    .bind(app.id)
                    .bind(&app.name)
                    .bind(&app.description)
                    .bind(s::ts(app.created_at))
                    .bind(s::ts(app.updated_at))
                    .execute(&self.pool)
                    .await
                    .map_err(s::db_err)?;
                    Ok(())
                }

                async fn get(&self, id: Uuid) -> Result<Application> {
                    let row = sqlx::query("SELECT * FROM applications WHERE id = $1")
                        .bind(id)
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(s::db_err)?;
                    one(row, application_row)
                }

                async fn list(&self, limit: u32, offset: u32) -> Result<Page<Application>> {
                    let total_count = self.count_rows("SELECT COUNT(*) FROM applications").await?;
                    let (limit, offset) = limit_offset(limit, offset);
                    let r = sqlx::query("SELECT * FROM applications ORDER BY created_at, id LIMIT $1 OFFSET $2")
                        .bind(limit)
                        .bind(offset)
                        .fetch_all(&self.pool)
                        .await
                        .map_err(s::db_err)?;
                    Ok(Page { total_count, result: rows(r, application_row)? })
                }

                async fn update(&self, app: &Application) -> Result<()> {
                    let r = sqlx::query("UPDATE applications SET name = $2, description = $3, updated_at = $4 WHERE id = $1")
                        .bind(app.id)
                        .bind(&app.name)
                        .bind(&app.description)
                        .bind(s::ts(app.updated_at))
                        .execute(&self.pool)
                        .await
                        .map_err(s::db_err)?;
                    affected_one(r.rows_affected())
                }

                async fn delete(&self, id: Uuid) -> Result<()> {
                    // Devices, and through them keys, sessions, nonces and queues, go by
                    // ON DELETE CASCADE.
                    let r = sqlx::query("DELETE FROM applications WHERE id = $1").bind(id).execute(&self.pool).await.map_err(s::db_err)?;
                    affected_one(r.rows_affected())
                }
            }

            #[async_trait]
            impl DeviceProfileRepo for Store<Db> {
                async fn create(&self, dp: &DeviceProfile) -> Result<()> {
                    sqlx::query(
                        "INSERT INTO device_profiles (id, name, region, mac_version, reg_params_revision, \
                         supports_otaa, supports_class_c, adr_enabled, payload_codec, payload_codec_script, \
                         created_at, updated_at, adr_min_dr, adr_max_dr, adr_installation_margin_db, dev_status_req_freq, \
                         class_c_timeout, measurements, auto_detect_measurements) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)",
                    )
                    .bind(dp.id)
                    .bind(&dp.name)
                    .bind(&dp.region)
                    .bind(&dp.mac_version)
                    .bind(&dp.reg_params_revision)
                    .bind(dp.supports_otaa)
                    .bind(dp.supports_class_c)
                    .bind(dp.adr_enabled)
                    .bind(&dp.payload_codec)
                    .bind(&dp.payload_codec_script)
                    .bind(s::ts(dp.created_at))
                    .bind(s::ts(dp.updated_at))
                    .bind(i16::from(dp.adr_min_dr))
                    .bind(i16::from(dp.adr_max_dr))
                    .bind(dp.adr_installation_margin_db)
                    .bind(i64::from(dp.dev_status_req_freq))
                    .bind(i64::from(dp.class_c_timeout))
                    .bind(s::measurement_definitions_text(&dp.measurements))
                    .bind(dp.auto_detect_measurements)
                    .execute(&self.pool)
                    .await
                    .map_err(s::db_err)?;
                    Ok(())
                }

                async fn get(&self, id: Uuid) -> Result<DeviceProfile> {
                    let row = sqlx::query("SELECT * FROM device_profiles WHERE id = $1")
                        .bind(id)
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(s::db_err)?;
                    one(row, |r| profile_row(r, ""))
                }

                async fn list(&self, limit: u32, offset: u32) -> Result<Page<DeviceProfile>> {
                    let total_count = self.count_rows("SELECT COUNT(*) FROM device_profiles").await?;
                    let (limit, offset) = limit_offset(limit, offset);
                    let r = sqlx::query("SELECT * FROM device_profiles ORDER BY created_at, id LIMIT $1 OFFSET $2")
                        .bind(limit)
                        .bind(offset)
                        .fetch_all(&self.pool)
                        .await
                        .map_err(s::db_err)?;
                    Ok(Page { total_count, result: rows(r, |r| profile_row(r, ""))? })
                }

                async fn update(&self, dp: &DeviceProfile) -> Result<()> {
                    let r = sqlx::query(
                        "UPDATE device_profiles SET name = $2, region = $3, mac_version = $4, \
                         reg_params_revision = $5, supports_otaa = $6, supports_class_c = $7, adr_enabled = $8, \
                         payload_codec = $9, payload_codec_script = $10, updated_at = $11, adr_min_dr = $12, \
                         adr_max_dr = $13, adr_installation_margin_db = $14, dev_status_req_freq = $15, \
                         class_c_timeout = $16, measurements = $17, auto_detect_measurements = $18 WHERE id = $1",
                    )
                    .bind(dp.id)
                    .bind(&dp.name)
                    .bind(&dp.region)
                    .bind(&dp.mac_version)
                    .bind(&dp.reg_params_revision)
                    .bind(dp.supports_otaa)
                    .bind(dp.supports_class_c)
                    .bind(dp.adr_enabled)
                    .bind(&dp.payload_codec)
                    .bind(&dp.payload_codec_script)
                    .bind(s::ts(dp.updated_at))
                    .bind(i16::from(dp.adr_min_dr))
                    .bind(i16::from(dp.adr_max_dr))
                    .bind(dp.adr_installation_margin_db)
                    .bind(i64::from(dp.dev_status_req_freq))
                    .bind(i64::from(dp.class_c_timeout))
                    .bind(s::measurement_definitions_text(&dp.measurements))
                    .bind(dp.auto_detect_measurements)
                    .execute(&self.pool)
                    .await
                    .map_err(s::db_err)?;
                    affected_one(r.rows_affected())
                }

                async fn delete(&self, id: Uuid) -> Result<()> {
                    let r = sqlx::query("DELETE FROM device_profiles WHERE id = $1")
                        .bind(id)
                        .execute(&self.pool)
                        .await
                        .map_err(|e| s::fk_or(e, StorageError::Conflict(format!("deviceProfileId {id} is used by devices"))))?;
                    affected_one(r.rows_affected())
                }
            }

            #[async_trait]
            impl DeviceRepo for Store<Db> {
                async fn create(&self, dev: &Device) -> Result<()> {
                    let r = sqlx::query(
                        "INSERT INTO devices (dev_eui, name, description, application_id, device_profile_id, \
                         join_eui, skip_fcnt_check, is_disabled, tags, last_seen_at, dev_addr, created_at, \
                         updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
                    )
                    .bind(&dev.dev_eui.0[..])
                    .bind(&dev.name)
                    .bind(&dev.description)
                    .bind(dev.application_id)
                    .bind(dev.device_profile_id)
                    .bind(&dev.join_eui.0[..])
                    .bind(dev.skip_fcnt_check)
                    .bind(dev.is_disabled)
                    .bind(Json(&dev.tags))
                    .bind(dev.last_seen_at.map(s::ts))
                    .bind(dev.dev_addr.map(|a| a.0.to_vec()))
                    .bind(s::ts(dev.created_at))
                    .bind(s::ts(dev.updated_at))
                    .execute(&self.pool)
                    .await;
                    match r {
                        Ok(_) => Ok(()),
                        Err(e) if s::is_fk_violation(&e) => Err(self.device_reference_conflict(dev).await),
                        Err(e) => Err(s::db_err(e)),
                    }
                }

                async fn get(&self, dev_eui: Eui64) -> Result<Device> {
                    let row = sqlx::query("SELECT * FROM devices WHERE dev_eui = $1")
                        .bind(&dev_eui.0[..])
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(s::db_err)?;
                    one(row, device_row)
                }

                async fn list(&self, application_id: Option<Uuid>, limit: u32, offset: u32) -> Result<Page<Device>> {
                    let (limit, offset) = limit_offset(limit, offset);
                    let (total_count, r) = match application_id {
                        Some(app) => (
                            {
                                let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM devices WHERE application_id = $1")
                                    .bind(app)
                                    .fetch_one(&self.pool)
                                    .await
                                    .map_err(s::db_err)?;
                                n as u64
                            },
                            sqlx::query(
                                "SELECT * FROM devices WHERE application_id = $1 \
                                 ORDER BY created_at, dev_eui LIMIT $2 OFFSET $3",
                            )
                            .bind(app)
                            .bind(limit)
                            .bind(offset)
                            .fetch_all(&self.pool)
                            .await
                            .map_err(s::db_err)?,
                        ),
                        None => (
                            self.count_rows("SELECT COUNT(*) FROM devices").await?,
                            sqlx::query("SELECT * FROM devices ORDER BY created_at, dev_eui LIMIT $1 OFFSET $2")
                                .bind(limit)
                                .bind(offset)
                                .fetch_all(&self.pool)
                                .await
                                .map_err(s::db_err)?,
                        ),
                    };
                    Ok(Page { total_count, result: rows(r, device_row)? })
                }

                async fn update(&self, dev: &Device) -> Result<()> {
                    let r = sqlx::query(
                        "UPDATE devices SET name = $2, description = $3, application_id = $4, \
                         device_profile_id = $5, join_eui = $6, skip_fcnt_check = $7, is_disabled = $8, \
                         tags = $9, updated_at = $10 WHERE dev_eui = $1",
                    )
                    .bind(&dev.dev_eui.0[..])
                    .bind(&dev.name)
                    .bind(&dev.description)
                    .bind(dev.application_id)
                    .bind(dev.device_profile_id)
                    .bind(&dev.join_eui.0[..])
                    .bind(dev.skip_fcnt_check)
                    .bind(dev.is_disabled)
                    .bind(Json(&dev.tags))
                    .bind(s::ts(dev.updated_at))
                    .execute(&self.pool)
                    .await;
                    match r {
                        Ok(r) => affected_one(r.rows_affected()),
                        Err(e) if s::is_fk_violation(&e) => Err(self.device_reference_conflict(dev).await),
                        Err(e) => Err(s::db_err(e)),
                    }
                }

                async fn delete(&self, dev_eui: Eui64) -> Result<()> {
                    let r = sqlx::query("DELETE FROM devices WHERE dev_eui = $1")
                        .bind(&dev_eui.0[..])
                        .execute(&self.pool)
                        .await
                        .map_err(s::db_err)?;
                    affected_one(r.rows_affected())
                }

                async fn context(&self, dev_eui: Eui64) -> Result<DeviceContext> {
                    let row = sqlx::query(
                        "SELECT d.*, a.name AS application_name, \
                         p.id AS p_id, p.name AS p_name, p.region AS p_region, p.mac_version AS p_mac_version, \
                         p.reg_params_revision AS p_reg_params_revision, p.supports_otaa AS p_supports_otaa, \
                         p.supports_class_c AS p_supports_class_c, p.adr_enabled AS p_adr_enabled, \
                         p.payload_codec AS p_payload_codec, p.payload_codec_script AS p_payload_codec_script, \
                         p.adr_min_dr AS p_adr_min_dr, p.adr_max_dr AS p_adr_max_dr, \
                         p.adr_installation_margin_db AS p_adr_installation_margin_db, \
                         p.dev_status_req_freq AS p_dev_status_req_freq, p.class_c_timeout AS p_class_c_timeout, \
                         p.measurements AS p_measurements, p.auto_detect_measurements AS p_auto_detect_measurements, \
                         p.created_at AS p_created_at, p.updated_at AS p_updated_at \
                         FROM devices d \
                         JOIN applications a ON a.id = d.application_id \
                         JOIN device_profiles p ON p.id = d.device_profile_id \
                         WHERE d.dev_eui = $1",
                    )
                    .bind(&dev_eui.0[..])
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(s::db_err)?;
                    one(row, |r| {
                        Ok(DeviceContext {
                            device: device_row(r)?,
                            profile: profile_row(r, "p_")?,
                            application_name: r.try_get("application_name")?,
                        })
                    })
                }

                async fn set_keys(&self, keys: &DeviceKeys) -> Result<()> {
                    sqlx::query(
                        "INSERT INTO device_keys (dev_eui, app_key, nwk_key) VALUES ($1, $2, $3) \
                         ON CONFLICT (dev_eui) DO UPDATE SET app_key = excluded.app_key, nwk_key = excluded.nwk_key",
                    )
                    .bind(&keys.dev_eui.0[..])
                    .bind(&keys.app_key.0[..])
                    .bind(keys.nwk_key.map(|k| k.0.to_vec()))
                    .execute(&self.pool)
                    .await
                    .map_err(|e| s::fk_or(e, StorageError::NotFound))?;
                    Ok(())
                }

                async fn get_keys(&self, dev_eui: Eui64) -> Result<DeviceKeys> {
                    let row = sqlx::query("SELECT * FROM device_keys WHERE dev_eui = $1")
                        .bind(&dev_eui.0[..])
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(s::db_err)?;
                    one(row, |r| {
                        let nwk_key: Option<Vec<u8>> = r.try_get("nwk_key")?;
                        Ok(DeviceKeys {
                            dev_eui: s::eui(r.try_get("dev_eui")?)?,
                            app_key: s::aes_key(r.try_get("app_key")?)?,
                            nwk_key: nwk_key.map(s::aes_key).transpose()?,
                        })
                    })
                }

                async fn next_join_nonce(&self, dev_eui: Eui64) -> Result<u32> {
                    let row = sqlx::query(
                        "UPDATE device_keys SET join_nonce = CASE WHEN join_nonce >= 16777215 THEN 1 ELSE join_nonce + 1 END \
                         WHERE dev_eui = $1 RETURNING join_nonce",
                    )
                    .bind(&dev_eui.0[..])
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(s::db_err)?;
                    one(row, |r| Ok(r.try_get::<i64, _>("join_nonce")? as u32))
                }

                async fn insert_dev_nonce(&self, dev_eui: Eui64, join_eui: Eui64, dev_nonce: u16) -> Result<bool> {
                    let r = sqlx::query(
                        "INSERT INTO device_nonces (dev_eui, join_eui, dev_nonce, created_at) \
                         VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                    )
                    .bind(&dev_eui.0[..])
                    .bind(&join_eui.0[..])
                    .bind(i32::from(dev_nonce))
                    .bind(s::now())
                    .execute(&self.pool)
                    .await
                    .map_err(|e| s::fk_or(e, StorageError::NotFound))?;
                    Ok(r.rows_affected() == 1)
                }

                async fn max_dev_nonce(&self, dev_eui: Eui64) -> Result<Option<u16>> {
                    let max: Option<i64> =
                        sqlx::query_scalar("SELECT CAST(MAX(dev_nonce) AS BIGINT) FROM device_nonces WHERE dev_eui = $1")
                            .bind(&dev_eui.0[..])
                            .fetch_one(&self.pool)
                            .await
                            .map_err(s::db_err)?;
                    max.map(|v| u16::try_from(v).map_err(|_| StorageError::Db(sqlx::Error::Decode(format!("dev_nonce {v}").into()))))
                        .transpose()
                }

                async fn dev_nonce_used_at(&self, dev_eui: Eui64, join_eui: Eui64, dev_nonce: u16) -> Result<Option<DateTime<Utc>>> {
                    sqlx::query_scalar("SELECT created_at FROM device_nonces WHERE dev_eui = $1 AND join_eui = $2 AND dev_nonce = $3")
                        .bind(&dev_eui.0[..])
                        .bind(&join_eui.0[..])
                        .bind(i32::from(dev_nonce))
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(s::db_err)
                }

                async fn clear_dev_nonces(&self, dev_eui: Eui64) -> Result<()> {
                    sqlx::query("DELETE FROM device_nonces WHERE dev_eui = $1")
                        .bind(&dev_eui.0[..])
                        .execute(&self.pool)
                        .await
                        .map_err(s::db_err)?;
                    Ok(())
                }

                async fn touch_last_seen(&self, seen: &[(Eui64, DateTime<Utc>)]) -> Result<()> {
                    self.touch_last_seen_in(SeenTable::Devices, seen).await
                }
            }

            #[async_trait]
            impl SessionRepo for Store<Db> {
                async fn save(&self, ds: &DeviceSession) -> Result<()> {
                    let mut tx = self.begin_write().await.map_err(s::db_err)?;
                    let r = sqlx::query("UPDATE devices SET dev_addr = $2 WHERE dev_eui = $1")
                        .bind(&ds.dev_eui.0[..])
                        .bind(&ds.dev_addr.0[..])
                        .execute(&mut *tx)
                        .await
                        .map_err(s::db_err)?;
                    affected_one(r.rows_affected())?;
                    sqlx::query(
                        "INSERT INTO device_sessions (dev_eui, dev_addr, mac_version, f_nwk_s_int_key, \
                         s_nwk_s_int_key, nwk_s_enc_key, app_s_key, f_cnt_up, n_f_cnt_down, rx1_delay, \
                         rx1_dr_offset, rx2_dr, rx2_frequency, pending_ack_f_cnt, is_otaa, created_at, updated_at, mac_state) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18) \
                         ON CONFLICT (dev_eui) DO UPDATE SET dev_addr = excluded.dev_addr, \
                         mac_version = excluded.mac_version, f_nwk_s_int_key = excluded.f_nwk_s_int_key, \
                         s_nwk_s_int_key = excluded.s_nwk_s_int_key, nwk_s_enc_key = excluded.nwk_s_enc_key, \
                         app_s_key = excluded.app_s_key, f_cnt_up = excluded.f_cnt_up, \
                         n_f_cnt_down = excluded.n_f_cnt_down, rx1_delay = excluded.rx1_delay, \
                         rx1_dr_offset = excluded.rx1_dr_offset, rx2_dr = excluded.rx2_dr, \
                         rx2_frequency = excluded.rx2_frequency, pending_ack_f_cnt = excluded.pending_ack_f_cnt, \
                         is_otaa = excluded.is_otaa, created_at = excluded.created_at, \
                         updated_at = excluded.updated_at, mac_state = excluded.mac_state",
                    )
                    .bind(&ds.dev_eui.0[..])
                    .bind(&ds.dev_addr.0[..])
                    .bind(&ds.mac_version)
                    .bind(&ds.f_nwk_s_int_key.0[..])
                    .bind(&ds.s_nwk_s_int_key.0[..])
                    .bind(&ds.nwk_s_enc_key.0[..])
                    .bind(&ds.app_s_key.0[..])
                    .bind(i64::from(ds.f_cnt_up))
                    .bind(i64::from(ds.n_f_cnt_down))
                    .bind(i16::from(ds.rx1_delay))
                    .bind(i16::from(ds.rx1_dr_offset))
                    .bind(i16::from(ds.rx2_dr))
                    .bind(i64::from(ds.rx2_frequency))
                    .bind(ds.pending_ack_f_cnt.map(i64::from))
                    .bind(ds.is_otaa)
                    .bind(s::ts(ds.created_at))
                    .bind(s::ts(ds.updated_at))
                    .bind(Json(&ds.mac_state))
                    .execute(&mut *tx)
                    .await
                    .map_err(s::db_err)?;
                    tx.commit().await.map_err(s::db_err)?;
                    Ok(())
                }

                async fn get(&self, dev_eui: Eui64) -> Result<DeviceSession> {
                    let row = sqlx::query("SELECT * FROM device_sessions WHERE dev_eui = $1")
                        .bind(&dev_eui.0[..])
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(s::db_err)?;
                    one(row, session_row)
                }

                async fn get_many(&self, dev_euis: &[Eui64]) -> Result<Vec<DeviceSession>> {
                    let mut out = Vec::with_capacity(dev_euis.len());
                    for chunk in dev_euis.chunks(s::INSERT_CHUNK) {
                        let mut qb = QueryBuilder::<Db>::new("SELECT * FROM device_sessions WHERE dev_eui IN (");
                        let mut list = qb.separated(", ");
                        for e in chunk {
                            list.push_bind(e.0.to_vec());
                        }
                        qb.push(")");
                        let r = qb.build().fetch_all(&self.pool).await.map_err(s::db_err)?;
                        out.extend(rows(r, session_row)?);
                    }
                    Ok(out)
                }

                async fn get_many_with_adr(&self, dev_euis: &[Eui64]) -> Result<Vec<(DeviceSession, bool)>> {
                    let mut out = Vec::with_capacity(dev_euis.len());
                    for chunk in dev_euis.chunks(s::INSERT_CHUNK) {
                        let mut qb = QueryBuilder::<Db>::new(
                            "SELECT s.*, p.adr_enabled AS profile_adr_enabled FROM device_sessions s \
                             JOIN devices d ON d.dev_eui = s.dev_eui \
                             JOIN device_profiles p ON p.id = d.device_profile_id \
                             WHERE s.dev_eui IN (",
                        );
                        let mut list = qb.separated(", ");
                        for e in chunk {
                            list.push_bind(e.0.to_vec());
                        }
                        qb.push(")");
                        let r = qb.build().fetch_all(&self.pool).await.map_err(s::db_err)?;
                        for row in &r {
                            let session = session_row(row).map_err(s::db_err)?;
                            let adr: bool = row.try_get("profile_adr_enabled").map_err(s::db_err)?;
                            out.push((session, adr));
                        }
                    }
                    Ok(out)
                }

                async fn get_by_dev_addr(&self, dev_addr: DevAddr) -> Result<Vec<DeviceSession>> {
                    let r = sqlx::query("SELECT * FROM device_sessions WHERE dev_addr = $1 ORDER BY dev_eui")
                        .bind(&dev_addr.0[..])
                        .fetch_all(&self.pool)
                        .await
                        .map_err(s::db_err)?;
                    rows(r, session_row)
                }

                async fn delete(&self, dev_eui: Eui64) -> Result<()> {
                    let mut tx = self.begin_write().await.map_err(s::db_err)?;
                    let r = sqlx::query("DELETE FROM device_sessions WHERE dev_eui = $1")
                        .bind(&dev_eui.0[..])
                        .execute(&mut *tx)
                        .await
                        .map_err(s::db_err)?;
                    affected_one(r.rows_affected())?;
                    sqlx::query("UPDATE devices SET dev_addr = NULL WHERE dev_eui = $1")
                        .bind(&dev_eui.0[..])
                        .execute(&mut *tx)
                        .await
                        .map_err(s::db_err)?;
                    tx.commit().await.map_err(s::db_err)?;
                    Ok(())
                }

                async fn cas_f_cnt_up(&self, updates: &[FCntUpdate]) -> Result<Vec<bool>> {
                    let mut applied = vec![false; updates.len()];
                    if updates.is_empty() {
                        return Ok(applied);
                    }
                    // One statement per round (DESIGN §6), each row still compared with its
                    // own `expected`. A round holds each device at most once, so a device
                    // updated twice in one batch is applied in order, exactly as one
                    // statement per entry would.
                    let mut rounds: Vec<Vec<usize>> = Vec::new();
                    let mut seen: std::collections::HashMap<Eui64, usize> = std::collections::HashMap::new();
                    for (i, u) in updates.iter().enumerate() {
                        let round = seen.entry(u.dev_eui).and_modify(|r| *r += 1).or_insert(0);
                        if rounds.len() <= *round {
                            rounds.push(Vec::new());
                        }
                        rounds[*round].push(i);
                    }
                    let now = s::now();
                    let mut tx = self.begin_write().await.map_err(s::db_err)?;
                    for round in rounds {
                        for chunk in round.chunks(s::INSERT_CHUNK) {
                            let mut qb = QueryBuilder::<Db>::new("WITH v(dev_eui, expected, next) AS (");
                            qb.push_values(chunk, |mut b, &i| {
                                let u = &updates[i];
                                b.push_bind(u.dev_eui.0.to_vec()).push_bind(i64::from(u.expected)).push_bind(i64::from(u.next));
                            });
                            qb.push(") UPDATE device_sessions SET f_cnt_up = v.next, updated_at = ");
                            qb.push_bind(now);
                            qb.push(
                                " FROM v WHERE device_sessions.dev_eui = v.dev_eui \
                                 AND device_sessions.f_cnt_up = v.expected RETURNING device_sessions.dev_eui",
                            );
                            let done: Vec<Vec<u8>> = qb.build_query_scalar().fetch_all(&mut *tx).await.map_err(s::db_err)?;
                            let index: std::collections::HashMap<Eui64, usize> = chunk.iter().map(|&i| (updates[i].dev_eui, i)).collect();
                            for d in done {
                                let dev_eui = s::eui(d).map_err(StorageError::Db)?;
                                if let Some(&i) = index.get(&dev_eui) {
                                    applied[i] = true;
                                }
                            }
                        }
                    }
                    tx.commit().await.map_err(s::db_err)?;
                    Ok(applied)
                }

                async fn advance_f_cnt_up(&self, updates: &[(Eui64, u32)]) -> Result<()> {
                    let mut sorted = updates.to_vec();
                    sorted.sort_by_key(|(e, _)| *e);
                    let now = s::now();
                    let mut tx = self.begin_write().await.map_err(s::db_err)?;
                    for (dev_eui, next) in sorted {
                        sqlx::query(
                            "UPDATE device_sessions SET f_cnt_up = $2, updated_at = $3 \
                             WHERE dev_eui = $1 AND f_cnt_up < $2",
                        )
                        .bind(&dev_eui.0[..])
                        .bind(i64::from(next))
                        .bind(now)
                        .execute(&mut *tx)
                        .await
                        .map_err(s::db_err)?;
                    }
                    tx.commit().await.map_err(s::db_err)?;
                    Ok(())
                }

                async fn next_f_cnt_down(&self, dev_eui: Eui64) -> Result<u32> {
                    let v: Option<i64> = sqlx::query_scalar(
                        "UPDATE device_sessions SET n_f_cnt_down = n_f_cnt_down + 1 \
                         WHERE dev_eui = $1 RETURNING n_f_cnt_down - 1",
                    )
                    .bind(&dev_eui.0[..])
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(s::db_err)?;
                    match v {
                        Some(v) => s::u32_of(v).map_err(StorageError::Db),
                        None => Err(StorageError::NotFound),
                    }
                }

                async fn save_mac_state(
                    &self,
                    dev_eui: Eui64,
                    state: &crate::mac::state::MacState,
                    rx: crate::mac::state::RxParams,
                ) -> Result<()> {
                    let r = sqlx::query(
                        "UPDATE device_sessions SET mac_state = $2, rx1_delay = $3, rx1_dr_offset = $4, rx2_dr = $5, \
                         rx2_frequency = $6, updated_at = $7 WHERE dev_eui = $1",
                    )
                    .bind(&dev_eui.0[..])
                    .bind(Json(state))
                    .bind(i16::from(rx.rx1_delay))
                    .bind(i16::from(rx.rx1_dr_offset))
                    .bind(i16::from(rx.rx2_dr))
                    .bind(i64::from(rx.rx2_frequency))
                    .bind(s::now())
                    .execute(&self.pool)
                    .await
                    .map_err(s::db_err)?;
                    affected_one(r.rows_affected())
                }

                async fn all(&self) -> Result<Vec<DeviceSession>> {
                    let r = sqlx::query("SELECT * FROM device_sessions ORDER BY dev_eui").fetch_all(&self.pool).await.map_err(s::db_err)?;
                    rows(r, session_row)
                }
            }

            #[async_trait]
            impl QueueRepo for Store<Db> {
                async fn enqueue(&self, item: &QueueItem) -> Result<()> {
                    sqlx::query(
                        "INSERT INTO device_queue (id, dev_eui, f_port, confirmed, data, f_cnt_down, is_pending, \
                         timeout_at, retries, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                    )
                    .bind(item.id)
                    .bind(&item.dev_eui.0[..])
                    .bind(i16::from(item.f_port))
                    .bind(item.confirmed)
                    .bind(&item.data)
                    .bind(item.f_cnt_down.map(i64::from))
                    .bind(item.is_pending)
                    .bind(item.timeout_at.map(s::ts))
                    .bind(i64::from(item.retries))
                    .bind(s::ts(item.created_at))
                    .execute(&self.pool)
                    .await
                    .map_err(|e| s::fk_or(e, StorageError::NotFound))?;
                    Ok(())
                }

                async fn get(&self, id: Uuid) -> Result<QueueItem> {
                    let row = sqlx::query("SELECT * FROM device_queue WHERE id = $1")
                        .bind(id)
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(s::db_err)?;
                    one(row, queue_row)
                }

                async fn list(&self, dev_eui: Eui64) -> Result<Vec<QueueItem>> {
                    let r = sqlx::query("SELECT * FROM device_queue WHERE dev_eui = $1 ORDER BY created_at, seq")
                        .bind(&dev_eui.0[..])
                        .fetch_all(&self.pool)
                        .await
                        .map_err(s::db_err)?;
                    rows(r, queue_row)
                }

                async fn devices_with_items(&self) -> Result<Vec<Eui64>> {
                    let rows: Vec<Vec<u8>> =
                        sqlx::query_scalar("SELECT DISTINCT dev_eui FROM device_queue").fetch_all(&self.pool).await.map_err(s::db_err)?;
                    rows.into_iter().map(|b| s::eui(b).map_err(StorageError::Db)).collect()
                }

                async fn flush(&self, dev_eui: Eui64) -> Result<()> {
                    sqlx::query("DELETE FROM device_queue WHERE dev_eui = $1")
                        .bind(&dev_eui.0[..])
                        .execute(&self.pool)
                        .await
                        .map_err(s::db_err)?;
                    Ok(())
                }

                async fn update(&self, item: &QueueItem) -> Result<()> {
                    let r = sqlx::query(
                        "UPDATE device_queue SET f_port = $2, confirmed = $3, data = $4, f_cnt_down = $5, \
                         is_pending = $6, timeout_at = $7, retries = $8 WHERE id = $1",
                    )
                    .bind(item.id)
                    .bind(i16::from(item.f_port))
                    .bind(item.confirmed)
                    .bind(&item.data)
                    .bind(item.f_cnt_down.map(i64::from))
                    .bind(item.is_pending)
                    .bind(item.timeout_at.map(s::ts))
                    .bind(i64::from(item.retries))
                    .execute(&self.pool)
                    .await
                    .map_err(s::db_err)?;
                    affected_one(r.rows_affected())
                }

                async fn delete(&self, id: Uuid) -> Result<()> {
                    let r = sqlx::query("DELETE FROM device_queue WHERE id = $1").bind(id).execute(&self.pool).await.map_err(s::db_err)?;
                    affected_one(r.rows_affected())
                }
            }

            #[async_trait]
            impl MeasurementRepo for Store<Db> {
                async fn latest_measurements(&self, dev_eui: Eui64) -> Result<Vec<StoredMeasurement>> {
                    // One index range scan per series on (dev_eui, name, time DESC).
                    let r = sqlx::query(
                        "SELECT m.time, m.name, m.kind, m.value, m.text_value FROM measurements m \
                         WHERE m.dev_eui = $1 AND m.time = (SELECT max(x.time) FROM measurements x \
                           WHERE x.dev_eui = m.dev_eui AND x.name = m.name) \
                         ORDER BY m.name",
                    )
                    .bind(&dev_eui.0[..])
                    .fetch_all(&self.pool)
                    .await
                    .map_err(s::db_err)?;
                    let mut all = rows(r, measurement_row)?;
                    // Two values of one series at the same instant: keep one.
                    all.dedup_by(|a, b| a.name == b.name);
                    Ok(all)
                }

                async fn series(
                    &self,
                    dev_eui: Eui64,
                    name: &str,
                    from: DateTime<Utc>,
                    to: DateTime<Utc>,
                    limit: u32,
                    offset: u32,
                ) -> Result<Vec<StoredMeasurement>> {
                    let r = sqlx::query(
                        "SELECT time, name, kind, value, text_value FROM measurements \
                         WHERE dev_eui = $1 AND name = $2 AND time >= $3 AND time < $4 \
                         ORDER BY time LIMIT $5 OFFSET $6",
                    )
                    .bind(&dev_eui.0[..])
                    .bind(name)
                    .bind(s::ts(from))
                    .bind(s::ts(to))
                    .bind(i64::from(limit))
                    .bind(i64::from(offset))
                    .fetch_all(&self.pool)
                    .await
                    .map_err(s::db_err)?;
                    rows(r, measurement_row)
                }

                async fn application_series(
                    &self,
                    application_id: Uuid,
                    name: &str,
                    from: DateTime<Utc>,
                    to: DateTime<Utc>,
                    limit: u32,
                    offset: u32,
                ) -> Result<Vec<(Eui64, Option<String>, StoredMeasurement)>> {
                    let r = sqlx::query(
                        "SELECT m.dev_eui, d.name AS device_name, m.time, m.name, m.kind, m.value, m.text_value \
                         FROM measurements m LEFT JOIN devices d ON d.dev_eui = m.dev_eui \
                         WHERE m.application_id = $1 AND m.name = $2 AND m.time >= $3 AND m.time < $4 \
                         ORDER BY m.dev_eui, m.time LIMIT $5 OFFSET $6",
                    )
                    .bind(application_id)
                    .bind(name)
                    .bind(s::ts(from))
                    .bind(s::ts(to))
                    .bind(i64::from(limit))
                    .bind(i64::from(offset))
                    .fetch_all(&self.pool)
                    .await
                    .map_err(s::db_err)?;
                    rows(r, |r| Ok((s::eui(r.try_get("dev_eui")?)?, r.try_get("device_name")?, measurement_row(r)?)))
                }

                async fn hourly_series(
                    &self,
                    scope: SeriesScope,
                    name: &str,
                    from: DateTime<Utc>,
                    to: DateTime<Utc>,
                    limit: u32,
                ) -> Result<Vec<(Eui64, Option<String>, HourlyMeasurement)>> {
                    let sql = format!(
                        "SELECT h.dev_eui, d.name AS device_name, h.bucket, h.sum, h.count, h.min, h.max, h.last, h.last_time \
                         FROM measurements_hourly h LEFT JOIN devices d ON d.dev_eui = h.dev_eui \
                         WHERE h.{} = $1 AND h.name = $2 AND h.bucket >= $3 AND h.bucket < $4 \
                         ORDER BY h.dev_eui, h.bucket LIMIT $5",
                        s::scope_column(scope)
                    );
                    let r = bind_scope(sqlx::query(&sql), scope)
                        .bind(name)
                        .bind(s::ts(from))
                        .bind(s::ts(to))
                        .bind(i64::from(limit))
                        .fetch_all(&self.pool)
                        .await
                        .map_err(s::db_err)?;
                    rows(r, |r| {
                        let count: i64 = r.try_get("count")?;
                        let hour = HourlyMeasurement {
                            bucket: r.try_get("bucket")?,
                            sum: r.try_get("sum")?,
                            count: u64::try_from(count).map_err(|_| s::decode_err("count", count))?,
                            min: r.try_get("min")?,
                            max: r.try_get("max")?,
                            last: r.try_get("last")?,
                            last_time: r.try_get("last_time")?,
                        };
                        Ok((s::eui(r.try_get("dev_eui")?)?, r.try_get("device_name")?, hour))
                    })
                }

                async fn series_kind(&self, scope: SeriesScope, name: &str) -> Result<Option<MeasurementKind>> {
                    let sql = format!(
                        "SELECT kind FROM measurements WHERE {} = $1 AND name = $2 ORDER BY time DESC LIMIT 1",
                        s::scope_column(scope)
                    );
                    let kind: Option<String> = bind_scope(sqlx::query(&sql), scope)
                        .bind(name)
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(s::db_err)?
                        .map(|r| r.try_get(0))
                        .transpose()
                        .map_err(s::db_err)?;
                    kind.map(|k| {
                        MeasurementKind::parse(&k)
                            .ok_or_else(|| StorageError::Db(s::decode_err("kind", format!("{k:?} is not a measurement kind"))))
                    })
                    .transpose()
                }

                async fn last_values_before(&self, scope: SeriesScope, name: &str, before: DateTime<Utc>) -> Result<Vec<(Eui64, f64)>> {
                    // One index probe per device on (dev_eui, name, time DESC).
                    let newest = "SELECT m.value FROM measurements m WHERE m.dev_eui = d.dev_eui AND m.name = $2 \
                                  AND m.time < $3 AND m.value IS NOT NULL ORDER BY m.time DESC LIMIT 1";
                    let sql = format!("SELECT d.dev_eui, ({newest}) AS value FROM devices d WHERE d.{} = $1", s::scope_column(scope));
                    let r = bind_scope(sqlx::query(&sql), scope)
                        .bind(name)
                        .bind(s::ts(before))
                        .fetch_all(&self.pool)
                        .await
                        .map_err(s::db_err)?;
                    let all = rows(r, |r| Ok((s::eui(r.try_get("dev_eui")?)?, r.try_get::<Option<f64>, _>("value")?)))?;
                    Ok(all.into_iter().filter_map(|(eui, v)| v.map(|v| (eui, v))).collect())
                }
            }

            #[async_trait]
            impl HistoryRepo for Store<Db> {
                async fn insert_history(&self, uplinks: &[UplinkRecord], events: &[EventRecord]) -> Result<()> {
                    if uplinks.is_empty() && events.is_empty() {
                        return Ok(());
                    }
                    self.insert_history_batch(uplinks, events).await
                }

                fn concurrent_writes(&self) -> usize {
                    Store::<Db>::HISTORY_CONCURRENT_WRITES
                }

                async fn uplinks_page(&self, q: &HistoryQuery) -> Result<Vec<UplinkRecord>> {
                    let w = s::history_where("deduplication_id", q.since.is_some(), q.after.is_some(), false);
                    let sql = format!("SELECT * FROM uplinks WHERE {} ORDER BY time DESC, deduplication_id DESC LIMIT ${}", w.sql, w.next);
                    let r = bind_history(sqlx::query(&sql), q.dev_eui, q.since, q.after, None)
                        .bind(i64::from(q.limit))
                        .fetch_all(&self.pool)
                        .await
                        .map_err(s::db_err)?;
                    rows(r, uplink_row)
                }

                async fn count_uplinks(&self, dev_eui: Eui64, since: Option<DateTime<Utc>>) -> Result<u64> {
                    let w = s::history_where("deduplication_id", since.is_some(), false, false);
                    let sql = format!("SELECT COUNT(*) FROM uplinks WHERE {}", w.sql);
                    let row = bind_history(sqlx::query(&sql), dev_eui, since, None, None).fetch_one(&self.pool).await.map_err(s::db_err)?;
                    let n: i64 = row.try_get(0).map_err(s::db_err)?;
                    Ok(n as u64)
                }

                async fn events_page(&self, q: &HistoryQuery, kind: Option<EventKind>) -> Result<Vec<EventRecord>> {
                    let w = s::history_where("id", q.since.is_some(), q.after.is_some(), kind.is_some());
                    let sql = format!("SELECT * FROM events WHERE {} ORDER BY time DESC, id DESC LIMIT ${}", w.sql, w.next);
                    let r = bind_history(sqlx::query(&sql), q.dev_eui, q.since, q.after, kind)
                        .bind(i64::from(q.limit))
                        .fetch_all(&self.pool)
                        .await
                        .map_err(s::db_err)?;
                    rows(r, event_row)
                }

                async fn recent_events(&self, filter: &EventFilter, limit: u32) -> Result<Vec<EventRecord>> {
                    let w = s::recent_events_where(filter, Store::<Db>::LEVEL_OF_BODY);
                    let sql = format!("SELECT * FROM events WHERE {} ORDER BY time DESC, id DESC LIMIT ${}", w.sql, w.next);
                    let r = bind_event_filter(sqlx::query(&sql), filter)
                        .bind(i64::from(limit))
                        .fetch_all(&self.pool)
                        .await
                        .map_err(s::db_err)?;
                    rows(r, event_row)
                }

                async fn count_recent_events(&self, filter: &EventFilter) -> Result<u64> {
                    let w = s::recent_events_where(filter, Store::<Db>::LEVEL_OF_BODY);
                    let sql = format!("SELECT COUNT(*) FROM events WHERE {}", w.sql);
                    let row = bind_event_filter(sqlx::query(&sql), filter).fetch_one(&self.pool).await.map_err(s::db_err)?;
                    let n: i64 = row.try_get(0).map_err(s::db_err)?;
                    Ok(n as u64)
                }

                async fn count_events(&self, dev_eui: Eui64, since: Option<DateTime<Utc>>, kind: Option<EventKind>) -> Result<u64> {
                    let w = s::history_where("id", since.is_some(), false, kind.is_some());
                    let sql = format!("SELECT COUNT(*) FROM events WHERE {}", w.sql);
                    let row = bind_history(sqlx::query(&sql), dev_eui, since, None, kind).fetch_one(&self.pool).await.map_err(s::db_err)?;
                    let n: i64 = row.try_get(0).map_err(s::db_err)?;
                    Ok(n as u64)
                }
            }

            type Query<'q> = sqlx::query::Query<'q, Db, <Db as sqlx::Database>::Arguments<'q>>;

            /// Binds in the order of [`s::recent_events_where`]'s placeholders.
            fn bind_event_filter<'q>(mut q: Query<'q>, f: &EventFilter) -> Query<'q> {
                if let Some(app) = f.application_id {
                    q = q.bind(app);
                }
                if let Some(kind) = f.kind {
                    q = q.bind(kind.as_str());
                }
                if let Some(level) = f.level {
                    q = q.bind(level.as_str());
                }
                q
            }

            /// Binds in the order of [`s::history_where`]'s placeholders.
            fn bind_history(
                mut q: Query<'_>,
                dev_eui: Eui64,
                since: Option<DateTime<Utc>>,
                after: Option<HistoryCursor>,
                kind: Option<EventKind>,
            ) -> Query<'_> {
                q = q.bind(dev_eui.0.to_vec());
                if let Some(since) = since {
                    q = q.bind(s::ts(since));
                }
                if let Some(c) = after {
                    q = q.bind(s::ts(c.time)).bind(c.id);
                }
                if let Some(kind) = kind {
                    q = q.bind(kind.as_str());
                }
                q
            }

            #[async_trait]
            impl ApiKeyRepo for Store<Db> {
                async fn insert(&self, key: &ApiKey, token_sha256: &[u8]) -> Result<()> {
                    insert_api_key(&self.pool, key, token_sha256)
                        .await
                        .map_err(|e| s::fk_or(e, StorageError::Conflict("applicationId: no such application".into())))
                }

                async fn find(&self, token_sha256: &[u8]) -> Result<Option<ApiKey>> {
                    let r = sqlx::query("SELECT * FROM api_keys WHERE token_sha256 = $1")
                        .bind(token_sha256)
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(s::db_err)?;
                    r.as_ref().map(api_key_row).transpose().map_err(StorageError::Db)
                }

                async fn list(&self) -> Result<Vec<ApiKey>> {
                    let r = sqlx::query("SELECT * FROM api_keys ORDER BY created_at, id").fetch_all(&self.pool).await.map_err(s::db_err)?;
                    rows(r, api_key_row)
                }

                async fn delete(&self, id: Uuid) -> Result<()> {
                    let r = sqlx::query("DELETE FROM api_keys WHERE id = $1").bind(id).execute(&self.pool).await.map_err(s::db_err)?;
                    affected_one(r.rows_affected())
                }

                async fn replace_generated(&self, key: &ApiKey, token_sha256: &[u8]) -> Result<()> {
                    let mut tx = self.pool.begin().await.map_err(s::db_err)?;
                    sqlx::query("DELETE FROM api_keys WHERE generated").execute(&mut *tx).await.map_err(s::db_err)?;
                    insert_api_key(&mut *tx, key, token_sha256).await.map_err(s::db_err)?;
                    tx.commit().await.map_err(s::db_err)
                }

                async fn count(&self) -> Result<u64> {
                    self.count_rows("SELECT COUNT(*) FROM api_keys").await
                }
            }
        }
    };
}

pub(crate) use impl_repos;
