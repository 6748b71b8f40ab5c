//! How often one viewer may ask for PTZ (pure): a token bucket per peer, so a held-down
//! joystick or a hostile member cannot flood the camera's ONVIF service.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use libp2p::PeerId;

/// Requests per second a viewer may make on average, and in a burst.
pub const PER_SECOND: f64 = 4.0;
pub const BURST: f64 = 8.0;
/// Peers remembered at most (the oldest entries go first when full).
const MAX_PEERS: usize = 1024;

#[derive(Debug, Default)]
pub struct PtzRate {
    peers: HashMap<PeerId, (f64, Instant)>,
}

impl PtzRate {
    /// Whether `peer` may make a request now (and counts it if so); else how long until
    /// it may.
    pub fn take(&mut self, peer: PeerId, now: Instant) -> Result<(), Duration> {
        if self.peers.len() >= MAX_PEERS && !self.peers.contains_key(&peer) {
            if let Some(oldest) = self.peers.iter().min_by_key(|(_, (_, t))| *t).map(|(p, _)| *p) {
                self.peers.remove(&oldest);
            }
        }
        let (tokens, at) = self.peers.entry(peer).or_insert((BURST, now));
        *tokens = (*tokens + now.saturating_duration_since(*at).as_secs_f64() * PER_SECOND).min(BURST);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - *tokens) / PER_SECOND))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate_per_peer() {
        let mut r = PtzRate::default();
        let (a, b) = (PeerId::random(), PeerId::random());
        let t = Instant::now();
        for _ in 0..8 {
            assert!(r.take(a, t).is_ok());
        }
        let wait = r.take(a, t).unwrap_err();
        assert!(wait <= Duration::from_millis(250), "{wait:?}");
        assert!(r.take(b, t).is_ok(), "another viewer is not held back");
        assert!(r.take(a, t + Duration::from_millis(250)).is_ok());
        assert!(r.take(a, t + Duration::from_millis(260)).is_err());
    }

    #[test]
    fn the_table_is_bounded() {
        let mut r = PtzRate::default();
        let t = Instant::now();
        for i in 0..(MAX_PEERS + 10) {
            let _ = r.take(PeerId::random(), t + Duration::from_millis(i as u64));
        }
        assert!(r.peers.len() <= MAX_PEERS);
    }
}
