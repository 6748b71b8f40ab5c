//! Membership certificates (layer 1), pure.
//!
//! The fleet root key, or an admin allowed to admit ([`super::admin`], embedding its
//! admin certificate), signs `(fleet, peer id, role, name, validity, cameras)`. A node
//! presents its certificate on every connection; the other side checks it against the
//! fleet root it was configured with and against the peer id that the QUIC/Noise
//! handshake proved. Certificates are short-lived, so access ends even if a revocation
//! never arrives.

use camesh_proto::pb;
use libp2p::identity::{Keypair, PublicKey};
use libp2p::PeerId;

use super::admin;
use super::signed::{self, Kind};
use super::{check_validity, At, AuthError};

/// A verified certificate, as the rest of the node uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    pub peer: PeerId,
    pub role: pb::MemberRole,
    pub name: String,
    pub not_before_unix_s: i64,
    pub not_after_unix_s: i64,
    pub serial: u64,
    pub cameras: Vec<String>,
    /// The admin that signed it (peer id, admin certificate serial); `None` for the root.
    pub admin: Option<(PeerId, u64)>,
}

impl CertInfo {
    pub fn may_serve(&self, camera: &str) -> bool {
        self.cameras.iter().any(|c| c == camera)
    }
}

/// What an admin asks the root key to sign.
#[derive(Debug, Clone)]
pub struct CertRequest {
    pub peer: PeerId,
    pub role: pb::MemberRole,
    pub name: String,
    pub valid_s: i64,
    pub cameras: Vec<String>,
}

/// Signs a certificate with the fleet root.
pub fn issue(root: &Keypair, fleet_id: &str, req: &CertRequest, now: i64) -> pb::Signed {
    issue_by(root, None, fleet_id, req, now)
}

/// Signs a certificate with `signer`: the root (`admin` None) or an admin, whose admin
/// certificate is embedded.
pub fn issue_by(
    signer: &Keypair,
    admin: Option<&pb::Signed>,
    fleet_id: &str,
    req: &CertRequest,
    now: i64,
) -> pb::Signed {
    let body = pb::MembershipCert {
        fleet_id: fleet_id.to_owned(),
        peer_id: req.peer.to_bytes().into(),
        role: req.role as i32,
        name: req.name.clone(),
        not_before_unix_s: now - 60,
        not_after_unix_s: now.saturating_add(req.valid_s),
        serial: rand::random(),
        cameras: req.cameras.clone(),
        admin: admin.cloned(),
    };
    signed::sign(Kind::Cert, &body, signer)
}

/// Verifies a certificate presented by `presenter` (the authenticated peer id).
pub fn verify(
    s: &pb::Signed,
    root: &PublicKey,
    fleet_id: &str,
    presenter: &PeerId,
    at: impl Into<At>,
) -> Result<CertInfo, AuthError> {
    let at = at.into();
    let (signer, body): (_, pb::MembershipCert) = signed::open("certificate", Kind::Cert, s)?;
    let admin = admin::signer("certificate", &signer, body.admin.as_ref(), root, fleet_id)?;
    if body.fleet_id != fleet_id {
        return Err(AuthError::WrongFleet {
            what: "certificate",
            got: body.fleet_id.chars().take(64).collect(),
            expected: fleet_id.to_owned(),
        });
    }
    let peer = signed::peer_from("certificate", &body.peer_id)?;
    if &peer != presenter {
        return Err(AuthError::WrongHolder {
            what: "certificate",
            holder: peer.to_string(),
            presenter: presenter.to_string(),
        });
    }
    check_validity("certificate", body.not_before_unix_s, body.not_after_unix_s, at)?;
    let role = pb::MemberRole::try_from(body.role).unwrap_or(pb::MemberRole::Unspecified);
    if role == pb::MemberRole::Unspecified {
        return Err(AuthError::Malformed {
            what: "certificate",
            reason: "no role".into(),
        });
    }
    if let Some(a) = &admin {
        a.check_time(at)?;
        a.allows_member(&peer, role, &body.cameras, body.not_after_unix_s)?;
    }
    Ok(CertInfo {
        peer,
        role,
        name: body.name,
        not_before_unix_s: body.not_before_unix_s,
        not_after_unix_s: body.not_after_unix_s,
        serial: body.serial,
        cameras: body.cameras,
        admin: admin.map(|a| (a.admin, a.serial)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(peer: PeerId, valid_s: i64) -> CertRequest {
        CertRequest {
            peer,
            role: pb::MemberRole::Camera,
            name: "cam node".into(),
            valid_s,
            cameras: vec!["cam1".into()],
        }
    }

    #[test]
    fn valid_certificate_verifies() {
        let root = Keypair::generate_ed25519();
        let peer = PeerId::random();
        let c = issue(&root, "f", &req(peer, 3600), 1000);
        let info = verify(&c, &root.public(), "f", &peer, 1000).expect("valid");
        assert!(info.may_serve("cam1"));
        assert_eq!(info.role, pb::MemberRole::Camera);
    }

    #[test]
    fn each_defect_is_named() {
        let root = Keypair::generate_ed25519();
        let other_root = Keypair::generate_ed25519();
        let peer = PeerId::random();
        let c = issue(&root, "f", &req(peer, 3600), 1000);
        assert!(matches!(
            verify(&c, &other_root.public(), "f", &peer, 1000),
            Err(AuthError::WrongSigner { .. })
        ));
        assert!(matches!(
            verify(&c, &root.public(), "g", &peer, 1000),
            Err(AuthError::WrongFleet { .. })
        ));
        assert!(matches!(
            verify(&c, &root.public(), "f", &PeerId::random(), 1000),
            Err(AuthError::WrongHolder { .. })
        ));
        assert!(matches!(
            verify(&c, &root.public(), "f", &peer, 99_999),
            Err(AuthError::Expired { .. })
        ));
        let foreign = issue(&other_root, "f", &req(peer, 3600), 1000);
        assert!(verify(&foreign, &root.public(), "f", &peer, 1000).is_err());
    }

    #[test]
    fn an_admin_admits_within_its_scope() {
        let root = Keypair::generate_ed25519();
        let a = Keypair::generate_ed25519();
        let mut scope = admin::AdminRequest::full(a.public().to_peer_id(), "depot", 3600);
        scope.cameras = vec!["cam1".into()];
        let ac = admin::issue(&root, "f", &scope, 1000);
        let peer = PeerId::random();
        let c = issue_by(&a, Some(&ac), "f", &req(peer, 600), 1000);
        let info = verify(&c, &root.public(), "f", &peer, 1000).expect("admin-signed");
        assert_eq!(info.admin.map(|(p, _)| p), Some(a.public().to_peer_id()));
        let mut wide = req(peer, 600);
        wide.cameras = vec!["cam2".into()];
        let c = issue_by(&a, Some(&ac), "f", &wide, 1000);
        assert!(matches!(
            verify(&c, &root.public(), "f", &peer, 1000),
            Err(AuthError::Wider(_))
        ));
        scope.may_admit = false;
        let ac = admin::issue(&root, "f", &scope, 1000);
        let c = issue_by(&a, Some(&ac), "f", &req(peer, 600), 1000);
        assert!(verify(&c, &root.public(), "f", &peer, 1000).is_err());
        let c = issue_by(&a, None, "f", &req(peer, 600), 1000);
        assert!(matches!(
            verify(&c, &root.public(), "f", &peer, 1000),
            Err(AuthError::WrongSigner { .. })
        ));
    }
}
