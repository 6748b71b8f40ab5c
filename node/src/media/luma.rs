//! Small grayscale pictures of an H.264 stream (blocking, ffmpeg): access units in (AVCC,
//! as sources publish them), decoded and scaled to a fixed size, the brightness plane
//! out. What the motion detector ([`super::motion`]) looks at; run off the async runtime.

use ffmpeg_next::codec::{self, Id};
use ffmpeg_next::format::Pixel;
use ffmpeg_next::software::scaling;

use super::h264::{avcc_nals, nal_type, NalType};
use super::CodecParams;

#[derive(Debug, thiserror::Error)]
pub enum LumaError {
    #[error("ffmpeg could not be initialised: {0}")]
    Init(String),
    #[error("ffmpeg has no H.264 decoder")]
    NoDecoder,
    #[error("decoding failed: {0}")]
    Decode(ffmpeg_next::Error),
    #[error("scaling failed: {0}")]
    Scale(ffmpeg_next::Error),
}

/// Decodes one stream to `width` x `height` grayscale pictures.
pub struct LumaDecoder {
    params: CodecParams,
    decoder: ffmpeg_next::decoder::Video,
    scaler: Option<(scaling::Context, (Pixel, u32, u32))>,
    width: u32,
    height: u32,
    /// No keyframe yet: P-frames before it would decode to garbage.
    need_keyframe: bool,
}

impl std::fmt::Debug for LumaDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LumaDecoder")
            .field("width", &self.width)
            .field("height", &self.height)
            .finish_non_exhaustive()
    }
}

impl LumaDecoder {
    /// A decoder for a stream with `params`, making `width` x `height` pictures.
    pub fn new(params: &CodecParams, width: u32, height: u32) -> Result<Self, LumaError> {
        static INIT: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
        INIT.get_or_init(super::init_ffmpeg).clone().map_err(LumaError::Init)?;
        let h264 = codec::decoder::find(Id::H264).ok_or(LumaError::NoDecoder)?;
        let decoder = codec::Context::new_with_codec(h264)
            .decoder()
            .video()
            .map_err(LumaError::Decode)?;
        Ok(LumaDecoder {
            params: params.clone(),
            decoder,
            scaler: None,
            width: width.max(2),
            height: height.max(2),
            need_keyframe: true,
        })
    }

    /// Feeds one access unit; returns the pictures it completed (usually one), each
    /// `width * height` bytes. A unit that does not decode is skipped until the next
    /// keyframe (a damaged frame is not an error for motion detection).
    pub fn push(&mut self, au: &[u8], keyframe: bool) -> Result<Vec<Vec<u8>>, LumaError> {
        if self.need_keyframe && !keyframe {
            return Ok(Vec::new());
        }
        let mut annexb = Vec::with_capacity(au.len() + 256);
        let mut has_params = false;
        for nal in avcc_nals(au).flatten() {
            has_params |= matches!(nal_type(nal), Some(NalType::SPS));
            annexb.extend_from_slice(&[0, 0, 0, 1]);
            annexb.extend_from_slice(nal);
        }
        if keyframe && !has_params {
            let mut front = Vec::with_capacity(annexb.len() + 64);
            for p in [&self.params.sps, &self.params.pps] {
                front.extend_from_slice(&[0, 0, 0, 1]);
                front.extend_from_slice(p);
            }
            front.extend_from_slice(&annexb);
            annexb = front;
        }
        if self.decoder.send_packet(&ffmpeg_next::Packet::copy(&annexb)).is_err() {
            self.need_keyframe = true;
            return Ok(Vec::new());
        }
        self.need_keyframe = false;
        let mut out = Vec::new();
        let mut picture = ffmpeg_next::frame::Video::empty();
        while self.decoder.receive_frame(&mut picture).is_ok() {
            if picture.width() == 0 || picture.height() == 0 {
                continue;
            }
            out.push(self.scale(&picture)?);
        }
        Ok(out)
    }

    fn scale(&mut self, picture: &ffmpeg_next::frame::Video) -> Result<Vec<u8>, LumaError> {
        let shape = (picture.format(), picture.width(), picture.height());
        if self.scaler.as_ref().is_none_or(|(_, s)| *s != shape) {
            let ctx = scaling::Context::get(
                shape.0,
                shape.1,
                shape.2,
                Pixel::GRAY8,
                self.width,
                self.height,
                scaling::Flags::AREA,
            )
            .map_err(LumaError::Scale)?;
            self.scaler = Some((ctx, shape));
        }
        let Some((scaler, _)) = self.scaler.as_mut() else {
            unreachable!("set just above")
        };
        let mut gray = ffmpeg_next::frame::Video::empty();
        scaler.run(picture, &mut gray).map_err(LumaError::Scale)?;
        let (w, h) = (self.width as usize, self.height as usize);
        let stride = gray.stride(0);
        let data = gray.data(0);
        let mut out = Vec::with_capacity(w * h);
        for y in 0..h {
            let row = data.get(y * stride..y * stride + w).unwrap_or(&[]);
            out.extend_from_slice(row);
        }
        out.resize(w * h, 0);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::motion::{MotionConfig, MotionDetector, MotionEvent};
    use crate::media::source::{load_clip, SourceOptions};

    /// Makes a 6 s H.264 clip with ffmpeg: 30 fps, 2 s GOP, a white 40x40 box over grey
    /// at `x` (an overlay expression of the time `t`).
    fn clip(dir: &std::path::Path, name: &str, x: &str) -> crate::media::source::Clip {
        let path = dir.join(name);
        let out = std::process::Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i"])
            .arg(format!(
                "color=c=gray:s=320x180:r=30:d=6[bg];color=c=white:s=40x40:r=30[box];[bg][box]overlay=x='{x}':y=60:shortest=1"
            ))
            .args(["-c:v", "libx264", "-g", "60", "-bf", "0", "-pix_fmt", "yuv420p", "-f", "h264"])
            .arg(&path)
            .output()
            .expect("ffmpeg must be installed (apt-get install ffmpeg)");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        load_clip(&path, &SourceOptions::default()).expect("clip loads")
    }

    /// Decodes `clip` at 5 pictures a second into the detector; the events with times.
    fn detect(clip: &crate::media::source::Clip) -> Vec<MotionEvent> {
        let mut dec = LumaDecoder::new(&clip.params, 64, 36).expect("decoder");
        let mut det = MotionDetector::new(MotionConfig::default());
        let mut events = Vec::new();
        let mut n = 0;
        for au in &clip.frames {
            for pic in dec.push(&au.data, au.keyframe).expect("decodes") {
                assert_eq!(pic.len(), 64 * 36);
                // 30 fps in, every 6th picture: 5 a second, as a camera node samples.
                if n % 6 == 0 {
                    let t = n as i64 * 1_000_000 / 30;
                    events.extend(det.push(t, &pic, 64, 36));
                }
                n += 1;
            }
        }
        assert!(n >= 170, "{n} pictures decoded");
        events
    }

    /// A box that starts moving 2 s in makes motion within a second; a still scene
    /// (with the encoder's noise) makes none.
    #[test]
    fn motion_in_a_real_h264_clip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let moving = clip(dir.path(), "moving.h264", "if(lt(t,2),20,mod(20+(t-2)*200,280))");
        let events = detect(&moving);
        match events.first() {
            Some(MotionEvent::Started { at_us, .. }) => {
                assert!(
                    (2_000_000..3_000_000).contains(at_us),
                    "started at {at_us} us: {events:?}"
                )
            }
            other => panic!("no motion found: {other:?} ({events:?})"),
        }
        let still = clip(dir.path(), "still.h264", "20");
        assert_eq!(detect(&still), Vec::new());
    }
}
