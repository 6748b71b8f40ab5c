//! One camera's recording task (IO): subscribe like any viewer with a grant carrying the
//! `record` right (without one, wait for the trust store to change: a grant installed
//! while the NVR runs starts the recording at once), store every frame as it arrives (sealed), wrap each media key for
//! storage, and when the camera drops, record the gap and subscribe again with backoff.
//!
//! A new subscription starts with the camera's cached GOP (instant start): frames captured
//! at or before the last one recorded are dropped, so nothing is stored twice and the
//! rest of that GOP continues the recording without a hole. Frames are checked
//! (AEAD-opened) before they are stored: a forwarder or relay that
//! alters a frame breaks the stream rather than planting video in the recording. The
//! plaintext is dropped at once; the stored payload is the ciphertext as received.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use camesh_proto::pb;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::keystore::KeyStore;
use crate::auth::{signed, Rights};
use crate::backoff::next_backoff;
use crate::reach::Reach;
use crate::record::playback::DEFAULT_JOIN_US;
use crate::record::Recorder;
use crate::stream::server::codec_params;

/// Counters of one recorded camera.
#[derive(Debug, Default)]
pub struct CameraCounters {
    pub frames: AtomicU64,
    pub dropped: AtomicU64,
    pub subscriptions: AtomicU64,
    pub gaps: AtomicU64,
    /// Frames a new subscription repeated (the camera's cached GOP) and were not stored.
    pub duplicates: AtomicU64,
}

/// Why nothing was recorded before this NVR process started.
const NVR_DOWN: &str = "NVR down (not running)";

/// The cause a gap marker names (pure): the NVR was down; else the camera restarted (its
/// stream came back numbering from a lower sequence: a new camera process); else why the
/// stream broke or the camera could not be reached (`why`).
fn gap_cause(why: &str, last_seq: Option<u64>, first_seq: u64) -> String {
    match last_seq {
        _ if why == NVR_DOWN => why.to_owned(),
        Some(last) if first_seq <= last => format!("camera restarted (then: {why})"),
        _ => why.to_owned(),
    }
}

/// Records `camera` until `cancel`.
pub(crate) async fn run(
    node: Reach,
    rec: Arc<Recorder>,
    keys: KeyStore,
    camera: String,
    counters: Arc<CameraCounters>,
    folder: std::path::PathBuf,
    cancel: CancellationToken,
) {
    // The end of what is on disk already: a restart is a gap too.
    let mut last_us = rec
        .index()
        .camera_segments(&camera)
        .ok()
        .and_then(|segs| segs.iter().filter_map(|s| s.last_us).max());
    let mut why = String::from(NVR_DOWN);
    // The camera stream's sequence at the last recorded frame (a new camera process
    // numbers from 0 again: that is how a restart shows).
    let mut last_seq: Option<u64> = None;
    let mut backoff = Duration::ZERO;
    let mut failures = 0u32;
    // Ticks when a grant is installed (picked up from the data folder or pushed).
    let mut trust_changed = node.trust().subscribe();
    loop {
        if cancel.is_cancelled() {
            return;
        }
        trust_changed.borrow_and_update();
        let Some(grant) = node.trust().grant_for(&camera, Rights::RECORD) else {
            if failures == 0 {
                warn!(%camera, "no grant with the record right for this camera: ask a fleet admin (mesh grant <nvr peer id> --cameras {camera} --rights record)");
            }
            failures += 1;
            backoff = next_backoff(backoff, Duration::from_secs(1), Duration::from_secs(10));
            tokio::select! {
                _ = tokio::time::sleep(backoff) => continue,
                Ok(()) = trust_changed.changed() => {
                    debug!(%camera, "trust changed; looking for a record grant again");
                    continue;
                }
                _ = cancel.cancelled() => return,
            }
        };
        let req = pb::StreamRequest {
            camera_id: camera.clone(),
            profile: pb::Profile::Main as i32,
            mode: Some(pb::stream_request::Mode::Live(pb::Live {})),
            grant: signed::encode(&grant),
            max_frame_bytes: 0,
            user_agent: format!("camesh-nvr/{}", env!("CARGO_PKG_VERSION")),
        };
        let sub = tokio::select! {
            r = node.subscribe(&camera, None, req) => r,
            _ = cancel.cancelled() => return,
        };
        match sub {
            Ok(mut sub) => {
                failures = 0;
                backoff = Duration::ZERO;
                counters.subscriptions.fetch_add(1, Ordering::Relaxed);
                info!(%camera, peer = %sub.peer, "recording");
                if let Some(c) = &sub.accept.codec {
                    if let Err(e) = rec.set_codec(&camera, &codec_params(c)) {
                        warn!(%camera, error = %e, "codec configuration not recorded");
                    }
                }
                let attest = cancel.child_token();
                tokio::spawn(super::attestations::fetch(
                    node.clone(),
                    sub.peer,
                    camera.clone(),
                    signed::encode(&grant),
                    folder.clone(),
                    attest.clone(),
                ));
                let _stop_attest = attest.drop_guard();
                let mut first = true;
                why = loop {
                    let next = tokio::select! {
                        r = sub.next_sealed() => r,
                        _ = cancel.cancelled() => return,
                    };
                    let frame = match next {
                        Ok(Some(f)) => f,
                        Ok(None) => break format!("{} ended the stream", sub.peer),
                        Err(e) => break e.to_string(),
                    };
                    match sub.learn_key(&frame) {
                        Ok(true) => {
                            let epoch = frame.header.key_epoch;
                            let wrapped = keys.wrap(&camera, epoch, &frame.header.new_key);
                            if let Err(e) = rec.write_key(&camera, epoch, wrapped) {
                                warn!(%camera, epoch, error = %e, "media key not recorded: frames of this epoch cannot be played");
                            }
                            continue;
                        }
                        Ok(false) => {}
                        Err(e) => break e.to_string(),
                    }
                    if let Err(e) = sub.open(&frame) {
                        break e.to_string();
                    }
                    let capture = frame.header.capture_unix_us;
                    // A new subscription starts with the camera's cached GOP: frames
                    // recorded before (the NVR restarted, the stream broke) are not
                    // recorded twice; the rest of the GOP continues the recording.
                    if last_us.is_some_and(|t| capture <= t) {
                        counters.duplicates.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    if first {
                        first = false;
                        // A hole longer than playback joins over gets a marker saying why.
                        if let Some(from) = last_us.filter(|&t| capture - t > DEFAULT_JOIN_US) {
                            counters.gaps.fetch_add(1, Ordering::Relaxed);
                            let cause = gap_cause(&why, last_seq, frame.header.sequence);
                            if let Err(e) = rec.write_gap(&camera, from, capture, &cause) {
                                debug!(%camera, error = %e, "gap marker not recorded");
                            }
                        }
                    }
                    match rec.write(&camera, &frame) {
                        Ok(()) => {
                            counters.frames.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => {
                            counters.dropped.fetch_add(1, Ordering::Relaxed);
                            debug!(%camera, error = %e, "frame not recorded");
                        }
                    }
                    last_us = Some(capture);
                    last_seq = Some(frame.header.sequence);
                };
                warn!(%camera, reason = %why, "camera dropped; recording the gap and subscribing again");
            }
            Err(e) => {
                failures += 1;
                if failures == 1 || failures.is_multiple_of(30) {
                    warn!(%camera, error = %e, failures, "cannot subscribe to the camera; retrying");
                }
                why = format!("camera unreachable: {e}");
            }
        }
        backoff = next_backoff(backoff, Duration::from_millis(200), Duration::from_secs(2));
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
    fn gaps_name_their_cause() {
        assert_eq!(gap_cause(NVR_DOWN, None, 0), NVR_DOWN);
        assert_eq!(gap_cause(NVR_DOWN, Some(900), 0), NVR_DOWN);
        let c = gap_cause("camera unreachable: timeout", Some(900), 3);
        assert!(c.starts_with("camera restarted") && c.contains("unreachable"), "{c}");
        assert_eq!(
            gap_cause("camera unreachable: timeout", Some(900), 950),
            "camera unreachable: timeout"
        );
    }
}
