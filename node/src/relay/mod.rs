//! Relaying at the application level: forwarding and path choice.
//!
//! - [`path`] (pure): candidates (direct, relayed, via a forwarder) with measured RTT and
//!   failures → a choice, with hysteresis (margin and dwell time).
//! - [`splice`] (pure): make-before-break between two paths of one stream, with no gap
//!   and no duplicate (frames keep the camera's sequence numbers on every path).
//! - [`forward`] (IO): re-serving another node's camera, ciphertext only.
//! - [`multipath`] (IO): watching a camera over the best route, failing over and
//!   switching make-before-break.
//!
//! Circuit relay v2 (libp2p) is the other kind of relaying; it lives in [`crate::net`].

pub mod forward;
pub mod multipath;
pub mod path;
pub mod splice;
