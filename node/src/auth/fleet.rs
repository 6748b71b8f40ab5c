//! Fleet root keys and how they are written down.
//!
//! The root key lives only on the admin's laptop (`fleet.key`, mode 0600, beside
//! `fleet.toml` with the fleet id), plain or sealed with a passphrase
//! ([`super::keyfile`]); a `fleet.key` that its group or others may access is refused
//! before it is read. Only root commands load it ([`FleetRoot::load`]). Nodes know only
//! the root's public key, written as base58 text in their config (`node.fleet_root`).

use std::path::{Path, PathBuf};

use libp2p::identity::{Keypair, PublicKey};
use serde::{Deserialize, Serialize};

use super::AuthError;

pub const ROOT_KEY_FILE: &str = "fleet.key";
pub const FLEET_FILE: &str = "fleet.toml";

/// The text form of a fleet root public key.
pub fn root_to_text(key: &PublicKey) -> String {
    bs58::encode(key.encode_protobuf()).into_string()
}

pub fn root_from_text(s: &str) -> Result<PublicKey, AuthError> {
    crate::ids::root_key_from_text(s).map_err(|reason| AuthError::Malformed {
        what: "fleet root key",
        reason,
    })
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FleetFile {
    pub fleet_id: String,
    pub root: String,
}

/// An admin's fleet: the root key and the fleet id.
#[derive(Debug, Clone)]
pub struct FleetRoot {
    pub fleet_id: String,
    pub key: Keypair,
    /// The root's chain in the fleet-state log as this value issued it (see
    /// [`FleetRoot::entry`]); shared by clones.
    chain: std::sync::Arc<std::sync::Mutex<(u64, Option<super::fleetlog::Hash>)>>,
}

/// Where the passphrase of a sealed `fleet.key` comes from, asked only when the file is
/// sealed (the environment, a prompt: the binary decides).
pub type Passphrase<'a> = &'a dyn Fn() -> Result<String, String>;

#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("fleet.key is readable by others (mode {mode:04o}): chmod 600 {}", path.display())]
    Exposed { path: PathBuf, mode: u32 },
    #[error("{}: {reason}", path.display())]
    Sealed { path: PathBuf, reason: String },
    #[error("{path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("a fleet already exists in {0} (delete it first to start over)")]
    Exists(PathBuf),
    #[error("no fleet root key in {0}: run `mesh fleet init` there, or pass the admin's --data-dir")]
    Missing(PathBuf),
}

impl FleetRoot {
    pub fn create(dir: &Path, fleet_id: &str) -> Result<Self, FleetError> {
        let key_path = dir.join(ROOT_KEY_FILE);
        if key_path.exists() {
            return Err(FleetError::Exists(dir.to_owned()));
        }
        let file_err = |path: &Path, e: std::io::Error| FleetError::File {
            path: path.to_owned(),
            reason: e.to_string(),
        };
        std::fs::create_dir_all(dir).map_err(|e| file_err(dir, e))?;
        let key = Keypair::generate_ed25519();
        // Encoding a freshly generated ed25519 key cannot fail.
        let bytes = key.to_protobuf_encoding().expect("ed25519 key encodes");
        crate::identity::write_private(&key_path, &bytes).map_err(|e| file_err(&key_path, e))?;
        let ff = FleetFile {
            fleet_id: fleet_id.to_owned(),
            root: root_to_text(&key.public()),
        };
        let path = dir.join(FLEET_FILE);
        // Serializing two strings cannot fail.
        std::fs::write(&path, toml::to_string(&ff).expect("toml")).map_err(|e| file_err(&path, e))?;
        Ok(Self::with_key(fleet_id, key))
    }

    fn with_key(fleet_id: &str, key: Keypair) -> Self {
        Self {
            fleet_id: fleet_id.to_owned(),
            key,
            chain: Default::default(),
        }
    }

    /// Writes this root key and fleet file into `dir` (making it an admin's directory).
    pub fn save(&self, dir: &Path) -> Result<(), FleetError> {
        let file_err = |path: &Path, e: std::io::Error| FleetError::File {
            path: path.to_owned(),
            reason: e.to_string(),
        };
        std::fs::create_dir_all(dir).map_err(|e| file_err(dir, e))?;
        let key_path = dir.join(ROOT_KEY_FILE);
        // Encoding an ed25519 key cannot fail.
        let bytes = self.key.to_protobuf_encoding().expect("ed25519 key encodes");
        crate::identity::write_private(&key_path, &bytes).map_err(|e| file_err(&key_path, e))?;
        let ff = FleetFile {
            fleet_id: self.fleet_id.clone(),
            root: self.root_text(),
        };
        let path = dir.join(FLEET_FILE);
        // Serializing two strings cannot fail.
        std::fs::write(&path, toml::to_string(&ff).expect("toml")).map_err(|e| file_err(&path, e))
    }

    /// Loads the root key from `dir`, if this is an admin's data directory: refused if
    /// `fleet.key` is open to its group or others; a sealed one asks `passphrase`.
    pub fn load(dir: &Path, passphrase: Passphrase) -> Result<Self, FleetError> {
        let (key_path, bytes) = read_key_file(dir)?;
        let bad = |path: &Path, reason: String| FleetError::File {
            path: path.to_owned(),
            reason,
        };
        let plain = if super::keyfile::is_sealed(&bytes) {
            let sealed = |reason: String| FleetError::Sealed {
                path: key_path.clone(),
                reason,
            };
            let pass = passphrase().map_err(|e| sealed(format!("sealed with a passphrase; {e}")))?;
            super::keyfile::open(&bytes, &pass).map_err(|e| sealed(e.to_string()))?
        } else {
            bytes
        };
        let key = Keypair::from_protobuf_encoding(&plain).map_err(|e| bad(&key_path, e.to_string()))?;
        let path = dir.join(FLEET_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| bad(&path, e.to_string()))?;
        let ff: FleetFile = toml::from_str(&text).map_err(|e| bad(&path, e.to_string()))?;
        if ff.root != root_to_text(&key.public()) {
            return Err(bad(
                &key_path,
                format!("not the root key of fleet {:?} ({FLEET_FILE})", ff.fleet_id),
            ));
        }
        Ok(Self::with_key(&ff.fleet_id, key))
    }

    /// Whether `<dir>/fleet.key` is sealed with a passphrase (checks its mode first).
    pub fn is_sealed(dir: &Path) -> Result<bool, FleetError> {
        Ok(super::keyfile::is_sealed(&read_key_file(dir)?.1))
    }

    /// Rewrites `<dir>/fleet.key` with this root key: sealed with `passphrase`, or plain
    /// with `None` (mode 0600, replaced whole: a temporary file renamed into place).
    pub fn write_key(&self, dir: &Path, passphrase: Option<&str>) -> Result<(), FleetError> {
        let key_path = dir.join(ROOT_KEY_FILE);
        let file_err = |e: String| FleetError::File {
            path: key_path.clone(),
            reason: e,
        };
        // Encoding an ed25519 key cannot fail.
        let plain = self.key.to_protobuf_encoding().expect("ed25519 key encodes");
        let bytes = match passphrase {
            Some(p) => super::keyfile::seal(&plain, p).map_err(|e| file_err(e.to_string()))?,
            None => plain,
        };
        let tmp = dir.join(format!(".{ROOT_KEY_FILE}.tmp"));
        let _ = std::fs::remove_file(&tmp);
        crate::identity::write_private(&tmp, &bytes).map_err(|e| file_err(e.to_string()))?;
        std::fs::rename(&tmp, &key_path).map_err(|e| file_err(e.to_string()))
    }

    pub fn root_text(&self) -> String {
        root_to_text(&self.key.public())
    }
}

/// Reads `<dir>/fleet.key` after checking it is a regular file only its owner may
/// access (a stat, before any open).
fn read_key_file(dir: &Path) -> Result<(PathBuf, Vec<u8>), FleetError> {
    let key_path = dir.join(ROOT_KEY_FILE);
    let meta = match std::fs::metadata(&key_path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(FleetError::Missing(dir.to_owned())),
        Err(e) => {
            return Err(FleetError::File {
                path: key_path,
                reason: e.to_string(),
            })
        }
    };
    if !meta.is_file() {
        return Err(FleetError::File {
            path: key_path,
            reason: "not a regular file".into(),
        });
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(FleetError::Exposed { path: key_path, mode });
        }
    }
    let bytes = std::fs::read(&key_path).map_err(|e| FleetError::File {
        path: key_path.clone(),
        reason: e.to_string(),
    })?;
    Ok((key_path, bytes))
}

/// Offline administration with the root key: certificates, grants and revocations, and
/// provisioning of a node's data directory (what `mesh fleet admit`, `mesh grant`, the
/// demo and the tests use).
impl FleetRoot {
    /// A root key that lives only in memory (demo fleets, tests).
    pub fn ephemeral(fleet_id: &str) -> Self {
        Self::with_key(fleet_id, Keypair::generate_ed25519())
    }

    pub fn admit(&self, req: &super::cert::CertRequest) -> camesh_proto::pb::Signed {
        super::cert::issue(&self.key, &self.fleet_id, req, super::now_s())
    }

    pub fn grant(&self, req: &super::grant::GrantRequest) -> camesh_proto::pb::Signed {
        super::grant::issue(&self.key, &self.fleet_id, req, None)
    }

    /// The next entry of the root's chain in the fleet-state log, numbered by this value
    /// (and its clones) alone: for roots whose log is not kept elsewhere (demo fleets,
    /// tests). An admin's data directory issues through [`super::Trust`] instead, which
    /// continues the chain its log holds.
    pub fn entry(&self, entry: camesh_proto::pb::fleet_entry_body::Entry) -> camesh_proto::pb::Signed {
        let mut chain = self.chain.lock().unwrap_or_else(|e| e.into_inner());
        let (seq, prev) = (chain.0 + 1, chain.1);
        let s = super::fleetlog::issue(&self.key, None, &self.fleet_id, seq, prev, entry, super::now_s());
        *chain = (seq, Some(super::fleetlog::entry_hash(&s)));
        s
    }

    /// A revocation entry (see [`FleetRoot::entry`]).
    pub fn revoke(&self, peers: &[libp2p::PeerId], grants: &[u64], reason: &str) -> camesh_proto::pb::Signed {
        let body = super::revocation::body(&self.fleet_id, peers, grants, reason, super::now_s());
        self.entry(camesh_proto::pb::fleet_entry_body::Entry::Revocation(body))
    }

    /// An admin certificate, and the entry that records it (see [`FleetRoot::entry`]).
    pub fn certify_admin(
        &self,
        req: &super::admin::AdminRequest,
    ) -> (camesh_proto::pb::Signed, camesh_proto::pb::Signed) {
        let c = super::admin::issue(&self.key, &self.fleet_id, req, super::now_s());
        let e = self.entry(camesh_proto::pb::fleet_entry_body::Entry::AdminCert(c.clone()));
        (c, e)
    }

    /// Certifies the node whose identity key is in `dir` (created if missing) and stores
    /// the certificate there. Returns its peer id.
    pub fn enroll_dir(
        &self,
        dir: &Path,
        role: camesh_proto::pb::MemberRole,
        name: &str,
        cameras: &[String],
        valid_s: i64,
    ) -> Result<libp2p::PeerId, FleetError> {
        let key = crate::identity::load_or_create(dir).map_err(|e| FleetError::File {
            path: dir.to_owned(),
            reason: e.to_string(),
        })?;
        let peer = key.public().to_peer_id();
        let cert = self.admit(&super::cert::CertRequest {
            peer,
            role,
            name: name.to_owned(),
            valid_s,
            cameras: cameras.to_vec(),
        });
        let path = dir.join(super::CERT_FILE);
        std::fs::write(&path, super::signed::encode(&cert)).map_err(|e| FleetError::File {
            path,
            reason: e.to_string(),
        })?;
        Ok(peer)
    }

    /// Certifies the node whose identity key is in `dir` (created if missing) as a
    /// full-scope admin and stores `admin.cert` there: what `mesh fleet init` gives the
    /// admin's own data directory. Returns the log entry that records it.
    pub fn admin_dir(&self, dir: &Path, name: &str, valid_s: i64) -> Result<camesh_proto::pb::Signed, FleetError> {
        let key = crate::identity::load_or_create(dir).map_err(|e| FleetError::File {
            path: dir.to_owned(),
            reason: e.to_string(),
        })?;
        let req = super::admin::AdminRequest::full(key.public().to_peer_id(), name, valid_s);
        let (cert, entry) = self.certify_admin(&req);
        let path = dir.join(super::trust::ADMIN_CERT_FILE);
        std::fs::write(&path, super::signed::encode(&cert)).map_err(|e| FleetError::File {
            path,
            reason: e.to_string(),
        })?;
        Ok(entry)
    }

    /// Issues a grant to the node in `dir` and stores it in its grants folder.
    pub fn grant_dir(
        &self,
        dir: &Path,
        cameras: &[String],
        rights: super::Rights,
        valid_s: i64,
    ) -> Result<camesh_proto::pb::Signed, FleetError> {
        let key = crate::identity::load_or_create(dir).map_err(|e| FleetError::File {
            path: dir.to_owned(),
            reason: e.to_string(),
        })?;
        let now = super::now_s();
        let g = self.grant(&super::grant::GrantRequest {
            holder: key.public().to_peer_id(),
            cameras: cameras.to_vec(),
            tags: vec![],
            rights,
            not_before_unix_s: now - 60,
            not_after_unix_s: now + valid_s,
        });
        let grants = dir.join(super::GRANTS_DIR);
        let file_err = |e: std::io::Error| FleetError::File {
            path: grants.clone(),
            reason: e.to_string(),
        };
        std::fs::create_dir_all(&grants).map_err(file_err)?;
        std::fs::write(
            grants.join(format!("{:016x}.grant", rand::random::<u64>())),
            super::signed::encode(&g),
        )
        .map_err(file_err)?;
        Ok(g)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_load_and_text_form() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = FleetRoot::create(dir.path(), "acme").expect("create");
        assert!(matches!(
            FleetRoot::create(dir.path(), "acme"),
            Err(FleetError::Exists(_))
        ));
        let no_prompt = || -> Result<String, String> { Err("no passphrase given".into()) };
        let g = FleetRoot::load(dir.path(), &no_prompt).expect("load");
        assert_eq!(g.fleet_id, "acme");
        assert_eq!(root_from_text(&f.root_text()).expect("parse"), f.key.public());
        assert!(root_from_text("not-base58-0OIl").is_err());
    }

    #[cfg(unix)]
    #[test]
    fn a_key_file_open_to_others_is_refused_before_it_is_read() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        FleetRoot::create(dir.path(), "acme").expect("create");
        let path = dir.path().join(ROOT_KEY_FILE);
        let no_prompt = || -> Result<String, String> { unreachable!("a plain key asks nothing") };
        for mode in [0o644, 0o640, 0o604, 0o620] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
            let e = FleetRoot::load(dir.path(), &no_prompt).expect_err("refused");
            let want = format!(
                "fleet.key is readable by others (mode {mode:04o}): chmod 600 {}",
                path.display()
            );
            assert_eq!(e.to_string(), want);
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        FleetRoot::load(dir.path(), &no_prompt).expect("0600 is fine");
    }

    #[test]
    fn a_sealed_key_needs_its_passphrase() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = FleetRoot::create(dir.path(), "acme").expect("create");
        assert!(!FleetRoot::is_sealed(dir.path()).expect("plain"));
        f.write_key(dir.path(), Some("hunter2 hunter2")).expect("sealed");
        assert!(FleetRoot::is_sealed(dir.path()).expect("sealed"));
        let right = || -> Result<String, String> { Ok("hunter2 hunter2".into()) };
        let wrong = || -> Result<String, String> { Ok("hunter3".into()) };
        let none = || -> Result<String, String> { Err("set CAMESH_FLEET_PASSPHRASE".into()) };
        assert_eq!(
            FleetRoot::load(dir.path(), &right).expect("opens").key.public(),
            f.key.public()
        );
        let e = FleetRoot::load(dir.path(), &wrong).expect_err("wrong passphrase");
        assert!(e.to_string().contains("wrong passphrase"), "{e}");
        let e = FleetRoot::load(dir.path(), &none).expect_err("no passphrase");
        assert!(e.to_string().contains("CAMESH_FLEET_PASSPHRASE"), "{e}");
        // And back to plain.
        f.write_key(dir.path(), None).expect("plain");
        assert!(!FleetRoot::is_sealed(dir.path()).expect("plain"));
        assert_eq!(
            FleetRoot::load(dir.path(), &none).expect("plain").key.public(),
            f.key.public()
        );
    }
}
