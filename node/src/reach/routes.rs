//! The ways to a camera, as this node sees them now: a [`Route`] (from the camera's node
//! or through a forwarder), the [`Link`] its connection uses (direct, or a circuit through
//! a relay), and a [`Candidate`] per route with its measured RTT, for the viewer's pure
//! path choice. Also the survey of connected members (what each serves and forwards, its
//! NAT status) that `mesh peers`, `mesh path` and forwarder discovery read.

use std::time::Duration;

use camesh_proto::pb;
use libp2p::PeerId;

use super::Reach;
use crate::net::{PeerPath, PeerSummary};
use crate::stream::client;

/// One way to get a camera's stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Route {
    /// From the camera's own node.
    Direct(PeerId),
    /// Through a forwarder that re-serves it.
    Forwarded(PeerId),
}

impl Route {
    /// The peer a stream on this route is opened to.
    pub fn peer(&self) -> PeerId {
        match self {
            Route::Direct(p) | Route::Forwarded(p) => *p,
        }
    }
}

/// How the connection to a route's peer is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Link {
    /// Not connected (yet), or not known.
    #[default]
    Unknown,
    /// A direct QUIC/TCP connection (possibly after a hole punch).
    Direct,
    /// Through a circuit relay.
    Relayed(PeerId),
}

/// What the IO layer knows about one candidate now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub route: Route,
    pub link: Link,
    pub rtt: Option<Duration>,
    /// False when the peer cannot be dialed now (no address, dial failed).
    pub reachable: bool,
    /// Operator's preference (e.g. "via the bus NVR, spare the camera's uplink").
    pub preferred: bool,
}

/// How the connection to a peer is made, as the swarm task's one record of every
/// peer's connections says ([`PeerSummary::peer_path`]): a direct one wins.
pub fn link_of(summary: Option<&PeerSummary>) -> Link {
    match summary.filter(|s| s.connected).map(PeerSummary::peer_path) {
        Some(PeerPath::Direct) => Link::Direct,
        Some(PeerPath::Relayed(Some(relay))) => Link::Relayed(relay),
        _ => Link::Unknown,
    }
}

/// The candidates for a camera: its node(s) `owners` and forwarders `via`, as the swarm
/// sees them now.
pub async fn candidates(reach: &Reach, owners: &[PeerId], via: &[PeerId], prefer_via: bool) -> Vec<Candidate> {
    let peers = reach.peers().await.unwrap_or_default();
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
pub async fn survey(reach: &Reach) -> Vec<(PeerId, pb::CameraList)> {
    let peers = reach.peers().await.unwrap_or_default();
    let mut asks = tokio::task::JoinSet::new();
    for p in peers.into_iter().filter(|p| p.connected) {
        if reach.trust().member(&p.peer).is_none() {
            continue;
        }
        let (mut control, limits) = (reach.control(), reach.limits().clone());
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
pub async fn forwarders(reach: &Reach, camera: &str, profile: pb::Profile) -> Vec<(PeerId, pb::ForwardedStream)> {
    forwarders_in(&survey(reach).await, camera, profile)
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
