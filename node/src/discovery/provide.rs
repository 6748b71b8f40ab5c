//! What this node tells the fleet about its own cameras: announcements on gossipsub and
//! provider records in the DHT, and when (pure: driven with `now`).
//!
//! Provider records go out when the first member enters the routing table (at most every
//! `PROVIDE_GAP`) and again every `REPROVIDE_EVERY` while peers are connected;
//! announcements go out on every announce tick.

use std::sync::Arc;
use std::time::{Duration, Instant};

use camesh_proto::pb::CameraAnnouncement;
use libp2p::{kad::RecordKey, Multiaddr, PeerId};

/// Kademlia provider key every camera node provides: "who serves cameras in this fleet".
pub const CAMERAS_KEY: &str = "camesh/cameras";

/// Kademlia provider key for one camera id.
pub fn camera_key(camera_id: &str) -> RecordKey {
    RecordKey::new(&format!("camesh/camera/{camera_id}"))
}

pub fn cameras_key() -> RecordKey {
    RecordKey::new(&CAMERAS_KEY)
}

/// Addresses kept from an inbound provider record (the rest are dropped): a member
/// listens on a handful, and each one is dialed by whoever looks the camera up.
pub const MAX_PROVIDER_ADDRS: usize = 8;
/// Cameras of one certificate whose keys its holder may provide (so one member holds at
/// most this many records plus the cameras key in anyone's store).
pub const MAX_KEYS_PER_PROVIDER: usize = 256;

/// Why an inbound provider record was not stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderRefused {
    #[error("the provider is not a verified fleet member")]
    NotMember,
    #[error("the provider record names {named}, not its sender")]
    NotSender { named: PeerId },
    #[error("the provider's certificate does not list the camera of this key")]
    NotItsCamera,
}

/// Judges a provider record `sender` asked this node to store (pure): `cert` is the
/// sender's verified certificate (`None`: not a member). Stored only if the provider is
/// the sender (libp2p-kad checks this too), and the key is one the sender may provide:
/// [`CAMERAS_KEY`] (any member: cameras and forwarders serve cameras) or the key of a
/// camera its certificate lists (at most [`MAX_KEYS_PER_PROVIDER`] of them); its
/// addresses are cut to [`MAX_PROVIDER_ADDRS`]. The store itself is bounded too
/// (`net::behaviour`).
pub fn judge_provider(
    sender: &PeerId,
    cert: Option<&crate::auth::CertInfo>,
    mut record: libp2p::kad::ProviderRecord,
) -> Result<libp2p::kad::ProviderRecord, ProviderRefused> {
    let cert = cert.ok_or(ProviderRefused::NotMember)?;
    if record.provider != *sender || cert.peer != *sender {
        return Err(ProviderRefused::NotSender { named: record.provider });
    }
    let allowed = record.key == cameras_key()
        || cert
            .cameras
            .iter()
            .take(MAX_KEYS_PER_PROVIDER)
            .any(|c| camera_key(c) == record.key);
    if !allowed {
        return Err(ProviderRefused::NotItsCamera);
    }
    record.addresses.truncate(MAX_PROVIDER_ADDRS);
    Ok(record)
}

/// How often provider records are refreshed while peers are connected.
const REPROVIDE_EVERY: Duration = Duration::from_secs(30);
/// Members entering the routing table one after the other trigger one provide, not one
/// each.
const PROVIDE_GAP: Duration = Duration::from_secs(2);

/// Announcements a fleet sends per second, all nodes together, once it has so many
/// cameras that the configured interval would send more: each node receives (and
/// verifies) every announcement of the fleet, so this bounds what gossip costs each node
/// at rest whatever the fleet's size (60 cameras at the preset 5 s send this many).
pub const FLEET_ANNOUNCEMENTS_PER_S: f64 = 12.0;
/// The longest interval between a camera's announcements: a third of the time the
/// directory keeps an entry, so an entry outlives two lost announcements.
pub const MAX_ANNOUNCE_EVERY: Duration = Duration::from_secs(40);

/// How often this node announces its cameras when it knows of `known` cameras in the
/// fleet (pure): the configured `every`, stretched so that the fleet as a whole sends
/// about [`FLEET_ANNOUNCEMENTS_PER_S`], up to [`MAX_ANNOUNCE_EVERY`] (never shorter than
/// configured).
pub fn announce_every(every: Duration, known: usize) -> Duration {
    let fleet = Duration::from_secs_f64(known as f64 / FLEET_ANNOUNCEMENTS_PER_S);
    fleet.min(MAX_ANNOUNCE_EVERY).max(every)
}

/// This node's own cameras as announcements naming `me` at `addrs`: a narrow view the
/// node builds from its media hubs, so discovery (and the swarm task) never hold them.
#[derive(Clone)]
pub struct LocalCameras(Arc<AnnounceFn>);

type AnnounceFn = dyn Fn(PeerId, &[Multiaddr]) -> Vec<CameraAnnouncement> + Send + Sync;

impl LocalCameras {
    pub fn new(f: impl Fn(PeerId, &[Multiaddr]) -> Vec<CameraAnnouncement> + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }

    /// A node without cameras.
    pub fn none() -> Self {
        Self::new(|_, _| Vec::new())
    }

    /// One announcement per camera this node serves.
    pub fn announcements(&self, me: PeerId, addrs: &[Multiaddr]) -> Vec<CameraAnnouncement> {
        (self.0)(me, addrs)
    }
}

impl std::fmt::Debug for LocalCameras {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LocalCameras")
    }
}

/// When this node's provider records and announcements go out.
#[derive(Debug)]
pub struct Provider {
    me: PeerId,
    local: LocalCameras,
    /// When provider records were last put in the DHT.
    last_provide: Option<Instant>,
    /// A provide was asked for within `PROVIDE_GAP` of the last one: it is owed, and
    /// goes out once the gap has passed ([`Self::owed`]) rather than 30 s later.
    owed: bool,
}

impl Provider {
    pub fn new(me: PeerId, local: LocalCameras) -> Self {
        Self {
            me,
            local,
            last_provide: None,
            owed: false,
        }
    }

    /// The provider records to put in the DHT now: the fleet's cameras key and each local
    /// camera's key; none without cameras or within `PROVIDE_GAP` of the last time.
    pub fn provide(&mut self, now: Instant) -> Vec<RecordKey> {
        if self.last_provide.is_some_and(|t| now.duration_since(t) < PROVIDE_GAP) {
            // A DHT server that joined just after the last provide (a relay whose
            // identify came after its membership) must still get the records soon.
            self.owed = true;
            return Vec::new();
        }
        self.owed = false;
        let cameras = self.local.announcements(self.me, &[]);
        self.provide_keys(now, &cameras)
    }

    /// The provide that was put off by `PROVIDE_GAP`, once the gap has passed.
    pub fn owed(&mut self, now: Instant) -> Vec<RecordKey> {
        if self.owed {
            self.provide(now)
        } else {
            Vec::new()
        }
    }

    fn provide_keys(&mut self, now: Instant, cameras: &[CameraAnnouncement]) -> Vec<RecordKey> {
        if cameras.is_empty() {
            return Vec::new();
        }
        self.last_provide = Some(now);
        let mut keys = vec![cameras_key()];
        keys.extend(cameras.iter().map(|a| camera_key(&a.camera_id)));
        keys
    }

    /// The announce tick: this node's cameras at `addrs` to announce, and the provider
    /// records to refresh when `REPROVIDE_EVERY` has passed and peers are `connected`.
    pub fn announce(
        &mut self,
        now: Instant,
        connected: bool,
        addrs: &[Multiaddr],
    ) -> (Vec<RecordKey>, Vec<CameraAnnouncement>) {
        let cameras = self.local.announcements(self.me, addrs);
        if cameras.is_empty() {
            return (Vec::new(), Vec::new());
        }
        let mut provide = Vec::new();
        if self
            .last_provide
            .is_some_and(|t| now.duration_since(t) >= REPROVIDE_EVERY)
            && connected
        {
            self.last_provide = None;
            provide = self.provide_keys(now, &cameras);
        }
        (provide, cameras)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// The provider of a node whose cameras are the ids in the returned list.
    fn node() -> (Provider, Arc<Mutex<Vec<String>>>) {
        let ids = Arc::new(Mutex::new(Vec::<String>::new()));
        let local = {
            let ids = ids.clone();
            LocalCameras::new(move |me, addrs| {
                let ids = ids.lock().expect("test lock");
                ids.iter()
                    .map(|id| CameraAnnouncement {
                        camera_id: id.clone(),
                        peer_id: me.to_bytes().into(),
                        addrs: addrs.iter().map(|a| a.to_vec().into()).collect(),
                        ..Default::default()
                    })
                    .collect()
            })
        };
        (Provider::new(PeerId::random(), local), ids)
    }

    #[test]
    fn a_provide_put_off_by_the_gap_is_owed_not_dropped() {
        let (mut p, ids) = node();
        ids.lock().expect("test lock").push("cam1".into());
        let t0 = Instant::now();
        assert_eq!(p.provide(t0).len(), 2, "the cameras key and cam1's");
        assert!(p.owed(t0 + Duration::from_secs(1)).is_empty(), "nothing owed yet");
        // A DHT server joins 0.5 s later: too soon, owed.
        assert!(p.provide(t0 + Duration::from_millis(500)).is_empty());
        assert!(p.owed(t0 + Duration::from_secs(1)).is_empty(), "still within the gap");
        assert_eq!(p.owed(t0 + PROVIDE_GAP).len(), 2, "paid once the gap has passed");
        assert!(p.owed(t0 + PROVIDE_GAP * 2).is_empty(), "and only once");
    }

    #[test]
    fn provider_records_are_stored_only_from_members_for_their_own_cameras_with_few_addresses() {
        use libp2p::kad::ProviderRecord;
        let me = PeerId::random();
        let cert = crate::auth::CertInfo {
            peer: me,
            role: camesh_proto::pb::MemberRole::Camera,
            name: "cam".into(),
            not_before_unix_s: 0,
            not_after_unix_s: i64::MAX,
            serial: 1,
            cameras: vec!["cam1".into()],
            admin: None,
        };
        let addr: Multiaddr = "/ip4/10.0.0.1/udp/4001/quic-v1".parse().expect("addr");
        let rec = |key, provider| ProviderRecord::new(key, provider, vec![addr.clone(); 20]);
        let ok = judge_provider(&me, Some(&cert), rec(camera_key("cam1"), me)).expect("its own camera");
        assert_eq!(ok.addresses.len(), MAX_PROVIDER_ADDRS);
        judge_provider(&me, Some(&cert), rec(cameras_key(), me)).expect("the cameras key");
        assert_eq!(
            judge_provider(&me, Some(&cert), rec(camera_key("cam2"), me)),
            Err(ProviderRefused::NotItsCamera)
        );
        assert_eq!(
            judge_provider(&me, Some(&cert), rec(RecordKey::new(&"anything"), me)),
            Err(ProviderRefused::NotItsCamera)
        );
        let other = PeerId::random();
        assert_eq!(
            judge_provider(&me, Some(&cert), rec(camera_key("cam1"), other)),
            Err(ProviderRefused::NotSender { named: other })
        );
        assert_eq!(
            judge_provider(&me, None, rec(camera_key("cam1"), me)),
            Err(ProviderRefused::NotMember)
        );
    }

    #[test]
    fn large_fleets_announce_less_often_within_the_directorys_lifetime() {
        let five = Duration::from_secs(5);
        assert_eq!(announce_every(five, 0), five);
        assert_eq!(announce_every(five, 60), five, "60 cameras: as configured");
        assert_eq!(announce_every(five, 120), Duration::from_secs(10));
        assert_eq!(announce_every(five, 600), MAX_ANNOUNCE_EVERY, "at most 40 s");
        assert_eq!(
            announce_every(Duration::from_secs(60), 600),
            Duration::from_secs(60),
            "never shorter than configured"
        );
    }

    fn secs(t0: Instant, s: u64) -> Instant {
        t0 + Duration::from_secs(s)
    }

    #[test]
    fn a_node_without_cameras_provides_and_announces_nothing() {
        let (mut d, _) = node();
        let t0 = Instant::now();
        assert!(d.provide(t0).is_empty());
        let (provide, announce) = d.announce(secs(t0, 100), true, &[]);
        assert!(provide.is_empty() && announce.is_empty());
    }

    #[test]
    fn provider_records_go_out_at_most_every_two_seconds_and_again_after_thirty_while_connected() {
        let (mut d, ids) = node();
        ids.lock()
            .expect("test lock")
            .extend(["a".to_string(), "b".to_string()]);
        let t0 = Instant::now();
        assert_eq!(d.provide(t0), vec![cameras_key(), camera_key("a"), camera_key("b")]);
        assert!(d.provide(secs(t0, 1)).is_empty(), "too soon");
        assert_eq!(d.provide(secs(t0, 2)).len(), 3);
        // Announce ticks publish every camera; they re-provide once 30 s have passed
        // since the last provide, and only while peers are connected.
        let addr: Multiaddr = "/ip4/10.0.0.1/udp/4001/quic-v1".parse().expect("addr");
        let (provide, announce) = d.announce(secs(t0, 10), true, std::slice::from_ref(&addr));
        assert!(provide.is_empty());
        assert_eq!(announce.len(), 2);
        assert_eq!(announce[0].camera_id, "a");
        assert_eq!(announce[0].addrs, vec![bytes::Bytes::from(addr.to_vec())]);
        assert!(d.announce(secs(t0, 40), false, &[]).0.is_empty(), "nobody connected");
        assert_eq!(d.announce(secs(t0, 40), true, &[]).0.len(), 3);
        assert!(d.announce(secs(t0, 41), true, &[]).0.is_empty());
    }
}
