//! Serving `/camesh/nvr/1` (IO): one request per stream, checked like live video: the
//! peer must be a verified fleet member and present a grant, bound to its peer id, with
//! the right the request needs (`playback` to play or list, `export` to export or lock).
//!
//! - play: `StreamAccept` (codec), then the recorded frames from the keyframe at or
//!   before `from`, sealed as recorded; each epoch's media key goes in-band (a key-update
//!   frame) right before its first frame, unwrapped from storage only for this peer.
//! - recordings: coverage (recorded spans and gaps), segment count and bytes, locks.
//! - export: see [`super::export`].
//! - lock: an evidence lock on the range (retention never deletes it).
//!
//! A range with no footage is refused with `REJECT_UNAVAILABLE` and a reason that says
//! what is recorded. Every read of the request is bounded in size and time.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use camesh_proto::{framing::decode_message, pb, LengthCodec, MediaFrame};
use futures::AsyncWriteExt;
use libp2p::{PeerId, Stream};
use libp2p_stream::IncomingStreams;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::NvrState;
use crate::auth::{self, Rights};
use crate::clock::now_unix_us;
use crate::media::CodecParams;
use crate::reach::Reach;
use crate::record::segment::valid_camera_id;
use crate::record::{coverage, frames, Coverage, PlaybackItem};
use crate::stream::accept;
use crate::stream::io::{read_request, write_frame, write_message, IoError};

/// Playback items read ahead of the stream.
const READ_AHEAD: usize = 64;
/// Spans in a coverage answer (more are merged into the last).
const MAX_SPANS: usize = 1024;

fn reject_msg(code: pb::RejectCode, reason: &str) -> pb::NvrResponse {
    pb::NvrResponse {
        result: Some(pb::nvr_response::Result::Reject(pb::StreamReject {
            code: code as i32,
            reason: reason.to_owned(),
        })),
    }
}

fn fmt_us(us: i64) -> String {
    crate::clock::rfc3339_ms(us)
}

/// Serves `/camesh/nvr/1` on the node's bounded accept loop.
pub(crate) fn run(node: Reach, state: Arc<NvrState>, incoming: IncomingStreams, cancel: CancellationToken) {
    let bounds = accept::Bounds::streams(node.limits());
    accept::serve(super::NVR_PROTOCOL, incoming, bounds, cancel, move |peer, stream, _| {
        let (node, state) = (node.clone(), state.clone());
        async move { session(&node, &state, peer, stream).await }
    });
}

async fn session(node: &Reach, state: &NvrState, peer: PeerId, mut stream: Stream) -> Result<(), IoError> {
    let limits = &node.limits();
    let control = LengthCodec::new(limits.max_control_bytes);
    let trust = node.trust();
    if trust.wait_member(&peer, trust.grace()).await.is_none() {
        trust
            .audit
            .record("refused-nvr", &peer.to_string(), "", "not a fleet member");
        let msg = reject_msg(pb::RejectCode::RejectNotAuthorized, "not a member of this fleet");
        return finish(&mut stream, &control, &msg).await;
    }
    let timeout = Duration::from_secs(limits.request_timeout_s);
    let Some(body) = read_request(&mut stream, control, timeout).await? else {
        return Ok(());
    };
    let req: pb::NvrRequest = match decode_message("nvr request", body) {
        Ok(r) => r,
        Err(e) => {
            let msg = reject_msg(pb::RejectCode::RejectBadRequest, &e.to_string());
            return finish(&mut stream, &control, &msg).await;
        }
    };
    let camera = req.camera_id.clone();
    let bad = |reason: String| reject_msg(pb::RejectCode::RejectBadRequest, &reason);
    if !valid_camera_id(&camera) {
        let shown: String = camera.chars().take(64).collect();
        return finish(&mut stream, &control, &bad(format!("invalid camera id {shown:?}"))).await;
    }
    let (right, what) = match &req.request {
        Some(pb::nvr_request::Request::Play(_)) => (Rights::PLAYBACK, "play"),
        Some(pb::nvr_request::Request::Recordings(_)) => (Rights::PLAYBACK, "recordings"),
        Some(pb::nvr_request::Request::Export(_)) => (Rights::EXPORT, "export"),
        Some(pb::nvr_request::Request::Lock(_)) => (Rights::LOCK, "lock"),
        Some(pb::nvr_request::Request::Unlock(_)) => (Rights::LOCK, "unlock"),
        None => return finish(&mut stream, &control, &bad("empty request".into())).await,
    };
    let tags = node
        .directory()
        .lookup(&camera)
        .first()
        .map(|e| e.announcement.tags.clone())
        .unwrap_or_default();
    let grant = if req.grant.is_empty() {
        Err(auth::AuthError::Refused(format!(
            "no grant presented: {what} needs the {right} right on camera {camera}"
        )))
    } else {
        auth::signed::decode("grant", &req.grant).and_then(|g| trust.check_grant(&peer, &g, &camera, &tags, right))
    };
    let grant = match grant {
        Ok(g) => g,
        Err(e) => {
            trust
                .audit
                .record("refused-nvr", &peer.to_string(), &camera, &format!("{what}: {e}"));
            info!(%peer, %camera, what, error = %e, "nvr request refused");
            let msg = reject_msg(pb::RejectCode::RejectNotAuthorized, &e.to_string());
            return finish(&mut stream, &control, &msg).await;
        }
    };
    let from = req.from_unix_us;
    let to = if req.to_unix_us == 0 {
        now_unix_us()
    } else {
        req.to_unix_us
    };
    if from > to {
        return finish(
            &mut stream,
            &control,
            &bad(format!("--from {} is after --to {}", fmt_us(from), fmt_us(to))),
        )
        .await;
    }
    // Exports are bounded before any work: range, and how many run (here and for this peer).
    let _slot = match &req.request {
        Some(pb::nvr_request::Request::Export(_)) => {
            let limits = super::export::ExportLimits::of(&state.section);
            match state.exports.try_start(peer, from, to, &limits) {
                Ok(slot) => Some(slot),
                Err((code, reason)) => {
                    trust
                        .audit
                        .record("refused-nvr", &peer.to_string(), &camera, &format!("export: {reason}"));
                    info!(%peer, %camera, %reason, "export refused");
                    return finish(&mut stream, &control, &reject_msg(code, &reason)).await;
                }
            }
        }
        _ => None,
    };
    trust.audit.record(
        &format!("nvr-{what}"),
        &peer.to_string(),
        &camera,
        &format!("{} .. {}", fmt_us(from), fmt_us(to)),
    );
    let index = state.recorder.index().clone();
    let cam = camera.clone();
    let cov = tokio::task::spawn_blocking(move || coverage(&index, &cam, from, to)).await;
    let cov = match cov {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            return finish(
                &mut stream,
                &control,
                &reject_msg(pb::RejectCode::RejectUnavailable, &e.to_string()),
            )
            .await
        }
        Err(e) => {
            return finish(
                &mut stream,
                &control,
                &reject_msg(pb::RejectCode::RejectUnavailable, &e.to_string()),
            )
            .await
        }
    };
    let recorded = cov.iter().any(|c| matches!(c, Coverage::Recorded { .. }));
    match req.request {
        Some(pb::nvr_request::Request::Recordings(_)) => {
            let msg = recordings(state, &camera, from, to, &cov).await;
            finish(&mut stream, &control, &msg).await
        }
        Some(pb::nvr_request::Request::Lock(l)) => {
            let rec = state.recorder.clone();
            let cam = camera.clone();
            let reason: String = l.reason.chars().take(512).collect();
            let r = tokio::task::spawn_blocking(move || {
                let held = rec.locks().map_err(|e| e.to_string())?.len();
                lock_allowed(held, from, to)?;
                rec.lock_range(&cam, from, to, &reason).map_err(|e| e.to_string())
            })
            .await;
            let msg = match r {
                Ok(Ok(lock)) => {
                    info!(%peer, %camera, id = lock.id, "evidence lock added");
                    trust.audit.record(
                        "locked",
                        &peer.to_string(),
                        &camera,
                        &format!(
                            "lock {} {}..{}: {}",
                            lock.id,
                            fmt_us(lock.from_us),
                            fmt_us(lock.to_us),
                            lock.reason
                        ),
                    );
                    pb::NvrResponse {
                        result: Some(pb::nvr_response::Result::Lock(locked(&lock))),
                    }
                }
                Ok(Err(e)) => reject_msg(pb::RejectCode::RejectBadRequest, &e),
                Err(e) => reject_msg(pb::RejectCode::RejectUnavailable, &e.to_string()),
            };
            finish(&mut stream, &control, &msg).await
        }
        Some(pb::nvr_request::Request::Unlock(u)) => {
            let rec = state.recorder.clone();
            let cam = camera.clone();
            let r = tokio::task::spawn_blocking(move || {
                let lock = rec
                    .locks()
                    .map_err(|e| e.to_string())?
                    .into_iter()
                    .find(|l| l.id == u.id && l.camera == cam)
                    .ok_or_else(|| format!("no evidence lock {} on camera {cam}", u.id))?;
                rec.unlock(lock.id).map_err(|e| e.to_string())?;
                Ok::<_, String>((lock, u.reason.chars().take(512).collect::<String>()))
            })
            .await;
            let msg = match r {
                Ok(Ok((lock, reason))) => {
                    info!(%peer, %camera, id = lock.id, "evidence lock removed");
                    trust.audit.record(
                        "unlocked",
                        &peer.to_string(),
                        &camera,
                        &format!("lock {} ({}) removed: {reason}", lock.id, lock.reason),
                    );
                    pb::NvrResponse {
                        result: Some(pb::nvr_response::Result::Lock(locked(&lock))),
                    }
                }
                Ok(Err(e)) => reject_msg(pb::RejectCode::RejectBadRequest, &e),
                Err(e) => reject_msg(pb::RejectCode::RejectUnavailable, &e.to_string()),
            };
            finish(&mut stream, &control, &msg).await
        }
        _ if !recorded => {
            let reason = no_footage(state, &camera, from, to).await;
            finish(
                &mut stream,
                &control,
                &reject_msg(pb::RejectCode::RejectUnavailable, &reason),
            )
            .await
        }
        Some(pb::nvr_request::Request::Play(p)) => {
            let max = match p.max_frame_bytes as usize {
                0 => limits.max_frame_bytes,
                n => n.min(limits.max_frame_bytes),
            };
            let session = play(state, &camera, from, to, &mut stream, &control, max);
            cut_when_unauthorized(trust, &peer, &grant, &camera, what, session).await
        }
        Some(pb::nvr_request::Request::Export(x)) => {
            let session = super::export::export(state, &camera, from, to, &x.file_name, &mut stream, &control);
            cut_when_unauthorized(trust, &peer, &grant, &camera, what, session).await
        }
        None => Ok(()),
    }
}

/// Runs a playback or export session until it ends or the viewer's authorization does
/// (a revocation learned from any member, or the grant's expiry): then the stream is
/// dropped, which resets it, and the cut is audited.
async fn cut_when_unauthorized(
    trust: &auth::Trust,
    peer: &PeerId,
    grant: &auth::grant::GrantInfo,
    camera: &str,
    what: &str,
    session: impl std::future::Future<Output = Result<(), IoError>>,
) -> Result<(), IoError> {
    tokio::select! {
        r = session => r,
        e = trust.until_unauthorized(peer, grant) => {
            trust.audit.record("cut-nvr", &peer.to_string(), camera, &format!("{what}: {e}"));
            info!(%peer, %camera, what, reason = %e, "nvr session cut: authorization ended");
            Ok(())
        }
    }
}

async fn finish(stream: &mut Stream, codec: &LengthCodec, msg: &pb::NvrResponse) -> Result<(), IoError> {
    write_message(stream, codec, msg).await?;
    let _ = stream.close().await;
    Ok(())
}

/// Most evidence locks an NVR holds (each by a member with the `lock` right).
pub const MAX_LOCKS: usize = 256;
/// Longest range one lock covers: a day. Longer evidence takes several locks, each with
/// its reason, so locking everything is neither one request nor unbounded.
pub const MAX_LOCK_SPAN_US: i64 = 24 * 3600 * 1_000_000;

/// Whether one more lock of `[from, to]` may be added to the `held` ones (pure).
pub fn lock_allowed(held: usize, from_us: i64, to_us: i64) -> Result<(), String> {
    if held >= MAX_LOCKS {
        return Err(format!(
            "this NVR holds {held} evidence locks, the most it keeps: unlock one first (mesh unlock)"
        ));
    }
    let span = to_us.saturating_sub(from_us);
    if span > MAX_LOCK_SPAN_US {
        return Err(format!(
            "a lock covers at most 24 h (asked {:.1} h): lock the range in parts, each with its reason",
            span as f64 / 3.6e9
        ));
    }
    Ok(())
}

fn locked(l: &crate::record::EvidenceLock) -> pb::NvrLocked {
    pb::NvrLocked {
        id: l.id,
        from_unix_us: l.from_us,
        to_unix_us: l.to_us,
        reason: l.reason.clone(),
    }
}

/// "No footage" with what is recorded, so the person can pick a better range.
async fn no_footage(state: &NvrState, camera: &str, from: i64, to: i64) -> String {
    let index = state.recorder.index().clone();
    let cam = camera.to_owned();
    let span = tokio::task::spawn_blocking(move || {
        let segs = index.camera_segments(&cam).ok()?;
        let first = segs.iter().filter_map(|s| s.first_us).min()?;
        let last = segs.iter().filter_map(|s| s.last_us).max()?;
        Some((first, last))
    })
    .await
    .ok()
    .flatten();
    let recorded = match span {
        Some((a, b)) => format!("recordings of {camera} span {} .. {}", fmt_us(a), fmt_us(b)),
        None => format!("nothing of {camera} is recorded on this NVR"),
    };
    format!(
        "no footage of camera {camera} between {} and {}: {recorded}",
        fmt_us(from),
        fmt_us(to)
    )
}

async fn recordings(state: &NvrState, camera: &str, from: i64, to: i64, cov: &[Coverage]) -> pb::NvrResponse {
    let index = state.recorder.index().clone();
    let cam = camera.to_owned();
    let info = tokio::task::spawn_blocking(move || {
        let segs = index.segments_between(&cam, from, to).unwrap_or_default();
        let locks: Vec<_> = index
            .locks()
            .unwrap_or_default()
            .into_iter()
            .filter(|l| l.camera == cam && l.from_us <= to && from <= l.to_us)
            .collect();
        let held = super::replicate::held(&index, &cam);
        (
            segs.len() as u64,
            segs.iter().map(|s| s.bytes).sum::<u64>(),
            locks,
            held,
        )
    })
    .await;
    let (segments, bytes, locks, held) = info.unwrap_or_default();
    let sources = super::replicate::sources_of(&state.replicas.of(camera), &held, from, to);
    let mut spans: Vec<pb::NvrSpan> = cov
        .iter()
        .map(|c| match c {
            Coverage::Recorded { from_us, to_us } => pb::NvrSpan {
                from_unix_us: *from_us,
                to_unix_us: *to_us,
                recorded: true,
                reason: String::new(),
            },
            Coverage::Gap { from_us, to_us, reason } => pb::NvrSpan {
                from_unix_us: *from_us,
                to_unix_us: *to_us,
                recorded: false,
                reason: reason.clone().unwrap_or_default().chars().take(200).collect(),
            },
        })
        .collect();
    if spans.len() > MAX_SPANS {
        let end = spans.last().map(|s| s.to_unix_us).unwrap_or(to);
        spans.truncate(MAX_SPANS);
        if let Some(last) = spans.last_mut() {
            last.to_unix_us = end;
            last.reason = "(more spans: ask for a shorter range)".into();
        }
    }
    pb::NvrResponse {
        result: Some(pb::nvr_response::Result::Recordings(pb::NvrCoverage {
            spans,
            segments,
            bytes,
            locks: locks.iter().map(locked).collect(),
            sources,
        })),
    }
}

pub(crate) fn codec_config(c: &CodecParams) -> pb::CodecConfig {
    pb::CodecConfig {
        codec: "h264".into(),
        sps: c.sps.clone(),
        pps: c.pps.clone(),
        width: c.width,
        height: c.height,
        profile_idc: u32::from(c.profile_idc),
        level_idc: u32::from(c.level_idc),
        fps_num: c.fps_num,
        fps_den: c.fps_den,
    }
}

async fn play(
    state: &NvrState,
    camera: &str,
    from: i64,
    to: i64,
    stream: &mut Stream,
    control: &LengthCodec,
    max_frame: usize,
) -> Result<(), IoError> {
    let (tx, mut rx) = mpsc::channel::<Result<PlaybackItem, String>>(READ_AHEAD);
    let index = state.recorder.index().clone();
    let cam = camera.to_owned();
    let reader = tokio::task::spawn_blocking(move || match frames(&index, &cam, from, to) {
        Ok(items) => {
            for item in items {
                if tx.blocking_send(item.map_err(|e| e.to_string())).is_err() {
                    return;
                }
            }
        }
        Err(e) => {
            let _ = tx.blocking_send(Err(e.to_string()));
        }
    });
    // The codec configuration comes first; hold what precedes the first frame.
    let mut pending = VecDeque::new();
    let mut codec = None;
    while let Some(item) = rx.recv().await {
        match item {
            Ok(PlaybackItem::Codec(c)) => {
                codec = Some(c);
                break;
            }
            Ok(PlaybackItem::Frame(f)) => {
                pending.push_back(Ok(PlaybackItem::Frame(f)));
                break;
            }
            other => pending.push_back(other),
        }
    }
    let accept = pb::NvrResponse {
        result: Some(pb::nvr_response::Result::Play(pb::StreamAccept {
            codec: codec.as_ref().map(codec_config),
            camera_name: camera.to_owned(),
            ..Default::default()
        })),
    };
    write_message(stream, control, &accept).await?;
    let codec = LengthCodec::new(max_frame);
    let mut scratch = BytesMut::with_capacity(64);
    let (mut frames_sent, mut keys_sent) = (0u64, 0u64);
    loop {
        let item = match pending.pop_front() {
            Some(i) => i,
            None => match rx.recv().await {
                Some(i) => i,
                None => break,
            },
        };
        match item {
            Ok(PlaybackItem::Key { epoch, key }) => match state.keys.unwrap(camera, epoch, &key) {
                Ok(k) => {
                    let update = MediaFrame {
                        header: pb::FrameHeader {
                            key_epoch: epoch,
                            new_key: Bytes::copy_from_slice(k.bytes()),
                            ..Default::default()
                        },
                        payload: Bytes::new(),
                        wire: None,
                    };
                    write_frame(stream, &codec, &update, &mut scratch).await?;
                    keys_sent += 1;
                }
                Err(e) => warn!(%camera, epoch, error = %e, "stored media key does not open; its frames will not play"),
            },
            Ok(PlaybackItem::Frame(f)) => {
                // Playback to a viewer is video only; exports carry the audio.
                if crate::media::is_audio(f.sequence) {
                    continue;
                }
                if f.payload.len() > max_frame {
                    warn!(%camera, size = f.payload.len(), "recorded frame larger than the viewer's maximum; skipped");
                    continue;
                }
                let frame = MediaFrame::new(f.header(), f.payload);
                write_frame(stream, &codec, &frame, &mut scratch).await?;
                frames_sent += 1;
                if rx.is_empty() {
                    stream.flush().await?;
                }
            }
            Ok(PlaybackItem::Codec(_)) => {
                info!(%camera, "codec changes inside the played range; playback ends there");
                break;
            }
            Ok(PlaybackItem::Gap { .. } | PlaybackItem::Audio(_)) => {}
            Err(e) => warn!(%camera, error = %e, "damaged recording skipped during playback"),
        }
    }
    drop(rx);
    let _ = reader.await;
    info!(%camera, frames = frames_sent, keys = keys_sent, "playback finished");
    stream.flush().await?;
    let _ = stream.close().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_are_bounded_in_number_and_span() {
        assert!(lock_allowed(0, 0, MAX_LOCK_SPAN_US).is_ok());
        let e = lock_allowed(0, 0, MAX_LOCK_SPAN_US + 1).unwrap_err();
        assert!(e.contains("at most 24 h"), "{e}");
        let e = lock_allowed(0, i64::MIN, i64::MAX).unwrap_err();
        assert!(e.contains("at most 24 h"), "{e}");
        let e = lock_allowed(MAX_LOCKS, 0, 1).unwrap_err();
        assert!(e.contains("unlock one first"), "{e}");
        assert!(lock_allowed(MAX_LOCKS - 1, 0, 1).is_ok());
    }
}
