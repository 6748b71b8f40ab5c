//! What a forwarder may do: with only the `forward` right it gets sealed frames and
//! never a key, and what it tampers with is rejected by the viewer; a viewer without a
//! grant for the camera is refused by the forwarder, with a reason, and audited.

use camesh_node::auth::media_key::MediaKey;
use camesh_node::auth::{signed, Rights};
use camesh_node::config::Role;
use camesh_node::stream::client::{self, ClientError};
use camesh_node::stream::keys::KeySource;
use camesh_node::Node;
use camesh_proto::pb::{self, MemberRole};
use camesh_tests::*;

use super::{audited, cam_and_forwarder, member_with, T};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forward_only_node_cannot_decrypt_and_what_it_tampers_with_is_rejected() {
    init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    let (cam, cam_addrs, fwd, fwd_addrs) = cam_and_forwarder(dir.path(), "t-fwd2").await;
    let forward_grant = fwd.trust().grant_for("cam1", Rights::FORWARD).expect("forward grant");
    assert!(fwd.trust().grant_for("cam1", Rights::LIVE).is_none());

    // (a) Subscribed with its forward grant, it receives sealed frames and never a key.
    let mut control = fwd.stream_control();
    let mut req = live("cam1");
    req.grant = signed::encode(&forward_grant);
    let mut sealed = client::subscribe(&mut control, cam.peer_id(), req.clone(), &fwd.config().limits)
        .await
        .expect("the camera serves the forwarder, sealed");
    let mut frames = Vec::new();
    for _ in 0..45 {
        let f = tokio::time::timeout(T, sealed.next_sealed())
            .await
            .expect("frame")
            .expect("ok")
            .expect("frame");
        assert!(f.header.new_key.is_empty(), "a forward-only node got a key");
        frames.push(f);
    }
    assert!(sealed.key_epochs().is_empty());
    match sealed.open(&frames[0]) {
        Err(ClientError::Tampered { reason, .. }) => eprintln!("forwarder cannot open: {reason}"),
        other => panic!("a forward-only node opened a frame: {other:?}"),
    }
    // Nor does the camera give it a key when asked.
    let source = KeySource {
        control: fwd.stream_control(),
        camera_peer: cam.peer_id(),
        camera: "cam1".into(),
        profile: pb::Profile::Main,
        grant: forward_grant.clone(),
        limits: fwd.config().limits.clone(),
    };
    match source.fetch(0).await {
        Err(ClientError::Rejected { reason, .. }) => {
            assert!(reason.contains("live"), "{reason}");
            eprintln!("key refused to the forwarder: {reason}");
        }
        other => panic!(
            "the camera gave a forward-only node a key: {:?}",
            other.map(|k| k.epoch)
        ),
    }
    // A key guessed at random opens nothing either.
    assert!(MediaKey::generate(frames[0].header.key_epoch)
        .open(&frames[0].header, &frames[0].payload)
        .is_err());

    // (b) It forwards, and a viewer behind it watches; then the forwarder injects a
    // tampered copy of a real frame: the viewer rejects it.
    let handle = fwd
        .forward("cam1", cam.peer_id(), pb::Profile::Main)
        .await
        .expect("forwarding");
    let viewer = viewer_node(&dir.path().join("v"), "t-fwd2", [cam_addrs, fwd_addrs].concat()).await;
    let mut sub = viewer
        .subscribe_via("cam1", fwd.peer_id(), live("cam1"))
        .await
        .expect("subscribed via the forwarder");
    for _ in 0..5 {
        next_frame(&mut sub, T).await;
    }
    // A frame after everything the viewer has seen (so it is judged on its payload, not
    // refused as a replay), and not a keyframe (whose camera signature covers the tag).
    let mut fresh = None;
    for _ in 0..200 {
        let f = tokio::time::timeout(T, sealed.next_sealed())
            .await
            .expect("frame")
            .expect("ok")
            .expect("frame");
        if !f.header.keyframe && f.header.new_key.is_empty() {
            fresh = Some(f);
            break;
        }
    }
    let mut bad = fresh.expect("a frame that is not a keyframe");
    bad.header.sequence += 1_000_000;
    let mut payload = bad.payload.to_vec();
    let mid = payload.len() / 2;
    payload[mid] ^= 0x01;
    bad.payload = payload.into();
    handle.hub.publish_sealed(bad);
    let mut rejected = None;
    for _ in 0..200 {
        match tokio::time::timeout(T, sub.next_frame()).await.expect("frame or error") {
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(e) => {
                rejected = Some(e);
                break;
            }
        }
    }
    match rejected {
        Some(ClientError::Tampered { reason, .. }) => eprintln!("tampered frame rejected: {reason}"),
        other => panic!("tampered frame not rejected: {other:?}"),
    }
    for n in [&viewer, &fwd, &cam] {
        n.shutdown();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_without_a_grant_is_refused_by_the_forwarder_with_a_reason() {
    init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    let (cam, cam_addrs, fwd, fwd_addrs) = cam_and_forwarder(dir.path(), "t-fwd3").await;
    fwd.forward("cam1", cam.peer_id(), pb::Profile::Main)
        .await
        .expect("forwarding");
    let boot = [cam_addrs, fwd_addrs].concat();
    // A member without any grant, and one whose grant covers another camera only.
    let nogrant = member_with(&dir.path().join("nogrant"), "t-fwd3", None, boot.clone()).await;
    let other_dir = dir.path().join("other");
    fleet("t-fwd3")
        .enroll_dir(&other_dir, MemberRole::Viewer, "other", &[], 3600)
        .expect("enroll");
    fleet("t-fwd3")
        .grant_dir(&other_dir, &["cam2".into()], Rights::LIVE, 3600)
        .expect("grant");
    let mut c = loopback_config(Role::Viewer, "t-fwd3");
    c.node.bootstrap = boot;
    let other = Node::spawn(c, &other_dir).await.expect("node");
    let cam2_grant = other.trust().grant_for("cam2", Rights::LIVE).expect("cam2 grant");
    let mut with_cam2_grant = live("cam1");
    with_cam2_grant.grant = signed::encode(&cam2_grant);
    for (who, node, req, expect) in [
        ("no grant", &nogrant, live("cam1"), "no grant"),
        ("grant for another camera", &other, with_cam2_grant, "camera cam1"),
    ] {
        match node.subscribe_via("cam1", fwd.peer_id(), req).await {
            Err(ClientError::Rejected { peer, code, reason }) => {
                eprintln!("{who}: refused by {peer}: {reason}");
                assert_eq!(peer, fwd.peer_id(), "{who}: the forwarder refuses");
                assert_eq!(code, pb::RejectCode::RejectNotAuthorized, "{who}");
                assert!(reason.contains(expect), "{who}: {reason}");
            }
            Err(e) => panic!("{who}: wrong error {e}"),
            Ok(_) => panic!("{who}: the forwarder served a viewer without a grant"),
        }
    }
    let refusals = audited(&fwd, "refused-stream");
    assert!(refusals >= 2, "refusals are audited on the forwarder");
    assert_eq!(fwd.streams_served(), 0);
    for n in [&nogrant, &other, &fwd, &cam] {
        n.shutdown();
    }
}
