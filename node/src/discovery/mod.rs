//! Discovery: what this node knows about cameras in the fleet, how it learned it, and
//! what it tells the fleet about its own.
//!
//! Sources, cheapest first: answers to `/camesh/info/1` from connected peers (found by
//! mDNS on the LAN, bootstrap addresses, or Kademlia providers of [`CAMERAS_KEY`]), and
//! gossipsub announcements.
//!
//! Data flow: the swarm task ([`crate::net`]) owns the Swarm and only moves bytes. It
//! owns one [`Discovery`], hands it every gossip message received ([`Discovery::judge`]:
//! accept or reject) and inbound provider record ([`Discovery::judge_provider`]), and
//! asks it what to publish ([`Discovery::announce`], [`Discovery::revocation`]) and which
//! provider records to put in the DHT ([`Discovery::provide`]). Discovery decides; the
//! [`Directory`] stores what was accepted, and resolvers read it. This node's own cameras
//! reach discovery through [`LocalCameras`], a narrow view the node builds from its hubs.
//!
//! Files: [`directory`] (the store), [`gossip`] (topics and the judge), [`provide`]
//! (announcements and provider records).

pub mod directory;
pub mod gossip;
pub mod provide;

use std::sync::Arc;
use std::time::{Duration, Instant};

use libp2p::{gossipsub, identity::Keypair, kad::RecordKey, Multiaddr, PeerId};

use crate::auth::Trust;
pub use directory::{AnnouncementError, CameraEntry, Directory, Via};
use gossip::Gossip;
pub use gossip::Publish;
use provide::Provider;
pub use provide::{announce_every, camera_key, cameras_key, LocalCameras, ProviderRefused, CAMERAS_KEY};

/// Discovery's side of the swarm task: judges what arrives, says what to send. Owned
/// by the swarm task; every method returns at once (no IO but the directory's lock and
/// the revocation store).
#[derive(Debug)]
pub struct Discovery {
    gossip: Gossip,
    provider: Provider,
    /// When this node's cameras were last announced.
    last_announce: Option<Instant>,
}

/// What an announce tick sends.
#[derive(Debug, Default)]
pub struct Announce {
    /// Provider records to (re)put in the DHT.
    pub provide: Vec<RecordKey>,
    /// Announcements to publish.
    pub publish: Vec<Publish>,
}

impl Discovery {
    /// Discovery for the node of `key` in fleet `fleet_id`, storing accepted
    /// announcements in `directory` and announcing `local` (signed with `key`).
    pub fn new(
        key: &Keypair,
        fleet_id: &str,
        trust: Arc<Trust>,
        directory: Arc<Directory>,
        local: LocalCameras,
    ) -> Self {
        Self {
            gossip: Gossip::new(key.clone(), fleet_id, trust, directory),
            provider: Provider::new(key.public().to_peer_id(), local),
            last_announce: None,
        }
    }

    /// The gossipsub topics the swarm subscribes to.
    pub fn topics(&self) -> [&gossipsub::IdentTopic; 2] {
        self.gossip.topics()
    }

    /// Judges a gossip message on `topic` passed on by `via`, written by `source`:
    /// `true` to accept (and forward) it, `false` to reject it.
    pub fn judge(&self, via: PeerId, source: Option<PeerId>, topic: &gossipsub::TopicHash, data: &[u8]) -> bool {
        self.gossip.judge(via, source, topic, data)
    }

    /// The inbound provider record to store, if any: from a member, for itself, for a key
    /// it may provide ([`provide::judge_provider`]).
    pub fn judge_provider(
        &self,
        record: libp2p::kad::ProviderRecord,
    ) -> Result<libp2p::kad::ProviderRecord, provide::ProviderRefused> {
        let sender = record.provider;
        self.gossip.judge_provider(&sender, record)
    }

    /// A revocation to spread on gossipsub.
    pub fn revocation(&self, r: &camesh_proto::pb::Signed) -> Publish {
        self.gossip.revocation(r)
    }

    /// The provider records to put in the DHT now (none when it is too soon).
    pub fn provide(&mut self, now: Instant) -> Vec<RecordKey> {
        self.provider.provide(now)
    }

    /// A provide put off by the gap between provides, once it may go (housekeeping).
    pub fn provide_owed(&mut self, now: Instant) -> Vec<RecordKey> {
        self.provider.owed(now)
    }

    /// The announce tick (every `tick`, the configured interval): provider records to
    /// refresh (only while peers are `connected`), and announcements of this node's
    /// cameras at `addrs` when they are due: every `tick` in a fleet of few cameras,
    /// less often in a large one ([`announce_every`] of the cameras this node knows).
    pub fn announce(&mut self, now: Instant, tick: Duration, connected: bool, addrs: &[Multiaddr]) -> Announce {
        let (provide, cameras) = self.provider.announce(now, connected, addrs);
        let every = announce_every(tick, self.gossip.known_cameras());
        // Half a tick early is on time: ticks come every `tick`, a little late at times.
        let due = self
            .last_announce
            .is_none_or(|t| now.saturating_duration_since(t) + tick / 2 >= every);
        if !due || cameras.is_empty() {
            return Announce {
                provide,
                publish: Vec::new(),
            };
        }
        self.last_announce = Some(now);
        Announce {
            provide,
            publish: cameras.iter().map(|a| self.gossip.announcement(a)).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use camesh_proto::pb::CameraAnnouncement;
    use libp2p::identity::Keypair;

    use super::*;

    #[test]
    fn announcements_go_out_every_tick_in_a_small_fleet_and_less_often_in_a_large_one() {
        let key = Keypair::generate_ed25519();
        let root = Keypair::generate_ed25519();
        let trust = Arc::new(Trust::ephemeral("f", root.public(), key.public().to_peer_id()));
        let directory = Arc::new(Directory::default());
        let local = LocalCameras::new(|me, _| {
            vec![CameraAnnouncement {
                camera_id: "cam1".into(),
                peer_id: me.to_bytes().into(),
                ..Default::default()
            }]
        });
        let mut d = Discovery::new(&key, "f", trust, directory.clone(), local);
        let (t0, tick) = (Instant::now(), Duration::from_secs(5));
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert_eq!(d.announce(at(0), tick, true, &[]).publish.len(), 1);
        assert_eq!(
            d.announce(at(5), tick, true, &[]).publish.len(),
            1,
            "few cameras: every tick"
        );
        // The directory learns of 600 cameras: the fleet would send 120 a second.
        for i in 0..600 {
            let peer = PeerId::random();
            let ann = CameraAnnouncement {
                camera_id: format!("cam-{i}"),
                peer_id: peer.to_bytes().into(),
                ..Default::default()
            };
            directory.insert(peer, ann, Via::Gossip).expect("stored");
        }
        assert!(d.announce(at(10), tick, true, &[]).publish.is_empty());
        assert!(d.announce(at(40), tick, true, &[]).publish.is_empty());
        assert_eq!(d.announce(at(45), tick, true, &[]).publish.len(), 1, "every 40 s");
    }
}
