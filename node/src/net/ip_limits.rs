//! Incoming connections still in their handshake, bounded per remote IP address.
//!
//! libp2p's `connection_limits` bounds pending incoming connections in all (and
//! established ones per peer id, which cost an attacker nothing to make). This bounds
//! them per remote address as well, so one host (or one NAT) cannot take every pending
//! slot with fresh peer ids while the fleet's own nodes try to connect. [`PendingPerIp`]
//! is the pure count; [`Behaviour`] applies it in `handle_pending_inbound_connection`
//! and releases a slot when the handshake ends either way.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::IpAddr;
use std::task::{Context, Poll};

use libp2p::core::{multiaddr::Protocol, transport::PortUse, Endpoint};
use libp2p::swarm::{
    dummy, ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent, THandlerOutEvent,
    ToSwarm,
};
use libp2p::{Multiaddr, PeerId};

/// Handshakes one remote address may have in flight at once. A vehicle behind one NAT
/// (16 cameras, an NVR and a few viewers reconnecting together when its uplink returns)
/// fits; one address still cannot hold more than a quarter of the node's 128 pending
/// slots (`behaviour::MAX_PENDING_INCOMING`).
pub const MAX_PENDING_PER_IP: usize = 32;

/// Why a connection was refused (downcast from `ConnectionDenied` to tell).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("too many connections being set up from {ip} (at most {max} at once)")]
pub struct TooManyPending {
    pub ip: IpAddr,
    pub max: usize,
}

/// Pending incoming connections per remote IP (pure).
#[derive(Debug)]
pub struct PendingPerIp {
    max: usize,
    by_ip: HashMap<IpAddr, usize>,
    by_conn: HashMap<ConnectionId, IpAddr>,
}

impl PendingPerIp {
    pub fn new(max: usize) -> Self {
        Self {
            max,
            by_ip: HashMap::new(),
            by_conn: HashMap::new(),
        }
    }

    /// A connection from `ip` starts its handshake: counted, or refused above the bound.
    pub fn start(&mut self, conn: ConnectionId, ip: IpAddr) -> Result<(), TooManyPending> {
        let n = self.by_ip.entry(ip).or_default();
        if *n >= self.max {
            return Err(TooManyPending { ip, max: self.max });
        }
        *n += 1;
        self.by_conn.insert(conn, ip);
        Ok(())
    }

    /// A handshake ended (established, failed or refused later): its slot is free.
    /// Unknown ids (not counted here) are ignored.
    pub fn end(&mut self, conn: ConnectionId) {
        let Some(ip) = self.by_conn.remove(&conn) else {
            return;
        };
        if let Some(n) = self.by_ip.get_mut(&ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.by_ip.remove(&ip);
            }
        }
    }

    /// Handshakes in flight from `ip`.
    pub fn pending(&self, ip: &IpAddr) -> usize {
        self.by_ip.get(ip).copied().unwrap_or(0)
    }
}

/// The remote IP address of a connection (none for addresses without one, such as a
/// relayed connection's: those are bounded by the relay).
pub fn remote_ip(addr: &Multiaddr) -> Option<IpAddr> {
    if addr.iter().any(|p| p == Protocol::P2pCircuit) {
        return None;
    }
    addr.iter().find_map(|p| match p {
        Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
        Protocol::Ip6(ip) => Some(IpAddr::V6(ip)),
        _ => None,
    })
}

/// The behaviour applying [`PendingPerIp`] to incoming connections.
#[derive(Debug)]
pub struct Behaviour {
    pending: PendingPerIp,
}

impl Behaviour {
    pub fn new(max_per_ip: usize) -> Self {
        Self {
            pending: PendingPerIp::new(max_per_ip),
        }
    }
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Infallible;

    fn handle_pending_inbound_connection(
        &mut self,
        id: ConnectionId,
        _local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        match remote_ip(remote) {
            Some(ip) => self.pending.start(id, ip).map_err(|e| {
                tracing::debug!(%ip, "incoming connection refused: {e}");
                ConnectionDenied::new(e)
            }),
            None => Ok(()),
        }
    }

    fn handle_established_inbound_connection(
        &mut self,
        id: ConnectionId,
        _peer: PeerId,
        _local: &Multiaddr,
        _remote: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.pending.end(id);
        Ok(dummy::ConnectionHandler)
    }

    fn handle_established_outbound_connection(
        &mut self,
        _id: ConnectionId,
        _peer: PeerId,
        _addr: &Multiaddr,
        _role: Endpoint,
        _port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        if let FromSwarm::ListenFailure(f) = event {
            self.pending.end(f.connection_id);
        }
    }

    fn on_connection_handler_event(&mut self, _peer: PeerId, _id: ConnectionId, event: THandlerOutEvent<Self>) {
        libp2p::core::util::unreachable(event)
    }

    fn poll(&mut self, _cx: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_connections_are_bounded_per_address_and_freed_when_their_handshake_ends() {
        let mut p = PendingPerIp::new(2);
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().expect("ip"), "10.0.0.2".parse().expect("ip"));
        let ids: Vec<ConnectionId> = (0..5).map(|_| ConnectionId::new_unchecked(rand_id())).collect();
        p.start(ids[0], a).expect("first from a");
        p.start(ids[1], a).expect("second from a");
        assert_eq!(p.start(ids[2], a), Err(TooManyPending { ip: a, max: 2 }));
        p.start(ids[3], b).expect("another address is not affected");
        p.end(ids[0]);
        assert_eq!(p.pending(&a), 1);
        p.start(ids[2], a).expect("a freed slot is taken again");
        // An id never counted (refused, or denied by another behaviour first) frees nothing.
        p.end(ids[4]);
        p.end(ids[4]);
        assert_eq!((p.pending(&a), p.pending(&b)), (2, 1));
        for id in &ids {
            p.end(*id);
        }
        assert!(p.by_ip.is_empty() && p.by_conn.is_empty(), "nothing left behind");
    }

    #[test]
    fn a_thousand_handshakes_from_one_address_take_at_most_the_bound() {
        let mut p = PendingPerIp::new(MAX_PENDING_PER_IP);
        let ip: IpAddr = "127.0.0.1".parse().expect("ip");
        let admitted = (0..1000)
            .filter(|_| p.start(ConnectionId::new_unchecked(rand_id()), ip).is_ok())
            .count();
        assert_eq!(admitted, MAX_PENDING_PER_IP);
    }

    #[test]
    fn the_remote_ip_of_direct_connections_and_none_for_relayed_ones() {
        let quic: Multiaddr = "/ip4/192.0.2.7/udp/4001/quic-v1".parse().expect("addr");
        assert_eq!(remote_ip(&quic), Some("192.0.2.7".parse().expect("ip")));
        let v6: Multiaddr = "/ip6/::1/tcp/4001".parse().expect("addr");
        assert_eq!(remote_ip(&v6), Some("::1".parse().expect("ip")));
        let relayed: Multiaddr =
            "/ip4/192.0.2.7/udp/4001/quic-v1/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN/p2p-circuit"
                .parse()
                .expect("addr");
        assert_eq!(remote_ip(&relayed), None);
    }

    fn rand_id() -> usize {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static NEXT: AtomicUsize = AtomicUsize::new(1 << 40);
        NEXT.fetch_add(1, Ordering::Relaxed)
    }
}
