//! A raw libp2p peer for the attack suite: built here with its own fresh key, speaking
//! the fleet's Kademlia, gossipsub and identify protocols (it knows the fleet id: the
//! strongest stranger), and libp2p-stream for camesh's own protocols. Its swarm runs in
//! a task; tests drive it with closures and read what it saw.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use camesh_node::auth::proof::Side;
use camesh_node::auth::Trust;
use camesh_node::discovery::gossip::announce_topic;
use camesh_node::net::behaviour::{identify_version, kad_protocol};
use camesh_node::stream::io::{write_message, FramedRead};
use camesh_proto::{framing::decode_message, pb, LengthCodec};
use futures::StreamExt;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{gossipsub, identify, identity::Keypair, kad, Multiaddr, PeerId, StreamProtocol, Swarm};
use tokio::sync::mpsc;

#[derive(NetworkBehaviour)]
pub struct RawBehaviour {
    pub identify: identify::Behaviour,
    pub kad: kad::Behaviour<kad::store::MemoryStore>,
    pub gossipsub: gossipsub::Behaviour,
    pub stream: libp2p_stream::Behaviour,
}

/// What the raw peer saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    Connected(PeerId),
    /// A GET_PROVIDERS query ended: the providers it found.
    Providers(Vec<PeerId>),
    /// A FIND_NODE (closest peers) query ended: the peers it found.
    Closest(Vec<PeerId>),
    /// A START_PROVIDING query ended.
    Provided(bool),
    GossipMessage(PeerId),
    GossipSubscribed(PeerId),
    Identified(PeerId),
}

type Job = Box<dyn FnOnce(&mut Swarm<RawBehaviour>) + Send>;

pub struct RawPeer {
    pub peer_id: PeerId,
    pub control: libp2p_stream::Control,
    jobs: mpsc::Sender<Job>,
    seen: Arc<Mutex<Vec<Seen>>>,
    pub listen: Multiaddr,
}

impl RawPeer {
    /// A fresh peer of nobody's fleet, listening on 127.0.0.1, subscribed to `fleet`'s
    /// announcement topic.
    pub async fn spawn(fleet: &str) -> RawPeer {
        let key = Keypair::generate_ed25519();
        let peer_id = key.public().to_peer_id();
        let fleet_owned = fleet.to_owned();
        let mut swarm = libp2p::SwarmBuilder::with_existing_identity(key.clone())
            .with_tokio()
            .with_quic()
            .with_behaviour(move |key| {
                let me = key.public().to_peer_id();
                let mut kc = kad::Config::new(kad_protocol(&fleet_owned));
                kc.set_query_timeout(Duration::from_secs(4));
                let mut kad = kad::Behaviour::with_config(me, kad::store::MemoryStore::new(me), kc);
                kad.set_mode(Some(kad::Mode::Server));
                let gossipsub = gossipsub::Behaviour::new(
                    gossipsub::MessageAuthenticity::Signed(key.clone()),
                    gossipsub::ConfigBuilder::default()
                        .heartbeat_interval(Duration::from_millis(500))
                        .build()
                        .expect("gossip config"),
                )
                .expect("gossipsub");
                RawBehaviour {
                    identify: identify::Behaviour::new(identify::Config::new(
                        identify_version(&fleet_owned),
                        key.public(),
                    )),
                    kad,
                    gossipsub,
                    stream: libp2p_stream::Behaviour::new(),
                }
            })
            .expect("behaviour")
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
            .build();
        swarm
            .behaviour_mut()
            .gossipsub
            .subscribe(&announce_topic(fleet))
            .expect("subscribe");
        swarm
            .listen_on("/ip4/127.0.0.1/udp/0/quic-v1".parse().expect("addr"))
            .expect("listen");
        let listen = loop {
            if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
                break address;
            }
        };
        let control = swarm.behaviour().stream.new_control();
        let (jobs, mut rx) = mpsc::channel::<Job>(64);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    job = rx.recv() => match job {
                        Some(job) => job(&mut swarm),
                        None => return,
                    },
                    ev = swarm.select_next_some() => {
                        if let Some(s) = note(ev) {
                            let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
                            if log.len() < 10_000 {
                                log.push(s);
                            }
                        }
                    }
                }
            }
        });
        RawPeer {
            peer_id,
            control,
            jobs,
            seen,
            listen,
        }
    }

    /// Runs `f` on the swarm (in its task).
    pub async fn with(&self, f: impl FnOnce(&mut Swarm<RawBehaviour>) + Send + 'static) {
        self.jobs.send(Box::new(f)).await.expect("raw peer runs");
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Waits up to `limit` for something matching `f` to be seen.
    pub async fn wait_for(&self, limit: Duration, f: impl Fn(&Seen) -> bool) -> Option<Seen> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(s) = self.seen().into_iter().find(&f) {
                return Some(s);
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Dials `peer` at `addr` and waits for the connection.
    pub async fn dial(&self, peer: PeerId, addr: Multiaddr) {
        self.with(move |s| {
            s.behaviour_mut().kad.add_address(&peer, addr.clone());
            let _ = s.dial(addr.with(libp2p::multiaddr::Protocol::P2p(peer)));
        })
        .await;
        assert!(
            self.wait_for(Duration::from_secs(10), |s| *s == Seen::Connected(peer))
                .await
                .is_some(),
            "the raw peer could not connect to {peer}"
        );
    }

    /// Runs the dialer's side of the membership exchange with `peer` as a member holding
    /// `cert` (checked by a trust store of `fleet` with `root`): proves, checks the
    /// proof back, shows the certificate, reads the answer.
    pub async fn prove_membership(&self, fleet: &str, root: &str, cert: &pb::Signed, peer: PeerId) {
        let root = camesh_node::auth::fleet::root_from_text(root).expect("root");
        let trust = Trust::ephemeral(fleet, root, self.peer_id);
        trust
            .install_cert_bytes(&camesh_node::auth::signed::encode(cert))
            .expect("certificate installs");
        let codec = || LengthCodec::new(64 << 10);
        let mut control = self.control.clone();
        let mut s = control
            .open_stream(peer, StreamProtocol::new("/camesh/member/1"))
            .await
            .expect("member stream");
        let proof = pb::MemberHello {
            proof: trust.prove(Side::Dialer, &peer).to_vec().into(),
            ..Default::default()
        };
        write_message(&mut s, &codec(), &proof).await.expect("write proof");
        // (One message at a time: the member sends nothing more before our next one.)
        let body = FramedRead::new(&mut s, codec())
            .next()
            .await
            .expect("read")
            .expect("answer");
        let theirs: pb::MemberHello = decode_message("proof", body).expect("decodes");
        assert!(
            trust.check_proof(Side::Listener, &peer, &theirs.proof),
            "the member proves back"
        );
        let hello = pb::MemberHello {
            cert: Some(cert.clone()),
            ..Default::default()
        };
        write_message(&mut s, &codec(), &hello).await.expect("write cert");
        let body = FramedRead::new(&mut s, codec())
            .next()
            .await
            .expect("read")
            .expect("answer");
        let answer: pb::MemberHello = decode_message("hello", body).expect("decodes");
        assert!(answer.error.is_empty() && answer.cert.is_some(), "admitted: {answer:?}");
    }
}

fn note(ev: SwarmEvent<RawBehaviourEvent>) -> Option<Seen> {
    match ev {
        SwarmEvent::ConnectionEstablished { peer_id, .. } => Some(Seen::Connected(peer_id)),
        SwarmEvent::Behaviour(RawBehaviourEvent::Kad(kad::Event::OutboundQueryProgressed { result, step, .. })) => {
            match result {
                kad::QueryResult::GetProviders(r) if step.last => Some(Seen::Providers(match r {
                    Ok(kad::GetProvidersOk::FoundProviders { providers, .. }) => providers.into_iter().collect(),
                    _ => Vec::new(),
                })),
                kad::QueryResult::GetProviders(Ok(kad::GetProvidersOk::FoundProviders { providers, .. })) => {
                    Some(Seen::Providers(providers.into_iter().collect()))
                }
                kad::QueryResult::GetClosestPeers(r) => Some(Seen::Closest(match r {
                    Ok(ok) => ok.peers.into_iter().map(|p| p.peer_id).collect(),
                    Err(kad::GetClosestPeersError::Timeout { peers, .. }) => {
                        peers.into_iter().map(|p| p.peer_id).collect()
                    }
                })),
                kad::QueryResult::StartProviding(r) => Some(Seen::Provided(r.is_ok())),
                _ => None,
            }
        }
        SwarmEvent::Behaviour(RawBehaviourEvent::Gossipsub(gossipsub::Event::Message { message, .. })) => {
            Some(Seen::GossipMessage(message.source.unwrap_or(PeerId::random())))
        }
        SwarmEvent::Behaviour(RawBehaviourEvent::Gossipsub(gossipsub::Event::Subscribed { peer_id, .. })) => {
            Some(Seen::GossipSubscribed(peer_id))
        }
        SwarmEvent::Behaviour(RawBehaviourEvent::Identify(identify::Event::Received { peer_id, .. })) => {
            Some(Seen::Identified(peer_id))
        }
        _ => None,
    }
}
