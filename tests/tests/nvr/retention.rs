//! Retention: a small quota deletes the oldest unlocked video first, keeps a range
//! locked with `mesh lock` frame for frame and the newest video, and `mesh recordings`
//! tells the same story; Ctrl-C closes the recordings cleanly.

use std::time::Duration;

use camesh_node::clock::now_unix_us;
use camesh_node::nvr::client;
use camesh_tests::cli::run_mesh;
use camesh_tests::*;

use super::daemon::{log_text, nvr_folder, start_nvr};
use super::{blocking, cam_node, enroll_mesh, play_all, secs, viewer, wait_recording, CAM};

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
    enroll_mesh(&mesh_dir, FLEET);
    assert!(wait_recording(&v, nvr.peer, lock_to + 1_000_000).await);
    let out = run_mesh(
        &mesh_dir,
        FLEET,
        std::slice::from_ref(&nvr.addr),
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
    let listed = run_mesh(
        &mesh_dir,
        FLEET,
        std::slice::from_ref(&nvr.addr),
        &["recordings", CAM, "--from", &secs(first), "--json"],
    )
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
    // Locks have their own right and bounds, and an audited unlock: the viewer with
    // playback and export cannot lock; nobody locks two days at once; the lock is removed
    // with its reason.
    let denied = camesh_node::nvr::client::lock(v.reach(), nvr.peer, CAM, lock_from, lock_to, "no right").await;
    assert!(denied.is_err(), "export alone locked: {denied:?}");
    let too_long = run_mesh(
        &mesh_dir,
        FLEET,
        std::slice::from_ref(&nvr.addr),
        &["lock", CAM, "--from", "-48h", "--reason", "everything"],
    )
    .await;
    let err = String::from_utf8_lossy(&too_long.stderr);
    assert!(!too_long.status.success() && err.contains("at most 24 h"), "{err}");
    let id = lines
        .iter()
        .find_map(|l| l["lock"].as_u64())
        .expect("the lock's id")
        .to_string();
    let unlocked = run_mesh(
        &mesh_dir,
        FLEET,
        std::slice::from_ref(&nvr.addr),
        &["unlock", CAM, "--id", &id, "--reason", "case 42 closed"],
    )
    .await;
    assert!(
        unlocked.status.success(),
        "mesh unlock: {}",
        String::from_utf8_lossy(&unlocked.stderr)
    );
    let audit = std::fs::read_to_string(nvr_dir.join("audit.log")).expect("NVR audit log");
    assert!(audit.contains("\"locked\"") && audit.contains("incident 42"), "{audit}");
    assert!(
        audit.contains("\"unlocked\"") && audit.contains("case 42 closed"),
        "{audit}"
    );
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
