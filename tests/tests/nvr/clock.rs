//! A camera whose clock steps back while it is recorded (#16: days offline, then NTP, or
//! a drifting RTC set right). The camera daemon runs under libfaketime with an offset
//! the test changes while it runs: its capture times jump 8 s back in the middle of the
//! recording. The NVR records every frame once, in the camera's sequence order (it used
//! to drop everything as "already recorded" until the clock passed the old time again),
//! one export of the whole range plays in ffprobe with every recorded frame, and it
//! verifies.

use std::ffi::OsStr;
use std::path::Path;
use std::time::Duration;

use camesh_node::clock::now_unix_us;
use camesh_node::config::Role;
use camesh_node::Multiaddr;
use camesh_proto::pb::MemberRole;
use camesh_tests::cli::run_mesh;
use camesh_tests::nvr::start_daemon_env;
use camesh_tests::*;

use super::{ffprobe_frames, log_text, mesh_range, nvr_folder, play_all, start_nvr, viewer, wait_recording, CAM, CLIP};

const FLEET: &str = "t-nvr-clock";
const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";
/// How far the camera's clock steps back.
const STEP_US: i64 = 8_000_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_camera_clock_stepping_back_loses_nothing() {
    init_tracing();
    assert!(have("ffprobe"), "ffprobe is needed (apt-get install ffmpeg)");
    assert!(
        Path::new(LIBFAKETIME).exists(),
        "{LIBFAKETIME} is needed (apt-get install faketime; scripts/setup.sh installs it)"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    // The camera daemon, its clock offset read from a file it re-reads every second.
    let cam_dir = dir.path().join("cam");
    fleet(FLEET)
        .enroll_dir(&cam_dir, MemberRole::Camera, "cam-node", &[CAM.into()], 3600)
        .expect("enroll");
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("a free UDP port")
        .port();
    let cam_addr: Multiaddr = format!("/ip4/127.0.0.1/udp/{port}/quic-v1").parse().expect("multiaddr");
    let mut c = loopback_config(Role::Camera, FLEET);
    c.node.listen = vec![cam_addr.clone()];
    c.cameras = vec![camera(CAM, CLIP)];
    std::fs::write(cam_dir.join("config.toml"), c.to_toml()).expect("config");
    let offset = dir.path().join("clock-offset");
    std::fs::write(&offset, "+0\n").expect("offset file");
    let env: [(&str, &OsStr); 4] = [
        ("LD_PRELOAD", OsStr::new(LIBFAKETIME)),
        ("FAKETIME_TIMESTAMP_FILE", offset.as_os_str()),
        ("FAKETIME_CACHE_DURATION", OsStr::new("1")),
        // Only the wall clock steps, as NTP does; timers keep their monotonic clock.
        ("FAKETIME_DONT_FAKE_MONOTONIC", OsStr::new("1")),
    ];
    let cam = start_daemon_env(None, &cam_dir, ("node.log", "info"), "camera: ", &env);

    let nvr_dir = dir.path().join("nvr");
    nvr_folder(&nvr_dir, FLEET, &cam_addr, |c| {
        c.nvr.fsync_interval_ms = 200;
        c.nvr.segment_duration_s = 3;
    });
    let t0 = now_unix_us();
    let nvr = start_nvr(&nvr_dir);
    let v = viewer(&dir.path().join("viewer"), FLEET, std::slice::from_ref(&nvr.addr)).await;
    assert!(wait_recording(&v, nvr.peer, t0).await, "{}", log_text(&nvr_dir));
    let first = play_all(&v, nvr.peer, t0, now_unix_us()).await[0].capture;
    // About 12 s recorded, then the camera's clock steps 8 s back: the next captures
    // repeat times already recorded.
    assert!(wait_recording(&v, nvr.peer, first + 12_000_000).await);
    std::fs::write(&offset, format!("-{}\n", STEP_US / 1_000_000)).expect("step the clock");
    let stepped = now_unix_us();
    // Recording goes on: frames captured (by the camera's clock) after the step, 6 s on.
    let mut seen = false;
    for _ in 0..100 {
        if log_text(&nvr_dir).contains("clock stepped back") {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(seen, "the NVR notices the step: {}", log_text(&nvr_dir));
    tokio::time::sleep(Duration::from_secs(6)).await;
    // The camera stops: what the NVR holds is final (while it runs, frames captured by a
    // clock 8 s behind keep falling inside any range that ends now).
    drop(cam);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let to = now_unix_us();

    // Every frame once, in the camera's sequence order, across the step.
    let frames = play_all(&v, nvr.peer, first, to).await;
    let seqs: Vec<u64> = frames.iter().map(|f| f.seq).collect();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "sequences run on without a gap or repeat: {:?}",
        seqs.windows(2).filter(|w| w[1] != w[0] + 1).collect::<Vec<_>>()
    );
    // Where the capture times jump back: the step.
    let step = frames
        .windows(2)
        .position(|w| w[0].capture - w[1].capture > STEP_US - 1_000_000)
        .unwrap_or_else(|| {
            panic!(
                "the recording holds the step; captures: {:?}",
                frames.iter().map(|f| f.capture).collect::<Vec<_>>()
            )
        });
    let back = frames[step].capture - frames[step + 1].capture;
    let n_after = frames.len() - step - 1;
    eprintln!(
        "clock step: {} frames recorded, the camera's clock went {:.1} s back {:.1} s after recording began; {n_after} frames after it",
        frames.len(),
        back as f64 / 1e6,
        (stepped - first) as f64 / 1e6
    );
    assert!(n_after >= 100, "recording went on after the step: {n_after} frames");

    // One export of the whole range: every frame, and it verifies.
    let mesh_dir = dir.path().join("mesh");
    super::enroll_mesh(&mesh_dir, FLEET);
    let mp4 = dir.path().join("stepped.mp4");
    let out = mesh_range(&mesh_dir, FLEET, &nvr.addr, "export", (first, to), &mp4).await;
    assert!(
        out.status.success(),
        "mesh export across a clock step: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json = ffprobe_frames(&mp4, "stream=codec_name,nb_read_frames");
    assert_eq!(
        json["streams"][0]["nb_read_frames"].as_str(),
        Some(frames.len().to_string().as_str()),
        "ffprobe counts every recorded frame: {json}"
    );
    let manifest = dir.path().join("stepped.manifest.json");
    let ok = run_mesh(&mesh_dir, FLEET, &[], &["verify", manifest.to_str().expect("utf-8")]).await;
    assert!(ok.status.success(), "verify: {}", String::from_utf8_lossy(&ok.stderr));
    v.shutdown();
}
