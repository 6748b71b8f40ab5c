//! The camera node's side of `/camesh/ptz/1` (IO): one `PtzRequest`, one `PtzResponse`
//! per stream. A member with a grant holding the `ptz` right for the camera, within its
//! request rate, gets the ONVIF call made; every call and every refusal is audited. A
//! timed move (`duration_ms`) is followed by a Stop from here, so a viewer that
//! disappears mid-move does not leave the camera turning.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use camesh_proto::framing::decode_message;
use camesh_proto::{pb, LengthCodec};
use futures::AsyncWriteExt;
use libp2p::{PeerId, Stream};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::rate::PtzRate;
use super::PTZ_PROTOCOL;
use crate::auth::{self, Rights, Trust};
use crate::config::{CameraConfig, Limits};
use crate::onvif::client::Onvif;
use crate::onvif::soap::Op;
use crate::stream::accept;
use crate::stream::io::{read_request, write_message, IoError};

/// The longest timed move (a longer one is cut to this, then stopped).
pub const MAX_MOVE: Duration = Duration::from_secs(60);

/// One PTZ-capable camera of this node.
#[derive(Debug)]
struct PtzCamera {
    onvif: Onvif,
    tags: Vec<String>,
}

/// What sessions share.
#[derive(Debug, Clone)]
pub struct PtzServer {
    cameras: Arc<HashMap<String, PtzCamera>>,
    trust: Arc<Trust>,
    rate: Arc<Mutex<PtzRate>>,
    limits: Limits,
}

impl PtzServer {
    /// PTZ for the cameras in `cameras` that have an `[camera.onvif]` section.
    pub fn new(cameras: &[CameraConfig], trust: Arc<Trust>, limits: Limits) -> Self {
        let cameras = cameras
            .iter()
            .filter_map(|c| {
                let onvif = c.onvif.clone()?;
                Some((
                    c.id.clone(),
                    PtzCamera {
                        onvif: Onvif::new(onvif),
                        tags: c.tags.clone(),
                    },
                ))
            })
            .collect();
        Self {
            cameras: Arc::new(cameras),
            trust,
            rate: Arc::default(),
            limits,
        }
    }

    /// Serves `/camesh/ptz/1` on the node's bounded accept loop.
    pub fn start(self, control: &mut libp2p_stream::Control, shutdown: CancellationToken) -> Result<(), String> {
        let limits = self.limits.clone();
        accept::serve_control(control, PTZ_PROTOCOL, &limits, shutdown, move |peer, stream, cancel| {
            let this = self.clone();
            async move { this.session(peer, stream, cancel).await }
        })
    }

    async fn session(&self, peer: PeerId, mut stream: Stream, shutdown: CancellationToken) -> Result<(), IoError> {
        let codec = LengthCodec::new(self.limits.max_control_bytes);
        let answer = self.answer(peer, &mut stream, codec, shutdown).await;
        let resp = match answer {
            Ok(presets) => pb::PtzResponse {
                error: String::new(),
                presets,
            },
            Err(error) => pb::PtzResponse { error, presets: vec![] },
        };
        write_message(&mut stream, &codec, &resp).await?;
        let _ = stream.close().await;
        Ok(())
    }

    /// The request's outcome: presets (for a list), or why it was not done.
    async fn answer(
        &self,
        peer: PeerId,
        stream: &mut Stream,
        codec: LengthCodec,
        shutdown: CancellationToken,
    ) -> Result<Vec<pb::PtzPreset>, String> {
        let audit = &self.trust.audit;
        if self.trust.wait_member(&peer, self.trust.grace()).await.is_none() {
            audit.record("refused-ptz", &peer.to_string(), "", "not a fleet member");
            return Err("not a fleet member".into());
        }
        let timeout = Duration::from_secs(self.limits.request_timeout_s);
        let body = match read_request(stream, codec, timeout).await {
            Ok(Some(b)) => b,
            Ok(None) => return Err("no request".into()),
            Err(e) => return Err(format!("bad request: {e}")),
        };
        let req: pb::PtzRequest = decode_message("ptz request", body).map_err(|e| e.to_string())?;
        let camera = req.camera_id.chars().take(64).collect::<String>();
        let refuse = |why: String| {
            audit.record("refused-ptz", &peer.to_string(), &camera, &why);
            info!(%peer, %camera, reason = %why, "PTZ refused");
            Err(why)
        };
        let Some(cam) = self.cameras.get(&camera) else {
            return refuse(format!("camera {camera:?} has no PTZ on this node (no [camera.onvif])"));
        };
        let grant = auth::signed::decode("grant", &req.grant)
            .and_then(|g| self.trust.check_grant(&peer, &g, &camera, &cam.tags, Rights::PTZ));
        if let Err(e) = grant {
            return refuse(e.to_string());
        }
        let rate = self
            .rate
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take(peer, Instant::now());
        if let Err(wait) = rate {
            return refuse(format!(
                "too many PTZ requests: at most {} a second (try again in {} ms)",
                super::rate::PER_SECOND,
                wait.as_millis()
            ));
        }
        let (op, duration) = match to_op(req.op) {
            Ok(x) => x,
            Err(e) => return refuse(e),
        };
        let detail = match duration {
            Some(d) => format!(
                "{op:?} for {} ms ({})",
                d.as_millis(),
                req.user_agent.chars().take(64).collect::<String>()
            ),
            None => format!("{op:?} ({})", req.user_agent.chars().take(64).collect::<String>()),
        };
        audit.record("ptz", &peer.to_string(), &camera, &detail);
        let answer = cam.onvif.call(&op).await.map_err(|e| {
            debug!(%peer, %camera, error = %e, "ONVIF call failed");
            e.to_string()
        })?;
        if let Some(d) = duration {
            let cameras = self.cameras.clone();
            let (camera, trust) = (camera.clone(), self.trust.clone());
            tokio::spawn(async move {
                tokio::select! {
                    _ = tokio::time::sleep(d) => {}
                    _ = shutdown.cancelled() => {}
                }
                if let Some(cam) = cameras.get(&camera) {
                    let r = cam.onvif.call(&Op::Stop).await;
                    let outcome = r.map_or_else(|e| e.to_string(), |_| "done".into());
                    let detail = format!("Stop after {} ms: {outcome}", d.as_millis());
                    trust.audit.record("ptz", &peer.to_string(), &camera, &detail);
                }
            });
        }
        Ok(answer
            .presets
            .into_iter()
            .take(256)
            .map(|(token, name)| pb::PtzPreset { token, name })
            .collect())
    }
}

/// Checks a speed or position: finite, within `[-1, 1]`.
fn unit(v: f32, what: &str) -> Result<f32, String> {
    if v.is_finite() && (-1.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{what} {v} is outside -1..1"))
    }
}

/// The request's operation as an ONVIF call, and the move's duration when timed.
pub fn to_op(op: Option<pb::ptz_request::Op>) -> Result<(Op, Option<Duration>), String> {
    use pb::ptz_request::Op as P;
    Ok(match op {
        Some(P::Move(m)) => {
            let op = Op::ContinuousMove {
                pan: unit(m.pan, "pan")?,
                tilt: unit(m.tilt, "tilt")?,
                zoom: unit(m.zoom, "zoom")?,
            };
            let d = (m.duration_ms > 0).then(|| Duration::from_millis(u64::from(m.duration_ms)).min(MAX_MOVE));
            (op, d)
        }
        Some(P::Stop(_)) => (Op::Stop, None),
        Some(P::Absolute(p)) => (
            Op::AbsoluteMove {
                pan: unit(p.pan, "pan")?,
                tilt: unit(p.tilt, "tilt")?,
                zoom: unit(p.zoom, "zoom")?,
            },
            None,
        ),
        Some(P::Relative(p)) => (
            Op::RelativeMove {
                pan: unit(p.pan, "pan")?,
                tilt: unit(p.tilt, "tilt")?,
                zoom: unit(p.zoom, "zoom")?,
            },
            None,
        ),
        Some(P::GotoPreset(t)) => {
            if t.is_empty() || t.len() > 64 {
                return Err("a preset token is 1 to 64 characters".into());
            }
            (Op::GotoPreset(t), None)
        }
        Some(P::Home(_)) => (Op::GotoHome, None),
        Some(P::ListPresets(_)) => (Op::GetPresets, None),
        None => return Err("no PTZ operation in the request".into()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use pb::ptz_request::Op as P;

    #[test]
    fn requests_become_calls_and_bad_values_are_refused() {
        let m = |pan, duration_ms| {
            Some(P::Move(pb::PtzMove {
                pan,
                tilt: 0.0,
                zoom: 0.0,
                duration_ms,
            }))
        };
        let (op, d) = to_op(m(0.3, 1000)).expect("move");
        assert_eq!(
            op,
            Op::ContinuousMove {
                pan: 0.3,
                tilt: 0.0,
                zoom: 0.0
            }
        );
        assert_eq!(d, Some(Duration::from_secs(1)));
        assert_eq!(to_op(m(0.3, u32::MAX)).expect("move").1, Some(MAX_MOVE));
        assert!(to_op(m(1.5, 0)).unwrap_err().contains("outside"));
        assert!(to_op(m(f32::NAN, 0)).is_err());
        assert_eq!(
            to_op(Some(P::GotoPreset("2".into()))).expect("preset").0,
            Op::GotoPreset("2".into())
        );
        assert!(to_op(Some(P::GotoPreset(String::new()))).is_err());
        assert_eq!(to_op(Some(P::Home(pb::PtzHome {}))).expect("home").0, Op::GotoHome);
        assert!(to_op(None).is_err());
    }
}
