//! A device's history over REST, end to end: `nextCursor` walks every stored uplink exactly
//! once with an honest `totalCount`, `/events` returns the stored join, status and log
//! events (filtered by `kind` and paged the same way), and bad parameters get a 400 naming
//! the parameter. SQLite and PostgreSQL.

mod common;

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use common::device::Device;
use common::gateway::{rxpk, FakeGateway, PULL_ACK, PUSH_ACK};
use common::provision;
use common::{Api, Backend, TestServer};
use serde_json::Value;

const APP_KEY: &str = "000102030405060708090a0b0c0d0e0f";
const DEV_EUI: &str = "70b3d57ed00000a1";
const GATEWAY: &str = "00000000000000c1";
/// Cayenne LPP: temperature 27.2 °C on channel 3.
const LPP: [u8; 4] = [0x03, 0x67, 0x01, 0x10];
const UPLINKS: u64 = 8;

async fn send(gw: &mut FakeGateway, phy: &[u8], tmst: u32) {
    let t = gw.push_rxpk(vec![rxpk(phy, tmst, -50, 8.0)]).await;
    gw.expect_ack(PUSH_ACK, t).await;
}

/// Joins, then sends `UPLINKS` uplinks; the second answers the server's DevStatusReq (a
/// `status` event) and carries a payload the codec cannot decode (a `log` event).
async fn device_with_history(server: &TestServer, api: &Api) {
    let p = provision::application_and_profile(api, "CAYENNE_LPP", "").await;
    provision::gateway(api, GATEWAY).await;
    provision::otaa_device(api, &p, DEV_EUI, APP_KEY).await;
    let mut gw = FakeGateway::new(GATEWAY, server.gateway).await;
    let t = gw.pull_data().await;
    gw.expect_ack(PULL_ACK, t).await;

    let mut dev = Device::otaa(DEV_EUI, APP_KEY);
    let jr = dev.join_request();
    send(&mut gw, &jr, 1_000_000).await;
    let resp = gw.next_pull_resp(Duration::from_secs(5)).await.expect("join-accept");
    dev.accept(&resp.phy_payload(), [0, 0, 0]);
    gw.tx_ack(resp.token, "NONE").await;

    let up = dev.uplink(false, 2, &LPP);
    send(&mut gw, &up, 2_000_000).await;
    let resp = gw.next_pull_resp(Duration::from_secs(5)).await.expect("DevStatusReq");
    assert_eq!(dev.read_downlink(&resp.phy_payload(), 0).f_opts, vec![0x06]);
    gw.tx_ack(resp.token, "NONE").await;
    let up = dev.uplink_with(false, false, Some(2), &LPP[..2], &[0x06, 254, 5]);
    send(&mut gw, &up, 3_000_000).await;
    for i in 2..UPLINKS {
        let up = dev.uplink(false, 2, &LPP);
        send(&mut gw, &up, 3_000_000 + i as u32 * 1_000_000).await;
    }
    common::eventually(Duration::from_secs(10), || async {
        let (_, h) = api.get(&format!("/api/devices/{DEV_EUI}/uplinks?limit=1")).await;
        (h["totalCount"] == UPLINKS).then_some(())
    })
    .await
    .expect("every uplink stored");
}

/// Follows `nextCursor` from the first page of `path` (which has a `?`) to the last one;
/// every page must give the same `totalCount`.
async fn walk(api: &Api, path: &str) -> (u64, Vec<Value>, usize) {
    let (mut rows, mut pages, mut total) = (Vec::new(), 0, None);
    let mut url = path.to_string();
    loop {
        let (s, h) = api.get(&url).await;
        assert_eq!(s, 200, "{url}: {h}");
        let n = h["totalCount"].as_u64().expect("totalCount");
        assert_eq!(*total.get_or_insert(n), n, "totalCount changes between pages");
        rows.extend(h["result"].as_array().unwrap().iter().cloned());
        pages += 1;
        assert!(pages <= 100, "paging does not end");
        match h["nextCursor"].as_str() {
            Some(c) => url = format!("{path}&cursor={c}"),
            None => {
                assert!(h["nextCursor"].is_null(), "{h}");
                return (n, rows, pages);
            }
        }
    }
}

async fn history_pages(backend: Backend) {
    let server = TestServer::start(backend, &[("LORAFLOW_NETWORK__DEDUP_WINDOW_MS", "50")]).await;
    let api = server.client();
    device_with_history(&server, &api).await;

    // Uplinks: three pages of at most three, each uplink exactly once, newest first.
    let (total, rows, pages) = walk(&api, &format!("/api/devices/{DEV_EUI}/uplinks?limit=3")).await;
    assert_eq!((total, rows.len(), pages), (UPLINKS, UPLINKS as usize, 3));
    let f_cnts: Vec<u64> = rows.iter().map(|r| r["fCnt"].as_u64().unwrap()).collect();
    assert_eq!(f_cnts.iter().copied().collect::<BTreeSet<_>>(), (0..UPLINKS).collect(), "{f_cnts:?}");
    let ids: HashSet<&str> = rows.iter().map(|r| r["deduplicationId"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), rows.len());
    let times: Vec<DateTime<Utc>> = rows.iter().map(time_of).collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "newest first: {times:?}");

    // `since` still filters, and totalCount counts what it lets through.
    let since = times[2];
    let expected = times.iter().filter(|t| **t >= since).count();
    let since = since.to_rfc3339_opts(SecondsFormat::Micros, true);
    let (total, since_rows, _) = walk(&api, &format!("/api/devices/{DEV_EUI}/uplinks?limit=2&since={since}")).await;
    assert_eq!((total as usize, since_rows.len()), (expected, expected));

    // Events: the join, the status answer and the codec's log, all stored.
    let events = common::eventually(Duration::from_secs(10), || async {
        let (total, rows, _) = walk(&api, &format!("/api/devices/{DEV_EUI}/events?limit=1")).await;
        let kinds: BTreeSet<String> = rows.iter().map(|e| e["kind"].as_str().unwrap().to_string()).collect();
        (["join", "status", "log"].iter().all(|k| kinds.contains(*k)) && total as usize == rows.len()).then_some(rows)
    })
    .await
    .expect("join, status and log events");
    let ids: HashSet<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), events.len(), "every event exactly once");
    assert!(events.iter().all(|e| e["time"].is_string() && e["body"].is_object()), "{events:?}");

    let (s, joins) = api.get(&format!("/api/devices/{DEV_EUI}/events?kind=join")).await;
    assert_eq!(s, 200, "{joins}");
    assert_eq!(joins["totalCount"], 1);
    assert!(joins["nextCursor"].is_null());
    assert_eq!(joins["result"][0]["kind"], "join");
    assert_eq!(joins["result"][0]["body"]["deviceInfo"]["devEui"], DEV_EUI);
    let (_, status) = api.get(&format!("/api/devices/{DEV_EUI}/events?kind=status")).await;
    assert_eq!(status["totalCount"], 1, "{status}");
    assert_eq!(status["result"][0]["body"]["margin"], 5);
    let (_, logs) = api.get(&format!("/api/devices/{DEV_EUI}/events?kind=log")).await;
    let logs = logs["result"].as_array().unwrap().clone();
    assert!(logs.iter().all(|e| e["kind"] == "log"));
    assert!(logs.iter().any(|e| e["body"]["code"] == "UPLINK_CODEC"), "{logs:?}");

    // Bad parameters: 400 naming the parameter; an unknown device: 404.
    for (query, param) in [
        ("uplinks?cursor=not-a-cursor", "cursor"),
        ("uplinks?cursor=AAAA", "cursor"),
        ("uplinks?limit=0", "limit"),
        ("uplinks?limit=1001", "limit"),
        ("uplinks?limit=many", "limit"),
        ("events?kind=up", "kind"),
        ("events?cursor=%25%25", "cursor"),
        ("events?limit=0", "limit"),
        ("events?since=yesterday", "since"),
    ] {
        let (s, e) = api.get(&format!("/api/devices/{DEV_EUI}/{query}")).await;
        assert_eq!(s, 400, "{query}: {e}");
        assert!(e["error"].as_str().unwrap().starts_with(&format!("{param}:")), "{query}: {e}");
    }
    let (s, _) = api.get("/api/devices/0102030405060708/events").await;
    assert_eq!(s, 404);
}

fn time_of(row: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(row["time"].as_str().expect("time")).expect("RFC 3339").with_timezone(&Utc)
}

#[tokio::test]
async fn history_pages_over_rest_on_sqlite() {
    history_pages(Backend::Sqlite).await;
}

#[tokio::test]
async fn history_pages_over_rest_on_postgres() {
    history_pages(Backend::Postgres).await;
}
