//! The web console: `GET /` (the page) and `GET /console/{file}` (its scripts and styles),
//! embedded in the binary at compile time from `app-server/console/`.
//!
//! Public like `/health`: the page holds no data, it asks for an API token and then calls
//! `/api/*` with it like any other client. Every answer carries a strict Content-Security-Policy
//! (scripts and styles from this server only, no inline code, no framing) so that a value from
//! the network that slipped into the page could still not run. Assets are revalidated on each
//! load (`no-cache` with an ETag): a new binary never serves a stale mix of old and new modules.

use std::collections::HashMap;
use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use sha2::{Digest, Sha256};

/// Scripts, styles, fetches and everything else from this origin only; no inline code, no
/// plugins, no `<base>`, no form posts anywhere (forms are handled by the scripts), no framing.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; \
     connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// One embedded file: its path below `/console/`, content type and bytes.
struct Asset {
    content_type: &'static str,
    bytes: &'static [u8],
}

macro_rules! assets {
    ($($name:literal => $type:literal),* $(,)?) => {
        /// Every file of `app-server/console/` (a unit test checks that none is missing).
        const FILES: &[(&str, &str, &[u8])] = &[
            $(($name, $type, include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/console/", $name)))),*
        ];
    };
}

assets! {
    "index.html" => "text/html; charset=utf-8",
    "app.css" => "text/css; charset=utf-8",
    "favicon.svg" => "image/svg+xml",
    "app.js" => "text/javascript; charset=utf-8",
    "api.js" => "text/javascript; charset=utf-8",
    "router.js" => "text/javascript; charset=utf-8",
    "dom.js" => "text/javascript; charset=utf-8",
    "format.js" => "text/javascript; charset=utf-8",
    "chart.js" => "text/javascript; charset=utf-8",
    "sse.js" => "text/javascript; charset=utf-8",
    "pages/signin.js" => "text/javascript; charset=utf-8",
    "pages/overview.js" => "text/javascript; charset=utf-8",
    "pages/gateways.js" => "text/javascript; charset=utf-8",
    "pages/applications.js" => "text/javascript; charset=utf-8",
    "pages/device.js" => "text/javascript; charset=utf-8",
    "pages/device_profiles.js" => "text/javascript; charset=utf-8",
}

static ASSETS: LazyLock<HashMap<&'static str, Asset>> =
    LazyLock::new(|| FILES.iter().map(|&(name, content_type, bytes)| (name, Asset { content_type, bytes })).collect());

/// Strong validators, computed once: the bytes never change while the process runs.
static ETAGS: LazyLock<HashMap<&'static str, HeaderValue>> = LazyLock::new(|| {
    FILES
        .iter()
        .map(|&(name, _, bytes)| {
            let digest = Sha256::digest(bytes);
            let tag = format!("\"{}\"", hex::encode(&digest[..12]));
            (name, HeaderValue::from_str(&tag).expect("hex is a valid header value"))
        })
        .collect()
});

/// `/` and `/console/{*file}`, without state; mounted outside the bearer layer.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new().route("/", get(index)).route("/console/{*file}", get(asset))
}

async fn index(headers: HeaderMap) -> Response {
    serve("index.html", &headers)
}

async fn asset(Path(file): Path<String>, headers: HeaderMap) -> Response {
    // The page itself is only served at `/`, so that it has one address.
    if file == "index.html" {
        return StatusCode::NOT_FOUND.into_response();
    }
    serve(&file, &headers)
}

fn serve(name: &str, request: &HeaderMap) -> Response {
    let (Some(asset), Some(etag)) = (ASSETS.get(name), ETAGS.get(name)) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let fresh =
        request.get(header::IF_NONE_MATCH).is_some_and(|v| v.as_bytes().split(|&b| b == b',').any(|t| t.trim_ascii() == etag.as_bytes()));
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, HeaderValue::from_static(asset.content_type))], asset.bytes).into_response()
    };
    let h = response.headers_mut();
    h.insert(header::ETAG, etag.clone());
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    const JS: &str = "text/javascript; charset=utf-8";

    fn files_on_disk(dir: &std::path::Path, prefix: &str, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).expect("console dir") {
            let entry = entry.expect("entry");
            let name = format!("{prefix}{}", entry.file_name().to_string_lossy());
            if entry.file_type().expect("type").is_dir() {
                files_on_disk(&entry.path(), &format!("{name}/"), out);
            } else {
                out.push(name);
            }
        }
    }

    #[test]
    fn every_file_of_the_console_directory_is_embedded() {
        let mut on_disk = Vec::new();
        files_on_disk(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("console"), "", &mut on_disk);
        on_disk.sort();
        let mut embedded: Vec<String> = FILES.iter().map(|(n, _, _)| n.to_string()).collect();
        embedded.sort();
        assert_eq!(on_disk, embedded);
    }

    #[test]
    fn content_types_follow_the_extension() {
        for (name, content_type, _) in FILES {
            let expected = match name.rsplit('.').next() {
                Some("js") => JS,
                Some("css") => "text/css; charset=utf-8",
                Some("html") => "text/html; charset=utf-8",
                Some("svg") => "image/svg+xml",
                other => panic!("{name}: no content type for {other:?}"),
            };
            assert_eq!(*content_type, expected, "{name}");
        }
    }

    async fn get_path(path: &str, if_none_match: Option<&str>) -> Response {
        let mut request = Request::get(path);
        if let Some(tag) = if_none_match {
            request = request.header(header::IF_NONE_MATCH, tag);
        }
        router::<()>().oneshot(request.body(Body::empty()).unwrap()).await.unwrap()
    }

    #[tokio::test]
    async fn an_unchanged_asset_answers_304_to_its_etag() {
        let first = get_path("/console/app.js", None).await;
        assert_eq!(first.status(), StatusCode::OK);
        let etag = first.headers()[header::ETAG].to_str().unwrap().to_string();
        let again = get_path("/console/app.js", Some(&format!("\"other\", {etag}"))).await;
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(again.headers()[header::CACHE_CONTROL], "no-cache");
        let stale = get_path("/console/app.js", Some("\"other\"")).await;
        assert_eq!(stale.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn paths_outside_the_embedded_files_are_not_found() {
        for path in ["/console/nope.js", "/console/../Cargo.toml", "/console/pages", "/console/index.html", "/console/"] {
            assert_eq!(get_path(path, None).await.status(), StatusCode::NOT_FOUND, "{path}");
        }
    }
}
