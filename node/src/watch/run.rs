//! The viewer's IO loop: drives the pure [`Watch`] machine for one camera, over one route
//! (`NodeHandle::watch`) or several (`NodeHandle::watch_routes`). It takes a [`Reach`]
//! (the one seam for reaching a camera), never the node handle.
//!
//! Each feed the machine opens is a task: it subscribes on its target and pushes the
//! accept, the opened frames and its end into a small bounded channel (reads are not
//! cancel-safe; a channel is). Dropping the feed aborts the task and closes the stream.
//! The loop waits on the feeds, the machine's timer, the node's path events and forwarder
//! discovery at once, hands each to the machine with the time, and carries out what it
//! returns: open or close feeds, close connections, measure routes (answered at once),
//! and send frames and events to the caller's bounded channel.

use std::collections::VecDeque;
use std::task::Poll;
use std::time::{Duration, Instant};

use camesh_proto::{pb, MediaFrame};
use libp2p::PeerId;
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::live::Fault;
use super::machine::{Config, FeedId, Input, Output, Target, Watch};
use super::options::{RouteOptions, WatchEvent, WatchOptions};
use super::splice::Mark;
use crate::net::NetEvent;
use crate::reach::{live_request, routes, Reach};
use crate::stream::client::{ClientError, Subscription};

/// Events a watcher may have queued for its consumer.
const EVENTS: usize = 64;
/// Frames a feed may read ahead of the loop: one route, several routes.
const READ_AHEAD: usize = 4;
const FEED_QUEUE: usize = 16;

/// Opens a subscription on a feed's target.
async fn subscribe(
    reach: &Reach,
    camera: &str,
    target: Target,
    req: pb::StreamRequest,
) -> Result<Subscription, ClientError> {
    match target {
        Target::Camera(peer) => reach.subscribe(camera, peer, req).await,
        Target::Route(r) => reach.subscribe_route(camera, r, req).await,
    }
}

/// The camera's own node(s), as the directory or DHT name them.
async fn owners(reach: &Reach, camera: &str) -> Vec<PeerId> {
    reach.resolve(camera).await.into_iter().map(|(p, _)| p).collect()
}

/// Connected members that forward the camera live now.
async fn live_forwarders(reach: &Reach, camera: &str, profile: pb::Profile) -> Vec<PeerId> {
    routes::forwarders(reach, camera, profile)
        .await
        .into_iter()
        .filter(|(_, f)| f.live)
        .map(|(p, _)| p)
        .collect()
}

enum FeedMsg {
    Accepted { peer: PeerId, accept: pb::StreamAccept },
    Frame(MediaFrame),
    Failed { error: String, fault: Fault },
}

/// A subscription read by its own task.
struct Feed {
    id: FeedId,
    rx: mpsc::Receiver<FeedMsg>,
    task: JoinHandle<()>,
}

impl Drop for Feed {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn open_feed(reach: &Reach, opts: &WatchOptions, id: FeedId, target: Target, queue: usize) -> Feed {
    let (tx, rx) = mpsc::channel(queue);
    let (reach, camera) = (reach.clone(), opts.camera.clone());
    let mut req = live_request(&opts.camera, opts.profile, &opts.user_agent);
    req.audio = opts.audio;
    let fail = |e: ClientError| FeedMsg::Failed {
        fault: Fault::of(&e),
        error: e.to_string(),
    };
    let task = tokio::spawn(async move {
        let mut sub = match subscribe(&reach, &camera, target, req).await {
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
                    fault: Fault::Retry,
                },
                Err(e) => fail(e),
            };
            let end = matches!(msg, FeedMsg::Failed { .. });
            if tx.send(msg).await.is_err() || end {
                return;
            }
        }
    });
    Feed { id, rx, task }
}

fn mark(f: &MediaFrame) -> Mark {
    Mark {
        sequence: f.header.sequence,
        capture_us: f.header.capture_unix_us,
        keyframe: f.header.keyframe,
    }
}

/// The next message of any feed (the current one first); pending while there is none.
async fn next_msg(feeds: &mut [Feed]) -> (FeedId, Option<FeedMsg>) {
    std::future::poll_fn(|cx| {
        for f in feeds.iter_mut() {
            if let Poll::Ready(m) = f.rx.poll_recv(cx) {
                return Poll::Ready((f.id, m));
            }
        }
        Poll::Pending
    })
    .await
}

/// The consumer hung up, the watch ended, or it was cancelled.
struct Stop;

/// Starts watching `opts.camera` (see [`run`]); events arrive on the returned bounded
/// channel.
pub fn spawn(
    reach: Reach,
    opts: WatchOptions,
    routes: Option<RouteOptions>,
    cancel: CancellationToken,
) -> mpsc::Receiver<WatchEvent> {
    let (tx, rx) = mpsc::channel(EVENTS);
    tokio::spawn(run(reach, opts, routes, tx, cancel));
    rx
}

/// Watches `opts.camera` until `cancel`, the consumer hangs up, or the machine gives up:
/// over one route when `routes` is `None`, else over the direct route and forwarders.
pub async fn run(
    reach: Reach,
    opts: WatchOptions,
    routes: Option<RouteOptions>,
    tx: mpsc::Sender<WatchEvent>,
    cancel: CancellationToken,
) {
    let _ = drive(reach, opts, routes, tx, cancel).await;
}

async fn drive(
    reach: Reach,
    opts: WatchOptions,
    routes: Option<RouteOptions>,
    tx: mpsc::Sender<WatchEvent>,
    cancel: CancellationToken,
) -> Result<(), Stop> {
    let (cfg, queue) = match &routes {
        None => (Config::one(&opts), READ_AHEAD),
        Some(r) => {
            let opening = Duration::from_secs(reach.limits().request_timeout_s.max(1)) * 2;
            (Config::routes(&opts, r, opening), FEED_QUEUE)
        }
    };
    let prefer_via = routes.as_ref().is_some_and(|r| r.prefer_via);
    let mut net_events = reach.net().subscribe();
    let mut net_open = true;
    let mut watch = Watch::new(cfg, Instant::now());
    let mut todo: VecDeque<Output<MediaFrame>> = watch.start(Instant::now()).into();
    let mut feeds: Vec<Feed> = Vec::new();
    let mut discovery: Option<JoinHandle<Vec<PeerId>>> = None;
    // Audio frames skip the machine (it orders, splices and times video): those of the
    // peer the watch is started on go straight to the viewer.
    let mut feed_peers: Vec<(FeedId, PeerId)> = Vec::new();
    let mut started_on: Option<PeerId> = None;
    loop {
        while let Some(out) = todo.pop_front() {
            let answer = match out {
                Output::Open { feed, target } => {
                    feeds.push(open_feed(&reach, &opts, feed, target, queue));
                    None
                }
                Output::Close { feed } => {
                    feeds.retain(|f| f.id != feed);
                    None
                }
                Output::CloseConnections(peer) => {
                    reach.net().close_connections(peer).await;
                    None
                }
                Output::Resolve => Some(Input::Owners(until(&cancel, owners(&reach, &opts.camera)).await?)),
                Output::Measure { owners, via } => Some(Input::Candidates(
                    until(&cancel, routes::candidates(&reach, &owners, &via, prefer_via)).await?,
                )),
                Output::Discover => {
                    let (reach, camera, profile) = (reach.clone(), opts.camera.clone(), opts.profile);
                    discovery = Some(tokio::spawn(
                        async move { live_forwarders(&reach, &camera, profile).await },
                    ));
                    None
                }
                Output::Deliver(f) => {
                    tx.send(WatchEvent::Frame(f)).await.map_err(|_| Stop)?;
                    None
                }
                Output::Started { peer, accept, gap } => {
                    started_on = Some(peer);
                    tx.send(WatchEvent::Started {
                        peer,
                        accept: *accept,
                        gap,
                    })
                    .await
                    .map_err(|_| Stop)?;
                    None
                }
                Output::Interrupted { error, retry_in } => {
                    tx.send(WatchEvent::Interrupted { error, retry_in })
                        .await
                        .map_err(|_| Stop)?;
                    None
                }
                Output::Failed { error } => {
                    let _ = tx.send(WatchEvent::Failed { error }).await;
                    return Ok(());
                }
                Output::Stop => return Ok(()),
                // Read below from the machine itself, after every batch.
                Output::WakeAt(_) => None,
            };
            if let Some(input) = answer {
                todo.extend(watch.handle(input, Instant::now()));
            }
        }
        let wake = watch.next_wake();
        let input = tokio::select! {
            (feed, msg) = next_msg(&mut feeds) => match msg {
                Some(FeedMsg::Accepted { peer, accept }) => {
                    feed_peers.retain(|(id, _)| feeds.iter().any(|f| f.id == *id));
                    feed_peers.push((feed, peer));
                    Input::Accepted { feed, peer, accept: Box::new(accept) }
                }
                Some(FeedMsg::Frame(f)) if crate::media::is_audio(f.header.sequence) => {
                    let from = feed_peers.iter().find(|(id, _)| *id == feed).map(|(_, p)| *p);
                    if from.is_some() && from == started_on {
                        tx.send(WatchEvent::Frame(f)).await.map_err(|_| Stop)?;
                    }
                    continue;
                }
                Some(FeedMsg::Frame(f)) => Input::Frame { feed, mark: mark(&f), frame: f },
                Some(FeedMsg::Failed { error, fault }) => {
                    feeds.retain(|f| f.id != feed);
                    Input::FeedFailed { feed, error, fault }
                }
                None => {
                    feeds.retain(|f| f.id != feed);
                    Input::FeedFailed { feed, error: "the route's feed ended".into(), fault: Fault::Retry }
                }
            },
            _ = sleep_until(wake) => Input::Timer,
            ev = net_events.recv(), if net_open => match ev {
                Ok(NetEvent::DirectPath { peer }) => Input::DirectPath(peer),
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => {
                    net_open = false;
                    Input::NetClosed
                }
            },
            found = async { discovery.as_mut().expect("guarded by is_some").await }, if discovery.is_some() => {
                discovery = None;
                Input::Forwarders(found.unwrap_or_default())
            }
            _ = cancel.cancelled() => return Ok(()),
        };
        todo.extend(watch.handle(input, Instant::now()));
    }
}

/// Sleeps until `at`; forever when there is no timer.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(tokio::time::Instant::from_std(t)).await,
        None => std::future::pending().await,
    }
}

/// `f`, unless `cancel` comes first.
async fn until<T>(cancel: &CancellationToken, f: impl std::future::Future<Output = T>) -> Result<T, Stop> {
    tokio::select! {
        v = f => Ok(v),
        _ = cancel.cancelled() => Err(Stop),
    }
}
