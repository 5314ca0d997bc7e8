//! `loraflow bench-query` on PostgreSQL, small: it fills a database through the migrated
//! schema (values by COPY, and the hourly rollup when the schema has one), times the real
//! server's hourly queries over HTTP after checking their answers, and reruns on the same
//! data with --reuse.

use std::process::Output;

use loraflow::bench_query::fill::{Dataset, HOURS};
use loraflow_network_server::storage::testing::{drop_postgres_database, fresh_postgres_url};

async fn bench_query(url: &str, extra: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_loraflow"))
        .args(["bench-query", "--database", url, "--repetitions", "3", "--json"])
        .args(extra)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .output()
        .await
        .expect("run loraflow bench-query")
}

fn report(out: &Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "bench-query failed: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

/// Both queries answered 200 with every device's 24 hourly averages (checked by the tool)
/// and timed.
fn assert_queries(r: &serde_json::Value, devices: u64) {
    let queries = r["queries"].as_array().unwrap();
    assert_eq!(queries.iter().map(|q| q["query"].as_str().unwrap()).collect::<Vec<_>>(), ["application", "device"], "{r}");
    for (q, series) in queries.iter().zip([devices, 1]) {
        assert_eq!(q["status"], 200, "{q}");
        assert_eq!((q["series"].as_u64(), q["points"].as_u64()), (Some(series), Some(series * u64::from(HOURS))), "{q}");
        let lat = |k: &str| q["latencyMs"][k].as_f64().unwrap_or_else(|| panic!("latencyMs.{k}: {q}"));
        assert!(0.0 < lat("p50") && lat("p50") <= lat("p95") && lat("p95") <= lat("max"), "{q}");
        assert!(q["path"].as_str().unwrap().contains("bucket=1h&agg=avg"), "{q}");
    }
}

#[tokio::test]
async fn bench_query_fills_the_schema_checks_and_times_the_hourly_queries() {
    let url = fresh_postgres_url().await;
    let r = report(&bench_query(&url, &["--devices", "5", "--rows-per-device", "100"]).await);
    assert_eq!((r["devices"].as_u64(), r["rowsPerDevice"].as_u64(), r["rows"].as_u64()), (Some(5), Some(100), Some(500)), "{r}");
    assert_eq!(r["name"], "temperature");
    assert_queries(&r, 5);
    let from: chrono::DateTime<chrono::Utc> = r["from"].as_str().unwrap().parse().unwrap();
    let to: chrono::DateTime<chrono::Utc> = r["to"].as_str().unwrap().parse().unwrap();
    assert_eq!(to - from, chrono::Duration::hours(24));
    assert!(to <= chrono::Utc::now() && chrono::Utc::now() - to < chrono::Duration::hours(2), "the last 24 whole hours: {r}");

    // What is in the database: the values through the migrated schema, and the rollup rows
    // when the schema has the table.
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let (rows, devices, min, max): (i64, i64, chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT m.dev_eui), min(time), max(time) FROM measurements m
         JOIN devices d ON d.dev_eui = m.dev_eui AND d.application_id = m.application_id WHERE m.name = 'temperature' AND m.kind = 'GAUGE'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((rows, devices), (500, 5));
    assert!(min == from && max < to, "{min} {max}");
    let (hourly_table,): (bool,) = sqlx::query_as("SELECT to_regclass('measurements_hourly') IS NOT NULL").fetch_one(&pool).await.unwrap();
    if hourly_table {
        assert_eq!(r["rollup"], serde_json::json!({"outcome": "inserted", "rows": 5 * HOURS}), "{r}");
        let (count, sum): (i64, f64) =
            sqlx::query_as("SELECT sum(count)::int8, sum(sum) FROM measurements_hourly").fetch_one(&pool).await.unwrap();
        let (raw_sum,): (f64,) = sqlx::query_as("SELECT sum(value) FROM measurements").fetch_one(&pool).await.unwrap();
        assert_eq!(count, 500);
        assert!((sum - raw_sum).abs() < 1e-6, "{sum} vs {raw_sum}");
    } else {
        assert_eq!(r["rollup"], serde_json::json!({"outcome": "noTable"}), "{r}");
    }
    let eui = Dataset::dev_eui(4);
    let (named,): (i64,) = sqlx::query_as("SELECT count(*) FROM devices WHERE dev_eui = $1 AND name = 'bench-query-dev-4'")
        .bind(eui.0.to_vec())
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(named, 1, "device {eui} registered over REST");
    pool.close().await;

    // Again on the same data: --reuse finds it; without, the tool refuses to add to it.
    let again = report(&bench_query(&url, &["--reuse"]).await);
    assert_eq!(
        (again["rows"].as_u64(), again["fillSeconds"].as_f64(), again["from"].clone()),
        (Some(500), None, r["from"].clone()),
        "{again}"
    );
    assert_queries(&again, 5);
    let refused = bench_query(&url, &["--devices", "5", "--rows-per-device", "100"]).await;
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--reuse"), "{}", String::from_utf8_lossy(&refused.stderr));

    drop_postgres_database(&url).await;
}
