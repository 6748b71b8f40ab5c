//! A running node: [`Node::spawn`] starts the swarm task, the stream servers and one
//! task per camera, and returns a [`NodeHandle`] (cheap to clone) to talk to it.
//!
//! Tasks and what they own:
//! - the swarm task ([`crate::net`]): the libp2p Swarm, nothing else;
//! - the media and info servers ([`crate::stream::server`]) and the key server
//!   ([`crate::relay::keys`]): one task per stream;
//! - one camera task per configured camera: its source, feeding its [`Hub`].

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use camesh_proto::pb;
use libp2p::{Multiaddr, PeerId};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::auth::{self, Trust};
use crate::config::{CameraConfig, Config, Role};
use crate::discovery::{self, CameraEntry, Directory, Via};
use crate::media::source::{rtsp, FileSource, RtspOptions, RtspSource, SourceEvent, SourceOptions};
use crate::net::{self, NetError, NetHandle, PeerSummary};
use crate::stream::client::{self, ClientError, Subscription};
use crate::stream::hub::{Hub, Hubs};
use crate::stream::server::{MediaServer, StreamSlots};
use crate::stream::watch::{self, WatchEvent, WatchOptions};

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
    peer_id: PeerId,
    config: Arc<Config>,
    net: NetHandle,
    control: libp2p_stream::Control,
    directory: Arc<Directory>,
    hubs: Arc<Hubs>,
    slots: Arc<StreamSlots>,
    trust: Arc<Trust>,
    shutdown: CancellationToken,
}

impl std::fmt::Debug for NodeHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeHandle")
            .field("peer_id", &self.peer_id)
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
        if trust.root_key().is_some() {
            // An admin's own node certifies itself.
            let role = match config.node.role {
                Role::Camera => camesh_proto::pb::MemberRole::Camera,
                Role::Nvr => camesh_proto::pb::MemberRole::Nvr,
                Role::Viewer => camesh_proto::pb::MemberRole::Admin,
            };
            let cams = config.cameras.iter().map(|c| c.id.clone()).collect();
            trust.self_admit(role, &config.node.name, cams);
        }
        let config = Arc::new(config);
        let shutdown = CancellationToken::new();
        let directory = Arc::new(Directory::default());
        let hubs = Arc::new(Hubs::default());
        for cam in &config.cameras {
            let name = if cam.name.is_empty() {
                cam.id.clone()
            } else {
                cam.name.clone()
            };
            let hub = Arc::new(Hub::new(
                cam.id.clone(),
                name,
                cam.tags.clone(),
                config.limits.gop_cache_bytes,
            ));
            hubs.insert(hub.clone());
            tokio::spawn(run_camera(hub, cam.clone(), cam.source.clone(), shutdown.child_token()));
            if let Some(sub_source) = &cam.sub_source {
                // The sub stream: its own hub under the same camera id, picked by profile.
                let sub = Arc::new(Hub::new(
                    cam.id.clone(),
                    format!(
                        "{} (sub)",
                        hubs.get(&cam.id).map(|h| h.name.clone()).unwrap_or_default()
                    ),
                    cam.tags.clone(),
                    config.limits.gop_cache_bytes,
                ));
                hubs.insert_sub(sub.clone());
                tokio::spawn(run_camera(sub, cam.clone(), sub_source.clone(), shutdown.child_token()));
            }
        }
        let relay_enabled = Arc::new(std::sync::atomic::AtomicBool::new(
            config.node.relay_server.unwrap_or(false),
        ));
        // The camera's signing key for GOP attestations (recorders fetch them).
        let attest_key = key.clone();
        let mut swarm = net::behaviour::build_swarm(key, &config, &trust, &relay_enabled)?;
        let mut control = swarm.behaviour_mut().stream.new_control();
        let media_in = control
            .accept(client::media_protocol())
            .map_err(|e| NetError::Other(e.to_string()))?;
        let info_in = control
            .accept(client::info_protocol())
            .map_err(|e| NetError::Other(e.to_string()))?;
        let member_in = control
            .accept(net::membership::member_protocol())
            .map_err(|e| NetError::Other(e.to_string()))?;
        let admin_in = control
            .accept(net::membership::admin_protocol())
            .map_err(|e| NetError::Other(e.to_string()))?;
        let key_in = control
            .accept(crate::relay::keys::key_protocol())
            .map_err(|e| NetError::Other(e.to_string()))?;
        let local = {
            let hubs = hubs.clone();
            discovery::LocalCameras::new(move |me, addrs| hubs.announcements(me, addrs))
        };
        let discovery =
            discovery::Discovery::new(peer_id, &config.node.fleet_id, trust.clone(), directory.clone(), local);
        let net = net::spawn(
            swarm,
            config.clone(),
            discovery,
            trust.clone(),
            relay_enabled.clone(),
            shutdown.clone(),
        )
        .await?;
        tokio::spawn(net::membership::serve_member(
            member_in,
            trust.clone(),
            net.clone(),
            shutdown.child_token(),
        ));
        tokio::spawn(net::membership::serve_admin(
            admin_in,
            trust.clone(),
            net.clone(),
            shutdown.child_token(),
        ));
        tokio::spawn(net::membership::run_initiator(
            trust.clone(),
            net.clone(),
            net.subscribe(),
            control.clone(),
            shutdown.child_token(),
        ));
        net.bootstrap().await;
        tokio::spawn(rotate_keys_on_revocation(
            trust.clone(),
            hubs.clone(),
            shutdown.child_token(),
        ));
        tokio::spawn(renew_certificate(
            trust.clone(),
            control.clone(),
            shutdown.child_token(),
        ));
        let slots = Arc::new(StreamSlots::default());
        let server = Arc::new(MediaServer {
            hubs: hubs.clone(),
            limits: config.limits.clone(),
            slots: slots.clone(),
            trust: trust.clone(),
        });
        tokio::spawn(server.run(media_in, shutdown.child_token()));
        tokio::spawn(crate::relay::keys::serve(
            key_in,
            hubs.clone(),
            trust.clone(),
            config.limits.clone(),
            shutdown.child_token(),
        ));
        let info = crate::stream::server::Info {
            hubs: hubs.clone(),
            trust: trust.clone(),
            net: net.clone(),
            slots: slots.clone(),
            me: peer_id,
            role: config.node.role.to_string(),
            started: std::time::Instant::now(),
        };
        tokio::spawn(crate::stream::server::run_info(
            info_in,
            info,
            config.limits.clone(),
            shutdown.child_token(),
        ));
        info!(peer = %peer_id, role = %config.node.role, fleet = %config.node.fleet_id, cameras = hubs.ids().len(), "node started");
        let handle = NodeHandle {
            peer_id,
            config,
            net,
            control,
            directory,
            hubs,
            slots,
            trust,
            shutdown,
        };
        for f in &handle.config.forwards {
            tokio::spawn(crate::relay::forward::keep(handle.clone(), f.clone()));
        }
        // Camera-signed GOP digests of this node's cameras, for recorders (`/camesh/attest/1`).
        crate::attest::serve::start(&handle, attest_key).map_err(NetError::Other)?;
        Ok(handle)
    }
}

/// Keeps this node's certificate current: in the second half of its validity, asks a
/// connected admin member for a fresh one. Checks on a period scaled to the lifetime.
async fn renew_certificate(trust: Arc<Trust>, mut control: libp2p_stream::Control, shutdown: CancellationToken) {
    loop {
        let wait = match trust.own_cert_info() {
            Some(c) => {
                let lifetime = (c.not_after_unix_s - c.not_before_unix_s).max(1);
                let left = c.not_after_unix_s - auth::now_s();
                if left < lifetime / 2 {
                    for admin in trust.admins() {
                        match renew_from(&trust, &mut control, admin).await {
                            Ok(until) => {
                                info!(admin = %admin, until, "membership certificate renewed");
                                trust.audit.record("certificate-renewed", &admin.to_string(), "", "");
                                break;
                            }
                            Err(e) => warn!(admin = %admin, error = %e, "certificate renewal failed"),
                        }
                    }
                }
                Duration::from_secs(u64::try_from(lifetime / 20).unwrap_or(60).clamp(1, 600))
            }
            None => Duration::from_secs(60),
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

async fn renew_from(trust: &Trust, control: &mut libp2p_stream::Control, admin: PeerId) -> Result<i64, String> {
    let req = camesh_proto::pb::AdminRequest {
        request: Some(camesh_proto::pb::admin_request::Request::Renew(
            camesh_proto::pb::Renew {},
        )),
        invite: None,
    };
    let resp = net::membership::admin_request(control, admin, req).await?;
    let cert = resp.cert.ok_or("no certificate in the answer")?;
    let info = trust
        .install_cert_bytes(&auth::signed::encode(&cert))
        .map_err(|e| e.to_string())?;
    Ok(info.not_after_unix_s)
}

/// Every revocation changes every camera's media key: whoever was revoked keeps at most
/// the keys of frames it was allowed to see.
async fn rotate_keys_on_revocation(trust: Arc<Trust>, hubs: Arc<Hubs>, shutdown: CancellationToken) {
    let mut rx = trust.subscribe();
    let mut epoch = trust.revocation_epoch();
    let mut known = trust.revocation_records().len();
    loop {
        tokio::select! {
            r = rx.changed() => if r.is_err() { return },
            _ = shutdown.cancelled() => return,
        }
        let (e, n) = (trust.revocation_epoch(), trust.revocation_records().len());
        if (e, n) != (epoch, known) {
            (epoch, known) = (e, n);
            for hub in hubs.all().into_iter().chain(hubs.subs()) {
                let k = hub.rotate_key();
                trust.audit.record(
                    "key-rotated",
                    "",
                    &hub.id,
                    &format!("key epoch {k} after revocation epoch {e}"),
                );
            }
        }
    }
}

/// Runs a camera's source (`source`: a file, or an `rtsp://` URL) forever: restarts it
/// with backoff when it ends or fails, and reports the gap when video is back.
async fn run_camera(hub: Arc<Hub>, cam: CameraConfig, source: std::path::PathBuf, shutdown: CancellationToken) {
    let mut backoff = Duration::ZERO;
    let rtsp_url = rtsp::source_url(&source).map(str::to_owned);
    // A camera that drops is retried often (a refused connection costs nothing); a file
    // that cannot be played is not going to change soon.
    let max_backoff = if rtsp_url.is_some() {
        Duration::from_secs(2)
    } else {
        Duration::from_secs(30)
    };
    let mut down_since: Option<std::time::Instant> = None;
    let mut failures = 0u32;
    loop {
        let (tx, mut rx) = mpsc::channel(32);
        let token = shutdown.child_token();
        let task = match &rtsp_url {
            Some(url) => {
                let opts = RtspOptions {
                    transport: cam.rtsp_transport,
                    ..RtspOptions::default()
                };
                tokio::spawn(RtspSource::new(url.clone(), opts).run(tx, token.clone()))
            }
            None => {
                let file = FileSource::new(
                    source.clone(),
                    SourceOptions {
                        looping: cam.looping,
                        ..SourceOptions::default()
                    },
                );
                tokio::spawn(file.run(tx, token.clone()))
            }
        };
        let mut failure = None;
        while let Some(ev) = rx.recv().await {
            match ev {
                SourceEvent::Params(p) => {
                    if let Some(since) = down_since.take() {
                        let gap = since.elapsed();
                        hub.counters
                            .source_gaps
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        hub.counters.last_gap_ms.store(
                            u64::try_from(gap.as_millis()).unwrap_or(u64::MAX),
                            std::sync::atomic::Ordering::Relaxed,
                        );
                        info!(camera = %hub.id, gap_ms = gap.as_millis() as u64, width = p.width, height = p.height, "source back after a gap");
                    } else {
                        info!(camera = %hub.id, width = p.width, height = p.height, "source started");
                    }
                    backoff = Duration::ZERO;
                    failures = 0;
                    hub.set_params(p);
                }
                SourceEvent::Frame(au) => hub.publish(au),
                SourceEvent::Ended { reason } => failure = Some(format!("ended: {reason}")),
                SourceEvent::Failed { error } => failure = Some(error),
            }
        }
        token.cancel();
        let _ = task.await;
        let why = failure.unwrap_or_else(|| "stopped".into());
        hub.set_offline(&why);
        if shutdown.is_cancelled() {
            return;
        }
        down_since.get_or_insert_with(std::time::Instant::now);
        backoff = watch::next_backoff(backoff, Duration::from_millis(500), max_backoff);
        failures += 1;
        // Say it when it happens, then now and then while it lasts.
        if failures == 1 || failures.is_multiple_of(30) {
            warn!(camera = %hub.id, error = %why, retry_s = backoff.as_secs_f32(), failures, "camera source stopped; retrying");
        } else {
            tracing::debug!(camera = %hub.id, error = %why, retry_s = backoff.as_secs_f32(), "camera source still down");
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

impl NodeHandle {
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn net(&self) -> &NetHandle {
        &self.net
    }

    pub fn trust(&self) -> &Arc<Trust> {
        &self.trust
    }

    /// Sends a revocation to every connected peer and gossips it (after applying it here).
    pub async fn push_revocation(&self, r: camesh_proto::pb::Signed) -> Result<usize, String> {
        self.trust.apply_revocation(&r).map_err(|e| e.to_string())?;
        self.net.publish_revocation(r.clone());
        let mut sent = 0;
        for p in self
            .peers()
            .await
            .map_err(|e| e.to_string())?
            .into_iter()
            .filter(|p| p.connected)
        {
            let mut control = self.control.clone();
            let req = camesh_proto::pb::AdminRequest {
                request: Some(camesh_proto::pb::admin_request::Request::Revocation(r.clone())),
                invite: None,
            };
            match net::membership::admin_request(&mut control, p.peer, req).await {
                Ok(_) => sent += 1,
                Err(e) => tracing::debug!(peer = %p.peer, error = %e, "revocation not pushed"),
            }
        }
        Ok(sent)
    }

    /// Redeems an invite with its admin node and installs the certificate it issues.
    pub async fn redeem_invite(&self, text: &str) -> Result<auth::CertInfo, String> {
        let (info, signed) = auth::invite::parse(text, auth::now_s()).map_err(|e| e.to_string())?;
        let peer = self
            .net
            .connect(Some(info.admin_peer), info.admin_addrs.clone())
            .await
            .map_err(|e| e.to_string())?;
        let mut control = self.control.clone();
        let req = camesh_proto::pb::AdminRequest {
            request: Some(camesh_proto::pb::admin_request::Request::RedeemToken(
                info.token.clone().into(),
            )),
            invite: Some(signed),
        };
        let resp = net::membership::admin_request(&mut control, peer, req).await?;
        let cert = resp.cert.ok_or("the admin node sent no certificate")?;
        self.trust
            .install_cert_bytes(&auth::signed::encode(&cert))
            .map_err(|e| e.to_string())
    }

    pub fn hubs(&self) -> &Arc<Hubs> {
        &self.hubs
    }

    /// A libp2p-stream control for opening raw streams (tests, tools).
    pub fn stream_control(&self) -> libp2p_stream::Control {
        self.control.clone()
    }

    pub fn directory(&self) -> &Arc<Directory> {
        &self.directory
    }

    /// Adds a camera fed by the caller (synthetic frames, other ingest): publish access
    /// units with [`Hub::publish`]. Announced and served like configured cameras.
    pub fn add_hub(&self, id: &str, name: &str) -> Arc<Hub> {
        let hub = Arc::new(Hub::new(id, name, Vec::new(), self.config.limits.gop_cache_bytes));
        self.hubs.insert(hub.clone());
        hub
    }

    /// Media streams this node is serving now.
    pub fn streams_served(&self) -> usize {
        self.slots.total()
    }

    /// Addresses others can dial, with `/p2p/<peer id>` appended.
    pub async fn dial_addrs(&self) -> Result<Vec<Multiaddr>, NetError> {
        let addrs = self.net.listen_addrs().await?;
        Ok(addrs
            .into_iter()
            .map(|a| a.with(libp2p::multiaddr::Protocol::P2p(self.peer_id)))
            .collect())
    }

    pub async fn connect(&self, addr: Multiaddr) -> Result<PeerId, NetError> {
        self.net.connect(None, vec![addr]).await
    }

    pub async fn peers(&self) -> Result<Vec<PeerSummary>, NetError> {
        self.net.peers().await
    }

    /// Asks one peer for its cameras and stores them in the directory (only cameras its
    /// certificate binds to it).
    pub async fn query_peer(&self, peer: PeerId) -> Result<usize, ClientError> {
        let cert = self
            .trust
            .wait_member(&peer, self.trust.grace().max(Duration::from_secs(2)))
            .await
            .ok_or(ClientError::Open {
                peer,
                reason: "not a verified fleet member".into(),
            })?;
        let mut control = self.control.clone();
        let list = client::list_cameras(&mut control, peer, &self.config.limits).await?;
        let mut n = 0;
        for ann in list {
            if !cert.may_serve(&ann.camera_id) {
                warn!(%peer, camera = %ann.camera_id.chars().take(64).collect::<String>(), "peer lists a camera its certificate does not bind to it; ignored");
                continue;
            }
            match self.directory.insert(peer, ann, Via::Info) {
                Ok(()) => n += 1,
                Err(e) => warn!(%peer, error = %e, "camera list entry ignored"),
            }
        }
        Ok(n)
    }

    /// Discovers cameras for up to `wait`: queries every connected peer, peers found by
    /// mDNS as they connect, and Kademlia providers of the fleet's cameras key.
    pub async fn discover_cameras(&self, wait: Duration) -> Vec<CameraEntry> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut events = self.net.subscribe();
        let mut asked = std::collections::HashSet::new();
        let mut queries = tokio::task::JoinSet::new();
        let ask = |peer: PeerId, queries: &mut tokio::task::JoinSet<()>| {
            let me = self.clone();
            queries.spawn(async move {
                if let Err(e) = me.query_peer(peer).await {
                    tracing::debug!(%peer, error = %e, "peer has no camera list");
                }
            });
        };
        if let Ok(peers) = self.net.peers().await {
            for p in peers.into_iter().filter(|p| p.connected) {
                if asked.insert(p.peer) {
                    ask(p.peer, &mut queries);
                }
            }
        }
        let net = self.net.clone();
        let mut providers = tokio::spawn(async move { net.find_providers(discovery::cameras_key()).await });
        let mut providers_done = false;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => break,
                ev = events.recv() => match ev {
                    Ok(net::NetEvent::Connected { peer: p, .. }) => if asked.insert(p) { ask(p, &mut queries) },
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(_) => break,
                },
                found = &mut providers, if !providers_done => {
                    providers_done = true;
                    for p in found.ok().and_then(|r| r.ok()).unwrap_or_default() {
                        if asked.insert(p) {
                            let me = self.clone();
                            queries.spawn(async move {
                                if me.net.connect(Some(p), vec![]).await.is_ok() {
                                    let _ = me.query_peer(p).await;
                                }
                            });
                        }
                    }
                }
                Some(_) = queries.join_next(), if !queries.is_empty() => {}
            }
        }
        providers.abort();
        self.directory.cameras()
    }

    /// Peers that serve `camera`: the directory first, then the DHT.
    pub async fn resolve_camera(&self, camera: &str) -> Vec<(PeerId, Vec<Multiaddr>)> {
        let mut found: Vec<_> = self
            .directory
            .lookup(camera)
            .into_iter()
            .map(|e| (e.peer, e.addrs()))
            .collect();
        if found.is_empty() {
            if let Ok(peers) = self.net.find_providers(discovery::camera_key(camera)).await {
                found = peers.into_iter().map(|p| (p, Vec::new())).collect();
            }
        }
        found
    }

    /// Connects to a peer that serves `camera` (or `peer`, if given) and subscribes.
    pub async fn subscribe_camera(
        &self,
        camera: &str,
        peer: Option<PeerId>,
        req: pb::StreamRequest,
    ) -> Result<Subscription, ClientError> {
        let candidates = match peer {
            Some(p) => vec![(p, Vec::new())],
            None => {
                let mut c = self.resolve_camera(camera).await;
                if c.is_empty() {
                    self.discover_cameras(Duration::from_secs(2)).await;
                    c = self.resolve_camera(camera).await;
                }
                c
            }
        };
        let mut last = None;
        let mut req = req;
        if req.grant.is_empty() {
            if let Some(g) = self.trust.grant_for(camera, auth::Rights::LIVE) {
                req.grant = auth::signed::encode(&g);
            }
        }
        for (p, addrs) in candidates {
            if let Err(e) = self.net.connect(Some(p), addrs).await {
                last = Some(ClientError::Open {
                    peer: p,
                    reason: e.to_string(),
                });
                continue;
            }
            // Viewers dial keys: the peer must hold a certificate that binds the camera
            // id to its key, proven on this very connection.
            match self
                .trust
                .wait_member(&p, self.trust.grace().max(Duration::from_secs(2)))
                .await
            {
                Some(cert) if cert.may_serve(camera) => {}
                Some(_) => {
                    last = Some(ClientError::Impostor {
                        peer: p,
                        camera: camera.to_owned(),
                    });
                    continue;
                }
                None => {
                    last = Some(ClientError::Open {
                        peer: p,
                        reason: "did not prove fleet membership".into(),
                    });
                    continue;
                }
            }
            let mut control = self.control.clone();
            match client::subscribe(&mut control, p, req.clone(), &self.config.limits).await {
                Ok(s) => return Ok(s),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or(ClientError::Rejected {
            peer: self.peer_id,
            code: pb::RejectCode::RejectUnknownCamera,
            reason: format!("no peer serving camera {camera:?} was found"),
        }))
    }

    /// Watches a camera until `cancel`; events arrive on the returned bounded channel.
    pub fn watch(&self, opts: WatchOptions, cancel: CancellationToken) -> mpsc::Receiver<WatchEvent> {
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(watch::run(self.clone(), opts, tx, cancel));
        rx
    }

    /// Re-serves `camera` (`profile`) from `upstream` (its node or another forwarder) to
    /// authorized peers, sealed; needs a `forward` (or `live`) grant for the camera.
    pub async fn forward(
        &self,
        camera: &str,
        upstream: PeerId,
        profile: pb::Profile,
    ) -> Result<crate::relay::forward::ForwardHandle, ClientError> {
        crate::relay::forward::start(self, camera, upstream, profile).await
    }

    /// Opens `camera`'s stream through forwarder `via` (keys from the camera's node).
    pub async fn subscribe_via(
        &self,
        camera: &str,
        via: PeerId,
        req: pb::StreamRequest,
    ) -> Result<Subscription, ClientError> {
        crate::relay::route::subscribe_via(self, camera, via, req).await
    }

    /// Watches a camera over several routes (its node and the forwarders in `routes`),
    /// failing over and switching make-before-break; events as in [`Self::watch`].
    pub fn watch_routes(
        &self,
        opts: WatchOptions,
        routes: crate::relay::multipath::RouteOptions,
        cancel: CancellationToken,
    ) -> mpsc::Receiver<WatchEvent> {
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(crate::relay::multipath::run(self.clone(), opts, routes, tx, cancel));
        rx
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
