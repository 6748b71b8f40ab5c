//! Motion detection of one camera (IO): a local subscriber of the camera's sub stream
//! (the main one without a sub) opens each frame with the hub's key and hands it to a
//! thread that decodes it to a small grayscale picture ([`crate::media::luma`]) and,
//! `fps` times a second, to the pure detector ([`crate::media::motion`]). Motion starts
//! and ends become signed events on the node's bus.
//!
//! The thread's queue is bounded: when decoding falls behind, frames are dropped up to
//! the next keyframe (a P-frame without its reference decodes to garbage), never queued.

use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use camesh_proto::pb;
use libp2p::PeerId;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::bus::Publisher;
use super::MOTION;
use crate::config::MotionSection;
use crate::media::luma::LumaDecoder;
use crate::media::motion::{MotionConfig, MotionDetector, MotionEvent, Zone};
use crate::media::CodecParams;
use crate::stream::fanout::QueueLimits;
use crate::stream::hub::Hubs;

/// The size pictures are scaled to before they are compared.
pub const WIDTH: u32 = 64;
pub const HEIGHT: u32 = 36;
/// Frames waiting for the decoding thread.
const QUEUE: usize = 16;

/// The detector's settings from the config section.
pub fn motion_config(m: &MotionSection) -> MotionConfig {
    MotionConfig {
        sensitivity: m.sensitivity,
        zones: m
            .zones
            .iter()
            .map(|z| Zone {
                x: z[0],
                y: z[1],
                w: z[2],
                h: z[3],
            })
            .collect(),
        confirm: m.confirm,
        hold_us: i64::try_from(m.hold_ms.saturating_mul(1000)).unwrap_or(i64::MAX),
    }
}

/// One opened access unit for the decoding thread.
struct Frame {
    data: bytes::Bytes,
    keyframe: bool,
    pts_90k: u64,
    capture_us: i64,
}

/// Watches `camera` until `shutdown`, resubscribing whenever its source comes back.
pub async fn run(
    camera: String,
    section: MotionSection,
    hubs: Arc<Hubs>,
    publisher: Arc<Publisher>,
    me: PeerId,
    limits: QueueLimits,
    shutdown: CancellationToken,
) {
    let mut announced = false;
    loop {
        let Some(hub) = hubs.get_profile(&camera, pb::Profile::Sub) else {
            warn!(%camera, "motion detection: no such camera on this node");
            return;
        };
        let (params, sub) = match hub.subscribe(me, limits) {
            Ok(x) => x,
            Err(_) => {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(500)) => continue,
                    _ = shutdown.cancelled() => return,
                }
            }
        };
        if !announced {
            info!(%camera, width = params.width, height = params.height, fps = section.fps, "motion detection on");
            announced = true;
        }
        let (tx, rx) = mpsc::sync_channel::<Frame>(QUEUE);
        let thread = {
            let (camera, section, publisher) = (camera.clone(), section.clone(), publisher.clone());
            std::thread::Builder::new()
                .name(format!("motion-{camera}"))
                .spawn(move || decode_loop(&camera, &params, &section, &publisher, rx))
        };
        if let Err(e) = thread {
            warn!(%camera, error = %e, "motion detection thread not started");
            return;
        }
        let mut skipping = false;
        loop {
            let frame = tokio::select! {
                f = sub.next() => f,
                _ = shutdown.cancelled() => {
                    sub.close();
                    return;
                }
            };
            let Some(frame) = frame else { break };
            let h = &frame.header;
            if skipping && !h.keyframe {
                continue;
            }
            let Some(key) = hub.key(h.key_epoch) else { continue };
            let Ok(data) = key.open(h, &frame.payload) else {
                continue;
            };
            let f = Frame {
                data,
                keyframe: h.keyframe,
                pts_90k: h.pts_90k,
                capture_us: h.capture_unix_us,
            };
            match tx.try_send(f) {
                Ok(()) => skipping = false,
                Err(mpsc::TrySendError::Full(_)) => {
                    debug!(%camera, "motion detection behind; skipping to the next keyframe");
                    skipping = true;
                }
                Err(mpsc::TrySendError::Disconnected(_)) => {
                    sub.close();
                    return;
                }
            }
        }
        sub.close();
        drop(tx);
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

/// The decoding thread: pictures in, events out, until the sender is dropped.
fn decode_loop(
    camera: &str,
    params: &CodecParams,
    section: &MotionSection,
    publisher: &Publisher,
    rx: mpsc::Receiver<Frame>,
) {
    let mut dec = match LumaDecoder::new(params, WIDTH, HEIGHT) {
        Ok(d) => d,
        Err(e) => {
            warn!(%camera, error = %e, "motion detection off");
            return;
        }
    };
    let mut det = MotionDetector::new(motion_config(section));
    let every_us = 1_000_000 / i64::from(section.fps.max(1));
    let mut next_us = i64::MIN;
    // Recent looked-at pictures' (capture time, pts): a start event names the picture
    // where motion began, a few pictures back.
    let mut recent: std::collections::VecDeque<(i64, u64)> = std::collections::VecDeque::new();
    while let Ok(f) = rx.recv() {
        let pictures = match dec.push(&f.data, f.keyframe) {
            Ok(p) => p,
            Err(e) => {
                debug!(%camera, error = %e, "a frame did not decode");
                continue;
            }
        };
        for pic in pictures {
            // Sample by capture time; a source that jumps back (restart) starts over.
            if f.capture_us < next_us.saturating_sub(every_us) || f.capture_us >= next_us {
                next_us = f.capture_us.saturating_add(every_us);
            } else {
                continue;
            }
            recent.push_back((f.capture_us, f.pts_90k));
            if recent.len() > 64 {
                recent.pop_front();
            }
            let Some(ev) = det.push(f.capture_us, &pic, WIDTH as usize, HEIGHT as usize) else {
                continue;
            };
            let pts_at = |t: i64| recent.iter().find(|(c, _)| *c == t).map_or(0, |(_, p)| *p);
            let event = match ev {
                MotionEvent::Started { at_us, area } => pb::CameraEvent {
                    camera_id: camera.to_owned(),
                    unix_us: at_us,
                    pts_90k: pts_at(at_us),
                    kind: MOTION.into(),
                    state: pb::EventState::Start as i32,
                    area: area.clamp(0.0, 1.0),
                    ..Default::default()
                },
                MotionEvent::Ended { started_us, last_us } => pb::CameraEvent {
                    camera_id: camera.to_owned(),
                    unix_us: last_us,
                    pts_90k: pts_at(last_us),
                    kind: MOTION.into(),
                    state: pb::EventState::End as i32,
                    detail: format!("lasted {} ms", (last_us - started_us) / 1000),
                    ..Default::default()
                },
            };
            let state = super::state_word(event.state);
            let s = publisher.publish(event);
            info!(%camera, state, at_us = s.unix_us, "motion");
        }
    }
}
