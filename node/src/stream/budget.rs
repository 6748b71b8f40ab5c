//! Link budgets: what this node may send to a peer per second (`[[link]]` in the config:
//! a vehicle's LTE uplink to shore, a ship's satellite link), shared by live video and
//! bulk transfers (replication), live first.
//!
//! One token bucket per capped peer, and one shared by every peer without an entry of
//! its own under `peer = "*"` (the node's uplink: a viewer's live video and a push to
//! shore draw on the same bucket) ([`Bucket`], pure: tests drive it with byte counts and
//! time). Live takes tokens as it sends and waits out any deficit, so live is paced at
//! the cap and never waits for bulk; when live needs more than the cap, the viewer's
//! queue overflows and the source skips to the next keyframe, as on any thin link. Bulk
//! only takes tokens in the top of the bucket (what live's bursts have not used, so it
//! waits while the link's queue drains a keyframe), smoothly (small bursts, sent in
//! slices), and pays an 8% surcharge while live flows, so live plus bulk leave the link
//! headroom: a bulk transfer gets what live leaves over and backs off as soon as a live
//! viewer draws on the link. Rates are on the wire ([`on_wire`]). [`LinkBudgets`] holds
//! the buckets and does the waiting.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use libp2p::PeerId;

use crate::config::LinkConfig;

/// Burst: this many milliseconds of the rate may go at once (at least 64 KiB, so one
/// keyframe of a small stream fits).
const BURST_MS: u64 = 500;
const MIN_BURST: f64 = 64.0 * 1024.0;
/// Bulk alone goes smoothly: at most this many milliseconds of the rate at once (at least
/// 16 KiB), so that a full bucket after a pause does not send a burst that live frames
/// would then wait behind in the link's queue.
const BULK_BURST_MS: u64 = 20;
const MIN_BULK_BURST: f64 = 16.0 * 1024.0;
/// While live video flows (it drew on the bucket in the last [`LIVE_ACTIVE`]), bulk pays
/// this much more per byte, so live plus bulk stay about 8% under the cap: the link's
/// queue drains between keyframes and live frames do not wait behind bulk in it.
const BULK_SURCHARGE_LIVE: f64 = 0.087;
const LIVE_ACTIVE: Duration = Duration::from_secs(1);

/// A token bucket with two classes (pure).
#[derive(Debug, Clone)]
pub struct Bucket {
    /// Bytes per second.
    rate: f64,
    burst: f64,
    tokens: f64,
    /// Bulk's own pacing at the same rate, with a small burst; it may go into debt by one
    /// send, which it then waits out.
    bulk_burst: f64,
    bulk_tokens: f64,
    /// When live last drew on the bucket.
    live_at: Option<Instant>,
    at: Instant,
}

impl Bucket {
    pub fn new(kbit: u32, now: Instant) -> Self {
        let rate = f64::from(kbit.max(1)) * 1000.0 / 8.0;
        let burst = (rate * BURST_MS as f64 / 1000.0).max(MIN_BURST);
        let bulk_burst = (rate * BULK_BURST_MS as f64 / 1000.0).max(MIN_BULK_BURST);
        Self {
            rate,
            burst,
            tokens: burst,
            bulk_burst,
            bulk_tokens: bulk_burst,
            live_at: None,
            at: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = self.at.max(now);
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        self.bulk_tokens = (self.bulk_tokens + dt * self.rate).min(self.bulk_burst);
    }

    /// Live sends `bytes` now: taken at once (the bucket may go into debt); the answer is
    /// how long to wait before the next send so the average stays at the rate.
    pub fn live(&mut self, bytes: usize, now: Instant) -> Duration {
        self.refill(now);
        self.live_at = Some(now);
        self.tokens -= bytes as f64;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }

    /// Bulk wants to send `bytes`: `Ok(())` when it may (tokens taken), else how long to
    /// wait before asking again. Bulk never takes the reserve left for live, and goes
    /// smoothly: at most its small burst at once (callers send in slices).
    pub fn bulk(&mut self, bytes: usize, now: Instant) -> Result<(), Duration> {
        self.refill(now);
        // Bulk works in the top of the bucket: tokens below it mean the link's queue still
        // holds what live sent in a burst (a keyframe, a cached GOP), and bulk waits until
        // that drained rather than queue behind it.
        let reserve = (self.burst - 2.0 * self.bulk_burst).max(self.burst / 2.0);
        // A chunk larger than what bulk may ever hold goes when the bucket is full.
        let need = (bytes as f64).min(self.burst - reserve);
        let live = self
            .live_at
            .is_some_and(|t| now.saturating_duration_since(t) < LIVE_ACTIVE);
        let cost = if live { 1.0 + BULK_SURCHARGE_LIVE } else { 1.0 };
        if self.tokens - need >= reserve && self.bulk_tokens >= 0.0 {
            self.tokens -= bytes as f64 * cost;
            self.bulk_tokens -= bytes as f64;
            Ok(())
        } else {
            let missing = (need + reserve - self.tokens).max(-self.bulk_tokens);
            Err(Duration::from_secs_f64((missing / self.rate).max(0.001)))
        }
    }
}

/// What `bytes` of stream payload take on the wire: QUIC (short header, AEAD tag, STREAM
/// frame), UDP and IPv4 headers, about 62 bytes per packet of at most ~1,400 payload
/// bytes: 5%. A cap is a rate on the wire, so live plus bulk at the cap leaves the link
/// no standing queue (payload at the cap alone would fill it: live frames would then
/// wait behind bulk in the bottleneck's queue).
pub fn on_wire(bytes: usize) -> usize {
    bytes + bytes / 20
}

/// The node's buckets, one per capped peer and one for `*`, made on first use.
#[derive(Debug)]
pub struct LinkBudgets {
    caps: HashMap<PeerId, u32>,
    every: Option<u32>,
    /// Keyed by the peer with an entry of its own, or `None`: the shared `*` bucket.
    buckets: Mutex<HashMap<Option<PeerId>, Bucket>>,
}

/// Buckets of peers no longer talked to are forgotten beyond this many.
const MAX_BUCKETS: usize = 4096;

impl LinkBudgets {
    /// From the config's `[[link]]` entries (checked by config validation).
    pub fn new(links: &[LinkConfig]) -> Self {
        let mut caps = HashMap::new();
        let mut every = None;
        for l in links {
            if l.peer == "*" {
                every = Some(l.kbit);
            } else if let Ok(p) = l.peer.parse::<PeerId>() {
                caps.insert(p, l.kbit);
            }
        }
        Self {
            caps,
            every,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// No caps at all.
    pub fn is_empty(&self) -> bool {
        self.caps.is_empty() && self.every.is_none()
    }

    /// The cap on `peer`, kbit/s.
    pub fn cap(&self, peer: &PeerId) -> Option<u32> {
        self.caps.get(peer).copied().or(self.every)
    }

    /// Which bucket `peer` draws on, and its rate: its own, or the shared `*` one.
    fn key(&self, peer: &PeerId) -> Option<(Option<PeerId>, u32)> {
        match self.caps.get(peer) {
            Some(kbit) => Some((Some(*peer), *kbit)),
            None => self.every.map(|kbit| (None, kbit)),
        }
    }

    fn with<T>(&self, peer: &PeerId, f: impl FnOnce(&mut Bucket, Instant) -> T) -> Option<T> {
        let (key, kbit) = self.key(peer)?;
        let now = Instant::now();
        let mut map = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_BUCKETS && !map.contains_key(&key) {
            map.clear();
        }
        Some(f(map.entry(key).or_insert_with(|| Bucket::new(kbit, now)), now))
    }

    /// Live video of `bytes` to `peer` was (or is about to be) sent: waits out any debt.
    pub async fn pace_live(&self, peer: &PeerId, bytes: usize) {
        let bytes = on_wire(bytes);
        if let Some(wait) = self.with(peer, |b, now| b.live(bytes, now)) {
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
        }
    }

    /// Waits until a bulk transfer may send `bytes` to `peer` (at once without a cap).
    pub async fn pace_bulk(&self, peer: &PeerId, bytes: usize) {
        let bytes = on_wire(bytes);
        // Bounded: each wait is at most the time to refill a burst; a live stream that
        // keeps the bucket low holds bulk back for as long as it does.
        loop {
            match self.with(peer, |b, now| b.bulk(bytes, now)) {
                None | Some(Ok(())) => return,
                Some(Err(wait)) => tokio::time::sleep(wait).await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sends live frames of `size` every `every` for `dur`, honouring the waits; returns
    /// bytes sent.
    #[test]
    fn live_is_paced_at_the_cap() {
        let t0 = Instant::now();
        let mut b = Bucket::new(800, t0); // 100 kB/s
        let mut t = t0;
        let mut sent = 0usize;
        while t < t0 + Duration::from_secs(10) {
            let wait = b.live(10_000, t);
            sent += 10_000;
            t += wait.max(Duration::from_millis(1));
        }
        // 10 s at 100 kB/s plus the 64 KiB burst.
        assert!((1_000_000..=1_080_000).contains(&sent), "{sent}");
    }

    #[test]
    fn bulk_gets_what_live_leaves_and_never_the_reserve() {
        let t0 = Instant::now();
        let mut b = Bucket::new(800, t0); // 100 kB/s, burst 64 KiB
        let (mut live, mut bulk) = (0usize, 0usize);
        let mut t = t0;
        // Live at 60 kB/s (3 kB every 50 ms); bulk asks for 8 kB chunks in between.
        for _ in 0..200 {
            b.live(3_000, t);
            live += 3_000;
            for _ in 0..4 {
                if b.bulk(8_000, t).is_ok() {
                    bulk += 8_000;
                }
            }
            t += Duration::from_millis(50);
        }
        let secs = 10.0;
        let bulk_rate = bulk as f64 / secs;
        assert_eq!(live, 600_000);
        // Bulk gets the remaining ~40 kB/s less its 8% surcharge while live flows (plus
        // part of the initial burst), not more.
        assert!((30_000.0..=45_000.0).contains(&bulk_rate), "{bulk_rate}");
        // And live never waits: the reserve covers its frames.
        assert!(b.tokens > -3_000.0, "{}", b.tokens);
    }

    #[test]
    fn bulk_alone_uses_the_whole_rate_and_waits_are_bounded() {
        let t0 = Instant::now();
        let mut b = Bucket::new(800, t0);
        let mut t = t0;
        let mut bulk = 0usize;
        while t < t0 + Duration::from_secs(10) {
            match b.bulk(16_000, t) {
                Ok(()) => bulk += 16_000,
                Err(w) => {
                    assert!(w <= Duration::from_secs(1), "{w:?}");
                    t += w;
                }
            }
        }
        assert!((960_000..=1_040_000).contains(&bulk), "{bulk}");
        // A chunk larger than the burst still goes, when the bucket is full.
        let mut b = Bucket::new(100, t0);
        assert!(b.bulk(1_000_000, t0 + Duration::from_secs(60)).is_ok());
    }

    /// After a pause (a full bucket), bulk goes no faster than the rate: at most its small
    /// burst at once, not the half-second left above live's reserve.
    #[test]
    fn bulk_does_not_burst_after_a_pause() {
        let t0 = Instant::now();
        let mut b = Bucket::new(4000, t0); // 500 kB/s: burst 250 kB, bulk's 16 KiB
        let now = t0 + Duration::from_secs(10);
        let mut at_once = 0usize;
        while b.bulk(4_000, now).is_ok() {
            at_once += 4_000;
            assert!(at_once < 100_000, "bulk took {at_once} bytes at once");
        }
        assert!((16_000..=24_000).contains(&at_once), "{at_once}");
        // ...while live still has the whole bucket.
        assert_eq!(b.live(100_000, now), Duration::ZERO);
    }

    #[test]
    fn caps_by_peer_and_for_everyone() {
        let p = PeerId::random();
        let q = PeerId::random();
        let caps = LinkBudgets::new(&[
            LinkConfig {
                peer: p.to_string(),
                kbit: 500,
            },
            LinkConfig {
                peer: "*".into(),
                kbit: 2000,
            },
        ]);
        assert_eq!(caps.cap(&p), Some(500));
        assert_eq!(caps.cap(&q), Some(2000));
        assert!(LinkBudgets::new(&[]).cap(&p).is_none());
        assert!(LinkBudgets::new(&[]).is_empty());
    }

    /// `*` is one budget for all the peers it covers: live to a viewer and bulk to shore
    /// share it, live first; a peer with its own entry has its own.
    #[test]
    fn star_is_one_shared_budget() {
        let (p, viewer, shore) = (PeerId::random(), PeerId::random(), PeerId::random());
        let caps = LinkBudgets::new(&[
            LinkConfig {
                peer: p.to_string(),
                kbit: 800,
            },
            LinkConfig {
                peer: "*".into(),
                kbit: 800,
            },
        ]);
        assert_eq!(caps.key(&viewer).map(|k| k.0), Some(None));
        assert_eq!(caps.key(&shore), caps.key(&viewer));
        assert_eq!(caps.key(&p), Some((Some(p), 800)));
        // Live to the viewer drains the shared bucket: bulk to shore must wait.
        caps.with(&viewer, |b, now| b.live(100_000, now));
        assert!(caps.with(&shore, |b, now| b.bulk(8_000, now)).unwrap().is_err());
        // ...while the peer with its own entry is untouched.
        assert!(caps.with(&p, |b, now| b.bulk(8_000, now)).unwrap().is_ok());
    }
}
