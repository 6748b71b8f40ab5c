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

/// The last second RFC 3339 can write (9999-12-31T23:59:59Z).
const MAX_RFC3339_S: i64 = 253_402_300_799;

/// A time in seconds since the Unix epoch as RFC 3339 (`2026-12-06T19:47:38Z`); a time
/// outside years 1970-9999 (from a peer, a file) as `unix <n>` rather than a panic.
pub fn rfc3339_s(unix_s: i64) -> String {
    if !(0..=MAX_RFC3339_S).contains(&unix_s) {
        return format!("unix {unix_s}");
    }
    let t = UNIX_EPOCH + std::time::Duration::from_secs(unix_s.unsigned_abs());
    humantime::format_rfc3339_seconds(t).to_string()
}

/// A time in microseconds since the Unix epoch as RFC 3339 with milliseconds; outside
/// years 1970-9999 as `unix_us <n>`.
pub fn rfc3339_ms(unix_us: i64) -> String {
    if !(0..=MAX_RFC3339_S.saturating_mul(1_000_000)).contains(&unix_us) {
        return format!("unix_us {unix_us}");
    }
    let t = UNIX_EPOCH + std::time::Duration::from_micros(unix_us.unsigned_abs());
    humantime::format_rfc3339_millis(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_time_formats_without_a_panic() {
        assert_eq!(rfc3339_s(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_s(MAX_RFC3339_S), "9999-12-31T23:59:59Z");
        assert_eq!(rfc3339_ms(1_500_000), "1970-01-01T00:00:01.500Z");
        for t in [i64::MIN, -1, MAX_RFC3339_S + 1, i64::MAX] {
            assert!(rfc3339_s(t).starts_with("unix "), "{t}");
        }
        for t in [i64::MIN, -1, (MAX_RFC3339_S + 1) * 1_000_000, i64::MAX] {
            assert!(rfc3339_ms(t).starts_with("unix_us "), "{t}");
        }
    }

    #[test]
    fn clocks_move_forward() {
        let (a, t) = (now_unix_us(), process_ms());
        assert!(a > 1_600_000_000_000_000, "after 2020: {a}");
        assert!(now_unix_us() >= a);
        assert!(process_ms() >= t);
    }
}
