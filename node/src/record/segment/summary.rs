//! What the index keeps about a segment: built by the same code while writing and while
//! scanning, so a rebuilt index equals the one kept live.

use serde::{Deserialize, Serialize};

use super::codec::truncate_str;
use super::{Record, SegmentHeader};

/// How far an unsealed segment may run past what its indexed summary says: the recorder
/// updates the summary of a segment it is writing at each fsync (1 s by default).
pub const UNSEALED_SLACK_US: i64 = 2_000_000;

/// Where a keyframe record starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyframeRef {
    pub offset: u64,
    pub capture_us: i64,
}

/// Where a key record starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRef {
    pub epoch: u64,
    pub offset: u64,
}

/// A gap marker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GapRef {
    pub from_us: i64,
    pub to_us: i64,
    pub reason: String,
}

/// Everything the index knows about one segment (keyframes aside): a pure function of
/// the file's valid records.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentSummary {
    pub camera: String,
    pub start_us: i64,
    /// Path relative to the segments folder: `<camera>/<name>.cseg`.
    pub file: String,
    /// Length of the valid part of the file (header and whole records).
    pub bytes: u64,
    pub records: u64,
    pub frames: u64,
    pub keyframes: u64,
    /// Smallest and largest frame capture time.
    pub first_us: Option<i64>,
    pub last_us: Option<i64>,
    /// Ends with a seal record: closed cleanly, complete.
    pub sealed: bool,
    /// Key records (few: one per epoch used in the segment).
    pub keys: Vec<KeyRef>,
    /// Gap markers (bounded by [`SegmentSummary::MAX_GAPS`]).
    pub gaps: Vec<GapRef>,
    /// The codec changed inside the segment (export refuses to cross such a point).
    pub codec_changes: u64,
    /// For a sealed segment: offset of a record that failed its checks before the seal
    /// (disk corruption; the file is kept untouched as evidence).
    pub corrupt_at: Option<u64>,
}

impl SegmentSummary {
    /// Gap markers kept per segment; more are counted in the file but not indexed.
    pub const MAX_GAPS: usize = 256;
    /// Key references kept per segment.
    pub const MAX_KEYS: usize = 256;

    pub fn new(header: &SegmentHeader, file: String, header_len: u64) -> Self {
        SegmentSummary {
            camera: header.camera.clone(),
            start_us: header.start_us,
            file,
            bytes: header_len,
            records: 0,
            frames: 0,
            keyframes: 0,
            first_us: None,
            last_us: None,
            sealed: false,
            keys: Vec::new(),
            gaps: Vec::new(),
            codec_changes: 0,
            corrupt_at: None,
        }
    }

    /// Accounts for one valid record of `len` bytes at `offset`; returns the keyframe
    /// reference when the record is a keyframe.
    pub fn observe(&mut self, offset: u64, len: u64, rec: &Record) -> Option<KeyframeRef> {
        self.records += 1;
        self.bytes = offset + len;
        match rec {
            Record::Frame(f) => {
                self.frames += 1;
                let t = f.capture_unix_us;
                self.first_us = Some(self.first_us.map_or(t, |v| v.min(t)));
                self.last_us = Some(self.last_us.map_or(t, |v| v.max(t)));
                if f.keyframe {
                    self.keyframes += 1;
                    return Some(KeyframeRef { offset, capture_us: t });
                }
            }
            Record::Key { epoch, .. } => {
                if self.keys.len() < Self::MAX_KEYS {
                    self.keys.push(KeyRef { epoch: *epoch, offset });
                }
            }
            Record::Gap { from_us, to_us, reason } => {
                if self.gaps.len() < Self::MAX_GAPS {
                    self.gaps.push(GapRef {
                        from_us: *from_us,
                        to_us: *to_us,
                        reason: truncate_str(reason, 200).to_owned(),
                    });
                }
            }
            Record::Codec(_) => self.codec_changes += 1,
            Record::Seal => self.sealed = true,
        }
        None
    }

    /// The segment may hold something (a frame or a gap marker) at or after `t`.
    pub fn reaches(&self, t: i64) -> bool {
        let slack = if self.sealed { 0 } else { UNSEALED_SLACK_US };
        self.span().1.saturating_add(slack) >= t
    }

    /// The segment may hold a frame captured at or after `t`.
    pub fn frames_reach(&self, t: i64) -> bool {
        let slack = if self.sealed { 0 } else { UNSEALED_SLACK_US };
        self.last_us.is_some_and(|l| l.saturating_add(slack) >= t)
    }

    /// The time span the segment covers: frames, else gap markers, else its start.
    pub fn span(&self) -> (i64, i64) {
        let gaps_from = self.gaps.iter().map(|g| g.from_us).min();
        let gaps_to = self.gaps.iter().map(|g| g.to_us).max();
        let from = [self.first_us, gaps_from]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(self.start_us);
        let to = [self.last_us, gaps_to].into_iter().flatten().max().unwrap_or(from);
        (from, to.max(from))
    }
}
