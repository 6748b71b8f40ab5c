//! Durability: SIGKILLs at random moments lose nothing older than the fsync interval
//! (and the whole recording still plays through `mesh play`), and a deleted index is
//! rebuilt with playback unchanged.

use std::time::Duration;

use camesh_node::clock::now_unix_us;
use camesh_node::NodeHandle;
use camesh_tests::*;

use super::daemon::{check_segments, log_text, nvr_folder, start_nvr};
use super::{cam_node, enroll_mesh, ffprobe_frames, mesh_range, play_all, viewer, wait_recording};

/// A pseudo-random number in `0..n` (no seed to replay: the kill moments differ per run,
/// which is the point; the failure message prints them).
fn random_below(n: u64) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_i64(now_unix_us());
    h.finish() % n
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
    enroll_mesh(&mesh_dir, FLEET);
    let out = dir.path().join("all.h264");
    let to = kills[KILLS - 1];
    let played = mesh_range(&mesh_dir, FLEET, &nvr.addr, "play", (t0, to), &out).await;
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
    let json = ffprobe_frames(&out, "stream=codec_name,nb_read_frames");
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
