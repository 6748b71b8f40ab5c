//! Item 6, stale video ("empty hallway"): a fleet member forwarding a camera keeps the
//! ciphertext it passed on and serves it again later, or loops a GOP, or strips the
//! camera's signature. The frames still open (same key epoch), so only camera-signed
//! freshness tells. The attacker is a real node holding the `forward` right whose
//! forwarded hub the test feeds; the viewer reaches it the way every viewer does
//! (`Reach::subscribe_via`: frames from the forwarder, keys from the camera).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use camesh_node::auth::{signed, Rights};
use camesh_node::config::Role;
use camesh_node::stream::client::{self, ClientError, Subscription};
use camesh_node::stream::fresh::Stale;
use camesh_node::stream::hub::Hub;
use camesh_node::{Node, NodeHandle};
use camesh_proto::pb::{self, MemberRole};
use camesh_proto::MediaFrame;
use camesh_tests::*;

const CLIP: &str = "cam-640x360-30fps-gop2s.h264";
const T: Duration = Duration::from_secs(20);

/// What the rogue forwarder does with the frames it receives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Passes each frame on as it arrives (the positive control).
    Honest,
    /// Passes nothing on live: the test publishes what it kept.
    Hold,
}

/// The forwarder's tap: frames kept as they arrived (sealed), and the mode.
struct Tap {
    mode: Mutex<Mode>,
    kept: Mutex<Vec<MediaFrame>>,
    /// Keyframes passed on live.
    keyframes: AtomicU64,
}

/// A viewer that allows live video 4 s old plus 1 s of clock skew.
async fn strict_viewer(dir: &std::path::Path, fleet_name: &str, boot: Vec<camesh_node::Multiaddr>) -> NodeHandle {
    let f = fleet(fleet_name);
    f.grant_dir(dir, &["cam1".into()], Rights::LIVE, 3600).expect("grant");
    let mut c = loopback_config(Role::Viewer, fleet_name);
    c.limits.live_max_age_s = 4;
    c.limits.clock_skew_s = 1;
    c.node.bootstrap = boot;
    spawn_node(c, dir).await
}

/// Opens cam1 through `fwd` as a viewer does.
async fn via(viewer: &NodeHandle, fwd: &NodeHandle) -> Result<Subscription, ClientError> {
    viewer.reach().subscribe_via("cam1", fwd.peer_id(), live("cam1")).await
}

/// The first error of `sub` within `frames` frames (None: all opened).
async fn first_error(sub: &mut Subscription, frames: usize) -> Option<ClientError> {
    for _ in 0..frames {
        match tokio::time::timeout(T, sub.next_frame())
            .await
            .expect("a frame in time")
        {
            Ok(Some(_)) => {}
            Ok(None) => return Some(ClientError::Closed { peer: sub.peer }),
            Err(e) => return Some(e),
        }
    }
    None
}

fn publish_all(hub: &Hub, frames: &[MediaFrame], edit: impl Fn(&mut MediaFrame)) {
    for f in frames {
        let mut f = f.clone();
        edit(&mut f);
        hub.publish_sealed(f);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarder_replaying_looping_or_unsigning_video_is_refused_as_live() {
    init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    let name = "t-atk-stale";
    let f = fleet(name);
    let cam = camera_node(&dir.path().join("cam"), name, vec![camera("cam1", CLIP)], vec![]).await;
    let cam_addrs = cam.dial_addrs().await.expect("addrs");

    // The rogue forwarder: a member holding `forward`, taking cam1 from the camera.
    let fwd_dir = dir.path().join("fwd");
    f.enroll_dir(&fwd_dir, MemberRole::Nvr, "rogue-forwarder", &[], 3600)
        .expect("enroll");
    f.grant_dir(&fwd_dir, &["cam1".into()], Rights::FORWARD, 3600)
        .expect("grant");
    let mut fc = loopback_config(Role::Nvr, name);
    fc.node.bootstrap = cam_addrs.clone();
    let fwd = Node::spawn(fc, &fwd_dir).await.expect("forwarder starts");
    let fwd_addrs = fwd.dial_addrs().await.expect("addrs");
    let mut req = live("cam1");
    req.grant = signed::encode(&fwd.trust().grant_for("cam1", Rights::FORWARD).expect("grant"));
    let mut upstream = client::subscribe(&mut fwd.stream_control(), cam.peer_id(), req, &fwd.config().limits)
        .await
        .expect("the forwarder takes the camera's stream");
    let hub = Arc::new(Hub::forwarded("cam1", "cam1", vec![], cam.peer_id(), 1 << 22));
    hub.set_params(camesh_node::stream::server::codec_params(
        upstream.accept.codec.as_ref().expect("codec"),
    ));
    fwd.hubs().insert_forwarded(pb::Profile::Main, hub.clone());
    let tap = Arc::new(Tap {
        mode: Mutex::new(Mode::Honest),
        kept: Mutex::new(Vec::new()),
        keyframes: AtomicU64::new(0),
    });
    let (h, t) = (hub.clone(), tap.clone());
    let pump = tokio::spawn(async move {
        while let Ok(Some(f)) = upstream.next_sealed().await {
            if !f.header.new_key.is_empty() {
                continue;
            }
            let mut kept = t.kept.lock().expect("lock");
            if kept.len() < 90 {
                kept.push(f.clone());
            }
            drop(kept);
            if *t.mode.lock().expect("lock") == Mode::Honest {
                if f.header.keyframe {
                    t.keyframes.fetch_add(1, Ordering::Relaxed);
                }
                h.publish_sealed(f);
            }
        }
    });

    let viewer = strict_viewer(&dir.path().join("viewer"), name, [cam_addrs, fwd_addrs].concat()).await;

    // Positive control: the same forwarder, passing frames on as they come, is watched.
    let mut honest = via(&viewer, &fwd).await.expect("subscribed through the forwarder");
    assert!(honest.key_source().is_some(), "keys come from the camera");
    if let Some(e) = first_error(&mut honest, 60).await {
        panic!("an honest forwarder's live video was refused: {e}");
    }
    assert!(wait_until(T, || tap.kept.lock().expect("lock").len() >= 90).await);
    let kept: Vec<MediaFrame> = {
        let k = tap.kept.lock().expect("lock");
        let first_key = k.iter().position(|f| f.header.keyframe).expect("a keyframe kept");
        k[first_key..].to_vec()
    };

    // (a) A loop: the GOP the viewer just saw, served again at once (still young).
    *tap.mode.lock().expect("lock") = Mode::Hold;
    let newest_key = kept.iter().rposition(|f| f.header.keyframe).expect("keyframe");
    publish_all(&hub, &kept[newest_key..], |_| {});
    match first_error(&mut honest, 200).await {
        Some(ClientError::Stale {
            reason: Stale::Rewound { .. } | Stale::TooOld { .. },
            ..
        }) => {}
        other => panic!("a looped GOP played as live: {other:?}"),
    }

    // (b) The old video to a new viewer, once it is older than live allows (5 s).
    let newest = kept.last().expect("kept").header.capture_unix_us;
    assert!(wait_until(T, || camesh_node::clock::now_unix_us() - newest > 6_000_000).await);
    publish_all(&hub, &kept, |_| {});
    let mut late = via(&viewer, &fwd).await.expect("subscribed");
    match first_error(&mut late, 200).await {
        Some(ClientError::Stale {
            reason: Stale::TooOld { age_ms, max_ms, .. },
            ..
        }) => {
            assert_eq!(max_ms, 5_000);
            eprintln!("replayed video refused: {age_ms} ms old, live allows {max_ms} ms");
        }
        other => panic!("replayed video played as live: {other:?}"),
    }

    // (c) Fresh frames with the camera's signature stripped or replaced: refused too.
    let before = tap.keyframes.load(Ordering::Relaxed);
    *tap.mode.lock().expect("lock") = Mode::Honest;
    // A new subscriber starts on the hub's newest keyframe: wait for a live one.
    assert!(wait_until(T, || tap.keyframes.load(Ordering::Relaxed) > before).await);
    let mut fresh = via(&viewer, &fwd).await.expect("subscribed");
    assert!(first_error(&mut fresh, 10).await.is_none(), "honest again");
    *tap.mode.lock().expect("lock") = Mode::Hold;
    // A keyframe made now from the newest kept GOP, with a fresh capture time, cannot
    // carry the camera's signature: the forwarder has neither the key nor the signer.
    let mut forged = kept[newest_key].clone();
    forged.header.capture_unix_us = camesh_node::clock::now_unix_us();
    forged.header.sequence += 1_000_000;
    let mut unsigned = forged.clone();
    unsigned.header.camera_signature = Default::default();
    // Each is published before the viewer subscribes: a new subscriber starts on it.
    hub.publish_sealed(unsigned);
    let mut late2 = via(&viewer, &fwd).await.expect("subscribed");
    match first_error(&mut late2, 200).await {
        Some(ClientError::Stale {
            reason: Stale::Unsigned { .. },
            ..
        }) => {}
        other => panic!("an unsigned keyframe played as live: {other:?}"),
    }
    hub.publish_sealed(forged);
    let mut late3 = via(&viewer, &fwd).await.expect("subscribed");
    match first_error(&mut late3, 200).await {
        Some(ClientError::Stale {
            reason: Stale::BadSignature { .. },
            ..
        }) => {}
        other => panic!("a re-dated keyframe played as live: {other:?}"),
    }

    // The viewer's direct stream from the camera carried on throughout.
    let mut direct = viewer
        .subscribe_camera("cam1", Some(cam.peer_id()), live("cam1"))
        .await
        .expect("direct");
    for _ in 0..30 {
        next_frame(&mut direct, T).await;
    }
    pump.abort();
    for n in [&viewer, &fwd, &cam] {
        n.shutdown();
    }
}
