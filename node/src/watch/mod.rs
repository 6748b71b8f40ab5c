//! One viewer: watching a camera and staying on it, over one route or several.
//!
//! - [`machine`] (pure): the state machine, `handle(input, now) -> outputs`: route
//!   choice, make-before-break splice, lag, stall, backoff, attempts. Its vocabulary
//!   (config, inputs, outputs) is in [`event`].
//! - [`path`] (pure): candidates (direct, relayed, via a forwarder) → a route, with
//!   hysteresis.
//! - [`splice`] (pure): make-before-break between two paths of one stream, no gap and
//!   no duplicate.
//! - [`live`] (pure): stall timeout, lag meter, replay rule, refusals.
//! - [`run`] (IO): the one loop that drives the machine: feeds are tasks that open a
//!   subscription and push frames into a small bounded channel; outputs become
//!   subscriptions, closed connections, events and timers.
//! - [`adapt`] (pure) and [`profiles`] (IO): adaptive live, main <-> sub by what the
//!   viewer measures (skips, late frames, ping RTT), make before break at a keyframe.
//! - [`options`]: what callers pass ([`WatchOptions`], [`RouteOptions`]) and hear
//!   ([`WatchEvent`]).
//!
//! Data flow: feed task → bounded channel → [`run`] → `Watch::handle` → frames and
//! events → the caller's bounded channel. A consumer that cannot keep up slows the
//! reads, QUIC flow control pushes back to the source, and the source's queue for this
//! viewer skips to the next keyframe. Nothing here grows without bound.

pub mod adapt;
pub mod event;
pub mod live;
pub mod machine;
pub mod options;
pub mod path;
pub mod profiles;
pub mod run;
pub mod splice;

pub use live::{is_final, stall_timeout, LagMeter, MAX_LAG};
pub use options::{RouteOptions, WatchEvent, WatchOptions};
pub use run::spawn;
