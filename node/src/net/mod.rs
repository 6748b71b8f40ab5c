//! The one task that owns the libp2p Swarm, and the pure policy it follows.
//!
//! Others talk to it through [`NetHandle`] (`handle.rs`): a bounded command channel with
//! oneshot replies, and a broadcast of [`NetEvent`]s (a slow listener lags and loses
//! events; it never stalls the swarm). Media bytes never come here: media and info
//! streams are handed out by libp2p-stream's `Control` and served by their own tasks.
//!
//! Data flow: swarm events and commands reach the event loop (`task/`), which moves
//! bytes and decisions between the Swarm and the parts that decide:
//! - [`crate::discovery::Discovery`] judges received gossip and provider records and
//!   says what to announce, publish and provide;
//! - [`path`] is the one record of every peer's connections (direct or relayed, through
//!   which relay), kept inside the Swarm by [`prefer_direct`] so new streams take a
//!   direct connection when there is one;
//! - [`punch`] schedules hole-punch retries and the closing of relayed connections
//!   once a direct one took over (pure, driven with `now`).
//!
//! The loop also dials peers found by mDNS, feeds identified fleet members into
//! Kademlia, and keeps the reservations on configured relays. Files: [`behaviour`] (the
//! libp2p behaviour and how the Swarm is built), [`members_only`] (identify, Kademlia
//! and gossipsub open to a peer only once it is verified), [`ip_limits`] (handshakes
//! per remote address), `peers.rs` (what the task knows of each
//! peer), [`traffic`] (bytes of QUIC streams by protocol), [`addr`].

pub mod addr;
pub mod behaviour;
mod handle;
pub mod ip_limits;
pub mod liveness;
pub mod members_only;
pub mod path;
mod peers;
pub mod prefer_direct;
pub mod punch;
mod task;
pub mod traffic;

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64};
use std::sync::Arc;
use std::time::Duration;

use camesh_proto::pb;
use futures::StreamExt;
use libp2p::{swarm::SwarmEvent, Multiaddr, Swarm};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::auth::Trust;
use crate::config::Config;
use crate::discovery::Discovery;
use behaviour::Behaviour;
pub use handle::{NetError, NetEvent, NetHandle};
pub use path::{circuit_relay, ConnPath, PeerPath};
pub use peers::PeerSummary;

/// Commands queued to the swarm task; callers wait when it is this far behind.
const COMMAND_QUEUE: usize = 64;
/// Events buffered per listener before it lags.
const EVENT_QUEUE: usize = 256;
/// How long `spawn` waits for every listener to have an address.
const BIND_WAIT: Duration = Duration::from_secs(5);

/// Starts listening and spawns the swarm task. Returns once listen addresses are bound.
///
/// `discovery` judges what arrives by gossip and says what this node announces;
/// `relay_enabled` is shared with the relay's member gate in the behaviour.
pub(crate) async fn spawn(
    mut swarm: Swarm<Behaviour>,
    config: Arc<Config>,
    discovery: Discovery,
    trust: Arc<Trust>,
    relay_enabled: Arc<AtomicBool>,
    traffic: Arc<traffic::Traffic>,
    shutdown: CancellationToken,
) -> Result<NetHandle, NetError> {
    let listen: Vec<Multiaddr> = config
        .node
        .listen
        .iter()
        .cloned()
        .chain(config.webrtc_listen())
        .collect();
    for addr in &listen {
        swarm
            .listen_on(addr.clone())
            .map_err(|e| NetError::Other(format!("cannot listen on {addr}: {e}")))?;
    }
    for t in discovery.topics() {
        swarm
            .behaviour_mut()
            .gossipsub
            .subscribe(t)
            .map_err(|e| NetError::Other(format!("gossipsub subscribe: {e}")))?;
    }
    let (cmd_tx, cmd_rx) = mpsc::channel(COMMAND_QUEUE);
    let (ev_tx, _) = broadcast::channel(EVENT_QUEUE);
    let reachability = Arc::new(AtomicI32::new(pb::Reachability::Unknown as i32));
    match config.node.relay_server {
        Some(on) => info!(reason = "config", "relay server {}", if on { "on" } else { "off" }),
        None => info!(
            reason = "autonat",
            "relay server off until AutoNAT finds this node public"
        ),
    }
    let handle = NetHandle {
        cmd: cmd_tx,
        events: ev_tx.clone(),
        trust: trust.clone(),
        relay_enabled: relay_enabled.clone(),
        reachability: reachability.clone(),
        dropped: Arc::new(AtomicU64::new(0)),
        traffic: traffic.clone(),
    };
    let mut task = task::NetTask::new(
        swarm,
        config.clone(),
        ev_tx,
        discovery,
        trust,
        relay_enabled,
        reachability,
    )
    .with_traffic(traffic);
    // Wait until every listener has an address (QUIC/TCP bind is immediate on success).
    let wanted = listen.len();
    let mut bound = 0;
    let deadline = tokio::time::sleep(BIND_WAIT);
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
    Ok(handle)
}
