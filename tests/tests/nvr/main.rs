//! The NVR end to end: a camera node on 127.0.0.1, the real `camesh-node` daemon in the
//! nvr role (killed with SIGKILL at random moments), and `mesh play | export | verify |
//! lock` as a user runs them, with ffprobe as the judge of the video.
//!
//! [`durability`]: SIGKILLs and a deleted index lose nothing they must keep;
//! [`retention`]: a small quota deletes the oldest unlocked video first; [`export`]:
//! exports ffprobe reads and `mesh verify` checks, playback from the middle of a GOP;
//! [`pickup`]: a grant installed into a running NVR starts its recording, no restart;
//! [`restarts`]: one export across two camera restarts and an NVR kill, gaps named;
//! [`replicate`]: a vehicle NVR's footage reaches a shore NVR over a flapping link;
//! [`dock`]: a camera with no NVR records itself and replicates when it docks;
//! [`clock`]: a camera clock that steps back loses nothing.
//! The daemon and its data folder are in [`daemon`].
//!
//! Assertions are about frames and files, never about wall time: waits are bounded
//! polls, and the one time-derived bound (frames older than the fsync interval survive a
//! SIGKILL) is the durability promise itself.

mod clock;
mod daemon;
mod dock;
mod durability;
mod export;
mod pickup;
mod replicate;
mod restarts;
mod retention;

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use camesh_node::auth::Rights;
use camesh_node::clock::now_unix_us;
use camesh_node::nvr::client;
use camesh_node::{Multiaddr, NodeHandle, PeerId};
use camesh_tests::cli::{mesh_folder, run_mesh};
use camesh_tests::*;

use daemon::{log_text, nvr_folder, start_nvr, NvrProc};

const CLIP: &str = "cam-640x360-30fps-gop2s.h264";
const CAM: &str = "cam1";
const T: Duration = Duration::from_secs(30);

/// A recorded frame as playback returns it (payload opened).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Played {
    seq: u64,
    capture: i64,
    keyframe: bool,
    skipped_before: u32,
    payload: Bytes,
}

/// A camera node (every node serves camera-signed GOP digests of its cameras).
async fn cam_node(dir: &Path, fleet_name: &str) -> NodeHandle {
    camera_node(dir, fleet_name, vec![camera(CAM, CLIP)], vec![]).await
}

/// A viewer node with playback and export rights, connected to `addrs`.
async fn viewer(dir: &Path, fleet_name: &str, addrs: &[Multiaddr]) -> NodeHandle {
    fleet(fleet_name)
        .grant_dir(dir, &[CAM.into()], Rights::PLAYBACK.union(Rights::EXPORT), 3600)
        .expect("grant");
    let v = viewer_node(dir, fleet_name, addrs.to_vec()).await;
    for a in addrs {
        v.connect(a.clone()).await.expect("viewer connects");
    }
    v
}

/// Every frame of `[from, to]` as the NVR plays it.
async fn play_all(v: &NodeHandle, nvr: PeerId, from: i64, to: i64) -> Vec<Played> {
    let mut p = client::play(v.reach(), nvr, CAM, from, to)
        .await
        .expect("playback starts");
    let mut out = Vec::new();
    while let Some(f) = tokio::time::timeout(T, p.next_frame())
        .await
        .expect("a frame within the time limit")
        .expect("frames open with the keys the NVR sent")
    {
        out.push(Played {
            seq: f.header.sequence,
            capture: f.header.capture_unix_us,
            keyframe: f.header.keyframe,
            skipped_before: f.header.skipped_before,
            payload: f.payload,
        });
    }
    out
}

/// Waits until the NVR has recorded a frame captured after `after` (recording runs).
async fn wait_recording(v: &NodeHandle, nvr: PeerId, after: i64) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    let mut last = None;
    while tokio::time::Instant::now() < deadline {
        match client::recordings(v.reach(), nvr, CAM, after, 0).await {
            Ok(c) if c.spans.iter().any(|s| s.recorded && s.to_unix_us > after) => return true,
            other => last = Some(format!("{other:?}")),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("not recording after {after}: last answer {last:?}");
    false
}

/// A mesh data folder with playback and export rights on the camera.
fn enroll_mesh(dir: &Path, fleet_name: &str) {
    mesh_folder(
        dir,
        fleet_name,
        "mesh",
        &[CAM],
        Rights::PLAYBACK.union(Rights::EXPORT).union(Rights::LOCK),
    );
}

fn secs(us: i64) -> String {
    format!("{}.{:06}", us / 1_000_000, us % 1_000_000)
}

/// `mesh <command> cam1 --from <from> --to <to> -o <out>` (play or export) from the NVR
/// at `nvr`, data in `mesh_dir`.
async fn mesh_range(
    mesh_dir: &Path,
    fleet_name: &str,
    nvr: &Multiaddr,
    command: &str,
    (from, to): (i64, i64),
    out: &Path,
) -> std::process::Output {
    let (from, to) = (secs(from), secs(to));
    let args = [
        command,
        CAM,
        "--from",
        &from,
        "--to",
        &to,
        "-o",
        out.to_str().expect("utf-8"),
    ];
    run_mesh(mesh_dir, fleet_name, std::slice::from_ref(nvr), &args).await
}

/// `ffprobe -count_frames` of the first video stream of `path`, showing `entries`.
fn ffprobe_frames(path: &Path, entries: &str) -> serde_json::Value {
    camesh_tests::ffmpeg::ffprobe_json(
        path,
        &["-count_frames", "-select_streams", "v:0", "-show_entries", entries],
    )
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("join")
}

/// Records ~8 s and returns (temp dir, camera, nvr folder, nvr, viewer, the first frame's capture time).
async fn recorded(fleet_name: &str) -> (tempfile::TempDir, NodeHandle, PathBuf, NvrProc, NodeHandle, i64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let cam = cam_node(&dir.path().join("cam"), fleet_name).await;
    let cam_addr = cam.dial_addrs().await.expect("addrs").remove(0);
    let nvr_dir = dir.path().join("nvr");
    nvr_folder(&nvr_dir, fleet_name, &cam_addr, |c| {
        c.nvr.fsync_interval_ms = 200;
        c.nvr.segment_duration_s = 3;
    });
    let t0 = now_unix_us();
    let nvr = start_nvr(&nvr_dir);
    let v = viewer(&dir.path().join("viewer"), fleet_name, std::slice::from_ref(&nvr.addr)).await;
    assert!(wait_recording(&v, nvr.peer, t0).await, "{}", log_text(&nvr_dir));
    let first = play_all(&v, nvr.peer, t0, now_unix_us()).await[0].capture;
    assert!(wait_recording(&v, nvr.peer, first + 8_000_000).await);
    let mesh_dir = dir.path().join("mesh");
    enroll_mesh(&mesh_dir, fleet_name);
    (dir, cam, nvr_dir, nvr, v, first)
}

/// A little before `t`: playback from here includes the keyframe at or before `t`.
fn t_before(t: i64) -> i64 {
    t - 3_000_000
}
