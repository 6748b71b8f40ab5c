//! Circuit relay v2 between fleet members on 127.0.0.1: a camera keeps a reservation on a
//! relay node, a viewer reaches it through the circuit, and a non-member can neither
//! reserve nor open a circuit.

use std::time::Duration;

use camesh_node::config::Role;
use camesh_node::Multiaddr;
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

    // A stranger (valid key, no certificate) that skips the membership exchange and asks
    // the relay directly, as an attacker's own libp2p client does: a reservation, then a
    // circuit to the camera. The relay's gate refuses both, by name.
    let mut raw = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_quic()
        .with_relay_client(libp2p::noise::Config::new, libp2p::yamux::Config::default)
        .expect("relay client")
        .with_behaviour(|_, relay_client| relay_client)
        .expect("behaviour")
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(10)))
        .build();
    let sid = raw.local_peer_id().to_string();
    let to_cam = relay_addr
        .clone()
        .with(Protocol::P2pCircuit)
        .with(Protocol::P2p(cam.peer_id()));
    let relay_refused = |what: &str| {
        relay
            .trust()
            .audit
            .tail(1000)
            .iter()
            .any(|e| e.event == "refused-relay" && e.peer == sid && e.detail.starts_with(what))
    };
    // Connected to the relay first (a circuit dial on a connection still being set up is
    // dropped by the client), then the circuit, then the reservation.
    raw.dial(relay_addr.clone()).expect("dials the relay");
    let (mut reserved, mut circuit_open) = (false, false);
    for step in 0..3 {
        let deadline = tokio::time::Instant::now() + T;
        loop {
            use futures::StreamExt;
            use libp2p::swarm::SwarmEvent;
            let ev = tokio::time::timeout_at(deadline, raw.select_next_some())
                .await
                .expect("the stranger's attempt ends in time");
            match ev {
                SwarmEvent::ConnectionEstablished { peer_id, .. } if peer_id == cam.peer_id() => {
                    circuit_open = true;
                    break;
                }
                SwarmEvent::ConnectionEstablished { .. } if step == 0 => break,
                SwarmEvent::OutgoingConnectionError { .. } if step == 1 => break,
                SwarmEvent::NewListenAddr { address, .. } if address.iter().any(|p| p == Protocol::P2pCircuit) => {
                    reserved = true;
                    break;
                }
                SwarmEvent::ListenerClosed { .. } if step == 2 => break,
                _ => {}
            }
        }
        match step {
            0 => raw.dial(to_cam.clone()).expect("asks for a circuit"),
            1 => {
                raw.listen_on(relay_addr.clone().with(Protocol::P2pCircuit))
                    .expect("asks for a reservation");
            }
            _ => {}
        }
    }
    let _ = wait_until(T, || {
        relay_refused("reservation: not a fleet member") && relay_refused("circuit: not a fleet member")
    })
    .await;
    assert!(!reserved, "a stranger holds a reservation");
    assert!(!circuit_open, "a stranger opened a circuit");
    assert!(
        relay_refused("reservation: not a fleet member"),
        "the relay's gate did not refuse the stranger's reservation: {:?}",
        relay.trust().audit.tail(20)
    );
    assert!(
        relay_refused("circuit: not a fleet member"),
        "the relay's gate did not refuse the stranger's circuit"
    );
    for n in [&viewer, &cam, &relay] {
        n.shutdown();
    }
}
