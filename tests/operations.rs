//! Operating the real binary: readiness follows the database, every documented metric is
//! exported from the first scrape, logs suit files and log shippers, `log.level` is checked.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{eventually, Backend, TestServer};
use sqlx::{Connection, Executor, PgConnection};

async fn ready(server: &TestServer) -> (u16, serde_json::Value) {
    server.client().with_token(None).get("/health/ready").await
}

/// The database name of a test PostgreSQL URL (`…/loraflow_test_<hex>`).
fn database_name(url: &str) -> String {
    let name = url.split('?').next().unwrap().rsplit('/').next().unwrap().to_string();
    assert!(name.starts_with("loraflow_test_") && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'), "{name}");
    name
}

async fn admin() -> PgConnection {
    PgConnection::connect(&loraflow_network_server::storage::testing::test_postgres_server_url()).await.expect("test PostgreSQL server")
}

/// Makes the test database unreachable without touching the shared server: no new
/// connections are allowed and the server's open ones are terminated.
async fn cut_off(name: &str) {
    let mut c = admin().await;
    c.execute(format!("ALTER DATABASE {name} WITH ALLOW_CONNECTIONS false").as_str()).await.unwrap();
    c.execute(format!("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'").as_str()).await.unwrap();
    c.close().await.unwrap();
}

async fn reconnect(name: &str) {
    let mut c = admin().await;
    c.execute(format!("ALTER DATABASE {name} WITH ALLOW_CONNECTIONS true").as_str()).await.unwrap();
    c.close().await.unwrap();
}

#[tokio::test]
async fn readiness_is_503_naming_the_database_while_it_is_unreachable_and_200_when_it_returns() {
    let server = TestServer::start(Backend::Postgres, &[]).await;
    let name = database_name(&server.database_url);

    let (status, body) = ready(&server).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["checks"]["database"]["status"], "up", "{body}");
    assert_eq!(body["checks"]["database"]["backend"], "postgres", "{body}");
    assert_eq!(body["checks"]["mqtt"]["status"], "up", "{body}");

    cut_off(&name).await;
    let down = eventually(Duration::from_secs(10), || async {
        let (status, body) = ready(&server).await;
        (status == 503).then_some(body)
    })
    .await;
    reconnect(&name).await;
    let body = down.expect("/health/ready became 503 while the database was unreachable");
    assert_eq!(body["status"], "unavailable", "{body}");
    assert_eq!(body["checks"]["database"]["status"], "down", "{body}");
    assert!(body["checks"]["database"]["reason"].as_str().is_some_and(|r| !r.is_empty()), "{body}");
    // The broker was fine all along, and liveness must not follow the database.
    assert_eq!(body["checks"]["mqtt"]["status"], "up", "{body}");

    let back = eventually(Duration::from_secs(10), || async {
        let (status, body) = ready(&server).await;
        (status == 200).then_some(body)
    })
    .await
    .expect("/health/ready back to 200 once the database accepts connections again");
    assert_eq!(back["checks"]["database"]["status"], "up", "{back}");
}

#[tokio::test]
async fn liveness_stays_200_while_the_database_is_unreachable() {
    let server = TestServer::start(Backend::Postgres, &[]).await;
    let name = database_name(&server.database_url);
    cut_off(&name).await;
    let (status, body) = server.client().with_token(None).get("/health").await;
    let (ready_status, _) = ready(&server).await;
    reconnect(&name).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(ready_status, 503);
}

#[tokio::test]
async fn a_sqlite_server_is_ready_with_its_database_checked() {
    let server = TestServer::start(Backend::Sqlite, &[]).await;
    let (status, body) = ready(&server).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["checks"]["database"],
        serde_json::json!({"status": "up", "backend": "sqlite", "latencyMs": body["checks"]["database"]["latencyMs"]})
    );
}

/// The metric names of README's metrics table (first column), the list operators build
/// dashboards from.
fn documented_metrics() -> Vec<String> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = readme.split("\n## Metrics\n").nth(1).expect("README has a Metrics section");
    let section = section.split("\n## ").next().unwrap();
    let names: Vec<String> = section
        .lines()
        // Exported only by an instance of a cluster (tests/cluster_coherence.rs reads them).
        .filter(|l| !l.contains("cluster mode only"))
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .filter(|n| n.starts_with("loraflow_") || n.starts_with("process_"))
        .map(str::to_owned)
        .collect();
    assert!(names.len() > 40, "{names:?}");
    names
}

/// Whether `name` has at least one sample (a histogram through its `_count`).
fn has_sample(text: &str, name: &str) -> bool {
    let sample = |n: &str| text.lines().any(|l| !l.starts_with('#') && l.starts_with(n) && l[n.len()..].starts_with(['{', ' ']));
    sample(name) || sample(&format!("{name}_count"))
}

#[tokio::test]
async fn every_documented_metric_is_exported_from_the_first_scrape() {
    let server = TestServer::start(Backend::Sqlite, &[]).await;
    let text = server.client().metrics().await;
    let missing: Vec<String> = documented_metrics().into_iter().filter(|n| !has_sample(&text, n)).collect();
    assert!(missing.is_empty(), "not exported right after start: {missing:?}\n{text}");
    // Labelled counters show their known series at 0 before anything happened.
    for (name, labels) in [
        ("loraflow_uplinks_rejected_total", [("reason", "mic")]),
        ("loraflow_joins_rejected_total", [("reason", "dev_nonce")]),
        ("loraflow_gateway_tx_ack_total", [("status", "TIMEOUT")]),
        ("loraflow_events_published_total", [("kind", "up")]),
        ("loraflow_history_dropped_total", [("reason", "buffer_full")]),
        ("loraflow_class_c_downlinks_total", [("result", "sent")]),
        ("loraflow_api_connections_closed_total", [("reason", "evicted")]),
    ] {
        let line = format!("{name}{{{}=\"{}\"}} 0", labels[0].0, labels[0].1);
        assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
    }
    let version = env!("CARGO_PKG_VERSION");
    assert!(
        text.lines().any(|l| l.starts_with("loraflow_build_info{") && l.contains(&format!("version=\"{version}\"")) && l.ends_with(" 1")),
        "{text}"
    );
}

#[tokio::test]
async fn http_requests_are_counted_by_route_template() {
    let server = TestServer::start(Backend::Sqlite, &[]).await;
    let api = server.client();
    for _ in 0..2 {
        let (status, _) = api.get("/api/devices/0102030405060708").await;
        assert_eq!(status, 404);
    }
    let text = api.metrics().await;
    let count =
        common::metric(&text, "loraflow_http_requests_total", &[("method", "GET"), ("route", "/api/devices/{dev_eui}"), ("status", "404")]);
    assert_eq!(count, 2.0, "{text}");
    assert!(!text.contains("0102030405060708"), "a path value became a label: {text}");
    assert!(common::metric(&text, "loraflow_http_request_duration_seconds_count", &[("route", "/api/devices/{dev_eui}")]) >= 2.0);
}

#[tokio::test]
async fn json_logs_are_flat_objects_and_text_logs_have_no_colour_codes_in_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let json_log = dir.path().join("json.log");
    let mut server =
        TestServer::start_logging_to(Backend::Sqlite, &[("RUST_LOG", "info"), ("LORAFLOW_LOG__FORMAT", "json")], &json_log).await;
    server.stop();
    let text = std::fs::read_to_string(&json_log).unwrap();
    let started = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .find(|v| v["message"] == "loraflow started")
        .unwrap_or_else(|| panic!("no start line: {text}"));
    // Flat: the event's fields beside message and level, not nested under "fields".
    assert!(started.get("fields").is_none(), "{started}");
    assert!(started["listening"].as_str().is_some_and(|l| l.contains("api=http://")), "{started}");
    assert_eq!(started["level"], "INFO", "{started}");

    let text_log = dir.path().join("text.log");
    let mut server = TestServer::start_logging_to(Backend::Sqlite, &[("RUST_LOG", "info")], &text_log).await;
    server.stop();
    let text = std::fs::read_to_string(&text_log).unwrap();
    assert!(text.contains("loraflow started"), "{text}");
    assert!(!text.contains('\u{1b}'), "escape codes in a log file: {text:?}");
}

#[test]
fn a_bad_log_level_exits_2_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_loraflow"))
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("LORAFLOW_LOG__LEVEL", "verbose")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("`log.level`"), "{err}");
}
