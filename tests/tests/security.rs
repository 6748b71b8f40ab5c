//! Fleet security end to end: real nodes over QUIC on 127.0.0.1.
//!
//! Each test names the attack it stops (see DESIGN.md "Security"): impostor cameras
//! (Kalay), strangers reaching devices (iLnkP2P), other fleets' keys, stolen or forged
//! grants, revoked viewers that keep watching, and relays or forwarders reading video.

use std::time::Duration;

use camesh_node::auth::fleet::FleetRoot;
use camesh_node::auth::grant::GrantRequest;
use camesh_node::auth::{self, signed, Rights};
use camesh_node::config::Role;
use camesh_node::discovery::camera_key;
use camesh_node::stream::client::{self, ClientError};
use camesh_node::{Node, NodeHandle};
use camesh_proto::pb::{self, MemberRole};
use camesh_tests::*;

const CLIP: &str = "cam-640x360-30fps-gop2s.h264";
const T: Duration = Duration::from_secs(20);

fn live(camera: &str, grant: Option<&pb::Signed>) -> pb::StreamRequest {
    pb::StreamRequest {
        audio: false,
        camera_id: camera.into(),
        mode: Some(pb::stream_request::Mode::Live(pb::Live {})),
        grant: grant.map(signed::encode).unwrap_or_default(),
        ..Default::default()
    }
}

/// A node whose data directory is provisioned by hand (no grant, or a foreign fleet...).
async fn raw_node(dir: &std::path::Path, config: camesh_node::Config) -> NodeHandle {
    Node::spawn(config, dir).await.expect("node starts")
}

async fn refused(
    node: &NodeHandle,
    peer: camesh_node::PeerId,
    camera: &str,
    grant: Option<&pb::Signed>,
) -> (pb::RejectCode, String) {
    let mut control = node.stream_control();
    match client::subscribe(&mut control, peer, live(camera, grant), &node.config().limits).await {
        Err(ClientError::Rejected { code, reason, .. }) => (code, reason),
        Err(e) => (pb::RejectCode::RejectUnspecified, e.to_string()),
        Ok(_) => panic!("stream to {camera} was accepted"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_expired_members_and_other_fleets_get_nothing() {
    init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    let cam = camera_node(&dir.path().join("cam"), "t-sec1", vec![camera("cam1", CLIP)], vec![]).await;
    let addrs = cam.dial_addrs().await.expect("addrs");
    let fleet = fleet("t-sec1");

    // (a) no certificate at all, (b) an expired one, (c) one from another fleet's root.
    let no_cert = dir.path().join("nocert");
    let expired = dir.path().join("expired");
    fleet
        .enroll_dir(&expired, MemberRole::Viewer, "old", &[], -3600)
        .expect("enroll");
    let foreign = dir.path().join("foreign");
    FleetRoot::ephemeral("t-sec1")
        .enroll_dir(&foreign, MemberRole::Viewer, "other fleet", &[], 3600)
        .expect("enroll");
    for d in [&no_cert, &expired, &foreign] {
        // Even a valid grant does not help a non-member.
        fleet.grant_dir(d, &["*".into()], Rights::LIVE, 3600).expect("grant");
    }
    for (name, d, why) in [
        ("no certificate", &no_cert, "no valid certificate"),
        // (A node presents no certificate that does not verify against the root it is
        // configured with: an expired one, or another fleet's.)
        ("expired", &expired, "no valid certificate"),
        ("foreign fleet", &foreign, "no valid certificate"),
    ] {
        let mut c = loopback_config(Role::Viewer, "t-sec1");
        c.node.bootstrap = addrs.clone();
        let intruder = raw_node(d, c).await;
        // It cannot list cameras...
        let found = intruder.discover_cameras(Duration::from_secs(2)).await;
        assert!(found.is_empty(), "{name}: listed {found:?}");
        // ...nor watch (asked directly, it is refused or cut off)...
        let (code, reason) = refused(
            &intruder,
            cam.peer_id(),
            "cam1",
            intruder.trust().grant_for("cam1", Rights::LIVE).as_ref(),
        )
        .await;
        eprintln!("{name}: refused {code:?}: {reason}");
        // Refused for not being a member (the audit entry, below, names why when the
        // connection was closed first); a dial failure or a timeout is neither.
        assert!(refused_as_stranger(code, &reason), "{name}: {code:?} {reason}");
        // ...nor learn who the camera is: it answered without its certificate (the
        // intruders know the fleet's public root, so they would have verified it).
        assert!(
            intruder.trust().member(&cam.peer_id()).is_none(),
            "{name}: learnt the camera's certificate"
        );
        // ...nor is it kept connected, nor found in the DHT.
        assert!(
            wait_until(T, || true).await
                && tokio::time::timeout(T, async {
                    loop {
                        let peers = cam.peers().await.expect("peers");
                        if !peers.iter().any(|p| p.peer == intruder.peer_id() && p.connected) {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                })
                .await
                .is_ok(),
            "{name}: still connected"
        );
        let providers = intruder.net().find_providers(camera_key("cam1")).await.expect("query");
        assert!(providers.is_empty(), "{name}: DHT answered {providers:?}");
        // The camera audited this intruder's refusal, by its peer id, with the reason.
        let me = intruder.peer_id().to_string();
        let audited = wait_until(T, || {
            cam.trust()
                .audit
                .tail(1000)
                .iter()
                .any(|e| e.peer == me && e.event == "refused-connection" && e.detail.contains(why))
        })
        .await;
        let mine: Vec<_> = cam
            .trust()
            .audit
            .tail(1000)
            .into_iter()
            .filter(|e| e.peer == me)
            .collect();
        assert!(
            audited,
            "{name}: no refused-connection naming {why:?} for {me}: {mine:?}"
        );
        intruder.shutdown();
    }
    cam.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_holder_forged_expired_and_widened_grants_are_refused_with_reasons() {
    init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    let cam = camera_node(
        &dir.path().join("cam"),
        "t-sec2",
        vec![camera("cam1", CLIP), camera("cam2", CLIP)],
        vec![],
    )
    .await;
    let addrs = cam.dial_addrs().await.expect("addrs");
    let f = fleet("t-sec2");
    let a_dir = dir.path().join("a");
    let b_dir = dir.path().join("b");
    let mut ca = loopback_config(Role::Viewer, "t-sec2");
    ca.node.bootstrap = addrs.clone();
    let a = spawn_node(ca.clone(), &a_dir).await;
    ca.node.bootstrap = addrs;
    let b = spawn_node(ca, &b_dir).await;
    // The raw requests below skip the viewer's own wait for the certificate exchange:
    // wait for it here (on a loaded machine it can take a while).
    for v in [&a, &b] {
        let ok = wait_until(T, || {
            cam.trust().member(&v.peer_id()).is_some() && v.trust().member(&cam.peer_id()).is_some()
        })
        .await;
        if !ok {
            // The 1 s grace dropped it before it proved membership: connect again.
            v.net().connect(Some(cam.peer_id()), vec![]).await.expect("reconnect");
            assert!(wait_until(T, || cam.trust().member(&v.peer_id()).is_some()).await);
        }
    }
    let now = auth::now_s();
    let req = |holder, cams: &[&str], rights, until| GrantRequest {
        holder,
        cameras: cams.iter().map(|s| s.to_string()).collect(),
        tags: vec![],
        rights,
        not_before_unix_s: now - 60,
        not_after_unix_s: until,
    };
    // A grant for A, presented by B.
    let for_a = f.grant(&req(a.peer_id(), &["cam1"], Rights::LIVE, now + 600));
    let (code, reason) = refused(&b, cam.peer_id(), "cam1", Some(&for_a)).await;
    assert_eq!(code, pb::RejectCode::RejectNotAuthorized);
    assert!(reason.contains("belongs to"), "{reason}");
    // A forged grant (signed by a key that is not the fleet root).
    let forged = auth::grant::issue(
        &FleetRoot::ephemeral("t-sec2").key,
        "t-sec2",
        &req(b.peer_id(), &["*"], Rights(255), now + 600),
        None,
    );
    let (_, reason) = refused(&b, cam.peer_id(), "cam1", Some(&forged)).await;
    assert!(reason.contains("signed by"), "{reason}");
    // An expired grant.
    let expired = f.grant(&req(b.peer_id(), &["cam1"], Rights::LIVE, now - 3600));
    let (_, reason) = refused(&b, cam.peer_id(), "cam1", Some(&expired)).await;
    assert!(reason.contains("expired"), "{reason}");
    // A delegated grant wider than its parent: A may delegate cam1 only.
    let a_key = camesh_node::identity::load_or_create(&a_dir).expect("key");
    let parent = f.grant(&req(
        a.peer_id(),
        &["cam1"],
        Rights::LIVE.union(Rights::DELEGATE),
        now + 600,
    ));
    let wider = auth::grant::issue(
        &a_key,
        "t-sec2",
        &req(b.peer_id(), &["cam2"], Rights::LIVE, now + 300),
        Some(parent.clone()),
    );
    let (_, reason) = refused(&b, cam.peer_id(), "cam2", Some(&wider)).await;
    assert!(reason.contains("wider"), "{reason}");
    // A grant without the right, or for another camera.
    let playback_only = f.grant(&req(b.peer_id(), &["cam1"], Rights::PLAYBACK, now + 600));
    let (_, reason) = refused(&b, cam.peer_id(), "cam1", Some(&playback_only)).await;
    assert!(reason.contains("live"), "{reason}");
    let (_, reason) = refused(&b, cam.peer_id(), "cam1", None).await;
    assert!(reason.contains("no grant"), "{reason}");
    // The narrower delegation works.
    let narrow = auth::grant::issue(
        &a_key,
        "t-sec2",
        &req(b.peer_id(), &["cam1"], Rights::LIVE, now + 300),
        Some(parent),
    );
    let mut control = b.stream_control();
    let mut sub = client::subscribe(
        &mut control,
        cam.peer_id(),
        live("cam1", Some(&narrow)),
        &b.config().limits,
    )
    .await
    .expect("delegated grant accepted");
    let f1 = next_frame(&mut sub, T).await;
    assert!(f1.header.keyframe);
    for n in [&a, &b, &cam] {
        n.shutdown();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_viewer_is_cut_off_cannot_return_and_the_key_changes() {
    init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    let cam = camera_node(&dir.path().join("cam"), "t-sec3", vec![camera("cam1", CLIP)], vec![]).await;
    let addrs = cam.dial_addrs().await.expect("addrs");
    let bad = viewer_node(&dir.path().join("bad"), "t-sec3", addrs.clone()).await;
    let good = viewer_node(&dir.path().join("good"), "t-sec3", addrs).await;
    let mut bad_sub = bad
        .subscribe_camera("cam1", Some(cam.peer_id()), live("cam1", None))
        .await
        .expect("bad subscribed");
    let mut good_sub = good
        .subscribe_camera("cam1", Some(cam.peer_id()), live("cam1", None))
        .await
        .expect("good subscribed");
    for _ in 0..10 {
        next_frame(&mut bad_sub, T).await;
        next_frame(&mut good_sub, T).await;
    }
    let epoch_before = cam.hubs().get("cam1").expect("hub").key_epoch();
    // The admin revokes the bad viewer (pushed from the good viewer's node, as `mesh revoke` would).
    let r = fleet("t-sec3").revoke(&[bad.peer_id()], &[], "lost laptop");
    let sent = good.push_revocation(r).await.expect("pushed");
    assert!(sent >= 1);
    let revoked_at = std::time::Instant::now();
    // The bad viewer's stream ends (bounded: 200 frames is ~7 s; it must end well before).
    let mut after = 0;
    loop {
        match tokio::time::timeout(T, bad_sub.next_frame())
            .await
            .expect("ends in time")
        {
            Ok(Some(_)) => after += 1,
            Ok(None) | Err(_) => break,
        }
        assert!(after < 200, "revoked stream kept flowing");
    }
    let cut_after = revoked_at.elapsed();
    assert!(cut_after < Duration::from_secs(2), "cut off after {cut_after:?}");
    // The key epoch changed, and the good viewer keeps watching across the change.
    let hub = cam.hubs().get("cam1").expect("hub");
    assert!(wait_until(T, || hub.key_epoch() > epoch_before).await, "key rotated");
    let mut saw_new_epoch = false;
    for _ in 0..120 {
        let f = next_frame(&mut good_sub, T).await;
        if f.header.key_epoch > epoch_before {
            saw_new_epoch = true;
            break;
        }
    }
    assert!(saw_new_epoch, "the good viewer decrypts frames of the new epoch");
    // The bad viewer cannot come back.
    match bad
        .subscribe_camera("cam1", Some(cam.peer_id()), live("cam1", None))
        .await
    {
        Ok(_) => panic!("a revoked viewer subscribed again"),
        Err(e) => eprintln!("revoked viewer refused: {e}"),
    }
    let audit = cam.trust().audit.tail(1000);
    assert!(audit.iter().any(|e| e.event == "key-rotated"));
    assert!(
        audit
            .iter()
            .any(|e| e.event == "cut" && e.peer == bad.peer_id().to_string()),
        "the camera closed the revoked viewer's connection"
    );
    for n in [&bad, &good, &cam] {
        n.shutdown();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_impostor_announcing_a_real_camera_id_gets_no_viewer() {
    init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    let real = camera_node(&dir.path().join("real"), "t-sec4", vec![camera("lobby", CLIP)], vec![]).await;
    let addrs = real.dial_addrs().await.expect("addrs");
    // A fleet member (certified for "side-door") that also serves a camera it calls "lobby".
    let mut ic = loopback_config(Role::Camera, "t-sec4");
    ic.cameras = vec![camera("lobby", CLIP)];
    ic.node.bootstrap = addrs.clone();
    let imp_dir = dir.path().join("impostor");
    fleet("t-sec4")
        .enroll_dir(&imp_dir, MemberRole::Camera, "impostor", &["side-door".into()], 3600)
        .expect("enroll");
    let impostor = raw_node(&imp_dir, ic).await;
    let imp_addrs = impostor.dial_addrs().await.expect("addrs");
    let viewer = viewer_node(&dir.path().join("viewer"), "t-sec4", [addrs, imp_addrs].concat()).await;
    // Discovery lists only the real camera's node for "lobby".
    let found = viewer.discover_cameras(Duration::from_secs(3)).await;
    let lobby: Vec<_> = found.iter().filter(|e| e.announcement.camera_id == "lobby").collect();
    assert_eq!(lobby.len(), 1, "{found:?}");
    assert_eq!(lobby[0].peer, real.peer_id());
    // Asked by id, the viewer goes to the key the certificate binds, never the impostor.
    let sub = viewer
        .subscribe_camera("lobby", None, live("lobby", None))
        .await
        .expect("watch");
    assert_eq!(sub.peer, real.peer_id());
    // Pointed at the impostor explicitly, the viewer refuses.
    match viewer
        .subscribe_camera("lobby", Some(impostor.peer_id()), live("lobby", None))
        .await
    {
        Err(ClientError::Impostor { .. }) => {}
        other => panic!("expected an impostor refusal, got {other:?}"),
    }
    for n in [&viewer, &impostor, &real] {
        n.shutdown();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_are_ciphertext_on_the_wire_and_a_tampered_frame_is_rejected() {
    init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    let cam = camera_node(&dir.path().join("cam"), "t-sec5", vec![camera("cam1", CLIP)], vec![]).await;
    let viewer = viewer_node(&dir.path().join("v"), "t-sec5", cam.dial_addrs().await.expect("addrs")).await;
    let mut sub = viewer
        .subscribe_camera("cam1", Some(cam.peer_id()), live("cam1", None))
        .await
        .expect("sub");
    let clip = camesh_node::media::source::load_clip(fixture(CLIP), &Default::default()).expect("clip");
    let sps = &clip.params.sps;
    // Read sealed frames: the first is a key update, then ciphertext.
    let mut media = Vec::new();
    while media.len() < 5 {
        let f = tokio::time::timeout(T, sub.next_sealed())
            .await
            .expect("frame")
            .expect("ok")
            .expect("open");
        if !sub.learn_key(&f).expect("key update") {
            media.push(f);
        }
    }
    let first = &media[0];
    assert!(first.header.keyframe);
    assert!(
        !first.payload.windows(sps.len()).any(|w| w == &sps[..]),
        "the SPS must not be visible in what crosses the network"
    );
    let plain = sub.open(first).expect("opens with the key");
    assert!(
        plain.windows(sps.len()).any(|w| w == &sps[..]),
        "and it is there once opened"
    );
    // One flipped bit anywhere, or a changed header field: refused.
    let mut bad = media[1].clone();
    let mut p = bad.payload.to_vec();
    let mid = p.len() / 2;
    p[mid] ^= 0x01;
    bad.payload = p.into();
    assert!(matches!(sub.open(&bad), Err(ClientError::Tampered { .. })));
    let mut moved = media[2].clone();
    moved.header.pts_90k += 3000;
    assert!(matches!(sub.open(&moved), Err(ClientError::Tampered { .. })));
    // A node without the key (a forwarder or relay without a grant) cannot open it.
    let stranger_key = auth::media_key::MediaKey::generate(first.header.key_epoch);
    assert!(stranger_key.open(&first.header, &first.payload).is_err());
    viewer.shutdown();
    cam.shutdown();
}

#[test]
fn fleet_cli_init_admit_grant_and_audit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let admin = dir.path().join("admin");
    let mesh = bin("mesh");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(&mesh)
            .arg("--data-dir")
            .arg(&admin)
            .args(args)
            .output()
            .expect("mesh runs");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (ok, out, err) = run(&["fleet", "init", "--id", "acme"]);
    assert!(ok, "{err}");
    assert!(out.contains("fleet root:"), "{out}");
    let (ok, _, err) = run(&["fleet", "init", "--id", "acme"]);
    assert!(!ok && err.contains("already exists"), "{err}");
    let node_key = camesh_node::identity::load_or_create(&dir.path().join("node")).expect("key");
    let peer = node_key.public().to_peer_id().to_string();
    let cert_path = dir.path().join("node/membership.cert");
    let (ok, _, err) = run(&[
        "fleet",
        "admit",
        &peer,
        "--role",
        "camera",
        "--name",
        "bus-7-front",
        "--cameras",
        "front",
        "-o",
        cert_path.to_str().expect("utf8"),
    ]);
    assert!(ok, "{err}");
    let (ok, grant_text, err) = run(&[
        "grant",
        &peer,
        "--cameras",
        "front",
        "--rights",
        "live,playback",
        "--until",
        "2h",
    ]);
    assert!(ok, "{err}");
    assert!(grant_text.starts_with("camesh-grant:"), "{grant_text}");
    let (ok, _, err) = run(&["grant", &peer, "--cameras", "front", "--rights", "root"]);
    assert!(!ok && err.contains("unknown right"), "{err}");
    let (ok, audit, _) = run(&["audit"]);
    assert!(ok);
    assert!(audit.contains("admitted") && audit.contains("grant-issued"), "{audit}");
    // The log is hash-chained: intact it verifies; one changed line is found.
    let (ok, out, err) = run(&["audit", "--verify"]);
    assert!(ok && out.starts_with("OK:"), "{out} {err}");
    let log = admin.join("audit.log");
    let text = std::fs::read_to_string(&log).expect("audit.log");
    std::fs::write(&log, text.replacen("bus-7-front", "bus-7-rear", 1)).expect("tampered");
    let (ok, _, err) = run(&["audit", "--verify"]);
    assert!(!ok && err.contains("the chain breaks"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_are_renewed_while_an_admin_node_is_reachable() {
    init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    let f = fleet("t-sec6");
    // An admin node: its data directory holds an admin certificate (not the root key).
    let admin_dir = dir.path().join("admin");
    f.admin_dir(&admin_dir, "admin", 3600).expect("admin certificate");
    let admin = Node::spawn(loopback_config(Role::Viewer, "t-sec6"), &admin_dir)
        .await
        .expect("admin");
    assert_eq!(
        admin.trust().own_cert_info().expect("self-admitted").role,
        MemberRole::Admin
    );
    // A camera whose certificate lives only 8 seconds.
    let cam_dir = dir.path().join("cam");
    f.enroll_dir(&cam_dir, MemberRole::Camera, "cam", &["cam1".into()], 8)
        .expect("enroll");
    let mut c = loopback_config(Role::Camera, "t-sec6");
    c.cameras = vec![camera("cam1", CLIP)];
    c.node.bootstrap = admin.dial_addrs().await.expect("addrs");
    let cam = Node::spawn(c, &cam_dir).await.expect("camera");
    let first = cam.trust().own_cert_info().expect("cert").not_after_unix_s;
    let renewed = wait_until(T, || {
        cam.trust().own_cert_info().is_some_and(|c| c.not_after_unix_s > first)
    })
    .await;
    assert!(renewed, "renewed before it expired");
    assert!(
        wait_until(T, || cam
            .trust()
            .audit
            .tail(100)
            .iter()
            .any(|e| e.event == "certificate-renewed"))
        .await
    );
    cam.shutdown();
    admin.shutdown();
}
