//! A real headless Chromium for the web console's browser tests: Debian's `chromium` driven by
//! its `chromedriver` over WebDriver (fantoccini). Each [`Browser`] has its own chromedriver
//! on a free port and its own profile directory; chromedriver runs in a process group of its
//! own so that it and every Chromium process it started are killed on drop, also when the
//! test panics.
//!
//! Waits poll the page (every 50 ms) until a condition holds or a deadline passes; the panic
//! then says what was awaited and what the page showed, so a failure reads like a bug report.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

/// Where Debian's `chromium` and `chromium-driver` packages put them; LORAFLOW_CHROMIUM and
/// LORAFLOW_CHROMEDRIVER override.
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// How long a wait helper polls before it fails the test.
pub const WAIT: Duration = Duration::from_secs(10);
/// Poll interval of the wait helpers.
const POLL: Duration = Duration::from_millis(50);

/// Laptop and phone viewports.
pub const LAPTOP: (u32, u32) = (1280, 900);
pub const PHONE: (u32, u32) = (375, 812);

fn tool(env: &str, default: &str, package: &str) -> PathBuf {
    let path = PathBuf::from(std::env::var(env).unwrap_or_else(|_| default.to_string()));
    assert!(
        path.exists(),
        "{} not found: the browser tests need Debian's `{package}` package; run scripts/test, which installs it \
         (or set {env} to another binary)",
        path.display()
    );
    path
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port").local_addr().unwrap().port()
}

/// The chromedriver process (leader of its own process group) and the browser profile it uses.
struct Driver {
    child: Child,
    profile: tempfile::TempDir,
    log: PathBuf,
}

impl Driver {
    fn start() -> (Driver, u16) {
        let chromedriver = tool("LORAFLOW_CHROMEDRIVER", CHROMEDRIVER, "chromium-driver");
        tool("LORAFLOW_CHROMIUM", CHROMIUM, "chromium");
        let profile = tempfile::tempdir().expect("profile dir");
        let log = profile.path().join("chromedriver.log");
        // A port taken between free_port() and chromedriver's bind is unlikely but possible
        // with many tests starting at once: try a few.
        for _ in 0..5 {
            let port = free_port();
            let mut cmd = Command::new(&chromedriver);
            cmd.arg(format!("--port={port}"))
                .arg(format!("--log-path={}", log.display()))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            // Its own process group: the Chromium processes it starts join it, and one
            // kill(-pgid) ends them all.
            std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
            let mut child = cmd.spawn().unwrap_or_else(|e| panic!("start {}: {e}", chromedriver.display()));
            let deadline = Instant::now() + Duration::from_secs(15);
            loop {
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return (Driver { child, profile, log }, port);
                }
                if child.try_wait().ok().flatten().is_some() {
                    break; // exited (port taken?): another port
                }
                assert!(Instant::now() < deadline, "chromedriver did not listen on port {port} within 15 s");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        panic!("chromedriver exited on start five times; log: {}", std::fs::read_to_string(&log).unwrap_or_default());
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // The whole group: chromedriver and the browser it started. `kill` from procps keeps
        // the tests free of unsafe code.
        let pgid = self.child.id();
        let _ = Command::new("kill").args(["-KILL", "--", &format!("-{pgid}")]).stderr(Stdio::null()).status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A headless Chromium session on the console of one server.
pub struct Browser {
    pub client: Client,
    /// `http://127.0.0.1:port` of the server under test.
    pub base: String,
    driver: Driver,
}

impl Browser {
    /// A laptop-sized browser on the console at `base` (`http://host:port`, no trailing slash).
    pub async fn start(base: &str) -> Browser {
        Self::start_sized(base, LAPTOP).await
    }

    /// A browser whose viewport is `size` CSS pixels. Below 500 px (Chromium's smallest
    /// window) it is a phone: Chromium's mobile emulation, where a page without
    /// `<meta name="viewport" content="width=device-width">` is laid out 980 px wide and
    /// shrunk, as on a real phone.
    pub async fn start_sized(base: &str, size: (u32, u32)) -> Browser {
        let (driver, port) = Driver::start();
        let args = vec![
            "--headless=new".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            "--hide-scrollbars".into(),
            "--no-first-run".into(),
            "--no-default-browser-check".into(),
            format!("--window-size={},{}", size.0, size.1),
            format!("--user-data-dir={}", driver.profile.path().join("chromium").display()),
        ];
        let chromium = tool("LORAFLOW_CHROMIUM", CHROMIUM, "chromium");
        let mut options = json!({ "binary": chromium, "args": args });
        if size.0 < 500 {
            options["mobileEmulation"] = json!({ "deviceMetrics": { "width": size.0, "height": size.1, "pixelRatio": 1.0 } });
        }
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": options,
            // confirm() of a delete button is answered by the test.
            "unhandledPromptBehavior": "ignore",
        });
        let Value::Object(caps) = caps else { unreachable!() };
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client =
            ClientBuilder::new(connector).capabilities(caps).connect(&format!("http://127.0.0.1:{port}")).await.unwrap_or_else(|e| {
                panic!("no Chromium session: {e}; chromedriver log: {}", std::fs::read_to_string(&driver.log).unwrap_or_default())
            });
        Browser { client, base: base.trim_end_matches('/').to_string(), driver }
    }

    /// Ends the session (Chromium exits) and chromedriver.
    pub async fn close(self) {
        let Browser { client, driver, .. } = self;
        let _ = client.close().await;
        drop(driver);
    }

    /// Loads the console at `route` (e.g. `#/gateways`, or "" for `/`). A change of the hash
    /// alone does not reload the page.
    pub async fn open(&self, route: &str) {
        let url = format!("{}/{}", self.base, route);
        self.client.goto(&url).await.unwrap_or_else(|e| panic!("open {url}: {e}"));
    }

    /// Reloads the page (the token stays: it is in sessionStorage).
    pub async fn reload(&self) {
        self.client.refresh().await.expect("reload");
    }

    /// The route (hash) the page is on, e.g. `#/devices/0102…`.
    pub async fn route(&self) -> String {
        self.js("return location.hash", vec![]).await.as_str().unwrap_or_default().to_string()
    }

    /// Runs `script` (a function body; `arguments[i]` are `args`) and returns its value.
    pub async fn js(&self, script: &str, args: Vec<Value>) -> Value {
        self.client.execute(script, args).await.unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// Polls `script` until it returns something other than null/false/""/0 and returns
    /// that; fails the test after `within`, naming `what`.
    pub async fn wait_js_for(&self, what: &str, within: Duration, script: &str, args: Vec<Value>) -> Value {
        let deadline = Instant::now() + within;
        loop {
            // A navigation can make a script fail once (the document is being replaced).
            let last = match self.client.execute(script, args.clone()).await {
                Ok(v) if truthy(&v) => return v,
                Ok(v) => v,
                Err(e) => Value::String(format!("script error: {e}")),
            };
            if Instant::now() > deadline {
                self.fail(&format!("timed out after {within:?} waiting for {what} (last value {last})")).await;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// [`wait_js_for`](Self::wait_js_for) with the default deadline.
    pub async fn wait_js(&self, what: &str, script: &str, args: Vec<Value>) -> Value {
        self.wait_js_for(what, WAIT, script, args).await
    }

    /// The first element matching `css` once it is displayed.
    pub async fn wait_visible(&self, css: &str) -> Element {
        self.wait_js(&format!("`{css}` visible"), &format!("return {VISIBLE_FN}(document.querySelector(arguments[0]))"), vec![json!(css)])
            .await;
        self.client.find(Locator::Css(css)).await.unwrap_or_else(|e| panic!("find {css}: {e}"))
    }

    /// Waits until nothing matching `css` is displayed (absent or hidden).
    pub async fn wait_hidden(&self, css: &str) {
        self.wait_js(
            &format!("`{css}` hidden"),
            &format!("return !Array.from(document.querySelectorAll(arguments[0])).some({VISIBLE_FN})"),
            vec![json!(css)],
        )
        .await;
    }

    /// Is an element matching `css` displayed right now?
    pub async fn is_visible(&self, css: &str) -> bool {
        truthy(&self.js(&format!("return Array.from(document.querySelectorAll(arguments[0])).some({VISIBLE_FN})"), vec![json!(css)]).await)
    }

    /// Waits until at least `n` elements match `css`; returns how many there are.
    pub async fn wait_count(&self, css: &str, n: usize) -> usize {
        let v = self
            .wait_js(
                &format!("{n} or more `{css}`"),
                "const k = document.querySelectorAll(arguments[0]).length; return k >= arguments[1] ? k : null",
                vec![json!(css), json!(n)],
            )
            .await;
        v.as_u64().unwrap() as usize
    }

    /// Waits until an element matching `css` has non-empty text containing every one of
    /// `needles` (ignoring case: the console may capitalise a word); returns that text.
    pub async fn wait_text(&self, css: &str, needles: &[&str]) -> String {
        let v = self
            .wait_js(
                &format!("`{css}` with text containing {needles:?}"),
                "for (const e of document.querySelectorAll(arguments[0])) {
                   const t = e.textContent, l = t.toLowerCase();
                   if (t.trim() && arguments[1].every(n => l.includes(n.toLowerCase()))) return t;
                 }
                 return null",
                vec![json!(css), json!(needles)],
            )
            .await;
        v.as_str().unwrap().to_string()
    }

    /// Waits until the route is `route` (e.g. after a form saved and moved on).
    pub async fn wait_route(&self, route: &str) {
        self.wait_js(&format!("route {route}"), "return location.hash === arguments[0]", vec![json!(route)]).await;
    }

    /// Sets the field `name` of the form `form_css` as a user would: types into text inputs
    /// and textareas (after clearing them), picks the option whose value is `value` in a
    /// select, ticks or unticks a checkbox (`value` "true"/"false").
    pub async fn set_field(&self, form_css: &str, name: &str, value: &str) {
        let css = format!("{form_css} [name=\"{name}\"]");
        let field = self.wait_visible(&css).await;
        let tag = field.tag_name().await.expect("tag name").to_lowercase();
        let kind = field.attr("type").await.ok().flatten().unwrap_or_default().to_lowercase();
        if tag == "select" {
            let has = self
                .wait_js(
                    &format!("option {value:?} in `{css}`"),
                    "const s = document.querySelector(arguments[0]); return !!s && Array.from(s.options).some(o => o.value === arguments[1])",
                    vec![json!(css), json!(value)],
                )
                .await;
            assert!(truthy(&has));
            field.select_by_value(value).await.unwrap_or_else(|e| panic!("select {value} in {css}: {e}"));
        } else if kind == "checkbox" {
            let want = value == "true";
            let checked = field.prop("checked").await.ok().flatten().as_deref() == Some("true");
            if checked != want {
                field.click().await.unwrap_or_else(|e| panic!("click {css}: {e}"));
            }
        } else {
            field.clear().await.unwrap_or_else(|e| panic!("clear {css}: {e}"));
            field.send_keys(value).await.unwrap_or_else(|e| panic!("type into {css}: {e}"));
        }
    }

    /// Clicks the submit button of the form `form_css`.
    pub async fn submit(&self, form_css: &str) {
        self.click(&format!("{form_css} [type=submit]")).await;
    }

    /// Clicks the element matching `css` once it is visible.
    pub async fn click(&self, css: &str) {
        let el = self.wait_visible(css).await;
        el.click().await.unwrap_or_else(|e| panic!("click {css}: {e}"));
    }

    /// Texts of the visible `[role=alert]` elements (error messages of failed requests).
    pub async fn alerts(&self) -> Vec<String> {
        let v = self
            .js(
                &format!(
                    "return Array.from(document.querySelectorAll('[role=alert]')).filter({VISIBLE_FN}).map(e => e.textContent.trim()).filter(t => t)"
                ),
                vec![],
            )
            .await;
        serde_json::from_value(v).unwrap_or_default()
    }

    /// Fails the test with `msg` and what the page shows (route, alerts, start of its text);
    /// saves a screenshot next to the chromedriver log for a look.
    pub async fn fail(&self, msg: &str) -> ! {
        let state = self
            .client
            .execute(
                &format!(
                    "return {{url: location.href, alerts: Array.from(document.querySelectorAll('[role=alert]')).filter({VISIBLE_FN}).map(e => e.textContent.trim()),
                     text: (document.body ? document.body.innerText : '').slice(0, 1500)}}"
                ),
                vec![],
            )
            .await
            .unwrap_or(Value::Null);
        let shot = self.driver.profile.path().join("failure.png");
        if let Ok(png) = self.client.screenshot().await {
            let _ = std::fs::write(&shot, png);
        }
        // The profile directory is deleted on drop; keep the picture where it can be found.
        let kept = std::env::temp_dir().join(format!("loraflow-console-failure-{}.png", std::process::id()));
        let _ = std::fs::copy(&shot, &kept);
        panic!("{msg}\npage: {state}\nscreenshot: {}", kept.display());
    }

    /// Saves a PNG of the page as `<dir>/<name>.png` when LORAFLOW_SCREENSHOTS=<dir> is set
    /// (docs/screenshots is made this way); does nothing otherwise.
    pub async fn screenshot(&self, name: &str) {
        self.screenshot_from(name, None).await;
    }

    /// [`screenshot`](Self::screenshot) with the page scrolled so that the section holding
    /// `css` starts at the top (just below the navigation bar).
    pub async fn screenshot_from(&self, name: &str, css: Option<&str>) {
        let Ok(dir) = std::env::var("LORAFLOW_SCREENSHOTS") else { return };
        // A bar that stays on top (fixed or sticky) would hide the section's start.
        let scroll = "const e = arguments[0] ? document.querySelector(arguments[0]) : null;
             const s = e ? (e.closest('section, .card') || e) : null;
             const bar = document.querySelector('header');
             const pinned = bar && ['fixed', 'sticky'].includes(getComputedStyle(bar).position) ? bar.offsetHeight : 0;
             window.scrollTo(0, s ? Math.max(0, s.getBoundingClientRect().top + window.scrollY - pinned - 16) : 0);
             return true";
        self.js(scroll, vec![json!(css)]).await;
        let dir = Path::new(&dir);
        std::fs::create_dir_all(dir).expect("screenshot dir");
        // Let pending renders and SVG layout settle: two animation frames.
        let _ = self
            .client
            .execute_async("const done = arguments[0]; requestAnimationFrame(() => requestAnimationFrame(() => done(true)))", vec![])
            .await;
        let png = self.client.screenshot().await.expect("screenshot");
        std::fs::write(dir.join(format!("{name}.png")), png).expect("write screenshot");
    }

    /// The viewport's width in CSS pixels, as the page sees it.
    pub async fn viewport_width(&self) -> u64 {
        self.js("return window.innerWidth", vec![]).await.as_u64().unwrap()
    }

    /// How far the page is wider than its viewport (0 when nothing overflows horizontally).
    pub async fn horizontal_overflow(&self) -> i64 {
        self.js(
            "const w = document.documentElement.clientWidth;
             return Math.max(document.documentElement.scrollWidth, document.body.scrollWidth) - w",
            vec![],
        )
        .await
        .as_i64()
        .unwrap()
    }
}

/// JavaScript: is element `e` displayed (in the document, not `display:none`/hidden, with a box)?
const VISIBLE_FN: &str =
    "(e => !!e && e.isConnected && !e.closest('[hidden]') && getComputedStyle(e).visibility !== 'hidden' && e.getClientRects().length > 0)";

fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::String(s) => !s.is_empty(),
        Value::Number(n) => n.as_f64() != Some(0.0),
        Value::Array(_) | Value::Object(_) => true,
    }
}
