//! The swarm task's event loop: it holds the Swarm, the command channel's receiver and
//! the pending replies, and carries out what discovery ([`Discovery`]) and the punch
//! schedule ([`Punch`]) decide. Swarm and behaviour events are handled in [`events`].

mod events;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI32};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use libp2p::{
    kad,
    multiaddr::Protocol,
    swarm::{dial_opts::DialOpts, dial_opts::PeerCondition, ConnectionId},
    Multiaddr, PeerId, Swarm,
};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::addr::prefer_quic;
use super::behaviour::Behaviour;
use super::handle::{Command, NetError, NetEvent};
use super::liveness::{Liveness, RelayRefresh};
use super::path::is_circuit;
use super::peers::{self, PeerState};
use super::punch::{Action, Punch};
use super::traffic::{Heard, Traffic};
use crate::addr::split_p2p;
use crate::auth::Trust;
use crate::config::Config;
use crate::discovery::{Discovery, Publish};

/// How often configured relays we are not connected to are dialed again (a relay that
/// restarted gets our reservation back once it is up).
const RELAY_REDIAL: Duration = Duration::from_secs(5);
/// How often the punch schedule, the liveness check and the relay redial run.
const HOUSEKEEPING: Duration = Duration::from_millis(250);

type DialReply = oneshot::Sender<Result<PeerId, NetError>>;
/// A provider lookup: the providers found so far, whether the first ones end it, and
/// who waits for the answer.
type ProviderQuery = (Vec<PeerId>, bool, oneshot::Sender<Vec<PeerId>>);

pub(super) struct NetTask {
    pub(super) swarm: Swarm<Behaviour>,
    config: Arc<Config>,
    events: broadcast::Sender<NetEvent>,
    discovery: Discovery,
    trust: Arc<Trust>,
    /// Whether this node relays for members now (AutoNAT or config).
    relay_enabled: Arc<AtomicBool>,
    /// AutoNAT's verdict, a `pb::Reachability` (read by the handle).
    reachability: Arc<AtomicI32>,
    peers: HashMap<PeerId, PeerState>,
    punch: Punch,
    /// Which connections stopped answering pings.
    liveness: Liveness,
    /// The node's stream counters, which also stamp when each QUIC connection last
    /// read bytes ([`Heard`], claimed when a connection is established).
    traffic: Arc<Traffic>,
    heard: HashMap<ConnectionId, Heard>,
    relay_refresh: RelayRefresh,
    dial_by_peer: HashMap<PeerId, Vec<DialReply>>,
    dial_by_conn: HashMap<ConnectionId, DialReply>,
    /// Open provider lookups: providers found so far, whether the first ones end it,
    /// and who is waiting.
    provider_queries: HashMap<kad::QueryId, ProviderQuery>,
    /// When configured relays we lost are dialed next.
    relay_redial_at: Instant,
}

impl NetTask {
    pub(super) fn new(
        swarm: Swarm<Behaviour>,
        config: Arc<Config>,
        events: broadcast::Sender<NetEvent>,
        discovery: Discovery,
        trust: Arc<Trust>,
        relay_enabled: Arc<AtomicBool>,
        reachability: Arc<AtomicI32>,
    ) -> Self {
        Self {
            swarm,
            config,
            events,
            discovery,
            trust,
            relay_enabled,
            reachability,
            peers: HashMap::new(),
            punch: Punch::default(),
            liveness: Liveness::default(),
            traffic: Arc::default(),
            heard: HashMap::new(),
            relay_refresh: RelayRefresh::default(),
            dial_by_peer: HashMap::new(),
            dial_by_conn: HashMap::new(),
            provider_queries: HashMap::new(),
            relay_redial_at: Instant::now() + RELAY_REDIAL,
        }
    }

    /// The node's stream counters (whose byte stamps the liveness check reads).
    pub(super) fn with_traffic(mut self, traffic: Arc<Traffic>) -> Self {
        self.traffic = traffic;
        self
    }

    pub(super) async fn run(mut self, mut cmds: mpsc::Receiver<Command>, shutdown: CancellationToken) {
        let mut announce = tokio::time::interval(Duration::from_secs(self.config.node.announce_interval_s));
        announce.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut housekeeping = tokio::time::interval(HOUSEKEEPING);
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
                    self.close_silent();
                    let owed = self.discovery.provide_owed(Instant::now());
                    self.start_providing(owed);
                    self.punch_tick();
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
            Command::Redial { peer, addrs, reply } => self.redial(peer, addrs, reply),
            Command::Peers(reply) => {
                let _ = reply.send(peers::summaries(&self.peers, self.swarm.behaviour().stream.paths()));
            }
            Command::ListenAddrs(reply) => {
                let _ = reply.send(self.swarm.listeners().cloned().collect());
            }
            Command::FindProviders { key, first, reply } => {
                let id = self.swarm.behaviour_mut().kad.get_providers(key);
                self.provider_queries.insert(id, (Vec::new(), first, reply));
            }
            Command::Bootstrap => {
                // One dial per peer with all its addresses (QUIC before WebRTC-direct);
                // an address without a peer id is dialed on its own.
                let mut by_peer: Vec<(Option<PeerId>, Vec<Multiaddr>)> = Vec::new();
                for addr in self.config.node.bootstrap.clone() {
                    let (peer, addr) = split_p2p(addr);
                    match by_peer.iter_mut().find(|(p, _)| p.is_some() && *p == peer) {
                        Some((_, addrs)) => addrs.push(addr),
                        None => by_peer.push((peer, vec![addr])),
                    }
                }
                for (peer, addrs) in by_peer {
                    let (tx, _rx) = oneshot::channel();
                    self.connect(peer, addrs, tx);
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
                // Identify, Kademlia and gossipsub now serve it and speak to it.
                let b = self.swarm.behaviour_mut();
                b.identify.release(peer);
                b.kad.release(peer);
                b.gossipsub.release(peer);
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
                for a in addrs {
                    self.swarm.behaviour_mut().kad.add_address(&peer, a);
                }
                // Our own provider records are in our store (a member asking us directly,
                // even a DHT client, finds our cameras), and go out to the DHT servers
                // we know (at most every 2 s).
                self.provide();
            }
            Command::PublishRevocation(r) => {
                let p = self.discovery.revocation(&r);
                self.publish(p);
            }
        }
    }

    fn connect(&mut self, peer: Option<PeerId>, addrs: Vec<Multiaddr>, reply: DialReply) {
        let mut peer = peer;
        let mut plain = Vec::with_capacity(addrs.len());
        for a in addrs {
            let (p, a) = split_p2p(a);
            peer = peer.or(p);
            plain.push(a);
        }
        let plain = prefer_quic(plain);
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
        for a in plain {
            known.remember(a);
        }
        let mut all = prefer_quic(known.addrs.clone());
        all.extend(peers::relay_fallbacks(peer, &all, &self.relays_connected()));
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

    /// Relays this node is connected to and verified, each with the address it is reached at:
    /// configured relays, bootstrap peers (`mesh -b <relay>`: a short-lived command
    /// dials before identify has told it which peers relay; one that does not refuses
    /// the circuit at once) and peers whose identify lists the hop protocol.
    fn relays_connected(&self) -> Vec<(PeerId, Multiaddr)> {
        let node = &self.config.node;
        let configured: Vec<PeerId> = node
            .relays
            .iter()
            .chain(&node.bootstrap)
            .filter_map(|r| split_p2p(r.clone()).0)
            .collect();
        self.peers
            .iter()
            // Verified members only: our exchange with a relay ends once it has verified
            // us too, and a camesh relay serves circuits to verified members only.
            .filter(|(p, s)| {
                (s.relays || configured.contains(p)) && self.swarm.is_connected(p) && self.trust.member(p).is_some()
            })
            .filter_map(|(p, s)| {
                let addr = s
                    .addrs
                    .iter()
                    .find(|a| !is_circuit(a) && !crate::addr::is_webrtc_direct(a))?;
                Some((*p, addr.clone()))
            })
            .collect()
    }

    /// A fresh dial to `peer` (direct addresses only), beside any under way.
    fn redial(&mut self, peer: PeerId, addrs: Vec<Multiaddr>, reply: DialReply) {
        if self.swarm.is_connected(&peer) {
            let _ = reply.send(Ok(peer));
            return;
        }
        let known = self.peers.entry(peer).or_default();
        for a in addrs {
            known.remember(split_p2p(a).1);
        }
        let opts = DialOpts::peer_id(peer)
            .addresses(prefer_quic(known.addrs.clone()))
            .condition(PeerCondition::Always)
            .build();
        match self.swarm.dial(opts) {
            Ok(()) => self.dial_by_peer.entry(peer).or_default().push(reply),
            Err(e) => {
                let _ = reply.send(Err(NetError::Dial {
                    target: peer.to_string(),
                    reason: e.to_string(),
                }));
            }
        }
    }

    /// Carries out what the punch schedule says is due: closes relayed connections a
    /// direct one took over and probes whose time is up, dials new probes.
    fn punch_tick(&mut self) {
        let peers = &self.peers;
        let actions = self
            .punch
            .tick(Instant::now(), self.swarm.behaviour().stream.paths(), |p| {
                peers.get(p).and_then(PeerState::circuit)
            });
        for action in actions {
            match action {
                Action::CloseRelayed { peer, conn } => {
                    info!(%peer, "closing a relayed connection: a direct path has taken over");
                    self.swarm.close_connection(conn);
                }
                Action::CloseProbe(conn) => {
                    debug!("closing a hole punch probe");
                    self.swarm.close_connection(conn);
                }
                Action::Probe { peer, circuit, attempt } => {
                    let opts = DialOpts::peer_id(peer)
                        .addresses(vec![circuit])
                        .condition(PeerCondition::Always)
                        .build();
                    let id = opts.connection_id();
                    self.swarm.behaviour_mut().stream.hide(id);
                    match self.swarm.dial(opts) {
                        Ok(()) => {
                            info!(%peer, attempt, "only relayed: running the hole punch again");
                            self.punch.probe_dialed(peer, id, Instant::now());
                        }
                        Err(e) => debug!(%peer, error = %e, "hole punch probe not dialed"),
                    }
                }
            }
        }
    }

    /// Closes connections that stopped answering pings (a NAT moved one end): streams take
    /// another path, a lost relay is dialed again at once ([`Self::relay_lost`]).
    fn close_silent(&mut self) {
        let now = Instant::now();
        for (conn, heard) in &self.heard {
            if let Some(at) = heard.last() {
                self.liveness.heard(*conn, at);
            }
        }
        let dead = self.liveness.dead(now);
        for (peer, conn, silent) in &dead {
            info!(%peer, silent_ms = silent.as_millis() as u64, "closing a silent connection");
            self.swarm.close_connection(*conn);
        }
        if self.relay_refresh.due(dead.len(), now) {
            self.refresh_relays();
        }
    }

    /// A fresh connection to each configured relay (next to any that survived): a new
    /// observed address for hole punches, and a new reservation once it is verified.
    fn refresh_relays(&mut self) {
        for relay in self.config.node.relays.clone() {
            let (Some(peer), addr) = split_p2p(relay) else {
                continue;
            };
            info!(relay = %peer, "connections died silently: a fresh connection to the relay");
            let opts = DialOpts::peer_id(peer)
                .addresses(vec![addr])
                .condition(PeerCondition::Always)
                .build();
            if let Err(e) = self.swarm.dial(opts) {
                debug!(relay = %peer, error = %e, "relay not dialed");
            }
        }
    }

    /// The last connection to `peer` closed: if it is a configured relay, dial it again
    /// on the next housekeeping tick (the reservation went with the connection).
    pub(super) fn relay_lost(&mut self, peer: PeerId) {
        let is_relay = self
            .config
            .node
            .relays
            .iter()
            .any(|r| split_p2p(r.clone()).0 == Some(peer));
        if is_relay {
            info!(relay = %peer, "connection to a relay lost; dialing it again");
            self.relay_redial_at = Instant::now();
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

    /// Puts the provider records discovery asks for in the DHT.
    fn provide(&mut self) {
        let keys = self.discovery.provide(Instant::now());
        self.start_providing(keys);
    }

    fn start_providing(&mut self, keys: Vec<kad::RecordKey>) {
        let kad = &mut self.swarm.behaviour_mut().kad;
        for key in keys {
            if let Err(e) = kad.start_providing(key) {
                warn!(error = %e, "cannot store provider record");
            }
        }
    }

    /// Publishes this node's cameras on gossipsub and refreshes provider records.
    fn announce(&mut self) {
        let connected = self.swarm.connected_peers().next().is_some();
        let addrs: Vec<Multiaddr> = self.swarm.listeners().cloned().collect();
        let tick = Duration::from_secs(self.config.node.announce_interval_s);
        let out = self.discovery.announce(Instant::now(), tick, connected, &addrs);
        self.start_providing(out.provide);
        for p in out.publish {
            self.publish(p);
        }
    }

    fn publish(&mut self, p: Publish) {
        if let Err(e) = self.swarm.behaviour_mut().gossipsub.publish(p.topic, p.data) {
            match p.camera {
                Some(camera) => debug!(error = %e, %camera, "announcement not published"),
                None => debug!(error = %e, "revocation not gossiped"),
            }
        }
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}
