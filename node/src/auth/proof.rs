//! Fleet proofs for the membership exchange: who goes first reveals nothing a stranger
//! can use (pure).
//!
//! Before either side of a connection shows its certificate (name, role, cameras), each
//! proves it belongs to the fleet with an HMAC-SHA-256 over both authenticated peer ids,
//! keyed by a key derived from the fleet root's public key. The dialer proves first; the
//! listener proves back only to a dialer whose proof checks; the dialer shows its
//! certificate only to a listener whose proof checks; the listener shows its own only
//! once the dialer's verified. A stranger (no root key) learns nothing either way, and a
//! proof is bound to its two peer ids and its direction, so it cannot be replayed on
//! another connection or reflected back.
//!
//! The key is only as secret as the fleet root's public key: every member, ex-member and
//! invite holder knows it (docs/SECURITY.md says what such a peer can still learn).

use libp2p::identity::PublicKey;
use libp2p::PeerId;
use sha2::{Digest, Sha256};

/// Length of a proof.
pub const PROOF_BYTES: usize = 32;
const KEY_CONTEXT: &[u8] = b"camesh-v1/member-proof-key\0";
const BLOCK: usize = 64;

/// Which side of the exchange a proof is from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Dialer,
    Listener,
}

impl Side {
    fn label(self) -> &'static [u8] {
        match self {
            Side::Dialer => b"camesh-v1/member-proof/dialer\0",
            Side::Listener => b"camesh-v1/member-proof/listener\0",
        }
    }
}

/// The fleet proof key: derived from the fleet root's public key.
fn key(root: &PublicKey) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(KEY_CONTEXT);
    h.update(root.encode_protobuf());
    h.finalize().into()
}

fn hmac(key: &[u8; 32], parts: &[&[u8]]) -> [u8; 32] {
    let mut k = [0u8; BLOCK];
    k[..key.len()].copy_from_slice(key);
    let mut inner = Sha256::new();
    inner.update(k.map(|b| b ^ 0x36));
    for p in parts {
        // Length-prefixed, so no two different part lists hash alike.
        inner.update((p.len() as u64).to_be_bytes());
        inner.update(p);
    }
    let mut outer = Sha256::new();
    outer.update(k.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

/// The proof `side` sends on a connection from `me` to `other` (both peer ids are
/// authenticated by the transport handshake).
pub fn prove(root: &PublicKey, side: Side, me: &PeerId, other: &PeerId) -> [u8; PROOF_BYTES] {
    hmac(&key(root), &[side.label(), &me.to_bytes(), &other.to_bytes()])
}

/// Whether `proof` is the one `side` (peer `them`) must send to `me`.
pub fn check(root: &PublicKey, side: Side, them: &PeerId, me: &PeerId, proof: &[u8]) -> bool {
    let want = prove(root, side, them, me);
    // Constant time in the proof's content.
    proof.len() == PROOF_BYTES && want.iter().zip(proof).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p::identity::Keypair;

    #[test]
    fn a_proof_checks_only_for_its_fleet_its_peers_and_its_direction() {
        let root = Keypair::generate_ed25519().public();
        let other_root = Keypair::generate_ed25519().public();
        let (a, b, c) = (PeerId::random(), PeerId::random(), PeerId::random());
        let p = prove(&root, Side::Dialer, &a, &b);
        assert!(check(&root, Side::Dialer, &a, &b, &p));
        assert!(!check(&other_root, Side::Dialer, &a, &b, &p), "another fleet");
        assert!(!check(&root, Side::Dialer, &c, &b, &p), "another dialer");
        assert!(!check(&root, Side::Dialer, &a, &c, &p), "another listener");
        assert!(!check(&root, Side::Listener, &a, &b, &p), "reflected");
        assert!(!check(&root, Side::Listener, &b, &a, &p), "reflected, ids swapped");
        assert!(!check(&root, Side::Dialer, &a, &b, &p[..31]), "short");
        assert!(!check(&root, Side::Dialer, &a, &b, &[]), "empty");
        let mut bent = p;
        bent[7] ^= 1;
        assert!(!check(&root, Side::Dialer, &a, &b, &bent));
    }

    #[test]
    fn parts_are_length_prefixed() {
        let key = [7u8; 32];
        let a = hmac(&key, &[b"x", b"yz"]);
        let b = hmac(&key, &[b"xy", b"z"]);
        assert_ne!(a, b, "part boundaries matter");
        assert_eq!(a, hmac(&key, &[b"x", b"yz"]));
    }
}
