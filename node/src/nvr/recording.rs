//! One camera's recording task (IO): subscribe like any viewer with a grant carrying the
//! `record` right (without one, wait for the trust store to change: a grant installed
//! while the NVR runs starts the recording at once), or read this node's own camera hub
//! when the node serves the camera itself ([`super::feed`]); store every frame as it
//! arrives (sealed), wrap each media key for storage, and when the camera drops, record
//! the gap and subscribe again with backoff.
//!
//! A new subscription starts with the camera's cached GOP (instant start): frames the
//! camera sent before (by its sequence within one camera process; by capture time only
//! when the last frame's process is unknown) are dropped, so nothing is stored twice and
//! the rest of that GOP continues the recording without a hole. A camera clock that
//! steps back does not stop the recording: its sequence says what is new. Frames from
//! the mesh are checked (AEAD-opened) before they are stored: a forwarder or relay that
//! alters a frame breaks the stream rather than planting video in the recording. The
//! plaintext is dropped at once; the stored payload is the ciphertext as received.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use camesh_proto::pb;
use libp2p::identity::Keypair;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::feed::{Feed, Item, LocalFeed};
use super::keystore::KeyStore;
use crate::auth::{signed, Rights};
use crate::backoff::next_backoff;
use crate::media::is_audio;
use crate::reach::Reach;
use crate::record::playback::DEFAULT_JOIN_US;
use crate::record::Recorder;
use crate::stream::codecs::audio_params;
use crate::stream::fanout::QueueLimits;
use crate::stream::hub::Hub;
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
    /// Times the camera's clock stepped back (recorded on, in sequence order).
    pub clock_steps: AtomicU64,
}

/// The last frame recorded of a camera: its key epoch (unknown when read back after the
/// NVR restarted and the file could not say), stream sequence and capture time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Last {
    epoch: Option<u64>,
    seq: u64,
    capture_us: i64,
}

/// Whether two key epochs belong to one camera process: a process draws its first epoch
/// at random below 2^62 and adds one per rotation (stream::hub), so another process's
/// epochs are nowhere near.
fn same_process(a: u64, b: u64) -> bool {
    a.abs_diff(b) <= 2
}

/// What to do with an arriving frame (pure).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Arrival {
    /// Recorded already (a new subscription starts with the camera's cached GOP).
    Repeat,
    /// New footage; `clock_back_us`: the camera's clock stepped back this far since the
    /// last frame (the frame is kept: the camera's sequence, not its clock, says what
    /// is new).
    Record { clock_back_us: Option<i64> },
}

/// Decides by the camera's sequence within one camera process, and by capture time only
/// when the last frame's process is unknown. A camera whose clock steps back (NTP after
/// days offline, a drifting RTC corrected) keeps being recorded; comparing capture times
/// alone dropped everything until its clock passed the old time again.
fn arrival(last: Option<Last>, epoch: u64, seq: u64, capture_us: i64) -> Arrival {
    let Some(l) = last else {
        return Arrival::Record { clock_back_us: None };
    };
    let back = (capture_us < l.capture_us).then(|| l.capture_us - capture_us);
    match l.epoch {
        Some(e) if same_process(e, epoch) && seq <= l.seq => Arrival::Repeat,
        // The same process going on, or another one (the camera restarted): new footage
        // whatever the clocks say.
        Some(_) => Arrival::Record { clock_back_us: back },
        None if back.is_some() || capture_us == l.capture_us => Arrival::Repeat,
        None => Arrival::Record { clock_back_us: None },
    }
}

/// The last video frame and the last audio frame on disk of `camera` (blocking: reads
/// the newest segment's last GOP).
fn last_on_disk(rec: &Recorder, camera: &str) -> (Option<Last>, Option<Last>) {
    let mut audio = None;
    let video = last_video_on_disk(rec, camera, &mut audio);
    (video, audio)
}

fn last_video_on_disk(rec: &Recorder, camera: &str, audio: &mut Option<Last>) -> Option<Last> {
    // Segment keys follow the recording order (the recorder keeps them increasing), so
    // the newest key holds the last frame recorded, whatever the capture times say.
    let segs = rec.index().camera_segments(camera).ok()?;
    let newest = segs.iter().max_by_key(|s| s.start_us)?;
    let t = newest.last_us?;
    let mut last = Last {
        epoch: None,
        seq: 0,
        capture_us: t,
    };
    if let Ok(frames) = crate::record::frames(rec.index(), camera, t, t) {
        for f in frames.flatten() {
            match f {
                crate::record::PlaybackItem::Frame(f) if is_audio(f.sequence) => {
                    *audio = Some(Last {
                        epoch: Some(f.key_epoch),
                        seq: f.sequence,
                        capture_us: f.capture_unix_us,
                    });
                }
                crate::record::PlaybackItem::Frame(f) => {
                    last.epoch = Some(f.key_epoch);
                    last.seq = f.sequence;
                }
                _ => {}
            }
        }
    }
    Some(last)
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

/// A camera this node serves itself: recorded straight from its hub (no grant, no
/// network), its GOP digests signed with this node's key.
#[derive(Clone, Debug)]
pub(crate) struct Own {
    pub hub: Arc<Hub>,
    pub key: Keypair,
    pub queue: QueueLimits,
}

/// Records `camera` until `cancel`: from `own`'s hub when this node serves it, else by
/// subscribing over the mesh.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn run(
    node: Reach,
    rec: Arc<Recorder>,
    keys: KeyStore,
    camera: String,
    counters: Arc<CameraCounters>,
    folder: std::path::PathBuf,
    own: Option<Own>,
    cancel: CancellationToken,
) {
    // The end of what is on disk already: a restart is a gap too.
    // Audio frames are numbered apart (AUDIO_SEQUENCE_BIT) and followed apart.
    let (mut last, mut last_audio) = {
        let (rec, camera) = (rec.clone(), camera.clone());
        tokio::task::spawn_blocking(move || last_on_disk(&rec, &camera))
            .await
            .unwrap_or((None, None))
    };
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
        // Stops the attestation task of this feed when the feed ends.
        let attest = cancel.child_token();
        let _stop_attest = attest.clone().drop_guard();
        let opened = match &own {
            // This node's own camera: straight from its hub, no grant to show.
            Some(o) => LocalFeed::open(o.hub.clone(), node.peer_id(), o.queue).map(|(params, audio, feed)| {
                tokio::spawn(super::feed::attest_locally(
                    o.hub.clone(),
                    o.key.clone(),
                    node.trust().own_cert(),
                    folder.clone(),
                    o.queue,
                    attest.clone(),
                ));
                (Feed::Local(Box::new(feed)), Some(params), audio)
            }),
            None => {
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
                    audio: true,
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
                sub.map_err(|e| e.to_string()).map(|sub| {
                    tokio::spawn(super::attestations::fetch(
                        node.clone(),
                        sub.peer,
                        camera.clone(),
                        signed::encode(&grant),
                        folder.clone(),
                        attest.clone(),
                    ));
                    let codec = sub.accept.codec.as_ref().map(codec_params);
                    let audio = sub.accept.audio.as_ref().and_then(audio_params);
                    (Feed::Remote(Box::new(sub)), codec, audio)
                })
            }
        };
        match opened {
            Ok((mut feed, codec, audio)) => {
                failures = 0;
                backoff = Duration::ZERO;
                counters.subscriptions.fetch_add(1, Ordering::Relaxed);
                let peer = feed.peer(node.peer_id());
                info!(%camera, %peer, local = own.is_some(), "recording");
                if let Some(c) = &codec {
                    if let Err(e) = rec.set_codec(&camera, c) {
                        warn!(%camera, error = %e, "codec configuration not recorded");
                    }
                }
                if let Err(e) = rec.set_audio(&camera, audio.as_ref()) {
                    warn!(%camera, error = %e, "audio configuration not recorded");
                }
                let mut first = true;
                why = loop {
                    let next = tokio::select! {
                        r = feed.next() => r,
                        _ = cancel.cancelled() => return,
                    };
                    let frame = match next {
                        Ok(Some(Item::Frame(f))) => f,
                        Ok(Some(Item::Key { epoch, key })) => {
                            let wrapped = keys.wrap(&camera, epoch, &key);
                            if let Err(e) = rec.write_key(&camera, epoch, wrapped) {
                                warn!(%camera, epoch, error = %e, "media key not recorded: frames of this epoch cannot be played");
                            }
                            continue;
                        }
                        Ok(None) => break format!("{peer} ended the stream"),
                        Err(e) => break e,
                    };
                    let (capture, seq) = (frame.header.capture_unix_us, frame.header.sequence);
                    if is_audio(seq) {
                        // The cached GOP's audio after a new subscription: not twice either.
                        if arrival(last_audio, frame.header.key_epoch, seq, capture) == Arrival::Repeat {
                            counters.duplicates.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                        if let Err(e) = rec.write(&camera, &frame) {
                            debug!(%camera, error = %e, "audio frame not recorded");
                        }
                        last_audio = Some(Last {
                            epoch: Some(frame.header.key_epoch),
                            seq,
                            capture_us: capture,
                        });
                        continue;
                    }
                    // A new subscription starts with the camera's cached GOP: frames
                    // recorded before (the NVR restarted, the stream broke) are not
                    // recorded twice; the rest of the GOP continues the recording.
                    match arrival(last, frame.header.key_epoch, seq, capture) {
                        Arrival::Repeat => {
                            counters.duplicates.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                        Arrival::Record {
                            clock_back_us: Some(back),
                        } => {
                            counters.clock_steps.fetch_add(1, Ordering::Relaxed);
                            warn!(%camera, sequence = seq, stepped_back_s = back as f64 / 1e6, "the camera's clock stepped back: recording goes on in a new segment, in the camera's sequence order");
                        }
                        Arrival::Record { clock_back_us: None } => {}
                    }
                    let last_us = last.map(|l| l.capture_us);
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
                    last = Some(Last {
                        epoch: Some(frame.header.key_epoch),
                        seq,
                        capture_us: capture,
                    });
                    last_seq = Some(seq);
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
    fn the_cameras_sequence_decides_what_is_new() {
        let e = 1u64 << 40;
        let last = Some(Last {
            epoch: Some(e),
            seq: 100,
            capture_us: 50_000_000,
        });
        let rec = |back| Arrival::Record { clock_back_us: back };
        // The cached GOP of a new subscription repeats what was recorded.
        assert_eq!(arrival(last, e, 90, 49_000_000), Arrival::Repeat);
        assert_eq!(arrival(last, e, 100, 50_000_000), Arrival::Repeat);
        assert_eq!(arrival(last, e, 101, 50_040_000), rec(None));
        // After a key rotation, still the same process.
        assert_eq!(arrival(last, e + 1, 95, 49_500_000), Arrival::Repeat);
        // The clock stepped back 30 s: the next frames are new all the same.
        assert_eq!(arrival(last, e, 101, 20_040_000), rec(Some(29_960_000)));
        // A restarted camera (new epochs, sequence from 0), clock behind: new footage.
        assert_eq!(arrival(last, 7, 0, 10_000_000), rec(Some(40_000_000)));
        // After an NVR restart with no epoch on hand: capture time decides.
        let t = Some(Last {
            epoch: None,
            seq: 0,
            capture_us: 50_000_000,
        });
        assert_eq!(arrival(t, e, 5, 50_000_000), Arrival::Repeat);
        assert_eq!(arrival(t, e, 5, 49_000_000), Arrival::Repeat);
        assert_eq!(arrival(t, e, 5, 50_040_000), rec(None));
        assert_eq!(arrival(None, e, 5, 1), rec(None));
        assert!(same_process(u64::MAX, u64::MAX - 1) && !same_process(0, 3));
    }

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
