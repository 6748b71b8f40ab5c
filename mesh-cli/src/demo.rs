//! `mesh demo`: a small fleet on 127.0.0.1 from the clips built into this binary.
//!
//! Camera nodes serve one clip each over QUIC; only the first is given to the others
//! and to the watching peer as a bootstrap address, so the rest are found through the
//! fleet's Kademlia DHT. The watching peer subscribes to every camera and prints a live
//! table of each stream (fps, bitrate, latency, keyframe skips, gaps).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use camesh_node::auth::fleet::FleetRoot;
use camesh_node::auth::Rights;
use camesh_node::clock::now_unix_us;
use camesh_node::config::{CameraConfig, Config, Role};
use camesh_node::stream::stats::LiveStats;
use camesh_node::watch::{WatchEvent, WatchOptions};
use camesh_node::{Node, NodeHandle};
use camesh_proto::pb::MemberRole;
use tokio_util::sync::CancellationToken;

/// The built-in clips (see fixtures/README.md): name, file name, bytes. The lobby has
/// sound (a beep every second, AAC).
const CLIPS: [(&str, &str, &[u8]); 3] = [
    (
        "lobby",
        "cam-640x360-30fps-gop2s-aac.mp4",
        include_bytes!("../../fixtures/cam-640x360-30fps-gop2s-aac.mp4"),
    ),
    (
        "gate",
        "cam-1280x720-30fps-gop1s.h264",
        include_bytes!("../../fixtures/cam-1280x720-30fps-gop1s.h264"),
    ),
    (
        "dock",
        "cam-640x360-30fps-gop10s.h264",
        include_bytes!("../../fixtures/cam-640x360-30fps-gop10s.h264"),
    ),
];

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Number of camera nodes (1-8); they cycle through the built-in clips.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=8))]
    cameras: u8,
    /// Stop after this long (default: until Ctrl-C).
    #[arg(long, value_parser = crate::parse_duration)]
    duration: Option<Duration>,
    /// Seconds between table refreshes.
    #[arg(long, default_value_t = 2)]
    every: u64,
}

#[derive(Debug)]
struct Row {
    stats: LiveStats,
    size: String,
    peer: String,
    state: &'static str,
}

pub async fn run(args: &Args) -> Result<()> {
    let dir = std::env::temp_dir().join(format!("camesh-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let result = run_in(args, &dir).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn loopback_config(role: Role, fleet: &FleetRoot) -> Result<Config> {
    let mut c = Config::preset(role);
    c.node.fleet_id = fleet.fleet_id.clone();
    c.node.fleet_root = fleet.root_text();
    c.node.mdns = false;
    c.node.listen = vec!["/ip4/127.0.0.1/udp/0/quic-v1".parse().context("listen address")?];
    c.node.announce_interval_s = 2;
    Ok(c)
}

async fn run_in(args: &Args, dir: &std::path::Path) -> Result<()> {
    // A fleet made for this run: its root key lives in memory and dies with the demo.
    let fleet = FleetRoot::ephemeral("demo");
    let mut nodes: Vec<NodeHandle> = Vec::new();
    let mut bootstrap = Vec::new();
    let mut camera_ids = Vec::new();
    for i in 0..args.cameras as usize {
        let (name, file, bytes) = CLIPS[i % CLIPS.len()];
        let path: PathBuf = dir.join(file);
        if !path.exists() {
            std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
        }
        let id = format!("{name}-{}", i + 1);
        let mut c = loopback_config(Role::Camera, &fleet)?;
        c.node.name = format!("camera node {}", i + 1);
        c.node.bootstrap = bootstrap.clone();
        c.cameras.push(CameraConfig {
            id: id.clone(),
            name: format!("{} {}", capitalize(name), i + 1),
            source: path,
            sub_source: None,
            rtsp_transport: Default::default(),
            looping: true,
            tags: vec!["demo".into()],
            onvif: None,
            motion: None,
            talkback: None,
        });
        let node_dir = dir.join(format!("node-{}", i + 1));
        fleet
            .enroll_dir(
                &node_dir,
                MemberRole::Camera,
                &c.node.name,
                std::slice::from_ref(&id),
                86_400,
            )
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let node = Node::spawn(c, &node_dir).await?;
        if bootstrap.is_empty() {
            bootstrap = node.dial_addrs().await?;
        }
        eprintln!("camera node {} serves {id:<10} as {}", i + 1, node.peer_id());
        camera_ids.push(id);
        nodes.push(node);
    }
    let mut vc = loopback_config(Role::Viewer, &fleet)?;
    vc.node.bootstrap = bootstrap.clone();
    let viewer_dir = dir.join("viewer");
    fleet
        .enroll_dir(&viewer_dir, MemberRole::Viewer, "demo viewer", &[], 86_400)
        .and_then(|_| fleet.grant_dir(&viewer_dir, &["*".to_owned()], Rights::LIVE, 86_400))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let viewer = Node::spawn(vc, &viewer_dir).await?;
    eprintln!(
        "watching peer {} bootstraps from camera node 1 only; the rest come from the DHT",
        viewer.peer_id()
    );

    let cancel = CancellationToken::new();
    let rows: Arc<Mutex<BTreeMap<String, Row>>> = Arc::default();
    let found = viewer.discover_cameras(Duration::from_secs(3)).await;
    eprintln!("discovered {} of {} cameras", found.len(), camera_ids.len());
    for id in &camera_ids {
        rows.lock().unwrap_or_else(|e| e.into_inner()).insert(
            id.clone(),
            Row {
                stats: LiveStats::new(2000),
                size: "-".into(),
                peer: "-".into(),
                state: "connecting",
            },
        );
        let mut events = viewer.watch(WatchOptions::new(id.clone()), cancel.clone());
        let rows = rows.clone();
        let id = id.clone();
        tokio::spawn(async move {
            while let Some(ev) = events.recv().await {
                let mut map = rows.lock().unwrap_or_else(|e| e.into_inner());
                let Some(row) = map.get_mut(&id) else { continue };
                match ev {
                    WatchEvent::Started { peer, accept, gap } => {
                        if let Some(c) = accept.codec {
                            row.size = format!("{}x{}", c.width, c.height);
                        }
                        let p = peer.to_string();
                        row.peer = format!("…{}", &p[p.len().saturating_sub(8)..]);
                        row.state = "live";
                        if let Some(g) = gap {
                            row.stats.on_gap(g.as_millis() as u64);
                        }
                    }
                    WatchEvent::Frame(f) => row.stats.on_frame(&f.header, f.payload.len(), now_unix_us()),
                    WatchEvent::Interrupted { .. } => row.state = "retrying",
                    WatchEvent::Failed { .. } => row.state = "failed",
                    WatchEvent::Switched { .. } => {}
                }
            }
        });
    }

    let deadline = args.duration.map(|d| tokio::time::Instant::now() + d);
    let mut tick = tokio::time::interval(Duration::from_secs(args.every.max(1)));
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => print_table(&rows),
            _ = async { match deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    print_table(&rows);
    cancel.cancel();
    viewer.shutdown();
    for n in &nodes {
        n.shutdown();
    }
    let dead: Vec<String> = rows
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter_mut()
        .filter_map(|(id, r)| (r.stats.snapshot(now_unix_us()).frames == 0).then(|| id.clone()))
        .collect();
    if !dead.is_empty() {
        bail!("no video from {}", dead.join(", "));
    }
    Ok(())
}

fn print_table(rows: &Arc<Mutex<BTreeMap<String, Row>>>) {
    let mut map = rows.lock().unwrap_or_else(|e| e.into_inner());
    let now = now_unix_us();
    println!(
        "{:<10} {:<10} {:>9} {:>6} {:>8} {:>9} {:>9} {:>7} {:>6} {:>5} {:<10}",
        "CAMERA", "STATE", "SIZE", "FPS", "KBIT/S", "LAT p50", "LAT max", "FRAMES", "SKIPS", "GAPS", "PEER"
    );
    for (id, r) in map.iter_mut() {
        let s = r.stats.snapshot(now);
        println!(
            "{:<10} {:<10} {:>9} {:>6.1} {:>8.0} {:>7.2}ms {:>7.2}ms {:>7} {:>6} {:>5} {:<10}",
            id, r.state, r.size, s.fps, s.kbit_s, s.latency_p50_ms, s.latency_max_ms, s.frames, s.skips, s.gaps, r.peer
        );
    }
    println!();
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}
