//! Normalisation shared by every kind of file: keyframes first and self-contained,
//! SPS/PPS in front of each IDR, timestamps in 90 kHz from 0.

use std::path::Path;

use bytes::Bytes;

use super::parts::{reduce, AuParts};
use super::{Clip, ClipAudio, SourceError, SourceOptions, FPS_RANGE};
use crate::media::h264::{parse_sps, to_avcc};
use crate::media::{AccessUnit, AudioParams, AudioUnit, CodecParams, CLOCK_HZ};

/// Normalises access units from either kind of file into a [`Clip`].
#[derive(Default)]
pub(super) struct ClipBuilder {
    /// Latest SPS and PPS seen (in-band or from the container configuration).
    pub(super) sps: Option<Bytes>,
    pub(super) pps: Option<Bytes>,
    /// The parameter sets of the first keyframe: the clip's [`CodecParams`].
    first: Option<(Bytes, Bytes)>,
    saw_idr: bool,
    skipped_before_idr: usize,
    frames: Vec<PendingFrame>,
    /// The file's audio track and its frames with their pts (90 kHz, the file's time).
    pub(super) audio: Option<(AudioParams, Vec<(i64, Bytes)>)>,
}

/// An access unit before its timestamps are final.
struct PendingFrame {
    /// AVCC, ready to send.
    data: Bytes,
    keyframe: bool,
    /// (pts, dts) in 90 kHz as the file has them (possibly negative); `None` when the
    /// file has none.
    ts: Option<(i64, i64)>,
}

impl ClipBuilder {
    pub(super) fn push(&mut self, nals: Vec<Bytes>, ts: Option<(i64, i64)>) {
        let parts = AuParts::sort(nals, &mut self.sps, &mut self.pps);
        if !parts.has_slice {
            return;
        }
        let idr = parts.idr;
        self.saw_idr |= idr;
        let started = self.first.is_some();
        if !started && !idr {
            self.skipped_before_idr += 1;
            return;
        }
        let nals = if idr {
            let (Some(sps), Some(pps)) = (self.sps.clone(), self.pps.clone()) else {
                self.skipped_before_idr += 1;
                return;
            };
            if !started {
                self.first = Some((sps.clone(), pps.clone()));
            }
            parts.keyframe_nals(&sps, &pps)
        } else {
            parts.nals()
        };
        self.frames.push(PendingFrame {
            data: to_avcc(&nals),
            keyframe: idr,
            ts,
        });
    }

    pub(super) fn finish(self, path: &Path, opts: &SourceOptions, timing: Timing) -> Result<Clip, SourceError> {
        let Some((sps, pps)) = self.first else {
            return Err(if self.saw_idr || (self.sps.is_none() && self.pps.is_none()) {
                SourceError::NoParameterSets { path: path.into() }
            } else {
                SourceError::NoKeyframe { path: path.into() }
            });
        };
        if self.skipped_before_idr > 0 {
            tracing::debug!(
                path = %path.display(),
                skipped = self.skipped_before_idr,
                "dropped access units before the first decodable keyframe"
            );
        }
        let info = parse_sps(&sps).map_err(|source| SourceError::BadSps {
            path: path.into(),
            source,
        })?;
        let container_rate = match timing {
            Timing::Generated => None,
            Timing::Container { rate } => rate,
        };
        let (fps_num, fps_den) = container_rate
            .filter(|&(n, d)| fps_plausible(n, d))
            .or(info.fps().filter(|&(n, d)| fps_plausible(n, d)))
            .map(|(n, d)| reduce(n, d))
            .unwrap_or((opts.default_fps, 1));
        // fps_num >= 1: fps_plausible and the default_fps check guarantee it.
        let (num, den) = (u64::from(fps_num), u64::from(fps_den));
        let frame_duration_90k = ((CLOCK_HZ * den + num / 2) / num).max(1);

        let mut stamped = Vec::with_capacity(self.frames.len());
        let mut last_dts: Option<i64> = None;
        for (n, frame) in self.frames.into_iter().enumerate() {
            let (pts, dts) = match (&timing, frame.ts) {
                // Annex B: n / fps exactly, without accumulating rounding.
                (Timing::Generated, _) => {
                    let t = u128::from(CLOCK_HZ) * n as u128 * u128::from(den) / u128::from(num);
                    let t = i64::try_from(t).unwrap_or(i64::MAX);
                    (t, t)
                }
                (Timing::Container { .. }, Some(ts)) => ts,
                // A packet without timestamps: one frame after the previous one.
                (Timing::Container { .. }, None) => {
                    let t = last_dts.map_or(0, |d| d.saturating_add(frame_duration_90k as i64));
                    (t, t)
                }
            };
            last_dts = Some(dts);
            stamped.push((frame, pts, dts));
        }
        // Shift so the earliest timestamp is 0 (B-frame files start with a negative dts).
        let min = stamped.iter().map(|(_, pts, dts)| (*pts).min(*dts)).min().unwrap_or(0);
        let frames: Vec<AccessUnit> = stamped
            .into_iter()
            .map(|(frame, pts, dts)| AccessUnit {
                data: frame.data,
                // Both are >= min, so the differences are non-negative.
                pts_90k: pts.saturating_sub(min).max(0) as u64,
                dts_90k: dts.saturating_sub(min).max(0) as u64,
                keyframe: frame.keyframe,
            })
            .collect();
        let mut clip = Clip {
            audio: None,
            params: CodecParams {
                sps,
                pps,
                width: info.width,
                height: info.height,
                profile_idc: info.profile_idc,
                level_idc: info.level_idc,
                fps_num,
                fps_den,
            },
            frames,
            frame_duration_90k,
        };
        clip.audio = self.audio.and_then(|(params, units)| {
            // The audio of one loop period from the first picture shown, on the
            // pictures' shift: a looping clip's sound repeats with its pictures.
            let period = clip.loop_period_90k();
            let start = clip.frames.iter().map(|f| f.pts_90k).min().unwrap_or(0);
            let mut units: Vec<AudioUnit> = units
                .into_iter()
                .filter_map(|(pts, data)| {
                    let t = u64::try_from(pts.checked_sub(min)?).ok()?;
                    (t >= start && t - start < period).then_some(AudioUnit { data, pts_90k: t })
                })
                .collect();
            units.sort_by_key(|u| u.pts_90k);
            units.dedup_by_key(|u| u.pts_90k);
            (!units.is_empty()).then_some(ClipAudio { params, units })
        });
        Ok(clip)
    }
}

/// Where a clip's timestamps come from.
pub(super) enum Timing {
    /// Raw Annex B has none: pts = dts = n / fps.
    Generated,
    /// The container's packet timestamps; `rate` is its frame rate when it states one.
    Container { rate: Option<(u32, u32)> },
}

pub(super) fn fps_plausible(num: u32, den: u32) -> bool {
    den > 0
        && u64::from(num) >= u64::from(den) * u64::from(*FPS_RANGE.start())
        && u64::from(num) <= u64::from(den) * u64::from(*FPS_RANGE.end())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_rates() {
        assert_eq!(reduce(15360, 512), (30, 1));
        assert_eq!(reduce(30000, 1001), (30000, 1001));
        assert_eq!(reduce(0, 0), (0, 0));
        assert!(fps_plausible(30, 1));
        assert!(fps_plausible(30000, 1001));
        assert!(!fps_plausible(0, 1));
        assert!(!fps_plausible(1, 0));
        assert!(!fps_plausible(1, 2), "half a frame per second is not believed");
        assert!(!fps_plausible(90000, 1));
    }
}
