//! G.711 (pure): 16-bit linear PCM to µ-law and A-law, one byte per sample, as cameras
//! take talkback audio. The decoders are ITU-T G.711's (Sun's reference g711.c); the
//! encoders map each 14-bit input to the nearest code, exactly as ffmpeg's `pcm_mulaw` and
//! `pcm_alaw` encoders build their tables, so camesh and ffmpeg agree byte for byte (the
//! tests check all 65536 inputs against ffmpeg itself).

use std::sync::OnceLock;

/// The linear value of a µ-law code.
pub fn ulaw_to_linear(code: u8) -> i16 {
    let u = !code;
    let mut t = (i32::from(u & 0x0f) << 3) + 0x84;
    t <<= (u & 0x70) >> 4;
    (if u & 0x80 != 0 { 0x84 - t } else { t - 0x84 }) as i16
}

/// The linear value of an A-law code.
pub fn alaw_to_linear(code: u8) -> i16 {
    let a = code ^ 0x55;
    let mut t = i32::from(a & 0x0f) << 4;
    let seg = (a & 0x70) >> 4;
    match seg {
        0 => t += 8,
        1 => t += 0x108,
        _ => {
            t += 0x108;
            t <<= seg - 1;
        }
    }
    (if a & 0x80 != 0 { t } else { -t }) as i16
}

/// Linear (in steps of 4, offset by 32768) to code: each input goes to the code whose
/// value is nearest.
fn table(decode: fn(u8) -> i16, mask: u8) -> Box<[u8; 16384]> {
    let mut t = Box::new([0u8; 16384]);
    let mut j = 1usize;
    t[8192] = mask;
    for i in 0..127u8 {
        let v1 = i32::from(decode(i ^ mask));
        let v2 = i32::from(decode((i + 1) ^ mask));
        let v = ((v1 + v2 + 4) >> 3) as usize;
        while j < v {
            t[8192 - j] = i ^ (mask ^ 0x80);
            t[8192 + j] = i ^ mask;
            j += 1;
        }
    }
    while j < 8192 {
        t[8192 - j] = 127 ^ (mask ^ 0x80);
        t[8192 + j] = 127 ^ mask;
        j += 1;
    }
    t[0] = t[1];
    t
}

fn index(sample: i16) -> usize {
    ((i32::from(sample) + 32768) >> 2) as usize
}

/// µ-law of one sample.
pub fn ulaw(sample: i16) -> u8 {
    static T: OnceLock<Box<[u8; 16384]>> = OnceLock::new();
    T.get_or_init(|| table(ulaw_to_linear, 0xff))[index(sample)]
}

/// A-law of one sample.
pub fn alaw(sample: i16) -> u8 {
    static T: OnceLock<Box<[u8; 16384]>> = OnceLock::new();
    T.get_or_init(|| table(alaw_to_linear, 0xd5))[index(sample)]
}

/// Encodes `samples` in `alaw` or µ-law.
pub fn encode(samples: &[i16], a_law: bool) -> Vec<u8> {
    samples.iter().map(|&s| if a_law { alaw(s) } else { ulaw(s) }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_decode_near_their_input() {
        for s in (i16::MIN..=i16::MAX).step_by(7) {
            let (u, a) = (ulaw_to_linear(ulaw(s)), alaw_to_linear(alaw(s)));
            // The quantisation step of the top segment is 1024 (µ) / 1024 (A).
            assert!((i32::from(u) - i32::from(s)).abs() <= 1100, "{s} -> {u}");
            assert!((i32::from(a) - i32::from(s)).abs() <= 1100, "{s} -> {a}");
        }
        assert_eq!(ulaw(0), 0xff);
        assert_eq!(alaw(0), 0xd5);
    }

    /// Byte for byte what ffmpeg's encoders make of the same samples (every 16-bit value).
    #[test]
    fn the_same_bytes_as_ffmpeg() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pcm: Vec<i16> = (i16::MIN..=i16::MAX).collect();
        let raw = dir.path().join("all.s16");
        let bytes: Vec<u8> = pcm.iter().flat_map(|s| s.to_le_bytes()).collect();
        std::fs::write(&raw, bytes).expect("written");
        for (codec, a_law) in [("pcm_mulaw", false), ("pcm_alaw", true)] {
            let out = dir.path().join(codec);
            let st = std::process::Command::new("ffmpeg")
                .args([
                    "-hide_banner",
                    "-loglevel",
                    "error",
                    "-f",
                    "s16le",
                    "-ar",
                    "8000",
                    "-ac",
                    "1",
                    "-i",
                ])
                .arg(&raw)
                .args(["-c:a", codec, "-f", if a_law { "alaw" } else { "mulaw" }])
                .arg(&out)
                .status()
                .expect("ffmpeg must be installed (scripts/setup.sh)");
            assert!(st.success());
            let theirs = std::fs::read(&out).expect("read");
            let ours = encode(&pcm, a_law);
            assert_eq!(theirs.len(), ours.len());
            let first = theirs.iter().zip(&ours).position(|(a, b)| a != b);
            assert_eq!(
                first,
                None,
                "{codec}: first difference at sample {:?}",
                first.map(|i| pcm[i])
            );
        }
    }
}
