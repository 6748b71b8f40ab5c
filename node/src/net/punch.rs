//! When to run the hole punch again, and when a relayed path gives way to a direct one
//! (pure: driven with `now`; the swarm task only carries out the [`Action`]s).
//!
//! - A peer reached only through a relay we dialed: the first punch (DCUtR, as the
//!   circuit came up) can fail for passing reasons (loss, a NAT mapping in flux), and
//!   libp2p never retries on the same circuit after its three attempts. So a second
//!   circuit (a probe, hidden from new streams) is dialed after [`repunch_delay`], which
//!   makes the remote start DCUtR anew; the probe is closed after [`PROBE_LIFETIME`]
//!   unless a direct path came of it.
//! - A direct connection next to relayed ones (a punch succeeded, or a direct dial did):
//!   watchers are told ([`Established::DirectPath`]) so they move their streams over
//!   make-before-break, and after [`RELAYED_GRACE`] the relayed connections are closed,
//!   freeing the relay's circuit.
//!
//! Connection facts come from the one [`PathTable`], read after the Swarm updated it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use libp2p::swarm::ConnectionId;
use libp2p::{Multiaddr, PeerId};

use super::path::PathTable;

/// How long a relayed connection stays up once a direct one to the same peer exists:
/// time for watchers to move their streams over (make-before-break), then the relay's
/// circuit is freed.
pub const RELAYED_GRACE: Duration = Duration::from_secs(5);
/// How long a probe connection (a second circuit, opened to run the hole punch again)
/// lives when the punch does not succeed: DCUtR's three attempts fit well within it.
pub const PROBE_LIFETIME: Duration = Duration::from_secs(20);

/// When to try the hole punch again for a peer reached only through a relay, after
/// `attempts` tries: 10 s, 20 s, 40 s … up to 5 min.
pub fn repunch_delay(attempts: u32) -> Duration {
    Duration::from_secs(10u64.saturating_mul(1 << attempts.min(5)).min(300))
}

/// What the swarm task is to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Close a relayed connection of `peer`: a direct path has taken over.
    CloseRelayed { peer: PeerId, conn: ConnectionId },
    /// Close a probe whose time is up.
    CloseProbe(ConnectionId),
    /// Dial `circuit` again as a hidden probe, then report it with [`Punch::probe_dialed`].
    Probe {
        peer: PeerId,
        circuit: Multiaddr,
        attempt: u32,
    },
}

/// What a new connection means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Established {
    /// Nothing to tell.
    Quiet,
    /// A direct connection now exists next to relayed ones: tell watchers.
    DirectPath,
}

#[derive(Debug, Default, PartialEq, Eq)]
struct Schedule {
    /// When the relayed connections are closed (a direct one exists since then).
    close_relayed_at: Option<Instant>,
    /// Punch retries while only relayed: attempts so far, when the next is due, and the
    /// probe connection in flight (closed when its time is up).
    attempts: u32,
    retry_at: Option<Instant>,
    probe: Option<(ConnectionId, Instant)>,
}

/// Every peer's hole-punch and relayed-grace schedule.
#[derive(Debug, Default)]
pub struct Punch {
    peers: HashMap<PeerId, Schedule>,
}

impl Punch {
    /// Connection `conn` to `peer` is up, `relayed` or not, dialed by us if `dialer`
    /// (`paths` already lists it).
    pub fn established(
        &mut self,
        peer: PeerId,
        conn: ConnectionId,
        relayed: bool,
        dialer: bool,
        paths: &PathTable,
        now: Instant,
    ) -> Established {
        let s = self.peers.entry(peer).or_default();
        if relayed && dialer && s.retry_at.is_none() {
            s.retry_at = Some(now + repunch_delay(s.attempts));
        }
        if !relayed {
            s.attempts = 0;
            s.retry_at = None;
        }
        if s.probe.is_some_and(|(p, _)| p == conn) {
            s.probe = Some((conn, now + PROBE_LIFETIME));
        }
        if !relayed && s.close_relayed_at.is_none() && !paths.relayed(&peer).is_empty() {
            s.close_relayed_at = Some(now + RELAYED_GRACE);
            return Established::DirectPath;
        }
        Established::Quiet
    }

    /// Connection `conn` to `peer` closed (`paths` no longer lists it).
    pub fn closed(&mut self, peer: PeerId, conn: ConnectionId, paths: &PathTable) {
        let Some(s) = self.peers.get_mut(&peer) else { return };
        if paths.relayed(&peer).is_empty() {
            s.close_relayed_at = None;
        }
        if s.probe.is_some_and(|(p, _)| p == conn) {
            s.probe = None;
        }
        if !paths.connected(&peer) {
            s.retry_at = None;
        }
        if *s == Schedule::default() {
            self.peers.remove(&peer);
        }
    }

    /// A probe to `peer` was dialed as connection `conn`.
    pub fn probe_dialed(&mut self, peer: PeerId, conn: ConnectionId, now: Instant) {
        self.peers.entry(peer).or_default().probe = Some((conn, now + PROBE_LIFETIME));
    }

    /// What is due at `now`. `circuit_of` names a circuit address we dialed to a peer (a
    /// listener side cannot dial the circuit back, so without one there is no retry).
    pub fn tick(
        &mut self,
        now: Instant,
        paths: &PathTable,
        circuit_of: impl Fn(&PeerId) -> Option<Multiaddr>,
    ) -> Vec<Action> {
        let mut out = Vec::new();
        for (peer, s) in &mut self.peers {
            if s.close_relayed_at.is_some_and(|t| t <= now) {
                s.close_relayed_at = None;
                if paths.has_direct(peer) {
                    out.extend(
                        paths
                            .relayed(peer)
                            .into_iter()
                            .map(|conn| Action::CloseRelayed { peer: *peer, conn }),
                    );
                }
            }
        }
        for (peer, s) in &mut self.peers {
            if let Some((probe, until)) = s.probe {
                if until <= now {
                    out.push(Action::CloseProbe(probe));
                    s.probe = None;
                }
                continue;
            }
            if !paths.connected(peer) || paths.has_direct(peer) {
                continue;
            }
            if s.retry_at.is_none_or(|t| t > now) {
                continue;
            }
            let Some(circuit) = circuit_of(peer) else {
                s.retry_at = None;
                continue;
            };
            s.attempts += 1;
            s.retry_at = Some(now + repunch_delay(s.attempts));
            out.push(Action::Probe {
                peer: *peer,
                circuit,
                attempt: s.attempts,
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p::core::{transport::PortUse, ConnectedPoint, Endpoint};

    const RELAY: &str = "12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN";

    fn circuit() -> Multiaddr {
        format!("/ip4/100.64.0.10/udp/4001/quic-v1/p2p/{RELAY}/p2p-circuit")
            .parse()
            .unwrap()
    }

    fn dialed(addr: Multiaddr) -> ConnectedPoint {
        ConnectedPoint::Dialer {
            address: addr,
            role_override: Endpoint::Dialer,
            port_use: PortUse::Reuse,
        }
    }

    fn direct() -> ConnectedPoint {
        dialed("/ip4/100.64.0.1/udp/4001/quic-v1".parse().unwrap())
    }

    /// A peer, its connections and its schedule, driven like the swarm task drives them.
    struct World {
        peer: PeerId,
        paths: PathTable,
        punch: Punch,
        next_id: usize,
        t0: Instant,
    }

    impl World {
        fn new() -> Self {
            Self {
                peer: PeerId::random(),
                paths: PathTable::default(),
                punch: Punch::default(),
                next_id: 1,
                t0: Instant::now(),
            }
        }

        fn at(&self, secs: u64) -> Instant {
            self.t0 + Duration::from_secs(secs)
        }

        fn connect(&mut self, endpoint: ConnectedPoint, secs: u64) -> (ConnectionId, Established) {
            let id = ConnectionId::new_unchecked(self.next_id);
            self.next_id += 1;
            let (relayed, dialer) = (endpoint.is_relayed(), endpoint.is_dialer());
            self.paths.established(self.peer, id, endpoint);
            let e = self
                .punch
                .established(self.peer, id, relayed, dialer, &self.paths, self.at(secs));
            (id, e)
        }

        fn close(&mut self, id: ConnectionId) {
            self.paths.closed(self.peer, id);
            self.punch.closed(self.peer, id, &self.paths);
        }

        fn tick(&mut self, secs: u64, circuit: Option<Multiaddr>) -> Vec<Action> {
            let now = self.at(secs);
            self.punch.tick(now, &self.paths, |_| circuit.clone())
        }

        /// Runs the tick and dials each probe it asks for as a hidden connection.
        fn tick_and_probe(&mut self, secs: u64) -> Vec<Action> {
            let out = self.tick(secs, Some(circuit()));
            for a in &out {
                if let Action::Probe { peer, .. } = a {
                    let id = ConnectionId::new_unchecked(self.next_id);
                    self.next_id += 1;
                    self.punch.probe_dialed(*peer, id, self.at(secs));
                }
            }
            out
        }
    }

    fn probes(actions: &[Action]) -> Vec<u32> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Probe { attempt, .. } => Some(*attempt),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn hole_punch_retries_back_off_to_five_minutes() {
        let d: Vec<u64> = (0..8).map(|a| repunch_delay(a).as_secs()).collect();
        assert_eq!(d, vec![10, 20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(repunch_delay(u32::MAX), Duration::from_secs(300));
    }

    #[test]
    fn a_relayed_dialer_probes_again_with_backoff_and_closes_failed_probes() {
        let mut w = World::new();
        let (_, e) = w.connect(dialed(circuit()), 0);
        assert_eq!(e, Established::Quiet);
        assert!(w.tick_and_probe(9).is_empty(), "first retry after 10 s");
        assert_eq!(probes(&w.tick_and_probe(10)), vec![1]);
        // The probe is in flight: no other retry, and it is closed when its time is up.
        assert!(w.tick_and_probe(29).is_empty());
        assert!(matches!(w.tick_and_probe(30).as_slice(), [Action::CloseProbe(_)]));
        // The next retry is due 20 s after the first one (the tick that closed the probe
        // passed it over), the one after that 40 s later.
        assert_eq!(probes(&w.tick_and_probe(31)), vec![2]);
        assert!(matches!(w.tick_and_probe(51).as_slice(), [Action::CloseProbe(_)]));
        assert!(w.tick_and_probe(70).is_empty());
        assert_eq!(probes(&w.tick_and_probe(71)), vec![3]);
    }

    #[test]
    fn a_probe_that_comes_up_lives_from_then_and_is_listed_as_relayed() {
        let mut w = World::new();
        w.connect(dialed(circuit()), 0);
        assert_eq!(probes(&w.tick_and_probe(10)), vec![1]);
        let probe = ConnectionId::new_unchecked(w.next_id - 1);
        w.paths.established_hidden(w.peer, probe, dialed(circuit()));
        w.punch.established(w.peer, probe, true, true, &w.paths, w.at(15));
        assert!(w.tick_and_probe(34).is_empty(), "lifetime counts from the connection");
        assert_eq!(w.tick_and_probe(35), vec![Action::CloseProbe(probe)]);
        w.close(probe);
        assert_eq!(w.paths.relayed(&w.peer).len(), 1);
    }

    #[test]
    fn no_retry_without_a_circuit_we_dialed_or_when_listening() {
        let mut w = World::new();
        w.connect(dialed(circuit()), 0);
        assert!(w.tick(10, None).is_empty());
        assert!(w.tick(100, Some(circuit())).is_empty(), "the retry was dropped");

        let mut w = World::new();
        let listener = ConnectedPoint::Listener {
            local_addr: circuit(),
            send_back_addr: circuit(),
        };
        w.connect(listener, 0);
        assert!(w.tick(1000, Some(circuit())).is_empty(), "the dialing side retries");
    }

    #[test]
    fn a_direct_path_is_announced_once_and_the_relayed_ones_close_after_the_grace() {
        let mut w = World::new();
        let (r, _) = w.connect(dialed(circuit()), 0);
        let (_, e) = w.connect(direct(), 3);
        assert_eq!(e, Established::DirectPath);
        let (_, e) = w.connect(direct(), 4);
        assert_eq!(e, Established::Quiet, "announced once");
        assert!(w.tick(7, Some(circuit())).is_empty());
        assert_eq!(
            w.tick(8, Some(circuit())),
            vec![Action::CloseRelayed { peer: w.peer, conn: r }]
        );
        assert!(w.tick(9, Some(circuit())).is_empty(), "once");
        // Direct resets the retries: no probe while direct.
        assert!(w.tick(1000, Some(circuit())).is_empty());
    }

    #[test]
    fn relayed_connections_stay_when_the_direct_one_is_gone_before_the_grace() {
        let mut w = World::new();
        w.connect(dialed(circuit()), 0);
        let (d, e) = w.connect(direct(), 1);
        assert_eq!(e, Established::DirectPath);
        w.close(d);
        assert!(w.tick(6, None).is_empty());
        // No direct path and no retry scheduled (the direct one reset it).
        assert!(w.tick(1000, Some(circuit())).is_empty());
    }

    #[test]
    fn a_direct_path_without_relayed_connections_is_quiet_and_disconnect_stops_retries() {
        let mut w = World::new();
        assert_eq!(w.connect(direct(), 0).1, Established::Quiet);
        let mut w = World::new();
        let (r, _) = w.connect(dialed(circuit()), 0);
        w.close(r);
        assert!(w.tick(1000, Some(circuit())).is_empty());
        assert!(w.punch.peers.is_empty(), "nothing left to schedule");
    }
}
