//! Watching a camera and staying on it: resolve, connect, subscribe, and when anything
//! breaks, retry with exponential backoff and report the gap once video is back.
//!
//! Events go to a bounded channel: a consumer that cannot keep up slows the reads, QUIC
//! flow control pushes back to the source, and the source's queue for this viewer skips
//! to the next keyframe. Nothing here grows without bound.

use std::time::{Duration, Instant};

use camesh_proto::{pb, MediaFrame};
use libp2p::PeerId;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::client::ClientError;
use crate::node::NodeHandle;

#[derive(Debug, Clone)]
pub struct WatchOptions {
    pub camera: String,
    /// Ask this peer only (otherwise: whoever the directory or the DHT names).
    pub peer: Option<PeerId>,
    pub profile: pb::Profile,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// Give up after this many failed attempts in a row (`None`: never).
    pub max_attempts: Option<u32>,
    pub user_agent: String,
}

impl WatchOptions {
    pub fn new(camera: impl Into<String>) -> Self {
        Self {
            camera: camera.into(),
            peer: None,
            profile: pb::Profile::Main,
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(2),
            max_attempts: None,
            user_agent: format!("camesh/{}", env!("CARGO_PKG_VERSION")),
        }
    }
}

#[derive(Debug)]
pub enum WatchEvent {
    /// Video (re)started; `gap` is the time without video before it, after an interruption.
    Started {
        peer: PeerId,
        accept: pb::StreamAccept,
        gap: Option<Duration>,
    },
    Frame(MediaFrame),
    /// The stream broke or could not be opened; the next attempt follows in `retry_in`.
    Interrupted {
        error: String,
        retry_in: Duration,
    },
    /// Stopped for good (refused, or out of attempts).
    Failed {
        error: String,
    },
}

/// The next backoff: doubles from `min` up to `max`.
pub fn next_backoff(current: Duration, min: Duration, max: Duration) -> Duration {
    if current.is_zero() {
        min
    } else {
        (current * 2).min(max)
    }
}

/// Refusals that retrying cannot fix.
fn is_final(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::Rejected {
            code: pb::RejectCode::RejectUnknownCamera
                | pb::RejectCode::RejectNotAuthorized
                | pb::RejectCode::RejectBadRequest
                | pb::RejectCode::RejectUnsupported,
            ..
        }
    )
}

pub async fn run(node: NodeHandle, opts: WatchOptions, tx: mpsc::Sender<WatchEvent>, cancel: CancellationToken) {
    let mut backoff = Duration::ZERO;
    let mut attempts = 0u32;
    let mut last_frame: Option<Instant> = None;
    let mut interrupted = false;
    loop {
        if cancel.is_cancelled() {
            return;
        }
        let req = pb::StreamRequest {
            camera_id: opts.camera.clone(),
            profile: opts.profile as i32,
            mode: Some(pb::stream_request::Mode::Live(pb::Live {})),
            grant: Default::default(),
            max_frame_bytes: 0,
            user_agent: opts.user_agent.clone(),
        };
        let result = tokio::select! {
            r = node.subscribe_camera(&opts.camera, opts.peer, req) => r,
            _ = cancel.cancelled() => return,
        };
        let error = match result {
            Ok(mut sub) => {
                attempts = 0;
                backoff = Duration::ZERO;
                let gap = if interrupted {
                    last_frame.map(|t| t.elapsed())
                } else {
                    None
                };
                info!(camera = %opts.camera, peer = %sub.peer, gap_ms = gap.map(|g| g.as_millis() as u64), "video started");
                if tx
                    .send(WatchEvent::Started {
                        peer: sub.peer,
                        accept: sub.accept.clone(),
                        gap,
                    })
                    .await
                    .is_err()
                {
                    return;
                }
                loop {
                    let next = tokio::select! {
                        r = sub.next_frame() => r,
                        _ = cancel.cancelled() => return,
                    };
                    match next {
                        Ok(Some(f)) => {
                            last_frame = Some(Instant::now());
                            if tx.send(WatchEvent::Frame(f)).await.is_err() {
                                return;
                            }
                        }
                        Ok(None) => break format!("{} ended the stream", sub.peer),
                        Err(e) => break e.to_string(),
                    }
                }
            }
            Err(e) => {
                if is_final(&e) {
                    let _ = tx.send(WatchEvent::Failed { error: e.to_string() }).await;
                    return;
                }
                e.to_string()
            }
        };
        interrupted = true;
        attempts += 1;
        if opts.max_attempts.is_some_and(|m| attempts >= m) {
            let _ = tx.send(WatchEvent::Failed { error }).await;
            return;
        }
        backoff = next_backoff(backoff, opts.backoff_min, opts.backoff_max);
        debug!(camera = %opts.camera, %error, retry_ms = backoff.as_millis() as u64, "watch interrupted");
        if tx
            .send(WatchEvent::Interrupted {
                error,
                retry_in: backoff,
            })
            .await
            .is_err()
        {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = cancel.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let (min, max) = (Duration::from_millis(100), Duration::from_secs(1));
        let mut b = Duration::ZERO;
        let seq: Vec<_> = (0..6)
            .map(|_| {
                b = next_backoff(b, min, max);
                b.as_millis()
            })
            .collect();
        assert_eq!(seq, vec![100, 200, 400, 800, 1000, 1000]);
    }
}
