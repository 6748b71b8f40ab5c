//! Behaviours that serve and speak to verified fleet members only.
//!
//! [`MembersOnly`] wraps a behaviour (Kademlia, gossipsub, identify) so that on a
//! connection to a peer that has not proven membership its handler neither answers nor
//! asks anything: the wrapped handler is not polled (no queries, subscriptions,
//! identify requests or pushes leave), and inbound streams of its protocols are held
//! unanswered (at most [`HELD_INBOUND`] per connection, the rest closed at once) until
//! the swarm task tells it the peer is a verified member ([`MembersOnly::release`]);
//! then the held streams go to the wrapped handler and it runs as usual. A stranger
//! therefore cannot query the DHT, subscribe to gossip or read identify (fleet id, listen
//! addresses, protocols), and is never sent our subscriptions or queries; its held
//! streams end with its connection when the grace period runs out.
//!
//! Why hold rather than refuse (libp2p-swarm calls `listen_protocol()` per inbound
//! stream, so refusing is possible): each side opens the gate when *it* has verified the
//! other, so one side's first requests can reach the other a moment before that side
//! has; refused, gossipsub marks the protocol unsupported for the connection's lifetime
//! and identify waits its full interval. Held, they are answered as soon as the gate
//! opens. A gate never closes again: a peer that stops being a member is disconnected.

use std::collections::{HashMap, HashSet, VecDeque};
use std::task::{Context, Poll};

use libp2p::core::{transport::PortUse, Endpoint};
use libp2p::swarm::{
    behaviour::ConnectionEstablished,
    handler::{ConnectionEvent, FullyNegotiatedInbound},
    ConnectionDenied, ConnectionHandler, ConnectionHandlerEvent, ConnectionId, FromSwarm, NetworkBehaviour,
    NotifyHandler, SubstreamProtocol, THandler, THandlerInEvent, THandlerOutEvent, ToSwarm,
};
use libp2p::{Multiaddr, PeerId};

/// Inbound streams of one wrapped protocol held per connection before the peer is
/// verified (a member's first requests; a stranger gets no more than this).
pub const HELD_INBOUND: usize = 4;

/// What happens to an inbound stream at the gate.
#[derive(Debug, PartialEq, Eq)]
pub enum Arrival<T> {
    /// The gate is open: the stream goes to the wrapped handler.
    Pass(T),
    /// Held until the gate opens.
    Held,
    /// The gate is closed and full: the stream is dropped (closed).
    Dropped(T),
}

/// One connection's gate (pure): closed until opened, holding a bounded number of
/// streams meanwhile.
#[derive(Debug)]
pub struct Gate<T> {
    open: bool,
    held: VecDeque<T>,
    max_held: usize,
}

impl<T> Gate<T> {
    pub fn new(open: bool, max_held: usize) -> Self {
        Self {
            open,
            held: VecDeque::new(),
            max_held,
        }
    }

    pub fn is_open(&self) -> bool {
        self.open
    }

    /// An inbound stream arrived.
    pub fn arrive(&mut self, t: T) -> Arrival<T> {
        if self.open {
            Arrival::Pass(t)
        } else if self.held.len() < self.max_held {
            self.held.push_back(t);
            Arrival::Held
        } else {
            Arrival::Dropped(t)
        }
    }

    /// Opens the gate; returns the streams held so far, oldest first.
    pub fn open(&mut self) -> Vec<T> {
        self.open = true;
        self.held.drain(..).collect()
    }
}

/// What the behaviour tells a wrapped connection handler.
#[derive(Debug)]
pub enum GateIn<T> {
    /// For the wrapped handler.
    Inner(T),
    /// The peer is a verified member: open the gate.
    Open,
}

/// Wraps `B` so that it serves and speaks to verified members only (see the module).
#[allow(missing_debug_implementations)]
pub struct MembersOnly<B> {
    inner: B,
    /// Open connections per peer (each has its own handler to tell).
    connections: HashMap<PeerId, Vec<ConnectionId>>,
    /// Connected peers whose gates are open (new connections to them start open).
    open: HashSet<PeerId>,
    /// Connections to be told to open, in order (bounded by the open connections).
    to_open: VecDeque<(PeerId, ConnectionId)>,
}

impl<B> MembersOnly<B> {
    pub fn new(inner: B) -> Self {
        Self {
            inner,
            connections: HashMap::new(),
            open: HashSet::new(),
            to_open: VecDeque::new(),
        }
    }

    /// `peer` proved membership: open the gates of its connections (and of those it
    /// opens while any is up). A peer that is not connected is ignored.
    pub fn release(&mut self, peer: PeerId) {
        let Some(conns) = self.connections.get(&peer) else {
            return;
        };
        if self.open.insert(peer) {
            self.to_open.extend(conns.iter().map(|c| (peer, *c)));
        }
    }

    /// Whether `peer`'s gates are open.
    pub fn is_open(&self, peer: &PeerId) -> bool {
        self.open.contains(peer)
    }

    fn handler(&self, peer: &PeerId, inner: <B as NetworkBehaviour>::ConnectionHandler) -> Gated<B::ConnectionHandler>
    where
        B: NetworkBehaviour,
    {
        Gated {
            inner,
            gate: Gate::new(self.open.contains(peer), HELD_INBOUND),
        }
    }
}

impl<B> std::ops::Deref for MembersOnly<B> {
    type Target = B;
    fn deref(&self) -> &B {
        &self.inner
    }
}

impl<B> std::ops::DerefMut for MembersOnly<B> {
    fn deref_mut(&mut self) -> &mut B {
        &mut self.inner
    }
}

impl<B: NetworkBehaviour> NetworkBehaviour for MembersOnly<B> {
    type ConnectionHandler = Gated<B::ConnectionHandler>;
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
        let h = self
            .inner
            .handle_established_inbound_connection(id, peer, local, remote)?;
        Ok(self.handler(&peer, h))
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
        let h = self
            .inner
            .handle_established_outbound_connection(id, peer, addr, role, port_use)?;
        Ok(self.handler(&peer, h))
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match &event {
            FromSwarm::ConnectionEstablished(ConnectionEstablished {
                peer_id, connection_id, ..
            }) => {
                self.connections.entry(*peer_id).or_default().push(*connection_id);
            }
            FromSwarm::ConnectionClosed(c) => {
                if let Some(conns) = self.connections.get_mut(&c.peer_id) {
                    conns.retain(|id| *id != c.connection_id);
                    if conns.is_empty() {
                        self.connections.remove(&c.peer_id);
                        self.open.remove(&c.peer_id);
                    }
                }
                self.to_open.retain(|(_, id)| *id != c.connection_id);
            }
            _ => {}
        }
        self.inner.on_swarm_event(event);
    }

    fn on_connection_handler_event(&mut self, peer: PeerId, id: ConnectionId, event: THandlerOutEvent<Self>) {
        self.inner.on_connection_handler_event(peer, id, event);
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        if let Some((peer_id, conn)) = self.to_open.pop_front() {
            return Poll::Ready(ToSwarm::NotifyHandler {
                peer_id,
                handler: NotifyHandler::One(conn),
                event: GateIn::Open,
            });
        }
        self.inner.poll(cx).map(|ev| ev.map_in(GateIn::Inner))
    }
}

/// A connection handler behind a [`Gate`] (see the module).
#[allow(missing_debug_implementations)]
pub struct Gated<H: ConnectionHandler> {
    inner: H,
    gate: Gate<FullyNegotiatedInbound<H::InboundProtocol, H::InboundOpenInfo>>,
}

impl<H: ConnectionHandler> ConnectionHandler for Gated<H> {
    type FromBehaviour = GateIn<H::FromBehaviour>;
    type ToBehaviour = H::ToBehaviour;
    type InboundProtocol = H::InboundProtocol;
    type OutboundProtocol = H::OutboundProtocol;
    type InboundOpenInfo = H::InboundOpenInfo;
    type OutboundOpenInfo = H::OutboundOpenInfo;

    fn listen_protocol(&self) -> SubstreamProtocol<Self::InboundProtocol, Self::InboundOpenInfo> {
        self.inner.listen_protocol()
    }

    fn connection_keep_alive(&self) -> bool {
        self.gate.is_open() && self.inner.connection_keep_alive()
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ConnectionHandlerEvent<Self::OutboundProtocol, Self::OutboundOpenInfo, Self::ToBehaviour>> {
        if !self.gate.is_open() {
            // Polled again once the behaviour's `Open` has been delivered.
            return Poll::Pending;
        }
        self.inner.poll(cx)
    }

    fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<Option<Self::ToBehaviour>> {
        self.inner.poll_close(cx)
    }

    fn on_behaviour_event(&mut self, event: Self::FromBehaviour) {
        match event {
            GateIn::Inner(e) => self.inner.on_behaviour_event(e),
            GateIn::Open => {
                for held in self.gate.open() {
                    self.inner
                        .on_connection_event(ConnectionEvent::FullyNegotiatedInbound(held));
                }
            }
        }
    }

    fn on_connection_event(
        &mut self,
        event: ConnectionEvent<
            Self::InboundProtocol,
            Self::OutboundProtocol,
            Self::InboundOpenInfo,
            Self::OutboundOpenInfo,
        >,
    ) {
        match event {
            ConnectionEvent::FullyNegotiatedInbound(stream) => match self.gate.arrive(stream) {
                Arrival::Pass(stream) => self
                    .inner
                    .on_connection_event(ConnectionEvent::FullyNegotiatedInbound(stream)),
                Arrival::Held => {}
                // Dropping it closes the stream.
                Arrival::Dropped(_) => tracing::debug!("stream from an unverified peer dropped"),
            },
            other => self.inner.on_connection_event(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closed_gate_holds_a_bounded_number_of_streams_and_hands_them_over_in_order_when_opened() {
        let mut g = Gate::new(false, 2);
        assert_eq!(g.arrive(1), Arrival::Held);
        assert_eq!(g.arrive(2), Arrival::Held);
        assert_eq!(g.arrive(3), Arrival::Dropped(3), "full");
        assert!(!g.is_open());
        assert_eq!(g.open(), vec![1, 2]);
        assert_eq!(g.arrive(4), Arrival::Pass(4));
        assert!(g.open().is_empty());
    }

    #[test]
    fn a_gate_opened_from_the_start_passes_everything() {
        let mut g = Gate::new(true, 0);
        assert_eq!(g.arrive("a"), Arrival::Pass("a"));
    }
}
