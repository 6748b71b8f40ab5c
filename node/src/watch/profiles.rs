//! Adaptive live, IO (`mesh watch --profile auto`): one watch of a camera that moves
//! between its main and sub profiles as the pure [`Adapt`] controller decides. Each
//! profile is an ordinary watch ([`super::run`], with its own retries); this loop feeds
//! their events, ping RTTs of the serving peer and the time to the controller and carries
//! out its actions: open the other profile beside the current one, close it, or switch
//! to it at its keyframe (make before break: the viewer's last frame of the old profile
//! is followed by a keyframe of the new one). Only the current profile's frames reach the
//! caller; after a switch down the main subscription is closed, so the camera sends this
//! viewer nothing but sub.

use std::time::{Duration, Instant};

use camesh_proto::pb::{self, Profile};
use libp2p::PeerId;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::adapt::{Action, Adapt, AdaptConfig, Seen, Which};
use super::options::{WatchEvent, WatchOptions};
use crate::clock::now_unix_us;
use crate::reach::Reach;

/// Events queued for the caller.
const EVENTS: usize = 64;
/// How often the controller's clock ticks.
const TICK: Duration = Duration::from_millis(250);
/// How often the serving peer's ping RTT is read.
const RTT_EVERY: Duration = Duration::from_secs(2);

/// One profile's watch.
struct Leg {
    profile: Profile,
    events: mpsc::Receiver<WatchEvent>,
    cancel: CancellationToken,
    /// Who serves it and its accept, once started.
    started: Option<(PeerId, pb::StreamAccept)>,
}

impl Leg {
    fn open(reach: &Reach, opts: &WatchOptions, profile: Profile, parent: &CancellationToken) -> Self {
        let cancel = parent.child_token();
        let mut o = opts.clone();
        o.profile = profile;
        let events = super::run::spawn(reach.clone(), o, None, cancel.clone());
        Self {
            profile,
            events,
            cancel,
            started: None,
        }
    }
}

impl Drop for Leg {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Starts an adaptive watch of `opts.camera`, beginning on `opts.profile`.
pub fn spawn(reach: Reach, opts: WatchOptions, cancel: CancellationToken) -> mpsc::Receiver<WatchEvent> {
    let (tx, rx) = mpsc::channel(EVENTS);
    tokio::spawn(async move {
        let _ = drive(reach, opts, AdaptConfig::default(), tx, cancel).await;
    });
    rx
}

fn seen(f: &camesh_proto::MediaFrame) -> Seen {
    Seen {
        keyframe: f.header.keyframe,
        skipped_before: u64::from(f.header.skipped_before),
        delay_us: now_unix_us().saturating_sub(f.header.capture_unix_us),
        bytes: f.payload.len(),
    }
}

/// The caller hung up.
struct Gone;

async fn drive(
    reach: Reach,
    opts: WatchOptions,
    cfg: AdaptConfig,
    tx: mpsc::Sender<WatchEvent>,
    cancel: CancellationToken,
) -> Result<(), Gone> {
    let camera = opts.camera.clone();
    let mut adapt = Adapt::new(cfg, opts.profile, Instant::now());
    let mut current = Leg::open(&reach, &opts, opts.profile, &cancel);
    let mut other: Option<Leg> = None;
    let mut tick = tokio::time::interval(TICK);
    let mut rtt_every = tokio::time::interval(RTT_EVERY);
    loop {
        let actions = tokio::select! {
            ev = current.events.recv() => match ev {
                None => return Ok(()),
                Some(WatchEvent::Frame(f)) => {
                    let a = adapt.frame(Which::Current, seen(&f), Instant::now());
                    tx.send(WatchEvent::Frame(f)).await.map_err(|_| Gone)?;
                    a
                }
                Some(WatchEvent::Started { peer, accept, gap }) => {
                    current.started = Some((peer, accept.clone()));
                    tx.send(WatchEvent::Started { peer, accept, gap }).await.map_err(|_| Gone)?;
                    vec![]
                }
                Some(ev @ WatchEvent::Interrupted { .. }) => {
                    tx.send(ev).await.map_err(|_| Gone)?;
                    adapt.interrupted(Which::Current, Instant::now())
                }
                Some(ev) => {
                    tx.send(ev).await.map_err(|_| Gone)?;
                    vec![]
                }
            },
            ev = async { other.as_mut().expect("guarded").events.recv().await }, if other.is_some() => match ev {
                Some(WatchEvent::Frame(f)) => {
                    let a = adapt.frame(Which::Other, seen(&f), Instant::now());
                    if let Some(Action::Switch { to, reason }) = a.iter().find(|a| matches!(a, Action::Switch { .. })) {
                        let Some(leg) = other.take() else { continue };
                        info!(camera = %camera, profile = ?to, %reason, "switched profile");
                        current = leg;
                        tx.send(WatchEvent::Switched { profile: *to, reason: reason.clone() }).await.map_err(|_| Gone)?;
                        if let Some((peer, accept)) = current.started.clone() {
                            tx.send(WatchEvent::Started { peer, accept, gap: None }).await.map_err(|_| Gone)?;
                        }
                        tx.send(WatchEvent::Frame(f)).await.map_err(|_| Gone)?;
                    }
                    a
                }
                Some(WatchEvent::Started { peer, accept, .. }) => {
                    if let Some(o) = other.as_mut() {
                        o.started = Some((peer, accept));
                    }
                    vec![]
                }
                Some(WatchEvent::Interrupted { error, .. }) => {
                    debug!(camera = %camera, %error, "the other profile's feed was interrupted");
                    adapt.interrupted(Which::Other, Instant::now())
                }
                Some(WatchEvent::Failed { error }) => adapt.other_failed(&error, Instant::now()),
                Some(WatchEvent::Switched { .. }) => vec![],
                None => adapt.other_failed("its watch ended", Instant::now()),
            },
            _ = tick.tick() => adapt.tick(Instant::now()),
            _ = rtt_every.tick() => match serving_rtt(&reach, &current).await {
                Some(rtt) => adapt.rtt(rtt, Instant::now()),
                None => vec![],
            },
            _ = cancel.cancelled() => return Ok(()),
        };
        for a in actions {
            match a {
                Action::Open(p) => {
                    debug!(camera = %camera, profile = ?p, "opening the other profile beside the current one");
                    other = Some(Leg::open(&reach, &opts, p, &cancel));
                }
                Action::CloseOther { reason } => {
                    info!(camera = %camera, profile = ?other.as_ref().map(|o| o.profile), %reason, "closed the other profile");
                    other = None;
                }
                // Carried out above, where the frame is at hand.
                Action::Switch { .. } => {}
            }
        }
    }
}

/// The ping RTT of the peer serving the current profile.
async fn serving_rtt(reach: &Reach, leg: &Leg) -> Option<Duration> {
    let (peer, _) = leg.started.as_ref()?;
    reach.peers().await.ok()?.into_iter().find(|p| p.peer == *peer)?.rtt
}
