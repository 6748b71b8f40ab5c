//! The recorder: the IO side of the NVR, one writer thread per recording folder.
//!
//! The node calls [`Recorder::write`] from its live path for every frame of every
//! recorded camera. That call never blocks: it reserves room in a bounded queue (frames
//! and bytes) and hands the frame (a shared `Bytes`, not a copy) to the writer thread. A
//! full queue drops the frame, counts it, and drops the camera's following frames up to
//! the next keyframe (they could not be decoded anyway); a gap marker then records the
//! hole.
//!
//! The writer thread owns the open segment of each camera. It
//! - rolls to a new segment at the first keyframe after `segment_duration` (or at any
//!   frame after twice that, or past `max_segment_bytes`), and at a codec change, so every
//!   segment starts on a keyframe and has one codec;
//! - writes the media key of an epoch into each segment before the first frame that uses
//!   it, so every segment can be decrypted on its own;
//! - fsyncs every open segment at most `fsync_interval` after it was written to;
//! - runs retention every `retention_interval`, and at once when the disk is full:
//!   oldest unlocked segments go until the write fits, so the newest video keeps being
//!   recorded.
//!
//! [`Recorder::open`] recovers from a crash first: if the index was not closed cleanly
//! (or is new), [`Index::check`] cuts torn tails off unsealed segments, seals them and
//! brings the index in line with the files.

mod config;
mod stats;
mod writer;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, Sender, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use camesh_proto::MediaFrame;
use tracing::{info, warn};

use super::index::{CheckReport, Index, IndexError, OpenReport};
pub use super::retention::CameraPolicy;
use super::segment::{valid_camera_id, SegmentError, MAX_KEY_LEN, MAX_RECORD_LEN};
use super::EvidenceLock;
use crate::media::{AudioParams, CodecParams};
pub use config::RecorderConfig;
pub use stats::RecorderStats;
use stats::Shared;
use writer::Writer;

/// Media keys remembered per camera (to write into new segments).
const MAX_KEYS_PER_CAMERA: usize = 16;
/// Queue slots kept free of frames for control messages (keys, codec, gaps, flush).
const CONTROL_SLOTS: usize = 64;
/// How long a caller of a blocking control call (flush, close) waits for the writer.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(60);

/// Why the recorder cannot start or answer.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error(transparent)]
    Segment(#[from] SegmentError),
    #[error("invalid recorder configuration: {0}")]
    InvalidConfig(String),
    #[error("cannot start the recorder's writer thread: {0}")]
    Spawn(#[source] std::io::Error),
    #[error("the recorder has stopped")]
    Stopped,
    #[error("the recorder did not answer within {0:?}")]
    Timeout(Duration),
    #[error("recorder: {0}")]
    Failed(String),
}

/// Why one write was not queued. Every case is counted in [`RecorderStats`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WriteError {
    #[error("recorder queue is full: frame dropped (recording resumes at the next keyframe)")]
    QueueFull,
    #[error("frame dropped: the camera's recording waits for a keyframe after earlier drops")]
    AwaitingKeyframe,
    #[error("invalid camera id {0:?}")]
    InvalidCamera(String),
    #[error("frame of {len} bytes is larger than the {max}-byte record limit")]
    TooLarge { len: usize, max: usize },
    #[error("not a media frame (empty payload)")]
    NotMedia,
    #[error("the recorder has stopped")]
    Closed,
}

/// What recovery at open found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    pub open: OpenReport,
    /// `Some` when the index was checked against the files (after an unclean shutdown, or
    /// a new or recreated index).
    pub check: Option<CheckReport>,
}

/// What one retention run did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// Deleted segment files (relative to the segments folder).
    pub deleted: Vec<String>,
    pub freed_bytes: u64,
    pub kept_bytes: u64,
    /// The quota is exceeded by this much even after deleting everything allowed.
    pub over_quota_by: u64,
    /// ... because of locked evidence.
    pub exceeded_by_locked: bool,
}

/// Frames dropped before a frame (the writer turns this into a gap marker).
#[derive(Clone, Copy, Debug)]
struct Dropped {
    count: u64,
    first_us: i64,
}

type Reply<T> = Sender<Result<T, String>>;

enum Cmd {
    Frame {
        camera: String,
        frame: MediaFrame,
        bytes: usize,
        dropped_before: Option<Dropped>,
    },
    Codec {
        camera: String,
        params: CodecParams,
    },
    Audio {
        camera: String,
        params: Option<AudioParams>,
    },
    Key {
        camera: String,
        epoch: u64,
        key: Bytes,
    },
    Gap {
        camera: String,
        from_us: i64,
        to_us: i64,
        reason: String,
    },
    NewSegment {
        camera: String,
        start_us: i64,
    },
    Policies(Vec<CameraPolicy>),
    Flush(Reply<()>),
    Retention(Reply<RetentionReport>),
    Close(Reply<()>),
    /// Tests: stop at once, as a SIGKILL would (nothing sealed, no clean mark).
    #[cfg(test)]
    Crash(Reply<()>),
}

#[derive(Debug, Default)]
struct InputState {
    awaiting_keyframe: bool,
    dropped: Option<Dropped>,
}

/// The NVR's recorder for one folder. See the module docs.
#[derive(Debug)]
pub struct Recorder {
    tx: SyncSender<Cmd>,
    shared: Arc<Shared>,
    index: Index,
    config: RecorderConfig,
    recovery: RecoveryReport,
    inputs: Mutex<HashMap<String, InputState>>,
    thread: Option<JoinHandle<()>>,
    /// The writer was told to close.
    closed: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Cmd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self {
            Cmd::Frame { .. } => "Frame",
            Cmd::Codec { .. } => "Codec",
            Cmd::Audio { .. } => "Audio",
            Cmd::Key { .. } => "Key",
            Cmd::Gap { .. } => "Gap",
            Cmd::NewSegment { .. } => "NewSegment",
            Cmd::Policies(_) => "Policies",
            Cmd::Flush(_) => "Flush",
            Cmd::Retention(_) => "Retention",
            Cmd::Close(_) => "Close",
            #[cfg(test)]
            Cmd::Crash(_) => "Crash",
        };
        f.write_str(name)
    }
}

impl Recorder {
    /// Opens the recording folder `dir` (creating it), recovers from an unclean shutdown
    /// and starts the writer thread. Blocking: call it off the async runtime.
    pub fn open(dir: impl AsRef<Path>, config: RecorderConfig) -> Result<Recorder, RecordError> {
        config.validate()?;
        let dir = dir.as_ref();
        let (index, open) = Index::open(dir)?;
        for w in &open.warnings {
            warn!(folder = %dir.display(), "{w}");
        }
        let check = if open.was_clean {
            None
        } else {
            let report = index.check()?;
            if !report.is_clean() {
                warn!(folder = %dir.display(), ?report, "recordings recovered after an unclean shutdown");
            } else {
                info!(folder = %dir.display(), files = report.files, "recordings checked after an unclean shutdown");
            }
            Some(report)
        };
        let recorded: u64 = index.all_segments()?.iter().map(|s| s.bytes).sum();
        let shared = Arc::new(Shared::default());
        shared.recorded_bytes.store(recorded, Ordering::Relaxed);
        let (tx, rx) = sync_channel(config.queue_frames + CONTROL_SLOTS);
        let writer = Writer::new(index.clone(), config.clone(), shared.clone());
        let thread = std::thread::Builder::new()
            .name("camesh-recorder".into())
            .spawn(move || writer.run(rx))
            .map_err(RecordError::Spawn)?;
        Ok(Recorder {
            tx,
            shared,
            index,
            config,
            recovery: RecoveryReport { open, check },
            inputs: Mutex::new(HashMap::new()),
            thread: Some(thread),
            closed: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// What recovery found when this recorder opened.
    pub fn recovery(&self) -> &RecoveryReport {
        &self.recovery
    }

    /// The index, for playback, coverage and export.
    pub fn index(&self) -> &Index {
        &self.index
    }

    pub fn config(&self) -> &RecorderConfig {
        &self.config
    }

    /// Queues one frame of `camera` (never blocks). The payload is stored exactly as given
    /// (ciphertext), with the header fields playback and decryption need.
    pub fn write(&self, camera: &str, frame: &MediaFrame) -> Result<(), WriteError> {
        if !valid_camera_id(camera) {
            return Err(WriteError::InvalidCamera(camera.to_owned()));
        }
        if frame.payload.is_empty() {
            return Err(WriteError::NotMedia);
        }
        let bytes = frame.payload.len();
        let max = MAX_RECORD_LEN as usize - 64;
        if bytes > max {
            self.shared.frames_dropped.fetch_add(1, Ordering::Relaxed);
            return Err(WriteError::TooLarge { len: bytes, max });
        }
        let mut inputs = self.inputs.lock().unwrap_or_else(|p| p.into_inner());
        // Checked under the lock `close_once` takes: nothing is queued behind `Close`.
        if self.closed.load(Ordering::Acquire) {
            return Err(WriteError::Closed);
        }
        if !inputs.contains_key(camera) {
            inputs.insert(camera.to_owned(), InputState::default());
        }
        let Some(st) = inputs.get_mut(camera) else {
            return Err(WriteError::Closed);
        };
        let drop_frame = |st: &mut InputState, err: WriteError| {
            self.shared.frames_dropped.fetch_add(1, Ordering::Relaxed);
            st.awaiting_keyframe = true;
            let d = st.dropped.get_or_insert(Dropped {
                count: 0,
                first_us: frame.header.capture_unix_us,
            });
            d.count += 1;
            Err(err)
        };
        if st.awaiting_keyframe && !frame.header.keyframe {
            return drop_frame(st, WriteError::AwaitingKeyframe);
        }
        if !self
            .shared
            .reserve(bytes, self.config.queue_frames, self.config.queue_bytes)
        {
            return drop_frame(st, WriteError::QueueFull);
        }
        let cmd = Cmd::Frame {
            camera: camera.to_owned(),
            frame: frame.clone(),
            bytes,
            dropped_before: st.dropped,
        };
        match self.tx.try_send(cmd) {
            Ok(()) => {
                st.awaiting_keyframe = false;
                st.dropped = None;
                Ok(())
            }
            Err(TrySendError::Full(_)) => {
                self.shared.release(bytes);
                drop_frame(st, WriteError::QueueFull)
            }
            Err(TrySendError::Disconnected(_)) => {
                self.shared.release(bytes);
                Err(WriteError::Closed)
            }
        }
    }

    fn control(&self, cmd: Cmd) -> Result<(), WriteError> {
        let _inputs = self.inputs.lock().unwrap_or_else(|p| p.into_inner());
        if self.closed.load(Ordering::Acquire) {
            return Err(WriteError::Closed);
        }
        match self.tx.try_send(cmd) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(WriteError::QueueFull),
            Err(TrySendError::Disconnected(_)) => Err(WriteError::Closed),
        }
    }

    /// The codec configuration of a camera's frames from now on (a change starts a new
    /// segment). Call it before the first frame and whenever the source's parameters change.
    pub fn set_codec(&self, camera: &str, params: &CodecParams) -> Result<(), WriteError> {
        if !valid_camera_id(camera) {
            return Err(WriteError::InvalidCamera(camera.to_owned()));
        }
        self.control(Cmd::Codec {
            camera: camera.to_owned(),
            params: params.clone(),
        })
    }

    /// The camera's audio track from now on (`None`: none). A change starts a new segment
    /// at the next keyframe; the segment header describes the track, and audio frames
    /// (sequence numbers with [`crate::media::AUDIO_SEQUENCE_BIT`]) are written like
    /// video frames.
    pub fn set_audio(&self, camera: &str, params: Option<&AudioParams>) -> Result<(), WriteError> {
        if !valid_camera_id(camera) {
            return Err(WriteError::InvalidCamera(camera.to_owned()));
        }
        self.control(Cmd::Audio {
            camera: camera.to_owned(),
            params: params.cloned(),
        })
    }

    /// Records the media key of an epoch, as the caller wants it stored (wrapped for the
    /// NVR's own key: the recorder does not interpret it). Written into every segment
    /// that holds frames of that epoch.
    pub fn write_key(&self, camera: &str, epoch: u64, key: Bytes) -> Result<(), WriteError> {
        if !valid_camera_id(camera) {
            return Err(WriteError::InvalidCamera(camera.to_owned()));
        }
        if key.len() > MAX_KEY_LEN {
            return Err(WriteError::TooLarge {
                len: key.len(),
                max: MAX_KEY_LEN,
            });
        }
        self.control(Cmd::Key {
            camera: camera.to_owned(),
            epoch,
            key,
        })
    }

    /// Records that the camera was not recorded from `from_us` to `to_us`.
    pub fn write_gap(&self, camera: &str, from_us: i64, to_us: i64, reason: &str) -> Result<(), WriteError> {
        if !valid_camera_id(camera) {
            return Err(WriteError::InvalidCamera(camera.to_owned()));
        }
        self.control(Cmd::Gap {
            camera: camera.to_owned(),
            from_us,
            to_us: to_us.max(from_us),
            reason: reason.to_owned(),
        })
    }

    /// Seals the camera's open segment: the next frame starts a new one, named after
    /// `start_us` unless a segment starts there already. For footage that arrives out of
    /// order (replication): each run of frames goes forward in time in its own segment.
    pub fn new_segment(&self, camera: &str, start_us: i64) -> Result<(), WriteError> {
        if !valid_camera_id(camera) {
            return Err(WriteError::InvalidCamera(camera.to_owned()));
        }
        self.control(Cmd::NewSegment {
            camera: camera.to_owned(),
            start_us,
        })
    }

    /// Replaces the per-camera retention (cameras found later, e.g. by tag).
    pub fn set_camera_policies(&self, cameras: Vec<CameraPolicy>) -> Result<(), RecordError> {
        self.tx.send(Cmd::Policies(cameras)).map_err(|_| RecordError::Stopped)
    }

    fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Cmd) -> Result<T, RecordError> {
        Self::await_reply(self.send_call(make)?)
    }

    fn send_call<T>(&self, make: impl FnOnce(Reply<T>) -> Cmd) -> Result<Receiver<Result<T, String>>, RecordError> {
        let (reply, rx) = std::sync::mpsc::channel();
        // Blocking send: control calls are not on the live path, and the writer drains.
        self.tx.send(make(reply)).map_err(|_| RecordError::Stopped)?;
        Ok(rx)
    }

    fn await_reply<T>(rx: Receiver<Result<T, String>>) -> Result<T, RecordError> {
        match rx.recv_timeout(CONTROL_TIMEOUT) {
            Ok(r) => r.map_err(RecordError::Failed),
            Err(RecvTimeoutError::Timeout) => Err(RecordError::Timeout(CONTROL_TIMEOUT)),
            Err(RecvTimeoutError::Disconnected) => Err(RecordError::Stopped),
        }
    }

    /// Waits until everything queued so far is written and fsynced, and the index updated.
    pub fn flush(&self) -> Result<(), RecordError> {
        self.call(Cmd::Flush)
    }

    /// Runs retention now.
    pub fn run_retention(&self) -> Result<RetentionReport, RecordError> {
        self.call(Cmd::Retention)
    }

    /// Locks a range of a camera against retention (evidence). Durable when it returns.
    pub fn lock_range(
        &self,
        camera: &str,
        from_us: i64,
        to_us: i64,
        reason: &str,
    ) -> Result<EvidenceLock, RecordError> {
        Ok(self.index.add_lock(camera, from_us, to_us, reason)?)
    }

    /// Every evidence lock.
    pub fn locks(&self) -> Result<Vec<EvidenceLock>, RecordError> {
        Ok(self.index.locks()?)
    }

    /// Removes an evidence lock; `false` if there was none with that id.
    pub fn unlock(&self, id: u64) -> Result<bool, RecordError> {
        Ok(self.index.remove_lock(id)?)
    }

    pub fn stats(&self) -> RecorderStats {
        self.shared.snapshot()
    }

    /// Seals every open segment, marks the index clean and stops the writer.
    pub fn close(mut self) -> Result<(), RecordError> {
        self.shutdown()
    }

    /// [`Recorder::close`] for a recorder shared with tasks that may still hold it: the
    /// writer stops (later writes fail with [`WriteError::Closed`]); the thread is joined
    /// when the last holder drops it.
    pub fn close_shared(&self) -> Result<(), RecordError> {
        self.close_once()
    }

    fn shutdown(&mut self) -> Result<(), RecordError> {
        let Some(thread) = self.thread.take() else {
            return Ok(());
        };
        let result = self.close_once();
        let _ = thread.join();
        result
    }

    /// Marks the recorder closed and asks the writer to close, once. Both happen under the
    /// inputs lock, which [`Self::write`] holds while it queues: a frame is either queued
    /// before `Close` (and written) or refused with [`WriteError::Closed`], never queued
    /// behind `Close` and silently lost with an `Ok`.
    fn close_once(&self) -> Result<(), RecordError> {
        let reply = {
            let _inputs = self.inputs.lock().unwrap_or_else(|p| p.into_inner());
            if self.closed.swap(true, Ordering::AcqRel) {
                return Ok(());
            }
            self.send_call(Cmd::Close)?
        };
        Self::await_reply(reply)
    }

    /// Tests: stops the writer as abruptly as a SIGKILL would after it wrote what was
    /// queued (segments stay unsealed, the index is not marked clean).
    #[cfg(test)]
    pub(crate) fn crash(mut self) {
        if let Some(thread) = self.thread.take() {
            let _ = self.call(Cmd::Crash);
            let _ = thread.join();
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            warn!(error = %e, "recorder did not close cleanly");
        }
    }
}

#[cfg(test)]
mod clock_tests;
#[cfg(test)]
pub(crate) mod tests;
