//! Grants (layer 2), pure: signed, expiring capabilities bound to a holder.
//!
//! A root grant is signed by the fleet root, or by an admin within its scope (the grant
//! embeds the admin's certificate, [`super::admin`]). A holder whose grant has the `delegate`
//! right may sign a child grant for someone else; the child carries its parent, and is
//! refused unless it is no wider than the parent in cameras, tags, rights and time. The
//! chain is at most [`MAX_DEPTH`] long. The camera (live) and the NVR (playback) verify
//! the whole chain on every stream open, against the authenticated peer id.

use std::collections::HashSet;

use camesh_proto::pb;
use libp2p::identity::{Keypair, PublicKey};
use libp2p::PeerId;

use super::admin;
pub use super::rights::Rights;
use super::signed::{self, Kind};
use super::{check_validity, At, AuthError};

/// Longest delegation chain (root grant + 3 delegations).
pub const MAX_DEPTH: usize = 4;

/// What a grant says, after verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantInfo {
    pub holder: PeerId,
    pub cameras: Vec<String>,
    pub tags: Vec<String>,
    pub rights: Rights,
    pub not_before_unix_s: i64,
    pub not_after_unix_s: i64,
    /// Serials of this grant, every ancestor, and the admin certificate that signed the
    /// root link (revoking any one revokes it).
    pub chain: Vec<u64>,
    /// Every peer the grant depends on: its holder, each delegator (the holders of its
    /// ancestors) and the admin that signed the root link. Revoking any one revokes it.
    pub parties: Vec<PeerId>,
}

impl GrantInfo {
    /// Whether this grant reaches camera `id` (with `tags`).
    pub fn covers(&self, id: &str, tags: &[String]) -> bool {
        self.cameras.iter().any(|c| c == "*" || c == id) || self.tags.iter().any(|t| tags.contains(t))
    }
}

/// The terms of a new grant.
#[derive(Debug, Clone)]
pub struct GrantRequest {
    pub holder: PeerId,
    pub cameras: Vec<String>,
    pub tags: Vec<String>,
    pub rights: Rights,
    pub not_before_unix_s: i64,
    pub not_after_unix_s: i64,
}

/// Signs a grant with `signer` (the fleet root, or for delegation the parent's holder).
pub fn issue(signer: &Keypair, fleet_id: &str, req: &GrantRequest, parent: Option<pb::Signed>) -> pb::Signed {
    issue_with(signer, fleet_id, req, parent, None)
}

/// Signs a root-level grant as an admin (`admin`: its admin certificate).
pub fn issue_as_admin(signer: &Keypair, admin: &pb::Signed, fleet_id: &str, req: &GrantRequest) -> pb::Signed {
    issue_with(signer, fleet_id, req, None, Some(admin.clone()))
}

fn issue_with(
    signer: &Keypair,
    fleet_id: &str,
    req: &GrantRequest,
    parent: Option<pb::Signed>,
    admin: Option<pb::Signed>,
) -> pb::Signed {
    let body = pb::GrantBody {
        fleet_id: fleet_id.to_owned(),
        holder: req.holder.to_bytes().into(),
        cameras: req.cameras.clone(),
        tags: req.tags.clone(),
        rights: req.rights.0,
        not_before_unix_s: req.not_before_unix_s,
        not_after_unix_s: req.not_after_unix_s,
        serial: rand::random(),
        parent,
        admin,
    };
    signed::sign(Kind::Grant, &body, signer)
}

/// Verifies a grant chain presented by `presenter`.
pub fn verify(
    s: &pb::Signed,
    root: &PublicKey,
    fleet_id: &str,
    presenter: &PeerId,
    at: impl Into<At>,
) -> Result<GrantInfo, AuthError> {
    let info = verify_chain(s, root, fleet_id, at.into(), 1)?;
    if &info.holder != presenter {
        return Err(AuthError::WrongHolder {
            what: "grant",
            holder: info.holder.to_string(),
            presenter: presenter.to_string(),
        });
    }
    Ok(info)
}

fn verify_chain(
    s: &pb::Signed,
    root: &PublicKey,
    fleet_id: &str,
    now: At,
    depth: usize,
) -> Result<GrantInfo, AuthError> {
    if depth > MAX_DEPTH {
        return Err(AuthError::Refused(format!("delegation chain longer than {MAX_DEPTH}")));
    }
    let (signer, body): (PublicKey, pb::GrantBody) = signed::open("grant", Kind::Grant, s)?;
    if body.fleet_id != fleet_id {
        return Err(AuthError::WrongFleet {
            what: "grant",
            got: body.fleet_id.chars().take(64).collect(),
            expected: fleet_id.to_owned(),
        });
    }
    check_validity("grant", body.not_before_unix_s, body.not_after_unix_s, now)?;
    let holder = signed::peer_from("grant", &body.holder)?;
    let info = GrantInfo {
        holder,
        cameras: body.cameras,
        tags: body.tags,
        rights: Rights(body.rights),
        not_before_unix_s: body.not_before_unix_s,
        not_after_unix_s: body.not_after_unix_s,
        chain: vec![body.serial],
        parties: vec![holder],
    };
    match body.parent {
        None => {
            let mut info = info;
            if let Some(a) = admin::signer("grant", &signer, body.admin.as_ref(), root, fleet_id)? {
                a.check_time(now)?;
                a.allows_grant(&info.cameras, &info.tags, info.rights, info.not_after_unix_s)?;
                info.chain.push(a.serial);
                info.parties.push(a.admin);
            }
            Ok(info)
        }
        Some(parent) => {
            let p = verify_chain(&parent, root, fleet_id, now, depth + 1)?;
            if signer.to_peer_id() != p.holder {
                return Err(AuthError::WrongSigner {
                    what: "delegated grant",
                    signer: signer.to_peer_id().to_string(),
                    expected: p.holder.to_string(),
                });
            }
            if !p.rights.contains(Rights::DELEGATE) {
                return Err(AuthError::Wider("the parent grant has no delegate right".into()));
            }
            narrower(&info, &p)?;
            let mut info = info;
            info.chain.extend(p.chain);
            info.parties.extend(p.parties);
            Ok(info)
        }
    }
}

/// A child is valid only if it is no wider than its parent in every dimension.
fn narrower(child: &GrantInfo, parent: &GrantInfo) -> Result<(), AuthError> {
    if !parent.rights.contains(child.rights) {
        return Err(AuthError::Wider(format!(
            "rights {} exceed the parent's {}",
            child.rights, parent.rights
        )));
    }
    let parent_all = parent.cameras.iter().any(|c| c == "*");
    for c in &child.cameras {
        if !(parent_all || parent.cameras.contains(c)) {
            return Err(AuthError::Wider(format!("camera {c:?} is not in the parent grant")));
        }
    }
    let parent_tags: HashSet<_> = parent.tags.iter().collect();
    for t in &child.tags {
        if !(parent_all || parent_tags.contains(t)) {
            return Err(AuthError::Wider(format!("tag {t:?} is not in the parent grant")));
        }
    }
    if child.not_after_unix_s > parent.not_after_unix_s || child.not_before_unix_s < parent.not_before_unix_s {
        return Err(AuthError::Wider("validity extends beyond the parent's".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(holder: PeerId, cameras: &[&str], rights: Rights, until: i64) -> GrantRequest {
        GrantRequest {
            holder,
            cameras: cameras.iter().map(|s| s.to_string()).collect(),
            tags: vec![],
            rights,
            not_before_unix_s: 0,
            not_after_unix_s: until,
        }
    }

    #[test]
    fn root_grant_covers_and_binds_holder() {
        let root = Keypair::generate_ed25519();
        let a = PeerId::random();
        let g = issue(&root, "f", &req(a, &["cam1"], Rights::LIVE, 5000), None);
        let info = verify(&g, &root.public(), "f", &a, 100).expect("valid");
        assert!(info.covers("cam1", &[]) && !info.covers("cam2", &[]));
        let b = PeerId::random();
        assert!(matches!(
            verify(&g, &root.public(), "f", &b, 100),
            Err(AuthError::WrongHolder { .. })
        ));
        assert!(matches!(
            verify(&g, &root.public(), "f", &a, 9000),
            Err(AuthError::Expired { .. })
        ));
    }

    #[test]
    fn forged_grant_is_refused() {
        let root = Keypair::generate_ed25519();
        let forger = Keypair::generate_ed25519();
        let a = PeerId::random();
        let g = issue(&forger, "f", &req(a, &["*"], Rights(255), 5000), None);
        assert!(matches!(
            verify(&g, &root.public(), "f", &a, 100),
            Err(AuthError::WrongSigner { .. })
        ));
    }

    #[test]
    fn delegation_only_narrows() {
        let root = Keypair::generate_ed25519();
        let a_key = Keypair::generate_ed25519();
        let a = a_key.public().to_peer_id();
        let b = PeerId::random();
        let parent = issue(
            &root,
            "f",
            &req(a, &["cam1", "cam2"], Rights::LIVE.union(Rights::DELEGATE), 5000),
            None,
        );
        let ok = issue(
            &a_key,
            "f",
            &req(b, &["cam1"], Rights::LIVE, 4000),
            Some(parent.clone()),
        );
        let info = verify(&ok, &root.public(), "f", &b, 100).expect("narrower delegation");
        assert_eq!(info.chain.len(), 2);
        for (cams, rights, until, why) in [
            (&["cam3"][..], Rights::LIVE, 4000, "camera"),
            (&["cam1"][..], Rights::LIVE.union(Rights::EXPORT), 4000, "rights"),
            (&["cam1"][..], Rights::LIVE, 6000, "validity"),
        ] {
            let wide = issue(&a_key, "f", &req(b, cams, rights, until), Some(parent.clone()));
            let e = verify(&wide, &root.public(), "f", &b, 100).expect_err(why);
            assert!(matches!(e, AuthError::Wider(_)), "{why}: {e}");
        }
        // Someone other than the parent's holder cannot delegate it.
        let mallory = Keypair::generate_ed25519();
        let stolen = issue(&mallory, "f", &req(b, &["cam1"], Rights::LIVE, 4000), Some(parent));
        assert!(matches!(
            verify(&stolen, &root.public(), "f", &b, 100),
            Err(AuthError::WrongSigner { .. })
        ));
    }
}
