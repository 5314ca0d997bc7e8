//! Test support: start the real `loraflow` binary on ephemeral ports with its own database,
//! and talk to it like a gateway (raw Semtech UDP bytes) and a REST client would.
#![allow(dead_code)]

pub mod cluster;
pub mod device;
pub mod gateway;
pub mod provision;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub const TOKEN: &str = "test-admin-token";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A running loraflow process. Stopped with SIGTERM on drop.
pub struct TestServer {
    child: Option<Child>,
    pub api: SocketAddr,
    pub gateway: SocketAddr,
    pub mqtt: Option<SocketAddr>,
    pub database_url: String,
    pub env: Vec<(String, String)>,
    pub dir: std::sync::Arc<tempfile::TempDir>,
    pub stdout_lines: Vec<String>,
}

pub async fn database_url(backend: Backend, dir: &std::path::Path) -> String {
    match backend {
        Backend::Sqlite => format!("sqlite://{}", dir.join("loraflow.db").display()),
        Backend::Postgres => loraflow_network_server::storage::testing::fresh_postgres_url().await,
    }
}

impl TestServer {
    /// Starts a server with the given backend and extra `LORAFLOW_…` variables.
    pub async fn start(backend: Backend, extra_env: &[(&str, &str)]) -> TestServer {
        let mut server = Self::start_stopped(backend, extra_env).await;
        server.spawn_with_stderr(Stdio::inherit());
        server
    }

    /// Like [`start`](Self::start), with `toml` as the server's `loraflow.toml` (read from its
    /// working directory), for what only a config file can say (`[[regions]]`).
    pub async fn start_with_config(backend: Backend, extra_env: &[(&str, &str)], toml: &str) -> TestServer {
        let mut server = Self::start_stopped(backend, extra_env).await;
        std::fs::write(server.dir.path().join("loraflow.toml"), toml).expect("write loraflow.toml");
        server.spawn_with_stderr(Stdio::inherit());
        server
    }

    /// Like [`start`](Self::start), with the server's log (stderr) written to `log_file`.
    pub async fn start_logging_to(backend: Backend, extra_env: &[(&str, &str)], log_file: &std::path::Path) -> TestServer {
        let mut server = Self::start_stopped(backend, extra_env).await;
        let file = std::fs::File::create(log_file).expect("log file");
        server.spawn_with_stderr(Stdio::from(file));
        server
    }

    /// Starts a server on an existing database (instances of one cluster share theirs).
    pub fn start_on(database_url: &str, extra_env: &[(&str, &str)]) -> TestServer {
        let dir = std::sync::Arc::new(tempfile::tempdir().expect("tempdir"));
        let mut server = Self::stopped_in(dir, database_url.to_string(), extra_env);
        server.spawn_with_stderr(Stdio::inherit());
        server
    }

    async fn start_stopped(backend: Backend, extra_env: &[(&str, &str)]) -> TestServer {
        let dir = std::sync::Arc::new(tempfile::tempdir().expect("tempdir"));
        let database_url = database_url(backend, dir.path()).await;
        Self::stopped_in(dir, database_url, extra_env)
    }

    fn stopped_in(dir: std::sync::Arc<tempfile::TempDir>, database_url: String, extra_env: &[(&str, &str)]) -> TestServer {
        let mut env: Vec<(String, String)> = vec![
            ("LORAFLOW_GATEWAY__BIND".into(), "127.0.0.1:0".into()),
            ("LORAFLOW_API__BIND".into(), "127.0.0.1:0".into()),
            ("LORAFLOW_API__ADMIN_TOKEN".into(), TOKEN.into()),
            ("LORAFLOW_MQTT__EMBEDDED_BIND".into(), "127.0.0.1:0".into()),
            ("LORAFLOW_DATABASE__URL".into(), database_url.clone()),
        ];
        for (k, v) in extra_env {
            env.retain(|(ek, _)| ek != k);
            env.push((k.to_string(), v.to_string()));
        }
        TestServer {
            child: None,
            api: ([127, 0, 0, 1], 0).into(),
            gateway: ([127, 0, 0, 1], 0).into(),
            mqtt: None,
            database_url,
            env,
            dir,
            stdout_lines: Vec::new(),
        }
    }

    fn spawn_with_stderr(&mut self, stderr: Stdio) {
        let started = Self::spawn_inner(std::mem::take(&mut self.env), self.dir.clone(), self.database_url.clone(), stderr);
        *self = started;
    }

    /// The process id, e.g. to `kill -STOP` it.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    fn spawn(env: Vec<(String, String)>, dir: std::sync::Arc<tempfile::TempDir>, database_url: String) -> TestServer {
        Self::spawn_inner(env, dir, database_url, Stdio::inherit())
    }

    fn spawn_inner(env: Vec<(String, String)>, dir: std::sync::Arc<tempfile::TempDir>, database_url: String, stderr: Stdio) -> TestServer {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_loraflow"));
        cmd.current_dir(dir.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_LOG", std::env::var("LORAFLOW_TEST_LOG").unwrap_or_else(|_| "warn".into()))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr);
        for (k, v) in &env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn loraflow");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                eprintln!("[loraflow stdout] {line}");
                if tx.send(line).is_err() {
                    // The test stopped listening; keep draining so the child never blocks.
                }
            }
        });
        let mut lines = Vec::new();
        let ready = loop {
            match rx.recv_timeout(Duration::from_secs(60)) {
                Ok(line) => {
                    lines.push(line.clone());
                    if let Some(rest) = line.strip_prefix("loraflow ready: ") {
                        break rest.to_string();
                    }
                }
                Err(_) => {
                    let status = child.try_wait().ok().flatten();
                    panic!("loraflow did not become ready (exit status {status:?}); output: {lines:?}");
                }
            }
        };
        let field = |name: &str| -> Option<SocketAddr> {
            ready.split_whitespace().find_map(|kv| {
                let v = kv.strip_prefix(name)?.strip_prefix('=')?;
                v.trim_start_matches("http://").trim_start_matches("https://").parse().ok()
            })
        };
        TestServer {
            api: field("api").expect("api address"),
            gateway: field("gateway_udp").expect("gateway address"),
            mqtt: field("mqtt_embedded"),
            child: Some(child),
            database_url,
            env,
            dir,
            stdout_lines: lines,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.api, path)
    }

    pub fn client(&self) -> Api {
        Api { base: format!("http://{}", self.api), http: reqwest::Client::new(), token: Some(TOKEN.to_string()) }
    }

    /// Sends SIGTERM and waits; returns the exit code and how long it took.
    pub fn stop(&mut self) -> (Option<i32>, Duration) {
        let Some(mut child) = self.child.take() else { return (None, Duration::ZERO) };
        let started = std::time::Instant::now();
        unsafe_sigterm(child.id());
        let deadline = started + Duration::from_secs(15);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return (status.code(), started.elapsed());
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return (None, started.elapsed());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL, as in a crash or an OOM kill: nothing is flushed. Waits for the process to end.
    pub fn sigkill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server and starts it again on the same database and settings.
    pub fn restart(mut self) -> TestServer {
        if self.child.is_some() {
            let (code, _) = self.stop();
            assert_eq!(code, Some(0), "clean exit on SIGTERM");
        }
        let env = std::mem::take(&mut self.env);
        Self::spawn(env, self.dir.clone(), self.database_url.clone())
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            unsafe_sigterm(child.id());
            for _ in 0..250 {
                if child.try_wait().ok().flatten().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn unsafe_sigterm(pid: u32) {
    // `kill` from procps keeps the tests free of libc/unsafe code.
    let _ = Command::new("kill").arg("-TERM").arg(pid.to_string()).status();
}

/// A small REST client that returns status + JSON.
#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub http: reqwest::Client,
    pub token: Option<String>,
}

impl Api {
    /// The Prometheus text of `/metrics` (no token needed).
    pub async fn metrics(&self) -> String {
        self.http.get(format!("{}/metrics", self.base)).send().await.unwrap().text().await.unwrap()
    }

    pub fn with_token(&self, token: Option<&str>) -> Api {
        Api { token: token.map(str::to_string), ..self.clone() }
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: Option<serde_json::Value>) -> (u16, serde_json::Value) {
        let mut req = self.http.request(method, format!("{}{}", self.base, path));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("http request");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        let json =
            if text.is_empty() { serde_json::Value::Null } else { serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)) };
        (status, json)
    }

    pub async fn get(&self, path: &str) -> (u16, serde_json::Value) {
        self.send(reqwest::Method::GET, path, None).await
    }
    pub async fn post(&self, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        self.send(reqwest::Method::POST, path, Some(body)).await
    }
    pub async fn put(&self, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        self.send(reqwest::Method::PUT, path, Some(body)).await
    }
    pub async fn delete(&self, path: &str) -> (u16, serde_json::Value) {
        self.send(reqwest::Method::DELETE, path, None).await
    }
}

/// Polls `f` until it returns Some or the timeout passes.
pub async fn eventually<T, F, Fut>(timeout: Duration, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if tokio::time::Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Reads one Prometheus sample, e.g. `metric(&text, "loraflow_gateway_udp_dropped_total", &[("reason","bad_json")])`.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter(|l| labels.iter().all(|(k, v)| l.contains(&format!("{k}=\"{v}\""))))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The buckets a series query must answer for `points` (time ascending): each bucket's start
/// (Unix seconds, `floor(t / secs) * secs`) and the `agg` of its values, computed independently
/// of the server.
pub fn expected_buckets(points: &[(chrono::DateTime<chrono::Utc>, f64)], secs: i64, agg: &str) -> Vec<(i64, f64)> {
    let mut groups: std::collections::BTreeMap<i64, Vec<f64>> = Default::default();
    for (t, v) in points {
        groups.entry(t.timestamp().div_euclid(secs) * secs).or_default().push(*v);
    }
    groups
        .into_iter()
        .map(|(start, vs)| {
            let v = match agg {
                "avg" => vs.iter().sum::<f64>() / vs.len() as f64,
                "min" => vs.iter().cloned().fold(f64::MAX, f64::min),
                "max" => vs.iter().cloned().fold(f64::MIN, f64::max),
                "sum" => vs.iter().sum(),
                "count" => vs.len() as f64,
                "last" => *vs.last().unwrap(),
                other => panic!("no aggregate {other}"),
            };
            (start, v)
        })
        .collect()
}
