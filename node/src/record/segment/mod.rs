//! Segment files: the NVR's source of truth, one file per camera per few minutes.
//!
//! A segment is append-only and self-describing: everything the index holds can be
//! rebuilt from the files alone. All integers are big-endian.
//!
//! ```text
//! file   := "CAMESEG1" | body_len:u32 | header_body[body_len] | crc32(header_body):u32 | record*
//! header_body := version:u16 (=1) | start_us:i64 | created_us:i64 | cam_len:u8 | camera
//!               | has_codec:u8 | codec? [| has_audio:u8 (=1) | audio]
//! codec  := width:u32 | height:u32 | profile_idc:u8 | level_idc:u8 | fps_num:u32 | fps_den:u32
//!           | sps_len:u16 | sps | pps_len:u16 | pps
//! audio  := codec:u8 (1 AAC, 2 PCMA, 3 PCMU, 4 Opus) | sample_rate:u32 | channels:u8
//!           | extradata_len:u16 | extradata  (absent in segments without audio)
//! record := len:u32 | kind:u8 | payload[len] | crc32(len | kind | payload):u32
//! kind 1 frame := sequence:u64 (bit 63 set: an audio frame) | pts_90k:u64 | dts_90k:u64 | capture_unix_us:i64 | key_epoch:u64
//!                 | skipped_before:u32 | flags:u8 (bit 0 keyframe) | payload (as received: ciphertext)
//! kind 2 key   := epoch:u64 | key bytes (stored as the caller gives them, i.e. wrapped)
//! kind 3 gap   := from_us:i64 | to_us:i64 | reason (UTF-8)
//! kind 4 codec := codec (a new codec configuration from here on)
//! kind 5 seal  := (empty) the segment was closed cleanly; nothing follows
//! ```
//!
//! A new segment is written as `<name>.tmp` (header only), fsynced and renamed, so a
//! `.cseg` file always starts with a complete header. Records are appended with one
//! `write` each; a record cut short by a crash (SIGKILL, power loss) is a *torn tail*:
//! [`SegmentReader`] stops at the first record that is truncated or fails its checksum
//! and reports where, and [`recover_segment`] truncates an unsealed segment there and
//! seals it. A bad record inside a *sealed* segment (or one whose last bytes are a seal)
//! is disk damage, not a torn tail: it is reported and the file is never modified (it may
//! be evidence). Everything read from disk is bounded ([`MAX_RECORD_LEN`], [`MAX_HEADER_LEN`])
//! and no input makes this module panic or allocate more than the file holds.

mod codec;
mod reader;
mod summary;
mod writer;

use std::io;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use camesh_proto::{pb, MediaFrame};

use crate::media::{AudioParams, CodecParams};

pub use codec::{decode_header, decode_record, encode_header, encode_record, Decoded};
pub use reader::{recover_segment, scan_segment, Recovery, ScanStop, SegmentReader, SegmentScan};
pub use summary::{GapRef, KeyRef, KeyframeRef, SegmentSummary, UNSEALED_SLACK_US};
pub use writer::{sync_dir, Appended, SegmentWriter};

/// The first 8 bytes of every segment file.
pub const MAGIC: &[u8; 8] = b"CAMESEG1";
/// The format version this code writes and reads.
pub const VERSION: u16 = 1;
/// File name extension of a segment.
pub const SEGMENT_EXT: &str = "cseg";
/// Extension of a segment being created (header not yet durable); removed on recovery.
pub const TMP_EXT: &str = "tmp";
/// Largest header body: a camera id and two parameter sets fit many times over.
pub const MAX_HEADER_LEN: u32 = 64 * 1024;
/// Largest record payload. A 4K IDR is 1-2 MB; anything above this is garbage.
pub const MAX_RECORD_LEN: u32 = 16 << 20;
/// Largest stored media key (a wrapped 32-byte key with its envelope fits easily).
pub const MAX_KEY_LEN: usize = 4096;
/// Longest gap reason kept (longer ones are cut at a character boundary).
pub const MAX_REASON_LEN: usize = 1024;
/// Largest SPS or PPS accepted in a codec configuration.
pub const MAX_PARAM_SET_LEN: usize = 4096;
/// Bytes a record adds around its payload: length, kind, checksum.
pub const RECORD_OVERHEAD: u64 = 9;

/// Bytes of a frame record's payload before the media bytes.
const FRAME_FIXED_LEN: usize = 8 * 5 + 4 + 1;

/// Record kinds on disk.
pub(crate) mod kind {
    pub const FRAME: u8 = 1;
    pub const KEY: u8 = 2;
    pub const GAP: u8 = 3;
    pub const CODEC: u8 = 4;
    pub const SEAL: u8 = 5;
}

/// Why a segment cannot be written or read.
#[derive(Debug, thiserror::Error)]
pub enum SegmentError {
    #[error("{}: cannot {op}: {source}", path.display())]
    Io {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("{}: not a camesh segment (bad magic)", path.display())]
    BadMagic { path: PathBuf },
    #[error("{}: segment format version {version} is not supported (this build reads {VERSION})", path.display())]
    UnsupportedVersion { path: PathBuf, version: u16 },
    #[error("{}: segment header is truncated (file has {len} bytes)", path.display())]
    TruncatedHeader { path: PathBuf, len: u64 },
    #[error("{}: segment header is corrupt: {reason}", path.display())]
    BadHeader { path: PathBuf, reason: String },
    #[error("{}: record at offset {offset} is {}: {reason}", path.display(), if *.truncated { "truncated" } else { "corrupt" })]
    BadRecord {
        path: PathBuf,
        offset: u64,
        /// The record runs past the end of the file (a torn tail), as opposed to
        /// bytes that are there but wrong.
        truncated: bool,
        reason: String,
    },
    #[error("cannot write a record of {len} bytes: the maximum is {max}")]
    TooLarge { len: usize, max: usize },
    #[error("invalid camera id {0:?}: use 1-64 characters of a-z, A-Z, 0-9, '-' or '_'")]
    InvalidCamera(String),
    #[error("{}: offset {offset} is outside the records (which start at {start} and end at {end})", path.display())]
    BadOffset {
        path: PathBuf,
        offset: u64,
        start: u64,
        end: u64,
    },
    #[error("{}: an earlier write failed and could not be rolled back; the segment is closed", path.display())]
    Broken { path: PathBuf },
}

impl SegmentError {
    /// The operating system's error, if this is an IO failure (to spot ENOSPC).
    pub fn io_error(&self) -> Option<&io::Error> {
        match self {
            SegmentError::Io { source, .. } => Some(source),
            _ => None,
        }
    }

    /// The disk (or quota) is full.
    pub fn is_disk_full(&self) -> bool {
        self.io_error().is_some_and(is_disk_full)
    }
}

/// ENOSPC or EDQUOT.
pub fn is_disk_full(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::StorageFull
        || e.kind() == io::ErrorKind::QuotaExceeded
        || matches!(e.raw_os_error(), Some(28 | 122))
}

pub(crate) fn io_err<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(io::Error) -> SegmentError + 'a {
    move |source| SegmentError::Io {
        path: path.to_owned(),
        op,
        source,
    }
}

/// A camera id that is safe as a directory name: 1-64 of `[A-Za-z0-9_-]`.
pub fn valid_camera_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// What the start of a segment file says about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    pub version: u16,
    pub camera: String,
    /// The segment's key in the index: microseconds since the Unix epoch (the capture
    /// time of its first frame, or the wall clock when it was opened without one).
    pub start_us: i64,
    /// Wall clock when the file was created.
    pub created_us: i64,
    /// The codec configuration the frames start with (`None` when the recorder did not
    /// know it yet; keyframes carry SPS/PPS in-band anyway).
    pub codec: Option<CodecParams>,
    /// The camera's audio track in this segment (its frames' sequence numbers have
    /// [`crate::media::AUDIO_SEQUENCE_BIT`] set), when it has one.
    pub audio: Option<AudioParams>,
}

/// One recorded frame: the [`pb::FrameHeader`] fields and the payload exactly as received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrameRecord {
    pub sequence: u64,
    pub pts_90k: u64,
    pub dts_90k: u64,
    pub capture_unix_us: i64,
    pub keyframe: bool,
    pub key_epoch: u64,
    pub skipped_before: u32,
    /// The payload as it arrived: AEAD ciphertext under `key_epoch` once frames are
    /// encrypted (the NVR never decrypts to store).
    pub payload: Bytes,
}

impl FrameRecord {
    pub fn from_media(frame: &MediaFrame) -> Self {
        let h = &frame.header;
        FrameRecord {
            sequence: h.sequence,
            pts_90k: h.pts_90k,
            dts_90k: h.dts_90k,
            capture_unix_us: h.capture_unix_us,
            keyframe: h.keyframe,
            key_epoch: h.key_epoch,
            skipped_before: h.skipped_before,
            payload: frame.payload.clone(),
        }
    }

    /// The wire header of this frame (the AEAD associated data is built from it).
    pub fn header(&self) -> pb::FrameHeader {
        pb::FrameHeader {
            sequence: self.sequence,
            pts_90k: self.pts_90k,
            dts_90k: self.dts_90k,
            capture_unix_us: self.capture_unix_us,
            keyframe: self.keyframe,
            key_epoch: self.key_epoch,
            skipped_before: self.skipped_before,
            // Fields added to the wire header later (key updates) are not media: empty.
            ..Default::default()
        }
    }

    /// Back to the wire form (zero-copy payload), e.g. to serve playback.
    pub fn to_media(&self) -> MediaFrame {
        MediaFrame::new(self.header(), self.payload.clone())
    }
}

/// One record of a segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    Frame(FrameRecord),
    /// The media key of an epoch, stored as given (the caller wraps it).
    Key {
        epoch: u64,
        key: Bytes,
    },
    /// The camera was not recorded from `from_us` to `to_us` (it dropped, the NVR lost it).
    Gap {
        from_us: i64,
        to_us: i64,
        reason: String,
    },
    /// A new codec configuration applies to the frames after it.
    Codec(CodecParams),
    /// The segment was closed cleanly; nothing may follow.
    Seal,
}

impl Record {
    fn kind(&self) -> u8 {
        match self {
            Record::Frame(_) => kind::FRAME,
            Record::Key { .. } => kind::KEY,
            Record::Gap { .. } => kind::GAP,
            Record::Codec(_) => kind::CODEC,
            Record::Seal => kind::SEAL,
        }
    }
}

#[cfg(test)]
mod tests;
