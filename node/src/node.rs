//! A running node: [`Node::spawn`] wires the parts together and returns a [`NodeHandle`],
//! a thin facade (cheap to clone) for binaries and tests. The parts themselves never see
//! it: each gets the narrowest handle that serves it ([`Reach`] to reach cameras of other
//! nodes, the hubs, the trust store, the swarm handle).
//!
//! Tasks and what they own:
//! - the swarm task ([`crate::net`]): the libp2p Swarm, nothing else;
//! - the protocol servers (media, info, keys, membership, admin, grants, fleet state,
//!   attestations): one bounded accept loop each ([`crate::stream::accept`]), one task
//!   per stream;
//! - one camera task per configured camera ([`crate::stream::ingest`]): its source,
//!   feeding its [`Hub`];
//! - configured forwardings ([`crate::relay::forward`]), certificate renewal and key
//!   rotation ([`crate::member`], [`crate::stream::ingest`]);
//! - the pick-up of grants and certificates installed into the data folder while the
//!   node runs ([`Trust::reload_from_disk`], every [`PICKUP_INTERVAL`]).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use camesh_proto::pb;
use libp2p::{Multiaddr, PeerId};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::auth::{self, Trust};
use crate::config::{Config, Role};
use crate::discovery::{self, CameraEntry, Directory};
use crate::events;
use crate::events::bus::EventBus;
use crate::events::serve::{Recorded, RecordedSlot};
use crate::gateway::GatewayNode;
use crate::net::{self, NetError, NetHandle, PeerSummary};
use crate::reach::Reach;
use crate::relay::forward::{self, Forwarding};
use crate::stream::client::{self, ClientError, Subscription};
use crate::stream::fanout::QueueLimits;
use crate::stream::fresh::FrameSigner;
use crate::stream::hub::{Hub, Hubs};
use crate::stream::server::{MediaServer, StreamSlots};
use crate::stream::{ingest, keys};
use crate::watch::{self, WatchEvent, WatchOptions};
use crate::{fleetsync, grants, member};

/// How often the data folder is re-read for grants and certificates installed while the
/// node runs (`mesh grant-install`, a copied certificate): a new grant takes effect
/// within this, without a restart; an unchanged folder costs a directory listing.
pub const PICKUP_INTERVAL: Duration = Duration::from_secs(2);

/// Errors starting a node.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Identity(#[from] crate::identity::IdentityError),
    #[error(transparent)]
    Build(#[from] net::behaviour::BuildError),
    #[error(transparent)]
    Net(#[from] NetError),
    #[error("config field `node.fleet_root`: {0}")]
    NoFleet(String),
}

/// Cloneable handle to a running node.
#[derive(Clone)]
pub struct NodeHandle {
    config: Arc<Config>,
    reach: Reach,
    hubs: Arc<Hubs>,
    slots: Arc<StreamSlots>,
    sync_table: fleetsync::SyncTable,
    /// Signs the keyframes of cameras added with [`NodeHandle::add_hub`].
    signer: FrameSigner,
    /// Where an NVR on this node puts the events it records, to serve them.
    recorded_events: RecordedSlot,
    /// The events of this node's own cameras.
    own_events: Arc<EventBus>,
    shutdown: CancellationToken,
}

impl std::fmt::Debug for NodeHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeHandle")
            .field("peer_id", &self.reach.peer_id())
            .finish_non_exhaustive()
    }
}

/// Namespace for starting nodes.
#[derive(Debug)]
pub struct Node;

impl Node {
    /// Starts a node with its identity from `data_dir` (created if needed).
    pub async fn spawn(config: Config, data_dir: &Path) -> Result<NodeHandle, StartError> {
        config.validate()?;
        let key = crate::identity::load_or_create(data_dir)?;
        let peer_id = key.public().to_peer_id();
        if config.node.fleet_root.is_empty() {
            return Err(StartError::NoFleet(
                "not set: every node needs its fleet's root public key (`mesh fleet init` prints it)".into(),
            ));
        }
        let root =
            auth::fleet::root_from_text(&config.node.fleet_root).map_err(|e| StartError::NoFleet(e.to_string()))?;
        let trust = Arc::new(Trust::load(data_dir, &config.node.fleet_id, root, peer_id));
        trust.set_grace(Duration::from_millis(config.limits.membership_grace_ms));
        trust.set_skew(i64::try_from(config.limits.clock_skew_s).unwrap_or(i64::MAX));
        match trust.load_admin(&key) {
            Some(Ok(a)) => {
                info!(admin = %a.name, "admin certificate loaded");
                // An admin's own node keeps its own membership certificate current.
                if trust
                    .own_cert_info()
                    .is_none_or(|c| c.not_after_unix_s - auth::now_s() < 7 * 86_400)
                {
                    let role = match config.node.role {
                        Role::Camera => pb::MemberRole::Camera,
                        Role::Nvr => pb::MemberRole::Nvr,
                        Role::Viewer => pb::MemberRole::Admin,
                    };
                    let cams = config.cameras.iter().map(|c| c.id.clone()).collect();
                    trust.self_admit(role, &config.node.name, cams);
                }
            }
            Some(Err(e)) => tracing::warn!(error = %e, "admin certificate not usable"),
            None => {}
        }
        let config = Arc::new(config);
        let shutdown = CancellationToken::new();
        let directory = Arc::new(Directory::default());
        let hubs = Arc::new(Hubs::default());
        let signer = FrameSigner::new(key.clone());
        ingest::start_cameras(&config, &hubs, &signer, &shutdown);
        let relay_enabled = Arc::new(std::sync::atomic::AtomicBool::new(
            config.node.relay_server.unwrap_or(false),
        ));
        // The camera's signing key for GOP attestations (recorders fetch them).
        let attest_key = key.clone();
        let events_key = key.clone();
        let webrtc = if config.webrtc() {
            Some(crate::identity::webrtc_certificate(data_dir)?)
        } else {
            None
        };
        let traffic = Arc::new(net::traffic::Traffic::default());
        let mut swarm = net::behaviour::build_swarm(key, &config, &trust, &relay_enabled, webrtc, &traffic)?;
        let mut control = swarm.behaviour_mut().stream.new_control();
        let mut accept = |p: libp2p::StreamProtocol| control.accept(p).map_err(|e| NetError::Other(e.to_string()));
        let media_in = accept(client::media_protocol())?;
        let info_in = accept(client::info_protocol())?;
        let member_in = accept(member::member_protocol())?;
        let admin_in = accept(member::admin_protocol())?;
        let key_in = accept(keys::key_protocol())?;
        let fleet_in = accept(fleetsync::protocol())?;
        let grant_in = accept(grants::protocol())?;
        let local = {
            let hubs = hubs.clone();
            discovery::LocalCameras::new(move |me, addrs| hubs.announcements(me, addrs))
        };
        let discovery = discovery::Discovery::new(
            &attest_key,
            &config.node.fleet_id,
            trust.clone(),
            directory.clone(),
            local,
        );
        let net = net::spawn(
            swarm,
            config.clone(),
            discovery,
            trust.clone(),
            relay_enabled.clone(),
            traffic,
            shutdown.clone(),
        )
        .await?;
        member::serve_member(member_in, trust.clone(), net.clone(), shutdown.child_token());
        member::serve_admin(admin_in, trust.clone(), net.clone(), shutdown.child_token());
        grants::serve(grant_in, trust.clone(), config.limits.clone(), shutdown.child_token());
        tokio::spawn(member::run_initiator(
            trust.clone(),
            net.clone(),
            net.subscribe(),
            control.clone(),
            shutdown.child_token(),
        ));
        let sync_table = fleetsync::SyncTable::default();
        fleetsync::serve(fleet_in, trust.clone(), sync_table.clone(), shutdown.child_token());
        tokio::spawn(fleetsync::run(
            trust.clone(),
            net.clone(),
            net.subscribe(),
            control.clone(),
            sync_table.clone(),
            shutdown.child_token(),
        ));
        net.bootstrap().await;
        tokio::spawn(ingest::rotate_keys(
            trust.clone(),
            hubs.clone(),
            Duration::from_secs(config.limits.key_rotation_s),
            shutdown.child_token(),
        ));
        tokio::spawn(member::cut_revoked(trust.clone(), net.clone(), shutdown.child_token()));
        tokio::spawn(member::renew_certificate(
            trust.clone(),
            control.clone(),
            shutdown.child_token(),
        ));
        tokio::spawn(pick_up_installed(trust.clone(), shutdown.child_token()));
        let slots = Arc::new(StreamSlots::default());
        let budgets = Arc::new(crate::stream::budget::LinkBudgets::new(&config.links));
        let server = Arc::new(MediaServer {
            hubs: hubs.clone(),
            limits: config.limits.clone(),
            slots: slots.clone(),
            trust: trust.clone(),
            budgets: budgets.clone(),
        });
        server.run(media_in, shutdown.child_token());
        keys::serve(
            key_in,
            hubs.clone(),
            trust.clone(),
            config.limits.clone(),
            shutdown.child_token(),
        );
        let info = crate::stream::server::Info {
            hubs: hubs.clone(),
            trust: trust.clone(),
            net: net.clone(),
            slots: slots.clone(),
            me: peer_id,
            role: config.node.role.to_string(),
            started: std::time::Instant::now(),
            directory: directory.clone(),
        };
        crate::stream::server::run_info(info_in, info, config.limits.clone(), shutdown.child_token());
        // Camera-signed GOP digests of this node's cameras, for recorders (`/camesh/attest/1`).
        let attester = crate::attest::serve::Attester {
            hubs: hubs.clone(),
            trust: trust.clone(),
            limits: config.limits.clone(),
            key: attest_key,
            slots: Default::default(),
        };
        crate::attest::serve::start(&mut control, attester, shutdown.child_token()).map_err(NetError::Other)?;
        // Talkback for cameras with a backchannel (`/camesh/talk/1`); other nodes refuse plainly.
        crate::talk::serve::TalkServer::new(&config.cameras, trust.clone(), config.limits.clone())
            .start(&mut control, shutdown.child_token())
            .map_err(NetError::Other)?;
        // PTZ for cameras with an ONVIF service (`/camesh/ptz/1`); other nodes refuse plainly.
        crate::ptz::serve::PtzServer::new(&config.cameras, trust.clone(), config.limits.clone())
            .start(&mut control, shutdown.child_token())
            .map_err(NetError::Other)?;
        let events = start_events(&config, &hubs, &trust, &directory, events_key, &mut control, &shutdown)?;
        info!(peer = %peer_id, role = %config.node.role, fleet = %config.node.fleet_id, cameras = hubs.ids().len(), "node started");
        let reach = Reach::new(peer_id, net, control, directory, trust, config.limits.clone()).with_budgets(budgets);
        let handle = NodeHandle {
            config,
            reach,
            hubs,
            slots,
            sync_table,
            signer,
            recorded_events: events.0,
            own_events: events.1,
            shutdown,
        };
        for f in &handle.config.forwards {
            tokio::spawn(forward::keep(handle.forwarding(), f.clone()));
        }
        Ok(handle)
    }
}

/// Camera events (`/camesh/events/1`): motion detection of the cameras with a
/// `[camera.motion]` section, the ONVIF events of those with `[camera.onvif] events`, and
/// serving their events (and, once an NVR on this node
/// sets it, those it records).
fn start_events(
    config: &Config,
    hubs: &Arc<Hubs>,
    trust: &Arc<Trust>,
    directory: &Arc<Directory>,
    key: libp2p::identity::Keypair,
    control: &mut libp2p_stream::Control,
    shutdown: &CancellationToken,
) -> Result<(RecordedSlot, Arc<EventBus>), NetError> {
    let bus = Arc::new(EventBus::new(events::bus::CAMERA_KEEPS));
    let publisher = Arc::new(events::bus::Publisher::new(bus.clone(), key.clone()));
    let queue = QueueLimits {
        max_frames: config.limits.subscriber_queue_frames,
        max_bytes: config.limits.subscriber_queue_bytes,
    };
    for cam in &config.cameras {
        if let Some(motion) = &cam.motion {
            bus.add_camera(&cam.id);
            tokio::spawn(events::detect::run(
                cam.id.clone(),
                motion.clone(),
                hubs.clone(),
                publisher.clone(),
                key.public().to_peer_id(),
                queue,
                shutdown.child_token(),
            ));
        }
    }
    for cam in &config.cameras {
        if let Some(onvif) = cam.onvif.as_ref().filter(|o| o.events) {
            bus.add_camera(&cam.id);
            tokio::spawn(events::pullpoint::run(
                cam.id.clone(),
                onvif.clone(),
                publisher.clone(),
                shutdown.child_token(),
            ));
        }
    }
    let recorded = RecordedSlot::default();
    events::serve::EventsServer {
        own: bus.clone(),
        hubs: hubs.clone(),
        trust: trust.clone(),
        directory: directory.clone(),
        limits: config.limits.clone(),
        recorded: recorded.clone(),
    }
    .start(control, shutdown.child_token())
    .map_err(NetError::Other)?;
    Ok((recorded, bus))
}

/// Re-reads the data folder every [`PICKUP_INTERVAL`] until `shutdown` (file reads on the
/// blocking pool).
async fn pick_up_installed(trust: Arc<Trust>, shutdown: CancellationToken) {
    let mut every = tokio::time::interval(PICKUP_INTERVAL);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    every.tick().await; // The first tick is immediate; Trust::load has just read it all.
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        let t = trust.clone();
        match tokio::task::spawn_blocking(move || t.reload_from_disk()).await {
            Ok(0) => {}
            Ok(installed) => info!(
                installed,
                "picked up grants or a certificate installed in the data folder"
            ),
            Err(e) => tracing::warn!(error = %e, "data folder pick-up failed"),
        }
    }
}

impl NodeHandle {
    pub fn peer_id(&self) -> PeerId {
        self.reach.peer_id()
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The way to cameras of other nodes: what viewers, forwarders, the NVR and the
    /// gateway are given instead of this handle.
    pub fn reach(&self) -> &Reach {
        &self.reach
    }

    pub fn net(&self) -> &NetHandle {
        self.reach.net()
    }

    pub fn trust(&self) -> &Arc<Trust> {
        self.reach.trust()
    }

    /// What the last fleet-state exchange with `peer` showed (lag, clock offset).
    pub fn fleet_state_of(&self, peer: &PeerId) -> Option<fleetsync::PeerState> {
        self.sync_table.get(peer)
    }

    /// The events of this node's own cameras (an NVR on this node indexes them).
    pub fn own_events(&self) -> &Arc<EventBus> {
        &self.own_events
    }

    /// Serves the events an NVR on this node records (`/camesh/events/1` with the
    /// `playback` right).
    pub fn serve_recorded_events(&self, recorded: Arc<Recorded>) {
        *self.recorded_events.write().unwrap_or_else(|e| e.into_inner()) = Some(recorded);
    }

    /// What a gateway on this node needs.
    pub fn gateway_node(&self) -> GatewayNode {
        GatewayNode {
            reach: self.reach.clone(),
            hubs: self.hubs.clone(),
            slots: self.slots.clone(),
            fleet_id: self.config.node.fleet_id.clone(),
            shutdown: self.shutdown.clone(),
        }
    }

    /// What a forwarding of this node needs.
    pub fn forwarding(&self) -> Forwarding {
        Forwarding {
            reach: self.reach.clone(),
            hubs: self.hubs.clone(),
            gop_cache_bytes: self.config.limits.gop_cache_bytes,
            shutdown: self.shutdown.clone(),
        }
    }

    /// Sends a revocation to every connected peer and gossips it (after applying it here).
    pub async fn push_revocation(&self, r: pb::Signed) -> Result<usize, String> {
        member::push_revocation(self.trust(), self.net(), &self.reach.control(), r).await
    }

    /// Hands `grant` to its holder `peer` over `/camesh/grant/1` (connecting first);
    /// Ok when the holder verified and installed it.
    pub async fn send_grant(&self, peer: PeerId, grant: &pb::Signed) -> Result<(), grants::PushError> {
        grants::send(&self.reach, peer, grant).await
    }

    /// Redeems an invite with its admin node and installs the certificate it issues.
    pub async fn redeem_invite(&self, text: &str) -> Result<auth::CertInfo, String> {
        member::redeem_invite(self.trust(), self.net(), &self.reach.control(), text).await
    }

    pub fn hubs(&self) -> &Arc<Hubs> {
        &self.hubs
    }

    /// A libp2p-stream control for opening raw streams (tests, tools).
    pub fn stream_control(&self) -> libp2p_stream::Control {
        self.reach.control()
    }

    pub fn directory(&self) -> &Arc<Directory> {
        self.reach.directory()
    }

    /// Adds a camera fed by the caller (synthetic frames, other ingest): publish access
    /// units with [`Hub::publish`]. Announced and served like configured cameras.
    pub fn add_hub(&self, id: &str, name: &str) -> Arc<Hub> {
        let hub = Arc::new(
            Hub::new(id, name, Vec::new(), self.config.limits.gop_cache_bytes).with_signer(self.signer.clone()),
        );
        self.hubs.insert(hub.clone());
        hub
    }

    /// Media streams this node is serving now.
    pub fn streams_served(&self) -> usize {
        self.slots.total()
    }

    /// Addresses others can dial, with `/p2p/<peer id>` appended.
    pub async fn dial_addrs(&self) -> Result<Vec<Multiaddr>, NetError> {
        let mut addrs = self.net().listen_addrs().await?;
        // QUIC first: the address other nodes should take (WebRTC-direct is for browsers).
        addrs.sort_by_key(crate::addr::is_webrtc_direct);
        Ok(addrs
            .into_iter()
            .map(|a| a.with(libp2p::multiaddr::Protocol::P2p(self.peer_id())))
            .collect())
    }

    pub async fn connect(&self, addr: Multiaddr) -> Result<PeerId, NetError> {
        self.net().connect(None, vec![addr]).await
    }

    pub async fn peers(&self) -> Result<Vec<PeerSummary>, NetError> {
        self.net().peers().await
    }

    /// Asks one peer for its cameras and stores them in the directory.
    pub async fn query_peer(&self, peer: PeerId) -> Result<usize, ClientError> {
        self.reach.query_peer(peer).await
    }

    /// Discovers cameras for up to `wait` (see [`Reach::discover_cameras`]).
    pub async fn discover_cameras(&self, wait: Duration) -> Vec<CameraEntry> {
        self.reach.discover_cameras(wait).await
    }

    /// Peers that serve `camera`: the directory first, then the DHT.
    pub async fn resolve_camera(&self, camera: &str) -> Vec<(PeerId, Vec<Multiaddr>)> {
        self.reach.resolve(camera).await
    }

    /// Connects to a peer that serves `camera` (or `peer`, if given) and subscribes.
    pub async fn subscribe_camera(
        &self,
        camera: &str,
        peer: Option<PeerId>,
        req: pb::StreamRequest,
    ) -> Result<Subscription, ClientError> {
        self.reach.subscribe(camera, peer, req).await
    }

    /// Watches a camera until `cancel`; events arrive on the returned bounded channel.
    pub fn watch(&self, opts: WatchOptions, cancel: CancellationToken) -> mpsc::Receiver<WatchEvent> {
        watch::spawn(self.reach.clone(), opts, None, cancel)
    }

    /// Like [`Self::watch`], but moving between the camera's main and sub profiles as the
    /// link allows (starting on `opts.profile`); see [`crate::watch::profiles`].
    pub fn watch_adaptive(&self, opts: WatchOptions, cancel: CancellationToken) -> mpsc::Receiver<WatchEvent> {
        watch::profiles::spawn(self.reach.clone(), opts, cancel)
    }

    /// Re-serves `camera` (`profile`) from `upstream` (its node or another forwarder) to
    /// authorized peers, sealed; needs a `forward` (or `live`) grant for the camera.
    pub async fn forward(
        &self,
        camera: &str,
        upstream: PeerId,
        profile: pb::Profile,
    ) -> Result<forward::ForwardHandle, ClientError> {
        forward::start(&self.forwarding(), camera, upstream, profile).await
    }

    /// Opens `camera`'s stream through forwarder `via` (keys from the camera's node).
    pub async fn subscribe_via(
        &self,
        camera: &str,
        via: PeerId,
        req: pb::StreamRequest,
    ) -> Result<Subscription, ClientError> {
        self.reach.subscribe_via(camera, via, req).await
    }

    /// Watches a camera over several routes (its node and the forwarders in `routes`),
    /// failing over and switching make-before-break; events as in [`Self::watch`].
    pub fn watch_routes(
        &self,
        opts: WatchOptions,
        routes: crate::watch::RouteOptions,
        cancel: CancellationToken,
    ) -> mpsc::Receiver<WatchEvent> {
        watch::spawn(self.reach.clone(), opts, Some(routes), cancel)
    }

    /// Cancelled when the node shuts down (for tasks tied to the node's life).
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Stops every task of the node.
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }

    pub fn is_shut_down(&self) -> bool {
        self.shutdown.is_cancelled()
    }
}

impl From<NodeHandle> for GatewayNode {
    fn from(node: NodeHandle) -> Self {
        node.gateway_node()
    }
}
