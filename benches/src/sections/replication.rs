//! Store-and-forward to shore over a shaped link (#16): how much of a thin link
//! replication turns into footage on shore, how long shore takes to catch up once a link
//! returns, and what replication does to live video meanwhile.
//!
//! Two network namespaces made for the run, joined by a veth pair shaped with tbf at
//! [`LINK_KBIT`] each way (no loss: the figure is what the protocol makes of the link;
//! the NVR test runs the same over 5% loss). In the vehicle namespace a camera node
//! records its own camera and pushes to shore (the body-camera case: live and
//! replication leave one process, under one `[[link]] peer = "*"` budget at 97% of the
//! link, live first); in the shore namespace an NVR, and a viewer (`mesh watch
//! --frame-log`) that watches the camera live across the link. Both namespaces read one
//! clock, so a frame's capture time and its arrival compare directly.
//!
//! Phases: (1) live with the link idle (shore not started yet): the latency baseline;
//! (2) link down for a backlog; (3) link up, no viewer: catch-up time and goodput;
//! (4) link down for a second backlog, then up with the viewer watching while
//! replication catches up: live latency and skips beside (1), and what replication got.
//! Needs root and `ip`/`tc`/`nft`, and the release binaries (`camesh-node`, `mesh`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use camesh_node::auth::Rights;
use camesh_node::clock::now_unix_us;
use camesh_node::config::{Config, LinkConfig, RecordRule, ReplicateRule, Role};
use camesh_node::{Multiaddr, PeerId};
use camesh_proto::pb::MemberRole;
use camesh_tests::cli::mesh_folder;
use camesh_tests::netns::{set_link, Lab};
use camesh_tests::nvr::{replicated_chunks, start_daemon_in, NvrProc};
use camesh_tests::{camera, fleet, loopback_config};
use serde::Serialize;

use super::Ctx;
use crate::report::Figure;
use crate::stats::Latency;

const S: &str = "replication";
const FLEET: &str = "bench-replicate";
const CAM: &str = "cam1";
/// About 1 Mbit/s, 1 s GOP.
const CLIP: &str = "cam-1280x720-30fps-gop1s.h264";
/// The link, each way.
const LINK_KBIT: u32 = 4000;
/// The camera node's `[[link]] peer = "*"` budget, on the wire: live and replication
/// together, a little under the link so that its queue stays short.
const BUDGET_KBIT: u32 = LINK_KBIT * 97 / 100;

#[derive(Debug, Clone, Default, Serialize)]
struct CatchUp {
    backlog_s: f64,
    /// From the link returning to the first chunk's first byte (reconnect), and from
    /// there to the last chunk's acknowledgement (the transfer).
    reconnect_s: f64,
    transfer_s: f64,
    caught_up_s: f64,
    chunks: u64,
    bytes: u64,
    sending_ms: u64,
}

impl CatchUp {
    /// What the camera node's log says of a catch-up that began when the link returned
    /// at `up_us`, given the chunk totals `before` it.
    fn measured(log: &Path, before: (u64, u64, u64), up_us: i64, backlog_s: f64, caught_up_s: f64) -> Self {
        let after = chunk_totals(log);
        let (reconnect_s, transfer_s) = chunk_times(log, up_us)
            .map(|(a, b)| ((a - up_us) as f64 / 1e6, (b - a) as f64 / 1e6))
            .unwrap_or((f64::NAN, f64::NAN));
        CatchUp {
            backlog_s,
            reconnect_s,
            transfer_s,
            caught_up_s,
            chunks: after.0 - before.0,
            bytes: after.1 - before.1,
            sending_ms: after.2 - before.2,
        }
    }

    /// Footage bytes per second of catch-up, as kbit/s.
    fn wall_kbit(&self) -> f64 {
        self.bytes as f64 * 8.0 / self.caught_up_s.max(0.001) / 1000.0
    }

    /// Footage bytes per second from the first chunk's start to the last one's
    /// acknowledgement, as kbit/s.
    fn transfer_kbit(&self) -> f64 {
        self.bytes as f64 * 8.0 / self.transfer_s.max(0.001) / 1000.0
    }

    /// Footage bytes per second while a chunk was in flight, as kbit/s.
    fn sending_kbit(&self) -> f64 {
        self.bytes as f64 * 8.0 / self.sending_ms.max(1) as f64
    }
}

#[derive(Debug, Clone, Default, Serialize)]
struct Live {
    frames: usize,
    skipped: u64,
    kbit_s: f64,
    latency: Latency,
    /// The slowest frames: (ms from the first frame's arrival to its capture, latency ms).
    slowest: Vec<(f64, f64)>,
}

pub async fn run(ctx: &mut Ctx) -> anyhow::Result<()> {
    if let Err(why) = Lab::available() {
        ctx.push(Figure::na(
            S,
            "replication goodput",
            &format!("no network namespaces: {why}"),
        ));
        return Ok(());
    }
    let missing: Vec<&str> = ["camesh-node", "mesh"]
        .into_iter()
        .filter(|b| !sibling(b).exists())
        .collect();
    if !missing.is_empty() {
        ctx.push(Figure::na(
            S,
            "replication goodput",
            &format!(
                "{} not built beside camesh-bench: cargo build --release --workspace --bins",
                missing.join(", ")
            ),
        ));
        return Ok(());
    }
    let backlog = ctx.secs(20, 60);
    let watch = ctx.secs(8, 20);
    let r = tokio::task::spawn_blocking(move || measure(backlog, watch))
        .await
        .map_err(|e| anyhow::anyhow!("the replication run failed: {e}"))??;

    let link = f64::from(LINK_KBIT);
    let c = &r.catch_up;
    let share = c.wall_kbit() / link;
    let cam_kbit = r.idle.kbit_s;
    let transfer = c.transfer_kbit() / link;
    ctx.push(
        Figure::new(S, "replication goodput during the transfer, share of the link", transfer * 100.0, "%")
            .target(">= 90%", transfer >= 0.9)
            .note(format!(
                "{:.0} kbit/s of footage (frame payload) over a {LINK_KBIT} kbit/s tbf link, from the first chunk's first frame to the last chunk's acknowledgement \
                 ({:.2} MB in {} chunks in {:.1} s, the pauses between chunks included; {:.0} kbit/s counting only the time a chunk was in flight); \
                 the node's [[link]] budget is {BUDGET_KBIT} kbit/s on the wire, live and bulk together (headers counted as 5% over the payload)",
                c.transfer_kbit(),
                c.bytes as f64 / 1e6,
                c.chunks,
                c.transfer_s,
                c.sending_kbit(),
            )),
    );
    ctx.push(
        Figure::new(S, "replication goodput over the whole catch-up, share of the link", share * 100.0, "%").note(format!(
            "{:.0} kbit/s: the same bytes over the {:.1} s from the link returning to shore listing nothing missing: also the reconnect \
             ({:.2} s to the first chunk) and the polling of `mesh recordings` (every 0.5 s); the camera went on recording {cam_kbit:.0} kbit/s meanwhile",
            c.wall_kbit(),
            c.caught_up_s,
            c.reconnect_s,
        )),
    );
    // The floor: the backlog, plus what is recorded meanwhile, at the budget.
    let payload_budget = f64::from(BUDGET_KBIT) / 1.05;
    let floor = c.backlog_s * cam_kbit / (payload_budget - cam_kbit).max(1.0);
    ctx.push(
        Figure::new(S, "shore caught up after the link returned", c.caught_up_s, "s")
            .baseline("backlog / (payload budget - recording rate)", floor)
            .note(format!(
                "a {:.0} s backlog at {cam_kbit:.0} kbit/s; caught up = shore's `mesh recordings` lists nothing missing up to after the link returned (polled every 0.5 s); \
                 the first chunk began {:.2} s after the link returned (the push dials afresh every 1.25 s while the link is down)",
                c.backlog_s,
                c.reconnect_s
            )),
    );
    let (idle, busy) = (&r.idle, &r.busy);
    ctx.push(
        Figure::new(S, "live latency while replication catches up, p99", busy.latency.p99_ms, "ms")
            .baseline("p99 with the link idle", idle.latency.p99_ms)
            .note(format!(
                "capture to arrival in `mesh watch` across the link, frames captured from 1 s after the stream's first frame on (its start, the cached GOP at once, is left out of both); p50 {:.1} ms (idle {:.1} ms); {} frames, {} skipped (idle: {} frames, {} skipped); \
                 replication meanwhile: {:.0} kbit/s, {} chunks, caught up {:.1} s after the link returned",
                busy.latency.p50_ms,
                idle.latency.p50_ms,
                busy.frames,
                busy.skipped,
                idle.frames,
                idle.skipped,
                r.beside_live.wall_kbit(),
                r.beside_live.chunks,
                r.beside_live.caught_up_s
            )),
    );
    ctx.raw("replication", &r);
    Ok(())
}

#[derive(Debug, Clone, Default, Serialize)]
struct Results {
    idle: Live,
    catch_up: CatchUp,
    busy: Live,
    beside_live: CatchUp,
}

/// A binary beside the running executable (the release build's `target/release`).
fn sibling(name: &str) -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join(name)))
        .unwrap_or_else(|| PathBuf::from(name))
}

fn sh(ns: &str, program: &str, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, program])
        .args(args)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "{program} {args:?} in {ns}: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// The link down or up again.
fn link(ns: &str, dev: &str, up: bool) -> anyhow::Result<()> {
    set_link(ns, dev, up).map_err(anyhow::Error::msg)
}

fn quic(ip: &str, port: u16) -> Multiaddr {
    format!("/ip4/{ip}/udp/{port}/quic-v1").parse().expect("multiaddr")
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn write_config(dir: &Path, role: Role, port: u16, edit: impl FnOnce(&mut Config)) -> anyhow::Result<()> {
    let mut c = loopback_config(role, FLEET);
    c.node.listen = vec![quic("0.0.0.0", port)];
    c.nvr.fsync_interval_ms = 200;
    c.nvr.segment_duration_s = 4;
    edit(&mut c);
    c.validate().map_err(|e| anyhow::anyhow!("config: {e}"))?;
    std::fs::write(dir.join("config.toml"), c.to_toml())?;
    Ok(())
}

/// `mesh <args>` inside `ns`, dialing `bootstrap`.
fn mesh(ns: &str, data: &Path, bootstrap: &Multiaddr, args: &[&str]) -> anyhow::Result<Output> {
    Ok(Command::new("ip")
        .args(["netns", "exec", ns])
        .arg(sibling("mesh"))
        .arg("--data-dir")
        .arg(data)
        .args(["--fleet", FLEET, "--fleet-root", &fleet(FLEET).root_text()])
        .args(["--no-mdns", "--listen", "/ip4/0.0.0.0/udp/0/quic-v1", "-b"])
        .arg(bootstrap.to_string())
        .args(args)
        .output()?)
}

/// Sums over the camera node's "replicated chunk" log lines: (chunks, bytes, ms).
fn chunk_totals(log: &Path) -> (u64, u64, u64) {
    replicated_chunks(&std::fs::read_to_string(log).unwrap_or_default())
}

/// The first chunk that started after `after_us` (unix µs): when it started, and when
/// the last chunk was acknowledged, from the log lines' timestamps and `ms=` fields.
fn chunk_times(log: &Path, after_us: i64) -> Option<(i64, i64)> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let (mut first, mut last) = (None::<i64>, None::<i64>);
    for l in text.lines().filter(|l| l.contains("replicated chunk")) {
        let Some(ts) = l.split_whitespace().next() else {
            continue;
        };
        let Ok(at) = humantime::parse_rfc3339(ts) else { continue };
        let at = at
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as i64)
            .unwrap_or(0);
        let ms: i64 = l
            .split_whitespace()
            .find_map(|w| w.strip_prefix("ms="))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let start = at - ms * 1000;
        if start < after_us {
            continue;
        }
        first = Some(first.map_or(start, |f| f.min(start)));
        last = Some(last.map_or(at, |x| x.max(at)));
    }
    first.zip(last)
}

/// The last lines of a log, for an error.
fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(25)..].join("\n")
}

/// Frames captured in the first second after a stream's first frame arrived are its
/// start, not its steady state.
const START_US: i64 = 1_000_000;

/// Live frames of a `--frame-log`: those captured more than [`START_US`] after the stream
/// began (the cached GOP a stream starts with is up to a GOP old by design).
fn live_of(frame_log: &Path) -> Live {
    let text = std::fs::read_to_string(frame_log).unwrap_or_default();
    let num = |l: &str, name: &str| -> Option<i64> {
        l.split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .and_then(|v| v.parse().ok())
    };
    let mut first_recv = None;
    let (mut lat, mut bytes, mut skipped) = (Vec::new(), 0u64, 0u64);
    let mut slow = Vec::new();
    let (mut t0, mut t1) = (i64::MAX, i64::MIN);
    for l in text.lines().filter(|l| l.starts_with("frame ")) {
        let (Some(cap), Some(recv)) = (num(l, "capture_us="), num(l, "recv_us=")) else {
            continue;
        };
        let first = *first_recv.get_or_insert(recv);
        skipped += num(l, "skipped=").unwrap_or(0).max(0) as u64;
        // The stream's first second is its start: the cached GOP goes at once and the
        // frames captured meanwhile queue behind it on a thin link (by design).
        if cap <= first + START_US {
            continue;
        }
        lat.push(recv - cap);
        slow.push(((cap - first) as f64 / 1000.0, (recv - cap) as f64 / 1000.0));
        bytes += num(l, "bytes=").unwrap_or(0).max(0) as u64;
        t0 = t0.min(cap);
        t1 = t1.max(cap);
    }
    let span_s = ((t1 - t0) as f64 / 1e6).max(0.001);
    slow.sort_by(|a: &(f64, f64), b| b.1.total_cmp(&a.1));
    slow.truncate(5);
    Live {
        frames: lat.len(),
        skipped,
        kbit_s: bytes as f64 * 8.0 / span_s / 1000.0,
        latency: Latency::from_us(&mut lat),
        slowest: slow,
    }
}

/// `mesh watch cam1` for `dur` in `ns`, frames logged to `log`.
fn watch(ns: &str, mesh_dir: &Path, cam: &Multiaddr, dur: Duration, log: &Path) -> anyhow::Result<Live> {
    let d = format!("{}s", dur.as_secs());
    let log_arg = log.to_str().expect("utf-8 path");
    let out = mesh(
        ns,
        mesh_dir,
        cam,
        &[
            "watch",
            CAM,
            "--duration",
            &d,
            "-o",
            "/dev/null",
            "-q",
            "--frame-log",
            log_arg,
        ],
    )?;
    anyhow::ensure!(
        out.status.success(),
        "mesh watch: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(live_of(log))
}

/// Polls shore's `mesh recordings` until it lists nothing missing from the camera node
/// up to after `since_us`; the time that took from `since`.
fn wait_caught_up(
    sns: &str,
    mesh_dir: &Path,
    shore: &Multiaddr,
    t0: i64,
    since: (Instant, i64),
) -> anyhow::Result<f64> {
    let from = format!("{}.{:06}", t0 / 1_000_000, t0 % 1_000_000);
    let mut last = String::new();
    // Bounded: 300 polls and 120 s.
    for _ in 0..300 {
        if since.0.elapsed() > Duration::from_secs(120) {
            break;
        }
        let out = mesh(sns, mesh_dir, shore, &["recordings", CAM, "--from", &from, "--json"])?;
        last = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let done = last
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .any(|j| {
                j["source"].is_string()
                    && j["offered_us"].as_i64().is_some_and(|t| t > since.1 + 1_000_000)
                    && j["missing"].as_array().is_some_and(Vec::is_empty)
            });
        if done {
            return Ok(since.0.elapsed().as_secs_f64());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    anyhow::bail!("shore never caught up; last answer: {last}")
}

fn measure(backlog: Duration, watch_for: Duration) -> anyhow::Result<Results> {
    let (_lab, [vns, sns], [vaddr, saddr]) = Lab::pair("rb", 93).map_err(anyhow::Error::msg)?;
    let pid = std::process::id() % 100_000;
    let (vdev, sdev) = (format!("v{pid}a"), format!("v{pid}b"));
    let rate = format!("{LINK_KBIT}kbit");
    for (ns, dev) in [(&vns, &vdev), (&sns, &sdev)] {
        sh(
            ns,
            "tc",
            &[
                "qdisc", "add", "dev", dev, "root", "tbf", "rate", &rate, "burst", "32kbit", "latency", "400ms",
            ],
        )?;
    }
    let dir = tempfile::tempdir()?;
    let f = fleet(FLEET);
    let e = |e: String| anyhow::anyhow!(e);

    // Shore's identity first: its peer id goes into the camera's replication rule.
    let shore_dir = dir.path().join("shore");
    f.enroll_dir(&shore_dir, MemberRole::Nvr, "shore", &[], 3600)
        .map_err(|x| e(x.to_string()))?;
    let shore_peer = PeerId::from_public_key(&camesh_node::identity::load_or_create(&shore_dir)?.public());
    let shore_port = free_port()?;
    let (shore_local, shore_public) = (quic("127.0.0.1", shore_port), quic(&saddr, shore_port));
    write_config(&shore_dir, Role::Nvr, shore_port, |_| {})?;

    let cam_dir = dir.path().join("bodycam");
    f.enroll_dir(&cam_dir, MemberRole::Camera, "bodycam-1", &[CAM.into()], 3600)
        .map_err(|x| e(x.to_string()))?;
    let cam_port = free_port()?;
    let cam_public = quic(&vaddr, cam_port);
    write_config(&cam_dir, Role::Camera, cam_port, |c| {
        c.cameras = vec![camera(CAM, CLIP)];
        c.links = vec![LinkConfig {
            peer: "*".into(),
            kbit: BUDGET_KBIT,
        }];
        c.nvr.records = vec![RecordRule {
            camera: CAM.into(),
            ..RecordRule::default()
        }];
        c.nvr.replicates = vec![ReplicateRule {
            to: shore_peer.to_string(),
            addrs: vec![shore_public.to_string()],
            cameras: vec![CAM.into()],
            ..ReplicateRule::default()
        }];
    })?;
    let t0 = now_unix_us();
    let cam_log = cam_dir.join("node.log");
    let _cam: NvrProc = start_daemon_in(
        Some(&vns),
        &cam_dir,
        "node.log",
        "info,camesh_node::net=warn",
        "camera: ",
    );
    let mesh_dir = dir.path().join("mesh");
    mesh_folder(&mesh_dir, FLEET, "mesh", &[CAM], Rights::PLAYBACK);
    // The viewer is a member of its own (two `mesh` processes never share a data dir).
    let view_dir = dir.path().join("viewer");
    mesh_folder(&view_dir, FLEET, "viewer", &[CAM], Rights::LIVE);

    // (1) Live with the link idle: shore is not there yet.
    eprintln!("   live with the link idle ({} s)", watch_for.as_secs());
    let idle = watch(&sns, &view_dir, &cam_public, watch_for, &dir.path().join("idle.log"))?;

    // (2) A backlog; shore starts meanwhile. (3) The link returns: catch-up.
    link(&vns, &vdev, false)?;
    let _shore = start_daemon_in(
        Some(&sns),
        &shore_dir,
        "nvr.log",
        "info,camesh_node::net=warn",
        "recordings: ",
    );
    eprintln!("   link down {} s (backlog)", backlog.as_secs());
    std::thread::sleep(backlog);
    let before = chunk_totals(&cam_log);
    link(&vns, &vdev, true)?;
    let up = (Instant::now(), now_unix_us());
    let caught_up_s = wait_caught_up(&sns, &mesh_dir, &shore_local, t0, up)?;
    // Everything recorded before shore first appeared counts as backlog too.
    let backlog_s = (up.1 - t0) as f64 / 1e6;
    let catch_up = CatchUp::measured(&cam_log, before, up.1, backlog_s, caught_up_s);
    eprintln!(
        "   caught up {caught_up_s:.1} s after the link returned ({:.0} kbit/s): first chunk after {:.2} s, transfer {:.1} s",
        catch_up.wall_kbit(),
        catch_up.reconnect_s,
        catch_up.transfer_s
    );

    // (4) A second backlog, then live and catch-up together.
    link(&vns, &vdev, false)?;
    eprintln!("   link down {} s (second backlog)", backlog.as_secs());
    std::thread::sleep(backlog);
    let before = chunk_totals(&cam_log);
    link(&vns, &vdev, true)?;
    let up = (Instant::now(), now_unix_us());
    eprintln!("   live while replication catches up ({} s)", watch_for.as_secs());
    let viewer = {
        let (sns, view_dir, log) = (sns.clone(), view_dir.clone(), dir.path().join("busy.log"));
        std::thread::spawn(move || watch(&sns, &view_dir, &cam_public, watch_for, &log))
    };
    let caught_up_s = wait_caught_up(&sns, &mesh_dir, &shore_local, t0, up).map_err(|e| {
        anyhow::anyhow!(
            "{e}\ncamera node log:\n{}\nshore log:\n{}",
            tail(&cam_log),
            tail(&shore_dir.join("nvr.log"))
        )
    })?;
    let beside_live = CatchUp::measured(&cam_log, before, up.1, backlog.as_secs_f64(), caught_up_s);
    let busy = viewer
        .join()
        .map_err(|_| anyhow::anyhow!("the viewer thread panicked"))??;
    Ok(Results {
        idle,
        catch_up,
        busy,
        beside_live,
    })
}
