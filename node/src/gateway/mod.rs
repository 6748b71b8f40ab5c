//! The local HTTP gateway: the fleet's cameras for ordinary players and browsers.
//!
//! A [`Gateway`] runs on any node (`mesh view` starts one on the laptop's mesh peer)
//! and serves, on 127.0.0.1 by default:
//!
//! | route | what |
//! | --- | --- |
//! | `GET /` | a page listing the fleet's cameras, each playing live in a `<video>` (fragmented MP4 through Media Source Extensions) |
//! | `GET /api/cameras` | the cameras as JSON (id, name, size, profiles, peer, live stream state) |
//! | `GET /cam/<id>/live.mp4[?profile=sub]` | the camera live as fragmented MP4 (VLC, ffplay, ffprobe, browsers), starting at a keyframe |
//! | `GET /cam/<id>/snapshot.jpg[?profile=sub]` | the latest keyframe as JPEG |
//! | `GET /metrics` | Prometheus text: streams, bitrate, latency, skips, gaps, peers, paths |
//! | `GET /app/` | the web app's static files (`web/dist`), when given their folder ([`app`]) |
//!
//! Video reaches the gateway through [`tap::Taps`]: one subscription per camera, shared by
//! every HTTP client and snapshot, started on demand and stopped when unused. Everything
//! is bounded: cameras watched at once, clients per camera, frames a slow client may lag
//! (then it skips to the next keyframe), concurrent snapshot decodes. Unknown cameras and
//! paths are 404s.
//!
//! On loopback the gateway hands out decrypted video to whoever runs on the machine, and
//! answers only requests whose `Host` is a loopback name (a web page cannot reach it
//! through DNS rebinding). It listens elsewhere only when told to
//! ([`GatewayOptions::allow_remote`]), and then only with viewer credentials
//! ([`users`]): each request carries a viewer's own name and token, and sees only that
//! viewer's cameras.
//!
//! The router maps each route to its handler with `guard` in front (the `Host` check
//! and the request counters). Files: `page`, `cameras` (`/api/cameras`), `live`
//! over [`fmp4`] (in `media`), [`snapshot`], [`metrics`] over [`exposition`]; [`tap`] feeds them all.

mod app;
mod cameras;
pub mod exposition;
pub use crate::media::fmp4;
mod guard;
mod live;
pub mod metrics;
mod page;
pub mod snapshot;
pub mod tap;
pub mod users;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::handler::Handler;
use axum::http::{header, StatusCode};
use axum::middleware::from_fn_with_state;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use camesh_proto::pb;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::ids::valid_id;
use crate::reach::Reach;
use crate::stream::hub::Hubs;
use crate::stream::server::StreamSlots;
use guard::{Route, RouteCounters};
use tap::{Tap, TapError, Taps};
use users::GatewayUsers;

/// How a gateway serves.
#[derive(Debug, Clone)]
pub struct GatewayOptions {
    /// Where to listen; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Serve on a non-loopback address; needs [`Self::users`].
    pub allow_remote: bool,
    /// Viewers and their cameras: when set, every request needs a viewer's own
    /// credentials ([`users`]). Required with `allow_remote`.
    pub users: Option<Arc<GatewayUsers>>,
    /// Cameras watched at once.
    pub max_cameras: usize,
    /// HTTP live clients per camera.
    pub max_clients_per_camera: usize,
    /// A camera nobody has asked for this long is no longer watched.
    pub idle: Duration,
    /// How long a request waits for a camera's first keyframe.
    pub start_timeout: Duration,
    /// How often the camera list is refreshed from the mesh.
    pub discover_every: Duration,
    /// The web app's folder (`web/dist`), served under `/app/`; `None`: not served.
    pub web_app: Option<std::path::PathBuf>,
}

impl Default for GatewayOptions {
    fn default() -> Self {
        GatewayOptions {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            allow_remote: false,
            users: None,
            max_cameras: 32,
            max_clients_per_camera: 8,
            idle: Duration::from_secs(30),
            start_timeout: Duration::from_secs(15),
            discover_every: Duration::from_secs(10),
            web_app: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error(
        "refusing to serve decrypted video on {0}: it is not a loopback address (allow it explicitly if you mean it)"
    )]
    NotLoopback(SocketAddr),
    #[error(
        "refusing to serve decrypted video on {0} without viewer credentials: add a viewer with `mesh view-user add <name> --cameras <ids|*>`"
    )]
    NoViewers(SocketAddr),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// What the gateway needs of its node: the way to other nodes' cameras, this node's own
/// camera hubs and stream count, its fleet, and its life. `NodeHandle` converts into it.
#[derive(Debug, Clone)]
pub struct GatewayNode {
    pub reach: Reach,
    pub hubs: Arc<Hubs>,
    pub slots: Arc<StreamSlots>,
    pub fleet_id: String,
    pub shutdown: CancellationToken,
}

impl GatewayNode {
    fn peer_id(&self) -> libp2p::PeerId {
        self.reach.peer_id()
    }

    fn is_shut_down(&self) -> bool {
        self.shutdown.is_cancelled()
    }

    /// Whether the fleet has camera `id` (this node's or a known peer's).
    fn knows(&self, id: &str) -> bool {
        self.hubs.get(id).is_some() || !self.reach.directory().lookup(id).is_empty()
    }
}

#[derive(Debug)]
struct Shared {
    node: GatewayNode,
    taps: Arc<Taps>,
    opts: GatewayOptions,
    /// Snapshot decodes at once.
    snapshots: Semaphore,
    requests: RouteCounters,
    started: Instant,
    /// Viewers whose first request was audited (once per viewer per gateway run).
    audited_viewers: std::sync::Mutex<std::collections::HashSet<String>>,
}

/// A running gateway; stops with [`Gateway::shutdown`] or when the node shuts down.
#[derive(Debug)]
pub struct Gateway {
    addr: SocketAddr,
    cancel: CancellationToken,
    taps: Arc<Taps>,
    task: tokio::task::JoinHandle<()>,
}

impl Gateway {
    /// Binds and starts serving.
    pub async fn start(node: impl Into<GatewayNode>, opts: GatewayOptions) -> Result<Gateway, GatewayError> {
        let node: GatewayNode = node.into();
        if !opts.listen.ip().is_loopback() && !opts.allow_remote {
            return Err(GatewayError::NotLoopback(opts.listen));
        }
        if opts.allow_remote && opts.users.as_ref().is_none_or(|u| u.is_empty()) {
            return Err(GatewayError::NoViewers(opts.listen));
        }
        let listener = tokio::net::TcpListener::bind(opts.listen)
            .await
            .map_err(|source| GatewayError::Bind {
                addr: opts.listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| GatewayError::Bind {
            addr: opts.listen,
            source,
        })?;
        let taps = Taps::new(node.clone(), opts.max_cameras, opts.idle);
        let shared = Arc::new(Shared {
            node: node.clone(),
            taps: taps.clone(),
            opts: opts.clone(),
            snapshots: Semaphore::new(2),
            requests: RouteCounters::default(),
            started: Instant::now(),
            audited_viewers: std::sync::Mutex::new(std::collections::HashSet::new()),
        });
        let cancel = CancellationToken::new();
        tokio::spawn(discover_loop(node.clone(), opts.discover_every, cancel.clone()));
        let app = router(shared);
        let stop = cancel.clone();
        let node_down = node.clone();
        let task_taps = taps.clone();
        let task = tokio::spawn(async move {
            let shutdown = async move {
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = wait_node_down(&node_down) => {}
                }
                task_taps.stop_all();
            };
            if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
                tracing::warn!(error = %e, "gateway stopped");
            }
        });
        tracing::info!(%addr, "gateway listening");
        Ok(Gateway {
            addr,
            cancel,
            taps,
            task,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<addr>/`.
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    pub fn taps(&self) -> &Arc<Taps> {
        &self.taps
    }

    /// Stops serving; live streams end.
    pub fn shutdown(&self) {
        self.cancel.cancel();
        self.taps.stop_all();
    }

    /// Waits until the server has stopped (after [`Gateway::shutdown`]).
    pub async fn stopped(self) {
        let _ = self.task.await;
    }
}

async fn wait_node_down(node: &GatewayNode) {
    node.shutdown.cancelled().await;
}

/// Keeps the directory fresh so the page lists cameras as they appear.
async fn discover_loop(node: GatewayNode, every: Duration, cancel: CancellationToken) {
    loop {
        tokio::select! {
            _ = node.reach.discover_cameras(Duration::from_secs(2)) => {}
            _ = cancel.cancelled() => return,
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = cancel.cancelled() => return,
        }
        if node.is_shut_down() {
            return;
        }
    }
}

/// Every route with its [`guard::Route`] label; the same middleware in front of each.
fn router(shared: Arc<Shared>) -> Router {
    let guarded = |route| from_fn_with_state(guard::Guard::new(&shared, route), guard::guard);
    Router::new()
        .route("/", get(page::page).route_layer(guarded(Route::Page)))
        .route("/index.html", get(page::page).route_layer(guarded(Route::Page)))
        .route(
            "/api/cameras",
            get(cameras::api_cameras).route_layer(guarded(Route::Api)),
        )
        .route(
            "/cam/{id}/live.mp4",
            get(live::live_mp4).route_layer(guarded(Route::Live)),
        )
        .route(
            "/cam/{id}/snapshot.jpg",
            get(snapshot::snapshot_jpg).route_layer(guarded(Route::Snapshot)),
        )
        .route("/app", get(app::app_root).route_layer(guarded(Route::Page)))
        .route("/app/", get(app::app_index).route_layer(guarded(Route::Page)))
        .route("/app/{name}", get(app::app_file).route_layer(guarded(Route::Page)))
        .route(
            "/metrics",
            get(metrics::metrics_text).route_layer(guarded(Route::Metrics)),
        )
        .fallback(not_found.layer(guarded(Route::NotFound)))
        .with_state(shared)
}

async fn not_found() -> Response {
    text(
        StatusCode::NOT_FOUND,
        "not found: try /, /api/cameras, /cam/<id>/live.mp4, /cam/<id>/snapshot.jpg, /metrics or /app/",
    )
}

fn text(status: StatusCode, msg: impl Into<String>) -> Response {
    let mut body = msg.into();
    body.push('\n');
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}

#[derive(Debug, serde::Deserialize)]
struct ProfileQuery {
    profile: Option<String>,
    /// live.mp4's audio: `auto` (AAC and Opus, which browsers play from MP4), `on` (any
    /// codec, G.711 too, for VLC and ffmpeg) or `off`.
    audio: Option<String>,
}

fn profile_of(q: &ProfileQuery) -> Result<pb::Profile, Box<Response>> {
    match q.profile.as_deref() {
        None | Some("main") => Ok(pb::Profile::Main),
        Some("sub") => Ok(pb::Profile::Sub),
        Some(other) => Err(Box::new(text(
            StatusCode::BAD_REQUEST,
            format!(
                "unknown profile {:?}: use main or sub",
                other.chars().take(16).collect::<String>()
            ),
        ))),
    }
}

/// The tap for the profile asked for (400 for an unknown one) of a camera the fleet has
/// (404 when it has none).
async fn tap_for(s: &Arc<Shared>, id: &str, q: &ProfileQuery) -> Result<Arc<Tap>, Response> {
    let profile = profile_of(q).map_err(|r| *r)?;
    let unknown = || text(StatusCode::NOT_FOUND, format!("no camera {id:?} in the fleet"));
    if !valid_id(id) {
        return Err(unknown());
    }
    if !s.node.knows(id) {
        s.node.reach.discover_cameras(Duration::from_secs(2)).await;
        if !s.node.knows(id) {
            return Err(unknown());
        }
    }
    s.taps.get_or_start(id, profile).map_err(tap_error)
}

fn tap_error(e: TapError) -> Response {
    let status = match &e {
        TapError::Failed(msg) if msg.contains("no camera") || msg.contains("unknown camera") => StatusCode::NOT_FOUND,
        TapError::Failed(_) => StatusCode::BAD_GATEWAY,
        TapError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
        TapError::TooManyCameras(_) | TapError::TooManyClients { .. } => StatusCode::SERVICE_UNAVAILABLE,
    };
    text(status, e.to_string())
}
