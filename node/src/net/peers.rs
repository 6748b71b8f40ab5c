//! What the swarm task knows of each peer besides its path ([`super::path`]): where to
//! dial it, its ping RTT and identify answer, the addresses to put in the DHT once it
//! proves membership; and the summary `mesh peers` shows.

use std::collections::HashMap;
use std::time::Duration;

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
