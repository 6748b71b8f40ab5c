//! The libp2p behaviour of a camesh node and how the Swarm is built.
//!
//! QUIC first (one round trip to connect), TCP + Noise + Yamux as fallback, DNS, and
//! WebRTC-direct where the config turns it on ([`crate::config::Config::webrtc`]): the
//! transport browsers can dial without a signalling server (libp2p-webrtc; DTLS with a
//! certificate the node keeps, then Noise, data channels as streams). It needs a
//! listener to dial, so a node without it can neither listen nor dial WebRTC-direct.
//! Kademlia runs under a fleet-scoped protocol name so a fleet never joins the public
//! IPFS DHT or another fleet's; gossipsub carries camera announcements and revocations
//! (their topics and judge are [`crate::discovery`]'s); libp2p-stream
//! hands media and info streams to their own tasks (they never pass through here).

use std::time::Duration;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use libp2p::core::transport::OptionalTransport;
use libp2p::{
    autonat, connection_limits, dcutr, gossipsub, identify, identity::Keypair, kad, mdns, memory_connection_limits,
    noise, ping, relay, swarm::behaviour::toggle::Toggle, swarm::NetworkBehaviour, tcp, yamux, Multiaddr, PeerId,
    StreamProtocol, Swarm, Transport,
};

use super::ip_limits;
use super::members_only::MembersOnly;
use super::prefer_direct::PreferDirect;
use crate::auth::Trust;

use crate::config::Config;

/// Kademlia protocol name for a fleet: `/camesh/<fleet-id>/kad/1.0.0`.
pub fn kad_protocol(fleet_id: &str) -> StreamProtocol {
    // fleet ids are validated to `[a-z0-9_-]`, so the name is always a valid protocol.
    StreamProtocol::try_from_owned(format!("/camesh/{fleet_id}/kad/1.0.0")).expect("protocol name starts with /")
}

/// Identify protocol version: peers of another fleet are recognisable at once.
pub fn identify_version(fleet_id: &str) -> String {
    format!("camesh/{fleet_id}/1")
}

#[allow(missing_debug_implementations)]
#[derive(NetworkBehaviour)]
pub struct Behaviour {
    /// First, so they refuse before any other behaviour holds state for a connection:
    /// no new connection while the process holds more than [`MAX_MEMORY_FRACTION`] of
    /// the machine's memory, at most [`ip_limits::MAX_PENDING_PER_IP`] handshakes per
    /// remote address, then libp2p's counts.
    pub memory: memory_connection_limits::Behaviour,
    pub pending_per_ip: ip_limits::Behaviour,
    pub limits: connection_limits::Behaviour,
    /// Identify, Kademlia and gossipsub serve and speak to verified members only: a
    /// stranger learns neither the fleet, nor its cameras, nor where they are.
    pub identify: MembersOnly<identify::Behaviour>,
    pub ping: ping::Behaviour,
    pub mdns: Toggle<mdns::tokio::Behaviour>,
    pub kad: MembersOnly<kad::Behaviour<kad::store::MemoryStore>>,
    pub gossipsub: MembersOnly<gossipsub::Behaviour>,
    pub stream: PreferDirect<libp2p_stream::Behaviour>,
    pub relay_client: relay::client::Behaviour,
    pub relay_server: relay::Behaviour,
    pub dcutr: dcutr::Behaviour,
    pub autonat: autonat::Behaviour,
}

/// Lets only verified fleet members reserve a slot or open a circuit on this relay, and
/// only while relaying is on (AutoNAT found us public, or the config forces it).
#[derive(Debug)]
pub struct MemberGate {
    pub trust: Arc<Trust>,
    pub enabled: Arc<AtomicBool>,
    pub what: &'static str,
}

impl relay::RateLimiter for MemberGate {
    fn try_next(&mut self, peer: PeerId, _addr: &Multiaddr, _now: std::time::Instant) -> bool {
        if !self.enabled.load(Ordering::Relaxed) {
            return false;
        }
        let ok = self.trust.member(&peer).is_some();
        if !ok {
            self.trust.audit.record(
                "refused-relay",
                &peer.to_string(),
                "",
                &format!("{}: not a fleet member", self.what),
            );
        }
        ok
    }
}

/// Relay limits sized for video: libp2p's defaults (2 min, 128 KiB per circuit) cut a
/// 4 Mbit/s stream off after a quarter of a second. Circuits last 12 h (then are
/// re-established) with no byte cap; only fleet members may use them ([`MemberGate`]).
fn relay_config(trust: &Arc<Trust>, enabled: &Arc<AtomicBool>) -> relay::Config {
    relay::Config {
        max_reservations: 256,
        max_reservations_per_peer: 4,
        reservation_duration: Duration::from_secs(3600),
        reservation_rate_limiters: vec![Box::new(MemberGate {
            trust: trust.clone(),
            enabled: enabled.clone(),
            what: "reservation",
        })],
        max_circuits: 128,
        max_circuits_per_peer: 16,
        max_circuit_duration: Duration::from_secs(12 * 3600),
        max_circuit_bytes: 0,
        circuit_src_rate_limiters: vec![Box::new(MemberGate {
            trust: trust.clone(),
            enabled: enabled.clone(),
            what: "circuit",
        })],
    }
}

/// AutoNAT v1 with libp2p's defaults except where [`Limits`](crate::config::Limits) says
/// otherwise (all of which default to libp2p's values).
fn autonat_config(limits: &crate::config::Limits) -> autonat::Config {
    autonat::Config {
        boot_delay: Duration::from_millis(limits.autonat_boot_delay_ms),
        retry_interval: Duration::from_millis(limits.autonat_retry_interval_ms),
        only_global_ips: limits.autonat_only_global_ips,
        ..autonat::Config::default()
    }
}

/// Errors building the Swarm (bad keys, transports that failed to start).
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("building the libp2p swarm: {0}")]
    Swarm(String),
}

fn build_err(e: impl std::fmt::Display) -> BuildError {
    BuildError::Swarm(e.to_string())
}

/// Connections being set up from outside at once (handshakes cost CPU and memory before
/// anything is known of the peer: peer ids cost nothing).
pub const MAX_PENDING_INCOMING: u32 = 128;
/// Established connections in all (a relay's 256 reservations and 128 circuits fit).
pub const MAX_ESTABLISHED: u32 = 1024;
/// Established connections per peer (direct, relayed and a hole-punched one fit).
pub const MAX_PER_PEER: u32 = 8;
/// New connections (in or out) are refused while the process's resident memory is above
/// this fraction of the machine's. Half: on a 1 GiB camera board that is 512 MiB, far
/// above what a node serving its configured limits needs at rest (tens of MiB plus
/// 16 MiB of GOP cache per camera), yet refusing well before the kernel's OOM killer
/// would end the process and every stream it serves. Open connections carry on.
pub const MAX_MEMORY_FRACTION: f64 = 0.5;

/// The DHT store's bounds. Only provider records are stored (inbound value records are
/// never accepted), each judged first (`crate::discovery::provide::judge_provider`: one
/// per camera a member's certificate lists, plus the cameras key); here at most 4,096
/// keys (a fleet's cameras) of at most 20 providers each (Kademlia's k), about 16 MiB at
/// worst.
fn provider_store_config() -> kad::store::MemoryStoreConfig {
    kad::store::MemoryStoreConfig {
        max_records: 16,
        max_value_bytes: 1024,
        max_provided_keys: 4096,
        max_providers_per_key: 20,
    }
}

/// Largest gossipsub message: an announcement is well under 1 KiB.
const MAX_GOSSIP_BYTES: usize = 16 << 10;

/// Builds the Swarm. `webrtc` is the node's WebRTC-direct certificate when the transport
/// is on ([`crate::identity::webrtc_certificate`]), `None` to leave it out; the bytes of
/// QUIC streams are counted into `traffic` by protocol.
pub fn build_swarm(
    key: Keypair,
    config: &Config,
    trust: &Arc<Trust>,
    relay_enabled: &Arc<AtomicBool>,
    webrtc: Option<libp2p_webrtc::tokio::Certificate>,
    traffic: &Arc<super::traffic::Traffic>,
) -> Result<Swarm<Behaviour>, BuildError> {
    if webrtc.is_some() {
        // webrtc-rs's DTLS builds rustls configs from the process-wide provider, which
        // rustls picks by itself only when one backend is compiled in; with libp2p-tls
        // (aws-lc-rs) and dtls (ring) both are, and DTLS would panic on its first
        // handshake. aws-lc-rs: what that default was before WebRTC came in. Already
        // installed (a second node in the process) is fine.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    }
    let fleet = config.node.fleet_id.clone();
    let mdns_on = config.node.mdns;
    let dht_server = config.dht_server();
    let autonat_config = autonat_config(&config.limits);
    // Validated to fit in u32 (at most 1 GiB).
    let stream_window = u32::try_from(config.limits.stream_window_bytes).unwrap_or(u32::MAX);
    let conn_window = u32::try_from(config.limits.connection_window_bytes)
        .unwrap_or(u32::MAX)
        .max(stream_window);
    let swarm = libp2p::SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(build_err)?
        // QUIC as `with_quic_config` builds it, with its streams counted by protocol.
        .with_other_transport(|key| {
            let mut c = libp2p::quic::Config::new(key);
            c.max_stream_data = stream_window;
            c.max_connection_data = conn_window;
            let traffic = traffic.clone();
            libp2p::quic::tokio::Transport::new(c).map(move |(peer, conn), endpoint| {
                (
                    peer,
                    super::traffic::Counted::new(conn, traffic.clone(), peer, endpoint),
                )
            })
        })
        .map_err(build_err)?
        .with_other_transport(|key| match webrtc {
            Some(cert) => OptionalTransport::some(libp2p_webrtc::tokio::Transport::new(key.clone(), cert)),
            None => OptionalTransport::none(),
        })
        .map_err(build_err)?
        .with_dns()
        .map_err(build_err)?
        .with_relay_client(noise::Config::new, yamux::Config::default)
        .map_err(build_err)?
        .with_behaviour(
            |key, relay_client| -> Result<Behaviour, Box<dyn std::error::Error + Send + Sync>> {
                let peer_id = key.public().to_peer_id();
                let identify = identify::Behaviour::new(
                    identify::Config::new(identify_version(&fleet), key.public())
                        .with_agent_version(format!("camesh-node/{}", env!("CARGO_PKG_VERSION")))
                        // A new listen address (a relay reservation accepted) reaches
                        // connected members at once, so the DHT hands out the circuit.
                        .with_push_listen_addr_updates(true),
                );
                let mdns = if mdns_on {
                    Some(mdns::tokio::Behaviour::new(mdns::Config::default(), peer_id)?)
                } else {
                    None
                };
                let mut kad_config = kad::Config::new(kad_protocol(&fleet));
                kad_config.set_query_timeout(Duration::from_secs(10));
                // Only verified fleet members enter the routing table or the record store:
                // the swarm task adds them once their certificate checks out.
                kad_config.set_kbucket_inserts(kad::BucketInserts::Manual);
                kad_config.set_record_filtering(kad::StoreInserts::FilterBoth);
                let store = kad::store::MemoryStore::with_config(peer_id, provider_store_config());
                let mut kad = kad::Behaviour::with_config(peer_id, store, kad_config);
                kad.set_mode(Some(if dht_server {
                    kad::Mode::Server
                } else {
                    kad::Mode::Client
                }));
                // Unsigned by gossipsub, which would verify every copy it decodes:
                // what needs authenticating is signed inside the message and verified
                // once, by the judge, after gossipsub dropped the duplicates by their
                // content's digest (`crate::discovery::gossip`).
                let gossip_config = gossipsub::ConfigBuilder::default()
                    .heartbeat_interval(Duration::from_secs(1))
                    .validation_mode(gossipsub::ValidationMode::Permissive)
                    .message_id_fn(crate::discovery::gossip::message_id)
                    .max_transmit_size(MAX_GOSSIP_BYTES)
                    // Every message is checked (sender is a member, content verifies) first.
                    .validate_messages()
                    .build()?;
                let gossipsub =
                    gossipsub::Behaviour::new(gossipsub::MessageAuthenticity::Author(peer_id), gossip_config)?;
                Ok(Behaviour {
                    memory: memory_connection_limits::Behaviour::with_max_percentage(MAX_MEMORY_FRACTION),
                    pending_per_ip: ip_limits::Behaviour::new(ip_limits::MAX_PENDING_PER_IP),
                    limits: connection_limits::Behaviour::new(
                        connection_limits::ConnectionLimits::default()
                            .with_max_pending_incoming(Some(MAX_PENDING_INCOMING))
                            .with_max_established(Some(MAX_ESTABLISHED))
                            .with_max_established_per_peer(Some(MAX_PER_PEER)),
                    ),
                    identify: MembersOnly::new(identify),
                    // Frequent pings: a connection that stops answering is closed within
                    // about 2 s (`super::liveness`), not at QUIC's idle timeout.
                    ping: ping::Behaviour::new(ping::Config::new().with_interval(super::liveness::PING_INTERVAL)),
                    mdns: Toggle::from(mdns),
                    kad: MembersOnly::new(kad),
                    gossipsub: MembersOnly::new(gossipsub),
                    stream: PreferDirect::new(libp2p_stream::Behaviour::new()),
                    relay_client,
                    relay_server: relay::Behaviour::new(peer_id, relay_config(trust, relay_enabled)),
                    dcutr: dcutr::Behaviour::new(peer_id),
                    autonat: autonat::Behaviour::new(peer_id, autonat_config),
                })
            },
        )
        .map_err(build_err)?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build();
    let mut swarm = swarm;
    // Forced on or off by config; otherwise libp2p offers relaying once an external
    // address is confirmed (AutoNAT), and MemberGate follows AutoNAT's verdict.
    match config.node.relay_server {
        Some(true) => swarm
            .behaviour_mut()
            .relay_server
            .set_status(Some(relay::Status::Enable)),
        Some(false) => swarm
            .behaviour_mut()
            .relay_server
            .set_status(Some(relay::Status::Disable)),
        None => {}
    }
    Ok(swarm)
}
