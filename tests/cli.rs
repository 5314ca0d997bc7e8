//! The binary's command line, config errors and shutdown contract.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{Backend, TestServer};

fn loraflow() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_loraflow"));
    c.env_clear().env("PATH", std::env::var("PATH").unwrap_or_default());
    c
}

#[test]
fn help_documents_the_subcommands() {
    let out = loraflow().arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for word in ["serve", "--config", "LORAFLOW_"] {
        assert!(text.contains(word), "help lacks {word}: {text}");
    }
}

#[test]
fn a_bad_value_exits_2_with_one_line_naming_the_key() {
    for (key, value, name) in [
        ("LORAFLOW_API__BIND", "nowhere", "api.bind"),
        ("LORAFLOW_NETWORK__NET_ID", "12", "network.net_id"),
        ("LORAFLOW_NETWORK__DEDUP_WINDOW_MS", "-5", "network.dedup_window_ms"),
        ("LORAFLOW_DATABASE__URL", "mysql://x", "database.url"),
        ("LORAFLOW_GATEWAY__UPLINK_QUEUE", "0", "gateway.uplink_queue"),
        ("LORAFLOW_NETWORK__REGION", "XX999", "network.region"),
        ("LORAFLOW_NETWORK__ENABLED_UPLINK_CHANNELS", "0,1,99", "network.enabled_uplink_channels"),
        ("LORAFLOW_NETWORK__EXTRA_CHANNELS", "915000000", "network.extra_channels"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let out = loraflow().current_dir(dir.path()).env(key, value).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{key}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.contains(name), "{err}");
    }
}

#[test]
fn a_bad_regions_entry_exits_2_naming_it() {
    for (toml, name) in [
        ("[[regions]]\nid = \"a\"\ncommon_name = \"EU868\"\n[[regions]]\nid = \"a\"\ncommon_name = \"US915\"\n", "regions[1].id"),
        ("[[regions]]\nid = \"us\"\ncommonName = \"US915\"\nenabled_uplink_channels = [8, 72]\n", "regions[0].enabled_uplink_channels"),
        ("[[regions]]\nid = \"eu\"\ncommon_name = \"EU868\"\ndownlink_dwell_time = true\n", "regions[0].downlink_dwell_time"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("loraflow.toml"), toml).unwrap();
        let out = loraflow().current_dir(dir.path()).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{toml}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.contains(name), "{name}: {err}");
    }
}

#[test]
fn a_missing_config_file_exits_2() {
    let out = loraflow().args(["--config", "/nonexistent.toml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test]
async fn sigterm_stops_within_5_seconds_and_a_restart_binds_at_once() {
    let mut server = TestServer::start(Backend::Sqlite, &[]).await;
    let api = server.api.to_string();
    let (code, took) = server.stop();
    assert_eq!(code, Some(0));
    assert!(took < Duration::from_secs(5), "took {took:?}");
    // Same fixed port again right away.
    let server = TestServer::start(Backend::Sqlite, &[("LORAFLOW_API__BIND", &api)]).await;
    assert_eq!(server.api.to_string(), api);
}

#[tokio::test]
async fn a_port_in_use_names_the_key_that_moves_it() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let out = loraflow()
        .current_dir(dir.path())
        .env("LORAFLOW_API__BIND", &addr)
        .env("LORAFLOW_GATEWAY__BIND", "127.0.0.1:0")
        .env("LORAFLOW_MQTT__EMBEDDED_BIND", "127.0.0.1:0")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("api.bind") && err.contains(&addr), "{err}");
}

#[tokio::test]
async fn a_token_is_generated_on_first_start_and_printed_once() {
    let server = TestServer::start(Backend::Sqlite, &[("LORAFLOW_API__ADMIN_TOKEN", "")]).await;
    let line = server.stdout_lines.iter().find(|l| l.contains("generated admin API token")).expect("token printed");
    let token = line.rsplit(' ').next().unwrap().to_string();
    let api = server.client().with_token(Some(&token));
    assert_eq!(api.get("/api/gateways").await.0, 200);
    assert_eq!(server.client().with_token(Some("lf_wrong")).get("/api/gateways").await.0, 401);
    let server = server.restart();
    assert!(!server.stdout_lines.iter().any(|l| l.contains("generated admin API token")));
    assert_eq!(server.client().with_token(Some(&token)).get("/api/gateways").await.0, 200);
}

#[tokio::test]
async fn a_start_that_fails_keeps_no_token_and_the_next_one_prints_it() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mqtt = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("loraflow.db").display());
    let run = |mqtt_bind: &str| {
        loraflow()
            .current_dir(dir.path())
            .env("LORAFLOW_DATABASE__URL", &db)
            .env("LORAFLOW_API__BIND", "127.0.0.1:0")
            .env("LORAFLOW_GATEWAY__BIND", "127.0.0.1:0")
            .env("LORAFLOW_MQTT__EMBEDDED_BIND", mqtt_bind)
            .output()
            .unwrap()
    };
    // The embedded broker cannot listen: the start fails after the database is ready.
    let out = run(&mqtt);
    assert!(!out.status.success());
    assert!(!String::from_utf8_lossy(&out.stdout).contains("generated admin API token"), "a token nobody can use was printed");
    drop(taken);
    // Started for real (the same database): the token is generated now and shown.
    let server = TestServer::start(Backend::Sqlite, &[("LORAFLOW_API__ADMIN_TOKEN", ""), ("LORAFLOW_DATABASE__URL", &db)]).await;
    let line = server.stdout_lines.iter().find(|l| l.contains("generated admin API token")).expect("token printed");
    let token = line.rsplit(' ').next().unwrap();
    assert_eq!(server.client().with_token(Some(token)).get("/api/gateways").await.0, 200);
}

#[tokio::test]
async fn admin_token_rotate_prints_a_new_token_and_revokes_the_old() {
    let server = TestServer::start(Backend::Sqlite, &[("LORAFLOW_API__ADMIN_TOKEN", "")]).await;
    let line = server.stdout_lines.iter().find(|l| l.contains("generated admin API token")).expect("token printed");
    let old = line.rsplit(' ').next().unwrap().to_string();
    let old_api = server.client().with_token(Some(&old));
    assert_eq!(old_api.get("/api/gateways").await.0, 200);

    // While the server runs, on its database.
    let out = loraflow().arg("admin-token").arg("rotate").env("LORAFLOW_DATABASE__URL", &server.database_url).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let new = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(new.starts_with("lf_") && new != old, "{new}");
    let new_api = server.client().with_token(Some(&new));
    assert_eq!(new_api.get("/api/gateways").await.0, 200);
    // The running server trusts a confirmed key for at most 5 s.
    let refused =
        common::eventually(std::time::Duration::from_secs(8), || async { (old_api.get("/api/gateways").await.0 == 401).then_some(()) })
            .await;
    assert!(refused.is_some(), "the old token still works");

    // A configured token is not rotated here.
    let out = loraflow()
        .args(["admin-token", "rotate"])
        .env("LORAFLOW_DATABASE__URL", &server.database_url)
        .env("LORAFLOW_API__ADMIN_TOKEN", "configured-secret")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("api.admin_token"));
    assert_eq!(new_api.get("/api/gateways").await.0, 200);
}
