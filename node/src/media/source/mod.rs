//! File sources: a video file in, [`AccessUnit`]s paced in real time out.
//!
//! This module owns reading clips from disk and playing them as if a camera were sending
//! them:
//! - [`load_clip`] (synchronous, blocking IO) reads a whole file into a [`Clip`]: raw
//!   Annex B (`.h264`, `.264`, `.h26l`) through the pure parser in [`super::h264`], any
//!   other container through ffmpeg (`ffmpeg-next`). Every clip comes out normalised the
//!   same way: AVCC access units in decode order, starting at an IDR, every keyframe
//!   carrying its SPS and PPS in front, timestamps in 90 kHz starting at 0.
//! - [`FileSource::run`] / [`play_clip`] (async) emit [`SourceEvent::Params`] and then one
//!   [`SourceEvent::Frame`] per access unit at the wall-clock time its dts says, looping
//!   with continuous timestamps, until cancelled.
//!
//! Files are untrusted: any malformed input is a [`SourceError`] that names the file,
//! never a panic; files over [`MAX_FILE_BYTES`] are refused.
//!
//! IP cameras come in through [`rtsp`]: [`RtspSource::run`] pulls an `rtsp://` URL with
//! ffmpeg (TCP or UDP, credentials in the URL), passes the H.264 through without
//! decoding and emits the same events, live as they arrive; [`normalize`] is its pure
//! half (parameter sets, the start at an IDR, decode times).

mod clip;
mod container;
pub mod normalize;
mod parts;
mod play;
pub mod rtsp;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::h264::{split_annexb, AccessUnitAssembler, H264Error};
use super::{AccessUnit, AudioParams, AudioUnit, CodecParams};
use clip::{ClipBuilder, Timing};

pub use play::play_clip;
pub use rtsp::{RtspOptions, RtspSource};

/// Largest file a source reads (and, for containers, most video bytes it demuxes).
pub const MAX_FILE_BYTES: u64 = 512 * 1024 * 1024;

/// Frame rates outside this range (from a file or the options) are not believed.
const FPS_RANGE: std::ops::RangeInclusive<u32> = 1..=240;

/// When the paced runner falls this far behind (a slow receiver), it re-anchors its clock
/// instead of bursting the late frames out.
const MAX_LAG: Duration = Duration::from_millis(500);

/// How a file source plays.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceOptions {
    /// Start again at the beginning at the end of the file (timestamps keep increasing).
    pub looping: bool,
    /// Frame rate used when the stream does not say (no VUI timing, no container rate).
    pub default_fps: u32,
}

impl Default for SourceOptions {
    fn default() -> Self {
        SourceOptions {
            looping: true,
            default_fps: 30,
        }
    }
}

/// A whole file, loaded and normalised.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Clip {
    pub params: CodecParams,
    /// Access units in decode order; the first is a keyframe. Timestamps start at 0.
    pub frames: Vec<AccessUnit>,
    /// Nominal duration of one frame, 90 kHz.
    pub frame_duration_90k: u64,
    /// The file's audio track (AAC, G.711, Opus), on the frames' timeline.
    pub audio: Option<ClipAudio>,
}

/// A clip's audio: its parameters and its frames in order, each within the clip's loop
/// period (so a looping clip's sound repeats with its picture).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClipAudio {
    pub params: AudioParams,
    pub units: Vec<AudioUnit>,
}

impl Clip {
    /// What each loop adds to the timestamps: the clip's span plus one frame, so the first
    /// frame of the next loop follows the last frame of this one by one frame duration.
    pub fn loop_period_90k(&self) -> u64 {
        let span = |ts: &dyn Fn(&AccessUnit) -> u64| {
            let max = self.frames.iter().map(ts).max().unwrap_or(0);
            let min = self.frames.iter().map(ts).min().unwrap_or(0);
            max - min
        };
        span(&|f| f.dts_90k).max(span(&|f| f.pts_90k)) + self.frame_duration_90k
    }
}

/// What a running source reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceEvent {
    /// Always first: what a decoder needs.
    Params(CodecParams),
    /// One access unit, sent when the wall clock reaches its dts.
    Frame(AccessUnit),
    /// The camera's audio track (RTSP sources and files with audio), before its first frame.
    AudioParams(AudioParams),
    /// One audio frame, as it arrives.
    Audio(AudioUnit),
    /// The source stopped normally (end of a non-looping file).
    Ended { reason: String },
    /// The source could not start; `error` says why in words a person can act on.
    Failed { error: String },
}

/// Why a file cannot be played.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("invalid source options: {0}")]
    InvalidOptions(String),
    #[error("{}: file not found", path.display())]
    NotFound { path: PathBuf },
    #[error("{}: cannot read: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: not a regular file", path.display())]
    NotAFile { path: PathBuf },
    #[error("{}: file is empty", path.display())]
    Empty { path: PathBuf },
    #[error("{}: file is {size} bytes, more than the {max}-byte limit", path.display())]
    TooLarge { path: PathBuf, size: u64, max: u64 },
    #[error(
        "{}: not an H.264 Annex B stream (no 00 00 01 start code found)",
        path.display()
    )]
    NotAnnexB { path: PathBuf },
    #[error(
        "{}: no SPS/PPS found before a keyframe, so the video cannot be decoded",
        path.display()
    )]
    NoParameterSets { path: PathBuf },
    #[error("{}: the SPS cannot be parsed: {source}", path.display())]
    BadSps {
        path: PathBuf,
        #[source]
        source: H264Error,
    },
    #[error(
        "{}: no IDR frame (keyframe) in the file, so a viewer could never start",
        path.display()
    )]
    NoKeyframe { path: PathBuf },
    #[error("{}: no video stream in the file (it has: {streams})", path.display())]
    NoVideoStream { path: PathBuf, streams: String },
    #[error(
        "{}: the video is {codec}, not H.264; camesh carries H.264 only",
        path.display()
    )]
    NotH264 { path: PathBuf, codec: String },
    #[error("{}: the H.264 configuration (avcC) is malformed: {source}", path.display())]
    BadAvcConfig {
        path: PathBuf,
        #[source]
        source: H264Error,
    },
    #[error("{}: ffmpeg cannot open the file: {source}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: ffmpeg_next::Error,
    },
    #[error("{}: ffmpeg failed while reading the file: {source}", path.display())]
    Demux {
        path: PathBuf,
        #[source]
        source: ffmpeg_next::Error,
    },
    #[error("ffmpeg could not be initialised: {0}")]
    FfmpegInit(String),
}

/// A clip file played as a live camera; see [`FileSource::run`].
#[derive(Clone, Debug)]
pub struct FileSource {
    path: PathBuf,
    opts: SourceOptions,
}

impl FileSource {
    pub fn new(path: impl Into<PathBuf>, opts: SourceOptions) -> Self {
        FileSource {
            path: path.into(),
            opts,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn options(&self) -> &SourceOptions {
        &self.opts
    }

    /// Loads the file on a blocking thread, then plays it: [`SourceEvent::Params`] first,
    /// then frames at real time (see [`play_clip`]). A file that cannot be loaded gives
    /// one [`SourceEvent::Failed`]. Returns when cancelled, when `tx` is closed, or at the
    /// end of a non-looping file.
    pub async fn run(self, tx: mpsc::Sender<SourceEvent>, cancel: CancellationToken) {
        let FileSource { path, opts } = self;
        let looping = opts.looping;
        let load = tokio::task::spawn_blocking(move || load_clip(&path, &opts));
        let loaded = tokio::select! {
            _ = cancel.cancelled() => return,
            loaded = load => loaded,
        };
        let clip = match loaded {
            Ok(Ok(clip)) => clip,
            Ok(Err(e)) => {
                let _ = tx.send(SourceEvent::Failed { error: e.to_string() }).await;
                return;
            }
            Err(e) => {
                let error = format!("the file loader thread failed: {e}");
                let _ = tx.send(SourceEvent::Failed { error }).await;
                return;
            }
        };
        play_clip(clip, looping, tx, cancel).await;
    }
}

/// Reads a whole file into a normalised [`Clip`] (blocking: call it off the async
/// runtime). `.h264`, `.264` and `.h26l` are raw Annex B; anything else is opened with
/// ffmpeg and must hold an H.264 video stream.
pub fn load_clip(path: impl AsRef<Path>, opts: &SourceOptions) -> Result<Clip, SourceError> {
    let path = path.as_ref();
    if !FPS_RANGE.contains(&opts.default_fps) {
        return Err(SourceError::InvalidOptions(format!(
            "default_fps is {}, it must be between {} and {}",
            opts.default_fps,
            FPS_RANGE.start(),
            FPS_RANGE.end()
        )));
    }
    let meta = std::fs::metadata(path).map_err(|e| io_error(path, e))?;
    if !meta.is_file() {
        return Err(SourceError::NotAFile { path: path.into() });
    }
    check_size(path, meta.len())?;
    let ext = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("h264" | "264" | "h26l") => load_annexb(path, opts),
        _ => container::load_container(path, opts),
    }
}

fn io_error(path: &Path, e: std::io::Error) -> SourceError {
    if e.kind() == std::io::ErrorKind::NotFound {
        SourceError::NotFound { path: path.into() }
    } else {
        SourceError::Io {
            path: path.into(),
            source: e,
        }
    }
}

fn check_size(path: &Path, size: u64) -> Result<(), SourceError> {
    if size == 0 {
        return Err(SourceError::Empty { path: path.into() });
    }
    if size > MAX_FILE_BYTES {
        return Err(SourceError::TooLarge {
            path: path.into(),
            size,
            max: MAX_FILE_BYTES,
        });
    }
    Ok(())
}

fn load_annexb(path: &Path, opts: &SourceOptions) -> Result<Clip, SourceError> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| io_error(path, e))?;
    let mut data = Vec::new();
    // Read at most one byte past the limit, in case the file grew since metadata().
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut data)
        .map_err(|e| io_error(path, e))?;
    check_size(path, data.len() as u64)?;
    let data = Bytes::from(data);

    let mut nals = split_annexb(&data).peekable();
    if nals.peek().is_none() {
        return Err(SourceError::NotAnnexB { path: path.into() });
    }
    let mut asm = AccessUnitAssembler::new();
    let mut builder = ClipBuilder::default();
    for nal in nals {
        if let Some(au) = asm.push(data.slice_ref(nal)) {
            builder.push(au.nals, None);
        }
    }
    if let Some(au) = asm.finish() {
        builder.push(au.nals, None);
    }
    builder.finish(path, opts, Timing::Generated)
}
