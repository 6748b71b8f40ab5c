//! The recorder's counters: [`RecorderStats`] as callers read them, and the atomics the
//! handle and the writer thread share (queue reservations, written, dropped, lost,
//! retention and disk-full events, the last error).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

/// Counters, for metrics and `mesh nvr status`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecorderStats {
    pub frames_written: u64,
    pub bytes_written: u64,
    /// Dropped because the queue was full, or waiting for a keyframe after such a drop.
    pub frames_dropped: u64,
    /// Could not be written even after retention freed what it could (disk full of
    /// locked evidence) or because of an IO error.
    pub frames_lost: u64,
    pub segments_created: u64,
    pub segments_deleted: u64,
    pub bytes_deleted: u64,
    pub syncs: u64,
    pub disk_full_events: u64,
    pub errors: u64,
    /// Bytes of all recordings, as the writer counts them.
    pub recorded_bytes: u64,
    /// Non-zero: the quota is exceeded by this many bytes of locked evidence.
    pub quota_exceeded_by_locked: u64,
    pub last_error: Option<String>,
}

#[derive(Debug, Default)]
pub(super) struct Shared {
    pub(super) queued_frames: AtomicUsize,
    pub(super) queued_bytes: AtomicUsize,
    pub(super) frames_written: AtomicU64,
    pub(super) bytes_written: AtomicU64,
    pub(super) frames_dropped: AtomicU64,
    pub(super) frames_lost: AtomicU64,
    pub(super) segments_created: AtomicU64,
    pub(super) segments_deleted: AtomicU64,
    pub(super) bytes_deleted: AtomicU64,
    pub(super) syncs: AtomicU64,
    pub(super) disk_full_events: AtomicU64,
    pub(super) errors: AtomicU64,
    pub(super) recorded_bytes: AtomicU64,
    pub(super) quota_exceeded_by_locked: AtomicU64,
    pub(super) last_error: Mutex<Option<String>>,
}

impl Shared {
    pub(super) fn reserve(&self, bytes: usize, max_frames: usize, max_bytes: usize) -> bool {
        let frames_ok = self
            .queued_frames
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max_frames).then_some(n + 1)
            })
            .is_ok();
        if !frames_ok {
            return false;
        }
        let bytes_ok = self
            .queued_bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n.saturating_add(bytes) <= max_bytes).then_some(n + bytes)
            })
            .is_ok();
        if !bytes_ok {
            self.queued_frames.fetch_sub(1, Ordering::AcqRel);
        }
        bytes_ok
    }

    pub(super) fn release(&self, bytes: usize) {
        self.queued_frames.fetch_sub(1, Ordering::AcqRel);
        self.queued_bytes.fetch_sub(bytes, Ordering::AcqRel);
    }

    pub(super) fn error(&self, e: &dyn std::fmt::Display) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
    }

    /// The counters as they are now.
    pub(super) fn snapshot(&self) -> RecorderStats {
        let s = self;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        RecorderStats {
            frames_written: get(&s.frames_written),
            bytes_written: get(&s.bytes_written),
            frames_dropped: get(&s.frames_dropped),
            frames_lost: get(&s.frames_lost),
            segments_created: get(&s.segments_created),
            segments_deleted: get(&s.segments_deleted),
            bytes_deleted: get(&s.bytes_deleted),
            syncs: get(&s.syncs),
            disk_full_events: get(&s.disk_full_events),
            errors: get(&s.errors),
            recorded_bytes: get(&s.recorded_bytes),
            quota_exceeded_by_locked: get(&s.quota_exceeded_by_locked),
            last_error: s.last_error.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        }
    }
}
