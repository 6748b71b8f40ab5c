//! Scoped admins, pure: the fleet root delegates day-to-day administration.
//!
//! The root signs an [`pb::AdminCertBody`]: an admin's peer id, the cameras and tags it
//! administers, the rights it may grant, whether it may revoke and admit, and a validity.
//! The admin then signs with its own node key, embedding that certificate:
//! - root-level grants within its scope ([`super::grant`]: the grant's `admin` field),
//! - membership certificates when `may_admit` ([`super::cert`]),
//! - fleet-state entries: revocations when `may_revoke`, invite redemptions when
//!   `may_admit` ([`super::fleetlog`]).
//!
//! So the root key is needed only to create the fleet and its admins, and every grant
//! names its admin chain: revoking the admin (its peer id or its certificate's serial)
//! invalidates everything it signed.

use camesh_proto::pb;
use libp2p::identity::{Keypair, PublicKey};
use libp2p::PeerId;

use super::rights::Rights;
use super::signed::{self, Kind};
use super::{check_validity, At, AuthError};

/// What an admin may do, as the root signed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminInfo {
    pub admin: PeerId,
    pub name: String,
    pub cameras: Vec<String>,
    pub tags: Vec<String>,
    pub rights: Rights,
    pub may_revoke: bool,
    pub may_admit: bool,
    pub not_before_unix_s: i64,
    pub not_after_unix_s: i64,
    pub serial: u64,
}

/// The terms of a new admin certificate.
#[derive(Debug, Clone)]
pub struct AdminRequest {
    pub admin: PeerId,
    pub name: String,
    pub cameras: Vec<String>,
    pub tags: Vec<String>,
    pub rights: Rights,
    pub may_revoke: bool,
    pub may_admit: bool,
    pub valid_s: i64,
}

impl AdminRequest {
    /// Every camera, every right, revoke and admit: what `mesh fleet init` gives the
    /// laptop that creates the fleet.
    pub fn full(admin: PeerId, name: &str, valid_s: i64) -> Self {
        Self {
            admin,
            name: name.to_owned(),
            cameras: vec!["*".into()],
            tags: vec![],
            rights: Rights::ALL,
            may_revoke: true,
            may_admit: true,
            valid_s,
        }
    }
}

/// Signs an admin certificate with the fleet root.
pub fn issue(root: &Keypair, fleet_id: &str, req: &AdminRequest, now: i64) -> pb::Signed {
    let body = pb::AdminCertBody {
        fleet_id: fleet_id.to_owned(),
        admin: req.admin.to_bytes().into(),
        name: req.name.clone(),
        cameras: req.cameras.clone(),
        tags: req.tags.clone(),
        rights: req.rights.0,
        may_revoke: req.may_revoke,
        may_admit: req.may_admit,
        not_before_unix_s: now - 60,
        not_after_unix_s: now.saturating_add(req.valid_s),
        serial: rand::random(),
    };
    signed::sign(Kind::Admin, &body, root)
}

/// Verifies that `s` is an admin certificate signed by `root` for `fleet_id` (signature
/// and fleet only: validity in time is the caller's question, see [`AdminInfo::check_time`]).
pub fn open(s: &pb::Signed, root: &PublicKey, fleet_id: &str) -> Result<AdminInfo, AuthError> {
    let (signer, body): (_, pb::AdminCertBody) = signed::open("admin certificate", Kind::Admin, s)?;
    if &signer != root {
        return Err(AuthError::WrongSigner {
            what: "admin certificate",
            signer: signer.to_peer_id().to_string(),
            expected: root.to_peer_id().to_string(),
        });
    }
    if body.fleet_id != fleet_id {
        return Err(AuthError::WrongFleet {
            what: "admin certificate",
            got: body.fleet_id.chars().take(64).collect(),
            expected: fleet_id.to_owned(),
        });
    }
    Ok(AdminInfo {
        admin: signed::peer_from("admin certificate", &body.admin)?,
        name: body.name,
        cameras: body.cameras,
        tags: body.tags,
        rights: Rights(body.rights),
        may_revoke: body.may_revoke,
        may_admit: body.may_admit,
        not_before_unix_s: body.not_before_unix_s,
        not_after_unix_s: body.not_after_unix_s,
        serial: body.serial,
    })
}

/// Who signed something that the root or an admin may sign: `Ok(None)` for the root,
/// `Ok(Some(admin))` for an admin whose certificate (`admin`) verifies and names `signer`.
pub fn signer(
    what: &'static str,
    signer: &PublicKey,
    admin: Option<&pb::Signed>,
    root: &PublicKey,
    fleet_id: &str,
) -> Result<Option<AdminInfo>, AuthError> {
    if signer == root {
        return Ok(None);
    }
    let Some(cert) = admin else {
        return Err(AuthError::WrongSigner {
            what,
            signer: signer.to_peer_id().to_string(),
            expected: format!("{} (the fleet root) or an admin", root.to_peer_id()),
        });
    };
    let info = open(cert, root, fleet_id)?;
    if info.admin != signer.to_peer_id() {
        return Err(AuthError::WrongSigner {
            what,
            signer: signer.to_peer_id().to_string(),
            expected: format!("{} (the admin its certificate names)", info.admin),
        });
    }
    Ok(Some(info))
}

impl AdminInfo {
    pub fn check_time(&self, at: impl Into<At>) -> Result<(), AuthError> {
        check_validity("admin certificate", self.not_before_unix_s, self.not_after_unix_s, at)
    }

    fn all_cameras(&self) -> bool {
        self.cameras.iter().any(|c| c == "*")
    }

    /// Whether a grant for `cameras`/`tags` with `rights` until `until` lies in this scope.
    pub fn allows_grant(
        &self,
        cameras: &[String],
        tags: &[String],
        rights: Rights,
        until: i64,
    ) -> Result<(), AuthError> {
        let out = |m: String| AuthError::Wider(format!("{m} is outside admin {}'s scope", self.name));
        if !self.rights.contains(rights) {
            return Err(out(format!("rights {rights}")));
        }
        for c in cameras {
            if !(self.all_cameras() || self.cameras.contains(c)) {
                return Err(out(format!("camera {c:?}")));
            }
        }
        for t in tags {
            if !(self.all_cameras() || self.tags.contains(t)) {
                return Err(out(format!("tag {t:?}")));
            }
        }
        if until > self.not_after_unix_s {
            return Err(AuthError::Wider(format!(
                "it would outlast admin {}'s certificate by {} s (ask for a shorter validity)",
                self.name,
                until - self.not_after_unix_s
            )));
        }
        Ok(())
    }

    /// Whether a membership certificate for `peer` (with `role`, serving `cameras`) until
    /// `until` may be signed by this admin. Admins never create admins: the admin role is
    /// only for the admin's own renewal.
    pub fn allows_member(
        &self,
        peer: &PeerId,
        role: pb::MemberRole,
        cameras: &[String],
        until: i64,
    ) -> Result<(), AuthError> {
        if !self.may_admit {
            return Err(AuthError::Refused(format!("admin {} may not admit members", self.name)));
        }
        if role == pb::MemberRole::Admin && peer != &self.admin {
            return Err(AuthError::Refused(format!(
                "admin {} may not admit other admins (the fleet root does)",
                self.name
            )));
        }
        for c in cameras {
            if !(self.all_cameras() || self.cameras.contains(c)) {
                return Err(AuthError::Wider(format!(
                    "camera {c:?} is outside admin {}'s scope",
                    self.name
                )));
            }
        }
        if until > self.not_after_unix_s {
            return Err(AuthError::Wider(format!(
                "a validity beyond admin {}'s certificate",
                self.name
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scoped(admin: PeerId) -> AdminRequest {
        AdminRequest {
            admin,
            name: "depot".into(),
            cameras: vec!["cam1".into()],
            tags: vec!["depot".into()],
            rights: Rights::LIVE.union(Rights::PLAYBACK),
            may_revoke: false,
            may_admit: true,
            valid_s: 3600,
        }
    }

    #[test]
    fn scope_is_enforced() {
        let root = Keypair::generate_ed25519();
        let a = Keypair::generate_ed25519();
        let c = issue(&root, "f", &scoped(a.public().to_peer_id()), 1000);
        let info = signer("grant", &a.public(), Some(&c), &root.public(), "f")
            .expect("admin")
            .expect("not root");
        info.check_time(1000).expect("valid now");
        assert!(info.check_time(10_000).is_err());
        let cams = |c: &[&str]| c.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        info.allows_grant(&cams(&["cam1"]), &[], Rights::LIVE, 2000)
            .expect("in scope");
        info.allows_grant(&[], &cams(&["depot"]), Rights::PLAYBACK, 2000)
            .expect("tag in scope");
        for (cameras, tags, rights, until) in [
            (cams(&["cam2"]), vec![], Rights::LIVE, 2000),
            (cams(&["*"]), vec![], Rights::LIVE, 2000),
            (vec![], cams(&["yard"]), Rights::LIVE, 2000),
            (cams(&["cam1"]), vec![], Rights::EXPORT, 2000),
            (cams(&["cam1"]), vec![], Rights::LIVE, 9000),
        ] {
            assert!(matches!(
                info.allows_grant(&cameras, &tags, rights, until),
                Err(AuthError::Wider(_))
            ));
        }
        let p = PeerId::random();
        info.allows_member(&p, pb::MemberRole::Viewer, &[], 2000)
            .expect("admits viewers");
        assert!(info.allows_member(&p, pb::MemberRole::Admin, &[], 2000).is_err());
        assert!(info
            .allows_member(&p, pb::MemberRole::Camera, &cams(&["cam9"]), 2000)
            .is_err());
    }

    #[test]
    fn only_the_root_makes_admins_and_only_the_named_admin_uses_one() {
        let root = Keypair::generate_ed25519();
        let a = Keypair::generate_ed25519();
        let mallory = Keypair::generate_ed25519();
        let forged = issue(&mallory, "f", &scoped(mallory.public().to_peer_id()), 1000);
        assert!(signer("grant", &mallory.public(), Some(&forged), &root.public(), "f").is_err());
        let real = issue(&root, "f", &scoped(a.public().to_peer_id()), 1000);
        assert!(matches!(
            signer("grant", &mallory.public(), Some(&real), &root.public(), "f"),
            Err(AuthError::WrongSigner { .. })
        ));
        assert!(signer("grant", &mallory.public(), None, &root.public(), "f").is_err());
        assert_eq!(signer("grant", &root.public(), None, &root.public(), "f"), Ok(None));
        assert!(signer("grant", &a.public(), Some(&real), &root.public(), "g").is_err());
    }
}
