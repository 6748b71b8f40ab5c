//! The fleet-state log on intermittent links (#13), between real nodes on 127.0.0.1:
//! a camera, an NVR and a relay that were off when a viewer was revoked refuse it within
//! 2 s of meeting a member that heard of it second hand (the admin long gone); a
//! partitioned fleet of 12 converges within 5 s of healing; a revoked delegator's grants
//! stop; an expired grant gets no key of the next epoch; a scoped admin grants only within
//! its scope, from the command line.
//!
//! Waits are bounded polls; the time bounds asserted are the issue's promises (2 s, 5 s),
//! and each measured figure is printed.

use std::path::Path;
use std::time::{Duration, Instant};

use camesh_node::auth::grant::{self, GrantRequest};
use camesh_node::auth::{now_s, Rights};
use camesh_node::config::{RecordRule, Role};
use camesh_node::nvr::{client, Nvr};
use camesh_node::stream::keys::KeySource;
use camesh_node::{Multiaddr, Node, NodeHandle, PeerId};
use camesh_proto::pb::{self, MemberRole};
use camesh_tests::*;
use libp2p::multiaddr::Protocol;

const CLIP: &str = "cam-640x360-30fps-gop2s.h264";
const T: Duration = Duration::from_secs(20);
/// How soon a node must act on a revocation once it meets a member that has it.
const MEET: Duration = Duration::from_secs(2);

/// Waits (bounded by `T`) until `f`, and says how long it took.
async fn took(what: &str, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    assert!(wait_until(T, &mut f).await, "{what}: not within {T:?}");
    start.elapsed()
}

/// The camera's circuit address on its relay, once its reservation is up.
async fn circuit_of(cam: &NodeHandle) -> Multiaddr {
    for _ in 0..400 {
        let addrs = cam.net().listen_addrs().await.expect("addrs");
        if let Some(a) = addrs.into_iter().find(|a| a.iter().any(|p| p == Protocol::P2pCircuit)) {
            return a.with(Protocol::P2p(cam.peer_id()));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no reservation on the relay");
}

/// Reads `sub` until it ends (bounded: 600 frames is 20 s of video).
async fn until_ended(sub: &mut camesh_node::stream::client::Subscription) -> usize {
    let mut n = 0;
    loop {
        match tokio::time::timeout(T, sub.next_frame()).await.expect("ends in time") {
            Ok(Some(_)) => n += 1,
            Ok(None) | Err(_) => return n,
        }
        assert!(n < 600, "a revoked stream kept flowing");
    }
}

async fn recorded_from(v: &NodeHandle, nvr: PeerId) -> i64 {
    for _ in 0..200 {
        if let Ok(c) = client::recordings(v.reach(), nvr, "cam1", 0, 0).await {
            if let Some(s) = c.spans.iter().find(|s| s.recorded) {
                return s.from_unix_us;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("the NVR recorded nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_camera_nvr_and_relay_offline_during_a_revocation_refuse_the_peer_once_they_meet_a_member() {
    init_tracing();
    const F: &str = "t-fs-offline";
    let dir = tempfile::tempdir().expect("tempdir");
    let d = |n: &str| dir.path().join(n);
    let bad_peer = fleet(F)
        .enroll_dir(&d("bad"), MemberRole::Viewer, "bad", &[], 3600)
        .expect("enroll");

    // 1. The admin revokes the viewer while the camera, NVR and relay are off: one member
    //    (carrier-1) hears it, and the admin leaves.
    let carrier1 = viewer_node(&d("carrier1"), F, vec![]).await;
    let c1_addrs = carrier1.dial_addrs().await.expect("addrs");
    let admin = viewer_node(&d("admin"), F, c1_addrs.clone()).await;
    assert!(wait_until(T, || admin.trust().member(&carrier1.peer_id()).is_some()).await);
    let r = fleet(F).revoke(&[bad_peer], &[], "stolen laptop");
    admin.push_revocation(r).await.expect("pushed");
    took("carrier-1 hears it", || carrier1.trust().peer_revoked(&bad_peer)).await;
    admin.shutdown();
    // 2. carrier-2 meets carrier-1 (never the admin) and learns it; carrier-1 leaves too.
    let carrier2 = viewer_node(&d("carrier2"), F, c1_addrs).await;
    took("carrier-2 learns it second hand", || {
        carrier2.trust().peer_revoked(&bad_peer)
    })
    .await;
    carrier1.shutdown();

    // 3. The relay, the camera (reserving on the relay) and an NVR recording it start;
    //    none of them has met anyone who knows, so the revoked viewer is served.
    let mut rc = loopback_config(Role::Nvr, F);
    rc.node.relay_server = Some(true);
    let relay = spawn_node(rc, &d("relay")).await;
    let relay_addr = relay.dial_addrs().await.expect("addrs").remove(0);
    let mut cc = loopback_config(Role::Camera, F);
    cc.cameras = vec![camera("cam1", CLIP)];
    cc.node.bootstrap = vec![relay_addr.clone()];
    cc.node.relays = vec![relay_addr.clone()];
    let cam = spawn_node(cc, &d("cam")).await;
    let circuit = circuit_of(&cam).await;
    let nvr_dir = d("nvr");
    fleet(F)
        .grant_dir(&nvr_dir, &["cam1".into()], Rights::LIVE.union(Rights::RECORD), 3600)
        .expect("grant");
    let mut nc = loopback_config(Role::Nvr, F);
    nc.node.bootstrap = cam.dial_addrs().await.expect("addrs");
    nc.nvr.records = vec![RecordRule {
        camera: "cam1".into(),
        ..RecordRule::default()
    }];
    let nvr = spawn_node(nc.clone(), &nvr_dir).await;
    let recorder = Nvr::start(nvr.reach(), nc.nvr.clone(), &nvr_dir)
        .await
        .expect("NVR starts");
    let nvr_addr = nvr.dial_addrs().await.expect("addrs").remove(0);

    fleet(F)
        .grant_dir(&d("bad"), &["cam1".into()], Rights::LIVE.union(Rights::PLAYBACK), 3600)
        .expect("grant");
    let mut bc = loopback_config(Role::Viewer, F);
    bc.node.bootstrap = vec![relay_addr.clone()];
    let bad = Node::spawn(bc, &d("bad")).await.expect("starts");
    assert!(wait_until(T, || relay.trust().member(&bad_peer).is_some()).await);
    let p = bad.net().connect(None, vec![circuit.clone()]).await.expect("circuit");
    assert_eq!(p, cam.peer_id());
    let mut sub = bad
        .subscribe_camera("cam1", Some(cam.peer_id()), live("cam1"))
        .await
        .expect("served while nobody here knows");
    for _ in 0..10 {
        next_frame(&mut sub, T).await;
    }
    bad.connect(nvr_addr.clone()).await.expect("reaches the NVR");
    let from = recorded_from(&bad, nvr.peer_id()).await;
    client::play(bad.reach(), nvr.peer_id(), "cam1", from, 0)
        .await
        .expect("playback while nobody here knows");

    // 4. carrier-2 meets the relay; the relay tells the camera and the NVR.
    let met = Instant::now();
    carrier2.connect(relay_addr.clone()).await.expect("meets the relay");
    let relay_knows = took("the relay learns it", || relay.trust().peer_revoked(&bad_peer)).await;
    let relay_at = Instant::now();
    took("the camera learns it", || cam.trust().peer_revoked(&bad_peer)).await;
    let cam_knows = relay_at.elapsed();
    took("the NVR learns it", || nvr.trust().peer_revoked(&bad_peer)).await;
    let nvr_knows = relay_at.elapsed();
    let frames_after = until_ended(&mut sub).await;
    let cut = met.elapsed();
    eprintln!(
        "revocation met: relay knew after {relay_knows:?}, then camera +{cam_knows:?}, NVR +{nvr_knows:?}; \
         the revoked stream ended {cut:?} after the meeting ({frames_after} frames)"
    );
    assert!(relay_knows <= MEET, "relay: {relay_knows:?}");
    assert!(cam_knows <= MEET, "camera: {cam_knows:?}");
    assert!(nvr_knows <= MEET, "NVR: {nvr_knows:?}");
    assert!(cut <= relay_knows + MEET, "stream cut after {cut:?}");

    // Refused everywhere now: live video, a circuit through the relay, NVR playback.
    match bad.subscribe_camera("cam1", Some(cam.peer_id()), live("cam1")).await {
        Ok(_) => panic!("the camera served a revoked viewer again"),
        Err(e) => eprintln!("camera refused: {e}"),
    }
    // The revoked laptop restarts (knowing only the relay and the circuit address, as a
    // fresh `mesh` run does): the relay refuses it a circuit, the NVR its playback.
    bad.shutdown();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut bc = loopback_config(Role::Viewer, F);
    bc.node.bootstrap = vec![relay_addr.clone()];
    let bad = Node::spawn(bc, &d("bad")).await.expect("restarts");
    let c = tokio::time::timeout(T, bad.net().connect(None, vec![circuit])).await;
    assert!(!matches!(c, Ok(Ok(_))), "a revoked viewer got a circuit: {c:?}");
    eprintln!("circuit refused: {c:?}");
    let refused_relay =
        wait_until(T, || {
            relay.trust().audit.tail(2000).iter().any(|e| {
                e.peer == bad_peer.to_string() && (e.event == "refused-relay" || e.event == "refused-connection")
            })
        })
        .await;
    assert!(refused_relay, "the relay audited the refusal");
    let _ = bad.connect(nvr_addr).await;
    let played = tokio::time::timeout(T, client::play(bad.reach(), nvr.peer_id(), "cam1", from, 0)).await;
    match played {
        Ok(Ok(_)) => panic!("the NVR played to a revoked viewer"),
        Ok(Err(e)) => eprintln!("NVR refused: {e}"),
        Err(_) => eprintln!("NVR refused: no answer to a revoked peer"),
    }
    for (name, n) in [("relay", &relay), ("camera", &cam)] {
        let audit = n.trust().audit.tail(2000);
        assert!(
            audit.iter().any(|e| e.event == "cut" && e.peer == bad_peer.to_string()),
            "{name} audited the cut"
        );
    }
    recorder.stop().await;
    for n in [&bad, &nvr, &cam, &relay, &carrier2] {
        n.shutdown();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_fleet_of_twelve_converges_within_5_s_of_healing() {
    init_tracing();
    const F: &str = "t-fs-partition";
    const SIDE: usize = 6;
    let dir = tempfile::tempdir().expect("tempdir");
    // Two sides of six nodes each, every node bootstrapped from its side's first node
    // only: no address crosses the partition until it heals.
    let mut sides: Vec<Vec<NodeHandle>> = Vec::new();
    for side in ["a", "b"] {
        let first = viewer_node(&dir.path().join(format!("{side}0")), F, vec![]).await;
        let addrs = first.dial_addrs().await.expect("addrs");
        let mut nodes = vec![first];
        for i in 1..SIDE {
            nodes.push(viewer_node(&dir.path().join(format!("{side}{i}")), F, addrs.clone()).await);
        }
        sides.push(nodes);
    }
    let (a, b) = (&sides[0], &sides[1]);
    for side in [a, b] {
        for n in &side[1..] {
            assert!(wait_until(T, || side[0].trust().member(&n.peer_id()).is_some()).await);
        }
    }
    // A revocation issued on side a reaches all of side a, none of side b.
    let revoked = PeerId::random();
    a[0].push_revocation(fleet(F).revoke(&[revoked], &[], "partition test"))
        .await
        .expect("pushed");
    took("side a converges", || {
        a.iter().all(|n| n.trust().peer_revoked(&revoked))
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        b.iter().all(|n| !n.trust().peer_revoked(&revoked)),
        "the partition leaked"
    );
    // Heal: one link between the sides.
    let healed = Instant::now();
    b[SIDE - 1]
        .connect(a[SIDE - 1].dial_addrs().await.expect("addrs").remove(0))
        .await
        .expect("heals");
    took("every node has it", || {
        a.iter().chain(b.iter()).all(|n| n.trust().peer_revoked(&revoked))
    })
    .await;
    let all = healed.elapsed();
    eprintln!(
        "partition of {} nodes healed: the revocation reached every node {all:?} after the link came up",
        2 * SIDE
    );
    assert!(all <= Duration::from_secs(5), "converged after {all:?}");
    for n in a.iter().chain(b.iter()) {
        n.shutdown();
    }
}

/// A viewer node with a certificate only: the grants it uses are the ones a test hands it.
async fn bare_viewer(dir: &Path, fleet_name: &str, bootstrap: Vec<Multiaddr>) -> NodeHandle {
    fleet(fleet_name)
        .enroll_dir(dir, MemberRole::Viewer, "viewer", &[], 3600)
        .expect("enroll");
    let mut c = loopback_config(Role::Viewer, fleet_name);
    c.node.bootstrap = bootstrap;
    Node::spawn(c, dir).await.expect("starts")
}

fn with_grant(camera: &str, g: &pb::Signed) -> pb::StreamRequest {
    pb::StreamRequest {
        audio: false,
        grant: camesh_node::auth::signed::encode(g),
        ..live(camera)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grants_delegated_by_a_revoked_peer_stop_and_it_cannot_issue_more() {
    init_tracing();
    const F: &str = "t-fs-deleg";
    let dir = tempfile::tempdir().expect("tempdir");
    let cam = camera_node(&dir.path().join("cam"), F, vec![camera("cam1", CLIP)], vec![]).await;
    let addrs = cam.dial_addrs().await.expect("addrs");
    // The delegator holds live+delegate from the root; it is offline (only its key is used).
    let d_key = camesh_node::identity::load_or_create(&dir.path().join("delegator")).expect("key");
    let d_peer = d_key.public().to_peer_id();
    let now = now_s();
    let req = |holder| GrantRequest {
        holder,
        cameras: vec!["cam1".into()],
        tags: vec![],
        rights: Rights::LIVE,
        not_before_unix_s: now - 60,
        not_after_unix_s: now + 3600,
    };
    let parent = fleet(F).grant(&GrantRequest {
        rights: Rights::LIVE.union(Rights::DELEGATE),
        ..req(d_peer)
    });
    let v = bare_viewer(&dir.path().join("v"), F, addrs.clone()).await;
    let g1 = grant::issue(&d_key, F, &req(v.peer_id()), Some(parent.clone()));
    let mut sub = v
        .subscribe_camera("cam1", Some(cam.peer_id()), with_grant("cam1", &g1))
        .await
        .expect("a delegated grant is honoured");
    for _ in 0..10 {
        next_frame(&mut sub, T).await;
    }
    // The delegator is revoked (pushed by another member, as `mesh revoke` would).
    let admin = viewer_node(&dir.path().join("admin"), F, addrs.clone()).await;
    assert!(wait_until(T, || cam.trust().member(&admin.peer_id()).is_some()).await);
    let revoked_at = Instant::now();
    admin
        .push_revocation(fleet(F).revoke(&[d_peer], &[], "delegator left"))
        .await
        .expect("pushed");
    let frames = until_ended(&mut sub).await;
    let cut = revoked_at.elapsed();
    eprintln!("a grant delegated by a revoked peer: stream cut {cut:?} after the revocation ({frames} frames)");
    assert!(cut <= MEET, "cut after {cut:?}");
    match v
        .subscribe_camera("cam1", Some(cam.peer_id()), with_grant("cam1", &g1))
        .await
    {
        Ok(_) => panic!("a grant delegated by a revoked peer was honoured"),
        Err(e) => {
            eprintln!("refused: {e}");
            assert!(e.to_string().contains("revoked"), "{e}");
        }
    }
    // What the revoked delegator signs afterwards is refused too, for a new holder.
    let v2 = bare_viewer(&dir.path().join("v2"), F, addrs).await;
    let g2 = grant::issue(&d_key, F, &req(v2.peer_id()), Some(parent));
    match v2
        .subscribe_camera("cam1", Some(cam.peer_id()), with_grant("cam1", &g2))
        .await
    {
        Ok(_) => panic!("a revoked delegator issued a working grant"),
        Err(e) => assert!(e.to_string().contains("revoked"), "{e}"),
    }
    for n in [&v2, &admin, &v, &cam] {
        n.shutdown();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_whose_grant_expired_gets_no_key_of_the_next_epoch() {
    init_tracing();
    const F: &str = "t-fs-expiry";
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cc = loopback_config(Role::Camera, F);
    cc.cameras = vec![camera("cam1", CLIP)];
    cc.limits.clock_skew_s = 0;
    cc.limits.key_rotation_s = 2;
    let cam = spawn_node(cc, &dir.path().join("cam")).await;
    let v = bare_viewer(&dir.path().join("v"), F, cam.dial_addrs().await.expect("addrs")).await;
    let now = now_s();
    let g = fleet(F).grant(&GrantRequest {
        holder: v.peer_id(),
        cameras: vec!["cam1".into()],
        tags: vec![],
        rights: Rights::LIVE,
        not_before_unix_s: now - 60,
        not_after_unix_s: now + 4,
    });
    let keys = KeySource {
        control: v.stream_control(),
        camera_peer: cam.peer_id(),
        camera: "cam1".into(),
        profile: pb::Profile::Main,
        grant: g.clone(),
        limits: v.config().limits.clone(),
    };
    let mut sub = v
        .subscribe_camera("cam1", Some(cam.peer_id()), with_grant("cam1", &g))
        .await
        .expect("watching");
    next_frame(&mut sub, T).await;
    let first = keys.fetch(0).await.expect("a key while the grant is valid");
    // The grant expires (no skew allowed): the stream ends, and after the next key
    // change the camera's new key is refused, so frames sealed from then on stay closed.
    let frames = until_ended(&mut sub).await;
    assert!(
        now_s() >= now + 4,
        "the stream ended before the grant expired ({frames} frames)"
    );
    let hub = cam.hubs().get("cam1").expect("hub");
    let expired_epoch = hub.key_epoch();
    assert!(
        wait_until(T, || hub.key_epoch() > expired_epoch).await,
        "the key changes on time"
    );
    let next = hub.key_epoch();
    match keys.fetch(next).await {
        Ok(_) => panic!("an expired grant got the key of epoch {next}"),
        Err(e) => {
            eprintln!("epoch {next} refused: {e}");
            assert!(e.to_string().contains("expired"), "{e}");
        }
    }
    assert!(next > first.epoch);
    assert!(cam
        .trust()
        .audit
        .tail(1000)
        .iter()
        .any(|e| e.event == "key-rotated" && e.detail.contains("every 2 s")));
    for n in [&v, &cam] {
        n.shutdown();
    }
}

#[test]
fn a_scoped_admin_grants_within_its_scope_and_is_refused_outside_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("root");
    let ops = dir.path().join("ops");
    let mesh = camesh_tests::cli::mesh_in;
    let (ok, _, err) = mesh(&root, &["fleet", "init", "--id", "depot"]);
    assert!(ok, "{err}");
    let root_text = std::fs::read_to_string(root.join("fleet.toml")).expect("fleet.toml");
    // The ops laptop: its own key, the fleet's public file, and a scoped admin certificate
    // (front cameras, live and playback only, no revoking) signed by the root.
    std::fs::create_dir_all(&ops).expect("dir");
    std::fs::write(ops.join("fleet.toml"), &root_text).expect("fleet.toml copied");
    let ops_peer = camesh_node::identity::load_or_create(&ops)
        .expect("key")
        .public()
        .to_peer_id()
        .to_string();
    let cert = ops.join("admin.cert");
    let (ok, _, err) = mesh(
        &root,
        &[
            "fleet",
            "admin",
            &ops_peer,
            "--name",
            "ops",
            "--cameras",
            "front",
            "--rights",
            "live,playback",
            "-o",
            cert.to_str().expect("utf8"),
        ],
    );
    assert!(ok, "{err}");
    assert!(!ops.join("fleet.key").exists(), "the root key stays with the root");
    let holder = PeerId::random().to_string();
    let (ok, text, err) = mesh(&ops, &["grant", &holder, "--cameras", "front", "--rights", "live"]);
    assert!(ok, "within scope: {err}");
    assert!(text.starts_with("camesh-grant:"), "{text}");
    for (args, why) in [
        (
            vec!["--cameras", "back", "--rights", "live"],
            "a camera outside its scope",
        ),
        (vec!["--cameras", "*", "--rights", "live"], "every camera"),
        (
            vec!["--cameras", "front", "--rights", "export"],
            "a right it may not grant",
        ),
    ] {
        let mut a = vec!["grant", holder.as_str()];
        a.extend(args);
        let (ok, _, err) = mesh(&ops, &a);
        assert!(!ok, "{why} was granted");
        assert!(!err.trim().is_empty() && err.lines().count() <= 2, "{why}: {err}");
        eprintln!("{why}: {}", err.trim());
    }
    let (ok, _, err) = mesh(&ops, &["revoke", &holder]);
    assert!(!ok, "an admin without may-revoke revoked");
    eprintln!("revoke: {}", err.trim());
}

#[test]
fn mesh_grant_delegates_a_held_grant_no_wider_and_not_once_revoked() {
    const F: &str = "t-fs-cli-deleg";
    let dir = tempfile::tempdir().expect("tempdir");
    let lead = dir.path().join("lead");
    // A shift lead's laptop: a member with live+playback+delegate on the front camera.
    let f = fleet(F);
    f.enroll_dir(&lead, MemberRole::Viewer, "lead", &[], 3600)
        .expect("enroll");
    f.grant_dir(
        &lead,
        &["front".into()],
        Rights::LIVE.union(Rights::PLAYBACK).union(Rights::DELEGATE),
        3600,
    )
    .expect("grant");
    std::fs::write(
        lead.join("fleet.toml"),
        format!("fleet_id = {F:?}\nroot = {:?}\n", f.root_text()),
    )
    .expect("fleet.toml");
    let mesh = |args: &[&str]| camesh_tests::cli::mesh_in(&lead, args);
    let guard = PeerId::random();
    let (ok, text, err) = mesh(&[
        "grant",
        &guard.to_string(),
        "--cameras",
        "front",
        "--rights",
        "live",
        "--until",
        "30m",
    ]);
    assert!(ok, "delegation within the held grant: {err}");
    let g = camesh_node::auth::signed::decode(
        "grant",
        &camesh_node::auth::invite::bs58_decode(text.trim().trim_start_matches("camesh-grant:")).expect("base58"),
    )
    .expect("a signed grant");
    let info = grant::verify(&g, &f.key.public(), F, &guard, now_s()).expect("verifies against the root");
    assert_eq!(info.chain.len(), 2, "names its chain: the lead's grant, then this one");
    for (args, why) in [
        (vec!["--cameras", "back", "--rights", "live"], "another camera"),
        (
            vec!["--cameras", "front", "--rights", "export"],
            "a right the lead lacks",
        ),
        (
            vec!["--cameras", "front", "--rights", "live", "--until", "30d"],
            "beyond the lead's grant",
        ),
    ] {
        let mut a = vec!["grant".to_string(), guard.to_string()];
        a.extend(args.iter().map(|s| s.to_string()));
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        let (ok, _, err) = mesh(&a);
        assert!(!ok, "{why} was delegated");
        eprintln!("{why}: {}", err.trim());
    }
    // Once the lead's log holds its own revocation, it delegates nothing more.
    let lead_peer = camesh_node::identity::load_or_create(&lead)
        .expect("key")
        .public()
        .to_peer_id();
    let t = camesh_node::auth::Trust::load(&lead, F, f.key.public(), lead_peer);
    t.apply_entry(&f.revoke(&[lead_peer], &[], "left the company"))
        .expect("stored");
    drop(t);
    let (ok, _, err) = mesh(&["grant", &guard.to_string(), "--cameras", "front", "--rights", "live"]);
    assert!(!ok && err.contains("revoked"), "a revoked delegator delegated: {err}");
    eprintln!("revoked: {}", err.trim());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mesh_peers_shows_how_far_each_peers_fleet_state_was_behind_and_its_clock() {
    init_tracing();
    const F: &str = "t-fs-peers";
    let dir = tempfile::tempdir().expect("tempdir");
    let cam = camera_node(&dir.path().join("cam"), F, vec![camera("cam1", CLIP)], vec![]).await;
    let addrs = cam.dial_addrs().await.expect("addrs");
    // The laptop's log holds two revocations the camera has not heard of.
    let laptop = dir.path().join("laptop");
    camesh_tests::cli::mesh_folder(&laptop, F, "laptop", &["*"], Rights::LIVE);
    let me = camesh_node::identity::load_or_create(&laptop)
        .expect("key")
        .public()
        .to_peer_id();
    let t = camesh_node::auth::Trust::load(&laptop, F, fleet(F).key.public(), me);
    let (r1, r2) = (PeerId::random(), PeerId::random());
    for r in [r1, r2] {
        t.apply_entry(&fleet(F).revoke(&[r], &[], "lost")).expect("stored");
    }
    drop(t);
    let out = camesh_tests::cli::run_mesh(&laptop, F, &addrs, &["peers", "--timeout", "3s"]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    eprintln!("{stdout}");
    assert!(stdout.contains("FLEET STATE") && stdout.contains("CLOCK"), "{stdout}");
    let row = stdout
        .lines()
        .find(|l| l.starts_with(&cam.peer_id().to_string()))
        .unwrap_or_else(|| panic!("a row for the camera: {stdout}"));
    assert!(row.contains("in step (was behind 2)"), "{row}");
    assert!(row.contains("+0.0s"), "clock offset on one machine: {row}");
    assert!(cam.trust().peer_revoked(&r1) && cam.trust().peer_revoked(&r2));
    cam.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_changing_every_interval_keep_live_and_recorded_video_whole() {
    init_tracing();
    const F: &str = "t-fs-rotation";
    let dir = tempfile::tempdir().expect("tempdir");
    let d = |n: &str| dir.path().join(n);
    let mut cc = loopback_config(Role::Camera, F);
    cc.cameras = vec![camera("cam1", CLIP)];
    cc.limits.key_rotation_s = 2;
    let cam = spawn_node(cc, &d("cam")).await;
    let addrs = cam.dial_addrs().await.expect("addrs");
    // The NVR holds `record` only: recording needs no right to watch.
    let nvr_dir = d("nvr");
    fleet(F)
        .enroll_dir(&nvr_dir, MemberRole::Nvr, "nvr", &[], 3600)
        .expect("enroll");
    fleet(F)
        .grant_dir(&nvr_dir, &["cam1".into()], Rights::RECORD, 3600)
        .expect("grant");
    let mut nc = loopback_config(Role::Nvr, F);
    nc.node.bootstrap = addrs.clone();
    nc.nvr.fsync_interval_ms = 200;
    nc.nvr.records = vec![RecordRule {
        camera: "cam1".into(),
        ..RecordRule::default()
    }];
    let nvr = Node::spawn(nc.clone(), &nvr_dir).await.expect("NVR node starts");
    let recorder = Nvr::start(nvr.reach(), nc.nvr.clone(), &nvr_dir)
        .await
        .expect("NVR starts");
    // A viewer holding `record` alone is no NVR: no live video for it.
    let rv = bare_viewer(&d("rv"), F, addrs.clone()).await;
    let record_only = fleet(F).grant(&GrantRequest {
        holder: rv.peer_id(),
        cameras: vec!["cam1".into()],
        tags: vec![],
        rights: Rights::RECORD,
        not_before_unix_s: now_s() - 60,
        not_after_unix_s: now_s() + 3600,
    });
    let refused = rv
        .subscribe_camera("cam1", Some(cam.peer_id()), with_grant("cam1", &record_only))
        .await;
    assert!(refused.is_err(), "a viewer with only `record` watched");
    rv.shutdown();
    fleet(F)
        .grant_dir(&d("v"), &["cam1".into()], Rights::LIVE.union(Rights::PLAYBACK), 3600)
        .expect("grant");
    let v = viewer_node(&d("v"), F, addrs).await;
    // Live: frames keep opening across at least three key changes.
    let mut sub = v
        .subscribe_camera("cam1", Some(cam.peer_id()), live("cam1"))
        .await
        .expect("watching");
    let mut epochs = std::collections::BTreeSet::new();
    let mut last_seq = None;
    for _ in 0..600 {
        let f = next_frame(&mut sub, T).await;
        if let Some(prev) = last_seq {
            assert_eq!(f.header.sequence, prev + 1, "no frame lost at a key change");
        }
        last_seq = Some(f.header.sequence);
        epochs.insert(f.header.key_epoch);
        if epochs.len() >= 4 {
            break;
        }
    }
    assert!(epochs.len() >= 4, "live frames of epochs {epochs:?}");
    // Recorded: the NVR's copy of the same span plays whole, every epoch opening.
    let nvr_addr = nvr.dial_addrs().await.expect("addrs").remove(0);
    v.connect(nvr_addr).await.expect("reaches the NVR");
    let from = recorded_from(&v, nvr.peer_id()).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let mut p = client::play(
        v.reach(),
        nvr.peer_id(),
        "cam1",
        from,
        camesh_node::clock::now_unix_us() - 500_000,
    )
    .await
    .expect("playback");
    let mut played = std::collections::BTreeSet::new();
    let mut frames = 0;
    while let Some(f) = tokio::time::timeout(T, p.next_frame())
        .await
        .expect("a frame in time")
        .expect("every recorded frame opens")
    {
        played.insert(f.header.key_epoch);
        frames += 1;
        assert!(frames < 100_000);
    }
    eprintln!("live epochs {epochs:?}; recorded {frames} frames over epochs {played:?}");
    assert!(played.len() >= 3, "recorded epochs {played:?}");
    recorder.stop().await;
    for n in [&v, &nvr, &cam] {
        n.shutdown();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invites_redeem_once_over_the_network_even_across_an_admin_restart() {
    init_tracing();
    const F: &str = "t-fs-invite";
    let dir = tempfile::tempdir().expect("tempdir");
    let d = |n: &str| dir.path().join(n);
    // The admin node holds the root key, as `mesh fleet invite` does while it waits.
    let start_admin = || async {
        let a = viewer_node(&d("admin"), F, vec![]).await;
        a.trust().set_root_key(fleet(F).key.clone()).expect("root key");
        a
    };
    let admin = start_admin().await;
    let joiner = |name: &'static str| {
        let path = d(name);
        async move {
            let mut c = loopback_config(Role::Camera, F);
            c.node.bootstrap = vec![];
            Node::spawn(c, &path).await.expect("starts")
        }
    };
    let invite = |admin: &NodeHandle,
                  addrs: Vec<Multiaddr>,
                  holder: Option<PeerId>,
                  expires: i64,
                  key: &libp2p::identity::Keypair| {
        camesh_node::auth::invite::issue(
            key,
            F,
            MemberRole::Camera,
            "bus 7 cam",
            expires,
            admin.peer_id(),
            &addrs
                .into_iter()
                .map(|a| camesh_node::addr::split_p2p(a).1)
                .collect::<Vec<_>>(),
            &["cam1".into()],
            3600,
            holder,
        )
    };
    let addrs = admin.dial_addrs().await.expect("addrs");
    let root = fleet(F).key.clone();

    // Redeemed once by a new node; a second node with the same text is refused.
    let text = invite(&admin, addrs.clone(), None, now_s() + 600, &root);
    let a = joiner("a").await;
    let cert = a.redeem_invite(&text).await.expect("redeemed");
    assert_eq!(cert.name, "bus 7 cam");
    let b = joiner("b").await;
    let e = b.redeem_invite(&text).await.expect_err("a second use");
    assert!(e.contains("already been used"), "{e}");
    // Bound to b: c cannot use it; b can.
    let bound = invite(&admin, addrs.clone(), Some(b.peer_id()), now_s() + 600, &root);
    let c = joiner("c").await;
    let e = c.redeem_invite(&bound).await.expect_err("someone else's invite");
    assert!(e.contains("another node"), "{e}");
    b.redeem_invite(&bound).await.expect("its holder redeems it");
    // Forged (signed by a key that is not the fleet root) and expired invites.
    let forged = invite(
        &admin,
        addrs.clone(),
        None,
        now_s() + 600,
        &libp2p::identity::Keypair::generate_ed25519(),
    );
    let e = c.redeem_invite(&forged).await.expect_err("forged");
    eprintln!("forged: {e}");
    let expired = invite(&admin, addrs.clone(), None, now_s() - 10, &root);
    let e = c.redeem_invite(&expired).await.expect_err("expired");
    assert!(e.contains("expired"), "{e}");
    // After the admin restarts, the used invite is still used (its fleet-state log).
    admin.shutdown();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let admin = start_admin().await;
    let addrs = admin.dial_addrs().await.expect("addrs");
    let again = invite(&admin, addrs.clone(), None, now_s() + 600, &root);
    c.connect(addrs[0].clone()).await.expect("reaches the restarted admin");
    let e = c.redeem_invite(&text).await.expect_err("reused after a restart");
    assert!(e.contains("already been used"), "{e}");
    c.redeem_invite(&again).await.expect("a fresh invite works");
    for n in [&a, &b, &c, &admin] {
        n.shutdown();
    }
}
