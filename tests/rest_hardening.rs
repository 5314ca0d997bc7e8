//! The REST API as an operator exposes it: HTTPS on a test certificate, failed-auth limiting
//! per client address, every error answer in the JSON error model (401, 404, 405, 408, 413,
//! 415, 429 and 400 for unknown query parameters), request ids, CORS only for configured
//! origins, one timestamp format, and request logs without tokens or query strings.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::{Backend, TestServer, TOKEN};
use reqwest::header::{HeaderMap, ALLOW, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const DEV_EUI: &str = "0102030405060708";

/// Status, headers and JSON body (asserted to be the error model when the status is an error).
async fn call(req: reqwest::RequestBuilder) -> (StatusCode, HeaderMap, Value) {
    let resp = req.send().await.expect("http request");
    let (status, headers) = (resp.status(), resp.headers().clone());
    let text = resp.text().await.unwrap();
    let body: Value = if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
    if status.is_client_error() || status.is_server_error() {
        assert!(
            headers.get(CONTENT_TYPE).is_some_and(|v| v.to_str().unwrap().starts_with("application/json")),
            "{status} without a JSON content-type: {headers:?}"
        );
        assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()), "{status} outside the error model: {body}");
    }
    (status, headers, body)
}

/// Sends `request` on a raw connection and returns the status line's code and the body,
/// reading until the server closes or `timeout` passes.
async fn raw(api: SocketAddr, parts: &[&[u8]], pause: Duration) -> (u16, Value) {
    let mut stream = TcpStream::connect(api).await.unwrap();
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            tokio::time::sleep(pause).await;
        }
        stream.write_all(part).await.unwrap();
    }
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf).to_string();
    let code = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or_else(|| panic!("no status line: {text:?}"));
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
    // A chunked answer: the JSON is the one line that starts with '{'.
    let json = body.lines().find(|l| l.starts_with('{')).map(|l| serde_json::from_str(l).unwrap()).unwrap_or(Value::Null);
    (code, json)
}

fn is_answer_time(v: &Value) -> bool {
    let Some(s) = v.as_str() else { return false };
    let b = s.as_bytes();
    // 2026-11-30T12:00:00.123456Z
    s.len() == 27
        && b[26] == b'Z'
        && b[19] == b'.'
        && s[20..26].bytes().all(|c| c.is_ascii_digit())
        && chrono::DateTime::parse_from_rfc3339(s).is_ok()
}

#[tokio::test]
async fn every_error_answer_follows_the_json_model() {
    let log = tempfile::NamedTempFile::new().unwrap();
    let server = TestServer::start_logging_to(
        Backend::Sqlite,
        &[("LORAFLOW_API__MAX_BODY_BYTES", "4096"), ("LORAFLOW_API__BODY_TIMEOUT_SECS", "1"), ("RUST_LOG", "info")],
        log.path(),
    )
    .await;
    let http = reqwest::Client::new();
    let url = |p: &str| server.url(p);
    let p = common::provision::application_and_profile(&server.client(), "NONE", "").await;

    // Unknown path under /api: 401 without a token (the API's shape stays hidden), 404 with.
    let (s, h, _) = call(http.get(url("/api/no-such-thing"))).await;
    assert_eq!(s, 401);
    assert_eq!(h.get(WWW_AUTHENTICATE).unwrap(), "Bearer");
    let (s, _, _) = call(http.get(url("/api/no-such-thing")).bearer_auth(TOKEN)).await;
    assert_eq!(s, 404);
    let (s, _, _) = call(http.get(url("/no-such-thing"))).await;
    assert_eq!(s, 404);

    // The scheme is case-insensitive.
    for scheme in ["BEARER", "bearer", "Bearer"] {
        let (s, _, body) = call(http.get(url("/api/applications")).header("authorization", format!("{scheme} {TOKEN}"))).await;
        assert_eq!(s, 200, "{scheme}: {body}");
    }

    // 405 names the methods there are.
    let (s, h, body) = call(http.request(Method::PATCH, url("/api/devices")).bearer_auth(TOKEN)).await;
    assert_eq!(s, 405, "{body}");
    let allow = h.get(ALLOW).expect("Allow").to_str().unwrap().to_string();
    assert!(allow.contains("GET") && allow.contains("POST"), "{allow}");

    // 413: declared too large (refused before reading) and chunked beyond the limit.
    let big = json!({"name": "x".repeat(5000)});
    let (s, _, _) = call(http.post(url("/api/applications")).bearer_auth(TOKEN).json(&big)).await;
    assert_eq!(s, 413);
    let chunk = format!("{:x}\r\n{}\r\n0\r\n\r\n", big.to_string().len(), big);
    let head = format!(
        "POST /api/applications HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    let (code, body) = raw(server.api, &[head.as_bytes(), chunk.as_bytes()], Duration::ZERO).await;
    assert_eq!(code, 413, "{body}");
    assert!(body["error"].is_string(), "{body}");

    // 415: a JSON endpoint given something else, or nothing said.
    let (s, _, _) =
        call(http.post(url("/api/applications")).bearer_auth(TOKEN).header(CONTENT_TYPE, "text/plain").body(r#"{"name":"a"}"#)).await;
    assert_eq!(s, 415);
    let (s, _, _) = call(http.post(url("/api/applications")).bearer_auth(TOKEN).body(r#"{"name":"a"}"#)).await;
    assert_eq!(s, 415);

    // 408: a body that stalls longer than api.body_timeout_secs.
    let head = format!(
        "POST /api/applications HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\n\
         Content-Length: 40\r\nConnection: close\r\n\r\n{{\"name\""
    );
    let (code, body) = raw(server.api, &[head.as_bytes()], Duration::ZERO).await;
    assert_eq!(code, 408, "{body}");
    assert!(body["error"].is_string(), "{body}");

    // Unknown query parameters: 400 naming them, on lists and on endpoints that take none.
    let (s, _, body) = call(http.get(url("/api/devices?applicationID=x")).bearer_auth(TOKEN)).await;
    assert_eq!(s, 400);
    assert!(body["error"].as_str().unwrap().starts_with("applicationID:"), "{body}");
    let (s, _, body) = call(http.get(url("/api/applications?limit=1&sort=name")).bearer_auth(TOKEN)).await;
    assert_eq!(s, 400);
    assert!(body["error"].as_str().unwrap().starts_with("sort:"), "{body}");
    let (s, _, body) = call(http.get(url(&format!("/api/devices/{DEV_EUI}?verbose=1"))).bearer_auth(TOKEN)).await;
    assert_eq!(s, 400);
    assert!(body["error"].as_str().unwrap().starts_with("verbose:"), "{body}");
    let (s, _, body) = call(http.post(url("/api/applications?dryRun=true")).bearer_auth(TOKEN).json(&json!({"name": "not stored"}))).await;
    assert_eq!(s, 400);
    assert!(body["error"].as_str().unwrap().starts_with("dryRun:"), "{body}");
    // Declared parameters still work.
    let (s, _, body) = call(http.get(url(&format!("/api/devices?limit=5&applicationId={}", p.application_id))).bearer_auth(TOKEN)).await;
    assert_eq!(s, 200, "{body}");
    let (_, _, apps) = call(http.get(url("/api/applications")).bearer_auth(TOKEN)).await;
    assert_eq!(apps["totalCount"], 1, "nothing refused was stored: {apps}");

    // Request ids: generated, or the client's kept; on every answer, errors too.
    let (_, h, _) = call(http.get(url("/health"))).await;
    let generated = h.get("x-request-id").expect("x-request-id").to_str().unwrap().to_string();
    assert_eq!(generated.len(), 36, "a UUID: {generated}");
    let (_, h, _) = call(http.get(url("/api/nothing")).header("x-request-id", "trace-me-42")).await;
    assert_eq!(h.get("x-request-id").unwrap(), "trace-me-42");

    // One timestamp format: RFC 3339 UTC, `Z`, six fractional digits.
    let (_, _, app) = call(http.get(url(&format!("/api/applications/{}", p.application_id))).bearer_auth(TOKEN)).await;
    assert!(is_answer_time(&app["createdAt"]) && is_answer_time(&app["updatedAt"]), "{app}");
    let (_, _, profile) = call(http.get(url(&format!("/api/device-profiles/{}", p.device_profile_id))).bearer_auth(TOKEN)).await;
    assert!(is_answer_time(&profile["createdAt"]), "{profile}");

    // The request log: method, path, status, latency, request id; never a token or a query.
    let secret = "sekrit-in-query";
    let (s, _, _) = call(http.get(url(&format!("/api/applications?access_token={secret}"))).bearer_auth(TOKEN)).await;
    assert_eq!(s, 400);
    let (s, _, _) = call(http.get(url("/api/applications")).bearer_auth("wrong-token-in-header")).await;
    assert_eq!(s, 401);
    let text = common::eventually(Duration::from_secs(5), || async {
        let text = std::fs::read_to_string(log.path()).unwrap();
        text.contains("trace-me-42").then_some(text)
    })
    .await
    .expect("request log lines");
    let line = text.lines().find(|l| l.contains("trace-me-42") && l.contains("answered")).expect("answered line with the request id");
    for part in ["GET", "/api/nothing", "401", "latency_ms"] {
        assert!(line.contains(part), "{part} missing in {line}");
    }
    for secret in [secret, TOKEN, "wrong-token-in-header"] {
        assert!(!text.contains(secret), "{secret} in the log");
    }
}

#[tokio::test]
async fn failed_authentication_is_limited_per_client_address() {
    let server = TestServer::start(Backend::Sqlite, &[("LORAFLOW_API__AUTH_FAILURES_PER_MINUTE", "3")]).await;
    let from = |ip: [u8; 4]| reqwest::Client::builder().local_address(IpAddr::from(ip)).build().unwrap();
    let (guesser, other, third) = (from([127, 0, 0, 2]), from([127, 0, 0, 1]), from([127, 0, 0, 3]));
    let url = server.url("/api/applications");

    for i in 0..3 {
        let (s, _, _) = call(guesser.get(&url).bearer_auth(format!("guess-{i}"))).await;
        assert_eq!(s, 401, "guess {i}");
    }
    let (s, h, body) = call(guesser.get(&url).bearer_auth("guess-3")).await;
    assert_eq!(s, 429, "{body}");
    let retry: u64 = h.get(RETRY_AFTER).expect("Retry-After").to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    // The limited address is refused even with the right token until its minute is over
    // (its requests are not even checked); unknown paths too.
    let (s, _, _) = call(guesser.get(&url).bearer_auth(TOKEN)).await;
    assert_eq!(s, 429);
    let (s, _, _) = call(guesser.get(server.url("/api/whatever")).bearer_auth("guess-4")).await;
    assert_eq!(s, 429);
    // Requests without a token are no guesses: still 401.
    let (s, _, _) = call(guesser.get(&url)).await;
    assert_eq!(s, 401);
    // Other addresses are unaffected, and keep their own count.
    let (s, _, _) = call(other.get(&url).bearer_auth(TOKEN)).await;
    assert_eq!(s, 200);
    for _ in 0..3 {
        let (s, _, _) = call(third.get(&url).bearer_auth("nope")).await;
        assert_eq!(s, 401);
    }
    let (s, _, _) = call(other.get(&url).bearer_auth(TOKEN)).await;
    assert_eq!(s, 200);
    // /health needs no token and is never limited.
    let (s, _, _) = call(guesser.get(server.url("/health"))).await;
    assert_eq!(s, 200);
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl").current_dir(dir).args(args).output().expect("openssl CLI (installed by .ci/run)");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A CA and a server certificate for 127.0.0.1 signed by it: (ca.pem, server.pem, server.key).
fn test_certificates(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=loraflow test CA",
        ],
    );
    openssl(dir, &["req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1"]);
    std::fs::write(dir.join("ext.cnf"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ],
    );
}

/// `GET path` over TLS trusting `roots`; the status code, or the TLS error.
async fn https_get(api: SocketAddr, roots: tokio_rustls::rustls::RootCertStore, path: &str) -> Result<u16, std::io::Error> {
    use tokio_rustls::rustls::pki_types::ServerName;
    let config = tokio_rustls::rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(api).await?;
    let mut tls = connector.connect(ServerName::IpAddress(api.ip().into()), tcp).await?;
    tls.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut buf = Vec::new();
    let _ = tls.read_to_end(&mut buf).await;
    let text = String::from_utf8_lossy(&buf);
    Ok(text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0))
}

#[tokio::test]
async fn https_on_a_test_certificate() {
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::CertificateDer;
    let certs = tempfile::tempdir().unwrap();
    test_certificates(certs.path());
    let (cert, key) = (certs.path().join("server.pem"), certs.path().join("server.key"));
    let server = TestServer::start(
        Backend::Sqlite,
        &[("LORAFLOW_API__TLS_CERT", cert.to_str().unwrap()), ("LORAFLOW_API__TLS_KEY", key.to_str().unwrap())],
    )
    .await;
    assert!(server.stdout_lines.iter().any(|l| l.contains("api=https://")), "{:?}", server.stdout_lines);

    let mut trusted = tokio_rustls::rustls::RootCertStore::empty();
    trusted.add(CertificateDer::from_pem_file(certs.path().join("ca.pem")).unwrap()).unwrap();
    assert_eq!(https_get(server.api, trusted.clone(), "/health").await.unwrap(), 200);
    assert_eq!(https_get(server.api, trusted, "/api/applications").await.unwrap(), 200);
    // Without the CA the client refuses the server.
    let e = https_get(server.api, tokio_rustls::rustls::RootCertStore::empty(), "/health").await.unwrap_err();
    assert!(e.to_string().to_lowercase().contains("certificate"), "{e}");
    // Plain HTTP to the HTTPS port gets no answer.
    let plain = reqwest::Client::new().get(format!("http://{}/health", server.api)).timeout(Duration::from_secs(5)).send().await;
    assert!(plain.is_err(), "plain HTTP answered: {plain:?}");
    let metrics = common::eventually(Duration::from_secs(5), || async {
        let text = https_metrics(server.api, certs.path()).await;
        (common::metric(&text, "loraflow_api_connections_closed_total", &[("reason", "tls_handshake")]) >= 2.0).then_some(())
    })
    .await;
    assert!(metrics.is_some(), "failed handshakes are counted");
}

/// `/metrics` over HTTPS with the test CA.
async fn https_metrics(api: SocketAddr, certs: &Path) -> String {
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_file(certs.join("ca.pem")).unwrap()).unwrap();
    let config = tokio_rustls::rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    let tcp = TcpStream::connect(api).await.unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(ServerName::IpAddress(api.ip().into()), tcp).await.unwrap();
    tls.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut buf = Vec::new();
    let _ = tls.read_to_end(&mut buf).await;
    String::from_utf8_lossy(&buf).to_string()
}

#[test]
fn tls_needs_both_certificate_and_key() {
    let dir = tempfile::tempdir().unwrap();
    for (key, other) in [("LORAFLOW_API__TLS_CERT", "api.tls_key"), ("LORAFLOW_API__TLS_KEY", "api.tls_cert")] {
        let out = Command::new(env!("CARGO_BIN_EXE_loraflow"))
            .env_clear()
            .current_dir(dir.path())
            .env(key, dir.path().join("some.pem"))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{key}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(other), "{key}: {stderr}");
    }
}

#[tokio::test]
async fn cors_preflight_is_answered_only_for_configured_origins() {
    let configured = TestServer::start_with_config(Backend::Sqlite, &[], "[api]\ncors_allowed_origins = [\"https://app.example\"]\n").await;
    let http = reqwest::Client::new();
    let preflight = |server: &TestServer, origin: &str| {
        http.request(Method::OPTIONS, server.url("/api/devices"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "authorization, content-type")
    };
    let resp = preflight(&configured, "https://app.example").send().await.unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    let h = resp.headers();
    assert_eq!(h.get("access-control-allow-origin").unwrap(), "https://app.example");
    let allowed = h.get("access-control-allow-headers").unwrap().to_str().unwrap().to_lowercase();
    assert!(allowed.contains("authorization") && allowed.contains("content-type"), "{allowed}");
    assert!(h.get("access-control-allow-methods").unwrap().to_str().unwrap().contains("POST"));

    let resp = preflight(&configured, "https://evil.example").send().await.unwrap();
    assert!(resp.headers().get("access-control-allow-origin").is_none(), "{:?}", resp.headers());
    // A real request from the configured origin gets the header, with the request id exposed.
    let resp = http.get(configured.url("/api/devices")).bearer_auth(TOKEN).header("origin", "https://app.example").send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers().get("access-control-allow-origin").unwrap(), "https://app.example");
    assert!(resp.headers().get("access-control-expose-headers").unwrap().to_str().unwrap().contains("x-request-id"));

    // Without configured origins no CORS header at all.
    let plain = TestServer::start(Backend::Sqlite, &[]).await;
    let (s, h, _) = call(preflight(&plain, "https://app.example")).await;
    assert!(s.is_client_error(), "{s}");
    assert!(h.get("access-control-allow-origin").is_none(), "{h:?}");
}

#[test]
fn a_bad_cors_origin_exits_2_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("loraflow.toml"), "[api]\ncors_allowed_origins = [\"https://app.example/path\"]\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_loraflow")).env_clear().current_dir(dir.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("api.cors_allowed_origins"));
}
