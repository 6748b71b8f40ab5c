//! Where a tap's video comes from: the node's own hub (frames opened here with the hub's
//! key) or the mesh (the node's watcher resolves, subscribes, retries and reports gaps),
//! and how it reaches this node ([`PathKind`]).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use libp2p::PeerId;

use super::{PathKind, Tap, TapFrame};
use crate::gateway::GatewayNode;
use crate::net::PeerSummary;
use crate::reach::routes::link_of;
use crate::reach::{Link, Reach};
use crate::stream::codecs::audio_params;
use crate::stream::fanout::QueueLimits;
use crate::stream::server::codec_params;
use crate::watch::{self, WatchEvent, WatchOptions};

/// How a stream from `peer` reaches this node.
pub async fn path_to(node: &Reach, camera: &str, peer: PeerId) -> PathKind {
    let owner = node.directory().lookup(camera).iter().any(|e| e.peer == peer);
    if !owner && !node.directory().lookup(camera).is_empty() {
        return PathKind::Forwarded;
    }
    let peers = node.peers().await.unwrap_or_default();
    peers
        .iter()
        .find(|p| p.peer == peer)
        .map_or(PathKind::Direct, peer_path)
}

/// Whether this node reaches a peer through a circuit relay ([`PathKind::Relay`]) or
/// not ([`PathKind::Direct`]), as the route chooser sees the link.
pub(in crate::gateway) fn peer_path(peer: &PeerSummary) -> PathKind {
    match link_of(Some(peer)) {
        Link::Relayed(_) => PathKind::Relay,
        Link::Direct | Link::Unknown => PathKind::Direct,
    }
}

/// Through the mesh: the node's watcher resolves, subscribes, retries and reports gaps.
pub(super) async fn run_remote(node: &GatewayNode, tap: &Tap) {
    let mut opts = WatchOptions::new(tap.camera.clone());
    opts.profile = tap.profile;
    opts.backoff_max = Duration::from_secs(2);
    opts.user_agent = format!("camesh/{} gateway", env!("CARGO_PKG_VERSION"));
    opts.audio = true;
    let mut events = watch::spawn(node.reach.clone(), opts, None, tap.cancel.child_token());
    while let Some(ev) = events.recv().await {
        match ev {
            WatchEvent::Started { peer, accept, gap } => {
                if let Some(g) = gap {
                    tap.on_gap(g);
                }
                let path = path_to(&node.reach, &tap.camera, peer).await;
                tap.set_source(Some(peer), path);
                match accept.codec.as_ref() {
                    Some(c) if c.codec == "h264" => {
                        tap.set_params(codec_params(c), accept.audio.as_ref().and_then(audio_params))
                    }
                    other => {
                        let codec = other.map_or("nothing", |c| c.codec.as_str());
                        tap.set_status(format!("the camera sends {codec}, not H.264"), true);
                        return;
                    }
                }
            }
            WatchEvent::Frame(f) => {
                let header = f.header.clone();
                tap.publish(&header, TapFrame::from_media(f));
            }
            WatchEvent::Interrupted { error, retry_in } => {
                tap.counters.interruptions.fetch_add(1, Ordering::Relaxed);
                tap.set_status(format!("interrupted ({error}); retrying in {retry_in:?}"), false);
            }
            WatchEvent::Failed { error } => {
                tap.set_status(error, true);
                return;
            }
            // The gateway watches one profile (not adaptive).
            WatchEvent::Switched { .. } => {}
        }
    }
}

/// The node's own camera: subscribe to its hub and open the frames here.
pub(super) async fn run_local(node: &GatewayNode, tap: &Tap) {
    let limits = QueueLimits {
        max_frames: node.reach.limits().subscriber_queue_frames,
        max_bytes: node.reach.limits().subscriber_queue_bytes,
    };
    let mut was_live = false;
    let mut down_since: Option<Instant> = None;
    loop {
        let Some(hub) = node.hubs.get_profile(&tap.camera, tap.profile) else {
            tap.set_status(format!("no camera {:?} on this node", tap.camera), true);
            return;
        };
        match hub.subscribe_with(node.peer_id(), limits, true) {
            Ok((params, sub)) => {
                if let Some(since) = down_since.take() {
                    tap.on_gap(since.elapsed());
                }
                tap.set_source(None, PathKind::Local);
                tap.set_params(params, hub.audio());
                was_live = true;
                while let Some(frame) = sub.next().await {
                    if frame.header.keyframe {
                        if let Some(p) = hub.params() {
                            tap.set_params(p, hub.audio());
                        }
                    }
                    let Some(key) = hub.key(frame.header.key_epoch) else {
                        continue;
                    };
                    match key.open(&frame.header, &frame.payload) {
                        Ok(plain) => {
                            let header = frame.header.clone();
                            let mut f = TapFrame::from_media(frame);
                            f.data = plain;
                            tap.publish(&header, f);
                        }
                        Err(e) => tracing::warn!(camera = %tap.camera, error = %e, "a local frame did not open"),
                    }
                }
                sub.close();
            }
            Err(e) => {
                if was_live {
                    down_since.get_or_insert_with(Instant::now);
                    tap.counters.interruptions.fetch_add(1, Ordering::Relaxed);
                }
                tap.set_status(e.to_string(), false);
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}
