//! Certificates, grants, admin certificates and invites as a hostile peer would present
//! them, and (signed here with the test root key, so the signature check passes) as a
//! hostile admin or a leaked key would: the body decoders behind the signature.
#![no_main]

use std::sync::OnceLock;

use camesh_node::auth::signed::Kind;
use camesh_node::auth::{admin, cert, grant, invite, signed};
use libfuzzer_sys::fuzz_target;
use libp2p::identity::Keypair;
use libp2p::PeerId;

fn root() -> &'static Keypair {
    static ROOT: OnceLock<Keypair> = OnceLock::new();
    ROOT.get_or_init(|| Keypair::ed25519_from_bytes([7u8; 32]).expect("valid seed"))
}

fuzz_target!(|data: &[u8]| {
    let root = root().public();
    let peer = PeerId::from_public_key(&root);
    if let Ok(s) = signed::decode("fuzz", data) {
        let _ = cert::verify(&s, &root, "f", &peer, 1_000_000);
        let _ = grant::verify(&s, &root, "f", &peer, 1_000_000);
        let _ = invite::open(&s, 1_000_000);
        let _ = admin::open(&s, &root, "f");
        let _ = admin::signer("fuzz", &root, Some(&s), &root, "f");
        let _ = camesh_node::events::open(&s);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = invite::parse(text, 1_000_000);
    }
    // The input as a body the root signed, for every kind.
    for kind in [Kind::Cert, Kind::Grant, Kind::Admin, Kind::Invite, Kind::Event] {
        let s = signed::sign_raw(kind, data.to_vec(), self::root());
        let _ = cert::verify(&s, &root, "f", &peer, 1_000_000);
        let _ = grant::verify(&s, &root, "f", &peer, 1_000_000);
        let _ = invite::open(&s, 1_000_000);
        let _ = admin::open(&s, &root, "f");
        let _ = admin::signer("fuzz", &root, Some(&s), &root, "f");
        let _ = camesh_node::events::open(&s);
    }
});
