//! Retry pacing, pure: the one exponential backoff every retry loop of a node uses
//! (watching, forwarding, camera sources, the NVR's recorders).

use std::time::Duration;

/// The next backoff: `min` after a success (`current` zero), then doubling up to `max`.
pub fn next_backoff(current: Duration, min: Duration, max: Duration) -> Duration {
    if current.is_zero() {
        min
    } else {
        (current * 2).min(max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_starts_at_min_and_doubles_up_to_max() {
        let (min, max) = (Duration::from_millis(100), Duration::from_millis(350));
        let mut b = Duration::ZERO;
        let mut seen = Vec::new();
        for _ in 0..4 {
            b = next_backoff(b, min, max);
            seen.push(b.as_millis());
        }
        assert_eq!(seen, vec![100, 200, 350, 350]);
    }
}
