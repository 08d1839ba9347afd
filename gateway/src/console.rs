//! The web console at `/console`: a single page (vanilla JS modules, hls.js and
//! tus-js-client) built into the binary and served by every gateway, unless
//! `console = false`. It holds no privilege of its own: every page calls the same public
//! APIs with the credential the user signed in with (kept in the tab's sessionStorage).
//!
//! Served on a path no object can shadow (objects live under `/v1/o/`), with a strict
//! CSP (only this origin's scripts; no inline script or style; media and images also from
//! `blob:`, for the player and images fetched with the API key), no framing, no referrer.

use std::sync::{Arc, OnceLock};

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;

use crate::Gateway;

/// One file of the console.
struct Asset {
    path: &'static str,
    mime: &'static str,
    body: &'static [u8],
}

macro_rules! asset {
    ($path:literal, $mime:literal) => {
        Asset {
            path: $path,
            mime: $mime,
            body: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/console/", $path)),
        }
    };
}

/// Every file, as built into the binary.
const ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("style.css", "text/css; charset=utf-8"),
    asset!("app.js", "text/javascript; charset=utf-8"),
    asset!("api.js", "text/javascript; charset=utf-8"),
    asset!("ui.js", "text/javascript; charset=utf-8"),
    asset!("chart.js", "text/javascript; charset=utf-8"),
    asset!("pages/cluster.js", "text/javascript; charset=utf-8"),
    asset!("pages/buckets.js", "text/javascript; charset=utf-8"),
    asset!("pages/object.js", "text/javascript; charset=utf-8"),
    asset!("pages/jobs.js", "text/javascript; charset=utf-8"),
    asset!("vendor/hls.min.js", "text/javascript; charset=utf-8"),
    asset!("vendor/tus.min.js", "text/javascript; charset=utf-8"),
];

/// The console's Content-Security-Policy. `blob:` media and images: the player's
/// MediaSource and images fetched with the API key; `data:` images: the empty favicon.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' blob: data:; media-src 'self' blob:; connect-src 'self'; \
     base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Strong ETags of the assets (blake3 of their bytes), computed once.
fn etags() -> &'static Vec<String> {
    static ETAGS: OnceLock<Vec<String>> = OnceLock::new();
    ETAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|a| format!("\"{}\"", &blake3::hash(a.body).to_hex()[..32]))
            .collect()
    })
}

/// The console's routes.
pub fn router() -> Router<Arc<Gateway>> {
    Router::new()
        .route(
            "/console",
            get(|| async { Redirect::permanent("/console/") }),
        )
        .route(
            "/console/",
            get(|h: HeaderMap| async move { serve("index.html", &h) }),
        )
        .route(
            "/console/{*path}",
            get(|Path(path): Path<String>, h: HeaderMap| async move { serve(&path, &h) }),
        )
}

fn serve(path: &str, req: &HeaderMap) -> Response {
    let Some(i) = ASSETS.iter().position(|a| a.path == path) else {
        return (StatusCode::NOT_FOUND, "no such console file\n").into_response();
    };
    let asset = &ASSETS[i];
    let etag = &etags()[i];
    let fresh = req
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let mut resp = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, asset.mime)], asset.body).into_response()
    };
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(etag) {
        h.insert(header::ETAG, v);
    }
    // Revalidated on every load (a 304 is cheap), so a new gateway's console is never
    // mixed with an old one's modules.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_module_the_pages_import_is_built_in() {
        for a in ASSETS.iter().filter(|a| a.path.ends_with(".js")) {
            let text = std::str::from_utf8(a.body).unwrap();
            for line in text.lines().filter(|l| l.starts_with("import ")) {
                let target = line
                    .rsplit("from \"")
                    .next()
                    .unwrap()
                    .trim_end_matches("\";");
                let base = a.path.rsplit_once('/').map_or("", |(d, _)| d);
                let mut parts: Vec<&str> = base.split('/').filter(|p| !p.is_empty()).collect();
                for seg in target.split('/') {
                    match seg {
                        "." => {}
                        ".." => {
                            parts.pop();
                        }
                        s => parts.push(s),
                    }
                }
                let resolved = parts.join("/");
                assert!(
                    ASSETS.iter().any(|x| x.path == resolved),
                    "{} imports {target} ({resolved}), which is not built in",
                    a.path
                );
            }
        }
    }
}
