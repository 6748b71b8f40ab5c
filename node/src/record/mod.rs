//! Recording (NVR): segment files, their index, retention, playback and export.
//!
//! ```text
//! live frames ──► Recorder::write (bounded queue, never blocks) ──► writer thread
//!                                                                   ├─► segment files (truth)
//!                                                                   ├─► sled index (cache)
//!                                                                   └─► retention (age, quota, disk full)
//! playback::frames / coverage ◄── index + segments ──► export::export_mp4 + manifest (signed hashes)
//! ```
//!
//! - [`segment`] (pure format + file IO): append-only, self-describing segment files:
//!   a checksummed header (camera, start time, codec) and checksummed records (frames as
//!   received, i.e. ciphertext; media keys; gap markers; codec changes; a final seal).
//!   A torn tail after a crash is detected and cut; nothing read from disk can panic.
//! - [`index`]: sled trees (camera, time → segment; keyframe offsets; evidence locks),
//!   rebuildable from the files and checked after an unclean shutdown.
//! - [`retention`] (pure): oldest first by age and quota, never a locked range, never the
//!   segment being written.
//! - [`recorder`]: the writer thread the node feeds; rolls, fsyncs on a bounded interval,
//!   recovers at open, frees space when the disk is full.
//! - [`playback`]: frames from the keyframe at or before a time; coverage with gaps.
//! - [`export`]: a time range to MP4 (ffmpeg-next) after the caller's decryption;
//!   [`manifest`]: signed per-segment SHA-256 hashes and their verification.
//!
//! On disk, under the recording folder:
//!
//! ```text
//! segments/<camera>/<start_us:020>.cseg   segment files (see segment)
//! index/                                  the sled database (disposable)
//! locks.json                              evidence locks (the truth; mirrored in sled)
//! ```

pub mod export;
pub mod index;
pub mod manifest;
pub mod playback;
pub mod recorder;
pub mod retention;
pub mod segment;

#[cfg(test)]
mod testutil;

pub use index::{CheckReport, EvidenceLock, Index, IndexError};
pub use playback::{coverage, frames, Coverage, PlaybackError, PlaybackItem};
pub use recorder::{RecordError, Recorder, RecorderConfig, RecorderStats, RetentionReport, WriteError};
pub use segment::{FrameRecord, Record, SegmentError, SegmentSummary};

/// The segment files' folder, under the recording folder.
pub const SEGMENTS_DIR: &str = "segments";
/// The sled index's folder.
pub const INDEX_DIR: &str = "index";
/// The evidence locks file.
pub const LOCKS_FILE: &str = "locks.json";
