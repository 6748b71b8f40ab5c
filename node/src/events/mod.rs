//! Camera events over the mesh (#17): `/camesh/events/1`.
//!
//! ```text
//! hub ─► detect (motion: decode the sub stream, difference pictures) ─┐
//! camera's ONVIF PullPoint ─► pullpoint ──────────────────────────────┴─► EventBus ─► serve ─► viewers, NVRs
//!                                                                  (signed, kept, fanned out)
//! ```
//!
//! Every event is a [`pb::CameraEvent`] signed by the camera's node key (kind "event"),
//! so it stays the camera's word when an NVR stores and serves it later: the camera's
//! membership certificate binds the camera id to that key.
//!
//! - [`log`] (pure): a bounded, time-ordered store of signed events and its queries.
//! - [`bus`]: per camera, the recent events and a bounded broadcast of new ones; what the
//!   camera node publishes into and what an NVR fills with what it stores.
//! - [`detect`] (IO): motion detection of one camera (`[camera.motion]`).
//! - [`pullpoint`] (IO): the camera's own ONVIF events (`[camera.onvif] events = true`).
//! - [`serve`] (IO): the protocol's serving side (camera node: `live` right; NVR:
//!   `playback` right); [`client`] (IO): the asking side, for `mesh events` and the NVR.

pub mod bus;
pub mod client;
pub mod detect;
pub mod log;
pub mod pullpoint;
pub mod serve;

use camesh_proto::pb;
use libp2p::identity::Keypair;
use libp2p::PeerId;

use crate::auth::signed::{self, Kind};
use crate::auth::AuthError;

pub const EVENTS_PROTOCOL: &str = "/camesh/events/1";
/// The kind of motion events.
pub const MOTION: &str = "motion";
/// The prefix of kinds that forward a camera's ONVIF events (`onvif/<topic>`).
pub const ONVIF_PREFIX: &str = "onvif/";
/// Longest kind, detail and camera id accepted in an event.
pub const MAX_KIND: usize = 160;
pub const MAX_DETAIL: usize = 512;

/// Signs `event` with the camera node's key.
pub fn sign(event: &pb::CameraEvent, key: &Keypair) -> pb::Signed {
    signed::sign(Kind::Event, event, key)
}

/// Opens a signed event: the signature checks, and the body is sane. The signer's peer id
/// and the event; whether that peer may speak for the camera is the caller's check.
pub fn open(s: &pb::Signed) -> Result<(PeerId, pb::CameraEvent), AuthError> {
    let (key, e): (_, pb::CameraEvent) = signed::open("event", Kind::Event, s)?;
    let bad = |reason: &str| AuthError::Malformed {
        what: "event",
        reason: reason.into(),
    };
    if e.camera_id.is_empty() || e.camera_id.len() > 64 {
        return Err(bad("camera id"));
    }
    if e.kind.is_empty() || e.kind.len() > MAX_KIND || e.detail.len() > MAX_DETAIL {
        return Err(bad("kind or detail too long"));
    }
    if !(0.0..=1.0).contains(&e.area) {
        return Err(bad("area outside 0..1"));
    }
    Ok((PeerId::from_public_key(&key), e))
}

/// Whether `kind` is among `wanted` (empty: every kind; an entry ending in `/` is a
/// prefix).
pub fn kind_matches(wanted: &[String], kind: &str) -> bool {
    wanted.is_empty()
        || wanted
            .iter()
            .any(|w| w == kind || (w.ends_with('/') && kind.starts_with(w.as_str())))
}

/// The state as a word for people (`start`, `end`, `pulse`).
pub fn state_word(state: i32) -> &'static str {
    match pb::EventState::try_from(state) {
        Ok(pb::EventState::Start) => "start",
        Ok(pb::EventState::End) => "end",
        Ok(pb::EventState::Pulse) => "pulse",
        _ => "?",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> pb::CameraEvent {
        pb::CameraEvent {
            camera_id: "cam1".into(),
            sequence: 1,
            run: 7,
            unix_us: 1_000,
            pts_90k: 90_000,
            kind: MOTION.into(),
            state: pb::EventState::Start as i32,
            area: 0.2,
            detail: String::new(),
        }
    }

    #[test]
    fn events_are_the_signers_word() {
        let key = Keypair::generate_ed25519();
        let s = sign(&event(), &key);
        let (peer, e) = open(&s).expect("opens");
        assert_eq!(peer, key.public().to_peer_id());
        assert_eq!(e, event());
        let mut bad = s.clone();
        let mut body = bad.body.to_vec();
        body[2] ^= 1;
        bad.body = body.into();
        assert!(open(&bad).is_err());
        // A grant's signature does not pass as an event's.
        let grant = signed::sign(Kind::Grant, &event(), &key);
        assert!(open(&grant).is_err());
        let mut huge = event();
        huge.detail = "x".repeat(MAX_DETAIL + 1);
        assert!(open(&sign(&huge, &key)).is_err());
    }

    #[test]
    fn kinds_match_exactly_or_by_prefix() {
        assert!(kind_matches(&[], "motion"));
        let w = vec!["motion".to_string(), "onvif/".to_string()];
        assert!(kind_matches(&w, "motion"));
        assert!(kind_matches(&w, "onvif/tns1:VideoSource/MotionAlarm"));
        assert!(!kind_matches(&w, "motionx"));
        assert!(!kind_matches(&["onvif".to_string()], "onvif/x"));
    }
}
