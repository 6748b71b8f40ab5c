//! [`NetHandle`]: how the rest of the node talks to the swarm task. Commands go over a
//! bounded channel with oneshot replies (callers wait when the task is behind; the
//! fire-and-forget ones that must never hold a caller use `try_send` and count what
//! they drop); events come back on a broadcast (a slow listener lags and loses events,
//! it never stalls the swarm). [`NetEvent`] and [`NetError`] are the handle's words.

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use camesh_proto::pb;
use libp2p::{kad, Multiaddr, PeerId};
use tokio::sync::{broadcast, mpsc, oneshot};
use tracing::warn;

use super::path::circuit_relay;
use super::peers::PeerSummary;
use crate::auth::Trust;

/// What the swarm task tells listeners.
#[derive(Debug, Clone)]
pub enum NetEvent {
    /// A first connection to `peer`; `dialer` if we dialed it.
    Connected {
        peer: PeerId,
        dialer: bool,
    },
    Disconnected(PeerId),
    /// A direct connection to `peer` now exists next to a relayed one (a hole punch
    /// succeeded, or a direct dial did): new streams go direct, and the relayed
    /// connections close after [`super::punch::RELAYED_GRACE`].
    DirectPath {
        peer: PeerId,
    },
}

#[derive(Debug, thiserror::Error, Clone)]
pub enum NetError {
    #[error("the node has shut down")]
    Shutdown,
    #[error("cannot reach {target}: {reason}")]
    Dial { target: String, reason: String },
    #[error("{0}")]
    Other(String),
}

/// How long a circuit dial waits for the relay to have checked our certificate.
const RELAY_MEMBER_WAIT: Duration = Duration::from_secs(3);

/// What the swarm task is asked to do.
pub(super) enum Command {
    Connect {
        peer: Option<PeerId>,
        addrs: Vec<Multiaddr>,
        reply: oneshot::Sender<Result<PeerId, NetError>>,
    },
    /// A new dial to `peer` even while one is under way (that one may be stuck in its
    /// handshake's retransmission backoff from before a link came back).
    Redial {
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        reply: oneshot::Sender<Result<PeerId, NetError>>,
    },
    Peers(oneshot::Sender<Vec<PeerSummary>>),
    ListenAddrs(oneshot::Sender<Vec<Multiaddr>>),
    FindProviders {
        key: kad::RecordKey,
        /// Answer with the first providers found and end the query (a camera's key has
        /// one provider, its node), rather than after every peer asked has answered.
        first: bool,
        reply: oneshot::Sender<Vec<PeerId>>,
    },
    Disconnect(PeerId),
    CloseConnections(PeerId),
    Verified(PeerId),
    Bootstrap,
    PublishRevocation(pb::Signed),
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Command::Connect { .. } => "Connect",
            Command::Redial { .. } => "Redial",
            Command::Peers(_) => "Peers",
            Command::ListenAddrs(_) => "ListenAddrs",
            Command::FindProviders { .. } => "FindProviders",
            Command::Disconnect(_) => "Disconnect",
            Command::CloseConnections(_) => "CloseConnections",
            Command::Bootstrap => "Bootstrap",
            Command::Verified(_) => "Verified",
            Command::PublishRevocation(_) => "PublishRevocation",
        })
    }
}

/// Cloneable handle to the swarm task.
#[derive(Clone, Debug)]
pub struct NetHandle {
    pub(super) cmd: mpsc::Sender<Command>,
    pub(super) events: broadcast::Sender<NetEvent>,
    pub(super) trust: Arc<Trust>,
    pub(super) relay_enabled: Arc<AtomicBool>,
    pub(super) reachability: Arc<AtomicI32>,
    /// Commands dropped because the swarm task was swamped.
    pub(super) dropped: Arc<AtomicU64>,
    /// Bytes of QUIC streams by protocol (counted by the transport).
    pub(super) traffic: Arc<super::traffic::Traffic>,
}

impl NetHandle {
    /// Whether this node relays for fleet members now: forced by `node.relay_server`, or
    /// AutoNAT's verdict (public) when that is unset.
    pub fn relaying(&self) -> bool {
        self.relay_enabled.load(Ordering::Relaxed)
    }

    /// AutoNAT's latest verdict on this node's addresses (unknown until its first probes).
    pub fn reachability(&self) -> pb::Reachability {
        pb::Reachability::try_from(self.reachability.load(Ordering::Relaxed)).unwrap_or(pb::Reachability::Unknown)
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T, NetError> {
        let (tx, rx) = oneshot::channel();
        self.cmd.send(make(tx)).await.map_err(|_| NetError::Shutdown)?;
        rx.await.map_err(|_| NetError::Shutdown)
    }

    /// Connects to a peer (by id, with optional addresses) or to an address (whose
    /// `/p2p/` suffix, if any, names the peer). Returns the peer id once connected.
    ///
    /// Relays serve verified fleet members only, so a circuit is dialed once the relay
    /// has checked our certificate (the exchange runs right after connecting to it);
    /// otherwise the first circuit request would race the check and be refused.
    pub async fn connect(&self, peer: Option<PeerId>, addrs: Vec<Multiaddr>) -> Result<PeerId, NetError> {
        // (Without a certificate of our own there is nothing to wait for.)
        let relays: Vec<(PeerId, Multiaddr)> = if self.trust.own_cert().is_some() {
            addrs.iter().filter_map(circuit_relay).collect()
        } else {
            Vec::new()
        };
        for (relay, relay_addr) in relays {
            if self.trust.member(&relay).is_some() {
                continue;
            }
            let to_relay = self
                .ask(|reply| Command::Connect {
                    peer: Some(relay),
                    addrs: vec![relay_addr],
                    reply,
                })
                .await?;
            if to_relay.is_ok() {
                self.trust.wait_member(&relay, RELAY_MEMBER_WAIT).await;
            }
        }
        self.ask(|reply| Command::Connect { peer, addrs, reply }).await?
    }

    /// Like [`Self::connect`] for a known peer, but starts a fresh dial even while an
    /// earlier one is still under way: for a sender that retries while a link is down
    /// (store-and-forward), so the first attempt after the link returns goes out at once
    /// instead of waiting for a stale handshake's next retransmission.
    pub async fn redial(&self, peer: PeerId, addrs: Vec<Multiaddr>) -> Result<PeerId, NetError> {
        self.ask(|reply| Command::Redial { peer, addrs, reply }).await?
    }

    pub async fn peers(&self) -> Result<Vec<PeerSummary>, NetError> {
        self.ask(Command::Peers).await
    }

    pub async fn listen_addrs(&self) -> Result<Vec<Multiaddr>, NetError> {
        self.ask(Command::ListenAddrs).await
    }

    /// Kademlia providers of `key` (dials them as they are found).
    pub async fn find_providers(&self, key: kad::RecordKey) -> Result<Vec<PeerId>, NetError> {
        self.ask(|reply| Command::FindProviders {
            key,
            first: false,
            reply,
        })
        .await
    }

    /// Like [`Self::find_providers`], but answers as soon as any provider is found (a
    /// query waits for its slowest peer otherwise: up to the 10 s query timeout when a
    /// closer peer it learned of cannot be dialed).
    pub async fn find_first_providers(&self, key: kad::RecordKey) -> Result<Vec<PeerId>, NetError> {
        self.ask(|reply| Command::FindProviders {
            key,
            first: true,
            reply,
        })
        .await
    }

    /// Dials the configured bootstrap peers.
    pub async fn bootstrap(&self) {
        let _ = self.cmd.send(Command::Bootstrap).await;
    }

    /// Closes every connection to `peer`.
    pub async fn disconnect(&self, peer: PeerId) {
        let _ = self.cmd.send(Command::Disconnect(peer)).await;
    }

    /// Closes every connection to `peer` (a path that stopped carrying video); unlike
    /// [`Self::disconnect`], the peer stays in the DHT and the next dial tries all its
    /// known addresses (other relays, direct).
    pub async fn close_connections(&self, peer: PeerId) {
        let _ = self.cmd.send(Command::CloseConnections(peer)).await;
    }

    /// `peer` proved fleet membership: let it into the DHT routing table.
    pub async fn verified(&self, peer: PeerId) {
        let _ = self.cmd.send(Command::Verified(peer)).await;
    }

    /// Spreads a revocation on gossipsub (best effort: dropped if the swarm is swamped).
    pub fn publish_revocation(&self, r: pb::Signed) {
        if self.cmd.try_send(Command::PublishRevocation(r)).is_err() {
            let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            warn!(
                dropped,
                "swarm busy: revocation not gossiped (it was still applied and pushed)"
            );
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<NetEvent> {
        self.events.subscribe()
    }

    /// Bytes this node's QUIC streams carried so far, by protocol family.
    pub fn traffic(&self) -> super::traffic::TrafficSnapshot {
        self.traffic.snapshot()
    }
}
