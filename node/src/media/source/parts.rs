//! Pieces every source shares, pure or nearly: sorting one access unit's NAL units into
//! parameter sets and pictures (keeping the latest SPS/PPS, putting them in front of a
//! keyframe), reducing frame rates, naming a container's streams in an error, finding
//! the audio stream camesh carries, and reading a stream's codec extradata.
//!
//! Files ([`super::clip`], [`super::container`]) and RTSP cameras ([`super::rtsp`]) go
//! through the same code here, so a keyframe is built the same way whatever its origin.

use bytes::Bytes;

use crate::media::h264::{nal_type, NalType};
use crate::media::{AudioCodec, AudioParams, CLOCK_HZ};

/// One access unit's NAL units, sorted.
#[derive(Debug, Default)]
pub(super) struct AuParts {
    /// SPS and PPS in the order they came.
    pub param_sets: Vec<Bytes>,
    /// Everything else that carries data (slices, SEI), in order.
    pub pictures: Vec<Bytes>,
    pub has_sps: bool,
    pub has_pps: bool,
    /// An IDR slice is present.
    pub idr: bool,
    /// Any slice (VCL unit) is present: without one the unit shows nothing.
    pub has_slice: bool,
}

impl AuParts {
    /// Sorts `nals`, remembering the latest SPS and PPS in `sps`/`pps`. Invalid units and
    /// access-unit delimiters carry nothing a viewer needs and are dropped.
    pub fn sort(nals: Vec<Bytes>, sps: &mut Option<Bytes>, pps: &mut Option<Bytes>) -> Self {
        let mut p = AuParts::default();
        for nal in nals {
            match nal_type(&nal) {
                None | Some(NalType::AUD) => {}
                Some(NalType::SPS) => {
                    p.has_sps = true;
                    *sps = Some(nal.clone());
                    p.param_sets.push(nal);
                }
                Some(NalType::PPS) => {
                    p.has_pps = true;
                    *pps = Some(nal.clone());
                    p.param_sets.push(nal);
                }
                Some(ty) => {
                    p.idr |= ty == NalType::IDR;
                    p.has_slice |= ty.is_vcl();
                    p.pictures.push(nal);
                }
            }
        }
        p
    }

    /// The NAL units of a keyframe: SPS(s), then PPS(s), the latest known ones filling in
    /// for those the unit lacks, then the pictures.
    pub fn keyframe_nals(mut self, sps: &Bytes, pps: &Bytes) -> Vec<Bytes> {
        if !self.has_sps {
            self.param_sets.insert(0, sps.clone());
        }
        if !self.has_pps {
            self.param_sets.push(pps.clone());
        }
        self.param_sets.sort_by_key(|n| nal_type(n) != Some(NalType::SPS));
        self.param_sets.extend(self.pictures);
        self.param_sets
    }

    /// The NAL units of any other frame: its own parameter sets (if any), then pictures.
    pub fn nals(mut self) -> Vec<Bytes> {
        self.param_sets.extend(self.pictures);
        self.param_sets
    }
}

/// `num / den` in lowest terms (e.g. a container's 15360/512 becomes 30/1).
pub(super) fn reduce(num: u32, den: u32) -> (u32, u32) {
    let (mut a, mut b) = (num, den);
    while b != 0 {
        (a, b) = (b, a % b);
    }
    match (num.checked_div(a), den.checked_div(a)) {
        (Some(n), Some(d)) => (n, d),
        _ => (num, den),
    }
}

/// "video hevc, audio aac" (or "no streams"): what a file or camera offers instead of
/// H.264, for the one-line error.
pub(super) fn describe_streams(input: &ffmpeg_next::format::context::Input) -> String {
    let streams = input
        .streams()
        .map(|s| {
            let p = s.parameters();
            format!("{:?} {}", p.medium(), p.id().name()).to_lowercase()
        })
        .collect::<Vec<_>>();
    if streams.is_empty() {
        "no streams".to_string()
    } else {
        streams.join(", ")
    }
}

/// The codec extradata of a stream (the avcC record for MP4/MKV, or Annex B SPS/PPS).
///
/// `ffmpeg-next` has no safe accessor for it, hence the one unsafe block in this module.
#[allow(unsafe_code)]
pub(super) fn extradata(params: &ffmpeg_next::codec::Parameters) -> Vec<u8> {
    // SAFETY: `params` wraps the AVCodecParameters of a stream of an input context that
    // `params` itself keeps alive, and nothing mutates it during this call. FFmpeg's
    // contract is that a non-null `extradata` points to `extradata_size` readable bytes;
    // we check both and copy the bytes out before returning.
    unsafe {
        let p = params.as_ptr();
        let data = (*p).extradata;
        let size = usize::try_from((*p).extradata_size).unwrap_or(0);
        if data.is_null() || size == 0 {
            return Vec::new();
        }
        std::slice::from_raw_parts(data, size).to_vec()
    }
}

/// A timestamp in `time_base` units as 90 kHz ticks, rounded to the nearest.
pub(super) fn ticks_90k(ts: i64, time_base: (i32, i32)) -> Option<i64> {
    let (num, den) = (i128::from(time_base.0), i128::from(time_base.1));
    if den <= 0 || num <= 0 {
        return None;
    }
    let scaled = i128::from(ts) * i128::from(CLOCK_HZ) * num;
    i64::try_from((2 * scaled + den).div_euclid(2 * den)).ok()
}

/// Largest audio frame passed on (an AAC frame is a few hundred bytes; a G.711 packet of
/// 100 ms is 800).
pub(super) const MAX_AUDIO_BYTES: usize = 16 << 10;

/// A camera's or a file's audio stream, when it is one camesh carries.
pub(super) struct AudioTrack {
    pub index: usize,
    pub time_base: (i32, i32),
    pub params: AudioParams,
}

pub(super) fn audio_track(input: &ffmpeg_next::format::context::Input, shown: &str) -> Option<AudioTrack> {
    use ffmpeg_next::codec::Id;
    let stream = input.streams().best(ffmpeg_next::media::Type::Audio)?;
    let params = stream.parameters();
    let codec = match params.id() {
        Id::AAC => AudioCodec::Aac,
        Id::PCM_ALAW => AudioCodec::Pcma,
        Id::PCM_MULAW => AudioCodec::Pcmu,
        Id::OPUS => AudioCodec::Opus,
        other => {
            tracing::info!(source = %shown, codec = other.name(), "the camera's audio is not carried (camesh carries AAC, G.711 and Opus)");
            return None;
        }
    };
    let dec = ffmpeg_next::codec::Context::from_parameters(params.clone())
        .and_then(|c| c.decoder().audio())
        .ok()?;
    let (sample_rate, channels) = (dec.rate(), u32::from(dec.channels()));
    if sample_rate == 0 || channels == 0 {
        return None;
    }
    let tb = stream.time_base();
    tracing::info!(source = %shown, codec = codec.name(), sample_rate, channels, "the camera has audio");
    Some(AudioTrack {
        index: stream.index(),
        time_base: (tb.0, tb.1),
        params: AudioParams {
            codec,
            sample_rate,
            channels,
            extradata: Bytes::copy_from_slice(extradata(&params).as_ref()),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nal(ty: u8, body: u8) -> Bytes {
        Bytes::from(vec![0x60 | ty, body])
    }

    #[test]
    fn a_keyframe_gets_the_latest_parameter_sets_in_front() {
        let (mut sps, mut pps) = (None, None);
        let first = AuParts::sort(vec![nal(9, 0), nal(7, 1), nal(8, 1), nal(5, 0)], &mut sps, &mut pps);
        assert!(first.idr && first.has_slice && first.has_sps && first.has_pps);
        assert_eq!(first.nals().len(), 3, "the delimiter is dropped");
        // A later IDR without parameter sets borrows the remembered ones, SPS first.
        let idr = AuParts::sort(vec![nal(8, 2), nal(5, 0)], &mut sps, &mut pps);
        let (s, p) = (sps.clone().expect("sps"), pps.clone().expect("pps"));
        assert_eq!(p[1], 2, "the newest PPS is remembered");
        let out = idr.keyframe_nals(&s, &p);
        let types: Vec<u8> = out.iter().map(|n| n[0] & 0x1f).collect();
        assert_eq!(types, [7, 8, 5]);
        let p_frame = AuParts::sort(vec![nal(1, 0)], &mut sps, &mut pps);
        assert!(!p_frame.idr && p_frame.has_slice);
        let sei_only = AuParts::sort(vec![nal(6, 0)], &mut sps, &mut pps);
        assert!(!sei_only.has_slice);
    }

    #[test]
    fn rates_reduce() {
        assert_eq!(reduce(15360, 512), (30, 1));
        assert_eq!(reduce(30000, 1001), (30000, 1001));
        assert_eq!(reduce(0, 0), (0, 0));
    }
}
