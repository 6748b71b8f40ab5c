//! Index and files brought back in line: [`Index::check`] (after an unclean shutdown)
//! compares the index with the segment files and repairs the difference; missing files
//! drop out, unindexed or changed files are scanned, unsealed segments (their writer died)
//! get their torn tail cut and a seal, unreadable files are quarantined, never deleted.
//! [`Index::rebuild_from_segments`] does the same from an empty index.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{Index, IndexError};
use crate::record::segment::{
    recover_segment, valid_camera_id, Recovery, SegmentError, SegmentSummary, SEGMENT_EXT, TMP_EXT,
};

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

impl Index {
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
}
