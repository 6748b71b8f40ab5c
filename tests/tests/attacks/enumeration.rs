//! Enumeration by non-members (iLnkP2P): a stranger that connects to a camera node, or
//! that a member dials, learns nothing but that a libp2p peer is there. It knows the
//! fleet id (the strongest stranger) and speaks the fleet's own Kademlia, gossipsub and
//! identify protocols: its GET_PROVIDERS and FIND_NODE go unanswered, it is sent no
//! subscription, announcement or identify answer, and a member that dials it shows it
//! no certificate. A member asking the same camera the same way finds it.

use std::time::Duration;

use camesh_node::discovery::camera_key;
use camesh_node::stream::io::{write_message, FramedRead};
use camesh_proto::{framing::decode_message, pb, LengthCodec};
use camesh_tests::*;
use futures::StreamExt;
use libp2p::StreamProtocol;

use super::raw::{RawPeer, Seen};

const CLIP: &str = "cam-640x360-30fps-gop2s.h264";
const T: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_cannot_query_the_dht_subscribe_to_gossip_or_identify_a_camera() {
    init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    let fleet = "t-enum1";
    let cam = camera_node(&dir.path().join("cam"), fleet, vec![camera("cam1", CLIP)], vec![]).await;
    let cam_addr = cam.dial_addrs().await.expect("addrs").remove(0);
    let (cam_addr, cam_id) = (camesh_node::addr::split_p2p(cam_addr).1, cam.peer_id());

    // Positive control first: a member asks the camera the same way and finds it.
    let viewer = viewer_node(
        &dir.path().join("viewer"),
        fleet,
        cam.dial_addrs().await.expect("addrs"),
    )
    .await;
    assert!(
        wait_until(T, || viewer.trust().member(&cam_id).is_some()).await,
        "the member is admitted"
    );
    let mut found = Vec::new();
    for _ in 0..20 {
        found = viewer.net().find_providers(camera_key("cam1")).await.expect("query");
        if found.contains(&cam_id) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        found.contains(&cam_id),
        "a member finds the camera by its key: {found:?}"
    );
    assert!(
        !viewer.discover_cameras(Duration::from_secs(5)).await.is_empty(),
        "a member hears the camera's announcements"
    );

    // The stranger: its own fresh key, the fleet's protocols, connected to the camera.
    let stranger = RawPeer::spawn(fleet).await;
    stranger.dial(cam_id, cam_addr.clone()).await;
    let key = camera_key("cam1");
    stranger
        .with(move |s| {
            s.behaviour_mut().kad.get_providers(key);
        })
        .await;
    stranger
        .with(move |s| {
            s.behaviour_mut().kad.get_closest_peers(cam_id);
        })
        .await;
    // Both queries end (they time out unanswered), finding nobody.
    let providers = stranger
        .wait_for(T, |s| matches!(s, Seen::Providers(p) if p.is_empty()))
        .await;
    let closest = stranger.wait_for(T, |s| matches!(s, Seen::Closest(_))).await;
    assert!(
        providers.is_some(),
        "the provider query never ended: {:?}",
        stranger.seen()
    );
    assert_eq!(closest, Some(Seen::Closest(vec![])), "FIND_NODE answered");
    // Announcements go out every second (loopback config): give it several.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let seen = stranger.seen();
    let leaked: Vec<&Seen> = seen
        .iter()
        .filter(|s| match s {
            Seen::Providers(p) | Seen::Closest(p) => !p.is_empty(),
            Seen::GossipMessage(_) | Seen::GossipSubscribed(_) | Seen::Identified(_) => true,
            Seen::Connected(_) | Seen::Provided(_) => false,
        })
        .collect();
    assert!(leaked.is_empty(), "the stranger learnt {leaked:?}");
    // And the camera dropped it when its grace period ran out, audited by its peer id.
    let me = stranger.peer_id.to_string();
    assert!(
        wait_until(T, || cam.trust().audit.tail(1000).iter().any(|e| e.peer == me
            && e.event == "refused-connection"
            && e.detail.contains("no valid certificate")))
        .await,
        "no refused-connection entry for the stranger"
    );
    // The member still finds the camera.
    let again = viewer.net().find_providers(camera_key("cam1")).await.expect("query");
    assert!(again.contains(&cam_id), "after the stranger: {again:?}");
    viewer.shutdown();
    cam.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_dials_a_stranger_shows_it_no_certificate() {
    init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    let fleet = "t-enum2";
    let cam = camera_node(&dir.path().join("cam"), fleet, vec![camera("cam1", CLIP)], vec![]).await;
    // The stranger listens (as a peer found by mDNS on the LAN would) and answers the
    // membership exchange the member opens with a made-up proof.
    let stranger = RawPeer::spawn(fleet).await;
    let mut incoming = stranger
        .control
        .clone()
        .accept(StreamProtocol::new("/camesh/member/1"))
        .expect("accept");
    let got = tokio::spawn(async move {
        let mut heard = Vec::new();
        let Ok(Some((_, mut s))) = tokio::time::timeout(T, incoming.next()).await else {
            return heard;
        };
        loop {
            let body = match tokio::time::timeout(
                Duration::from_secs(5),
                FramedRead::new(&mut s, LengthCodec::new(64 << 10)).next(),
            )
            .await
            {
                Ok(Ok(Some(b))) => b,
                _ => return heard,
            };
            let Ok(h) = decode_message::<pb::MemberHello>("hello", body) else {
                return heard;
            };
            heard.push(h);
            // Pretend: 32 bytes that are no proof.
            let fake = pb::MemberHello {
                proof: vec![7u8; 32].into(),
                ..Default::default()
            };
            if write_message(&mut s, &LengthCodec::new(64 << 10), &fake).await.is_err() {
                return heard;
            }
        }
    });
    let addr = stranger
        .listen
        .clone()
        .with(libp2p::multiaddr::Protocol::P2p(stranger.peer_id));
    cam.connect(addr).await.expect("the camera dials the stranger");
    let heard = got.await.expect("stranger task");
    assert!(!heard.is_empty(), "the member opened no exchange");
    assert!(
        heard.iter().all(|h| h.cert.is_none()),
        "the member showed the stranger its certificate"
    );
    // What it did send is a proof bound to this connection (the camera's and the
    // stranger's ids under the fleet's root), useless anywhere else.
    assert_eq!(heard.len(), 1, "after a bad proof the member sent nothing more");
    assert_eq!(heard[0].proof.len(), 32);
    // It was dropped, and no identify answer reached the stranger.
    assert!(
        wait_until(T, || !stranger.seen().iter().any(|s| matches!(s, Seen::Identified(_)))).await,
        "identify answered a stranger"
    );
    // Positive control: the same camera dialing a member is admitted both ways.
    let viewer = viewer_node(&dir.path().join("viewer"), fleet, vec![]).await;
    let vaddr = viewer.dial_addrs().await.expect("addrs").remove(0);
    cam.connect(vaddr).await.expect("dial the member");
    assert!(
        wait_until(T, || cam.trust().member(&viewer.peer_id()).is_some()
            && viewer.trust().member(&cam.peer_id()).is_some())
        .await,
        "a member dialed by a member is admitted"
    );
    viewer.shutdown();
    cam.shutdown();
}
