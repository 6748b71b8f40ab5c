//! The replication plan (pure): what to send next given both sides' coverage, the
//! sender's evidence locks and priority ranges, the order, and a rate budget; and the
//! shore's decisions (a frame it holds already, when to start a new segment). No IO and
//! no clock: callers pass times in microseconds.

use crate::config::ReplicateOrder;

/// Capture times in microseconds, both ends included.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Span {
    pub from: i64,
    pub to: i64,
}

impl Span {
    pub fn new(from: i64, to: i64) -> Span {
        Span {
            from: from.min(to),
            to: to.max(from),
        }
    }

    pub fn contains(&self, t: i64) -> bool {
        self.from <= t && t <= self.to
    }

    fn overlaps(&self, o: &Span) -> bool {
        self.from <= o.to && o.from <= self.to
    }

    fn clip(&self, o: &Span) -> Option<Span> {
        let (from, to) = (self.from.max(o.from), self.to.min(o.to));
        (from <= to).then_some(Span { from, to })
    }

    pub fn len_us(&self) -> i64 {
        self.to.saturating_sub(self.from)
    }
}

/// The part of `s` inside `window`.
pub fn clip(s: &Span, window: &Span) -> Option<Span> {
    s.clip(window)
}

/// Sorted, with overlapping or touching spans (at most `join_us` apart) merged.
pub fn merge(spans: &[Span], join_us: i64) -> Vec<Span> {
    let mut v: Vec<Span> = spans.to_vec();
    v.sort();
    let mut out: Vec<Span> = Vec::with_capacity(v.len());
    for s in v {
        match out.last_mut() {
            Some(l) if s.from <= l.to.saturating_add(join_us.max(1)) => l.to = l.to.max(s.to),
            _ => out.push(s),
        }
    }
    out
}

/// What of `have` is not covered by `minus` (both merged first). A frame at a capture
/// time inside `minus` is held already, so the parts returned never include one.
pub fn subtract(have: &[Span], minus: &[Span]) -> Vec<Span> {
    let minus = merge(minus, 1);
    let mut out = Vec::new();
    for s in merge(have, 1) {
        // i128: one past i64::MAX is a valid "nothing left".
        let mut from = i128::from(s.from);
        for m in minus.iter().filter(|m| m.overlaps(&s)) {
            if i128::from(m.from) > from {
                out.push(Span {
                    from: from as i64,
                    to: m.from - 1,
                });
            }
            from = from.max(i128::from(m.to) + 1);
            if from > i128::from(s.to) {
                break;
            }
        }
        if from <= i128::from(s.to) {
            out.push(Span {
                from: from as i64,
                to: s.to,
            });
        }
    }
    out
}

/// Why a chunk was picked (for logs and tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Why {
    Locked,
    Priority,
    Rest,
}

/// The next range to send: missing parts under an evidence lock first (newest lock
/// first), then under a priority range (in the order given), then the rest in `order`.
/// A chunk is at most `chunk_us` long; when going newest first, it is the newest
/// `chunk_us` of its span (frames inside a chunk always go oldest first).
pub fn next_chunk(
    missing: &[Span],
    locks: &[Span],
    priority: &[Span],
    order: ReplicateOrder,
    chunk_us: i64,
) -> Option<(Span, Why)> {
    let missing = merge(missing, 1);
    let chunk_us = chunk_us.max(1);
    let cut = |s: Span, newest: bool| {
        if s.len_us() <= chunk_us {
            s
        } else if newest {
            Span {
                from: s.to - chunk_us,
                to: s.to,
            }
        } else {
            Span {
                from: s.from,
                to: s.from + chunk_us,
            }
        }
    };
    let mut locks = locks.to_vec();
    locks.sort_by_key(|l| std::cmp::Reverse(l.to));
    for l in &locks {
        // Inside a lock, oldest first: the incident plays from its start soonest.
        if let Some(s) = missing.iter().find_map(|m| m.clip(l)) {
            return Some((cut(s, false), Why::Locked));
        }
    }
    for p in priority {
        if let Some(s) = missing.iter().find_map(|m| m.clip(p)) {
            return Some((cut(s, false), Why::Priority));
        }
    }
    let s = match order {
        ReplicateOrder::Newest => missing.last().copied()?,
        ReplicateOrder::Oldest => missing.first().copied()?,
    };
    Some((cut(s, order == ReplicateOrder::Newest), Why::Rest))
}

/// A token bucket in bytes (pure): `take` says how long to wait before sending.
/// Debt is allowed, so a frame larger than the burst still goes, after its time.
#[derive(Clone, Debug)]
pub struct TokenBucket {
    /// Bytes per second; 0: no cap.
    rate: f64,
    burst: f64,
    tokens: f64,
    last_us: Option<i64>,
}

impl TokenBucket {
    /// `kbps` kbit/s (0: no cap), with a burst of `burst_ms` of the rate.
    pub fn new(kbps: u64, burst_ms: u64) -> TokenBucket {
        let rate = kbps as f64 * 1000.0 / 8.0;
        let burst = (rate * burst_ms as f64 / 1000.0).max(1500.0);
        TokenBucket {
            rate,
            burst,
            tokens: burst,
            last_us: None,
        }
    }

    /// Takes `bytes` at `now_us`; returns the microseconds to wait before sending them.
    pub fn take(&mut self, now_us: i64, bytes: usize) -> i64 {
        if self.rate <= 0.0 {
            return 0;
        }
        let elapsed = self.last_us.map_or(0, |l| now_us.saturating_sub(l).max(0));
        self.last_us = Some(now_us);
        self.tokens = (self.tokens + elapsed as f64 * self.rate / 1e6).min(self.burst);
        self.tokens -= bytes as f64;
        if self.tokens >= 0.0 {
            0
        } else {
            (-self.tokens / self.rate * 1e6).ceil() as i64
        }
    }
}

/// Whether a link may be used: `via` empty (any link), or one of the connected peers
/// matches an entry by peer id or certificate name.
pub fn link_allowed(via: &[String], connected: &[(String, String)]) -> bool {
    via.is_empty()
        || connected
            .iter()
            .any(|(peer, name)| via.iter().any(|v| v == peer || (!name.is_empty() && v == name)))
}

/// The shore's check for one arriving frame (pure): a duplicate (held already: dropped
/// and counted), else whether it needs a new segment first: its capture time is not after
/// the last frame written, or something held lies between the two (segments never
/// overlap, and a segment's frames go forward in time), or the frame does not `continue`
/// what was written last: it opens a chunk that does not start where shore's footage
/// ends. Appending it would make the run of footage written span a hole, which would then
/// count as held and never be asked for (newest-first order sends a later chunk before
/// the hole is filled).
pub fn arriving(t: i64, last_written: Option<i64>, held: &[Span], continues: bool) -> Arriving {
    if held.iter().any(|s| s.contains(t)) {
        return Arriving::Duplicate;
    }
    match last_written {
        None => Arriving::NewSegment,
        Some(_) if !continues => Arriving::NewSegment,
        Some(l) if t <= l => Arriving::NewSegment,
        Some(l) if held.iter().any(|s| s.from > l && s.from < t) => Arriving::NewSegment,
        Some(_) => Arriving::Append,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arriving {
    Duplicate,
    NewSegment,
    Append,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(from: i64, to: i64) -> Span {
        Span::new(from, to)
    }

    #[test]
    fn merge_and_subtract() {
        assert_eq!(merge(&[s(5, 9), s(0, 3), s(4, 4)], 1), vec![s(0, 9)]);
        assert_eq!(merge(&[s(0, 3), s(10, 12)], 1), vec![s(0, 3), s(10, 12)]);
        assert_eq!(merge(&[s(0, 3), s(10, 12)], 7), vec![s(0, 12)]);
        assert_eq!(
            subtract(&[s(0, 100)], &[s(10, 20), s(50, 60)]),
            vec![s(0, 9), s(21, 49), s(61, 100)]
        );
        assert_eq!(subtract(&[s(0, 100)], &[s(-5, 200)]), vec![]);
        assert_eq!(subtract(&[s(0, 10), s(20, 30)], &[]), vec![s(0, 10), s(20, 30)]);
        assert_eq!(subtract(&[s(0, 10)], &[s(0, 0)]), vec![s(1, 10)]);
        assert_eq!(subtract(&[s(0, 10)], &[s(10, 10)]), vec![s(0, 9)]);
        assert_eq!(subtract(&[s(i64::MIN, i64::MAX)], &[s(i64::MAX, i64::MAX)]).len(), 1);
    }

    #[test]
    fn locks_then_priority_then_order() {
        let missing = [s(0, 1000), s(2000, 3000)];
        let locks = [s(100, 200), s(2500, 2600)];
        // The newest lock first, from its start.
        assert_eq!(
            next_chunk(&missing, &locks, &[], ReplicateOrder::Newest, 50),
            Some((s(2500, 2550), Why::Locked))
        );
        // That lock held: the older one.
        let missing2 = subtract(&missing, &[s(2500, 2600)]);
        assert_eq!(
            next_chunk(&missing2, &locks, &[], ReplicateOrder::Oldest, 500),
            Some((s(100, 200), Why::Locked))
        );
        // Locks held: priority ranges, in the order given.
        let missing3 = subtract(&missing2, &[s(100, 200)]);
        let prio = [s(800, 2100)];
        assert_eq!(
            next_chunk(&missing3, &locks, &prio, ReplicateOrder::Newest, 500),
            Some((s(800, 1000), Why::Priority))
        );
        // Then the rest: newest chunk of the newest span, or oldest of the oldest.
        assert_eq!(
            next_chunk(&missing3, &locks, &[], ReplicateOrder::Newest, 100),
            Some((s(2900, 3000), Why::Rest))
        );
        assert_eq!(
            next_chunk(&missing3, &locks, &[], ReplicateOrder::Oldest, 100),
            Some((s(0, 99), Why::Rest))
        );
        assert_eq!(next_chunk(&[], &locks, &prio, ReplicateOrder::Newest, 100), None);
    }

    /// Driven like the sender: plan, "send", subtract what the shore acked, until done;
    /// every missing microsecond is sent exactly once, locks before anything else.
    #[test]
    fn plan_drains_without_repeats() {
        let vehicle = [s(0, 9_999), s(20_000, 29_999), s(40_000, 44_999)];
        let mut shore = vec![s(5_000, 6_000)];
        let locks = [s(21_000, 22_000)];
        let mut sent: Vec<Span> = Vec::new();
        for round in 0..1000 {
            let missing = subtract(&vehicle, &shore);
            let Some((c, why)) = next_chunk(&missing, &locks, &[], ReplicateOrder::Newest, 1_000) else {
                break;
            };
            if round == 0 {
                assert_eq!(why, Why::Locked);
            }
            for prev in &sent {
                assert!(!prev.overlaps(&c), "{c:?} sent twice");
            }
            assert!(!shore.iter().any(|h| h.overlaps(&c)), "{c:?} was held");
            sent.push(c);
            shore.push(c);
        }
        assert!(subtract(&vehicle, &shore).is_empty());
    }

    #[test]
    fn token_bucket_keeps_the_rate() {
        // 800 kbit/s = 100,000 bytes/s; burst 100 ms = 10,000 bytes.
        let mut b = TokenBucket::new(800, 100);
        let mut now = 0i64;
        let mut sent = 0usize;
        while now < 10_000_000 {
            let wait = b.take(now, 1_200);
            now += wait;
            sent += 1_200;
        }
        // Over 10 s: the burst plus 10 s of rate, no more.
        let rate = sent as f64 / 10.0;
        assert!((99_000.0..=102_500.0).contains(&rate), "{rate}");
        // A frame bigger than the burst goes after its time.
        let mut b = TokenBucket::new(800, 100);
        assert_eq!(b.take(0, 10_000), 0);
        assert_eq!(b.take(0, 50_000), 500_000);
        // No cap: never waits.
        let mut b = TokenBucket::new(0, 100);
        assert_eq!(b.take(0, usize::MAX / 2), 0);
    }

    #[test]
    fn link_policy() {
        let conn = vec![("12D3KooWdepot".to_owned(), "depot-wifi".to_owned())];
        assert!(link_allowed(&[], &[]));
        assert!(link_allowed(&["depot-wifi".into()], &conn));
        assert!(link_allowed(&["12D3KooWdepot".into()], &conn));
        assert!(!link_allowed(&["depot-wifi".into()], &[]));
        assert!(!link_allowed(&["other".into()], &conn));
        assert!(!link_allowed(&["".into()], &[("p".into(), "".into())]));
    }

    #[test]
    fn shore_never_stores_twice_and_segments_go_forward() {
        let held = [s(100, 200)];
        assert_eq!(arriving(150, None, &held, true), Arriving::Duplicate);
        assert_eq!(arriving(200, Some(10), &held, true), Arriving::Duplicate);
        assert_eq!(arriving(50, None, &held, true), Arriving::NewSegment);
        assert_eq!(arriving(60, Some(50), &held, true), Arriving::Append);
        // A chunk that starts past a hole after what was written: a new segment, so the
        // hole is not taken for held footage.
        assert_eq!(arriving(60, Some(50), &held, false), Arriving::NewSegment);
        // Across something held: a new segment, so segments do not overlap.
        assert_eq!(arriving(250, Some(60), &held, true), Arriving::NewSegment);
        // Backwards (newest first): a new segment.
        assert_eq!(arriving(40, Some(60), &held, true), Arriving::NewSegment);
        assert_eq!(arriving(60, Some(60), &held, true), Arriving::NewSegment);
    }
}
