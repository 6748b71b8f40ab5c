//! Watching a camera over several routes (IO): the direct route and forwarders.
//!
//! Each open route is a feed: its own task opens the stream and pushes opened frames
//! into a small bounded channel (dropping the feed aborts the task and closes the
//! stream). This loop asks the pure chooser ([`super::path`]) which route to use, keeps
//! one current feed, and for a voluntary switch opens the new feed next to the current
//! one and lets the pure splice ([`super::splice`]) hand over on the new path's first
//! keyframe, without gap or duplicate, before the old feed is dropped. A current feed
//! that breaks or goes silent for `stall_timeout` counts as a failure of its route; the
//! next best route is opened at once.

use std::time::Duration;

use camesh_proto::{pb, MediaFrame};
use libp2p::PeerId;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::path::PathPolicy;
use super::path::{Decision, PathChooser};
use super::splice::{From, Mark, Splice};
use crate::backoff::next_backoff;
use crate::reach::{self, routes, Reach, Route};
use crate::stream::client::ClientError;
use crate::stream::watch::{stall_timeout, WatchEvent, WatchOptions};

/// The routes to consider beyond the camera's own node, and how to choose.
#[derive(Debug, Clone)]
pub struct RouteOptions {
    /// Forwarders that may re-serve the camera.
    pub via: Vec<PeerId>,
    /// Prefer the forwarders over the direct route (a camera on a thin uplink).
    pub prefer_via: bool,
    pub policy: PathPolicy,
    /// No frame for this long on the current route counts as a failure of the route
    /// (at least three frame intervals of a slow camera, from its accept).
    pub stall_timeout: Duration,
    /// How often the route choice is revisited while video flows.
    pub reevaluate_every: Duration,
    /// Also ask the connected fleet members this often which of them forward the camera
    /// now, and consider those too (`None`: only `via`).
    pub discover_every: Option<Duration>,
}

impl RouteOptions {
    pub fn via(forwarders: Vec<PeerId>) -> Self {
        Self {
            via: forwarders,
            prefer_via: false,
            policy: PathPolicy::default(),
            stall_timeout: Duration::from_millis(1500),
            reevaluate_every: Duration::from_secs(1),
            discover_every: None,
        }
    }
}

/// Refusals by the camera's own node that no other route can fix.
fn is_final(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::Rejected {
            code: pb::RejectCode::RejectUnknownCamera
                | pb::RejectCode::RejectNotAuthorized
                | pb::RejectCode::RejectBadRequest
                | pb::RejectCode::RejectUnsupported,
            ..
        } | ClientError::Impostor { .. }
    )
}

/// Forwarders considered at most (given and discovered).
const MAX_VIA: usize = 8;

/// Frames a feed may have queued for the loop.
const FEED_QUEUE: usize = 16;
/// Frames of a new path held while the old one catches up (about 2 s at 30 fps).
const SPLICE_BUFFER: usize = 64;
/// How long a new path has to deliver its first keyframe before the switch is dropped.
const SWITCH_DEADLINE: Duration = Duration::from_secs(5);

enum FeedMsg {
    Accepted { peer: PeerId, accept: pb::StreamAccept },
    Frame(MediaFrame),
    Failed { error: String, fatal: bool },
}

struct Feed {
    route: Route,
    rx: mpsc::Receiver<FeedMsg>,
    task: JoinHandle<()>,
    accept: Option<(PeerId, pb::StreamAccept)>,
    opened: Instant,
    /// When it became the current route and started to deliver.
    accepted: Option<Instant>,
    /// Silence this long means the route is dead (at least three frame intervals).
    stall: Duration,
}

impl Drop for Feed {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn open_feed(node: &Reach, opts: &WatchOptions, route: Route) -> Feed {
    let (tx, rx) = mpsc::channel(FEED_QUEUE);
    let (node, camera) = (node.clone(), opts.camera.clone());
    let req = reach::live_request(&opts.camera, opts.profile, &opts.user_agent);
    let task = tokio::spawn(async move {
        let fail = |e: ClientError| FeedMsg::Failed {
            fatal: is_final(&e) && matches!(route, Route::Direct(_)),
            error: e.to_string(),
        };
        let mut sub = match node.subscribe_route(&camera, route, req).await {
            Ok(s) => s,
            Err(e) => {
                let _ = tx.send(fail(e)).await;
                return;
            }
        };
        let accepted = FeedMsg::Accepted {
            peer: sub.peer,
            accept: sub.accept.clone(),
        };
        if tx.send(accepted).await.is_err() {
            return;
        }
        loop {
            let msg = match sub.next_frame().await {
                Ok(Some(f)) => FeedMsg::Frame(f),
                Ok(None) => FeedMsg::Failed {
                    error: format!("{} ended the stream", sub.peer),
                    fatal: false,
                },
                Err(e) => fail(e),
            };
            let end = matches!(msg, FeedMsg::Failed { .. });
            if tx.send(msg).await.is_err() || end {
                return;
            }
        }
    });
    Feed {
        route,
        rx,
        task,
        accept: None,
        opened: Instant::now(),
        accepted: None,
        stall: Duration::ZERO,
    }
}

fn mark(f: &MediaFrame) -> Mark {
    Mark {
        sequence: f.header.sequence,
        capture_us: f.header.capture_unix_us,
        keyframe: f.header.keyframe,
    }
}

/// The camera's own node(s): the pinned peer, or whoever the directory or DHT names.
async fn owners(node: &Reach, opts: &WatchOptions) -> Vec<PeerId> {
    match opts.peer {
        Some(p) => vec![p],
        None => node.resolve(&opts.camera).await.into_iter().map(|(p, _)| p).collect(),
    }
}

async fn recv_pending(pending: &mut Option<Feed>) -> Option<FeedMsg> {
    match pending.as_mut() {
        Some(p) => p.rx.recv().await,
        None => std::future::pending().await,
    }
}

/// The loop's state beyond the feeds.
struct State {
    chooser: PathChooser,
    splice: Splice<MediaFrame>,
    current: Option<Feed>,
    pending: Option<Feed>,
    last_frame: Option<Instant>,
    interrupted: bool,
}

/// The consumer hung up.
struct Gone;

impl State {
    async fn deliver(&mut self, frames: Vec<MediaFrame>, tx: &mpsc::Sender<WatchEvent>) -> Result<(), Gone> {
        if !frames.is_empty() {
            self.last_frame = Some(Instant::now());
        }
        for f in frames {
            tx.send(WatchEvent::Frame(f)).await.map_err(|_| Gone)?;
        }
        Ok(())
    }

    /// The splice handed over: the pending feed becomes current, the old one is closed.
    async fn promote(&mut self, camera: &str, tx: &mpsc::Sender<WatchEvent>) -> Result<(), Gone> {
        let Some(new) = self.pending.take() else { return Ok(()) };
        let old = self.current.replace(new).map(|f| f.route);
        let Some(cur) = self.current.as_mut() else {
            return Ok(());
        };
        cur.accepted = Some(Instant::now());
        self.chooser.switched(cur.route, std::time::Instant::now());
        info!(camera, from = ?old, to = ?cur.route, "switched route");
        if let Some((peer, accept)) = cur.accept.clone() {
            tx.send(WatchEvent::Started {
                peer,
                accept,
                gap: None,
            })
            .await
            .map_err(|_| Gone)?;
        }
        Ok(())
    }

    fn abort_switch(&mut self, camera: &str, why: &str) {
        if let Some(p) = self.pending.take() {
            debug!(camera, route = ?p.route, reason = why, "switch abandoned");
            self.chooser.failed(p.route, std::time::Instant::now());
        }
        self.splice.abort_switch();
    }

    /// When the current feed counts as stalled.
    fn stall_at(&self, routes: &RouteOptions, opening: Duration) -> Option<Instant> {
        let cur = self.current.as_ref()?;
        Some(match cur.accepted {
            None => cur.opened + opening,
            Some(at) => self.last_frame.map_or(at, |t| t.max(at)) + cur.stall.max(routes.stall_timeout),
        })
    }
}

/// Adds newly found forwarders to the routes considered (bounded).
fn merge_via(via: &mut Vec<PeerId>, found: Vec<PeerId>) {
    for p in found {
        if via.len() >= MAX_VIA {
            break;
        }
        if !via.contains(&p) {
            debug!(forwarder = %p, "found a forwarder");
            via.push(p);
        }
    }
}

/// Runs until `cancel`, the consumer hangs up, or a final refusal.
pub async fn run(
    node: Reach,
    opts: WatchOptions,
    routes: RouteOptions,
    tx: mpsc::Sender<WatchEvent>,
    cancel: CancellationToken,
) {
    let _ = run_inner(node, opts, routes, tx, cancel).await;
}

async fn run_inner(
    node: Reach,
    opts: WatchOptions,
    routes: RouteOptions,
    tx: mpsc::Sender<WatchEvent>,
    cancel: CancellationToken,
) -> Result<(), Gone> {
    let camera = opts.camera.as_str();
    let mut st = State {
        chooser: PathChooser::new(routes.policy.clone()),
        splice: Splice::new(SPLICE_BUFFER),
        current: None,
        pending: None,
        last_frame: None,
        interrupted: false,
    };
    let opening = Duration::from_secs(node.limits().request_timeout_s.max(1)) * 2;
    let mut backoff = Duration::ZERO;
    let mut attempts = 0u32;
    let mut tick = tokio::time::interval(routes.reevaluate_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut owner_peers = owners(&node, &opts).await;
    let mut via = routes.via.clone();
    via.truncate(MAX_VIA);
    let profile = opts.profile;
    let find = |node: &Reach| {
        let (node, camera) = (node.clone(), opts.camera.clone());
        tokio::spawn(async move {
            routes::forwarders(&node, &camera, profile)
                .await
                .into_iter()
                .filter(|(_, f)| f.live)
                .map(|(p, _)| p)
                .collect::<Vec<_>>()
        })
    };
    let mut discovery = None;
    let mut discovered_at: Option<Instant> = None;
    if routes.discover_every.is_some() {
        // Once up front, so a preferred forwarder is used from the start.
        if let Ok(found) = find(&node).await {
            merge_via(&mut via, found);
        }
        discovered_at = Some(Instant::now());
    }
    loop {
        if cancel.is_cancelled() {
            return Ok(());
        }
        if st.current.is_none() {
            if owner_peers.is_empty() {
                owner_peers = owners(&node, &opts).await;
            }
            let cands = routes::candidates(&node, &owner_peers, &via, routes.prefer_via).await;
            match st.chooser.decide(&cands, std::time::Instant::now()) {
                Decision::Open(r) | Decision::Switch { to: r, .. } => {
                    // Every route failed lately: back off before trying again.
                    if st.chooser.recent_failures(&r, std::time::Instant::now()) > 0 {
                        backoff = next_backoff(backoff, opts.backoff_min, opts.backoff_max);
                        tokio::select! {
                            _ = tokio::time::sleep(backoff) => {}
                            _ = cancel.cancelled() => return Ok(()),
                        }
                    }
                    debug!(camera, route = ?r, "opening route");
                    st.current = Some(open_feed(&node, &opts, r));
                }
                Decision::Stay | Decision::NoPath => {
                    backoff = next_backoff(backoff, opts.backoff_min, opts.backoff_max);
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = cancel.cancelled() => return Ok(()),
                    }
                    continue;
                }
            }
        }
        let stall_at = st
            .stall_at(&routes, opening)
            .unwrap_or_else(|| Instant::now() + opening);
        let mut failure: Option<(String, bool)> = None;
        tokio::select! {
            msg = async { match st.current.as_mut() { Some(c) => c.rx.recv().await, None => None } } => match msg {
                Some(FeedMsg::Accepted { peer, accept }) => {
                    let Some(cur) = st.current.as_mut() else { continue };
                    st.chooser.switched(cur.route, std::time::Instant::now());
                    attempts = 0;
                    backoff = Duration::ZERO;
                    let gap = if st.interrupted { st.last_frame.map(|t| t.elapsed()) } else { None };
                    info!(camera, %peer, route = ?cur.route, gap_ms = gap.map(|g| g.as_millis() as u64), "video started");
                    let codec = accept.codec.clone().unwrap_or_default();
                    cur.stall = stall_timeout(routes.stall_timeout, codec.fps_num, codec.fps_den);
                    cur.accept = Some((peer, accept.clone()));
                    cur.accepted = Some(Instant::now());
                    st.interrupted = false;
                    tx.send(WatchEvent::Started { peer, accept, gap }).await.map_err(|_| Gone)?;
                }
                Some(FeedMsg::Frame(f)) => {
                    let step = st.splice.push(From::Old, mark(&f), f);
                    st.deliver(step.deliver, &tx).await?;
                    if step.switched {
                        st.promote(camera, &tx).await?;
                    }
                }
                Some(FeedMsg::Failed { error, fatal }) => failure = Some((error, fatal)),
                None => failure = Some(("the route's feed ended".into(), false)),
            },
            msg = recv_pending(&mut st.pending) => match msg {
                Some(FeedMsg::Accepted { peer, accept }) => {
                    if let Some(p) = st.pending.as_mut() {
                        let codec = accept.codec.clone().unwrap_or_default();
                        p.stall = stall_timeout(routes.stall_timeout, codec.fps_num, codec.fps_den);
                        p.accept = Some((peer, accept));
                    }
                }
                Some(FeedMsg::Frame(f)) => {
                    let step = st.splice.push(From::New, mark(&f), f);
                    st.deliver(step.deliver, &tx).await?;
                    if step.switched {
                        st.promote(camera, &tx).await?;
                    }
                }
                Some(FeedMsg::Failed { error, .. }) => st.abort_switch(camera, &error),
                None => st.abort_switch(camera, "the new route's feed ended"),
            },
            _ = tokio::time::sleep_until(stall_at) => {
                let stall = st.current.as_ref().map_or(routes.stall_timeout, |c| c.stall.max(routes.stall_timeout));
                failure = Some((format!("no video for {stall:?}"), false));
            }
            found = async { discovery.as_mut().expect("guarded").await }, if discovery.is_some() => {
                discovery = None;
                discovered_at = Some(Instant::now());
                if let Ok(found) = found {
                    merge_via(&mut via, found);
                }
            }
            _ = tick.tick() => {
                if let Some(every) = routes.discover_every {
                    if discovery.is_none() && discovered_at.is_none_or(|t| t.elapsed() >= every) {
                        discovery = Some(find(&node));
                    }
                }
                if let Some(p) = &st.pending {
                    if p.opened.elapsed() > SWITCH_DEADLINE {
                        st.abort_switch(camera, "no keyframe in time");
                    }
                } else if st.current.as_ref().is_some_and(|c| c.accepted.is_some()) {
                    let cands = routes::candidates(&node, &owner_peers, &via, routes.prefer_via).await;
                    if let Decision::Switch { from, to } = st.chooser.decide(&cands, std::time::Instant::now()) {
                        info!(camera, ?from, ?to, "switching route (make-before-break)");
                        st.splice.begin_switch();
                        st.pending = Some(open_feed(&node, &opts, to));
                    }
                }
            }
            _ = cancel.cancelled() => return Ok(()),
        }
        let Some((error, fatal)) = failure else { continue };
        // The current route failed (broke, refused, or went silent).
        let route = st.current.take().map(|c| c.route);
        if let Some(r) = route {
            st.chooser.failed(r, std::time::Instant::now());
        }
        if fatal {
            let _ = tx.send(WatchEvent::Failed { error }).await;
            return Ok(());
        }
        if st.pending.as_ref().is_some_and(|p| p.accept.is_some()) {
            // Mid-switch: the new route is already up; hand over what it buffered.
            let frames = st.splice.old_ended();
            st.deliver(frames, &tx).await?;
            st.promote(camera, &tx).await?;
            continue;
        }
        st.abort_switch(camera, "the current route failed first");
        st.interrupted = true;
        attempts += 1;
        info!(camera, route = ?route, %error, "route failed; choosing another");
        if opts.max_attempts.is_some_and(|m| attempts >= m) {
            let _ = tx.send(WatchEvent::Failed { error }).await;
            return Ok(());
        }
        // Straight to the next best route: the failure penalty keeps this one out for a
        // while; the backoff applies only when no route can be opened at all.
        tx.send(WatchEvent::Interrupted {
            error,
            retry_in: Duration::ZERO,
        })
        .await
        .map_err(|_| Gone)?;
    }
}
