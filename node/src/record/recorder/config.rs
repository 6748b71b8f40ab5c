//! How the recorder records: [`RecorderConfig`], its defaults (each says why) and the
//! ranges it must stay in.

use std::time::Duration;

use super::{CameraPolicy, RecordError};
use crate::record::segment::MAX_RECORD_LEN;

/// How the recorder records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecorderConfig {
    /// Roll to a new segment at the first keyframe after this much video.
    pub segment_duration: Duration,
    /// Every frame is durable (fsynced) at most this long after it was written.
    pub fsync_interval: Duration,
    /// Frames waiting for the writer thread, all cameras together.
    pub queue_frames: usize,
    /// Payload bytes waiting for the writer thread.
    pub queue_bytes: usize,
    /// Roll a segment that grows past this many bytes even without a keyframe.
    pub max_segment_bytes: u64,
    /// Retention by age (`None`: keep forever, or until the quota needs the space).
    pub max_age: Option<Duration>,
    /// Retention by size of all recordings (`None`: no quota; a full disk still frees
    /// the oldest).
    pub quota_bytes: Option<u64>,
    /// Per-camera retention (own maximum age, own share of the disk).
    pub cameras: Vec<CameraPolicy>,
    /// How often retention runs (it also runs at once when the disk is full).
    pub retention_interval: Duration,
    /// On a full disk, free this much beyond the write that failed, so the next writes
    /// do not each trigger a deletion.
    pub disk_full_headroom: u64,
    /// Test aid: behave as if the disk held only this many bytes of recordings (writes
    /// past it fail with "no space left on device"). `None` in production.
    pub simulated_capacity: Option<u64>,
}

impl Default for RecorderConfig {
    fn default() -> Self {
        RecorderConfig {
            segment_duration: Duration::from_secs(300),
            fsync_interval: Duration::from_secs(1),
            // 1024 frames is ~2 s of 16 cameras at 30 fps: a writer stalled longer than
            // that is losing frames anyway.
            queue_frames: 1024,
            // 64 MiB: 2 s of 16 cameras at 16 Mbit/s.
            queue_bytes: 64 << 20,
            max_segment_bytes: 1 << 30,
            max_age: None,
            quota_bytes: None,
            cameras: Vec::new(),
            retention_interval: Duration::from_secs(30),
            // 256 MiB: a minute of 16 cameras at 2 Mbit/s per deletion round.
            disk_full_headroom: 256 << 20,
            simulated_capacity: None,
        }
    }
}

impl RecorderConfig {
    /// Checks the values for sense.
    pub fn validate(&self) -> Result<(), RecordError> {
        let bad = |what: &str| Err(RecordError::InvalidConfig(what.to_owned()));
        if self.segment_duration < Duration::from_secs(1) || self.segment_duration > Duration::from_secs(3600) {
            return bad("segment_duration must be between 1 s and 1 h");
        }
        if self.fsync_interval < Duration::from_millis(10) || self.fsync_interval > Duration::from_secs(60) {
            return bad("fsync_interval must be between 10 ms and 60 s");
        }
        if self.queue_frames < 2 || self.queue_frames > 1 << 20 {
            return bad("queue_frames must be between 2 and 1048576");
        }
        if self.queue_bytes < MAX_RECORD_LEN as usize / 4 || self.queue_bytes > 4 << 30 {
            return bad("queue_bytes must be between 4 MiB and 4 GiB");
        }
        if self.max_segment_bytes < 1 << 20 {
            return bad("max_segment_bytes must be at least 1 MiB");
        }
        if self.retention_interval < Duration::from_millis(10) {
            return bad("retention_interval must be at least 10 ms");
        }
        Ok(())
    }
}
