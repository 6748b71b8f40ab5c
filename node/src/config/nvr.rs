//! The `[nvr]` section of a node's config: where recordings go, how durable they are,
//! export limits, where the storage key lives, and which cameras to record.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The NVR role: where recordings go, how durable they are, and what to record with
/// which retention.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NvrSection {
    /// Folder of the recordings; empty: `<data-dir>/recordings`.
    pub recordings_dir: PathBuf,
    /// Roll to a new segment file at the first keyframe after this many seconds.
    pub segment_duration_s: u64,
    /// Every recorded frame is on disk (fsynced) at most this long after it arrived.
    pub fsync_interval_ms: u64,
    /// Disk quota of all recordings in bytes (0: none; a full disk still frees the oldest).
    pub quota_bytes: u64,
    /// Default maximum age of recordings in seconds (0: keep until the quota needs room).
    pub max_age_s: u64,
    /// Seconds between retention runs.
    pub retention_interval_s: u64,
    /// Longest range one export covers, in seconds.
    pub export_max_range_s: u64,
    /// Exports this NVR runs at once (each peer one at a time).
    pub exports_at_once: usize,
    /// Where the storage key is: empty (`<data-dir>/nvr-storage.key`, beside the
    /// recordings), `file:<path>`, `env:<VAR>` or `credential:<name>` (systemd).
    pub storage_key: String,
    /// Cameras to record, by id or tag, each with its own retention.
    #[serde(rename = "record", skip_serializing_if = "Vec::is_empty")]
    pub records: Vec<RecordRule>,
}

impl Default for NvrSection {
    fn default() -> Self {
        Self {
            recordings_dir: PathBuf::new(),
            segment_duration_s: 300,
            fsync_interval_ms: 1000,
            quota_bytes: 0,
            max_age_s: 0,
            retention_interval_s: 30,
            export_max_range_s: 3600,
            exports_at_once: 2,
            storage_key: String::new(),
            records: Vec::new(),
        }
    }
}

impl NvrSection {
    pub(super) fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

/// One `[[nvr.record]]` entry: a camera id (`*`: every camera) or a tag.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecordRule {
    pub camera: String,
    pub tag: String,
    /// Maximum age in seconds (0: the section's `max_age_s`).
    pub max_age_s: u64,
    /// This rule's cameras may hold at most this share (0-1) of `quota_bytes`
    /// (0: no own limit, only the shared quota).
    pub quota_share: f64,
}

impl Default for RecordRule {
    fn default() -> Self {
        Self {
            camera: String::new(),
            tag: String::new(),
            max_age_s: 0,
            quota_share: 0.0,
        }
    }
}
