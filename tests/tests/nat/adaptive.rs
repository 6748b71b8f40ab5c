//! Adaptive live (#16, item 4) over a thin link: `mesh watch --profile auto` behind a
//! 256 kbit/s token bucket settles on the camera's sub stream, and goes back to main when
//! the link is raised, with every frame of the written video decodable.
//!
//! The figures are a 4 Mbit/s main and a 300 kbit/s sub on a 256 kbit/s link; a
//! 300 kbit/s sub cannot fit 256 kbit/s either (it would skip keyframes as main does), so
//! the sub here is a 320x180 stream of about 100 kbit/s, and main is the 1280x720 clip
//! (about 1 Mbit/s: four times the link, which is what makes the link thin for it).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use camesh_node::config::Role;
use camesh_tests::netns::{Nat, NatLab};
use camesh_tests::{camera, ffmpeg::ffmpeg_decode, ffmpeg::ffprobe_json};

use super::frames::{read_frames, wait_frames};
use super::lab::{mesh, start_node, Spec};
use super::{now_us, skip, PORT};

const MAIN: &str = "cam-1280x720-30fps-gop1s.h264";

/// A 320x180, 30 fps, 1 s GOP Annex B clip of about 100 kbit/s (SPS/PPS before every IDR).
fn sub_clip(dir: &Path) -> std::path::PathBuf {
    let out = dir.join("sub-320x180.h264");
    let st = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i"])
        .arg("testsrc2=size=320x180:rate=30:duration=10,format=yuv420p")
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-tune",
            "zerolatency",
            "-b:v",
            "90k",
            "-maxrate",
            "110k",
            "-bufsize",
            "110k",
            "-bf",
            "0",
            "-g",
            "30",
            "-keyint_min",
            "30",
            "-sc_threshold",
            "0",
            "-x264-params",
            "repeat-headers=1",
            "-f",
            "h264",
        ])
        .arg(&out)
        .status()
        .expect("ffmpeg runs");
    assert!(st.success(), "ffmpeg made no sub clip");
    out
}

/// `(recv_us, profile)` of each switch in the frame log.
fn switches(log: &Path) -> Vec<(i64, String)> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("switched "))
        .map(|l| {
            let get = |k: &str| {
                l.split_whitespace()
                    .find_map(|w| w.strip_prefix(k)?.strip_prefix('='))
                    .unwrap_or("")
                    .to_owned()
            };
            (get("recv_us").parse().unwrap_or(0), get("profile"))
        })
        .collect()
}

fn wait_switch(log: &Path, to: &str, limit: Duration) -> Option<i64> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Some((t, _)) = switches(log).into_iter().rev().find(|(_, p)| p == to) {
            return Some(t);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    None
}

#[test]
fn auto_profile_settles_on_sub_over_a_thin_link_and_returns_to_main() {
    if skip("auto_profile_settles_on_sub_over_a_thin_link_and_returns_to_main") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let sub = sub_clip(dir.path());
    let mut lab = NatLab::new("ad").expect("lab");
    let cam_host = lab.public("cam").expect("camera host");
    let site = lab.behind_nat("view", Nat::Cone).expect("viewer NAT");
    let mut cam1 = camera("cam1", MAIN);
    cam1.sub_source = Some(sub);
    let cam = start_node(
        dir.path(),
        Spec {
            name: "cam",
            role: Role::Camera,
            host: &cam_host,
            relay_server: Some(false),
            relays: vec![],
            bootstrap: vec![],
            cameras: vec![cam1],
            lab_autonat: false,
        },
    );
    lab.set_rate(&site, 256).expect("rate");
    let frames = dir.path().join("viewer").join("frames.log");
    let video = dir.path().join("viewer").join("video.h264");
    std::fs::create_dir_all(dir.path().join("viewer")).expect("dir");
    let mut viewer = mesh(
        dir.path(),
        "viewer",
        &site.host,
        PORT,
        std::slice::from_ref(&cam.addr),
        &[
            "watch",
            "cam1",
            "--profile",
            "auto",
            "-o",
            video.to_str().expect("utf-8"),
            "--duration",
            "150s",
            "--frame-log",
            frames.to_str().expect("utf-8"),
        ],
    );
    assert!(
        wait_frames(&frames, 10, Duration::from_secs(30)),
        "no video:\n{}",
        viewer.output()
    );
    let first = read_frames(&frames).frames.first().map_or(0, |f| f.recv_us);
    let down = wait_switch(&frames, "sub", Duration::from_secs(40));
    let Some(down) = down else {
        panic!("never switched to sub on a 256 kbit/s link:\n{}", viewer.output());
    };
    println!(
        "256 kbit/s link: on sub {:.1} s after the first frame",
        (down - first) as f64 / 1e6
    );
    // Settled: sub keeps flowing for a while on the thin link.
    std::thread::sleep(Duration::from_secs(10));
    let on_sub = read_frames(&frames).frames.iter().filter(|f| f.recv_us > down).count();
    assert!(
        on_sub > 100,
        "sub stalled: {on_sub} frames in 10 s\n{}",
        viewer.output()
    );
    lab.set_rate(&site, 100_000).expect("raise the link");
    let raised = now_us();
    let up = wait_switch(&frames, "main", Duration::from_secs(90));
    let Some(up) = up.filter(|t| *t > raised) else {
        panic!(
            "never went back to main after the link was raised:\n{}",
            viewer.output()
        );
    };
    println!("link raised: on main again {:.1} s later", (up - raised) as f64 / 1e6);
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        viewer.interrupt(Duration::from_secs(10)).is_some(),
        "mesh watch did not stop on Ctrl-C"
    );
    let log = read_frames(&frames);
    let after_up = log.frames.iter().filter(|f| f.recv_us > up).count();
    assert!(
        after_up > 30,
        "main did not flow after the switch back: {after_up} frames"
    );
    let sw = switches(&frames);
    println!("switches: {sw:?}; frames {}", log.frames.len());
    // The written video (main, then sub, then main; each switch at a keyframe with its
    // SPS/PPS) decodes without an error.
    let decode = ffmpeg_decode(&video);
    let errors = String::from_utf8_lossy(&decode.stderr);
    assert!(
        decode.status.success() && errors.trim().is_empty(),
        "decode errors:\n{errors}"
    );
    let probe = ffprobe_json(&video, &["-count_frames", "-show_entries", "stream=nb_read_frames"]);
    let decoded: u64 = probe["streams"][0]["nb_read_frames"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    println!("ffprobe: {decoded} frames decoded of {} received", log.frames.len());
    assert!(
        decoded + 5 >= log.frames.len() as u64,
        "ffprobe decoded {decoded} frames"
    );
}
