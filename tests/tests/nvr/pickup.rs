//! A grant installed into a running NVR: the NVR starts without one (and says so), the
//! grant is installed with `mesh grant-install` in its data folder (no fleet.toml there:
//! the fleet comes from its config.toml), and the same process starts recording; the
//! segments it writes are checked.

use std::process::Command;

use camesh_node::auth::grant::GrantRequest;
use camesh_node::auth::{invite::bs58_encode, now_s, signed, Rights};
use camesh_node::clock::now_unix_us;
use camesh_tests::*;

use super::daemon::{check_segments, log_text, nvr_folder_without_grant, start_nvr};
use super::{cam_node, viewer, wait_recording, CAM, T};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_installed_into_a_running_nvr_starts_recording_without_a_restart() {
    init_tracing();
    const FLEET: &str = "t-nvr-pickup";
    let dir = tempfile::tempdir().expect("tempdir");
    let cam = cam_node(&dir.path().join("cam"), FLEET).await;
    let cam_addr = cam.dial_addrs().await.expect("addrs").remove(0);
    let nvr_dir = dir.path().join("nvr");
    nvr_folder_without_grant(&nvr_dir, FLEET, &cam_addr, |c| {
        c.nvr.fsync_interval_ms = 200;
        c.nvr.segment_duration_s = 3;
    });
    let mut nvr = start_nvr(&nvr_dir);
    let waiting = wait_until(T, || log_text(&nvr_dir).contains("no grant with the record right")).await;
    assert!(waiting, "the NVR says what it lacks: {}", log_text(&nvr_dir));
    let segments = nvr_dir.join("recordings").join("segments").join(CAM);
    let cseg = || {
        std::fs::read_dir(&segments)
            .map(|rd| {
                rd.flatten()
                    .filter(|e| e.path().extension().is_some_and(|x| x == "cseg"))
                    .count()
            })
            .unwrap_or(0)
    };
    assert_eq!(cseg(), 0, "nothing recorded without a grant");

    // The grant as `mesh grant` prints it, installed as its operator would.
    let g = fleet(FLEET).grant(&GrantRequest {
        holder: nvr.peer,
        cameras: vec![CAM.into()],
        tags: vec![],
        rights: Rights::LIVE.union(Rights::RECORD),
        not_before_unix_s: now_s() - 60,
        not_after_unix_s: now_s() + 3600,
    });
    let text = format!("camesh-grant:{}", bs58_encode(&signed::encode(&g)));
    let installed_at = now_unix_us();
    let out = Command::new(bin("mesh"))
        .env_remove("CAMESH_FLEET")
        .env_remove("CAMESH_FLEET_ROOT")
        .arg("--data-dir")
        .arg(&nvr_dir)
        .args(["grant-install", &text])
        .output()
        .expect("mesh runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "grant-install: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("installed grant"), "{stdout}");

    // The running NVR picks it up and records; a viewer sees it in the recordings.
    let v = viewer(&dir.path().join("viewer"), FLEET, std::slice::from_ref(&nvr.addr)).await;
    assert!(
        wait_recording(&v, nvr.peer, installed_at).await,
        "recording after the grant was installed: {}",
        log_text(&nvr_dir)
    );
    assert!(wait_until(T, || cseg() > 0).await, "segment files appear");
    assert!(check_segments(&nvr_dir.join("recordings")) > 0);
    assert!(nvr.running(), "the same NVR process, never restarted");
    let log = log_text(&nvr_dir);
    assert_eq!(log.matches("node started").count(), 1, "{log}");
    assert!(log.contains("grant installed"), "{log}");
    v.shutdown();
    cam.shutdown();
}
