//! Test helpers: frames made from the fixture clips, a toy cipher, tool runners.

use std::path::{Path, PathBuf};
use std::process::Command;

use bytes::Bytes;
use camesh_proto::{pb, MediaFrame};

use crate::media::source::{load_clip, Clip, SourceOptions};

pub(crate) const GOP2S: &str = "cam-640x360-30fps-gop2s.h264";
pub(crate) const BFRAMES: &str = "cam-640x360-bframes.mp4";

pub(crate) fn fixture(name: &str) -> PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/")).join(name)
}

pub(crate) fn clip(name: &str) -> Clip {
    load_clip(fixture(name), &SourceOptions::default()).expect("fixture loads")
}

/// 2024-01-01T00:00:00Z: a round base for capture times.
pub(crate) const T0: i64 = 1_704_067_200_000_000;

/// An endless camera made of a looping clip: frame `i` is the clip's frame `i % len`
/// with timestamps continuing across loops and capture time `t0 + dts`.
#[derive(Debug)]
pub(crate) struct Feed {
    pub clip: Clip,
    pub t0: i64,
    pub epoch: u64,
    /// XOR key: frames are "encrypted" with it when set.
    pub key: Option<Bytes>,
    pub seq_base: u64,
}

impl Feed {
    pub(crate) fn new(name: &str) -> Self {
        Feed {
            clip: clip(name),
            t0: T0,
            epoch: 0,
            key: None,
            seq_base: 0,
        }
    }

    pub(crate) fn len(&self) -> u64 {
        self.clip.frames.len() as u64
    }

    /// The plaintext access unit of frame `i`.
    pub(crate) fn plain(&self, i: u64) -> Bytes {
        self.clip.frames[(i % self.len()) as usize].data.clone()
    }

    pub(crate) fn dts(&self, i: u64) -> u64 {
        let au = &self.clip.frames[(i % self.len()) as usize];
        au.dts_90k + (i / self.len()) * self.clip.loop_period_90k()
    }

    /// Capture time of frame `i`.
    pub(crate) fn capture(&self, i: u64) -> i64 {
        self.t0 + (self.dts(i) * 100 / 9) as i64
    }

    pub(crate) fn frame(&self, i: u64) -> MediaFrame {
        let au = &self.clip.frames[(i % self.len()) as usize];
        let shift = (i / self.len()) * self.clip.loop_period_90k();
        let payload = match &self.key {
            Some(k) => xor(&au.data, k),
            None => au.data.clone(),
        };
        MediaFrame {
            header: pb::FrameHeader {
                sequence: self.seq_base + i,
                pts_90k: au.pts_90k + shift,
                dts_90k: au.dts_90k + shift,
                capture_unix_us: self.capture(i),
                keyframe: au.keyframe,
                key_epoch: self.epoch,
                ..Default::default()
            },
            payload,
            wire: None,
        }
    }
}

/// A toy cipher standing in for the AEAD: XOR with the key repeated.
pub(crate) fn xor(data: &[u8], key: &[u8]) -> Bytes {
    data.iter()
        .zip(key.iter().cycle())
        .map(|(d, k)| d ^ k)
        .collect::<Vec<u8>>()
        .into()
}

/// Runs a tool and returns its stdout; panics with its stderr when it fails or is missing.
pub(crate) fn run(tool: &str, args: &[&str]) -> (String, String) {
    let out = Command::new(tool)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{tool} must be installed for this test (apt-get install ffmpeg): {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{tool} {args:?} failed: {stderr}");
    (stdout, stderr)
}
