//! Serving `/camesh/nvr/1` (IO): one request per stream, checked like live video: the
//! peer must be a verified fleet member and present a grant, bound to its peer id, with
//! the right the request needs (`playback` to play or list, `export` to export or lock).
//!
//! - play: `StreamAccept` (codec), then the recorded frames from the keyframe at or
//!   before `from`, sealed as recorded; each epoch's media key goes in-band (a key-update
//!   frame) right before its first frame, unwrapped from storage only for this peer.
//! - recordings: coverage (recorded spans and gaps), segment count and bytes, locks.
//! - export: the MP4 is written here (decrypting with the stored keys), a manifest of the
//!   source segments' SHA-256 hashes and the MP4's is signed with this node's key and
//!   carries its membership certificate; progress, then the MP4, the manifest and the
//!   segment files (the hashed prefix of each) go back in chunks.
//! - lock: an evidence lock on the range (retention never deletes it).
//!
//! A range with no footage is refused with `REJECT_UNAVAILABLE` and a reason that says
//! what is recorded. Every read of the request is bounded in size and time.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use camesh_proto::{framing::decode_message, pb, LengthCodec, MediaFrame};
use futures::{AsyncWriteExt, StreamExt};
use libp2p::{PeerId, Stream};
use libp2p_stream::IncomingStreams;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::NvrState;
use crate::auth::{self, Rights};
use crate::media::CodecParams;
use crate::node::NodeHandle;
use crate::record::export::{export_mp4, ExportProgress};
use crate::record::manifest::Manifest;
use crate::record::segment::valid_camera_id;
use crate::record::{coverage, frames, now_unix_us, Coverage, FrameRecord, PlaybackItem};
use crate::stream::io::{write_frame, write_message, FramedRead, IoError};

/// Largest message after the request on an export stream.
pub const EXPORT_MESSAGE_MAX: usize = 256 << 10;
/// File bytes per chunk message.
const CHUNK: usize = 128 << 10;
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
    let t = std::time::UNIX_EPOCH + Duration::from_micros(u64::try_from(us).unwrap_or(0));
    humantime::format_rfc3339_millis(t).to_string()
}

/// The frame header a recorded frame was sealed with (the AEAD's associated data).
pub(crate) fn header_of(f: &FrameRecord) -> pb::FrameHeader {
    pb::FrameHeader {
        sequence: f.sequence,
        pts_90k: f.pts_90k,
        dts_90k: f.dts_90k,
        capture_unix_us: f.capture_unix_us,
        keyframe: f.keyframe,
        key_epoch: f.key_epoch,
        skipped_before: f.skipped_before,
        new_key: Bytes::new(),
    }
}

pub(crate) async fn run(
    node: NodeHandle,
    state: Arc<NvrState>,
    mut incoming: IncomingStreams,
    cancel: CancellationToken,
) {
    loop {
        let (peer, stream) = tokio::select! {
            next = incoming.next() => match next { Some(s) => s, None => return },
            _ = cancel.cancelled() => return,
        };
        let (node, state, token) = (node.clone(), state.clone(), cancel.child_token());
        tokio::spawn(async move {
            tokio::select! {
                r = session(&node, &state, peer, stream) => if let Err(e) = r {
                    debug!(%peer, error = %e, "nvr session ended with an error");
                },
                _ = token.cancelled() => {}
            }
        });
    }
}

async fn session(node: &NodeHandle, state: &NvrState, peer: PeerId, mut stream: Stream) -> Result<(), IoError> {
    let limits = &node.config().limits;
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
    let mut reader = FramedRead::new(&mut stream, control);
    let body = match tokio::time::timeout(timeout, reader.next()).await {
        Ok(Ok(Some(b))) => b,
        Ok(Ok(None)) | Err(_) => return Ok(()),
        Ok(Err(e)) => return Err(e),
    };
    drop(reader);
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
        Some(pb::nvr_request::Request::Lock(_)) => (Rights::EXPORT, "lock"),
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
    if let Err(e) = grant {
        trust
            .audit
            .record("refused-nvr", &peer.to_string(), &camera, &format!("{what}: {e}"));
        info!(%peer, %camera, what, error = %e, "nvr request refused");
        let msg = reject_msg(pb::RejectCode::RejectNotAuthorized, &e.to_string());
        return finish(&mut stream, &control, &msg).await;
    }
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
            let r = tokio::task::spawn_blocking(move || rec.lock_range(&cam, from, to, &reason)).await;
            let msg = match r {
                Ok(Ok(lock)) => {
                    info!(%peer, %camera, id = lock.id, "evidence lock added");
                    pb::NvrResponse {
                        result: Some(pb::nvr_response::Result::Lock(locked(&lock))),
                    }
                }
                Ok(Err(e)) => reject_msg(pb::RejectCode::RejectUnavailable, &e.to_string()),
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
            play(state, &camera, from, to, &mut stream, &control, max).await
        }
        Some(pb::nvr_request::Request::Export(x)) => {
            export(state, &camera, from, to, &x.file_name, &mut stream, &control).await
        }
        None => Ok(()),
    }
}

async fn finish(stream: &mut Stream, codec: &LengthCodec, msg: &pb::NvrResponse) -> Result<(), IoError> {
    write_message(stream, codec, msg).await?;
    let _ = stream.close().await;
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
        (segs.len() as u64, segs.iter().map(|s| s.bytes).sum::<u64>(), locks)
    })
    .await;
    let (segments, bytes, locks) = info.unwrap_or_default();
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
        })),
    }
}

fn codec_config(c: &CodecParams) -> pb::CodecConfig {
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
                    };
                    write_frame(stream, &codec, &update, &mut scratch).await?;
                    keys_sent += 1;
                }
                Err(e) => warn!(%camera, epoch, error = %e, "stored media key does not open; its frames will not play"),
            },
            Ok(PlaybackItem::Frame(f)) => {
                if f.payload.len() > max_frame {
                    warn!(%camera, size = f.payload.len(), "recorded frame larger than the viewer's maximum; skipped");
                    continue;
                }
                let frame = MediaFrame {
                    header: header_of(&f),
                    payload: f.payload,
                };
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
            Ok(PlaybackItem::Gap { .. }) => {}
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

/// A safe file name for the export (no folders, bounded).
fn export_name(requested: &str) -> String {
    let name: String = requested
        .rsplit(['/', '\\'])
        .next()
        .unwrap_or_default()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        .take(100)
        .collect();
    if name.is_empty() || name.starts_with('.') {
        "export.mp4".into()
    } else {
        name
    }
}

fn item(i: pb::nvr_export_item::Item) -> pb::NvrExportItem {
    pb::NvrExportItem { item: Some(i) }
}

async fn export(
    state: &NvrState,
    camera: &str,
    from: i64,
    to: i64,
    requested: &str,
    stream: &mut Stream,
    control: &LengthCodec,
) -> Result<(), IoError> {
    let started = pb::NvrResponse {
        result: Some(pb::nvr_response::Result::Export(pb::NvrExportStarted {})),
    };
    write_message(stream, control, &started).await?;
    let codec = LengthCodec::new(EXPORT_MESSAGE_MAX);
    let work = state
        .folder
        .join("exports")
        .join(format!("{:016x}", rand::random::<u64>()));
    let out = work.join(export_name(requested));
    let result = export_and_send(state, camera, from, to, &out, stream, &codec).await;
    let _ = std::fs::remove_dir_all(&work);
    match result {
        Ok(()) => {}
        Err(ExportFailure::Io(e)) => return Err(e),
        Err(ExportFailure::Failed(reason)) => {
            warn!(%camera, %reason, "export failed");
            write_message(stream, &codec, &item(pb::nvr_export_item::Item::Error(reason))).await?;
        }
    }
    let _ = stream.close().await;
    Ok(())
}

enum ExportFailure {
    Io(IoError),
    Failed(String),
}

impl From<IoError> for ExportFailure {
    fn from(e: IoError) -> Self {
        ExportFailure::Io(e)
    }
}

async fn export_and_send(
    state: &NvrState,
    camera: &str,
    from: i64,
    to: i64,
    out: &Path,
    stream: &mut Stream,
    codec: &LengthCodec,
) -> Result<(), ExportFailure> {
    let failed = |e: &dyn std::fmt::Display| ExportFailure::Failed(e.to_string());
    std::fs::create_dir_all(out.parent().unwrap_or(Path::new("."))).map_err(|e| failed(&e))?;
    let (ptx, mut prx) = mpsc::channel::<ExportProgress>(8);
    let index = state.recorder.index().clone();
    let keys = state.keys.clone();
    let (cam, path) = (camera.to_owned(), out.to_owned());
    let mut job = tokio::task::spawn_blocking(move || {
        let mut cache: HashMap<u64, crate::auth::media_key::MediaKey> = HashMap::new();
        let decrypt = |f: &FrameRecord, stored: Option<&Bytes>| -> Result<Bytes, String> {
            if !cache.contains_key(&f.key_epoch) {
                let stored = stored.ok_or_else(|| "the recording holds no key for this epoch".to_owned())?;
                let k = keys.unwrap(&cam, f.key_epoch, stored).map_err(|e| e.to_string())?;
                if cache.len() > 64 {
                    cache.clear();
                }
                cache.insert(f.key_epoch, k);
            }
            let k = cache.get(&f.key_epoch).ok_or("key cache")?;
            k.open(&header_of(f), &f.payload).map_err(|e| e.to_string())
        };
        export_mp4(&index, &cam, from, to, &path, decrypt, |p| {
            let _ = ptx.try_send(*p);
        })
    });
    let summary = loop {
        tokio::select! {
            Some(p) = prx.recv() => {
                let msg = item(pb::nvr_export_item::Item::Progress(pb::NvrExportProgress {
                    frames: p.frames,
                    capture_unix_us: p.capture_us,
                    permille: (p.fraction() * 1000.0) as u32,
                }));
                write_message(stream, codec, &msg).await?;
            }
            r = &mut job => break r.map_err(|e| failed(&e))?.map_err(|e| failed(&e))?,
        }
    };
    let segments_dir = state.recorder.index().segments_dir().to_owned();
    let (segs, mp4, signer) = (summary.segments.clone(), out.to_owned(), state.signer.clone());
    let cam = camera.to_owned();
    let mut manifest =
        tokio::task::spawn_blocking(move || Manifest::build(&segments_dir, &cam, from, to, &segs, Some(&mp4), &signer))
            .await
            .map_err(|e| failed(&e))?
            .map_err(|e| failed(&e))?;
    // Outside the signed body: the certificate is itself signed by the fleet root.
    manifest.signer_cert = state.cert_hex.clone();
    send_file(stream, codec, pb::NvrFileKind::NvrFileMp4, "", out, summary.bytes).await?;
    let json = manifest.to_json().into_bytes();
    send_bytes(stream, codec, pb::NvrFileKind::NvrFileManifest, "", &json).await?;
    let segments_dir = state.recorder.index().segments_dir().to_owned();
    for s in &manifest.body.segments {
        send_file(
            stream,
            codec,
            pb::NvrFileKind::NvrFileSegment,
            &s.file,
            &segments_dir.join(&s.file),
            s.bytes,
        )
        .await?;
    }
    let done = pb::NvrExportDone {
        frames: summary.frames,
        keyframes: summary.keyframes,
        first_capture_unix_us: summary.first_capture_us,
        last_capture_unix_us: summary.last_capture_us,
        duration_90k: summary.duration_90k,
        mp4_bytes: summary.bytes,
        segments: u32::try_from(manifest.body.segments.len()).unwrap_or(u32::MAX),
        width: summary.width,
        height: summary.height,
    };
    info!(%camera, frames = summary.frames, bytes = summary.bytes, segments = done.segments, "export sent");
    write_message(stream, codec, &item(pb::nvr_export_item::Item::Done(done))).await?;
    Ok(())
}

async fn send_bytes(
    stream: &mut Stream,
    codec: &LengthCodec,
    kind: pb::NvrFileKind,
    name: &str,
    data: &[u8],
) -> Result<(), IoError> {
    let mut offset = 0usize;
    loop {
        let end = (offset + CHUNK).min(data.len());
        let msg = item(pb::nvr_export_item::Item::Chunk(pb::NvrFileChunk {
            kind: kind as i32,
            name: name.to_owned(),
            offset: offset as u64,
            data: Bytes::copy_from_slice(&data[offset..end]),
        }));
        write_message(stream, codec, &msg).await?;
        offset = end;
        if offset >= data.len() {
            return Ok(());
        }
    }
}

/// Sends the first `len` bytes of a file (segments may grow while this runs).
async fn send_file(
    stream: &mut Stream,
    codec: &LengthCodec,
    kind: pb::NvrFileKind,
    name: &str,
    path: &Path,
    len: u64,
) -> Result<(), ExportFailure> {
    use tokio::io::AsyncReadExt;
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|e| ExportFailure::Failed(format!("{}: {e}", path.display())))?;
    let mut file = file.take(len);
    let mut offset = 0u64;
    let mut buf = vec![0u8; CHUNK];
    loop {
        let mut filled = 0;
        while filled < CHUNK {
            let n = file
                .read(&mut buf[filled..])
                .await
                .map_err(|e| ExportFailure::Failed(format!("{}: {e}", path.display())))?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        if filled == 0 && offset > 0 {
            break;
        }
        let msg = item(pb::nvr_export_item::Item::Chunk(pb::NvrFileChunk {
            kind: kind as i32,
            name: name.to_owned(),
            offset,
            data: Bytes::copy_from_slice(&buf[..filled]),
        }));
        write_message(stream, codec, &msg).await?;
        offset += filled as u64;
        if filled < CHUNK {
            break;
        }
    }
    if offset < len {
        return Err(ExportFailure::Failed(format!(
            "{} is shorter than the {len} bytes indexed",
            path.display()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_names_cannot_escape() {
        assert_eq!(export_name("incident.mp4"), "incident.mp4");
        assert_eq!(export_name("../../etc/passwd"), "passwd");
        assert_eq!(export_name("/tmp/a b.mp4"), "ab.mp4");
        assert_eq!(export_name(".."), "export.mp4");
        assert_eq!(export_name(""), "export.mp4");
    }
}
