//! A bus's day (#16): the camera restarts with the ignition, twice, and the NVR is killed
//! in between, all inside one range. One export of the whole range plays in ffprobe with
//! every recorded frame and verifies, and `mesh recordings` names each gap's cause.
//! (Key epochs used to start at 1 in every camera process, so the NVR held two keys under
//! one epoch and an export across a restart failed to decrypt.)

use std::path::Path;
use std::time::Duration;

use camesh_node::clock::now_unix_us;
use camesh_node::config::Role;
use camesh_node::{Multiaddr, Node, NodeHandle};
use camesh_tests::cli::run_mesh;
use camesh_tests::*;

use super::{ffprobe_frames, log_text, mesh_range, nvr_folder, play_all, start_nvr, viewer, wait_recording, CAM, CLIP};

/// A camera node on a fixed port (a restarted camera is found where it was).
async fn camera_at(dir: &Path, fleet_name: &str, port: u16) -> NodeHandle {
    let mut c = loopback_config(Role::Camera, fleet_name);
    c.cameras = vec![camera(CAM, CLIP)];
    c.node.listen = vec![format!("/ip4/127.0.0.1/udp/{port}/quic-v1").parse().expect("multiaddr")];
    enroll(&c, dir);
    Node::spawn(c, dir).await.expect("camera starts")
}

/// Stops the camera, leaves it off longer than playback joins over (2 s: a gap, with
/// its cause), and starts it again on the same data folder and port.
async fn restart(cam: NodeHandle, dir: &Path, fleet_name: &str, port: u16) -> NodeHandle {
    cam.shutdown();
    tokio::time::sleep(Duration::from_secs(4)).await;
    camera_at(dir, fleet_name, port).await
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("a free UDP port")
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_export_spans_two_camera_restarts_and_an_nvr_kill() {
    init_tracing();
    assert!(have("ffprobe"), "ffprobe is needed (apt-get install ffmpeg)");
    const FLEET: &str = "t-nvr-restarts";
    let dir = tempfile::tempdir().expect("tempdir");
    let cam_dir = dir.path().join("cam");
    let port = free_udp_port();
    let mut cam = camera_at(&cam_dir, FLEET, port).await;
    let cam_addr: Multiaddr = cam.dial_addrs().await.expect("addrs").remove(0);
    let nvr_dir = dir.path().join("nvr");
    nvr_folder(&nvr_dir, FLEET, &cam_addr, |c| {
        c.nvr.fsync_interval_ms = 200;
        c.nvr.segment_duration_s = 3;
    });
    let t0 = now_unix_us();
    let mut nvr = start_nvr(&nvr_dir);
    let v = viewer(&dir.path().join("viewer"), FLEET, std::slice::from_ref(&nvr.addr)).await;
    assert!(wait_recording(&v, nvr.peer, t0).await, "{}", log_text(&nvr_dir));
    let first = play_all(&v, nvr.peer, t0, now_unix_us()).await[0].capture;
    let epoch_1 = cam.hubs().get(CAM).expect("hub").key_epoch();

    // Ignition off and on: the camera process restarts (same key, same address).
    let cam_dir = cam_dir.clone();
    assert!(wait_recording(&v, nvr.peer, now_unix_us() + 2_000_000).await);
    cam = restart(cam, &cam_dir, FLEET, port).await;
    let epoch_2 = cam.hubs().get(CAM).expect("hub").key_epoch();
    assert_ne!(epoch_1, epoch_2, "a restarted camera starts a new key epoch");
    assert!(
        wait_recording(&v, nvr.peer, now_unix_us() + 2_000_000).await,
        "recording resumes after the camera restarted: {}",
        log_text(&nvr_dir)
    );

    // The NVR is killed and comes back.
    nvr.kill9();
    // Longer than the camera's cached GOP (2 s) plus the join (2 s): a gap.
    tokio::time::sleep(Duration::from_secs(6)).await;
    nvr = start_nvr(&nvr_dir);
    assert!(
        wait_recording(&v, nvr.peer, now_unix_us() + 2_000_000).await,
        "recording resumes after the NVR restarted: {}",
        log_text(&nvr_dir)
    );

    // The camera restarts again.
    cam = restart(cam, &cam_dir, FLEET, port).await;
    assert!(wait_recording(&v, nvr.peer, now_unix_us() + 3_000_000).await);
    let to = now_unix_us() - 1_000_000;

    // Everything the NVR recorded in the range, as playback returns it.
    let frames = play_all(&v, nvr.peer, first, to).await;
    let expected = frames.iter().filter(|f| f.capture >= first && f.capture <= to).count();
    assert!(expected >= 200, "{expected} frames recorded in the range");

    let mesh_dir = dir.path().join("mesh");
    super::enroll_mesh(&mesh_dir, FLEET);
    let mp4 = dir.path().join("day.mp4");
    let out = mesh_range(&mesh_dir, FLEET, &nvr.addr, "export", (first, to), &mp4).await;
    assert!(
        out.status.success(),
        "mesh export across two camera restarts and an NVR kill: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json = ffprobe_frames(&mp4, "stream=codec_name,nb_read_frames");
    let s = &json["streams"][0];
    assert_eq!(s["codec_name"], "h264");
    assert_eq!(
        s["nb_read_frames"].as_str(),
        Some(expected.to_string().as_str()),
        "ffprobe counts every recorded frame: {json}"
    );
    let manifest = dir.path().join("day.manifest.json");
    let ok = run_mesh(&mesh_dir, FLEET, &[], &["verify", manifest.to_str().expect("utf-8")]).await;
    assert!(ok.status.success(), "verify: {}", String::from_utf8_lossy(&ok.stderr));

    // Each gap names its cause: two camera restarts and the NVR being down.
    let (from_s, to_s) = (super::secs(first), super::secs(to));
    let rec = run_mesh(
        &mesh_dir,
        FLEET,
        std::slice::from_ref(&nvr.addr),
        &["recordings", CAM, "--from", &from_s, "--to", &to_s, "--json"],
    )
    .await;
    let text = String::from_utf8_lossy(&rec.stdout);
    assert!(rec.status.success(), "{}", String::from_utf8_lossy(&rec.stderr));
    let gaps: Vec<String> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|j| j["recorded"] == false)
        .filter_map(|j| j["reason"].as_str().map(str::to_owned))
        .collect();
    eprintln!(
        "export: {expected} frames over two camera restarts and an NVR kill, ffprobe agrees, verify OK; gaps: {gaps:?}"
    );
    assert_eq!(
        gaps.iter().filter(|g| g.starts_with("camera restarted")).count(),
        2,
        "two camera restarts named: {gaps:?}"
    );
    assert!(
        gaps.iter().any(|g| g.starts_with("NVR down")),
        "the NVR's absence named: {gaps:?}"
    );
    cam.shutdown();
    v.shutdown();
}
