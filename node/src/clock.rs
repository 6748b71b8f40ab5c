//! The clocks a node stamps with: wall-clock microseconds since the Unix epoch (capture
//! times, file names, records) and a monotonic millisecond count since the process
//! started (deadlines, live timelines).
//!
//! A leaf: it imports nothing of this crate, and every part that needs "now" reads it
//! here.

use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Microseconds since the Unix epoch, now.
pub fn now_unix_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Milliseconds since a process-wide start (the first call), monotonic.
pub fn process_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    u64::try_from(START.get_or_init(Instant::now).elapsed().as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clocks_move_forward() {
        let (a, t) = (now_unix_us(), process_ms());
        assert!(a > 1_600_000_000_000_000, "after 2020: {a}");
        assert!(now_unix_us() >= a);
        assert!(process_ms() >= t);
    }
}
