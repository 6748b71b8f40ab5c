//! Hole punching between cone NATs: video starts over the relay and moves to the punched
//! direct path without a gap; fresh viewers mostly get a direct connection.

use std::time::Duration;

use camesh_tests::netns::{Nat, NatLab};

use super::frames::{first_log, read_frames, wait_frames, FrameLog};
use super::lab::{camera_node, circuit, mesh, relay_node, watch_via};
use super::{now_us, quic, skip, CLIP, PORT};

/// Camera and viewer behind two different cone NATs, the direct path cut at first:
/// video starts over the relay; once the path opens, a hole punch (retried by the
/// viewer's node) gives a direct connection and the stream moves over without a gap
/// or a repeated frame; the relayed connection is closed afterwards and video goes on.
#[test]
fn video_moves_from_the_relay_to_a_punched_direct_path_without_a_gap() {
    if skip("video_moves_from_the_relay_to_a_punched_direct_path_without_a_gap") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let mut lab = NatLab::new("sw").expect("lab");
    let relay_host = lab.public("relay").expect("relay host");
    let cam_site = lab.behind_nat("cam", Nat::Cone).expect("camera NAT");
    let view_site = lab.behind_nat("view", Nat::Cone).expect("viewer NAT");
    lab.block_direct(&cam_site, &view_site).expect("block");
    let relay = relay_node(dir.path(), "relay", &relay_host);
    let cam = camera_node(dir.path(), &cam_site.host, &[&relay], CLIP);
    let (mut viewer, frames) = watch_via(dir.path(), &view_site.host, &relay, &cam, 40);
    assert!(
        wait_frames(&frames, 60, Duration::from_secs(30)),
        "no video over the relay:\n{}",
        viewer.output()
    );
    let before = read_frames(&frames);
    lab.unblock(&[&cam_site, &view_site]).expect("unblock");
    let opened_us = now_us();
    // The viewer's node retries the punch 10 s after the circuit came up.
    let moved = viewer.wait_for("stream moved to the direct path", Duration::from_secs(25));
    let status = viewer.wait_exit(Duration::from_secs(45));
    let out = viewer.output();
    // Either side retires the relayed connection once the direct one has carried on
    // for a while (whichever is first; the other just sees it close).
    let retired = [out.clone(), cam.proc.output()]
        .iter()
        .filter_map(|o| first_log(o, "closing a relayed connection").map(|(t, _)| t))
        .min();
    let log = read_frames(&frames);
    let (holes, repeats) = log.holes_and_repeats();
    let moved_at = first_log(&out, "stream moved to the direct path").map(|(t, _)| t);
    let (gap, _) = moved_at.map_or((Duration::ZERO, 0), |t| {
        let (g, at) = FrameLog {
            frames: log
                .frames
                .iter()
                .filter(|f| (f.recv_us - t).abs() < 2_000_000)
                .copied()
                .collect(),
            ..Default::default()
        }
        .max_gap_after(0);
        (g, at)
    });
    println!(
        "relay→direct: {} frames over the relay before the path opened; direct after {:.1}s; \
         longest gap around the switch {:.0} ms; {} frames in {:.1}s, holes {holes}, repeats {repeats}, restarts {}",
        before.frames.len(),
        moved_at.map_or(f64::NAN, |t| (t - opened_us) as f64 / 1e6),
        gap.as_secs_f64() * 1000.0,
        log.frames.len(),
        log.span().as_secs_f64(),
        log.started.len()
    );
    assert!(moved, "the stream never moved to a direct path:\n{out}");
    assert!(retired.is_some(), "the relayed connection was not retired:\n{out}");
    assert!(
        status.is_some_and(|s| s.success()),
        "mesh watch failed: {status:?}\n{out}"
    );
    assert_eq!(log.started.len(), 1, "the video restarted: {:?}", log.interrupted);
    assert!(log.interrupted.is_empty(), "interrupted: {:?}", log.interrupted);
    assert_eq!((holes, repeats), (0, 0), "the frame sequence has holes or repeats");
    assert!(gap < Duration::from_secs(1), "a visible gap at the switch: {gap:?}");
    // Video kept coming after the relayed connection was closed (it was not on it).
    let after_close = retired.map_or(0, |t| log.frames.iter().filter(|f| f.recv_us > t).count());
    assert!(
        after_close >= 60,
        "only {after_close} frames after the relay was dropped"
    );
    drop(cam);
}

/// Fresh viewers behind a cone NAT connect to a camera behind another cone NAT through
/// the relay: how often does the hole punch give a direct connection?
#[test]
fn hole_punching_through_cone_nats_mostly_succeeds() {
    if skip("hole_punching_through_cone_nats_mostly_succeeds") {
        return;
    }
    const ATTEMPTS: u16 = 20;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut lab = NatLab::new("hp").expect("lab");
    let relay_host = lab.public("relay").expect("relay host");
    let cam_site = lab.behind_nat("cam", Nat::Cone).expect("camera NAT");
    let view_site = lab.behind_nat("view", Nat::Cone).expect("viewer NAT");
    let relay = relay_node(dir.path(), "relay", &relay_host);
    let cam = camera_node(dir.path(), &cam_site.host, &[&relay], CLIP);
    // Control: the NAT really keeps strangers out; dialing the camera's public address
    // without the relay's help reaches nothing.
    let cam_public = quic(&cam_site.outside_ip, PORT).with(libp2p::multiaddr::Protocol::P2p(cam.peer));
    let mut p = mesh(
        dir.path(),
        "control",
        &view_site.host,
        PORT + 99,
        &[cam_public],
        &["peers", "--timeout", "1s"],
    );
    p.wait_exit(Duration::from_secs(30));
    let out = p.output();
    assert!(
        !out.lines()
            .any(|l| l.starts_with(&cam.peer.to_string()) && l.split_whitespace().nth(1) == Some("connected")),
        "the camera was reachable through its NAT without a punch:\n{out}"
    );
    let mut direct = 0;
    let mut failures = Vec::new();
    let started = std::time::Instant::now();
    for i in 0..ATTEMPTS {
        // A new identity and a new port each time: fresh NAT mappings on the viewer's side.
        let name = format!("v{i}");
        let mut p = mesh(
            dir.path(),
            &name,
            &view_site.host,
            PORT + 100 + i,
            &[relay.addr.clone(), circuit(&relay, &cam)],
            &["peers", "--timeout", "3s"],
        );
        let status = p.wait_exit(Duration::from_secs(30));
        let out = p.output();
        let line = out
            .lines()
            .find(|l| l.starts_with(&cam.peer.to_string()))
            .unwrap_or("")
            .to_owned();
        if status.is_some_and(|s| s.success()) && line.split_whitespace().nth(2) == Some("direct") {
            direct += 1;
        } else {
            failures.push(format!("attempt {i}: {line:?} ({status:?})"));
        }
    }
    let rate = f64::from(direct) / f64::from(ATTEMPTS);
    println!(
        "hole punching, cone NATs: {direct}/{ATTEMPTS} direct ({:.0}%) in {:.0}s; failures: {failures:?}",
        rate * 100.0,
        started.elapsed().as_secs_f64()
    );
    assert!(rate >= 0.95, "direct in only {direct}/{ATTEMPTS}: {failures:?}");
    drop(cam);
}
