//! A node's security state, shared by the tasks that enforce it.
//!
//! What it holds: the fleet's root public key (the trust anchor), this node's own
//! certificate and grants, the members it has verified on live connections, the
//! revocations it knows (persisted in `<data-dir>/revocations.bin`), and, on admin nodes,
//! the root key and the invite tokens already redeemed. Decisions are delegated to the
//! pure modules ([`super::cert`], [`super::grant`], [`super::revocation`]); this module
//! adds the state, persistence, the audit trail and notifications (a `watch` channel that
//! ticks on every new revocation, so open streams re-check at once).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::time::Duration;

use camesh_proto::pb;
use libp2p::identity::{Keypair, PublicKey};
use libp2p::PeerId;
use tokio::sync::watch;

use super::audit::Audit;
use super::cert::{self, CertInfo, CertRequest};
use super::fleet::FleetRoot;
use super::grant::{self, GrantInfo, Rights};
use super::revocation::RevocationSet;
use super::signed;
use super::{now_s, AuthError, CERT_FILE, GRANTS_DIR};

pub const REVOCATIONS_FILE: &str = "revocations.bin";
const TOKENS_FILE: &str = "redeemed-invites.txt";
/// Grants this node keeps for itself.
const MAX_OWN_GRANTS: usize = 1024;
/// Members remembered at once (one per connected peer; bounded against churn).
const MAX_MEMBERS: usize = 65_536;

#[derive(Debug)]
pub struct Trust {
    pub fleet_id: String,
    pub root: PublicKey,
    me: PeerId,
    dir: Option<PathBuf>,
    own_cert: RwLock<Option<pb::Signed>>,
    members: RwLock<HashMap<PeerId, CertInfo>>,
    revocations: RwLock<RevocationSet>,
    grants: RwLock<Vec<(pb::Signed, GrantInfo)>>,
    root_key: Option<Keypair>,
    redeemed: RwLock<HashSet<String>>,
    changed: watch::Sender<u64>,
    grace: std::sync::atomic::AtomicU64,
    pub audit: Audit,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl Trust {
    /// Loads the state kept in `dir` (certificate, grants, revocations; the root key if
    /// this is an admin's directory for the same fleet).
    pub fn load(dir: &Path, fleet_id: &str, root: PublicKey, me: PeerId) -> Self {
        let audit = Audit::open(dir);
        let t = Self::new(fleet_id, root, me, Some(dir.to_owned()), audit);
        if let Ok(bytes) = std::fs::read(dir.join(CERT_FILE)) {
            match t.install_cert_bytes(&bytes) {
                Ok(info) => {
                    tracing::info!(role = ?info.role, expires = info.not_after_unix_s, "membership certificate loaded")
                }
                Err(e) => tracing::warn!(error = %e, "stored membership certificate is not usable"),
            }
        }
        if let Ok(rd) = std::fs::read_dir(dir.join(GRANTS_DIR)) {
            for entry in rd.flatten().take(MAX_OWN_GRANTS) {
                if let Ok(bytes) = std::fs::read(entry.path()) {
                    if let Err(e) = signed::decode("grant", &bytes).and_then(|g| t.add_grant(g, false)) {
                        tracing::warn!(file = %entry.path().display(), error = %e, "stored grant ignored");
                    }
                }
            }
        }
        if let Ok(bytes) = std::fs::read(dir.join(REVOCATIONS_FILE)) {
            let (set, bad) = RevocationSet::from_bytes(&bytes, &t.root, fleet_id);
            if bad > 0 {
                tracing::warn!(bad, "stored revocations that do not verify were skipped");
            }
            *t.revocations.write().unwrap_or_else(|e| e.into_inner()) = set;
        }
        if let Ok(text) = std::fs::read_to_string(dir.join(TOKENS_FILE)) {
            let mut r = t.redeemed.write().unwrap_or_else(|e| e.into_inner());
            r.extend(text.lines().map(str::to_owned));
        }
        t
    }

    fn new(fleet_id: &str, root: PublicKey, me: PeerId, dir: Option<PathBuf>, audit: Audit) -> Self {
        let root_key = dir
            .as_deref()
            .and_then(|d| FleetRoot::load(d).ok())
            .filter(|f| f.key.public() == root && f.fleet_id == fleet_id)
            .map(|f| f.key);
        Self {
            fleet_id: fleet_id.to_owned(),
            root,
            me,
            dir,
            own_cert: RwLock::new(None),
            members: RwLock::new(HashMap::new()),
            revocations: RwLock::new(RevocationSet::default()),
            grants: RwLock::new(Vec::new()),
            root_key,
            redeemed: RwLock::new(HashSet::new()),
            changed: watch::channel(0).0,
            grace: std::sync::atomic::AtomicU64::new(1000),
            audit,
        }
    }

    /// In-memory state (tests).
    pub fn ephemeral(fleet_id: &str, root: PublicKey, me: PeerId) -> Self {
        Self::new(fleet_id, root, me, None, Audit::none())
    }

    /// How long a new peer has to prove membership (config `limits.membership_grace_ms`).
    pub fn grace(&self) -> Duration {
        Duration::from_millis(self.grace.load(std::sync::atomic::Ordering::Relaxed))
    }

    pub fn set_grace(&self, grace: Duration) {
        let ms = u64::try_from(grace.as_millis()).unwrap_or(u64::MAX);
        self.grace.store(ms, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn me(&self) -> PeerId {
        self.me
    }

    /// The fleet root key, on an admin node.
    pub fn root_key(&self) -> Option<&Keypair> {
        self.root_key.as_ref()
    }

    // ---- own certificate ----

    /// This node's certificate, verified now (None if missing or expired).
    pub fn own_cert_info(&self) -> Option<CertInfo> {
        let c = self.own_cert()?;
        cert::verify(&c, &self.root, &self.fleet_id, &self.me, now_s()).ok()
    }

    /// Connected members that can renew certificates (admin role).
    pub fn admins(&self) -> Vec<PeerId> {
        let m = self.members.read().unwrap_or_else(|e| e.into_inner());
        m.values()
            .filter(|c| c.role == pb::MemberRole::Admin)
            .map(|c| c.peer)
            .collect()
    }

    pub fn own_cert(&self) -> Option<pb::Signed> {
        self.own_cert.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Verifies and installs this node's certificate (and stores it).
    pub fn install_cert_bytes(&self, bytes: &[u8]) -> Result<CertInfo, AuthError> {
        let s = signed::decode("certificate", bytes)?;
        let info = cert::verify(&s, &self.root, &self.fleet_id, &self.me, now_s())?;
        *self.own_cert.write().unwrap_or_else(|e| e.into_inner()) = Some(s.clone());
        if let Some(dir) = &self.dir {
            let _ = std::fs::write(dir.join(CERT_FILE), signed::encode(&s));
        }
        Ok(info)
    }

    /// On an admin node: make sure this node has a current certificate of its own.
    pub fn self_admit(&self, role: pb::MemberRole, name: &str, cameras: Vec<String>) -> Option<CertInfo> {
        let root = self.root_key.as_ref()?;
        let c = cert::issue(
            root,
            &self.fleet_id,
            &CertRequest {
                peer: self.me,
                role,
                name: name.to_owned(),
                valid_s: 30 * 86_400,
                cameras,
            },
            now_s(),
        );
        self.install_cert_bytes(&signed::encode(&c)).ok()
    }

    // ---- members (layer 1) ----

    /// Verifies a certificate presented on a connection with `peer`; remembers the member.
    pub fn admit(&self, peer: PeerId, c: &pb::Signed) -> Result<CertInfo, AuthError> {
        let result = cert::verify(c, &self.root, &self.fleet_id, &peer, now_s()).and_then(|info| {
            if self.peer_revoked(&peer) {
                Err(AuthError::Revoked(format!("peer {peer}")))
            } else {
                Ok(info)
            }
        });
        match &result {
            Ok(info) => {
                let mut m = self.members.write().unwrap_or_else(|e| e.into_inner());
                if m.len() >= MAX_MEMBERS && !m.contains_key(&peer) {
                    return Err(AuthError::Refused("too many members connected".into()));
                }
                let new = m.insert(peer, info.clone()).is_none();
                drop(m);
                if new {
                    self.audit.record(
                        "admitted",
                        &peer.to_string(),
                        "",
                        &format!("{:?} {}", info.role, info.name),
                    );
                }
                self.changed.send_modify(|n| *n += 1);
            }
            Err(e) => self
                .audit
                .record("refused-connection", &peer.to_string(), "", &e.to_string()),
        }
        result
    }

    pub fn member(&self, peer: &PeerId) -> Option<CertInfo> {
        let m = self.members.read().unwrap_or_else(|e| e.into_inner());
        m.get(peer).filter(|c| c.not_after_unix_s + 30 >= now_s()).cloned()
    }

    pub fn forget(&self, peer: &PeerId) {
        self.members.write().unwrap_or_else(|e| e.into_inner()).remove(peer);
    }

    /// Waits up to `limit` for `peer` to be verified (its certificate exchange may still
    /// be in flight when its first stream arrives).
    pub async fn wait_member(&self, peer: &PeerId, limit: Duration) -> Option<CertInfo> {
        let mut rx = self.changed.subscribe();
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(c) = self.member(peer) {
                return Some(c);
            }
            if self.peer_revoked(peer) {
                return None;
            }
            if tokio::time::timeout_at(deadline, rx.changed()).await.is_err() {
                return self.member(peer);
            }
        }
    }

    /// Ticks on every admission and revocation.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    // ---- grants (layer 2) ----

    /// Checks a grant presented by `peer` for `right` on camera `camera` (with `tags`).
    pub fn check_grant(
        &self,
        peer: &PeerId,
        grant_bytes: &pb::Signed,
        camera: &str,
        tags: &[String],
        right: Rights,
    ) -> Result<GrantInfo, AuthError> {
        if self.peer_revoked(peer) {
            return Err(AuthError::Revoked(format!("peer {peer}")));
        }
        let info = grant::verify(grant_bytes, &self.root, &self.fleet_id, peer, now_s())?;
        if self
            .revocations
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .any_grant_revoked(&info.chain)
        {
            return Err(AuthError::Revoked("grant".into()));
        }
        if !info.covers(camera, tags) {
            return Err(AuthError::NotCovered(format!("camera {camera}")));
        }
        if !info.rights.contains(right) {
            return Err(AuthError::NotCovered(format!("the {right} right")));
        }
        Ok(info)
    }

    /// Adds a grant held by this node (verified against our own peer id).
    pub fn add_grant(&self, g: pb::Signed, store: bool) -> Result<GrantInfo, AuthError> {
        let info = grant::verify(&g, &self.root, &self.fleet_id, &self.me, now_s())?;
        let mut gs = self.grants.write().unwrap_or_else(|e| e.into_inner());
        if gs.len() >= MAX_OWN_GRANTS {
            return Err(AuthError::Refused("too many grants held".into()));
        }
        if store {
            if let Some(dir) = &self.dir {
                let d = dir.join(GRANTS_DIR);
                let _ = std::fs::create_dir_all(&d);
                let _ = std::fs::write(d.join(format!("{:016x}.grant", info.chain[0])), signed::encode(&g));
            }
        }
        gs.push((g, info.clone()));
        Ok(info)
    }

    /// A grant this node holds that gives `right` on `camera`, longest-lived first.
    pub fn grant_for(&self, camera: &str, right: Rights) -> Option<pb::Signed> {
        let now = now_s();
        let rev = self.revocations.read().unwrap_or_else(|e| e.into_inner());
        let gs = self.grants.read().unwrap_or_else(|e| e.into_inner());
        gs.iter()
            .filter(|(_, i)| i.not_after_unix_s > now && i.rights.contains(right) && !rev.any_grant_revoked(&i.chain))
            .filter(|(_, i)| i.cameras.iter().any(|c| c == "*" || c == camera) || !i.tags.is_empty())
            .max_by_key(|(_, i)| i.not_after_unix_s)
            .map(|(g, _)| g.clone())
            .or_else(|| self.self_grant(camera, right))
    }

    /// On an admin node: a short grant for itself, minted on demand.
    fn self_grant(&self, camera: &str, right: Rights) -> Option<pb::Signed> {
        let root = self.root_key.as_ref()?;
        let now = now_s();
        Some(grant::issue(
            root,
            &self.fleet_id,
            &grant::GrantRequest {
                holder: self.me,
                cameras: vec![camera.to_owned()],
                tags: vec![],
                rights: right,
                not_before_unix_s: now - 60,
                not_after_unix_s: now + 3600,
            },
            None,
        ))
    }

    // ---- revocations ----

    pub fn peer_revoked(&self, p: &PeerId) -> bool {
        self.revocations
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .peer_revoked(p)
    }

    /// Whether a grant (by its chain of serials) has been revoked since it was checked.
    pub fn grant_revoked(&self, chain: &[u64]) -> bool {
        self.revocations
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .any_grant_revoked(chain)
    }

    pub fn revocation_epoch(&self) -> u64 {
        self.revocations.read().unwrap_or_else(|e| e.into_inner()).epoch
    }

    pub fn revocation_records(&self) -> Vec<pb::Signed> {
        self.revocations
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .records
            .clone()
    }

    /// Verifies, applies and stores a revocation; `Ok(true)` if it revoked something new.
    pub fn apply_revocation(&self, s: &pb::Signed) -> Result<bool, AuthError> {
        let mut set = self.revocations.write().unwrap_or_else(|e| e.into_inner());
        let new = set.apply(s, &self.root, &self.fleet_id)?;
        if new {
            if let Some(dir) = &self.dir {
                let tmp = dir.join(format!("{REVOCATIONS_FILE}.tmp"));
                if std::fs::write(&tmp, set.to_bytes()).is_ok() {
                    let _ = std::fs::rename(&tmp, dir.join(REVOCATIONS_FILE));
                }
            }
            let revoked: Vec<String> = set.peers.iter().map(|p| p.to_string()).collect();
            drop(set);
            self.members
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .retain(|p, _| !revoked.contains(&p.to_string()));
            self.audit
                .record("revocation", "", "", &format!("epoch {}", self.revocation_epoch()));
            self.changed.send_modify(|n| *n += 1);
        }
        Ok(new)
    }

    // ---- invites (admin nodes) ----

    /// Redeems an invite for `peer`: one use only, before expiry, signed by our root.
    pub fn redeem_invite(&self, invite: &pb::Signed, peer: PeerId) -> Result<pb::Signed, AuthError> {
        let root = self
            .root_key
            .as_ref()
            .ok_or_else(|| AuthError::Refused("this node cannot admit members (no fleet root key)".into()))?;
        let info = super::invite::open(invite, now_s())?;
        if info.fleet_root != self.root || info.fleet_id != self.fleet_id {
            return Err(AuthError::WrongSigner {
                what: "invite",
                signer: info.fleet_root.to_peer_id().to_string(),
                expected: self.root.to_peer_id().to_string(),
            });
        }
        let token = hex(&info.token);
        {
            let mut used = self.redeemed.write().unwrap_or_else(|e| e.into_inner());
            if !used.insert(token.clone()) {
                self.audit
                    .record("refused-invite", &peer.to_string(), "", "invite already used");
                return Err(AuthError::Refused("this invite has already been used".into()));
            }
            if let Some(dir) = &self.dir {
                use std::io::Write;
                let _ = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(dir.join(TOKENS_FILE))
                    .and_then(|mut f| writeln!(f, "{token}"));
            }
        }
        let c = cert::issue(
            root,
            &self.fleet_id,
            &CertRequest {
                peer,
                role: info.role,
                name: info.name.clone(),
                valid_s: info.cert_valid_s,
                cameras: info.cameras,
            },
            now_s(),
        );
        self.audit.record(
            "invite-redeemed",
            &peer.to_string(),
            "",
            &format!("{:?} {}", info.role, info.name),
        );
        Ok(c)
    }

    /// Renews the certificate of a member whose current one is still valid.
    pub fn renew(&self, peer: PeerId) -> Result<pb::Signed, AuthError> {
        let root = self
            .root_key
            .as_ref()
            .ok_or_else(|| AuthError::Refused("this node cannot renew certificates (no fleet root key)".into()))?;
        let m = self
            .member(&peer)
            .ok_or_else(|| AuthError::Refused("only a current member can renew".into()))?;
        // The same lifetime as the certificate it replaces, from now.
        let valid_s = (m.not_after_unix_s - m.not_before_unix_s - 60).clamp(60, 90 * 86_400);
        Ok(cert::issue(
            root,
            &self.fleet_id,
            &CertRequest {
                peer,
                role: m.role,
                name: m.name,
                valid_s,
                cameras: m.cameras,
            },
            now_s(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn admission_revocation_and_grants() {
        let root = Keypair::generate_ed25519();
        let me_key = Keypair::generate_ed25519();
        let me = me_key.public().to_peer_id();
        let t = Trust::ephemeral("f", root.public(), me);
        let a = PeerId::random();
        let c = cert::issue(
            &root,
            "f",
            &CertRequest {
                peer: a,
                role: pb::MemberRole::Viewer,
                name: "a".into(),
                valid_s: 3600,
                cameras: vec![],
            },
            now_s(),
        );
        t.admit(a, &c).expect("member");
        assert!(t.wait_member(&a, Duration::from_millis(10)).await.is_some());
        let g = grant::issue(
            &root,
            "f",
            &grant::GrantRequest {
                holder: a,
                cameras: vec!["cam1".into()],
                tags: vec![],
                rights: Rights::LIVE,
                not_before_unix_s: 0,
                not_after_unix_s: now_s() + 60,
            },
            None,
        );
        let info = t.check_grant(&a, &g, "cam1", &[], Rights::LIVE).expect("granted");
        assert!(t.check_grant(&a, &g, "cam2", &[], Rights::LIVE).is_err());
        assert!(t.check_grant(&a, &g, "cam1", &[], Rights::PLAYBACK).is_err());
        let r = super::super::revocation::issue(&root, "f", 1, &[], &[info.chain[0]], "", now_s());
        assert_eq!(t.apply_revocation(&r), Ok(true));
        assert!(matches!(
            t.check_grant(&a, &g, "cam1", &[], Rights::LIVE),
            Err(AuthError::Revoked(_))
        ));
        let r2 = super::super::revocation::issue(&root, "f", 2, &[a], &[], "", now_s());
        t.apply_revocation(&r2).expect("applies");
        assert!(t.member(&a).is_none());
        assert!(t.admit(a, &c).is_err(), "a revoked peer cannot come back");
    }
}
