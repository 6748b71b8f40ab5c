//! Gossip: the fleet's topics, what is published on them, and the judge of what
//! arrives (pure but for the directory and the revocation store it writes to).
//!
//! Members only: a message is accepted only when the peer that passed it on and its
//! author are verified fleet members; an announcement only for a camera the author's
//! certificate binds to it; a revocation only if it verifies (and it is applied then).

use std::sync::Arc;

use camesh_proto::pb::{self, CameraAnnouncement};
use libp2p::{gossipsub, PeerId};
use prost::Message;
use tracing::debug;

use super::directory::{Directory, Via};
use crate::auth::Trust;

/// Gossipsub topic of camera announcements in a fleet.
pub fn announce_topic(fleet_id: &str) -> gossipsub::IdentTopic {
    gossipsub::IdentTopic::new(format!("camesh/{fleet_id}/cameras/1"))
}

/// Gossipsub topic of new fleet-state entries (revocations first of all) in a fleet: the
/// fast path; `crate::fleetsync` reconciles whatever gossip missed.
pub fn revocation_topic(fleet_id: &str) -> gossipsub::IdentTopic {
    gossipsub::IdentTopic::new(format!("camesh/{fleet_id}/fleet-state/1"))
}

/// One message for the swarm task to publish.
#[derive(Debug, Clone)]
pub struct Publish {
    pub topic: gossipsub::IdentTopic,
    pub data: Vec<u8>,
    /// The camera an announcement is about (for logs); `None` for a revocation.
    pub camera: Option<String>,
}

/// The fleet's gossip as one node sees it: its topics, and the members-only judge of
/// what arrives (gossip messages, and provider records in the DHT).
#[derive(Debug)]
pub struct Gossip {
    trust: Arc<Trust>,
    directory: Arc<Directory>,
    announce_topic: gossipsub::IdentTopic,
    revocation_topic: gossipsub::IdentTopic,
}

impl Gossip {
    /// The gossip of fleet `fleet_id`, storing accepted announcements in `directory`.
    pub fn new(fleet_id: &str, trust: Arc<Trust>, directory: Arc<Directory>) -> Self {
        Self {
            trust,
            directory,
            announce_topic: announce_topic(fleet_id),
            revocation_topic: revocation_topic(fleet_id),
        }
    }

    /// The gossipsub topics the swarm subscribes to.
    pub fn topics(&self) -> [&gossipsub::IdentTopic; 2] {
        [&self.announce_topic, &self.revocation_topic]
    }

    /// An inbound provider record from `sender`, judged against its verified certificate
    /// ([`super::provide::judge_provider`]).
    pub fn judge_provider(
        &self,
        sender: &PeerId,
        record: libp2p::kad::ProviderRecord,
    ) -> Result<libp2p::kad::ProviderRecord, super::provide::ProviderRefused> {
        super::provide::judge_provider(sender, self.trust.member(sender).as_ref(), record)
    }

    /// Judges a gossip message on `topic` passed on by `via`, written by `source`:
    /// `true` to accept (and forward) it, `false` to reject it.
    pub fn judge(&self, via: PeerId, source: Option<PeerId>, topic: &gossipsub::TopicHash, data: &[u8]) -> bool {
        let Some(from) = source else { return false };
        if self.trust.member(&via).is_none() {
            return false;
        }
        if *topic == self.revocation_topic.hash() {
            if data.len() > crate::auth::fleetlog::MAX_ENTRY_BYTES {
                return false;
            }
            return match pb::Signed::decode(data) {
                Ok(r) => match self.trust.apply_entry(&r) {
                    Ok(_) => true,
                    Err(crate::auth::fleetlog::LogError::Gap { .. }) => {
                        // The sender has entries we lack: the sync task asks it for them.
                        self.trust.note_behind(via);
                        false
                    }
                    Err(e) => {
                        if !e.is_benign() {
                            debug!(peer = %via, error = %e, "fleet-state entry refused");
                        }
                        false
                    }
                },
                Err(_) => false,
            };
        }
        let Some(cert) = self.trust.member(&from) else {
            return false;
        };
        match CameraAnnouncement::decode(data) {
            Ok(ann) if cert.may_serve(&ann.camera_id) => match self.directory.insert(from, ann, Via::Gossip) {
                Ok(()) => true,
                Err(e) => {
                    debug!(peer = %from, error = %e, "announcement ignored");
                    false
                }
            },
            Ok(ann) => {
                debug!(peer = %from, camera = %ann.camera_id.chars().take(64).collect::<String>(), "announcement for a camera not in the sender's certificate");
                false
            }
            Err(e) => {
                debug!(peer = %from, error = %e, "garbage announcement");
                false
            }
        }
    }

    /// A revocation to spread on gossipsub.
    pub fn revocation(&self, r: &pb::Signed) -> Publish {
        Publish {
            topic: self.revocation_topic.clone(),
            data: r.encode_to_vec(),
            camera: None,
        }
    }

    /// An announcement to spread on gossipsub.
    pub fn announcement(&self, ann: &CameraAnnouncement) -> Publish {
        Publish {
            topic: self.announce_topic.clone(),
            data: ann.encode_to_vec(),
            camera: Some(ann.camera_id.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use libp2p::identity::Keypair;

    use super::*;
    use crate::auth::cert::{self, CertRequest};

    const FLEET: &str = "f";

    fn now_s() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64)
    }

    /// The gossip of a fresh node, and a way to make `peer` a member serving `cameras`.
    fn setup() -> (Gossip, Arc<Directory>, impl Fn(PeerId, &[&str])) {
        let root = Keypair::generate_ed25519();
        let me = PeerId::random();
        let trust = Arc::new(Trust::ephemeral(FLEET, root.public(), me));
        let directory = Arc::new(Directory::default());
        let d = Gossip::new(FLEET, trust.clone(), directory.clone());
        let admit = move |peer: PeerId, cameras: &[&str]| {
            let req = CertRequest {
                peer,
                role: pb::MemberRole::Camera,
                name: "cam".into(),
                valid_s: 3600,
                cameras: cameras.iter().map(|c| c.to_string()).collect(),
            };
            trust
                .admit(peer, &cert::issue(&root, FLEET, &req, now_s()))
                .expect("member");
        };
        (d, directory, admit)
    }

    fn ann(camera: &str, peer: PeerId) -> Vec<u8> {
        CameraAnnouncement {
            camera_id: camera.into(),
            peer_id: peer.to_bytes().into(),
            ..Default::default()
        }
        .encode_to_vec()
    }

    #[test]
    fn announcements_are_accepted_from_members_for_their_own_cameras_only() {
        let (d, directory, admit) = setup();
        let cameras = announce_topic(FLEET).hash();
        let (via, author, stranger) = (PeerId::random(), PeerId::random(), PeerId::random());
        admit(via, &[]);
        admit(author, &["cam1"]);
        assert!(!d.judge(via, None, &cameras, &ann("cam1", author)), "no author");
        assert!(
            !d.judge(stranger, Some(author), &cameras, &ann("cam1", author)),
            "passed on by a stranger"
        );
        assert!(
            !d.judge(via, Some(stranger), &cameras, &ann("cam1", stranger)),
            "written by a stranger"
        );
        assert!(
            !d.judge(via, Some(author), &cameras, &ann("cam2", author)),
            "not in its certificate"
        );
        assert!(
            !d.judge(via, Some(author), &cameras, &ann("cam1", via)),
            "names another peer"
        );
        assert!(!d.judge(via, Some(author), &cameras, b"\xff\xff garbage"));
        assert!(directory.lookup("cam1").is_empty());
        assert!(d.judge(via, Some(author), &cameras, &ann("cam1", author)));
        assert_eq!(directory.lookup("cam1")[0].peer, author);
        assert_eq!(directory.lookup("cam1")[0].via, Via::Gossip);
    }

    #[test]
    fn revocations_are_accepted_only_when_they_verify() {
        let (d, _, admit) = setup();
        let revocations = revocation_topic(FLEET).hash();
        let via = PeerId::random();
        admit(via, &[]);
        assert!(!d.judge(via, Some(via), &revocations, b"\xff garbage"));
        let forged = pb::Signed::default();
        assert!(!d.judge(via, Some(via), &revocations, &forged.encode_to_vec()));
        let p = d.revocation(&forged);
        assert_eq!(p.topic.hash(), revocations);
        assert_eq!(p.camera, None);
    }
}
