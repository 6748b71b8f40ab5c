//! What a caller asks of a watch ([`WatchOptions`], [`RouteOptions`]) and what it hears
//! back ([`WatchEvent`]), on the bounded channel `NodeHandle::watch` and
//! `NodeHandle::watch_routes` return.

use std::time::Duration;

use camesh_proto::{pb, MediaFrame};
use libp2p::PeerId;

use super::path::PathPolicy;

#[derive(Debug, Clone)]
pub struct WatchOptions {
    pub camera: String,
    /// Ask this peer only (otherwise: whoever the directory or the DHT names).
    pub peer: Option<PeerId>,
    pub profile: pb::Profile,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// Give up after this many failed attempts in a row (`None`: never).
    pub max_attempts: Option<u32>,
    pub user_agent: String,
    /// No frame for this long (at least three frame intervals) and the path is dead.
    pub stall_timeout: Duration,
    /// Also the camera's audio frames (their sequence numbers have
    /// [`crate::media::AUDIO_SEQUENCE_BIT`]; `Started`'s accept says what they are).
    pub audio: bool,
}

impl WatchOptions {
    pub fn new(camera: impl Into<String>) -> Self {
        Self {
            camera: camera.into(),
            peer: None,
            profile: pb::Profile::Main,
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(2),
            max_attempts: None,
            user_agent: format!("camesh/{}", env!("CARGO_PKG_VERSION")),
            stall_timeout: Duration::from_secs(1),
            audio: false,
        }
    }
}

#[derive(Debug)]
pub enum WatchEvent {
    /// Video (re)started; `gap` is the time without video before it, after an interruption.
    Started {
        peer: PeerId,
        accept: pb::StreamAccept,
        gap: Option<Duration>,
    },
    Frame(MediaFrame),
    /// The stream broke or could not be opened; the next attempt follows in `retry_in`.
    Interrupted {
        error: String,
        retry_in: Duration,
    },
    /// An adaptive watch moved to another profile (`mesh watch --profile auto`); a
    /// `Started` with the new profile's accept and its keyframe follow.
    Switched {
        profile: pb::Profile,
        reason: String,
    },
    /// Stopped for good (refused, or out of attempts).
    Failed {
        error: String,
    },
}

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
