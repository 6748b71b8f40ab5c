//! New outbound streams go over a direct connection when the peer has one.
//!
//! libp2p-stream opens a stream on a random connection to the peer. Once DCUtR has
//! punched a direct connection next to a relayed one, new media streams must take the
//! direct one so a watcher can switch make-before-break: the stream already on the
//! relayed connection carries on until the new, direct one has caught up.
//!
//! [`PathTable`] (pure) decides what the wrapped behaviour is told: a peer's relayed
//! connections are visible to it only while the peer has no direct connection; they
//! show up again when the last direct one closes. [`PreferDirect`] applies those
//! notices. Probe connections (a second relayed connection opened only to run the hole
//! punch again, see [`PreferDirect::hide`]) are never shown: no stream lands on a
//! connection that is about to be closed. Inbound streams are unaffected: they arrive on whatever connection the remote
//! picked, and every connection keeps its handler.

use std::collections::{HashMap, HashSet};
use std::task::{Context, Poll};

use libp2p::core::{transport::PortUse, ConnectedPoint, Endpoint};
use libp2p::swarm::{
    behaviour::{ConnectionClosed, ConnectionEstablished},
    ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent, THandlerOutEvent, ToSwarm,
};
use libp2p::{Multiaddr, PeerId};

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

/// A peer's connections split into direct and relayed ones.
#[derive(Debug, Default)]
pub struct PathTable {
    peers: HashMap<PeerId, (Vec<Conn>, Vec<Conn>)>,
}

impl PathTable {
    /// A connection is up; returns the notices for the wrapped behaviour.
    pub fn established(&mut self, peer: PeerId, id: ConnectionId, endpoint: ConnectedPoint) -> Vec<Notice> {
        let (direct, relayed) = self.peers.entry(peer).or_default();
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

    /// A connection closed; returns the notices for the wrapped behaviour.
    pub fn closed(&mut self, peer: PeerId, id: ConnectionId) -> Vec<Notice> {
        let Some((direct, relayed)) = self.peers.get_mut(&peer) else {
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
        }
        if direct.is_empty() && relayed.is_empty() {
            self.peers.remove(&peer);
        }
        out
    }

    /// Connections of `peer` the wrapped behaviour currently sees.
    pub fn visible(&self, peer: &PeerId) -> usize {
        match self.peers.get(peer) {
            Some((d, _)) if !d.is_empty() => d.len(),
            Some((_, r)) => r.len(),
            None => 0,
        }
    }
}

/// Wraps a behaviour (libp2p-stream's) so it sees relayed connections only while the
/// peer has no direct one.
#[allow(missing_debug_implementations)]
pub struct PreferDirect<B> {
    inner: B,
    table: PathTable,
    hidden: HashSet<ConnectionId>,
}

impl<B> PreferDirect<B> {
    pub fn new(inner: B) -> Self {
        Self {
            inner,
            table: PathTable::default(),
            hidden: HashSet::new(),
        }
    }

    /// Never shows connection `id` (a probe being dialed) to the wrapped behaviour.
    pub fn hide(&mut self, id: ConnectionId) {
        // Bounded: an id is removed when its connection closes or its dial fails.
        self.hidden.insert(id);
    }

    pub fn inner(&self) -> &B {
        &self.inner
    }
}

impl PreferDirect<libp2p_stream::Behaviour> {
    /// A handle to open and accept streams (see [`libp2p_stream::Behaviour::new_control`]).
    pub fn new_control(&self) -> libp2p_stream::Control {
        self.inner.new_control()
    }
}

impl<B: NetworkBehaviour> PreferDirect<B> {
    fn tell(&mut self, peer: PeerId, notices: Vec<Notice>) {
        for n in notices {
            match n {
                Notice::Established(connection_id, endpoint) => {
                    let other = self.table.visible(&peer).saturating_sub(1);
                    self.inner
                        .on_swarm_event(FromSwarm::ConnectionEstablished(ConnectionEstablished {
                            peer_id: peer,
                            connection_id,
                            endpoint: &endpoint,
                            failed_addresses: &[],
                            other_established: other,
                        }))
                }
                Notice::Closed(connection_id, endpoint) => {
                    let remaining = self.table.visible(&peer);
                    self.inner.on_swarm_event(FromSwarm::ConnectionClosed(ConnectionClosed {
                        peer_id: peer,
                        connection_id,
                        endpoint: &endpoint,
                        cause: None,
                        remaining_established: remaining,
                    }))
                }
            }
        }
    }
}

impl<B: NetworkBehaviour> NetworkBehaviour for PreferDirect<B> {
    type ConnectionHandler = B::ConnectionHandler;
    type ToSwarm = B::ToSwarm;

    fn handle_pending_inbound_connection(
        &mut self,
        id: ConnectionId,
        local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        self.inner.handle_pending_inbound_connection(id, local, remote)
    }

    fn handle_established_inbound_connection(
        &mut self,
        id: ConnectionId,
        peer: PeerId,
        local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.inner
            .handle_established_inbound_connection(id, peer, local, remote)
    }

    fn handle_pending_outbound_connection(
        &mut self,
        id: ConnectionId,
        peer: Option<PeerId>,
        addrs: &[Multiaddr],
        role: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        self.inner.handle_pending_outbound_connection(id, peer, addrs, role)
    }

    fn handle_established_outbound_connection(
        &mut self,
        id: ConnectionId,
        peer: PeerId,
        addr: &Multiaddr,
        role: Endpoint,
        port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.inner
            .handle_established_outbound_connection(id, peer, addr, role, port_use)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            FromSwarm::ConnectionEstablished(e) if self.hidden.contains(&e.connection_id) => {}
            FromSwarm::ConnectionClosed(e) if self.hidden.remove(&e.connection_id) => {}
            FromSwarm::DialFailure(e) if self.hidden.remove(&e.connection_id) => {}
            FromSwarm::ConnectionEstablished(e) => {
                let notices = self.table.established(e.peer_id, e.connection_id, e.endpoint.clone());
                self.tell(e.peer_id, notices);
            }
            FromSwarm::ConnectionClosed(e) => {
                let notices = self.table.closed(e.peer_id, e.connection_id);
                self.tell(e.peer_id, notices);
            }
            other => self.inner.on_swarm_event(other),
        }
    }

    fn on_connection_handler_event(&mut self, peer: PeerId, id: ConnectionId, event: THandlerOutEvent<Self>) {
        self.inner.on_connection_handler_event(peer, id, event)
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        self.inner.poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p::core::transport::PortUse;

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
}
