//! `/api/devices/{devEui}/measurements`: the series taken from a device's decoded uplinks.

use axum::extract::{Path, State};
use axum::Json;
use chrono::Duration;
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use std::collections::HashMap;

use loraflow_network_server::storage::{MeasurementKind, MeasurementValue, SeriesScope, StoredMeasurement};
use loraflow_network_server::types::Eui64;

use crate::measurements::query::{self, Agg};

/// Raw points per page: at most, and by default.
const MAX_POINTS: u32 = 10_000;
const DEFAULT_POINTS: u32 = 1000;
/// Rows a bucketed query may read; beyond it the range must be narrowed.
const MAX_ROWS_READ: u32 = 500_000;

use super::devices::existing_device;
use super::error::ApiError;
use super::extract::QueryMap;
use super::gateways::parse_eui;
use super::openapi::ReadErrors;
use super::{ApiState, ListResponse};

/// A series with its newest value: `value` is a number, or text for kind STRING.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SeriesJson {
    name: String,
    #[schema(value_type = super::device_profiles::MeasurementKindJson)]
    kind: MeasurementKind,
    #[serde(serialize_with = "super::time_format::utc")]
    time: DateTime<Utc>,
    /// A number, text for kind STRING, or null for a value JSON cannot hold.
    #[schema(value_type = Option<Value>)]
    value: serde_json::Value,
}

impl From<StoredMeasurement> for SeriesJson {
    fn from(m: StoredMeasurement) -> Self {
        let value = match m.value {
            MeasurementValue::Number(n) => serde_json::Number::from_f64(n).map_or(serde_json::Value::Null, serde_json::Value::Number),
            MeasurementValue::Text(t) => serde_json::Value::String(t),
        };
        SeriesJson { name: m.name, kind: m.kind, time: m.time, value }
    }
}

/// Every series of the device with its latest value and time, ordered by name.
#[utoipa::path(
    operation_id = "device_measurements_latest",
    summary = "List a device's measurement series with their latest values",
    get,
    path = "/devices/{dev_eui}/measurements",
    tag = "measurements",
    params(("dev_eui" = String, Path, description = "DevEUI, 16 hex characters", pattern = "^[0-9a-fA-F]{16}$")),
    responses((status = 200, body = ListResponse<SeriesJson>), ReadErrors)
)]
pub async fn latest(State(state): State<ApiState>, Path(dev_eui): Path<String>) -> Result<Json<ListResponse<SeriesJson>>, ApiError> {
    let dev_eui = parse_eui("devEui", &dev_eui)?;
    existing_device(&state, dev_eui).await?;
    let rows = state.storage.measurements.latest_measurements(dev_eui).await?;
    Ok(Json(ListResponse { total_count: rows.len() as u64, result: rows.into_iter().map(Into::into).collect() }))
}

/// A point of a series: a bucket's start and aggregate, or a raw value.
#[derive(Debug, Serialize, ToSchema)]
pub struct PointJson {
    #[serde(serialize_with = "super::time_format::utc")]
    time: DateTime<Utc>,
    /// A number (null for a value JSON cannot hold) or, for a raw STRING series, text.
    #[schema(value_type = Option<Value>)]
    value: serde_json::Value,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SeriesQueryJson<T> {
    name: String,
    #[serde(serialize_with = "super::time_format::utc")]
    from: DateTime<Utc>,
    #[serde(serialize_with = "super::time_format::utc")]
    to: DateTime<Utc>,
    /// The bucket as given (`1h`), absent for raw points.
    #[serde(skip_serializing_if = "Option::is_none")]
    bucket: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    agg: Option<&'static str>,
    result: Vec<T>,
}

fn number(n: f64) -> serde_json::Value {
    serde_json::Number::from_f64(n).map_or(serde_json::Value::Null, serde_json::Value::Number)
}

fn time_param(q: &QueryMap, key: &str) -> Result<Option<DateTime<Utc>>, ApiError> {
    q.get(key)
        .map(|s| {
            DateTime::parse_from_rfc3339(s)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|_| ApiError::field(key, format!("expected an RFC 3339 time, got {s:?}")))
        })
        .transpose()
}

/// The validated query of a series request (shared by the device and application routes).
struct SeriesParams {
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    /// As given (`1h`) and in seconds; `None`: raw points.
    bucket: Option<(String, i64)>,
    agg: Agg,
    /// Rows to read and skip.
    limit: u32,
    offset: u32,
}

/// The query parameters of [`SeriesParams::parse`].
pub const SERIES_QUERY: &[&str] = &["from", "to", "bucket", "agg", "limit", "offset"];

impl SeriesParams {
    /// `?from=&to=` (RFC 3339, default the last 24 hours, `to` exclusive), `bucket=` (1m..1d,
    /// epoch-aligned in UTC) with `agg=` (avg, the default, min, max, sum, count, last);
    /// without `bucket` raw points, oldest first, paged by `limit` (default 1000, at most
    /// 10,000) and `offset`.
    fn parse(name: &str, q: &QueryMap) -> Result<SeriesParams, ApiError> {
        if !crate::measurements::valid_name(name) {
            return Err(ApiError::field("name", format!("{name:?} is not a series name")));
        }
        let bucket = q
            .get("bucket")
            .map(|b| {
                query::parse_bucket(b).map(|secs| (b.to_string(), secs)).ok_or_else(|| {
                    ApiError::field("bucket", format!("{b:?} is not a whole number of minutes (m), hours (h) or days (d) from 1m to 1d"))
                })
            })
            .transpose()?;
        // By default the last 24 hours; with buckets, up to the end of the current one, so
        // that every bucket is whole (and hourly ones come from the rollup).
        let to = match time_param(q, "to")? {
            Some(to) => to,
            None => match &bucket {
                Some((_, secs)) => query::bucket_start(Utc::now(), *secs) + Duration::seconds(*secs),
                None => Utc::now(),
            },
        };
        let from = time_param(q, "from")?.unwrap_or(to - Duration::hours(24));
        if from >= to {
            return Err(ApiError::field("from", "must be before to"));
        }
        let agg = match q.get("agg") {
            Some(_) if bucket.is_none() => return Err(ApiError::field("agg", "needs a bucket")),
            Some(a) => {
                Agg::parse(a).ok_or_else(|| ApiError::field("agg", format!("{a:?} is not one of avg, min, max, sum, count, last")))?
            }
            None => Agg::Avg,
        };
        let (limit, offset) = match &bucket {
            None => {
                let limit = q.number("limit")?.unwrap_or(DEFAULT_POINTS);
                if limit > MAX_POINTS {
                    return Err(ApiError::field("limit", format!("must be at most {MAX_POINTS}")));
                }
                (limit, q.number("offset")?.unwrap_or(0))
            }
            Some((_, secs)) => {
                let count = query::bucket_count(from, to, *secs);
                if count > query::MAX_BUCKETS {
                    return Err(ApiError::field("bucket", format!("{count} buckets between from and to; at most {}", query::MAX_BUCKETS)));
                }
                // One more than allowed, to tell a full range from one beyond the bound.
                (MAX_ROWS_READ + 1, 0)
            }
        };
        Ok(SeriesParams { from, to, bucket, agg, limit, offset })
    }

    /// Refuses a bucketed read that hit the bound (after the rows are read).
    fn check_read(&self, rows: usize) -> Result<(), ApiError> {
        if self.bucket.is_some() && rows > MAX_ROWS_READ as usize {
            return Err(ApiError::field("from", format!("more than {MAX_ROWS_READ} values in the range; narrow from/to")));
        }
        Ok(())
    }

    /// The raw points of a page.
    fn raw_points(rows: Vec<StoredMeasurement>) -> Vec<PointJson> {
        rows.into_iter().map(|m| PointJson { time: m.time, value: SeriesJson::from(m).value }).collect()
    }

    fn answer<T>(self, name: String, result: Vec<T>) -> SeriesQueryJson<T> {
        let agg = self.bucket.as_ref().map(|_| self.agg.as_str());
        SeriesQueryJson { name, from: self.from, to: self.to, bucket: self.bucket.map(|(b, _)| b), agg, result }
    }
}

/// A device's EUI, name and buckets (start, value).
type DeviceBuckets = (Eui64, Option<String>, Vec<(DateTime<Utc>, f64)>);

/// The buckets of one series of every device of `scope` (that has values in the range), by
/// device EUI. Whole hours come from the hourly rollup, anything finer from the raw values;
/// both give the same answer. `sum` of a COUNTER series is its increase per bucket.
async fn buckets(
    state: &ApiState,
    scope: SeriesScope,
    name: &str,
    p: &SeriesParams,
    bucket_secs: i64,
) -> Result<Vec<(Eui64, Option<String>, Vec<PointJson>)>, ApiError> {
    let m = &state.storage.measurements;
    let counter = p.agg == Agg::Sum && m.series_kind(scope, name).await? == Some(MeasurementKind::Counter);
    // A counter's increase is taken from each bucket's last reading.
    let agg = if counter { Agg::Last } else { p.agg };
    let mut series: Vec<DeviceBuckets> = Vec::new();
    if query::rollup_serves(p.from, p.to, bucket_secs) {
        let rows = m.hourly_series(scope, name, p.from, p.to, p.limit).await?;
        p.check_read(rows.len())?;
        for (eui, device_name, hours) in by_device(rows) {
            series.push((eui, device_name, query::fold_hours(&hours, bucket_secs, agg)));
        }
    } else {
        let rows = match scope {
            SeriesScope::Device(eui) => {
                m.series(eui, name, p.from, p.to, p.limit, p.offset).await?.into_iter().map(|r| (eui, None, r)).collect()
            }
            SeriesScope::Application(id) => m.application_series(id, name, p.from, p.to, p.limit, p.offset).await?,
        };
        p.check_read(rows.len())?;
        for (eui, device_name, values) in by_device(rows) {
            let numbers: Vec<_> = values
                .into_iter()
                .filter_map(|v| match v.value {
                    MeasurementValue::Number(n) => Some((v.time, n)),
                    MeasurementValue::Text(_) => None,
                })
                .collect();
            series.push((eui, device_name, query::aggregate(&numbers, bucket_secs, agg)));
        }
    }
    let baselines: HashMap<Eui64, f64> =
        if counter { m.last_values_before(scope, name, p.from).await?.into_iter().collect() } else { HashMap::new() };
    Ok(series
        .into_iter()
        .filter(|(_, _, buckets)| !buckets.is_empty())
        .map(|(eui, device_name, buckets)| {
            let buckets = if counter { query::counter_increase(baselines.get(&eui).copied(), &buckets) } else { buckets };
            (eui, device_name, buckets.into_iter().map(|(time, v)| PointJson { time, value: number(v) }).collect())
        })
        .collect())
}

/// Rows ordered by device, grouped per device.
fn by_device<T>(rows: Vec<(Eui64, Option<String>, T)>) -> Vec<(Eui64, Option<String>, Vec<T>)> {
    let mut devices: Vec<(Eui64, Option<String>, Vec<T>)> = Vec::new();
    for (eui, device_name, row) in rows {
        match devices.last_mut() {
            Some((last, _, rows)) if *last == eui => rows.push(row),
            _ => devices.push((eui, device_name, vec![row])),
        }
    }
    devices
}

/// One series of a device (query in [`SeriesParams::parse`]).
#[utoipa::path(
    operation_id = "device_measurements_series",
    summary = "Query one measurement series of a device, raw or in time buckets",
    description = "`from`/`to` default to the last 24 hours; with `bucket` the buckets holding values (at most 10,000), else the raw points, oldest first.",
    get,
    path = "/devices/{dev_eui}/measurements/{name}",
    tag = "measurements",
    params(
        ("dev_eui" = String, Path, description = "DevEUI, 16 hex characters", pattern = "^[0-9a-fA-F]{16}$"),
        ("name" = String, Path, description = "Series name", pattern = "^[A-Za-z0-9_.-]{1,100}$"),
        ("from" = Option<String>, Query, format = DateTime, description = "Start, RFC 3339 (default: 24 hours before to)"),
        ("to" = Option<String>, Query, format = DateTime, description = "End (exclusive), RFC 3339 (default: now; with bucket, the end of the current bucket)"),
        ("bucket" = Option<String>, Query, description = "Aggregate into buckets of whole minutes, hours or days from 1m to 1d (e.g. 15m, 1h)", pattern = "^[0-9]+[mhd]$"),
        ("agg" = Option<String>, Query, description = "With bucket: avg (default), min, max, sum, count or last; sum of a COUNTER series is its increase per bucket", pattern = "^(avg|min|max|sum|count|last)$"),
        ("limit" = Option<u32>, Query, description = "Raw points per page (default 1000)", maximum = 10000),
        ("offset" = Option<u64>, Query, description = "Raw points to skip", maximum = 4294967295.0),
    ),
    responses((status = 200, body = SeriesQueryJson<PointJson>), ReadErrors)
)]
pub async fn series(
    State(state): State<ApiState>,
    Path((dev_eui, name)): Path<(String, String)>,
    q: QueryMap,
) -> Result<Json<SeriesQueryJson<PointJson>>, ApiError> {
    let dev_eui = parse_eui("devEui", &dev_eui)?;
    let p = SeriesParams::parse(&name, &q)?;
    existing_device(&state, dev_eui).await?;
    let points = match p.bucket {
        Some((_, secs)) => {
            buckets(&state, SeriesScope::Device(dev_eui), &name, &p, secs).await?.pop().map(|(_, _, p)| p).unwrap_or_default()
        }
        None => SeriesParams::raw_points(state.storage.measurements.series(dev_eui, &name, p.from, p.to, p.limit, p.offset).await?),
    };
    Ok(Json(p.answer(name, points)))
}

/// One device's part of an application-wide series.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeviceSeriesJson {
    dev_eui: String,
    /// `null` once the device is deleted (its values stay).
    device_name: Option<String>,
    points: Vec<PointJson>,
}

/// One series of every device of an application, for "all rooms" charts: one entry per
/// device with values in the range, by device EUI.
#[utoipa::path(
    operation_id = "device_measurements_application_series",
    summary = "Query one measurement series of every device of an application",
    description = "Parameters and limits as for one device, counted over all devices; one entry per device with values, by DevEUI.",
    get,
    path = "/applications/{application_id}/measurements/{name}",
    tag = "measurements",
    params(
        ("application_id" = uuid::Uuid, Path, description = "Application id"),
        ("name" = String, Path, description = "Series name", pattern = "^[A-Za-z0-9_.-]{1,100}$"),
        ("from" = Option<String>, Query, format = DateTime, description = "Start, RFC 3339 (default: 24 hours before to)"),
        ("to" = Option<String>, Query, format = DateTime, description = "End (exclusive), RFC 3339 (default: now; with bucket, the end of the current bucket)"),
        ("bucket" = Option<String>, Query, description = "Aggregate into buckets of whole minutes, hours or days from 1m to 1d (e.g. 15m, 1h)", pattern = "^[0-9]+[mhd]$"),
        ("agg" = Option<String>, Query, description = "With bucket: avg (default), min, max, sum, count or last; sum of a COUNTER series is its increase per bucket", pattern = "^(avg|min|max|sum|count|last)$"),
        ("limit" = Option<u32>, Query, description = "Raw points per page (default 1000)", maximum = 10000),
        ("offset" = Option<u64>, Query, description = "Raw points to skip", maximum = 4294967295.0),
    ),
    responses((status = 200, body = SeriesQueryJson<DeviceSeriesJson>), ReadErrors)
)]
pub async fn application_series(
    State(state): State<ApiState>,
    Path((application_id, name)): Path<(String, String)>,
    q: QueryMap,
) -> Result<Json<SeriesQueryJson<DeviceSeriesJson>>, ApiError> {
    let application_id = super::applications::parse_uuid("applicationId", &application_id)?;
    let p = SeriesParams::parse(&name, &q)?;
    match state.storage.applications.get(application_id).await {
        Err(loraflow_network_server::storage::StorageError::NotFound) => {
            return Err(ApiError::NotFound(format!("application {application_id} not found")))
        }
        other => other?,
    };
    let devices = match p.bucket {
        Some((_, secs)) => buckets(&state, SeriesScope::Application(application_id), &name, &p, secs).await?,
        None => by_device(state.storage.measurements.application_series(application_id, &name, p.from, p.to, p.limit, p.offset).await?)
            .into_iter()
            .map(|(eui, device_name, rows)| (eui, device_name, SeriesParams::raw_points(rows)))
            .collect(),
    };
    let result =
        devices.into_iter().map(|(eui, device_name, points)| DeviceSeriesJson { dev_eui: eui.to_string(), device_name, points }).collect();
    Ok(Json(p.answer(name, result)))
}
