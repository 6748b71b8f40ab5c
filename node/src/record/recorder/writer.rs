//! The writer thread: owns every camera's open segment, rolls, fsyncs on time, keeps the
//! index current, and runs retention (on a timer, and at once when the disk is full).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use camesh_proto::MediaFrame;
use tracing::{debug, info, warn};

use super::{Cmd, Dropped, RecorderConfig, RetentionReport, Shared, MAX_KEYS_PER_CAMERA};
use crate::clock::now_unix_us;
use crate::media::{AudioParams, CodecParams};
use crate::record::index::{Index, IndexError};
use crate::record::retention::{self, LockedRange, Policy, SegmentInfo};
use crate::record::segment::{
    FrameRecord, Record, SegmentError, SegmentHeader, SegmentWriter, RECORD_OVERHEAD, VERSION,
};

#[derive(Debug)]
struct Cam {
    seg: Option<SegmentWriter>,
    opened: Instant,
    /// The codec frames have from now on, and the one in the open segment's header.
    codec: Option<CodecParams>,
    seg_codec: Option<CodecParams>,
    /// The same for the audio track.
    audio: Option<AudioParams>,
    seg_audio: Option<AudioParams>,
    keys: BTreeMap<u64, Bytes>,
    /// Epochs whose key is already in the open segment.
    seg_epochs: HashSet<u64>,
    /// The start of the newest segment of this camera (new ones start later).
    last_start: i64,
    /// Records in the open segment when its summary was last put in the index.
    indexed_records: u64,
    /// A frame could not be written: the ones after it are useless until a keyframe.
    awaiting_keyframe: bool,
}

#[derive(Debug)]
pub(super) struct Writer {
    index: Index,
    config: RecorderConfig,
    shared: Arc<Shared>,
    cams: HashMap<String, Cam>,
    /// Something written is not fsynced yet; sync by then.
    sync_due: Option<Instant>,
    next_retention: Instant,
    last_warn: Option<Instant>,
}

/// Encoded length of a record, for the simulated disk (approximate is fine).
fn record_len(rec: &Record) -> u64 {
    let payload = match rec {
        Record::Frame(f) => 45 + f.payload.len(),
        Record::Key { key, .. } => 8 + key.len(),
        Record::Gap { reason, .. } => 16 + reason.len(),
        Record::Codec(c) => 32 + c.sps.len() + c.pps.len(),
        Record::Seal => 0,
    };
    payload as u64 + RECORD_OVERHEAD
}

fn disk_full_error(path: &Path) -> SegmentError {
    SegmentError::Io {
        path: path.to_owned(),
        op: "append a record",
        source: std::io::Error::from(std::io::ErrorKind::StorageFull),
    }
}

impl Writer {
    pub(super) fn new(index: Index, config: RecorderConfig, shared: Arc<Shared>) -> Self {
        Writer {
            index,
            config,
            shared,
            cams: HashMap::new(),
            sync_due: None,
            // Retention runs once right at the start.
            next_retention: Instant::now(),
            last_warn: None,
        }
    }

    pub(super) fn run(mut self, rx: Receiver<Cmd>) {
        loop {
            let now = Instant::now();
            let deadline = match self.sync_due {
                Some(t) => t.min(self.next_retention),
                None => self.next_retention,
            };
            let cmd = match rx.recv_timeout(deadline.saturating_duration_since(now)) {
                Ok(cmd) => Some(cmd),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => {
                    if let Err(e) = self.close_all() {
                        warn!(error = %e, "recorder: closing after the handle was dropped failed");
                    }
                    return;
                }
            };
            match cmd {
                None => {}
                Some(Cmd::Frame {
                    camera,
                    frame,
                    bytes,
                    dropped_before,
                }) => {
                    self.shared.release(bytes);
                    self.on_frame(&camera, &frame, dropped_before);
                }
                Some(Cmd::Codec { camera, params }) => self.cam(&camera).codec = Some(params),
                Some(Cmd::Audio { camera, params }) => self.cam(&camera).audio = params,
                Some(Cmd::Key { camera, epoch, key }) => self.on_key(&camera, epoch, key),
                Some(Cmd::Gap {
                    camera,
                    from_us,
                    to_us,
                    reason,
                }) => {
                    let rec = Record::Gap { from_us, to_us, reason };
                    self.append_to(&camera, &rec, from_us);
                }
                Some(Cmd::NewSegment { camera, start_us }) => self.on_new_segment(&camera, start_us),
                Some(Cmd::Policies(cameras)) => self.config.cameras = cameras,
                Some(Cmd::Flush(reply)) => {
                    self.sync_all();
                    let r = self.index.flush().map_err(|e| e.to_string());
                    let _ = reply.send(r);
                }
                Some(Cmd::Retention(reply)) => {
                    let r = self.retention(0).map_err(|e| e.to_string());
                    let _ = reply.send(r);
                }
                Some(Cmd::Close(reply)) => {
                    let r = self.close_all().map_err(|e| e.to_string());
                    let _ = reply.send(r);
                    return;
                }
                #[cfg(test)]
                Some(Cmd::Crash(reply)) => {
                    let _ = reply.send(Ok(()));
                    return;
                }
            }
            let now = Instant::now();
            if self.sync_due.is_some_and(|t| now >= t) {
                self.sync_all();
            }
            if now >= self.next_retention {
                if let Err(e) = self.retention(0) {
                    self.fail("retention", &e);
                }
                self.next_retention = Instant::now() + self.config.retention_interval;
            }
        }
    }

    fn fail(&mut self, what: &str, e: &dyn std::fmt::Display) {
        self.shared.error(&format!("{what}: {e}"));
        // One warning per 5 s at most: a failing disk must not flood the log.
        let now = Instant::now();
        if self
            .last_warn
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(5))
        {
            self.last_warn = Some(now);
            warn!(error = %e, "recorder: {what} failed");
        } else {
            debug!(error = %e, "recorder: {what} failed");
        }
    }

    fn cam(&mut self, camera: &str) -> &mut Cam {
        if !self.cams.contains_key(camera) {
            let last_start = match self.index.segments_before(camera, i64::MAX, 1) {
                Ok(v) => v.first().map_or(i64::MIN, |s| s.start_us),
                Err(_) => i64::MIN,
            };
            self.cams.insert(
                camera.to_owned(),
                Cam {
                    seg: None,
                    opened: Instant::now(),
                    codec: None,
                    seg_codec: None,
                    audio: None,
                    seg_audio: None,
                    keys: BTreeMap::new(),
                    seg_epochs: HashSet::new(),
                    last_start,
                    indexed_records: 0,
                    awaiting_keyframe: false,
                },
            );
        }
        self.cams
            .get_mut(camera)
            .unwrap_or_else(|| unreachable!("inserted just above"))
    }

    fn on_frame(&mut self, camera: &str, frame: &MediaFrame, dropped_before: Option<Dropped>) {
        let rec = FrameRecord::from_media(frame);
        let duration_us = i64::try_from(self.config.segment_duration.as_micros()).unwrap_or(i64::MAX);
        let max_bytes = self.config.max_segment_bytes;
        let duration = self.config.segment_duration;
        let cam = self.cam(camera);
        if cam.awaiting_keyframe && !rec.keyframe {
            self.shared.frames_lost.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let roll = cam.seg.as_ref().is_some_and(|seg| {
            let age_by_capture = seg
                .summary()
                .first_us
                .map_or(0, |first| rec.capture_unix_us.saturating_sub(first));
            let wall = cam.opened.elapsed();
            // The camera's clock stepped back: the footage goes on in a new segment (its
            // key stays after this one's), so each segment runs forward in time.
            let clock_back = seg.summary().last_us.is_some_and(|l| rec.capture_unix_us < l);
            seg.is_broken()
                || clock_back
                || seg.len() >= max_bytes
                || (cam.codec.is_some() && cam.codec != cam.seg_codec)
                || (rec.keyframe && (age_by_capture >= duration_us || wall >= duration || cam.audio != cam.seg_audio))
                || wall >= duration * 2
        });
        if roll {
            self.seal(camera);
        }
        if let Some(d) = dropped_before {
            let gap = Record::Gap {
                from_us: d.first_us,
                to_us: rec.capture_unix_us,
                reason: format!("{} frames dropped: the recorder's queue was full", d.count),
            };
            self.append_to(camera, &gap, rec.capture_unix_us);
        }
        let epoch = rec.key_epoch;
        let cam = self.cam(camera);
        let key = if cam.seg_epochs.contains(&epoch) {
            None
        } else {
            cam.keys.get(&epoch).cloned()
        };
        if let Some(key) = key {
            // The segment may not exist yet: append_to opens it, then the key goes first.
            if self.append_to(camera, &Record::Key { epoch, key }, rec.capture_unix_us) {
                self.cam(camera).seg_epochs.insert(epoch);
            }
        }
        let bytes = rec.payload.len() as u64;
        let capture = rec.capture_unix_us;
        let written = self.append_to(camera, &Record::Frame(rec), capture);
        self.cam(camera).awaiting_keyframe = !written;
        if written {
            self.shared.frames_written.fetch_add(1, Ordering::Relaxed);
            self.shared.bytes_written.fetch_add(bytes, Ordering::Relaxed);
        } else {
            self.shared.frames_lost.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn on_new_segment(&mut self, camera: &str, start_us: i64) {
        self.seal(camera);
        let before = match self.index.segments_before(camera, start_us, 1) {
            Ok(v) => v.first().map_or(i64::MIN, |s| s.start_us),
            Err(_) => return,
        };
        // The next segment is named after its first record, or just after a segment
        // starting at or before it (names stay unique).
        self.cam(camera).last_start = before;
    }

    fn on_key(&mut self, camera: &str, epoch: u64, key: Bytes) {
        let cam = self.cam(camera);
        cam.keys.insert(epoch, key.clone());
        while cam.keys.len() > MAX_KEYS_PER_CAMERA {
            cam.keys.pop_first();
        }
        // Durable at once if a segment is open; otherwise written before the first frame.
        if cam.seg.is_some() && self.append_to(camera, &Record::Key { epoch, key }, now_unix_us()) {
            self.cam(camera).seg_epochs.insert(epoch);
        }
    }

    /// Appends to the camera's open segment (opening one if needed, starting at
    /// `start_hint_us`). On a full disk, runs retention and retries. Returns whether the
    /// record was written.
    fn append_to(&mut self, camera: &str, rec: &Record, start_hint_us: i64) -> bool {
        for attempt in 0..3 {
            let result = self.try_append(camera, rec, start_hint_us);
            match result {
                Ok(()) => return true,
                Err(e) if e.is_disk_full() && attempt < 2 => {
                    self.shared.disk_full_events.fetch_add(1, Ordering::Relaxed);
                    let need = record_len(rec) + self.config.disk_full_headroom;
                    match self.retention(need) {
                        Ok(r) if r.freed_bytes > 0 => {
                            info!(
                                freed = r.freed_bytes,
                                deleted = r.deleted.len(),
                                "recorder: disk full, deleted the oldest recordings"
                            );
                        }
                        Ok(_) => {
                            self.fail("writing (disk full, nothing left that retention may delete)", &e);
                            return false;
                        }
                        Err(re) => {
                            self.fail("retention on a full disk", &re);
                            return false;
                        }
                    }
                }
                Err(e) => {
                    self.fail("writing a segment", &e);
                    // A writer that could not roll back is useless; the next write opens
                    // a new segment.
                    if self
                        .cams
                        .get(camera)
                        .and_then(|c| c.seg.as_ref())
                        .is_some_and(SegmentWriter::is_broken)
                    {
                        self.seal(camera);
                    }
                    return false;
                }
            }
        }
        false
    }

    fn recorded_bytes(&self) -> u64 {
        self.shared.recorded_bytes.load(Ordering::Relaxed)
    }

    fn try_append(&mut self, camera: &str, rec: &Record, start_hint_us: i64) -> Result<(), SegmentError> {
        let len = record_len(rec);
        if self.cam(camera).seg.is_none() {
            self.open_segment(camera, start_hint_us)?;
        }
        let capacity = self.config.simulated_capacity;
        let used = self.recorded_bytes();
        let cam = self.cam(camera);
        let Some(seg) = cam.seg.as_mut() else {
            return Err(SegmentError::InvalidCamera(camera.to_owned()));
        };
        if capacity.is_some_and(|cap| used + len > cap) {
            return Err(disk_full_error(seg.path()));
        }
        let appended = seg.append(rec)?;
        let start_us = seg.summary().start_us;
        self.shared.recorded_bytes.fetch_add(appended.len, Ordering::Relaxed);
        self.sync_due.get_or_insert(Instant::now() + self.config.fsync_interval);
        if let Some(kf) = appended.keyframe {
            if let Err(e) = self.index.add_keyframe(camera, start_us, kf) {
                self.fail("indexing a keyframe", &e);
            }
        }
        Ok(())
    }

    fn open_segment(&mut self, camera: &str, start_hint_us: i64) -> Result<(), SegmentError> {
        let root = self.index.segments_dir().to_owned();
        let capacity = self.config.simulated_capacity;
        let used = self.recorded_bytes();
        let cam = self.cam(camera);
        let start_us = start_hint_us.max(cam.last_start.saturating_add(1));
        let header = SegmentHeader {
            version: VERSION,
            camera: camera.to_owned(),
            start_us,
            created_us: now_unix_us(),
            codec: cam.codec.clone(),
            audio: cam.audio.clone(),
        };
        if capacity.is_some_and(|cap| used + 512 > cap) {
            return Err(disk_full_error(&root.join(camera)));
        }
        let seg = SegmentWriter::create(&root, &header)?;
        cam.last_start = start_us;
        cam.seg_codec = header.codec;
        cam.seg_audio = header.audio;
        cam.seg_epochs.clear();
        cam.opened = Instant::now();
        cam.indexed_records = 0;
        let summary = seg.summary().clone();
        let len = seg.len();
        cam.seg = Some(seg);
        self.shared.recorded_bytes.fetch_add(len, Ordering::Relaxed);
        self.shared.segments_created.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = self.index.put_segment(&summary) {
            self.fail("indexing a new segment", &e);
        }
        debug!(camera, file = %summary.file, "recorder: new segment");
        Ok(())
    }

    /// Seals the camera's open segment (if any) and indexes its final summary.
    fn seal(&mut self, camera: &str) {
        let Some(cam) = self.cams.get_mut(camera) else { return };
        let Some(seg) = cam.seg.take() else { return };
        cam.seg_epochs.clear();
        let before = seg.len();
        let last = seg.summary().clone();
        let summary = match seg.seal() {
            Ok(s) => {
                self.shared
                    .recorded_bytes
                    .fetch_add(s.bytes.saturating_sub(before), Ordering::Relaxed);
                s
            }
            Err(e) => {
                // Left unsealed on disk; the next check after a restart seals it.
                self.fail("sealing a segment", &e);
                last
            }
        };
        if let Err(e) = self.index.put_segment(&summary) {
            self.fail("indexing a sealed segment", &e);
        }
    }

    fn sync_all(&mut self) {
        let mut failures = Vec::new();
        let mut summaries = Vec::new();
        for (camera, cam) in &mut self.cams {
            let Some(seg) = cam.seg.as_mut() else { continue };
            if let Err(e) = seg.sync() {
                failures.push(e);
            }
            if seg.summary().records != cam.indexed_records {
                cam.indexed_records = seg.summary().records;
                summaries.push((camera.clone(), seg.summary().clone()));
            }
        }
        for e in failures {
            self.fail("fsync", &e);
        }
        for (_, s) in summaries {
            if let Err(e) = self.index.put_segment(&s) {
                self.fail("indexing a segment", &e);
            }
        }
        self.sync_due = None;
        self.shared.syncs.fetch_add(1, Ordering::Relaxed);
    }

    fn close_all(&mut self) -> Result<(), IndexError> {
        let cams: Vec<String> = self.cams.keys().cloned().collect();
        for camera in cams {
            self.seal(&camera);
        }
        self.sync_due = None;
        self.index.mark_clean()
    }

    /// Runs the retention policy; `must_free` > 0 when the disk is full.
    fn retention(&mut self, must_free: u64) -> Result<RetentionReport, IndexError> {
        let index = self.index.clone();
        let (guard, locks) = index.locks_for_retention()?;
        let locks: Vec<LockedRange> = locks.iter().map(LockedRange::from).collect();
        let mut segments = index.all_segments()?;
        // The index lags the open segments by up to one fsync interval: use the live view.
        let open: HashMap<(&str, i64), &SegmentWriter> = self
            .cams
            .iter()
            .filter_map(|(c, cam)| cam.seg.as_ref().map(|s| ((c.as_str(), s.summary().start_us), s)))
            .collect();
        let infos: Vec<SegmentInfo> = segments
            .iter_mut()
            .map(|s| {
                let live = open.get(&(s.camera.as_str(), s.start_us)).copied();
                let is_open = live.is_some();
                if let Some(w) = live {
                    *s = w.summary().clone();
                }
                let (from_us, to_us) = s.span();
                SegmentInfo {
                    camera: s.camera.clone(),
                    start_us: s.start_us,
                    from_us,
                    to_us,
                    bytes: s.bytes,
                    open: is_open,
                }
            })
            .collect();
        let policy = Policy {
            max_age: self.config.max_age,
            quota_bytes: self.config.quota_bytes,
            cameras: self.config.cameras.clone(),
        };
        let plan = retention::plan(&infos, &locks, now_unix_us(), &policy, must_free);
        let mut report = RetentionReport {
            kept_bytes: plan.kept_bytes,
            over_quota_by: plan.over_target_by,
            exceeded_by_locked: plan.exceeded_by_locked,
            ..Default::default()
        };
        for d in &plan.delete {
            let s = &segments[d.index];
            let path = index.segment_path(s);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    self.shared
                        .error(&format!("retention: cannot delete {}: {e}", path.display()));
                    continue;
                }
            }
            index.remove_segment(&s.camera, s.start_us)?;
            report.deleted.push(s.file.clone());
            report.freed_bytes += s.bytes;
            self.shared.segments_deleted.fetch_add(1, Ordering::Relaxed);
            self.shared.bytes_deleted.fetch_add(s.bytes, Ordering::Relaxed);
            let _ = self
                .shared
                .recorded_bytes
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                    Some(v.saturating_sub(s.bytes))
                });
            debug!(file = %s.file, reason = ?d.reason, "retention: deleted a segment");
        }
        drop(guard);
        let exceeded = if plan.exceeded_by_locked {
            plan.over_target_by
        } else {
            0
        };
        let was = self.shared.quota_exceeded_by_locked.swap(exceeded, Ordering::Relaxed);
        if exceeded > 0 && was == 0 {
            warn!(
                over_by = exceeded,
                locked = plan.locked_bytes,
                "recordings exceed the quota because of locked evidence; recording continues"
            );
        }
        Ok(report)
    }
}
