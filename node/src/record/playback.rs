//! Playback: the recorded frames of a camera from a time on, and what was recorded when.
//!
//! [`frames`] starts at the keyframe at or before `from` (found in the index, so a seek
//! reads one GOP, not the whole segment), never on a P-frame: after any discontinuity
//! (a frame sequence gap, frames skipped at the source) it skips to the next keyframe. It
//! yields the codec configuration before the first frame, and the stored media keys the
//! frames need (those recorded earlier in the starting segment come first), so a session
//! can answer `StreamAccept` and decrypt, then frames in decode order up to `to`.
//!
//! [`coverage`] lists recorded ranges and gaps (explicit gap markers, and holes between
//! segments longer than a join tolerance) for a timeline.
//!
//! Playback reads the files the recorder is appending to: the open segment is read up to
//! its length when reached, and its torn tail (a record being written) is the end, not an
//! error. A damaged record in a sealed segment is reported and playback goes on with the
//! next segment.

use std::collections::VecDeque;

use bytes::Bytes;

use super::index::{Index, IndexError};
use super::segment::{FrameRecord, Record, SegmentError, SegmentReader, SegmentSummary};
use crate::media::{is_audio, AudioParams, CodecParams};

/// Holes between recorded frames up to this long are not gaps (frame spacing, rolls).
pub const DEFAULT_JOIN_US: i64 = 2_000_000;

/// Why playback cannot go on (as an item of the iterator: the next item continues).
#[derive(Debug, thiserror::Error)]
pub enum PlaybackError {
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error(transparent)]
    Segment(#[from] SegmentError),
}

/// One item of a playback.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PlaybackItem {
    /// The codec configuration of the frames that follow (first, and when it changes).
    Codec(CodecParams),
    /// The audio track of the audio frames that follow (first, and when it changes;
    /// audio frames have [`crate::media::AUDIO_SEQUENCE_BIT`] in their sequence).
    Audio(AudioParams),
    /// The stored media key of an epoch (as the recorder was given it: wrapped).
    Key { epoch: u64, key: Bytes },
    /// A frame, payload as recorded (ciphertext).
    Frame(FrameRecord),
    /// A gap marker inside the range.
    Gap { from_us: i64, to_us: i64, reason: String },
}

/// The frames of one camera over a time range; see [`frames`].
#[derive(Debug)]
pub struct Frames {
    index: Index,
    from_us: i64,
    to_us: i64,
    segments: VecDeque<SegmentSummary>,
    /// Where to start in the first segment (a keyframe record).
    start_offset: Option<u64>,
    /// Records before this offset of the current segment are not played (see `open`).
    skip_until: Option<u64>,
    /// Without a keyframe at or before `from` to start on, frames captured before `from`
    /// are not played (playback starts at the first keyframe after it).
    skip_before_us: Option<i64>,
    reader: Option<(SegmentReader, bool)>,
    pending: VecDeque<PlaybackItem>,
    last_codec: Option<CodecParams>,
    last_audio: Option<AudioParams>,
    need_keyframe: bool,
    last_seq: Option<u64>,
    done: bool,
    used: Vec<SegmentSummary>,
    frames: u64,
    skipped: u64,
}

/// Plays `camera` from the keyframe at or before `from_us` through the last frame
/// captured at or before `to_us` (microseconds since the Unix epoch).
pub fn frames(index: &Index, camera: &str, from_us: i64, to_us: i64) -> Result<Frames, PlaybackError> {
    let mut segments: VecDeque<SegmentSummary> = index.segments_between(camera, from_us, to_us)?.into();
    let mut start_offset = None;
    // The keyframe at or before `from`: in the segment holding `from`, or the one before
    // it (when a segment was rolled without a keyframe).
    for s in index.segments_before(camera, from_us, 2)? {
        let kfs = index.keyframes(camera, s.start_us)?;
        let Some(kf) = kfs
            .iter()
            .filter(|k| k.capture_us <= from_us)
            .max_by_key(|k| (k.capture_us, k.offset))
        else {
            continue;
        };
        // Not across a hole in the recording: the keyframe's segment must reach `from`,
        // itself or by running on (within the join tolerance) into a segment that does.
        // Frames only: a gap marker in the segment does not make it reach `from`. A segment
        // still being written may reach a little further than its summary says.
        let end = s.last_us.unwrap_or(i64::MIN);
        let reaches = s.frames_reach(from_us)
            || segments
                .iter()
                .find(|n| n.start_us > s.start_us)
                .and_then(|n| n.first_us)
                .is_some_and(|first| first <= from_us && first.saturating_sub(end) <= DEFAULT_JOIN_US);
        if reaches {
            segments.retain(|n| n.start_us > s.start_us);
            start_offset = Some(kf.offset);
            segments.push_front(s);
        }
        break;
    }
    Ok(Frames {
        index: index.clone(),
        from_us,
        to_us,
        segments,
        skip_before_us: start_offset.is_none().then_some(from_us),
        start_offset,
        skip_until: None,
        reader: None,
        pending: VecDeque::new(),
        last_codec: None,
        last_audio: None,
        need_keyframe: true,
        last_seq: None,
        done: false,
        used: Vec::new(),
        frames: 0,
        skipped: 0,
    })
}

impl Frames {
    /// The segments read so far (for an export manifest).
    pub fn segments_used(&self) -> &[SegmentSummary] {
        &self.used
    }

    /// Frames yielded so far.
    pub fn frames_yielded(&self) -> u64 {
        self.frames
    }

    /// Frames skipped while waiting for a keyframe.
    pub fn frames_skipped(&self) -> u64 {
        self.skipped
    }

    fn open(&mut self, seg: SegmentSummary) -> Result<(), PlaybackError> {
        let path = self.index.segment_path(&seg);
        let mut reader = SegmentReader::open(&path)?;
        if let Some(c) = reader.header().codec.clone() {
            if self.last_codec.as_ref() != Some(&c) {
                self.last_codec = Some(c.clone());
                self.pending.push_back(PlaybackItem::Codec(c));
            }
        }
        if let Some(a) = reader.header().audio.clone() {
            if self.last_audio.as_ref() != Some(&a) {
                self.last_audio = Some(a.clone());
                self.pending.push_back(PlaybackItem::Audio(a));
            }
        }
        if let Some(offset) = self.start_offset.take() {
            // Keys recorded before the starting keyframe: read each by its offset.
            for k in seg.keys.iter().filter(|k| k.offset < offset) {
                reader.seek(k.offset)?;
                if let Some((_, Record::Key { epoch, key }, _)) = reader.next_record()? {
                    self.pending.push_back(PlaybackItem::Key { epoch, key });
                }
            }
            if seg.codec_changes == 0 {
                reader.seek(offset)?;
            } else {
                // Rare: a codec change record may precede the keyframe; read from the
                // start and let the frame filter drop what comes before `offset`.
                reader.seek(reader.data_start())?;
                self.skip_until = Some(offset);
            }
        }
        self.used.push(seg.clone());
        self.reader = Some((reader, seg.sealed));
        Ok(())
    }
}

impl Iterator for Frames {
    type Item = Result<PlaybackItem, PlaybackError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(item) = self.pending.pop_front() {
                return Some(Ok(item));
            }
            if self.done {
                return None;
            }
            let Some((reader, sealed)) = self.reader.as_mut() else {
                let Some(seg) = self.segments.pop_front() else {
                    self.done = true;
                    continue;
                };
                if let Err(e) = self.open(seg) {
                    self.reader = None;
                    return Some(Err(e));
                }
                continue;
            };
            let sealed = *sealed;
            let (offset, rec) = match reader.next_record() {
                Ok(Some((offset, rec, _))) => (offset, rec),
                Ok(None) => {
                    self.reader = None;
                    continue;
                }
                // The record the recorder is writing right now.
                Err(SegmentError::BadRecord { truncated: true, .. }) if !sealed => {
                    self.reader = None;
                    continue;
                }
                Err(e) => {
                    self.reader = None;
                    return Some(Err(e.into()));
                }
            };
            let before_start = self.skip_until.is_some_and(|o| offset < o);
            match rec {
                Record::Frame(f) => {
                    if before_start {
                        continue;
                    }
                    self.skip_until = None;
                    if f.capture_unix_us > self.to_us {
                        self.done = true;
                        self.reader = None;
                        continue;
                    }
                    if is_audio(f.sequence) {
                        // Audio goes with the video it was recorded beside: from the
                        // first keyframe played, and never between a break and the next
                        // keyframe. It decodes on its own: no continuity of its own.
                        if self.need_keyframe || self.skip_before_us.is_some_and(|t| f.capture_unix_us < t) {
                            continue;
                        }
                        return Some(Ok(PlaybackItem::Frame(f)));
                    }
                    let continuous =
                        self.last_seq.is_none_or(|s| f.sequence == s.wrapping_add(1)) && f.skipped_before == 0;
                    self.last_seq = Some(f.sequence);
                    if self.skip_before_us.is_some_and(|t| f.capture_unix_us < t) {
                        self.skipped += 1;
                        continue;
                    }
                    self.skip_before_us = None;
                    if f.keyframe {
                        self.need_keyframe = false;
                    } else if !continuous {
                        self.need_keyframe = true;
                    }
                    if self.need_keyframe {
                        self.skipped += 1;
                        continue;
                    }
                    self.frames += 1;
                    return Some(Ok(PlaybackItem::Frame(f)));
                }
                Record::Key { epoch, key } => return Some(Ok(PlaybackItem::Key { epoch, key })),
                Record::Codec(c) => {
                    if self.last_codec.as_ref() != Some(&c) {
                        self.last_codec = Some(c.clone());
                        return Some(Ok(PlaybackItem::Codec(c)));
                    }
                }
                Record::Gap { from_us, to_us, reason } => {
                    if !before_start && to_us >= self.from_us && from_us <= self.to_us {
                        return Some(Ok(PlaybackItem::Gap { from_us, to_us, reason }));
                    }
                }
                Record::Seal => self.reader = None,
            }
        }
    }
}

/// A stretch of a camera's timeline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Coverage {
    Recorded {
        from_us: i64,
        to_us: i64,
    },
    /// Nothing recorded; `reason` when a gap marker says why.
    Gap {
        from_us: i64,
        to_us: i64,
        reason: Option<String>,
    },
}

impl Coverage {
    pub fn range(&self) -> (i64, i64) {
        match *self {
            Coverage::Recorded { from_us, to_us } | Coverage::Gap { from_us, to_us, .. } => (from_us, to_us),
        }
    }
}

/// Recorded ranges and gaps of `camera` over `[from_us, to_us]`, in order, covering the
/// whole range.
pub fn coverage(index: &Index, camera: &str, from_us: i64, to_us: i64) -> Result<Vec<Coverage>, PlaybackError> {
    let segments = index.segments_between(camera, from_us, to_us)?;
    Ok(coverage_of(&segments, from_us, to_us, DEFAULT_JOIN_US))
}

/// [`coverage`] from segment summaries (pure): frames join into one recorded range when
/// less than `join_us` apart; gap markers cut recorded ranges.
pub fn coverage_of(segments: &[SegmentSummary], from_us: i64, to_us: i64, join_us: i64) -> Vec<Coverage> {
    if from_us > to_us {
        return Vec::new();
    }
    let mut spans: Vec<(i64, i64)> = segments
        .iter()
        .filter_map(|s| Some((s.first_us?, s.last_us?)))
        .collect();
    spans.sort_unstable();
    let mut merged: Vec<(i64, i64)> = Vec::new();
    for (a, b) in spans {
        match merged.last_mut() {
            Some(last) if a <= last.1.saturating_add(join_us) => last.1 = last.1.max(b),
            _ => merged.push((a, b)),
        }
    }
    let mut markers: Vec<(i64, i64, &str)> = segments
        .iter()
        .flat_map(|s| s.gaps.iter().map(|g| (g.from_us, g.to_us, g.reason.as_str())))
        .collect();
    markers.sort_unstable();
    // Cut each marker's open interval out of the recorded ranges.
    for &(g_from, g_to, _) in &markers {
        if g_to <= g_from {
            continue;
        }
        let mut next = Vec::with_capacity(merged.len() + 1);
        for (a, b) in merged {
            if b <= g_from || a >= g_to {
                next.push((a, b));
                continue;
            }
            if a <= g_from {
                next.push((a, g_from));
            }
            if b >= g_to {
                next.push((g_to, b));
            }
        }
        merged = next;
    }
    let reason_for = |a: i64, b: i64| {
        markers
            .iter()
            .find(|(f, t, _)| *f < b && a < *t)
            .map(|(_, _, r)| (*r).to_owned())
    };
    let mut out = Vec::new();
    let mut cursor = from_us;
    for (a, b) in merged {
        let (a, b) = (a.max(from_us), b.min(to_us));
        if a > b || b < cursor {
            continue;
        }
        let a = a.max(cursor);
        if a > cursor {
            out.push(Coverage::Gap {
                from_us: cursor,
                to_us: a,
                reason: reason_for(cursor, a),
            });
        }
        match out.last_mut() {
            Some(Coverage::Recorded { to_us, .. }) if *to_us >= a => *to_us = (*to_us).max(b),
            _ => out.push(Coverage::Recorded { from_us: a, to_us: b }),
        }
        cursor = b;
    }
    if cursor < to_us || out.is_empty() {
        out.push(Coverage::Gap {
            from_us: cursor,
            to_us,
            reason: reason_for(cursor, to_us),
        });
    }
    out
}

#[cfg(test)]
mod tests;
