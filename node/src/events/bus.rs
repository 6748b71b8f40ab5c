//! The events of a set of cameras: per camera, a bounded [`EventLog`] of what happened
//! and a bounded broadcast of new events to followers (a follower that falls behind
//! loses the oldest and is told how many). The camera node has one for its own cameras
//! ([`Publisher`] numbers, signs and adds); an NVR has one for the cameras it records,
//! filled from its event files and from the cameras.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use camesh_proto::pb;
use libp2p::identity::Keypair;
use tokio::sync::broadcast;

use super::log::{EventLog, Query, Stored};

/// New events a follower may fall behind by before it loses the oldest.
const FOLLOW_BACKLOG: usize = 256;
/// Events a camera node keeps per camera for `--from` queries.
pub const CAMERA_KEEPS: usize = 2000;

#[derive(Debug)]
struct Channel {
    log: Mutex<EventLog>,
    tx: broadcast::Sender<Stored>,
}

#[derive(Debug)]
pub struct EventBus {
    cameras: RwLock<HashMap<String, Arc<Channel>>>,
    cap: usize,
}

impl EventBus {
    /// A bus keeping at most `cap` events per camera.
    pub fn new(cap: usize) -> Self {
        EventBus {
            cameras: RwLock::default(),
            cap,
        }
    }

    fn channel(&self, camera: &str) -> Arc<Channel> {
        if let Some(c) = self.cameras.read().unwrap_or_else(|e| e.into_inner()).get(camera) {
            return c.clone();
        }
        let mut map = self.cameras.write().unwrap_or_else(|e| e.into_inner());
        map.entry(camera.to_owned())
            .or_insert_with(|| {
                Arc::new(Channel {
                    log: Mutex::new(EventLog::new(self.cap)),
                    tx: broadcast::channel(FOLLOW_BACKLOG).0,
                })
            })
            .clone()
    }

    /// Makes `camera` known (so requests for it are answered before its first event).
    pub fn add_camera(&self, camera: &str) {
        self.channel(camera);
    }

    pub fn has(&self, camera: &str) -> bool {
        self.cameras
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(camera)
    }

    /// Stores `e` and sends it to followers; `false` if it was already stored.
    pub fn insert(&self, camera: &str, e: Stored) -> bool {
        let ch = self.channel(camera);
        let new = ch.log.lock().unwrap_or_else(|p| p.into_inner()).push(e.clone());
        if new {
            // No follower: nobody to tell.
            let _ = ch.tx.send(e);
        }
        new
    }

    /// Past events of `camera` (see [`EventLog::query`]).
    pub fn query(&self, camera: &str, q: &Query) -> (Vec<Stored>, bool) {
        match self.cameras.read().unwrap_or_else(|e| e.into_inner()).get(camera) {
            Some(ch) => ch.log.lock().unwrap_or_else(|p| p.into_inner()).query(q),
            None => (Vec::new(), false),
        }
    }

    /// The newest stored event's time of `camera`.
    pub fn last_us(&self, camera: &str) -> Option<i64> {
        let ch = self
            .cameras
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(camera)?
            .clone();
        let last = ch.log.lock().unwrap_or_else(|p| p.into_inner()).last_us();
        last
    }

    /// New events of `camera` from now on.
    pub fn follow(&self, camera: &str) -> broadcast::Receiver<Stored> {
        self.channel(camera).tx.subscribe()
    }

    /// Events stored per camera.
    pub fn counts(&self) -> Vec<(String, usize)> {
        let map = self.cameras.read().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<(String, usize)> = map
            .iter()
            .map(|(k, c)| (k.clone(), c.log.lock().unwrap_or_else(|p| p.into_inner()).len()))
            .collect();
        out.sort();
        out
    }
}

/// The camera node's side: numbers its events (`run` is random per start, so
/// `(run, sequence)` is unique across restarts), signs them with the node key and adds
/// them to its bus.
#[derive(Debug)]
pub struct Publisher {
    bus: Arc<EventBus>,
    key: Keypair,
    run: u64,
    next: AtomicU64,
}

impl Publisher {
    pub fn new(bus: Arc<EventBus>, key: Keypair) -> Self {
        Publisher {
            bus,
            key,
            run: rand::random::<u64>() >> 1,
            next: AtomicU64::new(1),
        }
    }

    pub fn bus(&self) -> &Arc<EventBus> {
        &self.bus
    }

    /// Numbers, signs and publishes `e` (its `run` and `sequence` are set here).
    pub fn publish(&self, mut e: pb::CameraEvent) -> Stored {
        e.run = self.run;
        e.sequence = self.next.fetch_add(1, Ordering::Relaxed);
        let stored = Stored::new(&e, super::sign(&e, &self.key));
        self.bus.insert(&e.camera_id, stored.clone());
        stored
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn followers_get_new_events_and_queries_the_past() {
        let bus = Arc::new(EventBus::new(10));
        let p = Publisher::new(bus.clone(), Keypair::generate_ed25519());
        let ev = |t| pb::CameraEvent {
            camera_id: "cam1".into(),
            unix_us: t,
            kind: super::super::MOTION.into(),
            state: pb::EventState::Start as i32,
            ..Default::default()
        };
        p.publish(ev(1));
        let mut rx = bus.follow("cam1");
        let s = p.publish(ev(2));
        assert_eq!(rx.recv().await.expect("sent"), s);
        let (past, more) = bus.query("cam1", &Query::default());
        assert_eq!((past.len(), more), (2, false));
        let (_, e) = super::super::open(&past[1].signed).expect("signed");
        assert_eq!((e.sequence, e.unix_us), (2, 2));
        assert!(!bus.insert("cam1", s), "stored once");
        assert!(bus.query("cam2", &Query::default()).0.is_empty());
        assert!(!bus.has("cam2"));
    }
}
