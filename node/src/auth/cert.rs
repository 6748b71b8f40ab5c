//! Membership certificates (layer 1), pure.
//!
//! The fleet root key signs `(fleet, peer id, role, name, validity, cameras)`. A node
//! presents its certificate on every connection; the other side checks it against the
//! fleet root it was configured with and against the peer id that the QUIC/Noise
//! handshake proved. Certificates are short-lived, so access ends even if a revocation
//! never arrives.

use camesh_proto::pb;
use libp2p::identity::{Keypair, PublicKey};
use libp2p::PeerId;

use super::signed::{self, Kind};
use super::{check_validity, AuthError};

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

pub fn issue(root: &Keypair, fleet_id: &str, req: &CertRequest, now: i64) -> pb::Signed {
    let body = pb::MembershipCert {
        fleet_id: fleet_id.to_owned(),
        peer_id: req.peer.to_bytes().into(),
        role: req.role as i32,
        name: req.name.clone(),
        not_before_unix_s: now - 60,
        not_after_unix_s: now.saturating_add(req.valid_s),
        serial: rand::random(),
        cameras: req.cameras.clone(),
    };
    signed::sign(Kind::Cert, &body, root)
}

/// Verifies a certificate presented by `presenter` (the authenticated peer id).
pub fn verify(
    s: &pb::Signed,
    root: &PublicKey,
    fleet_id: &str,
    presenter: &PeerId,
    now: i64,
) -> Result<CertInfo, AuthError> {
    let (signer, body): (_, pb::MembershipCert) = signed::open("certificate", Kind::Cert, s)?;
    if &signer != root {
        return Err(AuthError::WrongSigner {
            what: "certificate",
            signer: signer.to_peer_id().to_string(),
            expected: root.to_peer_id().to_string(),
        });
    }
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
    check_validity("certificate", body.not_before_unix_s, body.not_after_unix_s, now)?;
    let role = pb::MemberRole::try_from(body.role).unwrap_or(pb::MemberRole::Unspecified);
    if role == pb::MemberRole::Unspecified {
        return Err(AuthError::Malformed {
            what: "certificate",
            reason: "no role".into(),
        });
    }
    Ok(CertInfo {
        peer,
        role,
        name: body.name,
        not_before_unix_s: body.not_before_unix_s,
        not_after_unix_s: body.not_after_unix_s,
        serial: body.serial,
        cameras: body.cameras,
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
}
