//! Audio in for talkback (blocking, ffmpeg): a file in any format ffmpeg reads, or a
//! capture device through one of ffmpeg's input devices (`pulse`, `alsa`, `lavfi`, ...),
//! decoded and resampled to what camera backchannels take, 8 kHz mono 16-bit, handed out
//! 20 ms (160 samples) at a time. Run it off the async runtime.

use std::collections::VecDeque;

use ffmpeg_next::format::{sample::Type as SampleType, Sample};
use ffmpeg_next::software::resampling;
use ffmpeg_next::{codec, media, ChannelLayout};

/// The rate and frame size talkback sends.
pub const RATE: u32 = 8000;
pub const FRAME_SAMPLES: usize = 160;
/// Most samples held between decoding and handing out (a decoder's largest frames).
const MAX_PENDING: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum AudioError {
    #[error("ffmpeg could not be initialised: {0}")]
    Init(String),
    #[error("ffmpeg has no audio input device {0:?} (e.g. pulse, alsa, lavfi)")]
    NoFormat(String),
    #[error("cannot open {input:?}: {source}")]
    Open { input: String, source: ffmpeg_next::Error },
    #[error("{0:?} has no audio")]
    NoAudio(String),
    #[error("cannot decode the audio of {input:?}: {source}")]
    Decode { input: String, source: ffmpeg_next::Error },
}

/// One audio input being read.
pub struct AudioIn {
    input: String,
    ctx: ffmpeg_next::format::context::Input,
    stream: usize,
    decoder: ffmpeg_next::decoder::Audio,
    resampler: Option<resampling::Context>,
    pending: VecDeque<i16>,
    ended: bool,
}

impl std::fmt::Debug for AudioIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AudioIn")
            .field("input", &self.input)
            .finish_non_exhaustive()
    }
}

impl AudioIn {
    /// Opens `input`: a file, or with `format` a device of that ffmpeg input format (e.g.
    /// `pulse` and `default`, `alsa` and `hw:0`, `lavfi` and `sine=frequency=1000`).
    pub fn open(input: &str, format: Option<&str>) -> Result<AudioIn, AudioError> {
        static INIT: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
        INIT.get_or_init(|| {
            super::init_ffmpeg()?;
            ffmpeg_next::device::register_all();
            Ok(())
        })
        .clone()
        .map_err(AudioError::Init)?;
        let open = |source| AudioError::Open {
            input: input.to_owned(),
            source,
        };
        let ctx = match format {
            None => ffmpeg_next::format::input(input).map_err(open)?,
            Some(name) => {
                let fmt = ffmpeg_next::device::input::audio()
                    .find(|f| matches!(f, ffmpeg_next::Format::Input(i) if i.name() == name))
                    .ok_or_else(|| AudioError::NoFormat(name.to_owned()))?;
                match ffmpeg_next::format::open_with(input, &fmt, ffmpeg_next::Dictionary::new()).map_err(open)? {
                    ffmpeg_next::format::context::Context::Input(i) => i,
                    ffmpeg_next::format::context::Context::Output(_) => {
                        return Err(AudioError::NoFormat(name.to_owned()))
                    }
                }
            }
        };
        let stream = ctx
            .streams()
            .best(media::Type::Audio)
            .ok_or_else(|| AudioError::NoAudio(input.to_owned()))?;
        let index = stream.index();
        let decode = |source| AudioError::Decode {
            input: input.to_owned(),
            source,
        };
        let decoder = codec::Context::from_parameters(stream.parameters())
            .and_then(|c| c.decoder().audio())
            .map_err(decode)?;
        Ok(AudioIn {
            input: input.to_owned(),
            ctx,
            stream: index,
            decoder,
            resampler: None,
            pending: VecDeque::new(),
            ended: false,
        })
    }

    /// The next 20 ms (160 samples at 8 kHz mono); the last one is padded with silence;
    /// `None` at the end of the input.
    pub fn next_frame(&mut self) -> Result<Option<Vec<i16>>, AudioError> {
        while self.pending.len() < FRAME_SAMPLES && !self.ended {
            self.decode_more()?;
        }
        if self.pending.is_empty() {
            return Ok(None);
        }
        let n = self.pending.len().min(FRAME_SAMPLES);
        let mut frame: Vec<i16> = self.pending.drain(..n).collect();
        frame.resize(FRAME_SAMPLES, 0);
        Ok(Some(frame))
    }

    /// Reads packets until some samples came out, or the input ended.
    fn decode_more(&mut self) -> Result<(), AudioError> {
        let input = self.input.clone();
        let decode = |source| AudioError::Decode {
            input: input.clone(),
            source,
        };
        let packet = self
            .ctx
            .packets()
            .find(|(s, _)| s.index() == self.stream)
            .map(|(_, p)| p);
        match packet {
            Some(p) => {
                // A damaged packet is skipped, not fatal.
                if self.decoder.send_packet(&p).is_err() {
                    return Ok(());
                }
            }
            None => {
                let _ = self.decoder.send_eof();
                self.ended = true;
            }
        }
        let mut decoded = ffmpeg_next::frame::Audio::empty();
        while self.decoder.receive_frame(&mut decoded).is_ok() {
            self.resample(&mut decoded).map_err(decode)?;
        }
        if self.ended {
            if let Some(r) = self.resampler.as_mut() {
                let mut out = ffmpeg_next::frame::Audio::empty();
                if r.flush(&mut out).is_ok() && out.samples() > 0 {
                    Self::take(&mut self.pending, &out);
                }
            }
        }
        Ok(())
    }

    fn resample(&mut self, frame: &mut ffmpeg_next::frame::Audio) -> Result<(), ffmpeg_next::Error> {
        // A WAV without a channel mask decodes with no layout: the usual one for its count.
        if frame.channel_layout().channels() == 0 || frame.channel_layout().bits() == 0 {
            frame.set_channel_layout(ChannelLayout::default(i32::from(frame.channels().max(1))));
        }
        let layout = frame.channel_layout();
        if self.resampler.is_none() {
            self.resampler = Some(resampling::Context::get(
                frame.format(),
                layout,
                frame.rate().max(1),
                Sample::I16(SampleType::Packed),
                ChannelLayout::MONO,
                RATE,
            )?);
        }
        let Some(r) = self.resampler.as_mut() else {
            return Ok(());
        };
        let mut out = ffmpeg_next::frame::Audio::empty();
        r.run(frame, &mut out)?;
        Self::take(&mut self.pending, &out);
        Ok(())
    }

    fn take(pending: &mut VecDeque<i16>, out: &ffmpeg_next::frame::Audio) {
        let n = out.samples();
        let bytes = out.data(0);
        for s in bytes.chunks_exact(2).take(n) {
            if pending.len() < MAX_PENDING {
                pending.push_back(i16::from_ne_bytes([s[0], s[1]]));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 1 s, 44.1 kHz stereo WAV of a 1 kHz tone comes out as 50 frames of 8 kHz mono
    /// whose zero crossings say 1 kHz.
    #[test]
    fn a_wav_file_becomes_8khz_frames() {
        let dir = tempfile::tempdir().expect("tempdir");
        let wav = dir.path().join("tone.wav");
        let st = std::process::Command::new("ffmpeg")
            .args([
                "-hide_banner",
                "-loglevel",
                "error",
                "-f",
                "lavfi",
                "-i",
                "sine=frequency=1000:sample_rate=44100:duration=1",
                "-ac",
                "2",
            ])
            .arg(&wav)
            .status()
            .expect("ffmpeg must be installed (scripts/setup.sh)");
        assert!(st.success());
        let mut a = AudioIn::open(wav.to_str().expect("utf-8"), None).expect("opens");
        let mut samples = Vec::new();
        while let Some(f) = a.next_frame().expect("reads") {
            assert_eq!(f.len(), FRAME_SAMPLES);
            samples.extend(f);
        }
        let frames = samples.len() / FRAME_SAMPLES;
        assert!((49..=51).contains(&frames), "{frames} frames");
        let crossings = samples.windows(2).filter(|w| (w[0] < 0) != (w[1] < 0)).count();
        // Two crossings per period: ~2000 in one second.
        assert!((1900..=2100).contains(&crossings), "{crossings} zero crossings");
        assert!(AudioIn::open("/nonexistent.wav", None).is_err());
        let e = AudioIn::open("x", Some("no-such-device")).unwrap_err();
        assert!(e.to_string().contains("no-such-device"), "{e}");
    }

    /// An ffmpeg input device, as a microphone is read (`lavfi` here: no sound card).
    #[test]
    fn an_input_device_is_read() {
        let mut a = AudioIn::open("sine=frequency=440:duration=0.5", Some("lavfi")).expect("opens");
        let mut n = 0;
        while a.next_frame().expect("reads").is_some() {
            n += 1;
        }
        assert!((24..=26).contains(&n), "{n} frames");
    }
}
