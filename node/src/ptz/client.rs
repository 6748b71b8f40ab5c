//! The asking side of `/camesh/ptz/1` (IO), for `mesh ptz`: finds the camera's node,
//! attaches the holder's `ptz` grant, sends one request and reads one bounded answer.

use std::time::Duration;

use camesh_proto::framing::decode_message;
use camesh_proto::{pb, LengthCodec};
use libp2p::{PeerId, StreamProtocol};

use super::PTZ_PROTOCOL;
use crate::auth::{signed, Rights};
use crate::reach::{CameraNodeError, Reach};
use crate::stream::io::{write_message, FramedRead};

#[derive(Debug, thiserror::Error)]
pub enum PtzError {
    #[error("no node serving camera {0:?} was found (is it running, and does a bootstrap peer know it?)")]
    NoCamera(String),
    #[error("no grant with the ptz right for camera {0}: ask a fleet admin (mesh grant <your peer id> --cameras {0} --rights ptz)")]
    NoGrant(String),
    #[error("cannot reach {peer}: {reason}")]
    Open { peer: PeerId, reason: String },
    #[error("{peer}: {reason}")]
    Refused { peer: PeerId, reason: String },
}

/// Sends `op` for `camera` to its node; the presets it lists (for a list request).
pub async fn request(
    reach: &Reach,
    camera: &str,
    op: pb::ptz_request::Op,
    user_agent: &str,
) -> Result<Vec<pb::PtzPreset>, PtzError> {
    let grant = reach
        .trust()
        .grant_for(camera, Rights::PTZ)
        .ok_or_else(|| PtzError::NoGrant(camera.to_owned()))?;
    let peer = reach.camera_node(camera).await.map_err(|e| match e {
        CameraNodeError::NotFound(c) => PtzError::NoCamera(c),
        CameraNodeError::Unreachable { peer, reason } => PtzError::Open { peer, reason },
    })?;
    let open = |reason: String| PtzError::Open { peer, reason };
    let timeout = Duration::from_secs(reach.limits().request_timeout_s.max(1));
    let mut control = reach.control();
    let mut stream = tokio::time::timeout(timeout, control.open_stream(peer, StreamProtocol::new(PTZ_PROTOCOL)))
        .await
        .map_err(|_| open(format!("no answer within {timeout:?}")))?
        .map_err(|e| open(e.to_string()))?;
    let codec = LengthCodec::new(reach.limits().max_control_bytes);
    let req = pb::PtzRequest {
        camera_id: camera.to_owned(),
        grant: signed::encode(&grant),
        op: Some(op),
        user_agent: user_agent.to_owned(),
    };
    write_message(&mut stream, &codec, &req)
        .await
        .map_err(|e| open(e.to_string()))?;
    let mut reader = FramedRead::new(stream, codec);
    // The camera's ONVIF call has its own 5 s deadline (twice: discovery, then the call).
    let body = match tokio::time::timeout(timeout + Duration::from_secs(12), reader.next()).await {
        Ok(Ok(Some(b))) => b,
        Ok(Ok(None)) => return Err(open("closed the stream without an answer".into())),
        Ok(Err(e)) => return Err(open(e.to_string())),
        Err(_) => return Err(open("no answer in time".into())),
    };
    let resp: pb::PtzResponse = decode_message("ptz response", body).map_err(|e| open(e.to_string()))?;
    if !resp.error.is_empty() {
        return Err(PtzError::Refused {
            peer,
            reason: resp.error.chars().take(512).collect(),
        });
    }
    Ok(resp.presets.into_iter().take(256).collect())
}
