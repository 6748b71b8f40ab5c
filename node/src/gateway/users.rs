//! Viewer credentials for a gateway that serves beyond loopback (`mesh view --public`).
//!
//! A gateway hands out decrypted video, so one that other machines can reach asks every
//! request for a viewer's own credentials: HTTP Basic with a name and a random token
//! (browsers prompt for it; players take `http://name:token@host/...`). Each viewer has
//! the cameras it may watch (`*` for all); `/api/cameras` lists only those, live video
//! and snapshots of others are refused, and `/metrics` (which names every camera) needs
//! `*`. Tokens are 128 random bits, shown once when created, stored as SHA-256 in
//! `<data-dir>/gateway-users.toml` (0600) and compared in constant time.
//!
//! The file is read when the gateway starts; `mesh view-user add|remove|list` edits it.
//! Plain HTTP carries the token in clear: serve `--public` on a network you trust (a VPN,
//! a depot LAN) or behind a TLS proxy.

use std::path::Path;

use axum::http::{header, HeaderMap};
use base64::Engine;
use sha2::{Digest, Sha256};

pub const USERS_FILE: &str = "gateway-users.toml";
/// Viewers in one file.
const MAX_USERS: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum UsersError {
    #[error("{path}: {reason}")]
    File { path: String, reason: String },
    #[error("viewer name {0:?}: use 1-64 of a-z, A-Z, 0-9, '.', '_', '-'")]
    BadName(String),
    #[error("a viewer named {0:?} exists already (remove it first to issue a new token)")]
    Exists(String),
    #[error("no viewer named {0:?}")]
    Unknown(String),
    #[error("at most {MAX_USERS} viewers")]
    Full,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GatewayUser {
    pub name: String,
    /// Camera ids this viewer may watch; `*` for every camera.
    pub cameras: Vec<String>,
    /// SHA-256 of the token, hex.
    token_sha256: String,
}

impl GatewayUser {
    pub fn may_watch(&self, camera: &str) -> bool {
        self.cameras.iter().any(|c| c == "*" || c == camera)
    }

    pub fn sees_all(&self) -> bool {
        self.cameras.iter().any(|c| c == "*")
    }
}

/// The viewers a gateway accepts.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GatewayUsers {
    #[serde(default, rename = "viewer")]
    users: Vec<GatewayUser>,
}

/// Why a request did not authenticate (the gateway answers 401 either way).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unauthenticated {
    #[error("no credentials")]
    Missing,
    #[error("credentials are not HTTP Basic name:token")]
    Malformed,
    #[error("unknown viewer or wrong token")]
    Wrong,
}

fn hash_hex(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// Equal in time independent of where they differ (lengths are public: both are hex
/// SHA-256).
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

impl GatewayUsers {
    /// Reads `path`; a missing file is no viewers.
    pub fn load(path: &Path) -> Result<Self, UsersError> {
        let err = |reason: String| UsersError::File {
            path: path.display().to_string(),
            reason,
        };
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(err(e.to_string())),
        };
        let users: Self = toml::from_str(&text).map_err(|e| err(e.message().to_owned()))?;
        if users.users.len() > MAX_USERS {
            return Err(UsersError::Full);
        }
        if let Some(u) = users.users.iter().find(|u| !valid_name(&u.name)) {
            return Err(UsersError::BadName(u.name.clone()));
        }
        Ok(users)
    }

    /// Writes `path` readable by its owner only.
    pub fn save(&self, path: &Path) -> Result<(), UsersError> {
        let text = toml::to_string(self).map_err(|e| UsersError::File {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        let header = "# Viewers of `mesh view --public` (tokens stored as SHA-256). Edit with `mesh view-user`.\n";
        crate::identity::replace_private(path, format!("{header}{text}").as_bytes()).map_err(|e| UsersError::File {
            path: path.display().to_string(),
            reason: e.to_string(),
        })
    }

    /// Adds viewer `name` for `cameras`; returns its token (shown once, never stored).
    pub fn add(&mut self, name: &str, cameras: Vec<String>) -> Result<String, UsersError> {
        if !valid_name(name) {
            return Err(UsersError::BadName(name.to_owned()));
        }
        if self.users.iter().any(|u| u.name == name) {
            return Err(UsersError::Exists(name.to_owned()));
        }
        if self.users.len() >= MAX_USERS {
            return Err(UsersError::Full);
        }
        let token = bs58::encode(rand::random::<[u8; 16]>()).into_string();
        self.users.push(GatewayUser {
            name: name.to_owned(),
            cameras,
            token_sha256: hash_hex(&token),
        });
        Ok(token)
    }

    pub fn remove(&mut self, name: &str) -> Result<(), UsersError> {
        let before = self.users.len();
        self.users.retain(|u| u.name != name);
        if self.users.len() == before {
            return Err(UsersError::Unknown(name.to_owned()));
        }
        Ok(())
    }

    pub fn list(&self) -> &[GatewayUser] {
        &self.users
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// The viewer whose `Authorization: Basic` credentials these headers carry.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<&GatewayUser, Unauthenticated> {
        let value = headers
            .get(header::AUTHORIZATION)
            .ok_or(Unauthenticated::Missing)?
            .to_str()
            .map_err(|_| Unauthenticated::Malformed)?;
        let (scheme, b64) = value.split_once(' ').ok_or(Unauthenticated::Malformed)?;
        if !scheme.eq_ignore_ascii_case("basic") || b64.len() > 512 {
            return Err(Unauthenticated::Malformed);
        }
        let raw = base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .map_err(|_| Unauthenticated::Malformed)?;
        let text = String::from_utf8(raw).map_err(|_| Unauthenticated::Malformed)?;
        let (name, token) = text.split_once(':').ok_or(Unauthenticated::Malformed)?;
        let hashed = hash_hex(token);
        self.users
            .iter()
            .find(|u| u.name == name && same(&u.token_sha256, &hashed))
            .ok_or(Unauthenticated::Wrong)
    }
}

/// Where a data folder keeps its gateway viewers.
pub fn users_path(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join(USERS_FILE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(user: &str, token: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        let v = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{token}"));
        h.insert(header::AUTHORIZATION, format!("Basic {v}").parse().expect("value"));
        h
    }

    #[test]
    fn viewers_authenticate_with_their_own_token_and_see_their_cameras() {
        let mut u = GatewayUsers::default();
        let alice = u.add("alice", vec!["cam1".into()]).expect("add");
        let bob = u.add("bob", vec!["*".into()]).expect("add");
        let a = u.authenticate(&basic("alice", &alice)).expect("alice");
        assert!(a.may_watch("cam1") && !a.may_watch("cam2") && !a.sees_all());
        assert!(u.authenticate(&basic("bob", &bob)).expect("bob").sees_all());
        // Someone else's token, a wrong one, none, or garbage.
        assert_eq!(u.authenticate(&basic("alice", &bob)), Err(Unauthenticated::Wrong));
        assert_eq!(u.authenticate(&basic("carol", &alice)), Err(Unauthenticated::Wrong));
        assert_eq!(u.authenticate(&HeaderMap::new()), Err(Unauthenticated::Missing));
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, "Basic %%%".parse().expect("value"));
        assert_eq!(u.authenticate(&h), Err(Unauthenticated::Malformed));
        h.insert(header::AUTHORIZATION, "Bearer abc".parse().expect("value"));
        assert_eq!(u.authenticate(&h), Err(Unauthenticated::Malformed));
        assert!(matches!(u.add("alice", vec![]), Err(UsersError::Exists(_))));
        assert!(matches!(u.add("a b", vec![]), Err(UsersError::BadName(_))));
    }

    #[test]
    fn the_file_keeps_hashes_only_and_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = users_path(dir.path());
        assert!(GatewayUsers::load(&path).expect("missing is empty").is_empty());
        let mut u = GatewayUsers::default();
        let token = u.add("alice", vec!["cam1".into()]).expect("add");
        u.save(&path).expect("save");
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(!text.contains(&token), "the token itself is never stored");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let mut back = GatewayUsers::load(&path).expect("load");
        assert_eq!(back, u);
        back.remove("alice").expect("remove");
        assert!(matches!(back.remove("alice"), Err(UsersError::Unknown(_))));
    }
}
