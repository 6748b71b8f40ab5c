//! `mesh top`: a live terminal view of the fleet. Cameras (with the stream each one
//! sends this laptop: path, fps, bitrate, capture-to-here latency, skips, gaps) and
//! peers (role from their fleet certificate, so viewers show as viewers; round-trip
//! time; direct or relayed). Refreshes until Ctrl-C or `--duration`.
//!
//! Each camera shown costs one stream to this laptop (the sub profile with `--sub`);
//! `--no-video` lists cameras and peers without receiving any video.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use camesh_node::gateway::tap::{TapStatus, Taps};
use camesh_node::NodeHandle;
use camesh_proto::pb;

use crate::truncate;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Time between refreshes.
    #[arg(long, default_value = "1s", value_parser = crate::parse_duration)]
    interval: Duration,
    /// Stop after this long (default: until Ctrl-C).
    #[arg(long, value_parser = crate::parse_duration)]
    duration: Option<Duration>,
    /// Receive at most this many cameras' video at once.
    #[arg(long, default_value_t = 16)]
    max_cameras: usize,
    /// Receive the sub (low-resolution) profile where cameras have one.
    #[arg(long)]
    sub: bool,
    /// List cameras and peers only, without receiving video.
    #[arg(long)]
    no_video: bool,
    /// Print each refresh below the last instead of redrawing the screen.
    #[arg(long)]
    plain: bool,
}

pub async fn run(node: &NodeHandle, args: &Args) -> Result<()> {
    let taps = Taps::new(node.clone(), args.max_cameras.max(1), Duration::from_secs(3600));
    let discover = {
        let node = node.clone();
        tokio::spawn(async move {
            loop {
                node.discover_cameras(Duration::from_secs(2)).await;
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        })
    };
    let redraw = !args.plain && std::io::IsTerminal::is_terminal(&std::io::stdout());
    let deadline = args.duration.map(|d| tokio::time::Instant::now() + d);
    let mut tick = tokio::time::interval(args.interval.max(Duration::from_millis(100)));
    let profile = if args.sub { pb::Profile::Sub } else { pb::Profile::Main };
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = tokio::signal::ctrl_c() => break,
            _ = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            } => break,
        }
        let screen = render(node, &taps, profile, args).await;
        let mut out = std::io::stdout().lock();
        if redraw {
            let _ = write!(out, "\x1b[H\x1b[2J");
        }
        let _ = writeln!(out, "{screen}");
        let _ = out.flush();
    }
    discover.abort();
    taps.stop_all();
    Ok(())
}

async fn render(node: &NodeHandle, taps: &Arc<Taps>, profile: pb::Profile, args: &Args) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let cameras = node.directory().cameras();
    // One row per camera id: prefer a live entry.
    let mut by_id: BTreeMap<String, camesh_node::discovery::CameraEntry> = BTreeMap::new();
    for e in cameras {
        let replace = by_id
            .get(&e.announcement.camera_id)
            .is_none_or(|old| !old.announcement.live && e.announcement.live);
        if replace {
            by_id.insert(e.announcement.camera_id.clone(), e);
        }
    }
    let peers = node.peers().await.unwrap_or_default();
    let connected: Vec<_> = peers.iter().filter(|p| p.connected).collect();
    let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now());
    let _ = writeln!(
        s,
        "camesh top — fleet {} — {} camera(s), {} peer(s) connected — {now}",
        node.config().node.fleet_id,
        by_id.len(),
        connected.len()
    );
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "{:<16} {:<18} {:<10} {:>9} {:<9} {:>5} {:>8} {:>8} {:>8} {:>5} {:>4}  STATUS",
        "CAMERA", "NAME", "PEER", "SIZE", "PATH", "FPS", "KBIT/S", "LAT p50", "LAT max", "SKIPS", "GAPS"
    );
    if by_id.is_empty() {
        let _ = writeln!(s, "(no cameras found yet)");
    }
    for (id, e) in &by_id {
        let a = &e.announcement;
        let status: Option<TapStatus> = if args.no_video || !a.live {
            None
        } else {
            match taps.get_or_start(id, profile) {
                Ok(t) => {
                    t.touch();
                    Some(t.status())
                }
                Err(_) => None,
            }
        };
        let (size, path, fps, kbit, p50, max, skips, gaps, state) = match &status {
            Some(t) => {
                let size = t.params.as_ref().map_or(format!("{}x{}", a.width, a.height), |p| {
                    format!("{}x{}", p.width, p.height)
                });
                (
                    size,
                    t.path.map_or("-", |p| p.as_str()).to_owned(),
                    format!("{:.1}", t.stats.fps),
                    format!("{:.0}", t.stats.kbit_s),
                    format!("{:.1}ms", t.stats.latency_p50_ms),
                    format!("{:.1}ms", t.stats.latency_max_ms),
                    t.stats.skips.to_string(),
                    t.stats.gaps.to_string(),
                    truncate(&t.status, 40),
                )
            }
            None => (
                format!("{}x{}", a.width, a.height),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                if a.live { "not watched" } else { "offline" }.into(),
            ),
        };
        let _ = writeln!(
            s,
            "{:<16} {:<18} {:<10} {:>9} {:<9} {:>5} {:>8} {:>8} {:>8} {:>5} {:>4}  {}",
            truncate(id, 16),
            truncate(&a.name, 18),
            short_peer(&e.peer.to_string()),
            size,
            path,
            fps,
            kbit,
            p50,
            max,
            skips,
            gaps,
            state
        );
    }
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "{:<10} {:<7} {:<18} {:>8} {:<7} CAMERAS",
        "PEER", "ROLE", "NAME", "RTT", "PATH"
    );
    for p in &connected {
        let cert = node.trust().member(&p.peer);
        let role = cert.as_ref().map_or("?".to_owned(), |c| role_name(c.role).to_owned());
        let name = cert.as_ref().map_or(String::new(), |c| c.name.clone());
        let cams: Vec<&str> = by_id
            .iter()
            .filter(|(_, e)| e.peer == p.peer)
            .map(|(id, _)| id.as_str())
            .collect();
        let path = if p.peer_path().is_relayed() { "relay" } else { "direct" };
        let _ = writeln!(
            s,
            "{:<10} {:<7} {:<18} {:>8} {:<7} {}",
            short_peer(&p.peer.to_string()),
            role,
            truncate(&name, 18),
            p.rtt
                .map(|r| format!("{:.1}ms", r.as_secs_f64() * 1000.0))
                .unwrap_or_else(|| "-".into()),
            path,
            cams.join(",")
        );
    }
    let viewers = connected
        .iter()
        .filter(|p| {
            node.trust()
                .member(&p.peer)
                .is_some_and(|c| matches!(c.role, pb::MemberRole::Viewer | pb::MemberRole::Admin))
        })
        .count();
    let _ = writeln!(s, "viewers connected: {viewers}");
    s
}

fn role_name(r: pb::MemberRole) -> &'static str {
    match r {
        pb::MemberRole::Camera => "camera",
        pb::MemberRole::Nvr => "nvr",
        pb::MemberRole::Viewer => "viewer",
        pb::MemberRole::Admin => "admin",
        pb::MemberRole::Unspecified => "?",
    }
}

/// The last 8 characters of a peer id: enough to tell peers apart on screen.
fn short_peer(p: &str) -> String {
    let n = p.chars().count();
    format!("…{}", p.chars().skip(n.saturating_sub(8)).collect::<String>())
}
