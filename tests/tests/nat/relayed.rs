//! Video that stays on relays: a symmetric NAT keeps it on the relay for minutes, past
//! libp2p's default circuit limits; the viewer resumes through another relay when its
//! relay dies, and by itself when the camera behind the NAT restarts.

use std::time::Duration;

use camesh_tests::netns::{Nat, NatLab};

use super::frames::{read_frames, wait_frames};
use super::lab::{camera_node, circuit, relay_node, watch, watch_via};
use super::{now_us, skip, CLIP};

/// A camera behind a symmetric NAT cannot be punched: its video flows over the relay
/// for 2.5 minutes and several MiB, past libp2p's default circuit limits (2 min,
/// 128 KiB) that would have cut it, without an interruption.
#[test]
fn symmetric_nat_video_stays_on_the_relay_for_minutes() {
    if skip("symmetric_nat_video_stays_on_the_relay_for_minutes") {
        return;
    }
    const SECS: u64 = 150;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut lab = NatLab::new("sy").expect("lab");
    let relay_host = lab.public("relay").expect("relay host");
    let cam_site = lab.behind_nat("cam", Nat::Symmetric).expect("camera NAT");
    let view_site = lab.behind_nat("view", Nat::Cone).expect("viewer NAT");
    let mut relay = relay_node(dir.path(), "relay", &relay_host);
    let cam = camera_node(dir.path(), &cam_site.host, &[&relay], CLIP);
    let (mut viewer, frames) = watch_via(dir.path(), &view_site.host, &relay, &cam, SECS);
    let status = viewer.wait_exit(Duration::from_secs(SECS + 60));
    let out = viewer.output();
    let log = read_frames(&frames);
    let bytes: u64 = log.frames.iter().map(|f| f.bytes).sum();
    let (holes, repeats) = log.holes_and_repeats();
    let relay_out = relay.proc.output();
    println!(
        "symmetric NAT over the relay: {} frames, {:.1} MiB in {:.1} min; holes {holes}, repeats {repeats}, \
         restarts {}, moved direct: {}",
        log.frames.len(),
        bytes as f64 / f64::from(1 << 20),
        log.span().as_secs_f64() / 60.0,
        log.started.len(),
        out.contains("stream moved to the direct path")
    );
    assert!(
        status.is_some_and(|s| s.success()),
        "mesh watch failed: {status:?}\n{out}"
    );
    assert!(
        relay_out.contains("relay circuit opened"),
        "no circuit on the relay:\n{relay_out}"
    );
    assert!(
        !out.contains("stream moved to the direct path"),
        "a symmetric NAT was punched?\n{out}"
    );
    assert!(
        log.interrupted.is_empty(),
        "the relay cut the video: {:?}",
        log.interrupted
    );
    assert_eq!(log.started.len(), 1);
    assert!(
        log.span() > Duration::from_secs(130),
        "video lasted only {:?}",
        log.span()
    );
    assert!(bytes > 20 * 128 * 1024, "only {bytes} bytes");
    // Still flowing at the end: the last frame came within the last seconds.
    let (gap, _) = log.max_gap_after(0);
    assert!(gap < Duration::from_secs(3), "video stalled for {gap:?}");
    relay.proc.kill();
    drop(cam);
}

/// The relay carrying the video is killed (SIGKILL): the viewer notices the silence,
/// drops the dead path and resumes through the camera's second relay. When the relay
/// comes back, the camera holds a reservation on it again.
#[test]
fn viewer_resumes_through_another_relay_when_the_relay_dies() {
    if skip("viewer_resumes_through_another_relay_when_the_relay_dies") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let mut lab = NatLab::new("rk").expect("lab");
    let r1_host = lab.public("relay1").expect("relay host");
    let r2_host = lab.public("relay2").expect("relay host");
    let cam_site = lab.behind_nat("cam", Nat::Symmetric).expect("camera NAT");
    let view_site = lab.behind_nat("view", Nat::Cone).expect("viewer NAT");
    let mut r1 = relay_node(dir.path(), "relay1", &r1_host);
    let r2 = relay_node(dir.path(), "relay2", &r2_host);
    let cam = camera_node(dir.path(), &cam_site.host, &[&r1, &r2], CLIP);
    let (mut viewer, frames) = watch(
        dir.path(),
        "viewer",
        &view_site.host,
        &[r1.addr.clone(), r2.addr.clone(), circuit(&r1, &cam)],
        25,
    );
    assert!(
        wait_frames(&frames, 90, Duration::from_secs(30)),
        "no video over relay 1:\n{}",
        viewer.output()
    );
    assert!(
        r1.proc.output().contains("relay circuit opened"),
        "video not on relay 1"
    );
    r1.proc.kill();
    let killed = now_us();
    let status = viewer.wait_exit(Duration::from_secs(60));
    let out = viewer.output();
    let log = read_frames(&frames);
    let (gap, resumed_at) = log.max_gap_after(killed);
    let after = log.frames.iter().filter(|f| f.recv_us > resumed_at).count();
    println!(
        "relay killed: video resumed {:.2}s after the kill, gap {:.2}s (target 2 s); {after} frames after; \
         relay 2 carried it: {}",
        (resumed_at - killed) as f64 / 1e6,
        gap.as_secs_f64(),
        r2.proc.output().contains("relay circuit opened")
    );
    assert!(
        status.is_some_and(|s| s.success()),
        "mesh watch failed: {status:?}\n{out}"
    );
    assert!(resumed_at > killed, "no video after the relay died:\n{out}");
    assert!(gap < Duration::from_secs(6), "resumed only after {gap:?}:\n{out}");
    assert!(after >= 90, "only {after} frames after resuming");
    assert!(
        r2.proc.output().contains("relay circuit opened"),
        "relay 2 did not carry the video"
    );
    let (_, repeats) = log.holes_and_repeats();
    assert_eq!(repeats, 0, "frames repeated after resuming");
    // The relay restarts (same identity): the camera dials it again and re-reserves.
    let r1 = relay_node(dir.path(), "relay1", &r1_host);
    let again = format!("relay reservation accepted relay={}", r1.peer);
    let deadline = std::time::Instant::now() + Duration::from_secs(40);
    while cam.proc.output().matches(&again).count() < 2 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        cam.proc.output().matches(&again).count(),
        2,
        "no reservation on the restarted relay:\n{}",
        cam.proc.output()
    );
}

/// The camera (behind a symmetric NAT, so only reachable through the relay) is killed
/// and started again: it reserves a relay slot anew and the viewer, which noticed the
/// silence, reaches it through the relay again by itself.
#[test]
fn viewer_resumes_when_a_camera_behind_nat_restarts() {
    if skip("viewer_resumes_when_a_camera_behind_nat_restarts") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let mut lab = NatLab::new("cr").expect("lab");
    let relay_host = lab.public("relay").expect("relay host");
    let cam_site = lab.behind_nat("cam", Nat::Symmetric).expect("camera NAT");
    let view_site = lab.behind_nat("view", Nat::Cone).expect("viewer NAT");
    let relay = relay_node(dir.path(), "relay", &relay_host);
    let mut cam = camera_node(dir.path(), &cam_site.host, &[&relay], CLIP);
    let (mut viewer, frames) = watch_via(dir.path(), &view_site.host, &relay, &cam, 25);
    assert!(
        wait_frames(&frames, 90, Duration::from_secs(30)),
        "no video over the relay:\n{}",
        viewer.output()
    );
    cam.proc.kill();
    let killed = now_us();
    let cam = camera_node(dir.path(), &cam_site.host, &[&relay], CLIP);
    let restarted = now_us();
    let status = viewer.wait_exit(Duration::from_secs(60));
    let out = viewer.output();
    let log = read_frames(&frames);
    let (gap, resumed_at) = log.max_gap_after(killed);
    let after = log.frames.iter().filter(|f| f.recv_us > resumed_at).count();
    println!(
        "camera restarted behind NAT: back up (reserved) {:.2}s after the kill; video resumed {:.2}s after the \
         kill, {:.2}s after the camera was back; {after} frames after",
        (restarted - killed) as f64 / 1e6,
        (resumed_at - killed) as f64 / 1e6,
        (resumed_at - restarted) as f64 / 1e6,
    );
    assert!(
        status.is_some_and(|s| s.success()),
        "mesh watch failed: {status:?}\n{out}"
    );
    assert!(resumed_at > restarted, "no video after the restart:\n{out}");
    assert!(gap < Duration::from_secs(10), "resumed only after {gap:?}:\n{out}");
    assert!(after >= 90, "only {after} frames after resuming:\n{out}");
    drop(cam);
}
