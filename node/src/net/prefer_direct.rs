//! New outbound streams go over a direct connection when the peer has one.
//!
//! libp2p-stream opens a stream on a random connection to the peer. Once DCUtR has
//! punched a direct connection next to a relayed one, new media streams must take the
//! direct one so a watcher can switch make-before-break: the stream already on the
//! relayed connection carries on until the new, direct one has caught up.
//!
//! [`PathTable`] (pure, [`super::path`]) decides what the wrapped behaviour is told: a
//! peer's relayed connections are visible to it only while the peer has no direct
//! connection; they show up again when the last direct one closes. [`PreferDirect`]
//! keeps that table (the one record of every peer's path, read by the swarm task through
//! [`PreferDirect::paths`]) and applies its notices. Probe connections (a second relayed
//! connection opened only to run the hole punch again, see [`PreferDirect::hide`]) are
//! listed but never shown: no stream lands on a connection that is about to be closed.
//! Inbound streams are unaffected: they arrive on whatever connection the remote picked,
//! and every connection keeps its handler.

use std::collections::HashSet;
use std::task::{Context, Poll};

use libp2p::core::{transport::PortUse, Endpoint};
use libp2p::swarm::{
    behaviour::{ConnectionClosed, ConnectionEstablished},
    ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent, THandlerOutEvent, ToSwarm,
};
use libp2p::{Multiaddr, PeerId};

use super::path::{Notice, PathTable};

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
        // Bounded: an id is removed when its connection is up (the table keeps it as
        // hidden from then on) or its dial fails.
        self.hidden.insert(id);
    }

    /// Every peer's open connections and path.
    pub fn paths(&self) -> &PathTable {
        &self.table
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
            FromSwarm::ConnectionEstablished(e) if self.hidden.remove(&e.connection_id) => self
                .table
                .established_hidden(e.peer_id, e.connection_id, e.endpoint.clone()),
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
