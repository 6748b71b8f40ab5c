//! A peer's path, one source of truth: which connections it has, direct or relayed
//! (through which relay), and which of them new streams may use (pure).
//!
//! [`PathTable`] is kept by [`super::prefer_direct::PreferDirect`] inside the Swarm, so
//! it sees every connection as the Swarm opens and closes it; the swarm task reads it
//! (`mesh peers`, the hole-punch schedule of [`super::punch`]) and so does everything
//! that asks "is this peer relayed, and through which relay": [`PeerPath`], from a
//! [`super::PeerSummary`].
//!
//! What new streams see: a peer's relayed connections are visible to the stream
//! behaviour only while the peer has no direct connection; they show up again when the
//! last direct one closes. Hidden connections (hole-punch probes) are listed but never
//! visible.

use std::collections::HashMap;

use libp2p::core::ConnectedPoint;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::ConnectionId;
use libp2p::{Multiaddr, PeerId};

/// One open connection, as `mesh peers` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnPath {
    /// The remote's address on this connection (`.../p2p-circuit` when relayed).
    pub addr: Multiaddr,
    pub relayed: bool,
}

/// How a peer is reached now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerPath {
    /// No open connection.
    NotConnected,
    /// At least one direct connection.
    Direct,
    /// Relayed connections only; the relay when a circuit address names it.
    Relayed(Option<PeerId>),
}

impl PeerPath {
    /// The path of a peer with these open connections.
    pub fn of(connections: &[ConnPath]) -> Self {
        if connections.is_empty() {
            PeerPath::NotConnected
        } else if connections.iter().any(|c| !c.relayed) {
            PeerPath::Direct
        } else {
            PeerPath::Relayed(connections.iter().find_map(|c| circuit_relay(&c.addr)).map(|(r, _)| r))
        }
    }

    pub fn is_relayed(self) -> bool {
        matches!(self, PeerPath::Relayed(_))
    }
}

/// The relay of a circuit address (`<relay addr>/p2p/<relay>/p2p-circuit[/p2p/<dst>]`):
/// its peer id and its own address.
pub fn circuit_relay(addr: &Multiaddr) -> Option<(PeerId, Multiaddr)> {
    let mut relay_addr = Multiaddr::empty();
    let mut relay = None;
    for p in addr.iter() {
        if p == Protocol::P2pCircuit {
            return relay.map(|r| (r, relay_addr));
        }
        if let Protocol::P2p(id) = p {
            relay = Some(id);
        }
        relay_addr.push(p);
    }
    None
}

/// Whether `addr` goes through a relay.
pub fn is_circuit(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| p == Protocol::P2pCircuit)
}

/// What the wrapped behaviour should be told about a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    Established(ConnectionId, ConnectedPoint),
    Closed(ConnectionId, ConnectedPoint),
}

#[derive(Debug, Clone)]
struct Conn {
    id: ConnectionId,
    endpoint: ConnectedPoint,
}

impl Conn {
    fn path(&self) -> ConnPath {
        ConnPath {
            addr: self.endpoint.get_remote_address().clone(),
            relayed: self.endpoint.is_relayed(),
        }
    }
}

/// One peer's connections: direct and relayed ones the stream behaviour may see, and
/// hidden ones it never sees.
#[derive(Debug, Default)]
struct Conns {
    direct: Vec<Conn>,
    relayed: Vec<Conn>,
    hidden: Vec<Conn>,
}

impl Conns {
    fn all(&self) -> impl Iterator<Item = &Conn> {
        self.direct.iter().chain(&self.relayed).chain(&self.hidden)
    }
}

/// Every peer's open connections, split into direct and relayed ones.
#[derive(Debug, Default)]
pub struct PathTable {
    peers: HashMap<PeerId, Conns>,
}

impl PathTable {
    /// A connection is up; returns the notices for the wrapped behaviour.
    pub fn established(&mut self, peer: PeerId, id: ConnectionId, endpoint: ConnectedPoint) -> Vec<Notice> {
        let Conns { direct, relayed, .. } = self.peers.entry(peer).or_default();
        let conn = Conn {
            id,
            endpoint: endpoint.clone(),
        };
        if endpoint.is_relayed() {
            relayed.push(conn);
            if direct.is_empty() {
                vec![Notice::Established(id, endpoint)]
            } else {
                Vec::new()
            }
        } else {
            let mut out = Vec::new();
            if direct.is_empty() {
                // Relayed connections were visible until now: hide them.
                out.extend(relayed.iter().map(|r| Notice::Closed(r.id, r.endpoint.clone())));
            }
            direct.push(conn);
            out.push(Notice::Established(id, endpoint));
            out
        }
    }

    /// A hidden connection (a probe) is up: listed, never visible.
    pub fn established_hidden(&mut self, peer: PeerId, id: ConnectionId, endpoint: ConnectedPoint) {
        self.peers.entry(peer).or_default().hidden.push(Conn { id, endpoint });
    }

    /// A connection closed; returns the notices for the wrapped behaviour.
    pub fn closed(&mut self, peer: PeerId, id: ConnectionId) -> Vec<Notice> {
        let Some(Conns {
            direct,
            relayed,
            hidden,
        }) = self.peers.get_mut(&peer)
        else {
            return Vec::new();
        };
        let mut out = Vec::new();
        if let Some(i) = direct.iter().position(|c| c.id == id) {
            let c = direct.remove(i);
            out.push(Notice::Closed(c.id, c.endpoint));
            if direct.is_empty() {
                out.extend(relayed.iter().map(|r| Notice::Established(r.id, r.endpoint.clone())));
            }
        } else if let Some(i) = relayed.iter().position(|c| c.id == id) {
            let c = relayed.remove(i);
            if direct.is_empty() {
                out.push(Notice::Closed(c.id, c.endpoint));
            }
        } else if let Some(i) = hidden.iter().position(|c| c.id == id) {
            hidden.remove(i);
        }
        if direct.is_empty() && relayed.is_empty() && hidden.is_empty() {
            self.peers.remove(&peer);
        }
        out
    }

    /// Connections of `peer` the wrapped behaviour currently sees.
    pub fn visible(&self, peer: &PeerId) -> usize {
        match self.peers.get(peer) {
            Some(c) if !c.direct.is_empty() => c.direct.len(),
            Some(c) => c.relayed.len(),
            None => 0,
        }
    }

    /// Every open connection of `peer` (hidden ones too), direct ones first.
    pub fn connections(&self, peer: &PeerId) -> Vec<ConnPath> {
        let mut v: Vec<ConnPath> = self
            .peers
            .get(peer)
            .into_iter()
            .flat_map(|c| c.all().map(Conn::path))
            .collect();
        v.sort_by_key(|c| c.relayed);
        v
    }

    /// How `peer` is reached now.
    pub fn path(&self, peer: &PeerId) -> PeerPath {
        PeerPath::of(&self.connections(peer))
    }

    /// Whether `peer` has any open connection.
    pub fn connected(&self, peer: &PeerId) -> bool {
        self.peers.contains_key(peer)
    }

    /// Whether `peer` has a direct connection.
    pub fn has_direct(&self, peer: &PeerId) -> bool {
        self.peers
            .get(peer)
            .is_some_and(|c| c.all().any(|c| !c.endpoint.is_relayed()))
    }

    /// The relayed connections of `peer` (hidden ones too).
    pub fn relayed(&self, peer: &PeerId) -> Vec<ConnectionId> {
        self.peers
            .get(peer)
            .map(|c| c.all().filter(|c| c.endpoint.is_relayed()).map(|c| c.id).collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p::core::{transport::PortUse, Endpoint};

    fn dialer(addr: &str) -> ConnectedPoint {
        ConnectedPoint::Dialer {
            address: addr.parse().unwrap(),
            role_override: Endpoint::Dialer,
            port_use: PortUse::Reuse,
        }
    }

    const RELAYED: &str =
        "/ip4/100.64.0.10/udp/4001/quic-v1/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN/p2p-circuit";
    const DIRECT: &str = "/ip4/100.64.0.1/udp/4001/quic-v1";

    fn ids(n: &[Notice]) -> Vec<(bool, ConnectionId)> {
        n.iter()
            .map(|n| match n {
                Notice::Established(id, _) => (true, *id),
                Notice::Closed(id, _) => (false, *id),
            })
            .collect()
    }

    #[test]
    fn relayed_connections_hide_behind_a_direct_one_and_come_back() {
        let peer = PeerId::random();
        let mut t = PathTable::default();
        let (r, d1, d2) = (
            ConnectionId::new_unchecked(1),
            ConnectionId::new_unchecked(2),
            ConnectionId::new_unchecked(3),
        );
        assert_eq!(ids(&t.established(peer, r, dialer(RELAYED))), vec![(true, r)]);
        assert_eq!(t.visible(&peer), 1);
        // The hole punch succeeds: the relayed connection is hidden, the direct one shown.
        assert_eq!(
            ids(&t.established(peer, d1, dialer(DIRECT))),
            vec![(false, r), (true, d1)]
        );
        assert_eq!(ids(&t.established(peer, d2, dialer(DIRECT))), vec![(true, d2)]);
        assert_eq!(t.visible(&peer), 2);
        assert_eq!(ids(&t.closed(peer, d1)), vec![(false, d1)]);
        // The last direct connection goes: the relayed one is visible again.
        assert_eq!(ids(&t.closed(peer, d2)), vec![(false, d2), (true, r)]);
        assert_eq!(ids(&t.closed(peer, r)), vec![(false, r)]);
        assert_eq!(t.visible(&peer), 0);
        assert!(t.peers.is_empty());
    }

    #[test]
    fn a_hidden_relayed_connection_closes_silently_and_unknown_ids_are_ignored() {
        let peer = PeerId::random();
        let mut t = PathTable::default();
        let (r, d) = (ConnectionId::new_unchecked(1), ConnectionId::new_unchecked(2));
        t.established(peer, d, dialer(DIRECT));
        assert!(t.established(peer, r, dialer(RELAYED)).is_empty());
        assert!(t.closed(peer, r).is_empty());
        assert!(t.closed(peer, ConnectionId::new_unchecked(9)).is_empty());
        assert!(t.closed(PeerId::random(), d).is_empty());
        assert_eq!(ids(&t.closed(peer, d)), vec![(false, d)]);
    }

    #[test]
    fn a_probe_is_listed_and_counted_as_relayed_but_never_visible() {
        let peer = PeerId::random();
        let relay: PeerId = "12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN".parse().unwrap();
        let mut t = PathTable::default();
        let (r, probe, d) = (
            ConnectionId::new_unchecked(1),
            ConnectionId::new_unchecked(2),
            ConnectionId::new_unchecked(3),
        );
        assert_eq!(t.path(&peer), PeerPath::NotConnected);
        t.established(peer, r, dialer(RELAYED));
        t.established_hidden(peer, probe, dialer(RELAYED));
        assert_eq!(t.visible(&peer), 1);
        assert_eq!(t.connections(&peer).len(), 2);
        assert_eq!(t.path(&peer), PeerPath::Relayed(Some(relay)));
        assert!(!t.has_direct(&peer));
        assert_eq!(t.relayed(&peer).len(), 2);
        t.established(peer, d, dialer(DIRECT));
        assert_eq!(t.path(&peer), PeerPath::Direct);
        assert!(t.has_direct(&peer));
        assert!(!t.connections(&peer)[0].relayed, "direct first");
        assert!(t.closed(peer, probe).is_empty());
        assert_eq!(t.relayed(&peer), vec![r]);
        t.closed(peer, r);
        t.closed(peer, d);
        assert!(t.peers.is_empty());
    }

    #[test]
    fn the_relay_of_a_circuit_address() {
        let relay = PeerId::random();
        let dst = PeerId::random();
        let a: Multiaddr = format!("/ip4/100.64.77.10/udp/4001/quic-v1/p2p/{relay}/p2p-circuit/p2p/{dst}")
            .parse()
            .unwrap();
        let (r, ra) = circuit_relay(&a).expect("a circuit");
        assert_eq!(r, relay);
        assert_eq!(
            ra.to_string(),
            format!("/ip4/100.64.77.10/udp/4001/quic-v1/p2p/{relay}")
        );
        let direct: Multiaddr = format!("/ip4/100.64.77.1/udp/4001/quic-v1/p2p/{dst}").parse().unwrap();
        assert!(circuit_relay(&direct).is_none());
        // A circuit without the relay's id names no relay.
        assert!(circuit_relay(&"/ip4/1.2.3.4/tcp/1/p2p-circuit".parse().unwrap()).is_none());
    }
}
