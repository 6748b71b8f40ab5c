//! The middleware in front of every route: the `Host` check and the request counters.
//!
//! The router puts [`guard`] on each route with the route's [`Route`] label, beside its
//! path. The layer sits on the route's GET handler only (a wrong method still gets
//! axum's 405, neither checked nor counted). A request whose `Host` is not a loopback
//! name (unless remote serving was allowed) gets a 403 and is not counted; every other
//! one is counted by route for `/metrics`. A request a browser makes on behalf of another
//! site (`Sec-Fetch-Site` other than same-origin or none, or an `Origin` that is not this
//! gateway: a cross-site page embedding `<video src=http://127.0.0.1:8090/cam/x/live.mp4>`
//! or fetching the API) gets a 403 too, so only the user, a player or a page the gateway
//! served itself can start streams. The fallback (404) answers any `Host`: it reveals
//! nothing. With viewer credentials on ([`super::users`]), every route but the fallback
//! needs them (401 otherwise, a wrong token audited as `refused-gateway`); live video and
//! snapshots of cameras the viewer was not given, and `/metrics` without `*`, are 403s;
//! a viewer's first request is audited as `gateway-viewer`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::Response;

use super::{text, Shared};

/// What a request asked for, as `camesh_http_requests_total{route=...}` counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Route {
    Page,
    Api,
    Live,
    Snapshot,
    Metrics,
    NotFound,
}

impl Route {
    /// Every route, in the order `/metrics` lists them.
    pub(super) const ALL: [Route; 6] = [
        Route::Page,
        Route::Api,
        Route::Live,
        Route::Snapshot,
        Route::Metrics,
        Route::NotFound,
    ];

    pub(super) fn label(self) -> &'static str {
        match self {
            Route::Page => "page",
            Route::Api => "api",
            Route::Live => "live",
            Route::Snapshot => "snapshot",
            Route::Metrics => "metrics",
            Route::NotFound => "not_found",
        }
    }

    /// Whether the route serves anything worth protecting from a foreign `Host`.
    fn checks_host(self) -> bool {
        self != Route::NotFound
    }
}

/// Requests by route, for `/metrics` (counters: they only go up).
#[derive(Debug, Default)]
pub(super) struct RouteCounters([AtomicU64; Route::ALL.len()]);

impl RouteCounters {
    fn count(&self, route: Route) {
        self.0[route as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn get(&self, route: Route) -> u64 {
        self.0[route as usize].load(Ordering::Relaxed)
    }
}

/// What the middleware of one route holds.
#[derive(Debug, Clone)]
pub(super) struct Guard {
    shared: Arc<Shared>,
    route: Route,
}

impl Guard {
    pub(super) fn new(shared: &Arc<Shared>, route: Route) -> Self {
        Guard {
            shared: shared.clone(),
            route,
        }
    }
}

/// The middleware (`axum::middleware::from_fn_with_state` with a [`Guard`]).
pub(super) async fn guard(State(g): State<Guard>, req: Request, next: Next) -> Response {
    if g.route.checks_host() && !host_allowed(g.shared.opts.allow_remote, req.headers()) {
        return forbidden_host();
    }
    if g.route.checks_host() && !same_origin(req.headers()) {
        return text(
            StatusCode::FORBIDDEN,
            "this gateway does not serve requests made by other web sites",
        );
    }
    let mut req = req;
    if let (Some(users), true) = (&g.shared.opts.users, g.route.checks_host()) {
        let viewer = match users.authenticate(req.headers()) {
            Ok(v) => v.clone(),
            Err(why) => {
                if why != super::users::Unauthenticated::Missing {
                    g.shared
                        .node
                        .reach
                        .trust()
                        .audit
                        .record("refused-gateway", "", "", &why.to_string());
                }
                return unauthorized(&why.to_string());
            }
        };
        if let Some(refusal) = viewer_refusal(&viewer, g.route, req.uri().path()) {
            return text(StatusCode::FORBIDDEN, refusal);
        }
        let first = g
            .shared
            .audited_viewers
            .lock()
            .map(|mut seen| seen.insert(viewer.name.clone()))
            .unwrap_or(false);
        if first {
            g.shared.node.reach.trust().audit.record(
                "gateway-viewer",
                "",
                "",
                &format!("{} (cameras {})", viewer.name, viewer.cameras.join(",")),
            );
        }
        req.extensions_mut().insert(Viewer(viewer));
    }
    g.shared.requests.count(g.route);
    next.run(req).await
}

/// The authenticated viewer of a request (with viewer credentials on).
#[derive(Debug, Clone)]
pub(super) struct Viewer(pub super::users::GatewayUser);

/// Why `viewer` may not have what it asked for: another camera's video, or `/metrics`
/// (which names every camera) without `*`.
fn viewer_refusal(viewer: &super::users::GatewayUser, route: Route, path: &str) -> Option<String> {
    match route {
        Route::Live | Route::Snapshot => {
            let camera = path.split('/').nth(2).unwrap_or_default();
            (!viewer.may_watch(camera)).then(|| format!("viewer {} may not watch this camera", viewer.name))
        }
        Route::Metrics => (!viewer.sees_all()).then(|| format!("viewer {} may not read the metrics", viewer.name)),
        Route::Page | Route::Api | Route::NotFound => None,
    }
}

fn unauthorized(why: &str) -> Response {
    let mut r = text(
        StatusCode::UNAUTHORIZED,
        format!("this gateway needs a viewer's name and token ({why})"),
    );
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Basic realm=\"camesh\", charset=\"UTF-8\""),
    );
    r
}

/// Loopback `Host` headers only (unless remote serving was allowed): a web page on
/// another origin cannot reach the gateway through DNS rebinding.
fn host_allowed(allow_remote: bool, headers: &HeaderMap) -> bool {
    if allow_remote {
        return true;
    }
    headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .is_some_and(host_is_loopback)
}

/// Whether a browser made this request for a page of this gateway or the user (fetch
/// metadata `same-origin`/`none`, or none at all: players and scripts send none), and
/// any `Origin` is this gateway itself.
fn same_origin(headers: &HeaderMap) -> bool {
    let value = |h: &str| headers.get(h).and_then(|v| v.to_str().ok());
    if !matches!(value("sec-fetch-site"), None | Some("same-origin") | Some("none")) {
        return false;
    }
    match value(header::ORIGIN.as_str()) {
        None => true,
        Some(origin) => {
            let host = value(header::HOST.as_str()).unwrap_or("");
            origin
                .strip_prefix("http://")
                .or_else(|| origin.strip_prefix("https://"))
                .is_some_and(|o| !host.is_empty() && o == host)
        }
    }
}

/// Whether a `Host` header value names this machine.
fn host_is_loopback(host: &str) -> bool {
    let name = if let Some(v6) = host.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    matches!(name, "localhost" | "127.0.0.1" | "::1") || name.ends_with(".localhost")
}

fn forbidden_host() -> Response {
    text(
        StatusCode::FORBIDDEN,
        "this gateway answers only to localhost addresses",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_made_for_other_sites_are_refused() {
        let h = |pairs: &[(&'static str, &'static str)]| {
            let mut m = HeaderMap::new();
            for (k, v) in pairs {
                m.insert(*k, v.parse().expect("value"));
            }
            m
        };
        assert!(
            same_origin(&h(&[("host", "127.0.0.1:8090")])),
            "players send no fetch metadata"
        );
        assert!(same_origin(&h(&[
            ("host", "127.0.0.1:8090"),
            ("sec-fetch-site", "none")
        ])));
        assert!(same_origin(&h(&[
            ("host", "127.0.0.1:8090"),
            ("sec-fetch-site", "same-origin"),
            ("origin", "http://127.0.0.1:8090")
        ])));
        for bad in [
            h(&[("host", "127.0.0.1:8090"), ("sec-fetch-site", "cross-site")]),
            h(&[("host", "127.0.0.1:8090"), ("sec-fetch-site", "same-site")]),
            h(&[("host", "127.0.0.1:8090"), ("origin", "http://evil.example")]),
            h(&[("host", "127.0.0.1:8090"), ("origin", "http://127.0.0.1:3000")]),
            h(&[("host", "127.0.0.1:8090"), ("origin", "null")]),
        ] {
            assert!(!same_origin(&bad), "{bad:?}");
        }
    }

    #[test]
    fn only_loopback_hosts_are_answered() {
        for host in [
            "127.0.0.1:8080",
            "localhost:1",
            "[::1]:9",
            "localhost",
            "cams.localhost:80",
        ] {
            assert!(host_is_loopback(host), "{host}");
        }
        for host in [
            "evil.example:8080",
            "127.0.0.1.evil.example",
            "192.168.1.2:80",
            "",
            "[::2]:80",
        ] {
            assert!(!host_is_loopback(host), "{host}");
        }
    }

    #[test]
    fn every_route_has_its_own_counter() {
        let c = RouteCounters::default();
        for (i, r) in Route::ALL.into_iter().enumerate() {
            assert_eq!(r as usize, i, "ALL is in declaration order");
            c.count(r);
            c.count(Route::Live);
        }
        let counts: Vec<u64> = Route::ALL.into_iter().map(|r| c.get(r)).collect();
        assert_eq!(counts, vec![1, 1, 7, 1, 1, 1]);
    }
}
