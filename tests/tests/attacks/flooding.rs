//! Members flooding a camera node (item 12): attestation subscriptions past the
//! recorder budget are refused with the reason while a legitimate recorder's carry on,
//! and provider records for a camera that is not the member's own are not stored (a
//! viewer still finds the real camera), while a record the member may put is.

use std::time::Duration;

use camesh_node::auth::cert::CertRequest;
use camesh_node::auth::{signed, Rights};
use camesh_node::config::Role;
use camesh_node::discovery::{camera_key, cameras_key};
use camesh_node::stream::io::{write_message, FramedRead};
use camesh_node::{Node, NodeHandle, PeerId};
use camesh_proto::{framing::decode_message, pb, LengthCodec};
use camesh_tests::*;
use libp2p::{Stream, StreamProtocol};

use super::raw::{RawPeer, Seen};

const CLIP: &str = "cam-640x360-30fps-gop2s.h264";
const T: Duration = Duration::from_secs(20);

/// A member holding a `record` grant for every camera.
async fn recorder(dir: &std::path::Path, fleet: &str) -> NodeHandle {
    let c = loopback_config(Role::Viewer, fleet);
    enroll(&c, dir);
    camesh_tests::fleet(fleet)
        .grant_dir(dir, &["*".to_owned()], Rights::RECORD, 3600)
        .expect("grant");
    Node::spawn(c, dir).await.expect("node starts")
}

/// Opens an attestation subscription to `camera` on `peer` and reads its first item.
async fn attest(node: &NodeHandle, peer: PeerId, camera: &str) -> (FramedRead<Stream>, pb::attest_item::Item) {
    let grant = node.trust().grant_for(camera, Rights::RECORD).expect("record grant");
    let mut control = node.stream_control();
    let mut s = tokio::time::timeout(T, control.open_stream(peer, StreamProtocol::new("/camesh/attest/1")))
        .await
        .expect("in time")
        .expect("attest stream");
    let req = pb::AttestRequest {
        camera_id: camera.into(),
        grant: signed::encode(&grant),
    };
    write_message(&mut s, &LengthCodec::new(64 << 10), &req)
        .await
        .expect("request");
    let mut r = FramedRead::new(s, LengthCodec::new(64 << 10));
    let item = next_item(&mut r).await.expect("a first item");
    (r, item)
}

async fn next_item(r: &mut FramedRead<Stream>) -> Option<pb::attest_item::Item> {
    let body = tokio::time::timeout(T, r.next()).await.ok()?.ok()??;
    decode_message::<pb::AttestItem>("item", body).ok()?.item
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attestation_subscriptions_past_the_budget_are_refused_with_the_reason() {
    init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    let fleet = "t-flood1";
    let cam = camera_node(
        &dir.path().join("cam"),
        fleet,
        vec![camera("cam1", CLIP), camera("cam2", CLIP)],
        vec![],
    )
    .await;
    let addr = cam.dial_addrs().await.expect("addrs").remove(0);
    let cam_id = cam.peer_id();
    // Positive control: a recorder subscribes to every camera of the node.
    let nvr = recorder(&dir.path().join("nvr"), fleet).await;
    nvr.connect(addr.clone()).await.expect("connect");
    assert!(wait_until(T, || cam.trust().member(&nvr.peer_id()).is_some()).await);
    let mut legit = Vec::new();
    for c in ["cam1", "cam2"] {
        let (r, first) = attest(&nvr, cam_id, c).await;
        assert!(matches!(first, pb::attest_item::Item::Cert(_)), "{c}: {first:?}");
        legit.push(r);
    }
    // The attacker: a member with the same right, opening ten on one camera.
    let rogue = recorder(&dir.path().join("rogue"), fleet).await;
    rogue.connect(addr).await.expect("connect");
    assert!(wait_until(T, || cam.trust().member(&rogue.peer_id()).is_some()).await);
    let (mut granted, mut refused) = (Vec::new(), Vec::new());
    for _ in 0..10 {
        match attest(&rogue, cam_id, "cam1").await {
            (r, pb::attest_item::Item::Cert(_)) => granted.push(r),
            (_, pb::attest_item::Item::Refused(why)) => refused.push(why),
            (_, other) => panic!("unexpected first item {other:?}"),
        }
    }
    eprintln!(
        "attestation flood: {} granted, {} refused: {:?}",
        granted.len(),
        refused.len(),
        refused.first()
    );
    // Two cameras: four per recorder (twice the cameras), sixteen in all.
    assert_eq!((granted.len(), refused.len()), (4, 6));
    assert!(
        refused
            .iter()
            .all(|w| w == "too many attestation subscriptions (at most 4 per recorder, 16 in all on this node)"),
        "{refused:?}"
    );
    let me = rogue.peer_id().to_string();
    assert!(
        wait_until(T, || cam.trust().audit.tail(1000).iter().any(|e| e.peer == me
            && e.event == "refused-attest"
            && e.detail.starts_with("too many attestation subscriptions")))
        .await,
        "no refused-attest entry"
    );
    // The legitimate recorder's subscriptions carry on: signed GOP digests keep coming.
    for (r, c) in legit.iter_mut().zip(["cam1", "cam2"]) {
        let item = next_item(r).await;
        assert!(matches!(item, Some(pb::attest_item::Item::Gop(_))), "{c}: {item:?}");
    }
    drop(granted);
    rogue.shutdown();
    nvr.shutdown();
    cam.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_records_for_a_camera_not_its_own_are_not_stored() {
    init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    let fleet_name = "t-flood2";
    let cam = camera_node(&dir.path().join("cam"), fleet_name, vec![camera("cam1", CLIP)], vec![]).await;
    let addrs = cam.dial_addrs().await.expect("addrs");
    let cam_id = cam.peer_id();
    // The rogue: a member (viewer certificate, no cameras) with its own Kademlia.
    let rogue = RawPeer::spawn(fleet_name).await;
    let f = camesh_tests::fleet(fleet_name);
    let cert = f.admit(&CertRequest {
        peer: rogue.peer_id,
        role: pb::MemberRole::Viewer,
        name: "rogue".into(),
        valid_s: 3600,
        cameras: vec![],
    });
    rogue
        .dial(cam_id, camesh_node::addr::split_p2p(addrs[0].clone()).1)
        .await;
    rogue.prove_membership(fleet_name, &f.root_text(), &cert, cam_id).await;
    assert!(wait_until(T, || cam.trust().member(&rogue.peer_id).is_some()).await);
    // It claims to provide the camera, and a camera that does not exist.
    for key in [camera_key("cam1"), camera_key("cam9")] {
        rogue
            .with(move |s| {
                let _ = s.behaviour_mut().kad.start_providing(key);
            })
            .await;
    }
    let me = rogue.peer_id.to_string();
    let refusals = || {
        cam.trust()
            .audit
            .tail(1000)
            .into_iter()
            .filter(|e| {
                e.peer == me
                    && e.event == "refused-provider"
                    && e.detail == "the provider's certificate does not list the camera of this key"
            })
            .count()
    };
    assert!(wait_until(T, || refusals() >= 2).await, "refusals: {}", refusals());
    // Positive control: the cameras key, which any member may provide, is stored.
    rogue
        .with(|s| {
            let _ = s.behaviour_mut().kad.start_providing(cameras_key());
        })
        .await;
    assert!(rogue.wait_for(T, |s| matches!(s, Seen::Provided(_))).await.is_some());
    let viewer = viewer_node(&dir.path().join("viewer"), fleet_name, addrs).await;
    assert!(wait_until(T, || viewer.trust().member(&cam_id).is_some()).await);
    let mut all = Vec::new();
    for _ in 0..20 {
        all = viewer.net().find_providers(cameras_key()).await.expect("query");
        if all.contains(&rogue.peer_id) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(all.contains(&rogue.peer_id), "the member's own record: {all:?}");
    // The viewer finds the real camera, and only it, by the camera's key.
    let found = viewer.net().find_providers(camera_key("cam1")).await.expect("query");
    assert_eq!(found, vec![cam_id], "providers of cam1");
    let none = viewer.net().find_providers(camera_key("cam9")).await.expect("query");
    assert!(none.is_empty(), "providers of a made-up camera: {none:?}");
    viewer.shutdown();
    cam.shutdown();
}
