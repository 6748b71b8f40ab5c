//! One-time enrolment invites, pure.
//!
//! `mesh fleet invite` signs (fleet, random token, role, name, expiry, admin node's peer
//! id and address, optionally the joining node's peer id) with the root key and prints it
//! as text. A new node redeems it with that admin node over an authenticated connection;
//! the admin node checks the signature and the expiry, that the invite names it (another
//! admin refuses it) and, when it names a holder, that the redeeming peer is that holder;
//! refuses a token the fleet-state log shows used, and issues a certificate for the peer
//! id that presented it.

use camesh_proto::pb;
use libp2p::identity::{Keypair, PublicKey};
use libp2p::{Multiaddr, PeerId};
use prost::Message;

use super::signed::{self, Kind};
use super::{AuthError, MAX_SIGNED_BYTES};

/// Text prefix of an invite (then base58 of the signed bytes).
pub const PREFIX: &str = "camesh-invite:";

/// Base58 text of bytes (invites, grants as text).
pub fn bs58_encode(bytes: &[u8]) -> String {
    bs58::encode(bytes).into_string()
}

pub fn bs58_decode(s: &str) -> Result<Vec<u8>, AuthError> {
    if s.len() > MAX_SIGNED_BYTES * 2 {
        return Err(AuthError::Malformed {
            what: "text",
            reason: "too long".into(),
        });
    }
    bs58::decode(s.trim()).into_vec().map_err(|e| AuthError::Malformed {
        what: "text",
        reason: e.to_string(),
    })
}

#[derive(Debug, Clone)]
pub struct InviteInfo {
    pub token: Vec<u8>,
    pub role: pb::MemberRole,
    pub name: String,
    pub expires_unix_s: i64,
    pub admin_peer: PeerId,
    pub admin_addrs: Vec<Multiaddr>,
    pub cameras: Vec<String>,
    pub cert_valid_s: i64,
    pub fleet_root: PublicKey,
    pub fleet_id: String,
    /// The only peer that may redeem it, when the invite names one.
    pub holder: Option<PeerId>,
}

#[allow(clippy::too_many_arguments)]
pub fn issue(
    root: &Keypair,
    fleet_id: &str,
    role: pb::MemberRole,
    name: &str,
    expires_unix_s: i64,
    admin_peer: PeerId,
    admin_addrs: &[Multiaddr],
    cameras: &[String],
    cert_valid_s: i64,
    holder: Option<PeerId>,
) -> String {
    let token: [u8; 16] = rand::random();
    let body = pb::InviteBody {
        fleet_id: fleet_id.to_owned(),
        token: token.to_vec().into(),
        role: role as i32,
        name: name.to_owned(),
        expires_unix_s,
        admin_peer: admin_peer.to_bytes().into(),
        admin_addrs: admin_addrs.iter().map(|a| a.to_vec().into()).collect(),
        cameras: cameras.to_vec(),
        cert_valid_s,
        holder: holder.map(|h| h.to_bytes().into()).unwrap_or_default(),
    };
    let s = signed::sign(Kind::Invite, &body, root);
    format!("{PREFIX}{}", bs58::encode(s.encode_to_vec()).into_string())
}

/// Parses invite text; checks the signature and expiry. The fleet root is the signer
/// (the joining node learns its fleet from the invite; the admin node checks the root).
pub fn parse(text: &str, now: i64) -> Result<(InviteInfo, pb::Signed), AuthError> {
    let malformed = |reason: String| AuthError::Malformed { what: "invite", reason };
    let b58 = text
        .trim()
        .strip_prefix(PREFIX)
        .ok_or_else(|| malformed(format!("does not start with {PREFIX}")))?;
    if b58.len() > MAX_SIGNED_BYTES * 2 {
        return Err(malformed("too long".into()));
    }
    let bytes = bs58::decode(b58).into_vec().map_err(|e| malformed(e.to_string()))?;
    let s = signed::decode("invite", &bytes)?;
    let info = open(&s, now)?;
    Ok((info, s))
}

/// Verifies a signed invite (signature, expiry) and returns what it says.
pub fn open(s: &pb::Signed, now: i64) -> Result<InviteInfo, AuthError> {
    let (signer, body): (PublicKey, pb::InviteBody) = signed::open("invite", Kind::Invite, s)?;
    if now > body.expires_unix_s {
        return Err(AuthError::Expired {
            what: "invite",
            ago_s: now - body.expires_unix_s,
        });
    }
    Ok(InviteInfo {
        token: body.token.to_vec(),
        role: pb::MemberRole::try_from(body.role).unwrap_or(pb::MemberRole::Unspecified),
        name: body.name,
        expires_unix_s: body.expires_unix_s,
        admin_peer: signed::peer_from("invite", &body.admin_peer)?,
        admin_addrs: body
            .admin_addrs
            .iter()
            .filter_map(|a| Multiaddr::try_from(a.to_vec()).ok())
            .collect(),
        cameras: body.cameras,
        cert_valid_s: body.cert_valid_s.clamp(60, 400 * 86_400),
        fleet_root: signer,
        fleet_id: body.fleet_id,
        holder: if body.holder.is_empty() {
            None
        } else {
            Some(signed::peer_from("invite holder", &body.holder)?)
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invite_roundtrips_and_expires() {
        let root = Keypair::generate_ed25519();
        let admin = PeerId::random();
        let addr: Multiaddr = "/ip4/127.0.0.1/udp/4001/quic-v1".parse().expect("addr");
        let text = issue(
            &root,
            "f",
            pb::MemberRole::Camera,
            "bus 7 cam",
            1000,
            admin,
            std::slice::from_ref(&addr),
            &[],
            3600,
            None,
        );
        let (info, _) = parse(&text, 500).expect("valid");
        assert_eq!(info.holder, None);
        assert_eq!(
            (info.admin_peer, info.admin_addrs, info.fleet_root),
            (admin, vec![addr], root.public())
        );
        assert!(matches!(parse(&text, 2000), Err(AuthError::Expired { .. })));
        assert!(parse("camesh-invite:zzzz0OIl", 0).is_err());
        assert!(parse("hello", 0).is_err());
    }
}
