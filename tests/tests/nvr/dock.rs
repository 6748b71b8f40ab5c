//! A camera with no NVR beside it (#16: a body-worn camera, a drone): the camera node
//! records its own camera with the same recorder, while no shore is reachable, and
//! replicates when it docks (the shore NVR appears). Shore then holds every frame the
//! camera recorded, with no grant on the camera node (its certificate names the camera),
//! and shore's export plays in ffprobe with the camera's frame count and verifies with
//! the camera's own GOP signatures.

use std::path::Path;
use std::time::Duration;

use camesh_node::auth::Rights;
use camesh_node::clock::now_unix_us;
use camesh_node::config::{Config, RecordRule, ReplicateRule, Role};
use camesh_node::{Multiaddr, PeerId};
use camesh_proto::pb::MemberRole;
use camesh_tests::cli::{mesh_folder, run_mesh};
use camesh_tests::nvr::start_daemon;
use camesh_tests::*;

use super::{ffprobe_frames, secs, CAM, CLIP};

const FLEET: &str = "t-nvr-dock";

fn quic(port: u16) -> Multiaddr {
    format!("/ip4/127.0.0.1/udp/{port}/quic-v1").parse().expect("multiaddr")
}

fn free_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("a free UDP port")
        .port()
}

fn write_config(dir: &Path, role: Role, port: u16, edit: impl FnOnce(&mut Config)) {
    let mut c = loopback_config(role, FLEET);
    c.node.listen = vec![quic(port)];
    c.nvr.fsync_interval_ms = 200;
    c.nvr.segment_duration_s = 3;
    edit(&mut c);
    c.validate().expect("valid config");
    std::fs::write(dir.join("config.toml"), c.to_toml()).expect("config written");
}

/// `mesh recordings cam1 --from <from> --json --nvr <peer>` against the recorder `peer`
/// at `node` (a camera node is not found as an NVR by its role: it is named), one JSON
/// object per line.
async fn recordings(mesh_dir: &Path, (node, peer): (&Multiaddr, PeerId), from: i64) -> Vec<serde_json::Value> {
    let (from, peer) = (secs(from), peer.to_string());
    let out = run_mesh(
        mesh_dir,
        FLEET,
        std::slice::from_ref(node),
        &["recordings", CAM, "--from", &from, "--json", "--nvr", &peer],
    )
    .await;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

async fn export(mesh_dir: &Path, (node, peer): (&Multiaddr, PeerId), (from, to): (i64, i64), mp4: &Path) -> u64 {
    let (from, to, peer) = (secs(from), secs(to), peer.to_string());
    let mp4_arg = mp4.to_str().expect("utf-8");
    let args = [
        "export", CAM, "--from", &from, "--to", &to, "-o", mp4_arg, "--nvr", &peer,
    ];
    let out = run_mesh(mesh_dir, FLEET, std::slice::from_ref(node), &args).await;
    assert!(
        out.status.success(),
        "export from {node}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    ffprobe_frames(mp4, "stream=codec_name,nb_read_frames")["streams"][0]["nb_read_frames"]
        .as_str()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_camera_records_itself_and_replicates_when_it_docks() {
    init_tracing();
    assert!(have("ffprobe"), "ffprobe is needed (apt-get install ffmpeg)");
    let dir = tempfile::tempdir().expect("tempdir");
    let f = fleet(FLEET);
    let (cam_port, shore_port) = (free_port(), free_port());
    let (cam_addr, shore_addr) = (quic(cam_port), quic(shore_port));

    // The shore NVR's identity exists before the camera is configured (its peer id goes
    // into the replication rule); the NVR itself starts only when the camera "docks".
    let shore_dir = dir.path().join("shore");
    f.enroll_dir(&shore_dir, MemberRole::Nvr, "shore", &[], 3600)
        .expect("enroll");
    let shore_peer = PeerId::from_public_key(
        &camesh_node::identity::load_or_create(&shore_dir)
            .expect("shore key")
            .public(),
    );
    write_config(&shore_dir, Role::Nvr, shore_port, |_| {});

    // The body camera: serves cam1, records it, replicates it to shore. No grant at all.
    let cam_dir = dir.path().join("bodycam");
    f.enroll_dir(&cam_dir, MemberRole::Camera, "bodycam-7", &[CAM.into()], 3600)
        .expect("enroll");
    write_config(&cam_dir, Role::Camera, cam_port, |c| {
        c.cameras = vec![camera(CAM, CLIP)];
        c.nvr.records = vec![RecordRule {
            camera: CAM.into(),
            ..RecordRule::default()
        }];
        c.nvr.replicates = vec![ReplicateRule {
            to: shore_peer.to_string(),
            addrs: vec![shore_addr.to_string()],
            cameras: vec![CAM.into()],
            ..ReplicateRule::default()
        }];
    });
    let t0 = now_unix_us();
    let cam = start_daemon(&cam_dir, "nvr.log", "info,camesh_node::net=warn", "recordings: ");

    let mesh_dir = dir.path().join("mesh");
    mesh_folder(&mesh_dir, FLEET, "mesh", &[CAM], Rights::PLAYBACK.union(Rights::EXPORT));
    // Out in the field: the camera records about 8 s with nowhere to send it.
    let mut recorded_to = None;
    for _ in 0..100 {
        let r = recordings(&mesh_dir, (&cam_addr, cam.peer), t0).await;
        recorded_to = r
            .iter()
            .filter(|j| j["recorded"] == true)
            .filter_map(|j| j["to_us"].as_i64())
            .max();
        if recorded_to.is_some_and(|t| t > t0 + 8_000_000) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(
        recorded_to.is_some_and(|t| t > t0 + 8_000_000),
        "the camera records itself: {}",
        std::fs::read_to_string(cam_dir.join("nvr.log")).unwrap_or_default()
    );

    // Docked: the shore NVR is there, and the camera goes on recording while it
    // replicates (footage still growing).
    let shore = start_daemon(&shore_dir, "nvr.log", "info,camesh_node::net=warn", "recordings: ");
    let mut caught_up = false;
    let mut last = Vec::new();
    for _ in 0..240 {
        last = recordings(&mesh_dir, (&shore_addr, shore_peer), t0).await;
        if last.iter().any(|j| {
            j["source"].is_string()
                && j["offered_us"].as_i64().is_some_and(|t| t > t0 + 12_000_000)
                && j["missing"].as_array().is_some_and(Vec::is_empty)
        }) {
            caught_up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        caught_up,
        "shore never held the camera's footage; last answer {last:?}\ncamera log:\n{}\nshore log:\n{}",
        std::fs::read_to_string(cam_dir.join("nvr.log")).unwrap_or_default(),
        std::fs::read_to_string(shore_dir.join("nvr.log")).unwrap_or_default()
    );
    // The same range from both: every frame the camera recorded, once, on shore (up to
    // a little before what it last offered: the camera records on meanwhile).
    let to = last
        .iter()
        .filter(|j| j["source"].is_string())
        .filter_map(|j| j["source_recorded"].as_array())
        .flatten()
        .filter_map(|s| s[1].as_i64())
        .max()
        .expect("the source's coverage")
        - 2_000_000;
    let range = (t0 - 1_000_000, to);
    let n_cam = export(&mesh_dir, (&cam_addr, cam.peer), range, &dir.path().join("cam.mp4")).await;
    let n_shore = export(
        &mesh_dir,
        (&shore_addr, shore_peer),
        range,
        &dir.path().join("shore.mp4"),
    )
    .await;
    eprintln!("dock: the camera recorded {n_cam} frames, shore holds {n_shore}");
    assert!(n_cam > 200, "{n_cam} frames recorded on the camera");
    assert_eq!(n_shore, n_cam, "shore's export has every frame the camera recorded");
    let manifest = dir.path().join("shore.manifest.json");
    let ok = run_mesh(&mesh_dir, FLEET, &[], &["verify", manifest.to_str().expect("utf-8")]).await;
    assert!(
        ok.status.success(),
        "mesh verify of shore's export (the camera's own GOP signatures): {}{}",
        String::from_utf8_lossy(&ok.stdout),
        String::from_utf8_lossy(&ok.stderr)
    );
    eprintln!("{}", String::from_utf8_lossy(&ok.stdout).trim());
    drop(shore);
    drop(cam);
}
