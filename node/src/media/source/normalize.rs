//! The pure half of a live source: what arrives from a camera (NAL units with the
//! transport's presentation times) in, what a hub publishes ([`SourceEvent::Params`],
//! [`SourceEvent::Frame`]) out. No IO (the one thing it reads is the process clock, to
//! anchor a new timeline): the RTSP session ([`super::rtsp`]) feeds it.
//!
//! - [`LiveNormalizer`] starts at the first IDR, keeps SPS/PPS in front of every IDR,
//!   drops access unit delimiters and announces parameter changes;
//! - [`LiveTimestamps`] derives decode times from presentation times (RTP carries only
//!   those) with the stream's reorder depth, and anchors them to the process clock so a
//!   reconnection continues the timeline after the gap.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use bytes::Bytes;

use super::clip::fps_plausible;
use super::parts::{reduce, AuParts};
use super::SourceEvent;
use crate::clock::process_ms;
use crate::media::h264::{nal_type, parse_avc_config, parse_sps, split_annexb, to_avcc, NalType};
use crate::media::{AccessUnit, CodecParams, CLOCK_HZ};

/// Largest access unit accepted from a camera; bigger ones are dropped (and counted).
pub const MAX_AU_BYTES: usize = 16 << 20;

/// Deepest B-frame reordering believed (H.264 allows at most 16 frames in the DPB).
pub(super) const MAX_REORDER: usize = 16;

/// 90 kHz ticks since a process-wide start, plus one second of headroom: the anchor of a
/// new connection's timeline (so B-frame decode times before the first frame stay
/// positive and reconnections continue the timeline).
fn anchor_90k() -> u64 {
    CLOCK_HZ + process_ms().saturating_mul(CLOCK_HZ) / 1000
}

/// Turns a live stream's access units into what a hub publishes: starts at the first
/// IDR, keeps SPS/PPS in front of every IDR (from the stream, or from the SDP when the
/// camera sends them only there), drops access unit delimiters, passes every other NAL
/// unit through unchanged, and stamps pts/dts (see [`LiveTimestamps`]). Pure: no IO.
#[derive(Debug)]
pub struct LiveNormalizer {
    sps: Option<Bytes>,
    pps: Option<Bytes>,
    params: Option<CodecParams>,
    rate: Option<(u32, u32)>,
    delay: usize,
    timestamps: Option<LiveTimestamps>,
    /// Access units dropped before the first decodable IDR.
    pub skipped_before_idr: u64,
    /// Access units dropped for being larger than [`MAX_AU_BYTES`].
    pub oversized: u64,
}

impl LiveNormalizer {
    /// `delay`: the stream's reorder depth in frames (0 without B-frames); `rate`: its
    /// frame rate when the transport states one.
    pub fn new(delay: usize, rate: Option<(u32, u32)>) -> Self {
        LiveNormalizer {
            sps: None,
            pps: None,
            params: None,
            rate,
            delay: delay.min(MAX_REORDER),
            timestamps: None,
            skipped_before_idr: 0,
            oversized: 0,
        }
    }

    /// Takes SPS/PPS from the stream's configuration (Annex B from an SDP, or an avcC
    /// record). Returns the NAL length size when the packets are AVCC (avcC present).
    pub fn seed_from_extradata(&mut self, extra: &[u8]) -> Option<usize> {
        if extra.first() == Some(&1) {
            if let Ok(config) = parse_avc_config(extra) {
                self.sps = config.sps.first().map(|s| Bytes::copy_from_slice(s));
                self.pps = config.pps.first().map(|p| Bytes::copy_from_slice(p));
                return Some(config.length_size);
            }
            return None;
        }
        for nal in split_annexb(extra) {
            match nal_type(nal) {
                Some(NalType::SPS) if self.sps.is_none() => self.sps = Some(Bytes::copy_from_slice(nal)),
                Some(NalType::PPS) if self.pps.is_none() => self.pps = Some(Bytes::copy_from_slice(nal)),
                _ => {}
            }
        }
        None
    }

    /// The codec parameters announced last.
    pub fn params(&self) -> Option<&CodecParams> {
        self.params.as_ref()
    }

    /// One access unit's NAL units (without start codes) and its presentation time
    /// (90 kHz, the transport's clock; `None` when unknown). Returns the events to send:
    /// `Params` first whenever the parameter sets change at an IDR, then the `Frame`.
    /// An audio frame's time (its raw pts on the camera's clock, 90 kHz) on the video's
    /// timeline; `None` before the video's first IDR set the timeline.
    pub fn audio_pts(&self, raw: i64) -> Option<u64> {
        self.timestamps.as_ref().map(|t| t.at(raw))
    }

    pub fn push(&mut self, nals: Vec<Bytes>, pts: Option<i64>) -> Result<Vec<SourceEvent>, String> {
        let parts = AuParts::sort(nals, &mut self.sps, &mut self.pps);
        let idr = parts.idr;
        let mut events = Vec::new();
        if !parts.has_slice {
            return Ok(events);
        }
        if self.timestamps.is_none() && !idr {
            self.skipped_before_idr += 1;
            return Ok(events);
        }
        let nals = if idr {
            let (Some(sps), Some(pps)) = (self.sps.clone(), self.pps.clone()) else {
                self.skipped_before_idr += 1;
                return Ok(events);
            };
            let nals = parts.keyframe_nals(&sps, &pps);
            let changed = self.params.as_ref().is_none_or(|p| p.sps != sps || p.pps != pps);
            if changed {
                let params = self.codec_params(sps, pps)?;
                let frame_90k = frame_duration_90k(params.fps_num, params.fps_den);
                if let Some(t) = &mut self.timestamps {
                    t.frame_90k = frame_90k;
                } else {
                    self.timestamps = Some(LiveTimestamps::new(
                        pts.unwrap_or(0),
                        anchor_90k(),
                        self.delay,
                        frame_90k,
                    ));
                }
                self.params = Some(params.clone());
                events.push(SourceEvent::Params(params));
            }
            nals
        } else {
            parts.nals()
        };
        let data = to_avcc(&nals);
        let Some(timestamps) = &mut self.timestamps else {
            return Ok(events);
        };
        let (pts_90k, dts_90k) = timestamps.stamp(pts);
        events.push(SourceEvent::Frame(AccessUnit {
            data,
            pts_90k,
            dts_90k,
            keyframe: idr,
        }));
        Ok(events)
    }

    fn codec_params(&self, sps: Bytes, pps: Bytes) -> Result<CodecParams, String> {
        let info = parse_sps(&sps).map_err(|e| format!("the camera's SPS cannot be parsed: {e}"))?;
        let (fps_num, fps_den) = info
            .fps()
            .filter(|&(n, d)| fps_plausible(n, d))
            .or(self.rate)
            .map(|(n, d)| reduce(n, d))
            .unwrap_or((0, 0));
        Ok(CodecParams {
            sps,
            pps,
            width: info.width,
            height: info.height,
            profile_idc: info.profile_idc,
            level_idc: info.level_idc,
            fps_num,
            fps_den,
        })
    }
}

fn frame_duration_90k(num: u32, den: u32) -> i64 {
    if num == 0 || den == 0 {
        return 3000;
    }
    let d = (CLOCK_HZ * u64::from(den) + u64::from(num) / 2) / u64::from(num);
    i64::try_from(d.clamp(1, CLOCK_HZ)).unwrap_or(3000)
}

/// Timestamps of a live stream whose transport carries presentation times only (RTP).
///
/// pts: the camera's, relative to the first IDR, plus an anchor. dts: with a reorder
/// depth of `delay` frames, frame `n` decodes at the `n - delay`-th smallest pts seen so
/// far (the first `delay` frames one frame duration apart before the first pts) — the
/// decode times an encoder with that depth used, without waiting for later frames. Decode
/// times always increase and never pass the presentation time; if the stream reorders
/// deeper than announced, the depth grows. A jump in the camera's clock (more than 30 s
/// ahead or 5 s back) continues the timeline one frame later instead of jumping.
#[derive(Debug)]
pub struct LiveTimestamps {
    origin: i64,
    anchor: i64,
    delay: usize,
    frame_90k: i64,
    pending: BinaryHeap<Reverse<i64>>,
    frames: i64,
    last_dts: Option<i64>,
    max_pts: i64,
}

impl LiveTimestamps {
    pub fn new(origin_pts: i64, anchor: u64, delay: usize, frame_90k: i64) -> Self {
        LiveTimestamps {
            origin: origin_pts,
            anchor: i64::try_from(anchor).unwrap_or(i64::MAX / 4),
            delay: delay.min(MAX_REORDER),
            frame_90k: frame_90k.max(1),
            pending: BinaryHeap::new(),
            frames: 0,
            last_dts: None,
            max_pts: 0,
        }
    }

    /// Where a time on the camera's clock (90 kHz, the same clock as the video's raw pts:
    /// another track's) falls on this timeline.
    pub fn at(&self, raw: i64) -> u64 {
        u64::try_from(self.anchor.saturating_add(raw.saturating_sub(self.origin))).unwrap_or(0)
    }

    /// (pts, dts) in 90 kHz for the next access unit in decode order.
    pub fn stamp(&mut self, raw_pts: Option<i64>) -> (u64, u64) {
        let f = self.frame_90k;
        let mut pts = match raw_pts {
            Some(p) => p.saturating_sub(self.origin),
            None if self.frames == 0 => 0,
            None => self.max_pts + f,
        };
        if self.frames > 0 && (pts > self.max_pts + 30 * CLOCK_HZ as i64 || pts < self.max_pts - 5 * CLOCK_HZ as i64) {
            tracing::debug!(
                jump = pts - self.max_pts,
                "camera clock jumped; continuing the timeline"
            );
            let continue_at = self.max_pts + f;
            self.origin = self.origin.saturating_add(pts - continue_at);
            pts = continue_at;
            self.pending.clear();
        }
        self.pending.push(Reverse(pts));
        let mut dts = if self.pending.len() > self.delay {
            self.pending.pop().map_or(pts, |Reverse(p)| p)
        } else {
            (self.frames - self.delay as i64) * f
        };
        if let Some(last) = self.last_dts {
            dts = dts.max(last + 1);
        }
        if dts > pts {
            // Reordered deeper than announced: grow the depth for the frames to come.
            if self.delay < MAX_REORDER {
                self.delay += 1;
            }
            pts = dts;
        }
        self.last_dts = Some(dts);
        self.max_pts = self.max_pts.max(pts);
        self.frames += 1;
        let out = |t: i64| u64::try_from(self.anchor.saturating_add(t)).unwrap_or(0);
        (out(pts), out(dts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp_all(delay: usize, pts: &[i64]) -> Vec<(i64, i64)> {
        let mut t = LiveTimestamps::new(pts[0], 90_000, delay, 3000);
        pts.iter()
            .map(|&p| {
                let (a, b) = t.stamp(Some(p));
                (a as i64 - 90_000, b as i64 - 90_000)
            })
            .collect()
    }

    #[test]
    fn b_frame_decode_times_precede_presentation_and_increase() {
        // I P B B P B B in decode order (x264 bframes=2), pts from 1000.
        let pts = [1000, 10000, 4000, 7000, 19000, 13000, 16000, 28000, 22000, 25000];
        let got = stamp_all(2, &pts);
        let dts: Vec<i64> = got.iter().map(|x| x.1).collect();
        assert_eq!(dts, vec![-6000, -3000, 0, 3000, 6000, 9000, 12000, 15000, 18000, 21000]);
        for (i, (p, d)) in got.iter().enumerate() {
            assert_eq!(*p, pts[i] - 1000, "pts kept");
            assert!(d <= p, "dts {d} after pts {p}");
            // no later frame is presented before this one decodes
            assert!(got[i..].iter().all(|(lp, _)| lp >= d));
        }
    }

    #[test]
    fn no_reordering_gives_equal_timestamps_and_depth_grows_when_needed() {
        let got = stamp_all(0, &[0, 3000, 6000, 9000]);
        assert!(got.iter().all(|(p, d)| p == d));
        // Announced no B-frames, but they come: dts never passes pts, and keeps rising.
        let got = stamp_all(0, &[0, 9000, 3000, 6000, 18000, 12000, 15000, 27000, 21000, 24000]);
        let mut last = i64::MIN;
        for (p, d) in got {
            assert!(d <= p && d > last, "{p} {d}");
            last = d;
        }
    }

    #[test]
    fn clock_jumps_continue_the_timeline() {
        let got = stamp_all(0, &[0, 3000, 6000, 900_000_000, 900_003_000, 100]);
        let p: Vec<i64> = got.iter().map(|x| x.0).collect();
        assert_eq!(&p[..5], &[0, 3000, 6000, 9000, 12000]);
        assert!(p[5] > p[4]);
    }

    fn sps_640x360() -> Bytes {
        // From fixtures/cam-640x360-30fps-gop2s.h264.
        let file = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../fixtures/cam-640x360-30fps-gop2s.h264"
        ))
        .expect("fixture");
        let sps = split_annexb(&file)
            .find(|n| nal_type(n) == Some(NalType::SPS))
            .expect("sps");
        Bytes::copy_from_slice(sps)
    }

    #[test]
    fn normalizer_starts_at_an_idr_and_uses_sdp_parameter_sets() {
        let sps = sps_640x360();
        let pps = Bytes::from_static(&[0x68, 0xee, 0x3c, 0x80]);
        let mut sdp = vec![0, 0, 0, 1];
        sdp.extend_from_slice(&sps);
        sdp.extend_from_slice(&[0, 0, 0, 1]);
        sdp.extend_from_slice(&pps);
        let mut n = LiveNormalizer::new(0, Some((30, 1)));
        assert_eq!(n.seed_from_extradata(&sdp), None);
        let p_slice = Bytes::from_static(&[0x41, 0x9a, 0x00]);
        let idr = Bytes::from_static(&[0x65, 0x88, 0x80]);
        let aud = Bytes::from_static(&[0x09, 0xf0]);
        assert!(
            n.push(vec![p_slice.clone()], Some(0)).expect("ok").is_empty(),
            "no IDR yet"
        );
        let ev = n.push(vec![aud.clone(), idr.clone()], Some(3000)).expect("ok");
        let [SourceEvent::Params(p), SourceEvent::Frame(f)] = &ev[..] else {
            panic!("{ev:?}")
        };
        assert_eq!((p.width, p.height), (640, 360));
        assert!(f.keyframe);
        let nals: Vec<&[u8]> = crate::media::h264::avcc_nals(&f.data)
            .map(|n| n.expect("avcc"))
            .collect();
        assert_eq!(
            nals,
            vec![&sps[..], &pps[..], &idr[..]],
            "SPS, PPS from the SDP, then the IDR; no AUD"
        );
        let ev = n.push(vec![p_slice.clone()], Some(6000)).expect("ok");
        let [SourceEvent::Frame(f2)] = &ev[..] else {
            panic!("{ev:?}")
        };
        assert!(!f2.keyframe);
        assert_eq!(f2.pts_90k - f.pts_90k, 3000);
        assert_eq!(n.skipped_before_idr, 1);
        // The same parameter sets in-band at the next IDR: no new Params.
        let ev = n
            .push(vec![sps.clone(), pps.clone(), idr.clone()], Some(9000))
            .expect("ok");
        assert!(matches!(&ev[..], [SourceEvent::Frame(_)]), "{ev:?}");
    }

    #[test]
    fn normalizer_never_panics_on_garbage() {
        let mut n = LiveNormalizer::new(3, None);
        for seed in 0u8..=255 {
            let junk: Vec<Bytes> = (0..4)
                .map(|k| Bytes::from(vec![seed.wrapping_mul(k + 1) | 0x05, seed, k, 0xff]))
                .collect();
            let _ = n.push(junk, Some(i64::from(seed) * 1000));
        }
        n.seed_from_extradata(&[1, 2, 3]);
        n.seed_from_extradata(&[]);
    }
}
