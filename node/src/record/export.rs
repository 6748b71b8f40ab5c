//! Export: a time range of one camera to a standard MP4 (ISO BMFF, H.264 in `avc1`,
//! SPS/PPS in the avcC box) that ffprobe, VLC and browsers open, written as a stream
//! into any [`std::io::Write`]: fragmented (an init segment, then one `moof` + `mdat`
//! per frame, [`crate::media::fmp4`]), so nothing is seeked back to and nothing needs a
//! file. The NVR writes it straight onto the asking peer's stream; the video is never
//! on the NVR's disk in the clear.
//!
//! The recording holds ciphertext; the caller supplies the decryption: a function given
//! each [`FrameRecord`] and the stored key of its epoch (as the recorder was given it,
//! i.e. wrapped) that returns the plaintext AVCC access unit. The export starts at the
//! keyframe at or before `from` (see [`super::playback`]) and ends with the last frame
//! captured at or before `to`. Timestamps come from the frames' pts/dts (90 kHz), rebased
//! to 0 and kept strictly increasing across a source restart. Each sample lasts until
//! the next one's dts; the last one lasts as long as the one before it.
//!
//! The camera's audio, when the recording has it, is a second track (AAC, G.711 or Opus
//! as recorded; [`crate::media::fmp4::audio`]), timed on the video's rebased timeline.
//!
//! A failure stops the output where it is: the caller discards what it got (the client
//! writes `<out>.part` and renames it only when the export completed).

use std::collections::HashMap;
use std::io::Write;

use bytes::Bytes;

use super::index::Index;
use super::playback::{frames, PlaybackError, PlaybackItem};
use super::segment::{FrameRecord, SegmentSummary};
use crate::media::fmp4;
use crate::media::fmp4::{AudioTimeline, AUDIO_TRACK_ID};
use crate::media::h264::{avcc_nals, nal_type, parse_sps, NalType};
use crate::media::{is_audio, AudioParams, CodecParams};

/// Media keys kept while exporting (one per epoch seen).
const MAX_KEYS: usize = 1024;
/// Progress is reported every this many frames (and at the end).
const PROGRESS_EVERY: u64 = 30;
/// Frame duration assumed before two frames tell (30 fps).
const DEFAULT_FRAME_90K: i64 = 3000;

/// Why an export failed. The output stops where it was.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Playback(#[from] PlaybackError),
    #[error("nothing recorded for camera {camera} between {from_us} and {to_us}")]
    NothingRecorded { camera: String, from_us: i64, to_us: i64 },
    #[error("cannot decrypt frame {sequence} (captured at {capture_us}, key epoch {epoch}): {reason}")]
    Decrypt {
        sequence: u64,
        capture_us: i64,
        epoch: u64,
        reason: String,
    },
    #[error("the recording has no SPS/PPS (neither in the segment header nor in the first keyframe)")]
    NoParameterSets,
    #[error(
        "the codec configuration changes at {at_us} (capture time): export the ranges before and after it separately"
    )]
    CodecChanged { at_us: i64 },
    #[error("the video cannot be described in MP4: {0}")]
    Container(#[from] fmp4::Fmp4Error),
    #[error("cannot write the export: {0}")]
    Write(#[source] std::io::Error),
}

/// How far an export has come.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExportProgress {
    pub frames: u64,
    /// Capture time of the last frame written.
    pub capture_us: i64,
    pub from_us: i64,
    pub to_us: i64,
}

impl ExportProgress {
    /// 0.0 to 1.0 by capture time.
    pub fn fraction(&self) -> f64 {
        let span = (self.to_us - self.from_us).max(1) as f64;
        ((self.capture_us - self.from_us) as f64 / span).clamp(0.0, 1.0)
    }
}

/// What an export wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportSummary {
    pub frames: u64,
    pub keyframes: u64,
    /// Capture time of the first frame (the keyframe at or before `from`) and the last.
    pub first_capture_us: i64,
    pub last_capture_us: i64,
    /// Duration of the video track, 90 kHz.
    pub duration_90k: i64,
    pub width: u32,
    pub height: u32,
    /// Bytes of MP4 written.
    pub bytes: u64,
    /// The segments the frames came from (for the manifest).
    pub segments: Vec<SegmentSummary>,
    /// Gap markers met inside the range (the MP4 holds the last picture through them).
    pub gaps: u64,
    /// Audio frames written (0 without an audio track).
    pub audio_frames: u64,
}

/// Rebases 90 kHz timestamps to 0 and keeps dts strictly increasing (pure).
#[derive(Debug, Default)]
pub(crate) struct TimestampRebaser {
    base: Option<i128>,
    shift: i128,
    last_dts: Option<i64>,
    last_delta: Option<i64>,
}

impl TimestampRebaser {
    /// `(pts, dts)` in the output's 90 kHz time.
    pub(crate) fn map(&mut self, pts_90k: u64, dts_90k: u64) -> (i64, i64) {
        let (pts, dts) = (i128::from(pts_90k), i128::from(dts_90k));
        let base = *self.base.get_or_insert(dts.min(pts));
        let mut d = dts - base + self.shift;
        if let Some(last) = self.last_dts {
            let last = i128::from(last);
            if d <= last {
                // Timestamps went back (the source restarted): continue one frame later.
                let step = i128::from(self.last_delta.unwrap_or(DEFAULT_FRAME_90K));
                self.shift += last + step - d;
                d = last + step;
            }
        }
        let p = (pts - base + self.shift).max(d);
        let clamp = |v: i128| i64::try_from(v).unwrap_or(i64::MAX);
        let (p, d) = (clamp(p), clamp(d));
        if let Some(last) = self.last_dts {
            self.last_delta = Some(d - last);
        }
        self.last_dts = Some(d);
        (p, d)
    }

    /// Where a time of the source's (an audio frame's pts) falls on the output timeline:
    /// the video's rebasing, without moving it.
    pub(crate) fn place(&self, pts_90k: u64) -> i128 {
        match self.base {
            Some(base) => i128::from(pts_90k) - base + self.shift,
            None => -1,
        }
    }

    /// The duration of the last frame: the spacing before it.
    pub(crate) fn last_delta(&self) -> i64 {
        self.last_delta.unwrap_or(DEFAULT_FRAME_90K)
    }
}

/// SPS and PPS from the in-band parameter sets of a plaintext AVCC access unit.
fn params_from_au(au: &[u8]) -> Option<(Bytes, Bytes)> {
    let (mut sps, mut pps) = (None, None);
    for nal in avcc_nals(au).map_while(Result::ok) {
        match nal_type(nal) {
            Some(NalType::SPS) if sps.is_none() => sps = Some(Bytes::copy_from_slice(nal)),
            Some(NalType::PPS) if pps.is_none() => pps = Some(Bytes::copy_from_slice(nal)),
            _ => {}
        }
    }
    Some((sps?, pps?))
}

/// The MP4 being written: the init segment, then each frame as a fragment once the
/// next one's decode time gives its duration.
struct Muxer<'a, W: Write> {
    out: &'a mut W,
    sequence: u32,
    bytes: u64,
    pending: Option<(Bytes, i64, i64, bool)>,
    audio: Option<AudioTimeline>,
}

impl<'a, W: Write> Muxer<'a, W> {
    fn create(out: &'a mut W, codec: &CodecParams, audio: Option<&AudioParams>) -> Result<Self, ExportError> {
        let init = fmp4::init_segment_with(&codec.sps, &codec.pps, audio)?;
        let mut m = Muxer {
            out,
            sequence: 0,
            bytes: 0,
            pending: None,
            audio: audio.map(AudioTimeline::new),
        };
        m.emit(&init)?;
        Ok(m)
    }

    fn emit(&mut self, b: &[u8]) -> Result<(), ExportError> {
        self.out.write_all(b).map_err(ExportError::Write)?;
        self.bytes += b.len() as u64;
        Ok(())
    }

    fn push(&mut self, data: Bytes, pts: i64, dts: i64, key: bool) -> Result<(), ExportError> {
        if let Some((pdata, ppts, pdts, pkey)) = self.pending.take() {
            self.write(&pdata, ppts, pdts, dts - pdts, pkey)?;
        }
        self.pending = Some((data, pts, dts, key));
        Ok(())
    }

    fn write(&mut self, data: &[u8], pts: i64, dts: i64, duration: i64, key: bool) -> Result<(), ExportError> {
        self.sequence = self.sequence.wrapping_add(1);
        // The rebaser keeps dts >= 0 and pts >= dts.
        let (d, cts) = (u64::try_from(dts).unwrap_or(0), u64::try_from(pts - dts).unwrap_or(0));
        let frag = fmp4::fragment(self.sequence, data, d, u64::try_from(duration).unwrap_or(1), cts, key);
        self.emit(&frag)
    }

    /// An audio frame at `at` on the output's 90 kHz timeline; true when it has a track.
    fn push_audio(&mut self, data: Bytes, at: i128) -> Result<bool, ExportError> {
        let Some(t) = self.audio.as_mut() else {
            return Ok(false);
        };
        if let Some(s) = t.push(data, at) {
            self.write_audio(&s)?;
        }
        Ok(true)
    }

    fn write_audio(&mut self, s: &fmp4::AudioSample) -> Result<(), ExportError> {
        self.sequence = self.sequence.wrapping_add(1);
        let frag = fmp4::track_fragment(AUDIO_TRACK_ID, self.sequence, &s.data, s.dts, s.duration, 0, true);
        self.emit(&frag)
    }

    /// Writes the last frames; returns the bytes written in all.
    fn finish(mut self, last_duration: i64) -> Result<u64, ExportError> {
        if let Some((data, pts, dts, key)) = self.pending.take() {
            self.write(&data, pts, dts, last_duration, key)?;
        }
        if let Some(s) = self.audio.as_mut().and_then(AudioTimeline::flush) {
            self.write_audio(&s)?;
        }
        self.out.flush().map_err(ExportError::Write)?;
        Ok(self.bytes)
    }
}

/// Exports `camera` over `[from_us, to_us]` as MP4 into `out`. `decrypt` turns a
/// recorded frame (and the stored key of its epoch, if the recording has it) into the
/// plaintext AVCC access unit; `progress` is called every few frames.
pub fn export_mp4<W, D, E, P>(
    index: &Index,
    camera: &str,
    from_us: i64,
    to_us: i64,
    out: &mut W,
    mut decrypt: D,
    mut progress: P,
) -> Result<ExportSummary, ExportError>
where
    W: Write,
    D: FnMut(&FrameRecord, Option<&Bytes>) -> Result<Bytes, E>,
    E: std::fmt::Display,
    P: FnMut(&ExportProgress),
{
    export_into(index, camera, from_us, to_us, out, &mut decrypt, &mut progress)
}

fn export_into<W, D, E, P>(
    index: &Index,
    camera: &str,
    from_us: i64,
    to_us: i64,
    out: &mut W,
    decrypt: &mut D,
    progress: &mut P,
) -> Result<ExportSummary, ExportError>
where
    W: Write,
    D: FnMut(&FrameRecord, Option<&Bytes>) -> Result<Bytes, E>,
    E: std::fmt::Display,
    P: FnMut(&ExportProgress),
{
    let mut items = frames(index, camera, from_us, to_us)?;
    let mut keys: HashMap<u64, Bytes> = HashMap::new();
    let mut codec: Option<CodecParams> = None;
    let mut muxer: Option<Muxer<W>> = None;
    let mut rebaser = TimestampRebaser::default();
    let mut summary = ExportSummary {
        frames: 0,
        keyframes: 0,
        first_capture_us: 0,
        last_capture_us: 0,
        duration_90k: 0,
        width: 0,
        height: 0,
        bytes: 0,
        segments: Vec::new(),
        gaps: 0,
        audio_frames: 0,
    };
    let mut audio: Option<AudioParams> = None;
    let mut first_dts = 0;
    let mut last_dts = 0;
    for item in items.by_ref() {
        let frame = match item? {
            PlaybackItem::Codec(c) => {
                if muxer.is_some() && codec.as_ref().is_some_and(|old| old.sps != c.sps || old.pps != c.pps) {
                    return Err(ExportError::CodecChanged {
                        at_us: summary.last_capture_us,
                    });
                }
                codec = Some(c);
                continue;
            }
            PlaybackItem::Key { epoch, key } => {
                if keys.len() < MAX_KEYS || keys.contains_key(&epoch) {
                    keys.insert(epoch, key);
                }
                continue;
            }
            PlaybackItem::Audio(a) => {
                // The track is described once, in the init segment: a different one
                // later is left out (its frames too).
                if muxer.is_none() {
                    audio = Some(a);
                } else if audio.as_ref() != Some(&a) {
                    audio = None;
                }
                continue;
            }
            PlaybackItem::Gap { .. } => {
                summary.gaps += 1;
                continue;
            }
            PlaybackItem::Frame(f) => f,
        };
        if is_audio(frame.sequence) && (muxer.is_none() || audio.is_none()) {
            continue;
        }
        let plain = decrypt(&frame, keys.get(&frame.key_epoch)).map_err(|e| ExportError::Decrypt {
            sequence: frame.sequence,
            capture_us: frame.capture_unix_us,
            epoch: frame.key_epoch,
            reason: e.to_string(),
        })?;
        if muxer.is_none() {
            let mut c = codec.clone().unwrap_or_default();
            if c.sps.is_empty() || c.pps.is_empty() {
                let (sps, pps) = params_from_au(&plain).ok_or(ExportError::NoParameterSets)?;
                c.sps = sps;
                c.pps = pps;
            }
            if c.width == 0 || c.height == 0 {
                if let Ok(info) = parse_sps(&c.sps) {
                    c.width = info.width;
                    c.height = info.height;
                }
            }
            summary.width = c.width;
            summary.height = c.height;
            summary.first_capture_us = frame.capture_unix_us;
            muxer = Some(Muxer::create(&mut *out, &c, audio.as_ref())?);
            codec = Some(c);
        }
        let Some(m) = muxer.as_mut() else {
            continue;
        };
        if is_audio(frame.sequence) {
            if m.push_audio(plain, rebaser.place(frame.pts_90k))? {
                summary.audio_frames += 1;
            }
            continue;
        }
        let (pts, dts) = rebaser.map(frame.pts_90k, frame.dts_90k);
        if summary.frames == 0 {
            first_dts = dts;
        }
        last_dts = dts;
        m.push(plain, pts, dts, frame.keyframe)?;
        summary.frames += 1;
        summary.keyframes += u64::from(frame.keyframe);
        summary.last_capture_us = frame.capture_unix_us;
        if summary.frames.is_multiple_of(PROGRESS_EVERY) {
            progress(&ExportProgress {
                frames: summary.frames,
                capture_us: frame.capture_unix_us,
                from_us,
                to_us,
            });
        }
    }
    let Some(m) = muxer else {
        return Err(ExportError::NothingRecorded {
            camera: camera.to_owned(),
            from_us,
            to_us,
        });
    };
    let last = rebaser.last_delta();
    summary.bytes = m.finish(last)?;
    summary.duration_90k = last_dts - first_dts + last;
    summary.segments = items.segments_used().to_vec();
    progress(&ExportProgress {
        frames: summary.frames,
        capture_us: summary.last_capture_us,
        from_us,
        to_us,
    });
    Ok(summary)
}

#[cfg(test)]
mod tests;
