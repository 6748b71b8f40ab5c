//! Exports on `/camesh/nvr/1` (IO): the MP4 is written on the NVR (decrypting with the
//! stored keys) while progress goes to the asking peer; then a manifest of the source
//! segments' SHA-256 hashes and the MP4's, signed with this node's key and carrying its
//! membership certificate; then the MP4, the manifest and the segment files (the hashed
//! prefix of each) in chunks, and a summary. A failure is sent as an error item and the
//! work folder is removed either way.

use std::collections::HashMap;
use std::path::Path;

use bytes::Bytes;
use camesh_proto::{pb, LengthCodec};
use futures::AsyncWriteExt;
use libp2p::Stream;
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::NvrState;
use crate::record::export::{export_mp4, ExportProgress};
use crate::record::manifest::Manifest;
use crate::record::FrameRecord;
use crate::stream::io::{write_message, IoError};

/// Largest message after the request on an export stream.
pub const EXPORT_MESSAGE_MAX: usize = 256 << 10;
/// File bytes per chunk message.
const CHUNK: usize = 128 << 10;

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

pub(crate) async fn export(
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
            k.open(&f.header(), &f.payload).map_err(|e| e.to_string())
        };
        export_mp4(&index, &cam, from, to, &path, decrypt, |p| {
            let _ = ptx.try_send(*p);
        })
    });
    let summary = loop {
        tokio::select! {
            // Progress first: a short export can finish before the first poll, and an
            // unbiased select would then drop what it queued (the user saw no progress).
            // The job's sender is gone once it ends, so this drains and then yields.
            biased;
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
    // The camera's signed digests of the GOPs in the exported segments.
    let first = manifest
        .body
        .segments
        .iter()
        .filter_map(|s| s.first_us)
        .min()
        .unwrap_or(from);
    let last = manifest
        .body
        .segments
        .iter()
        .filter_map(|s| s.last_us)
        .max()
        .unwrap_or(to);
    let (folder, cam) = (state.folder.clone(), camera.to_owned());
    let attest = tokio::task::spawn_blocking(move || super::attestations::for_export(&folder, &cam, first, last))
        .await
        .unwrap_or_default();
    if !attest.is_empty() {
        send_bytes(stream, codec, pb::NvrFileKind::NvrFileAttest, "", &attest).await?;
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
