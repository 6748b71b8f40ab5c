//! Container files through ffmpeg: demux the best video stream, require H.264, and turn
//! its packets into access units with 90 kHz timestamps.

use std::path::Path;

use bytes::Bytes;

use super::clip::{fps_plausible, ClipBuilder, Timing};
use super::parts::{audio_track, describe_streams, extradata, ticks_90k, MAX_AUDIO_BYTES};
use super::{Clip, SourceError, SourceOptions, MAX_FILE_BYTES};
use crate::media::h264::{avcc_nals_with_length_size, nal_type, parse_avc_config, split_annexb, NalType};
use crate::media::{init_ffmpeg, CLOCK_HZ};

/// How the container frames H.264 inside its packets.
enum Framing {
    /// AVCC with this length-prefix size (MP4, MKV, FLV: there is an avcC record).
    Avcc(usize),
    /// Start codes (MPEG-TS, raw streams).
    AnnexB,
}

pub(super) fn load_container(path: &Path, opts: &SourceOptions) -> Result<Clip, SourceError> {
    use ffmpeg_next::codec::Id;
    use ffmpeg_next::media::Type;

    init_ffmpeg().map_err(SourceError::FfmpegInit)?;
    let mut input = ffmpeg_next::format::input(path).map_err(|source| SourceError::Open {
        path: path.into(),
        source,
    })?;
    let (index, time_base, rate, avg_rate, extradata) = {
        let Some(stream) = input.streams().best(Type::Video) else {
            let streams = describe_streams(&input);
            return Err(SourceError::NoVideoStream {
                path: path.into(),
                streams,
            });
        };
        let params = stream.parameters();
        if params.id() != Id::H264 {
            return Err(SourceError::NotH264 {
                path: path.into(),
                codec: params.id().name().to_string(),
            });
        }
        (
            stream.index(),
            stream.time_base(),
            stream.rate(),
            stream.avg_frame_rate(),
            extradata(&params),
        )
    };

    let mut builder = ClipBuilder::default();
    let shown = path.display().to_string();
    // AAC needs its AudioSpecificConfig (MP4, MKV have it; ADTS in MPEG-TS does not).
    let audio = audio_track(&input, &shown).filter(|a| {
        let ok = a.params.codec != crate::media::AudioCodec::Aac || !a.params.extradata.is_empty();
        if !ok {
            tracing::info!(path = %shown, "the file's AAC has no AudioSpecificConfig (ADTS): its audio is not carried");
        }
        ok
    });
    let mut audio_units: Vec<(i64, Bytes)> = Vec::new();
    let framing = if extradata.first() == Some(&1) {
        let config = parse_avc_config(&extradata).map_err(|source| SourceError::BadAvcConfig {
            path: path.into(),
            source,
        })?;
        builder.sps = config.sps.first().map(|s| Bytes::copy_from_slice(s));
        builder.pps = config.pps.first().map(|p| Bytes::copy_from_slice(p));
        Framing::Avcc(config.length_size)
    } else {
        for nal in split_annexb(&extradata) {
            match nal_type(nal) {
                Some(NalType::SPS) => builder.sps = Some(Bytes::copy_from_slice(nal)),
                Some(NalType::PPS) => builder.pps = Some(Bytes::copy_from_slice(nal)),
                _ => {}
            }
        }
        Framing::AnnexB
    };

    let to_90k = |ts: i64| -> Option<i64> {
        let (num, den) = (i128::from(time_base.0), i128::from(time_base.1));
        if den <= 0 || num <= 0 {
            return None;
        }
        // Round to the nearest tick (the same way for negative timestamps).
        let scaled = i128::from(ts) * i128::from(CLOCK_HZ) * num;
        i64::try_from((2 * scaled + den).div_euclid(2 * den)).ok()
    };

    let mut total_bytes = 0u64;
    let mut bad_packets = 0u64;
    let mut packet = ffmpeg_next::Packet::empty();
    loop {
        match packet.read(&mut input) {
            Ok(()) => {}
            Err(ffmpeg_next::Error::Eof) => break,
            // The demuxer resyncs past corrupt data; skip the packet.
            Err(ffmpeg_next::Error::InvalidData) => {
                bad_packets += 1;
                continue;
            }
            Err(source) => {
                return Err(SourceError::Demux {
                    path: path.into(),
                    source,
                })
            }
        }
        if let Some(a) = audio.as_ref().filter(|a| a.index == packet.stream()) {
            let pts = packet.pts().and_then(|p| ticks_90k(p, a.time_base));
            if let (Some(data), Some(pts)) = (packet.data(), pts) {
                if !data.is_empty() && data.len() <= MAX_AUDIO_BYTES {
                    total_bytes += data.len() as u64;
                    audio_units.push((pts, Bytes::copy_from_slice(data)));
                }
            }
            continue;
        }
        if packet.stream() != index {
            continue;
        }
        let Some(data) = packet.data() else { continue };
        total_bytes += data.len() as u64;
        if total_bytes > MAX_FILE_BYTES {
            return Err(SourceError::TooLarge {
                path: path.into(),
                size: total_bytes,
                max: MAX_FILE_BYTES,
            });
        }
        let nals: Vec<Bytes> = match framing {
            Framing::Avcc(size) => {
                match avcc_nals_with_length_size(data, size)
                    .map(|n| n.map(Bytes::copy_from_slice))
                    .collect::<Result<_, _>>()
                {
                    Ok(nals) => nals,
                    Err(e) => {
                        tracing::debug!(path = %path.display(), error = %e, "skipping a malformed packet");
                        bad_packets += 1;
                        continue;
                    }
                }
            }
            Framing::AnnexB => split_annexb(data).map(Bytes::copy_from_slice).collect(),
        };
        let pts = packet.pts().and_then(to_90k);
        let dts = packet.dts().and_then(to_90k);
        let ts = match (pts, dts) {
            (Some(p), Some(d)) => Some((p, d)),
            (Some(t), None) | (None, Some(t)) => Some((t, t)),
            (None, None) => None,
        };
        builder.push(nals, ts);
    }
    if bad_packets > 0 {
        tracing::warn!(path = %path.display(), bad_packets, "skipped malformed packets");
    }

    let rate = [avg_rate, rate]
        .into_iter()
        .filter_map(|r| Some((u32::try_from(r.0).ok()?, u32::try_from(r.1).ok()?)))
        .find(|&(n, d)| fps_plausible(n, d));
    builder.audio = audio.map(|a| (a.params, audio_units));
    builder.finish(path, opts, Timing::Container { rate })
}
