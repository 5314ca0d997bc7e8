//! What a gateway (or anyone who can reach the UDP port) can put in the server's log: a few
//! lines for a flood of datagrams, and never a line of its own making.

mod common;

use std::time::Duration;

use common::gateway::FakeGateway;
use common::{eventually, metric, Backend, TestServer};

const FORGED: &str = "2026-01-01T00:00:00.000000Z ERROR loraflow: forged line";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_tx_acks_with_unknown_error_names_give_a_handful_of_log_lines_and_no_forged_one() {
    let dir = tempfile::tempdir().unwrap();
    let log_file = dir.path().join("loraflow.log");
    let mut server = TestServer::start_logging_to(Backend::Sqlite, &[("RUST_LOG", "info")], &log_file).await;
    // Not a registered gateway: TX_ACKs are read from any source.
    let gw = FakeGateway::new("ffffffffffff0001", server.gateway).await;

    const TOTAL: usize = 10_000;
    let mut sent = 0;
    while sent < TOTAL {
        // The forged line opens the flood (the first datagram is the one that gets logged)
        // and comes again in the middle of it.
        for i in sent..(sent + 500).min(TOTAL) {
            let name = if i == 0 || i == TOTAL / 2 { format!("BOGUS\n{FORGED}") } else { format!("BOGUS_{i}") };
            gw.tx_ack(i as u16, &name).await;
        }
        sent = (sent + 500).min(TOTAL);
        // Paced so that the kernel's receive buffer never drops any of them.
        let received = eventually(Duration::from_secs(20), || async {
            let text = reqwest::get(server.url("/metrics")).await.ok()?.text().await.ok()?;
            let n = metric(&text, "loraflow_gateway_udp_received_total", &[("packet_type", "tx_ack")]);
            (n >= sent as f64).then_some(n)
        })
        .await;
        assert_eq!(received, Some(sent as f64), "every TX_ACK reached the server");
    }
    let (code, _) = server.stop();
    assert_eq!(code, Some(0));

    let log = std::fs::read_to_string(&log_file).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    let about: Vec<&&str> = lines.iter().filter(|l| l.contains("TX_ACK")).collect();
    eprintln!("log lines about TX_ACKs: {about:#?}");
    assert!(!about.is_empty(), "the first unknown error name is logged: {log}");
    assert!(about.len() <= 3, "{} lines about TX_ACKs: {about:#?}", about.len());
    assert!(lines.len() < 40, "{} log lines in all:\n{log}", lines.len());
    assert!(!lines.iter().any(|l| l.starts_with(FORGED) || l.trim_start().starts_with("2026-01-01")), "a forged line:\n{log}");
    // The value is there, escaped, inside the line that reports it.
    assert!(about[0].contains(r"BOGUS\n2026-01-01T00:00:00.000000Z ERROR loraflow: forged line"), "{}", about[0]);
}
