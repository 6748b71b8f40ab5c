//! Store-and-forward replication (`[[nvr.replicate]]`): a recorder's footage reaches a
//! shore NVR whenever a link allows, evidence first, resumable, never twice, within a
//! rate cap.
//!
//! ```text
//! vehicle NVR                                   shore NVR
//! push (one task per rule) ──/camesh/replicate/1──► accept ──► Recorder (same segments)
//!   ReplicaOffer (coverage, locks, grant) ─────►      checks member + `record` grant
//!   ◄───────────────────── ReplicaHave (what shore holds: frames, attestations)
//!   plan::next_chunk ─► ReplicaItem* (codec, keys, sealed frames, gaps, attestations)
//!   ◄───────────────────── ReplicaAck per chunk (stored, on disk)
//! ```
//!
//! **The vehicle pushes.** The vehicle is the side that knows when a link is there (its
//! links come and go; shore is always up), which link it is on (`via`: only while the
//! depot's access node is connected), what it holds and locked, and how much of its
//! uplink replication may take: the rate cap protects the vehicle's own thin uplink, so
//! it belongs where the bytes leave. A shore that pulled would have to poll every vehicle
//! of the fleet to learn when one is reachable, and could not see the vehicle's links.
//! Shore keeps the last word on what it stores: it accepts a camera's footage only from
//! a fleet member holding a grant with the `record` right on that camera, opens every
//! frame with its media key before storing it (a corrupt frame ends the session), and
//! drops frames it holds already.
//!
//! Resume: nothing is remembered about transfers. Each session starts with the shore
//! saying what it holds ([`held`]: its segments' capture ranges), and the plan sends what
//! the vehicle holds beyond that; a chunk the shore acknowledged is on its disk. After a
//! SIGKILL of either side the next session continues from what reached the shore's disk.
//!
//! What travels is what was recorded: sealed frames with their headers (the camera's
//! keyframe signatures included) and the camera-signed GOP digests, so a shore export
//! verifies with `mesh verify` exactly like one made on the vehicle. Media keys travel as
//! in playback (over the authenticated connection) and are stored wrapped under the
//! shore's own storage key.
//!
//! Live video comes first: pushes also draw on the node's `[[link]]` budget toward the
//! shore as bulk (crate::stream::budget), besides the rule's own rate cap. The plan is
//! in capture time: after a camera's clock stepped back, footage whose times overlap
//! what the shore holds already is not sent (the vehicle keeps it; its own exports have
//! it).

pub mod accept;
pub mod plan;
pub mod push;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use camesh_proto::pb;
use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::record::Index;
use plan::Span;

/// The replication protocol.
pub const REPLICATE_PROTOCOL: &str = "/camesh/replicate/1";
/// Most ranges in an offer or an answer (the newest are kept; dropping old ones only
/// makes the shore drop repeated frames).
pub const MAX_RANGES: usize = 1024;
/// Sources remembered per camera.
const MAX_SOURCES: usize = 8;

/// What the shore holds of `camera`: its segments' capture ranges, merged (blocking).
pub fn held(index: &Index, camera: &str) -> Vec<Span> {
    let segs = index.camera_segments(camera).unwrap_or_default();
    let spans: Vec<Span> = segs
        .iter()
        .filter_map(|s| Some(Span::new(s.first_us?, s.last_us?)))
        .collect();
    plan::merge(&spans, 1)
}

/// Ranges for the wire: the newest [`MAX_RANGES`].
pub fn to_ranges(spans: &[Span]) -> Vec<pb::ReplicaRange> {
    spans
        .iter()
        .skip(spans.len().saturating_sub(MAX_RANGES))
        .map(|s| pb::ReplicaRange {
            from_unix_us: s.from,
            to_unix_us: s.to,
        })
        .collect()
}

/// Ranges from the wire (at most [`MAX_RANGES`] read; ends swapped if reversed).
pub fn from_ranges(r: &[pb::ReplicaRange]) -> Vec<Span> {
    r.iter()
        .take(MAX_RANGES)
        .map(|r| Span::new(r.from_unix_us, r.to_unix_us))
        .collect()
}

/// One source's coverage of a camera as it last offered it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SourceCoverage {
    pub peer: String,
    pub name: String,
    pub offered_us: i64,
    pub recorded: Vec<(i64, i64)>,
    /// (id, from, to, reason)
    pub locks: Vec<(u64, i64, i64, String)>,
}

/// The sources replicating to this NVR, by camera; kept in `<recordings>/replicas.json`
/// so `mesh recordings` shows them across restarts.
#[derive(Debug)]
pub struct Sources {
    file: PathBuf,
    by_camera: Mutex<HashMap<String, Vec<SourceCoverage>>>,
    /// Per camera, the frames the last session wrote into the open segment (the next
    /// session appends there when it goes on forward in time; in memory only: after a
    /// restart no segment is open).
    runs: Mutex<HashMap<String, Span>>,
}

impl Sources {
    pub fn open(folder: &Path) -> Sources {
        let file = folder.join("replicas.json");
        let by_camera = std::fs::read(&file)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        Sources {
            file,
            by_camera: Mutex::new(by_camera),
            runs: Mutex::new(HashMap::new()),
        }
    }

    pub fn run(&self, camera: &str) -> Option<Span> {
        let m = self.runs.lock().unwrap_or_else(|p| p.into_inner());
        m.get(camera).copied()
    }

    pub fn set_run(&self, camera: &str, run: Option<Span>) {
        let mut m = self.runs.lock().unwrap_or_else(|p| p.into_inner());
        match run {
            Some(r) => m.insert(camera.to_owned(), r),
            None => m.remove(camera),
        };
    }

    pub fn of(&self, camera: &str) -> Vec<SourceCoverage> {
        let m = self.by_camera.lock().unwrap_or_else(|p| p.into_inner());
        m.get(camera).cloned().unwrap_or_default()
    }

    /// Records an offer (blocking: writes the file).
    pub fn offered(&self, camera: &str, c: SourceCoverage) {
        let json = {
            let mut m = self.by_camera.lock().unwrap_or_else(|p| p.into_inner());
            let v = m.entry(camera.to_owned()).or_default();
            v.retain(|o| o.peer != c.peer);
            v.push(c);
            if v.len() > MAX_SOURCES {
                v.sort_by_key(|o| std::cmp::Reverse(o.offered_us));
                v.truncate(MAX_SOURCES);
            }
            serde_json::to_vec(&*m)
        };
        let tmp = self.file.with_extension("json.tmp");
        let r = json
            .map_err(std::io::Error::other)
            .and_then(|j| std::fs::write(&tmp, j))
            .and_then(|()| std::fs::rename(&tmp, &self.file));
        if let Err(e) = r {
            warn!(file = %self.file.display(), error = %e, "replication sources not saved");
        }
    }
}

/// What `mesh recordings` shows of each source within `[from, to]`: its recorded spans
/// and, of those, what this NVR (holding `held`) lacks.
pub fn sources_of(sources: &[SourceCoverage], held: &[Span], from: i64, to: i64) -> Vec<pb::NvrSource> {
    let window = Span::new(from, to);
    let span = |s: &Span, recorded: bool| pb::NvrSpan {
        from_unix_us: s.from,
        to_unix_us: s.to,
        recorded,
        reason: String::new(),
    };
    sources
        .iter()
        .map(|src| {
            let theirs: Vec<Span> = src
                .recorded
                .iter()
                .filter_map(|&(a, b)| plan::clip(&Span::new(a, b), &window))
                .collect();
            let missing = plan::subtract(&plan::merge(&theirs, 250_000), &plan::merge(held, 250_000));
            pb::NvrSource {
                peer_id: src.peer.clone(),
                name: src.name.clone(),
                offered_unix_us: src.offered_us,
                spans: theirs.iter().take(MAX_RANGES).map(|s| span(s, true)).collect(),
                missing: missing.iter().take(MAX_RANGES).map(|s| span(s, false)).collect(),
                locks: src
                    .locks
                    .iter()
                    .filter(|l| l.1 <= to && from <= l.2)
                    .take(MAX_RANGES)
                    .map(|(id, a, b, r)| pb::NvrLocked {
                        id: *id,
                        from_unix_us: *a,
                        to_unix_us: *b,
                        reason: r.clone(),
                    })
                    .collect(),
            }
        })
        .collect()
}
