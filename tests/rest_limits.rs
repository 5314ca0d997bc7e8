//! The REST server under hostile input: a flood of idle connections, NUL and control
//! characters in any string, oversized device tags. Every refusal is a 400 naming the field,
//! the same on SQLite and PostgreSQL, and changes nothing.

mod common;

use std::time::{Duration, Instant};

use common::{provision, Backend, TestServer};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const DEV_EUI: &str = "0102030405060708";
const GATEWAY_ID: &str = "aa555a0000000101";

/// Asserts a 400 whose message starts with `field`, and returns the message.
async fn bad_request(call: impl std::future::Future<Output = (u16, Value)>, field: &str) -> String {
    let (s, e) = call.await;
    assert_eq!(s, 400, "expected 400 naming {field}, got {s}: {e}");
    let msg = e["error"].as_str().unwrap_or_default().to_string();
    assert!(msg.starts_with(&format!("{field}:")), "expected the error to name {field}: {e}");
    msg
}

fn device(p: &provision::Provisioned, patch: Value) -> Value {
    let mut body = json!({"devEui": DEV_EUI, "name": "meter", "applicationId": p.application_id,
                          "deviceProfileId": p.device_profile_id, "tags": {"room": "kitchen"}});
    for (k, v) in patch.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

fn tags(n: usize, key_len: usize, value_len: usize) -> Value {
    (0..n).map(|i| (format!("{i:0>key_len$}"), json!("v".repeat(value_len)))).collect::<serde_json::Map<_, _>>().into()
}

async fn text_and_tag_limits(backend: Backend) {
    let server = TestServer::start(backend, &[]).await;
    let api = server.client();
    let p = provision::application_and_profile(&api, "NONE", "").await;
    provision::gateway(&api, GATEWAY_ID).await;

    // NUL in any string field of any body: 400 naming the field, before the database.
    bad_request(api.post("/api/devices", device(&p, json!({"name": "me\u{0}ter"}))), "name").await;
    bad_request(api.post("/api/devices", device(&p, json!({"tags": {"room": "kit\u{0}chen"}}))), "tags.room").await;
    bad_request(api.post("/api/devices", device(&p, json!({"tags": {"ro\u{0}om": "kitchen"}}))), "tags").await;
    bad_request(api.post("/api/devices", device(&p, json!({"description": "\u{0}"}))), "description").await;
    bad_request(api.post("/api/applications", json!({"name": "a", "description": "x\u{0}y"})), "description").await;
    bad_request(api.post("/api/gateways", json!({"gatewayId": "aa555a0000000102", "name": "gw\u{0}"})), "name").await;
    bad_request(
        api.post("/api/device-profiles", json!({"name": "js", "payloadCodec": "JS", "payloadCodecScript": "function f(){}\u{0}"})),
        "payloadCodecScript",
    )
    .await;
    // Other control characters are refused too; line breaks in free text are kept.
    bad_request(api.post("/api/applications", json!({"name": "a", "description": "bell\u{7}"})), "description").await;
    bad_request(api.post("/api/applications", json!({"name": "line\nbreak"})), "name").await;
    let (s, app) = api.post("/api/applications", json!({"name": "Zürich 東京", "description": "line 1\nline\t2"})).await;
    assert_eq!(s, 201, "{app}");
    assert_eq!(app["description"], "line 1\nline\t2");
    let app_id = app["id"].as_str().unwrap();
    bad_request(api.put(&format!("/api/applications/{app_id}"), json!({"name": "b", "description": "\u{0}"})), "description").await;
    bad_request(api.put(&format!("/api/gateways/{GATEWAY_ID}"), json!({"name": "g\u{0}"})), "name").await;

    // Nothing of the above was stored.
    assert_eq!(api.get(&format!("/api/devices/{DEV_EUI}")).await.0, 404);
    let (_, apps) = api.get("/api/applications").await;
    assert_eq!(apps["totalCount"], 2, "{apps}");
    let (_, got) = api.get(&format!("/api/applications/{app_id}")).await;
    assert_eq!(got["description"], "line 1\nline\t2");
    let (_, gw) = api.get(&format!("/api/gateways/{GATEWAY_ID}")).await;
    assert_eq!(gw["name"], format!("gw-{GATEWAY_ID}"));
    let (_, profiles) = api.get("/api/device-profiles").await;
    assert_eq!(profiles["totalCount"], 1, "{profiles}");

    // Device tags: the largest allowed set is stored and echoed; beyond it, 400s.
    let most = tags(16, 8, 248);
    let (s, dev) = api.post("/api/devices", device(&p, json!({"tags": most.clone()}))).await;
    assert_eq!(s, 201, "{dev}");
    assert_eq!(dev["tags"], most);
    let path = format!("/api/devices/{DEV_EUI}");
    let msg = bad_request(api.put(&path, device(&p, json!({"tags": tags(33, 4, 1)}))), "tags").await;
    assert!(msg.contains("at most 32"), "{msg}");
    let msg = bad_request(api.put(&path, device(&p, json!({"tags": tags(1, 65, 1)}))), "tags").await;
    assert!(msg.contains("at most 64"), "{msg}");
    bad_request(api.put(&path, device(&p, json!({"tags": {"": "v"}}))), "tags").await;
    let msg = bad_request(api.put(&path, device(&p, json!({"tags": {"room": "k".repeat(257)}}))), "tags.room").await;
    assert!(msg.contains("at most 256"), "{msg}");
    let msg = bad_request(api.put(&path, device(&p, json!({"tags": tags(17, 8, 248)}))), "tags").await;
    assert!(msg.contains("4096"), "{msg}");
    bad_request(api.put(&path, device(&p, json!({"tags": {"room": "a\u{0}"}}))), "tags.room").await;
    bad_request(api.put(&path, device(&p, json!({"description": "d".repeat(10_001)}))), "description").await;
    bad_request(api.put(&path, device(&p, json!({"name": "n".repeat(101)}))), "name").await;
    let (_, dev) = api.get(&path).await;
    assert_eq!(dev["tags"], most, "refused updates change nothing");

    // Queue items: a NUL inside an object to encode names its path.
    bad_request(api.post(&format!("{path}/queue"), json!({"fPort": 1, "object": {"text": ["ok", "\u{0}"]}})), "object.text[1]").await;
    let (_, queue) = api.get(&format!("{path}/queue")).await;
    assert_eq!(queue["totalCount"], 0, "{queue}");
}

#[tokio::test]
async fn text_and_tag_limits_on_sqlite() {
    text_and_tag_limits(Backend::Sqlite).await;
}

#[tokio::test]
async fn text_and_tag_limits_on_postgres() {
    text_and_tag_limits(Backend::Postgres).await;
}

/// Raises this process's soft descriptor limit to the hard one and returns it.
fn raise_nofile_limit() -> u64 {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed by pointer.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        let target = lim.rlim_max.min(1 << 20);
        if lim.rlim_cur < target {
            let raised = libc::rlimit { rlim_cur: target, rlim_max: lim.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                return target;
            }
        }
    }
    lim.rlim_cur
}

fn open_descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

/// Reads until EOF; Err when the connection is still open after `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> Result<(), String> {
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return Err(format!("still open after {within:?}")),
            Ok(Ok(0)) => return Ok(()),
            Ok(Ok(_)) => continue,
            Ok(Err(e)) => return Err(format!("read failed instead of EOF: {e}")),
        }
    }
}

const FLOOD: usize = 5_000;
const MAX_CONNECTIONS: usize = 1_000;
const HEADER_TIMEOUT: Duration = Duration::from_secs(3);
const IDLE_TIMEOUT: Duration = Duration::from_secs(2);

#[tokio::test]
async fn idle_connection_flood_leaves_the_api_answering() {
    let nofile = raise_nofile_limit();
    assert!(nofile >= 2 * FLOOD as u64, "this test needs `ulimit -n` of at least {} (hard limit {nofile})", 2 * FLOOD);
    let server = TestServer::start(
        Backend::Sqlite,
        &[
            ("LORAFLOW_API__MAX_CONNECTIONS", &MAX_CONNECTIONS.to_string()),
            ("LORAFLOW_API__HEADER_READ_TIMEOUT_SECS", &HEADER_TIMEOUT.as_secs().to_string()),
            ("LORAFLOW_API__IDLE_TIMEOUT_SECS", &IDLE_TIMEOUT.as_secs().to_string()),
        ],
    )
    .await;
    let pid = server.pid();
    let baseline = open_descriptors(pid);

    // An attacker opens connections and never sends a byte.
    let started = Instant::now();
    let mut idle = Vec::with_capacity(FLOOD);
    for _ in 0..FLOOD {
        idle.push(TcpStream::connect(server.api).await.expect("connect"));
    }
    let flood_took = started.elapsed();
    eprintln!("opened {FLOOD} idle connections in {flood_took:?}");

    // Wait until the server has taken every one of them from the kernel's accept queue: a
    // client connecting while a burst is still queued waits behind it whatever the server
    // does; what must hold is that the idle connections it has taken block nobody.
    let accepted = common::eventually(Duration::from_secs(20), || async {
        let text = reqwest::get(server.url("/metrics")).await.ok()?.text().await.ok()?;
        let taken =
            common::metric(&text, "loraflow_api_connections", &[]) + common::metric(&text, "loraflow_api_connections_closed_total", &[]);
        (taken >= FLOOD as f64).then_some(taken)
    })
    .await;
    assert!(accepted.is_some(), "the server did not accept the flood");
    eprintln!("server took all {FLOOD} in {:?}", started.elapsed());

    // /health and an authenticated GET still answer within a second, each on a new connection.
    for path in ["/health", "/api/applications"] {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(1)).build().unwrap();
        let t = Instant::now();
        let resp = http.get(server.url(path)).bearer_auth(common::TOKEN).send().await;
        let resp = match resp {
            Ok(r) => r,
            Err(e) => {
                let t2 = t.elapsed();
                let m = reqwest::get(server.url("/metrics")).await.unwrap().text().await.unwrap();
                let m: Vec<_> = m.lines().filter(|l| l.contains("api_conn")).collect();
                panic!("GET {path} during the flood after {t2:?}: {e:?}; {m:?}")
            }
        };
        assert_eq!(resp.status(), 200, "GET {path}");
        assert!(t.elapsed() < Duration::from_secs(1), "GET {path} took {:?}", t.elapsed());
        eprintln!("GET {path} during the flood: {:?}", t.elapsed());
    }
    // The server holds no more than its limit, however many were opened.
    let held = open_descriptors(pid).saturating_sub(baseline);
    eprintln!("server descriptors: {baseline} before, +{held} during the flood");
    // Evicted connections may still be closing (at most 256), plus the two requests above.
    assert!(held <= MAX_CONNECTIONS + 256 + 16, "server holds {held} more descriptors than before the flood of {FLOOD}");

    // A connection that sends nothing stays open until the header-read timeout...
    let mut late = TcpStream::connect(server.api).await.unwrap();
    let t = Instant::now();
    let mut buf = [0u8; 64];
    if let Ok(r) = tokio::time::timeout(Duration::from_secs(1), late.read(&mut buf)).await {
        panic!("closed before the header-read timeout: {r:?}");
    }
    // ...and is closed then, like every connection of the flood (EOF, not a reset).
    closed_within(&mut late, HEADER_TIMEOUT + Duration::from_secs(3)).await.unwrap();
    assert!(t.elapsed() >= HEADER_TIMEOUT - Duration::from_millis(200), "closed after {:?}", t.elapsed());
    // The last flood connection was opened at `started + flood_took`.
    let remaining = (started + flood_took + HEADER_TIMEOUT + Duration::from_secs(4)).saturating_duration_since(Instant::now());
    let results = futures_util::future::join_all(idle.iter_mut().map(|s| closed_within(s, remaining))).await;
    let open: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(open.is_empty(), "{} of {FLOOD} flood connections not closed: first {:?}", open.len(), open.first());
    eprintln!("all flood connections closed {:?} after the flood started", started.elapsed());
    drop(idle);

    // A keep-alive connection is closed once it has been idle for the idle timeout.
    let mut keep = TcpStream::connect(server.api).await.unwrap();
    keep.write_all(b"GET /health HTTP/1.1\r\nHost: loraflow\r\n\r\n").await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(2), keep.read(&mut buf)).await.expect("response").unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"), "{}", String::from_utf8_lossy(&buf[..n]));
    let t = Instant::now();
    closed_within(&mut keep, IDLE_TIMEOUT + Duration::from_secs(3)).await.unwrap();
    assert!(t.elapsed() >= IDLE_TIMEOUT - Duration::from_millis(200), "idle keep-alive closed after {:?}", t.elapsed());

    // Everything is released: the server is back to its own descriptors.
    let settled = common::eventually(Duration::from_secs(3), || async {
        // The database pool may have opened a connection or two meanwhile.
        (open_descriptors(pid) <= baseline + 16).then_some(())
    })
    .await;
    assert!(settled.is_some(), "descriptors after the flood: {} (before: {baseline})", open_descriptors(pid));
    assert_eq!(server.client().get("/api/applications").await.0, 200);
}
