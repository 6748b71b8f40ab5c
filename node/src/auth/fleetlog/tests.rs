use super::*;
use crate::auth::admin::AdminRequest;
use crate::auth::grant::Rights;
use pb::fleet_entry_body::Entry;

const F: &str = "f";

fn revoke(peers: &[PeerId]) -> Entry {
    Entry::Revocation(revocation::body(F, peers, &[], "test", 1))
}

/// Issues the next entry of `key`'s chain in `log` (and applies it there).
fn next(log: &mut FleetLog, key: &Keypair, admin: Option<&pb::Signed>, e: Entry) -> pb::Signed {
    let (seq, prev) = log.next(&key.public().to_peer_id());
    let s = issue(key, admin, F, seq, prev, e, 1);
    log.apply(&s).expect("own entry applies");
    s
}

fn admin_cert(root: &Keypair, admin: &Keypair, may_revoke: bool) -> pb::Signed {
    let mut r = AdminRequest::full(admin.public().to_peer_id(), "a", 3600);
    r.may_revoke = may_revoke;
    r.rights = Rights::LIVE;
    crate::auth::admin::issue(root, F, &r, 1)
}

fn unchanged(log: &FleetLog, before: &pb::FleetSummary, n: usize) {
    assert_eq!(&log.summary(), before);
    assert_eq!(log.len(), n);
}

#[test]
fn entries_apply_in_order_once_each() {
    let root = Keypair::generate_ed25519();
    let mut issuer = FleetLog::new(F, root.public());
    let p = PeerId::random();
    let e1 = next(&mut issuer, &root, None, revoke(&[p]));
    let e2 = next(&mut issuer, &root, None, revoke(&[PeerId::random()]));
    let e3 = next(&mut issuer, &root, None, revoke(&[PeerId::random()]));
    let mut log = FleetLog::new(F, root.public());
    // Reordered: 2 before 1.
    assert!(matches!(
        log.apply(&e2),
        Err(LogError::Gap {
            expected: 1,
            got: 2,
            ..
        })
    ));
    unchanged(&log, &pb::FleetSummary::default(), 0);
    log.apply(&e1).expect("first");
    assert!(log.revoked().peer_revoked(&p));
    let before = log.summary();
    assert!(matches!(log.apply(&e1), Err(LogError::Duplicate { seq: 1, .. })));
    assert!(matches!(log.apply(&e3), Err(LogError::Gap { .. })));
    unchanged(&log, &before, 1);
    log.apply(&e2).expect("second");
    log.apply(&e3).expect("third");
    assert_eq!(log.summary(), issuer.summary());
}

#[test]
fn forged_forked_foreign_and_oversize_entries_are_refused_and_change_nothing() {
    let root = Keypair::generate_ed25519();
    let mut log = FleetLog::new(F, root.public());
    next(&mut log, &root, None, revoke(&[PeerId::random()]));
    let before = log.summary();
    let (seq, prev) = log.next(&root.public().to_peer_id());
    // Signed by someone else claiming nothing.
    let mallory = Keypair::generate_ed25519();
    let forged = issue(&mallory, None, F, 1, None, revoke(&[PeerId::random()]), 1);
    assert!(matches!(
        log.apply(&forged),
        Err(LogError::Invalid(AuthError::WrongSigner { .. }))
    ));
    // Body altered after signing.
    let mut tampered = issue(&root, None, F, seq, prev, revoke(&[PeerId::random()]), 1);
    let mut b = tampered.body.to_vec();
    let last = b.len() - 1;
    b[last] ^= 1;
    tampered.body = b.into();
    assert!(matches!(
        log.apply(&tampered),
        Err(LogError::Invalid(AuthError::BadSignature { .. }))
    ));
    // A second entry 1 (fork), and an entry 2 linked to the wrong hash.
    let fork = issue(&root, None, F, 1, None, revoke(&[PeerId::random()]), 1);
    assert!(matches!(log.apply(&fork), Err(LogError::Fork { seq: 1, .. })));
    let bad_link = issue(&root, None, F, seq, Some([7; 32]), revoke(&[PeerId::random()]), 1);
    assert!(matches!(log.apply(&bad_link), Err(LogError::Fork { seq: 2, .. })));
    // Another fleet.
    let other = pb::FleetEntryBody {
        fleet_id: "g".into(),
        seq,
        prev: prev.map(|h| h.to_vec()).unwrap_or_default().into(),
        issued_unix_s: 1,
        admin: None,
        entry: Some(revoke(&[PeerId::random()])),
    };
    let other = signed::sign(Kind::FleetEntry, &other, &root);
    assert!(matches!(
        log.apply(&other),
        Err(LogError::Invalid(AuthError::WrongFleet { .. }))
    ));
    // Oversize.
    let many: Vec<PeerId> = (0..600).map(|_| PeerId::random()).collect();
    let big = issue(&root, None, F, seq, prev, revoke(&many), 1);
    assert!(matches!(log.apply(&big), Err(LogError::Oversize { .. })));
    // Nothing, and garbage.
    let empty = issue(
        &root,
        None,
        F,
        seq,
        prev,
        Entry::Revocation(revocation::body(F, &[], &[], "", 1)),
        1,
    );
    assert!(log.apply(&empty).is_err());
    let junk = pb::Signed {
        body: vec![0xff; 10].into(),
        signature: vec![1; 64].into(),
        signer: root.public().encode_protobuf().into(),
    };
    assert!(log.apply(&junk).is_err());
    unchanged(&log, &before, 1);
    // A refusal names the reason.
    let e = log.apply(&fork).expect_err("fork");
    assert!(e.to_string().contains("conflicts"), "{e}");
}

#[test]
fn admins_issue_only_what_their_certificate_allows() {
    let root = Keypair::generate_ed25519();
    let mut log = FleetLog::new(F, root.public());
    let (a, b) = (Keypair::generate_ed25519(), Keypair::generate_ed25519());
    let can = admin_cert(&root, &a, true);
    let cannot = admin_cert(&root, &b, false);
    next(&mut log, &root, None, Entry::AdminCert(can.clone()));
    assert!(log.admins().contains_key(&a.public().to_peer_id()));
    let victim = PeerId::random();
    next(&mut log, &a, Some(&can), revoke(&[victim]));
    assert!(log.revoked().peer_revoked(&victim));
    let before = log.summary();
    let e = issue(&b, Some(&cannot), F, 1, None, revoke(&[PeerId::random()]), 1);
    assert!(matches!(log.apply(&e), Err(LogError::NotAllowed { .. })));
    // An admin cannot make admins, nor use another admin's certificate.
    let e = issue(
        &a,
        Some(&can),
        F,
        2,
        log.next(&a.public().to_peer_id()).1,
        Entry::AdminCert(cannot.clone()),
        1,
    );
    assert!(matches!(log.apply(&e), Err(LogError::NotAllowed { .. })));
    let e = issue(&b, Some(&can), F, 1, None, revoke(&[PeerId::random()]), 1);
    assert!(matches!(
        log.apply(&e),
        Err(LogError::Invalid(AuthError::WrongSigner { .. }))
    ));
    unchanged(&log, &before, 2);
}

#[test]
fn two_logs_reconcile_in_budgeted_rounds_and_count_their_lag() {
    let root = Keypair::generate_ed25519();
    let admin = Keypair::generate_ed25519();
    let cert = admin_cert(&root, &admin, true);
    let mut a = FleetLog::new(F, root.public());
    next(&mut a, &root, None, Entry::AdminCert(cert.clone()));
    for _ in 0..20 {
        next(&mut a, &admin, Some(&cert), revoke(&[PeerId::random()]));
    }
    let mut b = FleetLog::new(F, root.public());
    assert_eq!(
        a.lag(&b.summary()),
        Lag {
            they_lack: 21,
            we_lack: 0
        }
    );
    assert_eq!(
        b.lag(&a.summary()),
        Lag {
            they_lack: 0,
            we_lack: 21
        }
    );
    let mut rounds = 0;
    loop {
        rounds += 1;
        assert!(rounds < 50, "bounded");
        let (batch, more) = a.missing_for(&b.summary(), 2000);
        assert!(!batch.is_empty());
        for e in &batch {
            b.apply(e).expect("in order, root chain first");
        }
        if !more {
            break;
        }
    }
    assert!(rounds > 1, "the budget split the transfer");
    assert_eq!(a.summary(), b.summary());
    assert_eq!(a.lag(&b.summary()), Lag::default());
    assert_eq!(a.revoked(), b.revoked());
    // A summary with junk issuers is tolerated.
    let mut junk = a.summary();
    junk.heads.push(pb::FleetHead {
        issuer: vec![1, 2, 3].into(),
        seq: u64::MAX,
        head: vec![].into(),
    });
    assert_eq!(a.missing_for(&junk, 1 << 20).0.len(), 0);
}
