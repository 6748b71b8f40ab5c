//! Exports on `/camesh/nvr/1` (IO), with no plaintext on the NVR's disk: the MP4 is
//! muxed in memory (decrypting with the stored keys) and goes onto the asking peer's
//! stream in chunks as it is made, through a bounded queue (a slow peer slows the export,
//! never grows it), hashed on the way; then a manifest of the source segments' SHA-256
//! hashes and the streamed MP4's, signed with this node's key and carrying its
//! membership certificate; then the segment files (the hashed prefix of each) and the
//! camera's signed digests, and a summary. A failure is sent as an error item (the
//! client drops its partial file).
//!
//! Limits ([`export_allowed`], pure): a range of at most `[nvr] export_max_range_s`,
//! at most `[nvr] exports_at_once` exports at a time on this NVR and [`EXPORTS_PER_PEER`]
//! per peer, each refused with the reason. Older versions wrote the MP4 under
//! `<recordings>/exports/`; [`remove_leftovers`] deletes what a crash left there.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

use bytes::Bytes;
use camesh_proto::{pb, LengthCodec};
use futures::AsyncWriteExt;
use libp2p::{PeerId, Stream};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::NvrState;
use crate::record::export::{export_mp4, ExportProgress};
use crate::record::manifest::{FileHash, Manifest};
use crate::record::FrameRecord;
use crate::stream::io::{write_message, IoError};

/// Largest message after the request on an export stream.
pub const EXPORT_MESSAGE_MAX: usize = 256 << 10;
/// File bytes per chunk message.
const CHUNK: usize = 128 << 10;
/// Chunks (and progress reports) made ahead of the stream: the most export bytes held in
/// memory per export is about this many chunks.
const AHEAD: usize = 4;
/// Exports one peer may run at once on an NVR.
pub const EXPORTS_PER_PEER: usize = 1;
/// The folder older versions wrote exports into (plaintext MP4s), under the recordings.
pub const LEFTOVER_DIR: &str = "exports";

/// What bounds exports on this NVR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExportLimits {
    pub at_once: usize,
    pub per_peer: usize,
    pub max_range_us: i64,
}

impl ExportLimits {
    pub fn of(section: &crate::config::NvrSection) -> Self {
        ExportLimits {
            at_once: section.exports_at_once,
            per_peer: EXPORTS_PER_PEER,
            max_range_us: i64::try_from(section.export_max_range_s)
                .unwrap_or(i64::MAX)
                .saturating_mul(1_000_000),
        }
    }
}

fn hours(us: i64) -> String {
    format!("{:.2} h", us as f64 / 3.6e9)
}

/// Whether one more export of `[from_us, to_us]` may start while `running` exports run
/// on this NVR, `mine` of them the asking peer's (pure). The error is the refusal's
/// code and reason.
pub fn export_allowed(
    running: usize,
    mine: usize,
    from_us: i64,
    to_us: i64,
    l: &ExportLimits,
) -> Result<(), (pb::RejectCode, String)> {
    let busy = pb::RejectCode::RejectTooManyStreams;
    let span = to_us.saturating_sub(from_us);
    if span > l.max_range_us {
        return Err((
            pb::RejectCode::RejectBadRequest,
            format!(
            "an export covers at most {} on this NVR (asked {}): export the range in parts ([nvr] export_max_range_s)",
            hours(l.max_range_us),
            hours(span)
        ),
        ));
    }
    if mine >= l.per_peer {
        return Err((
            busy,
            format!(
            "you already run {mine} export(s) on this NVR, the most one peer may run at once: wait for it to finish"
        ),
        ));
    }
    if running >= l.at_once {
        return Err((busy, format!(
            "this NVR already runs {running} exports, the most it runs at once ([nvr] exports_at_once): try again when one has finished"
        )));
    }
    Ok(())
}

/// The exports running on this NVR, by peer.
#[derive(Debug, Default)]
pub struct ExportSlots {
    running: Mutex<HashMap<PeerId, usize>>,
}

/// One running export; its slot is given back when this is dropped.
#[derive(Debug)]
pub struct ExportSlot<'a> {
    slots: &'a ExportSlots,
    peer: PeerId,
}

impl ExportSlots {
    /// Takes a slot for `peer`'s export of `[from_us, to_us]`, or says why not.
    pub fn try_start(
        &self,
        peer: PeerId,
        from_us: i64,
        to_us: i64,
        l: &ExportLimits,
    ) -> Result<ExportSlot<'_>, (pb::RejectCode, String)> {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        let total = running.values().sum();
        let mine = running.get(&peer).copied().unwrap_or(0);
        export_allowed(total, mine, from_us, to_us, l)?;
        *running.entry(peer).or_default() += 1;
        Ok(ExportSlot { slots: self, peer })
    }

    /// Exports running now.
    pub fn running(&self) -> usize {
        self.running.lock().unwrap_or_else(|p| p.into_inner()).values().sum()
    }
}

impl Drop for ExportSlot<'_> {
    fn drop(&mut self) {
        let mut running = self.slots.running.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = running.get_mut(&self.peer) {
            *n -= 1;
            if *n == 0 {
                running.remove(&self.peer);
            }
        }
    }
}

/// Deletes the export work folder an older version (or a crash of one) left under the
/// recordings; returns how many files were in it.
pub fn remove_leftovers(recordings: &Path) -> usize {
    let dir = recordings.join(LEFTOVER_DIR);
    if !dir.exists() {
        return 0;
    }
    let files = walk_count(&dir);
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => info!(folder = %dir.display(), files, "removed export work files left by an earlier run"),
        Err(e) => warn!(folder = %dir.display(), error = %e, "cannot remove export work files left by an earlier run"),
    }
    files
}

fn walk_count(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| if e.path().is_dir() { walk_count(&e.path()) } else { 1 })
                .sum()
        })
        .unwrap_or(0)
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
    let name = export_name(requested);
    match export_and_send(state, camera, from, to, &name, stream, &codec).await {
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

/// What the muxing job hands the stream.
enum Made {
    Chunk(Bytes),
    Progress(ExportProgress),
}

/// The MP4 as it is made: cut into chunks for the stream, hashed and counted. Nothing
/// touches the disk; a closed stream ends the job at its next chunk.
struct ToStream {
    tx: mpsc::Sender<Made>,
    buf: Vec<u8>,
    hash: Sha256,
    bytes: u64,
}

impl ToStream {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx
            .blocking_send(Made::Chunk(chunk))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the asking peer went away"))
    }
}

impl Write for ToStream {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        self.hash.update(&data[..n]);
        self.bytes += n as u64;
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

async fn export_and_send(
    state: &NvrState,
    camera: &str,
    from: i64,
    to: i64,
    name: &str,
    stream: &mut Stream,
    codec: &LengthCodec,
) -> Result<(), ExportFailure> {
    let failed = |e: &dyn std::fmt::Display| ExportFailure::Failed(e.to_string());
    let (tx, mut rx) = mpsc::channel::<Made>(AHEAD);
    let index = state.recorder.index().clone();
    let keys = state.keys.clone();
    let cam = camera.to_owned();
    let mut job = tokio::task::spawn_blocking(move || {
        // Unwrapped keys by epoch, with the stored (wrapped) key each came from: a newer
        // stored key under the same epoch (recordings from before epochs were unique
        // across camera restarts) replaces the cached one.
        let mut cache: HashMap<u64, (Bytes, crate::auth::media_key::MediaKey)> = HashMap::new();
        let decrypt = |f: &FrameRecord, stored: Option<&Bytes>| -> Result<Bytes, String> {
            let current = cache
                .get(&f.key_epoch)
                .is_some_and(|(from, _)| stored.is_none_or(|s| s == from));
            if !current {
                let stored = stored.ok_or_else(|| "the recording holds no key for this epoch".to_owned())?;
                let k = keys.unwrap(&cam, f.key_epoch, stored).map_err(|e| e.to_string())?;
                if cache.len() > 64 {
                    cache.clear();
                }
                cache.insert(f.key_epoch, (stored.clone(), k));
            }
            let (_, k) = cache.get(&f.key_epoch).ok_or("key cache")?;
            k.open(&f.header(), &f.payload).map_err(|e| e.to_string())
        };
        let progress = tx.clone();
        let mut out = ToStream {
            tx,
            buf: Vec::with_capacity(CHUNK),
            hash: Sha256::new(),
            bytes: 0,
        };
        let summary = export_mp4(&index, &cam, from, to, &mut out, decrypt, |p| {
            let _ = progress.blocking_send(Made::Progress(*p));
        })?;
        Ok::<_, crate::record::export::ExportError>((summary, out.hash, out.bytes))
    });
    let mut offset = 0u64;
    let (summary, hash, sent) = loop {
        tokio::select! {
            // What the job made first: a short export can finish before the first poll,
            // and an unbiased select would then drop what it queued. The job's senders
            // are gone once it ends, so this drains and then yields.
            biased;
            Some(m) = rx.recv() => {
                let msg = match m {
                    Made::Progress(p) => item(pb::nvr_export_item::Item::Progress(pb::NvrExportProgress {
                        frames: p.frames,
                        capture_unix_us: p.capture_us,
                        permille: (p.fraction() * 1000.0) as u32,
                    })),
                    Made::Chunk(data) => {
                        let at = offset;
                        offset += data.len() as u64;
                        item(pb::nvr_export_item::Item::Chunk(pb::NvrFileChunk {
                            kind: pb::NvrFileKind::NvrFileMp4 as i32,
                            name: String::new(),
                            offset: at,
                            data,
                        }))
                    }
                };
                write_message(stream, codec, &msg).await?;
            }
            r = &mut job => break r.map_err(|e| failed(&e))?.map_err(|e| failed(&e))?,
        }
    };
    if sent != offset || sent != summary.bytes {
        return Err(failed(&format!("{sent} MP4 bytes made, {offset} sent")));
    }
    let export = FileHash::of_digest(name, sent, hash);
    let segments_dir = state.recorder.index().segments_dir().to_owned();
    let (segs, signer) = (summary.segments.clone(), state.signer.clone());
    let cam = camera.to_owned();
    let mut manifest = tokio::task::spawn_blocking(move || {
        Manifest::build(&segments_dir, &cam, from, to, &segs, Some(export), &signer)
    })
    .await
    .map_err(|e| failed(&e))?
    .map_err(|e| failed(&e))?;
    // Outside the signed body: the certificate is itself signed by the fleet root.
    manifest.signer_cert = state.cert_hex.clone();
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
        audio_frames: summary.audio_frames,
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

    #[test]
    fn exports_are_bounded_in_range_and_number() {
        let l = ExportLimits {
            at_once: 2,
            per_peer: 1,
            max_range_us: 3_600_000_000,
        };
        assert!(export_allowed(0, 0, 0, 3_600_000_000, &l).is_ok());
        let (code, e) = export_allowed(0, 0, 0, 3_600_000_001, &l).unwrap_err();
        assert_eq!(code, pb::RejectCode::RejectBadRequest);
        assert!(e.contains("at most 1.00 h"), "{e}");
        assert!(export_allowed(0, 0, i64::MIN, i64::MAX, &l).is_err());
        let (code, e) = export_allowed(1, 1, 0, 1, &l).unwrap_err();
        assert_eq!(code, pb::RejectCode::RejectTooManyStreams);
        assert!(e.contains("one peer may run at once"), "{e}");
        let (_, e) = export_allowed(2, 0, 0, 1, &l).unwrap_err();
        assert!(e.contains("the most it runs at once"), "{e}");

        let slots = ExportSlots::default();
        let (a, b) = (PeerId::random(), PeerId::random());
        let first = slots.try_start(a, 0, 1, &l).expect("a's first");
        assert!(slots.try_start(a, 0, 1, &l).is_err(), "a's second while the first runs");
        let second = slots.try_start(b, 0, 1, &l).expect("b's first");
        assert!(
            slots.try_start(PeerId::random(), 0, 1, &l).is_err(),
            "a third on the NVR"
        );
        drop(first);
        assert_eq!(slots.running(), 1);
        let again = slots.try_start(a, 0, 1, &l).expect("a again, once its first ended");
        drop((second, again));
        assert_eq!(slots.running(), 0);
    }

    #[test]
    fn leftover_work_files_are_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(remove_leftovers(dir.path()), 0);
        let work = dir.path().join(LEFTOVER_DIR).join("00ff");
        std::fs::create_dir_all(&work).expect("mkdir");
        std::fs::write(work.join("incident.mp4.part"), b"ftyp").expect("write");
        assert_eq!(remove_leftovers(dir.path()), 1);
        assert!(!dir.path().join(LEFTOVER_DIR).exists());
    }
}
