//! A lossy, then squeezed, link on the camera's side: video keeps playing with bounded
//! latency, skipping to keyframes instead of building a backlog.

use std::time::Duration;

use camesh_tests::netns::{Nat, NatLab};

use super::frames::{latency_ms, read_frames, wait_frames, FrameLog};
use super::lab::{camera_node, relay_node, watch_via};
use super::{now_us, skip};

/// 10% packet loss each way on the camera's link (camera and viewer behind cone NATs,
/// punched to a direct path), then the same link squeezed below the stream's bitrate:
/// video keeps playing, and latency stays bounded because the source skips to the next
/// keyframe instead of queueing.
#[test]
fn video_plays_through_loss_and_a_squeezed_link_with_bounded_latency() {
    if skip("video_plays_through_loss_and_a_squeezed_link_with_bounded_latency") {
        return;
    }
    const HD: &str = "cam-1280x720-30fps-gop1s.h264"; // about 1 Mbit/s
    let dir = tempfile::tempdir().expect("tempdir");
    let mut lab = NatLab::new("ls").expect("lab");
    let relay_host = lab.public("relay").expect("relay host");
    let cam_site = lab.behind_nat("cam", Nat::Cone).expect("camera NAT");
    let view_site = lab.behind_nat("view", Nat::Cone).expect("viewer NAT");
    let relay = relay_node(dir.path(), "relay", &relay_host);
    let cam = camera_node(dir.path(), &cam_site.host, &[&relay], HD);
    let (mut viewer, frames) = watch_via(dir.path(), &view_site.host, &relay, &cam, 40);
    assert!(
        wait_frames(&frames, 60, Duration::from_secs(30)),
        "no video:\n{}",
        viewer.output()
    );
    std::thread::sleep(Duration::from_secs(2));
    lab.set_loss(&cam_site, 10).expect("loss");
    let lossy = now_us();
    std::thread::sleep(Duration::from_secs(12));
    lab.set_rate(&cam_site, 600).expect("rate");
    let squeezed = now_us();
    let status = viewer.wait_exit(Duration::from_secs(60));
    let out = viewer.output();
    let log = read_frames(&frames);
    let end = log.frames.last().map_or(0, |f| f.recv_us + 1);
    let (p50_l, max_l, n_l) = latency_ms(&log.frames, lossy, squeezed);
    // The squeezed phase, after the queue has had time to settle on keyframe skips.
    let (p50_s, max_s, n_s) = latency_ms(&log.frames, squeezed + 3_000_000, end);
    let skips_l: u64 = log
        .frames
        .iter()
        .filter(|f| f.recv_us >= lossy && f.recv_us < squeezed)
        .map(|f| f.skipped)
        .sum();
    // Frames skipped on the squeezed link: by the source (its queue overflowed) or by the
    // viewer (it reopened the stream at the newest keyframe): holes in the sequence.
    let skips_s = FrameLog {
        frames: log.frames.iter().filter(|f| f.recv_us >= squeezed).copied().collect(),
        ..Default::default()
    }
    .holes_and_repeats()
    .0;
    let (gap_l, _) = log.max_gap_after(lossy);
    println!(
        "10% loss: {n_l} frames in 12 s, latency p50 {p50_l:.1} ms max {max_l:.1} ms, skipped {skips_l}; \
         + 600 kbit/s: {n_s} frames, latency p50 {p50_s:.1} ms max {max_s:.1} ms, skipped {skips_s}; \
         longest gap {:.2}s; direct: {}",
        gap_l.as_secs_f64(),
        out.contains("direct path")
    );
    assert!(
        status.is_some_and(|s| s.success()),
        "mesh watch failed: {status:?}\n{out}"
    );
    // Keeps playing: at least a third of the frames at 10% loss, and video to the end.
    assert!(n_l >= 120, "only {n_l} frames in 12 s at 10% loss:\n{out}");
    assert!(n_s >= 10, "video stopped on the squeezed link:\n{out}");
    assert!(max_l < 2_000.0, "latency grew to {max_l} ms at 10% loss");
    // Bounded, not growing: no backlog of tens of seconds builds up.
    assert!(max_s < 5_000.0, "latency grew to {max_s} ms on the squeezed link");
    assert!(skips_s > 0, "a link slower than the stream, and nothing was skipped?");
    drop(cam);
}
