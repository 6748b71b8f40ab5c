//! The talking side of `/camesh/talk/1` (IO), for `mesh talk`: finds the camera's node,
//! attaches the holder's `talk` grant, learns the codec the camera takes, then sends
//! frames (the caller paces them in real time) and reads the bounded final answer.

use std::time::Duration;

use camesh_proto::framing::decode_message;
use camesh_proto::{pb, LengthCodec};
use futures::io::{ReadHalf, WriteHalf};
use futures::{AsyncReadExt, AsyncWriteExt};
use libp2p::{PeerId, Stream, StreamProtocol};

use super::backchannel::Codec;
use super::{MAX_FRAME, TALK_PROTOCOL};
use crate::auth::{signed, Rights};
use crate::reach::{CameraNodeError, Reach};
use crate::stream::io::{write_message, FramedRead};

#[derive(Debug, thiserror::Error)]
pub enum TalkError {
    #[error("no node serving camera {0:?} was found (is it running, and does a bootstrap peer know it?)")]
    NoCamera(String),
    #[error("no grant with the talk right for camera {0}: ask a fleet admin (mesh grant <your peer id> --cameras {0} --rights talk)")]
    NoGrant(String),
    #[error("cannot reach {peer}: {reason}")]
    Open { peer: PeerId, reason: String },
    #[error("{peer} refused: {reason}")]
    Refused { peer: PeerId, reason: String },
    #[error("{peer}: {reason}")]
    Lost { peer: PeerId, reason: String },
}

/// An accepted talk.
pub struct Talk {
    peer: PeerId,
    codec: Codec,
    frame_samples: u32,
    writer: WriteHalf<Stream>,
    reader: FramedRead<ReadHalf<Stream>>,
    wire: LengthCodec,
}

impl std::fmt::Debug for Talk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Talk")
            .field("peer", &self.peer)
            .field("codec", &self.codec)
            .finish_non_exhaustive()
    }
}

/// Asks `camera`'s node to open the camera's backchannel for this node.
pub async fn start(reach: &Reach, camera: &str, user_agent: &str) -> Result<Talk, TalkError> {
    let grant = reach
        .trust()
        .grant_for(camera, Rights::TALK)
        .ok_or_else(|| TalkError::NoGrant(camera.to_owned()))?;
    let peer = reach.camera_node(camera).await.map_err(|e| match e {
        CameraNodeError::NotFound(c) => TalkError::NoCamera(c),
        CameraNodeError::Unreachable { peer, reason } => TalkError::Open { peer, reason },
    })?;
    let open = |reason: String| TalkError::Open { peer, reason };
    let timeout = Duration::from_secs(reach.limits().request_timeout_s.max(1));
    let mut control = reach.control();
    let mut stream = tokio::time::timeout(timeout, control.open_stream(peer, StreamProtocol::new(TALK_PROTOCOL)))
        .await
        .map_err(|_| open(format!("no answer within {timeout:?}")))?
        .map_err(|e| open(e.to_string()))?;
    let codec = LengthCodec::new(reach.limits().max_control_bytes);
    let req = pb::TalkRequest {
        camera_id: camera.to_owned(),
        grant: signed::encode(&grant),
        user_agent: user_agent.to_owned(),
    };
    write_message(&mut stream, &codec, &req)
        .await
        .map_err(|e| open(e.to_string()))?;
    let (rd, writer) = stream.split();
    let mut reader = FramedRead::new(rd, codec);
    // The camera's node first connects to the camera (5 s per RTSP answer, three of them).
    let body = match tokio::time::timeout(timeout + Duration::from_secs(16), reader.next()).await {
        Ok(Ok(Some(b))) => b,
        Ok(Ok(None)) => return Err(open("closed the stream without an answer".into())),
        Ok(Err(e)) => return Err(open(e.to_string())),
        Err(_) => return Err(open("no answer in time".into())),
    };
    let acc: pb::TalkAccept = decode_message("talk accept", body).map_err(|e| open(e.to_string()))?;
    if !acc.error.is_empty() {
        return Err(TalkError::Refused {
            peer,
            reason: acc.error.chars().take(512).collect(),
        });
    }
    let codec_name = Codec::from_name(&acc.codec).ok_or_else(|| open(format!("unknown codec {:?}", acc.codec)))?;
    if acc.sample_rate != 8000 || acc.frame_samples == 0 || acc.frame_samples as usize > MAX_FRAME {
        return Err(open(format!(
            "unexpected audio format: {} Hz, {} samples per frame",
            acc.sample_rate, acc.frame_samples
        )));
    }
    Ok(Talk {
        peer,
        codec: codec_name,
        frame_samples: acc.frame_samples,
        writer,
        reader,
        wire: LengthCodec::new(MAX_FRAME + 64),
    })
}

impl Talk {
    pub fn peer(&self) -> PeerId {
        self.peer
    }

    /// The codec the camera takes.
    pub fn codec(&self) -> Codec {
        self.codec
    }

    /// Samples each frame holds.
    pub fn frame_samples(&self) -> u32 {
        self.frame_samples
    }

    /// Sends one frame (already in [`Talk::codec`]).
    pub async fn send(&mut self, payload: Vec<u8>) -> Result<(), TalkError> {
        let frame = pb::TalkFrame {
            payload: payload.into(),
        };
        write_message(&mut self.writer, &self.wire, &frame)
            .await
            .map_err(|e| TalkError::Lost {
                peer: self.peer,
                reason: e.to_string(),
            })
    }

    /// Ends the talk: the frames the camera played.
    pub async fn finish(mut self) -> Result<u64, TalkError> {
        let peer = self.peer;
        let lost = |reason: String| TalkError::Lost { peer, reason };
        self.writer.close().await.map_err(|e| lost(e.to_string()))?;
        let body = match tokio::time::timeout(Duration::from_secs(10), self.reader.next()).await {
            Ok(Ok(Some(b))) => b,
            Ok(Ok(None)) => return Err(lost("closed without saying how it ended".into())),
            Ok(Err(e)) => return Err(lost(e.to_string())),
            Err(_) => return Err(lost("no answer in time".into())),
        };
        let done: pb::TalkDone = decode_message("talk done", body).map_err(|e| lost(e.to_string()))?;
        if !done.error.is_empty() {
            return Err(lost(format!(
                "{} ({} frames played)",
                done.error.chars().take(512).collect::<String>(),
                done.frames
            )));
        }
        Ok(done.frames)
    }
}
