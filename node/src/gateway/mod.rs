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
//!
//! Video reaches the gateway through [`tap::Taps`]: one subscription per camera, shared by
//! every HTTP client and snapshot, started on demand and stopped when unused. Everything
//! is bounded: cameras watched at once, clients per camera, frames a slow client may lag
//! (then it skips to the next keyframe), concurrent snapshot decodes. Unknown cameras and
//! paths are 404s.
//!
//! The gateway hands out decrypted video without asking who is asking, so it refuses to
//! listen on anything but a loopback address unless told otherwise
//! ([`GatewayOptions::allow_remote`]), and it answers only requests whose `Host` is a
//! loopback name (a web page cannot reach it through DNS rebinding).

pub mod fmp4;
pub mod metrics;
pub mod snapshot;
pub mod tap;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use camesh_proto::pb;
use tokio::sync::{broadcast, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::ids::valid_id;
use crate::node::NodeHandle;
use fmp4::{Muxer, Push, Sample};
use metrics::{Exposition, Kind};
use tap::{ClientGuard, Tap, TapError, TapFrame, TapMsg, Taps};

const PAGE: &str = include_str!("page.html");

/// How a gateway serves.
#[derive(Debug, Clone)]
pub struct GatewayOptions {
    /// Where to listen; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Serve on a non-loopback address (anyone who can reach it sees the video).
    pub allow_remote: bool,
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
}

impl Default for GatewayOptions {
    fn default() -> Self {
        GatewayOptions {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            allow_remote: false,
            max_cameras: 32,
            max_clients_per_camera: 8,
            idle: Duration::from_secs(30),
            start_timeout: Duration::from_secs(15),
            discover_every: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error(
        "refusing to serve decrypted video on {0}: it is not a loopback address (allow it explicitly if you mean it)"
    )]
    NotLoopback(SocketAddr),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Requests by route, for `/metrics`.
#[derive(Debug, Default)]
struct RouteCounters {
    page: AtomicU64,
    api: AtomicU64,
    live: AtomicU64,
    snapshot: AtomicU64,
    metrics: AtomicU64,
    not_found: AtomicU64,
}

#[derive(Debug)]
struct Shared {
    node: NodeHandle,
    taps: Arc<Taps>,
    opts: GatewayOptions,
    addr: SocketAddr,
    snapshots: Semaphore,
    requests: RouteCounters,
    started: Instant,
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
    pub async fn start(node: NodeHandle, opts: GatewayOptions) -> Result<Gateway, GatewayError> {
        if !opts.listen.ip().is_loopback() && !opts.allow_remote {
            return Err(GatewayError::NotLoopback(opts.listen));
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
            addr,
            snapshots: Semaphore::new(2),
            requests: RouteCounters::default(),
            started: Instant::now(),
        });
        let cancel = CancellationToken::new();
        tokio::spawn(discover_loop(node.clone(), opts.discover_every, cancel.clone()));
        let app = Router::new()
            .route("/", get(page))
            .route("/index.html", get(page))
            .route("/api/cameras", get(api_cameras))
            .route("/cam/{id}/live.mp4", get(live_mp4))
            .route("/cam/{id}/snapshot.jpg", get(snapshot_jpg))
            .route("/metrics", get(metrics_text))
            .fallback(not_found)
            .with_state(shared);
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

async fn wait_node_down(node: &NodeHandle) {
    while !node.is_shut_down() {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Keeps the directory fresh so the page lists cameras as they appear.
async fn discover_loop(node: NodeHandle, every: Duration, cancel: CancellationToken) {
    loop {
        tokio::select! {
            _ = node.discover_cameras(Duration::from_secs(2)) => {}
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

/// Loopback `Host` headers only (unless remote serving was allowed): a web page on
/// another origin cannot reach the gateway through DNS rebinding.
fn host_allowed(s: &Shared, headers: &HeaderMap) -> bool {
    if s.opts.allow_remote {
        return true;
    }
    headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .is_some_and(host_is_loopback)
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

fn text(status: StatusCode, msg: impl Into<String>) -> Response {
    let mut body = msg.into();
    body.push('\n');
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}

fn forbidden_host() -> Response {
    text(
        StatusCode::FORBIDDEN,
        "this gateway answers only to localhost addresses",
    )
}

async fn not_found(State(s): State<Arc<Shared>>) -> Response {
    s.requests.not_found.fetch_add(1, Ordering::Relaxed);
    text(
        StatusCode::NOT_FOUND,
        "not found: try /, /api/cameras, /cam/<id>/live.mp4, /cam/<id>/snapshot.jpg or /metrics",
    )
}

async fn page(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if !host_allowed(&s, &headers) {
        return forbidden_host();
    }
    s.requests.page.fetch_add(1, Ordering::Relaxed);
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        PAGE,
    )
        .into_response()
}

#[derive(Debug, serde::Deserialize)]
struct ProfileQuery {
    profile: Option<String>,
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

/// One camera as the page and `/api/cameras` show it.
#[derive(Debug, Clone)]
struct CameraRow {
    id: String,
    name: String,
    peer: String,
    width: u32,
    height: u32,
    fps: f64,
    live: bool,
    profiles: Vec<&'static str>,
    local: bool,
}

fn profile_names(profiles: &[i32]) -> Vec<&'static str> {
    let mut v: Vec<&'static str> = profiles
        .iter()
        .filter_map(|p| match pb::Profile::try_from(*p) {
            Ok(pb::Profile::Main) => Some("main"),
            Ok(pb::Profile::Sub) => Some("sub"),
            Err(_) => None,
        })
        .collect();
    if v.is_empty() {
        v.push("main");
    }
    v
}

/// The cameras this node knows: its own, then the directory's (one row per camera).
fn camera_rows(node: &NodeHandle) -> Vec<CameraRow> {
    let mut rows: BTreeMap<String, CameraRow> = BTreeMap::new();
    let me = node.peer_id();
    for ann in node.hubs().announcements(me, &[]) {
        rows.insert(
            ann.camera_id.clone(),
            CameraRow {
                id: ann.camera_id.clone(),
                name: ann.name.clone(),
                peer: me.to_string(),
                width: ann.width,
                height: ann.height,
                fps: fps(ann.fps_num, ann.fps_den),
                live: ann.live,
                profiles: profile_names(&ann.profiles),
                local: true,
            },
        );
    }
    for e in node.directory().cameras() {
        let a = &e.announcement;
        let better = rows.get(&a.camera_id).is_none_or(|r| !r.local && !r.live && a.live);
        if better {
            rows.insert(
                a.camera_id.clone(),
                CameraRow {
                    id: a.camera_id.clone(),
                    name: a.name.clone(),
                    peer: e.peer.to_string(),
                    width: a.width,
                    height: a.height,
                    fps: fps(a.fps_num, a.fps_den),
                    live: a.live,
                    profiles: profile_names(&a.profiles),
                    local: false,
                },
            );
        }
    }
    rows.into_values().collect()
}

fn fps(num: u32, den: u32) -> f64 {
    if den == 0 {
        0.0
    } else {
        f64::from(num) / f64::from(den)
    }
}

async fn api_cameras(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if !host_allowed(&s, &headers) {
        return forbidden_host();
    }
    s.requests.api.fetch_add(1, Ordering::Relaxed);
    let taps: BTreeMap<String, tap::TapStatus> = s
        .taps
        .all()
        .into_iter()
        .filter(|t| t.profile == pb::Profile::Main)
        .map(|t| (t.camera.clone(), t.status()))
        .collect();
    let cameras: Vec<serde_json::Value> = camera_rows(&s.node)
        .into_iter()
        .map(|r| {
            let stream = taps.get(&r.id).map(|t| {
                serde_json::json!({
                    "status": t.status,
                    "live": t.live,
                    "peer": t.peer.map(|p| p.to_string()),
                    "path": t.path.map(|p| p.as_str()),
                    "fps": t.stats.fps,
                    "kbit_s": t.stats.kbit_s,
                    "latency_p50_ms": t.stats.latency_p50_ms,
                    "skips": t.stats.skips,
                    "gaps": t.stats.gaps,
                    "codecs": t.params.as_ref().map(|p| fmp4::codec_string(&p.sps)),
                })
            });
            serde_json::json!({
                "id": r.id, "name": r.name, "peer": r.peer, "width": r.width, "height": r.height,
                "fps": r.fps, "live": r.live, "profiles": r.profiles, "local": r.local,
                "live_mp4": format!("/cam/{}/live.mp4", r.id),
                "snapshot": format!("/cam/{}/snapshot.jpg", r.id),
                "stream": stream,
            })
        })
        .collect();
    let body = serde_json::json!({
        "node": { "peer_id": s.node.peer_id().to_string(), "fleet": s.node.config().node.fleet_id },
        "cameras": cameras,
    });
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body.to_string(),
    )
        .into_response()
}

/// The tap for a camera the fleet has (404 when it has none).
async fn tap_for(s: &Arc<Shared>, id: &str, profile: pb::Profile) -> Result<Arc<Tap>, Response> {
    let unknown = || text(StatusCode::NOT_FOUND, format!("no camera {id:?} in the fleet"));
    if !valid_id(id) {
        return Err(unknown());
    }
    let known = |node: &NodeHandle| node.hubs().get(id).is_some() || !node.directory().lookup(id).is_empty();
    if !known(&s.node) {
        s.node.discover_cameras(Duration::from_secs(2)).await;
        if !known(&s.node) {
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

/// State of one live.mp4 response body.
struct LiveBody {
    tap: Arc<Tap>,
    _guard: ClientGuard,
    init: Option<Bytes>,
    backlog: std::collections::VecDeque<Arc<TapFrame>>,
    rx: broadcast::Receiver<TapMsg>,
    mux: Muxer,
    generation: u64,
    need_key: bool,
    done: bool,
}

impl LiveBody {
    async fn next_chunk(&mut self) -> Option<Bytes> {
        loop {
            if let Some(init) = self.init.take() {
                return Some(init);
            }
            if self.done {
                return None;
            }
            let frame = match self.backlog.pop_front() {
                Some(f) => f,
                None => {
                    let tap = self.tap.clone();
                    let msg = tokio::select! {
                        m = self.rx.recv() => m,
                        _ = tap.stopped() => Err(broadcast::error::RecvError::Closed),
                    };
                    match msg {
                        Ok(TapMsg::Frame(f)) => f,
                        Ok(TapMsg::NewParams(g)) => {
                            if g != self.generation {
                                // A new resolution or codec: this stream ends, players reconnect.
                                self.done = true;
                                if let Some(last) = self.mux.flush() {
                                    return Some(last);
                                }
                            }
                            continue;
                        }
                        Err(broadcast::error::RecvError::Lagged(_)) => {
                            self.tap.counters.consumer_skips.fetch_add(1, Ordering::Relaxed);
                            self.need_key = true;
                            continue;
                        }
                        Err(broadcast::error::RecvError::Closed) => {
                            self.done = true;
                            if let Some(last) = self.mux.flush() {
                                return Some(last);
                            }
                            continue;
                        }
                    }
                }
            };
            if self.need_key {
                if !frame.keyframe {
                    continue;
                }
                self.need_key = false;
            }
            let push = self.mux.push(Sample {
                data: frame.data.clone(),
                pts_90k: frame.pts_90k,
                dts_90k: frame.dts_90k,
                keyframe: frame.keyframe,
            });
            match push {
                Push::Nothing => {}
                Push::Fragment(b) => {
                    self.tap
                        .counters
                        .http_bytes
                        .fetch_add(b.len() as u64, Ordering::Relaxed);
                    return Some(b);
                }
                Push::Reinit { last } => {
                    self.done = true;
                    if let Some(l) = last {
                        return Some(l);
                    }
                }
            }
        }
    }
}

async fn live_mp4(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    Query(q): Query<ProfileQuery>,
    headers: HeaderMap,
) -> Response {
    if !host_allowed(&s, &headers) {
        return forbidden_host();
    }
    s.requests.live.fetch_add(1, Ordering::Relaxed);
    let profile = match profile_of(&q) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let tap = match tap_for(&s, &id, profile).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    let Some(guard) = tap.client_guard(s.opts.max_clients_per_camera) else {
        return tap_error(TapError::TooManyClients {
            camera: id,
            max: s.opts.max_clients_per_camera,
        });
    };
    let joined = match tap.join(s.opts.start_timeout).await {
        Ok(j) => j,
        Err(e) => return tap_error(e),
    };
    let mux = match Muxer::new(&joined.params) {
        Ok(m) => m,
        Err(e) => return text(StatusCode::BAD_GATEWAY, format!("camera {id}: {e}")),
    };
    let init = match mux.init_segment() {
        Ok(i) => i,
        Err(e) => return text(StatusCode::BAD_GATEWAY, format!("camera {id}: {e}")),
    };
    let mime = fmp4::mime_type(&joined.params);
    let body = LiveBody {
        tap: tap.clone(),
        _guard: guard,
        init: Some(init),
        backlog: joined.gop.into_iter().collect(),
        rx: joined.rx,
        mux,
        generation: joined.generation,
        need_key: false,
        done: false,
    };
    let stream = futures::stream::unfold(body, |mut b| async move {
        let chunk = b.next_chunk().await?;
        Some((Ok::<Bytes, Infallible>(chunk), b))
    });
    let mut resp = Response::new(Body::from_stream(stream));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(&mime).unwrap_or(HeaderValue::from_static("video/mp4")),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    resp
}

async fn snapshot_jpg(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    Query(q): Query<ProfileQuery>,
    headers: HeaderMap,
) -> Response {
    if !host_allowed(&s, &headers) {
        return forbidden_host();
    }
    s.requests.snapshot.fetch_add(1, Ordering::Relaxed);
    let profile = match profile_of(&q) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let tap = match tap_for(&s, &id, profile).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    let (params, key) = match tap.keyframe(s.opts.start_timeout).await {
        Ok(k) => k,
        Err(e) => return tap_error(e),
    };
    let jpeg = match tap.cached_snapshot(key.sequence) {
        Some(j) => j,
        None => {
            let Ok(_permit) = s.snapshots.acquire().await else {
                return text(StatusCode::SERVICE_UNAVAILABLE, "shutting down");
            };
            let data = key.data.clone();
            let p = params.clone();
            match tokio::task::spawn_blocking(move || snapshot::keyframe_to_jpeg(&p, &data)).await {
                Ok(Ok(j)) => {
                    tap.store_snapshot(key.sequence, j.clone());
                    j
                }
                Ok(Err(e)) => return text(StatusCode::BAD_GATEWAY, format!("camera {id}: {e}")),
                Err(e) => return text(StatusCode::INTERNAL_SERVER_ERROR, format!("snapshot task failed: {e}")),
            }
        }
    };
    (
        [
            (header::CONTENT_TYPE, "image/jpeg"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        jpeg,
    )
        .into_response()
}

async fn metrics_text(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if !host_allowed(&s, &headers) {
        return forbidden_host();
    }
    s.requests.metrics.fetch_add(1, Ordering::Relaxed);
    let body = render_metrics(&s).await;
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        body,
    )
        .into_response()
}

async fn render_metrics(s: &Shared) -> String {
    let mut e = Exposition::default();
    let peers = s.node.peers().await.unwrap_or_default();
    let connected: Vec<_> = peers.iter().filter(|p| p.connected).collect();
    e.family(
        "camesh_uptime_seconds",
        Kind::Gauge,
        "Seconds since the gateway started.",
    )
    .sample("camesh_uptime_seconds", &[], s.started.elapsed().as_secs_f64());
    e.family(
        "camesh_peers_connected",
        Kind::Gauge,
        "Fleet peers this node is connected to.",
    )
    .sample("camesh_peers_connected", &[], connected.len() as f64);
    e.family(
        "camesh_peer_rtt_seconds",
        Kind::Gauge,
        "Round-trip time to each connected peer (libp2p ping).",
    );
    for p in &connected {
        if let Some(rtt) = p.rtt {
            let peer = p.peer.to_string();
            let path = if !p.addrs.is_empty() && p.addrs.iter().all(|a| a.to_string().contains("/p2p-circuit")) {
                "relay"
            } else {
                "direct"
            };
            e.sample(
                "camesh_peer_rtt_seconds",
                &[("peer", &peer), ("path", path)],
                rtt.as_secs_f64(),
            );
        }
    }
    e.family(
        "camesh_cameras_known",
        Kind::Gauge,
        "Cameras this node knows of (its own and the fleet's).",
    )
    .sample("camesh_cameras_known", &[], camera_rows(&s.node).len() as f64);
    e.family(
        "camesh_streams_served",
        Kind::Gauge,
        "Media streams this node serves to peers now.",
    )
    .sample("camesh_streams_served", &[], s.node.streams_served() as f64);

    // Cameras this node serves (sources).
    let hubs: Vec<_> = s
        .node
        .hubs()
        .all()
        .into_iter()
        .map(|h| (h, "main"))
        .chain(s.node.hubs().subs().into_iter().map(|h| (h, "sub")))
        .collect();
    let families = [
        (
            "camesh_source_frames_total",
            Kind::Counter,
            "Access units a served camera's source produced.",
        ),
        (
            "camesh_source_bytes_total",
            Kind::Counter,
            "Bytes of video a served camera's source produced.",
        ),
        (
            "camesh_source_keyframes_total",
            Kind::Counter,
            "Keyframes a served camera's source produced.",
        ),
        (
            "camesh_source_gaps_total",
            Kind::Counter,
            "Times a served camera's source came back after an interruption.",
        ),
        (
            "camesh_source_live",
            Kind::Gauge,
            "1 while a served camera's source delivers video.",
        ),
        (
            "camesh_source_subscribers",
            Kind::Gauge,
            "Viewers subscribed to a served camera.",
        ),
    ];
    for (name, kind, help) in families {
        e.family(name, kind, help);
        for (h, profile) in &hubs {
            let c = &h.counters;
            let v = match name {
                "camesh_source_frames_total" => c.frames_in.load(Ordering::Relaxed) as f64,
                "camesh_source_bytes_total" => c.bytes_in.load(Ordering::Relaxed) as f64,
                "camesh_source_keyframes_total" => c.keyframes_in.load(Ordering::Relaxed) as f64,
                "camesh_source_gaps_total" => c.source_gaps.load(Ordering::Relaxed) as f64,
                "camesh_source_live" => f64::from(u8::from(h.is_live())),
                _ => h.subscriber_count() as f64,
            };
            e.sample(name, &[("camera", &h.id), ("profile", profile)], v);
        }
    }

    // Streams this gateway receives (taps).
    let taps: Vec<(Arc<Tap>, tap::TapStatus)> = s
        .taps
        .all()
        .into_iter()
        .map(|t| {
            let st = t.status();
            (t, st)
        })
        .collect();
    e.family(
        "camesh_gateway_streams",
        Kind::Gauge,
        "Cameras the gateway receives now.",
    )
    .sample("camesh_gateway_streams", &[], taps.len() as f64);
    type Getter = fn(&Tap, &tap::TapStatus) -> f64;
    let stream_families: [(&str, Kind, &str, Getter); 12] = [
        (
            "camesh_stream_frames_total",
            Kind::Counter,
            "Frames received.",
            |t, _| t.counters.frames.load(Ordering::Relaxed) as f64,
        ),
        (
            "camesh_stream_bytes_total",
            Kind::Counter,
            "Bytes of video received.",
            |t, _| t.counters.bytes.load(Ordering::Relaxed) as f64,
        ),
        (
            "camesh_stream_keyframes_total",
            Kind::Counter,
            "Keyframes received.",
            |t, _| t.counters.keyframes.load(Ordering::Relaxed) as f64,
        ),
        (
            "camesh_stream_skips_total",
            Kind::Counter,
            "Times the source skipped to a keyframe because this stream fell behind.",
            |_, st| st.stats.skips as f64,
        ),
        (
            "camesh_stream_skipped_frames_total",
            Kind::Counter,
            "Frames the source skipped for this stream.",
            |_, st| st.stats.skipped_frames as f64,
        ),
        (
            "camesh_stream_client_skips_total",
            Kind::Counter,
            "Times an HTTP client fell behind and skipped to a keyframe.",
            |t, _| t.counters.consumer_skips.load(Ordering::Relaxed) as f64,
        ),
        (
            "camesh_stream_gaps_total",
            Kind::Counter,
            "Times video came back after an interruption.",
            |t, _| t.counters.gaps.load(Ordering::Relaxed) as f64,
        ),
        (
            "camesh_stream_http_bytes_total",
            Kind::Counter,
            "Bytes of fragmented MP4 sent to HTTP clients.",
            |t, _| t.counters.http_bytes.load(Ordering::Relaxed) as f64,
        ),
        (
            "camesh_stream_bitrate_bits_per_second",
            Kind::Gauge,
            "Video bitrate over the last 2 s.",
            |_, st| st.stats.kbit_s * 1000.0,
        ),
        (
            "camesh_stream_fps",
            Kind::Gauge,
            "Frames per second over the last 2 s.",
            |_, st| st.stats.fps,
        ),
        (
            "camesh_stream_latency_seconds",
            Kind::Gauge,
            "Capture-to-gateway latency, median over the last 2 s.",
            |_, st| st.stats.latency_p50_ms / 1000.0,
        ),
        (
            "camesh_stream_http_clients",
            Kind::Gauge,
            "HTTP clients playing the stream.",
            |t, _| t.counters.http_clients.load(Ordering::Relaxed) as f64,
        ),
    ];
    for (name, kind, help, get) in stream_families {
        e.family(name, kind, help);
        for (t, st) in &taps {
            let profile = if t.profile == pb::Profile::Sub { "sub" } else { "main" };
            e.sample(name, &[("camera", &t.camera), ("profile", profile)], get(t, st));
        }
    }
    e.family(
        "camesh_stream_path_info",
        Kind::Gauge,
        "How each stream reaches this node: the serving peer and the path (local, direct, relay, forwarded).",
    );
    for (t, st) in &taps {
        let peer = st.peer.map(|p| p.to_string()).unwrap_or_default();
        let path = st.path.map_or("none", |p| p.as_str());
        let live = if st.live { "yes" } else { "no" };
        e.sample(
            "camesh_stream_path_info",
            &[("camera", &t.camera), ("peer", &peer), ("path", path), ("live", live)],
            1.0,
        );
    }
    e.family(
        "camesh_http_requests_total",
        Kind::Counter,
        "Gateway HTTP requests by route.",
    );
    let r = &s.requests;
    for (route, c) in [
        ("page", &r.page),
        ("api", &r.api),
        ("live", &r.live),
        ("snapshot", &r.snapshot),
        ("metrics", &r.metrics),
        ("not_found", &r.not_found),
    ] {
        e.sample(
            "camesh_http_requests_total",
            &[("route", route)],
            c.load(Ordering::Relaxed) as f64,
        );
    }
    let _ = s.addr;
    e.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
