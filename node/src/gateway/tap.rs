//! Taps: one watch of a camera shared by every local consumer (HTTP clients, snapshots,
//! `mesh top`), so ten browser tabs cost the camera one stream.
//!
//! A [`Tap`] subscribes once — to the node's own hub when the node serves the camera,
//! otherwise through the mesh with the node's watcher ([`crate::watch`]) (which retries and reports gaps)
//! — and keeps what late joiners need: the codec parameters, the current GOP (bounded),
//! the last keyframe (for snapshots) and live statistics. Frames fan out on a bounded
//! broadcast channel: a consumer that falls behind loses frames and resumes at the next
//! keyframe; it never holds up the others. A tap nobody used for a while stops itself.
//! The GOP is the fan-out's own [`GopCache`], over shared opened frames; where the video
//! comes from (the node's hub or the mesh) is `source`.

mod source;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use camesh_proto::{pb, MediaFrame};
use libp2p::PeerId;
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

use super::GatewayNode;
use crate::clock::now_unix_us;
use crate::media::{is_audio, AudioParams, CodecParams};
use crate::stream::fanout::{GopCache, GopFrame};
use crate::stream::stats::{LiveStats, Snapshot};

pub use source::path_to;
pub(super) use source::peer_path;

/// Frames a slow consumer may fall behind before it skips to the next keyframe (3 s at
/// 30 fps with AAC audio at 48 kHz beside it).
const BROADCAST_FRAMES: usize = 240;
/// Most bytes of GOP a tap keeps for instant start (a larger GOP is not cached).
const MAX_GOP_BYTES: usize = 16 << 20;
/// Most frames of GOP a tap keeps (10 s at 30 fps).
const MAX_GOP_FRAMES: usize = 300;

/// One opened access unit, as taps share it.
#[derive(Debug)]
pub struct TapFrame {
    pub sequence: u64,
    pub pts_90k: u64,
    pub dts_90k: u64,
    pub keyframe: bool,
    pub capture_unix_us: i64,
    /// AVCC (4-byte lengths), plaintext.
    pub data: Bytes,
}

impl GopFrame for TapFrame {
    fn is_keyframe(&self) -> bool {
        self.keyframe
    }

    fn byte_size(&self) -> usize {
        self.data.len()
    }
}

impl TapFrame {
    fn from_media(f: MediaFrame) -> Self {
        TapFrame {
            sequence: f.header.sequence,
            pts_90k: f.header.pts_90k,
            dts_90k: f.header.dts_90k,
            keyframe: f.header.keyframe,
            capture_unix_us: f.header.capture_unix_us,
            data: f.payload,
        }
    }
}

/// What a tap's consumers receive.
#[derive(Debug, Clone)]
pub enum TapMsg {
    Frame(Arc<TapFrame>),
    /// The codec parameters changed (generation number): start a new stream.
    NewParams(u64),
}

/// How the video reaches this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathKind {
    /// The node serves the camera itself.
    Local,
    /// Straight from the camera's node.
    Direct,
    /// From the camera's node through a circuit relay.
    Relay,
    /// From another peer that forwards the camera.
    Forwarded,
}

impl PathKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PathKind::Local => "local",
            PathKind::Direct => "direct",
            PathKind::Relay => "relay",
            PathKind::Forwarded => "forwarded",
        }
    }
}

/// Counters of a tap (Prometheus counters: they only go up).
#[derive(Debug, Default)]
pub struct TapCounters {
    pub frames: AtomicU64,
    pub bytes: AtomicU64,
    pub keyframes: AtomicU64,
    /// Times a local consumer fell behind and skipped to a keyframe.
    pub consumer_skips: AtomicU64,
    /// Times the stream was interrupted and came back.
    pub gaps: AtomicU64,
    pub interruptions: AtomicU64,
    /// Bytes sent to HTTP clients.
    pub http_bytes: AtomicU64,
    pub http_clients: AtomicUsize,
}

#[derive(Debug)]
struct TapState {
    params: Option<CodecParams>,
    /// The camera's audio track, when it has one (its frames are in the GOP and on the
    /// broadcast, told apart by their sequence number).
    audio: Option<AudioParams>,
    generation: u64,
    /// From a keyframe, bounded (a longer GOP is not cached).
    gop: GopCache<Arc<TapFrame>>,
    last_key: Option<Arc<TapFrame>>,
    peer: Option<PeerId>,
    path: Option<PathKind>,
    live: bool,
    status: String,
    failed: bool,
    stats: LiveStats,
    last_used: Instant,
    snapshot: Option<(u64, Bytes)>,
}

/// A shared watch of one camera; see the module docs.
#[derive(Debug)]
pub struct Tap {
    pub camera: String,
    pub profile: pb::Profile,
    cancel: CancellationToken,
    state: Mutex<TapState>,
    tx: broadcast::Sender<TapMsg>,
    changed: watch::Sender<u64>,
    pub counters: TapCounters,
}

/// What a consumer joining a tap gets, consistently: parameters, the GOP so far, and a
/// receiver for everything after it.
#[derive(Debug)]
pub struct Joined {
    pub params: CodecParams,
    pub audio: Option<AudioParams>,
    pub generation: u64,
    pub gop: Vec<Arc<TapFrame>>,
    pub rx: broadcast::Receiver<TapMsg>,
}

/// A tap's state for people and metrics.
#[derive(Debug, Clone)]
pub struct TapStatus {
    pub camera: String,
    pub live: bool,
    pub failed: bool,
    pub status: String,
    pub peer: Option<PeerId>,
    pub path: Option<PathKind>,
    pub params: Option<CodecParams>,
    pub audio: Option<AudioParams>,
    pub stats: Snapshot,
}

/// Why a consumer could not join.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum TapError {
    #[error("{0}")]
    Failed(String),
    #[error("camera {camera}: no video within {after:?} ({status})")]
    Timeout {
        camera: String,
        after: Duration,
        status: String,
    },
    #[error("too many cameras are being watched through this gateway (at most {0})")]
    TooManyCameras(usize),
    #[error("too many clients for camera {camera} (at most {max})")]
    TooManyClients { camera: String, max: usize },
}

impl Tap {
    fn new(camera: &str, profile: pb::Profile) -> Self {
        let (tx, _) = broadcast::channel(BROADCAST_FRAMES);
        let (changed, _) = watch::channel(0);
        Tap {
            camera: camera.to_owned(),
            profile,
            cancel: CancellationToken::new(),
            state: Mutex::new(TapState {
                params: None,
                audio: None,
                generation: 0,
                gop: GopCache::new(MAX_GOP_BYTES).with_max_frames(MAX_GOP_FRAMES),
                last_key: None,
                peer: None,
                path: None,
                live: false,
                status: "connecting".into(),
                failed: false,
                stats: LiveStats::new(2000),
                last_used: Instant::now(),
                snapshot: None,
            }),
            tx,
            changed,
            counters: TapCounters::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, TapState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn notify(&self) {
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Marks the tap as in use (keeps it from stopping while idle).
    pub fn touch(&self) {
        self.lock().last_used = Instant::now();
    }

    pub fn stop(&self) {
        self.cancel.cancel();
    }

    pub fn is_stopped(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Resolves when the tap stops.
    pub async fn stopped(&self) {
        self.cancel.cancelled().await
    }

    /// The video's parameters and the audio track from now on (a change starts a new
    /// generation: consumers end their streams).
    fn set_params(&self, params: CodecParams, audio: Option<AudioParams>) {
        let mut st = self.lock();
        st.live = true;
        st.status = "live".into();
        if st.params.as_ref() == Some(&params) && st.audio == audio {
            drop(st);
            self.notify();
            return;
        }
        st.params = Some(params);
        st.audio = audio;
        st.generation += 1;
        st.gop.clear();
        st.last_key = None;
        st.snapshot = None;
        let generation = st.generation;
        let _ = self.tx.send(TapMsg::NewParams(generation));
        drop(st);
        self.notify();
    }

    fn set_source(&self, peer: Option<PeerId>, path: PathKind) {
        let mut st = self.lock();
        st.peer = peer;
        st.path = Some(path);
    }

    fn set_status(&self, status: String, failed: bool) {
        let mut st = self.lock();
        st.live = false;
        st.status = status;
        st.failed |= failed;
        drop(st);
        self.notify();
    }

    fn on_gap(&self, gap: Duration) {
        self.counters.gaps.fetch_add(1, Ordering::Relaxed);
        self.lock()
            .stats
            .on_gap(u64::try_from(gap.as_millis()).unwrap_or(u64::MAX));
    }

    fn publish(&self, header: &pb::FrameHeader, frame: TapFrame) {
        if is_audio(frame.sequence) {
            // Audio rides along: cached and sent, outside the video's counters and stats.
            let frame = Arc::new(frame);
            let mut st = self.lock();
            st.gop.push(&frame);
            let _ = self.tx.send(TapMsg::Frame(frame));
            return;
        }
        let c = &self.counters;
        c.frames.fetch_add(1, Ordering::Relaxed);
        c.bytes.fetch_add(frame.data.len() as u64, Ordering::Relaxed);
        if frame.keyframe {
            c.keyframes.fetch_add(1, Ordering::Relaxed);
        }
        let frame = Arc::new(frame);
        let mut st = self.lock();
        st.stats.on_frame(header, frame.data.len(), now_unix_us());
        if frame.keyframe {
            st.last_key = Some(frame.clone());
        }
        // Cached from a keyframe only; a GOP over the bounds is not cached any further.
        st.gop.push(&frame);
        let first_key = frame.keyframe && st.gop.frames().len() == 1;
        // Sent under the lock: a joiner sees each frame either in the GOP or on its receiver.
        let _ = self.tx.send(TapMsg::Frame(frame));
        drop(st);
        if first_key {
            self.notify();
        }
    }

    /// Joins now, if the tap has parameters and a cached GOP from a keyframe.
    pub fn try_join(&self) -> Option<Joined> {
        let st = self.lock();
        let params = st.params.clone()?;
        if !st.gop.frames().first().is_some_and(|f| f.keyframe) {
            return None;
        }
        Some(Joined {
            params,
            audio: st.audio.clone(),
            generation: st.generation,
            gop: st.gop.frames().to_vec(),
            rx: self.tx.subscribe(),
        })
    }

    /// Waits (at most `limit`) until the tap can be joined.
    pub async fn join(&self, limit: Duration) -> Result<Joined, TapError> {
        let deadline = tokio::time::Instant::now() + limit;
        let mut changed = self.changed.subscribe();
        loop {
            self.touch();
            if let Some(j) = self.try_join() {
                return Ok(j);
            }
            let (failed, status) = {
                let st = self.lock();
                (st.failed, st.status.clone())
            };
            if failed || self.is_stopped() {
                return Err(TapError::Failed(status));
            }
            if tokio::time::timeout_at(deadline, changed.changed()).await.is_err() {
                return Err(TapError::Timeout {
                    camera: self.camera.clone(),
                    after: limit,
                    status,
                });
            }
        }
    }

    /// The latest keyframe (waits at most `limit` for one), with the parameters.
    pub async fn keyframe(&self, limit: Duration) -> Result<(CodecParams, Arc<TapFrame>), TapError> {
        let j = self.join(limit).await?;
        let st = self.lock();
        match (&st.params, &st.last_key) {
            (Some(p), Some(k)) => Ok((p.clone(), k.clone())),
            _ => Ok((j.params, j.gop[0].clone())),
        }
    }

    /// A cached JPEG of keyframe `sequence`, if it is the one made last.
    pub fn cached_snapshot(&self, sequence: u64) -> Option<Bytes> {
        self.lock()
            .snapshot
            .as_ref()
            .filter(|(s, _)| *s == sequence)
            .map(|(_, b)| b.clone())
    }

    pub fn store_snapshot(&self, sequence: u64, jpeg: Bytes) {
        self.lock().snapshot = Some((sequence, jpeg));
    }

    pub fn status(&self) -> TapStatus {
        let mut st = self.lock();
        let stats = st.stats.snapshot(now_unix_us());
        TapStatus {
            camera: self.camera.clone(),
            live: st.live,
            failed: st.failed,
            status: st.status.clone(),
            peer: st.peer,
            path: st.path,
            params: st.params.clone(),
            audio: st.audio.clone(),
            stats,
        }
    }

    fn idle_for(&self) -> Duration {
        if self.counters.http_clients.load(Ordering::Relaxed) > 0 {
            return Duration::ZERO;
        }
        self.lock().last_used.elapsed()
    }

    /// Counts an HTTP client for as long as the guard lives; `None` over `max`.
    pub fn client_guard(self: &Arc<Self>, max: usize) -> Option<ClientGuard> {
        let n = self.counters.http_clients.fetch_add(1, Ordering::Relaxed);
        if n >= max {
            self.counters.http_clients.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(ClientGuard { tap: self.clone() })
    }
}

/// Holds one HTTP client slot of a tap.
#[derive(Debug)]
pub struct ClientGuard {
    tap: Arc<Tap>,
}

impl Drop for ClientGuard {
    fn drop(&mut self) {
        self.tap.counters.http_clients.fetch_sub(1, Ordering::Relaxed);
        self.tap.touch();
    }
}

/// The node's taps, by camera (and profile).
#[derive(Debug)]
pub struct Taps {
    node: GatewayNode,
    map: Mutex<HashMap<(String, i32), Arc<Tap>>>,
    max: usize,
    idle: Duration,
}

impl Taps {
    /// At most `max` cameras at once; a tap unused for `idle` stops.
    pub fn new(node: impl Into<GatewayNode>, max: usize, idle: Duration) -> Arc<Self> {
        Arc::new(Taps {
            node: node.into(),
            map: Mutex::new(HashMap::new()),
            max,
            idle,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, i32), Arc<Tap>>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The running tap of a camera, or a new one.
    pub fn get_or_start(self: &Arc<Self>, camera: &str, profile: pb::Profile) -> Result<Arc<Tap>, TapError> {
        let mut map = self.lock();
        map.retain(|_, t| !t.is_stopped());
        let key = (camera.to_owned(), profile as i32);
        if let Some(t) = map.get(&key) {
            t.touch();
            return Ok(t.clone());
        }
        if map.len() >= self.max {
            return Err(TapError::TooManyCameras(self.max));
        }
        let tap = Arc::new(Tap::new(camera, profile));
        map.insert(key.clone(), tap.clone());
        let this = self.clone();
        let t = tap.clone();
        tokio::spawn(async move {
            this.run(t.clone()).await;
            t.stop();
            t.notify();
            let mut map = this.lock();
            if map.get(&key).is_some_and(|x| Arc::ptr_eq(x, &t)) {
                map.remove(&key);
            }
        });
        Ok(tap)
    }

    pub fn all(&self) -> Vec<Arc<Tap>> {
        let mut v: Vec<_> = self.lock().values().filter(|t| !t.is_stopped()).cloned().collect();
        v.sort_by(|a, b| a.camera.cmp(&b.camera));
        v
    }

    pub fn stop_all(&self) {
        for t in self.lock().values() {
            t.stop();
        }
    }

    async fn run(&self, tap: Arc<Tap>) {
        let idle = async {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                if tap.idle_for() > self.idle {
                    tracing::debug!(camera = %tap.camera, "tap idle; stopping");
                    return;
                }
            }
        };
        let source = async {
            if self.node.hubs.get(&tap.camera).is_some() {
                source::run_local(&self.node, &tap).await
            } else {
                source::run_remote(&self.node, &tap).await
            }
        };
        tokio::select! {
            _ = idle => {}
            _ = source => {}
            _ = tap.cancel.cancelled() => {}
        }
    }
}
