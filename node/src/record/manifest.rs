//! Export manifests: the SHA-256 of every segment an export came from (and of the MP4),
//! signed with an ed25519 key, so anyone holding the segments can show the export was
//! not tampered with. [`verify`] recomputes every hash and checks the signature; one
//! changed byte in a segment fails it.
//!
//! The signature covers `"camesh-v1/export-manifest" || 0x00 || JSON(body)`; the
//! manifest file is `{ body, signer, signature }` with the signer's public key in
//! libp2p's protobuf encoding and both in hex. A segment still being written is hashed
//! over the length the index knew (`bytes`): what was recorded then is what is attested.
//! The NVR signs with its node key and adds its fleet membership certificate
//! (`signer_cert`, outside the signed body: the fleet root signed it), so a verifier with
//! only the fleet root public key can tell the signer was an NVR of the fleet when it
//! signed ([`verify_signer_cert`]). What this attests is the NVR's custody: the frames
//! are the camera's AEAD ciphertext, but the NVR holds their keys, so it is not a
//! signature of the camera itself.

use std::io::Read;
use std::path::{Path, PathBuf};

use libp2p::identity::{Keypair, PublicKey};
use libp2p::PeerId;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::segment::SegmentSummary;
use crate::clock::now_unix_us;

/// The manifest format this code writes and verifies.
pub const FORMAT: &str = "camesh-export-manifest/1";
/// Domain separation for the signature.
const SIGNING_CONTEXT: &[u8] = b"camesh-v1/export-manifest\0";
/// Largest manifest accepted (a segment entry is ~250 bytes: ~60k segments).
pub const MAX_MANIFEST_BYTES: usize = 16 << 20;

/// Why a manifest cannot be made or read.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{}: cannot {op}: {source}", path.display())]
    Io {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: has {actual} bytes, fewer than the {expected} to hash", path.display())]
    Short { path: PathBuf, expected: u64, actual: u64 },
    #[error("cannot sign the manifest: {0}")]
    Sign(String),
    #[error("manifest is not valid: {0}")]
    Parse(String),
}

/// Why verification failed: the export cannot be shown untampered.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("manifest format {0:?} is not {FORMAT:?}")]
    Format(String),
    #[error("the manifest's signer key cannot be read: {0}")]
    BadSignerKey(String),
    #[error("the manifest's signature is invalid: the manifest was changed or signed by another key")]
    BadSignature,
    /// Peer ids, as text.
    #[error("the manifest is signed by {got}, not by the expected {expected}")]
    WrongSigner { expected: String, got: String },
    #[error("segment {file} is listed in the manifest but was not given")]
    MissingSegment { file: String },
    #[error("segment {file} ({}) does not match the manifest: SHA-256 {actual}, expected {expected}", path.display())]
    SegmentMismatch {
        file: String,
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("exported file {} does not match the manifest: SHA-256 {actual}, expected {expected}", path.display())]
    ExportMismatch {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("the manifest lists no exported file to check {} against", .0.display())]
    NoExportInManifest(PathBuf),
    #[error("the manifest's signer certificate does not check out: {0}")]
    SignerCert(String),
    #[error(transparent)]
    Read(#[from] ManifestError),
}

/// One segment's attested content.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentHash {
    /// `<camera>/<name>.cseg`, relative to the segments folder.
    pub file: String,
    pub start_us: i64,
    pub first_us: Option<i64>,
    pub last_us: Option<i64>,
    /// How many bytes from the start of the file are hashed.
    pub bytes: u64,
    pub sealed: bool,
    pub sha256: String,
}

/// The exported file's hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileHash {
    pub name: String,
    pub bytes: u64,
    pub sha256: String,
}

impl FileHash {
    /// Of bytes hashed as they were sent (an export streamed to a peer).
    pub fn of_digest(name: &str, bytes: u64, digest: Sha256) -> FileHash {
        FileHash {
            name: name.to_owned(),
            bytes,
            sha256: hex(&digest.finalize()),
        }
    }

    /// Of a file.
    pub fn of_file(path: &Path) -> Result<FileHash, ManifestError> {
        let bytes = file_len(path)?;
        Ok(FileHash {
            name: path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            bytes,
            sha256: hash_prefix(path, bytes)?,
        })
    }
}

/// What is signed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestBody {
    pub format: String,
    pub camera: String,
    pub from_us: i64,
    pub to_us: i64,
    pub created_us: i64,
    pub segments: Vec<SegmentHash>,
    pub export: Option<FileHash>,
}

/// A signed manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub body: ManifestBody,
    /// The signer's public key, libp2p protobuf encoding, hex.
    pub signer: String,
    /// ed25519 signature, hex.
    pub signature: String,
    /// The signer's fleet membership certificate (`Signed` protobuf, hex); empty if none.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub signer_cert: String,
}

/// What a successful verification checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyReport {
    pub signer: PeerId,
    pub segments: usize,
    pub bytes: u64,
    pub export_checked: bool,
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    s
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    s.as_bytes()
        .chunks(2)
        .map(|p| Some(digit(p[0])? << 4 | digit(p[1])?))
        .collect()
}

/// SHA-256 (hex) of the first `len` bytes of a file.
pub fn hash_prefix(path: &Path, len: u64) -> Result<String, ManifestError> {
    let io = |op| {
        let path = path.to_owned();
        move |source| ManifestError::Io { path, op, source }
    };
    let file = std::fs::File::open(path).map_err(io("open"))?;
    let actual = file.metadata().map_err(io("read the size of"))?.len();
    if actual < len {
        return Err(ManifestError::Short {
            path: path.to_owned(),
            expected: len,
            actual,
        });
    }
    let mut reader = std::io::BufReader::with_capacity(256 << 10, file.take(len));
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 << 10];
    loop {
        let n = reader.read(&mut buf).map_err(io("read"))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

fn file_len(path: &Path) -> Result<u64, ManifestError> {
    std::fs::metadata(path)
        .map(|m| m.len())
        .map_err(|source| ManifestError::Io {
            path: path.to_owned(),
            op: "read the size of",
            source,
        })
}

fn signed_bytes(body: &ManifestBody) -> Result<Vec<u8>, ManifestError> {
    let mut out = SIGNING_CONTEXT.to_vec();
    serde_json::to_writer(&mut out, body).map_err(|e| ManifestError::Parse(e.to_string()))?;
    Ok(out)
}

impl Manifest {
    /// Hashes the segments (files under `segments_dir`), adds the exported file's hash,
    /// and signs.
    pub fn build(
        segments_dir: &Path,
        camera: &str,
        from_us: i64,
        to_us: i64,
        segments: &[SegmentSummary],
        export: Option<FileHash>,
        key: &Keypair,
    ) -> Result<Manifest, ManifestError> {
        let segments = segments
            .iter()
            .map(|s| {
                Ok(SegmentHash {
                    file: s.file.clone(),
                    start_us: s.start_us,
                    first_us: s.first_us,
                    last_us: s.last_us,
                    bytes: s.bytes,
                    sealed: s.sealed,
                    sha256: hash_prefix(&segments_dir.join(&s.file), s.bytes)?,
                })
            })
            .collect::<Result<Vec<_>, ManifestError>>()?;
        let body = ManifestBody {
            format: FORMAT.to_owned(),
            camera: camera.to_owned(),
            from_us,
            to_us,
            created_us: now_unix_us(),
            segments,
            export,
        };
        Self::sign(body, key)
    }

    /// Signs a body as it is (what [`Manifest::build`] does once it has hashed).
    pub fn sign(body: ManifestBody, key: &Keypair) -> Result<Manifest, ManifestError> {
        let signature = key
            .sign(&signed_bytes(&body)?)
            .map_err(|e| ManifestError::Sign(e.to_string()))?;
        Ok(Manifest {
            body,
            signer: hex(&key.public().encode_protobuf()),
            signature: hex(&signature),
            signer_cert: String::new(),
        })
    }

    pub fn to_json(&self) -> String {
        // Plain data with string keys: serialization cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Parses a manifest (bounded size; no check of hashes or signature: see [`verify`]).
    pub fn from_json(bytes: &[u8]) -> Result<Manifest, ManifestError> {
        if bytes.len() > MAX_MANIFEST_BYTES {
            return Err(ManifestError::Parse(format!(
                "{} bytes is more than the {MAX_MANIFEST_BYTES}-byte limit",
                bytes.len()
            )));
        }
        serde_json::from_slice(bytes).map_err(|e| ManifestError::Parse(e.to_string()))
    }

    /// The signer's public key.
    pub fn signer_key(&self) -> Result<PublicKey, VerifyError> {
        let bytes = unhex(&self.signer).ok_or_else(|| VerifyError::BadSignerKey("not hex".into()))?;
        PublicKey::try_decode_protobuf(&bytes).map_err(|e| VerifyError::BadSignerKey(e.to_string()))
    }
}

/// Hex of a signed certificate, for [`Manifest::signer_cert`].
pub fn cert_hex(cert: &camesh_proto::pb::Signed) -> String {
    hex(&crate::auth::signed::encode(cert))
}

/// Checks the manifest's signer certificate against the fleet root: issued by the root
/// for `fleet_id`, to the manifest's signer, for an NVR (or admin) node, valid when the
/// manifest was made. Returns the certificate's name.
pub fn verify_signer_cert(manifest: &Manifest, root: &PublicKey, fleet_id: &str) -> Result<String, VerifyError> {
    use camesh_proto::pb::MemberRole;
    if manifest.signer_cert.is_empty() {
        return Err(VerifyError::SignerCert("the manifest carries no certificate".into()));
    }
    let bytes = unhex(&manifest.signer_cert).ok_or_else(|| VerifyError::SignerCert("not hex".into()))?;
    let signed =
        crate::auth::signed::decode("certificate", &bytes).map_err(|e| VerifyError::SignerCert(e.to_string()))?;
    let signer = manifest.signer_key()?.to_peer_id();
    let at = manifest.body.created_us / 1_000_000;
    let info = crate::auth::cert::verify(&signed, root, fleet_id, &signer, at)
        .map_err(|e| VerifyError::SignerCert(e.to_string()))?;
    if !matches!(info.role, MemberRole::Nvr | MemberRole::Admin) {
        return Err(VerifyError::SignerCert(format!(
            "the signer's role is {:?}, not nvr",
            info.role
        )));
    }
    Ok(info.name)
}

/// Checks a manifest: its format, its signature (and signer, when `expected_signer` is
/// given), the hash of every listed segment against the given files (matched by file
/// name; a segment in the manifest without a file fails), and the exported file when one
/// is given.
pub fn verify(
    manifest: &Manifest,
    segment_files: &[PathBuf],
    export_file: Option<&Path>,
    expected_signer: Option<&PublicKey>,
) -> Result<VerifyReport, VerifyError> {
    let body = &manifest.body;
    if body.format != FORMAT {
        return Err(VerifyError::Format(body.format.clone()));
    }
    let signer = manifest.signer_key()?;
    if let Some(expected) = expected_signer {
        if *expected != signer {
            return Err(VerifyError::WrongSigner {
                expected: expected.to_peer_id().to_string(),
                got: signer.to_peer_id().to_string(),
            });
        }
    }
    let signature = unhex(&manifest.signature).ok_or(VerifyError::BadSignature)?;
    if !signer.verify(&signed_bytes(body)?, &signature) {
        return Err(VerifyError::BadSignature);
    }
    let mut bytes = 0;
    for seg in &body.segments {
        let path = find_file(&seg.file, &body.camera, segment_files)
            .ok_or_else(|| VerifyError::MissingSegment { file: seg.file.clone() })?;
        let actual = match hash_prefix(path, seg.bytes) {
            Ok(h) => h,
            Err(ManifestError::Short { actual, .. }) => format!("(file has only {actual} bytes)"),
            Err(e) => return Err(e.into()),
        };
        if actual != seg.sha256 {
            return Err(VerifyError::SegmentMismatch {
                file: seg.file.clone(),
                path: path.to_owned(),
                expected: seg.sha256.clone(),
                actual,
            });
        }
        bytes += seg.bytes;
    }
    let export_checked = match export_file {
        None => false,
        Some(path) => {
            let expected = body
                .export
                .as_ref()
                .ok_or_else(|| VerifyError::NoExportInManifest(path.to_owned()))?;
            let len = file_len(path)?;
            let actual = if len == expected.bytes {
                hash_prefix(path, len)?
            } else {
                format!("(file has {len} bytes, expected {})", expected.bytes)
            };
            if actual != expected.sha256 {
                return Err(VerifyError::ExportMismatch {
                    path: path.to_owned(),
                    expected: expected.sha256.clone(),
                    actual,
                });
            }
            true
        }
    };
    Ok(VerifyReport {
        signer: signer.to_peer_id(),
        segments: body.segments.len(),
        bytes,
        export_checked,
    })
}

/// The given file for a manifest entry `<camera>/<name>`: same file name, preferring one
/// in a folder named after the camera.
fn find_file<'a>(rel: &str, camera: &str, files: &'a [PathBuf]) -> Option<&'a Path> {
    let name = rel.rsplit('/').next().unwrap_or(rel);
    let mut candidates = files
        .iter()
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy() == name));
    let first = candidates.next()?;
    let in_camera_dir = |p: &PathBuf| {
        p.parent()
            .and_then(|d| d.file_name())
            .is_some_and(|d| d.to_string_lossy() == camera)
    };
    if in_camera_dir(first) {
        return Some(first);
    }
    Some(candidates.find(|p| in_camera_dir(p)).unwrap_or(first))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_roundtrip() {
        let data = [0u8, 1, 0x7f, 0x80, 0xff];
        assert_eq!(hex(&data), "00017f80ff");
        assert_eq!(unhex("00017F80ff"), Some(data.to_vec()));
        assert_eq!(unhex("0"), None);
        assert_eq!(unhex("zz"), None);
    }

    #[test]
    fn garbage_manifests_are_errors() {
        assert!(Manifest::from_json(b"{").is_err());
        assert!(Manifest::from_json(b"[]").is_err());
        let key = Keypair::generate_ed25519();
        let m = Manifest::build(Path::new("/nonexistent"), "cam", 0, 1, &[], None, &key).expect("no files to hash");
        let mut bad = m.clone();
        bad.signer = "zz".into();
        assert!(matches!(
            verify(&bad, &[], None, None),
            Err(VerifyError::BadSignerKey(_))
        ));
        let mut bad = m.clone();
        bad.signature = "00".into();
        assert!(matches!(verify(&bad, &[], None, None), Err(VerifyError::BadSignature)));
        let mut bad = m.clone();
        bad.body.to_us = 2;
        assert!(matches!(verify(&bad, &[], None, None), Err(VerifyError::BadSignature)));
        let other = Keypair::generate_ed25519().public();
        assert!(matches!(
            verify(&m, &[], None, Some(&other)),
            Err(VerifyError::WrongSigner { .. })
        ));
        let back = Manifest::from_json(m.to_json().as_bytes()).expect("parses");
        assert_eq!(back, m);
        verify(&back, &[], None, Some(&key.public())).expect("valid");
    }
}
