//! Circuit relay v2 between fleet members on 127.0.0.1: a camera keeps a reservation on a
//! relay node, a viewer reaches it through the circuit, and a non-member can neither
//! reserve nor open a circuit.

use std::time::Duration;

use camesh_node::config::Role;
use camesh_node::{Multiaddr, Node};
use camesh_tests::*;
use libp2p::multiaddr::Protocol;

const T: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_use_the_relay_and_strangers_cannot() {
    init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut rc = loopback_config(Role::Nvr, "t-relay");
    rc.node.relay_server = Some(true);
    let relay = spawn_node(rc, &dir.path().join("relay")).await;
    let relay_addr = relay.dial_addrs().await.expect("addrs").remove(0);

    let mut cc = loopback_config(Role::Camera, "t-relay");
    cc.cameras = vec![camera("cam1", "cam-640x360-30fps-gop2s.h264")];
    cc.node.bootstrap = vec![relay_addr.clone()];
    cc.node.relays = vec![relay_addr.clone()];
    let cam = spawn_node(cc, &dir.path().join("cam")).await;
    // The camera's reservation shows up as a listen address through the relay.
    let mut circuit: Option<Multiaddr> = None;
    for _ in 0..200 {
        let addrs = cam.net().listen_addrs().await.expect("addrs");
        if let Some(a) = addrs.into_iter().find(|a| a.iter().any(|p| p == Protocol::P2pCircuit)) {
            circuit = Some(a);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let circuit = circuit
        .expect("reservation on the relay")
        .with(Protocol::P2p(cam.peer_id()));

    // A viewer that knows only the relay and the circuit address watches the camera.
    let viewer = viewer_node(&dir.path().join("viewer"), "t-relay", vec![relay_addr.clone()]).await;
    // The relay serves circuits to verified members only: let the viewer's certificate
    // exchange with it finish first (a watcher's retry would cover this too).
    assert!(wait_until(T, || relay.trust().member(&viewer.peer_id()).is_some()).await);
    let p = viewer
        .net()
        .connect(None, vec![circuit.clone()])
        .await
        .expect("connected through the relay");
    assert_eq!(p, cam.peer_id());
    let mut sub = viewer
        .subscribe_camera("cam1", Some(cam.peer_id()), live("cam1"))
        .await
        .expect("subscribed through the relay");
    for _ in 0..30 {
        next_frame(&mut sub, T).await;
    }

    // A stranger (valid key, no certificate) is refused a reservation and a circuit.
    let mut sc = loopback_config(Role::Camera, "t-relay");
    sc.node.bootstrap = vec![relay_addr.clone()];
    sc.node.relays = vec![relay_addr.clone()];
    let stranger = Node::spawn(sc, &dir.path().join("stranger")).await.expect("starts");
    let r = tokio::time::timeout(Duration::from_secs(5), stranger.net().connect(None, vec![circuit])).await;
    assert!(!matches!(r, Ok(Ok(_))), "a stranger opened a circuit: {r:?}");
    let refused = wait_until(T, || {
        relay
            .trust()
            .audit
            .tail(1000)
            .iter()
            .any(|e| e.event == "refused-relay")
    })
    .await
        || relay
            .trust()
            .audit
            .tail(1000)
            .iter()
            .any(|e| e.event == "refused-connection");
    assert!(refused, "the relay audited the stranger");
    let stranger_addrs = stranger.net().listen_addrs().await.expect("addrs");
    assert!(
        !stranger_addrs
            .iter()
            .any(|a| a.iter().any(|p| p == Protocol::P2pCircuit)),
        "a stranger holds a reservation: {stranger_addrs:?}"
    );
    for n in [&stranger, &viewer, &cam, &relay] {
        n.shutdown();
    }
}
