//! Checking an export against the camera's signed GOP digests (reads files; no network).
//!
//! Input: the attestation file of an export (length-prefixed `AttestItem`s: the camera's
//! certificate, then signed digests) and its segment files. Every digest must be signed
//! by the certificate's key; the certificate must bind the camera id (and, given the
//! fleet root, be issued by it). Each GOP whose frames are all in the segments is
//! recomputed: a mismatch is tampering. GOPs the recorder did not get whole are counted
//! as unattested.

use std::collections::BTreeMap;
use std::path::PathBuf;

use camesh_proto::pb;
use libp2p::identity::PublicKey;
use libp2p::PeerId;
use prost::Message;

use super::{chain_of, frame_hash, open, FrameFields, MAX_ITEM_BYTES};
use crate::record::segment::{Record, SegmentReader};

/// Most items read from one attestation file.
pub const MAX_ITEMS: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum AttestVerifyError {
    #[error("attestation file: {0}")]
    File(String),
    #[error("the attestations carry no camera certificate")]
    NoCert,
    #[error("the camera certificate does not check out: {0}")]
    Cert(String),
    #[error("a GOP digest is not signed by the camera's key ({0})")]
    Signature(String),
    #[error("frames {first}..={last} of camera {camera} do not match the camera-signed digest: the recording was changed after the camera sent it")]
    Tampered { camera: String, first: u64, last: u64 },
    #[error("segment {}: {reason}", path.display())]
    Segment { path: PathBuf, reason: String },
}

/// What the camera's signatures cover.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttestReport {
    pub camera_peer: PeerId,
    /// The certificate's name, when it was checked against the fleet root.
    pub camera_name: Option<String>,
    pub gops_verified: usize,
    pub frames_verified: u64,
    pub frames_total: u64,
    /// Digests of GOPs not recorded whole (nothing to compare).
    pub gops_unattested: usize,
}

/// Splits an attestation file into its items (bounded).
pub fn read_items(bytes: &[u8]) -> Result<Vec<pb::AttestItem>, AttestVerifyError> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        if rest.len() < 4 || out.len() >= MAX_ITEMS {
            return Err(AttestVerifyError::File("truncated or too many items".into()));
        }
        let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        if len > MAX_ITEM_BYTES || rest.len() - 4 < len {
            return Err(AttestVerifyError::File(format!(
                "item of {len} bytes is truncated or too large"
            )));
        }
        let item = pb::AttestItem::decode(&rest[4..4 + len]).map_err(|e| AttestVerifyError::File(e.to_string()))?;
        out.push(item);
        rest = &rest[4 + len..];
    }
    Ok(out)
}

/// Appends one item, length-prefixed, to `out`.
pub fn write_item(item: &pb::AttestItem, out: &mut Vec<u8>) {
    let body = item.encode_to_vec();
    out.extend_from_slice(&u32::try_from(body.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(&body);
}

/// Checks digests against frame hashes by sequence (pure). Returns (GOPs verified,
/// frames verified, GOPs unattested).
pub fn check_gops(
    camera: &str,
    frames: &BTreeMap<u64, [u8; 32]>,
    digests: &[pb::GopDigest],
) -> Result<(usize, u64, usize), AttestVerifyError> {
    let (mut gops, mut verified, mut unattested) = (0, 0u64, 0);
    for d in digests {
        let in_range: Vec<[u8; 32]> = frames
            .range(d.first_sequence..=d.last_sequence)
            .map(|(_, h)| *h)
            .collect();
        if in_range.is_empty() {
            continue;
        }
        if in_range.len() as u64 != u64::from(d.frames) || d.last_sequence - d.first_sequence + 1 != u64::from(d.frames)
        {
            unattested += 1;
            continue;
        }
        if chain_of(in_range)[..] != d.sha256[..] {
            return Err(AttestVerifyError::Tampered {
                camera: camera.to_owned(),
                first: d.first_sequence,
                last: d.last_sequence,
            });
        }
        gops += 1;
        verified += u64::from(d.frames);
    }
    Ok((gops, verified, unattested))
}

/// Hashes every frame of the given segment files, by sequence.
pub fn frame_hashes(files: &[PathBuf]) -> Result<BTreeMap<u64, [u8; 32]>, AttestVerifyError> {
    let mut out = BTreeMap::new();
    for path in files {
        let bad = |e: &dyn std::fmt::Display| AttestVerifyError::Segment {
            path: path.clone(),
            reason: e.to_string(),
        };
        let mut reader = SegmentReader::open(path).map_err(|e| bad(&e))?;
        loop {
            match reader.next_record() {
                Ok(Some((_, Record::Frame(f), _))) => {
                    let fields = FrameFields {
                        sequence: f.sequence,
                        pts_90k: f.pts_90k,
                        dts_90k: f.dts_90k,
                        capture_unix_us: f.capture_unix_us,
                        key_epoch: f.key_epoch,
                        keyframe: f.keyframe,
                    };
                    out.insert(f.sequence, frame_hash(&fields, &f.payload));
                }
                Ok(Some(_)) => {}
                // A damaged or torn record ends what this file can attest.
                Ok(None) | Err(_) => break,
            }
        }
    }
    Ok(out)
}

/// Verifies an export's attestations. `fleet`: the fleet root and id, to check the
/// camera's certificate; `at_s`: when the export was made (the certificate must have
/// been valid then).
pub fn verify_export(
    attest: &[u8],
    camera: &str,
    segment_files: &[PathBuf],
    fleet: Option<(&PublicKey, &str)>,
    at_s: i64,
) -> Result<AttestReport, AttestVerifyError> {
    let items = read_items(attest)?;
    let cert = items
        .iter()
        .find_map(|i| match &i.item {
            Some(pb::attest_item::Item::Cert(c)) => Some(c.clone()),
            _ => None,
        })
        .ok_or(AttestVerifyError::NoCert)?;
    let cert_key = PublicKey::try_decode_protobuf(&cert.signer).map_err(|e| AttestVerifyError::Cert(e.to_string()))?;
    // The certificate names its holder; the digests must be signed by that holder.
    let body = pb::MembershipCert::decode(cert.body.clone()).map_err(|e| AttestVerifyError::Cert(e.to_string()))?;
    let holder = PeerId::from_bytes(&body.peer_id).map_err(|e| AttestVerifyError::Cert(e.to_string()))?;
    if !body.cameras.iter().any(|c| c == camera) {
        return Err(AttestVerifyError::Cert(format!("it does not bind camera {camera}")));
    }
    let camera_name = match fleet {
        Some((root, id)) => {
            let info = crate::auth::cert::verify(&cert, root, id, &holder, at_s)
                .map_err(|e| AttestVerifyError::Cert(e.to_string()))?;
            Some(info.name)
        }
        None => {
            let _ = cert_key;
            None
        }
    };
    let mut digests = Vec::new();
    for i in &items {
        if let Some(pb::attest_item::Item::Gop(s)) = &i.item {
            let (key, d) = open(s).map_err(|e| AttestVerifyError::Signature(e.to_string()))?;
            if key.to_peer_id() != holder || d.camera_id != camera {
                return Err(AttestVerifyError::Signature(format!(
                    "signed by {} for {:?}, the certificate is {holder}'s for {camera}",
                    key.to_peer_id(),
                    d.camera_id
                )));
            }
            digests.push(d);
        }
    }
    let frames = frame_hashes(segment_files)?;
    let (gops_verified, frames_verified, gops_unattested) = check_gops(camera, &frames, &digests)?;
    Ok(AttestReport {
        camera_peer: holder,
        camera_name,
        gops_verified,
        frames_verified,
        frames_total: frames.len() as u64,
        gops_unattested,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attest::{FrameFields, GopHasher};

    fn fields(seq: u64) -> FrameFields {
        FrameFields {
            sequence: seq,
            pts_90k: seq,
            dts_90k: seq,
            capture_unix_us: seq as i64,
            key_epoch: 0,
            keyframe: seq.is_multiple_of(3),
        }
    }

    #[test]
    fn whole_gops_verify_partial_ones_are_unattested_changed_ones_fail() {
        let mut h = GopHasher::default();
        let mut digests = Vec::new();
        let mut frames = BTreeMap::new();
        for seq in 0..10u64 {
            let payload = [seq as u8; 8];
            frames.insert(seq, frame_hash(&fields(seq), &payload));
            digests.extend(h.push("c", &fields(seq), &payload, 0));
        }
        // GOPs 0-2, 3-5, 6-8 closed.
        assert_eq!(digests.len(), 3);
        assert_eq!(check_gops("c", &frames, &digests).expect("valid"), (3, 9, 0));
        let mut partial = frames.clone();
        partial.remove(&4);
        assert_eq!(check_gops("c", &partial, &digests).expect("valid"), (2, 6, 1));
        let mut changed = frames.clone();
        changed.insert(7, [0; 32]);
        assert!(matches!(
            check_gops("c", &changed, &digests),
            Err(AttestVerifyError::Tampered { first: 6, last: 8, .. })
        ));
    }

    #[test]
    fn items_roundtrip_and_garbage_is_an_error() {
        let item = pb::AttestItem {
            item: Some(pb::attest_item::Item::Gop(pb::Signed::default())),
        };
        let mut buf = Vec::new();
        write_item(&item, &mut buf);
        write_item(&item, &mut buf);
        assert_eq!(read_items(&buf).expect("valid").len(), 2);
        assert!(read_items(&buf[..buf.len() - 1]).is_err());
        assert!(read_items(&[0xff, 0xff, 0xff, 0xff, 1]).is_err());
    }
}
