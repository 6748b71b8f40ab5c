//! The NAT lab (issue #5): real `camesh-node` and `mesh` processes in network namespaces
//! behind NAT routers ([`NatLab`]): a relay on the public segment, cameras and viewers
//! behind endpoint-independent ("cone") or symmetric NATs.
//!
//! - cone ↔ cone: video starts over the relay and moves to a direct path by hole
//!   punching, with a continuous frame sequence;
//! - hole punching success rate over fresh attempts;
//! - symmetric NAT: video over the relay for minutes, far past libp2p's default circuit
//!   limits (2 min, 128 KiB);
//! - the relay is killed mid-stream: the viewer resumes through a second relay;
//! - 10% loss (and then a squeezed link) on the camera's side: video keeps playing with
//!   bounded latency, skipping to keyframes rather than building a backlog;
//! - relaying decided by AutoNAT (`relay_server` unset): the public node becomes a relay,
//!   the one behind a NAT does not, and video flows through the AutoNAT-decided relay.
//!
//! Needs root, `ip netns`, `nft` and `tc` (skipped with a message otherwise) and the
//! workspace binaries (`cargo build --workspace --bins`). Viewers are `mesh watch` with
//! `--frame-log`: one line per frame (sequence, capture and arrival time, size), which
//! is what the assertions read. Timings are printed; bounds are generous.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use camesh_node::config::{CameraConfig, Role};
use camesh_node::{Multiaddr, PeerId};
use camesh_proto::pb::MemberRole;
use camesh_tests::netns::{Host, Nat, NatLab, Proc};
use camesh_tests::*;

const FLEET: &str = "t-nat";
const PORT: u16 = 4001;
const CLIP: &str = "cam-640x360-30fps-gop2s.h264";

fn skip(test: &str) -> bool {
    match NatLab::available() {
        Ok(()) => false,
        Err(why) => {
            eprintln!("SKIPPED {test}: the NAT lab needs root, ip netns, nft and tc ({why})");
            true
        }
    }
}

fn quic(ip: &str, port: u16) -> Multiaddr {
    format!("/ip4/{ip}/udp/{port}/quic-v1").parse().expect("multiaddr")
}

fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// A `camesh-node` in a namespace.
struct Daemon {
    proc: Proc,
    peer: PeerId,
    /// Its listen address with `/p2p/<id>`.
    addr: Multiaddr,
}

/// What a node runs as.
struct Spec<'a> {
    name: &'a str,
    role: Role,
    host: &'a Host,
    relay_server: Option<bool>,
    relays: Vec<Multiaddr>,
    /// Peers dialed at start besides the relays.
    bootstrap: Vec<Multiaddr>,
    cameras: Vec<CameraConfig>,
    /// AutoNAT that trusts the lab's private and 100.64/10 addresses and probes soon
    /// after start (production: global addresses only, first probe after 15 s).
    lab_autonat: bool,
}

fn start_node(dir: &Path, spec: Spec<'_>) -> Daemon {
    let d = dir.join(spec.name);
    let mut c = loopback_config(spec.role, FLEET);
    c.node.name = spec.name.into();
    c.node.listen = vec![quic(&spec.host.ip, PORT)];
    c.node.bootstrap = spec.relays.iter().chain(&spec.bootstrap).cloned().collect();
    c.node.relays = spec.relays;
    c.node.relay_server = spec.relay_server;
    c.cameras = spec.cameras;
    if spec.lab_autonat {
        c.limits.autonat_only_global_ips = false;
        c.limits.autonat_boot_delay_ms = 1000;
        c.limits.autonat_retry_interval_ms = 2000;
    }
    enroll(&c, &d);
    std::fs::write(d.join("config.toml"), c.to_toml()).expect("config");
    let peer = camesh_node::identity::load_or_create(&d)
        .expect("identity")
        .public()
        .to_peer_id();
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &spec.host.ns])
        .arg(bin("camesh-node"))
        .arg("--data-dir")
        .arg(&d)
        .args(["--log", "info,libp2p_dcutr=debug", "run", "--config"])
        .arg(d.join("config.toml"))
        .env("NO_COLOR", "1");
    let mut proc = Proc::spawn(cmd, d.join("node.log")).expect("camesh-node starts");
    assert!(
        proc.wait_for("listening:", Duration::from_secs(20)),
        "{} did not start:\n{}",
        spec.name,
        proc.output()
    );
    let addr = quic(&spec.host.ip, PORT).with(libp2p::multiaddr::Protocol::P2p(peer));
    Daemon { proc, peer, addr }
}

fn relay_node(dir: &Path, name: &str, host: &Host) -> Daemon {
    start_node(
        dir,
        Spec {
            name,
            role: Role::Viewer,
            host,
            relay_server: Some(true),
            relays: vec![],
            bootstrap: vec![],
            cameras: vec![],
            lab_autonat: false,
        },
    )
}

/// A camera node behind a NAT that keeps reservations on `relays`; returns once every
/// reservation is accepted.
fn camera_node(dir: &Path, host: &Host, relays: &[&Daemon], clip: &str) -> Daemon {
    let mut cam = start_node(
        dir,
        Spec {
            name: "cam",
            role: Role::Camera,
            host,
            relay_server: Some(false),
            relays: relays.iter().map(|r| r.addr.clone()).collect(),
            bootstrap: vec![],
            cameras: vec![camera("cam1", clip)],
            lab_autonat: false,
        },
    );
    for r in relays {
        let needle = format!("relay reservation accepted relay={}", r.peer);
        assert!(
            cam.proc.wait_for(&needle, Duration::from_secs(30)),
            "no reservation on {}:\n{}",
            r.peer,
            cam.proc.output()
        );
    }
    cam
}

/// The camera's address through `relay`.
fn circuit(relay: &Daemon, cam: &Daemon) -> Multiaddr {
    format!("{}/p2p-circuit/p2p/{}", relay.addr, cam.peer)
        .parse()
        .expect("circuit")
}

/// `mesh <args>` as viewer `name` in `host`'s namespace, listening on `port`.
fn mesh(dir: &Path, name: &str, host: &Host, port: u16, bootstrap: &[Multiaddr], args: &[&str]) -> Proc {
    let d = dir.join(name);
    let f = fleet(FLEET);
    f.enroll_dir(&d, MemberRole::Viewer, name, &[], 3600).expect("enroll");
    f.grant_dir(&d, &["*".to_owned()], camesh_node::auth::Rights::LIVE, 3600)
        .expect("grant");
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &host.ns])
        .arg(bin("mesh"))
        .arg("--data-dir")
        .arg(&d)
        .args(["--fleet", FLEET, "--fleet-root", &f.root_text(), "--no-mdns"])
        .arg("--listen")
        .arg(quic(&host.ip, port).to_string())
        .args(["--log", "camesh_node=info"]);
    for b in bootstrap {
        cmd.arg("-b").arg(b.to_string());
    }
    cmd.args(args).env("NO_COLOR", "1");
    Proc::spawn(cmd, d.join("mesh.log")).expect("mesh starts")
}

/// `mesh watch cam1` for `secs`, frames logged to `<dir>/<name>/frames.log`.
fn watch(dir: &Path, name: &str, host: &Host, bootstrap: &[Multiaddr], secs: u64) -> (Proc, PathBuf) {
    let log = dir.join(name).join("frames.log");
    std::fs::create_dir_all(dir.join(name)).expect("dir");
    let duration = format!("{secs}s");
    let p = mesh(
        dir,
        name,
        host,
        PORT,
        bootstrap,
        &[
            "watch",
            "cam1",
            "-o",
            "/dev/null",
            "--duration",
            &duration,
            "--frame-log",
            log.to_str().expect("utf-8 path"),
        ],
    );
    (p, log)
}

#[derive(Debug, Clone, Copy)]
struct Frame {
    seq: u64,
    capture_us: i64,
    recv_us: i64,
    skipped: u64,
    bytes: u64,
}

#[derive(Debug, Default)]
struct FrameLog {
    frames: Vec<Frame>,
    /// Arrival time and reported gap (ms, -1 for the first start) of each (re)start.
    started: Vec<(i64, i64)>,
    interrupted: Vec<String>,
}

fn field(line: &str, key: &str) -> Option<i64> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
}

fn read_frames(path: &Path) -> FrameLog {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut log = FrameLog::default();
    for line in text.lines() {
        if line.starts_with("frame ") {
            let get = |k| field(line, k).unwrap_or(0);
            log.frames.push(Frame {
                seq: get("seq") as u64,
                capture_us: get("capture_us"),
                recv_us: get("recv_us"),
                skipped: get("skipped") as u64,
                bytes: get("bytes") as u64,
            });
        } else if line.starts_with("started ") {
            log.started
                .push((field(line, "recv_us").unwrap_or(0), field(line, "gap_ms").unwrap_or(-1)));
        } else if line.starts_with("interrupted ") {
            log.interrupted.push(line.to_owned());
        }
    }
    log
}

impl FrameLog {
    /// Frames missing from the sequence (each jump beyond +1) and frames that went
    /// backwards (a repeat), over the whole log.
    fn holes_and_repeats(&self) -> (u64, usize) {
        let mut holes = 0;
        let mut repeats = 0;
        for w in self.frames.windows(2) {
            if w[1].seq <= w[0].seq {
                repeats += 1;
            } else {
                holes += w[1].seq - w[0].seq - 1;
            }
        }
        (holes, repeats)
    }

    /// The longest time without a frame among frames arriving after `from_us`, and when
    /// it ended.
    fn max_gap_after(&self, from_us: i64) -> (Duration, i64) {
        let mut best = (0, 0);
        for w in self.frames.windows(2) {
            if w[1].recv_us >= from_us {
                let g = w[1].recv_us - w[0].recv_us;
                if g > best.0 {
                    best = (g, w[1].recv_us);
                }
            }
        }
        (Duration::from_micros(best.0.max(0) as u64), best.1)
    }

    fn span(&self) -> Duration {
        match (self.frames.first(), self.frames.last()) {
            (Some(a), Some(b)) => Duration::from_micros((b.recv_us - a.recv_us).max(0) as u64),
            _ => Duration::ZERO,
        }
    }
}

/// Capture-to-arrival latency (ms) of frames that arrived in `[from, to)`: p50 and max.
fn latency_ms(frames: &[Frame], from: i64, to: i64) -> (f64, f64, usize) {
    let mut l: Vec<f64> = frames
        .iter()
        .filter(|f| f.recv_us >= from && f.recv_us < to)
        .map(|f| (f.recv_us - f.capture_us) as f64 / 1000.0)
        .collect();
    if l.is_empty() {
        return (f64::NAN, f64::NAN, 0);
    }
    l.sort_by(|a, b| a.total_cmp(b));
    (l[l.len() / 2], l[l.len() - 1], l.len())
}

/// Unix microseconds of a tracing line's RFC 3339 timestamp (`2026-01-02T03:04:05.678901Z`).
fn log_time_us(line: &str) -> Option<i64> {
    let ts = line.split_whitespace().next()?;
    let (date, time) = ts.trim_end_matches('Z').split_once('T')?;
    let d: Vec<i64> = date.split('-').map(|x| x.parse().ok()).collect::<Option<_>>()?;
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let t: Vec<i64> = hms.split(':').map(|x| x.parse().ok()).collect::<Option<_>>()?;
    if d.len() != 3 || t.len() != 3 {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let (y, m) = if d[1] <= 2 {
        (d[0] - 1, d[1] + 9)
    } else {
        (d[0], d[1] - 3)
    };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d[2] - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    let micros: i64 = format!("{frac:0<6}")[..6].parse().ok()?;
    Some(((days * 86_400 + t[0] * 3600 + t[1] * 60 + t[2]) * 1_000_000) + micros)
}

/// The first line of `text` containing `needle`, with its time.
fn first_log(text: &str, needle: &str) -> Option<(i64, String)> {
    text.lines()
        .find(|l| l.contains(needle))
        .and_then(|l| Some((log_time_us(l)?, l.to_owned())))
}

/// Waits until the frame log holds `n` frames (at most `limit`).
fn wait_frames(path: &Path, n: usize, limit: Duration) -> bool {
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        if read_frames(path).frames.len() >= n {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

#[test]
fn log_timestamps_parse() {
    assert_eq!(log_time_us("1970-01-01T00:00:01.5Z  INFO x"), Some(1_500_000));
    assert_eq!(
        log_time_us("2026-11-23T18:03:01.123456Z  INFO x"),
        Some(1_795_456_981_123_456)
    );
    assert_eq!(log_time_us("garbage"), None);
}

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
    let (mut viewer, frames) = watch(
        dir.path(),
        "viewer",
        &view_site.host,
        &[relay.addr.clone(), circuit(&relay, &cam)],
        40,
    );
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
    let (mut viewer, frames) = watch(
        dir.path(),
        "viewer",
        &view_site.host,
        &[relay.addr.clone(), circuit(&relay, &cam)],
        SECS,
    );
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
    let (mut viewer, frames) = watch(
        dir.path(),
        "viewer",
        &view_site.host,
        &[relay.addr.clone(), circuit(&relay, &cam)],
        40,
    );
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
    let (mut viewer, frames) = watch(
        dir.path(),
        "viewer",
        &view_site.host,
        &[relay.addr.clone(), circuit(&relay, &cam)],
        25,
    );
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

/// "AutoNAT decides" (issue #5): two nodes with `relay_server` unset, AutoNAT allowed to
/// trust the lab's addresses. The one on the public segment is dialed back fine by a peer
/// behind a NAT, so AutoNAT finds it public and it starts relaying; the one behind a cone
/// NAT cannot be dialed back (its NAT drops what it did not ask for), so it stays private
/// and relays for no one. A camera behind a symmetric NAT then reserves on the
/// AutoNAT-decided relay, and a viewer behind another NAT watches it through that relay.
#[test]
fn autonat_decides_which_node_relays_and_video_flows_through_it() {
    if skip("autonat_decides_which_node_relays_and_video_flows_through_it") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let mut lab = NatLab::new("an").expect("lab");
    let pub_host = lab.public("pub").expect("public host");
    let natted_site = lab.behind_nat("priv", Nat::Cone).expect("cone NAT");
    let cam_site = lab.behind_nat("cam", Nat::Symmetric).expect("camera NAT");
    let view_site = lab.behind_nat("view", Nat::Cone).expect("viewer NAT");
    let undecided = |name, host, bootstrap| Spec {
        name,
        role: Role::Viewer,
        host,
        relay_server: None,
        relays: vec![],
        bootstrap,
        cameras: vec![],
        lab_autonat: true,
    };
    let mut public = start_node(dir.path(), undecided("public", &pub_host, vec![]));
    // Connected to the public node: each is the other's AutoNAT server.
    let mut natted = start_node(
        dir.path(),
        undecided("natted", &natted_site.host, vec![public.addr.clone()]),
    );
    let became_public = public.proc.wait_for("relay server on", Duration::from_secs(60));
    let went_private = natted.proc.wait_for("status=Private", Duration::from_secs(60));
    let (pub_out, natted_out) = (public.proc.output(), natted.proc.output());
    let since_start = |out: &str, needle: &str| {
        // The swarm's own line (the `listening:` one on stdout has no time).
        let start = first_log(out, "listening address=").map(|(t, _)| t)?;
        first_log(out, needle).map(|(t, _)| (t - start) as f64 / 1e6)
    };
    println!(
        "AutoNAT: public node said Public {:.2}s after it started listening (relay server on: {}); \
         natted node said Private after {:.2}s (relay server on: {})",
        since_start(&pub_out, "relay server on").unwrap_or(f64::NAN),
        pub_out.contains("relay server on"),
        since_start(&natted_out, "status=Private").unwrap_or(f64::NAN),
        natted_out.contains("relay server on"),
    );
    assert!(became_public, "AutoNAT never found the public node public:\n{pub_out}");
    assert!(
        pub_out.contains("status=Public"),
        "relaying without a Public verdict?\n{pub_out}"
    );
    assert!(
        went_private,
        "the node behind the cone NAT never said Private:\n{natted_out}"
    );
    // `mesh peers` (issue #5: "with NAT status") run next to the natted node, on its side
    // of the NAT: each node's row carries the verdict AutoNAT gave that node.
    let mut p = mesh(
        dir.path(),
        "peers",
        &natted_site.host,
        PORT + 50,
        &[public.addr.clone(), natted.addr.clone()],
        &["peers", "--timeout", "3s"],
    );
    let peers_ok = p.wait_exit(Duration::from_secs(40)).is_some_and(|s| s.success());
    let peers_out = p.output();
    println!("mesh peers beside the natted node:\n{peers_out}");
    let row_words = |peer: &PeerId| -> Vec<String> {
        peers_out
            .lines()
            .find(|l| l.starts_with(&peer.to_string()))
            .map(|l| l.split_whitespace().map(str::to_owned).collect())
            .unwrap_or_default()
    };
    let (pub_row, natted_row) = (row_words(&public.peer), row_words(&natted.peer));
    assert!(peers_ok, "mesh peers failed:\n{peers_out}");
    assert!(
        pub_row.iter().any(|w| w == "public") && !pub_row.iter().any(|w| w == "private"),
        "the public node's NAT status: {pub_row:?}"
    );
    assert!(
        natted_row.iter().any(|w| w == "private") && !natted_row.iter().any(|w| w == "public"),
        "the natted node's NAT status: {natted_row:?}"
    );
    // A camera behind a symmetric NAT reserves on the relay AutoNAT chose, and a viewer
    // behind another NAT watches it through that relay.
    let cam = camera_node(dir.path(), &cam_site.host, &[&public], CLIP);
    let (mut viewer, frames) = watch(
        dir.path(),
        "viewer",
        &view_site.host,
        &[public.addr.clone(), circuit(&public, &cam)],
        15,
    );
    let status = viewer.wait_exit(Duration::from_secs(75));
    let out = viewer.output();
    let log = read_frames(&frames);
    let (holes, repeats) = log.holes_and_repeats();
    let pub_out = public.proc.output();
    let natted_out = natted.proc.output();
    println!(
        "through the AutoNAT-decided relay: {} frames in {:.1}s, holes {holes}, repeats {repeats}; \
         circuit opened on it: {}; natted node still not relaying: {}",
        log.frames.len(),
        log.span().as_secs_f64(),
        pub_out.contains("relay circuit opened"),
        !natted_out.contains("relay server on"),
    );
    assert!(
        status.is_some_and(|s| s.success()),
        "mesh watch failed: {status:?}\n{out}"
    );
    assert!(
        pub_out.contains("relay circuit opened"),
        "the video did not go through the AutoNAT-decided relay:\n{pub_out}"
    );
    assert!(
        !out.contains("stream moved to the direct path"),
        "a symmetric NAT was punched, the video left the relay:\n{out}"
    );
    assert!(
        log.frames.len() >= 150,
        "only {} frames through the relay:\n{out}",
        log.frames.len()
    );
    assert_eq!(repeats, 0, "frames repeated");
    // Still private, still not relaying, after all of that (probes went on meanwhile).
    assert!(
        !natted_out.contains("relay server on") && !natted_out.contains("status=Public"),
        "the node behind the NAT started relaying:\n{natted_out}"
    );
    drop(cam);
}
