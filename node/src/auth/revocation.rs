//! Revocations, pure: signed by the fleet root, numbered by a growing epoch.
//!
//! A node keeps the union of every valid revocation it has seen ([`RevocationSet`]) and
//! its highest epoch; the set only grows. It arrives over gossipsub, direct pushes, and is
//! stored so that a restart forgets nothing.

use std::collections::HashSet;

use camesh_proto::pb;
use libp2p::identity::{Keypair, PublicKey};
use libp2p::PeerId;
use prost::Message;

use super::signed::{self, Kind};
use super::AuthError;

/// Bound on revoked entries a node keeps (a fleet revokes far fewer).
const MAX_ENTRIES: usize = 100_000;

pub fn issue(
    root: &Keypair,
    fleet_id: &str,
    epoch: u64,
    peers: &[PeerId],
    grants: &[u64],
    reason: &str,
    now: i64,
) -> pb::Signed {
    let body = pb::RevocationBody {
        fleet_id: fleet_id.to_owned(),
        epoch,
        peers: peers.iter().map(|p| p.to_bytes().into()).collect(),
        grant_serials: grants.to_vec(),
        issued_unix_s: now,
        reason: reason.to_owned(),
    };
    signed::sign(Kind::Revocation, &body, root)
}

/// Everything revoked so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RevocationSet {
    pub epoch: u64,
    pub peers: HashSet<PeerId>,
    pub grants: HashSet<u64>,
    /// The signed revocations, to store and to pass on.
    pub records: Vec<pb::Signed>,
}

impl RevocationSet {
    /// Verifies and adds a revocation. Returns `Ok(true)` if it revoked something new.
    pub fn apply(&mut self, s: &pb::Signed, root: &PublicKey, fleet_id: &str) -> Result<bool, AuthError> {
        let (signer, body): (_, pb::RevocationBody) = signed::open("revocation", Kind::Revocation, s)?;
        if &signer != root {
            return Err(AuthError::WrongSigner {
                what: "revocation",
                signer: signer.to_peer_id().to_string(),
                expected: root.to_peer_id().to_string(),
            });
        }
        if body.fleet_id != fleet_id {
            return Err(AuthError::WrongFleet {
                what: "revocation",
                got: body.fleet_id.chars().take(64).collect(),
                expected: fleet_id.to_owned(),
            });
        }
        if self.peers.len() + self.grants.len() + body.peers.len() + body.grant_serials.len() > MAX_ENTRIES {
            return Err(AuthError::Refused("revocation list is full".into()));
        }
        let mut new = false;
        for p in &body.peers {
            new |= self.peers.insert(signed::peer_from("revocation", p)?);
        }
        for g in &body.grant_serials {
            new |= self.grants.insert(*g);
        }
        self.epoch = self.epoch.max(body.epoch);
        if new {
            self.records.push(s.clone());
        }
        Ok(new)
    }

    pub fn peer_revoked(&self, p: &PeerId) -> bool {
        self.peers.contains(p)
    }

    pub fn any_grant_revoked(&self, chain: &[u64]) -> bool {
        chain.iter().any(|g| self.grants.contains(g))
    }

    /// The stored form: the signed records, length-delimited.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for r in &self.records {
            // Encoding into a Vec cannot fail.
            r.encode_length_delimited(&mut out).expect("encode into Vec");
        }
        out
    }

    /// Rebuilds from the stored form, skipping (and counting) records that fail.
    pub fn from_bytes(mut data: &[u8], root: &PublicKey, fleet_id: &str) -> (Self, usize) {
        let mut set = Self::default();
        let mut bad = 0;
        while !data.is_empty() {
            match pb::Signed::decode_length_delimited(&mut data) {
                Ok(s) => {
                    if set.apply(&s, root, fleet_id).is_err() {
                        bad += 1;
                    }
                }
                Err(_) => {
                    bad += 1;
                    break;
                }
            }
        }
        (set, bad)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_grows_and_roundtrips() {
        let root = Keypair::generate_ed25519();
        let p = PeerId::random();
        let mut set = RevocationSet::default();
        let r1 = issue(&root, "f", 1, &[p], &[], "lost laptop", 10);
        assert_eq!(set.apply(&r1, &root.public(), "f"), Ok(true));
        assert_eq!(set.apply(&r1, &root.public(), "f"), Ok(false), "idempotent");
        let r2 = issue(&root, "f", 2, &[], &[42], "", 11);
        assert_eq!(set.apply(&r2, &root.public(), "f"), Ok(true));
        assert!(set.peer_revoked(&p) && set.any_grant_revoked(&[1, 42]));
        assert_eq!(set.epoch, 2);
        let (back, bad) = RevocationSet::from_bytes(&set.to_bytes(), &root.public(), "f");
        assert_eq!((back, bad), (set, 0));
    }

    #[test]
    fn only_the_root_revokes() {
        let root = Keypair::generate_ed25519();
        let other = Keypair::generate_ed25519();
        let mut set = RevocationSet::default();
        let r = issue(&other, "f", 1, &[PeerId::random()], &[], "", 10);
        assert!(set.apply(&r, &root.public(), "f").is_err());
        assert!(set.peers.is_empty());
    }
}
