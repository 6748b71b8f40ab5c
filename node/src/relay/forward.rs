//! Application-level forwarding (IO): re-serving another node's camera, sealed.
//!
//! [`start`] subscribes to the camera (or to another forwarder) with this node's
//! `forward` grant and feeds what arrives, still sealed and with the camera's own
//! sequence numbers, into a forwarded [`Hub`]. The media server then serves that hub like
//! a camera of its own (GOP cache, bounded queues, each viewer's grant checked), except
//! that it never sends keys: viewers get them from the camera (`super::keys`). So a
//! camera sends each stream once however many viewers sit behind the forwarder, and
//! the forwarder only ever holds ciphertext. When the upstream breaks, the forwarder's
//! viewers are cut off at once (so they move to another path) and the upstream is
//! retried with backoff until the forwarding is stopped.

use std::sync::Arc;
use std::time::Duration;

use camesh_proto::pb;
use libp2p::PeerId;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::auth::Rights;
use crate::backoff::next_backoff;
use crate::reach::{self, origin_of, Reach};
use crate::stream::client::{ClientError, Subscription};
use crate::stream::codecs::audio_params;
use crate::stream::hub::{Hub, Hubs};
use crate::stream::server::codec_params;

/// A running forwarding of one camera stream; stops with [`ForwardHandle::stop`] or when
/// the node shuts down.
#[derive(Debug, Clone)]
pub struct ForwardHandle {
    pub camera: String,
    pub profile: pb::Profile,
    /// Where the sealed frames come from (the camera's node or another forwarder).
    pub upstream: PeerId,
    /// The camera's own node (where viewers get keys).
    pub origin: PeerId,
    pub hub: Arc<Hub>,
    cancel: CancellationToken,
}

impl ForwardHandle {
    /// Stops forwarding: viewers behind this node are cut off, the hub is removed.
    pub fn stop(&self) {
        self.cancel.cancel();
    }

    pub fn is_stopped(&self) -> bool {
        self.cancel.is_cancelled()
    }
}

/// The grant this node presents upstream: `forward` if it holds one, else `live`.
fn upstream_grant(node: &Reach, camera: &str) -> Result<pb::Signed, ClientError> {
    let trust = node.trust();
    trust
        .grant_for(camera, Rights::FORWARD)
        .or_else(|| trust.grant_for(camera, Rights::LIVE))
        .ok_or_else(|| ClientError::Rejected {
            peer: node.peer_id(),
            code: pb::RejectCode::RejectNotAuthorized,
            reason: format!(
                "this node holds no grant to forward camera {camera}: ask a fleet admin (mesh grant {} --cameras {camera} --rights forward)",
                node.peer_id()
            ),
        })
}

async fn open_upstream(
    reach: &Reach,
    camera: &str,
    upstream: PeerId,
    profile: pb::Profile,
    grant: &pb::Signed,
) -> Result<Subscription, ClientError> {
    let mut req = reach::live_request(
        camera,
        profile,
        &format!("camesh/{} forwarder", env!("CARGO_PKG_VERSION")),
    );
    req.grant = crate::auth::signed::encode(grant);
    // The camera's audio too: viewers behind this forwarder may ask for it.
    req.audio = true;
    reach.open(camera, upstream, req).await
}

/// What a forwarding needs of its node: the way to the upstream, the hubs it serves
/// from, and the node's life.
#[derive(Debug, Clone)]
pub struct Forwarding {
    pub reach: Reach,
    pub hubs: Arc<Hubs>,
    /// The GOP cache size of forwarded hubs.
    pub gop_cache_bytes: usize,
    pub shutdown: CancellationToken,
}

/// Starts forwarding `camera` (`profile`) from `upstream`; returns once the first
/// upstream subscription is accepted, so the stream can be served right away.
pub async fn start(
    fwd: &Forwarding,
    camera: &str,
    upstream: PeerId,
    profile: pb::Profile,
) -> Result<ForwardHandle, ClientError> {
    let node = &fwd.reach;
    let grant = upstream_grant(node, camera)?;
    let sub = open_upstream(node, camera, upstream, profile, &grant).await?;
    let origin = origin_of(&sub.accept, upstream)?;
    let name = if sub.accept.camera_name.is_empty() {
        camera.to_owned()
    } else {
        sub.accept.camera_name.clone()
    };
    let tags = node
        .directory()
        .lookup(camera)
        .into_iter()
        .find(|e| e.peer == origin)
        .map(|e| e.announcement.tags.clone())
        .unwrap_or_default();
    let hub = Arc::new(Hub::forwarded(camera, name, tags, origin, fwd.gop_cache_bytes));
    if let Some(c) = &sub.accept.codec {
        hub.set_params(codec_params(c));
    }
    hub.set_audio(sub.accept.audio.as_ref().and_then(audio_params));
    fwd.hubs.insert_forwarded(profile, hub.clone());
    info!(camera, %upstream, %origin, ?profile, "forwarding");
    let handle = ForwardHandle {
        camera: camera.to_owned(),
        profile,
        upstream,
        origin,
        hub: hub.clone(),
        cancel: fwd.shutdown.child_token(),
    };
    tokio::spawn(run(fwd.clone(), handle.clone(), sub));
    Ok(handle)
}

/// Carries one upstream subscription's frames into the hub; resubscribes on failure.
async fn run(fwd: Forwarding, h: ForwardHandle, first: Subscription) {
    let node = &fwd.reach;
    let mut sub = Some(first);
    let mut backoff = Duration::ZERO;
    loop {
        if let Some(mut s) = sub.take() {
            backoff = Duration::ZERO;
            if let Some(c) = &s.accept.codec {
                h.hub.set_params(codec_params(c));
            }
            h.hub.set_audio(s.accept.audio.as_ref().and_then(audio_params));
            let reason = loop {
                let next = tokio::select! {
                    r = s.next_sealed() => r,
                    _ = h.cancel.cancelled() => break "forwarding stopped".to_owned(),
                };
                match next {
                    // Keys (if this node also holds `live`) stay here: viewers ask the camera.
                    Ok(Some(f)) if !f.header.new_key.is_empty() => {}
                    Ok(Some(f)) => h.hub.publish_sealed(f),
                    Ok(None) => break format!("{} ended the stream", h.upstream),
                    Err(e) => break e.to_string(),
                }
            };
            h.hub.set_offline(&reason);
            h.hub.close_subscribers();
            if h.cancel.is_cancelled() {
                break;
            }
            warn!(camera = %h.camera, upstream = %h.upstream, error = %reason, "forwarder lost its upstream; retrying");
        }
        backoff = next_backoff(backoff, Duration::from_millis(200), Duration::from_secs(5));
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = h.cancel.cancelled() => break,
        }
        // The grant held now (a renewed one replaces an expired one).
        let reopened = match upstream_grant(node, &h.camera) {
            Ok(grant) => open_upstream(node, &h.camera, h.upstream, h.profile, &grant).await,
            Err(e) => Err(e),
        };
        match reopened {
            Ok(s) => sub = Some(s),
            Err(e) => warn!(camera = %h.camera, upstream = %h.upstream, error = %e, "upstream not back yet"),
        }
    }
    h.hub.close_subscribers();
    fwd.hubs.remove_forwarded(h.profile, &h.hub);
    info!(camera = %h.camera, upstream = %h.upstream, "forwarding stopped");
}

/// Keeps a configured forwarding (`[[forward]]` in the config) running: starts it once
/// its upstream answers (retrying with backoff: the upstream may start later), after
/// which `run` keeps it going.
pub async fn keep(fwd: Forwarding, cfg: crate::config::ForwardConfig) {
    let node = &fwd.reach;
    let (peer, addr) = crate::addr::split_p2p(cfg.from.clone());
    let Some(peer) = peer else { return };
    let profile = match cfg.profile {
        crate::config::ForwardProfile::Main => pb::Profile::Main,
        crate::config::ForwardProfile::Sub => pb::Profile::Sub,
    };
    let addrs: Vec<_> = (!addr.is_empty()).then_some(addr).into_iter().collect();
    let shutdown = fwd.shutdown.clone();
    let mut backoff = Duration::ZERO;
    loop {
        if let Err(e) = node.net().connect(Some(peer), addrs.clone()).await {
            warn!(camera = %cfg.camera, upstream = %peer, error = %e, "cannot reach the upstream to forward from");
        } else {
            match start(&fwd, &cfg.camera, peer, profile).await {
                Ok(_) => return,
                Err(e) => warn!(camera = %cfg.camera, upstream = %peer, error = %e, "forwarding not started"),
            }
        }
        backoff = next_backoff(backoff, Duration::from_millis(500), Duration::from_secs(30));
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}
