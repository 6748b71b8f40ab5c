//! Discovery: what this node knows about cameras in the fleet, how it learned it, and
//! what it tells the fleet about its own.
//!
//! Sources, cheapest first: answers to `/camesh/info/1` from connected peers (found by
//! mDNS on the LAN, bootstrap addresses, or Kademlia providers of [`CAMERAS_KEY`]), and
//! gossipsub announcements.
//!
//! Data flow: the swarm task ([`crate::net`]) owns the Swarm and only moves bytes. It
//! owns one [`Discovery`], hands it every gossip message received ([`Discovery::judge`]:
//! accept or reject) and inbound provider record ([`Discovery::accepts_provider`]), and
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

use libp2p::{gossipsub, kad::RecordKey, PeerId};

use crate::auth::Trust;
pub use directory::{AnnouncementError, CameraEntry, Directory, Via};
pub use gossip::Publish;
pub use provide::{Announce, LocalCameras};

/// Kademlia provider key every camera node provides: "who serves cameras in this fleet".
pub const CAMERAS_KEY: &str = "camesh/cameras";

/// Kademlia provider key for one camera id.
pub fn camera_key(camera_id: &str) -> RecordKey {
    RecordKey::new(&format!("camesh/camera/{camera_id}"))
}

pub fn cameras_key() -> RecordKey {
    RecordKey::new(&CAMERAS_KEY)
}

/// Discovery's side of the swarm task: judges what arrives, says what to send. Owned
/// by the swarm task; every method returns at once (no IO but the directory's lock and
/// the revocation store).
#[derive(Debug)]
pub struct Discovery {
    me: PeerId,
    trust: Arc<Trust>,
    directory: Arc<Directory>,
    local: LocalCameras,
    announce_topic: gossipsub::IdentTopic,
    revocation_topic: gossipsub::IdentTopic,
    /// When provider records were last put in the DHT.
    last_provide: Option<Instant>,
}

impl Discovery {
    /// Discovery for node `me` of fleet `fleet_id`, storing accepted announcements in
    /// `directory` and announcing `local`.
    pub fn new(me: PeerId, fleet_id: &str, trust: Arc<Trust>, directory: Arc<Directory>, local: LocalCameras) -> Self {
        Self {
            me,
            trust,
            directory,
            local,
            announce_topic: gossip::announce_topic(fleet_id),
            revocation_topic: gossip::revocation_topic(fleet_id),
            last_provide: None,
        }
    }

    /// The gossipsub topics the swarm subscribes to.
    pub fn topics(&self) -> [&gossipsub::IdentTopic; 2] {
        [&self.announce_topic, &self.revocation_topic]
    }

    /// Whether an inbound provider record is stored: members only (the provider is the
    /// sender).
    pub fn accepts_provider(&self, provider: &PeerId) -> bool {
        self.trust.member(provider).is_some()
    }
}
