//! The web console (issue 13) in a real headless Chromium, against the real binary: sign-in,
//! the forms that register an application, an LPP profile, an OTAA device and a gateway, the
//! live device page fed by `loraflow simulate` (join, decoded uplinks within 2 s of their MQTT
//! publication, chart, downlink → txack), a gateway's raw frames with the reason of a bad-MIC
//! frame, the codec tester, and phone width. The DOM the tests rely on is the console's
//! contract (selectors like `#device-events [data-event=up]`), not its look.
//!
//! With LORAFLOW_SCREENSHOTS=<dir> the tests also save PNGs of the main pages there
//! (docs/screenshots is made so: `LORAFLOW_SCREENSHOTS=docs/screenshots cargo nextest run
//! --test console_browser`).

#[path = "common/browser.rs"]
mod browser;
mod common;
#[path = "../app-server/tests/mqtt_support/mod.rs"]
mod mqtt_support;

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use browser::{Browser, PHONE};
use common::device::Device;
use common::gateway::{rxpk, FakeGateway, PULL_ACK, PUSH_ACK};
use common::{provision, Backend, TestServer, TOKEN};
use serde_json::{json, Value};

/// The issue's bound: an uplink is on the device page within 2 s of its MQTT publication.
const LIVE_WITHIN_MS: i64 = 2000;

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

/// Opens the console and signs in with the admin token; returns once the navigation shows.
async fn sign_in(b: &Browser) {
    b.open("").await;
    b.wait_visible("form#signin").await;
    b.set_field("form#signin", "token", TOKEN).await;
    b.submit("form#signin").await;
    b.wait_visible("nav#nav").await;
}

/// Waits until the stream note `css` (`#device-stream-status`, `#gateway-stream-status`) says
/// the feed is live: the server sent `ready`, so whatever is published from now on reaches
/// the page.
async fn wait_live(b: &Browser, css: &str) {
    b.wait_js(
        &format!("`{css}` saying live"),
        "const e = document.querySelector(arguments[0]); if (!e) return null;
         const t = e.textContent.trim().toLowerCase();
         return t === 'live' || (t.startsWith('live') && !t.includes('not available'))",
        vec![json!(css)],
    )
    .await;
}

/// An MQTT event as the test's subscriber received it, with the time of arrival.
#[derive(Debug, Clone)]
struct Stamped {
    at_ms: i64,
    kind: String,
    dev_eui: String,
    json: Value,
}

/// Every device event the server publishes, time-stamped on arrival.
struct EventLog {
    log: tokio::sync::watch::Receiver<Vec<Stamped>>,
    task: tokio::task::JoinHandle<()>,
}

impl EventLog {
    async fn start(broker: SocketAddr) -> EventLog {
        let mut sub = mqtt_support::Subscriber::connect(broker, "application/+/device/+/event/+", false).await;
        let (tx, log) = tokio::sync::watch::channel(Vec::new());
        let task = tokio::spawn(async move {
            while let Some((topic, payload)) = sub.messages.recv().await {
                let at_ms = now_ms();
                // application/{id}/device/{devEui}/event/{kind}
                let parts: Vec<&str> = topic.split('/').collect();
                let json = serde_json::from_slice(&payload).unwrap_or(Value::Null);
                let e = Stamped { at_ms, kind: parts[5].to_string(), dev_eui: parts[3].to_string(), json };
                tx.send_modify(|v| v.push(e));
            }
        });
        EventLog { log, task }
    }

    /// Waits until `n` events of `kind` for `dev_eui` arrived; returns them in arrival order.
    async fn wait(&mut self, dev_eui: &str, kind: &str, n: usize, within: Duration) -> Vec<Stamped> {
        let pick = |v: &Vec<Stamped>| v.iter().filter(|e| e.kind == kind && e.dev_eui == dev_eui).cloned().collect::<Vec<_>>();
        let got = match tokio::time::timeout(within, self.log.wait_for(|v| pick(v).len() >= n)).await {
            Ok(Ok(v)) => Some(pick(&v)),
            _ => None,
        };
        got.unwrap_or_else(|| panic!("{n} `{kind}` events of {dev_eui} on MQTT within {within:?}; got {:?}", pick(&self.log.borrow())))
    }
}

impl Drop for EventLog {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Records in the page, per `#device-events [data-event]` item and text, when it appeared
/// (`Date.now()`, the same clock as the test's): a MutationObserver on the whole body, so a
/// list that is re-rendered is still seen; the earliest record of a text counts.
const RECORD_EVENTS: &str = r#"
if (!window.__lfEvents) {
  window.__lfEvents = [];
  const last = new WeakMap();
  const scan = () => {
    const t = Date.now();
    for (const el of document.querySelectorAll('#device-events [data-event]')) {
      const text = el.textContent;
      if (last.get(el) !== text) {
        last.set(el, text);
        window.__lfEvents.push({ kind: el.dataset.event, text, t });
      }
    }
  };
  new MutationObserver(scan).observe(document.body, { subtree: true, childList: true, characterData: true, attributes: true });
  scan();
}
return true;
"#;

/// When the page first showed an `[data-event=<kind>]` item containing `needle`, in ms since
/// the epoch.
async fn appeared_at(b: &Browser, kind: &str, needle: &str, within: Duration) -> (i64, String) {
    let v = b
        .wait_js_for(
            &format!("a `#device-events [data-event={kind}]` item containing {needle:?}"),
            within,
            "const r = (window.__lfEvents || []).find(e => e.kind === arguments[0] && e.text.includes(arguments[1]));
             return r ? [r.t, r.text] : null",
            vec![json!(kind), json!(needle)],
        )
        .await;
    (v[0].as_i64().unwrap(), v[1].as_str().unwrap().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_refuses_a_wrong_token_and_sign_out_forgets_the_token() {
    let server = TestServer::start(Backend::Sqlite, &[]).await;
    let b = Browser::start(&server.url("")).await;

    b.open("").await;
    b.wait_visible("form#signin").await;
    b.screenshot("sign-in").await;
    assert!(!b.is_visible("nav#nav").await, "no navigation before sign-in");
    b.set_field("form#signin", "token", "not-the-admin-token").await;
    b.submit("form#signin").await;
    let msg = b
        .wait_js(
            "a visible, non-empty #signin-error",
            "const e = document.querySelector('#signin-error'); return e && e.getClientRects().length > 0 ? e.textContent.trim() : null",
            vec![],
        )
        .await;
    assert!(!msg.as_str().unwrap().is_empty());
    assert!(!b.is_visible("nav#nav").await, "a wrong token does not sign in");

    b.set_field("form#signin", "token", TOKEN).await;
    b.submit("form#signin").await;
    b.wait_visible("nav#nav").await;
    b.wait_hidden("form#signin").await;
    for link in ["#/", "#/gateways", "#/applications", "#/device-profiles"] {
        b.wait_visible(&format!("nav#nav a[href=\"{link}\"]")).await;
    }
    b.wait_visible("#overview-gateways").await;
    // The token lives in this tab's session only.
    let stored = b.js("return [sessionStorage.getItem('loraflow.token'), JSON.stringify(localStorage), document.cookie]", vec![]).await;
    assert_eq!(stored[0], json!(TOKEN), "token in sessionStorage");
    assert!(!stored[1].as_str().unwrap().contains(TOKEN), "token not in localStorage: {stored}");
    assert!(!stored[2].as_str().unwrap().contains(TOKEN), "token not in a cookie: {stored}");

    // A reload keeps the session; a route opens directly.
    b.open("#/gateways").await;
    b.reload().await;
    b.wait_visible("table#gateways").await;
    assert!(!b.is_visible("form#signin").await);

    b.click("button#signout").await;
    b.wait_visible("form#signin").await;
    b.wait_hidden("nav#nav").await;
    assert_eq!(b.js("return sessionStorage.getItem('loraflow.token')", vec![]).await, Value::Null, "sign-out forgets the token");
    b.reload().await;
    b.wait_visible("form#signin").await;
    assert!(!b.is_visible("nav#nav").await, "still signed out after a reload");
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_registered_in_the_console_shows_its_join_live_uplinks_chart_and_downlink() {
    let server = TestServer::start(Backend::Sqlite, &[]).await;
    let api = server.client();
    let mut events = EventLog::start(server.mqtt.expect("embedded MQTT broker")).await;
    let b = Browser::start(&server.url("")).await;
    sign_in(&b).await;

    // Application, through its form.
    b.open("#/applications").await;
    b.click("a[href=\"#/applications/new\"]").await;
    b.set_field("form[data-form=application]", "name", "greenhouse").await;
    b.submit("form[data-form=application]").await;
    let app_id = common::eventually(Duration::from_secs(10), || async {
        let (_, list) = api.get("/api/applications").await;
        list["result"].as_array()?.iter().find(|a| a["name"] == "greenhouse").map(|a| a["id"].as_str().unwrap().to_string())
    })
    .await
    .expect("the application form created the application");
    b.open("#/applications").await;
    b.wait_visible(&format!("table#applications tr[data-id=\"{app_id}\"]")).await;

    // An OTAA device profile with the Cayenne LPP codec, through its form.
    b.open("#/device-profiles/new").await;
    let form = "form[data-form=device-profile]";
    b.set_field(form, "name", "lpp-sensors").await;
    b.set_field(form, "region", "EU868").await;
    b.set_field(form, "supportsOtaa", "true").await;
    b.set_field(form, "supportsClassC", "false").await;
    b.set_field(form, "payloadCodec", "CAYENNE_LPP").await;
    b.submit(form).await;
    let profile = common::eventually(Duration::from_secs(10), || async {
        let (_, list) = api.get("/api/device-profiles").await;
        list["result"].as_array()?.iter().find(|p| p["name"] == "lpp-sensors").cloned()
    })
    .await
    .expect("the device profile form created the profile");
    let profile_id = profile["id"].as_str().unwrap().to_string();
    let (_, stored) = api.get(&format!("/api/device-profiles/{profile_id}")).await;
    assert_eq!(stored["payloadCodec"], "CAYENNE_LPP", "{stored}");
    assert_eq!(stored["supportsOtaa"], true, "{stored}");
    assert_eq!(stored["region"], "EU868", "{stored}");
    b.open("#/device-profiles").await;
    b.wait_text("table#device-profiles", &["lpp-sensors"]).await;

    // An OTAA device with its AppKey, through the application's device form.
    let dev_eui = "70b3d57ed0000042";
    let app_key = "2b7e151628aed2a6abf7158809cf4f3c";
    b.open(&format!("#/applications/{app_id}")).await;
    b.wait_visible("table#devices").await;
    b.click(&format!("a[href=\"#/applications/{app_id}/devices/new\"]")).await;
    let form = "form[data-form=device]";
    b.set_field(form, "devEui", dev_eui).await;
    b.set_field(form, "name", "greenhouse-1").await;
    b.set_field(form, "deviceProfileId", &profile_id).await;
    b.set_field(form, "appKey", app_key).await;
    b.submit(form).await;
    b.wait_route(&format!("#/devices/{dev_eui}")).await;
    let (s, device) = api.get(&format!("/api/devices/{dev_eui}")).await;
    assert_eq!(s, 200, "the device form created the device: {device}");
    assert_eq!(device["applicationId"], json!(app_id));
    assert_eq!(device["deviceProfileId"], json!(profile_id));
    let (s, keys) = api.get(&format!("/api/devices/{dev_eui}/keys")).await;
    assert_eq!(s, 200, "the device form stored the AppKey: {keys}");
    assert_eq!(keys["appKey"].as_str().unwrap().to_lowercase(), app_key);

    // The device page, live, before the device exists on air.
    wait_live(&b, "#device-stream-status").await;
    // The AppKey is masked until asked for.
    if !b.wait_text("#device-keys", &[]).await.to_lowercase().contains(app_key) {
        b.click("#device-keys button[aria-pressed]").await;
    }
    b.wait_text("#device-keys", &[app_key]).await;
    b.wait_visible("#device-state").await;
    b.js(RECORD_EVENTS, vec![]).await;

    // The simulator joins that device and sends LPP uplinks every second.
    let mut sim = tokio::process::Command::new(env!("CARGO_BIN_EXE_loraflow"))
        .args(["simulate", "--existing-device", &format!("{dev_eui}:{app_key}"), "--lpp"])
        .args(["--server", &server.gateway.to_string(), "--api", &server.url(""), "--token", TOKEN])
        .args(["--interval", "1", "--seconds", "240"])
        .current_dir(server.state_dir())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("run loraflow simulate");

    let join = events.wait(dev_eui, "join", 1, Duration::from_secs(20)).await.remove(0);
    let dev_addr = join.json["devAddr"].as_str().expect("join event devAddr").to_string();
    let (shown, _) = appeared_at(&b, "join", join.json["deduplicationId"].as_str().unwrap_or(&dev_addr), Duration::from_secs(5)).await;
    let mut latencies = vec![("join".to_string(), shown - join.at_ms)];

    // Decoded uplinks, each on the page within 2 s of its publication on MQTT.
    let ups = events.wait(dev_eui, "up", 3, Duration::from_secs(20)).await;
    for up in &ups {
        assert!(up.json["object"]["temperatureSensor"].is_object(), "LPP decoded on MQTT: {}", up.json);
        let id = up.json["deduplicationId"].as_str().expect("deduplicationId").to_string();
        let (shown, text) = appeared_at(&b, "up", &id, Duration::from_secs(5)).await;
        for key in ["temperatureSensor", "humiditySensor"] {
            assert!(text.contains(key), "the up item shows the decoded object ({key}): {text}");
        }
        latencies.push((format!("up fCnt {}", up.json["fCnt"]), shown - up.at_ms));
    }
    eprintln!("MQTT publication → on the device page: {latencies:?} (ms)");
    for (what, ms) in &latencies {
        assert!(*ms <= LIVE_WITHIN_MS, "{what} showed {ms} ms after its MQTT publication (bound {LIVE_WITHIN_MS} ms): {latencies:?}");
    }
    // Newest first: the uplinks above the join, the later uplink above the earlier one.
    let items = b.js("return Array.from(document.querySelectorAll('#device-events [data-event]')).map(e => e.textContent)", vec![]).await;
    let items: Vec<String> = serde_json::from_value(items).unwrap();
    let position = |id: &str| items.iter().position(|t| t.contains(id)).unwrap_or_else(|| panic!("{id} no longer listed: {items:?}"));
    let mut below = position(join.json["deduplicationId"].as_str().unwrap_or(&dev_addr));
    for up in &ups {
        let at = position(up.json["deduplicationId"].as_str().unwrap());
        assert!(at < below, "#device-events lists the newest first: {items:?}");
        below = at;
    }

    // Coming back to the device page: state, history and the measurement chart.
    b.open(&format!("#/applications/{app_id}")).await;
    b.wait_visible(&format!("table#devices tr[data-id=\"{dev_eui}\"]")).await;
    let row = format!("table#devices tr[data-id=\"{dev_eui}\"]");
    b.set_field("body", "search", "greenhouse").await;
    b.wait_visible(&row).await;
    b.set_field("body", "search", "no-such-device").await;
    b.wait_hidden(&row).await;
    b.set_field("body", "search", &dev_eui[10..]).await;
    b.wait_visible(&row).await;
    b.screenshot("application-devices").await;
    // The row's link to the device page, or the row itself when the whole row is the link.
    let link = format!("{row} a[href=\"#/devices/{dev_eui}\"]");
    b.click(if b.is_visible(&link).await { &link } else { &row }).await;
    b.wait_route(&format!("#/devices/{dev_eui}")).await;
    b.wait_js(
        &format!("DevAddr {dev_addr} on the device page"),
        "return ['#device-state', '#device-keys'].map(s => document.querySelector(s)).some(e => e && e.textContent.toLowerCase().includes(arguments[0]))",
        vec![json!(dev_addr.to_lowercase())],
    )
    .await;
    b.wait_count("table#device-uplinks tbody tr", 1).await;
    let (_, series) = api.get(&format!("/api/devices/{dev_eui}/measurements")).await;
    let mut names: Vec<String> = series["result"]
        .as_array()
        .or(series.as_array())
        .expect("measurements list")
        .iter()
        .map(|m| m["name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    assert!(names.len() >= 2, "temperature and humidity series: {series}");
    let options = b
        .wait_js(
            "the series picker listing the device's series",
            "const s = document.querySelector('#device-chart select[name=series]');
             if (!s) return null; const v = Array.from(s.options).map(o => o.value).filter(v => v); v.sort();
             return JSON.stringify(v) === JSON.stringify(arguments[0]) ? v : null",
            vec![json!(names)],
        )
        .await;
    assert_eq!(options, json!(names));
    b.wait_count("#device-chart svg [data-point]", 1).await;
    b.set_field("#device-chart", "range", "24h").await;
    b.wait_count("#device-chart svg [data-point]", 1).await;
    b.set_field("#device-chart", "series", names.iter().find(|n| n.contains("humidity")).unwrap_or(&names[0])).await;
    b.wait_count("#device-chart svg [data-point]", 1).await;
    b.set_field("#device-chart", "range", "1h").await;

    // A downlink through the form: the simulator's gateway acknowledges it (TX_ACK), and the
    // txack event shows on the page.
    wait_live(&b, "#device-stream-status").await;
    b.js(RECORD_EVENTS, vec![]).await;
    let form = "form[data-form=downlink]";
    b.set_field(form, "fPort", "10").await;
    b.set_field(form, "confirmed", "false").await;
    b.set_field(form, "format", "hex").await;
    b.set_field(form, "payload", "0a0b0c").await;
    b.submit(form).await;
    let txack = events.wait(dev_eui, "txack", 1, Duration::from_secs(20)).await.remove(0);
    let needle =
        txack.json["queueItemId"].as_str().or(txack.json["downlinkId"].as_str()).map(str::to_string).unwrap_or_else(|| "txack".into());
    let (shown, _) = appeared_at(&b, "txack", &needle, Duration::from_secs(5)).await;
    assert!(shown - txack.at_ms <= LIVE_WITHIN_MS, "txack showed {} ms after MQTT", shown - txack.at_ms);
    let (_, queue) = api.get(&format!("/api/devices/{dev_eui}/queue")).await;
    let left = queue["result"].as_array().or(queue.as_array()).map(Vec::len);
    assert_eq!(left, Some(0), "the queued item was sent: {queue}");
    assert!(b.alerts().await.is_empty(), "no failed request: {:?}", b.alerts().await);
    // A fresh uplink after the downlink, for the screenshot's chart and list.
    let n = events.wait(dev_eui, "up", 1, Duration::from_secs(1)).await.len();
    events.wait(dev_eui, "up", n + 1, Duration::from_secs(10)).await;
    b.screenshot_from("device", Some("#device-events")).await;
    b.screenshot_from("device-chart", Some("#device-chart")).await;

    // The overview and the gateway list now have traffic to show.
    b.open("#/").await;
    b.wait_visible("#overview-traffic svg").await;
    b.wait_text("#overview-gateways", &["1"]).await;
    b.screenshot("overview").await;
    b.open("#/gateways").await;
    b.wait_count("table#gateways tr[data-id]", 1).await;
    b.screenshot("gateways").await;

    sim.start_kill().expect("stop the simulator");
    let _ = sim.wait().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_page_shows_raw_frames_with_the_reason_of_a_bad_mic_frame() {
    let server = TestServer::start(Backend::Sqlite, &[]).await;
    let api = server.client();
    let b = Browser::start(&server.url("")).await;
    sign_in(&b).await;

    // The gateway, through its form.
    let gateway_id = "0016c001f0000042";
    b.open("#/gateways").await;
    b.click("a[href=\"#/gateways/new\"]").await;
    b.set_field("form[data-form=gateway]", "gatewayId", gateway_id).await;
    b.set_field("form[data-form=gateway]", "name", "rooftop").await;
    b.submit("form[data-form=gateway]").await;
    common::eventually(Duration::from_secs(10), || async {
        (api.get(&format!("/api/gateways/{gateway_id}")).await.0 == 200).then_some(())
    })
    .await
    .expect("the gateway form created the gateway");
    b.open("#/gateways").await;
    b.wait_visible(&format!("table#gateways tr[data-id=\"{gateway_id}\"]")).await;

    // A device that joins through this gateway.
    let p = provision::application_and_profile(&api, "NONE", "").await;
    let (dev_eui, app_key) = ("70b3d57ed0000043", "000102030405060708090a0b0c0d0e0f");
    provision::otaa_device(&api, &p, dev_eui, app_key).await;
    let mut gw = FakeGateway::new(gateway_id, server.gateway).await;
    let t = gw.pull_data().await;
    gw.expect_ack(PULL_ACK, t).await;

    b.open(&format!("#/gateways/{gateway_id}")).await;
    b.wait_visible("#gateway-frames").await;
    b.wait_text("#gateway-state", &["online"]).await;

    // A frame of an unknown DevAddr: rejected, with its reason.
    wait_live(&b, "#gateway-stream-status").await;
    let mut stranger = Device::abp("70b3d57ed00000ff", "26ffff01", "00000000000000000000000000000001", "00000000000000000000000000000002");
    let unknown = "#gateway-frames [data-frame][data-direction=up][data-accepted=false]";
    let mut tmst = 1_000_000u32;
    let phy = stranger.uplink(false, 1, b"who");
    let t = gw.push_rxpk(vec![rxpk(&phy, tmst, -70, 7.5)]).await;
    gw.expect_ack(PUSH_ACK, t).await;
    b.wait_count(unknown, 1).await;
    b.wait_js(
        "the unknown DevAddr frame with its reason",
        "return Array.from(document.querySelectorAll(arguments[0] + ' .reason')).some(r => r.textContent.toLowerCase().includes('unknown'))",
        vec![json!(unknown)],
    )
    .await;

    // Join: an accepted uplink and a downlink (the join-accept) in the feed.
    let mut dev = Device::otaa(dev_eui, app_key);
    let jr = dev.join_request();
    let t = gw.push_rxpk(vec![rxpk(&jr, tmst, -60, 9.0)]).await;
    gw.expect_ack(PUSH_ACK, t).await;
    let resp = gw.next_pull_resp(Duration::from_secs(5)).await.expect("join-accept");
    dev.accept(&resp.phy_payload(), [0, 0, 0]);
    gw.tx_ack(resp.token, "NONE").await;
    b.wait_count("#gateway-frames [data-frame][data-direction=up][data-accepted=true]", 1).await;
    b.wait_count("#gateway-frames [data-frame][data-direction=down]", 1).await;

    // A good data uplink, then one with its MIC corrupted.
    tmst += 6_000_000;
    let good = dev.uplink(false, 2, b"\x01\x02");
    let t = gw.push_rxpk(vec![rxpk(&good, tmst, -60, 9.0)]).await;
    gw.expect_ack(PUSH_ACK, t).await;
    b.wait_count("#gateway-frames [data-frame][data-direction=up][data-accepted=true]", 2).await;
    // The server may answer it (MAC commands); the gateway sends that downlink.
    if let Some(resp) = gw.next_pull_resp(Duration::from_secs(2)).await {
        gw.tx_ack(resp.token, "NONE").await;
    }
    tmst += 2_000_000;
    let mut bad = dev.uplink(false, 2, b"\x03\x04");
    let last = bad.len() - 1;
    bad[last] ^= 0x5a;
    let t = gw.push_rxpk(vec![rxpk(&bad, tmst, -60, 9.0)]).await;
    gw.expect_ack(PUSH_ACK, t).await;
    let reason = b
        .wait_js(
            "the bad-MIC frame with reason `mic`",
            "const r = Array.from(document.querySelectorAll('#gateway-frames [data-frame][data-accepted=false] .reason'))
               .map(r => r.textContent.trim()).find(t => t.toLowerCase().includes('mic'));
             return r || null",
            vec![],
        )
        .await;
    eprintln!("bad-MIC frame shown with reason {reason}");
    // The bad frame shows its DevAddr, so an operator can tell which device it claims to be.
    b.wait_js(
        "the bad-MIC frame naming its DevAddr",
        "return Array.from(document.querySelectorAll('#gateway-frames [data-frame][data-accepted=false]'))
           .some(f => f.querySelector('.reason').textContent.toLowerCase().includes('mic') && f.textContent.toLowerCase().includes(arguments[0]))",
        vec![json!(dev.dev_addr.to_string().to_lowercase())],
    )
    .await;
    // The counts follow the feed while the page is open: both rejected frames and the
    // join-accept are counted without reloading.
    b.wait_js(
        "the gateway counts to include the two rejected frames and the downlink",
        "const v = Array.from(document.querySelectorAll('#gateway-counts .stat-value')).map(e => Number(e.textContent));
         return v.length === 3 && v[0] >= 4 && v[1] >= 2 && v[2] >= 1;",
        vec![],
    )
    .await;
    b.screenshot("gateway").await;

    // Delete, after confirm().
    b.click("button[data-action=delete]").await;
    common::eventually(Duration::from_secs(5), || async { b.client.accept_alert().await.ok() }).await.expect("a confirm() before deleting");
    common::eventually(Duration::from_secs(10), || async {
        (api.get(&format!("/api/gateways/{gateway_id}")).await.0 == 404).then_some(())
    })
    .await
    .expect("the delete button deleted the gateway");
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_codec_tester_shows_a_decoded_object_and_a_js_error() {
    let server = TestServer::start(Backend::Sqlite, &[]).await;
    let b = Browser::start(&server.url("")).await;
    sign_in(&b).await;

    // A profile being written (not saved yet): the tester uses the codec in the form.
    b.open("#/device-profiles/new").await;
    let form = "form[data-form=device-profile]";
    b.set_field(form, "name", "room-sensors").await;
    b.set_field(form, "payloadCodec", "CAYENNE_LPP").await;
    let tester = "form[data-form=codec-test]";
    b.set_field(tester, "fPort", "1").await;
    // 27.2 °C on channel 1, 50 %RH on channel 2 (the Cayenne LPP documentation's example).
    b.set_field(tester, "bytes", "0167011002686e").await;
    b.submit(tester).await;
    let text = b.wait_text("#codec-test-result.ok", &["temperatureSensor", "27.2", "humiditySensor", "55"]).await;
    assert!(!b.is_visible("#codec-test-result.error").await, "a decoded object is not an error: {text}");
    b.screenshot("device-profile").await;

    // A JS codec that throws: its message is shown.
    b.set_field(form, "payloadCodec", "JS").await;
    b.set_field(
        form,
        "payloadCodecScript",
        "function decodeUplink(input) {\n  throw new Error(\"sensor firmware 2.1 is not supported\");\n}\n",
    )
    .await;
    b.submit(tester).await;
    let text = b.wait_text("#codec-test-result.error", &["sensor firmware 2.1 is not supported"]).await;
    assert!(!b.is_visible("#codec-test-result.ok").await, "an error is not a decoded object: {text}");

    // The same codec returning data decodes again (the result is not stuck on the error).
    b.set_field(
        form,
        "payloadCodecScript",
        "function decodeUplink(input) {\n  return { data: { first: input.bytes[0], port: input.fPort } };\n}\n",
    )
    .await;
    b.set_field(tester, "bytes", "2a").await;
    b.submit(tester).await;
    b.wait_text("#codec-test-result.ok", &["first", "42", "port"]).await;
    assert!(b.alerts().await.is_empty(), "no failed request: {:?}", b.alerts().await);
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_and_the_device_page_fit_a_phone_screen() {
    let server = TestServer::start(Backend::Sqlite, &[]).await;
    let api = server.client();
    let p = provision::application_and_profile(&api, "CAYENNE_LPP", "").await;
    let dev_eui = "70b3d57ed0000044";
    provision::otaa_device(&api, &p, dev_eui, "2b7e151628aed2a6abf7158809cf4f3c").await;
    provision::gateway(&api, "0016c001f0000044").await;

    let b = Browser::start_sized(&server.url(""), PHONE).await;
    b.open("").await;
    b.wait_visible("form#signin").await;
    // 980 here means the console has no `<meta name="viewport" content="width=device-width">`
    // and a phone shows it shrunk to a third.
    let width = b.viewport_width().await;
    assert_eq!(width, u64::from(PHONE.0), "the console is laid out for the phone's width");
    assert_eq!(b.horizontal_overflow().await, 0, "the sign-in page overflows a {width} px screen");
    sign_in(&b).await;
    for (route, ready) in [
        (format!("#/devices/{dev_eui}"), "#device-events"),
        (format!("#/devices/{dev_eui}"), "#device-chart"),
        ("#/".to_string(), "#overview-gateways"),
        ("#/gateways".to_string(), "table#gateways"),
        (format!("#/applications/{}", p.application_id), "table#devices"),
        ("#/device-profiles/new".to_string(), "form[data-form=device-profile]"),
        ("#/gateways/0016c001f0000044".to_string(), "#gateway-frames"),
    ] {
        b.open(&route).await;
        b.wait_visible(ready).await;
        let overflow = b.horizontal_overflow().await;
        if overflow > 0 {
            b.fail(&format!("{route} is {overflow} px wider than a {width} px screen")).await;
        }
    }
    b.open(&format!("#/devices/{dev_eui}")).await;
    b.wait_visible("#device-chart").await;
    b.screenshot("device-phone").await;
    b.close().await;
}
