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
//! Keys sort by camera, then time: `cam_len:u8 | camera | start:u64be` where the signed
//! time is mapped to `u64` with its sign bit flipped so negative times sort first.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

use super::segment::{
    recover_segment, valid_camera_id, KeyframeRef, Recovery, SegmentError, SegmentSummary, SEGMENT_EXT, TMP_EXT,
};
use super::{now_unix_us, INDEX_DIR, LOCKS_FILE, SEGMENTS_DIR};

/// sled's page cache; the index is small (a few hundred bytes per segment).
const CACHE_BYTES: u64 = 32 << 20;
/// Largest `locks.json` read (a lock is ~150 bytes: this is ~100k locks).
const MAX_LOCKS_FILE: u64 = 16 << 20;

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
}

/// A time range of one camera that retention must never delete (evidence).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvidenceLock {
    pub id: u64,
    pub camera: String,
    pub from_us: i64,
    pub to_us: i64,
    /// Why (an incident number, who asked): for the audit trail.
    pub reason: String,
    pub created_us: i64,
}

#[derive(Debug, Serialize, Deserialize)]
struct LocksFile {
    version: u32,
    locks: Vec<EvidenceLock>,
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

/// What [`Index::check`] or [`Index::rebuild_from_segments`] found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// Segment files looked at (all of them: only those needing it were read in full).
    pub files: usize,
    /// Files read in full (new to the index, changed, or unsealed).
    pub scanned: usize,
    /// Unsealed segments (their writer died) cut back to their valid records and sealed,
    /// with the number of torn-tail bytes dropped.
    pub sealed: Vec<(String, u64)>,
    /// Index entries whose file is gone.
    pub removed: Vec<String>,
    /// Sealed segments with a bad record before the seal: kept as they are, indexed up to
    /// the bad record.
    pub corrupt: Vec<(String, u64, String)>,
    /// Files with an unreadable header: renamed to `*.bad`, never deleted.
    pub quarantined: Vec<(String, String)>,
    /// Leftover `.tmp` files from a segment creation a crash interrupted (header only).
    pub removed_tmp: usize,
    /// Files whose (camera, start) another file already has in the index.
    pub duplicates: Vec<String>,
}

impl CheckReport {
    /// Nothing was wrong.
    pub fn is_clean(&self) -> bool {
        self.sealed.is_empty()
            && self.removed.is_empty()
            && self.corrupt.is_empty()
            && self.quarantined.is_empty()
            && self.removed_tmp == 0
            && self.duplicates.is_empty()
    }
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

fn sortable(t: i64) -> u64 {
    (t as u64) ^ (1 << 63)
}

fn unsortable(v: u64) -> i64 {
    (v ^ (1 << 63)) as i64
}

fn camera_prefix(camera: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + camera.len() + 16);
    // Camera ids are validated to at most 64 bytes before they get here.
    k.push(camera.len() as u8);
    k.extend_from_slice(camera.as_bytes());
    k
}

fn segment_key(camera: &str, start_us: i64) -> Vec<u8> {
    let mut k = camera_prefix(camera);
    k.extend_from_slice(&sortable(start_us).to_be_bytes());
    k
}

fn keyframe_key(camera: &str, start_us: i64, offset: u64) -> Vec<u8> {
    let mut k = segment_key(camera, start_us);
    k.extend_from_slice(&offset.to_be_bytes());
    k
}

fn describe_key(key: &[u8]) -> String {
    let n = usize::from(key.first().copied().unwrap_or(0));
    let cam = key.get(1..1 + n).map(String::from_utf8_lossy).unwrap_or_default();
    let t = key
        .get(1 + n..9 + n)
        .and_then(|b| b.try_into().ok())
        .map(|b| unsortable(u64::from_be_bytes(b)));
    match t {
        Some(t) => format!("{cam}@{t}"),
        None => format!("{key:02x?}"),
    }
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

    // ----- check and rebuild ------------------------------------------------------------

    /// Throws away the segment index and recreates it from the segment files (repairing
    /// unsealed segments as [`Self::check`] does). Locks are kept.
    pub fn rebuild_from_segments(&self) -> Result<CheckReport, IndexError> {
        self.segments.clear().map_err(self.db_err("clear segments"))?;
        self.keyframes.clear().map_err(self.db_err("clear keyframes"))?;
        self.check()
    }

    /// Compares the index with the segment files and repairs both sides so they agree.
    /// Run it before a recorder writes (it seals unsealed segments).
    pub fn check(&self) -> Result<CheckReport, IndexError> {
        let mut report = CheckReport::default();
        let on_disk = self.list_files(&mut report)?;
        report.files = on_disk.len();
        let indexed = self.all_segments()?;
        let mut by_file: BTreeMap<String, SegmentSummary> = BTreeMap::new();
        for s in indexed {
            if !on_disk.contains_key(&s.file) {
                self.remove_segment(&s.camera, s.start_us)?;
                report.removed.push(s.file.clone());
                continue;
            }
            by_file.insert(s.file.clone(), s);
        }
        for (rel, (path, len)) in &on_disk {
            let ok = by_file
                .get(rel)
                .is_some_and(|s| s.sealed && s.bytes == *len && s.corrupt_at.is_none());
            if ok {
                continue;
            }
            if let Some(old) = by_file.remove(rel) {
                self.remove_segment(&old.camera, old.start_us)?;
            }
            report.scanned += 1;
            match recover_segment(path, rel.clone()) {
                Ok((scan, recovery)) => {
                    match recovery {
                        Recovery::Intact => {}
                        Recovery::Sealed { dropped } => report.sealed.push((rel.clone(), dropped)),
                        Recovery::Corrupt { offset, reason } => report.corrupt.push((rel.clone(), offset, reason)),
                    }
                    let s = &scan.summary;
                    if let Some(existing) = self.segment(&s.camera, s.start_us)? {
                        if existing.file != s.file {
                            report.duplicates.push(rel.clone());
                            continue;
                        }
                    }
                    self.put_segment(s)?;
                    for kf in &scan.keyframes {
                        self.add_keyframe(&s.camera, s.start_us, *kf)?;
                    }
                }
                Err(
                    e @ (SegmentError::BadMagic { .. }
                    | SegmentError::BadHeader { .. }
                    | SegmentError::TruncatedHeader { .. }
                    | SegmentError::UnsupportedVersion { .. }),
                ) => {
                    let bad = path.with_extension(format!("{SEGMENT_EXT}.bad"));
                    std::fs::rename(path, &bad).map_err(|source| IndexError::Io {
                        path: path.clone(),
                        op: "quarantine an unreadable segment",
                        source,
                    })?;
                    report.quarantined.push((rel.clone(), e.to_string()));
                }
                Err(e) => return Err(e.into()),
            }
        }
        self.flush()?;
        Ok(report)
    }

    /// `<camera>/<name>.cseg` → (path, length) for every segment file; removes `.tmp`
    /// leftovers.
    fn list_files(&self, report: &mut CheckReport) -> Result<BTreeMap<String, (PathBuf, u64)>, IndexError> {
        let io = |path: &Path, op: &'static str| {
            let path = path.to_owned();
            move |source| IndexError::Io { path, op, source }
        };
        let mut out = BTreeMap::new();
        let cams = std::fs::read_dir(&self.segments_dir).map_err(io(&self.segments_dir, "list the segments folder"))?;
        for cam in cams {
            let cam = cam.map_err(io(&self.segments_dir, "list the segments folder"))?;
            let cam_name = cam.file_name().to_string_lossy().into_owned();
            if !cam.file_type().map(|t| t.is_dir()).unwrap_or(false) || !valid_camera_id(&cam_name) {
                continue;
            }
            let dir = cam.path();
            for f in std::fs::read_dir(&dir).map_err(io(&dir, "list a camera folder"))? {
                let f = f.map_err(io(&dir, "list a camera folder"))?;
                let path = f.path();
                let ext = path.extension().and_then(|e| e.to_str());
                let meta = f.metadata().map_err(io(&path, "read a segment's size"))?;
                if !meta.is_file() {
                    continue;
                }
                if ext == Some(TMP_EXT) {
                    // A creation interrupted before the rename: a header and nothing else.
                    std::fs::remove_file(&path).map_err(io(&path, "remove a leftover temp file"))?;
                    report.removed_tmp += 1;
                } else if ext == Some(SEGMENT_EXT) {
                    let rel = format!("{cam_name}/{}", f.file_name().to_string_lossy());
                    out.insert(rel, (path, meta.len()));
                }
            }
        }
        Ok(out)
    }

    // ----- evidence locks ---------------------------------------------------------------

    fn locks_path(&self) -> PathBuf {
        self.root.join(LOCKS_FILE)
    }

    fn sled_locks(&self) -> Result<Vec<EvidenceLock>, IndexError> {
        self.locks
            .iter()
            .map(|kv| {
                let (k, v) = kv.map_err(self.db_err("read locks"))?;
                serde_json::from_slice(&v).map_err(|e| IndexError::Corrupt {
                    key: format!("lock {k:02x?}"),
                    reason: e.to_string(),
                })
            })
            .collect()
    }

    /// `locks.json` is the truth; sled mirrors it. A missing file is (re)written from
    /// sled; an unreadable one is kept aside and sled's copy used.
    fn load_locks(&self, report: &mut OpenReport) -> Result<(), IndexError> {
        let path = self.locks_path();
        let from_file = match read_bounded(&path) {
            Ok(Some(bytes)) => match serde_json::from_slice::<LocksFile>(&bytes) {
                Ok(f) => Some(f.locks),
                Err(e) => {
                    let aside = path.with_extension(format!("json.bad-{}", now_unix_us()));
                    let _ = std::fs::rename(&path, &aside);
                    report.warnings.push(format!(
                        "evidence locks file {} is unreadable ({e}); kept as {} and the index's copy used",
                        path.display(),
                        aside.display()
                    ));
                    None
                }
            },
            Ok(None) => None,
            Err(e) => return Err(e),
        };
        match from_file {
            Some(locks) => self.mirror_locks(&locks),
            None => {
                let locks = self.sled_locks()?;
                write_locks_file(&path, &locks)
            }
        }
    }

    fn mirror_locks(&self, locks: &[EvidenceLock]) -> Result<(), IndexError> {
        self.locks.clear().map_err(self.db_err("clear locks"))?;
        for l in locks {
            let v = serde_json::to_vec(l).map_err(|e| IndexError::Corrupt {
                key: format!("lock {}", l.id),
                reason: e.to_string(),
            })?;
            self.locks
                .insert(l.id.to_be_bytes(), v)
                .map_err(self.db_err("write a lock"))?;
        }
        Ok(())
    }

    /// The evidence locks.
    pub fn locks(&self) -> Result<Vec<EvidenceLock>, IndexError> {
        let _g = self.guard();
        self.sled_locks()
    }

    fn guard(&self) -> MutexGuard<'_, ()> {
        self.locks_guard.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The locks, held so none is added or removed until the guard drops (retention
    /// plans and deletes under it).
    pub fn locks_for_retention(&self) -> Result<(MutexGuard<'_, ()>, Vec<EvidenceLock>), IndexError> {
        let g = self.guard();
        Ok((g, self.sled_locks()?))
    }

    /// Locks `[from_us, to_us]` of a camera against retention. Durable when this returns.
    pub fn add_lock(&self, camera: &str, from_us: i64, to_us: i64, reason: &str) -> Result<EvidenceLock, IndexError> {
        check_camera(camera)?;
        if from_us > to_us {
            return Err(IndexError::InvalidRange { from_us, to_us });
        }
        let _g = self.guard();
        let mut locks = self.sled_locks()?;
        let lock = EvidenceLock {
            id: locks.iter().map(|l| l.id).max().unwrap_or(0) + 1,
            camera: camera.to_owned(),
            from_us,
            to_us,
            reason: reason.to_owned(),
            created_us: now_unix_us(),
        };
        locks.push(lock.clone());
        write_locks_file(&self.locks_path(), &locks)?;
        self.mirror_locks(&locks)?;
        self.flush()?;
        Ok(lock)
    }

    /// Removes a lock; `false` if there was none with that id.
    pub fn remove_lock(&self, id: u64) -> Result<bool, IndexError> {
        let _g = self.guard();
        let mut locks = self.sled_locks()?;
        let before = locks.len();
        locks.retain(|l| l.id != id);
        if locks.len() == before {
            return Ok(false);
        }
        write_locks_file(&self.locks_path(), &locks)?;
        self.mirror_locks(&locks)?;
        self.flush()?;
        Ok(true)
    }
}

fn open_sled(path: &Path) -> Result<sled::Db, String> {
    let config = sled::Config::new()
        .path(path)
        .cache_capacity(CACHE_BYTES)
        .flush_every_ms(Some(500));
    // sled has been seen to panic on some damaged files; a damaged index is rebuilt, so
    // treat a panic like an error.
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| config.open())) {
        Ok(Ok(db)) => Ok(db),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("sled panicked while opening it".into()),
    }
}

fn read_bounded(path: &Path) -> Result<Option<Vec<u8>>, IndexError> {
    use std::io::Read;
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(IndexError::Io {
                path: path.to_owned(),
                op: "open",
                source,
            })
        }
    };
    let mut buf = Vec::new();
    file.take(MAX_LOCKS_FILE + 1)
        .read_to_end(&mut buf)
        .map_err(|source| IndexError::Io {
            path: path.to_owned(),
            op: "read",
            source,
        })?;
    if buf.len() as u64 > MAX_LOCKS_FILE {
        return Err(IndexError::Locks {
            path: path.to_owned(),
            reason: format!("larger than {MAX_LOCKS_FILE} bytes"),
        });
    }
    Ok(Some(buf))
}

/// Writes `locks.json` atomically: a temp file, fsync, rename, fsync of the folder.
fn write_locks_file(path: &Path, locks: &[EvidenceLock]) -> Result<(), IndexError> {
    use std::io::Write;
    let body = serde_json::to_vec_pretty(&LocksFile {
        version: 1,
        locks: locks.to_vec(),
    })
    .map_err(|e| IndexError::Locks {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    let tmp = path.with_extension("json.tmp");
    let io = |op: &'static str| {
        let path = tmp.clone();
        move |source| IndexError::Io { path, op, source }
    };
    let mut f = std::fs::File::create(&tmp).map_err(io("create"))?;
    f.write_all(&body).map_err(io("write"))?;
    f.sync_all().map_err(io("fsync"))?;
    std::fs::rename(&tmp, path).map_err(io("rename"))?;
    if let Some(dir) = path.parent() {
        super::segment::sync_dir(dir)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
