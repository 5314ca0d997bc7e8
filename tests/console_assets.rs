//! The web console as the real binary serves it: `/` is the page with a strict
//! Content-Security-Policy and the other security headers; every file the page and its
//! modules reference (`src=`, `href=`, `import … from '…'`) is served from this server with
//! the right content type; nothing points elsewhere; unknown assets are 404; and `/api` still
//! wants the token. Browser behaviour is covered by the Chromium tests.

mod common;

use std::collections::{BTreeSet, VecDeque};

use common::{Backend, TestServer};

/// Values of `attr="…"` (or `'…'`) in `html`.
fn attribute_values(html: &str, attr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let needle = format!("{attr}=");
    let mut rest = html;
    while let Some(i) = rest.find(&needle) {
        let before = rest[..i].chars().last();
        rest = &rest[i + needle.len()..];
        // `data-src=` or `xsrc=` are other attributes.
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '-') {
            continue;
        }
        let Some(quote) = rest.chars().next().filter(|c| *c == '"' || *c == '\'') else { continue };
        if let Some(end) = rest[1..].find(quote) {
            out.push(rest[1..1 + end].to_string());
        }
    }
    out
}

/// Module specifiers of `import … from '…'`, `import '…'`, `export … from '…'` and `import('…')`.
fn module_imports(js: &str) -> Vec<String> {
    let mut out = Vec::new();
    // Whole-line comments out of the way, so that a statement after one starts with its keyword.
    let code: String =
        js.lines().filter(|l| !l.trim_start().starts_with("//") && !l.trim_start().starts_with('*')).collect::<Vec<_>>().join("\n");
    let js = code.as_str();
    for statement in js.split(';') {
        let t = statement.trim_start();
        let is_static = t.starts_with("import ") || t.starts_with("import{") || (t.starts_with("export ") && t.contains(" from "));
        if is_static && (t.contains(" from ") || t.starts_with("import '") || t.starts_with("import \"")) {
            let spec_start = t.rfind(" from ").map(|i| i + 6).unwrap_or(7);
            if let Some(s) = quoted(&t[spec_start..]) {
                out.push(s);
            }
        }
    }
    let mut rest = js;
    while let Some(i) = rest.find("import(") {
        rest = &rest[i + 7..];
        if let Some(s) = quoted(rest) {
            out.push(s);
        }
    }
    out
}

fn quoted(s: &str) -> Option<String> {
    let s = s.trim_start();
    let quote = s.chars().next().filter(|c| matches!(c, '\'' | '"' | '`'))?;
    let end = s[1..].find(quote)?;
    Some(s[1..1 + end].to_string())
}

/// `reference` resolved against the path of the file that holds it; `None` for in-page anchors.
fn resolve(base: &str, reference: &str) -> Option<String> {
    if reference.starts_with('#') {
        return None;
    }
    if reference.starts_with('/') {
        return Some(reference.to_string());
    }
    let mut parts: Vec<&str> = base.split('/').collect();
    parts.pop();
    for segment in reference.split('/') {
        match segment {
            "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    Some(parts.join("/"))
}

fn expected_type(path: &str) -> &'static str {
    match path.rsplit('.').next() {
        Some("js") => "text/javascript",
        Some("css") => "text/css",
        Some("svg") => "image/svg+xml",
        Some("html") => "text/html",
        other => panic!("{path}: unexpected asset type {other:?}"),
    }
}

fn header<'a>(response: &'a reqwest::Response, name: &str) -> &'a str {
    response.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or_else(|| panic!("no {name} header"))
}

#[tokio::test]
async fn the_console_page_and_every_asset_it_references_are_served_with_strict_headers() {
    let server = TestServer::start(Backend::Sqlite, &[]).await;
    let http = reqwest::Client::new();

    assert!(
        server
            .stdout_lines
            .iter()
            .any(|l| l == &format!("loraflow console: http://{}/ (open it and sign in with the admin API token)", server.api)),
        "console URL printed: {:?}",
        server.stdout_lines
    );

    let page = http.get(server.url("/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(header(&page, "content-type").starts_with("text/html"), "{:?}", page.headers());
    let csp = header(&page, "content-security-policy").to_string();
    for directive in ["default-src 'self'", "script-src 'self'", "style-src 'self'", "frame-ancestors 'none'", "object-src 'none'"] {
        assert!(csp.contains(directive), "CSP {csp:?} lacks {directive:?}");
    }
    assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval") && !csp.contains('*'), "{csp}");
    assert_eq!(header(&page, "x-content-type-options"), "nosniff");
    assert_eq!(header(&page, "x-frame-options"), "DENY");
    assert_eq!(header(&page, "referrer-policy"), "no-referrer");
    assert_eq!(header(&page, "cache-control"), "no-cache");
    let html = page.text().await.unwrap();
    assert!(html.contains("<title>") && html.contains("type=\"module\""), "{html}");
    // The policy forbids inline code: every script has a src, no element has a style attribute
    // or an inline event handler.
    assert_eq!(html.matches("<script").count(), html.matches("<script type=\"module\" src=").count(), "inline script in {html}");
    assert!(attribute_values(&html, "style").is_empty() && !html.contains("<style"), "inline style in {html}");
    assert!(!html.contains(" onclick=") && !html.contains(" onload="), "inline handler in {html}");

    // Walk every reference from the page through the modules' imports.
    let mut queue: VecDeque<(String, String)> = VecDeque::new();
    for reference in attribute_values(&html, "src").into_iter().chain(attribute_values(&html, "href")) {
        queue.push_back(("/".to_string(), reference));
    }
    let mut seen = BTreeSet::new();
    while let Some((from, reference)) = queue.pop_front() {
        assert!(
            !reference.contains("://") && !reference.starts_with("//") && !reference.starts_with("data:"),
            "{from} references {reference:?} outside this server"
        );
        let Some(path) = resolve(&from, &reference) else { continue };
        assert!(path.starts_with("/console/"), "{from} references {path}, outside /console/");
        if !seen.insert(path.clone()) {
            continue;
        }
        let response = http.get(server.url(&path)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path} (referenced by {from})");
        assert!(header(&response, "content-type").starts_with(expected_type(&path)), "{path}: {:?}", response.headers());
        assert_eq!(header(&response, "x-content-type-options"), "nosniff", "{path}");
        assert_eq!(header(&response, "content-security-policy"), csp, "{path}");
        assert!(response.headers().contains_key("etag"), "{path}");
        let body = response.text().await.unwrap();
        if path.ends_with(".js") {
            for import in module_imports(&body) {
                assert!(import.starts_with("./") || import.starts_with("../") || import.starts_with('/'), "{path} imports {import:?}");
                queue.push_back((path.clone(), import));
            }
            // Server data is rendered as text, never parsed as markup.
            for forbidden in ["innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"] {
                assert!(!body.contains(forbidden), "{path} uses {forbidden}");
            }
        }
    }
    for module in
        ["/console/app.js", "/console/api.js", "/console/router.js", "/console/chart.js", "/console/sse.js", "/console/pages/device.js"]
    {
        assert!(seen.contains(module), "{module} not reached from the page; reached {seen:?}");
    }
    assert!(seen.contains("/console/app.css"), "{seen:?}");

    for missing in
        ["/console/nope.js", "/console/pages/nope.js", "/console/", "/console/index.html", "/console/../Cargo.toml", "/index.html"]
    {
        let response = http.get(server.url(missing)).send().await.unwrap();
        assert_eq!(response.status(), 404, "{missing}");
    }

    // The console changed nothing about the API: /api wants the token, /health does not.
    let api = server.client();
    assert_eq!(api.with_token(None).get("/api/applications").await.0, 401);
    assert_eq!(api.with_token(None).get("/api/no-such-thing").await.0, 401);
    assert_eq!(api.get("/api/applications").await.0, 200);
    assert_eq!(api.with_token(None).get("/health").await.0, 200);
}

#[tokio::test]
async fn an_unchanged_asset_is_revalidated_with_its_etag() {
    let server = TestServer::start(Backend::Sqlite, &[]).await;
    let http = reqwest::Client::new();
    let first = http.get(server.url("/console/app.js")).send().await.unwrap();
    assert_eq!(first.status(), 200);
    assert_eq!(header(&first, "cache-control"), "no-cache");
    let etag = header(&first, "etag").to_string();
    let again = http.get(server.url("/console/app.js")).header("if-none-match", &etag).send().await.unwrap();
    assert_eq!(again.status(), 304);
    assert!(again.text().await.unwrap().is_empty());
    let head = http.head(server.url("/")).send().await.unwrap();
    assert_eq!(head.status(), 200);
    assert!(header(&head, "content-type").starts_with("text/html"));
}

#[test]
fn references_and_imports_are_found_and_resolved() {
    let html = r##"<link rel="icon" href="/console/favicon.svg"><script type="module" src='/console/app.js'></script><a href="#main" data-src="x">"##;
    assert_eq!(attribute_values(html, "href"), ["/console/favicon.svg", "#main"]);
    assert_eq!(attribute_values(html, "src"), ["/console/app.js"]);
    let js = "// A module.\nimport { a } from './a.js';\nimport * as r from \"../r.js\";\nimport './side.js';\nexport { b } from './b.js';\nconst m = import('./lazy.js');\nconst s = 'import x from y';";
    assert_eq!(module_imports(js), ["./a.js", "../r.js", "./side.js", "./b.js", "./lazy.js"]);
    assert_eq!(resolve("/console/pages/device.js", "../api.js").as_deref(), Some("/console/api.js"));
    assert_eq!(resolve("/console/app.js", "./pages/x.js").as_deref(), Some("/console/pages/x.js"));
    assert_eq!(resolve("/", "#main"), None);
}
