//! Which connections have died silently (pure: driven with `now`; the swarm task pings,
//! reports pongs and closes what [`Liveness::dead`] names).
//!
//! A NAT that changes its public address or its port mapping (a carrier NAT rebinding on
//! LTE, a router reboot) leaves connections that cannot migrate dead without a word: the
//! QUIC server's side of a path (QUIC moves only the client's), and a relayed circuit
//! whose far leg went. QUIC notices only at its idle timeout (10 s), and a stream opened
//! meanwhile lands on the dead connection; a camera's relay reservation stays on it too.
//! So every connection is pinged every [`PING_INTERVAL`], and one that answered before
//! and has now been silent for [`dead_after`] its round-trip time is closed: streams
//! then take another path (the relay), a relay is dialed and reserved again at once, and
//! a hole punch finds the new address.
//!
//! Silent means nothing arrived: any bytes read on a connection ([`Liveness::heard`],
//! stamped by the connection's own task when it reads them) prove it alive as well as a
//! pong does, so a pong that a busy peer or a backlog in this node's swarm task delays
//! condemns nothing while other bytes flow, and a late pong is stamped when it was read.
//!
//! Connections that never answered a ping (a peer without the protocol) are never
//! judged. A stall of this node's own loop (a busy machine) is no evidence against its
//! peers: after one, every connection gets a fresh period.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use libp2p::swarm::ConnectionId;
use libp2p::PeerId;

/// How often each connection is pinged.
pub const PING_INTERVAL: Duration = Duration::from_millis(500);
/// The least silence that condemns a connection (a LAN or a good WAN link).
pub const MIN_DEAD_AFTER: Duration = Duration::from_millis(1500);
/// The most silence a connection is allowed, whatever its round-trip time.
pub const MAX_DEAD_AFTER: Duration = Duration::from_secs(8);
/// A gap this long between two checks means this node itself stalled.
pub const OWN_STALL: Duration = Duration::from_millis(1000);

/// How long a connection with round-trip time `rtt` may stay without a pong: a ping
/// interval, four round trips (a lost ping or pong is retransmitted after about one to
/// two) and a second of slack, within [`MIN_DEAD_AFTER`]..[`MAX_DEAD_AFTER`].
pub fn dead_after(rtt: Duration) -> Duration {
    (PING_INTERVAL + rtt.saturating_mul(4) + Duration::from_secs(1)).clamp(MIN_DEAD_AFTER, MAX_DEAD_AFTER)
}

#[derive(Debug, Clone, Copy)]
struct Seen {
    peer: PeerId,
    at: Instant,
    rtt: Duration,
}

/// Every connection that answered a ping: when it last did, and its round-trip time.
#[derive(Debug, Default)]
pub struct Liveness {
    conns: HashMap<ConnectionId, Seen>,
    last_check: Option<Instant>,
}

impl Liveness {
    /// A pong on `conn` of `peer` after `rtt`.
    pub fn pong(&mut self, peer: PeerId, conn: ConnectionId, rtt: Duration, now: Instant) {
        self.conns.insert(conn, Seen { peer, at: now, rtt });
    }

    /// Bytes arrived on `conn` at `at` (any protocol): proof of life for a connection
    /// that answered a ping before.
    pub fn heard(&mut self, conn: ConnectionId, at: Instant) {
        if let Some(s) = self.conns.get_mut(&conn) {
            s.at = s.at.max(at);
        }
    }

    /// `conn` closed (bounded: one entry per open connection).
    pub fn closed(&mut self, conn: ConnectionId) {
        self.conns.remove(&conn);
    }

    /// The connections silent past [`dead_after`] their round-trip time, to be closed;
    /// they are forgotten here.
    pub fn dead(&mut self, now: Instant) -> Vec<(PeerId, ConnectionId, Duration)> {
        let stalled = self
            .last_check
            .is_some_and(|t| now.saturating_duration_since(t) >= OWN_STALL);
        self.last_check = Some(now);
        if stalled {
            for s in self.conns.values_mut() {
                s.at = s.at.max(now);
            }
            return Vec::new();
        }
        let dead: Vec<_> = self
            .conns
            .iter()
            .filter_map(|(c, s)| {
                let silent = now.saturating_duration_since(s.at);
                (silent >= dead_after(s.rtt)).then_some((s.peer, *c, silent))
            })
            .collect();
        for (_, c, _) in &dead {
            self.conns.remove(c);
        }
        dead
    }
}

/// The least time between two fresh connections to the relays.
pub const REFRESH_GAP: Duration = Duration::from_secs(5);

/// Whether to open a fresh connection to each configured relay after connections died
/// silently. A path that died silently hints that this node's public address changed;
/// its relay connection may have survived by QUIC migration, but libp2p still holds the
/// old observed address for it, so hole punches would offer the old address. A fresh
/// connection brings a fresh observed address (identify) and a fresh reservation.
#[derive(Debug, Default)]
pub struct RelayRefresh {
    last: Option<Instant>,
}

impl RelayRefresh {
    /// `died` connections were just closed as silent: refresh now?
    pub fn due(&mut self, died: usize, now: Instant) -> bool {
        if died == 0
            || self
                .last
                .is_some_and(|t| now.saturating_duration_since(t) < REFRESH_GAP)
        {
            return false;
        }
        self.last = Some(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TICK: Duration = Duration::from_millis(250);

    #[test]
    fn silence_allowed_grows_with_the_round_trip_time() {
        assert_eq!(dead_after(Duration::ZERO), MIN_DEAD_AFTER);
        assert_eq!(dead_after(Duration::from_millis(1)), Duration::from_millis(1504));
        // A satellite link: 600 ms round trips.
        assert_eq!(dead_after(Duration::from_millis(600)), Duration::from_millis(3900));
        assert_eq!(dead_after(Duration::from_secs(30)), MAX_DEAD_AFTER);
    }

    #[test]
    fn a_connection_that_stops_answering_is_dead_within_two_seconds() {
        let (peer, conn, t0) = (PeerId::random(), ConnectionId::new_unchecked(1), Instant::now());
        let mut l = Liveness::default();
        let mut now = t0;
        // Pongs every interval: alive.
        while now < t0 + Duration::from_secs(5) {
            if (now - t0).as_millis() % PING_INTERVAL.as_millis() == 0 {
                l.pong(peer, conn, Duration::from_millis(2), now);
            }
            assert!(l.dead(now).is_empty());
            now += TICK;
        }
        // The path breaks: pongs stop.
        let broke = now;
        let found = loop {
            let d = l.dead(now);
            if !d.is_empty() {
                break (d, now);
            }
            now += TICK;
            assert!(now < broke + Duration::from_secs(10), "never judged dead");
        };
        assert_eq!(found.0.len(), 1);
        assert_eq!((found.0[0].0, found.0[0].1), (peer, conn));
        assert!(found.1 - broke <= Duration::from_secs(2), "{:?}", found.1 - broke);
        // Judged once.
        assert!(l.dead(now + TICK).is_empty());
    }

    #[test]
    fn connections_that_never_answered_or_closed_are_not_judged() {
        let (peer, t0) = (PeerId::random(), Instant::now());
        let mut l = Liveness::default();
        l.pong(peer, ConnectionId::new_unchecked(2), Duration::from_millis(2), t0);
        l.closed(ConnectionId::new_unchecked(2));
        for i in 0..40 {
            assert!(l.dead(t0 + TICK * i).is_empty());
        }
    }

    #[test]
    fn a_stall_of_this_node_is_no_evidence_against_its_peers() {
        let (peer, conn, t0) = (PeerId::random(), ConnectionId::new_unchecked(3), Instant::now());
        let mut l = Liveness::default();
        l.pong(peer, conn, Duration::from_millis(2), t0);
        assert!(l.dead(t0 + TICK).is_empty());
        // The loop comes back 3 s later: pongs may be waiting unread.
        let back = t0 + Duration::from_secs(3);
        assert!(l.dead(back).is_empty());
        l.pong(peer, conn, Duration::from_millis(2), back + TICK);
        assert!(l.dead(back + TICK * 2).is_empty());
        // Really silent afterwards: dead.
        let mut now = back + TICK * 2;
        while l.dead(now).is_empty() {
            now += TICK;
            assert!(now < back + Duration::from_secs(5));
        }
    }

    #[test]
    fn relays_are_refreshed_after_a_silent_death_at_most_every_few_seconds() {
        let t0 = Instant::now();
        let mut r = RelayRefresh::default();
        assert!(!r.due(0, t0), "nothing died");
        assert!(r.due(2, t0));
        assert!(!r.due(1, t0 + Duration::from_secs(1)), "too soon");
        assert!(r.due(1, t0 + REFRESH_GAP));
    }

    #[test]
    fn any_bytes_received_prove_a_connection_alive() {
        let (peer, conn, t0) = (PeerId::random(), ConnectionId::new_unchecked(5), Instant::now());
        let mut l = Liveness::default();
        l.pong(peer, conn, Duration::from_millis(2), t0);
        // No pong for 10 s, but gossip arrives every 300 ms: alive.
        let mut now = t0;
        let mut last_bytes = t0;
        while now < t0 + Duration::from_secs(10) {
            now += TICK;
            if now - last_bytes >= Duration::from_millis(300) {
                last_bytes = now;
                l.heard(conn, now);
            }
            assert!(l.dead(now).is_empty(), "closed after {:?}", now - t0);
        }
        // An old stamp read late moves nothing back.
        l.heard(conn, t0);
        // Nothing arrives any more: dead within two seconds.
        let quiet = last_bytes;
        while l.dead(now).is_empty() {
            now += TICK;
            assert!(now - quiet <= Duration::from_secs(2), "never judged dead");
        }
        // Bytes on a connection that never answered a ping judge nothing.
        let other = ConnectionId::new_unchecked(6);
        l.heard(other, now);
        for i in 1..40 {
            assert!(l.dead(now + TICK * i).is_empty());
        }
    }

    #[test]
    fn a_slow_link_gets_more_time() {
        let (peer, conn, t0) = (PeerId::random(), ConnectionId::new_unchecked(4), Instant::now());
        let mut l = Liveness::default();
        l.pong(peer, conn, Duration::from_millis(600), t0);
        let mut now = t0;
        while now < t0 + Duration::from_millis(3750) {
            now += TICK;
            assert!(l.dead(now).is_empty(), "closed after {:?}", now - t0);
        }
        now += TICK;
        assert_eq!(l.dead(now).len(), 1);
    }
}
