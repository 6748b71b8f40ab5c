//! A simulated fleet for the scale section: hundreds to thousands of full camesh nodes
//! (`Node::spawn`, the production discovery, gossip, membership and fleet-state code)
//! in this process, over real QUIC on 127.0.0.1, on the harness's one tokio runtime.
//!
//! Shape of a fleet of `n` nodes ([`Shape::of`]), a bus or store fleet seen from shore:
//! - relays (`n / 250`, at least 2): shore nodes with `relay_server = true` (so DHT
//!   servers), each bootstrapped from the relays started before it;
//! - sites (`n / 10`): one NVR (bootstrapped from two relays) and
//!   [`CAMERAS_PER_SITE`] camera nodes, each serving one camera and bootstrapped from its
//!   site's NVR (as mDNS would find it on the vehicle's LAN; mDNS itself is off);
//! - viewers: the rest, each bootstrapped from one relay, holding a live grant.
//!
//! Cameras carry no video (a hub with no frames, announced and provided like any other):
//! the fleet is at rest. WebRTC-direct is off (no browser is simulated; it would add a
//! UDP socket and a DTLS certificate per camera and NVR). Everything else is each role's
//! preset: announcements every 5 s, the 1 s membership grace, ping every 500 ms.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use camesh_node::auth::fleet::FleetRoot;
use camesh_node::auth::Rights;
use camesh_node::{Config, Multiaddr, Node, NodeHandle, PeerId, Role};
use camesh_proto::pb::MemberRole;

/// Camera nodes per site (a bus with a handful of cameras and its NVR).
pub const CAMERAS_PER_SITE: usize = 6;
/// Nodes started at once: stays under a node's 32 handshakes in flight per remote
/// address (every node here is 127.0.0.1) and its 128 pending connections.
const START_BATCH: usize = 16;

/// What a simulated node is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Relay,
    Nvr,
    Camera,
    Viewer,
}

/// How many nodes of each kind a fleet of `n` has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Shape {
    pub relays: usize,
    pub sites: usize,
    pub cameras: usize,
    pub viewers: usize,
}

impl Shape {
    pub fn of(n: usize) -> Shape {
        let relays = (n / 250).max(2);
        let sites = (n / 10).max(1);
        let cameras = sites * CAMERAS_PER_SITE;
        let viewers = n.saturating_sub(relays + sites + cameras);
        Shape {
            relays,
            sites,
            cameras,
            viewers,
        }
    }

    pub fn total(&self) -> usize {
        self.relays + self.sites + self.cameras + self.viewers
    }
}

/// One node of the fleet.
#[derive(Debug)]
pub struct SimNode {
    pub kind: Kind,
    pub node: NodeHandle,
    /// The camera it serves (camera nodes).
    pub camera: Option<String>,
    /// The peer it was bootstrapped from (none for the first relay).
    pub bootstrap: Option<PeerId>,
}

/// A running fleet; its data folders go with it.
#[derive(Debug)]
pub struct Fleet {
    pub root: FleetRoot,
    pub shape: Shape,
    pub nodes: Vec<SimNode>,
    /// How long starting every node took.
    pub start_time: Duration,
    dir: tempfile::TempDir,
    next_dir: usize,
}

/// A node config in fleet `root` on 127.0.0.1 (QUIC only).
pub fn config(root: &FleetRoot, role: Role, name: &str, bootstrap: Vec<Multiaddr>) -> Config {
    let mut c = crate::loopback_config(role, &root.root_text());
    c.node.name = name.into();
    c.node.webrtc = Some(false);
    c.node.bootstrap = bootstrap;
    c
}

async fn addrs(node: &NodeHandle) -> anyhow::Result<Vec<Multiaddr>> {
    let a = node.dial_addrs().await?;
    anyhow::ensure!(!a.is_empty(), "node has no address");
    Ok(a)
}

impl Fleet {
    /// Starts a fleet of about `n` nodes ([`Shape::of`]) in a fleet of its own.
    pub async fn start(n: usize) -> anyhow::Result<Fleet> {
        let t0 = Instant::now();
        let shape = Shape::of(n);
        let mut fleet = Fleet {
            root: FleetRoot::ephemeral(crate::FLEET),
            shape,
            nodes: Vec::with_capacity(shape.total()),
            start_time: Duration::ZERO,
            dir: tempfile::tempdir()?,
            next_dir: 0,
        };
        // Relays, one at a time, each bootstrapped from those before it.
        let mut relay_addrs: Vec<Vec<Multiaddr>> = Vec::new();
        for i in 0..shape.relays {
            let boot: Vec<Multiaddr> = relay_addrs.iter().flatten().cloned().collect();
            let mut c = config(&fleet.root, Role::Viewer, &format!("relay-{i}"), boot);
            c.node.relay_server = Some(true);
            let node = fleet.spawn(c, MemberRole::Viewer, &[]).await?;
            relay_addrs.push(addrs(&node).await?);
            let bootstrap = fleet.nodes.first().map(|n| n.node.peer_id());
            fleet.nodes.push(SimNode {
                kind: Kind::Relay,
                node,
                camera: None,
                bootstrap,
            });
        }
        let relay_peer = |i: usize| fleet_peer(&relay_addrs[i % relay_addrs.len()]);
        // Sites, a few at a time: NVRs first, then their cameras.
        let per_batch = (START_BATCH / (1 + CAMERAS_PER_SITE)).max(1);
        for first in (0..shape.sites).step_by(per_batch) {
            let sites: Vec<usize> = (first..(first + per_batch).min(shape.sites)).collect();
            let mut nvrs = Vec::new();
            for &s in &sites {
                let boot = [
                    relay_addrs[s % relay_addrs.len()].clone(),
                    relay_addrs[(s + 1) % relay_addrs.len()].clone(),
                ]
                .concat();
                nvrs.push((s, config(&fleet.root, Role::Nvr, &format!("nvr-{s}"), boot)));
            }
            let started = fleet
                .spawn_many(nvrs.into_iter().map(|(_, c)| (c, MemberRole::Nvr, Vec::new())))
                .await?;
            let mut cams = Vec::new();
            for (&s, nvr) in sites.iter().zip(&started) {
                let nvr_addrs = addrs(nvr).await?;
                for k in 0..CAMERAS_PER_SITE {
                    let id = format!("cam-{s}-{k}");
                    let c = config(&fleet.root, Role::Camera, &id, nvr_addrs.clone());
                    cams.push((c, MemberRole::Camera, vec![id]));
                }
            }
            for (&s, node) in sites.iter().zip(started) {
                fleet.nodes.push(SimNode {
                    kind: Kind::Nvr,
                    node,
                    camera: None,
                    bootstrap: relay_peer(s),
                });
            }
            let ids: Vec<String> = cams.iter().map(|(_, _, ids)| ids[0].clone()).collect();
            let nvr_of: Vec<Option<PeerId>> = cams
                .iter()
                .map(|(c, _, _)| c.node.bootstrap.first().and_then(peer_of))
                .collect();
            let started = fleet.spawn_many(cams.into_iter()).await?;
            for ((node, id), nvr) in started.into_iter().zip(ids).zip(nvr_of) {
                node.add_hub(&id, &format!("Camera {id}"));
                fleet.nodes.push(SimNode {
                    kind: Kind::Camera,
                    node,
                    camera: Some(id),
                    bootstrap: nvr,
                });
            }
        }
        // Viewers, each bootstrapped from one relay.
        for first in (0..shape.viewers).step_by(START_BATCH) {
            let batch: Vec<usize> = (first..(first + START_BATCH).min(shape.viewers)).collect();
            let configs: Vec<_> = batch
                .iter()
                .map(|&v| {
                    let boot = relay_addrs[v % relay_addrs.len()].clone();
                    (
                        config(&fleet.root, Role::Viewer, &format!("viewer-{v}"), boot),
                        MemberRole::Viewer,
                        Vec::new(),
                    )
                })
                .collect();
            let started = fleet.spawn_many(configs.into_iter()).await?;
            for (&v, node) in batch.iter().zip(started) {
                fleet.nodes.push(SimNode {
                    kind: Kind::Viewer,
                    node,
                    camera: None,
                    bootstrap: relay_peer(v),
                });
            }
        }
        fleet.start_time = t0.elapsed();
        Ok(fleet)
    }

    /// A fresh data folder, enrolled for `role` (and a live grant on every camera for
    /// viewers and NVRs).
    pub fn enroll(&mut self, role: MemberRole, name: &str, cameras: &[String]) -> anyhow::Result<std::path::PathBuf> {
        let dir = self.dir.path().join(format!("n{}", self.next_dir));
        self.next_dir += 1;
        std::fs::create_dir_all(&dir)?;
        self.root
            .enroll_dir(&dir, role, name, cameras, crate::CERT_VALID_S)
            .context("enroll")?;
        if role != MemberRole::Camera {
            self.root
                .grant_dir(&dir, &["*".to_string()], Rights::LIVE, crate::CERT_VALID_S)
                .context("grant")?;
        }
        Ok(dir)
    }

    /// Enrolls and starts one node (not added to [`Self::nodes`]).
    pub async fn spawn(&mut self, config: Config, role: MemberRole, cameras: &[String]) -> anyhow::Result<NodeHandle> {
        let dir = self.enroll(role, &config.node.name.clone(), cameras)?;
        start(config, &dir).await
    }

    async fn spawn_many(
        &mut self,
        specs: impl Iterator<Item = (Config, MemberRole, Vec<String>)>,
    ) -> anyhow::Result<Vec<NodeHandle>> {
        let mut starts = Vec::new();
        for (c, role, cams) in specs {
            let dir = self.enroll(role, &c.node.name.clone(), &cams)?;
            starts.push(async move { start(c, &dir).await });
        }
        futures::future::try_join_all(starts).await
    }

    /// The relays' peer ids and addresses.
    pub fn relays(&self) -> Vec<&SimNode> {
        self.nodes.iter().filter(|n| n.kind == Kind::Relay).collect()
    }

    /// Nodes that have verified the peer they were bootstrapped from.
    pub fn joined(&self) -> usize {
        self.nodes
            .iter()
            .filter(|n| n.bootstrap.is_none_or(|b| n.node.trust().member(&b).is_some()))
            .count()
    }

    /// Stops every node and waits a moment for their tasks to end.
    pub async fn stop(self) {
        for n in &self.nodes {
            n.node.shutdown();
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        drop(self.nodes);
    }
}

async fn start(config: Config, dir: &Path) -> anyhow::Result<NodeHandle> {
    Node::spawn(config, dir).await.context("starting a fleet node")
}

fn peer_of(a: &Multiaddr) -> Option<PeerId> {
    camesh_node::addr::split_p2p(a.clone()).0
}

fn fleet_peer(addrs: &[Multiaddr]) -> Option<PeerId> {
    addrs.iter().find_map(peer_of)
}
