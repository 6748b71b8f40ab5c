//! What is revoked, pure: peers and serials, and the cascade through grant chains.
//!
//! Revocations arrive as entries of the fleet-state log ([`super::fleetlog`], signed by
//! the root or an admin that may revoke); this set is what they add up to, and it only
//! grows. A serial names a grant (any link of a delegation chain) or an admin
//! certificate. Revoking a peer revokes it as a member, as a grant holder, as a delegator
//! (every grant below one it held) and as an admin (everything it signed).

use std::collections::HashSet;

use camesh_proto::pb;
use libp2p::PeerId;

use super::cert::CertInfo;
use super::grant::GrantInfo;
use super::signed;
use super::AuthError;

/// Bound on revoked peers and serials a node keeps (a fleet revokes far fewer).
pub const MAX_ENTRIES: usize = 100_000;

/// The body of a revocation (signed inside a fleet-state entry).
pub fn body(fleet_id: &str, peers: &[PeerId], grants: &[u64], reason: &str, now: i64) -> pb::RevocationBody {
    pb::RevocationBody {
        fleet_id: fleet_id.to_owned(),
        epoch: 0,
        peers: peers.iter().map(|p| p.to_bytes().into()).collect(),
        grant_serials: grants.to_vec(),
        issued_unix_s: now,
        reason: reason.to_owned(),
    }
}

/// Checks a revocation body alone (fleet, peer ids, size); returns its peers.
pub fn check(b: &pb::RevocationBody, fleet_id: &str) -> Result<Vec<PeerId>, AuthError> {
    if b.fleet_id != fleet_id {
        return Err(AuthError::WrongFleet {
            what: "revocation",
            got: b.fleet_id.chars().take(64).collect(),
            expected: fleet_id.to_owned(),
        });
    }
    if b.peers.is_empty() && b.grant_serials.is_empty() {
        return Err(AuthError::Malformed {
            what: "revocation",
            reason: "revokes nothing".into(),
        });
    }
    b.peers.iter().map(|p| signed::peer_from("revocation", p)).collect()
}

/// Everything revoked so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RevocationSet {
    pub peers: HashSet<PeerId>,
    pub grants: HashSet<u64>,
}

impl RevocationSet {
    /// Whether `extra` more entries still fit.
    pub fn has_room(&self, extra: usize) -> bool {
        self.peers.len() + self.grants.len() + extra <= MAX_ENTRIES
    }

    /// Adds a checked revocation. Returns whether it revoked something new.
    pub fn add(&mut self, peers: &[PeerId], grants: &[u64]) -> bool {
        let mut new = false;
        for p in peers {
            new |= self.peers.insert(*p);
        }
        for g in grants {
            new |= self.grants.insert(*g);
        }
        new
    }

    pub fn len(&self) -> usize {
        self.peers.len() + self.grants.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn peer_revoked(&self, p: &PeerId) -> bool {
        self.peers.contains(p)
    }

    /// Whether a grant is revoked: any serial in its chain, or any party to it (holder,
    /// delegators, the admin that signed it).
    pub fn grant_revoked(&self, g: &GrantInfo) -> Option<String> {
        if let Some(s) = g.chain.iter().find(|s| self.grants.contains(s)) {
            return Some(format!("grant {s:016x}"));
        }
        g.parties.iter().find(|p| self.peers.contains(p)).map(|p| {
            if p == &g.holder {
                format!("peer {p}")
            } else {
                format!("peer {p}, which issued a grant in the chain")
            }
        })
    }

    /// Whether a membership certificate is revoked: its peer, its serial, or the admin
    /// that signed it.
    pub fn cert_revoked(&self, c: &CertInfo) -> Option<String> {
        if self.peers.contains(&c.peer) {
            return Some(format!("peer {}", c.peer));
        }
        if self.grants.contains(&c.serial) {
            return Some(format!("certificate {:016x}", c.serial));
        }
        match c.admin {
            Some((a, _)) if self.peers.contains(&a) => Some(format!("admin {a}, which signed the certificate")),
            Some((_, s)) if self.grants.contains(&s) => {
                Some(format!("admin certificate {s:016x}, which signed the certificate"))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::grant::Rights;

    fn grant(holder: PeerId, chain: &[u64], parties: &[PeerId]) -> GrantInfo {
        GrantInfo {
            holder,
            cameras: vec!["*".into()],
            tags: vec![],
            rights: Rights::LIVE,
            not_before_unix_s: 0,
            not_after_unix_s: 1,
            chain: chain.to_vec(),
            parties: parties.to_vec(),
        }
    }

    #[test]
    fn revoking_a_delegator_or_admin_revokes_the_chain() {
        let (viewer, delegator, admin) = (PeerId::random(), PeerId::random(), PeerId::random());
        let g = grant(viewer, &[3, 2, 1], &[viewer, delegator, admin]);
        let mut set = RevocationSet::default();
        assert_eq!(set.grant_revoked(&g), None);
        assert!(set.add(&[delegator], &[]));
        assert!(!set.add(&[delegator], &[]), "idempotent");
        assert!(set.grant_revoked(&g).expect("revoked").contains("issued a grant"));
        let mut set = RevocationSet::default();
        set.add(&[], &[1]);
        assert_eq!(set.grant_revoked(&g).as_deref(), Some("grant 0000000000000001"));
        let mut set = RevocationSet::default();
        set.add(&[admin], &[]);
        assert!(set.grant_revoked(&g).is_some());
    }

    #[test]
    fn a_revocation_must_name_something_in_this_fleet() {
        let b = body("f", &[], &[], "", 1);
        assert!(check(&b, "f").is_err());
        let b = body("f", &[PeerId::random()], &[], "", 1);
        assert_eq!(check(&b, "f").expect("valid").len(), 1);
        assert!(matches!(check(&b, "g"), Err(AuthError::WrongFleet { .. })));
        let mut b = b;
        b.peers.push(vec![1, 2, 3].into());
        assert!(check(&b, "f").is_err());
    }
}
