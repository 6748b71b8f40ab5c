//! The directory: which peer serves which camera, as learned from info answers and
//! gossip. A plain store (pure, lock-protected): discovery's gossip judge and the info
//! client write into it, resolvers read it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use camesh_proto::pb::CameraAnnouncement;
use libp2p::{Multiaddr, PeerId};

/// How an entry was learned (shown by `mesh cameras`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Info,
    Gossip,
}

impl std::fmt::Display for Via {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Via::Info => "direct",
            Via::Gossip => "gossip",
        })
    }
}

/// A camera served by a peer.
#[derive(Debug, Clone)]
pub struct CameraEntry {
    pub peer: PeerId,
    pub announcement: CameraAnnouncement,
    pub via: Via,
    pub seen: Instant,
}

impl CameraEntry {
    pub fn addrs(&self) -> Vec<Multiaddr> {
        self.announcement
            .addrs
            .iter()
            .filter_map(|a| Multiaddr::try_from(a.to_vec()).ok())
            .collect()
    }
}

/// Entries older than this are forgotten (announcements repeat every few seconds).
const ENTRY_TTL: Duration = Duration::from_secs(120);
/// Bound on remembered cameras, so a peer flooding announcements cannot grow memory.
const MAX_ENTRIES: usize = 4096;

#[derive(Debug, Default)]
pub struct Directory {
    entries: Mutex<HashMap<(String, PeerId), CameraEntry>>,
}

/// Why an announcement was not stored.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AnnouncementError {
    #[error("announcement for camera {camera:?} names peer {claimed}, but came from {from}")]
    WrongPeer {
        camera: String,
        claimed: String,
        from: String,
    },
    #[error("announcement has an invalid camera id {0:?}")]
    BadId(String),
    #[error("directory is full")]
    Full,
}

impl Directory {
    /// Stores what `from` says it serves. A peer can only announce cameras it serves
    /// itself: the announced peer id must be the (authenticated) sender.
    pub fn insert(&self, from: PeerId, ann: CameraAnnouncement, via: Via) -> Result<(), AnnouncementError> {
        if !crate::ids::valid_id(&ann.camera_id) {
            return Err(AnnouncementError::BadId(ann.camera_id.chars().take(80).collect()));
        }
        if PeerId::from_bytes(&ann.peer_id).ok() != Some(from) {
            let claimed = PeerId::from_bytes(&ann.peer_id)
                .map(|p| p.to_string())
                .unwrap_or_else(|_| "<invalid>".into());
            return Err(AnnouncementError::WrongPeer {
                camera: ann.camera_id,
                claimed,
                from: from.to_string(),
            });
        }
        let mut map = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        map.retain(|_, e| now.duration_since(e.seen) < ENTRY_TTL);
        let key = (ann.camera_id.clone(), from);
        if map.len() >= MAX_ENTRIES && !map.contains_key(&key) {
            return Err(AnnouncementError::Full);
        }
        map.insert(
            key,
            CameraEntry {
                peer: from,
                announcement: ann,
                via,
                seen: now,
            },
        );
        Ok(())
    }

    /// All known cameras, sorted by id then peer.
    pub fn cameras(&self) -> Vec<CameraEntry> {
        let map = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let mut v: Vec<_> = map
            .values()
            .filter(|e| now.duration_since(e.seen) < ENTRY_TTL)
            .cloned()
            .collect();
        v.sort_by(|a, b| (&a.announcement.camera_id, a.peer).cmp(&(&b.announcement.camera_id, b.peer)));
        v
    }

    /// Entries held (some may have expired since the last insert).
    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether no entry is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Peers known to serve `camera_id`, most recently seen first.
    pub fn lookup(&self, camera_id: &str) -> Vec<CameraEntry> {
        let mut v: Vec<_> = self
            .cameras()
            .into_iter()
            .filter(|e| e.announcement.camera_id == camera_id)
            .collect();
        v.sort_by_key(|e| std::cmp::Reverse(e.seen));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ann(id: &str, peer: PeerId) -> CameraAnnouncement {
        CameraAnnouncement {
            camera_id: id.into(),
            peer_id: peer.to_bytes().into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_peer_cannot_announce_someone_elses_camera() {
        let d = Directory::default();
        let (a, b) = (PeerId::random(), PeerId::random());
        assert!(matches!(
            d.insert(b, ann("cam1", a), Via::Gossip),
            Err(AnnouncementError::WrongPeer { .. })
        ));
        d.insert(a, ann("cam1", a), Via::Gossip).expect("own camera");
        assert_eq!(d.lookup("cam1").len(), 1);
        assert!(d.lookup("cam2").is_empty());
    }

    #[test]
    fn bad_ids_are_refused() {
        let d = Directory::default();
        let a = PeerId::random();
        assert!(matches!(
            d.insert(a, ann("../etc", a), Via::Info),
            Err(AnnouncementError::BadId(_))
        ));
    }
}
