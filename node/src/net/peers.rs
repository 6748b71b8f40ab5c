//! What the swarm task knows of each peer besides its path ([`super::path`]): where to
//! dial it, its ping RTT and identify answer, the addresses to put in the DHT once it
//! proves membership; and the summary `mesh peers` shows.

use std::collections::HashMap;
use std::time::Duration;

use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};

use super::path::{is_circuit, ConnPath, PathTable, PeerPath};

/// One peer as `mesh peers` shows it.
#[derive(Debug, Clone)]
pub struct PeerSummary {
    pub peer: PeerId,
    pub connected: bool,
    pub addrs: Vec<Multiaddr>,
    pub rtt: Option<Duration>,
    pub agent: String,
    pub fleet_protocol: String,
    /// Open connections, direct ones first.
    pub connections: Vec<ConnPath>,
}

impl PeerSummary {
    /// How the peer is reached now: direct, relayed (through which relay), or not
    /// connected. The answer to "is this peer relayed", from its open connections.
    pub fn peer_path(&self) -> PeerPath {
        PeerPath::of(&self.connections)
    }

    /// "direct", "relayed" or "-" (not connected).
    pub fn path(&self) -> &'static str {
        match self.peer_path() {
            PeerPath::Direct => "direct",
            PeerPath::Relayed(_) => "relayed",
            PeerPath::NotConnected => "-",
        }
    }
}

/// One peer's record in the swarm task.
#[derive(Debug, Default)]
pub(super) struct PeerState {
    /// Addresses to dial it at: given to connect, and dialed successfully.
    pub addrs: Vec<Multiaddr>,
    pub rtt: Option<Duration>,
    pub agent: String,
    pub protocol_version: String,
    /// Addresses to put in the DHT routing table once the peer is a verified member.
    pub kad_addrs: Vec<Multiaddr>,
    /// Its identify answer lists the circuit relay's hop protocol: it may relay for us.
    pub relays: bool,
}

impl PeerState {
    /// Adds `addr` to the addresses to dial (once).
    pub fn remember(&mut self, addr: Multiaddr) {
        if !self.addrs.contains(&addr) {
            self.addrs.push(addr);
        }
    }

    /// A circuit address we know the peer at (to run the hole punch again through it).
    pub fn circuit(&self) -> Option<Multiaddr> {
        self.addrs.iter().find(|a| is_circuit(a)).cloned()
    }
}

/// Circuits to `peer` through `relays` (each a relay's peer id and a direct address
/// of it), to dial beside `known` when `known` has no circuit: a camera behind a NAT
/// holds a reservation on a relay, and the addresses others learned for it may predate
/// the reservation (a DHT record, an identify answer), so a viewer that reached the
/// relay tries through it too. A direct address that answers wins the race; one
/// behind a NAT never does.
pub(super) fn relay_fallbacks(peer: PeerId, known: &[Multiaddr], relays: &[(PeerId, Multiaddr)]) -> Vec<Multiaddr> {
    if known.iter().any(is_circuit) {
        return Vec::new();
    }
    relays
        .iter()
        .filter(|(r, a)| *r != peer && !is_circuit(a))
        .map(|(r, a)| a.clone().with(Protocol::P2p(*r)).with(Protocol::P2pCircuit))
        .collect()
}

/// Every known peer as `mesh peers` shows it: connected ones first, then by id.
pub(super) fn summaries(peers: &HashMap<PeerId, PeerState>, paths: &PathTable) -> Vec<PeerSummary> {
    let mut v: Vec<_> = peers
        .iter()
        .map(|(p, s)| PeerSummary {
            peer: *p,
            connected: paths.connected(p),
            addrs: s.addrs.clone(),
            rtt: s.rtt,
            agent: s.agent.clone(),
            fleet_protocol: s.protocol_version.clone(),
            connections: paths.connections(p),
        })
        .collect();
    v.sort_by_key(|s| (!s.connected, s.peer));
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> PeerId {
        PeerId::random()
    }

    #[test]
    fn circuits_through_relays_only_when_no_circuit_is_known() {
        let (cam, r1, r2) = (peer(), peer(), peer());
        let lan: Multiaddr = "/ip4/10.0.0.2/udp/4001/quic-v1".parse().unwrap();
        let relays = vec![
            (r1, "/ip4/100.64.0.1/udp/4001/quic-v1".parse().unwrap()),
            (r2, "/ip4/100.64.0.2/udp/4001/quic-v1".parse().unwrap()),
            // The peer itself, were it a relay, is no way to itself.
            (cam, "/ip4/100.64.0.3/udp/4001/quic-v1".parse().unwrap()),
        ];
        let got = relay_fallbacks(cam, std::slice::from_ref(&lan), &relays);
        assert_eq!(
            got,
            vec![
                format!("/ip4/100.64.0.1/udp/4001/quic-v1/p2p/{r1}/p2p-circuit")
                    .parse::<Multiaddr>()
                    .unwrap(),
                format!("/ip4/100.64.0.2/udp/4001/quic-v1/p2p/{r2}/p2p-circuit")
                    .parse()
                    .unwrap(),
            ]
        );
        assert!(got.iter().all(is_circuit));
        // A circuit is already known: the peer said where it holds its reservation.
        let mut known = vec![lan];
        known.push(got[1].clone());
        assert!(relay_fallbacks(cam, &known, &relays).is_empty());
        assert!(relay_fallbacks(cam, &[], &[]).is_empty());
    }
}
