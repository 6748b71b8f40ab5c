//! The NVR end to end: a camera node on 127.0.0.1, the real `camesh-node` daemon in the
//! nvr role (killed with SIGKILL at random moments), and `mesh play | export | verify |
//! lock` as a user runs them, with ffprobe as the judge of the video.
//!
//! Assertions are about frames and files, never about wall time: waits are bounded
//! polls, and the one time-derived bound (frames older than the fsync interval survive a
//! SIGKILL) is the durability promise itself.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use camesh_node::auth::Rights;
use camesh_node::config::{Config, RecordRule, Role};
use camesh_node::nvr::client;
use camesh_node::record::manifest::Manifest;
use camesh_node::record::segment::{encode_record, scan_segment, Record, SegmentReader};
use camesh_node::stream::hub::now_unix_us;
use camesh_node::{Multiaddr, NodeHandle, PeerId};
use camesh_proto::pb::MemberRole;
use camesh_tests::*;

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

/// The NVR daemon, a child process.
struct NvrProc {
    child: Child,
    peer: PeerId,
    addr: Multiaddr,
}

impl NvrProc {
    fn kill9(mut self) {
        // `Child::kill` is SIGKILL on Unix: no handler runs, nothing is flushed.
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reaped");
    }
}

impl NvrProc {
    /// Ctrl-C (SIGINT): the daemon seals its segments and marks the index clean.
    fn interrupt(mut self) -> bool {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .is_ok_and(|s| s.success());
        for _ in 0..200 {
            if let Ok(Some(status)) = self.child.try_wait() {
                return sent && status.success();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }
}

impl Drop for NvrProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Provisions an NVR data folder: certificate (role nvr), a live+record grant, config.
fn nvr_folder(dir: &Path, fleet_name: &str, cam: &Multiaddr, edit: impl FnOnce(&mut Config)) {
    let f = fleet(fleet_name);
    f.enroll_dir(dir, MemberRole::Nvr, "nvr", &[], 3600).expect("enroll");
    f.grant_dir(dir, &[CAM.into()], Rights::LIVE.union(Rights::RECORD), 3600)
        .expect("grant");
    let mut c = loopback_config(Role::Nvr, fleet_name);
    // A fixed port, as an installed NVR has: after a restart, peers reach it where it was.
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("a free UDP port")
        .port();
    c.node.listen = vec![format!("/ip4/127.0.0.1/udp/{port}/quic-v1").parse().expect("multiaddr")];
    c.node.bootstrap = vec![cam.clone()];
    c.nvr.records = vec![RecordRule {
        camera: CAM.into(),
        ..RecordRule::default()
    }];
    edit(&mut c);
    c.validate().expect("valid nvr config");
    std::fs::write(dir.join("config.toml"), c.to_toml()).expect("config written");
}

/// Starts `camesh-node run` in `dir` (stderr appended to `dir/nvr.log`) and waits until
/// it prints its address and recordings folder.
fn start_nvr(dir: &Path) -> NvrProc {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("nvr.log"))
        .expect("log file");
    let mut child = Command::new(bin("camesh-node"))
        .arg("--data-dir")
        .arg(dir)
        .args(["--log", "info,camesh_node::net=warn"])
        .arg("run")
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .spawn()
        .expect("camesh-node starts");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let (mut peer, mut addr) = (None, None);
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(p) = line.strip_prefix("peer id: ") {
                peer = p.trim().parse::<PeerId>().ok();
            } else if let Some(a) = line.strip_prefix("listening: ") {
                addr = addr.or_else(|| a.trim().parse::<Multiaddr>().ok());
            } else if line.starts_with("recordings: ") {
                let _ = tx.send((peer, addr));
                // Keep draining so the pipe never fills.
                peer = None;
                addr = None;
            }
        }
    });
    let (peer, addr) = rx.recv_timeout(T).expect("the NVR started within the time limit");
    NvrProc {
        child,
        peer: peer.expect("peer id printed"),
        addr: addr.expect("address printed"),
    }
}

fn log_text(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("nvr.log")).unwrap_or_default()
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

/// Checks every segment file: all but the newest (being written) are sealed with every
/// record valid; the newest may end in a record being written. Returns the file count.
fn check_segments(recordings: &Path) -> usize {
    let dir = recordings.join("segments").join(CAM);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("segments folder")
        .map(|e| e.expect("entry").path())
        .collect();
    assert!(
        !files.iter().any(|p| p.extension().is_some_and(|e| e == "bad")),
        "a segment was quarantined as unreadable: {files:?}"
    );
    files.retain(|p| p.extension().is_some_and(|e| e == "cseg"));
    files.sort();
    let n = files.len();
    for (i, path) in files.iter().enumerate() {
        let scan = scan_segment(path, String::new()).expect("segment header readable");
        if i + 1 < n {
            assert!(scan.summary.sealed, "{} is not sealed", path.display());
            assert_eq!(scan.stop, None, "{} has a bad record", path.display());
        } else if let Some(stop) = &scan.stop {
            assert!(stop.truncated, "newest segment {} is corrupt: {stop:?}", path.display());
        }
    }
    n
}

/// A pseudo-random number in `0..n` (no seed to replay: the kill moments differ per run,
/// which is the point; the failure message prints them).
fn random_below(n: u64) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_i64(now_unix_us());
    h.finish() % n
}

fn mesh(data: &Path, fleet_name: &str, bootstrap: &[Multiaddr], args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(bin("mesh"));
    cmd.arg("--data-dir")
        .arg(data)
        .args(["--fleet", fleet_name, "--fleet-root", &fleet(fleet_name).root_text()])
        .args(["--no-mdns", "--listen", "/ip4/127.0.0.1/udp/0/quic-v1"]);
    for b in bootstrap {
        cmd.arg("-b").arg(b.to_string());
    }
    cmd.args(args).output().expect("mesh runs")
}

/// A mesh data folder with playback and export rights on the camera.
fn mesh_folder(dir: &Path, fleet_name: &str) {
    let f = fleet(fleet_name);
    f.enroll_dir(dir, MemberRole::Viewer, "mesh", &[], 3600)
        .expect("enroll");
    f.grant_dir(dir, &[CAM.into()], Rights::PLAYBACK.union(Rights::EXPORT), 3600)
        .expect("grant");
}

fn secs(us: i64) -> String {
    format!("{}.{:06}", us / 1_000_000, us % 1_000_000)
}

fn ffprobe_json(path: &Path, entries: &str) -> serde_json::Value {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-count_frames",
            "-select_streams",
            "v:0",
            "-show_entries",
            entries,
        ])
        .args(["-of", "json"])
        .arg(path)
        .output()
        .expect("ffprobe runs");
    assert!(
        out.status.success(),
        "ffprobe: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("ffprobe json")
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("join")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_loses_nothing_older_than_the_fsync_interval() {
    init_tracing();
    assert!(have("ffprobe"), "ffprobe is needed (apt-get install ffmpeg)");
    const FLEET: &str = "t-nvr-kill";
    const KILLS: usize = 6;
    let fsync_ms = 500;
    // Camera → NVR delivery and the recorder's queue, on loopback: frames captured this
    // close to the kill may still be in flight, which no fsync can save.
    let in_flight_ms = 300;
    let dir = tempfile::tempdir().expect("tempdir");
    let cam = cam_node(&dir.path().join("cam"), FLEET).await;
    let cam_addr = cam.dial_addrs().await.expect("addrs").remove(0);
    let nvr_dir = dir.path().join("nvr");
    nvr_folder(&nvr_dir, FLEET, &cam_addr, |c| {
        c.nvr.fsync_interval_ms = fsync_ms;
        c.nvr.segment_duration_s = 2;
    });
    let recordings = nvr_dir.join("recordings");
    let t0 = now_unix_us();
    let mut v: Option<NodeHandle> = None;
    let mut kills = Vec::new();
    let mut last_nvr = None;
    for round in 0..=KILLS {
        let started = now_unix_us();
        let nvr = start_nvr(&nvr_dir);
        let viewer_node = match &v {
            Some(n) => {
                n.connect(nvr.addr.clone()).await.expect("viewer reconnects");
                n.clone()
            }
            None => {
                let n = viewer(&dir.path().join("viewer"), FLEET, std::slice::from_ref(&nvr.addr)).await;
                v = Some(n.clone());
                n
            }
        };
        assert!(
            wait_recording(&viewer_node, nvr.peer, started).await,
            "round {round}: recording did not resume by itself after the restart\n{}",
            log_text(&nvr_dir)
        );
        let files = check_segments(&recordings);
        assert!(files >= 1);
        if round == KILLS {
            last_nvr = Some(nvr);
            break;
        }
        // A random moment: 0.5 to 3.5 s into recording.
        let wait = 500 + random_below(3000);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        let at = now_unix_us();
        nvr.kill9();
        kills.push(at);
    }
    let v = v.expect("viewer");
    let nvr = last_nvr.expect("the NVR runs");
    let nvr_peer = nvr.peer;
    let log = log_text(&nvr_dir);
    let checks = log.matches("recordings checked after an unclean shutdown").count()
        + log.matches("recordings recovered after an unclean shutdown").count();
    assert!(
        checks >= KILLS,
        "the index was checked {checks} times after {KILLS} kills"
    );

    let frames = play_all(&v, nvr_peer, t0, now_unix_us()).await;
    assert!(!frames.is_empty());
    let mut sessions = vec![Vec::new(); KILLS + 1];
    for f in &frames {
        let i = kills.iter().position(|&k| f.capture <= k).unwrap_or(KILLS);
        sessions[i].push(f);
    }
    // Nothing twice, in capture order; each frame continues the one before it (frames the
    // camera skipped for this subscriber are counted in `skipped_before`) or is a keyframe
    // that starts again after a gap.
    for w in frames.windows(2) {
        assert!(
            w[1].capture > w[0].capture,
            "frame #{} is out of order or twice",
            w[1].seq
        );
        let continues = w[1].seq.saturating_sub(w[0].seq + 1) <= u64::from(w[1].skipped_before) && w[1].seq > w[0].seq;
        assert!(
            continues || w[1].keyframe,
            "frames missing after #{} (captured {}) with no keyframe to restart on; kills at {kills:?}",
            w[0].seq,
            w[0].capture
        );
    }
    assert!(frames[0].keyframe, "the recording starts on a P-frame");
    let (mut checked, mut worst_ms) = (0, 0);
    for (i, &kill) in kills.iter().enumerate() {
        let s = &sessions[i];
        assert!(!s.is_empty(), "nothing recorded before kill {i}: kills at {kills:?}");
        let last = s.last().map(|f| f.capture).unwrap_or(0);
        let lost_ms = (kill - last) / 1000;
        assert!(
            lost_ms <= i64::from(fsync_ms as u32) + in_flight_ms,
            "kill {i}: the last frame kept was captured {lost_ms} ms before the SIGKILL (fsync interval {fsync_ms} ms)"
        );
        checked += s.len();
        worst_ms = worst_ms.max(lost_ms);
    }
    eprintln!(
        "{KILLS} SIGKILLs survived; {checked} frames checked before the kills, {} in all; \
         newest frame lost at most {worst_ms} ms before a kill (fsync interval {fsync_ms} ms); kills at {kills:?}",
        frames.len()
    );

    // And it plays: the whole recording through `mesh play` decodes frame for frame.
    let mesh_dir = dir.path().join("mesh");
    mesh_folder(&mesh_dir, FLEET);
    let out = dir.path().join("all.h264");
    let (md, o, to) = (mesh_dir.clone(), out.clone(), kills[KILLS - 1]);
    let nvr_addr = vec![nvr.addr.clone()];
    let played = blocking(move || {
        mesh(
            &md,
            FLEET,
            &nvr_addr,
            &[
                "play",
                CAM,
                "--from",
                &secs(t0),
                "--to",
                &secs(to),
                "-o",
                o.to_str().expect("utf-8"),
            ],
        )
    })
    .await;
    let stderr = String::from_utf8_lossy(&played.stderr);
    assert!(played.status.success(), "mesh play: {stderr}");
    let summary = stderr.lines().find(|l| l.starts_with("play-summary")).expect("summary");
    let n: u64 = summary
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix("frames="))
        .and_then(|v| v.parse().ok())
        .expect("frame count");
    let expected = frames.iter().filter(|f| f.capture <= to).count() as u64;
    assert_eq!(n, expected, "mesh play and the library agree on the recording");
    let json = ffprobe_json(&out, "stream=codec_name,nb_read_frames");
    assert_eq!(
        json["streams"][0]["nb_read_frames"].as_str(),
        Some(n.to_string().as_str()),
        "{json}"
    );
    drop(nvr);
    cam.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_index_is_rebuilt_and_playback_is_unchanged() {
    init_tracing();
    const FLEET: &str = "t-nvr-index";
    let dir = tempfile::tempdir().expect("tempdir");
    let cam = cam_node(&dir.path().join("cam"), FLEET).await;
    let cam_addr = cam.dial_addrs().await.expect("addrs").remove(0);
    let nvr_dir = dir.path().join("nvr");
    nvr_folder(&nvr_dir, FLEET, &cam_addr, |c| {
        c.nvr.fsync_interval_ms = 200;
        c.nvr.segment_duration_s = 2;
    });
    let t0 = now_unix_us();
    let nvr = start_nvr(&nvr_dir);
    let v = viewer(&dir.path().join("viewer"), FLEET, std::slice::from_ref(&nvr.addr)).await;
    // Several segments' worth: wait until 6 s after the first frame are recorded.
    assert!(wait_recording(&v, nvr.peer, t0).await, "{}", log_text(&nvr_dir));
    let first = play_all(&v, nvr.peer, t0, now_unix_us()).await[0].capture;
    assert!(wait_recording(&v, nvr.peer, first + 6_000_000).await);
    let to = first + 5_000_000;
    let before = play_all(&v, nvr.peer, t0, to).await;
    let peer = nvr.peer;
    nvr.kill9();
    let index = nvr_dir.join("recordings").join("index");
    assert!(index.is_dir());
    std::fs::remove_dir_all(&index).expect("index deleted");
    let restarted = now_unix_us();
    let nvr = start_nvr(&nvr_dir);
    assert_eq!(nvr.peer, peer);
    v.connect(nvr.addr.clone()).await.expect("reconnect");
    assert!(
        wait_recording(&v, nvr.peer, restarted).await,
        "recording resumes\n{}",
        log_text(&nvr_dir)
    );
    let after = play_all(&v, nvr.peer, t0, to).await;
    assert!(before.len() >= 120, "{} frames in 5 s", before.len());
    assert_eq!(after.len(), before.len(), "same number of frames after the rebuild");
    assert!(
        after == before,
        "the rebuilt index plays the same frames, byte for byte"
    );
    assert!(index.is_dir(), "the index was recreated");
    assert!(log_text(&nvr_dir).contains("after an unclean shutdown"));
    cam.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_quota_deletes_the_oldest_unlocked_video_and_keeps_locks_and_the_newest() {
    init_tracing();
    const FLEET: &str = "t-nvr-quota";
    // The clip is ~43 kB/s: the quota holds ~7 s; the test records well over twice that.
    let quota: u64 = 300_000;
    let dir = tempfile::tempdir().expect("tempdir");
    let cam = cam_node(&dir.path().join("cam"), FLEET).await;
    let cam_addr = cam.dial_addrs().await.expect("addrs").remove(0);
    let nvr_dir = dir.path().join("nvr");
    nvr_folder(&nvr_dir, FLEET, &cam_addr, |c| {
        c.nvr.fsync_interval_ms = 200;
        c.nvr.segment_duration_s = 1;
        c.nvr.retention_interval_s = 1;
        c.nvr.quota_bytes = quota;
    });
    let t0 = now_unix_us();
    let nvr = start_nvr(&nvr_dir);
    let v = viewer(&dir.path().join("viewer"), FLEET, std::slice::from_ref(&nvr.addr)).await;
    assert!(wait_recording(&v, nvr.peer, t0).await, "{}", log_text(&nvr_dir));
    let early = play_all(&v, nvr.peer, t0, now_unix_us()).await;
    let first = early[0].capture;
    assert!(wait_recording(&v, nvr.peer, first + 3_000_000).await);
    // Lock a second of the third GOP as evidence, with `mesh lock`: the two GOPs before
    // it are the oldest unlocked video.
    let (lock_from, lock_to) = (first + 4_200_000, first + 5_200_000);
    let mesh_dir = dir.path().join("mesh");
    mesh_folder(&mesh_dir, FLEET);
    assert!(wait_recording(&v, nvr.peer, lock_to + 1_000_000).await);
    let (md, addr) = (mesh_dir.clone(), nvr.addr.clone());
    let out = blocking(move || {
        mesh(
            &md,
            FLEET,
            &[addr],
            &[
                "lock",
                CAM,
                "--from",
                &secs(lock_from),
                "--to",
                &secs(lock_to),
                "--reason",
                "incident 42",
            ],
        )
    })
    .await;
    assert!(
        out.status.success(),
        "mesh lock: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let locked_before = play_all(&v, nvr.peer, lock_from, lock_to).await;
    assert!(!locked_before.is_empty());

    // Record until retention has deleted the oldest video and some after the lock.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    let mut spans = Vec::new();
    while tokio::time::Instant::now() < deadline {
        spans = client::recordings(v.reach(), nvr.peer, CAM, first, 0)
            .await
            .expect("coverage")
            .spans;
        let oldest_gone = spans
            .first()
            .is_some_and(|s| !s.recorded && s.to_unix_us >= first + 3_500_000);
        // Not the last span: that is the index catching up with the newest frames.
        let inner = &spans[..spans.len().saturating_sub(1)];
        let gap_after_lock = inner.iter().any(|s| !s.recorded && s.from_unix_us > lock_to);
        if oldest_gone && gap_after_lock {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let oldest_gone = spans
        .first()
        .is_some_and(|s| !s.recorded && s.to_unix_us >= first + 3_500_000);
    assert!(oldest_gone, "the oldest unlocked video was not deleted: {spans:?}");
    assert!(
        spans[..spans.len() - 1]
            .iter()
            .any(|s| !s.recorded && s.from_unix_us > lock_to),
        "nothing after the lock was deleted: {spans:?}"
    );
    // Oldest first: besides the locked video, what is left is one run up to the newest.
    let unlocked: Vec<_> = spans
        .iter()
        .filter(|s| s.recorded && !(s.from_unix_us <= lock_to && lock_from <= s.to_unix_us))
        .collect();
    assert_eq!(unlocked.len(), 1, "video was deleted out of order: {spans:?}");
    assert!(
        spans.iter().rev().take(2).any(|s| s.recorded),
        "the newest video is recorded: {spans:?}"
    );
    // `mesh recordings` tells the same story: the lock, the deleted hole, the recording.
    let (md, addr) = (mesh_dir.clone(), nvr.addr.clone());
    let listed = blocking(move || {
        mesh(
            &md,
            FLEET,
            &[addr],
            &["recordings", CAM, "--from", &secs(first), "--json"],
        )
    })
    .await;
    assert!(
        listed.status.success(),
        "mesh recordings: {}",
        String::from_utf8_lossy(&listed.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&listed.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert!(
        lines.iter().any(|l| l["lock"].is_u64() && l["reason"] == "incident 42"),
        "{lines:?}"
    );
    assert!(lines.iter().any(|l| l["recorded"] == false), "{lines:?}");
    assert!(lines.iter().any(|l| l["recorded"] == true), "{lines:?}");
    // The locked range is all still there, frame for frame.
    let locked_after = play_all(&v, nvr.peer, lock_from, lock_to).await;
    assert!(locked_after == locked_before, "locked evidence changed");
    // The newest video keeps being recorded, and the disk stays near the quota.
    let now = now_unix_us();
    assert!(
        wait_recording(&v, nvr.peer, now + 2_000_000).await,
        "newest video is recorded"
    );
    let newest = play_all(&v, nvr.peer, now, now_unix_us()).await;
    assert!(
        newest.len() >= 30,
        "{} frames recorded after the deletions",
        newest.len()
    );
    let on_disk: u64 = std::fs::read_dir(nvr_dir.join("recordings/segments").join(CAM))
        .expect("segments")
        .map(|e| e.expect("entry").metadata().expect("meta").len())
        .sum();
    // Quota + the locked segments + the segment being written (a 1 s segment is ~45 kB).
    assert!(
        on_disk <= quota + 200_000,
        "{on_disk} bytes on disk with a {quota}-byte quota"
    );
    // Ctrl-C closes the recordings cleanly: the next start has nothing to check.
    assert!(blocking(move || nvr.interrupt()).await, "the NVR exits on SIGINT");
    let unclean = log_text(&nvr_dir).matches("after an unclean shutdown").count();
    assert!(log_text(&nvr_dir).contains("recordings closed cleanly"));
    let nvr = start_nvr(&nvr_dir);
    assert_eq!(log_text(&nvr_dir).matches("after an unclean shutdown").count(), unclean);
    drop(nvr);
    cam.shutdown();
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
    mesh_folder(&mesh_dir, fleet_name);
    (dir, cam, nvr_dir, nvr, v, first)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_is_a_standard_mp4_and_a_tampered_segment_fails_verify() {
    init_tracing();
    assert!(have("ffprobe"), "ffprobe is needed (apt-get install ffmpeg)");
    const FLEET: &str = "t-nvr-export";
    let (dir, cam, nvr_dir, nvr, v, first) = recorded(FLEET).await;
    // A chosen range (scaled down from a minute): 3.5 s starting mid-recording.
    let (from, to) = (first + 2_500_000, first + 6_000_000);
    let frames = play_all(&v, nvr.peer, t_before(from), to).await;
    let kf = frames
        .iter()
        .filter(|f| f.keyframe && f.capture <= from)
        .map(|f| f.capture)
        .max()
        .expect("a keyframe before the range");
    let expected = frames.iter().filter(|f| f.capture >= kf && f.capture <= to).count();
    assert!(expected >= 90, "{expected} frames in the range");

    let mesh_dir = dir.path().join("mesh");
    let mp4 = dir.path().join("incident.mp4");
    let (md, addr, out) = (mesh_dir.clone(), nvr.addr.clone(), mp4.clone());
    let exported = blocking(move || {
        mesh(
            &md,
            FLEET,
            &[addr],
            &[
                "export",
                CAM,
                "--from",
                &secs(from),
                "--to",
                &secs(to),
                "-o",
                out.to_str().expect("utf-8"),
            ],
        )
    })
    .await;
    let stderr = String::from_utf8_lossy(&exported.stderr);
    assert!(exported.status.success(), "mesh export: {stderr}");
    assert!(stderr.contains("exporting:"), "progress is shown: {stderr}");
    let json = ffprobe_json(
        &mp4,
        "stream=codec_name,width,height,nb_read_frames,duration,avg_frame_rate",
    );
    let s = &json["streams"][0];
    assert_eq!(s["codec_name"], "h264");
    assert_eq!((s["width"].as_u64(), s["height"].as_u64()), (Some(640), Some(360)));
    assert_eq!(
        s["nb_read_frames"].as_str(),
        Some(expected.to_string().as_str()),
        "{json}"
    );
    let duration: f64 = s["duration"].as_str().and_then(|d| d.parse().ok()).expect("duration");
    let want = expected as f64 / 30.0;
    assert!(
        (duration - want).abs() < 0.5 / 30.0,
        "duration {duration} s, expected {want} s"
    );
    eprintln!("export: {expected} frames, {duration} s, ffprobe agrees");

    // The signed manifest checks out (signature, NVR certificate, segments, MP4)...
    let manifest = dir.path().join("incident.manifest.json");
    let (md, m) = (mesh_dir.clone(), manifest.clone());
    let ok = blocking(move || mesh(&md, FLEET, &[], &["verify", m.to_str().expect("utf-8")])).await;
    let stdout = String::from_utf8_lossy(&ok.stdout);
    assert!(ok.status.success(), "verify: {}", String::from_utf8_lossy(&ok.stderr));
    assert!(
        stdout.starts_with("OK:") && stdout.contains("and the MP4") && stdout.contains("fleet root"),
        "{stdout}"
    );
    assert!(stdout.contains("camera-signed: "), "{stdout}");
    let attested: u64 = stdout
        .split("camera-signed: ")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("attested frame count");
    assert!(attested >= 60, "at least a GOP is camera-signed: {stdout}");
    eprintln!("verify: {}", stdout.trim());

    // A dishonest NVR: one frame changed (record checksum fixed) and the manifest re-signed
    // with the NVR's own key. The NVR's signature checks out; the camera's does not.
    let segs = dir.path().join("incident.segments").join(CAM);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&segs)
        .expect("segments exported")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    let victim = files[files.len() / 2].clone();
    let mut reader = SegmentReader::open(&victim).expect("segment opens");
    let mut frames_in = Vec::new();
    while let Some((offset, rec, _)) = reader.next_record().expect("valid records") {
        if let Record::Frame(f) = rec {
            frames_in.push((offset, f));
        }
    }
    let (offset, mut f) = frames_in[frames_in.len() / 2].clone();
    let mut payload = f.payload.to_vec();
    let mid = payload.len() / 2;
    payload[mid] ^= 0x01;
    f.payload = payload.into();
    let mut rec = Vec::new();
    encode_record(&Record::Frame(f), &mut rec).expect("encodes");
    let mut bytes = std::fs::read(&victim).expect("read");
    let at = usize::try_from(offset).expect("offset");
    bytes[at..at + rec.len()].copy_from_slice(&rec);
    std::fs::write(&victim, &bytes).expect("tamper");
    let original = Manifest::from_json(&std::fs::read(&manifest).expect("manifest")).expect("parses");
    let summaries: Vec<_> = original
        .body
        .segments
        .iter()
        .map(|h| {
            let path = dir.path().join("incident.segments").join(&h.file);
            scan_segment(&path, h.file.clone()).expect("scans").summary
        })
        .collect();
    let nvr_key = camesh_node::identity::load_or_create(&nvr_dir).expect("the NVR's key");
    let mut forged = Manifest::build(
        &dir.path().join("incident.segments"),
        CAM,
        original.body.from_us,
        original.body.to_us,
        &summaries,
        Some(&mp4),
        &nvr_key,
    )
    .expect("re-signed");
    forged.signer_cert = original.signer_cert.clone();
    std::fs::write(&manifest, forged.to_json()).expect("forged manifest");
    let (md, m) = (mesh_dir.clone(), manifest.clone());
    let bad = blocking(move || mesh(&md, FLEET, &[], &["verify", m.to_str().expect("utf-8")])).await;
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success(), "a re-signed tampered export passed verify");
    assert!(err.contains("do not match the camera-signed digest"), "{err}");

    // ...and one changed byte in another source segment fails the manifest itself.
    let victim = files[0].clone();
    let mut bytes = std::fs::read(&victim).expect("read");
    let i = bytes.len() / 2;
    bytes[i] ^= 0x01;
    std::fs::write(&victim, &bytes).expect("tamper");
    let (md, m) = (mesh_dir.clone(), manifest.clone());
    let bad = blocking(move || mesh(&md, FLEET, &[], &["verify", m.to_str().expect("utf-8")])).await;
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success(), "a tampered segment passed verify");
    assert!(err.contains("does not match the manifest"), "{err}");

    // A range with no footage is a clear error, not an empty file.
    let (md, addr, out) = (mesh_dir.clone(), nvr.addr.clone(), dir.path().join("none.mp4"));
    let none = blocking(move || {
        mesh(
            &md,
            FLEET,
            &[addr],
            &[
                "export",
                CAM,
                "--from",
                &secs(first - 3_600_000_000),
                "--to",
                &secs(first - 3_000_000_000),
                "-o",
                out.to_str().expect("utf-8"),
            ],
        )
    })
    .await;
    let err = String::from_utf8_lossy(&none.stderr);
    assert!(!none.status.success() && err.contains("no footage"), "{err}");
    assert!(!dir.path().join("none.mp4").exists());
    drop(nvr);
    cam.shutdown();
}

/// A little before `t`: playback from here includes the keyframe at or before `t`.
fn t_before(t: i64) -> i64 {
    t - 3_000_000
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn playback_from_the_middle_of_a_gop_starts_on_the_keyframe_before_it() {
    init_tracing();
    assert!(have("ffprobe"), "ffprobe is needed (apt-get install ffmpeg)");
    const FLEET: &str = "t-nvr-seek";
    let (dir, cam, _nvr_dir, nvr, v, first) = recorded(FLEET).await;
    let frames = play_all(&v, nvr.peer, first, first + 7_000_000).await;
    // A keyframe with a whole GOP after it, and a moment half-way to the next keyframe.
    let keys: Vec<&Played> = frames.iter().filter(|f| f.keyframe).collect();
    assert!(keys.len() >= 3, "{} keyframes", keys.len());
    let (kf, next) = (keys[1], keys[2]);
    let from = kf.capture + (next.capture - kf.capture) / 2;
    let in_gop = frames
        .iter()
        .filter(|f| f.capture >= kf.capture && f.capture < next.capture)
        .count();
    assert!(in_gop > 2 && !frames.iter().any(|f| f.capture == from && f.keyframe));

    let out = dir.path().join("seek.h264");
    let (md, addr, o) = (dir.path().join("mesh"), nvr.addr.clone(), out.clone());
    let to = next.capture + 500_000;
    let played = blocking(move || {
        mesh(
            &md,
            FLEET,
            &[addr],
            &[
                "play",
                CAM,
                "--from",
                &secs(from),
                "--to",
                &secs(to),
                "-o",
                o.to_str().expect("utf-8"),
            ],
        )
    })
    .await;
    let stderr = String::from_utf8_lossy(&played.stderr);
    assert!(played.status.success(), "mesh play: {stderr}");
    let summary = stderr.lines().find(|l| l.starts_with("play-summary")).expect("summary");
    assert!(summary.contains("first_keyframe=true"), "{summary}");
    assert!(
        summary.contains(&format!("first_us={} ", kf.capture)),
        "starts at the keyframe before: {summary}"
    );
    let expected = frames
        .iter()
        .filter(|f| f.capture >= kf.capture && f.capture <= to)
        .count();
    assert!(
        summary.contains(&format!("frames={expected} ")),
        "{summary} (expected {expected})"
    );
    // ffprobe decodes it from the first frame, which is an I-frame.
    let json = ffprobe_json(&out, "frame=pict_type,key_frame");
    let first_frame = &json["frames"][0];
    assert_eq!(first_frame["key_frame"].as_u64(), Some(1), "{first_frame}");
    assert_eq!(first_frame["pict_type"], "I");
    assert_eq!(json["frames"].as_array().map(Vec::len), Some(expected));
    drop(nvr);
    cam.shutdown();
}
