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
    #[error("the manifest's asserted creation time {asserted} {reason}")]
    AssertedTime { asserted: String, reason: String },
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
    /// Capture times (µs) the verified GOPs span, as the camera signed them.
    pub attested_us: Option<(i64, i64)>,
}

/// What [`check_gops`] found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GopCheck {
    pub gops: usize,
    pub frames: u64,
    pub unattested: usize,
    /// First and last capture time of the verified GOPs (camera-signed).
    pub span_us: Option<(i64, i64)>,
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

/// Frame hashes by (sequence, capture time): a camera that restarts numbers its frames
/// from 0 again, so a sequence alone names a frame only within one camera session.
pub type FrameHashes = BTreeMap<(u64, i64), [u8; 32]>;

/// Checks digests against frame hashes (pure): a digest covers the frames of its sequence
/// range captured within its capture times (the same numbers from another camera
/// session are other frames).
pub fn check_gops(
    camera: &str,
    frames: &FrameHashes,
    digests: &[pb::GopDigest],
) -> Result<GopCheck, AttestVerifyError> {
    let mut c = GopCheck::default();
    for d in digests {
        let captured = d.first_capture_unix_us..=d.last_capture_unix_us;
        let in_range: Vec<[u8; 32]> = frames
            .range((d.first_sequence, i64::MIN)..=(d.last_sequence, i64::MAX))
            .filter(|((_, capture), _)| captured.contains(capture))
            .map(|(_, h)| *h)
            .collect();
        if in_range.is_empty() {
            continue;
        }
        if in_range.len() as u64 != u64::from(d.frames) || d.last_sequence - d.first_sequence + 1 != u64::from(d.frames)
        {
            c.unattested += 1;
            continue;
        }
        if chain_of(in_range)[..] != d.sha256[..] {
            return Err(AttestVerifyError::Tampered {
                camera: camera.to_owned(),
                first: d.first_sequence,
                last: d.last_sequence,
            });
        }
        c.gops += 1;
        c.frames += u64::from(d.frames);
        let (a, b) = c.span_us.unwrap_or((d.first_capture_unix_us, d.last_capture_unix_us));
        c.span_us = Some((a.min(d.first_capture_unix_us), b.max(d.last_capture_unix_us)));
    }
    Ok(c)
}

/// Checks the NVR's asserted creation time of a manifest against what the camera signed
/// (pure): an NVR cannot have hashed segments before the camera captured their last
/// attested frame, nor made the export after `now_us`; `skew_us` allows for clocks.
pub fn check_asserted_time(
    created_us: i64,
    attested_us: (i64, i64),
    now_us: i64,
    skew_us: i64,
) -> Result<(), AttestVerifyError> {
    let fmt = crate::clock::rfc3339_ms;
    let err = |reason: String| AttestVerifyError::AssertedTime {
        asserted: fmt(created_us),
        reason,
    };
    if created_us < attested_us.1.saturating_sub(skew_us) {
        return Err(err(format!(
            "is before the camera signed the frames it covers (up to {}): the NVR's clock or its word is wrong",
            fmt(attested_us.1)
        )));
    }
    if created_us > now_us.saturating_add(skew_us) {
        return Err(err(format!("is in the future (now {})", fmt(now_us))));
    }
    Ok(())
}

/// Hashes every frame of the given segment files, by sequence and capture time.
pub fn frame_hashes(files: &[PathBuf]) -> Result<FrameHashes, AttestVerifyError> {
    let mut out = BTreeMap::new();
    for path in files {
        let bad = |e: &dyn std::fmt::Display| AttestVerifyError::Segment {
            path: path.clone(),
            reason: e.to_string(),
        };
        let mut reader = SegmentReader::open(path).map_err(|e| bad(&e))?;
        loop {
            match reader.next_record() {
                // The camera signs its video GOPs; audio frames are not attested.
                Ok(Some((_, Record::Frame(f), _))) if crate::media::is_audio(f.sequence) => {}
                Ok(Some((_, Record::Frame(f), _))) => {
                    let fields = FrameFields {
                        sequence: f.sequence,
                        pts_90k: f.pts_90k,
                        dts_90k: f.dts_90k,
                        capture_unix_us: f.capture_unix_us,
                        key_epoch: f.key_epoch,
                        keyframe: f.keyframe,
                    };
                    out.insert((f.sequence, f.capture_unix_us), frame_hash(&fields, &f.payload));
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
/// camera's certificates: one of them must have been valid at the first and at the last
/// camera-signed capture time of the verified GOPs (the camera signed them then; a
/// renewed certificate is fine), or, when no GOP verifies, at `at_s` (the NVR's asserted
/// time of the export).
pub fn verify_export(
    attest: &[u8],
    camera: &str,
    segment_files: &[PathBuf],
    fleet: Option<(&PublicKey, &str)>,
    at_s: i64,
) -> Result<AttestReport, AttestVerifyError> {
    let items = read_items(attest)?;
    let certs: Vec<pb::Signed> = items
        .iter()
        .filter_map(|i| match &i.item {
            Some(pb::attest_item::Item::Cert(c)) => Some(c.clone()),
            _ => None,
        })
        .collect();
    let cert = certs.last().ok_or(AttestVerifyError::NoCert)?;
    // The certificate names its holder; the digests must be signed by that holder.
    let body = pb::MembershipCert::decode(cert.body.clone()).map_err(|e| AttestVerifyError::Cert(e.to_string()))?;
    let holder = PeerId::from_bytes(&body.peer_id).map_err(|e| AttestVerifyError::Cert(e.to_string()))?;
    if !body.cameras.iter().any(|c| c == camera) {
        return Err(AttestVerifyError::Cert(format!("it does not bind camera {camera}")));
    }
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
    let c = check_gops(camera, &frames, &digests)?;
    let camera_name = match fleet {
        Some((root, id)) => {
            let times = match c.span_us {
                Some((a, b)) => vec![a.div_euclid(1_000_000), b.div_euclid(1_000_000)],
                None => vec![at_s],
            };
            let mut name = String::new();
            for t in times {
                let mut last = None;
                let valid = certs
                    .iter()
                    .find_map(|s| match crate::auth::cert::verify(s, root, id, &holder, t) {
                        Ok(info) => Some(info),
                        Err(e) => {
                            last = Some(e);
                            None
                        }
                    });
                match valid {
                    Some(info) => name = info.name,
                    None => {
                        let why = last.map(|e| e.to_string()).unwrap_or_default();
                        return Err(AttestVerifyError::Cert(format!(
                            "none was valid at {}, when the camera signed the frames: {why}",
                            crate::clock::rfc3339_s(t)
                        )));
                    }
                }
            }
            Some(name)
        }
        None => None,
    };
    Ok(AttestReport {
        camera_peer: holder,
        camera_name,
        gops_verified: c.gops,
        frames_verified: c.frames,
        frames_total: frames.len() as u64,
        gops_unattested: c.unattested,
        attested_us: c.span_us,
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
            frames.insert((seq, fields(seq).capture_unix_us), frame_hash(&fields(seq), &payload));
            digests.extend(h.push("c", &fields(seq), &payload, 0));
        }
        // GOPs 0-2, 3-5, 6-8 closed.
        assert_eq!(digests.len(), 3);
        let got = |f: &FrameHashes| {
            let c = check_gops("c", f, &digests).expect("valid");
            (c.gops, c.frames, c.unattested)
        };
        assert_eq!(got(&frames), (3, 9, 0));
        assert_eq!(check_gops("c", &frames, &digests).expect("valid").span_us, Some((0, 8)));
        let mut partial = frames.clone();
        partial.remove(&(4, fields(4).capture_unix_us));
        assert_eq!(got(&partial), (2, 6, 1));
        let mut changed = frames.clone();
        changed.insert((7, fields(7).capture_unix_us), [0; 32]);
        assert!(matches!(
            check_gops("c", &changed, &digests),
            Err(AttestVerifyError::Tampered { first: 6, last: 8, .. })
        ));
    }

    #[test]
    fn a_restarted_camera_numbering_from_zero_again_verifies_per_session() {
        let mut digests = Vec::new();
        let mut frames = FrameHashes::new();
        for session in 0..2i64 {
            let mut h = GopHasher::default();
            for seq in 0..7u64 {
                let mut f = fields(seq);
                f.capture_unix_us += session * 1_000;
                let payload = [seq as u8 ^ session as u8; 8];
                frames.insert((seq, f.capture_unix_us), frame_hash(&f, &payload));
                digests.extend(h.push("c", &f, &payload, 0));
            }
        }
        let c = check_gops("c", &frames, &digests).expect("both sessions verify");
        assert_eq!((c.gops, c.frames, c.unattested), (4, 12, 0));
    }

    #[test]
    fn the_asserted_time_must_follow_what_the_camera_signed() {
        let skew = 60_000_000;
        let (now, attested) = (10_000_000_000, (1_000_000_000, 2_000_000_000));
        check_asserted_time(2_000_000_000, attested, now, skew).expect("right after the footage");
        check_asserted_time(2_000_000_000 - skew, attested, now, skew).expect("within the skew");
        let e = check_asserted_time(1_500_000_000, attested, now, skew).unwrap_err();
        assert!(e.to_string().contains("before the camera signed"), "{e}");
        let e = check_asserted_time(now + skew + 1, attested, now, skew).unwrap_err();
        assert!(e.to_string().contains("in the future"), "{e}");
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
