//! The media protocol `/camesh/media/1`.
//!
//! - [`fanout`] (pure): GOP cache and bounded per-subscriber queues that skip to the next
//!   keyframe on overflow.
//! - [`hub`]: one camera's fan-out point; [`server`]: serving streams to viewers;
//!   [`client`]: opening them (staying on a camera is [`crate::watch`]).
//! - [`keys`]: `/camesh/key/1`, media keys from the camera for viewers behind a
//!   forwarder.
//! - [`io`]: the framing codec over async streams; [`accept`]: the one bounded accept
//!   loop every protocol a node serves runs on.
//! - [`ingest`]: camera tasks, a source feeding its hub.
//! - [`budget`]: per-peer caps on what the node sends (`[[link]]`), live first.

pub mod accept;
pub mod budget;
pub mod client;
pub mod codecs;
pub mod fanout;
pub mod fresh;
pub mod hub;
pub mod hubs;
pub mod ingest;
pub mod io;
pub mod keys;
pub mod server;
pub mod stats;
