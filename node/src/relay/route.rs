//! Routes in practice (IO): opening a camera's stream on a [`Route`], and describing
//! every candidate route (link, RTT) for the pure chooser in [`crate::watch::path`].
//!
//! Through a forwarder, the viewer checks on its own what the forwarder cannot fake: the
//! camera's node named in the accept must hold a certificate binding the camera (the
//! impostor check), and the keys come from that node over its own authenticated
//! connection, so a forwarder can drop frames but never forge or read them.

use std::time::Duration;

use camesh_proto::pb;
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};

use super::forward::origin_of;
use super::keys::KeySource;
use crate::auth::{self, Rights};
use crate::net::PeerSummary;
use crate::node::NodeHandle;
use crate::stream::client::{self, ClientError, Subscription};
use crate::watch::path::{Candidate, Link, Route};

/// Opens `camera`'s stream on `route`.
pub async fn subscribe(
    node: &NodeHandle,
    camera: &str,
    route: Route,
    req: pb::StreamRequest,
) -> Result<Subscription, ClientError> {
    match route {
        Route::Direct(p) => node.subscribe_camera(camera, Some(p), req).await,
        Route::Forwarded(f) => subscribe_via(node, camera, f, req).await,
    }
}

async fn connect_member(node: &NodeHandle, peer: PeerId, addrs: Vec<Multiaddr>) -> Result<auth::CertInfo, ClientError> {
    node.net()
        .connect(Some(peer), addrs)
        .await
        .map_err(|e| ClientError::Open {
            peer,
            reason: e.to_string(),
        })?;
    node.trust()
        .wait_member(&peer, node.trust().grace().max(Duration::from_secs(2)))
        .await
        .ok_or(ClientError::Open {
            peer,
            reason: "did not prove fleet membership".into(),
        })
}

/// Watches `camera` through forwarder `via`: frames from the forwarder, keys from the
/// camera's node.
pub async fn subscribe_via(
    node: &NodeHandle,
    camera: &str,
    via: PeerId,
    mut req: pb::StreamRequest,
) -> Result<Subscription, ClientError> {
    if req.grant.is_empty() {
        if let Some(g) = node.trust().grant_for(camera, Rights::LIVE) {
            req.grant = auth::signed::encode(&g);
        }
    }
    let profile = req.profile();
    // Without a grant the forwarder refuses with its reason; ask anyway so the viewer
    // hears it from the forwarder.
    let grant = auth::signed::decode("grant", &req.grant).ok();
    connect_member(node, via, Vec::new()).await?;
    let mut control = node.stream_control();
    let mut sub = client::subscribe(&mut control, via, req, &node.config().limits).await?;
    let origin = origin_of(&sub.accept, via)?;
    let addrs = node
        .directory()
        .lookup(camera)
        .into_iter()
        .filter(|e| e.peer == origin)
        .flat_map(|e| e.addrs())
        .collect();
    let cert = connect_member(node, origin, addrs).await?;
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
        peer: node.peer_id(),
        code: pb::RejectCode::RejectNotAuthorized,
        reason: format!("this node holds no live grant for camera {camera}"),
    })?;
    let source = KeySource {
        control: node.stream_control(),
        camera_peer: origin,
        camera: camera.to_owned(),
        profile,
        grant,
        limits: node.config().limits.clone(),
    };
    let epoch = sub.accept.key_epoch;
    sub.use_key_source(source, epoch).await?;
    Ok(sub)
}

/// The relay named in a circuit address: the peer just before `/p2p-circuit`.
fn relay_in(a: &Multiaddr) -> Option<PeerId> {
    let parts: Vec<_> = a.iter().collect();
    parts.windows(2).find_map(|w| match (&w[0], &w[1]) {
        (Protocol::P2p(r), Protocol::P2pCircuit) => Some(*r),
        _ => None,
    })
}

/// How the connection to a peer is made, from what the swarm reports: the open
/// connections (a direct one wins), else the addresses dialed.
pub fn link_of(summary: Option<&PeerSummary>) -> Link {
    let Some(s) = summary.filter(|s| s.connected) else {
        return Link::Unknown;
    };
    let circuit = |a: &Multiaddr| a.iter().any(|p| p == Protocol::P2pCircuit);
    if !s.connections.is_empty() {
        if s.connections.iter().any(|c| !c.relayed) {
            return Link::Direct;
        }
        return s
            .connections
            .iter()
            .find_map(|c| relay_in(&c.addr))
            .map_or(Link::Unknown, Link::Relayed);
    }
    if !s.addrs.is_empty() && s.addrs.iter().all(circuit) {
        return s.addrs.iter().find_map(relay_in).map_or(Link::Unknown, Link::Relayed);
    }
    Link::Direct
}

/// The candidates for `camera`: its node(s) and forwarders `via`, as the swarm sees them.
pub async fn candidates(node: &NodeHandle, owners: &[PeerId], via: &[PeerId], prefer_via: bool) -> Vec<Candidate> {
    let peers = node.peers().await.unwrap_or_default();
    let describe = |route: Route, preferred: bool| {
        let s = peers.iter().find(|s| s.peer == route.peer());
        Candidate {
            route,
            link: link_of(s),
            rtt: s.and_then(|s| s.rtt),
            // Unknown peers are worth a try; the chooser remembers failures.
            reachable: true,
            preferred,
        }
    };
    owners
        .iter()
        .map(|p| describe(Route::Direct(*p), false))
        .chain(via.iter().map(|p| describe(Route::Forwarded(*p), prefer_via)))
        .collect()
}

/// Asks every connected fleet member what it serves and forwards, and how it sees
/// itself (NAT status, relaying): one `/camesh/info/1` request each, concurrently, each
/// bounded by the request timeout. Peers that do not answer are left out.
pub async fn survey(node: &NodeHandle) -> Vec<(PeerId, pb::CameraList)> {
    let peers = node.peers().await.unwrap_or_default();
    let mut asks = tokio::task::JoinSet::new();
    for p in peers.into_iter().filter(|p| p.connected) {
        if node.trust().member(&p.peer).is_none() {
            continue;
        }
        let (mut control, limits) = (node.stream_control(), node.config().limits.clone());
        asks.spawn(async move { (p.peer, client::list(&mut control, p.peer, &limits).await) });
    }
    let mut found = Vec::new();
    while let Some(r) = asks.join_next().await {
        let Ok((peer, Ok(list))) = r else { continue };
        found.push((peer, list));
    }
    found.sort_by_key(|(p, _)| *p);
    found
}

/// What each peer of a survey re-serves, by peer then camera.
pub fn forwarded_in(survey: &[(PeerId, pb::CameraList)]) -> Vec<(PeerId, pb::ForwardedStream)> {
    let mut found: Vec<_> = survey
        .iter()
        .flat_map(|(peer, list)| list.forwarding.iter().map(|f| (*peer, f.clone())))
        .collect();
    found.sort_by(|(a, f), (b, g)| a.cmp(b).then(f.camera_id.cmp(&g.camera_id)));
    found
}

/// A peer's own NAT status in one word (AutoNAT's terms): public (reachable without
/// help), private (behind a NAT or firewall: reached through a relay or a punch), unknown.
pub fn reachability_text(r: pb::Reachability) -> &'static str {
    match r {
        pb::Reachability::Public => "public",
        pb::Reachability::Private => "private",
        pb::Reachability::Unknown => "unknown",
    }
}

/// The NAT status a peer reported in a survey, `None` if it did not answer.
pub fn reachability_of(survey: &[(PeerId, pb::CameraList)], peer: &PeerId) -> Option<pb::Reachability> {
    survey
        .iter()
        .find(|(p, _)| p == peer)
        .and_then(|(_, l)| l.node.as_ref())
        .map(|n| n.reachability())
}

/// The peers of a survey that forward `camera` (`profile`).
pub fn forwarders_in(
    survey: &[(PeerId, pb::CameraList)],
    camera: &str,
    profile: pb::Profile,
) -> Vec<(PeerId, pb::ForwardedStream)> {
    forwarded_in(survey)
        .into_iter()
        .filter(|(_, f)| f.camera_id == camera && f.profile == profile as i32)
        .collect()
}

/// Connected fleet members that forward `camera` (`profile`) now.
pub async fn forwarders(node: &NodeHandle, camera: &str, profile: pb::Profile) -> Vec<(PeerId, pb::ForwardedStream)> {
    forwarders_in(&survey(node).await, camera, profile)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::ConnPath;

    fn summary(connected: bool, conns: &[(&str, bool)]) -> PeerSummary {
        PeerSummary {
            peer: PeerId::random(),
            connected,
            addrs: Vec::new(),
            rtt: None,
            agent: String::new(),
            fleet_protocol: String::new(),
            connections: conns
                .iter()
                .map(|(a, relayed)| ConnPath {
                    addr: a.parse().expect("multiaddr"),
                    relayed: *relayed,
                })
                .collect(),
        }
    }

    #[test]
    fn links_are_direct_relayed_or_unknown() {
        let relay = PeerId::random();
        let circuit = format!("/ip4/10.0.0.1/udp/4001/quic-v1/p2p/{relay}/p2p-circuit");
        assert_eq!(link_of(None), Link::Unknown);
        assert_eq!(link_of(Some(&summary(false, &[]))), Link::Unknown);
        assert_eq!(link_of(Some(&summary(true, &[(&circuit, true)]))), Link::Relayed(relay));
        // A hole punch added a direct connection next to the circuit: direct wins.
        assert_eq!(
            link_of(Some(&summary(
                true,
                &[(&circuit, true), ("/ip4/1.2.3.4/udp/5/quic-v1", false)]
            ))),
            Link::Direct
        );
    }

    #[test]
    fn a_survey_gives_each_peers_nat_status_and_what_it_forwards() {
        let (a, b, silent) = (PeerId::random(), PeerId::random(), PeerId::random());
        let fwd = |camera: &str| pb::ForwardedStream {
            camera_id: camera.into(),
            ..Default::default()
        };
        let status = |r: pb::Reachability| pb::NodeStatus {
            reachability: r as i32,
            ..Default::default()
        };
        let survey = vec![
            (
                a,
                pb::CameraList {
                    forwarding: vec![fwd("cam2"), fwd("cam1")],
                    node: Some(status(pb::Reachability::Public)),
                    ..Default::default()
                },
            ),
            (
                b,
                pb::CameraList {
                    node: Some(status(pb::Reachability::Private)),
                    ..Default::default()
                },
            ),
            // An older node that sends no status of itself.
            (silent, pb::CameraList::default()),
        ];
        assert_eq!(reachability_of(&survey, &a), Some(pb::Reachability::Public));
        assert_eq!(reachability_of(&survey, &b), Some(pb::Reachability::Private));
        assert_eq!(reachability_of(&survey, &silent), None);
        assert_eq!(reachability_of(&survey, &PeerId::random()), None);
        let cams: Vec<_> = forwarded_in(&survey)
            .into_iter()
            .map(|(p, f)| (p, f.camera_id))
            .collect();
        assert_eq!(cams, vec![(a, "cam1".to_string()), (a, "cam2".to_string())]);
        let cam2: Vec<_> = forwarders_in(&survey, "cam2", pb::Profile::Main)
            .into_iter()
            .map(|(p, _)| p)
            .collect();
        assert_eq!(cam2, vec![a]);
        assert_eq!(reachability_text(pb::Reachability::Private), "private");
    }
}
