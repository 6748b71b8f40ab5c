//! `camesh-node`: the daemon that runs on cameras, NVRs and always-on viewers.
//!
//! `camesh-node init --role camera` writes a config and an identity key into the data
//! directory; `camesh-node run` starts the node and prints the addresses to dial.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use camesh_node::config::{CameraConfig, Config, Role};
use camesh_node::Node;
use clap::{Parser, Subcommand, ValueEnum};
use libp2p::Multiaddr;

#[derive(Parser, Debug)]
#[command(
    name = "camesh-node",
    version,
    about = "camesh node daemon: serves cameras, records, relays; a peer of the fleet mesh"
)]
struct Cli {
    /// Data directory: identity key (identity.key, mode 0600) and config.toml.
    #[arg(long, env = "CAMESH_DATA_DIR", global = true)]
    data_dir: Option<PathBuf>,
    /// Log filter (e.g. info, camesh_node=debug).
    #[arg(long, env = "CAMESH_LOG", default_value = "info", global = true)]
    log: String,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum RoleArg {
    Camera,
    Nvr,
    Viewer,
    /// A depot or shore server: relay and DHT server, WebRTC-direct, no cameras (a
    /// viewer member with those keys set; the written config comments each key).
    Relay,
}

impl From<RoleArg> for Role {
    fn from(r: RoleArg) -> Self {
        match r {
            RoleArg::Camera => Role::Camera,
            RoleArg::Nvr => Role::Nvr,
            RoleArg::Viewer | RoleArg::Relay => Role::Viewer,
        }
    }
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Create the data directory with a config preset for a role and a new identity.
    Init {
        #[arg(long, value_enum)]
        role: RoleArg,
        #[arg(long, default_value = "default")]
        fleet: String,
        /// The fleet root public key, as `mesh fleet init` prints it.
        #[arg(long)]
        fleet_root: String,
        /// Overwrite an existing config.toml (the identity key is kept).
        #[arg(long)]
        force: bool,
    },
    /// Run the node.
    Run {
        /// Config file (default: <data-dir>/config.toml; without one, a viewer preset).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Serve a camera from a file: ID=PATH (repeatable; implies role camera).
        #[arg(long = "camera", value_name = "ID=PATH")]
        cameras: Vec<String>,
        /// Listen address (repeatable; replaces the config's).
        #[arg(long)]
        listen: Vec<Multiaddr>,
        /// Bootstrap peer address with /p2p/<peer id> (repeatable; added to the config's).
        #[arg(long, short)]
        bootstrap: Vec<Multiaddr>,
        #[arg(long)]
        fleet: Option<String>,
        /// The fleet root public key (overrides the config's).
        #[arg(long)]
        fleet_root: Option<String>,
        /// Turn mDNS LAN discovery off.
        #[arg(long)]
        no_mdns: bool,
        /// Also serve the HTTP gateway (live page, /cam/<id>/live.mp4, snapshot.jpg,
        /// /metrics) on this address, e.g. 127.0.0.1:8090. Loopback only.
        #[arg(long, value_name = "ADDR")]
        gateway: Option<std::net::SocketAddr>,
        /// With --gateway: also serve the web app's static files (its built folder,
        /// web/dist) under /app/, so a browser can load the page from this node.
        #[arg(long, value_name = "DIR", env = "CAMESH_WEB_APP", requires = "gateway")]
        web_app: Option<PathBuf>,
    },
    /// Print this node's peer id.
    Id,
    /// Join a fleet with a one-time invite (from `mesh fleet invite`): the admin node it
    /// names issues this node's membership certificate.
    Join {
        invite: String,
        /// Listen address while joining (default: QUIC on all interfaces).
        #[arg(long)]
        listen: Vec<Multiaddr>,
    },
    /// Show this node's audit log (admissions, refusals, revocations, key changes).
    Audit {
        #[arg(long, short = 'n', default_value_t = 50)]
        lines: usize,
    },
}

fn default_data_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("XDG_DATA_HOME") {
        return PathBuf::from(d).join("camesh/node");
    }
    match std::env::var_os("HOME") {
        Some(h) => PathBuf::from(h).join(".local/share/camesh/node"),
        None => PathBuf::from("camesh-data"),
    }
}

#[tokio::main]
async fn main() {
    if let Err(e) = real_main().await {
        eprintln!("camesh-node: {e:#}");
        std::process::exit(1);
    }
}

async fn real_main() -> Result<()> {
    let cli = Cli::parse();
    camesh_node::logs::init(&cli.log).map_err(anyhow::Error::msg)?;
    let data_dir = cli.data_dir.clone().unwrap_or_else(default_data_dir);
    match cli.cmd {
        Cmd::Init {
            role,
            fleet,
            fleet_root,
            force,
        } => {
            let path = data_dir.join("config.toml");
            if path.exists() && !force {
                bail!("{} exists; use --force to overwrite it", path.display());
            }
            let mut config = Config::preset(role.into());
            config.node.fleet_id = fleet;
            config.node.fleet_root = fleet_root;
            config.validate()?;
            let text = match role {
                RoleArg::Relay => {
                    let text = camesh_node::config::relay_preset_toml(&config.node.fleet_id, &config.node.fleet_root);
                    Config::parse(&text)?.validate()?;
                    text
                }
                _ => config.init_text(),
            };
            std::fs::create_dir_all(&data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
            let key = camesh_node::identity::load_or_create(&data_dir)?;
            camesh_node::identity::replace_private(&path, text.as_bytes())
                .with_context(|| format!("writing {}", path.display()))?;
            println!("peer id: {}", key.public().to_peer_id());
            println!("config:  {}", path.display());
            Ok(())
        }
        Cmd::Audit { lines } => {
            for e in camesh_node::auth::audit::Audit::open(&data_dir).tail(lines) {
                println!(
                    "{} {:<18} {:<54} {:<12} {}",
                    e.unix_s, e.event, e.peer, e.camera, e.detail
                );
            }
            Ok(())
        }
        Cmd::Join { invite, listen } => {
            let (info, _) = camesh_node::auth::invite::parse(&invite, camesh_node::auth::now_s())?;
            let path = data_dir.join("config.toml");
            let mut config = if path.exists() {
                Config::load(&path)?
            } else {
                Config::preset(match info.role {
                    camesh_proto::pb::MemberRole::Camera => Role::Camera,
                    camesh_proto::pb::MemberRole::Nvr => Role::Nvr,
                    _ => Role::Viewer,
                })
            };
            config.node.fleet_id = info.fleet_id.clone();
            config.node.fleet_root = camesh_node::auth::fleet::root_to_text(&info.fleet_root);
            config.node.name = info.name.clone();
            config.node.mdns = false;
            if !listen.is_empty() {
                config.node.listen = listen;
            }
            let cameras = std::mem::take(&mut config.cameras);
            let node = Node::spawn(config.clone(), &data_dir).await?;
            let cert = node
                .redeem_invite(&invite)
                .await
                .map_err(|e| anyhow::anyhow!("joining: {e}"))?;
            node.shutdown();
            config.cameras = cameras;
            config.node.mdns = true;
            std::fs::create_dir_all(&data_dir)?;
            camesh_node::identity::replace_private(&path, config.to_toml().as_bytes())
                .with_context(|| format!("writing {}", path.display()))?;
            println!(
                "joined fleet {} as {:?} {:?}; certificate valid until unix {}",
                info.fleet_id, cert.role, cert.name, cert.not_after_unix_s
            );
            println!("config: {}", path.display());
            Ok(())
        }
        Cmd::Id => {
            let key = camesh_node::identity::load_or_create(&data_dir)?;
            println!("{}", key.public().to_peer_id());
            Ok(())
        }
        Cmd::Run {
            config,
            cameras,
            listen,
            bootstrap,
            fleet,
            fleet_root,
            no_mdns,
            gateway,
            web_app,
        } => {
            let path = config.unwrap_or_else(|| data_dir.join("config.toml"));
            let mut config = if path.exists() {
                Config::load(&path)?
            } else {
                Config::preset(if cameras.is_empty() { Role::Viewer } else { Role::Camera })
            };
            for spec in cameras {
                let (id, file) = spec
                    .split_once('=')
                    .with_context(|| format!("--camera {spec:?}: expected ID=PATH"))?;
                config.node.role = Role::Camera;
                config.cameras.push(CameraConfig {
                    id: id.to_owned(),
                    name: String::new(),
                    source: PathBuf::from(file),
                    sub_source: None,
                    rtsp_transport: Default::default(),
                    looping: true,
                    tags: Vec::new(),
                    onvif: None,
                    motion: None,
                    talkback: None,
                });
            }
            if !listen.is_empty() {
                config.node.listen = listen;
            }
            config.node.bootstrap.extend(bootstrap);
            if let Some(f) = fleet {
                config.node.fleet_id = f;
            }
            if let Some(r) = fleet_root {
                config.node.fleet_root = r;
            }
            if no_mdns {
                config.node.mdns = false;
            }
            let (role, nvr_section) = (config.node.role, config.nvr.clone());
            let node = Node::spawn(config, &data_dir).await?;
            println!("peer id: {}", node.peer_id());
            for a in node.dial_addrs().await? {
                println!("listening: {a}");
            }
            for id in node.hubs().ids() {
                println!("camera: {id}");
            }
            let gateway = match gateway {
                Some(listen) => {
                    let opts = camesh_node::gateway::GatewayOptions {
                        listen,
                        web_app: web_app.clone(),
                        ..Default::default()
                    };
                    let gw = camesh_node::gateway::Gateway::start(node.clone(), opts)
                        .await
                        .context("starting the HTTP gateway")?;
                    println!("gateway: http://{}/", gw.local_addr());
                    if web_app.is_some() {
                        println!("web app: http://{}/app/", gw.local_addr());
                    }
                    Some(gw)
                }
                None => None,
            };
            // An NVR, or a camera node that records its own cameras ([[nvr.record]]).
            let nvr = if role == Role::Nvr || !nvr_section.records.is_empty() {
                let own = (role == Role::Camera).then(|| camesh_node::nvr::OwnCameras {
                    hubs: node.hubs().clone(),
                    events: node.own_events().clone(),
                });
                let nvr = camesh_node::nvr::Nvr::start_with(node.reach(), nvr_section, &data_dir, own)
                    .await
                    .context("starting the NVR")?;
                node.serve_recorded_events(nvr.events());
                let s = &nvr.state;
                let beside = if s.key_beside_recordings {
                    " (on the recordings' filesystem: a stolen disk can be played; see [nvr] storage_key)"
                } else {
                    ""
                };
                println!("storage key: {}{beside}", s.key_place);
                println!("recordings: {}", s.folder.display());
                Some(nvr)
            } else {
                None
            };
            tokio::signal::ctrl_c().await.context("waiting for Ctrl-C")?;
            if let Some(gw) = gateway {
                gw.shutdown();
            }
            if let Some(nvr) = nvr {
                nvr.stop().await;
            }
            node.shutdown();
            Ok(())
        }
    }
}
