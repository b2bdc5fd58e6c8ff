//! The trading page (`web/`): static files embedded in the binary (or read from a directory while
//! developing the page), served under a configurable path, `/app/` by default. The WebSocket API
//! lives at `/`, so the page cannot: a browser asking for `/` is redirected to the page
//! ([`redirect_browsers_at_root`]) and upgrade requests go to the WebSocket handler. See
//! docs/web.md.

use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use std::path::PathBuf;
use std::sync::Arc;

/// One embedded file of the page: its path under the page's root, its media type and contents.
struct Asset {
    path: &'static str,
    media_type: &'static str,
    bytes: &'static [u8],
}

macro_rules! assets {
    ($($path:literal => $media_type:literal),+ $(,)?) => {
        &[$(Asset { path: $path, media_type: $media_type, bytes: include_bytes!(concat!("../../web/", $path)) }),+]
    };
}

/// Every file of the page. Only these names are ever served, from the binary or from disk.
static ASSETS: &[Asset] = assets!(
    "index.html" => "text/html; charset=utf-8",
    "style.css" => "text/css; charset=utf-8",
    "js/app.js" => "text/javascript; charset=utf-8",
    "js/api.js" => "text/javascript; charset=utf-8",
    "js/book.js" => "text/javascript; charset=utf-8",
    "js/chart.js" => "text/javascript; charset=utf-8",
    "js/decimal.js" => "text/javascript; charset=utf-8",
    "js/format.js" => "text/javascript; charset=utf-8",
    "js/ws.js" => "text/javascript; charset=utf-8",
);

/// The page may load its own files and talk to this server (REST and WebSocket) only: no CDN,
/// no inline script, no framing.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; \
     style-src 'self'; script-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'";

/// Where and how the page is served.
#[derive(Debug, Clone)]
pub struct WebConfig {
    /// URL path of the page, without a trailing slash (`/app`); the page is at `<path>/`.
    pub path: String,
    /// Serve the files from this directory (the repository's `web/`) instead of the embedded
    /// copies, so edits show without a rebuild. Only the embedded file names are served.
    pub dir: Option<PathBuf>,
    /// Whether the server runs in demo mode (the page then offers the test-funds faucet).
    pub demo: bool,
}

impl WebConfig {
    /// The page's path normalised: a leading slash, no trailing slash, never empty or `/`.
    ///
    /// # Errors
    /// A path with characters other than letters, digits, `-`, `_`, `.` and `/`, or `/` alone.
    pub fn normalised_path(path: &str) -> Result<String, String> {
        let trimmed = path.trim_matches('/');
        let valid = !trimmed.is_empty()
            && trimmed.split('/').all(|segment| {
                !segment.is_empty()
                    && segment != "."
                    && segment != ".."
                    && segment.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            });
        if valid {
            Ok(format!("/{trimmed}"))
        } else {
            Err(format!("invalid web page path {path:?}: use e.g. \"/app\""))
        }
    }
}

/// The page's routes: `<path>` (redirect), `<path>/` (index.html), `<path>/config.json` (what the
/// server offers: demo mode) and `<path>/<file>` for the embedded files. Merge into the server's
/// router; sets no fallback.
pub fn router(config: WebConfig) -> Router {
    let config = Arc::new(config);
    let base = config.path.clone();
    Router::new()
        .route(
            &base,
            get(
                |State(config): State<Arc<WebConfig>>| async move { Redirect::permanent(&format!("{}/", config.path)) },
            ),
        )
        .route(
            &format!("{base}/"),
            get(|State(config): State<Arc<WebConfig>>| async move { serve(&config, "index.html").await }),
        )
        .route(&format!("{base}/config.json"), get(page_config))
        .route(
            &format!("{base}/{{*file}}"),
            get(|State(config): State<Arc<WebConfig>>, UrlPath(file): UrlPath<String>| async move {
                serve(&config, &file).await
            }),
        )
        .with_state(config)
}

/// The answer to a browser's `GET /`: a redirect to the page.
pub fn root_redirect(page_path: &str) -> Response {
    Redirect::temporary(&format!("{page_path}/")).into_response()
}

/// Wraps `router` (which serves the WebSocket API at `/`) so that a `GET /` without
/// `Upgrade: websocket` (a browser) is redirected to the page at `page_path`; every other request
/// goes through untouched.
pub fn redirect_browsers_at_root(router: Router, page_path: &str) -> Router {
    let page: Arc<str> = page_path.into();
    router.layer(axum::middleware::from_fn(move |request: axum::extract::Request, next: axum::middleware::Next| {
        let page = page.clone();
        async move {
            if request.uri().path() == "/"
                && request.method() == axum::http::Method::GET
                && !is_websocket_upgrade(request.headers())
            {
                root_redirect(&page)
            } else {
                next.run(request).await
            }
        }
    }))
}

/// True when a request asks to upgrade to a WebSocket (so `/` belongs to the WebSocket API).
pub fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.eq_ignore_ascii_case("websocket"))
}

async fn page_config(State(config): State<Arc<WebConfig>>) -> Response {
    let body = format!("{{\"demo\":{}}}", config.demo);
    with_headers(body.into_bytes().into(), "application/json")
}

async fn serve(config: &WebConfig, file: &str) -> Response {
    let Some(asset) = ASSETS.iter().find(|asset| asset.path == file) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let bytes: axum::body::Bytes = match &config.dir {
        None => asset.bytes.into(),
        // The name comes from the fixed table above, never from the request: no path traversal.
        Some(dir) => match tokio::task::spawn_blocking({
            let file = dir.join(asset.path);
            move || std::fs::read(file)
        })
        .await
        .map_err(std::io::Error::other)
        .and_then(|read| read)
        {
            Ok(bytes) => bytes.into(),
            Err(error) => {
                tracing::warn!(%error, file = asset.path, "cannot read the page's file from disk");
                return StatusCode::NOT_FOUND.into_response();
            }
        },
    };
    with_headers(bytes, asset.media_type)
}

fn with_headers(bytes: axum::body::Bytes, media_type: &'static str) -> Response {
    let mut response = bytes.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(media_type));
    // Small files, and a page that must never run a stale module against a newer server.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_paths_are_normalised_and_validated() {
        assert_eq!(WebConfig::normalised_path("/app").unwrap(), "/app");
        assert_eq!(WebConfig::normalised_path("app/").unwrap(), "/app");
        assert_eq!(WebConfig::normalised_path("/trade/v1").unwrap(), "/trade/v1");
        for bad in ["/", "", "/a b", "/../etc", "/a//b", "/{x}"] {
            assert!(WebConfig::normalised_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn every_module_the_page_imports_is_embedded() {
        // A module missing from ASSETS would 404 in the browser: check the imports statically.
        for asset in ASSETS.iter().filter(|asset| asset.path.ends_with(".js")) {
            let text = std::str::from_utf8(asset.bytes).unwrap();
            for line in text.lines().filter(|line| line.starts_with("import ")) {
                let module = line.split('\'').nth(1).expect("import with a quoted path");
                let path = format!("js/{}", module.trim_start_matches("./"));
                assert!(ASSETS.iter().any(|a| a.path == path), "{} imports {module}, not embedded", asset.path);
            }
        }
        let index = std::str::from_utf8(ASSETS[0].bytes).unwrap();
        for reference in ["./style.css", "./js/app.js"] {
            assert!(index.contains(reference), "index.html does not load {reference}");
        }
        assert!(!index.contains("http://") && !index.contains("https://"), "the page loads nothing external");
    }

    #[test]
    fn upgrade_requests_are_recognised() {
        let mut headers = HeaderMap::new();
        assert!(!is_websocket_upgrade(&headers));
        headers.insert(header::UPGRADE, HeaderValue::from_static("WebSocket"));
        assert!(is_websocket_upgrade(&headers));
    }
}
