//! The data `bench-query` measures: the values of one series for N devices of one
//! application, evenly spread over 24 hours, as a pure function of a few numbers
//! ([`Dataset`]), written into a migrated PostgreSQL schema with COPY (tens of millions of
//! rows in minutes rather than hours), and the matching rows of the hourly rollup table when
//! the schema has one ([`insert_hourly_rollup`]).

use std::collections::HashSet;
use std::f64::consts::TAU;
use std::fmt::Write as _;
use std::time::Instant;

use anyhow::{bail, Context};
use chrono::{DateTime, Duration, Utc};
use futures_util::stream::{self, StreamExt, TryStreamExt};
use sqlx::PgPool;
use uuid::Uuid;

use loraflow_network_server::types::Eui64;

/// Hours the values are spread over.
pub const HOURS: u32 = 24;
/// "LFBNCQ" + index: the devices of `bench-query`.
pub const DEVICE_EUI_PREFIX: u64 = 0x4c46_424e_4351_0000;
/// Rows per COPY statement: big enough to amortise the statement, small enough to report
/// progress and to spread over two connections.
const ROWS_PER_COPY: u64 = 500_000;
/// Bytes handed to the connection at a time.
const SEND_BYTES: usize = 1 << 20;
const COPY_CONNECTIONS: usize = 2;

/// The stored values, a pure function of these fields: row `k` of every device is at
/// `start + k × 24 h / rows_per_device`.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    pub application_id: Uuid,
    pub name: String,
    pub devices: u32,
    pub rows_per_device: u32,
    /// Hour-aligned; the values are in `[start, start + 24 h)`.
    pub start: DateTime<Utc>,
}

/// One row of the hourly rollup: the values of one device in one hour.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HourRow {
    pub device: u32,
    pub bucket: DateTime<Utc>,
    pub sum: f64,
    pub count: i64,
    pub min: f64,
    pub max: f64,
    pub last: f64,
    pub last_time: DateTime<Utc>,
}

impl HourRow {
    pub fn avg(&self) -> f64 {
        self.sum / self.count as f64
    }
}

impl Dataset {
    pub fn end(&self) -> DateTime<Utc> {
        self.start + Duration::hours(i64::from(HOURS))
    }

    pub fn rows(&self) -> u64 {
        u64::from(self.devices) * u64::from(self.rows_per_device)
    }

    pub fn dev_eui(device: u32) -> Eui64 {
        Eui64::from_u64(DEVICE_EUI_PREFIX + u64::from(device))
    }

    /// The device number of a `bench-query` EUI.
    pub fn device_of(dev_eui: Eui64) -> Option<u32> {
        dev_eui.as_u64().checked_sub(DEVICE_EUI_PREFIX).and_then(|d| u32::try_from(d).ok())
    }

    /// Time of row `k` (the same for every device).
    pub fn time(&self, k: u32) -> DateTime<Utc> {
        let step = i64::from(HOURS) * 3_600_000_000 / i64::from(self.rows_per_device);
        self.start + Duration::microseconds(i64::from(k) * step)
    }

    /// Value of row `k` of `device`: a daily sine around a per-device level, in tenths as a
    /// Cayenne LPP temperature sensor reports it.
    pub fn value(&self, device: u32, k: u32) -> f64 {
        let phase = f64::from(k) / f64::from(self.rows_per_device) + f64::from(device) / f64::from(self.devices);
        let v = 21.0 + 4.0 * (TAU * phase).sin() + f64::from(device % 7) * 0.5;
        (v * 10.0).round() / 10.0
    }

    /// The hourly rollup of every device, by device then hour, as the server keeps it.
    pub fn hourly(&self) -> Vec<HourRow> {
        let mut out = Vec::with_capacity(self.devices as usize * HOURS as usize);
        for device in 0..self.devices {
            let mut current: Option<HourRow> = None;
            for k in 0..self.rows_per_device {
                let (time, value) = (self.time(k), self.value(device, k));
                let bucket = self.start + Duration::hours((time - self.start).num_hours());
                match &mut current {
                    Some(h) if h.bucket == bucket => {
                        h.sum += value;
                        h.count += 1;
                        h.min = h.min.min(value);
                        h.max = h.max.max(value);
                        (h.last, h.last_time) = (value, time);
                    }
                    _ => {
                        out.extend(current.take());
                        current =
                            Some(HourRow { device, bucket, sum: value, count: 1, min: value, max: value, last: value, last_time: time });
                    }
                }
            }
            out.extend(current);
        }
        out
    }
}

/// Time in COPY's text form.
fn copy_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S%.6f+00").to_string()
}

/// A bytea in COPY's text form: `\x…` with the backslash escaped for COPY.
fn copy_bytea(eui: Eui64) -> String {
    format!("\\\\x{eui}")
}

/// Writes every value of `data` into `measurements` (kind GAUGE) with COPY over a few
/// connections, time-major (as uplinks arrive, which keeps index inserts local). Calls
/// `progress` with the rows written so far.
pub async fn copy_measurements(pool: &PgPool, data: &Dataset, progress: impl Fn(u64) + Sync) -> anyhow::Result<u64> {
    if !loraflow_app_server::measurements::valid_name(&data.name) {
        bail!("--name: {:?} is not a series name", data.name);
    }
    let euis: Vec<String> = (0..data.devices).map(|d| copy_bytea(Dataset::dev_eui(d))).collect();
    let prefix = format!("\t{}\t{}\tGAUGE\t", data.application_id, data.name);
    // Chunks of whole time steps, each a COPY of its own.
    let steps_per_copy = (ROWS_PER_COPY / u64::from(data.devices)).max(1) as u32;
    let chunks: Vec<(u32, u32)> = (0..data.rows_per_device)
        .step_by(steps_per_copy as usize)
        .map(|k0| (k0, (k0 + steps_per_copy).min(data.rows_per_device)))
        .collect();
    let written = std::sync::atomic::AtomicU64::new(0);
    let (euis, prefix, written, progress) = (&euis, &prefix, &written, &progress);
    stream::iter(chunks)
        .map(|(k0, k1)| async move {
            let mut conn = pool.acquire().await.context("connecting for COPY")?;
            let mut copy = conn
                .copy_in_raw("COPY measurements (time, dev_eui, application_id, name, kind, value) FROM STDIN")
                .await
                .context("COPY measurements")?;
            let mut buf = String::with_capacity(SEND_BYTES + 4096);
            for k in k0..k1 {
                let time = copy_time(data.time(k));
                for (device, eui) in euis.iter().enumerate() {
                    let _ = writeln!(buf, "{time}\t{eui}{prefix}{}", data.value(device as u32, k));
                    if buf.len() >= SEND_BYTES {
                        copy.send(std::mem::take(&mut buf).into_bytes()).await?;
                        buf.reserve(SEND_BYTES + 4096);
                    }
                }
            }
            if !buf.is_empty() {
                copy.send(buf.into_bytes()).await?;
            }
            let rows = copy.finish().await.context("COPY measurements")?;
            progress(written.fetch_add(rows, std::sync::atomic::Ordering::Relaxed) + rows);
            anyhow::Ok(rows)
        })
        .buffer_unordered(COPY_CONNECTIONS)
        .try_fold(0u64, |total, rows| async move { Ok(total + rows) })
        .await
}

/// What [`insert_hourly_rollup`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase", tag = "outcome", content = "rows")]
pub enum Rollup {
    /// The schema has no `measurements_hourly` table: hourly queries read the raw values.
    NoTable,
    /// The table already held rows of this series (kept by the database itself, e.g. a
    /// trigger); nothing was added.
    AlreadyThere(u64),
    Inserted(u64),
}

/// The columns of `measurements_hourly` this tool fills.
const ROLLUP_COLUMNS: [&str; 10] = ["bucket", "dev_eui", "application_id", "name", "sum", "count", "min", "max", "last", "last_time"];

/// Inserts the hourly rollup of `data` into `measurements_hourly`, as the server's history
/// writer keeps it for the values it stores (the raw values were written behind its back).
/// A column this tool does not know is an error unless it has a default or may be null.
pub async fn insert_hourly_rollup(pool: &PgPool, data: &Dataset) -> anyhow::Result<Rollup> {
    let columns: Vec<(String, bool)> = sqlx::query_as(
        "SELECT column_name::text, (is_nullable = 'YES' OR column_default IS NOT NULL) FROM information_schema.columns
         WHERE table_schema = current_schema() AND table_name = 'measurements_hourly'",
    )
    .fetch_all(pool)
    .await?;
    if columns.is_empty() {
        return Ok(Rollup::NoTable);
    }
    let names: HashSet<&str> = columns.iter().map(|(c, _)| c.as_str()).collect();
    if let Some(missing) = ROLLUP_COLUMNS.iter().find(|c| !names.contains(*c)) {
        bail!("measurements_hourly has no column {missing}: this bench-query does not match the schema");
    }
    if let Some((unknown, _)) = columns.iter().find(|(c, optional)| !optional && !ROLLUP_COLUMNS.contains(&c.as_str())) {
        bail!("measurements_hourly has a required column {unknown} that this bench-query does not fill");
    }
    let (existing,): (i64,) = sqlx::query_as("SELECT count(*) FROM measurements_hourly WHERE application_id = $1 AND name = $2")
        .bind(data.application_id)
        .bind(&data.name)
        .fetch_one(pool)
        .await?;
    if existing > 0 {
        return Ok(Rollup::AlreadyThere(existing as u64));
    }
    let mut conn = pool.acquire().await?;
    let mut copy = conn
        .copy_in_raw(&format!("COPY measurements_hourly ({}) FROM STDIN", ROLLUP_COLUMNS.join(", ")))
        .await
        .context("COPY measurements_hourly")?;
    let mut buf = String::new();
    for h in data.hourly() {
        let _ = writeln!(
            buf,
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
            copy_time(h.bucket),
            copy_bytea(Dataset::dev_eui(h.device)),
            data.application_id,
            data.name,
            h.sum,
            h.count,
            h.min,
            h.max,
            h.last,
            copy_time(h.last_time)
        );
    }
    copy.send(buf.into_bytes()).await?;
    Ok(Rollup::Inserted(copy.finish().await.context("COPY measurements_hourly")?))
}

/// Fresh statistics and visibility map for the planner, as autovacuum leaves a table that
/// has been written for a while (right after a bulk load it has neither).
pub async fn vacuum_analyze(pool: &PgPool, rollup: Rollup) -> anyhow::Result<f64> {
    let started = Instant::now();
    sqlx::query("VACUUM (ANALYZE) measurements").execute(pool).await?;
    if rollup != Rollup::NoTable {
        sqlx::query("VACUUM (ANALYZE) measurements_hourly").execute(pool).await?;
    }
    Ok(started.elapsed().as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(devices: u32, rows_per_device: u32) -> Dataset {
        Dataset {
            application_id: Uuid::nil(),
            name: "temperature".into(),
            devices,
            rows_per_device,
            start: "2026-11-29T21:00:00Z".parse().unwrap(),
        }
    }

    #[test]
    fn rows_are_spread_evenly_over_24_hours() {
        let d = data(3, 240);
        assert_eq!(d.time(0), d.start);
        assert_eq!(d.time(10), d.start + Duration::hours(1));
        assert!(d.time(239) < d.end());
        assert_eq!(d.rows(), 720);
    }

    #[test]
    fn the_hourly_rollup_sums_every_value_once_and_keeps_the_last() {
        let d = data(3, 100);
        let hours = d.hourly();
        assert_eq!(hours.len(), 3 * 24);
        assert_eq!(hours.iter().map(|h| h.count).sum::<i64>(), 300);
        let total: f64 = (0..3).flat_map(|dev| (0..100).map(move |k| (dev, k))).map(|(dev, k)| d.value(dev, k)).sum();
        assert!((hours.iter().map(|h| h.sum).sum::<f64>() - total).abs() < 1e-6);
        let last = hours.iter().rfind(|h| h.device == 2).unwrap();
        assert_eq!((last.last, last.last_time), (d.value(2, 99), d.time(99)));
        assert_eq!(last.bucket, d.start + Duration::hours(23));
        assert!(hours.iter().all(|h| h.min <= h.avg() && h.avg() <= h.max));
    }

    #[test]
    fn values_are_plausible_temperatures_in_tenths() {
        let d = data(1000, 24_000);
        for (dev, k) in [(0, 0), (999, 23_999), (500, 12_000)] {
            let v = d.value(dev, k);
            assert!((17.0..=28.0).contains(&v), "{v}");
            assert_eq!((v * 10.0).round() / 10.0, v);
        }
    }

    #[test]
    fn copy_text_forms() {
        assert_eq!(copy_bytea(Dataset::dev_eui(1)), "\\\\x4c46424e43510001");
        assert_eq!(copy_time("2026-11-29T21:00:00.5Z".parse().unwrap()), "2026-11-29 21:00:00.500000+00");
        assert_eq!(Dataset::device_of(Dataset::dev_eui(7)), Some(7));
        assert_eq!(Dataset::device_of(Eui64::from_u64(1)), None);
    }
}
