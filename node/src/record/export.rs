//! Export: a time range of one camera to a standard MP4 file (H.264 in `avc1`, SPS/PPS in
//! the avcC box) that ffprobe, VLC and browsers open.
//!
//! The recording holds ciphertext; the caller supplies the decryption: a function given
//! each [`FrameRecord`] and the stored key of its epoch (as the recorder was given it,
//! i.e. wrapped) that returns the plaintext AVCC access unit. The export starts at the
//! keyframe at or before `from` (see [`super::playback`]) and ends with the last frame
//! captured at or before `to`. Timestamps come from the frames' pts/dts (90 kHz), rebased
//! to 0 and kept strictly increasing across a source restart. Each sample lasts until
//! the next one's dts; the last one lasts as long as the one before it.
//!
//! The file is written as `<out>.part` and renamed when complete, so a failed or
//! interrupted export never leaves a plausible-looking truncated MP4. Muxing uses
//! ffmpeg-next; the one unsafe block sets the stream's size and avcC record, which
//! ffmpeg-next has no safe setter for.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::index::Index;
use super::playback::{frames, PlaybackError, PlaybackItem};
use super::segment::{FrameRecord, SegmentSummary};
use crate::media::h264::{avcc_nals, nal_type, parse_sps, NalType};
use crate::media::{init_ffmpeg, CodecParams, CLOCK_HZ};

/// Media keys kept while exporting (one per epoch seen).
const MAX_KEYS: usize = 1024;
/// Progress is reported every this many frames (and at the end).
const PROGRESS_EVERY: u64 = 30;
/// Frame duration assumed before two frames tell (30 fps).
const DEFAULT_FRAME_90K: i64 = 3000;

/// Why an export failed. The partial output is removed.
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
    #[error("output path {} must be valid UTF-8 without NUL bytes (ffmpeg needs a C string)", .0.display())]
    BadPath(PathBuf),
    #[error("ffmpeg could not be initialised: {0}")]
    FfmpegInit(String),
    #[error("{}: ffmpeg failed to {op}: {source}", path.display())]
    Mux {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: ffmpeg_next::Error,
    },
    #[error("{}: cannot {op}: {source}", path.display())]
    Io {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
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
    pub path: PathBuf,
    pub frames: u64,
    pub keyframes: u64,
    /// Capture time of the first frame (the keyframe at or before `from`) and the last.
    pub first_capture_us: i64,
    pub last_capture_us: i64,
    /// Duration of the video track, 90 kHz.
    pub duration_90k: i64,
    pub width: u32,
    pub height: u32,
    /// Size of the MP4 file.
    pub bytes: u64,
    /// The segments the frames came from (for the manifest).
    pub segments: Vec<SegmentSummary>,
    /// Gap markers met inside the range (the MP4 holds the last picture through them).
    pub gaps: u64,
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

    /// The duration of the last frame: the spacing before it.
    pub(crate) fn last_delta(&self) -> i64 {
        self.last_delta.unwrap_or(DEFAULT_FRAME_90K)
    }
}

/// Builds an avcC record (AVCDecoderConfigurationRecord) with 4-byte NAL lengths.
pub fn avcc_record(sps: &[u8], pps: &[u8]) -> Option<Vec<u8>> {
    if sps.len() < 4 || pps.is_empty() || sps.len() > u16::MAX as usize || pps.len() > u16::MAX as usize {
        return None;
    }
    let mut out = Vec::with_capacity(11 + sps.len() + pps.len());
    out.extend_from_slice(&[1, sps[1], sps[2], sps[3], 0xff, 0xe1]);
    out.extend_from_slice(&(sps.len() as u16).to_be_bytes());
    out.extend_from_slice(sps);
    out.push(1);
    out.extend_from_slice(&(pps.len() as u16).to_be_bytes());
    out.extend_from_slice(pps);
    Some(out)
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

/// The MP4 being written: the muxer and the one-frame delay that gives each sample its
/// exact duration.
struct Muxer {
    path: PathBuf,
    octx: ffmpeg_next::format::context::Output,
    time_base: ffmpeg_next::Rational,
    pending: Option<(Bytes, i64, i64, bool)>,
}

impl Muxer {
    fn create(path: &Path, codec: &CodecParams) -> Result<Self, ExportError> {
        use ffmpeg_next::{codec, encoder, format, media, Rational};
        let mux = |op| {
            let path = path.to_owned();
            move |source| ExportError::Mux { path, op, source }
        };
        let avcc = avcc_record(&codec.sps, &codec.pps).ok_or(ExportError::NoParameterSets)?;
        let mut octx = format::output_as(path, "mp4").map_err(mux("create the MP4"))?;
        let mut params = codec::Parameters::new();
        params.set_medium(media::Type::Video);
        params.set_id(codec::Id::H264);
        set_video_params(&mut params, codec.width, codec.height, &avcc).map_err(mux("set the stream parameters"))?;
        {
            let mut stream = octx
                .add_stream(encoder::find(codec::Id::None))
                .map_err(mux("add the video stream"))?;
            stream.set_parameters(params);
            stream.set_time_base(Rational(1, CLOCK_HZ as i32));
            if codec.fps_num > 0 && codec.fps_den > 0 {
                if let (Ok(n), Ok(d)) = (i32::try_from(codec.fps_num), i32::try_from(codec.fps_den)) {
                    stream.set_avg_frame_rate(Rational(n, d));
                }
            }
        }
        octx.write_header().map_err(mux("write the MP4 header"))?;
        let time_base = octx
            .stream(0)
            .map(|s| s.time_base())
            .unwrap_or(Rational(1, CLOCK_HZ as i32));
        Ok(Muxer {
            path: path.to_owned(),
            octx,
            time_base,
            pending: None,
        })
    }

    fn push(&mut self, data: Bytes, pts: i64, dts: i64, key: bool) -> Result<(), ExportError> {
        if let Some((pdata, ppts, pdts, pkey)) = self.pending.take() {
            self.write(&pdata, ppts, pdts, dts - pdts, pkey)?;
        }
        self.pending = Some((data, pts, dts, key));
        Ok(())
    }

    fn write(&mut self, data: &[u8], pts: i64, dts: i64, duration: i64, key: bool) -> Result<(), ExportError> {
        use ffmpeg_next::{packet, Packet, Rational};
        let mut pkt = Packet::copy(data);
        pkt.set_stream(0);
        pkt.set_pts(Some(pts));
        pkt.set_dts(Some(dts));
        pkt.set_duration(duration);
        if key {
            pkt.set_flags(packet::Flags::KEY);
        }
        pkt.rescale_ts(Rational(1, CLOCK_HZ as i32), self.time_base);
        pkt.write_interleaved(&mut self.octx)
            .map_err(|source| ExportError::Mux {
                path: self.path.clone(),
                op: "write a frame",
                source,
            })
    }

    fn finish(mut self, last_duration: i64) -> Result<(), ExportError> {
        if let Some((data, pts, dts, key)) = self.pending.take() {
            self.write(&data, pts, dts, last_duration, key)?;
        }
        self.octx.write_trailer().map_err(|source| ExportError::Mux {
            path: self.path.clone(),
            op: "write the MP4 index (moov)",
            source,
        })
    }
}

/// Sets width, height and the avcC extradata of codec parameters.
#[allow(unsafe_code)]
fn set_video_params(
    params: &mut ffmpeg_next::codec::Parameters,
    width: u32,
    height: u32,
    avcc: &[u8],
) -> Result<(), ffmpeg_next::Error> {
    use ffmpeg_next::ffi;
    let (Ok(w), Ok(h), Ok(len)) = (i32::try_from(width), i32::try_from(height), i32::try_from(avcc.len())) else {
        return Err(ffmpeg_next::Error::InvalidData);
    };
    let padding = ffi::AV_INPUT_BUFFER_PADDING_SIZE as usize;
    // SAFETY: `params` owns a valid AVCodecParameters (allocated by
    // avcodec_parameters_alloc in Parameters::new). extradata must come from av_malloc
    // with AV_INPUT_BUFFER_PADDING_SIZE zeroed bytes after it: av_mallocz gives zeroed
    // memory of the full size, we check it for null, copy `len` bytes into it (it has
    // `len + padding`), and hand ownership to the parameters, which free it with
    // av_freep in avcodec_parameters_free. A previous extradata is freed first.
    unsafe {
        let p = params.as_mut_ptr();
        (*p).width = w;
        (*p).height = h;
        let buf = ffi::av_mallocz(avcc.len() + padding) as *mut u8;
        if buf.is_null() {
            // ENOMEM
            return Err(ffmpeg_next::Error::Other { errno: 12 });
        }
        std::ptr::copy_nonoverlapping(avcc.as_ptr(), buf, avcc.len());
        if !(*p).extradata.is_null() {
            ffi::av_freep(std::ptr::addr_of_mut!((*p).extradata).cast());
        }
        (*p).extradata = buf;
        (*p).extradata_size = len;
    }
    Ok(())
}

/// Exports `camera` over `[from_us, to_us]` to the MP4 file `out`. `decrypt` turns a
/// recorded frame (and the stored key of its epoch, if the recording has it) into the
/// plaintext AVCC access unit; `progress` is called every few frames.
pub fn export_mp4<D, E, P>(
    index: &Index,
    camera: &str,
    from_us: i64,
    to_us: i64,
    out: &Path,
    mut decrypt: D,
    mut progress: P,
) -> Result<ExportSummary, ExportError>
where
    D: FnMut(&FrameRecord, Option<&Bytes>) -> Result<Bytes, E>,
    E: std::fmt::Display,
    P: FnMut(&ExportProgress),
{
    let part = part_path(out)?;
    init_ffmpeg().map_err(ExportError::FfmpegInit)?;
    let result = export_into(index, camera, from_us, to_us, &part, &mut decrypt, &mut progress);
    match result {
        Ok(mut summary) => {
            std::fs::rename(&part, out).map_err(|source| ExportError::Io {
                path: out.to_owned(),
                op: "rename the finished export",
                source,
            })?;
            summary.path = out.to_owned();
            summary.bytes = std::fs::metadata(out)
                .map_err(|source| ExportError::Io {
                    path: out.to_owned(),
                    op: "read the export's size",
                    source,
                })?
                .len();
            Ok(summary)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&part);
            Err(e)
        }
    }
}

fn part_path(out: &Path) -> Result<PathBuf, ExportError> {
    let name = out
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| ExportError::BadPath(out.to_owned()))?;
    let part = out.with_file_name(format!("{name}.part"));
    match part.to_str() {
        Some(s) if !s.contains('\0') => Ok(part),
        _ => Err(ExportError::BadPath(out.to_owned())),
    }
}

fn export_into<D, E, P>(
    index: &Index,
    camera: &str,
    from_us: i64,
    to_us: i64,
    part: &Path,
    decrypt: &mut D,
    progress: &mut P,
) -> Result<ExportSummary, ExportError>
where
    D: FnMut(&FrameRecord, Option<&Bytes>) -> Result<Bytes, E>,
    E: std::fmt::Display,
    P: FnMut(&ExportProgress),
{
    let mut items = frames(index, camera, from_us, to_us)?;
    let mut keys: HashMap<u64, Bytes> = HashMap::new();
    let mut codec: Option<CodecParams> = None;
    let mut muxer: Option<Muxer> = None;
    let mut rebaser = TimestampRebaser::default();
    let mut summary = ExportSummary {
        path: part.to_owned(),
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
    };
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
            PlaybackItem::Gap { .. } => {
                summary.gaps += 1;
                continue;
            }
            PlaybackItem::Frame(f) => f,
        };
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
            muxer = Some(Muxer::create(part, &c)?);
            codec = Some(c);
        }
        let Some(m) = muxer.as_mut() else {
            continue;
        };
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
    m.finish(last)?;
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
