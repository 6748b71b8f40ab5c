//! The node's registry of camera hubs: its own cameras (and their sub streams) and the
//! cameras of other nodes it forwards (see [`super::hub`]).

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use camesh_proto::pb;
use libp2p::{Multiaddr, PeerId};

use super::hub::Hub;

/// The node's cameras, by id, and the cameras of other nodes it forwards.
///
/// A camera may also have a sub (low-resolution) stream: its own hub, registered with
/// [`Hubs::insert_sub`] under the same camera id. It is not listed or announced as a
/// camera of its own; [`Hubs::get_profile`] picks it for requests with profile `sub`.
#[derive(Debug, Default)]
pub struct Hubs {
    map: RwLock<BTreeMap<String, Arc<Hub>>>,
    subs: RwLock<BTreeMap<String, Arc<Hub>>>,
    /// Forwarded hubs by (camera id, profile); never listed or announced as our cameras.
    forwarded: RwLock<BTreeMap<(String, i32), Arc<Hub>>>,
}

impl Hubs {
    /// Registers a forwarded hub (replacing any previous one for the same stream).
    pub fn insert_forwarded(&self, profile: pb::Profile, hub: Arc<Hub>) {
        self.forwarded
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert((hub.id.clone(), profile as i32), hub);
    }

    /// The forwarded hub of camera `id`, profile `profile`, if this node forwards it.
    pub fn forwarded(&self, id: &str, profile: pb::Profile) -> Option<Arc<Hub>> {
        self.forwarded
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(id.to_owned(), profile as i32))
            .cloned()
    }

    /// Removes a forwarded hub if it is still `hub` (not a newer one).
    pub fn remove_forwarded(&self, profile: pb::Profile, hub: &Arc<Hub>) {
        let mut map = self.forwarded.write().unwrap_or_else(|e| e.into_inner());
        let key = (hub.id.clone(), profile as i32);
        if map.get(&key).is_some_and(|h| Arc::ptr_eq(h, hub)) {
            map.remove(&key);
        }
    }

    /// Every forwarded hub with its profile.
    pub fn all_forwarded(&self) -> Vec<(pb::Profile, Arc<Hub>)> {
        self.forwarded
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|((_, p), h)| (pb::Profile::try_from(*p).unwrap_or(pb::Profile::Main), h.clone()))
            .collect()
    }

    /// Registers the sub stream of camera `hub.id` (which must also have a main hub).
    pub fn insert_sub(&self, hub: Arc<Hub>) {
        self.subs
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(hub.id.clone(), hub);
    }

    /// The sub stream's hub of a camera, if it has one.
    pub fn sub(&self, id: &str) -> Option<Arc<Hub>> {
        self.subs.read().unwrap_or_else(|e| e.into_inner()).get(id).cloned()
    }

    /// Every sub stream's hub.
    pub fn subs(&self) -> Vec<Arc<Hub>> {
        self.subs
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// The hub that serves `profile` of camera `id`: the sub stream when asked for and
    /// configured, otherwise the main stream.
    pub fn get_profile(&self, id: &str, profile: pb::Profile) -> Option<Arc<Hub>> {
        let main = self.get(id)?;
        if profile == pb::Profile::Sub {
            if let Some(sub) = self.sub(id) {
                return Some(sub);
            }
        }
        Some(main)
    }

    pub fn insert(&self, hub: Arc<Hub>) {
        self.map
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(hub.id.clone(), hub);
    }

    pub fn get(&self, id: &str) -> Option<Arc<Hub>> {
        self.map.read().unwrap_or_else(|e| e.into_inner()).get(id).cloned()
    }

    pub fn all(&self) -> Vec<Arc<Hub>> {
        self.map
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    pub fn ids(&self) -> Vec<String> {
        self.map
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.map.read().unwrap_or_else(|e| e.into_inner()).is_empty()
    }

    pub fn announcements(&self, me: PeerId, addrs: &[Multiaddr]) -> Vec<pb::CameraAnnouncement> {
        self.all()
            .iter()
            .map(|h| {
                let mut ann = h.announcement(me, addrs);
                if self.sub(&h.id).is_some() {
                    ann.profiles.push(pb::Profile::Sub as i32);
                }
                ann
            })
            .collect()
    }
}
