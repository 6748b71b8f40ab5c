//! A node's security state, shared by the tasks that enforce it.
//!
//! What it holds: the fleet's root public key (the trust anchor), this node's own
//! certificate and grants, the members it has verified on live connections, the
//! fleet-state log (revocations, admins, invite redemptions: [`super::fleetlog`], kept in
//! `<data-dir>/fleet-state.log`, fsynced before use), and, on an admin's node, its admin
//! certificate and key. The fleet root key is never loaded here: only `mesh fleet`
//! commands hand it over ([`Trust::set_root_key`]). Decisions are delegated to the pure
//! modules ([`super::cert`], [`super::grant`], [`super::fleetlog`]); this module adds the
//! state, persistence, the audit trail and notifications (a `watch` channel that ticks
//! on every change, so open streams re-check at once).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::Duration;

use camesh_proto::pb;
use libp2p::identity::{Keypair, PublicKey};
use libp2p::PeerId;
use tokio::sync::watch;

mod cut;
mod pickup;
mod sign;

pub use pickup::store_grant;

use super::admin::AdminInfo;
use super::audit::Audit;
use super::cert::{self, CertInfo};
use super::fleetlog::{Effect, FleetLog, Lag, LogError};
use super::grant::{self, GrantInfo, Rights};
use super::signed;
use super::statefile::StateFile;
use super::{now_s, At, AuthError, CERT_FILE, DEFAULT_SKEW_S};

/// An admin's certificate, in the admin's data folder beside [`CERT_FILE`].
pub const ADMIN_CERT_FILE: &str = "admin.cert";
/// Grants this node keeps for itself.
const MAX_OWN_GRANTS: usize = 1024;
/// Members remembered at once (one per connected peer; bounded against churn).
const MAX_MEMBERS: usize = 65_536;
/// Peers remembered as having entries we lack, until the sync task asks them.
const MAX_BEHIND: usize = 256;

/// This node as an admin: its key and root-signed admin certificate.
#[derive(Debug, Clone)]
struct AdminSelf {
    key: Keypair,
    cert: pb::Signed,
    info: AdminInfo,
}

#[derive(Debug)]
pub struct Trust {
    pub fleet_id: String,
    pub root: PublicKey,
    me: PeerId,
    dir: Option<PathBuf>,
    own_cert: RwLock<Option<pb::Signed>>,
    members: RwLock<HashMap<PeerId, CertInfo>>,
    /// Connected peers whose membership exchange failed without a certificate (they are
    /// kept for the grace period, e.g. to redeem an invite): servers refuse them at once.
    unproven: Mutex<HashSet<PeerId>>,
    log: RwLock<FleetLog>,
    /// Serializes appends (file, then memory) and holds the open file.
    store: Mutex<Option<StateFile>>,
    grants: RwLock<Vec<(pb::Signed, GrantInfo)>>,
    root_key: RwLock<Option<Keypair>>,
    admin: RwLock<Option<AdminSelf>>,
    behind: Mutex<HashSet<PeerId>>,
    /// Files of the data folder already read, by name, with what they looked like then
    /// (see [`Trust::reload_from_disk`]).
    seen: Mutex<HashMap<String, pickup::Seen>>,
    changed: watch::Sender<u64>,
    grace: AtomicU64,
    skew_s: AtomicI64,
    pub audit: Audit,
}

impl Trust {
    /// Loads the state kept in `dir` (certificate, grants, the fleet-state log).
    pub fn load(dir: &Path, fleet_id: &str, root: PublicKey, me: PeerId) -> Self {
        let audit = Audit::open(dir);
        let t = Self::new(fleet_id, root, me, Some(dir.to_owned()), audit);
        // The certificate and grants in the folder (what the running node re-reads later).
        t.reload(false);
        if let Some(info) = t.own_cert_info() {
            tracing::info!(role = ?info.role, expires = info.not_after_unix_s, "membership certificate loaded");
        }
        match StateFile::open(dir) {
            Ok((file, loaded)) => {
                if loaded.cut_bytes > 0 {
                    tracing::warn!(bytes = loaded.cut_bytes, file = %file.path().display(), "torn tail of the fleet-state log cut");
                }
                let mut log = t.log.write().unwrap_or_else(|e| e.into_inner());
                let mut bad = 0;
                for e in &loaded.entries {
                    if log.apply(e).is_err() {
                        bad += 1;
                    }
                }
                if bad > 0 {
                    tracing::warn!(bad, "stored fleet-state entries that do not verify were skipped");
                }
                drop(log);
                *t.store.lock().unwrap_or_else(|e| e.into_inner()) = Some(file);
            }
            Err(e) => {
                tracing::warn!(error = %e, "fleet-state log cannot be opened; changes will not survive a restart")
            }
        }
        t
    }

    fn new(fleet_id: &str, root: PublicKey, me: PeerId, dir: Option<PathBuf>, audit: Audit) -> Self {
        Self {
            fleet_id: fleet_id.to_owned(),
            log: RwLock::new(FleetLog::new(fleet_id, root.clone())),
            root,
            me,
            dir,
            own_cert: RwLock::new(None),
            members: RwLock::new(HashMap::new()),
            unproven: Mutex::new(HashSet::new()),
            store: Mutex::new(None),
            grants: RwLock::new(Vec::new()),
            root_key: RwLock::new(None),
            admin: RwLock::new(None),
            behind: Mutex::new(HashSet::new()),
            seen: Mutex::new(HashMap::new()),
            changed: watch::channel(0).0,
            grace: AtomicU64::new(1000),
            skew_s: AtomicI64::new(DEFAULT_SKEW_S),
            audit,
        }
    }

    /// In-memory state (tests).
    pub fn ephemeral(fleet_id: &str, root: PublicKey, me: PeerId) -> Self {
        Self::new(fleet_id, root, me, None, Audit::none())
    }

    /// How long a new peer has to prove membership (config `limits.membership_grace_ms`).
    pub fn grace(&self) -> Duration {
        Duration::from_millis(self.grace.load(Ordering::Relaxed))
    }

    pub fn set_grace(&self, grace: Duration) {
        let ms = u64::try_from(grace.as_millis()).unwrap_or(u64::MAX);
        self.grace.store(ms, Ordering::Relaxed);
    }

    /// Clock skew allowed when judging certificates and grants (`limits.clock_skew_s`).
    pub fn skew_s(&self) -> i64 {
        self.skew_s.load(Ordering::Relaxed)
    }

    pub fn set_skew(&self, skew_s: i64) {
        self.skew_s.store(skew_s.max(0), Ordering::Relaxed);
    }

    /// Now, with the configured skew.
    pub fn at(&self) -> At {
        At {
            now: now_s(),
            skew_s: self.skew_s(),
        }
    }

    pub fn me(&self) -> PeerId {
        self.me
    }

    fn tick(&self) {
        self.changed.send_modify(|n| *n += 1);
    }

    // ---- own certificate ----

    /// This node's certificate, verified now (None if missing or expired).
    pub fn own_cert_info(&self) -> Option<CertInfo> {
        let c = self.own_cert()?;
        cert::verify(&c, &self.root, &self.fleet_id, &self.me, self.at()).ok()
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
        let info = cert::verify(&s, &self.root, &self.fleet_id, &self.me, self.at())?;
        *self.own_cert.write().unwrap_or_else(|e| e.into_inner()) = Some(s.clone());
        if let Some(dir) = &self.dir {
            let _ = std::fs::write(dir.join(CERT_FILE), signed::encode(&s));
        }
        Ok(info)
    }

    // ---- members (layer 1) ----

    /// Verifies a certificate presented on a connection with `peer`; remembers the member.
    pub fn admit(&self, peer: PeerId, c: &pb::Signed) -> Result<CertInfo, AuthError> {
        let result = cert::verify(c, &self.root, &self.fleet_id, &peer, self.at()).and_then(|info| {
            match self.log_read().revoked().cert_revoked(&info) {
                Some(what) => Err(AuthError::Revoked(what)),
                None => Ok(info),
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
                self.unproven.lock().unwrap_or_else(|e| e.into_inner()).remove(&peer);
                if new {
                    self.audit.record(
                        "admitted",
                        &peer.to_string(),
                        "",
                        &format!("{:?} {}", info.role, info.name),
                    );
                }
                self.tick();
            }
            Err(e) => self
                .audit
                .record("refused-connection", &peer.to_string(), "", &e.to_string()),
        }
        result
    }

    /// This node's fleet proof as `side` of a connection to `other` ([`super::proof`]).
    pub fn prove(&self, side: super::proof::Side, other: &PeerId) -> [u8; super::proof::PROOF_BYTES] {
        super::proof::prove(&self.root, side, &self.me, other)
    }

    /// Whether `proof` from `peer` (as `side`) shows it knows this fleet's root key.
    pub fn check_proof(&self, side: super::proof::Side, peer: &PeerId, proof: &[u8]) -> bool {
        super::proof::check(&self.root, side, peer, &self.me, proof)
    }

    pub fn member(&self, peer: &PeerId) -> Option<CertInfo> {
        let m = self.members.read().unwrap_or_else(|e| e.into_inner());
        m.get(peer)
            .filter(|c| c.not_after_unix_s + self.skew_s() >= now_s())
            .cloned()
    }

    pub fn forget(&self, peer: &PeerId) {
        self.members.write().unwrap_or_else(|e| e.into_inner()).remove(peer);
        self.unproven.lock().unwrap_or_else(|e| e.into_inner()).remove(peer);
    }

    /// Records that `peer` presented no certificate: [`Trust::wait_member`] answers `None`
    /// for it at once (until it is admitted, e.g. by redeeming an invite, or forgotten).
    pub fn mark_unproven(&self, peer: PeerId) {
        let mut u = self.unproven.lock().unwrap_or_else(|e| e.into_inner());
        if u.len() >= MAX_MEMBERS {
            u.clear();
        }
        u.insert(peer);
        drop(u);
        self.tick();
    }

    fn is_unproven(&self, peer: &PeerId) -> bool {
        self.unproven.lock().unwrap_or_else(|e| e.into_inner()).contains(peer)
    }

    /// Waits up to `limit` for `peer` to be verified (its certificate exchange may still
    /// be in flight when its first stream arrives).
    pub async fn wait_member(&self, peer: &PeerId, limit: Duration) -> Option<CertInfo> {
        self.wait_admitted(peer, limit, true).await
    }

    /// [`Trust::wait_member`] for the grace timer: a peer that presented no certificate
    /// still has the whole period (to redeem an invite) before it is dropped.
    pub async fn wait_grace(&self, peer: &PeerId, limit: Duration) -> Option<CertInfo> {
        self.wait_admitted(peer, limit, false).await
    }

    async fn wait_admitted(&self, peer: &PeerId, limit: Duration, unproven_ends: bool) -> Option<CertInfo> {
        let mut rx = self.changed.subscribe();
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(c) = self.member(peer) {
                return Some(c);
            }
            if self.peer_revoked(peer) || (unproven_ends && self.is_unproven(peer)) {
                return None;
            }
            if tokio::time::timeout_at(deadline, rx.changed()).await.is_err() {
                return self.member(peer);
            }
        }
    }

    /// Ticks on every admission, fleet-state entry and grant change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    // ---- grants (layer 2) ----

    /// Whether `peer` may receive `camera`'s live video and keys under `g`: the `live`
    /// right, or `record` when `peer` is a verified NVR (recording needs no right to watch).
    pub fn check_watch(
        &self,
        peer: &PeerId,
        g: &pb::Signed,
        camera: &str,
        tags: &[String],
    ) -> Result<GrantInfo, AuthError> {
        self.check_grant(peer, g, camera, tags, Rights::LIVE)
            .or_else(|live_err| {
                let nvr = self.member(peer).is_some_and(|c| c.role == pb::MemberRole::Nvr);
                if !nvr {
                    return Err(live_err);
                }
                self.check_grant(peer, g, camera, tags, Rights::RECORD)
                    .map_err(|_| live_err)
            })
    }

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
        let info = grant::verify(grant_bytes, &self.root, &self.fleet_id, peer, self.at())?;
        if let Some(what) = self.grant_revoked(&info) {
            return Err(AuthError::Revoked(what));
        }
        if !info.covers(camera, tags) {
            return Err(AuthError::NotCovered(format!("camera {camera}")));
        }
        if !info.rights.contains(right) {
            return Err(AuthError::NotCovered(format!("the {right} right")));
        }
        Ok(info)
    }

    /// Adds a grant held by this node (verified against our own peer id); a grant held
    /// already (same serial) is not added twice.
    pub fn add_grant(&self, g: pb::Signed, store: bool) -> Result<GrantInfo, AuthError> {
        let info = grant::verify(&g, &self.root, &self.fleet_id, &self.me, self.at())?;
        let mut gs = self.grants.write().unwrap_or_else(|e| e.into_inner());
        if gs.iter().any(|(_, held)| held.chain[0] == info.chain[0]) {
            return Ok(info);
        }
        if gs.len() >= MAX_OWN_GRANTS {
            return Err(AuthError::Refused("too many grants held".into()));
        }
        if store {
            if let Some(dir) = &self.dir {
                if let Err(e) = store_grant(dir, &g, info.chain[0]) {
                    tracing::warn!(error = %e, serial = info.chain[0], "grant not stored: it is lost on restart");
                }
            }
        }
        gs.push((g, info.clone()));
        drop(gs);
        self.tick();
        Ok(info)
    }

    /// A grant this node holds that gives `right` on `camera`, longest-lived first; on an
    /// admin's node, one it signs for itself within its scope.
    pub fn grant_for(&self, camera: &str, right: Rights) -> Option<pb::Signed> {
        let now = now_s();
        let log = self.log_read();
        let gs = self.grants.read().unwrap_or_else(|e| e.into_inner());
        let held = gs
            .iter()
            .filter(|(_, i)| i.not_after_unix_s > now && i.rights.contains(right))
            .filter(|(_, i)| log.revoked().grant_revoked(i).is_none())
            .filter(|(_, i)| i.cameras.iter().any(|c| c == "*" || c == camera) || !i.tags.is_empty())
            .max_by_key(|(_, i)| i.not_after_unix_s)
            .map(|(g, _)| g.clone());
        drop((gs, log));
        held.or_else(|| self.self_grant(camera, right))
    }

    // ---- the fleet-state log: revocations, admins, redemptions ----

    fn log_read(&self) -> std::sync::RwLockReadGuard<'_, FleetLog> {
        self.log.read().unwrap_or_else(|e| e.into_inner())
    }

    pub fn peer_revoked(&self, p: &PeerId) -> bool {
        self.log_read().revoked().peer_revoked(p)
    }

    /// Whether a grant has been revoked since it was checked (any serial of its chain, its
    /// holder, a delegator or its admin); says what.
    pub fn grant_revoked(&self, g: &GrantInfo) -> Option<String> {
        self.log_read().revoked().grant_revoked(g)
    }

    /// How many peers and serials are revoked (grows with every revocation).
    pub fn revocation_count(&self) -> usize {
        self.log_read().revoked().len()
    }

    /// Entries in the fleet-state log.
    pub fn log_len(&self) -> usize {
        self.log_read().len()
    }

    pub fn fleet_summary(&self) -> pb::FleetSummary {
        self.log_read().summary()
    }

    /// What a member with summary `theirs` lacks (at most `budget` bytes), and whether
    /// more remains.
    pub fn fleet_missing_for(&self, theirs: &pb::FleetSummary, budget: usize) -> (Vec<pb::Signed>, bool) {
        self.log_read().missing_for(theirs, budget)
    }

    pub fn fleet_lag(&self, theirs: &pb::FleetSummary) -> Lag {
        self.log_read().lag(theirs)
    }

    /// Every entry of the log (what `mesh fleet state` prints).
    pub fn fleet_entries(&self) -> Vec<pb::Signed> {
        self.log_read().entries().cloned().collect()
    }

    /// Verifies an entry, stores it (fsynced) and applies it. `Ok` only for a new entry;
    /// refusals say why and leave the log as it was.
    pub fn apply_entry(&self, s: &pb::Signed) -> Result<Effect, LogError> {
        let mut store = self.store.lock().unwrap_or_else(|e| e.into_inner());
        let checked = self.log_read().check(s)?;
        if let Some(file) = store.as_mut() {
            file.append(s).map_err(|e| LogError::Store(e.to_string()))?;
        }
        let effect = checked.effect.clone();
        let (issuer, seq) = (checked.issuer, checked.seq);
        let mut log = self.log.write().unwrap_or_else(|e| e.into_inner());
        log.append(checked);
        drop(log);
        drop(store);
        if let Effect::Revocation { peers, .. } = &effect {
            let mut m = self.members.write().unwrap_or_else(|e| e.into_inner());
            m.retain(|p, _| !peers.contains(p));
        }
        let detail = match &effect {
            Effect::Revocation { peers, grants, reason } => {
                format!("revoked {} peer(s), {} serial(s): {reason}", peers.len(), grants.len())
            }
            Effect::Admin(a) => format!("admin {} ({}) certified", a.name, a.admin),
            Effect::Redeemed { peer, .. } => format!("invite redeemed by {peer}"),
        };
        self.audit.record(
            "fleet-state",
            &issuer.to_string(),
            "",
            &format!("entry {seq}: {detail}"),
        );
        tracing::info!(%issuer, seq, "{detail}");
        self.tick();
        Ok(effect)
    }

    /// Remembers that `peer` has entries we lack (a gap seen in gossip), for the sync task.
    pub fn note_behind(&self, peer: PeerId) {
        let mut b = self.behind.lock().unwrap_or_else(|e| e.into_inner());
        if b.len() < MAX_BEHIND && b.insert(peer) {
            drop(b);
            self.tick();
        }
    }

    /// The peers noted by [`Trust::note_behind`], once.
    pub fn take_behind(&self) -> Vec<PeerId> {
        self.behind.lock().unwrap_or_else(|e| e.into_inner()).drain().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::super::admin;
    use super::super::cert::CertRequest;
    use super::super::fleetlog;
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
        // Entries issued on another node (the admin's) arrive here.
        let admin_side = Trust::ephemeral("f", root.public(), PeerId::random());
        admin_side.set_root_key(root.clone()).expect("our root");
        let r = admin_side.revoke(&[], &[info.chain[0]], "").expect("issued");
        assert!(matches!(t.apply_entry(&r), Ok(Effect::Revocation { .. })));
        assert!(matches!(t.apply_entry(&r), Err(LogError::Duplicate { .. })));
        assert!(matches!(
            t.check_grant(&a, &g, "cam1", &[], Rights::LIVE),
            Err(AuthError::Revoked(_))
        ));
        let r2 = admin_side.revoke(&[a], &[], "").expect("issued");
        t.apply_entry(&r2).expect("applies");
        assert!(t.member(&a).is_none());
        assert!(t.admit(a, &c).is_err(), "a revoked peer cannot come back");
    }

    fn grant_req(holder: PeerId, rights: Rights) -> grant::GrantRequest {
        grant::GrantRequest {
            holder,
            cameras: vec!["cam1".into()],
            tags: vec![],
            rights,
            not_before_unix_s: 0,
            not_after_unix_s: now_s() + 600,
        }
    }

    #[test]
    fn an_invite_is_redeemed_once_only_with_the_admin_and_by_the_node_it_names() {
        let root = Keypair::generate_ed25519();
        let me = PeerId::random();
        let admin = Trust::ephemeral("f", root.public(), me);
        admin.set_root_key(root.clone()).expect("root");
        let invite = |admin_peer: PeerId, holder: Option<PeerId>| {
            let text = super::super::invite::issue(
                &root,
                "f",
                pb::MemberRole::Camera,
                "cam",
                now_s() + 600,
                admin_peer,
                &[],
                &[],
                3600,
                holder,
            );
            super::super::invite::parse(&text, now_s()).expect("valid").1
        };
        let (x, y) = (PeerId::random(), PeerId::random());
        // Issued for another admin node: refused here.
        let e = admin.redeem_invite(&invite(PeerId::random(), None), x).unwrap_err();
        assert!(e.to_string().contains("redeem it there"), "{e}");
        // Bound to x: y cannot use it, x can, once.
        let bound = invite(me, Some(x));
        let e = admin.redeem_invite(&bound, y).unwrap_err();
        assert!(e.to_string().contains("another node"), "{e}");
        admin.redeem_invite(&bound, x).expect("its holder redeems it");
        let e = admin.redeem_invite(&bound, x).unwrap_err();
        assert!(e.to_string().contains("already been used"), "{e}");
        // Unbound: a bearer invite, still single-use.
        let open = invite(me, None);
        admin.redeem_invite(&open, y).expect("redeemed");
        assert!(admin.redeem_invite(&open, x).is_err());
    }

    #[test]
    fn a_scoped_admin_grants_within_scope_and_its_revocation_cascades() {
        let root = Keypair::generate_ed25519();
        let admin_key = Keypair::generate_ed25519();
        let admin_peer = admin_key.public().to_peer_id();
        let fleet = Trust::ephemeral("f", root.public(), PeerId::random());
        fleet.set_root_key(root.clone()).expect("root");
        let mut scope = admin::AdminRequest::full(admin_peer, "depot", 3600);
        scope.cameras = vec!["cam1".into()];
        scope.rights = Rights::LIVE.union(Rights::DELEGATE);
        let cert = fleet.certify_admin(&scope).expect("certified");
        let admin_node = Trust::ephemeral("f", root.public(), admin_peer);
        admin_node.set_admin(admin_key, cert).expect("admin");
        // Within scope, and outside it.
        let (viewer_key, camera) = (
            Keypair::generate_ed25519(),
            Trust::ephemeral("f", root.public(), PeerId::random()),
        );
        for e in fleet.fleet_entries() {
            camera.apply_entry(&e).expect("the camera learns the admin certificate");
            admin_node.apply_entry(&e).expect("so does the admin");
        }
        let viewer = viewer_key.public().to_peer_id();
        let g = admin_node
            .issue_grant(&grant_req(viewer, Rights::LIVE.union(Rights::DELEGATE)))
            .expect("in scope");
        camera
            .check_grant(&viewer, &g, "cam1", &[], Rights::LIVE)
            .expect("valid");
        let mut wide = grant_req(viewer, Rights::LIVE);
        wide.cameras = vec!["cam2".into()];
        assert!(matches!(admin_node.issue_grant(&wide), Err(AuthError::Wider(_))));
        assert!(admin_node.issue_grant(&grant_req(viewer, Rights::EXPORT)).is_err());
        // The viewer delegates; revoking the viewer (the delegator) kills the child too.
        let friend = PeerId::random();
        let child = grant::issue(&viewer_key, "f", &grant_req(friend, Rights::LIVE), Some(g.clone()));
        camera
            .check_grant(&friend, &child, "cam1", &[], Rights::LIVE)
            .expect("delegated");
        let r = fleet.revoke(&[viewer], &[], "lost phone").expect("revoked");
        camera.apply_entry(&r).expect("applies");
        admin_node.apply_entry(&r).expect("applies");
        let e = camera
            .check_grant(&friend, &child, "cam1", &[], Rights::LIVE)
            .expect_err("cascade");
        assert!(e.to_string().contains("issued a grant"), "{e}");
        // Revoking the admin kills every grant it signed.
        let other = PeerId::random();
        let g2 = admin_node
            .issue_grant(&grant_req(other, Rights::LIVE))
            .expect("in scope");
        camera
            .check_grant(&other, &g2, "cam1", &[], Rights::LIVE)
            .expect("valid");
        let r = fleet
            .revoke(&[admin_peer], &[], "admin laptop stolen")
            .expect("revoked");
        camera.apply_entry(&r).expect("applies");
        assert!(matches!(
            camera.check_grant(&other, &g2, "cam1", &[], Rights::LIVE),
            Err(AuthError::Revoked(_))
        ));
        admin_node.apply_entry(&r).expect("the admin learns too");
        assert!(
            admin_node.issue_grant(&grant_req(other, Rights::LIVE)).is_err(),
            "a revoked admin signs nothing"
        );
    }

    #[test]
    fn the_log_survives_a_restart_and_a_stored_forgery_is_skipped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = Keypair::generate_ed25519();
        let me = PeerId::random();
        let admin_side = Trust::ephemeral("f", root.public(), PeerId::random());
        admin_side.set_root_key(root.clone()).expect("root");
        let victim = PeerId::random();
        let r = admin_side.revoke(&[victim], &[], "").expect("issued");
        {
            let t = Trust::load(dir.path(), "f", root.public(), me);
            t.apply_entry(&r).expect("applies");
        }
        let t = Trust::load(dir.path(), "f", root.public(), me);
        assert!(t.peer_revoked(&victim), "survives a restart");
        assert_eq!(t.log_len(), 1);
        // An entry appended to the file by hand, signed by someone else, is not believed.
        let mallory = Keypair::generate_ed25519();
        let forged = fleetlog::issue(
            &mallory,
            None,
            "f",
            2,
            None,
            pb::fleet_entry_body::Entry::Revocation(super::super::revocation::body("f", &[me], &[], "", 1)),
            1,
        );
        let mut f = super::super::statefile::StateFile::open(dir.path()).expect("open").0;
        f.append(&forged).expect("append");
        drop((t, f));
        let t = Trust::load(dir.path(), "f", root.public(), me);
        assert!(!t.peer_revoked(&me));
        assert_eq!(t.log_len(), 1);
    }
}
