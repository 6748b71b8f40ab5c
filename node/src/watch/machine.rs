//! The viewer's state machine, pure: [`Watch::handle`] takes an [`Input`] and the time
//! and returns [`Output`]s. No tokio, no sockets, no clock of its own; the IO loop
//! ([`super::run`]) turns outputs into IO and IO into inputs, and tests drive it with
//! events and time.
//!
//! One machine for both ways of watching a camera:
//! - one route ([`Config::one`]): a feed to whoever serves the camera (the pinned peer,
//!   or each peer the directory or DHT names, in turn). When a hole punch gives a direct
//!   connection to that peer ([`Input::DirectPath`]), a second feed on
//!   `Route::Direct(peer)` is opened (new streams go direct) and spliced in
//!   make-before-break. A failure is retried after an exponential backoff.
//! - several routes ([`Config::routes`]): the direct route and forwarders, chosen by the
//!   pure [`PathChooser`] with hysteresis from candidates the IO measures
//!   ([`Output::Measure`]); a clearly better route is opened next to the current one and
//!   spliced in; a failed route is replaced by the next best at once, with a backoff only
//!   when every route failed lately. Forwarders may be discovered on the way.
//!
//! In both, frames pass the [`Splice`] (no gap, no duplicate, replays of a cached GOP
//! dropped); a current feed that stays silent past its stall timeout has failed; one
//! route also measures lag ([`LagMeter`]) and past [`super::live::MAX_LAG`] drops the feed and reopens
//! at the newest keyframe. Where the two former viewers differed (lag, the stall's text,
//! `Started` after a switch, following a direct path, the retry delay) the machine keeps
//! each one's behaviour; those are the seams to unify later.

use std::time::{Duration, Instant};

use camesh_proto::pb;
use libp2p::PeerId;
use tracing::{debug, info, warn};

use super::event::MAX_VIA;
pub use super::event::{Config, FeedId, Input, Output, Routes, Target};
use super::live::{stall_timeout, Fault, LagMeter};
use super::path::{Candidate, Decision, PathChooser, Route};
use super::splice::{Mark, Side, Splice};
use crate::backoff::next_backoff;

/// How long a make-before-break switch to the direct path may take (one route) before
/// the old path is kept: the subscription, plus one stall timeout for its first frame.
const SWITCH_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a new route has to deliver its first keyframe before the switch is dropped.
const SWITCH_DEADLINE: Duration = Duration::from_secs(5);
/// Frames of a new path held while the old one catches up (about 2 s at 30 fps).
const SPLICE_BUFFER: usize = 64;
/// One open (or opening) feed.
#[derive(Debug)]
struct Feed {
    id: FeedId,
    target: Target,
    opened: Instant,
    /// Since when it is the current feed and delivering (after its accept).
    accepted: Option<Instant>,
    source: Option<(PeerId, pb::StreamAccept)>,
    /// Silence this long means the feed is dead (from its accept).
    stall: Duration,
}

impl Feed {
    fn route(&self) -> Option<Route> {
        match self.target {
            Target::Route(r) => Some(r),
            Target::Camera(_) => None,
        }
    }
}

/// What the machine waits for when no feed is current.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Not started yet.
    Idle,
    /// A feed is current.
    Feeding,
    /// For [`Input::Owners`]; `first`: at the start.
    Resolving {
        first: bool,
    },
    /// For the first [`Input::Forwarders`].
    FirstDiscovery,
    /// For [`Input::Candidates`] to open a route.
    Measuring,
    /// Backing off: then open (one route) or measure again (routes).
    RetryAt(Instant),
    /// Backing off before opening a route that failed lately.
    OpenAt(Route, Instant),
    Done,
}

/// The state of one watch.
#[derive(Debug)]
pub struct Watch<T> {
    cfg: Config,
    start: Instant,
    phase: Phase,
    chooser: PathChooser,
    splice: Splice<T>,
    lag: LagMeter,
    current: Option<Feed>,
    /// A feed being switched to, and when the switch is given up.
    pending: Option<(Feed, Instant)>,
    next_feed: FeedId,
    last_frame: Option<Instant>,
    interrupted: bool,
    attempts: u32,
    backoff: Duration,
    owners: Vec<PeerId>,
    via: Vec<PeerId>,
    reevaluating: bool,
    discovering: bool,
    discovered_at: Option<Instant>,
    next_tick: Option<Instant>,
    out: Vec<Output<T>>,
}

impl<T> Watch<T> {
    /// A new watch; `start` gives its first outputs.
    pub fn new(cfg: Config, now: Instant) -> Self {
        let policy = cfg.routes.as_ref().map(|r| r.policy.clone()).unwrap_or_default();
        let via = cfg.routes.as_ref().map(|r| r.via.clone()).unwrap_or_default();
        Self {
            start: now,
            phase: Phase::Idle,
            chooser: PathChooser::new(policy),
            splice: Splice::new(SPLICE_BUFFER),
            lag: LagMeter::default(),
            current: None,
            pending: None,
            next_feed: 0,
            last_frame: None,
            interrupted: false,
            attempts: 0,
            backoff: Duration::ZERO,
            owners: cfg.peer.into_iter().collect(),
            via,
            reevaluating: false,
            discovering: false,
            discovered_at: None,
            next_tick: None,
            out: Vec::new(),
            cfg,
        }
    }

    pub fn is_done(&self) -> bool {
        self.phase == Phase::Done
    }

    /// Frames dropped as already delivered, and switches that had to leave a gap.
    pub fn spliced(&self) -> (u64, u64) {
        (self.splice.duplicates, self.splice.gaps)
    }

    /// The first outputs.
    pub fn start(&mut self, now: Instant) -> Vec<Output<T>> {
        match &self.cfg.routes {
            None => self.open(Target::Camera(self.cfg.peer), now),
            Some(r) => {
                self.next_tick = Some(now);
                if self.cfg.peer.is_none() {
                    self.phase = Phase::Resolving { first: true };
                    self.out.push(Output::Resolve);
                } else if r.discover_every.is_some() {
                    self.first_discovery();
                } else {
                    self.need_route();
                }
            }
        }
        self.flush()
    }

    /// One input at `now`.
    pub fn handle(&mut self, input: Input<T>, now: Instant) -> Vec<Output<T>> {
        if self.is_done() {
            return Vec::new();
        }
        match input {
            Input::Accepted { feed, peer, accept } => self.accepted(feed, peer, *accept, now),
            Input::Frame { feed, mark, frame } => self.frame(feed, mark, frame, now),
            Input::FeedFailed { feed, error, fault } => {
                if self.current.as_ref().is_some_and(|c| c.id == feed) {
                    self.fail_current(error, fault, now);
                } else if self.pending.as_ref().is_some_and(|(p, _)| p.id == feed) {
                    self.abort_switch(&error, now);
                }
            }
            Input::Owners(owners) => {
                if let Phase::Resolving { first } = self.phase {
                    self.owners = owners;
                    let discover = self.cfg.routes.as_ref().is_some_and(|r| r.discover_every.is_some());
                    if !first {
                        self.measure();
                    } else if discover {
                        self.first_discovery();
                    } else {
                        self.need_route();
                    }
                }
            }
            Input::Forwarders(found) => {
                self.discovering = false;
                self.discovered_at = Some(now);
                self.merge_via(found);
                if self.phase == Phase::FirstDiscovery {
                    self.need_route();
                }
            }
            Input::Candidates(cands) => self.candidates(&cands, now),
            Input::DirectPath(peer) => self.direct_path(peer, now),
            Input::NetClosed => {
                if self.cfg.routes.is_none() {
                    self.close_all();
                    self.phase = Phase::Done;
                    self.out.push(Output::Stop);
                }
            }
            Input::Timer => self.timer(now),
        }
        self.flush()
    }

    /// The pending outputs, ending with the next wake-up.
    fn flush(&mut self) -> Vec<Output<T>> {
        if let Some(at) = self.next_wake() {
            self.out.push(Output::WakeAt(at));
        }
        std::mem::take(&mut self.out)
    }

    /// When the machine next wants [`Input::Timer`].
    pub fn next_wake(&self) -> Option<Instant> {
        let phase = match self.phase {
            Phase::RetryAt(t) | Phase::OpenAt(_, t) => Some(t),
            _ => None,
        };
        let tick = self.next_tick.filter(|_| self.phase == Phase::Feeding);
        [phase, self.stall_at(), self.pending.as_ref().map(|(_, t)| *t), tick]
            .into_iter()
            .flatten()
            .min()
    }

    /// When the current feed counts as stalled.
    fn stall_at(&self) -> Option<Instant> {
        let cur = self.current.as_ref()?;
        match cur.accepted {
            None => self.cfg.open_timeout.map(|o| cur.opened + o),
            Some(at) => Some(self.last_frame.map_or(at, |t| t.max(at)) + cur.stall.max(self.cfg.stall_min)),
        }
    }

    fn open(&mut self, target: Target, now: Instant) {
        let feed = self.new_feed(target, now);
        debug!(camera = %self.cfg.camera, feed = feed.id, ?target, "opening");
        self.out.push(Output::Open { feed: feed.id, target });
        self.current = Some(feed);
        self.phase = Phase::Feeding;
    }

    fn new_feed(&mut self, target: Target, now: Instant) -> Feed {
        self.next_feed += 1;
        Feed {
            id: self.next_feed,
            target,
            opened: now,
            accepted: None,
            source: None,
            stall: Duration::ZERO,
        }
    }

    fn close_all(&mut self) {
        if let Some(c) = self.current.take() {
            self.out.push(Output::Close { feed: c.id });
        }
        if let Some((p, _)) = self.pending.take() {
            self.out.push(Output::Close { feed: p.id });
        }
    }

    fn first_discovery(&mut self) {
        self.phase = Phase::FirstDiscovery;
        self.discovering = true;
        self.out.push(Output::Discover);
    }

    /// No current feed (several routes): find the owners if none, then measure.
    fn need_route(&mut self) {
        if self.owners.is_empty() {
            self.phase = Phase::Resolving { first: false };
            self.out.push(Output::Resolve);
        } else {
            self.measure();
        }
    }

    fn measure(&mut self) {
        self.phase = Phase::Measuring;
        self.out.push(Output::Measure {
            owners: self.owners.clone(),
            via: self.via.clone(),
        });
    }

    /// Adds newly found forwarders to the routes considered (bounded).
    fn merge_via(&mut self, found: Vec<PeerId>) {
        for p in found {
            if self.via.len() >= MAX_VIA {
                break;
            }
            if !self.via.contains(&p) {
                debug!(forwarder = %p, "found a forwarder");
                self.via.push(p);
            }
        }
    }

    fn grow_backoff(&mut self) -> Duration {
        self.backoff = next_backoff(self.backoff, self.cfg.backoff_min, self.cfg.backoff_max);
        self.backoff
    }

    fn candidates(&mut self, cands: &[Candidate], now: Instant) {
        if self.phase == Phase::Measuring {
            match self.chooser.decide(cands, now) {
                Decision::Open(r) | Decision::Switch { to: r, .. } => {
                    // Every route failed lately: back off before trying again.
                    if self.chooser.recent_failures(&r, now) > 0 {
                        let wait = self.grow_backoff();
                        self.phase = Phase::OpenAt(r, now + wait);
                    } else {
                        self.open(Target::Route(r), now);
                    }
                }
                Decision::Stay | Decision::NoPath => {
                    let wait = self.grow_backoff();
                    self.phase = Phase::RetryAt(now + wait);
                }
            }
        } else if std::mem::take(&mut self.reevaluating) && self.pending.is_none() {
            if self.current.as_ref().is_none_or(|c| c.accepted.is_none()) {
                return;
            }
            if let Decision::Switch { from, to } = self.chooser.decide(cands, now) {
                info!(camera = %self.cfg.camera, ?from, ?to, "switching route (make-before-break)");
                self.begin_switch(Target::Route(to), now + SWITCH_DEADLINE, now);
            }
        }
    }

    fn begin_switch(&mut self, target: Target, deadline: Instant, now: Instant) {
        self.splice.begin_switch();
        let feed = self.new_feed(target, now);
        self.out.push(Output::Open { feed: feed.id, target });
        self.pending = Some((feed, deadline));
    }

    fn direct_path(&mut self, peer: PeerId, now: Instant) {
        if self.cfg.routes.is_some() || self.pending.is_some() {
            return;
        }
        let Some(cur) = self.current.as_ref() else { return };
        if cur.accepted.is_none() || cur.source.as_ref().map(|(p, _)| *p) != Some(peer) {
            return;
        }
        info!(camera = %self.cfg.camera, %peer, "direct path: switching the stream over");
        let deadline = now + SWITCH_TIMEOUT + cur.stall.max(self.cfg.stall_min);
        self.begin_switch(Target::Route(Route::Direct(peer)), deadline, now);
    }

    fn accepted(&mut self, feed: FeedId, peer: PeerId, accept: pb::StreamAccept, now: Instant) {
        let codec = accept.codec.clone().unwrap_or_default();
        let stall = stall_timeout(self.cfg.stall_min, codec.fps_num, codec.fps_den);
        if let Some((p, _)) = self.pending.as_mut().filter(|(p, _)| p.id == feed) {
            p.stall = stall;
            p.source = Some((peer, accept));
            return;
        }
        let Some(cur) = self.current.as_mut().filter(|c| c.id == feed) else {
            return;
        };
        if let Some(r) = cur.route() {
            self.chooser.switched(r, now);
        }
        self.attempts = 0;
        self.backoff = Duration::ZERO;
        let gap = if self.interrupted {
            self.last_frame.map(|t| now.saturating_duration_since(t))
        } else {
            None
        };
        info!(camera = %self.cfg.camera, %peer, target = ?cur.target, gap_ms = gap.map(|g| g.as_millis() as u64), "video started");
        cur.stall = stall;
        cur.source = Some((peer, accept.clone()));
        cur.accepted = Some(now);
        self.interrupted = false;
        self.lag = LagMeter::default();
        self.out.push(Output::Started {
            peer,
            accept: Box::new(accept),
            gap,
        });
    }

    fn frame(&mut self, feed: FeedId, mark: Mark, frame: T, now: Instant) {
        let side = if self.current.as_ref().is_some_and(|c| c.id == feed) {
            Side::Old
        } else if self.pending.as_ref().is_some_and(|(p, _)| p.id == feed) {
            Side::New
        } else {
            return;
        };
        if side == Side::Old && !self.splice.is_duplicate(&mark) {
            if let Some(max) = self.cfg.max_lag {
                let recv_us = i64::try_from(now.saturating_duration_since(self.start).as_micros()).unwrap_or(i64::MAX);
                let behind = self.lag.observe(mark.capture_us, recv_us);
                if behind > max {
                    // Drop the feed and what the path holds of it; the next one starts at
                    // the newest keyframe (a visible skip, not a growing delay).
                    warn!(camera = %self.cfg.camera, lag_ms = behind.as_millis() as u64, "falling behind live: skipping to the newest keyframe");
                    let error = format!(
                        "{:.1}s behind live: reopening at the newest keyframe",
                        behind.as_secs_f64()
                    );
                    self.fail_current(error, Fault::Retry, now);
                    return;
                }
            }
        }
        let step = self.splice.push(side, mark, frame);
        if !step.deliver.is_empty() {
            self.last_frame = Some(now);
        }
        self.out.extend(step.deliver.into_iter().map(Output::Deliver));
        if step.switched {
            self.promote(now);
        }
    }

    /// The splice handed over: the pending feed becomes current, the old one is closed.
    fn promote(&mut self, now: Instant) {
        let Some((mut new, _)) = self.pending.take() else {
            return;
        };
        new.accepted = Some(now);
        let old = self.current.replace(new);
        if let Some(old) = &old {
            self.out.push(Output::Close { feed: old.id });
        }
        let Some(cur) = self.current.as_ref() else { return };
        match (cur.route(), &self.cfg.routes) {
            (Some(r), Some(_)) => {
                self.chooser.switched(r, now);
                info!(camera = %self.cfg.camera, from = ?old.and_then(|o| o.route()), to = ?r, "switched route");
                if let Some((peer, accept)) = cur.source.clone() {
                    self.out.push(Output::Started {
                        peer,
                        accept: Box::new(accept),
                        gap: None,
                    });
                }
            }
            _ => {
                self.lag = LagMeter::default();
                self.last_frame = Some(now);
                info!(camera = %self.cfg.camera, "stream moved to the direct path");
            }
        }
        self.phase = Phase::Feeding;
    }

    fn abort_switch(&mut self, why: &str, now: Instant) {
        if let Some((p, _)) = self.pending.take() {
            debug!(camera = %self.cfg.camera, target = ?p.target, reason = why, "switch abandoned; staying");
            self.out.push(Output::Close { feed: p.id });
            if let (Some(r), Some(_)) = (p.route(), &self.cfg.routes) {
                self.chooser.failed(r, now);
            }
        }
        self.splice.abort_switch();
    }

    /// Whether a failure of `feed` with `fault` ends the watch: a refusal by the camera's
    /// own node that no other attempt or route can fix.
    fn is_fatal(&self, feed: &Feed, fault: Fault) -> bool {
        match self.cfg.routes {
            None => fault == Fault::Refused && feed.accepted.is_none(),
            Some(_) => fault != Fault::Retry && matches!(feed.target, Target::Route(Route::Direct(_))),
        }
    }

    /// The current feed failed (could not open, broke, fell behind, or went silent).
    fn fail_current(&mut self, error: String, fault: Fault, now: Instant) {
        let Some(cur) = self.current.take() else { return };
        self.out.push(Output::Close { feed: cur.id });
        if let (Some(r), Some(_)) = (cur.route(), &self.cfg.routes) {
            self.chooser.failed(r, now);
        }
        if self.is_fatal(&cur, fault) {
            self.finish_failed(error);
            return;
        }
        if self.pending.as_ref().is_some_and(|(p, _)| p.source.is_some()) {
            // Mid-switch: the new feed is already up; hand over what it buffered.
            let frames = self.splice.old_ended();
            if !frames.is_empty() {
                self.last_frame = Some(now);
            }
            self.out.extend(frames.into_iter().map(Output::Deliver));
            self.promote(now);
            return;
        }
        self.abort_switch("the current feed failed first", now);
        self.interrupted = true;
        self.attempts += 1;
        info!(camera = %self.cfg.camera, target = ?cur.target, %error, "watch interrupted");
        if self.cfg.max_attempts.is_some_and(|m| self.attempts >= m) {
            self.finish_failed(error);
            return;
        }
        if self.cfg.routes.is_none() {
            let retry_in = self.grow_backoff();
            self.out.push(Output::Interrupted { error, retry_in });
            self.phase = Phase::RetryAt(now + retry_in);
        } else {
            // Straight to the next best route: the failure penalty keeps this one out for
            // a while; the backoff applies only when no route can be opened at all.
            self.out.push(Output::Interrupted {
                error,
                retry_in: Duration::ZERO,
            });
            self.need_route();
        }
    }

    fn finish_failed(&mut self, error: String) {
        self.close_all();
        self.phase = Phase::Done;
        self.out.push(Output::Failed { error });
    }

    fn timer(&mut self, now: Instant) {
        match self.phase {
            Phase::RetryAt(t) if now >= t => match self.cfg.routes {
                None => self.open(Target::Camera(self.cfg.peer), now),
                Some(_) => self.need_route(),
            },
            Phase::OpenAt(r, t) if now >= t => self.open(Target::Route(r), now),
            _ => {}
        }
        if self.pending.as_ref().is_some_and(|(_, t)| now >= *t) {
            self.abort_switch("no keyframe in time", now);
        }
        if self.stall_at().is_some_and(|t| now >= t) {
            self.stalled(now);
        }
        let tick_due = self.phase == Phase::Feeding && self.next_tick.is_some_and(|t| now >= t);
        if let (true, Some(r)) = (tick_due, &self.cfg.routes) {
            self.next_tick = Some(now + r.reevaluate_every);
            if let Some(every) = r.discover_every {
                if !self.discovering
                    && self
                        .discovered_at
                        .is_none_or(|t| now.saturating_duration_since(t) >= every)
                {
                    self.discovering = true;
                    self.out.push(Output::Discover);
                }
            }
            if self.pending.is_none() && self.current.as_ref().is_some_and(|c| c.accepted.is_some()) {
                self.reevaluating = true;
                self.out.push(Output::Measure {
                    owners: self.owners.clone(),
                    via: self.via.clone(),
                });
            }
        }
    }

    /// Silence on a live feed: the path is gone (a relay died, a NAT mapping expired).
    fn stalled(&mut self, now: Instant) {
        let Some(cur) = self.current.as_ref() else { return };
        let stall = cur.stall.max(self.cfg.stall_min);
        let error = match (&self.cfg.routes, &cur.source) {
            (None, Some((peer, _))) => {
                // Drop every connection to the source so the next attempt dials all
                // known paths afresh.
                warn!(camera = %self.cfg.camera, %peer, stall_ms = stall.as_millis() as u64, "no video: the path stalled");
                let error = format!("no video from {peer} for {:.1}s", stall.as_secs_f64());
                self.out.push(Output::CloseConnections(*peer));
                error
            }
            _ => format!("no video for {stall:?}"),
        };
        self.fail_current(error, Fault::Retry, now);
    }
}

#[cfg(test)]
mod tests;
