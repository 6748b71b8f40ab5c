//! The NVR's storage key: media keys are stored in segments wrapped (AES-256-GCM) under
//! a key that never leaves the NVR, so segment files copied off the disk (or an export's
//! segments) hold ciphertext and wrapped keys only. Only the NVR can turn a recording
//! back into video, and it does so only for a peer whose grant allows playback or export.
//!
//! Wrapped form (pure, `wrap` / `unwrap`):
//! `"CMK1" | nonce:u64 | AES-256-GCM(media key)` with the AEAD's associated data binding
//! the camera (SHA-256 prefix of its id) and the media key epoch, so a wrapped key cannot
//! be moved to another camera or epoch.
//!
//! Where the storage key lives is `[nvr] storage_key` ([`KeySource`]): by default
//! `<data-dir>/nvr-storage.key` (32 random bytes, mode 0600, created on first start),
//! which sits beside the recordings, so a stolen disk holds both; or `file:<path>` (on
//! another device: a USB key, a TPM-backed or network mount; created there if missing),
//! `env:<VAR>` or `credential:<name>` (systemd's `$CREDENTIALS_DIRECTORY`, e.g. an
//! encrypted credential), never written by the NVR. A key file that group or others may
//! read is refused; a key file on the same filesystem as the recordings is reported
//! ([`Opened::beside_recordings`]) and the node warns at every start.

use std::path::{Path, PathBuf};

use bytes::{BufMut, Bytes, BytesMut};
use camesh_proto::pb::FrameHeader;
use sha2::{Digest, Sha256};

use crate::auth::media_key::{MediaKey, KEY_LEN};

pub const STORAGE_KEY_FILE: &str = "nvr-storage.key";
/// The systemd variable naming the credentials folder.
pub const CREDENTIALS_DIRECTORY: &str = "CREDENTIALS_DIRECTORY";
const MAGIC: &[u8; 4] = b"CMK1";
/// The epoch the storage key uses for its own AEAD (never a media epoch).
const STORAGE_EPOCH: u64 = u64::MAX;

#[derive(Debug, thiserror::Error)]
pub enum KeyStoreError {
    #[error("NVR storage key {path}: {reason}")]
    File { path: String, reason: String },
    #[error("NVR storage key ([nvr] storage_key = {spec:?}): {reason}")]
    Source { spec: String, reason: String },
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
        load_file(&dir.join(STORAGE_KEY_FILE), true)
    }

    /// Opens the storage key `[nvr] storage_key` names (`data_dir` for the default),
    /// and says whether it sits on the filesystem of `recordings`.
    pub fn open(spec: &str, data_dir: &Path, recordings: &Path) -> Result<Opened, KeyStoreError> {
        let source = KeySource::parse(spec, data_dir)?;
        let store = match &source {
            KeySource::File { path, create } => load_file(path, *create)?,
            KeySource::Env(var) => {
                let text = std::env::var(var).map_err(|e| source.err(format!("${var}: {e}")))?;
                Self::from_bytes(
                    &decode_key(text.as_bytes())
                        .ok_or_else(|| source.err(format!("${var} is not {KEY_LEN} bytes in hex")))?,
                )
            }
        };
        let beside = match &source {
            KeySource::File { path, .. } => same_filesystem(path, recordings),
            KeySource::Env(_) => false,
        };
        Ok(Opened {
            store,
            place: source.describe(),
            beside_recordings: beside,
        })
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

/// An opened storage key and where it came from.
#[derive(Debug)]
pub struct Opened {
    pub store: KeyStore,
    /// Where it is, for people (a path or `$VAR`).
    pub place: String,
    /// It is a file on the same filesystem as the recordings: whoever takes that disk
    /// can read the video.
    pub beside_recordings: bool,
}

/// Where the storage key comes from (`[nvr] storage_key`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// A key file; created (0600) when missing if `create`.
    File { path: PathBuf, create: bool },
    /// An environment variable holding the key in hex (never written).
    Env(String),
}

impl KeySource {
    /// `""` (the data folder's key file), `file:<absolute path>`, `env:<VAR>`,
    /// `credential:<name>` (a file in systemd's `$CREDENTIALS_DIRECTORY`, not created).
    pub fn parse(spec: &str, data_dir: &Path) -> Result<KeySource, KeyStoreError> {
        let err = |reason: &str| KeyStoreError::Source {
            spec: spec.to_owned(),
            reason: reason.to_owned(),
        };
        if spec.is_empty() {
            return Ok(KeySource::File {
                path: data_dir.join(STORAGE_KEY_FILE),
                create: true,
            });
        }
        if let Some(p) = spec.strip_prefix("file:") {
            let path = PathBuf::from(p);
            if !path.is_absolute() {
                return Err(err("the path must be absolute"));
            }
            return Ok(KeySource::File { path, create: true });
        }
        if let Some(var) = spec.strip_prefix("env:") {
            if var.is_empty() || !var.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(err("not an environment variable name"));
            }
            return Ok(KeySource::Env(var.to_owned()));
        }
        if let Some(name) = spec.strip_prefix("credential:") {
            if name.is_empty() || name.contains('/') || name.starts_with('.') {
                return Err(err("not a credential name"));
            }
            let dir = std::env::var_os(CREDENTIALS_DIRECTORY)
                .ok_or_else(|| err("$CREDENTIALS_DIRECTORY is not set (LoadCredential= in the systemd unit)"))?;
            return Ok(KeySource::File {
                path: Path::new(&dir).join(name),
                create: false,
            });
        }
        Err(err("use file:<absolute path>, env:<VAR> or credential:<name>"))
    }

    fn describe(&self) -> String {
        match self {
            KeySource::File { path, .. } => path.display().to_string(),
            KeySource::Env(var) => format!("${var}"),
        }
    }

    fn err(&self, reason: String) -> KeyStoreError {
        KeyStoreError::Source {
            spec: self.describe(),
            reason,
        }
    }
}

/// A key: 32 raw bytes, or 64 hex digits (a trailing newline allowed).
fn decode_key(bytes: &[u8]) -> Option<[u8; KEY_LEN]> {
    if let Ok(raw) = <[u8; KEY_LEN]>::try_from(bytes) {
        return Some(raw);
    }
    let text = std::str::from_utf8(bytes).ok()?.trim();
    if text.len() != 2 * KEY_LEN {
        return None;
    }
    let mut out = [0u8; KEY_LEN];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Reads a key file (refused when group or others may read or write it), or creates it.
fn load_file(path: &Path, create: bool) -> Result<KeyStore, KeyStoreError> {
    let err = |reason: String| KeyStoreError::File {
        path: path.display().to_string(),
        reason,
    };
    match std::fs::read(path) {
        Ok(bytes) => {
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let mode = std::fs::metadata(path)
                    .map_err(|e| err(e.to_string()))?
                    .permissions()
                    .mode();
                if mode & 0o077 != 0 {
                    return Err(err(format!(
                        "group or others may read it (mode {:04o}): the key to every recording must be its owner's only (chmod 600)",
                        mode & 0o7777
                    )));
                }
            }
            let arr = decode_key(&bytes).ok_or_else(|| {
                err(format!(
                    "{} bytes, expected {KEY_LEN} (or {} hex digits)",
                    bytes.len(),
                    2 * KEY_LEN
                ))
            })?;
            Ok(KeyStore::from_bytes(&arr))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
            }
            let arr: [u8; KEY_LEN] = rand::random();
            crate::identity::write_private(path, &arr).map_err(|e| err(e.to_string()))?;
            Ok(KeyStore::from_bytes(&arr))
        }
        Err(e) => Err(err(e.to_string())),
    }
}

/// Whether `file` is on the filesystem of `folder` (or of the nearest existing parent).
fn same_filesystem(file: &Path, folder: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let dev = |p: &Path| p.ancestors().find_map(|a| std::fs::metadata(a).ok()).map(|m| m.dev());
        matches!((dev(file), dev(folder)), (Some(a), Some(b)) if a == b)
    }
    #[cfg(not(unix))]
    {
        let _ = (file, folder);
        true
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

    #[test]
    fn key_sources_open_and_say_where_the_key_is() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let (data, recs) = (dir.path().join("data"), dir.path().join("data/recordings"));
        std::fs::create_dir_all(&recs).expect("mkdir");
        // The default: beside the recordings, and said so.
        let o = KeyStore::open("", &data, &recs).expect("default");
        assert!(o.beside_recordings && o.place.ends_with(STORAGE_KEY_FILE));
        let w = o.store.wrap("cam1", 1, &[1; KEY_LEN]);
        // A key readable by others is refused, with the reason.
        let path = data.join(STORAGE_KEY_FILE);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let e = KeyStore::open("", &data, &recs).unwrap_err().to_string();
        assert!(e.contains("mode 0644") && e.contains("chmod 600"), "{e}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        // The same key in hex from the environment: not beside anything.
        let hex: String = std::fs::read(&path)
            .expect("key")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        std::env::set_var("CAMESH_TEST_STORAGE_KEY", &hex);
        let o = KeyStore::open("env:CAMESH_TEST_STORAGE_KEY", &data, &recs).expect("env");
        assert!(!o.beside_recordings && o.place == "$CAMESH_TEST_STORAGE_KEY");
        assert!(o.store.unwrap("cam1", 1, &w).is_ok(), "the same key");
        let e = KeyStore::open("env:CAMESH_TEST_NO_SUCH_KEY", &data, &recs)
            .unwrap_err()
            .to_string();
        assert!(e.contains("$CAMESH_TEST_NO_SUCH_KEY"), "{e}");
        // A file elsewhere is created there; bad specs are refused.
        let elsewhere = dir.path().join("usb/nvr.key");
        let spec = format!("file:{}", elsewhere.display());
        KeyStore::open(&spec, &data, &recs).expect("created elsewhere");
        assert!(elsewhere.exists());
        for bad in ["file:relative.key", "env:", "env:A-B", "credential:../x", "nonsense"] {
            assert!(KeySource::parse(bad, &data).is_err(), "{bad}");
        }
        assert_eq!(
            decode_key(format!("{hex}\n").as_bytes()).map(|k| k.len()),
            Some(KEY_LEN)
        );
    }
}
