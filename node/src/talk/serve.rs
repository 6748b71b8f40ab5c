//! The camera node's side of `/camesh/talk/1` (IO). A member whose grant holds `talk` for
//! the camera, while nobody else talks to it, gets the camera's backchannel opened and
//! then plays frames into it as they come, until it closes its side (or pauses for
//! [`IDLE`], or talks longer than [`super::MAX_TALK`]). Start, end and every refusal are
//! audited.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use camesh_proto::framing::decode_message;
use camesh_proto::{pb, LengthCodec};
use futures::{AsyncReadExt, AsyncWriteExt};
use libp2p::{PeerId, Stream};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::rtsp::Backchannel;
use super::{MAX_FRAME, MAX_TALK, TALK_PROTOCOL};
use crate::auth::{self, Rights, Trust};
use crate::config::{CameraConfig, Limits};
use crate::stream::accept;
use crate::stream::io::{read_request, write_message, FramedRead, IoError};

/// A talker silent this long is done.
pub const IDLE: Duration = Duration::from_secs(5);

#[derive(Debug)]
struct TalkCamera {
    url: String,
    tags: Vec<String>,
}

/// What talk sessions share.
#[derive(Debug, Clone)]
pub struct TalkServer {
    cameras: Arc<HashMap<String, TalkCamera>>,
    trust: Arc<Trust>,
    limits: Limits,
    /// Who talks to which camera now.
    talking: Arc<Mutex<HashMap<String, PeerId>>>,
}

/// Frees the camera when a session ends, however it ends.
struct Talking {
    map: Arc<Mutex<HashMap<String, PeerId>>>,
    camera: String,
}

impl Drop for Talking {
    fn drop(&mut self) {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.camera);
    }
}

fn accept_msg(error: String) -> pb::TalkAccept {
    pb::TalkAccept {
        error,
        ..Default::default()
    }
}

impl TalkServer {
    /// Talkback for the cameras in `cameras` that have `talkback` set.
    pub fn new(cameras: &[CameraConfig], trust: Arc<Trust>, limits: Limits) -> Self {
        let cameras = cameras
            .iter()
            .filter_map(|c| {
                let url = c.talkback_url()?;
                Some((
                    c.id.clone(),
                    TalkCamera {
                        url,
                        tags: c.tags.clone(),
                    },
                ))
            })
            .collect();
        Self {
            cameras: Arc::new(cameras),
            trust,
            limits,
            talking: Arc::default(),
        }
    }

    /// Serves `/camesh/talk/1` on the node's bounded accept loop.
    pub fn start(self, control: &mut libp2p_stream::Control, shutdown: CancellationToken) -> Result<(), String> {
        let limits = self.limits.clone();
        accept::serve_control(
            control,
            TALK_PROTOCOL,
            &limits,
            shutdown,
            move |peer, stream, cancel| {
                let this = self.clone();
                async move { this.session(peer, stream, cancel).await }
            },
        )
    }

    async fn session(&self, peer: PeerId, mut stream: Stream, shutdown: CancellationToken) -> Result<(), IoError> {
        let codec = LengthCodec::new(self.limits.max_control_bytes);
        let (back, camera, _guard) = match self.admit(peer, &mut stream, codec).await {
            Ok(x) => x,
            Err(error) => {
                write_message(&mut stream, &codec, &accept_msg(error)).await?;
                let _ = stream.close().await;
                return Ok(());
            }
        };
        let mut back = back;
        let accept = pb::TalkAccept {
            error: String::new(),
            codec: back.codec().name().into(),
            sample_rate: 8000,
            frame_samples: 160,
        };
        write_message(&mut stream, &codec, &accept).await?;
        let audit = &self.trust.audit;
        audit.record(
            "talk",
            &peer.to_string(),
            &camera,
            &format!("started ({})", back.codec().name()),
        );
        info!(%peer, %camera, codec = back.codec().name(), "talkback started");
        let started = Instant::now();
        let (rd, mut wr) = stream.split();
        let mut reader = FramedRead::new(rd, LengthCodec::new(MAX_FRAME + 64));
        let mut frames = 0u64;
        let why: Option<String> = loop {
            let left = MAX_TALK.saturating_sub(started.elapsed());
            let next = tokio::select! {
                r = tokio::time::timeout(IDLE.min(left), reader.next()) => r,
                _ = shutdown.cancelled() => break Some("the camera node is shutting down".into()),
            };
            let body = match next {
                Ok(Ok(Some(b))) => b,
                Ok(Ok(None)) => break None,
                Ok(Err(e)) => break Some(format!("bad frame: {e}")),
                Err(_) if started.elapsed() >= MAX_TALK => {
                    break Some(format!("talked longer than {} s", MAX_TALK.as_secs()))
                }
                Err(_) => break Some(format!("no audio for {} s", IDLE.as_secs())),
            };
            let frame: pb::TalkFrame = match decode_message("talk frame", body) {
                Ok(f) => f,
                Err(e) => break Some(format!("bad frame: {e}")),
            };
            if frame.payload.is_empty() || frame.payload.len() > MAX_FRAME {
                break Some(format!("a frame of {} bytes (1 to {MAX_FRAME})", frame.payload.len()));
            }
            let samples = u32::try_from(frame.payload.len()).unwrap_or(0);
            if let Err(e) = back.send(&frame.payload, samples).await {
                break Some(format!("the camera: {e}"));
            }
            frames += 1;
        };
        back.close().await;
        let secs = started.elapsed().as_secs_f32();
        let detail = match &why {
            None => format!("ended: {frames} frames in {secs:.1} s"),
            Some(w) => format!("ended: {frames} frames in {secs:.1} s; {w}"),
        };
        audit.record("talk", &peer.to_string(), &camera, &detail);
        info!(%peer, %camera, frames, reason = why.as_deref().unwrap_or("done"), "talkback ended");
        let done = pb::TalkDone {
            frames,
            error: why.unwrap_or_default(),
        };
        write_message(&mut wr, &codec, &done).await?;
        let _ = wr.close().await;
        Ok(())
    }

    /// Membership, request, grant, the camera free, the backchannel open; else why not.
    async fn admit(
        &self,
        peer: PeerId,
        stream: &mut Stream,
        codec: LengthCodec,
    ) -> Result<(Backchannel, String, Talking), String> {
        let audit = &self.trust.audit;
        if self.trust.wait_member(&peer, self.trust.grace()).await.is_none() {
            audit.record("refused-talk", &peer.to_string(), "", "not a fleet member");
            return Err("not a fleet member".into());
        }
        let timeout = Duration::from_secs(self.limits.request_timeout_s);
        let body = match read_request(&mut *stream, codec, timeout).await {
            Ok(Some(b)) => b,
            Ok(None) => return Err("no request".into()),
            Err(e) => return Err(format!("bad request: {e}")),
        };
        let req: pb::TalkRequest = decode_message("talk request", body).map_err(|e| e.to_string())?;
        let camera = req.camera_id.chars().take(64).collect::<String>();
        let refuse = |why: String| {
            audit.record("refused-talk", &peer.to_string(), &camera, &why);
            info!(%peer, %camera, reason = %why, "talkback refused");
            why
        };
        let Some(cam) = self.cameras.get(&camera) else {
            return Err(refuse(format!(
                "camera {camera:?} has no talkback on this node (no talkback in its [[camera]])"
            )));
        };
        auth::signed::decode("grant", &req.grant)
            .and_then(|g| self.trust.check_grant(&peer, &g, &camera, &cam.tags, Rights::TALK))
            .map_err(|e| refuse(e.to_string()))?;
        let guard = {
            let mut map = self.talking.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(other) = map.get(&camera) {
                return Err(refuse(format!(
                    "{other} is talking to camera {camera} now (one talker at a time)"
                )));
            }
            map.insert(camera.clone(), peer);
            Talking {
                map: self.talking.clone(),
                camera: camera.clone(),
            }
        };
        let agent = format!("camesh-node/{}", env!("CARGO_PKG_VERSION"));
        let back = Backchannel::open(&cam.url, &agent).await.map_err(|e| {
            debug!(%peer, %camera, error = %e, "backchannel not opened");
            refuse(e.to_string())
        })?;
        Ok((back, camera, guard))
    }
}
