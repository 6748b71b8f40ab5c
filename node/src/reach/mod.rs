//! Reaching a camera: the one seam every part that watches, forwards, records or serves
//! a camera of another node goes through (viewers, forwarders, the NVR, the gateway).
//!
//! The sequence is always the same, and written only here:
//! 1. resolve: the directory first (announcements, camera lists), then the DHT's
//!    provider records, then a short discovery round;
//! 2. connect: dial the peer (any known address, relayed or direct);
//! 3. prove membership: wait until the peer's fleet certificate has been verified on this
//!    connection, and for a camera, that the certificate binds the camera id to that key
//!    (an impostor is refused here, whatever it answers later);
//! 4. subscribe: send the `StreamRequest` with this node's grant and read the answer.
//!
//! [`Reach`] holds only what that takes (the swarm handle, a stream control, the
//! directory, the trust store and the limits), never the whole node; [`routes`] describes
//! the ways to a camera (direct, relayed, through a forwarder) for the viewer's path
//! choice.

pub mod routes;

use std::sync::Arc;
use std::time::Duration;

use camesh_proto::pb;
use libp2p::{Multiaddr, PeerId};
use tracing::warn;

pub use routes::{Candidate, Link, Route};

use crate::auth::{self, Rights, Trust};
use crate::config::Limits;
use crate::discovery::{self, CameraEntry, Directory, Via};
use crate::net::{self, NetError, NetHandle, PeerSummary};
use crate::stream::budget::LinkBudgets;
use crate::stream::client::{self, ClientError, Subscription};
use crate::stream::keys::KeySource;

/// How long a peer has, at least, to prove its membership after a connect.
const MIN_PROOF_WAIT: Duration = Duration::from_secs(2);
/// How long a viewer looks for a camera nobody has announced yet.
const DISCOVER_ON_MISS: Duration = Duration::from_secs(2);

/// Why [`Reach::camera_node`] found no node to talk to.
#[derive(Debug, thiserror::Error)]
pub enum CameraNodeError {
    #[error("no node serving camera {0:?} was found (is it running, and does a bootstrap peer know it?)")]
    NotFound(String),
    #[error("cannot reach {peer}: {reason}")]
    Unreachable { peer: PeerId, reason: String },
}

/// A live `StreamRequest` for `camera` (`profile`); the grant is filled in when sent.
pub fn live_request(camera: &str, profile: pb::Profile, user_agent: &str) -> pb::StreamRequest {
    pb::StreamRequest {
        audio: false,
        camera_id: camera.to_owned(),
        profile: profile as i32,
        mode: Some(pb::stream_request::Mode::Live(pb::Live {})),
        grant: Default::default(),
        max_frame_bytes: 0,
        user_agent: user_agent.to_owned(),
    }
}

/// The camera's node named by an accept: `origin_peer`, or the answering peer itself.
pub fn origin_of(accept: &pb::StreamAccept, answering: PeerId) -> Result<PeerId, ClientError> {
    if accept.origin_peer.is_empty() {
        return Ok(answering);
    }
    PeerId::from_bytes(&accept.origin_peer).map_err(|e| ClientError::Tampered {
        peer: answering,
        reason: format!("bad origin peer in accept: {e}"),
    })
}

/// Everything it takes to reach a camera on another node (cheap to clone).
#[derive(Clone)]
pub struct Reach {
    me: PeerId,
    net: NetHandle,
    control: libp2p_stream::Control,
    directory: Arc<Directory>,
    trust: Arc<Trust>,
    limits: Arc<Limits>,
    /// Caps on what this node sends each peer (`[[link]]`), for bulk senders.
    budgets: Arc<LinkBudgets>,
}

impl std::fmt::Debug for Reach {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reach").field("me", &self.me).finish_non_exhaustive()
    }
}

impl Reach {
    pub fn new(
        me: PeerId,
        net: NetHandle,
        control: libp2p_stream::Control,
        directory: Arc<Directory>,
        trust: Arc<Trust>,
        limits: Limits,
    ) -> Self {
        Self {
            me,
            net,
            control,
            directory,
            trust,
            limits: Arc::new(limits),
            budgets: Arc::new(LinkBudgets::new(&[])),
        }
    }

    /// With the node's link budgets (bulk transfers take what live video leaves).
    pub fn with_budgets(mut self, budgets: Arc<LinkBudgets>) -> Self {
        self.budgets = budgets;
        self
    }

    /// The node's link budgets (`[[link]]`).
    pub fn budgets(&self) -> &Arc<LinkBudgets> {
        &self.budgets
    }

    /// This node's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.me
    }

    pub fn net(&self) -> &NetHandle {
        &self.net
    }

    pub fn trust(&self) -> &Arc<Trust> {
        &self.trust
    }

    pub fn directory(&self) -> &Arc<Directory> {
        &self.directory
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// A libp2p-stream control for opening streams of other protocols (NVR, keys).
    pub fn control(&self) -> libp2p_stream::Control {
        self.control.clone()
    }

    pub async fn peers(&self) -> Result<Vec<PeerSummary>, NetError> {
        self.net.peers().await
    }

    /// How long to wait for a connected peer's membership proof.
    fn proof_wait(&self) -> Duration {
        self.trust.grace().max(MIN_PROOF_WAIT)
    }

    /// Connects to `peer` (at `addrs`, or wherever the swarm knows) and waits for its
    /// membership proof on that connection.
    pub async fn connect_member(&self, peer: PeerId, addrs: Vec<Multiaddr>) -> Result<auth::CertInfo, ClientError> {
        let dialed = self.net.connect(Some(peer), addrs).await;
        self.member_after(peer, dialed).await
    }

    /// [`Self::connect_member`] with a fresh dial even while an earlier one is under way
    /// (`NetHandle::redial`): for a sender retrying while a link is down.
    pub async fn redial_member(&self, peer: PeerId, addrs: Vec<Multiaddr>) -> Result<auth::CertInfo, ClientError> {
        let dialed = self.net.redial(peer, addrs).await;
        self.member_after(peer, dialed).await
    }

    async fn member_after(
        &self,
        peer: PeerId,
        dialed: Result<PeerId, crate::net::NetError>,
    ) -> Result<auth::CertInfo, ClientError> {
        dialed.map_err(|e| ClientError::Open {
            peer,
            reason: e.to_string(),
        })?;
        self.trust
            .wait_member(&peer, self.proof_wait())
            .await
            .ok_or(ClientError::Open {
                peer,
                reason: "did not prove fleet membership".into(),
            })
    }

    /// The addresses the directory knows for `peer` serving `camera`.
    pub fn addrs_of(&self, camera: &str, peer: PeerId) -> Vec<Multiaddr> {
        self.directory
            .lookup(camera)
            .into_iter()
            .filter(|e| e.peer == peer)
            .flat_map(|e| e.addrs())
            .collect()
    }

    /// Fills in this node's grant for `camera` with `rights` when the request has none.
    pub fn with_grant(&self, camera: &str, rights: Rights, mut req: pb::StreamRequest) -> pb::StreamRequest {
        if req.grant.is_empty() {
            if let Some(g) = self.trust.grant_for(camera, rights) {
                req.grant = auth::signed::encode(&g);
            }
        }
        req
    }

    /// Asks one peer for its cameras and stores them in the directory (only cameras its
    /// certificate binds to it).
    pub async fn query_peer(&self, peer: PeerId) -> Result<usize, ClientError> {
        let cert = self
            .trust
            .wait_member(&peer, self.proof_wait())
            .await
            .ok_or(ClientError::Open {
                peer,
                reason: "not a verified fleet member".into(),
            })?;
        let mut control = self.control.clone();
        let list = client::list_cameras(&mut control, peer, &self.limits).await?;
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
    pub async fn resolve(&self, camera: &str) -> Vec<(PeerId, Vec<Multiaddr>)> {
        let mut found: Vec<_> = self
            .directory
            .lookup(camera)
            .into_iter()
            .map(|e| (e.peer, e.addrs()))
            .collect();
        if found.is_empty() {
            if let Ok(peers) = self.net.find_first_providers(discovery::camera_key(camera)).await {
                found = peers.into_iter().map(|p| (p, Vec::new())).collect();
            }
        }
        found
    }

    /// The node serving `camera`, connected: asks discovery again for up to the request
    /// timeout (right after start it may still be under way). `Err` says why not.
    pub async fn camera_node(&self, camera: &str) -> Result<PeerId, CameraNodeError> {
        let look = Duration::from_secs(self.limits.request_timeout_s.max(1));
        let deadline = tokio::time::Instant::now() + look;
        let (peer, addrs) = loop {
            if let Some(found) = self.resolve(camera).await.into_iter().next() {
                break found;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(CameraNodeError::NotFound(camera.to_owned()));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let connected = self
            .peers()
            .await
            .map(|ps| ps.iter().any(|p| p.peer == peer && p.connected))
            .unwrap_or(false);
        if !connected {
            self.net
                .connect(Some(peer), addrs)
                .await
                .map_err(|e| CameraNodeError::Unreachable {
                    peer,
                    reason: e.to_string(),
                })?;
        }
        Ok(peer)
    }

    /// Connects to a peer that serves `camera` (or `peer`, if given) and subscribes; the
    /// request carries this node's `live` grant unless it names one.
    pub async fn subscribe(
        &self,
        camera: &str,
        peer: Option<PeerId>,
        req: pb::StreamRequest,
    ) -> Result<Subscription, ClientError> {
        let req = self.with_grant(camera, Rights::LIVE, req);
        let candidates = match peer {
            Some(p) => vec![(p, Vec::new())],
            None => {
                let mut c = self.resolve(camera).await;
                if c.is_empty() {
                    self.discover_cameras(DISCOVER_ON_MISS).await;
                    c = self.resolve(camera).await;
                }
                c
            }
        };
        let mut last = None;
        for (p, addrs) in candidates {
            // Viewers dial keys: the peer must hold a certificate that binds the camera
            // id to its key, proven on this very connection.
            match self.connect_member(p, addrs).await {
                Ok(cert) if cert.may_serve(camera) => {}
                Ok(_) => {
                    last = Some(ClientError::Impostor {
                        peer: p,
                        camera: camera.to_owned(),
                    });
                    continue;
                }
                Err(e) => {
                    last = Some(e);
                    continue;
                }
            }
            let mut control = self.control.clone();
            match client::subscribe(&mut control, p, req.clone(), &self.limits).await {
                Ok(s) => return Ok(s),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or(ClientError::NotFound {
            camera: camera.to_owned(),
        }))
    }

    /// Opens `camera`'s stream from `peer` as it answers, whatever it is (the camera's
    /// node or a forwarder): connect, membership, subscribe. Frames come as sent (sealed
    /// frames from a forwarder need a key source: see [`Self::subscribe_via`]).
    pub async fn open(&self, camera: &str, peer: PeerId, req: pb::StreamRequest) -> Result<Subscription, ClientError> {
        self.connect_member(peer, self.addrs_of(camera, peer)).await?;
        let mut control = self.control.clone();
        client::subscribe(&mut control, peer, req, &self.limits).await
    }

    /// Watches `camera` through forwarder `via`: frames from the forwarder, keys from the
    /// camera's node. The camera's node named in the accept must hold a certificate
    /// binding the camera (the impostor check), and the keys come over this node's own
    /// authenticated connection to it, so a forwarder can drop frames but never forge or
    /// read them.
    pub async fn subscribe_via(
        &self,
        camera: &str,
        via: PeerId,
        req: pb::StreamRequest,
    ) -> Result<Subscription, ClientError> {
        let req = self.with_grant(camera, Rights::LIVE, req);
        let profile = req.profile();
        // Without a grant the forwarder refuses with its reason; ask anyway so the viewer
        // hears it from the forwarder.
        let grant = auth::signed::decode("grant", &req.grant).ok();
        self.connect_member(via, Vec::new()).await?;
        let mut control = self.control.clone();
        let mut sub = client::subscribe(&mut control, via, req, &self.limits).await?;
        let origin = origin_of(&sub.accept, via)?;
        let cert = self.connect_member(origin, self.addrs_of(camera, origin)).await?;
        if !cert.may_serve(camera) {
            return Err(ClientError::Impostor {
                peer: origin,
                camera: camera.to_owned(),
            });
        }
        if origin == via {
            // Not forwarded after all: the camera's own node, keys in-band.
            return Ok(sub);
        }
        let grant = grant.ok_or_else(|| ClientError::Rejected {
            peer: self.me,
            code: pb::RejectCode::RejectNotAuthorized,
            reason: format!("this node holds no live grant for camera {camera}"),
        })?;
        let source = KeySource {
            control: self.control.clone(),
            camera_peer: origin,
            camera: camera.to_owned(),
            profile,
            grant,
            limits: (*self.limits).clone(),
        };
        let epoch = sub.accept.key_epoch;
        sub.use_key_source(source, epoch).await?;
        Ok(sub)
    }

    /// Opens `camera`'s stream on `route`.
    pub async fn subscribe_route(
        &self,
        camera: &str,
        route: Route,
        req: pb::StreamRequest,
    ) -> Result<Subscription, ClientError> {
        match route {
            Route::Direct(p) => self.subscribe(camera, Some(p), req).await,
            Route::Forwarded(f) => self.subscribe_via(camera, f, req).await,
        }
    }
}
