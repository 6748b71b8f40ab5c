//! The asking side of `/camesh/events/1` (IO), for `mesh events` and the NVR: sends one
//! request and reads a bounded stream of items, checking each event's signature and that
//! its signer may speak for the camera: the answering camera node itself (a proven fleet
//! member whose certificate names the camera), or, from an NVR, the camera certificate
//! sent first, checked against the fleet root at the event's time.

use std::time::Duration;

use camesh_proto::framing::decode_message;
use camesh_proto::{pb, LengthCodec};
use libp2p::{PeerId, Stream, StreamProtocol};

use super::EVENTS_PROTOCOL;
use crate::auth::{cert, signed, At, Trust};
use crate::reach::Reach;
use crate::stream::io::{write_message, FramedRead, IoError};

#[derive(Debug, thiserror::Error)]
pub enum EventsError {
    #[error("cannot ask {peer} for events: {reason}")]
    Open { peer: PeerId, reason: String },
    #[error("{peer} refused: {reason}")]
    Refused { peer: PeerId, reason: String },
    #[error("{peer} sent an event the camera did not sign: {reason}")]
    Forged { peer: PeerId, reason: String },
    #[error("{peer}: {source}")]
    Io { peer: PeerId, source: IoError },
}

/// What to ask for.
#[derive(Debug, Clone, Default)]
pub struct Ask {
    pub camera: String,
    /// Past events from this time (Unix µs); 0: none.
    pub from_us: i64,
    /// Up to this time (0: no end).
    pub to_us: i64,
    pub follow: bool,
    pub kinds: Vec<String>,
    /// Most past events (the newest); 0: the server's limit.
    pub max: u32,
}

/// One item of the answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    /// A checked event, and its signed form (what an NVR stores).
    Event(Box<(pb::CameraEvent, pb::Signed)>),
    /// The past events are all sent (`more`: older ones were left out).
    Done { sent: u32, more: bool },
}

/// An open answer.
pub struct Events {
    peer: PeerId,
    camera: String,
    reader: FramedRead<Stream>,
    trust: std::sync::Arc<Trust>,
    camera_cert: Option<pb::Signed>,
    /// Signers already shown to speak for the camera.
    vouched: Vec<PeerId>,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events")
            .field("peer", &self.peer)
            .field("camera", &self.camera)
            .finish_non_exhaustive()
    }
}

/// Asks `peer` (the camera's node or an NVR) for `ask`, presenting `grant`.
pub async fn open(
    reach: &Reach,
    peer: PeerId,
    grant: &pb::Signed,
    ask: &Ask,
    user_agent: &str,
) -> Result<Events, EventsError> {
    let fail = |reason: String| EventsError::Open { peer, reason };
    let timeout = Duration::from_secs(reach.limits().request_timeout_s.max(1));
    let mut control = reach.control();
    let mut stream = tokio::time::timeout(timeout, control.open_stream(peer, StreamProtocol::new(EVENTS_PROTOCOL)))
        .await
        .map_err(|_| fail(format!("no answer within {timeout:?}")))?
        .map_err(|e| fail(e.to_string()))?;
    let codec = LengthCodec::new(reach.limits().max_control_bytes);
    let req = pb::EventsRequest {
        camera_id: ask.camera.clone(),
        grant: signed::encode(grant),
        from_unix_us: ask.from_us,
        to_unix_us: ask.to_us,
        follow: ask.follow,
        kinds: ask.kinds.clone(),
        max_events: ask.max,
        user_agent: user_agent.to_owned(),
    };
    write_message(&mut stream, &codec, &req)
        .await
        .map_err(|e| fail(e.to_string()))?;
    Ok(Events {
        peer,
        camera: ask.camera.clone(),
        reader: FramedRead::new(stream, codec),
        trust: reach.trust().clone(),
        camera_cert: None,
        vouched: Vec::new(),
    })
}

impl Events {
    pub fn peer(&self) -> PeerId {
        self.peer
    }

    /// The camera's certificate, when an NVR sent one.
    pub fn camera_cert(&self) -> Option<&pb::Signed> {
        self.camera_cert.as_ref()
    }

    /// The next item; `None` when the stream ends.
    pub async fn next(&mut self) -> Result<Option<Item>, EventsError> {
        let peer = self.peer;
        loop {
            let body = match self.reader.next().await {
                Ok(Some(b)) => b,
                Ok(None) => return Ok(None),
                Err(source) => return Err(EventsError::Io { peer, source }),
            };
            let item: pb::EventItem =
                decode_message("event item", body).map_err(|e| EventsError::Io { peer, source: e.into() })?;
            match item.item {
                Some(pb::event_item::Item::CameraCert(c)) => {
                    self.camera_cert = Some(c);
                    self.vouched.clear();
                }
                Some(pb::event_item::Item::Event(s)) => {
                    let e = self.check(&s)?;
                    return Ok(Some(Item::Event(Box::new((e, s)))));
                }
                Some(pb::event_item::Item::Done(d)) => {
                    return Ok(Some(Item::Done {
                        sent: d.sent,
                        more: d.more,
                    }))
                }
                Some(pb::event_item::Item::Refused(r)) => {
                    return Err(EventsError::Refused {
                        peer,
                        reason: r.chars().take(512).collect(),
                    })
                }
                None => {}
            }
        }
    }

    /// The event, if signed by a node that may speak for the camera.
    fn check(&mut self, s: &pb::Signed) -> Result<pb::CameraEvent, EventsError> {
        let forged = |reason: String| EventsError::Forged {
            peer: self.peer,
            reason,
        };
        let (signer, e) = super::open(s).map_err(|e| forged(e.to_string()))?;
        if e.camera_id != self.camera {
            return Err(forged(format!("an event of camera {:?}", e.camera_id)));
        }
        if self.vouched.contains(&signer) {
            return Ok(e);
        }
        let direct = signer == self.peer && self.trust.member(&signer).is_some_and(|c| c.may_serve(&self.camera));
        let by_cert = || {
            let c = self
                .camera_cert
                .as_ref()
                .ok_or_else(|| "no camera certificate was sent".to_string())?;
            let at = At {
                now: e.unix_us.div_euclid(1_000_000),
                skew_s: self.trust.skew_s(),
            };
            let info =
                cert::verify(c, &self.trust.root, &self.trust.fleet_id, &signer, at).map_err(|e| e.to_string())?;
            if info.may_serve(&self.camera) {
                Ok(())
            } else {
                Err("the camera certificate does not name this camera".to_string())
            }
        };
        if !direct {
            by_cert().map_err(|why: String| forged(format!("signer {signer} does not speak for the camera: {why}")))?;
        }
        if self.vouched.len() < 16 {
            self.vouched.push(signer);
        }
        Ok(e)
    }
}
