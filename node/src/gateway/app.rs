//! `GET /app/...`: the web app's static files (`web/dist`), when the gateway is given
//! their folder ([`super::GatewayOptions::web_app`]).
//!
//! The page is a fleet member of its own (its key, certificate and grants; it decrypts
//! in the browser), so these are only its files: the gateway hands out no video through
//! them. Only plain file names in that folder are served (no sub-folders, no dot files,
//! no `..`), at most [`MAX_FILE`] bytes each, with the page's strict CSP as a header too.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};

use super::{text, Shared};

/// Largest file served (the bundle is well under a megabyte).
pub const MAX_FILE: u64 = 16 * 1024 * 1024;

/// The page's own policy (web/index.html carries it as a meta tag).
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; media-src blob:; \
connect-src 'self'; manifest-src 'self'; worker-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Whether `name` is a file name the app folder may serve.
pub fn servable_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// The content type of an app file, by its extension; `None` for kinds the app has none of.
pub fn content_type(name: &str) -> Option<&'static str> {
    let ext = name.rsplit_once('.').map(|(_, e)| e)?;
    Some(match ext {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" => "application/json",
        "webmanifest" => "application/manifest+json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "wasm" => "application/wasm",
        "map" => "application/json",
        _ => return None,
    })
}

/// `GET /app`: to `/app/` (relative file names in index.html resolve under it).
pub(super) async fn app_root() -> Response {
    Redirect::permanent("/app/").into_response()
}

/// `GET /app/`: index.html.
pub(super) async fn app_index(State(s): State<Arc<Shared>>) -> Response {
    serve(s.opts.web_app.as_deref(), "index.html").await
}

/// `GET /app/<file>`.
pub(super) async fn app_file(
    State(s): State<Arc<Shared>>,
    axum::extract::Path(name): axum::extract::Path<String>,
) -> Response {
    serve(s.opts.web_app.as_deref(), &name).await
}

async fn serve(root: Option<&Path>, name: &str) -> Response {
    let Some(root) = root else {
        return text(
            StatusCode::NOT_FOUND,
            "this gateway serves no web app (start it with the web app's folder, e.g. `mesh view --web-app web/dist`)",
        );
    };
    let (true, Some(kind)) = (servable_name(name), content_type(name)) else {
        return text(StatusCode::NOT_FOUND, "no such file in the web app");
    };
    let path: PathBuf = root.join(name);
    let bytes = match read_bounded(&path).await {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return text(StatusCode::NOT_FOUND, "no such file in the web app")
        }
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "web app file unreadable");
            return text(StatusCode::INTERNAL_SERVER_ERROR, "web app file unreadable");
        }
    };
    // The service worker and index.html must be revalidated so an update is seen; the
    // rest is revalidated too (the files keep their names across builds).
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "no-cache"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        bytes,
    )
        .into_response()
}

async fn read_bounded(path: &Path) -> std::io::Result<Vec<u8>> {
    let meta = tokio::fs::metadata(path).await?;
    if !meta.is_file() {
        return Err(std::io::ErrorKind::NotFound.into());
    }
    if meta.len() > MAX_FILE {
        return Err(std::io::Error::other(format!("over {MAX_FILE} bytes")));
    }
    tokio::fs::read(path).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_names_in_the_folder() {
        for ok in [
            "index.html",
            "app.js",
            "sw.js",
            "manifest.json",
            "icon.svg",
            "style.css",
        ] {
            assert!(servable_name(ok), "{ok}");
            assert!(content_type(ok).is_some(), "{ok}");
        }
        for bad in [
            "",
            "..",
            ".env",
            "../x.js",
            "a/b.js",
            "a\\b.js",
            "%2e%2e",
            "x y.js",
            &"a".repeat(65),
        ] {
            assert!(!servable_name(bad), "{bad}");
        }
        assert_eq!(content_type("Cargo.toml"), None);
        assert_eq!(content_type("noext"), None);
    }
}
