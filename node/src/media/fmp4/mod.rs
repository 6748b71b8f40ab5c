//! Fragmented MP4 (ISO BMFF, ISO/IEC 14496-12 and -15) for H.264 and the camera's audio,
//! written by hand (pure, no IO): an init segment (`ftyp` + `moov` with an `avcC`, the
//! audio track's sample entry ([`audio`]) and empty sample tables, `mvex`), then one
//! `moof` + `mdat` fragment per access unit or audio frame. This is what Media
//! Source Extensions, VLC, ffplay and ffprobe read as a live `.mp4` over HTTP (the
//! gateway), and what an NVR export streams to the asking peer without a file
//! ([`init_segment`] and [`fragment`], timed by the export itself).
//!
//! [`Muxer`] starts at a keyframe, keeps timestamps continuous when the camera's timeline
//! jumps (a reconnection, a restarted source), writes the camera's B-frame reordering as
//! composition offsets, and takes SPS/PPS out of the samples (they live in `avcC`). A
//! frame is written when the next one arrives, so its duration is exact. A change of
//! SPS/PPS cannot be expressed in one init segment: [`Push::Reinit`] tells the caller to
//! end this stream (players reconnect and get a new one). Audio frames
//! ([`Muxer::push_audio`]) are placed on the video's output timeline by
//! [`audio::AudioTimeline`].

pub mod audio;
mod boxes;

use bytes::{BufMut, Bytes, BytesMut};

pub use audio::{AudioSample, AudioTimeline, AUDIO_TRACK_ID};
use boxes::Boxes;

use crate::media::h264::{avcc_nals, nal_type, parse_sps, NalType};
use crate::media::{AudioParams, CodecParams, CLOCK_HZ};

/// Track id of the video track.
pub const VIDEO_TRACK_ID: u32 = 1;

/// A jump in decode time larger than this (or backwards) is a discontinuity, not a pause.
const MAX_STEP_90K: u64 = 10 * CLOCK_HZ;

/// One access unit as the muxer takes it.
#[derive(Clone, Debug)]
pub struct Sample {
    /// AVCC with 4-byte lengths (what camesh frames carry).
    pub data: Bytes,
    pub pts_90k: u64,
    pub dts_90k: u64,
    pub keyframe: bool,
}

/// What [`Muxer::push`] produced.
#[derive(Debug, PartialEq, Eq)]
pub enum Push {
    /// Nothing to send yet (waiting for a keyframe, or for the next frame's time).
    Nothing,
    /// A `moof` + `mdat` fragment to send.
    Fragment(Bytes),
    /// The parameter sets changed: end this stream after sending `last` (if any).
    Reinit { last: Option<Bytes> },
}

#[derive(Debug, thiserror::Error)]
pub enum Fmp4Error {
    #[error("no SPS/PPS: cannot describe the video")]
    NoParams,
    #[error("the SPS cannot be parsed: {0}")]
    BadSps(#[from] crate::media::h264::H264Error),
}

/// The RFC 6381 codec string of an H.264 stream (`avc1.PPCCLL`), e.g. `avc1.4d401e`.
pub fn codec_string(sps: &[u8]) -> String {
    match sps {
        [_, p, c, l, ..] => format!("avc1.{p:02x}{c:02x}{l:02x}"),
        _ => "avc1.42e01e".into(),
    }
}

/// The MIME type with codecs, for `Content-Type` and `MediaSource.addSourceBuffer`.
pub fn mime_type(params: &CodecParams) -> String {
    format!("video/mp4; codecs=\"{}\"", codec_string(&params.sps))
}

/// [`mime_type`] of a stream with this audio track (a codec without an RFC 6381 string,
/// G.711, is not named).
pub fn mime_type_with(params: &CodecParams, audio: Option<&AudioParams>) -> String {
    match audio.and_then(audio::codec_string) {
        Some(a) => format!("video/mp4; codecs=\"{},{a}\"", codec_string(&params.sps)),
        None => mime_type(params),
    }
}

/// Fragmented MP4 writer for one live stream.
#[derive(Debug)]
pub struct Muxer {
    sps: Bytes,
    pps: Bytes,
    default_duration: u64,
    sequence: u32,
    /// The frame waiting for its successor (which gives its duration).
    pending: Option<(Sample, u64)>,
    /// Output decode time of the pending frame, and the offset mapping input to output.
    offset: i128,
    started: bool,
    audio: Option<(AudioParams, AudioTimeline)>,
}

impl Muxer {
    pub fn new(params: &CodecParams) -> Result<Self, Fmp4Error> {
        if params.sps.is_empty() || params.pps.is_empty() {
            return Err(Fmp4Error::NoParams);
        }
        parse_sps(&params.sps)?;
        let default_duration = if params.fps_num > 0 && params.fps_den > 0 {
            (CLOCK_HZ * u64::from(params.fps_den) / u64::from(params.fps_num)).clamp(1, CLOCK_HZ)
        } else {
            3000
        };
        Ok(Muxer {
            sps: params.sps.clone(),
            pps: params.pps.clone(),
            default_duration,
            sequence: 0,
            pending: None,
            offset: 0,
            started: false,
            audio: None,
        })
    }

    /// The stream has this audio track too ([`Muxer::push_audio`]).
    pub fn with_audio(mut self, audio: Option<AudioParams>) -> Self {
        self.audio = audio.map(|a| {
            let t = AudioTimeline::new(&a);
            (a, t)
        });
        self
    }

    /// `ftyp` + `moov`: what a player needs before the first fragment.
    pub fn init_segment(&self) -> Result<Bytes, Fmp4Error> {
        init_segment_with(&self.sps, &self.pps, self.audio.as_ref().map(|a| &a.0))
    }

    /// Adds an audio frame (its pts on the camera's 90 kHz timeline). Audio before the
    /// first keyframe, or without an audio track, is dropped.
    pub fn push_audio(&mut self, data: Bytes, pts_90k: u64) -> Push {
        if !self.started {
            return Push::Nothing;
        }
        let at = i128::from(pts_90k) + self.offset;
        let Some((_, timeline)) = self.audio.as_mut() else {
            return Push::Nothing;
        };
        match timeline.push(data, at) {
            Some(s) => Push::Fragment(self.audio_fragment(&s)),
            None => Push::Nothing,
        }
    }

    fn audio_fragment(&mut self, s: &AudioSample) -> Bytes {
        // Fragment sequence numbers are shared by the tracks: they must increase.
        self.sequence = self.sequence.wrapping_add(1);
        track_fragment(AUDIO_TRACK_ID, self.sequence, &s.data, s.dts, s.duration, 0, true)
    }

    /// Adds the next access unit (decode order). Frames before the first keyframe are
    /// dropped; SPS/PPS are taken out of the sample.
    pub fn push(&mut self, s: Sample) -> Push {
        if !self.started {
            if !s.keyframe {
                return Push::Nothing;
            }
            self.started = true;
            // The first keyframe decodes at 0; its reordering offset is kept.
            self.offset = -i128::from(s.dts_90k);
        }
        // SPS/PPS: the same as in avcC are dropped; different ones need a new init segment.
        let mut data = BytesMut::with_capacity(s.data.len());
        for nal in avcc_nals(&s.data) {
            let Ok(nal) = nal else { continue };
            match nal_type(nal) {
                Some(NalType::SPS) if nal != &self.sps[..] => return self.reinit(),
                Some(NalType::PPS) if nal != &self.pps[..] => return self.reinit(),
                Some(NalType::SPS | NalType::PPS | NalType::AUD) => {}
                _ => {
                    data.put_u32(nal.len() as u32);
                    data.put_slice(nal);
                }
            }
        }
        if data.is_empty() {
            return Push::Nothing;
        }
        let mut out_dts = i128::from(s.dts_90k) + self.offset;
        if let Some((_, prev_dts)) = &self.pending {
            let prev = i128::from(*prev_dts);
            if out_dts <= prev || out_dts - prev > i128::from(MAX_STEP_90K) {
                // A new timeline: continue one frame after the previous frame.
                let want = prev + i128::from(self.default_duration);
                self.offset += want - out_dts;
                out_dts = want;
            }
        }
        let out_dts = u64::try_from(out_dts.max(0)).unwrap_or(0);
        let sample = Sample {
            data: data.freeze(),
            ..s
        };
        match self.pending.replace((sample, out_dts)) {
            Some((prev, prev_dts)) => Push::Fragment(self.fragment(&prev, prev_dts, out_dts - prev_dts)),
            None => Push::Nothing,
        }
    }

    /// The pending frames as last fragments (the stream ends).
    pub fn flush(&mut self) -> Option<Bytes> {
        let audio = self.audio.as_mut().and_then(|(_, t)| t.flush());
        let audio = audio.map(|s| self.audio_fragment(&s));
        let video = self
            .pending
            .take()
            .map(|(prev, prev_dts)| self.fragment(&prev, prev_dts, self.default_duration));
        match (video, audio) {
            (Some(v), Some(a)) => Some([v, a].concat().into()),
            (v, a) => v.or(a),
        }
    }

    fn reinit(&mut self) -> Push {
        Push::Reinit { last: self.flush() }
    }

    fn fragment(&mut self, s: &Sample, dts: u64, duration: u64) -> Bytes {
        self.sequence = self.sequence.wrapping_add(1);
        let cts = s.pts_90k.saturating_sub(s.dts_90k);
        fragment(self.sequence, &s.data, dts, duration, cts, s.keyframe)
    }
}

/// One `moof` + `mdat` fragment holding one video sample: `data` (AVCC) decoded at `dts`
/// (90 kHz, from the start of the track), lasting `duration`, shown `cts` after its
/// decode time. `sequence` counts fragments from 1.
pub fn fragment(sequence: u32, data: &[u8], dts: u64, duration: u64, cts: u64, keyframe: bool) -> Bytes {
    track_fragment(VIDEO_TRACK_ID, sequence, data, dts, duration, cts, keyframe)
}

/// [`fragment`] for any track (times in the track's timescale); `sync` marks a sample
/// that decodes on its own (a keyframe, every audio frame).
pub fn track_fragment(track: u32, sequence: u32, data: &[u8], dts: u64, duration: u64, cts: u64, sync: bool) -> Bytes {
    let cts = cts.min(u64::from(u32::MAX)) as u32;
    let duration = duration.clamp(1, u64::from(u32::MAX)) as u32;
    let flags: u32 = if sync { 0x0200_0000 } else { 0x0101_0000 };
    let size = data.len() as u32;

    let mut moof = Boxes::default();
    moof.open(b"moof");
    moof.full(b"mfhd", 0, 0);
    moof.u32(sequence);
    moof.close();
    moof.open(b"traf");
    // default-base-is-moof: data offsets count from this moof.
    moof.full(b"tfhd", 0, 0x02_0000);
    moof.u32(track);
    moof.close();
    moof.full(b"tfdt", 1, 0);
    moof.u64(dts);
    moof.close();
    // data-offset, duration, size, flags, composition offset.
    moof.full(b"trun", 0, 0x0001 | 0x0100 | 0x0200 | 0x0400 | 0x0800);
    moof.u32(1);
    let data_offset_at = moof.buf.len();
    moof.u32(0);
    moof.u32(duration);
    moof.u32(size);
    moof.u32(flags);
    moof.u32(cts);
    moof.close();
    moof.close();
    moof.close();
    let mut out = moof.buf;
    let data_offset = (out.len() + 8) as u32;
    out[data_offset_at..data_offset_at + 4].copy_from_slice(&data_offset.to_be_bytes());
    out.reserve(8 + data.len());
    out.put_u32(8 + size);
    out.put_slice(b"mdat");
    out.put_slice(data);
    out.freeze()
}

/// `ftyp` + `moov` for one H.264 track with this SPS and PPS.
pub fn init_segment(sps: &[u8], pps: &[u8]) -> Result<Bytes, Fmp4Error> {
    init_segment_with(sps, pps, None)
}

/// [`init_segment`] with an audio track (track 2) when `audio` is given.
pub fn init_segment_with(sps: &[u8], pps: &[u8], audio: Option<&AudioParams>) -> Result<Bytes, Fmp4Error> {
    if sps.len() < 4 || pps.is_empty() {
        return Err(Fmp4Error::NoParams);
    }
    let info = parse_sps(sps)?;
    let (w, h) = (info.width.min(0xffff), info.height.min(0xffff));
    let mut b = Boxes::default();
    b.open(b"ftyp");
    b.bytes(b"isom");
    b.u32(0x200);
    for brand in [b"isom", b"iso6", b"avc1", b"mp41"] {
        b.bytes(brand);
    }
    b.close();

    b.open(b"moov");
    b.full(b"mvhd", 0, 0);
    b.u32(0); // creation time
    b.u32(0); // modification time
    b.u32(1000); // timescale
    b.u32(0); // duration: unknown (live)
    b.u32(0x0001_0000); // rate 1.0
    b.u16(0x0100); // volume 1.0
    b.zeros(10);
    b.matrix();
    b.zeros(24); // pre_defined
    b.u32(AUDIO_TRACK_ID + 1); // next track id
    b.close();

    b.open(b"trak");
    b.full(b"tkhd", 0, 0x3); // enabled, in movie
    b.u32(0);
    b.u32(0);
    b.u32(VIDEO_TRACK_ID);
    b.u32(0);
    b.u32(0); // duration
    b.zeros(8);
    b.u16(0); // layer
    b.u16(0); // alternate group
    b.u16(0); // volume (video)
    b.u16(0);
    b.matrix();
    b.u32(w << 16);
    b.u32(h << 16);
    b.close();

    b.open(b"mdia");
    b.media_header(CLOCK_HZ as u32, b"vide", "camesh video");
    b.open(b"minf");
    b.full(b"vmhd", 0, 1);
    b.zeros(8);
    b.close();
    b.dinf();
    b.open(b"stbl");
    b.full(b"stsd", 0, 0);
    b.u32(1);
    b.open(b"avc1");
    b.zeros(6);
    b.u16(1); // data reference index
    b.zeros(16);
    b.u16(w as u16);
    b.u16(h as u16);
    b.u32(0x0048_0000); // 72 dpi
    b.u32(0x0048_0000);
    b.u32(0);
    b.u16(1); // frame count
    let mut name = [0u8; 32];
    name[0] = 6;
    name[1..7].copy_from_slice(b"camesh");
    b.bytes(&name);
    b.u16(0x0018); // depth
    b.u16(0xffff); // pre_defined -1
    b.open(b"avcC");
    b.u8(1);
    b.u8(sps[1]);
    b.u8(sps[2]);
    b.u8(sps[3]);
    b.u8(0xff); // 4-byte NAL lengths
    b.u8(0xe1); // one SPS
    b.u16(sps.len() as u16);
    b.bytes(sps);
    b.u8(1); // one PPS
    b.u16(pps.len() as u16);
    b.bytes(pps);
    if matches!(info.profile_idc, 100 | 110 | 122 | 144) {
        b.u8(0xfc | (info.chroma_format_idc as u8 & 0x3));
        b.u8(0xf8 | (info.bit_depth_luma.saturating_sub(8) & 0x7));
        b.u8(0xf8 | (info.bit_depth_chroma.saturating_sub(8) & 0x7));
        b.u8(0);
    }
    b.close(); // avcC
    b.close(); // avc1
    b.close(); // stsd
    b.empty_sample_tables();
    b.close(); // stbl
    b.close(); // minf
    b.close(); // mdia
    b.close(); // trak
    if let Some(a) = audio {
        audio::trak(&mut b, a);
    }

    b.open(b"mvex");
    let tracks: &[u32] = if audio.is_some() {
        &[VIDEO_TRACK_ID, AUDIO_TRACK_ID]
    } else {
        &[VIDEO_TRACK_ID]
    };
    for &track in tracks {
        b.full(b"trex", 0, 0);
        b.u32(track);
        b.u32(1); // sample description index
        b.u32(0);
        b.u32(0);
        b.u32(0);
        b.close();
    }
    b.close();
    b.close(); // moov
    Ok(b.buf.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::h264::{split_annexb, to_avcc};

    fn fixture_params() -> (CodecParams, Vec<Bytes>) {
        let file = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../fixtures/cam-640x360-30fps-gop2s.h264"
        ))
        .expect("fixture");
        let nals: Vec<Bytes> = split_annexb(&file).map(Bytes::copy_from_slice).collect();
        let sps = nals
            .iter()
            .find(|n| nal_type(n) == Some(NalType::SPS))
            .expect("sps")
            .clone();
        let pps = nals
            .iter()
            .find(|n| nal_type(n) == Some(NalType::PPS))
            .expect("pps")
            .clone();
        let params = CodecParams {
            sps,
            pps,
            width: 640,
            height: 360,
            profile_idc: 77,
            level_idc: 30,
            fps_num: 30,
            fps_den: 1,
        };
        (params, nals)
    }

    /// Top-level boxes: (type, size).
    fn boxes(data: &[u8]) -> Vec<(String, usize)> {
        let mut out = Vec::new();
        let mut at = 0;
        while at + 8 <= data.len() {
            let size = u32::from_be_bytes(data[at..at + 4].try_into().expect("4")) as usize;
            out.push((String::from_utf8_lossy(&data[at + 4..at + 8]).into_owned(), size));
            assert!(size >= 8 && at + size <= data.len(), "box size {size} at {at}");
            at += size;
        }
        assert_eq!(at, data.len());
        out
    }

    #[test]
    fn init_segment_has_ftyp_and_moov_with_avcc() {
        let (p, _) = fixture_params();
        let init = init_segment(&p.sps, &p.pps).expect("init");
        let b = boxes(&init);
        assert_eq!(b.iter().map(|x| x.0.as_str()).collect::<Vec<_>>(), ["ftyp", "moov"]);
        let avcc = init.windows(4).position(|w| w == b"avcC").expect("avcC");
        assert_eq!(init[avcc + 4], 1);
        assert_eq!(&init[avcc + 5..avcc + 8], &p.sps[1..4]);
        assert_eq!(
            codec_string(&p.sps),
            format!("avc1.{:02x}{:02x}{:02x}", p.sps[1], p.sps[2], p.sps[3])
        );
        assert!(init_segment(&[], &p.pps).is_err());
        assert!(init_segment(&[0x67, 1, 2, 3], &p.pps).is_err(), "garbage SPS");
    }

    #[test]
    fn fragments_start_at_a_keyframe_and_keep_time_continuous() {
        let (p, _) = fixture_params();
        let mut m = Muxer::new(&p).expect("muxer");
        let idr = to_avcc(&[&p.sps[..], &p.pps[..], &[0x65, 0x88, 0x84][..]]);
        let pframe = to_avcc(&[&[0x41u8, 0x9a, 0x02][..]]);
        let s = |data: &Bytes, t: u64, key: bool| Sample {
            data: data.clone(),
            pts_90k: t + 3000,
            dts_90k: t,
            keyframe: key,
        };
        assert_eq!(m.push(s(&pframe, 0, false)), Push::Nothing, "not before a keyframe");
        assert_eq!(m.push(s(&idr, 900_000, true)), Push::Nothing, "waits for the duration");
        let Push::Fragment(f1) = m.push(s(&pframe, 903_000, false)) else {
            panic!()
        };
        assert_eq!(
            boxes(&f1).iter().map(|x| x.0.as_str()).collect::<Vec<_>>(),
            ["moof", "mdat"]
        );
        // tfdt of the first fragment is 0; the mdat holds only the IDR slice (no SPS/PPS).
        let tfdt = f1.windows(4).position(|w| w == b"tfdt").expect("tfdt");
        assert_eq!(u64::from_be_bytes(f1[tfdt + 8..tfdt + 16].try_into().expect("8")), 0);
        assert!(f1.ends_with(&[0, 0, 0, 3, 0x65, 0x88, 0x84]));
        // The source restarts: timestamps jump back to 0; the output keeps going.
        let Push::Fragment(f2) = m.push(s(&idr, 0, true)) else {
            panic!()
        };
        let tfdt = f2.windows(4).position(|w| w == b"tfdt").expect("tfdt");
        assert_eq!(u64::from_be_bytes(f2[tfdt + 8..tfdt + 16].try_into().expect("8")), 3000);
        let Push::Fragment(f3) = m.push(s(&pframe, 3000, false)) else {
            panic!()
        };
        let tfdt = f3.windows(4).position(|w| w == b"tfdt").expect("tfdt");
        assert_eq!(u64::from_be_bytes(f3[tfdt + 8..tfdt + 16].try_into().expect("8")), 6000);
        // New parameter sets: the stream must end.
        let other_sps = {
            let mut v = p.sps.to_vec();
            v[3] = v[3].wrapping_add(1);
            v
        };
        let idr2 = to_avcc(&[&other_sps[..], &p.pps[..], &[0x65, 0x88, 0x84][..]]);
        assert!(matches!(m.push(s(&idr2, 6000, true)), Push::Reinit { last: Some(_) }));
    }

    #[test]
    fn garbage_samples_do_not_panic() {
        let (p, _) = fixture_params();
        let mut m = Muxer::new(&p).expect("muxer");
        for i in 0..64u8 {
            let _ = m.push(Sample {
                data: Bytes::from(vec![i; usize::from(i)]),
                pts_90k: u64::from(i),
                dts_90k: u64::from(i) * 7 % 13,
                keyframe: i % 5 == 0,
            });
        }
    }
}

/// Written with audio and read back by ffprobe and ffmpeg (the real readers).
#[cfg(test)]
mod ffprobe_tests {
    use std::process::Command;

    use super::*;
    use crate::media::h264::{split_annexb, to_avcc};
    use crate::media::AudioCodec;

    fn ffmpeg(args: &[&str]) {
        let st = Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-y"])
            .args(args)
            .status()
            .expect("ffmpeg must be installed (scripts/setup.sh)");
        assert!(st.success(), "ffmpeg {args:?}");
    }

    /// (codec, packets, duration s) of each stream, and whether ffmpeg decodes it cleanly.
    fn probe(path: &std::path::Path) -> Vec<(String, u64, f64)> {
        let out = Command::new("ffprobe")
            .args(["-v", "error", "-count_packets", "-show_entries"])
            .arg("stream=codec_name,nb_read_packets,duration")
            .args(["-of", "csv=p=0"])
            .arg(path)
            .output()
            .expect("ffprobe");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let dec = Command::new("ffmpeg")
            .args(["-v", "error", "-i"])
            .arg(path)
            .args(["-f", "null", "-"])
            .output()
            .expect("ffmpeg");
        assert!(dec.status.success());
        assert_eq!(String::from_utf8_lossy(&dec.stderr).trim(), "", "decode errors");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| {
                let v: Vec<&str> = l.split(',').collect();
                (v[0].to_owned(), v[2].parse().unwrap_or(0), v[1].parse().unwrap_or(0.0))
            })
            .collect()
    }

    /// Two seconds of the fixture (30 fps) with `audio` frames spread over the same time.
    fn mux(audio: AudioParams, frames: Vec<Bytes>) -> Bytes {
        let file = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../fixtures/cam-640x360-30fps-gop2s.h264"
        ))
        .expect("fixture");
        let nals: Vec<&[u8]> = split_annexb(&file).collect();
        let mut aus: Vec<Vec<&[u8]>> = Vec::new();
        // One slice per picture: an access unit ends with its slice.
        let mut au: Vec<&[u8]> = Vec::new();
        for nal in nals {
            au.push(nal);
            if nal_type(nal).is_some_and(NalType::is_vcl) {
                aus.push(std::mem::take(&mut au));
            }
        }
        let sps = aus[0].iter().find(|n| nal_type(n) == Some(NalType::SPS)).expect("sps");
        let pps = aus[0].iter().find(|n| nal_type(n) == Some(NalType::PPS)).expect("pps");
        let params = CodecParams {
            sps: Bytes::copy_from_slice(sps),
            pps: Bytes::copy_from_slice(pps),
            fps_num: 30,
            fps_den: 1,
            ..Default::default()
        };
        let mut m = Muxer::new(&params).expect("muxer").with_audio(Some(audio));
        let mut out = m.init_segment().expect("init").to_vec();
        let base = 900_000u64;
        let (nv, na) = (60usize, frames.len());
        let mut a = 0;
        for (i, au) in aus.iter().take(nv).enumerate() {
            let t = base + i as u64 * 3000;
            let key = au.iter().any(|n| nal_type(n) == Some(NalType::IDR));
            if let Push::Fragment(f) = m.push(Sample {
                data: to_avcc(au),
                pts_90k: t,
                dts_90k: t,
                keyframe: key,
            }) {
                out.extend_from_slice(&f);
            }
            // The audio frames due by the end of this video frame.
            while a < na && (a as u64 * 180_000 / na as u64) < (i as u64 + 1) * 3000 {
                let at = base + a as u64 * 180_000 / na as u64;
                if let Push::Fragment(f) = m.push_audio(frames[a].clone(), at) {
                    out.extend_from_slice(&f);
                }
                a += 1;
            }
        }
        out.extend_from_slice(&m.flush().expect("last"));
        out.into()
    }

    #[test]
    fn aac_and_alaw_tracks_are_read_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        // AAC: 2 s of a tone as ADTS, split into raw frames; the ASC from the header.
        let adts = dir.path().join("tone.aac");
        let a = adts.to_str().expect("utf8");
        ffmpeg(&[
            "-f",
            "lavfi",
            "-i",
            "sine=f=440:r=48000:d=2",
            "-ac",
            "2",
            "-c:a",
            "aac",
            "-f",
            "adts",
            a,
        ]);
        let raw = std::fs::read(&adts).expect("aac");
        let (mut frames, mut at) = (Vec::new(), 0);
        while at + 7 <= raw.len() {
            let len =
                (usize::from(raw[at + 3] & 3) << 11) | (usize::from(raw[at + 4]) << 3) | usize::from(raw[at + 5] >> 5);
            let header = if raw[at + 1] & 1 == 0 { 9 } else { 7 };
            frames.push(Bytes::copy_from_slice(&raw[at + header..at + len]));
            at += len;
        }
        let (profile, rate_idx, ch) = (raw[2] >> 6, (raw[2] >> 2) & 0xf, ((raw[2] & 1) << 2) | (raw[3] >> 6));
        let asc = [
            ((profile + 1) << 3) | (rate_idx >> 1),
            ((rate_idx & 1) << 7) | (ch << 3),
        ];
        let n = frames.len() as u64;
        let aac = AudioParams {
            codec: AudioCodec::Aac,
            sample_rate: 48_000,
            channels: 2,
            extradata: Bytes::copy_from_slice(&asc),
        };
        assert_eq!(
            mime_type_with(
                &CodecParams {
                    sps: Bytes::from_static(&[0x67, 0x4d, 0x40, 0x1e]),
                    ..Default::default()
                },
                Some(&aac)
            ),
            "video/mp4; codecs=\"avc1.4d401e,mp4a.40.2\""
        );
        let out = dir.path().join("aac.mp4");
        std::fs::write(&out, mux(aac, frames)).expect("written");
        let streams = probe(&out);
        assert_eq!(streams.len(), 2, "{streams:?}");
        assert_eq!((streams[0].0.as_str(), streams[0].1), ("h264", 60));
        assert_eq!(streams[1].0, "aac");
        assert_eq!(streams[1].1, n, "{streams:?}");
        assert!((streams[1].2 - 2.0).abs() < 0.1, "{streams:?}");

        // A-law: 20 ms packets of 160 bytes.
        let pcma = AudioParams {
            codec: AudioCodec::Pcma,
            sample_rate: 8000,
            channels: 1,
            extradata: Bytes::new(),
        };
        let frames: Vec<Bytes> = (0..100u8).map(|i| Bytes::from(vec![0xd5 ^ (i & 1); 160])).collect();
        let out = dir.path().join("alaw.mp4");
        std::fs::write(&out, mux(pcma, frames)).expect("written");
        let streams = probe(&out);
        assert_eq!(streams[1].0, "pcm_alaw", "{streams:?}");
        assert!((streams[1].2 - 2.0).abs() < 0.1, "{streams:?}");
    }
}
