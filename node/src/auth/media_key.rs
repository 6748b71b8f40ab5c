//! End-to-end media encryption, pure: one AES-256-GCM key per (camera, epoch).
//!
//! The source seals each frame once, before fan-out, so relays, forwarders and NVR disks
//! only ever hold ciphertext. The nonce is the frame's sequence number (unique under a
//! key: a key lives for one epoch of one hub, and sequences only grow); the associated
//! data is the header fields that no hop may change (sequence, pts, dts, capture time,
//! keyframe flag, epoch). `skipped_before` is per subscriber and deliberately outside.
//! Tags are the full 16 bytes. There is no "null" key and no way to turn this off.
//!
//! The cipher is ring's AES-256-GCM (already in the build through rustls/libp2p-tls): with
//! AES-NI and carry-less multiply it seals 4-6x faster than RustCrypto's `aes-gcm` did on
//! the benchmark machine, and sealing runs once per frame on the camera and opening once
//! per frame on every viewer (docs/BENCHMARKS.md). Sealing writes into one `BytesMut`
//! sized for payload + tag (and, on the hub, the frame's wire prefix in front), so a frame
//! costs exactly one allocation.

use bytes::{Bytes, BytesMut};
use camesh_proto::pb::FrameHeader;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};

use std::sync::Arc;

use super::AuthError;

pub const KEY_LEN: usize = 32;
pub const TAG_LEN: usize = 16;

#[derive(Clone)]
pub struct MediaKey {
    pub epoch: u64,
    key: [u8; KEY_LEN],
    cipher: Arc<LessSafeKey>,
}

impl std::fmt::Debug for MediaKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediaKey")
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

fn nonce(sequence: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&sequence.to_be_bytes());
    Nonce::assume_unique_for_key(n)
}

fn aad(h: &FrameHeader) -> [u8; 41] {
    let mut a = [0u8; 41];
    a[0..8].copy_from_slice(&h.sequence.to_be_bytes());
    a[8..16].copy_from_slice(&h.pts_90k.to_be_bytes());
    a[16..24].copy_from_slice(&h.dts_90k.to_be_bytes());
    a[24..32].copy_from_slice(&h.capture_unix_us.to_be_bytes());
    a[32] = u8::from(h.keyframe);
    a[33..41].copy_from_slice(&h.key_epoch.to_be_bytes());
    a
}

impl MediaKey {
    pub fn generate(epoch: u64) -> Self {
        Self::from_array(epoch, rand::random())
    }

    fn from_array(epoch: u64, key: [u8; KEY_LEN]) -> Self {
        Self {
            epoch,
            key,
            // A 32-byte key is always a valid AES-256 key; ring only rejects a wrong length.
            cipher: Arc::new(LessSafeKey::new(
                UnboundKey::new(&AES_256_GCM, &key).expect("32-byte AES-256 key"),
            )),
        }
    }

    pub fn from_bytes(epoch: u64, key: &[u8]) -> Result<Self, AuthError> {
        let arr: [u8; KEY_LEN] = key.try_into().map_err(|_| AuthError::Malformed {
            what: "media key",
            reason: format!("{} bytes, expected {KEY_LEN}", key.len()),
        })?;
        Ok(Self::from_array(epoch, arr))
    }

    pub fn bytes(&self) -> &[u8; KEY_LEN] {
        &self.key
    }

    /// Seals a frame payload; `header.key_epoch` must be this key's epoch.
    pub fn seal(&self, header: &FrameHeader, plaintext: &[u8]) -> Bytes {
        let mut buf = BytesMut::with_capacity(plaintext.len() + TAG_LEN);
        self.seal_into(header, plaintext, &mut buf);
        buf.freeze()
    }

    /// Appends the sealed payload (`plaintext.len() + TAG_LEN` bytes) to `buf`, after
    /// whatever it already holds (a frame's wire prefix, say).
    pub fn seal_into(&self, header: &FrameHeader, plaintext: &[u8], buf: &mut BytesMut) {
        debug_assert_eq!(header.key_epoch, self.epoch);
        let start = buf.len();
        buf.extend_from_slice(plaintext);
        // AES-GCM sealing only fails for messages over 64 GiB; frames are bounded far below.
        let tag = self
            .cipher
            .seal_in_place_separate_tag(nonce(header.sequence), Aad::from(aad(header)), &mut buf[start..])
            .expect("frame within AES-GCM limits");
        buf.extend_from_slice(tag.as_ref());
    }

    /// Opens a sealed payload: fails if any byte of it or of the protected header changed.
    pub fn open(&self, header: &FrameHeader, ciphertext: &[u8]) -> Result<Bytes, AuthError> {
        if header.key_epoch != self.epoch {
            return Err(AuthError::Refused(format!(
                "frame is for key epoch {}, this key is epoch {}",
                header.key_epoch, self.epoch
            )));
        }
        let mut buf = BytesMut::from(ciphertext);
        let len = self
            .cipher
            .open_in_place(nonce(header.sequence), Aad::from(aad(header)), &mut buf)
            .map_err(|_| {
                AuthError::Refused(format!(
                    "frame #{} failed authentication (tampered or wrong key)",
                    header.sequence
                ))
            })?
            .len();
        buf.truncate(len);
        Ok(buf.freeze())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn h(seq: u64, epoch: u64) -> FrameHeader {
        FrameHeader {
            sequence: seq,
            pts_90k: seq * 3000,
            dts_90k: seq * 3000,
            capture_unix_us: 7,
            keyframe: seq == 0,
            key_epoch: epoch,
            skipped_before: 0,
            new_key: Default::default(),
            camera_signature: Default::default(),
        }
    }

    #[test]
    fn ciphertext_hides_plaintext_and_has_a_full_tag() {
        let k = MediaKey::generate(1);
        let pt = vec![0x42u8; 1000];
        let ct = k.seal(&h(5, 1), &pt);
        assert_eq!(ct.len(), pt.len() + TAG_LEN);
        assert!(!ct.windows(16).any(|w| w == &pt[..16]));
        assert_eq!(k.open(&h(5, 1), &ct).expect("opens"), pt);
    }

    #[test]
    fn wrong_key_or_epoch_fails() {
        let k = MediaKey::generate(1);
        let ct = k.seal(&h(5, 1), b"frame");
        assert!(MediaKey::generate(1).open(&h(5, 1), &ct).is_err());
        assert!(k.open(&h(5, 2), &ct).is_err());
    }

    proptest! {
        /// Any single flipped bit in the payload or in a protected header field is caught.
        #[test]
        fn tampering_is_detected(pt in proptest::collection::vec(any::<u8>(), 0..600), bit in 0usize..5000, field in 0usize..6) {
            let k = MediaKey::generate(3);
            let hdr = h(9, 3);
            let ct = k.seal(&hdr, &pt);
            let mut bad = ct.to_vec();
            let i = bit % (bad.len() * 8);
            bad[i / 8] ^= 1 << (i % 8);
            prop_assert!(k.open(&hdr, &bad).is_err());
            let mut h2 = hdr.clone();
            match field {
                0 => h2.sequence += 1,
                1 => h2.pts_90k += 1,
                2 => h2.dts_90k += 1,
                3 => h2.capture_unix_us += 1,
                4 => h2.keyframe = !h2.keyframe,
                _ => h2.skipped_before += 1,
            }
            // skipped_before is per subscriber and not protected; everything else is.
            prop_assert_eq!(k.open(&h2, &ct).is_ok(), field == 5);
        }
    }
}
