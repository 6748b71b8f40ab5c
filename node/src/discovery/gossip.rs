//! Gossip: the fleet's topics, what is published on them, and the judge of what
//! arrives (pure but for the directory and the revocation store it writes to).
//!
//! Members only: a message is accepted only when the peer that passed it on and its
//! author are verified fleet members; an announcement only for a camera the author's
//! certificate binds to it; a revocation only if it verifies (and it is applied then).
//!
//! Verified once: an announcement is signed by its author's node key inside the message
//! ([`Gossip::announcement`]: a `Signed` envelope), not by gossipsub, which would check
//! the signature of every copy as it decodes it, duplicates included (each node gets
//! most announcements from several mesh peers). Gossipsub drops a copy whose id it has
//! seen before the judge runs, and the id is a digest of the content ([`message_id`]), so
//! the judge verifies each announcement once per node, and a forged message cannot take
//! a genuine one's id. Revocations were always self-authenticating (root-signed entries).

use std::sync::Arc;

use camesh_proto::pb::{self, CameraAnnouncement};
use libp2p::identity::{Keypair, PublicKey};
use libp2p::{gossipsub, PeerId};
use prost::Message;
use sha2::{Digest, Sha256};
use tracing::debug;

use super::directory::{Directory, Via};
use crate::auth::Trust;

/// Gossipsub topic of camera announcements in a fleet. Version 2: signed envelopes in
/// unsigned gossipsub messages (version 1 nodes, which sign in gossipsub and accept
/// nothing unsigned, are on another topic; they still find cameras through the DHT).
pub fn announce_topic(fleet_id: &str) -> gossipsub::IdentTopic {
    gossipsub::IdentTopic::new(format!("camesh/{fleet_id}/cameras/2"))
}

/// Gossipsub topic of new fleet-state entries (revocations first of all) in a fleet: the
/// fast path; `crate::fleetsync` reconciles whatever gossip missed (and is what carries
/// entries between nodes of the two gossip versions).
pub fn revocation_topic(fleet_id: &str) -> gossipsub::IdentTopic {
    gossipsub::IdentTopic::new(format!("camesh/{fleet_id}/fleet-state/2"))
}

/// What an announcement's signature covers: this prefix, then the encoded announcement
/// (the prefix is no `crate::auth::signed` kind's, so neither passes as the other).
const ANNOUNCE_CONTEXT: &[u8] = b"camesh-announcement-v2\0";

/// A gossip message's id: a digest of its author and content (signature included), so a
/// copy of a message is recognised as one whoever passes it on, and no forgery (whose
/// content differs) can claim a genuine message's id before it arrives.
pub fn message_id(m: &gossipsub::Message) -> gossipsub::MessageId {
    let mut h = Sha256::new();
    h.update(m.source.map(|p| p.to_bytes()).unwrap_or_default());
    h.update([0]);
    h.update(m.topic.as_str());
    h.update([0]);
    h.update(&m.data);
    gossipsub::MessageId::new(&h.finalize()[..20])
}

fn to_sign(body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(ANNOUNCE_CONTEXT.len() + body.len());
    m.extend_from_slice(ANNOUNCE_CONTEXT);
    m.extend_from_slice(body);
    m
}

/// The announcement in `data` if `author` signed it.
fn open_announcement(author: &PeerId, data: &[u8]) -> Result<CameraAnnouncement, &'static str> {
    if data.len() > crate::auth::MAX_SIGNED_BYTES {
        return Err("too large");
    }
    let s = pb::Signed::decode(data).map_err(|_| "not a signed envelope")?;
    let key = PublicKey::try_decode_protobuf(&s.signer).map_err(|_| "bad signer key")?;
    if key.to_peer_id() != *author {
        return Err("signed by another key than its author's");
    }
    if !key.verify(&to_sign(&s.body), &s.signature) {
        return Err("bad signature");
    }
    CameraAnnouncement::decode(s.body).map_err(|_| "garbage announcement")
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
    /// This node's key, which signs its announcements.
    key: Keypair,
    trust: Arc<Trust>,
    directory: Arc<Directory>,
    announce_topic: gossipsub::IdentTopic,
    revocation_topic: gossipsub::IdentTopic,
}

impl Gossip {
    /// The gossip of fleet `fleet_id`, storing accepted announcements in `directory`;
    /// `key` signs this node's announcements.
    pub fn new(key: Keypair, fleet_id: &str, trust: Arc<Trust>, directory: Arc<Directory>) -> Self {
        Self {
            key,
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

    /// How many cameras the directory holds (other nodes' announcements).
    pub fn known_cameras(&self) -> usize {
        self.directory.len()
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
        match open_announcement(&from, data) {
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
                debug!(peer = %from, error = %e, "announcement refused");
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

    /// An announcement to spread on gossipsub, signed by this node.
    pub fn announcement(&self, ann: &CameraAnnouncement) -> Publish {
        let body = ann.encode_to_vec();
        // Signing with an ed25519 key cannot fail; other key types are never created here.
        let signature = self.key.sign(&to_sign(&body)).expect("ed25519 signing");
        let signed = pb::Signed {
            body: body.into(),
            signature: signature.into(),
            signer: self.key.public().encode_protobuf().into(),
        };
        Publish {
            topic: self.announce_topic.clone(),
            data: signed.encode_to_vec(),
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
        let key = Keypair::generate_ed25519();
        let trust = Arc::new(Trust::ephemeral(FLEET, root.public(), key.public().to_peer_id()));
        let directory = Arc::new(Directory::default());
        let d = Gossip::new(key, FLEET, trust.clone(), directory.clone());
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

    /// An announcement of `camera` naming `peer`, signed by `key` (as that node's
    /// [`Gossip::announcement`] makes it).
    fn ann(camera: &str, peer: PeerId, key: &Keypair) -> Vec<u8> {
        let (_, dir, _) = setup();
        let g = Gossip::new(
            key.clone(),
            FLEET,
            Arc::new(Trust::ephemeral(FLEET, key.public(), peer)),
            dir,
        );
        let a = CameraAnnouncement {
            camera_id: camera.into(),
            peer_id: peer.to_bytes().into(),
            ..Default::default()
        };
        let p = g.announcement(&a);
        assert_eq!(p.topic.hash(), announce_topic(FLEET).hash());
        p.data
    }

    #[test]
    fn announcements_are_accepted_from_members_for_their_own_cameras_only() {
        let (d, directory, admit) = setup();
        let cameras = announce_topic(FLEET).hash();
        let (via_key, author_key, stranger_key) = (
            Keypair::generate_ed25519(),
            Keypair::generate_ed25519(),
            Keypair::generate_ed25519(),
        );
        let (via, author, stranger) = (
            via_key.public().to_peer_id(),
            author_key.public().to_peer_id(),
            stranger_key.public().to_peer_id(),
        );
        admit(via, &[]);
        admit(author, &["cam1"]);
        let good = ann("cam1", author, &author_key);
        assert!(!d.judge(via, None, &cameras, &good), "no author");
        assert!(
            !d.judge(stranger, Some(author), &cameras, &good),
            "passed on by a stranger"
        );
        assert!(
            !d.judge(via, Some(stranger), &cameras, &ann("cam1", stranger, &stranger_key)),
            "written by a stranger"
        );
        assert!(
            !d.judge(via, Some(author), &cameras, &ann("cam2", author, &author_key)),
            "not in its certificate"
        );
        assert!(
            !d.judge(via, Some(author), &cameras, &ann("cam1", via, &author_key)),
            "names another peer"
        );
        assert!(
            !d.judge(via, Some(author), &cameras, &ann("cam1", author, &via_key)),
            "signed by another member than its author"
        );
        let mut forged = pb::Signed::decode(good.as_slice()).expect("envelope");
        forged.body = CameraAnnouncement {
            camera_id: "cam1".into(),
            peer_id: author.to_bytes().into(),
            name: "forged".into(),
            ..Default::default()
        }
        .encode_to_vec()
        .into();
        assert!(
            !d.judge(via, Some(author), &cameras, &forged.encode_to_vec()),
            "body changed after signing"
        );
        let unsigned = CameraAnnouncement {
            camera_id: "cam1".into(),
            peer_id: author.to_bytes().into(),
            ..Default::default()
        };
        assert!(
            !d.judge(via, Some(author), &cameras, &unsigned.encode_to_vec()),
            "not signed (a version 1 announcement)"
        );
        assert!(!d.judge(via, Some(author), &cameras, b"\xff\xff garbage"));
        assert!(directory.lookup("cam1").is_empty());
        assert!(d.judge(via, Some(author), &cameras, &good));
        assert_eq!(directory.lookup("cam1")[0].peer, author);
        assert_eq!(directory.lookup("cam1")[0].via, Via::Gossip);
    }

    #[test]
    fn a_message_id_is_a_digest_of_its_author_topic_and_content() {
        let msg = |source: Option<PeerId>, topic: &str, data: &[u8]| gossipsub::Message {
            source,
            data: data.to_vec(),
            sequence_number: Some(1),
            topic: gossipsub::IdentTopic::new(topic).hash(),
        };
        let a = PeerId::random();
        let id = message_id(&msg(Some(a), "t", b"x"));
        let mut other_seq = msg(Some(a), "t", b"x");
        other_seq.sequence_number = Some(2);
        assert_eq!(message_id(&other_seq), id, "the sequence number is not part of it");
        assert_ne!(message_id(&msg(Some(PeerId::random()), "t", b"x")), id);
        assert_ne!(message_id(&msg(Some(a), "u", b"x")), id);
        assert_ne!(message_id(&msg(Some(a), "t", b"y")), id);
        assert_ne!(message_id(&msg(None, "t", b"x")), id);
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
