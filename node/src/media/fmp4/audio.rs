//! The audio track of a fragmented MP4 (pure): its `trak` (AAC as `mp4a` + `esds` with
//! the AudioSpecificConfig, G.711 as `alaw`/`ulaw`, Opus as `Opus` + `dOps`), its RFC
//! 6381 codec string, and [`AudioTimeline`], which places audio frames (timed on the
//! video's 90 kHz clock) on the track's own clock (the sample rate), continuous and
//! increasing, each lasting until the next one.

use bytes::Bytes;

use super::boxes::Boxes;
use crate::media::{AudioCodec, AudioParams, CLOCK_HZ};

/// Track id of the audio track (video is 1).
pub const AUDIO_TRACK_ID: u32 = 2;

/// The longest an audio frame can last (a gap longer than this is a gap, not a frame).
const MAX_FRAME_S: u64 = 1;

/// The track's timescale: the sample rate (Opus is always 48 kHz in MP4).
pub fn timescale(a: &AudioParams) -> u32 {
    match a.codec {
        AudioCodec::Opus => 48_000,
        _ => a.sample_rate.clamp(1, 384_000),
    }
}

/// AAC's audio object type from an AudioSpecificConfig (2 = LC), if it has one.
fn aac_object_type(asc: &[u8]) -> Option<u8> {
    let first = *asc.first()? >> 3;
    if first != 31 {
        return Some(first);
    }
    // Escape: 32 + the next 6 bits.
    let next = (u16::from(*asc.first()? & 0x07) << 3) | u16::from(*asc.get(1)? >> 5);
    Some(32 + next as u8)
}

/// The RFC 6381 codec string of the audio (`mp4a.40.2`, `opus`), or `None` when the
/// codec has none that browsers know in MP4 (G.711).
pub fn codec_string(a: &AudioParams) -> Option<String> {
    match a.codec {
        AudioCodec::Aac => Some(format!("mp4a.40.{}", aac_object_type(&a.extradata).unwrap_or(2))),
        AudioCodec::Opus => Some("opus".into()),
        AudioCodec::Pcma | AudioCodec::Pcmu => None,
    }
}

/// Writes the audio `trak` into `b` (inside `moov`).
pub(super) fn trak(b: &mut Boxes, a: &AudioParams) {
    let rate = timescale(a);
    let channels = a.channels.clamp(1, 8) as u16;
    b.open(b"trak");
    b.full(b"tkhd", 0, 0x3); // enabled, in movie
    b.u32(0);
    b.u32(0);
    b.u32(AUDIO_TRACK_ID);
    b.u32(0);
    b.u32(0); // duration
    b.zeros(8);
    b.u16(0); // layer
    b.u16(1); // alternate group
    b.u16(0x0100); // volume 1.0
    b.u16(0);
    b.matrix();
    b.u32(0);
    b.u32(0);
    b.close();

    b.open(b"mdia");
    b.media_header(rate, b"soun", "camesh audio");
    b.open(b"minf");
    b.full(b"smhd", 0, 0);
    b.u16(0); // balance
    b.u16(0);
    b.close();
    b.dinf();
    b.open(b"stbl");
    b.full(b"stsd", 0, 0);
    b.u32(1);
    sample_entry(b, a, rate, channels);
    b.close(); // stsd
    b.empty_sample_tables();
    b.close(); // stbl
    b.close(); // minf
    b.close(); // mdia
    b.close(); // trak
}

fn sample_entry(b: &mut Boxes, a: &AudioParams, rate: u32, channels: u16) {
    let kind = match a.codec {
        AudioCodec::Aac => b"mp4a",
        AudioCodec::Pcma => b"alaw",
        AudioCodec::Pcmu => b"ulaw",
        AudioCodec::Opus => b"Opus",
    };
    b.open(kind);
    b.zeros(6);
    b.u16(1); // data reference index
    b.zeros(8);
    b.u16(channels);
    b.u16(16); // sample size
    b.u32(0); // pre_defined, reserved
    b.u32(if rate <= 0xffff { rate << 16 } else { 0 });
    match a.codec {
        AudioCodec::Aac => esds(b, &a.extradata),
        AudioCodec::Opus => dops(b, &a.extradata, channels),
        AudioCodec::Pcma | AudioCodec::Pcmu => {}
    }
    b.close();
}

/// An MPEG-4 descriptor: tag, length (one byte below 128, else 7-bit groups), body.
fn descriptor(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = body.len();
    let mut groups = Vec::new();
    let mut n = len;
    loop {
        groups.push((n & 0x7f) as u8);
        n >>= 7;
        if n == 0 {
            break;
        }
    }
    for (i, g) in groups.iter().rev().enumerate() {
        out.push(if i + 1 < groups.len() { g | 0x80 } else { *g });
    }
    out.extend_from_slice(body);
    out
}

/// `esds`: an ES descriptor whose decoder configuration is MPEG-4 audio with `asc`.
fn esds(b: &mut Boxes, asc: &[u8]) {
    let asc = &asc[..asc.len().min(64)];
    let mut config = vec![0x40, 0x15]; // MPEG-4 audio; audio stream, upstream 0, reserved 1
    config.extend_from_slice(&[0, 0x18, 0]); // buffer size
    config.extend_from_slice(&0u32.to_be_bytes()); // max bitrate (unknown)
    config.extend_from_slice(&0u32.to_be_bytes()); // average bitrate
    config.extend_from_slice(&descriptor(5, asc));
    let mut es = Vec::new();
    es.extend_from_slice(&(AUDIO_TRACK_ID as u16).to_be_bytes());
    es.push(0); // no dependency, URL or OCR stream
    es.extend_from_slice(&descriptor(4, &config));
    es.extend_from_slice(&descriptor(6, &[0x02]));
    b.full(b"esds", 0, 0);
    b.bytes(&descriptor(3, &es));
    b.close();
}

/// `dOps` (Opus in ISOBMFF): from the OpusHead ffmpeg gives as extradata (little-endian,
/// `OpusHead` magic), or the defaults for `channels` when there is none.
fn dops(b: &mut Boxes, head: &[u8], channels: u16) {
    let le16 = |at: usize| head.get(at..at + 2).map(|v| u16::from_le_bytes([v[0], v[1]]));
    let le32 = |at: usize| {
        head.get(at..at + 4)
            .map(|v| u32::from_le_bytes([v[0], v[1], v[2], v[3]]))
    };
    let valid = head.len() >= 19 && head.starts_with(b"OpusHead");
    b.open(b"dOps");
    b.u8(0); // version
    if valid {
        b.u8(head[9]);
        b.u16(le16(10).unwrap_or(312));
        b.u32(le32(12).unwrap_or(48_000));
        b.u16(le16(16).unwrap_or(0));
        b.u8(head[18]);
        if head[18] != 0 {
            // Channel mapping table: stream count, coupled count, one byte per channel.
            let n = 2 + usize::from(head[9]);
            b.bytes(head.get(19..19 + n).unwrap_or(&[]));
        }
    } else {
        b.u8(channels.min(2) as u8);
        b.u16(312);
        b.u32(48_000);
        b.u16(0);
        b.u8(0);
    }
    b.close();
}

/// Frames of the audio track on its own clock (pure). The caller gives each frame's time
/// on the output's 90 kHz timeline (the video's, after its rebasing); a frame is
/// returned when the next one gives its duration.
#[derive(Debug)]
pub struct AudioTimeline {
    rate: u64,
    /// Duration used for the last frame and when the spacing says nothing (one AAC frame,
    /// 20 ms of G.711 or Opus).
    default_duration: u64,
    pending: Option<(Bytes, u64)>,
    /// End of the last frame returned (track time).
    end: u64,
}

/// One audio frame ready for [`super::track_fragment`]: track time and duration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AudioSample {
    pub data: Bytes,
    pub dts: u64,
    pub duration: u64,
}

impl AudioTimeline {
    pub fn new(a: &AudioParams) -> Self {
        let rate = u64::from(timescale(a));
        let default_duration = match a.codec {
            AudioCodec::Aac => 1024,
            _ => rate / 50,
        };
        AudioTimeline {
            rate,
            default_duration: default_duration.max(1),
            pending: None,
            end: 0,
        }
    }

    /// The track's timescale.
    pub fn rate(&self) -> u32 {
        self.rate as u32
    }

    /// Adds a frame at `pts_90k` on the output's timeline (negative: before the video
    /// started; dropped). Returns the previous frame, now that its duration is known.
    pub fn push(&mut self, data: Bytes, pts_90k: i128) -> Option<AudioSample> {
        if pts_90k < 0 || data.is_empty() {
            return None;
        }
        let t = u64::try_from(pts_90k).unwrap_or(u64::MAX) as u128 * u128::from(self.rate) / u128::from(CLOCK_HZ);
        let mut t = u64::try_from(t).unwrap_or(u64::MAX);
        let out = match self.pending.take() {
            Some((prev, prev_t)) => {
                // A timeline that went back (the source restarted): one frame later.
                if t <= prev_t {
                    t = prev_t + self.default_duration;
                }
                let step = t - prev_t;
                let duration = if step <= self.rate * MAX_FRAME_S {
                    step
                } else {
                    self.default_duration
                };
                self.end = prev_t + duration;
                Some(AudioSample {
                    data: prev,
                    dts: prev_t,
                    duration,
                })
            }
            None => None,
        };
        self.pending = Some((data, t.max(self.end)));
        out
    }

    /// The last frame, lasting the default duration (the track ends).
    pub fn flush(&mut self) -> Option<AudioSample> {
        let (data, dts) = self.pending.take()?;
        self.end = dts + self.default_duration;
        Some(AudioSample {
            data,
            dts,
            duration: self.default_duration,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aac() -> AudioParams {
        AudioParams {
            codec: AudioCodec::Aac,
            sample_rate: 48_000,
            channels: 2,
            extradata: Bytes::from_static(&[0x11, 0x90]),
        }
    }

    #[test]
    fn codec_strings() {
        assert_eq!(codec_string(&aac()).as_deref(), Some("mp4a.40.2"));
        let he = AudioParams {
            extradata: Bytes::from_static(&[0x2b, 0x92, 0x08, 0x00]),
            ..aac()
        };
        assert_eq!(codec_string(&he).as_deref(), Some("mp4a.40.5"));
        let pcma = AudioParams {
            codec: AudioCodec::Pcma,
            sample_rate: 8000,
            channels: 1,
            extradata: Bytes::new(),
        };
        assert_eq!(codec_string(&pcma), None);
        assert_eq!(aac_object_type(&[0xf8, 0x20]), Some(32 + 1));
    }

    #[test]
    fn descriptor_lengths() {
        assert_eq!(descriptor(5, &[1, 2]), [5, 2, 1, 2]);
        let long = descriptor(4, &[0; 200]);
        assert_eq!(&long[..3], &[4, 0x81, 0x48]);
        assert_eq!(long.len(), 203);
    }

    #[test]
    fn timeline_is_on_the_sample_clock_continuous_and_increasing() {
        let mut t = AudioTimeline::new(&aac());
        let f = |n: u8| Bytes::from(vec![n; 4]);
        // 1024 samples at 48 kHz = 1920 ticks of 90 kHz.
        assert_eq!(t.push(f(0), -10), None, "before the video: dropped");
        assert_eq!(t.push(f(1), 0), None);
        let a = t.push(f(2), 1920).expect("first");
        assert_eq!((a.dts, a.duration), (0, 1024));
        // The timeline went back: the next frame follows one frame later.
        let b = t.push(f(3), 1900).expect("second");
        assert_eq!((b.dts, b.duration), (1024, 1024));
        let c = t.push(f(4), 10 * 90_000).expect("third");
        assert_eq!((c.dts, c.duration), (2048, 1024), "a long gap gives the default");
        let d = t.flush().expect("last");
        assert_eq!((d.dts, d.duration), (480_000, 1024));
        assert_eq!(t.flush(), None);
    }
}
