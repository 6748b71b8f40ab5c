//! Signing on a node's behalf: the keys it may sign with (the fleet root key, handed
//! over only by `mesh fleet` commands, or this node's scoped admin certificate) and what
//! it signs with them (grants, membership certificates for invites and renewals, and
//! fleet-state entries: revocations, admin certificates, invite redemptions).

use camesh_proto::pb;
use libp2p::identity::Keypair;
use libp2p::PeerId;

use super::super::admin::{self, AdminInfo};
use super::super::cert::{self, CertInfo, CertRequest};
use super::super::fleetlog::{self, LogError};
use super::super::grant::{self, Rights};
use super::super::signed;
use super::super::{now_s, AuthError};
use super::{AdminSelf, Trust, ADMIN_CERT_FILE};

impl Trust {
    // ---- keys this node may sign with ----

    /// Hands this process the fleet root key (only `mesh fleet` commands do).
    pub fn set_root_key(&self, key: Keypair) -> Result<(), AuthError> {
        if key.public() != self.root {
            return Err(AuthError::Refused("that root key is not this fleet's".into()));
        }
        *self.root_key.write().unwrap_or_else(|e| e.into_inner()) = Some(key);
        Ok(())
    }

    pub(super) fn root_key(&self) -> Option<Keypair> {
        self.root_key.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Makes this node an admin: `key` is its identity, `cert` its root-signed admin
    /// certificate (see [`ADMIN_CERT_FILE`]).
    pub fn set_admin(&self, key: Keypair, cert: pb::Signed) -> Result<AdminInfo, AuthError> {
        let info = admin::open(&cert, &self.root, &self.fleet_id)?;
        if info.admin != self.me || key.public().to_peer_id() != self.me {
            return Err(AuthError::WrongHolder {
                what: "admin certificate",
                holder: info.admin.to_string(),
                presenter: self.me.to_string(),
            });
        }
        info.check_time(self.at())?;
        *self.admin.write().unwrap_or_else(|e| e.into_inner()) = Some(AdminSelf {
            key,
            cert,
            info: info.clone(),
        });
        Ok(info)
    }

    /// Loads `<dir>/admin.cert` if there is one (an admin's data folder).
    pub fn load_admin(&self, key: &Keypair) -> Option<Result<AdminInfo, AuthError>> {
        let bytes = std::fs::read(self.dir.as_ref()?.join(ADMIN_CERT_FILE)).ok()?;
        Some(signed::decode("admin certificate", &bytes).and_then(|c| self.set_admin(key.clone(), c)))
    }

    /// This node's admin scope, if it is an admin.
    pub fn admin_info(&self) -> Option<AdminInfo> {
        self.admin_self().map(|a| a.info)
    }

    pub(super) fn admin_self(&self) -> Option<AdminSelf> {
        let a = self.admin.read().unwrap_or_else(|e| e.into_inner()).clone()?;
        if a.info.check_time(self.at()).is_err() || self.log_read().revoked().peer_revoked(&self.me) {
            return None;
        }
        Some(a)
    }

    /// On an admin's node: make sure it has a current certificate of its own (signed with
    /// its admin certificate; needs `may_admit`).
    pub fn self_admit(&self, role: pb::MemberRole, name: &str, cameras: Vec<String>) -> Option<CertInfo> {
        let req = CertRequest {
            peer: self.me,
            role,
            name: name.to_owned(),
            valid_s: 30 * 86_400,
            cameras,
        };
        let c = self.sign_cert(&req).ok()?;
        self.install_cert_bytes(&signed::encode(&c)).ok()
    }

    /// Signs a membership certificate with the root key if this process holds it, else as
    /// an admin that may admit (capped to the admin certificate's validity).
    pub(super) fn sign_cert(&self, req: &CertRequest) -> Result<pb::Signed, AuthError> {
        if let Some(root) = self.root_key() {
            return Ok(cert::issue(&root, &self.fleet_id, req, now_s()));
        }
        let a = self
            .admin_self()
            .ok_or_else(|| AuthError::Refused("this node cannot admit members (no admin certificate)".into()))?;
        let now = now_s();
        let mut req = req.clone();
        req.valid_s = req.valid_s.min(a.info.not_after_unix_s - now);
        a.info
            .allows_member(&req.peer, req.role, &req.cameras, now + req.valid_s)?;
        Ok(cert::issue_by(&a.key, Some(&a.cert), &self.fleet_id, &req, now))
    }

    /// On an admin's node: a short grant for itself, signed with its admin certificate.
    pub(super) fn self_grant(&self, camera: &str, right: Rights) -> Option<pb::Signed> {
        let a = self.admin_self()?;
        let now = now_s();
        let req = grant::GrantRequest {
            holder: self.me,
            cameras: vec![camera.to_owned()],
            tags: vec![],
            rights: right,
            not_before_unix_s: now - 60,
            not_after_unix_s: (now + 3600).min(a.info.not_after_unix_s),
        };
        a.info
            .allows_grant(&req.cameras, &req.tags, req.rights, req.not_after_unix_s)
            .ok()?;
        Some(grant::issue_as_admin(&a.key, &a.cert, &self.fleet_id, &req))
    }

    /// Signs a grant for someone else as this node's admin (within its scope).
    pub fn issue_grant(&self, req: &grant::GrantRequest) -> Result<pb::Signed, AuthError> {
        let a = self.admin_self().ok_or_else(|| {
            AuthError::Refused(
                "this data directory holds no current admin certificate (admin.cert): ask the fleet root for one with `mesh fleet admin`".into(),
            )
        })?;
        a.info
            .allows_grant(&req.cameras, &req.tags, req.rights, req.not_after_unix_s)?;
        Ok(grant::issue_as_admin(&a.key, &a.cert, &self.fleet_id, req))
    }

    /// Delegates: signs a grant for someone else with this node's own key (`key`), under
    /// a grant it holds with the `delegate` right that covers the request. Refused when
    /// this node or any link of the parent's chain is revoked (as far as this node's log
    /// knows), and when no held grant covers the request.
    pub fn delegate_grant(&self, key: &Keypair, req: &grant::GrantRequest) -> Result<pb::Signed, AuthError> {
        if key.public().to_peer_id() != self.me {
            return Err(AuthError::Refused("that key is not this node's".into()));
        }
        if self.peer_revoked(&self.me) {
            return Err(AuthError::Revoked(format!("this node ({})", self.me)));
        }
        let parents: Vec<pb::Signed> = {
            let gs = self.grants.read().unwrap_or_else(|e| e.into_inner());
            gs.iter()
                .filter(|(_, i)| i.rights.contains(Rights::DELEGATE))
                .map(|(g, _)| g.clone())
                .collect()
        };
        let mut last = AuthError::Refused(
            "this data directory holds no admin certificate (admin.cert) and no grant with the delegate right".into(),
        );
        for parent in parents {
            let child = grant::issue(key, &self.fleet_id, req, Some(parent));
            match grant::verify(&child, &self.root, &self.fleet_id, &req.holder, self.at()) {
                Ok(info) => match self.grant_revoked(&info) {
                    Some(what) => last = AuthError::Revoked(what),
                    None => return Ok(child),
                },
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Signs and applies the next entry of `key`'s chain (the root's or this admin's).
    pub(super) fn issue_entry(
        &self,
        key: &Keypair,
        admin: Option<&pb::Signed>,
        entry: pb::fleet_entry_body::Entry,
    ) -> Result<pb::Signed, LogError> {
        let (seq, prev) = self.log_read().next(&key.public().to_peer_id());
        let s = fleetlog::issue(key, admin, &self.fleet_id, seq, prev, entry, now_s());
        self.apply_entry(&s)?;
        Ok(s)
    }

    /// Revokes peers and/or serials: signed with the root key if this process holds it,
    /// else as this node's admin (needs `may_revoke`). Returns the entry to spread.
    pub fn revoke(&self, peers: &[PeerId], serials: &[u64], reason: &str) -> Result<pb::Signed, LogError> {
        let body = super::super::revocation::body(&self.fleet_id, peers, serials, reason, now_s());
        let entry = pb::fleet_entry_body::Entry::Revocation(body);
        if let Some(root) = self.root_key() {
            return self.issue_entry(&root, None, entry);
        }
        let a = self.admin_self().ok_or_else(|| {
            LogError::Invalid(AuthError::Refused(
                "this data directory holds no current admin certificate (admin.cert)".into(),
            ))
        })?;
        if !a.info.may_revoke {
            return Err(LogError::NotAllowed {
                issuer: self.me,
                what: "revocations",
            });
        }
        self.issue_entry(&a.key, Some(&a.cert), entry)
    }

    /// With the root key in hand: certifies a scoped admin and records it in the log.
    pub fn certify_admin(&self, req: &admin::AdminRequest) -> Result<pb::Signed, LogError> {
        let root = self.root_key().ok_or_else(|| {
            LogError::Invalid(AuthError::Refused("certifying admins needs the fleet root key".into()))
        })?;
        let c = admin::issue(&root, &self.fleet_id, req, now_s());
        self.issue_entry(&root, None, pb::fleet_entry_body::Entry::AdminCert(c.clone()))?;
        Ok(c)
    }

    // ---- invites and renewals (the root key, or an admin that may admit) ----

    /// Redeems an invite for `peer`: one use only (fleet-wide, through the log), before
    /// expiry, signed by our root.
    /// Whether this node can admit members (it holds the fleet root key, or an admin
    /// certificate that may admit): only such a node serves invite redemptions.
    pub fn may_admit(&self) -> bool {
        self.root_key().is_some() || self.admin_self().is_some_and(|a| a.info.may_admit)
    }

    pub fn redeem_invite(&self, invite: &pb::Signed, peer: PeerId) -> Result<pb::Signed, AuthError> {
        if !self.may_admit() {
            return Err(AuthError::Refused(
                "this node cannot admit members (no fleet root key or admin certificate)".into(),
            ));
        }
        let info = super::super::invite::open(invite, now_s())?;
        if info.fleet_root != self.root || info.fleet_id != self.fleet_id {
            return Err(AuthError::WrongSigner {
                what: "invite",
                signer: info.fleet_root.to_peer_id().to_string(),
                expected: self.root.to_peer_id().to_string(),
            });
        }
        if info.admin_peer != self.me {
            self.audit.record(
                "refused-invite",
                &peer.to_string(),
                "",
                &format!("the invite names admin node {}", info.admin_peer),
            );
            return Err(AuthError::Refused(format!(
                "this invite was issued for admin node {}: redeem it there",
                info.admin_peer
            )));
        }
        if info.holder.is_some_and(|h| h != peer) {
            self.audit
                .record("refused-invite", &peer.to_string(), "", "the invite names another node");
            return Err(AuthError::Refused("this invite was issued for another node".into()));
        }
        if self.log_read().was_redeemed(&info.token) {
            self.audit
                .record("refused-invite", &peer.to_string(), "", "invite already used");
            return Err(AuthError::Refused("this invite has already been used".into()));
        }
        let c = self.sign_cert(&CertRequest {
            peer,
            role: info.role,
            name: info.name.clone(),
            valid_s: info.cert_valid_s,
            cameras: info.cameras,
        })?;
        let used = pb::fleet_entry_body::Entry::Redeemed(pb::InviteRedeemed {
            token: info.token.clone().into(),
            peer: peer.to_bytes().into(),
        });
        let recorded = match (self.root_key(), self.admin_self()) {
            (Some(root), _) => self.issue_entry(&root, None, used),
            (None, Some(a)) => self.issue_entry(&a.key, Some(&a.cert), used),
            (None, None) => Err(LogError::Invalid(AuthError::Refused("no signer".into()))),
        };
        recorded.map_err(|e| AuthError::Refused(format!("invite not recorded: {e}")))?;
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
        let m = self
            .member(&peer)
            .ok_or_else(|| AuthError::Refused("only a current member can renew".into()))?;
        // The same lifetime as the certificate it replaces, from now.
        let valid_s = (m.not_after_unix_s - m.not_before_unix_s - 60).clamp(60, 90 * 86_400);
        self.sign_cert(&CertRequest {
            peer,
            role: m.role,
            name: m.name,
            valid_s,
            cameras: m.cameras,
        })
    }
}
