//! Serving `/camesh/media/1` and `/camesh/info/1` (IO).
//!
//! The node's bounded accept loop ([`super::accept`]) gives each stream its own session
//! task. A media session:
//! read the `StreamRequest` (bounded size, bounded time), check the per-peer and total
//! stream limits, answer `StreamAccept` with the codec config or `StreamReject` with a
//! reason, then drain the subscriber's queue into the stream. The session ends when the
//! viewer hangs up, the stream errors, the node shuts down, or the viewer's authorization
//! ends (revocation of its peer or grant, or the grant's expiry); bad input resets only
//! that stream.
//!
//! Authorization on every open: the peer must be a verified fleet member (layer 1) and
//! present a grant for `live` on this camera, bound to its authenticated peer id (layer
//! 2). Keys travel in-band as key-update frames, each sent only after re-checking that
//! the viewer is still authorized. A grant with only `forward` gets the sealed frames
//! and no keys; a forwarded hub (another node's camera) never sends keys either.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use camesh_proto::{framing::decode_message, pb, LengthCodec, INFO_PROTOCOL, MEDIA_PROTOCOL};
use futures::stream::FuturesUnordered;
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::{PeerId, Stream};
use libp2p_stream::IncomingStreams;
use prost::Message;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::accept;
pub use super::codecs::{audio_config, codec_config};
use super::fanout::QueueLimits;
use super::hub::{Hubs, Subscriber};
use super::io::{read_request, write_frame, write_message, FramedRead, IoError};
use crate::auth::grant::GrantInfo;
use crate::auth::{self, AuthError, Rights, Trust};
use crate::config::Limits;
use crate::media::CodecParams;

pub use super::accept::{Slot, Slots as StreamSlots};

/// Everything a session needs, shared by all sessions of a node.
#[derive(Debug)]
pub struct MediaServer {
    pub hubs: Arc<Hubs>,
    pub limits: Limits,
    pub slots: Arc<StreamSlots>,
    pub trust: Arc<Trust>,
    /// Caps on what this node sends each peer (`[[link]]`), live first.
    pub budgets: Arc<super::budget::LinkBudgets>,
}

impl MediaServer {
    /// Serves `/camesh/media/1` on the node's one bounded accept loop.
    pub fn run(self: Arc<Self>, incoming: IncomingStreams, shutdown: CancellationToken) {
        let bounds = accept::Bounds::streams(&self.limits);
        accept::serve(
            MEDIA_PROTOCOL,
            incoming,
            bounds,
            shutdown,
            move |peer, stream, token| {
                let this = self.clone();
                async move { this.session(peer, stream, token).await }
            },
        );
    }

    async fn session(&self, peer: PeerId, mut stream: Stream, shutdown: CancellationToken) -> Result<(), IoError> {
        let control = LengthCodec::new(self.limits.max_control_bytes);
        let timeout = Duration::from_secs(self.limits.request_timeout_s);
        // Membership first: a non-member's stream gets no read buffer, no parsing.
        if self.trust.wait_member(&peer, self.trust.grace()).await.is_none() {
            let reason = format!(
                "not a member of fleet {:?}: no valid membership certificate",
                self.trust.fleet_id
            );
            self.trust
                .audit
                .record("refused-stream", &peer.to_string(), "", &reason);
            return reject(&mut stream, &control, pb::RejectCode::RejectNotAuthorized, &reason).await;
        }
        let mut reader = FramedRead::new(&mut stream, control);
        let body = match tokio::time::timeout(timeout, reader.next()).await {
            Ok(Ok(Some(b))) => b,
            Ok(Ok(None)) => return Ok(()),
            Ok(Err(e)) => {
                warn!(%peer, error = %e, "bad media request; resetting stream");
                return Err(e);
            }
            Err(_) => {
                warn!(%peer, "no media request within {timeout:?}; closing stream");
                return Ok(());
            }
        };
        drop(reader);
        let req: pb::StreamRequest = match decode_message("stream request", body) {
            Ok(r) => r,
            Err(e) => {
                warn!(%peer, error = %e, "garbage media request; rejecting");
                reject(&mut stream, &control, pb::RejectCode::RejectBadRequest, &e.to_string()).await?;
                return Err(e.into());
            }
        };
        let camera = req.camera_id.clone();
        let audit = &self.trust.audit;
        // Our own camera, or one this node forwards (ciphertext only, see `relay`).
        let hub = self
            .hubs
            .get_profile(&camera, req.profile())
            .or_else(|| self.hubs.forwarded(&camera, req.profile()));
        let Some(hub) = hub else {
            info!(%peer, camera = %camera.chars().take(64).collect::<String>(), "unknown camera requested");
            return reject(
                &mut stream,
                &control,
                pb::RejectCode::RejectUnknownCamera,
                &format!("no camera {camera:?} on this node"),
            )
            .await;
        };
        if matches!(req.mode, Some(pb::stream_request::Mode::Playback(_))) {
            return reject(
                &mut stream,
                &control,
                pb::RejectCode::RejectUnsupported,
                "playback is served by NVR nodes",
            )
            .await;
        }
        let grant = if req.grant.is_empty() {
            Err(AuthError::Refused(format!(
                "no grant presented for camera {camera}: ask a fleet admin (mesh grant <your peer id> --cameras {camera} --rights live)"
            )))
        } else {
            // `live` to watch (`record` for an NVR); `forward` alone to carry the sealed
            // stream on (no keys).
            auth::signed::decode("grant", &req.grant).and_then(|g| {
                self.trust
                    .check_watch(&peer, &g, &camera, &hub.tags)
                    .or_else(|live_err| {
                        self.trust
                            .check_grant(&peer, &g, &camera, &hub.tags, Rights::FORWARD)
                            .map_err(|_| live_err)
                    })
            })
        };
        let grant = match grant {
            Ok(g) => g,
            Err(e) => {
                audit.record("refused-stream", &peer.to_string(), &camera, &e.to_string());
                info!(%peer, %camera, error = %e, "stream refused");
                return reject(
                    &mut stream,
                    &control,
                    pb::RejectCode::RejectNotAuthorized,
                    &e.to_string(),
                )
                .await;
            }
        };
        let Some(_slot) = self
            .slots
            .try_take(peer, self.limits.max_streams_per_peer, self.limits.max_streams_total)
        else {
            warn!(%peer, %camera, "stream limit reached");
            return reject(
                &mut stream,
                &control,
                pb::RejectCode::RejectTooManyStreams,
                &format!(
                    "too many streams (at most {} per peer, {} in total)",
                    self.limits.max_streams_per_peer, self.limits.max_streams_total
                ),
            )
            .await;
        };
        let limits = QueueLimits {
            max_frames: self.limits.subscriber_queue_frames,
            max_bytes: self.limits.subscriber_queue_bytes,
        };
        let (params, sub) = match hub.subscribe_with(peer, limits, req.audio) {
            Ok(x) => x,
            Err(e) => return reject(&mut stream, &control, pb::RejectCode::RejectUnavailable, &e.to_string()).await,
        };
        let accept = pb::StreamResponse {
            result: Some(pb::stream_response::Result::Accept(pb::StreamAccept {
                codec: Some(codec_config(&params)),
                key_epoch: hub.key_epoch(),
                camera_name: hub.name.clone(),
                sealed_key: Default::default(),
                origin_peer: hub.origin.map(|o| o.to_bytes().into()).unwrap_or_default(),
                audio: if req.audio {
                    hub.audio().as_ref().map(audio_config)
                } else {
                    None
                },
            })),
        };
        write_message(&mut stream, &control, &accept).await?;
        // Keys go in-band only from the camera itself, and only to holders of `live`;
        // a forwarded hub has none, and its viewers ask the camera (`/camesh/key/1`).
        let watches = grant.rights.contains(Rights::LIVE) || grant.rights.contains(Rights::RECORD);
        let send_keys = hub.origin.is_none() && watches;
        let what = if grant.rights.contains(Rights::LIVE) {
            "live"
        } else if watches {
            "record"
        } else {
            "forward (sealed, no keys)"
        };
        let origin = hub
            .origin
            .map_or_else(|| "own camera".to_owned(), |o| format!("forwarding {o}"));
        audit.record(
            "stream-opened",
            &peer.to_string(),
            &camera,
            &format!("{what}, {origin}, grant {:016x}", grant.chain[0]),
        );
        info!(%peer, %camera, subscriber = sub.id, send_keys, forwarded = hub.origin.is_some(), "viewer subscribed");
        let max_frame = match req.max_frame_bytes as usize {
            0 => self.limits.max_frame_bytes,
            n => n.min(self.limits.max_frame_bytes),
        };
        let (mut rd, mut wr) = stream.split();
        let keys = KeyGate {
            hub: &hub,
            trust: &self.trust,
            peer,
            grant: &grant,
            send_keys,
        };
        let budget = self.budgets.cap(&peer).map(|_| (&*self.budgets, peer));
        // Whichever ends first ends the session. Not a `select!`: that polls every branch
        // on each wake-up, i.e. for every frame the pump is woken for, and the hang-up
        // branch's read locks the QUIC connection each time. `FuturesUnordered` polls only
        // the branch whose waker fired.
        let mut ends: FuturesUnordered<Pin<Box<dyn Future<Output = End> + Send + '_>>> = FuturesUnordered::new();
        ends.push(Box::pin(async {
            End::Pump(pump(&sub, &mut wr, LengthCodec::new(max_frame), &keys, budget).await)
        }));
        ends.push(Box::pin(async {
            wait_hangup(&mut rd).await;
            End::HungUp
        }));
        ends.push(Box::pin(async {
            End::Unauthorized(self.trust.until_unauthorized(&peer, &grant).await)
        }));
        ends.push(Box::pin(async {
            shutdown.cancelled().await;
            End::Shutdown
        }));
        let end = ends.next().await;
        drop(ends);
        let result = match end {
            Some(End::Pump(r)) => r,
            Some(End::Unauthorized(e)) => {
                audit.record("stream-closed", &peer.to_string(), &camera, &e.to_string());
                info!(%peer, %camera, reason = %e, "authorization ended; closing stream");
                Ok(())
            }
            Some(End::HungUp | End::Shutdown) | None => Ok(()),
        };
        sub.close();
        let st = sub.stats();
        info!(%peer, %camera, subscriber = sub.id, skips = st.skips, dropped = st.dropped_frames, "viewer left");
        let _ = wr.close().await;
        result
    }
}

/// What ended a viewer's session.
enum End {
    Pump(Result<(), IoError>),
    HungUp,
    Unauthorized(AuthError),
    Shutdown,
}

/// Hands out media keys to one session, only while its viewer is authorized.
struct KeyGate<'a> {
    hub: &'a super::hub::Hub,
    trust: &'a Trust,
    peer: PeerId,
    grant: &'a GrantInfo,
    /// Whether this session gets keys in-band (the camera's own hub, a `live` grant).
    send_keys: bool,
}

/// Drains the subscriber's queue into the stream; flushes whenever the queue is empty.
/// Before the first frame of each key epoch it sends that epoch's key, if the viewer is
/// still authorized (otherwise the session ends).
async fn pump<W: futures::AsyncWrite + Unpin>(
    sub: &Subscriber,
    wr: &mut W,
    codec: LengthCodec,
    keys: &KeyGate<'_>,
    budget: Option<(&super::budget::LinkBudgets, PeerId)>,
) -> Result<(), IoError> {
    let mut scratch = BytesMut::with_capacity(64);
    let mut epoch = None;
    while let Some(first) = sub.next().await {
        let mut next = Some(first);
        let mut written = 0;
        // Write what is already queued before flushing; bounded so we flush regularly.
        while let Some(frame) = next.take() {
            written += 1;
            if written < 16 {
                next = sub.try_pop();
            }
            if frame.payload.len() > codec.max() {
                warn!(
                    subscriber = sub.id,
                    size = frame.payload.len(),
                    max = codec.max(),
                    "frame larger than the stream's maximum; dropped"
                );
                continue;
            }
            if epoch != Some(frame.header.key_epoch) {
                if let Err(e) = keys.trust.still_authorized(&keys.peer, keys.grant) {
                    debug!(peer = %keys.peer, error = %e, "no key for an unauthorized viewer");
                    return Ok(());
                }
                if !keys.send_keys {
                    epoch = Some(frame.header.key_epoch);
                    write_frame(wr, &codec, &frame, &mut scratch).await?;
                    sub.sent_frames.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    sub.sent_bytes
                        .fetch_add(frame.payload.len() as u64, std::sync::atomic::Ordering::Relaxed);
                    continue;
                }
                let Some(key) = keys.hub.key(frame.header.key_epoch) else {
                    // A cached frame of an epoch whose key is gone: skip it.
                    continue;
                };
                let update = camesh_proto::MediaFrame {
                    header: pb::FrameHeader {
                        sequence: frame.header.sequence,
                        key_epoch: key.epoch,
                        new_key: bytes::Bytes::copy_from_slice(key.bytes()),
                        ..Default::default()
                    },
                    payload: bytes::Bytes::new(),
                    wire: None,
                };
                write_frame(wr, &codec, &update, &mut scratch).await?;
                epoch = Some(key.epoch);
            }
            write_frame(wr, &codec, &frame, &mut scratch).await?;
            sub.sent_frames.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            sub.sent_bytes
                .fetch_add(frame.payload.len() as u64, std::sync::atomic::Ordering::Relaxed);
            if let Some((budgets, peer)) = budget {
                // Over the cap: flush what is written and wait out the debt; meanwhile the
                // queue fills and, past its bound, skips to the next keyframe.
                wr.flush().await?;
                budgets.pace_live(&peer, frame.payload.len()).await;
            }
        }
        wr.flush().await?;
    }
    Ok(())
}

/// Resolves when the viewer closes its side or the stream breaks. The viewer sends
/// nothing after its request; anything it sends is read and ignored (bounded buffer).
async fn wait_hangup<R: futures::AsyncRead + Unpin>(rd: &mut R) {
    let mut buf = [0u8; 256];
    loop {
        match rd.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

async fn reject(stream: &mut Stream, codec: &LengthCodec, code: pb::RejectCode, reason: &str) -> Result<(), IoError> {
    let msg = pb::StreamResponse {
        result: Some(pb::stream_response::Result::Reject(pb::StreamReject {
            code: code as i32,
            reason: reason.to_owned(),
        })),
    };
    write_message(stream, codec, &msg).await?;
    let _ = stream.close().await;
    Ok(())
}

/// The codec parameters a `StreamAccept` carries (what a forwarder's hub serves on).
pub fn codec_params(c: &pb::CodecConfig) -> CodecParams {
    CodecParams {
        sps: c.sps.clone(),
        pps: c.pps.clone(),
        width: c.width,
        height: c.height,
        profile_idc: u8::try_from(c.profile_idc).unwrap_or(0),
        level_idc: u8::try_from(c.level_idc).unwrap_or(0),
        fps_num: c.fps_num,
        fps_den: c.fps_den,
    }
}

/// The streams this node forwards, as `/camesh/info/1` lists them.
pub fn forwarding(hubs: &Hubs) -> Vec<pb::ForwardedStream> {
    hubs.all_forwarded()
        .into_iter()
        .map(|(profile, h)| pb::ForwardedStream {
            camera_id: h.id.clone(),
            profile: profile as i32,
            origin_peer: h.origin.map(|o| o.to_bytes().into()).unwrap_or_default(),
            live: h.is_live(),
            viewers: u32::try_from(h.subscriber_count()).unwrap_or(u32::MAX),
        })
        .collect()
}

/// What `/camesh/info/1` describes: the node's cameras, what it forwards, and itself.
#[derive(Debug, Clone)]
pub struct Info {
    pub hubs: Arc<Hubs>,
    pub trust: Arc<Trust>,
    pub net: crate::net::NetHandle,
    pub slots: Arc<StreamSlots>,
    pub me: PeerId,
    pub role: String,
    pub started: std::time::Instant,
    /// Other members' cameras heard of (answers `ListCameras.known`).
    pub directory: Arc<crate::discovery::Directory>,
}

impl Info {
    /// This node now: role, NAT status (AutoNAT), relaying, streams served, uptime.
    pub fn status(&self) -> pb::NodeStatus {
        pb::NodeStatus {
            role: self.role.clone(),
            version: env!("CARGO_PKG_VERSION").into(),
            streams_served: u32::try_from(self.slots.total()).unwrap_or(u32::MAX),
            uptime_s: self.started.elapsed().as_secs(),
            reachability: self.net.reachability() as i32,
            relaying: self.net.relaying(),
        }
    }
}

/// Room kept free in a camera list answer for the response's own framing.
const KNOWN_SLACK: usize = 64;

/// The directory's cameras of other members (not `me`'s, not the asker's own) for a
/// `ListCameras.known` answer: newest announcement first, as many as fit in `room`
/// encoded bytes.
fn known_cameras(
    entries: &[crate::discovery::CameraEntry],
    me: PeerId,
    asker: &PeerId,
    room: usize,
) -> Vec<pb::CameraAnnouncement> {
    let mut sorted: Vec<_> = entries.iter().filter(|e| e.peer != me && e.peer != *asker).collect();
    sorted.sort_by_key(|e| std::cmp::Reverse(e.seen));
    let mut out = Vec::new();
    let mut used = 0;
    for e in sorted {
        let n = e.announcement.encoded_len() + 8;
        if used + n > room {
            break;
        }
        used += n;
        out.push(e.announcement.clone());
    }
    out
}

/// Serves `/camesh/info/1` on the bounded accept loop: one `ControlRequest`, one
/// `ControlResponse`, per stream.
pub fn run_info(incoming: IncomingStreams, info: Info, limits: Limits, shutdown: CancellationToken) {
    let bounds = accept::Bounds::control(&limits);
    let codec = LengthCodec::new(limits.max_control_bytes);
    let timeout = Duration::from_secs(limits.request_timeout_s);
    accept::serve(INFO_PROTOCOL, incoming, bounds, shutdown, move |peer, stream, _| {
        answer_info(info.clone(), codec, timeout, peer, stream)
    });
}

async fn answer_info(
    info: Info,
    codec: LengthCodec,
    timeout: Duration,
    peer: PeerId,
    mut stream: Stream,
) -> Result<(), IoError> {
    let (hubs, trust) = (&info.hubs, &info.trust);
    if trust.wait_member(&peer, trust.grace()).await.is_none() {
        trust
            .audit
            .record("refused-stream", &peer.to_string(), "", "info: not a fleet member");
        let msg = pb::ControlResponse {
            response: Some(pb::control_response::Response::Error(pb::ControlError {
                reason: "not a fleet member".into(),
            })),
        };
        let _ = write_message(&mut stream, &codec, &msg).await;
        let _ = stream.close().await;
        return Ok(());
    }
    let req = match read_request(&mut stream, codec, timeout).await {
        Ok(Some(body)) => decode_message::<pb::ControlRequest>("control request", body),
        Ok(None) => return Ok(()),
        Err(e) => {
            debug!(%peer, error = %e, "bad info request");
            return Ok(());
        }
    };
    let response = match req {
        Ok(pb::ControlRequest {
            request: Some(pb::control_request::Request::ListCameras(ask)),
        }) => {
            let mut list = pb::CameraList {
                cameras: hubs.announcements(info.me, &[]),
                forwarding: forwarding(hubs),
                node: Some(info.status()),
                known: Vec::new(),
            };
            if ask.known {
                let room = codec.max().saturating_sub(list.encoded_len() + KNOWN_SLACK);
                list.known = known_cameras(&info.directory.cameras(), info.me, &peer, room);
            }
            pb::control_response::Response::Cameras(list)
        }
        Ok(pb::ControlRequest {
            request: Some(pb::control_request::Request::Status(_)),
        }) => pb::control_response::Response::Status(info.status()),
        Ok(_) => pb::control_response::Response::Error(pb::ControlError {
            reason: "unknown request".into(),
        }),
        Err(e) => pb::control_response::Response::Error(pb::ControlError { reason: e.to_string() }),
    };
    let msg = pb::ControlResponse {
        response: Some(response),
    };
    if let Err(e) = write_message(&mut stream, &codec, &msg).await {
        debug!(%peer, error = %e, "info answer not sent");
    }
    let _ = stream.close().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::{CameraEntry, Via};
    use std::time::Instant;

    fn entry(camera: &str, peer: PeerId, age_s: u64) -> CameraEntry {
        CameraEntry {
            peer,
            announcement: pb::CameraAnnouncement {
                camera_id: camera.into(),
                peer_id: peer.to_bytes().into(),
                addrs: vec![vec![0u8; 40].into()],
                ..Default::default()
            },
            via: Via::Gossip,
            seen: Instant::now() - Duration::from_secs(age_s),
        }
    }

    #[test]
    fn known_cameras_are_others_newest_first_within_the_room() {
        let (me, asker, a, b) = (PeerId::random(), PeerId::random(), PeerId::random(), PeerId::random());
        let entries = vec![
            entry("old", a, 30),
            entry("mine", me, 1),
            entry("askers", asker, 1),
            entry("new", b, 2),
        ];
        let ids = |v: Vec<pb::CameraAnnouncement>| v.into_iter().map(|a| a.camera_id).collect::<Vec<_>>();
        assert_eq!(ids(known_cameras(&entries, me, &asker, 4096)), ["new", "old"]);
        // Room for one: the newest.
        let one = entries[3].announcement.encoded_len() + 8;
        assert_eq!(ids(known_cameras(&entries, me, &asker, one)), ["new"]);
        assert!(known_cameras(&entries, me, &asker, 10).is_empty());
    }
}
