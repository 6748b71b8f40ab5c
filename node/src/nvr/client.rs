//! The asking side of `/camesh/nvr/1` (IO), for `mesh play|recordings|export|lock`.
//!
//! Every read is bounded: the answer by the control limit, frames by the frame limit,
//! export messages by [`EXPORT_MESSAGE_MAX`]. Files an export sends are written only
//! under the folder the caller names, at offsets that must follow on from what was
//! written, with names checked to be `<camera>/<name>.cseg`.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use camesh_proto::{framing::decode_message, pb, LengthCodec, MediaFrame};
use libp2p::{PeerId, Stream, StreamProtocol};

use super::export::EXPORT_MESSAGE_MAX;
use super::NVR_PROTOCOL;
use crate::auth::media_key::MediaKey;
use crate::auth::{signed, Rights};
use crate::reach::Reach;
use crate::record::segment::valid_camera_id;
use crate::stream::io::{write_message, FramedRead, IoError};

/// Media keys a playback keeps (one per epoch met).
const MAX_KEYS: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum NvrClientError {
    #[error("no NVR found: pass --nvr <peer id> or --bootstrap <the NVR's address>")]
    NoNvr,
    #[error("no grant with the {right} right for camera {camera}: ask a fleet admin (mesh grant <your peer id> --cameras {camera} --rights {right})")]
    NoGrant { camera: String, right: Rights },
    #[error("cannot reach NVR {peer}: {reason}")]
    Open { peer: PeerId, reason: String },
    #[error("NVR {peer} refused: {reason}")]
    Rejected {
        peer: PeerId,
        code: pb::RejectCode,
        reason: String,
    },
    #[error("NVR {peer} broke the protocol: {reason}")]
    Protocol { peer: PeerId, reason: String },
    #[error("NVR {peer}: {0}", peer = .1)]
    Io(IoError, PeerId),
    #[error("NVR {peer} sent a frame that failed authentication: {reason}")]
    Tampered { peer: PeerId, reason: String },
    #[error("export failed on NVR {peer}: {reason}")]
    ExportFailed { peer: PeerId, reason: String },
    #[error("{}: {source}", path.display())]
    File { path: PathBuf, source: std::io::Error },
}

/// NVR members among the connected peers (waiting up to `wait` for one).
pub async fn find_nvrs(node: &Reach, wait: Duration) -> Vec<PeerId> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let peers = node.peers().await.unwrap_or_default();
        let nvrs: Vec<PeerId> = peers
            .iter()
            .filter(|p| p.connected)
            .filter(|p| {
                node.trust()
                    .member(&p.peer)
                    .is_some_and(|c| c.role == pb::MemberRole::Nvr)
            })
            .map(|p| p.peer)
            .collect();
        if !nvrs.is_empty() || tokio::time::Instant::now() >= deadline {
            return nvrs;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Opens a request stream and reads the first answer.
async fn request(
    node: &Reach,
    peer: PeerId,
    right: Rights,
    mut req: pb::NvrRequest,
) -> Result<(pb::NvrResponse, FramedRead<Stream>), NvrClientError> {
    if req.grant.is_empty() {
        let g = node
            .trust()
            .grant_for(&req.camera_id, right)
            .ok_or_else(|| NvrClientError::NoGrant {
                camera: req.camera_id.clone(),
                right,
            })?;
        req.grant = signed::encode(&g);
    }
    let limits = &node.limits();
    let timeout = Duration::from_secs(limits.request_timeout_s);
    let open_err = |reason: String| NvrClientError::Open { peer, reason };
    let connected = node
        .peers()
        .await
        .map(|ps| ps.iter().any(|p| p.peer == peer && p.connected))
        .unwrap_or(false);
    if !connected {
        node.net()
            .connect(Some(peer), vec![])
            .await
            .map_err(|e| open_err(e.to_string()))?;
    }
    let mut control = node.control();
    let mut stream = tokio::time::timeout(timeout, control.open_stream(peer, StreamProtocol::new(NVR_PROTOCOL)))
        .await
        .map_err(|_| open_err(format!("no answer within {timeout:?}")))?
        .map_err(|e| open_err(e.to_string()))?;
    let codec = LengthCodec::new(limits.max_control_bytes);
    write_message(&mut stream, &codec, &req)
        .await
        .map_err(|e| NvrClientError::Io(e, peer))?;
    let mut reader = FramedRead::new(stream, codec);
    // An export or a long playback may take a while to start (the first GOP is read).
    let body = match tokio::time::timeout(timeout * 4, reader.next()).await {
        Ok(Ok(Some(b))) => b,
        Ok(Ok(None)) => return Err(open_err("closed the stream".into())),
        Ok(Err(e)) => return Err(NvrClientError::Io(e, peer)),
        Err(_) => return Err(open_err(format!("no answer within {:?}", timeout * 4))),
    };
    let resp: pb::NvrResponse = decode_message("nvr response", body).map_err(|e| NvrClientError::Protocol {
        peer,
        reason: e.to_string(),
    })?;
    if let Some(pb::nvr_response::Result::Reject(r)) = &resp.result {
        return Err(NvrClientError::Rejected {
            peer,
            code: pb::RejectCode::try_from(r.code).unwrap_or(pb::RejectCode::RejectUnspecified),
            reason: r.reason.clone(),
        });
    }
    Ok((resp, reader))
}

fn base(camera: &str, from_us: i64, to_us: i64, request: pb::nvr_request::Request) -> pb::NvrRequest {
    pb::NvrRequest {
        camera_id: camera.to_owned(),
        grant: Default::default(),
        from_unix_us: from_us,
        to_unix_us: to_us,
        request: Some(request),
    }
}

fn unexpected(peer: PeerId) -> NvrClientError {
    NvrClientError::Protocol {
        peer,
        reason: "unexpected answer".into(),
    }
}

/// Coverage of a camera over a range (`to_us` 0: up to now).
pub async fn recordings(
    node: &Reach,
    peer: PeerId,
    camera: &str,
    from_us: i64,
    to_us: i64,
) -> Result<pb::NvrCoverage, NvrClientError> {
    let req = base(
        camera,
        from_us,
        to_us,
        pb::nvr_request::Request::Recordings(pb::NvrRecordings {}),
    );
    match request(node, peer, Rights::PLAYBACK, req).await?.0.result {
        Some(pb::nvr_response::Result::Recordings(c)) => Ok(c),
        _ => Err(unexpected(peer)),
    }
}

/// Locks a range as evidence.
pub async fn lock(
    node: &Reach,
    peer: PeerId,
    camera: &str,
    from_us: i64,
    to_us: i64,
    reason: &str,
) -> Result<pb::NvrLocked, NvrClientError> {
    let req = base(
        camera,
        from_us,
        to_us,
        pb::nvr_request::Request::Lock(pb::NvrLock { reason: reason.into() }),
    );
    match request(node, peer, Rights::LOCK, req).await?.0.result {
        Some(pb::nvr_response::Result::Lock(l)) => Ok(l),
        _ => Err(unexpected(peer)),
    }
}

/// Removes evidence lock `id` of `camera` (the `lock` right; the NVR audits it with
/// `reason`). Returns the lock that was removed.
pub async fn unlock(
    node: &Reach,
    peer: PeerId,
    camera: &str,
    id: u64,
    reason: &str,
) -> Result<pb::NvrLocked, NvrClientError> {
    let req = base(
        camera,
        0,
        0,
        pb::nvr_request::Request::Unlock(pb::NvrUnlock {
            id,
            reason: reason.into(),
        }),
    );
    match request(node, peer, Rights::LOCK, req).await?.0.result {
        Some(pb::nvr_response::Result::Lock(l)) => Ok(l),
        _ => Err(unexpected(peer)),
    }
}

/// A playback: frames opened with the keys the NVR sent in-band.
#[derive(Debug)]
pub struct Playback {
    pub peer: PeerId,
    pub accept: pb::StreamAccept,
    reader: FramedRead<Stream>,
    keys: HashMap<u64, MediaKey>,
}

/// Plays a camera from the keyframe at or before `from_us` through `to_us` (0: now).
pub async fn play(
    node: &Reach,
    peer: PeerId,
    camera: &str,
    from_us: i64,
    to_us: i64,
) -> Result<Playback, NvrClientError> {
    let max = node.limits().max_frame_bytes;
    let req = base(
        camera,
        from_us,
        to_us,
        pb::nvr_request::Request::Play(pb::NvrPlay {
            max_frame_bytes: u32::try_from(max).unwrap_or(u32::MAX),
        }),
    );
    let (resp, mut reader) = request(node, peer, Rights::PLAYBACK, req).await?;
    let Some(pb::nvr_response::Result::Play(accept)) = resp.result else {
        return Err(unexpected(peer));
    };
    reader.set_max(max + 1024);
    Ok(Playback {
        peer,
        accept,
        reader,
        keys: HashMap::new(),
    })
}

impl Playback {
    /// The next frame, opened; `Ok(None)` at the end of the range.
    pub async fn next_frame(&mut self) -> Result<Option<MediaFrame>, NvrClientError> {
        let peer = self.peer;
        loop {
            let body = match self.reader.next().await {
                Ok(Some(b)) => b,
                Ok(None) => return Ok(None),
                Err(e) => return Err(NvrClientError::Io(e, peer)),
            };
            let mut frame = MediaFrame::decode(body).map_err(|e| NvrClientError::Protocol {
                peer,
                reason: e.to_string(),
            })?;
            let tampered = |reason: String| NvrClientError::Tampered { peer, reason };
            if !frame.header.new_key.is_empty() {
                let key = MediaKey::from_bytes(frame.header.key_epoch, &frame.header.new_key)
                    .map_err(|e| tampered(e.to_string()))?;
                if self.keys.len() >= MAX_KEYS && !self.keys.contains_key(&key.epoch) {
                    self.keys.clear();
                }
                self.keys.insert(key.epoch, key);
                continue;
            }
            let key = self
                .keys
                .get(&frame.header.key_epoch)
                .ok_or_else(|| tampered(format!("no key for epoch {}", frame.header.key_epoch)))?;
            frame.payload = key
                .open(&frame.header, &frame.payload)
                .map_err(|e| tampered(e.to_string()))?;
            return Ok(Some(frame));
        }
    }
}

/// Where an export went.
#[derive(Debug, Clone)]
pub struct ExportFiles {
    pub mp4: PathBuf,
    pub manifest: PathBuf,
    /// `<camera>/<name>.cseg` files under here.
    pub segments: PathBuf,
    /// The camera's certificate and signed GOP digests (absent if the NVR had none).
    pub attest: Option<PathBuf>,
    pub done: pb::NvrExportDone,
}

/// The manifest, segments folder and attestations that go with an export file
/// `incident.mp4`: `incident.manifest.json`, `incident.segments/`, `incident.attest`.
pub fn export_companions(mp4: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let stem = mp4
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "export".into());
    (
        mp4.with_file_name(format!("{stem}.manifest.json")),
        mp4.with_file_name(format!("{stem}.segments")),
        mp4.with_file_name(format!("{stem}.attest")),
    )
}

/// A segment name from the NVR, checked: `<camera>/<digits>.cseg`.
fn segment_rel(name: &str) -> Option<PathBuf> {
    let (cam, file) = name.split_once('/')?;
    let stem = file.strip_suffix(".cseg")?;
    (valid_camera_id(cam)
        && !stem.is_empty()
        && stem.len() <= 40
        && !stem.starts_with('-')
        && stem.bytes().all(|b| b.is_ascii_digit() || b == b'-'))
    .then(|| Path::new(cam).join(file))
}

struct Sink {
    path: PathBuf,
    file: std::fs::File,
    len: u64,
}

/// Exports a range: progress goes to `progress`; the MP4 to `out` (written as
/// `<out>.part`, renamed when complete), the manifest and the segments next to it.
pub async fn export(
    node: &Reach,
    peer: PeerId,
    camera: &str,
    from_us: i64,
    to_us: i64,
    out: &Path,
    mut progress: impl FnMut(&pb::NvrExportProgress),
) -> Result<ExportFiles, NvrClientError> {
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "export.mp4".into());
    let req = base(
        camera,
        from_us,
        to_us,
        pb::nvr_request::Request::Export(pb::NvrExport { file_name: name }),
    );
    let (resp, mut reader) = request(node, peer, Rights::EXPORT, req).await?;
    if !matches!(resp.result, Some(pb::nvr_response::Result::Export(_))) {
        return Err(unexpected(peer));
    }
    reader.set_max(EXPORT_MESSAGE_MAX);
    let (manifest, segments, attest) = export_companions(out);
    // Never leave another export's attestations next to this one.
    let _ = std::fs::remove_file(&attest);
    let part = out.with_file_name(format!(
        "{}.part",
        out.file_name().map(|n| n.to_string_lossy()).unwrap_or_default()
    ));
    let proto = |reason: String| NvrClientError::Protocol { peer, reason };
    let file_err = |path: &Path| {
        let path = path.to_owned();
        move |source| NvrClientError::File { path, source }
    };
    let mut sinks: HashMap<(i32, String), Sink> = HashMap::new();
    let done = loop {
        let body = match reader.next().await {
            Ok(Some(b)) => b,
            Ok(None) => return Err(proto("the stream ended before the export was complete".into())),
            Err(e) => return Err(NvrClientError::Io(e, peer)),
        };
        let msg: pb::NvrExportItem = decode_message("nvr export item", body).map_err(|e| proto(e.to_string()))?;
        match msg.item {
            Some(pb::nvr_export_item::Item::Progress(p)) => progress(&p),
            Some(pb::nvr_export_item::Item::Error(reason)) => {
                let _ = std::fs::remove_file(&part);
                return Err(NvrClientError::ExportFailed { peer, reason });
            }
            Some(pb::nvr_export_item::Item::Done(d)) => break d,
            Some(pb::nvr_export_item::Item::Chunk(c)) => {
                let path = match pb::NvrFileKind::try_from(c.kind) {
                    Ok(pb::NvrFileKind::NvrFileMp4) => part.clone(),
                    Ok(pb::NvrFileKind::NvrFileManifest) => manifest.clone(),
                    Ok(pb::NvrFileKind::NvrFileAttest) => attest.clone(),
                    Ok(pb::NvrFileKind::NvrFileSegment) => {
                        let rel =
                            segment_rel(&c.name).ok_or_else(|| proto(format!("bad segment name {:?}", c.name)))?;
                        segments.join(rel)
                    }
                    Err(_) => return Err(proto(format!("unknown file kind {}", c.kind))),
                };
                let key = (c.kind, c.name.clone());
                if !sinks.contains_key(&key) {
                    if c.offset != 0 {
                        return Err(proto("a file does not start at offset 0".into()));
                    }
                    if let Some(dir) = path.parent() {
                        std::fs::create_dir_all(dir).map_err(file_err(dir))?;
                    }
                    let file = std::fs::File::create(&path).map_err(file_err(&path))?;
                    sinks.insert(key.clone(), Sink { path, file, len: 0 });
                }
                let Some(sink) = sinks.get_mut(&key) else { continue };
                if c.offset != sink.len {
                    return Err(proto(format!("chunk at offset {} after {} bytes", c.offset, sink.len)));
                }
                sink.file.write_all(&c.data).map_err(file_err(&sink.path))?;
                sink.len += c.data.len() as u64;
            }
            None => return Err(proto("empty export message".into())),
        }
    };
    for sink in sinks.values_mut() {
        sink.file.sync_all().map_err(file_err(&sink.path))?;
    }
    std::fs::rename(&part, out).map_err(file_err(out))?;
    let got_attest = sinks.contains_key(&(pb::NvrFileKind::NvrFileAttest as i32, String::new()));
    Ok(ExportFiles {
        mp4: out.to_owned(),
        manifest,
        segments,
        attest: got_attest.then_some(attest),
        done,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_from_the_nvr_are_checked() {
        assert!(segment_rel("cam1/00000000001700000000-1.cseg").is_some());
        assert_eq!(
            segment_rel("cam1/00000000001700000000.cseg"),
            Some(Path::new("cam1").join("00000000001700000000.cseg"))
        );
        for bad in [
            "../x.cseg",
            "cam1/../../x.cseg",
            "cam1/a.cseg",
            "/etc/passwd",
            "cam1/1.txt",
            "Cam 1/1.cseg",
            "cam1/.cseg",
        ] {
            assert_eq!(segment_rel(bad), None, "{bad}");
        }
        let (m, s, a) = export_companions(Path::new("/tmp/incident.mp4"));
        assert_eq!(a, Path::new("/tmp/incident.attest"));
        assert_eq!(m, Path::new("/tmp/incident.manifest.json"));
        assert_eq!(s, Path::new("/tmp/incident.segments"));
    }
}
