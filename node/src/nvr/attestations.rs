//! The NVR's side of camera attestations (IO): while a camera is recorded, fetch the
//! camera's signed GOP digests over `/camesh/attest/1` and append them to
//! `<recordings>/attest/<camera>.att` (length-prefixed `AttestItem`s: the camera's
//! certificate whenever it changes, then digests); for an export, pick those covering it.
//!
//! A torn last item after a crash is ignored on reading. Digests are small (~200 bytes
//! per GOP); the file is not trimmed by retention yet.

use std::path::{Path, PathBuf};
use std::time::Duration;

use camesh_proto::{framing::decode_message, pb, LengthCodec};
use libp2p::{PeerId, StreamProtocol};
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::attest::verify::write_item;
use crate::attest::{open, ATTEST_PROTOCOL, MAX_ITEM_BYTES};
use crate::reach::Reach;
use crate::stream::io::{write_message, FramedRead};

/// Largest attestation file read for an export.
const MAX_FILE: u64 = 256 << 20;
/// Camera certificates an export carries (the newest).
const MAX_CERTS: usize = 32;

pub fn attest_file(folder: &Path, camera: &str) -> PathBuf {
    folder.join("attest").join(format!("{camera}.att"))
}

/// Fetches `camera`'s digests from `peer` until `cancel` or the stream ends.
pub(crate) async fn fetch(
    node: Reach,
    peer: PeerId,
    camera: String,
    grant: bytes::Bytes,
    folder: PathBuf,
    cancel: CancellationToken,
) {
    tokio::select! {
        r = fetch_inner(&node, peer, &camera, grant, &folder) => match r {
            Ok(n) => debug!(%camera, %peer, digests = n, "attestation stream ended"),
            Err(e) => debug!(%camera, %peer, error = %e, "no camera attestations"),
        },
        _ = cancel.cancelled() => {}
    }
}

async fn fetch_inner(
    node: &Reach,
    peer: PeerId,
    camera: &str,
    grant: bytes::Bytes,
    folder: &Path,
) -> Result<u64, String> {
    let limits = &node.limits();
    let mut control = node.control();
    let timeout = Duration::from_secs(limits.request_timeout_s);
    let mut stream = tokio::time::timeout(timeout, control.open_stream(peer, StreamProtocol::new(ATTEST_PROTOCOL)))
        .await
        .map_err(|_| "timeout".to_owned())?
        .map_err(|e| e.to_string())?;
    let req = pb::AttestRequest {
        camera_id: camera.to_owned(),
        grant,
    };
    write_message(&mut stream, &LengthCodec::new(limits.max_control_bytes), &req)
        .await
        .map_err(|e| e.to_string())?;
    let path = attest_file(folder, camera);
    if let Some(dir) = path.parent() {
        tokio::fs::create_dir_all(dir).await.map_err(|e| e.to_string())?;
    }
    let mut file = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .await
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let mut reader = FramedRead::new(stream, LengthCodec::new(MAX_ITEM_BYTES + 1024));
    let mut n = 0u64;
    let mut buf = Vec::new();
    while let Some(body) = reader.next().await.map_err(|e| e.to_string())? {
        let item: pb::AttestItem = decode_message("attest item", body).map_err(|e| e.to_string())?;
        match &item.item {
            Some(pb::attest_item::Item::Cert(_)) => {}
            Some(pb::attest_item::Item::Gop(s)) => {
                // Only the camera's own node signs its GOPs.
                let (key, d) = open(s).map_err(|e| e.to_string())?;
                if key.to_peer_id() != peer || d.camera_id != camera {
                    return Err("a digest not signed by the camera's node".into());
                }
                n += 1;
                if n == 1 {
                    info!(%camera, %peer, "camera attestations arriving");
                }
            }
            Some(pb::attest_item::Item::Refused(why)) => {
                let why: String = why.chars().take(200).collect();
                warn!(%camera, %peer, reason = %why, "the camera refused attestations");
                return Err(format!("refused: {why}"));
            }
            None => continue,
        }
        buf.clear();
        write_item(&item, &mut buf);
        file.write_all(&buf).await.map_err(|e| e.to_string())?;
    }
    let _ = file.flush().await;
    Ok(n)
}

/// The attestation bytes for an export covering capture times `[from_us, to_us]`: the
/// camera's certificates (the newest [`MAX_CERTS`]), then every digest overlapping the range (reads the file; blocking).
pub fn for_export(folder: &Path, camera: &str, from_us: i64, to_us: i64) -> Vec<u8> {
    let path = attest_file(folder, camera);
    let Ok(meta) = std::fs::metadata(&path) else {
        return Vec::new();
    };
    if meta.len() > MAX_FILE {
        return Vec::new();
    }
    let Ok(bytes) = std::fs::read(&path) else {
        return Vec::new();
    };
    // Items up to a torn tail.
    let mut items = Vec::new();
    let mut rest = &bytes[..];
    while rest.len() >= 4 {
        let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        if len > MAX_ITEM_BYTES || rest.len() - 4 < len {
            break;
        }
        if let Ok(i) = <pb::AttestItem as prost::Message>::decode(&rest[4..4 + len]) {
            items.push(i);
        }
        rest = &rest[4 + len..];
    }
    // Every certificate the camera had (renewals), the newest last, so a verifier finds
    // the one valid when each GOP was signed.
    let mut certs: Vec<&pb::AttestItem> = Vec::new();
    for i in items
        .iter()
        .filter(|i| matches!(i.item, Some(pb::attest_item::Item::Cert(_))))
    {
        certs.retain(|c| c.item != i.item);
        certs.push(i);
    }
    let mut out = Vec::new();
    if certs.is_empty() {
        return out;
    }
    for c in certs.iter().skip(certs.len().saturating_sub(MAX_CERTS)) {
        write_item(c, &mut out);
    }
    for i in &items {
        if let Some(pb::attest_item::Item::Gop(s)) = &i.item {
            if let Ok((_, d)) = open(s) {
                if d.last_capture_unix_us >= from_us && d.first_capture_unix_us <= to_us {
                    write_item(i, &mut out);
                }
            }
        }
    }
    out
}
