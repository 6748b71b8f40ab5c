//! The NVR's storage key: media keys are stored in segments wrapped (AES-256-GCM) under
//! a key that never leaves the NVR, so segment files copied off the disk (or an export's
//! segments) hold ciphertext and wrapped keys only. Only the NVR can turn a recording
//! back into video, and it does so only for a peer whose grant allows playback or export.
//!
//! Wrapped form (pure, `wrap` / `unwrap`):
//! `"CMK1" | nonce:u64 | AES-256-GCM(media key)` with the AEAD's associated data binding
//! the camera (SHA-256 prefix of its id) and the media key epoch, so a wrapped key cannot
//! be moved to another camera or epoch. The storage key is `<data-dir>/nvr-storage.key`
//! (32 random bytes, mode 0600, created on first start).

use std::path::Path;

use bytes::{BufMut, Bytes, BytesMut};
use camesh_proto::pb::FrameHeader;
use sha2::{Digest, Sha256};

use crate::auth::media_key::{MediaKey, KEY_LEN};

pub const STORAGE_KEY_FILE: &str = "nvr-storage.key";
const MAGIC: &[u8; 4] = b"CMK1";
/// The epoch the storage key uses for its own AEAD (never a media epoch).
const STORAGE_EPOCH: u64 = u64::MAX;

#[derive(Debug, thiserror::Error)]
pub enum KeyStoreError {
    #[error("NVR storage key {path}: {reason}")]
    File { path: String, reason: String },
    #[error("stored media key is not valid: {0}")]
    Malformed(&'static str),
    #[error(
        "stored media key of epoch {epoch} does not open with this NVR's storage key (another NVR's, or tampered)"
    )]
    Unwrap { epoch: u64 },
}

/// The NVR's storage key.
#[derive(Clone)]
pub struct KeyStore {
    key: MediaKey,
}

impl std::fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyStore(..)")
    }
}

fn header(camera: &str, epoch: u64, nonce: u64) -> FrameHeader {
    let digest = Sha256::digest(camera.as_bytes());
    let mut cam = [0u8; 8];
    cam.copy_from_slice(&digest[..8]);
    FrameHeader {
        sequence: nonce,
        pts_90k: epoch,
        dts_90k: u64::from_be_bytes(cam),
        key_epoch: STORAGE_EPOCH,
        ..Default::default()
    }
}

impl KeyStore {
    pub fn from_bytes(bytes: &[u8; KEY_LEN]) -> Self {
        // A 32-byte array always is a valid key.
        let key = MediaKey::from_bytes(STORAGE_EPOCH, bytes).expect("32-byte key");
        KeyStore { key }
    }

    /// Loads `<dir>/nvr-storage.key`, or creates it.
    pub fn load_or_create(dir: &Path) -> Result<Self, KeyStoreError> {
        let path = dir.join(STORAGE_KEY_FILE);
        let err = |reason: String| KeyStoreError::File {
            path: path.display().to_string(),
            reason,
        };
        match std::fs::read(&path) {
            Ok(bytes) => {
                let arr: [u8; KEY_LEN] = bytes
                    .as_slice()
                    .try_into()
                    .map_err(|_| err(format!("{} bytes, expected {KEY_LEN}", bytes.len())))?;
                Ok(Self::from_bytes(&arr))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
                let arr: [u8; KEY_LEN] = rand::random();
                crate::identity::write_private(&path, &arr).map_err(|e| err(e.to_string()))?;
                Ok(Self::from_bytes(&arr))
            }
            Err(e) => Err(err(e.to_string())),
        }
    }

    /// Wraps the media key of `camera`'s `epoch` for storage.
    pub fn wrap(&self, camera: &str, epoch: u64, media_key: &[u8]) -> Bytes {
        let nonce: u64 = rand::random();
        let ct = self.key.seal(&header(camera, epoch, nonce), media_key);
        let mut out = BytesMut::with_capacity(12 + ct.len());
        out.put_slice(MAGIC);
        out.put_u64(nonce);
        out.put_slice(&ct);
        out.freeze()
    }

    /// Opens a stored key (read from a segment: bounded, any bytes are safe).
    pub fn unwrap(&self, camera: &str, epoch: u64, stored: &[u8]) -> Result<MediaKey, KeyStoreError> {
        if stored.len() < 12 || &stored[..4] != MAGIC {
            return Err(KeyStoreError::Malformed("no CMK1 header"));
        }
        let mut n = [0u8; 8];
        n.copy_from_slice(&stored[4..12]);
        let plain = self
            .key
            .open(&header(camera, epoch, u64::from_be_bytes(n)), &stored[12..])
            .map_err(|_| KeyStoreError::Unwrap { epoch })?;
        MediaKey::from_bytes(epoch, &plain).map_err(|_| KeyStoreError::Malformed("not a 32-byte media key"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrapped_keys_open_only_for_their_camera_epoch_and_store() {
        let store = KeyStore::from_bytes(&[7; KEY_LEN]);
        let media = MediaKey::generate(3);
        let w = store.wrap("cam1", 3, media.bytes());
        assert!(!w.windows(KEY_LEN).any(|x| x == media.bytes()), "stored in the clear");
        let back = store.unwrap("cam1", 3, &w).expect("opens");
        assert_eq!(back.bytes(), media.bytes());
        assert_eq!(back.epoch, 3);
        assert!(store.unwrap("cam2", 3, &w).is_err());
        assert!(store.unwrap("cam1", 4, &w).is_err());
        assert!(KeyStore::from_bytes(&[8; KEY_LEN]).unwrap("cam1", 3, &w).is_err());
        let mut bad = w.to_vec();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(store.unwrap("cam1", 3, &bad).is_err());
        assert!(store.unwrap("cam1", 3, b"").is_err());
        assert!(store.unwrap("cam1", 3, b"CMK1short").is_err());
    }

    #[test]
    fn the_key_file_is_created_once_and_reloaded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = KeyStore::load_or_create(dir.path()).expect("created");
        let w = a.wrap("cam1", 1, &[1; KEY_LEN]);
        let b = KeyStore::load_or_create(dir.path()).expect("loaded");
        assert_eq!(b.unwrap("cam1", 1, &w).expect("same key").bytes(), &[1; KEY_LEN]);
        std::fs::write(dir.path().join(STORAGE_KEY_FILE), b"short").expect("write");
        assert!(KeyStore::load_or_create(dir.path()).is_err());
    }
}
