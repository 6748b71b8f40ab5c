//! Live fan-out, pure: the GOP cache and the per-subscriber queue.
//!
//! The camera's hub pushes every frame into the [`GopCache`] and into each subscriber's
//! [`SubscriberQueue`]; the subscriber's own task pops and writes to its stream. Frames
//! are `MediaFrame`s whose payload is a shared `Bytes`: pushing to N queues copies no
//! payload.
//!
//! The [`GopCache`] is generic over the frame ([`GopFrame`]: keyframe or not, and its
//! size): the hub caches sealed `MediaFrame`s, the gateway's taps cache opened frames
//! behind an `Arc`. Monomorphised, so the hub's hot path has no dynamic dispatch.
//!
//! Live means live. A queue holds at most `max_frames` / `max_bytes` of live frames (plus
//! the instant-start backlog it was born with). When a push would overflow it, the queue
//! is emptied and the subscriber waits for the next keyframe: one *skip* is counted, the
//! dropped frames are counted, and the next frame it gets says how many it missed. It
//! never grows a backlog and never makes the camera wait.

use std::collections::VecDeque;
use std::sync::Arc;

use camesh_proto::MediaFrame;

/// Bounds of one subscriber's queue (beyond its instant-start backlog).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimits {
    pub max_frames: usize,
    pub max_bytes: usize,
}

/// What the [`GopCache`] needs to know of a frame.
pub trait GopFrame {
    fn is_keyframe(&self) -> bool;
    /// Bytes the frame counts against the cache's bound (its payload).
    fn byte_size(&self) -> usize;
}

impl GopFrame for MediaFrame {
    fn is_keyframe(&self) -> bool {
        self.header.keyframe
    }

    fn byte_size(&self) -> usize {
        self.payload.len()
    }
}

impl<T: GopFrame + ?Sized> GopFrame for Arc<T> {
    fn is_keyframe(&self) -> bool {
        (**self).is_keyframe()
    }

    fn byte_size(&self) -> usize {
        (**self).byte_size()
    }
}

/// The frames since the last keyframe, so a new viewer starts at once on a keyframe.
#[derive(Debug)]
pub struct GopCache<F = MediaFrame> {
    frames: Vec<F>,
    bytes: usize,
    max_bytes: usize,
    max_frames: usize,
}

impl<F> Default for GopCache<F> {
    fn default() -> Self {
        Self::new(0)
    }
}

impl<F> GopCache<F> {
    /// A cache of at most `max_bytes` (and any number of frames).
    pub fn new(max_bytes: usize) -> Self {
        Self {
            frames: Vec::new(),
            bytes: 0,
            max_bytes,
            max_frames: usize::MAX,
        }
    }

    /// Also at most `max_frames` frames.
    pub fn with_max_frames(mut self, max_frames: usize) -> Self {
        self.max_frames = max_frames;
        self
    }

    /// The cached GOP, keyframe first (empty if there is none).
    pub fn frames(&self) -> &[F] {
        &self.frames
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn clear(&mut self) {
        self.frames.clear();
        self.bytes = 0;
    }
}

impl<F: GopFrame + Clone> GopCache<F> {
    /// Adds a frame: a keyframe starts a new GOP; a GOP larger than the cache is
    /// dropped whole (better no instant start than a start on a P-frame).
    pub fn push(&mut self, frame: &F) {
        if frame.is_keyframe() {
            self.frames.clear();
            self.bytes = 0;
        } else if self.frames.is_empty() {
            return;
        }
        let size = frame.byte_size();
        if self.frames.len() >= self.max_frames || self.bytes + size > self.max_bytes {
            self.frames.clear();
            self.bytes = 0;
            return;
        }
        self.bytes += size;
        self.frames.push(frame.clone());
    }
}

/// What happened to a pushed frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Push {
    Queued,
    /// Dropped: the subscriber is waiting for a keyframe.
    Dropped,
    /// The queue overflowed: it was emptied and the subscriber now waits for a keyframe.
    Overflowed,
}

/// Counters a subscriber exposes (and the viewer sees as skips).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Times the queue overflowed and skipped to the next keyframe.
    pub skips: u64,
    /// Frames never delivered because of skips.
    pub dropped_frames: u64,
    pub queued_frames: usize,
    pub queued_bytes: usize,
}

/// One subscriber's bounded live queue.
#[derive(Debug)]
pub struct SubscriberQueue {
    limits: QueueLimits,
    queue: VecDeque<MediaFrame>,
    bytes: usize,
    /// Frames and bytes at the front that came from the GOP cache; they do not count
    /// against the limits, so a long GOP never overflows a newcomer.
    backlog_frames: usize,
    backlog_bytes: usize,
    waiting_for_keyframe: bool,
    /// Frames dropped since the last delivered frame (reported in its header).
    missed: u64,
    stats: QueueStats,
}

impl SubscriberQueue {
    /// A new queue, starting with the cached GOP (if any). Without one, the subscriber
    /// waits for the next keyframe: it never starts on a P-frame.
    pub fn new(limits: QueueLimits, gop: &[MediaFrame]) -> Self {
        let starts_on_keyframe = gop.first().is_some_and(|f| f.header.keyframe);
        let mut q = Self {
            limits,
            queue: VecDeque::with_capacity(limits.max_frames.min(1024) + gop.len()),
            bytes: 0,
            backlog_frames: 0,
            backlog_bytes: 0,
            waiting_for_keyframe: !starts_on_keyframe,
            missed: 0,
            stats: QueueStats::default(),
        };
        if starts_on_keyframe {
            for f in gop {
                q.bytes += f.payload.len();
                q.queue.push_back(f.clone());
            }
            q.backlog_frames = gop.len();
            q.backlog_bytes = q.bytes;
        }
        q
    }

    pub fn push(&mut self, frame: MediaFrame) -> Push {
        if self.waiting_for_keyframe {
            if !frame.header.keyframe {
                self.missed += 1;
                self.stats.dropped_frames += 1;
                return Push::Dropped;
            }
            self.waiting_for_keyframe = false;
        }
        let live_frames = self.queue.len() - self.backlog_frames;
        let live_bytes = self.bytes - self.backlog_bytes;
        if live_frames + 1 > self.limits.max_frames || live_bytes + frame.payload.len() > self.limits.max_bytes {
            let lost = self.queue.len() as u64 + 1;
            self.queue.clear();
            self.bytes = 0;
            self.backlog_frames = 0;
            self.backlog_bytes = 0;
            self.stats.skips += 1;
            self.stats.dropped_frames += lost;
            self.missed += lost;
            // A keyframe that overflowed is lost too; wait for the next one.
            self.waiting_for_keyframe = true;
            return Push::Overflowed;
        }
        self.bytes += frame.payload.len();
        self.queue.push_back(frame);
        Push::Queued
    }

    /// The next frame to send, with `skipped_before` set to the frames missed before it.
    pub fn pop(&mut self) -> Option<MediaFrame> {
        let mut f = self.queue.pop_front()?;
        let size = f.payload.len();
        self.bytes -= size;
        if self.backlog_frames > 0 {
            self.backlog_frames -= 1;
            self.backlog_bytes -= size;
        }
        f.header.skipped_before = u32::try_from(self.missed).unwrap_or(u32::MAX);
        self.missed = 0;
        Some(f)
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    pub fn stats(&self) -> QueueStats {
        QueueStats {
            queued_frames: self.queue.len(),
            queued_bytes: self.bytes,
            ..self.stats
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use camesh_proto::pb::FrameHeader;
    use proptest::prelude::*;

    fn f(seq: u64, key: bool, size: usize) -> MediaFrame {
        MediaFrame {
            header: FrameHeader {
                sequence: seq,
                keyframe: key,
                ..Default::default()
            },
            payload: Bytes::from(vec![0u8; size]),
            wire: None,
        }
    }

    const LIM: QueueLimits = QueueLimits {
        max_frames: 4,
        max_bytes: 1000,
    };

    #[test]
    fn gop_cache_keeps_frames_since_last_keyframe() {
        let mut g = GopCache::new(10_000);
        g.push(&f(0, false, 10)); // no keyframe yet: not cached
        assert!(g.frames().is_empty());
        g.push(&f(1, true, 10));
        g.push(&f(2, false, 10));
        g.push(&f(3, true, 10));
        g.push(&f(4, false, 10));
        let seqs: Vec<_> = g.frames().iter().map(|x| x.header.sequence).collect();
        assert_eq!(seqs, vec![3, 4]);
    }

    #[test]
    fn gop_larger_than_cache_is_dropped_whole() {
        let mut g = GopCache::new(25);
        g.push(&f(1, true, 10));
        g.push(&f(2, false, 10));
        g.push(&f(3, false, 10));
        assert!(g.frames().is_empty());
        g.push(&f(4, false, 1));
        assert!(g.frames().is_empty(), "stays empty until the next keyframe");
    }

    #[test]
    fn gop_longer_than_the_frame_bound_is_dropped_whole() {
        let mut g = GopCache::new(10_000).with_max_frames(2);
        g.push(&f(1, true, 10));
        g.push(&f(2, false, 10));
        assert_eq!(g.frames().len(), 2);
        g.push(&f(3, false, 10));
        assert!(g.frames().is_empty());
        assert_eq!(g.bytes(), 0);
        g.push(&f(4, true, 10));
        assert_eq!(g.frames().len(), 1, "the next keyframe starts a new GOP");
    }

    #[test]
    fn gop_cache_holds_shared_frames() {
        let mut g: GopCache<Arc<MediaFrame>> = GopCache::new(25);
        g.push(&Arc::new(f(1, true, 10)));
        g.push(&Arc::new(f(2, false, 10)));
        assert_eq!(g.bytes(), 20);
        g.push(&Arc::new(f(3, false, 10)));
        assert!(g.frames().is_empty(), "over the byte bound: dropped whole");
    }

    #[test]
    fn newcomer_starts_on_cached_keyframe_even_with_a_long_gop() {
        let gop: Vec<_> = std::iter::once(f(10, true, 100))
            .chain((11..40).map(|s| f(s, false, 100)))
            .collect();
        let mut q = SubscriberQueue::new(LIM, &gop);
        assert_eq!(
            q.push(f(40, false, 100)),
            Push::Queued,
            "backlog does not count against limits"
        );
        let first = q.pop().expect("frame");
        assert!(first.header.keyframe);
        assert_eq!(first.header.sequence, 10);
    }

    #[test]
    fn without_cache_waits_for_keyframe() {
        let mut q = SubscriberQueue::new(LIM, &[]);
        assert_eq!(q.push(f(1, false, 10)), Push::Dropped);
        assert_eq!(q.push(f(2, true, 10)), Push::Queued);
        let first = q.pop().expect("frame");
        assert!(first.header.keyframe);
        assert_eq!(first.header.skipped_before, 1);
    }

    #[test]
    fn overflow_skips_to_next_keyframe_and_counts() {
        let mut q = SubscriberQueue::new(LIM, &[]);
        assert_eq!(q.push(f(0, true, 10)), Push::Queued);
        for s in 1..4 {
            assert_eq!(q.push(f(s, false, 10)), Push::Queued);
        }
        assert_eq!(q.push(f(4, false, 10)), Push::Overflowed);
        assert!(q.is_empty());
        assert_eq!(q.push(f(5, false, 10)), Push::Dropped);
        assert_eq!(q.push(f(6, true, 10)), Push::Queued);
        let next = q.pop().expect("frame");
        assert_eq!(next.header.sequence, 6);
        assert_eq!(next.header.skipped_before, 6);
        let st = q.stats();
        assert_eq!(st.skips, 1);
        assert_eq!(st.dropped_frames, 6);
    }

    proptest! {
        /// Whatever the push/pop pattern: memory stays bounded, the first frame after
        /// any loss is a keyframe, sequences only increase, and every frame is either
        /// delivered or counted as dropped.
        #[test]
        fn queue_invariants(ops in proptest::collection::vec((any::<bool>(), 0u8..10, 1usize..400), 1..400)) {
            let mut q = SubscriberQueue::new(LIM, &[]);
            let (mut pushed, mut delivered) = (0u64, 0u64);
            let mut last_seq = None;
            let mut seq = 0;
            for (is_pop, kind, size) in ops {
                if is_pop {
                    if let Some(fr) = q.pop() {
                        delivered += 1;
                        if fr.header.skipped_before > 0 || last_seq.is_none() {
                            prop_assert!(fr.header.keyframe);
                        }
                        prop_assert!(last_seq.is_none_or(|l| fr.header.sequence > l));
                        last_seq = Some(fr.header.sequence);
                    }
                } else {
                    pushed += 1;
                    q.push(f(seq, kind == 0, size));
                    seq += 1;
                    let st = q.stats();
                    prop_assert!(st.queued_frames <= LIM.max_frames);
                    prop_assert!(st.queued_bytes <= LIM.max_bytes);
                }
            }
            let st = q.stats();
            prop_assert_eq!(pushed, delivered + st.dropped_frames + st.queued_frames as u64);
        }
    }
}
