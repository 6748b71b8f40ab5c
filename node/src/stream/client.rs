//! The viewer's side of `/camesh/media/1` and `/camesh/info/1` (IO).
//!
//! [`subscribe`] opens a stream, sends the `StreamRequest`, reads the answer and returns
//! a [`Subscription`] that yields frames; every read is bounded by the configured
//! maximum, so a misbehaving source cannot make the viewer allocate without limit.
//! Frames arrive sealed; key updates arrive in-band before the first frame of each key
//! epoch; [`Subscription::next_frame`] returns opened (plaintext) frames, and a frame
//! that fails authentication is an error, never video. Through a forwarder, keys come
//! from the camera's node instead ([`Subscription::use_key_source`]).

use std::time::Duration;

use camesh_proto::{framing::decode_message, pb, LengthCodec, MediaFrame, INFO_PROTOCOL, MEDIA_PROTOCOL};
use libp2p::{PeerId, Stream, StreamProtocol};
use libp2p_stream::Control;

use super::fresh::{Freshness, Stale};
use super::io::{write_message, FramedRead, IoError};
use super::keys::{key_protocol, KeySource};
use crate::auth::media_key::MediaKey;
use crate::clock::now_unix_us;
use crate::config::Limits;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot open a stream to {peer}: {reason}")]
    Open { peer: PeerId, reason: String },
    /// No peer that serves the camera is known: the directory, the DHT and a discovery
    /// round over the connected members all came back empty (nobody refused anything).
    #[error("no fleet member this node can reach knows camera {camera:?} (asked the directory, the DHT and the connected members)")]
    NotFound { camera: String },
    #[error("refused by {peer}: {reason}")]
    Rejected {
        peer: PeerId,
        code: pb::RejectCode,
        reason: String,
    },
    #[error("{peer} broke the protocol: {source}")]
    Protocol { peer: PeerId, source: IoError },
    #[error("{peer} closed the stream")]
    Closed { peer: PeerId },
    #[error("{peer} did not answer within {after:?}")]
    Timeout { peer: PeerId, after: Duration },
    #[error("{peer} claims camera {camera} but its certificate does not bind that camera to its key")]
    Impostor { peer: PeerId, camera: String },
    #[error("{peer} sent a frame that failed authentication: {reason}")]
    Tampered { peer: PeerId, reason: String },
    #[error("{peer} sent a frame that is not live: {reason}")]
    Stale { peer: PeerId, reason: Stale },
}

pub fn media_protocol() -> StreamProtocol {
    StreamProtocol::new(MEDIA_PROTOCOL)
}

pub fn info_protocol() -> StreamProtocol {
    StreamProtocol::new(INFO_PROTOCOL)
}

/// An accepted live (or playback) stream.
#[derive(Debug)]
pub struct Subscription {
    pub peer: PeerId,
    pub accept: pb::StreamAccept,
    reader: FramedRead<Stream>,
    /// Keys of the last few epochs (a rotation overlaps cached frames of the previous one).
    keys: std::collections::VecDeque<MediaKey>,
    /// Through a forwarder: keys come from the camera's node, never in-band.
    key_source: Option<KeySource>,
    /// For live streams: camera-signed freshness ([`super::fresh`]).
    fresh: Option<Freshness>,
}

/// Key epochs a viewer keeps.
const KEYS_KEPT: usize = 4;

async fn open(
    control: &mut Control,
    peer: PeerId,
    proto: StreamProtocol,
    timeout: Duration,
) -> Result<Stream, ClientError> {
    match tokio::time::timeout(timeout, control.open_stream(peer, proto)).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => Err(ClientError::Open {
            peer,
            reason: e.to_string(),
        }),
        Err(_) => Err(ClientError::Timeout { peer, after: timeout }),
    }
}

/// Opens a stream of `proto` to `peer`, sends `req` and reads one answer, each step within
/// `timeout`; the reader is handed back for what follows the answer (media frames).
pub(crate) async fn request<Req: prost::Message, Resp: prost::Message + Default>(
    control: &mut Control,
    peer: PeerId,
    proto: StreamProtocol,
    what: &'static str,
    req: &Req,
    limits: &Limits,
) -> Result<(Resp, FramedRead<Stream>), ClientError> {
    let timeout = Duration::from_secs(limits.request_timeout_s);
    let codec = LengthCodec::new(limits.max_control_bytes);
    let mut stream = open(control, peer, proto, timeout).await?;
    let err = |source| ClientError::Protocol { peer, source };
    write_message(&mut stream, &codec, req).await.map_err(err)?;
    let mut reader = FramedRead::new(stream, codec);
    let body = match tokio::time::timeout(timeout, reader.next()).await {
        Ok(Ok(Some(b))) => b,
        Ok(Ok(None)) => return Err(ClientError::Closed { peer }),
        Ok(Err(e)) => return Err(err(e)),
        Err(_) => return Err(ClientError::Timeout { peer, after: timeout }),
    };
    let resp = decode_message(what, body).map_err(|e| err(e.into()))?;
    Ok((resp, reader))
}

/// Opens a media stream and waits for the source's answer.
pub async fn subscribe(
    control: &mut Control,
    peer: PeerId,
    req: pb::StreamRequest,
    limits: &Limits,
) -> Result<Subscription, ClientError> {
    let (resp, mut reader): (pb::StreamResponse, _) =
        request(control, peer, media_protocol(), "stream response", &req, limits).await?;
    match resp.result {
        Some(pb::stream_response::Result::Accept(accept)) => {
            reader.set_max(limits.max_frame_bytes + 1024);
            // Keyframes are signed by the camera's node: the answering peer, or the node a
            // forwarder names (an unreadable name leaves the forwarder, whose signature
            // then never verifies).
            let origin = Some(accept.origin_peer.as_ref())
                .filter(|b: &&[u8]| !b.is_empty())
                .and_then(|b| PeerId::from_bytes(b).ok())
                .unwrap_or(peer);
            let fresh = matches!(req.mode, Some(pb::stream_request::Mode::Live(_)))
                .then(|| Freshness::new(&req.camera_id, origin, limits.live_max_age_s, limits.clock_skew_s));
            Ok(Subscription {
                peer,
                accept,
                reader,
                keys: std::collections::VecDeque::with_capacity(KEYS_KEPT),
                key_source: None,
                fresh,
            })
        }
        Some(pb::stream_response::Result::Reject(r)) => Err(ClientError::Rejected {
            peer,
            code: pb::RejectCode::try_from(r.code).unwrap_or(pb::RejectCode::RejectUnspecified),
            reason: r.reason,
        }),
        None => Err(ClientError::Protocol {
            peer,
            source: IoError::Framing(camesh_proto::FramingError::BadMessage {
                what: "stream response",
                reason: "empty".into(),
            }),
        }),
    }
}

impl Subscription {
    /// The next frame, opened; `Ok(None)` when the source ended the stream cleanly.
    pub async fn next_frame(&mut self) -> Result<Option<MediaFrame>, ClientError> {
        loop {
            let Some(mut frame) = self.next_sealed().await? else {
                return Ok(None);
            };
            if self.key_source.is_some() {
                if !frame.header.new_key.is_empty() {
                    // A forwarder cannot hand out keys: only the camera does.
                    tracing::warn!(peer = %self.peer, "in-band key from a forwarder ignored");
                    continue;
                }
                self.fetch_key_for(&frame).await?;
            } else if self.learn_key(&frame)? {
                continue;
            }
            frame.payload = self.open(&frame)?;
            return Ok(Some(frame));
        }
    }

    /// Takes keys from `source` (the camera's node) instead of in-band: for streams from a
    /// forwarder. Fetches the key of `epoch` now (0: the current one) so the first frame
    /// opens at once.
    pub async fn use_key_source(&mut self, source: KeySource, epoch: u64) -> Result<(), ClientError> {
        let key = source.fetch(epoch).await?;
        self.add_key(key);
        // Keyframes are signed by the camera's node, not by the forwarder serving them.
        if let Some(f) = &mut self.fresh {
            f.set_origin(source.camera_peer);
        }
        self.key_source = Some(source);
        Ok(())
    }

    /// Where keys come from: `None` in-band from the camera, or the camera's node.
    pub fn key_source(&self) -> Option<&KeySource> {
        self.key_source.as_ref()
    }

    /// With a key source: fetches the key of a frame's epoch if it is not held. The
    /// camera only knows its current and previous epochs, so a forwarder inventing epochs
    /// costs one refused request, which ends the stream.
    async fn fetch_key_for(&mut self, frame: &MediaFrame) -> Result<(), ClientError> {
        let epoch = frame.header.key_epoch;
        if self.keys.iter().any(|k| k.epoch == epoch) {
            return Ok(());
        }
        let Some(source) = self.key_source.as_ref() else {
            return Ok(());
        };
        let key = source.fetch(epoch).await?;
        self.add_key(key);
        Ok(())
    }

    /// Keeps a key (the newest `KEYS_KEPT` epochs are kept).
    pub fn add_key(&mut self, key: MediaKey) {
        self.keys.retain(|k| k.epoch != key.epoch);
        if self.keys.len() == KEYS_KEPT {
            self.keys.pop_front();
        }
        self.keys.push_back(key);
    }

    /// The next frame as it arrived (sealed), including key updates. A live frame that
    /// is not fresh (unsigned or foreign-signed keyframe, too old, a rewound sequence)
    /// is an error, never video.
    pub async fn next_sealed(&mut self) -> Result<Option<MediaFrame>, ClientError> {
        let peer = self.peer;
        let frame = match self.reader.next().await {
            Ok(Some(body)) => MediaFrame::decode(body).map_err(|e| ClientError::Protocol { peer, source: e.into() })?,
            Ok(None) => return Ok(None),
            Err(e) => return Err(ClientError::Protocol { peer, source: e }),
        };
        if let (Some(fresh), true) = (&mut self.fresh, frame.header.new_key.is_empty()) {
            fresh
                .check(&frame, now_unix_us())
                .map_err(|reason| ClientError::Stale { peer, reason })?;
        }
        Ok(Some(frame))
    }

    /// Opens a sealed frame with the keys received so far.
    pub fn open(&self, frame: &MediaFrame) -> Result<bytes::Bytes, ClientError> {
        let tampered = |reason: String| ClientError::Tampered {
            peer: self.peer,
            reason,
        };
        let key = self
            .keys
            .iter()
            .find(|k| k.epoch == frame.header.key_epoch)
            .ok_or_else(|| tampered(format!("no key for epoch {}", frame.header.key_epoch)))?;
        key.open(&frame.header, &frame.payload)
            .map_err(|e| tampered(e.to_string()))
    }

    /// Keeps the key of a key-update frame; `Ok(false)` for a media frame.
    pub fn learn_key(&mut self, frame: &MediaFrame) -> Result<bool, ClientError> {
        if frame.header.new_key.is_empty() {
            return Ok(false);
        }
        let key =
            MediaKey::from_bytes(frame.header.key_epoch, &frame.header.new_key).map_err(|e| ClientError::Tampered {
                peer: self.peer,
                reason: e.to_string(),
            })?;
        self.add_key(key);
        Ok(true)
    }

    /// The key epochs this viewer holds now.
    pub fn key_epochs(&self) -> Vec<u64> {
        self.keys.iter().map(|k| k.epoch).collect()
    }
}

/// Asks a peer which cameras it serves.
pub async fn list_cameras(
    control: &mut Control,
    peer: PeerId,
    limits: &Limits,
) -> Result<Vec<pb::CameraAnnouncement>, ClientError> {
    Ok(list(control, peer, limits).await?.cameras)
}

/// Asks a peer which cameras it serves and which other nodes' cameras it forwards.
pub async fn list(control: &mut Control, peer: PeerId, limits: &Limits) -> Result<pb::CameraList, ClientError> {
    let req = pb::ControlRequest {
        request: Some(pb::control_request::Request::ListCameras(pb::ListCameras {
            known: false,
        })),
    };
    let (resp, _): (pb::ControlResponse, _) =
        request(control, peer, info_protocol(), "control response", &req, limits).await?;
    match resp.response {
        Some(pb::control_response::Response::Cameras(list)) => Ok(list),
        Some(pb::control_response::Response::Error(e)) => Err(ClientError::Rejected {
            peer,
            code: pb::RejectCode::RejectUnspecified,
            reason: e.reason,
        }),
        _ => Ok(pb::CameraList::default()),
    }
}

impl KeySource {
    /// Asks the camera for the key of `epoch` (0: the current one).
    pub async fn fetch(&self, epoch: u64) -> Result<MediaKey, ClientError> {
        let peer = self.camera_peer;
        let req = pb::KeyRequest {
            camera_id: self.camera.clone(),
            grant: Some(self.grant.clone()),
            epoch,
            profile: self.profile as i32,
        };
        let mut control = self.control.clone();
        let (resp, _): (pb::KeyResponse, _) =
            request(&mut control, peer, key_protocol(), "key response", &req, &self.limits).await?;
        if !resp.error.is_empty() {
            return Err(ClientError::Rejected {
                peer,
                code: pb::RejectCode::RejectNotAuthorized,
                reason: format!("no media key: {}", resp.error),
            });
        }
        if epoch != 0 && resp.epoch != epoch {
            return Err(ClientError::Tampered {
                peer,
                reason: format!("asked for key epoch {epoch}, got {}", resp.epoch),
            });
        }
        MediaKey::from_bytes(resp.epoch, &resp.key).map_err(|e| ClientError::Tampered {
            peer,
            reason: e.to_string(),
        })
    }
}
