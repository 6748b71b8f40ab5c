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
use std::time::Instant;

use libp2p::{gossipsub, kad::RecordKey, Multiaddr, PeerId};

use crate::auth::Trust;
pub use directory::{AnnouncementError, CameraEntry, Directory, Via};
use gossip::Gossip;
pub use gossip::Publish;
use provide::Provider;
pub use provide::{camera_key, cameras_key, LocalCameras, ProviderRefused, CAMERAS_KEY};

/// Discovery's side of the swarm task: judges what arrives, says what to send. Owned
/// by the swarm task; every method returns at once (no IO but the directory's lock and
/// the revocation store).
#[derive(Debug)]
pub struct Discovery {
    gossip: Gossip,
    provider: Provider,
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
    /// Discovery for node `me` of fleet `fleet_id`, storing accepted announcements in
    /// `directory` and announcing `local`.
    pub fn new(me: PeerId, fleet_id: &str, trust: Arc<Trust>, directory: Arc<Directory>, local: LocalCameras) -> Self {
        Self {
            gossip: Gossip::new(fleet_id, trust, directory),
            provider: Provider::new(me, local),
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

    /// The announce tick: announcements of this node's cameras at `addrs`, and provider
    /// records to refresh (only while peers are `connected`).
    pub fn announce(&mut self, now: Instant, connected: bool, addrs: &[Multiaddr]) -> Announce {
        let (provide, cameras) = self.provider.announce(now, connected, addrs);
        Announce {
            provide,
            publish: cameras.iter().map(|a| self.gossip.announcement(a)).collect(),
        }
    }
}
