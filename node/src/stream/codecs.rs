//! Codec parameters as the media protocol states them (`StreamAccept`): video
//! (`CodecConfig`) and audio (`AudioConfig`), both ways.

use camesh_proto::pb;

use crate::media::{AudioCodec, AudioParams, CodecParams};

/// The video's parameters as `StreamAccept.codec` states them.
pub fn codec_config(p: &CodecParams) -> pb::CodecConfig {
    pb::CodecConfig {
        codec: "h264".into(),
        sps: p.sps.clone(),
        pps: p.pps.clone(),
        width: p.width,
        height: p.height,
        profile_idc: u32::from(p.profile_idc),
        level_idc: u32::from(p.level_idc),
        fps_num: p.fps_num,
        fps_den: p.fps_den,
    }
}

/// The audio track as `StreamAccept.audio` states it.
pub fn audio_config(a: &AudioParams) -> pb::AudioConfig {
    pb::AudioConfig {
        codec: a.codec.name().into(),
        sample_rate: a.sample_rate,
        channels: a.channels,
        extradata: a.extradata.clone(),
    }
}

/// The audio track an accept states; `None` for a codec this node does not know or
/// values out of range (1..=384000 Hz, 1..=8 channels, extradata up to 1 KiB).
pub fn audio_params(c: &pb::AudioConfig) -> Option<AudioParams> {
    let codec = AudioCodec::from_name(&c.codec)?;
    if !(1..=384_000).contains(&c.sample_rate) || !(1..=8).contains(&c.channels) || c.extradata.len() > 1024 {
        return None;
    }
    Some(AudioParams {
        codec,
        sample_rate: c.sample_rate,
        channels: c.channels,
        extradata: c.extradata.clone(),
    })
}
