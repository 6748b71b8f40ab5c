//! Signed objects: `Signed { body, signature, signer }`.
//!
//! The signature covers `"camesh-v1/" || kind || 0x00 || body`, so a signature made for
//! one kind of object (a grant) can never pass as another (a certificate).

use bytes::Bytes;
use camesh_proto::pb;
use libp2p::identity::{Keypair, PublicKey};
use libp2p::PeerId;
use prost::Message;

use super::{AuthError, MAX_SIGNED_BYTES};

/// The kinds of signed object; part of what is signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Cert,
    Grant,
    Admin,
    FleetEntry,
    Invite,
    Manifest,
    /// A camera event ([`pb::CameraEvent`]), signed by the camera's node.
    Event,
}

impl Kind {
    fn tag(self) -> &'static str {
        match self {
            Kind::Cert => "cert",
            Kind::Grant => "grant",
            Kind::Admin => "admin-cert",
            Kind::FleetEntry => "fleet-entry",
            Kind::Invite => "invite",
            Kind::Manifest => "manifest",
            Kind::Event => "event",
        }
    }
}

fn to_sign(kind: Kind, body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(16 + body.len());
    m.extend_from_slice(b"camesh-v1/");
    m.extend_from_slice(kind.tag().as_bytes());
    m.push(0);
    m.extend_from_slice(body);
    m
}

/// Signs `body` with `key`.
pub fn sign<M: Message>(kind: Kind, body: &M, key: &Keypair) -> pb::Signed {
    sign_raw(kind, body.encode_to_vec(), key)
}

/// Signs bytes that need not decode as any body: what fuzz targets use to get past the
/// signature check with a test key and reach the body decoders behind it.
pub fn sign_raw(kind: Kind, body: Vec<u8>, key: &Keypair) -> pb::Signed {
    // Signing with an ed25519 key cannot fail; other key types are never created here.
    let signature = key.sign(&to_sign(kind, &body)).expect("ed25519 signing");
    pb::Signed {
        body: body.into(),
        signature: signature.into(),
        signer: key.public().encode_protobuf().into(),
    }
}

/// Decodes a `Signed` from bytes (bounded).
pub fn decode(what: &'static str, bytes: &[u8]) -> Result<pb::Signed, AuthError> {
    if bytes.len() > MAX_SIGNED_BYTES {
        return Err(AuthError::Malformed {
            what,
            reason: format!("{} bytes is more than {MAX_SIGNED_BYTES}", bytes.len()),
        });
    }
    pb::Signed::decode(bytes).map_err(|e| AuthError::Malformed {
        what,
        reason: e.to_string(),
    })
}

pub fn encode(s: &pb::Signed) -> Bytes {
    s.encode_to_vec().into()
}

/// Verifies the signature and returns (signer, decoded body). Does not judge the signer.
pub fn open<M: Message + Default>(what: &'static str, kind: Kind, s: &pb::Signed) -> Result<(PublicKey, M), AuthError> {
    if s.body.len() > MAX_SIGNED_BYTES {
        return Err(AuthError::Malformed {
            what,
            reason: "body too large".into(),
        });
    }
    let signer = PublicKey::try_decode_protobuf(&s.signer).map_err(|e| AuthError::Malformed {
        what,
        reason: format!("signer key: {e}"),
    })?;
    if !signer.verify(&to_sign(kind, &s.body), &s.signature) {
        return Err(AuthError::BadSignature { what });
    }
    let body = M::decode(s.body.clone()).map_err(|e| AuthError::Malformed {
        what,
        reason: e.to_string(),
    })?;
    Ok((signer, body))
}

/// Parses a peer id carried as bytes.
pub fn peer_from(what: &'static str, bytes: &[u8]) -> Result<PeerId, AuthError> {
    PeerId::from_bytes(bytes).map_err(|e| AuthError::Malformed {
        what,
        reason: format!("peer id: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_for_one_kind_does_not_pass_as_another() {
        let k = Keypair::generate_ed25519();
        let body = pb::MembershipCert {
            fleet_id: "f".into(),
            ..Default::default()
        };
        let s = sign(Kind::Grant, &body, &k);
        assert!(open::<pb::MembershipCert>("cert", Kind::Grant, &s).is_ok());
        assert_eq!(
            open::<pb::MembershipCert>("cert", Kind::Cert, &s).err(),
            Some(AuthError::BadSignature { what: "cert" })
        );
    }

    #[test]
    fn tampered_body_fails() {
        let k = Keypair::generate_ed25519();
        let mut s = sign(Kind::Cert, &pb::MembershipCert::default(), &k);
        let mut b = s.body.to_vec();
        b.push(0x08);
        b.push(0x01);
        s.body = b.into();
        assert!(matches!(
            open::<pb::MembershipCert>("cert", Kind::Cert, &s),
            Err(AuthError::BadSignature { .. })
        ));
    }
}
