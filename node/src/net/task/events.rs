//! Swarm and behaviour events as the swarm task handles them: connection bookkeeping
//! (pending dials answered, [`NetEvent`]s sent, the punch schedule told), identify and
//! Kademlia membership, AutoNAT's verdict, mDNS finds, gossip handed to discovery, and
//! provider query results.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Instant;

use camesh_proto::pb;
use libp2p::{
    gossipsub, identify, kad, mdns,
    multiaddr::Protocol,
    ping,
    swarm::{dial_opts::DialOpts, dial_opts::PeerCondition, SwarmEvent},
    Multiaddr, PeerId,
};
use tokio::sync::oneshot;
use tracing::{debug, info};

use super::{one_line, NetTask};
use crate::net::addr::{node_addr, usable_addr};
use crate::net::behaviour::{self, BehaviourEvent};
use crate::net::handle::{NetError, NetEvent};
use crate::net::punch::Established;

impl NetTask {
    pub(in crate::net) fn on_event(&mut self, ev: SwarmEvent<BehaviourEvent>) {
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
                num_established,
                ..
            } => {
                debug!(peer = %peer_id, addr = %endpoint.get_remote_address(), "connected");
                match self.traffic.claim(&peer_id, &endpoint) {
                    Some(heard) => {
                        self.heard.insert(connection_id, heard);
                    }
                    // TCP, circuits and WebRTC-direct are not stamped: pongs only.
                    None => {
                        debug!(peer = %peer_id, addr = %endpoint.get_remote_address(), "connection without byte stamps")
                    }
                }
                let (relayed, dialer) = (endpoint.is_relayed(), endpoint.is_dialer());
                let paths = self.swarm.behaviour().stream.paths();
                if self
                    .punch
                    .established(peer_id, connection_id, relayed, dialer, paths, Instant::now())
                    == Established::DirectPath
                {
                    info!(peer = %peer_id, addr = %endpoint.get_remote_address(), "direct path next to a relayed one");
                    let _ = self.events.send(NetEvent::DirectPath { peer: peer_id });
                }
                let st = self.peers.entry(peer_id).or_default();
                if dialer {
                    st.remember(endpoint.get_remote_address().clone());
                }
                for w in self.dial_by_peer.remove(&peer_id).unwrap_or_default() {
                    let _ = w.send(Ok(peer_id));
                }
                if let Some(w) = self.dial_by_conn.remove(&connection_id) {
                    let _ = w.send(Ok(peer_id));
                }
                if num_established.get() == 1 {
                    let _ = self.events.send(NetEvent::Connected { peer: peer_id, dialer });
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                num_established,
                ..
            } => {
                self.punch
                    .closed(peer_id, connection_id, self.swarm.behaviour().stream.paths());
                self.liveness.closed(connection_id);
                self.heard.remove(&connection_id);
                if num_established == 0 {
                    debug!(peer = %peer_id, "disconnected");
                    self.relay_lost(peer_id);
                    // A stranger leaves nothing behind (peer ids cost nothing, so keeping
                    // each one's record would grow without bound); members' addresses stay
                    // for redialing and `mesh peers`.
                    if self.trust.member(&peer_id).is_none() {
                        self.peers.remove(&peer_id);
                    }
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
                st.relays = info.protocols.contains(&libp2p::relay::HOP_PROTOCOL_NAME);
                if info.protocol_version != fleet_version {
                    debug!(peer = %peer_id, version = %info.protocol_version, "peer of another fleet or program");
                    return;
                }
                let kad_proto = behaviour::kad_protocol(&self.config.node.fleet_id);
                if info.protocols.contains(&kad_proto) {
                    st.kad_addrs = info
                        .listen_addrs
                        .iter()
                        .filter(|a| node_addr(a))
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
                        self.provide();
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
                self.reachability.store(verdict as i32, Ordering::Relaxed);
                info!(status = ?new, "reachability changed");
                if self.config.node.relay_server.is_none() {
                    let was = self.relay_enabled.swap(public, Ordering::Relaxed);
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
                peer,
                connection,
                result: Ok(rtt),
            }) => {
                self.peers.entry(peer).or_default().rtt = Some(rtt);
                self.liveness.pong(peer, connection, rtt, Instant::now());
            }
            BehaviourEvent::Mdns(mdns::Event::Discovered(list)) => {
                let mut by_peer: HashMap<PeerId, Vec<Multiaddr>> = HashMap::new();
                for (p, a) in list.into_iter().filter(|(_, a)| node_addr(a)) {
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
                let accept = self
                    .discovery
                    .judge(propagation_source, message.source, &message.topic, &message.data);
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
            // Provider records from members only, for themselves, for keys they may
            // provide (libp2p-kad already dropped those naming another provider).
            BehaviourEvent::Kad(kad::Event::InboundRequest {
                request: kad::InboundRequest::AddProvider { record: Some(record) },
            }) => {
                use kad::store::RecordStore;
                let provider = record.provider;
                match self.discovery.judge_provider(record) {
                    Ok(record) => {
                        if let Err(e) = self.swarm.behaviour_mut().kad.store_mut().add_provider(record) {
                            debug!(%provider, error = %e, "provider record not stored");
                        }
                    }
                    Err(e) => {
                        debug!(%provider, reason = %e, "provider record refused");
                        self.trust
                            .audit
                            .record("refused-provider", &provider.to_string(), "", &e.to_string());
                    }
                }
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
                        if let Some((found, _, _)) = self.provider_queries.get_mut(&id) {
                            if !found.contains(&p) {
                                found.push(p);
                            }
                        }
                    }
                }
                let early = self
                    .provider_queries
                    .get(&id)
                    .is_some_and(|(found, first, _)| *first && !found.is_empty());
                if step.last || early {
                    if let Some((found, _, reply)) = self.provider_queries.remove(&id) {
                        let _ = reply.send(found);
                    }
                    if early {
                        // The dials above already took the provider's addresses.
                        if let Some(mut q) = self.swarm.behaviour_mut().kad.query_mut(&id) {
                            q.finish();
                        }
                    }
                }
            }
            _ => {}
        }
    }
}
