//! The NVR's index of camera events (IO): while a camera is recorded, follow its events
//! over `/camesh/events/1` and append each to `<recordings>/events/<camera>.ev`
//! (length-prefixed `EventItem`s: the camera's certificate whenever it changes, then
//! signed events). The files are the source of truth; at start they are read back into
//! the [`Recorded`] bus the node serves (`mesh events cam1 --from -1h` after a restart).
//! After a reconnect it asks again from the newest stored event (duplicates are dropped).
//!
//! Events of the kinds `[nvr] lock_events` names lock the recording around them
//! (`event_margin_s` either side; a motion from its start to its end), merged with the
//! previous event lock of the camera when they touch, so a busy camera holds one lock per
//! burst of activity, not one per event.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use camesh_proto::pb;
use prost::Message;
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::auth::Rights;
use crate::backoff::next_backoff;
use crate::events::bus::EventBus;
use crate::events::client::{self, Ask, EventsError, Item};
use crate::events::log::{Query, Stored};
use crate::events::serve::Recorded;
use crate::events::{kind_matches, state_word};
use crate::reach::Reach;
use crate::record::Recorder;

/// Events an NVR keeps in memory per camera (the file keeps all).
pub const NVR_KEEPS: usize = 100_000;
/// Largest event file read at start.
const MAX_FILE: u64 = 256 << 20;
/// Largest item in an event file.
const MAX_ITEM: usize = 64 << 10;
/// How far back a first subscription asks (what the camera node still keeps).
const FIRST_LOOK_BACK_US: i64 = 3_600_000_000;

pub fn events_file(folder: &Path, camera: &str) -> PathBuf {
    folder.join("events").join(format!("{camera}.ev"))
}

fn write_item(item: &pb::EventItem, out: &mut Vec<u8>) {
    let body = item.encode_to_vec();
    out.extend_from_slice(&u32::try_from(body.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(&body);
}

/// The items of one event file, up to a torn or damaged tail (pure).
pub fn read_items(bytes: &[u8]) -> Vec<pb::EventItem> {
    let mut items = Vec::new();
    let mut rest = bytes;
    while rest.len() >= 4 {
        let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        if len > MAX_ITEM || rest.len() - 4 < len {
            break;
        }
        match pb::EventItem::decode(&rest[4..4 + len]) {
            Ok(i) => items.push(i),
            Err(_) => break,
        }
        rest = &rest[4 + len..];
    }
    items
}

/// Reads every event file under `folder` (blocking): the events (signatures checked
/// again) and each camera's newest certificate.
pub fn load(folder: &Path) -> Recorded {
    let bus = Arc::new(EventBus::new(NVR_KEEPS));
    let mut certs = HashMap::new();
    let dir = folder.join("events");
    for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let path = entry.path();
        let Some(camera) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".ev"))
            .map(str::to_owned)
        else {
            continue;
        };
        if entry.metadata().map_or(true, |m| m.len() > MAX_FILE) {
            warn!(file = %path.display(), "event file too large or unreadable; not indexed");
            continue;
        }
        let Ok(bytes) = std::fs::read(&path) else { continue };
        bus.add_camera(&camera);
        let (mut n, mut bad) = (0usize, 0usize);
        for item in read_items(&bytes) {
            match item.item {
                Some(pb::event_item::Item::CameraCert(c)) => {
                    certs.insert(camera.clone(), c);
                }
                Some(pb::event_item::Item::Event(s)) => match crate::events::open(&s) {
                    Ok((_, e)) if e.camera_id == camera => {
                        bus.insert(&camera, Stored::new(&e, s));
                        n += 1;
                    }
                    _ => bad += 1,
                },
                _ => {}
            }
        }
        info!(%camera, events = n, unreadable = bad, "event index loaded");
    }
    Recorded {
        bus,
        certs: Mutex::new(certs),
    }
}

/// The range an event locks (pure): `margin_us` either side of it; a motion's end
/// locks back to its start (`open` holds the start of the motion going on).
pub fn lock_range(state: i32, t_us: i64, margin_us: i64, open: &mut Option<i64>) -> (i64, i64) {
    let from = match pb::EventState::try_from(state) {
        Ok(pb::EventState::Start) => {
            *open = Some(t_us);
            t_us
        }
        Ok(pb::EventState::End) => open.take().unwrap_or(t_us).min(t_us),
        _ => t_us,
    };
    (from.saturating_sub(margin_us), t_us.saturating_add(margin_us))
}

/// What following one camera's events needs.
pub(crate) struct Follow {
    pub node: Reach,
    pub camera: String,
    pub recorded: Arc<Recorded>,
    pub recorder: Arc<Recorder>,
    pub folder: PathBuf,
    pub lock_kinds: Vec<String>,
    pub margin_us: i64,
    /// This node's own events, when the camera is this node's.
    pub own_events: Option<Arc<EventBus>>,
}

/// Follows the camera's events until `cancel`, reconnecting with a backoff.
pub(crate) async fn follow(f: Follow, cancel: CancellationToken) {
    let mut backoff = Duration::ZERO;
    // The camera's motion going on, and the last event lock (id, from, to).
    let mut locks = LockState::default();
    let mut told = false;
    loop {
        let r = tokio::select! {
            r = follow_once(&f, &mut locks) => r,
            _ = cancel.cancelled() => return,
        };
        match r {
            Ok(n) => {
                debug!(camera = %f.camera, events = n, "event stream ended");
                if n > 0 {
                    backoff = Duration::ZERO;
                }
            }
            Err(e) => {
                // A camera without events configured says so once; then quietly retry.
                if !told {
                    info!(camera = %f.camera, error = %e, "no camera events yet");
                    told = true;
                } else {
                    debug!(camera = %f.camera, error = %e, "no camera events");
                }
            }
        }
        backoff = next_backoff(backoff, Duration::from_secs(1), Duration::from_secs(30));
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = cancel.cancelled() => return,
        }
    }
}

#[derive(Debug, Default)]
struct LockState {
    open: Option<i64>,
    last: Option<(u64, i64, i64)>,
}

/// Appends to a camera's event file and index, and locks around events.
struct Writer<'a> {
    f: &'a Follow,
    file: tokio::fs::File,
    buf: Vec<u8>,
    cert_stored: Option<pb::Signed>,
    locks: &'a mut LockState,
    n: u64,
}

impl<'a> Writer<'a> {
    async fn open(f: &'a Follow, locks: &'a mut LockState) -> Result<Writer<'a>, String> {
        let path = events_file(&f.folder, &f.camera);
        if let Some(dir) = path.parent() {
            tokio::fs::create_dir_all(dir).await.map_err(|e| e.to_string())?;
        }
        let file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .await
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Writer {
            f,
            file,
            buf: Vec::new(),
            cert_stored: None,
            locks,
            n: 0,
        })
    }

    async fn append(&mut self, item: pb::event_item::Item) -> Result<(), String> {
        self.buf.clear();
        write_item(&pb::EventItem { item: Some(item) }, &mut self.buf);
        self.file.write_all(&self.buf).await.map_err(|e| e.to_string())?;
        self.file.flush().await.map_err(|e| e.to_string())
    }

    /// The certificate that vouches for the camera's key, stored when it changes.
    async fn cert(&mut self, c: &pb::Signed) -> Result<(), String> {
        if self.cert_stored.as_ref() == Some(c) {
            return Ok(());
        }
        self.append(pb::event_item::Item::CameraCert(c.clone())).await?;
        let certs = &self.f.recorded.certs;
        certs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(self.f.camera.clone(), c.clone());
        self.cert_stored = Some(c.clone());
        Ok(())
    }

    /// Stores one event (once), and locks around it when its kind says so.
    async fn event(&mut self, e: pb::CameraEvent, signed: pb::Signed) -> Result<(), String> {
        let (f, camera) = (self.f, &self.f.camera);
        if !f.recorded.bus.insert(camera, Stored::new(&e, signed.clone())) {
            return Ok(());
        }
        self.append(pb::event_item::Item::Event(signed)).await?;
        self.n += 1;
        debug!(%camera, kind = %e.kind, state = state_word(e.state), at_us = e.unix_us, "event indexed");
        if !f.lock_kinds.is_empty() && kind_matches(&f.lock_kinds, &e.kind) {
            lock_around(f, self.locks, &e).await;
        }
        Ok(())
    }
}

/// Where to ask again from: the newest stored event, else an hour back.
fn resume_from(f: &Follow) -> i64 {
    f.recorded
        .bus
        .last_us(&f.camera)
        .unwrap_or_else(|| crate::clock::now_unix_us() - FIRST_LOOK_BACK_US)
        .max(1)
}

async fn follow_once(f: &Follow, locks: &mut LockState) -> Result<u64, String> {
    if let Some(own) = &f.own_events {
        return follow_local(f, own, locks).await;
    }
    let camera = &f.camera;
    let grant = f
        .node
        .trust()
        .grant_for(camera, Rights::RECORD)
        .ok_or("no grant with the record right")?;
    let peer = f.node.camera_node(camera).await.map_err(|e| e.to_string())?;
    let ask = Ask {
        camera: camera.clone(),
        from_us: resume_from(f),
        follow: true,
        ..Ask::default()
    };
    let agent = format!("camesh-nvr/{}", env!("CARGO_PKG_VERSION"));
    let mut events = client::open(&f.node, peer, &grant, &ask, &agent)
        .await
        .map_err(|e| e.to_string())?;
    let mut w = Writer::open(f, locks).await?;
    loop {
        let item = match events.next().await {
            Ok(Some(i)) => i,
            Ok(None) => return Ok(w.n),
            Err(EventsError::Refused { reason, .. }) => return Err(format!("refused: {reason}")),
            Err(e) => return Err(e.to_string()),
        };
        let Item::Event(ev) = item else { continue };
        let (e, signed) = *ev;
        if let Some(c) = events.camera_cert().cloned() {
            w.cert(&c).await?;
        }
        w.event(e, signed).await?;
    }
}

/// This node's own camera: its events straight from the node's bus.
async fn follow_local(f: &Follow, own: &EventBus, locks: &mut LockState) -> Result<u64, String> {
    let camera = &f.camera;
    if !own.has(camera) {
        return Err("no [camera.motion] or ONVIF events on this camera".into());
    }
    let mut rx = own.follow(camera);
    let mut w = Writer::open(f, locks).await?;
    if let Some(c) = f.node.trust().own_cert() {
        w.cert(&c).await?;
    }
    let past = Query {
        from_us: resume_from(f),
        ..Query::default()
    };
    for s in own.query(camera, &past).0 {
        if let Ok((_, e)) = crate::events::open(&s.signed) {
            w.event(e, (*s.signed).clone()).await?;
        }
    }
    loop {
        match rx.recv().await {
            Ok(s) => {
                if let Ok((_, e)) = crate::events::open(&s.signed) {
                    w.event(e, (*s.signed).clone()).await?;
                }
            }
            Err(tokio::sync::broadcast::error::RecvError::Lagged(lost)) => {
                warn!(%camera, lost, "event index fell behind; events lost");
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return Ok(w.n),
        }
    }
}

/// Locks the range `e` falls in, merged with the camera's previous event lock.
async fn lock_around(f: &Follow, locks: &mut LockState, e: &pb::CameraEvent) {
    let (mut from, mut to) = lock_range(e.state, e.unix_us, f.margin_us, &mut locks.open);
    let mut replaces = None;
    if let Some((id, a, b)) = locks.last {
        if from <= b && to >= a {
            (from, to) = (from.min(a), to.max(b));
            replaces = Some(id);
        }
    }
    let (rec, camera) = (f.recorder.clone(), f.camera.clone());
    let reason = format!("{} event", e.kind);
    let r = tokio::task::spawn_blocking(move || {
        // The new lock is durable before the old one goes.
        let l = rec.lock_range(&camera, from, to, &reason)?;
        if let Some(old) = replaces {
            rec.unlock(old)?;
        }
        Ok::<_, crate::record::RecordError>(l)
    })
    .await;
    match r {
        Ok(Ok(l)) => locks.last = Some((l.id, l.from_us, l.to_us)),
        Ok(Err(e)) => warn!(camera = %f.camera, error = %e, "event lock not made"),
        Err(e) => warn!(camera = %f.camera, error = %e, "event lock not made"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_motion_locks_from_its_start_to_its_end() {
        let mut open = None;
        let start = pb::EventState::Start as i32;
        let end = pb::EventState::End as i32;
        assert_eq!(lock_range(start, 100, 10, &mut open), (90, 110));
        assert_eq!(open, Some(100));
        assert_eq!(lock_range(end, 500, 10, &mut open), (90, 510));
        assert_eq!(open, None);
        assert_eq!(lock_range(pb::EventState::Pulse as i32, 700, 10, &mut open), (690, 710));
        assert_eq!(
            lock_range(end, 900, 10, &mut open),
            (890, 910),
            "an end without its start"
        );
    }

    #[test]
    fn torn_tails_are_left_out() {
        let item = pb::EventItem {
            item: Some(pb::event_item::Item::Done(pb::EventsDone { sent: 3, more: false })),
        };
        let mut buf = Vec::new();
        write_item(&item, &mut buf);
        write_item(&item, &mut buf);
        buf.extend_from_slice(&[0, 0, 0, 9, 1, 2]);
        assert_eq!(read_items(&buf), vec![item.clone(), item]);
        assert!(read_items(&[0xff, 0xff, 0xff, 0xff]).is_empty());
    }
}
