//! `loraflow bench-query`: how fast the measurement queries answer over a day of values of
//! many devices, on PostgreSQL, measured the way users see it: HTTP requests to the real
//! server.
//!
//! It starts this binary's server as a child on the given database (which runs the
//! migrations), registers an application and N devices over REST, writes their values of one
//! series straight into the migrated schema with COPY ([`fill`]), and then times the
//! application-wide and the per-device hourly queries
//! (`GET /api/applications/{id}/measurements/{name}?bucket=1h&agg=avg`,
//! `GET /api/devices/{devEui}/measurements/{name}?bucket=1h&agg=avg`) over exactly those
//! 24 hours. The first answer of each is checked against the hourly averages computed here:
//! a fast wrong answer is not a result.
//!
//! `--reuse` queries what an earlier run left in the database instead of filling it again.

pub mod fill;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use chrono::{DateTime, Utc};
use futures_util::stream::{self, StreamExt, TryStreamExt};
use serde::Serialize;
use sqlx::postgres::PgPoolOptions;
use uuid::Uuid;

use crate::child_server::{ChildServer, ChildSpec};
use crate::sim::provision::{Api, ProfileSpec};
use fill::{Dataset, Rollup, HOURS};

pub const NAME: &str = "loraflow-bench-query";
const PROVISION_CONCURRENCY: usize = 16;
/// Relative difference allowed between a returned average and the one computed here
/// (the database and the server may sum in another order).
const TOLERANCE: f64 = 1e-9;

/// Time the hourly measurement queries over a day of values of many devices (PostgreSQL).
#[derive(Debug, Clone, clap::Args)]
pub struct BenchQueryArgs {
    /// The PostgreSQL database to fill and query (postgres://user@host:port/name); it must
    /// exist. The server's migrations are applied to it.
    #[arg(long, value_name = "URL")]
    pub database: String,
    /// Devices of the application.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub devices: u32,
    /// Values of the series per device, evenly spread over the 24 hours before the current
    /// hour.
    #[arg(long, default_value_t = 24_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub rows_per_device: u32,
    /// Name of the series.
    #[arg(long, default_value = "temperature")]
    pub name: String,
    /// Timed requests of each query (after one untimed cold request).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub repetitions: u32,
    /// Query the data an earlier run left in the database instead of filling it (its
    /// devices, rows and hours; --devices and --rows-per-device are ignored).
    #[arg(long)]
    pub reuse: bool,
    /// `RUST_LOG` of the child server.
    #[arg(long, default_value = "warn", value_name = "FILTER")]
    pub server_log: String,
    /// Print the result as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// `--config` given to `loraflow`, handed on to the child server.
    #[arg(skip)]
    pub config_file: Option<PathBuf>,
}

/// Latencies of the timed requests, nearest-rank, in ms rounded to 0.01.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Default)]
pub struct Latency {
    pub p50: Option<f64>,
    pub p95: Option<f64>,
    pub max: Option<f64>,
}

/// One query and how it answered.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct QueryResult {
    /// `application` or `device`.
    pub query: &'static str,
    /// The first request's path and query string (the device query rotates over devices).
    pub path: String,
    pub status: u16,
    /// The error text of a refused query.
    pub error: Option<String>,
    /// Series (devices) and points in the first answer.
    pub series: usize,
    pub points: usize,
    /// Size of the first answer's body.
    pub bytes: usize,
    /// The first, untimed-in-the-percentiles request.
    pub cold_ms: f64,
    pub latency_ms: Latency,
}

/// The whole run.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BenchQueryReport {
    /// The database's name (the URL may hold a password).
    pub database: String,
    pub application_id: Uuid,
    pub name: String,
    pub devices: u32,
    pub rows_per_device: u32,
    pub rows: u64,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// Seconds spent registering the devices over REST; null with --reuse.
    pub provision_seconds: Option<f64>,
    /// Seconds spent writing the values and the rollup; null with --reuse.
    pub fill_seconds: Option<f64>,
    /// What was done for the hourly rollup table; null with --reuse.
    pub rollup: Option<Rollup>,
    pub vacuum_seconds: Option<f64>,
    pub repetitions: u32,
    pub queries: Vec<QueryResult>,
}

/// Fills (or reuses) the database, times the queries, prints the table or the JSON.
pub async fn run(args: BenchQueryArgs) -> anyhow::Result<BenchQueryReport> {
    let url = args.database.trim();
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        bail!("--database: expected a postgres:// URL (the query benchmark is about PostgreSQL)");
    }
    if !loraflow_app_server::measurements::valid_name(&args.name) {
        bail!("--name: {:?} is not a series name", args.name);
    }
    let server = ChildServer::spawn(ChildSpec {
        config_file: args.config_file.as_deref(),
        database_url: Some(url),
        log: &args.server_log,
        mqtt_url: None,
        env: Vec::new(),
    })
    .await?;
    let result = bench(&args, url, &server).await;
    server.stop().await;
    let report = result?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", table(&report));
    }
    Ok(report)
}

async fn bench(args: &BenchQueryArgs, url: &str, server: &ChildServer) -> anyhow::Result<BenchQueryReport> {
    let pool = PgPoolOptions::new().max_connections(4).connect(url).await.context("--database: cannot connect")?;
    let api = Api::new(&server.api, &server.token);
    let existing = api.find_application(NAME).await?;
    let (data, provision_seconds, fill_seconds, rollup, vacuum_seconds) = match (existing, args.reuse) {
        (Some(id), true) => (existing_dataset(&pool, id.parse()?, &args.name).await?, None, None, None, None),
        (None, true) => bail!("--reuse: the database holds no {NAME} application; run without --reuse first"),
        (Some(_), false) => {
            bail!("the database already holds a {NAME} application: pass --reuse to query it, or use an empty database")
        }
        (None, false) => {
            let started = Instant::now();
            let data = provision(args, &api).await?;
            let provision_seconds = started.elapsed().as_secs_f64();
            let started = Instant::now();
            let bar = crate::bench::progress(data.rows(), "writing values");
            fill::copy_measurements(&pool, &data, |n| bar.set_position(n)).await?;
            bar.finish_and_clear();
            let rollup = fill::insert_hourly_rollup(&pool, &data).await.context("writing the hourly rollup")?;
            let fill_seconds = started.elapsed().as_secs_f64();
            let vacuum = fill::vacuum_analyze(&pool, rollup).await.context("VACUUM ANALYZE")?;
            (data, Some(provision_seconds), Some(fill_seconds), Some(rollup), Some(vacuum))
        }
    };
    pool.close().await;

    let expected = expected_averages(&data);
    let http = reqwest::Client::new();
    let range = format!("bucket=1h&agg=avg&from={}&to={}", data.start.to_rfc3339(), data.end().to_rfc3339()).replace('+', "%2B");
    let app_path = format!("/api/applications/{}/measurements/{}?{range}", data.application_id, data.name);
    let application =
        time_query(&http, server, "application", args.repetitions, |_| app_path.clone(), |body| check_application(body, &expected)).await?;
    let device_path = |rep: u32| format!("/api/devices/{}/measurements/{}?{range}", Dataset::dev_eui(rep % data.devices), data.name);
    let device = time_query(&http, server, "device", args.repetitions, device_path, |body| {
        check_points(&body["result"], &expected[&0]).map(|points| (1, points))
    })
    .await?;

    Ok(BenchQueryReport {
        database: url.rsplit('/').next().unwrap_or_default().split('?').next().unwrap_or_default().to_string(),
        application_id: data.application_id,
        name: data.name.clone(),
        devices: data.devices,
        rows_per_device: data.rows_per_device,
        rows: data.rows(),
        from: data.start,
        to: data.end(),
        provision_seconds,
        fill_seconds,
        rollup,
        vacuum_seconds,
        repetitions: args.repetitions,
        queries: vec![application, device],
    })
}

/// Registers the application, a profile and the devices over REST.
async fn provision(args: &BenchQueryArgs, api: &Api) -> anyhow::Result<Dataset> {
    let application_id = api.ensure_application(NAME).await.context("creating the application")?;
    let spec = ProfileSpec { codec: "CAYENNE_LPP", ..ProfileSpec::default() };
    let profile_id = api.ensure_device_profile_spec(NAME, &spec).await.context("creating the device profile")?;
    let bar = crate::bench::progress(u64::from(args.devices), "registering");
    stream::iter(0..args.devices)
        .map(|d| {
            let (application_id, profile_id, bar) = (&application_id, &profile_id, &bar);
            async move {
                api.ensure_device(Dataset::dev_eui(d), &format!("bench-query-dev-{d}"), application_id, profile_id).await?;
                bar.inc(1);
                anyhow::Ok(())
            }
        })
        .buffer_unordered(PROVISION_CONCURRENCY)
        .try_collect::<()>()
        .await
        .context("registering devices")?;
    bar.finish_and_clear();
    // The 24 whole hours before the current one.
    let hour = DateTime::from_timestamp(Utc::now().timestamp().div_euclid(3600) * 3600, 0).ok_or_else(|| anyhow!("clock out of range"))?;
    Ok(Dataset {
        application_id: application_id.parse()?,
        name: args.name.clone(),
        devices: args.devices,
        rows_per_device: args.rows_per_device,
        start: hour - chrono::Duration::hours(i64::from(HOURS)),
    })
}

/// The dataset an earlier run wrote: its start is its first value's time, its size from the
/// devices and the rows stored.
async fn existing_dataset(pool: &sqlx::PgPool, application_id: Uuid, name: &str) -> anyhow::Result<Dataset> {
    let (devices,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM devices WHERE application_id = $1").bind(application_id).fetch_one(pool).await?;
    let (start, rows): (Option<DateTime<Utc>>, i64) =
        sqlx::query_as("SELECT min(time), count(*) FROM measurements WHERE application_id = $1 AND name = $2")
            .bind(application_id)
            .bind(name)
            .fetch_one(pool)
            .await?;
    let start = start.ok_or_else(|| anyhow!("--reuse: no values of {name:?} in the database"))?;
    if devices == 0 || rows % devices != 0 {
        bail!("--reuse: {rows} values do not divide among {devices} devices; fill a fresh database");
    }
    Ok(Dataset {
        application_id,
        name: name.to_string(),
        devices: u32::try_from(devices)?,
        rows_per_device: u32::try_from(rows / devices)?,
        start,
    })
}

/// Hourly averages per device number, oldest first.
fn expected_averages(data: &Dataset) -> HashMap<u32, Vec<(DateTime<Utc>, f64)>> {
    let mut out: HashMap<u32, Vec<(DateTime<Utc>, f64)>> = HashMap::new();
    for h in data.hourly() {
        out.entry(h.device).or_default().push((h.bucket, h.avg()));
    }
    out
}

/// Points `[{time, value}]` equal to `want`; their number.
fn check_points(points: &serde_json::Value, want: &[(DateTime<Utc>, f64)]) -> anyhow::Result<usize> {
    let got: Vec<(DateTime<Utc>, f64)> = points
        .as_array()
        .ok_or_else(|| anyhow!("no points"))?
        .iter()
        .map(|p| {
            let time = p["time"].as_str().and_then(|t| t.parse().ok()).ok_or_else(|| anyhow!("bad point time in {p}"))?;
            let value = p["value"].as_f64().ok_or_else(|| anyhow!("bad point value in {p}"))?;
            anyhow::Ok((time, value))
        })
        .collect::<anyhow::Result<_>>()?;
    if got.len() != want.len() {
        bail!("{} points, expected {}", got.len(), want.len());
    }
    for ((gt, gv), (wt, wv)) in got.iter().zip(want) {
        if gt != wt || (gv - wv).abs() > TOLERANCE * wv.abs().max(1.0) {
            bail!("point ({gt}, {gv}), expected ({wt}, {wv})");
        }
    }
    Ok(got.len())
}

/// One series per device, each equal to its expected averages; (series, points).
fn check_application(body: &serde_json::Value, expected: &HashMap<u32, Vec<(DateTime<Utc>, f64)>>) -> anyhow::Result<(usize, usize)> {
    let series = body["result"].as_array().ok_or_else(|| anyhow!("no result"))?;
    if series.len() != expected.len() {
        bail!("{} series, expected {}", series.len(), expected.len());
    }
    let mut points = 0;
    for s in series {
        let eui = s["devEui"].as_str().and_then(|e| e.parse().ok()).ok_or_else(|| anyhow!("bad devEui in a series"))?;
        let device = Dataset::device_of(eui).ok_or_else(|| anyhow!("series of a foreign device {eui}"))?;
        let want = expected.get(&device).ok_or_else(|| anyhow!("series of a foreign device {eui}"))?;
        points += check_points(&s["points"], want).with_context(|| format!("device {eui}"))?;
    }
    Ok((series.len(), points))
}

/// One cold request, checked with `check` (series, points), then `repetitions` timed ones.
/// A refused query (not 200) is reported with its error and not repeated.
async fn time_query(
    http: &reqwest::Client,
    server: &ChildServer,
    query: &'static str,
    repetitions: u32,
    path: impl Fn(u32) -> String,
    check: impl Fn(&serde_json::Value) -> anyhow::Result<(usize, usize)>,
) -> anyhow::Result<QueryResult> {
    let first = path(0);
    let (status, body, cold) = get(http, server, &first).await?;
    let mut result = QueryResult {
        query,
        path: first,
        status,
        error: None,
        series: 0,
        points: 0,
        bytes: body.len(),
        cold_ms: ms(cold),
        latency_ms: Latency::default(),
    };
    let json: serde_json::Value = serde_json::from_slice(&body).with_context(|| format!("{query} query: the answer is not JSON"))?;
    if status != 200 {
        result.error = Some(json["error"].as_str().map_or_else(|| json.to_string(), str::to_string));
        return Ok(result);
    }
    (result.series, result.points) = check(&json).with_context(|| format!("{query} query: wrong answer"))?;
    let mut times = Vec::with_capacity(repetitions as usize);
    for rep in 0..repetitions {
        let p = path(rep + 1);
        let (status, _, took) = get(http, server, &p).await?;
        if status != 200 {
            bail!("{query} query {p}: HTTP {status} after a 200");
        }
        times.push(ms(took));
    }
    result.latency_ms = percentiles(times);
    Ok(result)
}

/// Status, body and time to the last byte of the body.
async fn get(http: &reqwest::Client, server: &ChildServer, path: &str) -> anyhow::Result<(u16, Vec<u8>, Duration)> {
    let started = Instant::now();
    let resp = http.get(format!("{}{path}", server.api)).bearer_auth(&server.token).send().await.with_context(|| format!("GET {path}"))?;
    let status = resp.status().as_u16();
    let body = resp.bytes().await.with_context(|| format!("GET {path}"))?;
    Ok((status, body.to_vec(), started.elapsed()))
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 100_000.0).round() / 100.0
}

fn percentiles(mut ms: Vec<f64>) -> Latency {
    if ms.is_empty() {
        return Latency::default();
    }
    ms.sort_by(f64::total_cmp);
    let rank = |q: f64| ms[((q * ms.len() as f64).ceil() as usize).clamp(1, ms.len()) - 1];
    Latency { p50: Some(rank(0.50)), p95: Some(rank(0.95)), max: Some(ms[ms.len() - 1]) }
}

fn fmt_opt(v: Option<f64>) -> String {
    v.map_or_else(|| "n/a".to_string(), |x| format!("{x:.1}"))
}

/// The human-readable result.
fn table(r: &BenchQueryReport) -> String {
    let mut out = format!(
        "loraflow bench-query: {} devices x {} values of {:?} ({} rows) from {} to {}, database {}\n",
        r.devices,
        r.rows_per_device,
        r.name,
        r.rows,
        r.from.to_rfc3339(),
        r.to.to_rfc3339(),
        r.database
    );
    match (r.fill_seconds, r.rollup) {
        (Some(s), Some(rollup)) => {
            let rollup = match rollup {
                Rollup::NoTable => "no measurements_hourly table".to_string(),
                Rollup::AlreadyThere(n) => format!("measurements_hourly already held {n} rows"),
                Rollup::Inserted(n) => format!("{n} measurements_hourly rows"),
            };
            out.push_str(&format!(
                "devices registered in {:.1} s; values written in {s:.1} s ({:.0} rows/s), {rollup}; VACUUM ANALYZE {:.1} s\n",
                r.provision_seconds.unwrap_or_default(),
                r.rows as f64 / s,
                r.vacuum_seconds.unwrap_or_default()
            ));
        }
        _ => out.push_str("reused the data of an earlier run\n"),
    }
    out.push_str(&format!(
        "{:<12} {:>6} {:>7} {:>7} {:>10} {:>8} {:>8} {:>8} {:>8}   ({} timed requests each)\n",
        "query", "status", "series", "points", "bytes", "cold ms", "p50 ms", "p95 ms", "max ms", r.repetitions
    ));
    for q in &r.queries {
        out.push_str(&format!(
            "{:<12} {:>6} {:>7} {:>7} {:>10} {:>8.1} {:>8} {:>8} {:>8}\n",
            q.query,
            q.status,
            q.series,
            q.points,
            q.bytes,
            q.cold_ms,
            fmt_opt(q.latency_ms.p50),
            fmt_opt(q.latency_ms.p95),
            fmt_opt(q.latency_ms.max)
        ));
        if let Some(e) = &q.error {
            out.push_str(&format!("  {}: refused: {e}\n", q.query));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn percentiles_use_nearest_rank() {
        let l = percentiles((1..=20).map(f64::from).collect());
        assert_eq!((l.p50, l.p95, l.max), (Some(10.0), Some(19.0), Some(20.0)));
        assert_eq!(percentiles(Vec::new()), Latency::default());
    }

    #[test]
    fn answers_are_checked_against_the_expected_hourly_averages() {
        let data = Dataset {
            application_id: Uuid::nil(),
            name: "t".into(),
            devices: 2,
            rows_per_device: 48,
            start: "2026-11-29T21:00:00Z".parse().unwrap(),
        };
        let expected = expected_averages(&data);
        let series = |d: u32, bump: f64| {
            let points: Vec<_> = expected[&d]
                .iter()
                .map(|(t, v)| json!({"time": t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true), "value": v + bump}))
                .collect();
            json!({"devEui": Dataset::dev_eui(d).to_string(), "points": points})
        };
        let good = json!({"result": [series(0, 0.0), series(1, 0.0)]});
        assert_eq!(check_application(&good, &expected).unwrap(), (2, 48));
        let off = json!({"result": [series(0, 0.0), series(1, 0.1)]});
        assert!(check_application(&off, &expected).is_err());
        let short = json!({"result": [series(0, 0.0)]});
        assert!(check_application(&short, &expected).is_err());
    }
}
