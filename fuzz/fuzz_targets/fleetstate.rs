//! The fleet-state log as a hostile member would feed it: entries (alone, and as the
//! stored file), summaries and sync messages. Refusals are fine; panics, unbounded growth
//! and a log changed by a refused entry are not.
#![no_main]

use std::sync::OnceLock;

use camesh_node::auth::fleetlog::{self, FleetLog};
use camesh_node::auth::{revocation, signed, statefile};
use camesh_proto::pb;
use libfuzzer_sys::fuzz_target;
use libp2p::identity::Keypair;
use libp2p::PeerId;
use prost::Message;

fn root() -> &'static Keypair {
    static ROOT: OnceLock<Keypair> = OnceLock::new();
    ROOT.get_or_init(|| Keypair::ed25519_from_bytes([7u8; 32]).expect("valid seed"))
}

/// A log with two root entries already in it, so that order and forks are exercised.
fn seeded() -> FleetLog {
    static LOG: OnceLock<FleetLog> = OnceLock::new();
    LOG.get_or_init(|| {
        let mut log = FleetLog::new("f", root().public());
        for i in 0..2u8 {
            let (seq, prev) = log.next(&root().public().to_peer_id());
            let peer = PeerId::from_public_key(&Keypair::ed25519_from_bytes([i + 1; 32]).expect("seed").public());
            let body = revocation::body("f", &[peer], &[u64::from(i)], "seed", 1);
            let e = fleetlog::issue(root(), None, "f", seq, prev, pb::fleet_entry_body::Entry::Revocation(body), 1);
            log.apply(&e).expect("seed entry");
        }
        log
    })
    .clone()
}

fuzz_target!(|data: &[u8]| {
    let mut log = seeded();
    let before = (log.summary(), log.len());
    if let Ok(s) = pb::Signed::decode(data) {
        if log.apply(&s).is_err() {
            assert_eq!((log.summary(), log.len()), before, "a refused entry changed the log");
        }
    }
    let (entries, good) = statefile::parse(data);
    assert!(good <= data.len());
    for e in &entries {
        let _ = log.apply(e);
    }
    if let Ok(m) = pb::FleetSync::decode(data) {
        let theirs = m.summary.unwrap_or_default();
        let (missing, _) = log.missing_for(&theirs, 1 << 16);
        assert!(missing.len() <= log.len());
        let _ = log.lag(&theirs);
        for e in m.entries.iter().take(64) {
            let _ = log.apply(e);
        }
    }
    let _ = fleetlog::describe(&entries);
    // The input as an entry body the root signed, numbered as the next of its chain: the
    // checks and effects behind the signature (revocations, admin certificates, redemptions).
    if let Ok(mut body) = pb::FleetEntryBody::decode(data) {
        let mut log = seeded();
        let (seq, prev) = log.next(&root().public().to_peer_id());
        body.fleet_id = "f".into();
        body.seq = seq;
        body.prev = prev.map(|h| h.to_vec()).unwrap_or_default().into();
        let s = signed::sign(signed::Kind::FleetEntry, &body, root());
        let before = (log.summary(), log.len());
        match log.apply(&s) {
            Ok(_) => assert_eq!(log.len(), before.1 + 1),
            Err(_) => assert_eq!((log.summary(), log.len()), before, "a refused entry changed the log"),
        }
        let _ = fleetlog::describe(std::slice::from_ref(&s));
    }
});
