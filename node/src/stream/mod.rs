//! The media protocol `/camesh/media/1`.
//!
//! - [`fanout`] (pure): GOP cache and bounded per-subscriber queues that skip to the next
//!   keyframe on overflow.
//! - [`hub`]: one camera's fan-out point; [`server`]: serving streams to viewers;
//!   [`client`]: opening them (staying on a camera is [`crate::watch`]).
//! - [`io`]: the framing codec over async streams.

pub mod client;
pub mod fanout;
pub mod hub;
pub mod io;
pub mod server;
pub mod stats;
