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

/// The items of `camera`'s attestation file, up to a torn tail (reads the file; blocking).
fn read_file(folder: &Path, camera: &str) -> Vec<pb::AttestItem> {
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
    items
}

/// The attestation bytes for an export covering capture times `[from_us, to_us]`: the
/// camera's certificates (the newest [`MAX_CERTS`]), then every digest overlapping the range (reads the file; blocking).
pub fn for_export(folder: &Path, camera: &str, from_us: i64, to_us: i64) -> Vec<u8> {
    pick(&read_file(folder, camera), |first, last| {
        last >= from_us && first <= to_us
    })
}

/// The camera's certificates (the newest [`MAX_CERTS`]) and the digests `keep` picks by
/// their capture range; empty without a certificate.
fn pick(items: &[pb::AttestItem], keep: impl Fn(i64, i64) -> bool) -> Vec<u8> {
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
    for i in items {
        if let Some(pb::attest_item::Item::Gop(s)) = &i.item {
            if let Ok((_, d)) = open(s) {
                if keep(d.first_capture_unix_us, d.last_capture_unix_us) {
                    write_item(i, &mut out);
                }
            }
        }
    }
    out
}

/// The capture ranges of the digests held for `camera` (blocking).
pub fn digest_ranges(folder: &Path, camera: &str) -> Vec<(i64, i64)> {
    read_file(folder, camera)
        .iter()
        .filter_map(|i| match &i.item {
            Some(pb::attest_item::Item::Gop(s)) => open(s)
                .ok()
                .map(|(_, d)| (d.first_capture_unix_us, d.last_capture_unix_us)),
            _ => None,
        })
        .collect()
}

/// Digests in one replicated batch (about 1 MiB).
const REPLICA_BATCH: usize = 4096;

/// For replication: batches of certificates and the digests that overlap `within` and
/// are not inside any of `attested` (what the other side holds already); each batch
/// holds the certificates and at most [`REPLICA_BATCH`] digests (blocking).
pub fn for_replica(folder: &Path, camera: &str, within: &[(i64, i64)], attested: &[(i64, i64)]) -> Vec<Vec<u8>> {
    let items = read_file(folder, camera);
    let keep = |first: i64, last: i64| {
        within.iter().any(|&(a, b)| last >= a && first <= b) && !attested.iter().any(|&(a, b)| a <= first && last <= b)
    };
    let picked: Vec<usize> = items
        .iter()
        .enumerate()
        .filter_map(|(n, i)| match &i.item {
            Some(pb::attest_item::Item::Gop(s)) => open(s)
                .ok()
                .filter(|(_, d)| keep(d.first_capture_unix_us, d.last_capture_unix_us))
                .map(|_| n),
            _ => None,
        })
        .collect();
    let certs: Vec<pb::AttestItem> = items
        .iter()
        .filter(|i| matches!(i.item, Some(pb::attest_item::Item::Cert(_))))
        .cloned()
        .collect();
    if certs.is_empty() {
        return Vec::new();
    }
    picked
        .chunks(REPLICA_BATCH)
        .map(|batch| {
            let mut sub = certs.clone();
            sub.extend(batch.iter().map(|&n| items[n].clone()));
            pick(&sub, |_, _| true)
        })
        .collect()
}

/// Appends replicated attestations (length-prefixed `AttestItem`s from a peer) to
/// `camera`'s file: digests must be signed and name `camera`; certificates and digests
/// held already are skipped. Returns how many digests were added (blocking).
pub fn append_replica(folder: &Path, camera: &str, bytes: &[u8]) -> Result<u64, String> {
    use std::io::Write;
    let arriving = crate::attest::verify::read_items(bytes).map_err(|e| e.to_string())?;
    let held = read_file(folder, camera);
    let mut out = Vec::new();
    let mut added = 0u64;
    let mut seen: Vec<&pb::AttestItem> = held.iter().collect();
    for i in &arriving {
        match &i.item {
            Some(pb::attest_item::Item::Gop(s)) => {
                let (_, d) = open(s).map_err(|e| format!("camera attestation: {e}"))?;
                if d.camera_id != camera {
                    return Err(format!("a digest of camera {:?} sent as {camera}", d.camera_id));
                }
                let dup = seen.iter().any(|h| match &h.item {
                    Some(pb::attest_item::Item::Gop(o)) => o.body == s.body,
                    _ => false,
                });
                if dup {
                    continue;
                }
                added += 1;
            }
            Some(pb::attest_item::Item::Cert(_)) => {
                if seen.iter().any(|h| h.item == i.item) {
                    continue;
                }
            }
            _ => continue,
        }
        write_item(i, &mut out);
        seen.push(i);
    }
    if out.is_empty() {
        return Ok(0);
    }
    let path = attest_file(folder, camera);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    f.write_all(&out).map_err(|e| format!("{}: {e}", path.display()))?;
    f.sync_data().map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(added)
}
