//! The node's ed25519 identity: one key file per data directory, created with mode
//! 0600, loaded on every start so the PeerId (what viewers dial) never changes. Beside
//! it, the WebRTC-direct DTLS certificate ([`WEBRTC_CERT_FILE`]), kept for the same
//! reason: its hash is the `/certhash/...` part of the node's WebRTC-direct address.

use std::io::Write;
use std::path::Path;

use libp2p::identity::Keypair;

pub const KEY_FILE: &str = "identity.key";
/// The WebRTC-direct certificate and its private key, PEM (webrtc-rs's form: an
/// `EXPIRES` block, then the key and the certificate). Its expiry is rcgen's default, the
/// year 4096: the certificate is trusted by its hash, never by its dates.
pub const WEBRTC_CERT_FILE: &str = "webrtc.pem";

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("identity key {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("identity key {path} is not a valid ed25519 key: {reason}")]
    Corrupt { path: String, reason: String },
    #[error("identity key {path} is readable by others (mode {mode:o}); run: chmod 600 {path}")]
    TooOpen { path: String, mode: u32 },
    #[error(
        "WebRTC certificate {path} is not valid ({reason}); delete it to make a new one (the node's /certhash changes)"
    )]
    BadCertificate { path: String, reason: String },
}

/// Loads `<dir>/webrtc.pem`, or creates it (and `dir`) if it does not exist.
pub fn webrtc_certificate(dir: &Path) -> Result<libp2p_webrtc::tokio::Certificate, IdentityError> {
    use libp2p_webrtc::tokio::Certificate;
    let path = dir.join(WEBRTC_CERT_FILE);
    let shown = path.display().to_string();
    let io = |source| IdentityError::Io {
        path: shown.clone(),
        source,
    };
    let bad = |reason: String| IdentityError::BadCertificate {
        path: shown.clone(),
        reason,
    };
    match std::fs::read_to_string(&path) {
        Ok(pem) => {
            check_mode(&path, &shown)?;
            // webrtc-rs slices the EXPIRES block without checking its length: keep a
            // truncated or foreign file from reaching that.
            let well_formed =
                pem.starts_with("-----BEGIN EXPIRES-----") && pem.contains("PRIVATE") && pem.contains("CERTIFICATE");
            if !well_formed {
                return Err(bad("not a certificate written by camesh-node".into()));
            }
            std::panic::catch_unwind(|| Certificate::from_pem(&pem))
                .map_err(|_| bad("malformed PEM".into()))?
                .map_err(|e| bad(format!("{e}: {:?}", std::error::Error::source(&e))))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).map_err(io)?;
            // The rng argument is unused by libp2p-webrtc (rcgen draws its own key), but its
            // type is rand 0.10's.
            let cert = Certificate::generate(&mut rand_webrtc::rng()).map_err(|e| bad(e.to_string()))?;
            write_private(&path, cert.serialize_pem().as_bytes()).map_err(io)?;
            Ok(cert)
        }
        Err(e) => Err(io(e)),
    }
}

/// Loads `<dir>/identity.key`, or creates it (and `dir`) if it does not exist.
pub fn load_or_create(dir: &Path) -> Result<Keypair, IdentityError> {
    let path = dir.join(KEY_FILE);
    let shown = path.display().to_string();
    let io = |source| IdentityError::Io {
        path: shown.clone(),
        source,
    };
    match std::fs::read(&path) {
        Ok(bytes) => {
            check_mode(&path, &shown)?;
            Keypair::from_protobuf_encoding(&bytes).map_err(|e| IdentityError::Corrupt {
                path: shown.clone(),
                reason: e.to_string(),
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).map_err(io)?;
            let key = Keypair::generate_ed25519();
            // Encoding a freshly generated ed25519 key cannot fail.
            let bytes = key.to_protobuf_encoding().expect("ed25519 key encodes");
            write_private(&path, &bytes).map_err(io)?;
            Ok(key)
        }
        Err(e) => Err(io(e)),
    }
}

/// Writes a new secret file readable only by its owner (mode 0600), and syncs it.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// Writes or replaces a file that may hold secrets (config.toml: RTSP passwords) so that
/// only its owner can read it (mode 0600, also when it replaces a file that was wider):
/// a temporary file beside it, synced, then renamed into place.
pub fn replace_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file path"))?;
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    let _ = std::fs::remove_file(&tmp);
    write_private(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

#[cfg(unix)]
fn check_mode(path: &Path, shown: &str) -> Result<(), IdentityError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .map_err(|source| IdentityError::Io {
            path: shown.to_owned(),
            source,
        })?
        .permissions()
        .mode()
        & 0o777;
    if mode & 0o077 != 0 {
        return Err(IdentityError::TooOpen {
            path: shown.to_owned(),
            mode,
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_mode(_: &Path, _: &str) -> Result<(), IdentityError> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_persists_with_private_mode() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = load_or_create(dir.path()).expect("create");
        let b = load_or_create(dir.path()).expect("load");
        assert_eq!(a.public().to_peer_id(), b.public().to_peer_id());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(KEY_FILE))
                .expect("meta")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[cfg(unix)]
    #[test]
    fn a_private_file_replaces_a_wider_one_with_mode_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.toml");
        std::fs::write(&path, "old").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        replace_private(&path, b"rtsp password").expect("replaced");
        assert_eq!(std::fs::read(&path).expect("read"), b"rtsp password");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        replace_private(&path, b"again").expect("replaced twice");
        assert_eq!(std::fs::read(&path).expect("read"), b"again");
    }

    #[test]
    fn webrtc_certificate_persists_with_private_mode() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = webrtc_certificate(dir.path()).expect("create");
        let b = webrtc_certificate(dir.path()).expect("load");
        assert_eq!(a.fingerprint(), b.fingerprint(), "the /certhash stays");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(WEBRTC_CERT_FILE))
                .expect("meta")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let other = tempfile::tempdir().expect("tempdir");
        assert_ne!(
            webrtc_certificate(other.path()).expect("create").fingerprint(),
            a.fingerprint()
        );
        for garbage in ["garbage", "-----BEGIN EXPIRES-----\nAA==\n-----END EXPIRES-----\n"] {
            let path = other.path().join(WEBRTC_CERT_FILE);
            std::fs::remove_file(&path).expect("rm");
            write_private(&path, garbage.as_bytes()).expect("write");
            let e = webrtc_certificate(other.path()).unwrap_err();
            assert!(e.to_string().contains("delete it"), "{e}");
        }
    }

    #[test]
    fn corrupt_key_is_a_clear_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(KEY_FILE);
        std::fs::write(&path, b"garbage").expect("write");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        }
        let e = load_or_create(dir.path()).unwrap_err();
        assert!(e.to_string().contains("not a valid"), "{e}");
    }
}
