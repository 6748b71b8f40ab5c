//! Splicing two paths of one stream, pure: make-before-break without gaps or duplicates.
//!
//! Every path of a camera's stream carries the camera's own frame numbering (forwarders
//! keep sequence numbers and capture times, the frames are sealed at the source). While
//! the IO layer switches, frames arrive from the old path and the new one; the splice
//! decides what reaches the viewer:
//! - a frame is a duplicate when its sequence and capture time are both at or before the
//!   last delivered frame's (a restarted camera numbers from 0 again, but later);
//! - the new path is ignored until its first keyframe;
//! - once the new path has caught up with what was delivered, the switch is complete,
//!   the old path may be closed, and the new path is the current one (its frames are
//!   then pushed as [`Side::Old`]);
//! - a new path ahead of the old one is held in a bounded buffer until the old path
//!   reaches it; if the buffer fills or the old path ends, the buffer is delivered
//!   (starting at a keyframe) and the gap is counted.

use std::collections::VecDeque;

/// Which path a frame came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Old,
    New,
}

/// The ordering facts of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    pub sequence: u64,
    pub capture_us: i64,
    pub keyframe: bool,
}

impl Mark {
    /// Whether this frame is `last` or older: both its sequence and its capture time are
    /// at or before `last`'s (a restarted camera numbers from 0 again, but later).
    pub fn is_at_or_before(&self, last: &Mark) -> bool {
        self.sequence <= last.sequence && self.capture_us <= last.capture_us
    }
}

/// The result of one frame.
#[derive(Debug, PartialEq, Eq)]
pub struct Step<T> {
    /// Frames to hand to the viewer, in order.
    pub deliver: Vec<T>,
    /// The switch completed with this frame: close the old path.
    pub switched: bool,
}

impl<T> Step<T> {
    fn none() -> Self {
        Self {
            deliver: Vec::new(),
            switched: false,
        }
    }
}

/// The splice of one stream: a cursor over delivered frames and, during a switch, the
/// new path's state.
#[derive(Debug)]
pub struct Splice<T> {
    last: Option<Mark>,
    switching: bool,
    new_started: bool,
    buffer: VecDeque<(Mark, T)>,
    max_buffer: usize,
    /// Frames dropped as duplicates, and switches that had to leave a gap.
    pub duplicates: u64,
    pub gaps: u64,
}

impl<T> Splice<T> {
    pub fn new(max_buffer: usize) -> Self {
        Self {
            last: None,
            switching: false,
            new_started: false,
            buffer: VecDeque::new(),
            max_buffer: max_buffer.max(1),
            duplicates: 0,
            gaps: 0,
        }
    }

    /// The last frame handed to the viewer.
    pub fn last(&self) -> Option<Mark> {
        self.last
    }

    pub fn is_switching(&self) -> bool {
        self.switching
    }

    /// A new path is being opened next to the current one.
    pub fn begin_switch(&mut self) {
        self.switching = true;
        self.new_started = false;
        self.buffer.clear();
    }

    /// The new path failed before the switch completed: stay on the old one.
    pub fn abort_switch(&mut self) {
        self.switching = false;
        self.buffer.clear();
    }

    /// Whether `m` was already delivered (or is older than what was).
    pub fn is_duplicate(&self, m: &Mark) -> bool {
        self.last.is_some_and(|l| m.is_at_or_before(&l))
    }

    fn deliver(&mut self, m: Mark, item: T, out: &mut Vec<T>) {
        if self.is_duplicate(&m) {
            self.duplicates += 1;
            return;
        }
        self.last = Some(m);
        out.push(item);
    }

    fn next_in_line(&self, m: &Mark) -> bool {
        self.last
            .is_none_or(|l| m.sequence <= l.sequence + 1 || m.capture_us <= l.capture_us)
    }

    fn finish(&mut self, out: &mut Vec<T>) {
        while let Some((m, item)) = self.buffer.pop_front() {
            self.deliver(m, item, out);
        }
        self.switching = false;
    }

    /// One frame from one path.
    pub fn push(&mut self, side: Side, m: Mark, item: T) -> Step<T> {
        let mut step = Step::none();
        if !self.switching {
            // One path only; frames from anything else are stale.
            if side == Side::Old {
                self.deliver(m, item, &mut step.deliver);
            }
            return step;
        }
        match side {
            Side::Old => {
                self.deliver(m, item, &mut step.deliver);
                // The old path reached the new path's buffered frames.
                if self.buffer.front().is_some_and(|(f, _)| self.next_in_line(f)) {
                    self.finish(&mut step.deliver);
                    step.switched = true;
                }
            }
            Side::New => {
                if !self.new_started && !m.keyframe {
                    return step;
                }
                self.new_started = true;
                if !self.buffer.is_empty() {
                    self.buffer.push_back((m, item));
                    if self.buffer.len() >= self.max_buffer {
                        self.gaps += 1;
                        self.finish(&mut step.deliver);
                        step.switched = true;
                    }
                } else if self.is_duplicate(&m) {
                    self.duplicates += 1;
                    // Caught up exactly: everything after comes from the new path.
                    if self.last.is_some_and(|l| l.sequence == m.sequence) {
                        self.switching = false;
                        step.switched = true;
                    }
                } else if self.next_in_line(&m) {
                    self.deliver(m, item, &mut step.deliver);
                    self.switching = false;
                    step.switched = true;
                } else {
                    self.buffer.push_back((m, item));
                }
            }
        }
        step
    }

    /// The old path ended during a switch: deliver what the new one buffered (the gap,
    /// if any, cannot be filled any more). Returns the frames to deliver.
    pub fn old_ended(&mut self) -> Vec<T> {
        let mut out = Vec::new();
        if self.switching {
            if !self.buffer.is_empty() {
                self.gaps += 1;
            }
            self.finish(&mut out);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn m(seq: u64, key: bool) -> Mark {
        Mark {
            sequence: seq,
            capture_us: 1_000 + seq as i64 * 33_333,
            keyframe: key,
        }
    }

    fn feed(s: &mut Splice<u64>, from: Side, seq: u64, key: bool) -> Step<u64> {
        s.push(from, m(seq, key), seq)
    }

    #[test]
    fn new_path_behind_the_old_one_takes_over_without_duplicates() {
        let mut s = Splice::new(64);
        let mut out = Vec::new();
        for q in 0..10 {
            out.extend(feed(&mut s, Side::Old, q, q == 0).deliver);
        }
        s.begin_switch();
        // The new path starts at the cached keyframe 0; old keeps going meanwhile.
        for q in 0..5 {
            assert!(feed(&mut s, Side::New, q, q == 0).deliver.is_empty());
        }
        out.extend(feed(&mut s, Side::Old, 10, false).deliver);
        for q in 5..10 {
            assert!(!feed(&mut s, Side::New, q, false).switched);
        }
        let st = feed(&mut s, Side::New, 10, false);
        assert!(st.switched, "caught up exactly at the last delivered frame");
        // The new path is the current one now.
        for q in 11..15 {
            out.extend(feed(&mut s, Side::Old, q, false).deliver);
        }
        // A frame delivered already never goes out twice.
        assert!(feed(&mut s, Side::Old, 12, false).deliver.is_empty());
        assert_eq!(out, (0..15).collect::<Vec<_>>());
    }

    #[test]
    fn new_path_ahead_waits_for_the_old_one() {
        let mut s = Splice::new(64);
        let mut out = Vec::new();
        for q in 0..5 {
            out.extend(feed(&mut s, Side::Old, q, q == 0).deliver);
        }
        s.begin_switch();
        assert!(feed(&mut s, Side::New, 8, true).deliver.is_empty());
        assert!(feed(&mut s, Side::New, 9, false).deliver.is_empty());
        for q in 5..7 {
            out.extend(feed(&mut s, Side::Old, q, false).deliver);
        }
        let st = feed(&mut s, Side::Old, 7, false);
        assert!(st.switched);
        out.extend(st.deliver);
        out.extend(feed(&mut s, Side::Old, 10, false).deliver);
        assert_eq!(out, (0..11).collect::<Vec<_>>());
        assert_eq!(s.gaps, 0);
    }

    #[test]
    fn old_path_dying_mid_switch_delivers_the_buffer_with_a_gap() {
        let mut s = Splice::new(64);
        for q in 0..5 {
            feed(&mut s, Side::Old, q, q == 0);
        }
        s.begin_switch();
        feed(&mut s, Side::New, 30, true);
        feed(&mut s, Side::New, 31, false);
        assert_eq!(s.old_ended(), vec![30, 31]);
        assert_eq!(s.gaps, 1);
        assert!(!s.is_switching());
    }

    #[test]
    fn a_restarted_camera_is_not_taken_for_duplicates() {
        let mut s: Splice<u64> = Splice::new(8);
        s.push(Side::Old, m(500, true), 500);
        let restarted = Mark {
            sequence: 0,
            capture_us: m(500, false).capture_us + 5_000_000,
            keyframe: true,
        };
        assert_eq!(s.push(Side::Old, restarted, 0).deliver, vec![0]);
    }

    proptest! {
        /// Whatever the interleaving of two paths carrying the same numbered frames (the
        /// new one starting at some keyframe), the viewer sees strictly increasing
        /// sequence numbers, and none missing when the old path lives long enough.
        #[test]
        fn spliced_output_is_gapless_and_duplicate_free(
            start in 0u64..40, switch_at in 0u64..60, new_from_key in 0u64..6, order in proptest::collection::vec(any::<bool>(), 0..400)
        ) {
            let gop = 10;
            let end = 120u64;
            let mut s = Splice::new(256);
            let mut out: Vec<u64> = Vec::new();
            let mut old = start;
            while old < start + switch_at {
                out.extend(feed(&mut s, Side::Old, old, old % gop == 0 || old == start).deliver);
                old += 1;
            }
            s.begin_switch();
            let mut new = (old / gop).saturating_sub(new_from_key) * gop;
            let mut order = order.into_iter();
            let mut switched = false;
            while new < end && !(switched && old >= end) {
                let pick_old = !switched && old < end && order.next().unwrap_or(false);
                let st = if pick_old {
                    old += 1;
                    feed(&mut s, Side::Old, old - 1, (old - 1) % gop == 0)
                } else {
                    new += 1;
                    let from = if switched { Side::Old } else { Side::New };
                    feed(&mut s, from, new - 1, (new - 1) % gop == 0)
                };
                switched |= st.switched;
                out.extend(st.deliver);
            }
            prop_assert!(out.windows(2).all(|w| w[1] == w[0] + 1), "{:?}", out);
        }
    }
}
