//! `mesh`: the camesh command line for laptops. It is itself a mesh peer: each command
//! starts a viewer node (identity in the data directory), finds the fleet by mDNS,
//! bootstrap addresses and Kademlia, does its job and exits.

mod demo;
mod events;
mod fleet;
mod install;
mod nvr;
mod onvif;
mod path;
mod ptz;
mod talk;
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
    /// List the fleet's cameras; with --onvif, the ONVIF cameras on this host's LAN.
    Cameras {
        /// How long to look.
        #[arg(long, default_value = "3s", value_parser = parse_duration)]
        timeout: Duration,
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
        /// Find ONVIF cameras on the LAN (WS-Discovery) instead; with --user (and
        /// --password or CAMESH_ONVIF_PASSWORD), also their profiles' RTSP URIs and a
        /// ready [[camera]] entry for a camera node's config.
        #[arg(long, conflicts_with = "json")]
        onvif: bool,
        /// The cameras' ONVIF user (with --onvif).
        #[arg(long, requires = "onvif")]
        user: Option<String>,
        /// The cameras' ONVIF password (with --onvif).
        #[arg(long, env = "CAMESH_ONVIF_PASSWORD", hide_env_values = true, requires = "onvif")]
        password: Option<String>,
    },
    /// Watch a camera: H.264 Annex B to stdout or a file, live stats on stderr.
    Watch(watch::Args),
    /// Serve the fleet to a browser and players: live page, /cam/<id>/live.mp4, snapshots, /metrics.
    View(view::Args),
    /// Viewers of `mesh view --public`: add (prints a token), remove, list.
    #[command(subcommand)]
    ViewUser(view::UserCmd),
    /// Pan, tilt, zoom or presets of a camera (ONVIF, through its node; needs the ptz right).
    Ptz(ptz::Args),
    /// A camera's events (motion, ONVIF): live with --follow, stored with --from.
    Events(events::Args),
    /// Talk through a camera's speaker: a file or the microphone (needs the talk right).
    Talk(talk::Args),
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
        #[arg(long, default_value = "2s", value_parser = parse_duration)]
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
        #[arg(long, default_value = "8h", value_parser = parse_duration)]
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
    quiet_on_broken_pipe();
    if let Err(e) = real_main().await {
        if is_broken_pipe(&e) {
            // `mesh ... | head -1`: the reader has what it wanted.
            std::process::exit(0);
        }
        eprintln!("mesh: {e:#}");
        std::process::exit(1);
    }
}

/// Whether an error comes from writing to a pipe whose reader has gone.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// `println!` panics when stdout is a pipe whose reader has exited (`mesh peers | head
/// -1`); Rust ignores SIGPIPE, so the write fails instead of ending the process. Such a
/// panic ends `mesh` quietly, as SIGPIPE would; any other panic is reported as usual.
fn quiet_on_broken_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if msg.contains("failed printing to stdout") && msg.contains("Broken pipe") {
            std::process::exit(0);
        }
        default(info);
    }));
}

/// A duration: `10s`, `2m`, `1h30m`, `30d`, or a bare number of seconds (`10`, `2.5`).
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if let Ok(secs) = t.parse::<f64>() {
        return Duration::try_from_secs_f64(secs).map_err(|_| format!("{s:?}: not a duration (e.g. 10, 10s, 2m, 1h)"));
    }
    humantime::parse_duration(t).map_err(|e| format!("{s:?}: {e} (e.g. 10, 10s, 2m, 1h)"))
}

async fn real_main() -> Result<()> {
    let cli = Cli::parse();
    camesh_node::logs::init(&cli.log).map_err(anyhow::Error::msg)?;
    let dir = cli.data_dir.clone().unwrap_or_else(default_data_dir);
    // Commands that need no running peer.
    match &cli.cmd {
        Cmd::Demo(args) => return demo::run(args).await,
        Cmd::Fleet(fleet::FleetCmd::Init { id, encrypt }) => return fleet::init(&dir, id, *encrypt),
        Cmd::Cameras {
            onvif: true,
            timeout,
            user,
            password,
            ..
        } => return onvif::run(*timeout, user.as_deref(), password.as_deref()).await,
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
            let node = start_peer(&cli, &dir, true).await?;
            let result = fleet::send_grant(&node, *peer, &g).await;
            close(&node).await;
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
            // Only the admin node the invite names: like `camesh-node join`, no mDNS and no
            // bootstrap peers, which would see a node without a certificate yet and cut it
            // off after their grace period, maybe just as this identity's next command
            // connects.
            let node = start_peer(&cli, &dir, false).await?;
            let cert = node
                .redeem_invite(invite)
                .await
                .map_err(|e| anyhow::anyhow!("joining: {e}"))?;
            println!("joined fleet {} as {:?} {:?}", info.fleet_id, cert.role, cert.name);
            println!("peer id: {}", node.peer_id());
            close(&node).await;
            return Ok(());
        }
        _ => {}
    }
    let node = start_peer(&cli, &dir, true).await?;
    let result = match &cli.cmd {
        Cmd::Cameras { timeout, json, .. } => cameras(&node, *timeout, *json).await,
        Cmd::Watch(args) => watch::run(&node, args).await,
        Cmd::View(args) => view::run(&node, &dir, args).await,
        Cmd::Top(args) => top::run(&node, args).await,
        Cmd::Ptz(args) => ptz::run(&node, args).await,
        Cmd::Events(args) => events::run(&node, args).await,
        Cmd::Talk(args) => talk::run(&node, args).await,
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
    close(&node).await;
    result
}

/// Ends the command's peer with its connections closed, not dropped: a dropped QUIC
/// connection stays open on the other side until it times out, and the next commands of
/// the same identity (a script, the README's tour) would find the peer's connection
/// limit taken by those.
async fn close(node: &NodeHandle) {
    let peers = node.peers().await.unwrap_or_default();
    let connected: Vec<PeerId> = peers.iter().filter(|p| p.connected).map(|p| p.peer).collect();
    for peer in &connected {
        node.net().disconnect(*peer).await;
    }
    if !connected.is_empty() {
        // The close frames go out from the QUIC endpoint's task.
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    node.shutdown();
}

/// The mesh peer of a command; `discover`: mDNS (unless --no-mdns) and the bootstrap peers.
async fn start_peer(cli: &Cli, dir: &std::path::Path, discover: bool) -> Result<NodeHandle> {
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
    let bootstrap = if discover { cli.bootstrap.clone() } else { Vec::new() };
    config.node.bootstrap = bootstrap.clone();
    config.node.mdns = discover && !cli.no_mdns;
    config.node.listen = if cli.listen.is_empty() {
        vec!["/ip4/0.0.0.0/udp/0/quic-v1".parse().context("listen address")?]
    } else {
        cli.listen.clone()
    };
    let node = Node::spawn(config, dir).await?;
    // Bootstrap peers first, each until it has proven membership (and so has verified
    // this node: a relay serves circuits to verified members only); discovery keeps going
    // while commands run.
    for addr in &bootstrap {
        match node.connect(addr.clone()).await {
            Ok(peer) => {
                let _ = node.trust().wait_member(&peer, Duration::from_secs(3)).await;
            }
            Err(e) => eprintln!("mesh: warning: {e}"),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_units_or_bare_seconds() {
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2.5"), Ok(Duration::from_millis(2500)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("30d"), Ok(Duration::from_secs(30 * 86400)));
        assert!(parse_duration("-1").is_err());
        assert!(parse_duration("soon").unwrap_err().contains("soon"));
    }

    #[test]
    fn every_duration_flag_takes_a_bare_number() {
        for args in [
            &["mesh", "demo", "--duration", "10"][..],
            &["mesh", "watch", "cam1", "--duration", "3"],
            &["mesh", "cameras", "--timeout", "5"],
            &["mesh", "peers", "--timeout", "1"],
            &[
                "mesh",
                "grant",
                "12D3KooWRMVa8ZNLpaHJ9t2BuiPiQTRSgW7dMU9nhHUjve1m7ftC",
                "--cameras",
                "c",
                "--rights",
                "live",
                "--until",
                "3600",
            ],
            &["mesh", "fleet", "invite", "--role", "viewer", "--expires", "600"],
        ] {
            Cli::try_parse_from(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
        }
    }
}
