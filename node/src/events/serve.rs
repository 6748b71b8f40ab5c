//! The serving side of `/camesh/events/1` (IO). A member asks for one camera's events:
//! - of a camera this node serves: its grant must allow watching it (`live`, or `record`
//!   for an NVR), and it gets the recent events this node keeps and, with `follow`, new
//!   ones as they happen;
//! - of a camera this node records (an NVR, [`Recorded`]): its grant must carry
//!   `playback`.
//!
//! The camera's certificate goes first either way, so the asker (and an NVR that stores
//! the events) can check the camera's signatures without the camera.
//!
//! Refusals are audited and sent as the stream's only item. A follower whose grant stops
//! holding (revoked, expired) is told so and cut off at the next change of trust.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use camesh_proto::framing::decode_message;
use camesh_proto::{pb, LengthCodec};
use futures::{AsyncReadExt, AsyncWriteExt};
use libp2p::{PeerId, Stream};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::bus::EventBus;
use super::log::Query;
use super::EVENTS_PROTOCOL;
use crate::auth::{self, Rights, Trust};
use crate::config::Limits;
use crate::discovery::Directory;
use crate::ids::valid_id;
use crate::stream::accept;
use crate::stream::hub::Hubs;
use crate::stream::io::{read_request, write_message, IoError};

/// Past events sent for one request at most.
pub const MAX_PAST: usize = 10_000;

/// The events of the cameras an NVR records, and each camera's certificate.
#[derive(Debug)]
pub struct Recorded {
    pub bus: Arc<EventBus>,
    pub certs: Mutex<HashMap<String, pb::Signed>>,
}

/// Where the NVR of this node, once started, puts its [`Recorded`] events.
pub type RecordedSlot = Arc<RwLock<Option<Arc<Recorded>>>>;

/// What serving events needs of its node.
#[derive(Debug, Clone)]
pub struct EventsServer {
    pub own: Arc<EventBus>,
    pub hubs: Arc<Hubs>,
    pub trust: Arc<Trust>,
    pub directory: Arc<Directory>,
    pub limits: Limits,
    pub recorded: RecordedSlot,
}

/// Where one request's events come from.
struct Source {
    bus: Arc<EventBus>,
    right: Rights,
    tags: Vec<String>,
    cert: Option<pb::Signed>,
}

fn item(i: pb::event_item::Item) -> pb::EventItem {
    pb::EventItem { item: Some(i) }
}

impl EventsServer {
    /// Serves `/camesh/events/1` on the node's bounded accept loop.
    pub fn start(self, control: &mut libp2p_stream::Control, shutdown: CancellationToken) -> Result<(), String> {
        let limits = self.limits.clone();
        accept::serve_control(
            control,
            EVENTS_PROTOCOL,
            &limits,
            shutdown,
            move |peer, stream, cancel| {
                let this = self.clone();
                async move { this.session(peer, stream, cancel).await }
            },
        )
    }

    /// Where `camera`'s events may come from, in the order to try: for past events the
    /// NVR's store first (it outlives restarts), for new ones this node's own bus first.
    fn sources(&self, camera: &str, past: bool) -> Vec<Source> {
        let mut out = Vec::with_capacity(2);
        if self.own.has(camera) {
            let tags = self.hubs.get(camera).map(|h| h.tags.clone()).unwrap_or_default();
            // This node's certificate names the camera: what an NVR keeps to show,
            // later, that the events are the camera's.
            out.push(Source {
                bus: self.own.clone(),
                right: Rights::LIVE,
                tags,
                cert: self.trust.own_cert(),
            });
        }
        let rec = self.recorded.read().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(rec) = rec.filter(|r| r.bus.has(camera)) {
            let cert = rec.certs.lock().unwrap_or_else(|e| e.into_inner()).get(camera).cloned();
            let tags = self
                .directory
                .lookup(camera)
                .first()
                .map(|e| e.announcement.tags.clone())
                .or_else(|| self.hubs.get(camera).map(|h| h.tags.clone()))
                .unwrap_or_default();
            let recorded = Source {
                bus: rec.bus.clone(),
                right: Rights::PLAYBACK,
                tags,
                cert,
            };
            if past {
                out.insert(0, recorded);
            } else {
                out.push(recorded);
            }
        }
        out
    }

    fn check(&self, peer: &PeerId, grant: &pb::Signed, camera: &str, src: &Source) -> Result<(), auth::AuthError> {
        if src.right == Rights::LIVE {
            self.trust.check_watch(peer, grant, camera, &src.tags).map(|_| ())
        } else {
            self.trust
                .check_grant(peer, grant, camera, &src.tags, src.right)
                .map(|_| ())
        }
    }

    async fn session(&self, peer: PeerId, mut stream: Stream, shutdown: CancellationToken) -> Result<(), IoError> {
        let codec = LengthCodec::new(self.limits.max_control_bytes);
        let trust = &self.trust;
        if trust.wait_member(&peer, trust.grace()).await.is_none() {
            trust
                .audit
                .record("refused-events", &peer.to_string(), "", "not a fleet member");
            let _ = stream.close().await;
            return Ok(());
        }
        let timeout = Duration::from_secs(self.limits.request_timeout_s);
        let Some(body) = read_request(&mut stream, codec, timeout).await? else {
            return Ok(());
        };
        let req: pb::EventsRequest = decode_message("events request", body)?;
        let camera = req.camera_id.chars().take(64).collect::<String>();
        let refuse = |why: String| {
            trust.audit.record("refused-events", &peer.to_string(), &camera, &why);
            info!(%peer, %camera, reason = %why, "events refused");
            item(pb::event_item::Item::Refused(why))
        };
        let grant = auth::signed::decode("grant", &req.grant);
        let past = req.from_unix_us > 0 || req.to_unix_us > 0;
        let checked = if !valid_id(&camera) {
            Err(format!("invalid camera id {camera:?}"))
        } else {
            let sources = self.sources(&camera, past);
            if sources.is_empty() {
                Err(format!("this node has no events of camera {camera:?}"))
            } else {
                grant.map_err(|e| e.to_string()).and_then(|g| {
                    // The first source the grant opens; else the first one's refusal.
                    let mut first_err = None;
                    for src in sources {
                        match self.check(&peer, &g, &camera, &src) {
                            Ok(()) => return Ok((src, g)),
                            Err(e) => {
                                first_err.get_or_insert(e.to_string());
                            }
                        }
                    }
                    Err(first_err.unwrap_or_default())
                })
            }
        };
        let (src, grant) = match checked {
            Ok(x) => x,
            Err(why) => {
                write_message(&mut stream, &codec, &refuse(why)).await?;
                let _ = stream.close().await;
                return Ok(());
            }
        };
        if let Some(cert) = src.cert.clone() {
            write_message(&mut stream, &codec, &item(pb::event_item::Item::CameraCert(cert))).await?;
        }
        let kinds: Vec<String> = req
            .kinds
            .iter()
            .take(16)
            .map(|k| k.chars().take(160).collect())
            .collect();
        let mut follow = req.follow.then(|| src.bus.follow(&camera));
        let max = match req.max_events as usize {
            0 => MAX_PAST,
            n => n.min(MAX_PAST),
        };
        let q = Query {
            from_us: req.from_unix_us,
            to_us: req.to_unix_us,
            kinds,
            max,
        };
        let (past, more) = if req.from_unix_us > 0 || req.to_unix_us > 0 {
            src.bus.query(&camera, &q)
        } else {
            (Vec::new(), false)
        };
        let mut sent: HashSet<(u64, u64)> = HashSet::with_capacity(past.len());
        for e in &past {
            write_message(
                &mut stream,
                &codec,
                &item(pb::event_item::Item::Event((*e.signed).clone())),
            )
            .await?;
            sent.insert(e.id);
        }
        let done = pb::EventsDone {
            sent: u32::try_from(past.len()).unwrap_or(u32::MAX),
            more,
        };
        write_message(&mut stream, &codec, &item(pb::event_item::Item::Done(done))).await?;
        debug!(%peer, %camera, past = past.len(), follow = follow.is_some(), "events sent");
        let Some(rx) = follow.as_mut() else {
            let _ = stream.close().await;
            return Ok(());
        };
        trust.audit.record("events", &peer.to_string(), &camera, "following");
        let mut trust_changed = trust.subscribe();
        // What a new event must be: any time before `to`, one of the kinds.
        let new_ones = Query { from_us: i64::MIN, ..q };
        let (mut rd, mut wr) = stream.split();
        let mut buf = [0u8; 64];
        let end = loop {
            tokio::select! {
                e = rx.recv() => match e {
                    Ok(e) => {
                        // Only new events, within the asked time and kinds.
                        if sent.contains(&e.id) || !new_ones.wants(e.unix_us, &e.kind) {
                            continue;
                        }
                        write_message(&mut wr, &codec, &item(pb::event_item::Item::Event((*e.signed).clone()))).await?;
                    }
                    Err(RecvError::Lagged(n)) => debug!(%peer, %camera, lost = n, "events follower behind"),
                    Err(RecvError::Closed) => break None,
                },
                c = trust_changed.changed() => {
                    if c.is_err() {
                        break None;
                    }
                    if let Err(e) = self.check(&peer, &grant, &camera, &src) {
                        break Some(format!("access ended: {e}"));
                    }
                }
                r = rd.read(&mut buf) => match r {
                    Ok(0) | Err(_) => break None,
                    Ok(_) => {}
                },
                _ = shutdown.cancelled() => break None,
            }
        };
        if let Some(why) = end {
            trust.audit.record("events-ended", &peer.to_string(), &camera, &why);
            write_message(&mut wr, &codec, &item(pb::event_item::Item::Refused(why))).await?;
        }
        let _ = wr.close().await;
        Ok(())
    }
}
