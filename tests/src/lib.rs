//! Test support for multi-node integration tests: real nodes over QUIC on 127.0.0.1,
//! fixture paths, the workspace's binaries, and bounded waiting.
//!
//! Every network address used here is 127.0.0.1 or inside a network namespace the test
//! itself creates (see [`netns`]); mDNS is off outside namespaces.
//!
//! Layout: this file starts nodes in test fleets and waits; [`watch`] reads a watch's
//! events, [`cli`] runs `mesh`, [`ffmpeg`] judges video files, [`http`] and [`prom`]
//! read the gateway, [`rtsp_server`] serves RTSP cameras, [`netns`] builds LANs and NATs,
//! [`nvr`] runs the NVR daemon.

pub mod cli;
pub mod ffmpeg;
pub mod http;
pub mod netns;
pub mod nvr;
pub mod prom;
pub mod rtsp_server;
pub mod watch;
pub mod web;

use std::path::{Path, PathBuf};
use std::sync::Once;
use std::time::Duration;

use std::collections::HashMap;
use std::sync::Mutex;

use camesh_node::auth::fleet::FleetRoot;
use camesh_node::auth::Rights;
use camesh_node::config::{CameraConfig, Config, Role};
use camesh_node::stream::client::Subscription;
use camesh_node::{Multiaddr, Node, NodeHandle};
use camesh_proto::pb::{self, MemberRole};
use camesh_proto::MediaFrame;

pub fn init_tracing() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_env("CAMESH_TEST_LOG")
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
            )
            .with_test_writer()
            .try_init();
    });
}

/// Path of a committed fixture clip.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures").join(name)
}

/// The root key of a test fleet, made on first use (one per fleet name per process).
pub fn fleet(name: &str) -> FleetRoot {
    static FLEETS: Mutex<Option<HashMap<String, FleetRoot>>> = Mutex::new(None);
    let mut map = FLEETS.lock().unwrap_or_else(|e| e.into_inner());
    map.get_or_insert_with(HashMap::new)
        .entry(name.to_owned())
        .or_insert_with(|| FleetRoot::ephemeral(name))
        .clone()
}

/// Certifies the node in `dir` for the role and cameras of `config`; viewers and NVRs
/// also get a grant for live video of every camera.
pub fn enroll(config: &Config, dir: &Path) {
    let f = fleet(&config.node.fleet_id);
    let role = match config.node.role {
        Role::Camera => MemberRole::Camera,
        Role::Nvr => MemberRole::Nvr,
        Role::Viewer => MemberRole::Viewer,
    };
    let cams: Vec<String> = config.cameras.iter().map(|c| c.id.clone()).collect();
    f.enroll_dir(dir, role, &config.node.name, &cams, 3600).expect("enroll");
    if config.node.role != Role::Camera {
        f.grant_dir(dir, &["*".to_owned()], Rights::LIVE, 3600).expect("grant");
    }
}

/// Enrolls and starts a node.
pub async fn spawn_node(config: Config, dir: &Path) -> NodeHandle {
    enroll(&config, dir);
    Node::spawn(config, dir).await.expect("node starts")
}

/// A config for a node on 127.0.0.1 (QUIC, random port, no mDNS) in test fleet `fleet`.
pub fn loopback_config(role: Role, fleet_name: &str) -> Config {
    let mut c = Config::preset(role);
    c.node.fleet_id = fleet_name.into();
    c.node.fleet_root = fleet(fleet_name).root_text();
    c.node.mdns = false;
    c.node.listen = vec!["/ip4/127.0.0.1/udp/0/quic-v1".parse().expect("static multiaddr")];
    // WebRTC-direct is tested on its own (tests/tests/webrtc.rs); elsewhere it would only
    // add a socket and a certificate per node.
    c.node.webrtc = Some(false);
    c.node.announce_interval_s = 1;
    // Production default is 1 s; test machines are shared and loaded, and no assertion
    // depends on the grace, so tests give peers 3 s to prove membership.
    c.limits.membership_grace_ms = 3000;
    c
}

pub fn camera(id: &str, clip: &str) -> CameraConfig {
    CameraConfig {
        id: id.into(),
        name: format!("Camera {id}"),
        source: fixture(clip),
        sub_source: None,
        rtsp_transport: Default::default(),
        looping: true,
        tags: vec![],
        onvif: None,
        motion: None,
        talkback: None,
    }
}

/// Makes a 6 s 640x360 H.264 clip in `dir`: a white box over grey at `x` (an ffmpeg
/// expression of the time `t`), with temporal noise like a real sensor's. For motion
/// tests (a box that moves, or stays).
pub fn box_clip(dir: &Path, name: &str, x: &str) -> PathBuf {
    let path = dir.join(name);
    let out = std::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i"])
        .arg(format!(
            "color=c=gray:s=640x360:r=30:d=6[bg];color=c=white:s=80x80:r=30[box];[bg][box]overlay=x='{x}':y=120:shortest=1,noise=alls=6:allf=t"
        ))
        .args(["-c:v", "libx264", "-g", "30", "-bf", "0", "-pix_fmt", "yuv420p", "-f", "h264"])
        .arg(&path)
        .output()
        .expect("ffmpeg must be installed (scripts/setup.sh)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    path
}

/// The box of [`box_clip`] moving from 2 s to 4 s of each 6 s pass, back where it started.
pub const MOVING_BOX: &str = "if(lt(t,2),40,if(lt(t,3),40+(t-2)*300,if(lt(t,4),340-(t-3)*300,40)))";

/// Starts a camera node serving `cams`.
pub async fn camera_node(dir: &Path, fleet: &str, cams: Vec<CameraConfig>, bootstrap: Vec<Multiaddr>) -> NodeHandle {
    let mut c = loopback_config(Role::Camera, fleet);
    c.cameras = cams;
    c.node.bootstrap = bootstrap;
    spawn_node(c, dir).await
}

pub async fn viewer_node(dir: &Path, fleet: &str, bootstrap: Vec<Multiaddr>) -> NodeHandle {
    let mut c = loopback_config(Role::Viewer, fleet);
    c.node.bootstrap = bootstrap;
    spawn_node(c, dir).await
}

/// A camera node serving `cams` (data in `dir/cam`) and a viewer bootstrapped from it
/// (`dir/viewer`), both in test fleet `fleet`.
pub async fn camera_and_viewer(dir: &Path, fleet: &str, cams: Vec<CameraConfig>) -> (NodeHandle, NodeHandle) {
    let cam = camera_node(&dir.join("cam"), fleet, cams, vec![]).await;
    let viewer = viewer_node(&dir.join("viewer"), fleet, cam.dial_addrs().await.expect("addrs")).await;
    (cam, viewer)
}

/// A request for live video of `camera`: main profile, no grant attached.
pub fn live(camera: &str) -> pb::StreamRequest {
    pb::StreamRequest {
        audio: false,
        camera_id: camera.into(),
        mode: Some(pb::stream_request::Mode::Live(pb::Live {})),
        ..Default::default()
    }
}

/// The next frame of `sub` within `limit`; panics if none comes in time, on a protocol
/// error and if the stream ended.
pub async fn next_frame(sub: &mut Subscription, limit: Duration) -> MediaFrame {
    tokio::time::timeout(limit, sub.next_frame())
        .await
        .expect("a frame within the time limit")
        .expect("no protocol error")
        .expect("stream still open")
}

/// Waits until `f` is true, checking every 20 ms, for at most `limit`.
pub async fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    f()
}

/// Whether a test that needs something this machine may lack (root, namespaces, a
/// tool) can run: `Ok` runs it; otherwise it is skipped with a printed reason, except
/// under CI (`CI` set), where scripts/setup.sh provides everything and a missing part is
/// a failure, not a silent pass.
pub fn can_run(test: &str, available: Result<(), String>) -> bool {
    match available {
        Ok(()) => true,
        Err(why) if std::env::var_os("CI").is_some() => panic!("{test} cannot run under CI: {why}"),
        Err(why) => {
            eprintln!("SKIPPED {test}: {why}");
            false
        }
    }
}

/// Path of a workspace binary (`mesh`, `camesh-node`). The test command builds them
/// first (`cargo build --workspace --bins`, as the test command does); a missing one
/// fails loudly.
pub fn bin(name: &str) -> PathBuf {
    // Test executables live in target/<profile>/deps, binaries one level up; a binary
    // using these helpers (camesh-bench) lives beside them.
    let exe = std::env::current_exe().expect("current exe");
    let here = exe.parent().expect("exe dir");
    let path = match here.join(name) {
        p if p.exists() => p,
        _ => here.parent().expect("target dir").join(name),
    };
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` first",
        path.display()
    );
    path
}

/// Whether a program is on PATH.
pub fn have(program: &str) -> bool {
    std::process::Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Whether a refused stream was refused for not being a fleet member: the camera rejects
/// it as such (a peer that presented no certificate waits out the grace period), or it
/// has already closed the connection of a peer whose certificate failed. A dial failure
/// or a timeout is neither.
pub fn refused_as_stranger(code: pb::RejectCode, reason: &str) -> bool {
    (code == pb::RejectCode::RejectNotAuthorized && reason.contains("not a member"))
        || (code == pb::RejectCode::RejectUnspecified
            && (reason.contains("fleet membership")
                || reason.contains("connection lost")
                || reason.contains("stopped by peer")))
}
