//! The segment index: sled trees that answer "which segment holds camera X at time T,
//! and where is the keyframe before it" without reading the files.
//!
//! The segment files are the source of truth; this index is a cache of them:
//! - `segments`: (camera, start time) → [`SegmentSummary`] (JSON);
//! - `keyframes`: (camera, segment start, byte offset) → capture time;
//! - `locks`: evidence ranges retention must keep (mirrored from `locks.json`, see below);
//! - `state`: the clean-shutdown flag.
//!
//! [`Index::rebuild_from_segments`] recreates the first two from the files alone, and
//! [`Index::check`] (run after an unclean shutdown) compares them with the files and
//! repairs the difference: missing files drop out, unindexed or changed files are
//! scanned, unsealed segments (their writer died) get their torn tail cut and a seal.
//! Evidence locks cannot be derived from video, so they live in `locks.json` (written
//! atomically: temp file, fsync, rename) and sled holds a mirror; a lost or rebuilt index
//! never loses a lock.
//!
//! Keys sort by camera, then time (see `keys`).
//!
//! This file owns the database (open, recreate when damaged, the clean flag) and the
//! segment and keyframe trees; `check` the repair against the files; `locks` the
//! evidence locks.

mod check;
mod keys;
mod locks;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::segment::{valid_camera_id, KeyframeRef, SegmentError, SegmentSummary};
use super::{INDEX_DIR, SEGMENTS_DIR};
use crate::clock::now_unix_us;
pub use check::CheckReport;
use keys::{camera_prefix, describe_key, keyframe_key, segment_key};
pub use locks::EvidenceLock;

/// sled's page cache; the index is small (a few hundred bytes per segment).
const CACHE_BYTES: u64 = 32 << 20;

/// Why the index cannot answer or be updated.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("index {}: cannot {op}: {source}", path.display())]
    Db {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: sled::Error,
    },
    #[error("index entry {key} is corrupt: {reason}")]
    Corrupt { key: String, reason: String },
    #[error("{}: cannot {op}: {source}", path.display())]
    Io {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("evidence locks file {}: {reason}", path.display())]
    Locks { path: PathBuf, reason: String },
    #[error(transparent)]
    Segment(#[from] SegmentError),
    #[error("invalid camera id {0:?}")]
    InvalidCamera(String),
    #[error("invalid range: from {from_us} is after to {to_us}")]
    InvalidRange { from_us: i64, to_us: i64 },
    #[error("index {}: in use by another process (is another camesh-node recording into this folder?)", path.display())]
    InUse { path: PathBuf },
}

/// What opening the index found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OpenReport {
    /// The previous user closed it cleanly (otherwise run [`Index::check`]).
    pub was_clean: bool,
    /// The sled database could not be opened and was moved aside and recreated.
    pub recreated: bool,
    /// Things an operator should know (a moved-aside database, a bad locks file).
    pub warnings: Vec<String>,
}

/// Everything the index holds about segments, for comparisons (tests, `mesh nvr check`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IndexDump {
    pub segments: Vec<SegmentSummary>,
    pub keyframes: BTreeMap<(String, i64), Vec<KeyframeRef>>,
}

/// The index of one recording folder. Cheap to clone (sled trees are shared handles).
#[derive(Clone, Debug)]
pub struct Index {
    root: PathBuf,
    segments_dir: PathBuf,
    db: sled::Db,
    segments: sled::Tree,
    keyframes: sled::Tree,
    locks: sled::Tree,
    state: sled::Tree,
    /// Serialises lock changes with retention (a lock added while retention plans must
    /// be seen by it) and with writes of `locks.json`.
    locks_guard: Arc<Mutex<()>>,
}

fn check_camera(camera: &str) -> Result<(), IndexError> {
    if valid_camera_id(camera) {
        Ok(())
    } else {
        Err(IndexError::InvalidCamera(camera.to_owned()))
    }
}

impl Index {
    /// Opens (or creates) the index of the recording folder `root`: sled in
    /// `root/index`, segments in `root/segments`, locks in `root/locks.json`. A database
    /// sled cannot open is moved aside (never deleted) and a new one created; the caller
    /// then runs [`Self::check`], which rebuilds it from the segments.
    pub fn open(root: &Path) -> Result<(Self, OpenReport), IndexError> {
        let segments_dir = root.join(SEGMENTS_DIR);
        std::fs::create_dir_all(&segments_dir).map_err(|source| IndexError::Io {
            path: segments_dir.clone(),
            op: "create the segments folder",
            source,
        })?;
        let db_path = root.join(INDEX_DIR);
        let mut report = OpenReport::default();
        let db = match open_sled(&db_path) {
            Ok(db) => db,
            // Locked: another process's live index (or, within this process, one whose
            // background flusher has not let go yet) is not broken; never move it aside.
            Err(reason) if reason.contains(LOCKED) => return Err(IndexError::InUse { path: db_path }),
            Err(reason) => {
                let aside = root.join(format!("{INDEX_DIR}.broken-{}", now_unix_us()));
                std::fs::rename(&db_path, &aside).map_err(|source| IndexError::Io {
                    path: db_path.clone(),
                    op: "move the unreadable index aside",
                    source,
                })?;
                report.recreated = true;
                report.warnings.push(format!(
                    "the index could not be opened ({reason}); moved to {} and rebuilt from the segments",
                    aside.display()
                ));
                open_sled(&db_path).map_err(|reason| IndexError::Locks {
                    path: db_path.clone(),
                    reason: format!("a new index cannot be created either: {reason}"),
                })?
            }
        };
        let tree = |name: &str| {
            db.open_tree(name).map_err(|source| IndexError::Db {
                path: db_path.clone(),
                op: "open a tree",
                source,
            })
        };
        let index = Index {
            root: root.to_owned(),
            segments_dir,
            segments: tree("segments")?,
            keyframes: tree("keyframes")?,
            locks: tree("locks")?,
            state: tree("state")?,
            db,
            locks_guard: Arc::new(Mutex::new(())),
        };
        report.was_clean = index
            .state
            .get(b"clean")
            .map_err(index.db_err("read the state"))?
            .is_some();
        // Until close() says otherwise, a crash from now on is an unclean shutdown.
        index.state.remove(b"clean").map_err(index.db_err("write the state"))?;
        index.db.flush().map_err(index.db_err("flush"))?;
        index.load_locks(&mut report)?;
        Ok((index, report))
    }

    fn db_err(&self, op: &'static str) -> impl Fn(sled::Error) -> IndexError + '_ {
        move |source| IndexError::Db {
            path: self.root.join(INDEX_DIR),
            op,
            source,
        }
    }

    /// The recording folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where segment files live (`<root>/segments/<camera>/<start>.cseg`).
    pub fn segments_dir(&self) -> &Path {
        &self.segments_dir
    }

    /// The full path of a segment.
    pub fn segment_path(&self, s: &SegmentSummary) -> PathBuf {
        self.segments_dir.join(&s.file)
    }

    /// Records that the recorder closed everything cleanly (no check needed next time).
    pub fn mark_clean(&self) -> Result<(), IndexError> {
        self.state
            .insert(b"clean", &[1u8])
            .map_err(self.db_err("write the state"))?;
        self.flush()
    }

    pub fn flush(&self) -> Result<(), IndexError> {
        self.db.flush().map_err(self.db_err("flush")).map(|_| ())
    }

    // ----- segments ---------------------------------------------------------------------

    /// Inserts or replaces a segment's summary.
    pub fn put_segment(&self, s: &SegmentSummary) -> Result<(), IndexError> {
        check_camera(&s.camera)?;
        let value = serde_json::to_vec(s).map_err(|e| IndexError::Corrupt {
            key: format!("{}@{}", s.camera, s.start_us),
            reason: e.to_string(),
        })?;
        self.segments
            .insert(segment_key(&s.camera, s.start_us), value)
            .map_err(self.db_err("write a segment"))?;
        Ok(())
    }

    /// Records a keyframe of a segment.
    pub fn add_keyframe(&self, camera: &str, start_us: i64, kf: KeyframeRef) -> Result<(), IndexError> {
        check_camera(camera)?;
        self.keyframes
            .insert(keyframe_key(camera, start_us, kf.offset), &kf.capture_us.to_be_bytes())
            .map_err(self.db_err("write a keyframe"))?;
        Ok(())
    }

    /// Removes a segment and its keyframes from the index (not the file).
    pub fn remove_segment(&self, camera: &str, start_us: i64) -> Result<(), IndexError> {
        check_camera(camera)?;
        self.segments
            .remove(segment_key(camera, start_us))
            .map_err(self.db_err("remove a segment"))?;
        let prefix = segment_key(camera, start_us);
        let mut batch = sled::Batch::default();
        for kv in self.keyframes.scan_prefix(&prefix) {
            let (k, _) = kv.map_err(self.db_err("read keyframes"))?;
            batch.remove(k);
        }
        self.keyframes
            .apply_batch(batch)
            .map_err(self.db_err("remove keyframes"))?;
        Ok(())
    }

    fn decode_segment(key: &[u8], value: &[u8]) -> Result<SegmentSummary, IndexError> {
        serde_json::from_slice(value).map_err(|e| IndexError::Corrupt {
            key: describe_key(key),
            reason: e.to_string(),
        })
    }

    fn collect(&self, iter: sled::Iter) -> Result<Vec<SegmentSummary>, IndexError> {
        iter.map(|kv| {
            let (k, v) = kv.map_err(self.db_err("read segments"))?;
            Self::decode_segment(&k, &v)
        })
        .collect()
    }

    pub fn segment(&self, camera: &str, start_us: i64) -> Result<Option<SegmentSummary>, IndexError> {
        check_camera(camera)?;
        let key = segment_key(camera, start_us);
        match self.segments.get(&key).map_err(self.db_err("read a segment"))? {
            Some(v) => Ok(Some(Self::decode_segment(&key, &v)?)),
            None => Ok(None),
        }
    }

    /// All segments of a camera, oldest first.
    pub fn camera_segments(&self, camera: &str) -> Result<Vec<SegmentSummary>, IndexError> {
        check_camera(camera)?;
        self.collect(self.segments.scan_prefix(camera_prefix(camera)))
    }

    /// Every segment, by camera then time.
    pub fn all_segments(&self) -> Result<Vec<SegmentSummary>, IndexError> {
        self.collect(self.segments.iter())
    }

    /// The cameras that have recordings.
    pub fn cameras(&self) -> Result<Vec<String>, IndexError> {
        let mut out = BTreeSet::new();
        for kv in self.segments.iter() {
            let (k, _) = kv.map_err(self.db_err("read segments"))?;
            let n = usize::from(k.first().copied().unwrap_or(0));
            if let Some(c) = k.get(1..1 + n) {
                out.insert(String::from_utf8_lossy(c).into_owned());
            }
        }
        Ok(out.into_iter().collect())
    }

    /// Segments of a camera that may hold frames in `[from_us, to_us]`, oldest first: those
    /// starting in the range, plus the last one starting before it if it reaches `from`
    /// (or is still being written).
    pub fn segments_between(&self, camera: &str, from_us: i64, to_us: i64) -> Result<Vec<SegmentSummary>, IndexError> {
        check_camera(camera)?;
        if from_us > to_us {
            return Err(IndexError::InvalidRange { from_us, to_us });
        }
        let lo = segment_key(camera, from_us);
        let mut hi = segment_key(camera, to_us);
        hi.push(0xff);
        let mut out = Vec::new();
        let before = self
            .segments
            .range(camera_prefix(camera)..lo.clone())
            .next_back()
            .transpose()
            .map_err(self.db_err("read segments"))?;
        if let Some((k, v)) = before {
            let s = Self::decode_segment(&k, &v)?;
            if s.reaches(from_us) {
                out.push(s);
            }
        }
        out.extend(self.collect(self.segments.range(lo..hi))?);
        Ok(out)
    }

    /// The last segments of a camera that start at or before `t`, newest first (at most `n`).
    pub fn segments_before(&self, camera: &str, t: i64, n: usize) -> Result<Vec<SegmentSummary>, IndexError> {
        check_camera(camera)?;
        let mut hi = segment_key(camera, t);
        hi.push(0xff);
        self.segments
            .range(camera_prefix(camera)..hi)
            .rev()
            .take(n)
            .map(|kv| {
                let (k, v) = kv.map_err(self.db_err("read segments"))?;
                Self::decode_segment(&k, &v)
            })
            .collect()
    }

    /// A segment's keyframes in file order.
    pub fn keyframes(&self, camera: &str, start_us: i64) -> Result<Vec<KeyframeRef>, IndexError> {
        check_camera(camera)?;
        let prefix = segment_key(camera, start_us);
        self.keyframes
            .scan_prefix(&prefix)
            .map(|kv| {
                let (k, v) = kv.map_err(self.db_err("read keyframes"))?;
                let offset = k
                    .get(prefix.len()..)
                    .and_then(|b| <[u8; 8]>::try_from(b).ok())
                    .map(u64::from_be_bytes);
                let capture = <[u8; 8]>::try_from(&v[..]).ok().map(i64::from_be_bytes);
                match (offset, capture) {
                    (Some(offset), Some(capture_us)) => Ok(KeyframeRef { offset, capture_us }),
                    _ => Err(IndexError::Corrupt {
                        key: describe_key(&k),
                        reason: "malformed keyframe entry".into(),
                    }),
                }
            })
            .collect()
    }

    /// Everything about segments, for comparisons.
    pub fn dump(&self) -> Result<IndexDump, IndexError> {
        let segments = self.all_segments()?;
        let mut keyframes = BTreeMap::new();
        for s in &segments {
            keyframes.insert((s.camera.clone(), s.start_us), self.keyframes(&s.camera, s.start_us)?);
        }
        Ok(IndexDump { segments, keyframes })
    }
}

/// What sled's error says when another handle holds the index's file lock.
const LOCKED: &str = "could not acquire lock";

/// Opens the sled index, waiting up to 5 s for a lock held by a handle that is going
/// away (sled's flusher thread lets go a moment after the `Db` is dropped).
fn open_sled(path: &Path) -> Result<sled::Db, String> {
    let config = sled::Config::new()
        .path(path)
        .cache_capacity(CACHE_BYTES)
        .flush_every_ms(Some(500));
    let mut waited = 0;
    loop {
        // sled has been seen to panic on some damaged files; a damaged index is rebuilt,
        // so treat a panic like an error.
        let reason = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| config.open())) {
            Ok(Ok(db)) => return Ok(db),
            Ok(Err(e)) => e.to_string(),
            Err(_) => return Err("sled panicked while opening it".into()),
        };
        if !reason.contains(LOCKED) || waited >= 50 {
            return Err(reason);
        }
        waited += 1;
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[cfg(test)]
mod tests;
