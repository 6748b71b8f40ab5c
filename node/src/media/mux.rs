//! Writing video and audio into a standard container (blocking, ffmpeg): Matroska or
//! MPEG-TS, to a file or stdout, as `mesh watch --format mkv|mpegts` does. The coded
//! frames go in as they came (no transcoding): H.264 (AVCC in, avcC in Matroska, Annex B
//! in MPEG-TS) and the camera's audio (AAC with its AudioSpecificConfig, G.711, Opus).
//! Times are 90 kHz in, rebased so the file starts at 0.

use ffmpeg_next::codec::{self, Id};
use ffmpeg_next::ffi;
use ffmpeg_next::{format, Packet, Rational};

use super::h264::avcc_nals;
use super::{AudioCodec, AudioParams, CodecParams};

#[derive(Debug, thiserror::Error)]
pub enum MuxError {
    #[error("ffmpeg could not be initialised: {0}")]
    Init(String),
    #[error("cannot write {what} to {path:?}: {source}")]
    Ffmpeg {
        what: &'static str,
        path: String,
        source: ffmpeg_next::Error,
    },
    #[error("the video's codec parameters have no SPS/PPS yet")]
    NoParameterSets,
}

/// The containers offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Container {
    Matroska,
    MpegTs,
}

impl Container {
    fn ffmpeg_name(self) -> &'static str {
        match self {
            Container::Matroska => "matroska",
            Container::MpegTs => "mpegts",
        }
    }
}

const TB_90K: Rational = Rational(1, 90_000);

/// An open output.
pub struct Muxer {
    out: format::context::Output,
    path: String,
    container: Container,
    video: usize,
    audio: Option<usize>,
    /// The first video dts: time 0 of the file.
    base: Option<i64>,
    last_dts: [i64; 2],
    pub video_frames: u64,
    pub audio_frames: u64,
}

impl std::fmt::Debug for Muxer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Muxer")
            .field("path", &self.path)
            .field("container", &self.container)
            .finish_non_exhaustive()
    }
}

/// AVCDecoderConfigurationRecord (ISO 14496-15) of one SPS and one PPS, 4-byte lengths.
fn avcc_record(sps: &[u8], pps: &[u8]) -> Vec<u8> {
    let mut b = vec![1, sps.get(1).copied().unwrap_or(0), sps.get(2).copied().unwrap_or(0)];
    b.extend([sps.get(3).copied().unwrap_or(0), 0xff, 0xe1]);
    b.extend_from_slice(&u16::try_from(sps.len()).unwrap_or(0).to_be_bytes());
    b.extend_from_slice(sps);
    b.push(1);
    b.extend_from_slice(&u16::try_from(pps.len()).unwrap_or(0).to_be_bytes());
    b.extend_from_slice(pps);
    b
}

fn annexb(avcc: &[u8], out: &mut Vec<u8>) {
    for nal in avcc_nals(avcc).flatten() {
        out.extend_from_slice(&[0, 0, 0, 1]);
        out.extend_from_slice(nal);
    }
}

/// Sets a stream's codec parameters from scratch (ffmpeg-next has no setters for a
/// stream copied without an encoder).
#[allow(unsafe_code)]
fn set_codecpar(
    params: &mut codec::Parameters,
    video: Option<(u32, u32)>,
    audio: Option<(u32, u32)>,
    id: Id,
    extradata: &[u8],
) {
    // SAFETY: `params` owns a valid AVCodecParameters (made by avcodec_parameters_alloc)
    // for the duration of this call. Extradata is allocated with av_mallocz, padded as
    // ffmpeg requires, and owned by the parameters from then on (freed with them).
    unsafe {
        let p = &mut *params.as_mut_ptr();
        p.codec_id = id.into();
        if let Some((w, h)) = video {
            p.codec_type = ffi::AVMediaType::AVMEDIA_TYPE_VIDEO;
            p.width = i32::try_from(w).unwrap_or(0);
            p.height = i32::try_from(h).unwrap_or(0);
        }
        if let Some((rate, channels)) = audio {
            p.codec_type = ffi::AVMediaType::AVMEDIA_TYPE_AUDIO;
            p.sample_rate = i32::try_from(rate).unwrap_or(0);
            ffi::av_channel_layout_default(&mut p.ch_layout, i32::try_from(channels).unwrap_or(1));
        }
        if !extradata.is_empty() {
            let pad = ffi::AV_INPUT_BUFFER_PADDING_SIZE as usize;
            let buf = ffi::av_mallocz(extradata.len() + pad).cast::<u8>();
            if !buf.is_null() {
                std::ptr::copy_nonoverlapping(extradata.as_ptr(), buf, extradata.len());
                p.extradata = buf;
                p.extradata_size = i32::try_from(extradata.len()).unwrap_or(0);
            }
        }
    }
}

impl Muxer {
    /// Creates `path` (`-`: stdout) in `container` with the video and, if given, audio.
    pub fn create(
        path: &str,
        container: Container,
        video: &CodecParams,
        audio: Option<&AudioParams>,
    ) -> Result<Muxer, MuxError> {
        super::init_ffmpeg().map_err(MuxError::Init)?;
        if video.sps.is_empty() || video.pps.is_empty() {
            return Err(MuxError::NoParameterSets);
        }
        let target = if path == "-" { "pipe:1" } else { path };
        let fail = |what: &'static str| {
            let path = path.to_owned();
            move |source| MuxError::Ffmpeg { what, path, source }
        };
        let mut out = format::output_as(target, container.ffmpeg_name()).map_err(fail("a container"))?;
        let extra = match container {
            Container::Matroska => avcc_record(&video.sps, &video.pps),
            Container::MpegTs => {
                let mut b = Vec::new();
                for ps in [&video.sps, &video.pps] {
                    b.extend_from_slice(&[0, 0, 0, 1]);
                    b.extend_from_slice(ps);
                }
                b
            }
        };
        let mut vp = codec::Parameters::new();
        set_codecpar(&mut vp, Some((video.width, video.height)), None, Id::H264, &extra);
        let video_index = {
            let mut st = out
                .add_stream(None::<ffmpeg_next::Codec>)
                .map_err(fail("the video stream"))?;
            st.set_parameters(vp);
            st.set_time_base(TB_90K);
            st.index()
        };
        let audio_index = match audio {
            None => None,
            Some(a) => {
                let id = match a.codec {
                    AudioCodec::Aac => Id::AAC,
                    AudioCodec::Pcma => Id::PCM_ALAW,
                    AudioCodec::Pcmu => Id::PCM_MULAW,
                    AudioCodec::Opus => Id::OPUS,
                };
                let mut ap = codec::Parameters::new();
                set_codecpar(&mut ap, None, Some((a.sample_rate, a.channels)), id, &a.extradata);
                let mut st = out
                    .add_stream(None::<ffmpeg_next::Codec>)
                    .map_err(fail("the audio stream"))?;
                st.set_parameters(ap);
                st.set_time_base(TB_90K);
                Some(st.index())
            }
        };
        out.write_header().map_err(fail("the header"))?;
        Ok(Muxer {
            out,
            path: path.to_owned(),
            container,
            video: video_index,
            audio: audio_index,
            base: None,
            last_dts: [i64::MIN; 2],
            video_frames: 0,
            audio_frames: 0,
        })
    }

    fn write(&mut self, track: usize, data: &[u8], pts: i64, dts: i64, key: bool) -> Result<(), MuxError> {
        let Some(base) = self.base else { return Ok(()) };
        let (pts, dts) = (pts - base, dts - base);
        let slot = usize::from(track != self.video);
        // Never backwards, never before the start.
        if dts < 0 || dts <= self.last_dts[slot] {
            return Ok(());
        }
        self.last_dts[slot] = dts;
        let mut p = Packet::copy(data);
        p.set_stream(track);
        p.set_pts(Some(pts.max(dts)));
        p.set_dts(Some(dts));
        if key {
            p.set_flags(codec::packet::Flags::KEY);
        }
        let tb = self.out.stream(track).map_or(TB_90K, |s| s.time_base());
        p.rescale_ts(TB_90K, tb);
        let path = self.path.clone();
        p.write_interleaved(&mut self.out).map_err(|source| MuxError::Ffmpeg {
            what: "a frame",
            path,
            source,
        })
    }

    /// One video access unit (AVCC, as camesh carries it). The file starts at the first
    /// keyframe.
    pub fn video(&mut self, avcc: &[u8], keyframe: bool, pts_90k: u64, dts_90k: u64) -> Result<(), MuxError> {
        let (pts, dts) = (i64::try_from(pts_90k).unwrap_or(0), i64::try_from(dts_90k).unwrap_or(0));
        if self.base.is_none() {
            if !keyframe {
                return Ok(());
            }
            self.base = Some(dts);
        }
        let data = match self.container {
            Container::Matroska => avcc.to_vec(),
            Container::MpegTs => {
                let mut b = Vec::with_capacity(avcc.len() + 16);
                annexb(avcc, &mut b);
                b
            }
        };
        self.write(self.video, &data, pts, dts, keyframe)?;
        self.video_frames += 1;
        Ok(())
    }

    /// One audio frame (dropped before the first video keyframe, or without an audio
    /// stream).
    pub fn audio(&mut self, data: &[u8], pts_90k: u64) -> Result<(), MuxError> {
        let Some(track) = self.audio else { return Ok(()) };
        let t = i64::try_from(pts_90k).unwrap_or(0);
        let before = self.last_dts[1];
        self.write(track, data, t, t, true)?;
        if self.last_dts[1] != before {
            self.audio_frames += 1;
        }
        Ok(())
    }

    /// Writes the trailer (the file is complete).
    pub fn finish(mut self) -> Result<(), MuxError> {
        let path = self.path.clone();
        self.out.write_trailer().map_err(|source| MuxError::Ffmpeg {
            what: "the trailer",
            path,
            source,
        })
    }
}
