//! Schemathesis (a schema-driven API fuzzer, from PyPI) against the real binary: every
//! operation of `/api/openapi.json` gets generated valid and invalid requests, and no answer
//! may be a 5xx, break the documented schema, status codes or content types, accept what the
//! schema forbids, or ignore the bearer token. The run is `scripts/schemathesis.sh`.

mod common;

use std::process::Command;

use common::{Backend, TestServer, TOKEN};

fn schemathesis_available() -> bool {
    let installed =
        || Command::new("python3").args(["-c", "import schemathesis.cli"]).output().map(|o| o.status.success()).unwrap_or(false);
    if installed() {
        return true;
    }
    eprintln!("schemathesis is not installed; installing it with pip");
    for extra in [&[][..], &["--break-system-packages"][..]] {
        let _ = Command::new("python3").args(["-m", "pip", "install", "-q", "schemathesis"]).args(extra).status();
        if installed() {
            return true;
        }
    }
    false
}

#[tokio::test]
async fn schemathesis_finds_nothing() {
    if !schemathesis_available() {
        eprintln!("SKIPPED: the Python module schemathesis cannot be installed (python3 -m pip install schemathesis)");
        return;
    }
    // The fuzzer sends wrong tokens on purpose, all from one address: the failed-auth limit
    // (tested in rest_hardening.rs) would answer 429 to everything after the tenth.
    let server = TestServer::start(Backend::Sqlite, &[("LORAFLOW_API__AUTH_FAILURES_PER_MINUTE", "0")]).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/schemathesis.sh");
    let output = tokio::task::spawn_blocking(move || Command::new(script).arg(server.url("")).arg(TOKEN).output())
        .await
        .unwrap()
        .expect("run scripts/schemathesis.sh");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "Schemathesis found problems ({}):\n{stdout}\n{stderr}", output.status);
    // A run that tested nothing would pass too: its summary says how many cases it generated.
    let generated: u64 = stdout
        .lines()
        .find_map(|l| l.trim().split_once(" generated").and_then(|(n, _)| n.parse().ok()))
        .unwrap_or_else(|| panic!("no Schemathesis summary:\n{stdout}\n{stderr}"));
    assert!(generated >= 1000, "only {generated} test cases generated:\n{stdout}");
}
