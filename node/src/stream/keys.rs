//! `/camesh/key/1`: media keys straight from the camera (IO): the camera's answer and
//! server here, the viewer's request in [`super::client`] ([`KeySource::fetch`]).
//!
//! A viewer that watches through a forwarder gets ciphertext from the forwarder and the
//! key from the camera's own node, over the authenticated connection to that node: one
//! `KeyRequest` (camera, profile, epoch, the viewer's grant) and one `KeyResponse` per
//! stream. The camera checks membership and the grant (`live` on that camera, or `record` for an NVR, bound to
//! the asking peer, not revoked) on every request, so after a revocation the new epoch's
//! key goes only to viewers still authorized. Reads are bounded in size and time.

use std::sync::Arc;
use std::time::Duration;

use camesh_proto::{framing::decode_message, pb, LengthCodec, KEY_PROTOCOL};
use futures::AsyncWriteExt;
use libp2p::{PeerId, Stream, StreamProtocol};
use libp2p_stream::{Control, IncomingStreams};
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::accept;
use super::hub::Hubs;
use super::io::{read_request, write_message, IoError};
use crate::auth::Trust;
use crate::config::Limits;

pub fn key_protocol() -> StreamProtocol {
    StreamProtocol::new(KEY_PROTOCOL)
}

/// The camera's answer to one key request (pure: trust and hubs in, response out).
pub fn answer(hubs: &Hubs, trust: &Trust, peer: &PeerId, req: &pb::KeyRequest) -> Result<pb::KeyResponse, String> {
    let camera = &req.camera_id;
    // Only this node's own cameras: a forwarded hub has no keys to give.
    let hub = hubs.get_profile(camera, req.profile()).ok_or_else(|| {
        format!(
            "no camera {:?} on this node",
            camera.chars().take(64).collect::<String>()
        )
    })?;
    let grant = req
        .grant
        .as_ref()
        .ok_or_else(|| format!("no grant presented for camera {camera}"))?;
    trust
        .check_watch(peer, grant, camera, &hub.tags)
        .map_err(|e| e.to_string())?;
    let epoch = if req.epoch == 0 { hub.key_epoch() } else { req.epoch };
    let key = hub
        .key(epoch)
        .ok_or_else(|| format!("key epoch {epoch} of camera {camera} is not current"))?;
    Ok(pb::KeyResponse {
        epoch: key.epoch,
        key: bytes::Bytes::copy_from_slice(key.bytes()),
        error: String::new(),
    })
}

/// Serves key requests until `shutdown` on the bounded accept loop.
pub fn serve(
    incoming: IncomingStreams,
    hubs: Arc<Hubs>,
    trust: Arc<Trust>,
    limits: Limits,
    shutdown: CancellationToken,
) {
    let bounds = accept::Bounds::control(&limits);
    accept::serve(KEY_PROTOCOL, incoming, bounds, shutdown, move |peer, stream, _| {
        let (hubs, trust, limits) = (hubs.clone(), trust.clone(), limits.clone());
        async move { session(peer, stream, &hubs, &trust, &limits).await }
    });
}

async fn session(peer: PeerId, mut stream: Stream, hubs: &Hubs, trust: &Trust, limits: &Limits) -> Result<(), IoError> {
    let codec = LengthCodec::new(limits.max_control_bytes);
    let timeout = Duration::from_secs(limits.request_timeout_s);
    let result = if trust.wait_member(&peer, trust.grace()).await.is_none() {
        Err("not a fleet member".to_owned())
    } else {
        let Some(body) = read_request(&mut stream, codec, timeout).await? else {
            return Ok(());
        };
        decode_message::<pb::KeyRequest>("key request", body)
            .map_err(|e| e.to_string())
            .and_then(|req| {
                let r = answer(hubs, trust, &peer, &req);
                match &r {
                    Ok(k) => {
                        trust
                            .audit
                            .record("key-issued", &peer.to_string(), &req.camera_id, &format!("epoch {}", k.epoch));
                        info!(%peer, camera = %req.camera_id, epoch = k.epoch, "media key issued");
                    }
                    Err(e) => {
                        trust
                            .audit
                            .record("refused-key", &peer.to_string(), &req.camera_id, e);
                        info!(%peer, camera = %req.camera_id.chars().take(64).collect::<String>(), error = %e, "media key refused");
                    }
                }
                r
            })
    };
    let msg = result.unwrap_or_else(|error| pb::KeyResponse {
        error,
        ..Default::default()
    });
    write_message(&mut stream, &codec, &msg).await?;
    let _ = stream.close().await;
    Ok(())
}

/// Where a viewer behind a forwarder gets its keys: the camera's node.
#[derive(Clone)]
pub struct KeySource {
    pub control: Control,
    /// The camera's node (its certificate binds the camera; checked before use).
    pub camera_peer: PeerId,
    pub camera: String,
    pub profile: pb::Profile,
    pub grant: pb::Signed,
    pub limits: Limits,
}

impl std::fmt::Debug for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySource")
            .field("camera_peer", &self.camera_peer)
            .field("camera", &self.camera)
            .finish_non_exhaustive()
    }
}
