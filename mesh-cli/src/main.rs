//! `mesh`: the camesh command line for laptops. It is itself a mesh peer: each command
//! starts a viewer node (identity in the data directory), finds the fleet by mDNS,
//! bootstrap addresses and Kademlia, does its job and exits.

mod demo;
mod fleet;
mod install;
mod nvr;
mod path;
mod top;
mod view;
mod watch;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use camesh_node::config::{Config, Role};
use camesh_node::Multiaddr;
use camesh_node::{Node, NodeHandle, PeerId};
use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "mesh",
    version,
    about = "camesh: watch and manage a peer-to-peer camera fleet",
    after_help = "Examples:\n  mesh demo --duration 20s\n  mesh cameras -b /ip4/192.168.1.20/udp/4001/quic-v1/p2p/12D3Koo...\n  mesh watch cam1 | ffplay -\n  mesh watch cam1 -o clip.h264 --duration 10s"
)]
struct Cli {
    /// Data directory of the mesh peer (its identity key).
    #[arg(long, env = "CAMESH_MESH_DIR", global = true)]
    data_dir: Option<PathBuf>,
    /// Peer to connect to first, with /p2p/<peer id> (repeatable).
    #[arg(long, short, env = "CAMESH_BOOTSTRAP", value_delimiter = ',', global = true)]
    bootstrap: Vec<Multiaddr>,
    /// Fleet id (default: from <data-dir>/fleet.toml, written by `mesh fleet init|join`).
    #[arg(long, env = "CAMESH_FLEET", global = true)]
    fleet: Option<String>,
    /// Fleet root public key (default: from <data-dir>/fleet.toml).
    #[arg(long, env = "CAMESH_FLEET_ROOT", global = true)]
    fleet_root: Option<String>,
    /// Turn mDNS LAN discovery off.
    #[arg(long, global = true)]
    no_mdns: bool,
    /// Address to listen on (default: QUIC on all interfaces, random port).
    #[arg(long, global = true)]
    listen: Vec<Multiaddr>,
    /// Log filter for diagnostics on stderr (e.g. debug, camesh_node=debug).
    #[arg(long, env = "CAMESH_LOG", default_value = "warn", global = true)]
    log: String,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// List the fleet's cameras.
    Cameras {
        /// How long to look.
        #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
        timeout: Duration,
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Watch a camera: H.264 Annex B to stdout or a file, live stats on stderr.
    Watch(watch::Args),
    /// Serve the fleet to a browser and players: live page, /cam/<id>/live.mp4, snapshots, /metrics.
    View(view::Args),
    /// Viewers of `mesh view --public`: add (prints a token), remove, list.
    #[command(subcommand)]
    ViewUser(view::UserCmd),
    /// Live terminal view of the fleet: cameras, viewers, paths, bitrate, latency.
    Top(top::Args),
    /// How a camera's stream reaches this peer: direct, relayed via X, forwarded via Y (NAT status, RTT, cost, choice).
    Path(path::Args),
    /// List known peers: connection state, path (direct / relayed via X), each peer's own NAT
    /// status (AutoNAT: public, private, unknown), RTT, its fleet state against ours (in
    /// step, behind N, ahead N; "was behind N" when this run brought it up to date), its
    /// clock against ours, agent, what it forwards.
    Peers {
        /// How long to wait for connections first.
        #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
    /// Start a demo fleet on 127.0.0.1 from the built-in clips and show its streams.
    Demo(demo::Args),
    /// Create and administer the fleet with the root key: init, admit, admin, invite,
    /// join, revoke (root), state.
    #[command(subcommand)]
    Fleet(fleet::FleetCmd),
    /// Grant a peer rights on cameras: signed with this data dir's admin certificate,
    /// within its scope, or delegated from a grant held here with the `delegate` right
    /// (no wider than it); never with the root key.
    Grant {
        /// The holder's peer id.
        peer: PeerId,
        /// Camera ids, or '*' for all.
        #[arg(long, value_delimiter = ',')]
        cameras: Vec<String>,
        /// Camera tags.
        #[arg(long = "tag")]
        tags: Vec<String>,
        /// live, playback, export, lock, ptz, talk, record, forward, delegate (comma-separated).
        #[arg(long, value_parser = camesh_node::auth::Rights::parse)]
        rights: camesh_node::auth::Rights,
        /// How long the grant is valid (e.g. 2h, 30d).
        #[arg(long, default_value = "8h", value_parser = humantime::parse_duration)]
        until: Duration,
        /// Also write the grant to this file.
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// Also hand it to the holder over the mesh (found by mDNS, --bootstrap or the
        /// DHT); it installs it at once.
        #[arg(long)]
        send: bool,
    },
    /// Install a grant into this data directory (a laptop's, camera's or NVR's: the
    /// fleet from fleet.toml, config.toml or --fleet/--fleet-root); a node running on
    /// it picks it up within seconds.
    GrantInstall { grant: String },
    /// Revoke a peer or a grant (by its serial), as an admin that may revoke: everything
    /// the peer holds or issued stops, its streams and connections close, keys change;
    /// members that are offline learn it from any member they meet.
    Revoke {
        /// Peer id, or a grant serial (16 hex digits).
        target: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Play a camera's recording from an NVR: H.264 Annex B from the keyframe before --from.
    Play(nvr::PlayArgs),
    /// List an NVR's recordings of a camera: recorded spans, gaps, evidence locks.
    Recordings(nvr::RecordingsArgs),
    /// Export a range to MP4 with a signed manifest and the source segments.
    Export(nvr::ExportArgs),
    /// Check an export against its signed manifest (offline).
    Verify(nvr::VerifyArgs),
    /// Lock a range on the NVR as evidence: retention never deletes it.
    Lock(nvr::LockArgs),
    /// Remove an evidence lock (the `lock` right; audited on the NVR with --reason).
    Unlock(nvr::UnlockArgs),
    /// Show the audit log of this data directory (grants, revocations, refusals).
    Audit {
        #[arg(long, short = 'n', default_value_t = 50)]
        lines: usize,
        /// Check the logs' hash chain instead (a changed, removed or inserted line is
        /// found); use --data-dir to check a node's folder.
        #[arg(long)]
        verify: bool,
    },
}

fn default_data_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("XDG_CONFIG_HOME") {
        return PathBuf::from(d).join("camesh/mesh");
    }
    match std::env::var_os("HOME") {
        Some(h) => PathBuf::from(h).join(".config/camesh/mesh"),
        None => PathBuf::from(".camesh-mesh"),
    }
}

#[tokio::main]
async fn main() {
    if let Err(e) = real_main().await {
        eprintln!("mesh: {e:#}");
        std::process::exit(1);
    }
}

async fn real_main() -> Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&cli.log).context("--log")?)
        .with_writer(std::io::stderr)
        .init();
    let dir = cli.data_dir.clone().unwrap_or_else(default_data_dir);
    // Commands that need no running peer.
    match &cli.cmd {
        Cmd::Demo(args) => return demo::run(args).await,
        Cmd::Fleet(fleet::FleetCmd::Init { id, encrypt }) => return fleet::init(&dir, id, *encrypt),
        Cmd::Fleet(fleet::FleetCmd::Encrypt) => return fleet::encrypt(&dir),
        Cmd::Fleet(fleet::FleetCmd::Decrypt) => return fleet::decrypt(&dir),
        Cmd::Fleet(fleet::FleetCmd::Admit {
            peer,
            role,
            name,
            valid,
            cameras,
            output,
        }) => return fleet::admit(&dir, *peer, *role, name, *valid, cameras.clone(), output),
        Cmd::Grant {
            peer,
            cameras,
            tags,
            rights,
            until,
            output,
            send,
        } => {
            let g = fleet::grant(
                &dir,
                *peer,
                cameras.clone(),
                tags.clone(),
                *rights,
                *until,
                output.as_deref(),
            )?;
            if !*send {
                return Ok(());
            }
            let node = start_peer(&cli, &dir).await?;
            let result = fleet::send_grant(&node, *peer, &g).await;
            node.shutdown();
            return result;
        }
        Cmd::Audit { verify: true, .. } => {
            let n = camesh_node::auth::audit::verify_chain(&dir).map_err(|e| anyhow::anyhow!("audit log: {e}"))?;
            println!(
                "OK: {n} audit entries in {}, each linked to the one before",
                dir.display()
            );
            return Ok(());
        }
        Cmd::Audit { lines, .. } => return fleet::audit(&dir, *lines),
        Cmd::Fleet(fleet::FleetCmd::State) => return fleet::state(&dir),
        Cmd::ViewUser(cmd) => return view::user(&dir, cmd),
        Cmd::Fleet(fleet::FleetCmd::Admin {
            peer,
            name,
            cameras,
            tags,
            rights,
            may_revoke,
            may_admit,
            valid,
            output,
        }) => {
            return fleet::admin(
                &dir,
                *peer,
                name,
                cameras.clone(),
                tags.clone(),
                *rights,
                *may_revoke,
                *may_admit,
                *valid,
                output,
            )
        }
        Cmd::Verify(args) => {
            let ff = fleet::fleet_file(&dir);
            let id = cli.fleet.clone().or(ff.as_ref().map(|f| f.fleet_id.clone()));
            let root = cli.fleet_root.clone().or(ff.map(|f| f.root));
            return nvr::verify(args, &dir, id.zip(root));
        }
        Cmd::GrantInstall { grant } => {
            return install::grant_install(&dir, grant, cli.fleet.as_deref(), cli.fleet_root.as_deref())
        }
        Cmd::Fleet(fleet::FleetCmd::Join { invite }) => {
            let (info, _) = camesh_node::auth::invite::parse(invite, camesh_node::auth::now_s())
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            fleet::write_fleet_file(
                &dir,
                &camesh_node::auth::fleet::FleetFile {
                    fleet_id: info.fleet_id.clone(),
                    root: camesh_node::auth::fleet::root_to_text(&info.fleet_root),
                },
            )?;
            let node = start_peer(&cli, &dir).await?;
            let cert = node
                .redeem_invite(invite)
                .await
                .map_err(|e| anyhow::anyhow!("joining: {e}"))?;
            println!("joined fleet {} as {:?} {:?}", info.fleet_id, cert.role, cert.name);
            node.shutdown();
            return Ok(());
        }
        _ => {}
    }
    let node = start_peer(&cli, &dir).await?;
    let result = match &cli.cmd {
        Cmd::Cameras { timeout, json } => cameras(&node, *timeout, *json).await,
        Cmd::Watch(args) => watch::run(&node, args).await,
        Cmd::View(args) => view::run(&node, &dir, args).await,
        Cmd::Top(args) => top::run(&node, args).await,
        Cmd::Peers { timeout } => peers(&node, *timeout).await,
        Cmd::Path(args) => path::run(&node, args).await,
        Cmd::Fleet(fleet::FleetCmd::Invite {
            role,
            name,
            expires,
            valid,
            cameras,
            holder,
            web_url,
            no_qr,
        }) => {
            fleet::invite(
                &node,
                &dir,
                *role,
                name,
                *expires,
                *valid,
                cameras.clone(),
                *holder,
                web_url,
                !*no_qr,
            )
            .await
        }
        Cmd::Revoke { target, reason } => fleet::revoke(&node, &dir, target, reason, false).await,
        Cmd::Fleet(fleet::FleetCmd::Revoke { target, reason }) => {
            fleet::revoke(&node, &dir, target, reason, true).await
        }
        Cmd::Play(args) => nvr::play(&node, args).await,
        Cmd::Recordings(args) => nvr::recordings(&node, args).await,
        Cmd::Export(args) => nvr::export(&node, args).await,
        Cmd::Lock(args) => nvr::lock(&node, args).await,
        Cmd::Unlock(args) => nvr::unlock(&node, args).await,
        _ => unreachable!("handled above"),
    };
    node.shutdown();
    result
}

async fn start_peer(cli: &Cli, dir: &std::path::Path) -> Result<NodeHandle> {
    let mut config = Config::preset(Role::Viewer);
    config.node.name = "mesh".into();
    // A short-lived peer that dials out: nothing dials it over WebRTC-direct, except a
    // browser redeeming the invite `mesh fleet invite` prints while it waits.
    config.node.webrtc = Some(matches!(cli.cmd, Cmd::Fleet(fleet::FleetCmd::Invite { .. })));
    let ff = fleet::fleet_file(dir);
    config.node.fleet_id = match (&cli.fleet, &ff) {
        (Some(f), _) => f.clone(),
        (None, Some(ff)) => ff.fleet_id.clone(),
        (None, None) => anyhow::bail!(
            "no fleet: run `mesh fleet init --id <fleet>` (admin) or `mesh fleet join <invite>`, or pass --fleet and --fleet-root"
        ),
    };
    config.node.fleet_root = match (&cli.fleet_root, &ff) {
        (Some(r), _) => r.clone(),
        (None, Some(ff)) => ff.root.clone(),
        (None, None) => anyhow::bail!("no fleet root: pass --fleet-root, or run `mesh fleet join <invite>`"),
    };
    config.node.bootstrap = cli.bootstrap.clone();
    config.node.mdns = !cli.no_mdns;
    config.node.listen = if cli.listen.is_empty() {
        vec!["/ip4/0.0.0.0/udp/0/quic-v1".parse().context("listen address")?]
    } else {
        cli.listen.clone()
    };
    let node = Node::spawn(config, dir).await?;
    // Give bootstrap connections a moment; discovery keeps going while commands run.
    for addr in &cli.bootstrap {
        if let Err(e) = node.connect(addr.clone()).await {
            eprintln!("mesh: warning: {e}");
        }
    }
    Ok(node)
}

async fn cameras(node: &NodeHandle, timeout: Duration, json: bool) -> Result<()> {
    let found = node.discover_cameras(timeout).await;
    if json {
        for e in &found {
            let a = &e.announcement;
            println!(
                "{}",
                serde_json::json!({
                    "camera": a.camera_id, "name": a.name, "peer": e.peer.to_string(),
                    "width": a.width, "height": a.height, "fps": fps(a.fps_num, a.fps_den),
                    "codec": a.codec, "live": a.live, "via": e.via.to_string(),
                })
            );
        }
        return Ok(());
    }
    if found.is_empty() {
        anyhow::bail!("no cameras found within {timeout:?} (try --bootstrap <addr>, or a longer --timeout)");
    }
    println!(
        "{:<16} {:<20} {:>9} {:>5} {:<5} {:<5} {:<7} PEER",
        "CAMERA", "NAME", "SIZE", "FPS", "CODEC", "LIVE", "VIA"
    );
    for e in found {
        let a = &e.announcement;
        println!(
            "{:<16} {:<20} {:>9} {:>5.1} {:<5} {:<5} {:<7} {}",
            a.camera_id,
            truncate(&a.name, 20),
            format!("{}x{}", a.width, a.height),
            fps(a.fps_num, a.fps_den),
            a.codec,
            if a.live { "yes" } else { "no" },
            e.via,
            e.peer
        );
    }
    Ok(())
}

async fn peers(node: &NodeHandle, timeout: Duration) -> Result<()> {
    use camesh_node::reach::routes as route;
    tokio::time::sleep(timeout).await;
    let peers = node.peers().await?;
    // Each member's own view (NAT status) and what it re-serves (FORWARDS).
    let survey = route::survey(node.reach()).await;
    let forwarding = route::forwarded_in(&survey);
    println!(
        "this peer: {} (NAT {}{})",
        node.peer_id(),
        route::reachability_text(node.net().reachability()),
        if node.net().relaying() {
            ", relaying for members"
        } else {
            ""
        }
    );
    println!(
        "{:<54} {:<10} {:<24} {:<8} {:>8} {:<24} {:<10} {:<22} {:<24} ADDRESS",
        "PEER", "STATE", "PATH", "NAT", "RTT", "FLEET STATE", "CLOCK", "AGENT", "FORWARDS"
    );
    let skew = u64::try_from(node.trust().skew_s()).unwrap_or(0);
    for p in peers {
        // The address of the connection in use (direct first), else the last one dialed.
        let addr = p.connections.first().map(|c| &c.addr).or(p.addrs.first());
        let forwards: Vec<String> = forwarding
            .iter()
            .filter(|(peer, _)| *peer == p.peer)
            .map(|(_, f)| format!("{} ({} viewers)", f.camera_id, f.viewers))
            .collect();
        // How far the peer's fleet-state log is from ours, and its clock (from the last
        // reconciliation with it; "-" for a peer that is not a member or not yet synced).
        let sync = node.fleet_state_of(&p.peer);
        println!(
            "{:<54} {:<10} {:<24} {:<8} {:>8} {:<24} {:<10} {:<22} {:<24} {}",
            p.peer,
            if p.connected { "connected" } else { "known" },
            path::link_text(route::link_of(Some(&p))),
            route::reachability_of(&survey, &p.peer).map_or("-", route::reachability_text),
            p.rtt
                .map(|r| format!("{:.1}ms", r.as_secs_f64() * 1000.0))
                .unwrap_or_else(|| "-".into()),
            sync.map_or("-".into(), |s| s.lag_text()),
            sync.map_or("-".into(), |s| s.clock_text(skew)),
            truncate(&p.agent, 22),
            if forwards.is_empty() {
                "-".to_string()
            } else {
                forwards.join(", ")
            },
            addr.map(|a| a.to_string()).unwrap_or_default()
        );
    }
    Ok(())
}

pub(crate) fn fps(num: u32, den: u32) -> f64 {
    if den == 0 {
        0.0
    } else {
        f64::from(num) / f64::from(den)
    }
}

pub(crate) fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        s.chars().take(n.saturating_sub(1)).chain(['…']).collect()
    }
}
