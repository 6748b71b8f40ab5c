//! `mesh path` and `mesh peers` with a forwarder in the fleet: both routes are listed,
//! the preferred forwarder is chosen, and each peer's row says how it is connected and
//! what it forwards.

use camesh_node::auth::Rights;
use camesh_proto::pb;
use camesh_tests::cli::{mesh_folder, run_mesh};
use camesh_tests::*;

use super::cam_and_forwarder;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mesh_path_shows_the_direct_route_and_the_forwarder() {
    init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    let (cam, cam_addrs, fwd, fwd_addrs) = cam_and_forwarder(dir.path(), "t-fwd8").await;
    fwd.forward("cam1", cam.peer_id(), pb::Profile::Main)
        .await
        .expect("forwarding");
    let data = dir.path().join("mesh");
    mesh_folder(&data, "t-fwd8", "mesh", &["cam1"], Rights::LIVE);
    let boot = [cam_addrs[0].clone(), fwd_addrs[0].clone()];
    let path = ["path", "cam1", "--timeout", "2s", "--prefer-via", "--watch", "3s"];
    let out = run_mesh(&data, "t-fwd8", &boot, &path).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "mesh path failed");
    let fwd_id = fwd.peer_id().to_string();
    let cam_id = cam.peer_id().to_string();
    assert!(
        stdout
            .lines()
            .any(|l| l.contains("direct from") && l.ends_with(&cam_id)),
        "direct route listed"
    );
    let via = stdout
        .lines()
        .find(|l| l.contains("forwarded via") && l.ends_with(&fwd_id))
        .expect("forwarder route listed");
    assert!(via.starts_with('*'), "the preferred forwarder is chosen: {via}");
    assert!(
        stdout.contains(&format!("stream forwarded via {fwd_id}")),
        "the stream comes through the forwarder"
    );
    // `mesh peers`: per peer, how it is connected and what it forwards.
    let out = run_mesh(&data, "t-fwd8", &boot, &["peers", "--timeout", "2s"]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}");
    assert!(out.status.success(), "mesh peers failed");
    let row = stdout
        .lines()
        .find(|l| l.starts_with(&fwd_id))
        .expect("the forwarder is listed");
    assert!(row.contains("direct") && row.contains("cam1 ("), "{row}");
    for n in [&fwd, &cam] {
        n.shutdown();
    }
}
