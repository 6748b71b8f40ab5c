//! Finding cameras: Kademlia through a node the viewer was never told about the camera
//! through, and mDNS on a LAN made of network namespaces.

use std::time::Duration;

use camesh_node::config::Role;
use camesh_node::discovery::camera_key;
use camesh_proto::pb::MemberRole;
use camesh_tests::netns::Lab;
use camesh_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewer_finds_a_camera_via_kademlia_through_a_third_node() {
    init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    // B: a DHT node with no cameras. C bootstraps from B; V bootstraps from B only.
    let b = spawn_node(loopback_config(Role::Nvr, "t-kad"), &dir.path().join("b")).await;
    let b_addrs = b.dial_addrs().await.expect("addrs");
    let c = camera_node(
        &dir.path().join("c"),
        "t-kad",
        vec![camera("cam7", "cam-640x360-30fps-gop2s.h264")],
        b_addrs.clone(),
    )
    .await;
    let v = viewer_node(&dir.path().join("v"), "t-kad", b_addrs).await;
    assert!(!v
        .config()
        .node
        .bootstrap
        .iter()
        .any(|a| a.to_string().contains(&c.peer_id().to_string())));

    let mut providers = Vec::new();
    for _ in 0..50 {
        providers = v.net().find_providers(camera_key("cam7")).await.expect("query");
        if providers.contains(&c.peer_id()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(providers, vec![c.peer_id()], "the DHT names the camera's node");
    let found = v.discover_cameras(Duration::from_secs(3)).await;
    let entry = found
        .iter()
        .find(|e| e.announcement.camera_id == "cam7")
        .expect("cam7 discovered");
    assert_eq!(entry.peer, c.peer_id());
    assert_eq!((entry.announcement.width, entry.announcement.height), (640, 360));
    for n in [&v, &c, &b] {
        n.shutdown();
    }
}

#[test]
fn viewer_finds_a_camera_by_mdns_on_a_lan() {
    if !can_run(
        "viewer_finds_a_camera_by_mdns_on_a_lan",
        Lab::available().map_err(|why| format!("needs network namespaces ({why})")),
    ) {
        return;
    }
    let (_lab, [ns_a, ns_b], _) = Lab::pair("md", 1).expect("namespaces");
    let dir = tempfile::tempdir().expect("tempdir");
    let f = fleet("t-mdns");
    f.enroll_dir(
        &dir.path().join("cam"),
        MemberRole::Camera,
        "cam",
        &["cam1".into()],
        3600,
    )
    .expect("enroll");
    f.enroll_dir(&dir.path().join("mesh"), MemberRole::Viewer, "mesh", &[], 3600)
        .expect("enroll");
    let root = f.root_text();
    let mut camera = Lab::exec(&ns_a, &bin("camesh-node"))
        .arg("--data-dir")
        .arg(dir.path().join("cam"))
        .args(["run", "--fleet", "t-mdns", "--fleet-root", &root])
        .args(["--listen", "/ip4/0.0.0.0/udp/0/quic-v1", "--camera"])
        .arg(format!("cam1={}", fixture("cam-640x360-30fps-gop2s.h264").display()))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("camesh-node runs");
    // Ask only once the camera listens: a slow first start (a cold binary) must not eat
    // the viewer's discovery window.
    let stdout = camera.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.starts_with("listening:") {
                let _ = tx.send(());
            }
        }
    });
    assert!(
        rx.recv_timeout(std::time::Duration::from_secs(30)).is_ok(),
        "the camera node never printed its listening address"
    );
    let out = Lab::exec(&ns_b, &bin("mesh"))
        .arg("--data-dir")
        .arg(dir.path().join("mesh"))
        .args([
            "--fleet",
            "t-mdns",
            "--fleet-root",
            &root,
            "--listen",
            "/ip4/0.0.0.0/udp/0/quic-v1",
        ])
        .args(["cameras", "--timeout", "5s", "--json"])
        .output()
        .expect("mesh runs");
    let _ = camera.kill();
    let _ = camera.wait();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("\"camera\":\"cam1\""),
        "mesh cameras over mDNS listed: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
