//! Camera-signed GOP digests: how a recording is shown to be what the camera published.
//!
//! The camera node hashes every frame it publishes, sealed (header fields and AEAD
//! ciphertext, exactly what every viewer and recorder receives), chains the hashes of one
//! GOP (a keyframe and the frames up to the next one) and signs the result with its node
//! key: a [`pb::GopDigest`]. Recorders fetch the signed digests over `/camesh/attest/1`
//! ([`serve`] on the camera, `crate::nvr::attestations` on the NVR) and keep them next to
//! the segments; an export carries those that cover it, with the camera's membership
//! certificate (the fleet root binds the camera id to the camera's key). [`verify`]
//! recomputes each GOP from the exported segments: a frame changed after the camera sent
//! it fails, even if whoever changed it also re-signed the NVR's manifest.
//!
//! A GOP the camera did not see whole (its local queue skipped) is not signed; a GOP the
//! recorder did not receive whole is "unattested" in the report, not "tampered".
//!
//! This module is pure (hashing, signing, checking); [`serve`] is the camera's IO.

pub mod serve;
pub mod verify;

use camesh_proto::pb;
use libp2p::identity::{Keypair, PublicKey};
use prost::Message;
use sha2::{Digest, Sha256};

/// The attestation protocol.
pub const ATTEST_PROTOCOL: &str = "/camesh/attest/1";
/// Largest attestation item (a certificate or a signed digest) accepted.
pub const MAX_ITEM_BYTES: usize = 16 << 10;
const DIGEST_CONTEXT: &[u8] = b"camesh-v1/gop-digest\0";
const FRAME_CONTEXT: &[u8] = b"camesh-v1/frame\0";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AttestError {
    #[error("attestation is not valid: {0}")]
    Malformed(String),
    #[error("attestation signature is invalid")]
    BadSignature,
}

/// The header fields of a frame that the camera attests (all but `skipped_before`,
/// which differs per subscriber).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameFields {
    pub sequence: u64,
    pub pts_90k: u64,
    pub dts_90k: u64,
    pub capture_unix_us: i64,
    pub key_epoch: u64,
    pub keyframe: bool,
}

impl From<&pb::FrameHeader> for FrameFields {
    fn from(h: &pb::FrameHeader) -> Self {
        FrameFields {
            sequence: h.sequence,
            pts_90k: h.pts_90k,
            dts_90k: h.dts_90k,
            capture_unix_us: h.capture_unix_us,
            key_epoch: h.key_epoch,
            keyframe: h.keyframe,
        }
    }
}

/// The hash of one sealed frame.
pub fn frame_hash(f: &FrameFields, payload: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(FRAME_CONTEXT);
    h.update(f.sequence.to_be_bytes());
    h.update(f.pts_90k.to_be_bytes());
    h.update(f.dts_90k.to_be_bytes());
    h.update(f.capture_unix_us.to_be_bytes());
    h.update(f.key_epoch.to_be_bytes());
    h.update([u8::from(f.keyframe)]);
    h.update(payload);
    h.finalize().into()
}

#[derive(Debug)]
struct Gop {
    first: FrameFields,
    last: FrameFields,
    frames: u32,
    chain: Sha256,
}

/// Builds GOP digests from the frames a camera publishes, in order.
#[derive(Debug, Default)]
pub struct GopHasher {
    cur: Option<Gop>,
}

impl GopHasher {
    /// Feeds the next frame (with the frames the local queue skipped before it); returns
    /// the digest of the GOP a keyframe closes. A skip or a sequence gap drops the GOP.
    pub fn push(
        &mut self,
        camera: &str,
        f: &FrameFields,
        payload: &[u8],
        skipped_before: u32,
    ) -> Option<pb::GopDigest> {
        let hash = frame_hash(f, payload);
        if f.keyframe {
            let done = self.cur.take().map(|g| finish(camera, g));
            let mut chain = Sha256::new();
            chain.update(hash);
            self.cur = Some(Gop {
                first: *f,
                last: *f,
                frames: 1,
                chain,
            });
            return done;
        }
        match &mut self.cur {
            Some(g) if skipped_before == 0 && f.sequence == g.last.sequence.wrapping_add(1) && g.frames < u32::MAX => {
                g.chain.update(hash);
                g.last = *f;
                g.frames += 1;
            }
            _ => self.cur = None,
        }
        None
    }
}

fn finish(camera: &str, g: Gop) -> pb::GopDigest {
    pb::GopDigest {
        camera_id: camera.to_owned(),
        first_sequence: g.first.sequence,
        last_sequence: g.last.sequence,
        frames: g.frames,
        first_capture_unix_us: g.first.capture_unix_us,
        last_capture_unix_us: g.last.capture_unix_us,
        sha256: g.chain.finalize().to_vec().into(),
    }
}

/// The digest of frames given by their hashes, in sequence order.
pub fn chain_of(hashes: impl IntoIterator<Item = [u8; 32]>) -> [u8; 32] {
    let mut chain = Sha256::new();
    for h in hashes {
        chain.update(h);
    }
    chain.finalize().into()
}

fn signed_bytes(body: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(DIGEST_CONTEXT.len() + body.len());
    v.extend_from_slice(DIGEST_CONTEXT);
    v.extend_from_slice(body);
    v
}

/// Signs a digest with the camera node's key.
pub fn sign(d: &pb::GopDigest, key: &Keypair) -> Result<pb::Signed, AttestError> {
    let body = d.encode_to_vec();
    let signature = key
        .sign(&signed_bytes(&body))
        .map_err(|e| AttestError::Malformed(e.to_string()))?;
    Ok(pb::Signed {
        body: body.into(),
        signature: signature.into(),
        signer: key.public().encode_protobuf().into(),
    })
}

/// Checks a signed digest's signature; returns the signer and the digest.
pub fn open(s: &pb::Signed) -> Result<(PublicKey, pb::GopDigest), AttestError> {
    if s.body.len() > MAX_ITEM_BYTES {
        return Err(AttestError::Malformed("too large".into()));
    }
    let key = PublicKey::try_decode_protobuf(&s.signer).map_err(|e| AttestError::Malformed(e.to_string()))?;
    if !key.verify(&signed_bytes(&s.body), &s.signature) {
        return Err(AttestError::BadSignature);
    }
    let d = pb::GopDigest::decode(s.body.clone()).map_err(|e| AttestError::Malformed(e.to_string()))?;
    if d.sha256.len() != 32 || d.last_sequence < d.first_sequence || d.frames == 0 {
        return Err(AttestError::Malformed("inconsistent digest".into()));
    }
    Ok((key, d))
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn fields(seq: u64, keyframe: bool) -> FrameFields {
        FrameFields {
            sequence: seq,
            pts_90k: seq * 3000,
            dts_90k: seq * 3000,
            capture_unix_us: 1_000_000 + seq as i64 * 33_333,
            key_epoch: 1,
            keyframe,
        }
    }

    #[test]
    fn gops_close_at_keyframes_and_skips_drop_them() {
        let mut h = GopHasher::default();
        let mut out = Vec::new();
        for seq in 0..10u64 {
            // Keyframes at 0, 4, 8; a skip before 6 breaks the second GOP.
            let skipped = u32::from(seq == 6);
            if let Some(d) = h.push("cam1", &fields(seq, seq.is_multiple_of(4)), &[seq as u8; 10], skipped) {
                out.push(d);
            }
        }
        assert_eq!(out.len(), 1, "{out:?}");
        let d = &out[0];
        assert_eq!((d.first_sequence, d.last_sequence, d.frames), (0, 3, 4));
        let expect = chain_of((0..4u64).map(|s| frame_hash(&fields(s, s == 0), &[s as u8; 10])));
        assert_eq!(d.sha256.as_ref(), &expect[..]);
    }

    #[test]
    fn signatures_bind_the_digest() {
        let key = Keypair::generate_ed25519();
        let mut h = GopHasher::default();
        h.push("cam1", &fields(0, true), b"a", 0);
        let d = h.push("cam1", &fields(1, true), b"b", 0).expect("closed");
        let s = sign(&d, &key).expect("signs");
        let (signer, back) = open(&s).expect("valid");
        assert_eq!(signer, key.public());
        assert_eq!(back, d);
        let mut bad = s.clone();
        let mut body = bad.body.to_vec();
        body[3] ^= 1;
        bad.body = body.into();
        assert!(open(&bad).is_err());
        assert!(open(&pb::Signed::default()).is_err());
    }
}
