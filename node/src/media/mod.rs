//! Media: H.264 in, access units with timestamps out.
//!
//! Data flow: a source ([`source`]) reads a file (Annex B `.h264`, or any container
//! ffmpeg opens) and yields [`AccessUnit`]s paced in real time; [`h264`] holds the pure
//! parsing it relies on (Annex B and AVCC framing, NAL types, SPS fields, access-unit
//! boundaries). Access units are carried as AVCC (4-byte big-endian length + NAL) in one
//! `Bytes`, which is what goes on the wire unchanged. [`init_ffmpeg`] is the one place
//! ffmpeg is initialised; [`avlog`] routes libav's messages into `tracing`.

pub mod audio_in;
pub mod avlog;
pub mod fmp4;
pub mod g711;
pub mod h264;
pub mod luma;
pub mod motion;
pub mod mux;
pub mod source;

use std::sync::OnceLock;

use bytes::Bytes;

/// Initialises ffmpeg (`ffmpeg-next`) once per process, for every part that demuxes,
/// decodes or muxes (file and RTSP sources, snapshots, export). The error is ffmpeg's
/// message, the same on every later call.
pub fn init_ffmpeg() -> Result<(), String> {
    static INIT: OnceLock<Result<(), String>> = OnceLock::new();
    INIT.get_or_init(|| {
        ffmpeg_next::init().map_err(|e| e.to_string())?;
        avlog::install();
        Ok(())
    })
    .clone()
}

/// 90 kHz: the RTP/MPEG clock every timestamp in camesh uses.
pub const CLOCK_HZ: u64 = 90_000;

/// One coded picture with its timing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessUnit {
    /// AVCC: each NAL unit as a 4-byte big-endian length followed by the NAL bytes.
    /// A keyframe carries its SPS and PPS in-band, in front of the IDR slice.
    pub data: Bytes,
    /// Presentation time, 90 kHz.
    pub pts_90k: u64,
    /// Decode time, 90 kHz (differs from pts when there are B-frames).
    pub dts_90k: u64,
    /// The access unit contains an IDR slice.
    pub keyframe: bool,
}

/// Sequence numbers of audio frames have this bit set: audio and video of one stream are
/// numbered apart (each track's own count, so a video-only viewer sees no gaps) and never
/// share an AEAD nonce (the nonce is the sequence number).
pub const AUDIO_SEQUENCE_BIT: u64 = 1 << 63;

/// Whether a frame with this sequence number is audio.
pub fn is_audio(sequence: u64) -> bool {
    sequence & AUDIO_SEQUENCE_BIT != 0
}

/// An audio codec camesh carries: passed through as the camera sends it, never
/// transcoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AudioCodec {
    /// MPEG-4 AAC, raw access units (no ADTS headers); the AudioSpecificConfig is the
    /// extradata.
    Aac,
    /// G.711 A-law and µ-law.
    Pcma,
    Pcmu,
    Opus,
}

impl AudioCodec {
    /// The name in `AudioConfig.codec`.
    pub fn name(self) -> &'static str {
        match self {
            AudioCodec::Aac => "aac",
            AudioCodec::Pcma => "pcma",
            AudioCodec::Pcmu => "pcmu",
            AudioCodec::Opus => "opus",
        }
    }

    pub fn from_name(s: &str) -> Option<AudioCodec> {
        Some(match s {
            "aac" => AudioCodec::Aac,
            "pcma" => AudioCodec::Pcma,
            "pcmu" => AudioCodec::Pcmu,
            "opus" => AudioCodec::Opus,
            _ => return None,
        })
    }
}

/// What an audio decoder needs before the first audio frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AudioParams {
    pub codec: AudioCodec,
    pub sample_rate: u32,
    pub channels: u32,
    pub extradata: Bytes,
}

/// One coded audio frame (an AAC access unit, a G.711 packet's samples, an Opus packet).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AudioUnit {
    pub data: Bytes,
    /// Presentation time, 90 kHz, on the video's timeline.
    pub pts_90k: u64,
}

/// What a decoder needs to know about a stream before its first frame.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CodecParams {
    /// The sequence parameter set NAL (without start code or length prefix).
    pub sps: Bytes,
    /// The picture parameter set NAL.
    pub pps: Bytes,
    pub width: u32,
    pub height: u32,
    pub profile_idc: u8,
    pub level_idc: u8,
    /// Frame rate as a fraction; `0/0` when unknown.
    pub fps_num: u32,
    pub fps_den: u32,
}
