//! The vocabulary of the viewer's state machine ([`super::machine::Watch`]): its
//! [`Config`] (from [`WatchOptions`] and [`RouteOptions`]), the [`Input`]s the IO loop
//! feeds it and the [`Output`]s it asks the IO loop to carry out. Pure data.

use std::time::{Duration, Instant};

use camesh_proto::pb;
use libp2p::PeerId;

use super::live::{Fault, MAX_LAG};
use super::options::{RouteOptions, WatchOptions};
use super::path::{Candidate, PathPolicy, Route};
use super::splice::Mark;

/// Forwarders considered at most (given and discovered).
pub const MAX_VIA: usize = 8;

/// Names a feed: one subscription the machine asked the IO to open.
pub type FeedId = u64;

/// What a feed subscribes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Whoever serves the camera: this peer, or each one the directory or DHT names.
    Camera(Option<PeerId>),
    /// One route: the camera's node, or a forwarder.
    Route(Route),
}

/// Several routes: the knobs of [`RouteOptions`] the machine uses.
#[derive(Debug, Clone)]
pub struct Routes {
    pub via: Vec<PeerId>,
    pub prefer_via: bool,
    pub policy: PathPolicy,
    pub reevaluate_every: Duration,
    pub discover_every: Option<Duration>,
}

#[derive(Debug, Clone)]
pub struct Config {
    /// For logs.
    pub camera: String,
    pub peer: Option<PeerId>,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    pub max_attempts: Option<u32>,
    /// The least stall timeout (a slow camera's accept may raise it).
    pub stall_min: Duration,
    /// How long a feed may take to be accepted (`None`: the IO bounds it).
    pub open_timeout: Option<Duration>,
    /// Reopen at the newest keyframe past this lag (`None`: not measured).
    pub max_lag: Option<Duration>,
    /// `None`: one route.
    pub routes: Option<Routes>,
}

impl Config {
    /// Watching over one route (the camera's node).
    pub fn one(opts: &WatchOptions) -> Self {
        Self {
            camera: opts.camera.clone(),
            peer: opts.peer,
            backoff_min: opts.backoff_min,
            backoff_max: opts.backoff_max,
            max_attempts: opts.max_attempts,
            stall_min: opts.stall_timeout,
            open_timeout: None,
            max_lag: Some(MAX_LAG),
            routes: None,
        }
    }

    /// Watching over several routes; a feed not accepted within `opening` has failed.
    pub fn routes(opts: &WatchOptions, routes: &RouteOptions, opening: Duration) -> Self {
        let mut via = routes.via.clone();
        via.truncate(MAX_VIA);
        Self {
            stall_min: routes.stall_timeout,
            open_timeout: Some(opening),
            max_lag: None,
            routes: Some(Routes {
                via,
                prefer_via: routes.prefer_via,
                policy: routes.policy.clone(),
                reevaluate_every: routes.reevaluate_every,
                discover_every: routes.discover_every,
            }),
            ..Self::one(opts)
        }
    }
}

#[derive(Debug)]
pub enum Input<T> {
    /// The feed's source accepted the subscription.
    Accepted {
        feed: FeedId,
        peer: PeerId,
        accept: Box<pb::StreamAccept>,
    },
    /// One frame of a feed, with its ordering facts.
    Frame { feed: FeedId, mark: Mark, frame: T },
    /// The feed could not be opened, broke or ended.
    FeedFailed { feed: FeedId, error: String, fault: Fault },
    /// The answer to [`Output::Resolve`]: the camera's own node(s).
    Owners(Vec<PeerId>),
    /// The answer to [`Output::Measure`].
    Candidates(Vec<Candidate>),
    /// The answer to [`Output::Discover`]: forwarders that serve the camera live now.
    Forwarders(Vec<PeerId>),
    /// A hole punch gave a direct connection to `peer`.
    DirectPath(PeerId),
    /// The node's event stream closed (it is shutting down).
    NetClosed,
    /// The time of the last [`Output::WakeAt`] has come (early calls are harmless).
    Timer,
}

#[derive(Debug, PartialEq)]
pub enum Output<T> {
    /// Open a feed and report it with this id.
    Open {
        feed: FeedId,
        target: Target,
    },
    /// Drop the feed (its later inputs are ignored anyway).
    Close {
        feed: FeedId,
    },
    /// Close every connection to `peer`, so the next attempt dials all its paths afresh.
    CloseConnections(PeerId),
    /// Find the camera's node(s); answer with [`Input::Owners`].
    Resolve,
    /// Describe these routes now; answer with [`Input::Candidates`].
    Measure {
        owners: Vec<PeerId>,
        via: Vec<PeerId>,
    },
    /// Ask who forwards the camera; answer with [`Input::Forwarders`] when known.
    Discover,
    /// Hand a frame to the viewer.
    Deliver(T),
    Started {
        peer: PeerId,
        accept: Box<pb::StreamAccept>,
        gap: Option<Duration>,
    },
    Interrupted {
        error: String,
        retry_in: Duration,
    },
    /// Stopped for good; nothing follows.
    Failed {
        error: String,
    },
    /// Stopped without a word (the node is going away); nothing follows.
    Stop,
    /// Send [`Input::Timer`] at this time. At most one per call, last; none: no timer.
    /// (The same as [`super::machine::Watch::next_wake`] after the call.)
    WakeAt(Instant),
}
