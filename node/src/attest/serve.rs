//! The camera's side of `/camesh/attest/1` (IO): a recorder with a `record` grant on the
//! camera gets the camera node's certificate, then a signed digest of every GOP the
//! camera publishes from now on. Each request is served by a local subscriber of the
//! camera's hub (a bounded queue like any viewer's), so it sees exactly the sealed
//! frames everyone receives and never slows the camera.
//!
//! Subscriptions have a budget of their own (each is a subscriber of a camera's hub, like
//! a viewer): per recorder, twice the cameras this node serves (one per camera, and room
//! for a reconnecting recorder whose old streams have not yet closed), and in all four
//! times that (several recorders), never more than `limits.max_streams_total`. A request
//! past the budget is refused with the reason as the stream's only item, and audited.

use std::sync::Arc;
use std::time::Duration;

use camesh_proto::{framing::decode_message, pb, LengthCodec};
use futures::{AsyncReadExt, AsyncWriteExt};
use libp2p::{PeerId, Stream, StreamProtocol};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::{sign, FrameFields, GopHasher, ATTEST_PROTOCOL, MAX_ITEM_BYTES};
use crate::auth::{self, Rights, Trust};
use crate::config::Limits;
use crate::stream::accept;
use crate::stream::fanout::QueueLimits;
use crate::stream::hub::Hubs;
use crate::stream::io::{read_request, write_message, IoError};

/// What serving attestations needs of its node: the camera hubs, the trust store (the
/// recorder's membership and `record` grant), the limits, and the camera's signing key.
#[derive(Clone)]
pub struct Attester {
    pub hubs: Arc<Hubs>,
    pub trust: Arc<Trust>,
    pub limits: Limits,
    pub key: libp2p::identity::Keypair,
    /// Subscriptions open now (see [`budget`]).
    pub slots: Arc<accept::Slots>,
}

/// Attestation subscriptions allowed per recorder and in all on a node serving `cameras`
/// cameras (its own, not forwarded ones) within `limits` (pure).
pub fn budget(cameras: usize, limits: &Limits) -> accept::Bounds {
    let cameras = cameras.max(1);
    let total = cameras.saturating_mul(4).max(16).min(limits.max_streams_total);
    accept::Bounds {
        per_peer: cameras.saturating_mul(2).min(total),
        total,
    }
}

impl std::fmt::Debug for Attester {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attester").finish_non_exhaustive()
    }
}

/// Starts serving attestations for the node's cameras on the bounded accept loop (every
/// node does this from `Node::spawn`).
pub fn start(
    control: &mut libp2p_stream::Control,
    attester: Attester,
    shutdown: CancellationToken,
) -> Result<(), String> {
    let incoming = control
        .accept(StreamProtocol::new(ATTEST_PROTOCOL))
        .map_err(|e| e.to_string())?;
    // Outside bound of the accept loop (streams still waiting for their request count
    // too); the budget proper is checked once a request is authorized.
    let bounds = accept::Bounds {
        per_peer: attester
            .limits
            .max_streams_total
            .saturating_add(accept::PENDING_STREAMS),
        total: attester
            .limits
            .max_streams_total
            .saturating_add(accept::PENDING_STREAMS),
    };
    accept::serve(ATTEST_PROTOCOL, incoming, bounds, shutdown, move |peer, stream, _| {
        let a = attester.clone();
        async move { session(&a, peer, stream).await }
    });
    Ok(())
}

fn item(i: pb::attest_item::Item) -> pb::AttestItem {
    pb::AttestItem { item: Some(i) }
}

async fn session(a: &Attester, peer: PeerId, mut stream: Stream) -> Result<(), IoError> {
    let (limits, key, trust) = (&a.limits, &a.key, &a.trust);
    let codec = LengthCodec::new(limits.max_control_bytes);
    if trust.wait_member(&peer, trust.grace()).await.is_none() {
        let _ = stream.close().await;
        return Ok(());
    }
    let timeout = Duration::from_secs(limits.request_timeout_s);
    let Some(body) = read_request(&mut stream, codec, timeout).await? else {
        return Ok(());
    };
    let req: pb::AttestRequest = decode_message("attest request", body)?;
    let camera = req.camera_id;
    let Some(hub) = a.hubs.get(&camera) else {
        let _ = stream.close().await;
        return Ok(());
    };
    let grant = auth::signed::decode("grant", &req.grant)
        .and_then(|g| trust.check_grant(&peer, &g, &camera, &hub.tags, Rights::RECORD));
    if let Err(e) = grant {
        trust
            .audit
            .record("refused-attest", &peer.to_string(), &camera, &e.to_string());
        let _ = stream.close().await;
        return Ok(());
    }
    let out = LengthCodec::new(MAX_ITEM_BYTES + 1024);
    let own = a.hubs.all().iter().filter(|h| h.origin.is_none()).count();
    let b = budget(own, limits);
    let Some(_slot) = a.slots.try_take(peer, b.per_peer, b.total) else {
        let why = format!(
            "too many attestation subscriptions (at most {} per recorder, {} in all on this node)",
            b.per_peer, b.total
        );
        trust.audit.record("refused-attest", &peer.to_string(), &camera, &why);
        debug!(%peer, %camera, "{why}");
        write_message(&mut stream, &out, &item(pb::attest_item::Item::Refused(why))).await?;
        let _ = stream.close().await;
        return Ok(());
    };
    let Some(cert) = trust.own_cert() else {
        let _ = stream.close().await;
        return Ok(());
    };
    write_message(&mut stream, &out, &item(pb::attest_item::Item::Cert(cert))).await?;
    let limits = QueueLimits {
        max_frames: limits.subscriber_queue_frames,
        max_bytes: limits.subscriber_queue_bytes,
    };
    let (_, sub) = match hub.subscribe(peer, limits) {
        Ok(x) => x,
        Err(_) => {
            let _ = stream.close().await;
            return Ok(());
        }
    };
    info!(%peer, %camera, "attesting GOPs");
    let (mut rd, mut wr) = stream.split();
    let mut hasher = GopHasher::default();
    let mut sent = 0u64;
    let result = async {
        let mut buf = [0u8; 64];
        loop {
            tokio::select! {
                f = sub.next() => {
                    let Some(f) = f else { return Ok(()) };
                    let fields = FrameFields::from(&f.header);
                    if let Some(d) = hasher.push(&camera, &fields, &f.payload, f.header.skipped_before) {
                        let Ok(s) = sign(&d, key) else { continue };
                        write_message(&mut wr, &out, &item(pb::attest_item::Item::Gop(s))).await?;
                        sent += 1;
                    }
                }
                r = rd.read(&mut buf) => match r {
                    Ok(0) | Err(_) => return Ok(()),
                    Ok(_) => {}
                },
            }
        }
    }
    .await;
    sub.close();
    debug!(%peer, %camera, digests = sent, "attestation stream closed");
    let _ = wr.close().await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recorder_may_subscribe_to_every_camera_of_a_node_and_the_total_is_bounded() {
        let limits = Limits::default();
        for cameras in [0, 1, 4, 16, 64] {
            let b = budget(cameras, &limits);
            assert!(b.per_peer >= cameras, "{cameras}: {b:?}");
            assert!(
                b.total >= b.per_peer && b.total <= limits.max_streams_total,
                "{cameras}: {b:?}"
            );
        }
        assert_eq!(budget(4, &limits), accept::Bounds { per_peer: 8, total: 16 });
        assert_eq!(budget(0, &limits).per_peer, 2, "a node without cameras yet");
        let mut few = limits.clone();
        few.max_streams_total = 10;
        assert_eq!(
            budget(64, &few),
            accept::Bounds {
                per_peer: 10,
                total: 10
            }
        );
    }
}
