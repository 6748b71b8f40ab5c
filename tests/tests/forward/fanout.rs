//! What forwarding saves and keeps: ten viewers behind one forwarder cost the camera one
//! stream, and two forwarders in a row still pass a key change on to the viewers that
//! keep their right while the revoked one is cut off.

use std::sync::atomic::Ordering;

use camesh_proto::pb;
use camesh_tests::*;

use super::{audited, cam_and_forwarder, camera_bytes, member_with, T};
use camesh_node::auth::Rights;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_viewers_behind_one_forwarder_cost_the_camera_one_stream() {
    init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    let (cam, cam_addrs, fwd, fwd_addrs) = cam_and_forwarder(dir.path(), "t-fwd1").await;
    let handle = fwd
        .forward("cam1", cam.peer_id(), pb::Profile::Main)
        .await
        .expect("forwarding starts");
    assert_eq!(handle.origin, cam.peer_id());

    // One viewer first: the camera's upload per byte its source produces.
    let boot = [cam_addrs.clone(), fwd_addrs.clone()].concat();
    let mut viewers = Vec::new();
    let mut subs = Vec::new();
    for i in 0..10 {
        let v = viewer_node(&dir.path().join(format!("v{i}")), "t-fwd1", boot.clone()).await;
        let sub = v
            .subscribe_via("cam1", fwd.peer_id(), live("cam1"))
            .await
            .expect("subscribed through the forwarder");
        assert!(
            sub.key_source().is_some(),
            "keys come from the camera, not the forwarder"
        );
        viewers.push(v);
        subs.push(sub);
        if i == 0 {
            let (s0, p0) = camera_bytes(&cam, "cam1");
            for _ in 0..30 {
                next_frame(&mut subs[0], T).await;
            }
            let (s1, p1) = camera_bytes(&cam, "cam1");
            eprintln!(
                "1 viewer behind the forwarder: camera sent {} bytes for {} produced",
                s1 - s0,
                p1 - p0
            );
        }
    }
    let (s0, p0) = camera_bytes(&cam, "cam1");
    // Every viewer decrypts video (keys from the camera, frames from the forwarder).
    for _ in 0..30 {
        for sub in subs.iter_mut() {
            let f = next_frame(sub, T).await;
            assert!(!f.payload.is_empty());
        }
    }
    let (s1, p1) = camera_bytes(&cam, "cam1");
    let (sent, produced) = (s1 - s0, p1 - p0);
    let fwd_sent: u64 = handle
        .hub
        .subscribers()
        .iter()
        .map(|s| s.sent_bytes.load(Ordering::Relaxed))
        .sum();
    eprintln!(
        "10 viewers behind the forwarder: camera sent {sent} bytes for {produced} produced; the forwarder sent {fwd_sent} in all"
    );
    // The camera serves one stream (the forwarder's), however many viewers watch.
    assert_eq!(cam.streams_served(), 1, "camera serves only the forwarder");
    assert_eq!(cam.hubs().get("cam1").expect("hub").subscriber_count(), 1);
    assert_eq!(fwd.streams_served(), 10, "the forwarder serves every viewer");
    // One stream's worth: ciphertext is the plaintext plus a 16-byte tag per frame.
    assert!(
        produced > 0 && sent <= produced + produced / 2,
        "camera sent {sent} for {produced}"
    );
    let opened = audited(&cam, "stream-opened");
    assert_eq!(opened, 1, "the camera opened one stream in all");
    let keys = audited(&cam, "key-issued");
    assert!(keys >= 10, "each viewer got its key from the camera ({keys})");
    for n in viewers.iter().chain([&fwd, &cam]) {
        n.shutdown();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hops_and_a_key_change_through_the_forwarder() {
    init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    let (cam, cam_addrs, f1, f1_addrs) = cam_and_forwarder(dir.path(), "t-fwd6").await;
    let f2 = member_with(
        &dir.path().join("f2"),
        "t-fwd6",
        Some(Rights::FORWARD),
        f1_addrs.clone(),
    )
    .await;
    let f2_addrs = f2.dial_addrs().await.expect("addrs");
    f1.forward("cam1", cam.peer_id(), pb::Profile::Main)
        .await
        .expect("hop 1");
    let h2 = f2
        .forward("cam1", f1.peer_id(), pb::Profile::Main)
        .await
        .expect("hop 2");
    assert_eq!(h2.origin, cam.peer_id(), "the second hop knows the camera's node");
    let boot = [cam_addrs, f2_addrs].concat();
    let viewer = viewer_node(&dir.path().join("v"), "t-fwd6", boot.clone()).await;
    let revoked = viewer_node(&dir.path().join("b"), "t-fwd6", boot).await;
    let mut sub = viewer
        .subscribe_via("cam1", f2.peer_id(), live("cam1"))
        .await
        .expect("two hops");
    let mut revoked_sub = revoked
        .subscribe_via("cam1", f2.peer_id(), live("cam1"))
        .await
        .expect("two hops, second viewer");
    let epoch_before = cam.hubs().get("cam1").expect("hub").key_epoch();
    for _ in 0..10 {
        next_frame(&mut sub, T).await;
    }
    assert_eq!(cam.streams_served(), 1);
    next_frame(&mut revoked_sub, T).await;
    // Revoking the second viewer changes the camera's key; the first viewer, behind two
    // forwarders, gets the new epoch's key from the camera and keeps watching.
    let r = fleet("t-fwd6").revoke(&[revoked.peer_id()], &[], "test");
    cam.push_revocation(r).await.expect("pushed");
    let mut saw_new_epoch = false;
    for _ in 0..300 {
        let f = next_frame(&mut sub, T).await;
        if f.header.key_epoch > epoch_before {
            saw_new_epoch = true;
            break;
        }
    }
    assert!(saw_new_epoch, "frames of the new epoch open behind two forwarders");
    assert!(sub.key_epochs().iter().any(|e| *e > epoch_before));
    // The revoked viewer never opens a frame of the new epoch: the camera refuses it the
    // key, whatever the forwarders still pass on, and its stream ends.
    let mut ended = None;
    for _ in 0..600 {
        match tokio::time::timeout(T, revoked_sub.next_frame())
            .await
            .expect("frame or end")
        {
            Ok(Some(f)) => assert!(
                f.header.key_epoch <= epoch_before,
                "a revoked viewer opened epoch {}",
                f.header.key_epoch
            ),
            Ok(None) => {
                ended = Some("closed".to_owned());
                break;
            }
            Err(e) => {
                ended = Some(e.to_string());
                break;
            }
        }
    }
    eprintln!(
        "revoked viewer behind two forwarders: {}",
        ended.as_deref().unwrap_or("still open")
    );
    assert!(ended.is_some(), "the revoked viewer's stream ended");
    assert!(revoked_sub.key_epochs().iter().all(|e| *e <= epoch_before));
    for n in [&viewer, &revoked, &f2, &f1, &cam] {
        n.shutdown();
    }
}
