//! WebRTC-direct beside QUIC (#15): real nodes on 127.0.0.1.
//!
//! A node keeps its WebRTC certificate, so the `/certhash` of its address survives a
//! restart (browsers are given that address once); a node dialing over WebRTC-direct
//! proves membership and watches a camera exactly as over QUIC; a stranger over the same
//! transport is refused as over QUIC. The connect times of both transports are printed
//! (not asserted: tests check behaviour, never wall time).

use std::time::{Duration, Instant};

use camesh_node::auth::Rights;
use camesh_node::config::Role;
use camesh_node::identity::WEBRTC_CERT_FILE;
use camesh_node::stream::client::{self, ClientError};
use camesh_node::{Multiaddr, Node, NodeHandle};
use camesh_proto::pb;
use camesh_tests::*;
use libp2p::multiaddr::Protocol;

const CLIP: &str = "cam-640x360-30fps-gop2s.h264";
const T: Duration = Duration::from_secs(20);

fn is_webrtc(a: &Multiaddr) -> bool {
    a.iter().any(|p| p == Protocol::WebRTCDirect)
}

fn certhash(a: &Multiaddr) -> Option<String> {
    a.iter().find_map(|p| match p {
        Protocol::Certhash(h) => Some(format!("{h:?}")),
        _ => None,
    })
}

/// The node's WebRTC-direct address as `camesh-node run` prints it (certhash and /p2p/).
async fn webrtc_addr(node: &NodeHandle) -> Multiaddr {
    let addrs = node.dial_addrs().await.expect("addrs");
    addrs
        .iter()
        .find(|a| is_webrtc(a))
        .unwrap_or_else(|| panic!("no webrtc-direct address in {addrs:?}"))
        .clone()
}

fn quic_addr(addrs: &[Multiaddr]) -> Multiaddr {
    addrs
        .iter()
        .find(|a| a.iter().any(|p| p == Protocol::QuicV1))
        .expect("a QUIC address")
        .clone()
}

fn config(role: Role, fleet: &str, webrtc: bool) -> camesh_node::Config {
    let mut c = loopback_config(role, fleet);
    c.node.webrtc = Some(webrtc);
    c
}

/// Connects, then waits until both sides hold each other's certificate (membership
/// proved); returns the time to the connection and to membership.
async fn join(viewer: &NodeHandle, cam: &NodeHandle, addr: Multiaddr) -> (Duration, Duration) {
    let t0 = Instant::now();
    let peer = viewer.connect(addr.clone()).await.expect("connects");
    let connected = t0.elapsed();
    assert_eq!(peer, cam.peer_id());
    let proved = wait_until(T, || {
        viewer.trust().member(&cam.peer_id()).is_some() && cam.trust().member(&viewer.peer_id()).is_some()
    })
    .await;
    assert!(proved, "membership over {addr} not proved within {T:?}");
    (connected, t0.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_certhash_survives_a_restart() {
    init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().join("cam");
    let mut c = config(Role::Camera, "t-webrtc1", true);
    c.cameras = vec![camera("cam1", CLIP)];
    let cam = spawn_node(c.clone(), &d).await;
    let first = webrtc_addr(&cam).await;
    eprintln!("listening: {first}");
    assert!(certhash(&first).is_some(), "no certhash in {first}");
    assert!(
        first.iter().last() == Some(Protocol::P2p(cam.peer_id())),
        "{first} ends in /p2p/"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(d.join(WEBRTC_CERT_FILE))
            .expect("certificate file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "the certificate's private key is the node's alone");
    }
    cam.shutdown();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let again = Node::spawn(c, &d).await.expect("restarts");
    let second = webrtc_addr(&again).await;
    eprintln!("after restart: {second}");
    assert_eq!(
        certhash(&first),
        certhash(&second),
        "the certhash changed across a restart"
    );
    assert_eq!(again.peer_id(), cam.peer_id());
    again.shutdown();

    // Another data directory, another certificate.
    let other = spawn_node(config(Role::Nvr, "t-webrtc1", true), &dir.path().join("nvr")).await;
    assert_ne!(certhash(&webrtc_addr(&other).await), certhash(&first));
    other.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_watches_over_webrtc_direct_and_a_stranger_is_refused() {
    init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    let fleet_name = "t-webrtc2";
    let mut c = config(Role::Camera, fleet_name, true);
    c.cameras = vec![camera("cam1", CLIP)];
    let cam = spawn_node(c, &dir.path().join("cam")).await;
    let addrs = cam.dial_addrs().await.expect("addrs");
    let webrtc = webrtc_addr(&cam).await;

    // A member (a viewer with WebRTC-direct on: the transport dials only from a node
    // that listens on it) given only the WebRTC-direct address.
    let viewer = spawn_node(config(Role::Viewer, fleet_name, true), &dir.path().join("viewer")).await;
    let (w_conn, w_member) = join(&viewer, &cam, webrtc.clone()).await;
    let peers = viewer.peers().await.expect("peers");
    let to_cam = peers.iter().find(|p| p.peer == cam.peer_id()).expect("camera known");
    let conns: Vec<String> = to_cam.connections.iter().map(|c| c.addr.to_string()).collect();
    assert!(
        !to_cam.connections.is_empty() && to_cam.connections.iter().all(|c| is_webrtc(&c.addr)),
        "the viewer reaches the camera over WebRTC-direct only: {conns:?}"
    );
    let mut sub = viewer
        .subscribe_camera("cam1", Some(cam.peer_id()), live("cam1"))
        .await
        .expect("subscribes over WebRTC-direct");
    let mut keyframe = false;
    for _ in 0..30 {
        let f = next_frame(&mut sub, T).await;
        keyframe |= f.header.keyframe;
    }
    assert!(
        keyframe,
        "30 frames over WebRTC-direct, starting on the cached keyframe"
    );
    // Still the same transport under the media stream.
    let peers = viewer.peers().await.expect("peers");
    let to_cam = peers.iter().find(|p| p.peer == cam.peer_id()).expect("camera known");
    assert!(
        to_cam.connections.iter().all(|c| is_webrtc(&c.addr)),
        "{:?}",
        to_cam.connections
    );
    drop(sub);

    // The same over QUIC, for the figures.
    let quic_viewer = spawn_node(config(Role::Viewer, fleet_name, false), &dir.path().join("quic")).await;
    let (q_conn, q_member) = join(&quic_viewer, &cam, quic_addr(&addrs)).await;
    eprintln!(
        "loopback connect: webrtc-direct {:.1} ms (membership proved at {:.1} ms), QUIC {:.1} ms (membership {:.1} ms)",
        w_conn.as_secs_f64() * 1e3,
        w_member.as_secs_f64() * 1e3,
        q_conn.as_secs_f64() * 1e3,
        q_member.as_secs_f64() * 1e3,
    );

    // A stranger over WebRTC-direct: no certificate (a grant does not help a non-member).
    let stranger_dir = dir.path().join("stranger");
    fleet(fleet_name)
        .grant_dir(&stranger_dir, &["*".into()], Rights::LIVE, 3600)
        .expect("grant");
    let stranger = Node::spawn(config(Role::Viewer, fleet_name, true), &stranger_dir)
        .await
        .expect("starts");
    // It may reach the transport; it never gets a stream.
    let _ = stranger.connect(webrtc.clone()).await;
    let grant = stranger.trust().grant_for("cam1", Rights::LIVE);
    let mut control = stranger.stream_control();
    let req = pb::StreamRequest {
        audio: false,
        grant: grant
            .as_ref()
            .map(camesh_node::auth::signed::encode)
            .unwrap_or_default(),
        ..live("cam1")
    };
    let (code, reason) = match client::subscribe(&mut control, cam.peer_id(), req, &stranger.config().limits).await {
        Err(ClientError::Rejected { code, reason, .. }) => (code, reason),
        Err(e) => (pb::RejectCode::RejectUnspecified, e.to_string()),
        Ok(_) => panic!("a stranger was served over WebRTC-direct"),
    };
    eprintln!("stranger over webrtc-direct: refused {code:?}: {reason}");
    // As over QUIC (tests/tests/security.rs).
    assert!(refused_as_stranger(code, &reason), "{code:?} {reason}");
    assert!(
        stranger.trust().member(&cam.peer_id()).is_none(),
        "learnt the camera's certificate"
    );
    let me = stranger.peer_id().to_string();
    let audited = wait_until(T, || {
        cam.trust()
            .audit
            .tail(1000)
            .iter()
            .any(|e| e.peer == me && e.event == "refused-connection" && e.detail.contains("no valid certificate"))
    })
    .await;
    assert!(audited, "no refused-connection for the stranger over WebRTC-direct");
    for n in [&cam, &viewer, &quic_viewer, &stranger] {
        n.shutdown();
    }
}
