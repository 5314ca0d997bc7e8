//! The OpenAPI document at `/api/openapi.json` on the real binary: OpenAPI 3.1, public, every
//! operation it lists answers (is not the router's fallback "no such endpoint", nor a 405),
//! it lists exactly the operations of README's REST table, and it is internally consistent
//! (every `$ref` resolves, every path parameter is declared, `/api/*` needs the bearer token).

mod common;

use std::collections::BTreeSet;

use serde_json::Value;

use common::{Backend, TestServer, TOKEN};

const METHODS: [&str; 5] = ["get", "post", "put", "delete", "patch"];

/// `/api/devices/{devEui}` and `/api/devices/{dev_eui}` name the same route.
fn normalized(path: &str) -> String {
    let mut out = String::new();
    let mut in_param = false;
    for c in path.chars() {
        match c {
            '{' => {
                in_param = true;
                out.push_str("{}");
            }
            '}' => in_param = false,
            _ if !in_param => out.push(c),
            _ => {}
        }
    }
    out
}

/// The (METHOD, path) pairs of the document.
fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    let mut ops = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for m in METHODS {
            if item.get(m).is_some() {
                ops.insert((m.to_ascii_uppercase(), normalized(path)));
            }
        }
    }
    ops
}

/// The (METHOD, path) pairs of README's REST table: its first column lists `METHOD /path` or
/// `GET/PUT/DELETE /path` items, and `DELETE` alone for "the same" path as the one before.
fn readme_operations() -> BTreeSet<(String, String)> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README.md");
    let section = readme.split("\n## REST API").nth(1).expect("README has a REST API section");
    let section = section.split("\n## ").next().unwrap();
    let mut ops = BTreeSet::new();
    for line in section.lines().filter(|l| l.starts_with("| `")) {
        let first = line.split(" | ").next().unwrap();
        let mut last_path = None;
        for item in first.split('`').skip(1).step_by(2) {
            let (methods, path) = match item.split_once(' ') {
                Some((m, p)) => (m, p.split('?').next().unwrap().to_string()),
                None => (item, last_path.clone().expect("a method alone follows a path")),
            };
            for m in methods.split('/') {
                ops.insert((m.to_string(), normalized(&path)));
            }
            last_path = Some(path);
        }
    }
    assert!(ops.len() > 30, "README's table parsed to too few operations: {ops:?}");
    ops
}

/// A value for a path parameter; the routes answer 404 or 400 for what does not exist.
fn sample(param: &str) -> &'static str {
    match param {
        "gateway_id" | "dev_eui" => "0000000000000001",
        "id" | "application_id" => "00000000-0000-0000-0000-000000000001",
        "name" => "temperature",
        other => panic!("no sample value for path parameter {other}"),
    }
}

fn concrete(path: &str) -> String {
    let mut out = path.to_string();
    while let Some(start) = out.find('{') {
        let end = out[start..].find('}').unwrap() + start;
        let value = sample(&out[start + 1..end]);
        out.replace_range(start..=end, value);
    }
    out
}

/// Every `$ref` of the document (`#/components/schemas/X`) names an existing schema.
fn check_refs(doc: &Value, v: &Value, at: &str) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get("$ref") {
                let pointer = r.strip_prefix('#').unwrap_or_else(|| panic!("{at}: external $ref {r}"));
                assert!(doc.pointer(pointer).is_some(), "{at}: $ref {r} does not resolve");
            }
            for (k, x) in m {
                check_refs(doc, x, &format!("{at}/{k}"));
            }
        }
        Value::Array(a) => a.iter().enumerate().for_each(|(i, x)| check_refs(doc, x, &format!("{at}/{i}"))),
        _ => {}
    }
}

#[tokio::test]
async fn the_document_is_public_openapi_3_1_and_matches_the_router_and_readme() {
    let server = TestServer::start(Backend::Sqlite, &[]).await;
    let http = reqwest::Client::new();

    // Public: no token needed (and a wrong one does not matter).
    let resp = http.get(server.url("/api/openapi.json")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("application/json"));
    let doc: Value = resp.json().await.expect("JSON document");
    let version = doc["openapi"].as_str().expect("openapi version");
    assert!(version.starts_with("3.1."), "OpenAPI {version}");
    assert_eq!(doc["info"]["title"], "loraflow");
    assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
    assert_eq!(doc["security"], serde_json::json!([{"bearer": []}]), "the API needs the bearer token by default");
    check_refs(&doc, &doc, "#");

    // Operation ids are unique, and every response link names one of them.
    let operation_ids: Vec<&str> = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|item| METHODS.iter().filter_map(|m| item.get(*m)))
        .map(|op| op["operationId"].as_str().expect("operationId"))
        .collect();
    assert_eq!(operation_ids.iter().collect::<BTreeSet<_>>().len(), operation_ids.len(), "duplicate operationId: {operation_ids:?}");
    let mut links = 0;
    for op in doc["paths"].as_object().unwrap().values().flat_map(|item| METHODS.iter().filter_map(|m| item.get(*m))) {
        for link in op["responses"].as_object().unwrap().values().filter_map(|r| r["links"].as_object()).flat_map(|l| l.values()) {
            let target = link["operationId"].as_str().unwrap_or_else(|| panic!("a link without operationId: {link}"));
            assert!(operation_ids.contains(&target), "a link to the unknown operation {target}");
            links += 1;
        }
    }
    assert!(links > 0, "the create operations link to what reads their result");

    let ops = documented(&doc);
    let readme = readme_operations();
    let undocumented: Vec<_> = readme.difference(&ops).collect();
    let not_in_readme: Vec<_> = ops.difference(&readme).collect();
    assert!(undocumented.is_empty(), "in README's REST table but not in the OpenAPI document: {undocumented:?}");
    assert!(not_in_readme.is_empty(), "in the OpenAPI document but not in README's REST table: {not_in_readme:?}");

    for (path, item) in doc["paths"].as_object().unwrap() {
        let public = !path.starts_with("/api/") || path == "/api/openapi.json";
        for m in METHODS {
            let Some(op) = item.get(m) else { continue };
            let what = format!("{} {path}", m.to_ascii_uppercase());
            assert!(op["responses"].as_object().is_some_and(|r| !r.is_empty()), "{what}: no responses");

            // Every parameter of the path template is declared, with its location.
            let params: Vec<&Value> = op["parameters"].as_array().map(|a| a.iter().collect()).unwrap_or_default();
            for name in path.split('{').skip(1).map(|s| s.split('}').next().unwrap()) {
                assert!(
                    params.iter().any(|p| p["name"] == name && p["in"] == "path" && p["required"] == true),
                    "{what}: path parameter {name} is not declared"
                );
            }

            // Security: the public routes say so; every /api/* operation needs the token.
            let optional_auth = op["security"].as_array().is_some_and(|s| s.iter().any(|r| r.as_object().is_some_and(|o| o.is_empty())));
            assert_eq!(optional_auth, public, "{what}: security {}", op["security"]);
            if m != "get" {
                assert!(op["responses"].get("409").is_some() && op["responses"].get("400").is_some(), "{what}: write errors");
            }
            if !public {
                assert!(op["responses"].get("401").is_some(), "{what}: 401 is not documented");
            }

            // It exists: the router answers it with a handler's answer, not its fallback's.
            let method = reqwest::Method::from_bytes(m.to_ascii_uppercase().as_bytes()).unwrap();
            let mut req = http.request(method.clone(), server.url(&concrete(path))).bearer_auth(TOKEN);
            if m == "post" || m == "put" {
                req = req.json(&serde_json::json!({}));
            }
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            let body = resp.text().await.unwrap();
            assert_ne!(status, 405, "{what}: the router has no such method");
            assert!(!(status == 404 && body.contains("no such endpoint")), "{what}: the router has no such path");
            assert!(op["responses"].get(status.to_string()).is_some(), "{what}: answered {status}, which is not documented: {body}");

            // Without the token, /api/* is refused.
            if !public {
                let resp = http.request(method, server.url(&concrete(path))).send().await.unwrap();
                assert_eq!(resp.status(), 401, "{what} without a token");
            }
        }
    }

    // The fallback's answer, which the loop above tells apart from a handler's, is what it checks for.
    let (status, body) = server.client().get("/api/not-a-route").await;
    assert_eq!((status, body["error"].as_str()), (404, Some("no such endpoint")));
}
