//! The one task that owns the libp2p Swarm.
//!
//! Others talk to it through [`NetHandle`]: a bounded command channel with oneshot
//! replies, and a broadcast of [`NetEvent`]s (a slow listener lags and loses events;
//! it never stalls the swarm). Media bytes never come here: media and info streams are
//! handed out by libp2p-stream's `Control` and served by their own tasks.
//!
//! What the loop does besides answering commands: dials peers found by mDNS, feeds
//! identified DHT peers into Kademlia, provides [`crate::discovery::CAMERAS_KEY`] and each
//! camera's key, publishes camera announcements on gossipsub, and stores received
//! announcements in the [`Directory`].

pub mod behaviour;
pub mod prefer_direct;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use camesh_proto::pb::{self, CameraAnnouncement};
use futures::StreamExt;
use libp2p::{
    gossipsub, identify, kad, mdns,
    multiaddr::Protocol,
    ping,
    swarm::{dial_opts::DialOpts, dial_opts::PeerCondition, ConnectionId, SwarmEvent},
    Multiaddr, PeerId, Swarm,
};
use prost::Message;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::addr::split_p2p;
use crate::auth::Trust;
use crate::config::Config;
use crate::discovery::{self, Directory, Via};
use crate::stream::hub::Hubs;
use behaviour::{Behaviour, BehaviourEvent};

/// Commands queued to the swarm task; callers wait when it is this far behind.
const COMMAND_QUEUE: usize = 64;
/// Events buffered per listener before it lags.
const EVENT_QUEUE: usize = 256;
/// How often provider records are refreshed while peers are connected.
const REPROVIDE_EVERY: Duration = Duration::from_secs(30);
/// How long a relayed connection stays up once a direct one to the same peer exists:
/// time for watchers to move their streams over (make-before-break), then the relay's
/// circuit is freed.
const RELAYED_GRACE: Duration = Duration::from_secs(5);
/// How long a probe connection (a second circuit, opened to run the hole punch again)
/// lives when the punch does not succeed: DCUtR's three attempts fit well within it.
const PROBE_LIFETIME: Duration = Duration::from_secs(20);
/// How often configured relays we are not connected to are dialed again (a relay that
/// restarted gets our reservation back once it is up).
const RELAY_REDIAL: Duration = Duration::from_secs(5);

/// When to try the hole punch again for a peer reached only through a relay, after
/// `attempts` tries: 10 s, 20 s, 40 s … up to 5 min. The first punch (DCUtR, as the
/// circuit came up) can fail for passing reasons (loss, a NAT mapping in flux), and
/// libp2p never retries on the same circuit after its three attempts.
pub fn repunch_delay(attempts: u32) -> Duration {
    Duration::from_secs(10u64.saturating_mul(1 << attempts.min(5)).min(300))
}

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
    /// connections close after [`RELAYED_GRACE`].
    DirectPath {
        peer: PeerId,
    },
}

/// One open connection, as `mesh peers` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnPath {
    /// The remote's address on this connection (`.../p2p-circuit` when relayed).
    pub addr: Multiaddr,
    pub relayed: bool,
}

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
    /// "direct", "relayed" or "-" (not connected).
    pub fn path(&self) -> &'static str {
        match self.connections.first() {
            Some(c) if !c.relayed => "direct",
            Some(_) => "relayed",
            None => "-",
        }
    }
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

enum Command {
    Connect {
        peer: Option<PeerId>,
        addrs: Vec<Multiaddr>,
        reply: oneshot::Sender<Result<PeerId, NetError>>,
    },
    Peers(oneshot::Sender<Vec<PeerSummary>>),
    ListenAddrs(oneshot::Sender<Vec<Multiaddr>>),
    FindProviders {
        key: kad::RecordKey,
        reply: oneshot::Sender<Vec<PeerId>>,
    },
    Disconnect(PeerId),
    CloseConnections(PeerId),
    Verified(PeerId),
    Bootstrap,
    PublishRevocation(pb::Signed),
}

/// Cloneable handle to the swarm task.
#[derive(Clone, Debug)]
pub struct NetHandle {
    cmd: mpsc::Sender<Command>,
    events: broadcast::Sender<NetEvent>,
    trust: Arc<Trust>,
    relay_enabled: Arc<std::sync::atomic::AtomicBool>,
    reachability: Arc<std::sync::atomic::AtomicI32>,
}

/// How long a circuit dial waits for the relay to have checked our certificate.
const RELAY_MEMBER_WAIT: Duration = Duration::from_secs(3);

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

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Command::Connect { .. } => "Connect",
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

impl NetHandle {
    /// Whether this node relays for fleet members now: forced by `node.relay_server`, or
    /// AutoNAT's verdict (public) when that is unset.
    pub fn relaying(&self) -> bool {
        self.relay_enabled.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// AutoNAT's latest verdict on this node's addresses (unknown until its first probes).
    pub fn reachability(&self) -> pb::Reachability {
        pb::Reachability::try_from(self.reachability.load(std::sync::atomic::Ordering::Relaxed))
            .unwrap_or(pb::Reachability::Unknown)
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

    pub async fn peers(&self) -> Result<Vec<PeerSummary>, NetError> {
        self.ask(Command::Peers).await
    }

    pub async fn listen_addrs(&self) -> Result<Vec<Multiaddr>, NetError> {
        self.ask(Command::ListenAddrs).await
    }

    /// Kademlia providers of `key` (dials them as they are found).
    pub async fn find_providers(&self, key: kad::RecordKey) -> Result<Vec<PeerId>, NetError> {
        self.ask(|reply| Command::FindProviders { key, reply }).await
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
            warn!("swarm busy: revocation not gossiped (it was still applied and pushed)");
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<NetEvent> {
        self.events.subscribe()
    }
}

#[derive(Debug, Default)]
struct PeerState {
    connected: usize,
    addrs: Vec<Multiaddr>,
    rtt: Option<Duration>,
    agent: String,
    protocol_version: String,
    /// Addresses to put in the DHT routing table once the peer is a verified member.
    kad_addrs: Vec<Multiaddr>,
    /// Open connections and their paths.
    conns: HashMap<ConnectionId, ConnPath>,
    /// When the relayed connections are closed (a direct one exists since then).
    close_relayed_at: Option<Instant>,
    /// Hole punch retries while only relayed: attempts so far, when the next is due,
    /// and the probe connection in flight (closed when its time is up).
    repunch_attempts: u32,
    repunch_at: Option<Instant>,
    probe: Option<(ConnectionId, Instant)>,
}

struct NetTask {
    swarm: Swarm<Behaviour>,
    config: Arc<Config>,
    events: broadcast::Sender<NetEvent>,
    directory: Arc<Directory>,
    hubs: Arc<Hubs>,
    trust: Arc<Trust>,
    /// Whether this node relays for members now (AutoNAT or config).
    relay_enabled: Arc<std::sync::atomic::AtomicBool>,
    /// AutoNAT's verdict, a `pb::Reachability` (read by the handle).
    reachability: Arc<std::sync::atomic::AtomicI32>,
    topic: gossipsub::IdentTopic,
    revocation_topic: gossipsub::IdentTopic,
    peers: HashMap<PeerId, PeerState>,
    dial_by_peer: HashMap<PeerId, Vec<oneshot::Sender<Result<PeerId, NetError>>>>,
    dial_by_conn: HashMap<ConnectionId, oneshot::Sender<Result<PeerId, NetError>>>,
    provider_queries: HashMap<kad::QueryId, (Vec<PeerId>, oneshot::Sender<Vec<PeerId>>)>,
    last_provide: Option<Instant>,
    /// When configured relays we lost are dialed next.
    relay_redial_at: Instant,
}

/// Starts listening and spawns the swarm task. Returns once listen addresses are bound.
pub(crate) async fn spawn(
    mut swarm: Swarm<Behaviour>,
    config: Arc<Config>,
    directory: Arc<Directory>,
    hubs: Arc<Hubs>,
    trust: Arc<Trust>,
    relay_enabled: Arc<std::sync::atomic::AtomicBool>,
    shutdown: CancellationToken,
) -> Result<NetHandle, NetError> {
    for addr in &config.node.listen {
        swarm
            .listen_on(addr.clone())
            .map_err(|e| NetError::Other(format!("cannot listen on {addr}: {e}")))?;
    }
    let topic = behaviour::announce_topic(&config.node.fleet_id);
    let revocation_topic = behaviour::revocation_topic(&config.node.fleet_id);
    for t in [&topic, &revocation_topic] {
        swarm
            .behaviour_mut()
            .gossipsub
            .subscribe(t)
            .map_err(|e| NetError::Other(format!("gossipsub subscribe: {e}")))?;
    }
    let (cmd_tx, cmd_rx) = mpsc::channel(COMMAND_QUEUE);
    let (ev_tx, _) = broadcast::channel(EVENT_QUEUE);
    let task_trust = trust.clone();
    let handle_relay_enabled = relay_enabled.clone();
    let reachability = Arc::new(std::sync::atomic::AtomicI32::new(pb::Reachability::Unknown as i32));
    match config.node.relay_server {
        Some(on) => info!(reason = "config", "relay server {}", if on { "on" } else { "off" }),
        None => info!(
            reason = "autonat",
            "relay server off until AutoNAT finds this node public"
        ),
    }
    let mut task = NetTask {
        swarm,
        config: config.clone(),
        events: ev_tx.clone(),
        directory,
        hubs,
        trust,
        relay_enabled,
        reachability: reachability.clone(),
        topic,
        revocation_topic,
        peers: HashMap::new(),
        dial_by_peer: HashMap::new(),
        dial_by_conn: HashMap::new(),
        provider_queries: HashMap::new(),
        last_provide: None,
        relay_redial_at: Instant::now() + RELAY_REDIAL,
    };
    // Wait until every listener has an address (QUIC/TCP bind is immediate on success).
    let wanted = config.node.listen.len();
    let mut bound = 0;
    let deadline = tokio::time::sleep(Duration::from_secs(5));
    tokio::pin!(deadline);
    while bound < wanted {
        tokio::select! {
            ev = task.swarm.select_next_some() => {
                if matches!(ev, SwarmEvent::NewListenAddr { .. }) { bound += 1; }
                if let SwarmEvent::ListenerError { error, .. } | SwarmEvent::ListenerClosed { reason: Err(error), .. } = &ev {
                    return Err(NetError::Other(format!("listener failed: {error}")));
                }
                task.on_event(ev);
            }
            _ = &mut deadline => break,
        }
    }
    // Bootstrap peers are dialed on `NetHandle::bootstrap`, once every listener of
    // connection events (membership!) is subscribed.
    tokio::spawn(task.run(cmd_rx, shutdown));
    Ok(NetHandle {
        cmd: cmd_tx,
        events: ev_tx,
        trust: task_trust,
        relay_enabled: handle_relay_enabled,
        reachability,
    })
}

impl NetTask {
    async fn run(mut self, mut cmds: mpsc::Receiver<Command>, shutdown: CancellationToken) {
        let mut announce = tokio::time::interval(Duration::from_secs(self.config.node.announce_interval_s));
        announce.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut housekeeping = tokio::time::interval(Duration::from_millis(500));
        housekeeping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                ev = self.swarm.select_next_some() => self.on_event(ev),
                cmd = cmds.recv() => match cmd {
                    Some(cmd) => self.on_command(cmd),
                    None => break,
                },
                _ = announce.tick() => self.announce(),
                _ = housekeeping.tick() => {
                    self.close_superseded_relays();
                    self.repunch();
                    self.redial_relays();
                }
                _ = shutdown.cancelled() => break,
            }
        }
        debug!("swarm task ends");
    }

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Connect { peer, addrs, reply } => self.connect(peer, addrs, reply),
            Command::Peers(reply) => {
                let mut v: Vec<_> = self
                    .peers
                    .iter()
                    .map(|(p, s)| PeerSummary {
                        peer: *p,
                        connected: s.connected > 0,
                        addrs: s.addrs.clone(),
                        rtt: s.rtt,
                        agent: s.agent.clone(),
                        fleet_protocol: s.protocol_version.clone(),
                        connections: {
                            let mut c: Vec<ConnPath> = s.conns.values().cloned().collect();
                            c.sort_by_key(|c| c.relayed);
                            c
                        },
                    })
                    .collect();
                v.sort_by_key(|s| (!s.connected, s.peer));
                let _ = reply.send(v);
            }
            Command::ListenAddrs(reply) => {
                let _ = reply.send(self.swarm.listeners().cloned().collect());
            }
            Command::FindProviders { key, reply } => {
                let id = self.swarm.behaviour_mut().kad.get_providers(key);
                self.provider_queries.insert(id, (Vec::new(), reply));
            }
            Command::Bootstrap => {
                for addr in self.config.node.bootstrap.clone() {
                    let (tx, _rx) = oneshot::channel();
                    let (peer, addr) = split_p2p(addr);
                    self.connect(peer, vec![addr], tx);
                }
            }
            Command::Disconnect(peer) => {
                let _ = self.swarm.disconnect_peer_id(peer);
                self.swarm.behaviour_mut().kad.remove_peer(&peer);
            }
            Command::CloseConnections(peer) => {
                info!(%peer, "closing every connection to a peer whose path stalled");
                let _ = self.swarm.disconnect_peer_id(peer);
            }
            Command::Verified(peer) => {
                // A configured relay proved membership: reserve a slot on it.
                for relay in self.config.node.relays.clone() {
                    if split_p2p(relay.clone()).0 == Some(peer) {
                        let circuit = relay.with(Protocol::P2pCircuit);
                        match self.swarm.listen_on(circuit.clone()) {
                            Ok(_) => info!(relay = %peer, "reserving a relay slot"),
                            Err(e) => warn!(relay = %peer, error = %e, "cannot listen through relay"),
                        }
                    }
                }
                let addrs = self.peers.get(&peer).map(|s| s.kad_addrs.clone()).unwrap_or_default();
                if !addrs.is_empty() {
                    for a in addrs {
                        self.swarm.behaviour_mut().kad.add_address(&peer, a);
                    }
                    self.maybe_provide();
                }
            }
            Command::PublishRevocation(r) => {
                let bytes = r.encode_to_vec();
                if let Err(e) = self
                    .swarm
                    .behaviour_mut()
                    .gossipsub
                    .publish(self.revocation_topic.clone(), bytes)
                {
                    debug!(error = %e, "revocation not gossiped");
                }
            }
        }
    }

    fn connect(
        &mut self,
        peer: Option<PeerId>,
        addrs: Vec<Multiaddr>,
        reply: oneshot::Sender<Result<PeerId, NetError>>,
    ) {
        let mut peer = peer;
        let mut plain = Vec::with_capacity(addrs.len());
        for a in addrs {
            let (p, a) = split_p2p(a);
            peer = peer.or(p);
            plain.push(a);
        }
        let Some(peer) = peer else {
            // Address without a peer id: dial it and learn who answers.
            let Some(addr) = plain.into_iter().next() else {
                let _ = reply.send(Err(NetError::Other("connect needs a peer id or an address".into())));
                return;
            };
            let opts = DialOpts::unknown_peer_id().address(addr.clone()).build();
            let cid = opts.connection_id();
            match self.swarm.dial(opts) {
                Ok(()) => {
                    self.dial_by_conn.insert(cid, reply);
                }
                Err(e) => {
                    let _ = reply.send(Err(NetError::Dial {
                        target: addr.to_string(),
                        reason: e.to_string(),
                    }));
                }
            }
            return;
        };
        if self.swarm.is_connected(&peer) {
            let _ = reply.send(Ok(peer));
            return;
        }
        let known = self.peers.entry(peer).or_default();
        for a in &plain {
            if !known.addrs.contains(a) {
                known.addrs.push(a.clone());
            }
        }
        let all = known.addrs.clone();
        // Also the addresses identify and Kademlia learned (e.g. circuits through every
        // relay the peer holds a reservation on).
        let opts = DialOpts::peer_id(peer)
            .addresses(all)
            .extend_addresses_through_behaviour()
            .condition(PeerCondition::DisconnectedAndNotDialing)
            .build();
        match self.swarm.dial(opts) {
            Ok(()) => self.dial_by_peer.entry(peer).or_default().push(reply),
            // Already dialing: wait for that attempt.
            Err(libp2p::swarm::DialError::DialPeerConditionFalse(_)) => {
                self.dial_by_peer.entry(peer).or_default().push(reply)
            }
            Err(e) => {
                let _ = reply.send(Err(NetError::Dial {
                    target: peer.to_string(),
                    reason: e.to_string(),
                }));
            }
        }
    }

    fn on_event(&mut self, ev: SwarmEvent<BehaviourEvent>) {
        match ev {
            SwarmEvent::NewListenAddr { address, .. } => {
                info!(%address, "listening");
                // A node configured as a relay is publicly reachable where it listens:
                // reservations must carry those addresses.
                if self.config.node.relay_server == Some(true)
                    && usable_addr(&address)
                    && !address.iter().any(|p| p == Protocol::P2pCircuit)
                {
                    self.swarm.add_external_address(address);
                }
            }
            SwarmEvent::ListenerClosed { addresses, reason, .. } => {
                debug!(?addresses, ?reason, "listener closed");
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                ..
            } => {
                debug!(peer = %peer_id, addr = %endpoint.get_remote_address(), "connected");
                let st = self.peers.entry(peer_id).or_default();
                st.connected += 1;
                let relayed = endpoint.is_relayed();
                if relayed && endpoint.is_dialer() && st.repunch_at.is_none() {
                    st.repunch_at = Some(Instant::now() + repunch_delay(st.repunch_attempts));
                }
                if !relayed {
                    st.repunch_attempts = 0;
                    st.repunch_at = None;
                }
                if let Some((probe, _)) = st.probe {
                    if probe == connection_id {
                        st.probe = Some((probe, Instant::now() + PROBE_LIFETIME));
                    }
                }
                st.conns.insert(
                    connection_id,
                    ConnPath {
                        addr: endpoint.get_remote_address().clone(),
                        relayed,
                    },
                );
                if !relayed && st.close_relayed_at.is_none() && st.conns.values().any(|c| c.relayed) {
                    info!(peer = %peer_id, addr = %endpoint.get_remote_address(), "direct path next to a relayed one");
                    st.close_relayed_at = Some(Instant::now() + RELAYED_GRACE);
                    let _ = self.events.send(NetEvent::DirectPath { peer: peer_id });
                }
                if endpoint.is_dialer() {
                    let a = endpoint.get_remote_address().clone();
                    if !st.addrs.contains(&a) {
                        st.addrs.push(a);
                    }
                }
                for w in self.dial_by_peer.remove(&peer_id).unwrap_or_default() {
                    let _ = w.send(Ok(peer_id));
                }
                if let Some(w) = self.dial_by_conn.remove(&connection_id) {
                    let _ = w.send(Ok(peer_id));
                }
                if st.connected == 1 {
                    let _ = self.events.send(NetEvent::Connected {
                        peer: peer_id,
                        dialer: endpoint.is_dialer(),
                    });
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                num_established,
                ..
            } => {
                if let Some(st) = self.peers.get_mut(&peer_id) {
                    st.connected = num_established as usize;
                    st.conns.remove(&connection_id);
                    if !st.conns.values().any(|c| c.relayed) {
                        st.close_relayed_at = None;
                    }
                    if st.probe.is_some_and(|(p, _)| p == connection_id) {
                        st.probe = None;
                    }
                    if num_established == 0 {
                        st.repunch_at = None;
                    }
                }
                if num_established == 0 {
                    debug!(peer = %peer_id, "disconnected");
                    let _ = self.events.send(NetEvent::Disconnected(peer_id));
                }
            }
            SwarmEvent::OutgoingConnectionError {
                peer_id,
                connection_id,
                error,
                ..
            } => {
                let reason = one_line(&error.to_string());
                debug!(peer = ?peer_id, %reason, "dial failed");
                if let Some(w) = self.dial_by_conn.remove(&connection_id) {
                    let _ = w.send(Err(NetError::Dial {
                        target: peer_id.map(|p| p.to_string()).unwrap_or_default(),
                        reason: reason.clone(),
                    }));
                }
                if let Some(p) = peer_id {
                    if !self.swarm.is_connected(&p) {
                        for w in self.dial_by_peer.remove(&p).unwrap_or_default() {
                            let _ = w.send(Err(NetError::Dial {
                                target: p.to_string(),
                                reason: reason.clone(),
                            }));
                        }
                    }
                }
            }
            SwarmEvent::Behaviour(ev) => self.on_behaviour(ev),
            _ => {}
        }
    }

    fn on_behaviour(&mut self, ev: BehaviourEvent) {
        match ev {
            BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. }) => {
                let fleet_version = behaviour::identify_version(&self.config.node.fleet_id);
                let st = self.peers.entry(peer_id).or_default();
                st.agent = info.agent_version.clone();
                st.protocol_version = info.protocol_version.clone();
                if info.protocol_version != fleet_version {
                    debug!(peer = %peer_id, version = %info.protocol_version, "peer of another fleet or program");
                    return;
                }
                let kad_proto = behaviour::kad_protocol(&self.config.node.fleet_id);
                if info.protocols.contains(&kad_proto) {
                    st.kad_addrs = info
                        .listen_addrs
                        .iter()
                        .filter(|a| usable_addr(a))
                        .take(16)
                        .cloned()
                        .collect();
                    // Members only: others never enter the routing table.
                    if self.trust.member(&peer_id).is_some() {
                        let addrs = self
                            .peers
                            .get(&peer_id)
                            .map(|s| s.kad_addrs.clone())
                            .unwrap_or_default();
                        for addr in addrs {
                            self.swarm.behaviour_mut().kad.add_address(&peer_id, addr);
                        }
                        self.maybe_provide();
                    }
                }
            }
            BehaviourEvent::Autonat(libp2p::autonat::Event::StatusChanged { new, .. }) => {
                let public = matches!(new, libp2p::autonat::NatStatus::Public(_));
                let verdict = match new {
                    libp2p::autonat::NatStatus::Public(_) => pb::Reachability::Public,
                    libp2p::autonat::NatStatus::Private => pb::Reachability::Private,
                    libp2p::autonat::NatStatus::Unknown => pb::Reachability::Unknown,
                };
                self.reachability
                    .store(verdict as i32, std::sync::atomic::Ordering::Relaxed);
                info!(status = ?new, "reachability changed");
                if self.config.node.relay_server.is_none() {
                    let was = self.relay_enabled.swap(public, std::sync::atomic::Ordering::Relaxed);
                    if was != public {
                        info!(reason = "autonat", status = ?new, "relay server {}", if public { "on" } else { "off" });
                    }
                }
            }
            BehaviourEvent::RelayClient(libp2p::relay::client::Event::ReservationReqAccepted {
                relay_peer_id, ..
            }) => {
                info!(relay = %relay_peer_id, "relay reservation accepted");
            }
            BehaviourEvent::RelayServer(ev) => {
                use libp2p::relay::Event as R;
                match ev {
                    R::CircuitReqAccepted {
                        src_peer_id,
                        dst_peer_id,
                    } => {
                        info!(src = %src_peer_id, dst = %dst_peer_id, "relay circuit opened")
                    }
                    R::CircuitClosed {
                        src_peer_id,
                        dst_peer_id,
                        error,
                    } => {
                        info!(src = %src_peer_id, dst = %dst_peer_id, error = ?error.map(|e| e.to_string()), "relay circuit closed")
                    }
                    R::CircuitReqDenied {
                        src_peer_id,
                        dst_peer_id,
                        ..
                    } => info!(src = %src_peer_id, dst = %dst_peer_id, "relay circuit refused"),
                    R::ReservationReqAccepted { src_peer_id, renewed } => {
                        debug!(peer = %src_peer_id, renewed, "relay reservation granted")
                    }
                    other => debug!(event = ?other, "relay server"),
                }
            }
            BehaviourEvent::Dcutr(ev) => {
                info!(peer = %ev.remote_peer_id, result = ?ev.result.as_ref().map(|_| "direct").map_err(|e| e.to_string()), "hole punch");
            }
            BehaviourEvent::Ping(ping::Event {
                peer, result: Ok(rtt), ..
            }) => {
                self.peers.entry(peer).or_default().rtt = Some(rtt);
            }
            BehaviourEvent::Mdns(mdns::Event::Discovered(list)) => {
                let mut by_peer: HashMap<PeerId, Vec<Multiaddr>> = HashMap::new();
                for (p, a) in list {
                    by_peer.entry(p).or_default().push(a);
                }
                for (peer, addrs) in by_peer {
                    debug!(peer = %peer, "found by mDNS");
                    let (tx, _rx) = oneshot::channel();
                    self.connect(Some(peer), addrs, tx);
                }
            }
            BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            }) => {
                let accept = self.on_gossip(propagation_source, &message);
                let verdict = if accept {
                    gossipsub::MessageAcceptance::Accept
                } else {
                    gossipsub::MessageAcceptance::Reject
                };
                let _ = self.swarm.behaviour_mut().gossipsub.report_message_validation_result(
                    &message_id,
                    &propagation_source,
                    verdict,
                );
            }
            // Provider records from members only (the provider is the sender).
            BehaviourEvent::Kad(kad::Event::InboundRequest {
                request: kad::InboundRequest::AddProvider { record: Some(record) },
            }) if self.trust.member(&record.provider).is_some() => {
                use kad::store::RecordStore;
                let _ = self.swarm.behaviour_mut().kad.store_mut().add_provider(record);
            }
            BehaviourEvent::Kad(kad::Event::OutboundQueryProgressed {
                id,
                result: kad::QueryResult::GetProviders(res),
                step,
                ..
            }) => {
                if let Ok(kad::GetProvidersOk::FoundProviders { providers, .. }) = res {
                    for p in providers {
                        if p == *self.swarm.local_peer_id() {
                            continue;
                        }
                        // Dial while the query still holds the provider's addresses.
                        if !self.swarm.is_connected(&p) {
                            let _ = self.swarm.dial(
                                DialOpts::peer_id(p)
                                    .condition(PeerCondition::DisconnectedAndNotDialing)
                                    .build(),
                            );
                        }
                        if let Some((found, _)) = self.provider_queries.get_mut(&id) {
                            if !found.contains(&p) {
                                found.push(p);
                            }
                        }
                    }
                }
                if step.last {
                    if let Some((found, reply)) = self.provider_queries.remove(&id) {
                        let _ = reply.send(found);
                    }
                }
            }
            _ => {}
        }
    }

    /// Judges a gossip message: members only; announcements only for cameras the
    /// sender's certificate binds to it; revocations only if they verify.
    fn on_gossip(&mut self, via: PeerId, message: &gossipsub::Message) -> bool {
        let Some(from) = message.source else { return false };
        if self.trust.member(&via).is_none() {
            return false;
        }
        if message.topic == self.revocation_topic.hash() {
            return match pb::Signed::decode(message.data.as_slice()) {
                Ok(r) => self.trust.apply_revocation(&r).is_ok(),
                Err(_) => false,
            };
        }
        let Some(cert) = self.trust.member(&from) else {
            return false;
        };
        match CameraAnnouncement::decode(message.data.as_slice()) {
            Ok(ann) if cert.may_serve(&ann.camera_id) => match self.directory.insert(from, ann, Via::Gossip) {
                Ok(()) => true,
                Err(e) => {
                    debug!(peer = %from, error = %e, "announcement ignored");
                    false
                }
            },
            Ok(ann) => {
                debug!(peer = %from, camera = %ann.camera_id.chars().take(64).collect::<String>(), "announcement for a camera not in the sender's certificate");
                false
            }
            Err(e) => {
                debug!(peer = %from, error = %e, "garbage announcement");
                false
            }
        }
    }

    /// Closes relayed connections whose peer has had a direct one for [`RELAYED_GRACE`].
    fn close_superseded_relays(&mut self) {
        let now = Instant::now();
        let mut close = Vec::new();
        for (peer, st) in &mut self.peers {
            if st.close_relayed_at.is_some_and(|t| t <= now) {
                st.close_relayed_at = None;
                if st.conns.values().any(|c| !c.relayed) {
                    close.extend(st.conns.iter().filter(|(_, c)| c.relayed).map(|(id, _)| (*peer, *id)));
                }
            }
        }
        for (peer, id) in close {
            info!(%peer, "closing a relayed connection: a direct path has taken over");
            self.swarm.close_connection(id);
        }
    }

    /// Dials configured relays we are not connected to (bootstrap dialed them once); the
    /// membership check that follows a connection renews the reservation.
    fn redial_relays(&mut self) {
        let now = Instant::now();
        if now < self.relay_redial_at {
            return;
        }
        self.relay_redial_at = now + RELAY_REDIAL;
        for relay in self.config.node.relays.clone() {
            let (Some(peer), addr) = split_p2p(relay) else {
                continue;
            };
            if !self.swarm.is_connected(&peer) {
                debug!(relay = %peer, "dialing a configured relay again");
                let (tx, _rx) = oneshot::channel();
                self.connect(Some(peer), vec![addr], tx);
            }
        }
    }

    /// Runs the hole punch again for peers reached only through a relay we dialed: a
    /// second circuit (a probe, hidden from new streams) makes the remote start DCUtR
    /// anew; the probe is closed after [`PROBE_LIFETIME`] unless a direct path came of it.
    fn repunch(&mut self) {
        let now = Instant::now();
        let mut dial = Vec::new();
        let mut close = Vec::new();
        for (peer, st) in &mut self.peers {
            if let Some((probe, until)) = st.probe {
                if until <= now {
                    close.push(probe);
                    st.probe = None;
                }
                continue;
            }
            if st.connected == 0 || st.conns.values().any(|c| !c.relayed) {
                continue;
            }
            if st.repunch_at.is_none_or(|t| t > now) {
                continue;
            }
            // A circuit address we dialed (a listener side cannot dial the circuit back).
            let Some(circuit) = st
                .addrs
                .iter()
                .find(|a| a.iter().any(|p| p == Protocol::P2pCircuit))
                .cloned()
            else {
                st.repunch_at = None;
                continue;
            };
            st.repunch_attempts += 1;
            st.repunch_at = Some(now + repunch_delay(st.repunch_attempts));
            dial.push((*peer, circuit, st.repunch_attempts));
        }
        for id in close {
            debug!("closing a hole punch probe");
            self.swarm.close_connection(id);
        }
        for (peer, circuit, attempt) in dial {
            let opts = DialOpts::peer_id(peer)
                .addresses(vec![circuit])
                .condition(PeerCondition::Always)
                .build();
            let id = opts.connection_id();
            self.swarm.behaviour_mut().stream.hide(id);
            match self.swarm.dial(opts) {
                Ok(()) => {
                    info!(%peer, attempt, "only relayed: running the hole punch again");
                    if let Some(st) = self.peers.get_mut(&peer) {
                        st.probe = Some((id, Instant::now() + PROBE_LIFETIME));
                    }
                }
                Err(e) => debug!(%peer, error = %e, "hole punch probe not dialed"),
            }
        }
    }

    /// Provides the fleet's cameras key and each local camera's key in the DHT.
    fn maybe_provide(&mut self) {
        if self.hubs.is_empty() || self.last_provide.is_some_and(|t| t.elapsed() < Duration::from_secs(2)) {
            return;
        }
        self.last_provide = Some(Instant::now());
        let kad = &mut self.swarm.behaviour_mut().kad;
        let mut keys = vec![discovery::cameras_key()];
        keys.extend(self.hubs.ids().iter().map(|id| discovery::camera_key(id)));
        for key in keys {
            if let Err(e) = kad.start_providing(key) {
                warn!(error = %e, "cannot store provider record");
            }
        }
    }

    /// Publishes this node's cameras on gossipsub and refreshes provider records.
    fn announce(&mut self) {
        if self.hubs.is_empty() {
            return;
        }
        if self.last_provide.is_some_and(|t| t.elapsed() >= REPROVIDE_EVERY)
            && self.peers.values().any(|p| p.connected > 0)
        {
            self.last_provide = None;
            self.maybe_provide();
        }
        let me = *self.swarm.local_peer_id();
        let addrs: Vec<Multiaddr> = self.swarm.listeners().cloned().collect();
        for ann in self.hubs.announcements(me, &addrs) {
            let bytes = ann.encode_to_vec();
            if let Err(e) = self.swarm.behaviour_mut().gossipsub.publish(self.topic.clone(), bytes) {
                debug!(error = %e, camera = %ann.camera_id, "announcement not published");
            }
        }
    }
}

/// Addresses worth dialing: not unspecified (0.0.0.0 / ::).
fn usable_addr(a: &Multiaddr) -> bool {
    !a.iter().any(|p| match p {
        Protocol::Ip4(ip) => ip.is_unspecified(),
        Protocol::Ip6(ip) => ip.is_unspecified(),
        _ => false,
    })
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hole_punch_retries_back_off_to_five_minutes() {
        let d: Vec<u64> = (0..8).map(|a| repunch_delay(a).as_secs()).collect();
        assert_eq!(d, vec![10, 20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(repunch_delay(u32::MAX), Duration::from_secs(300));
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
