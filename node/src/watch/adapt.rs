//! Adaptive live, pure: which profile (main or sub) a viewer should take, from what it
//! measures on the stream it receives. No tokio, no sockets, no clock of its own; the IO
//! ([`super::profiles`]) feeds it frames, interruptions, ping RTTs and the time, and
//! carries out its [`Action`]s.
//!
//! - Down (main -> sub): the link does not carry main. Signs, over a sliding window: the
//!   source skipped frames for us (its queue for this viewer overflowed and it jumped to
//!   the next keyframe), frames arrive late (capture-to-arrival delay above the lowest
//!   this feed has seen: queueing on the path), the ping RTT grew well above its floor,
//!   or the stream stalled. The sub feed is opened beside main and taken at its first
//!   keyframe (make before break); main is closed then, so the camera sends sub only.
//! - Up (sub -> main): after sub has run clean for a while, main is opened beside it as a
//!   probe. A probe that delivers a keyframe and then stays clean for
//!   [`AdaptConfig::probe_clean`] is taken at its next keyframe; one that skips, lags,
//!   stalls or misses its deadline is closed, and the next probe waits twice as long
//!   (up to [`AdaptConfig::probe_max`]): hysteresis, so a thin link is not probed
//!   into choking.
//! - A profile the camera does not have (its request is refused) is not asked for again.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use camesh_proto::pb::Profile;

/// Tuning of the controller; [`Default`] is what `mesh watch --profile auto` uses.
#[derive(Debug, Clone)]
pub struct AdaptConfig {
    /// The sliding window the signs are judged over.
    pub window: Duration,
    /// Delay above the feed's floor that counts as a late frame.
    pub late: Duration,
    /// Share of the window's frames that must be late to call the link thin.
    pub late_share: f64,
    /// Ping RTT above its floor that counts as a congested path.
    pub rtt_rise: Duration,
    /// After a switch, no switch down for this long unless the stream stalls.
    pub min_dwell: Duration,
    /// A feed's first frames arrive as a burst (the cached GOP): their delay is not judged.
    pub warmup: Duration,
    /// Sub must run clean this long before the first probe of main.
    pub probe_first: Duration,
    /// The longest wait between probes (the wait doubles after each failed one).
    pub probe_max: Duration,
    /// A probe must stay clean this long after its first keyframe to be taken.
    pub probe_clean: Duration,
    /// A probe (or a switch down) that has not delivered by then is dropped.
    pub deadline: Duration,
}

impl Default for AdaptConfig {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(3),
            late: Duration::from_millis(700),
            late_share: 0.5,
            rtt_rise: Duration::from_millis(500),
            min_dwell: Duration::from_secs(4),
            warmup: Duration::from_millis(1500),
            probe_first: Duration::from_secs(8),
            probe_max: Duration::from_secs(64),
            probe_clean: Duration::from_secs(3),
            deadline: Duration::from_secs(8),
        }
    }
}

/// Which of the (at most two) open feeds an input is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    /// The feed whose frames the viewer gets.
    Current,
    /// The feed opened beside it (a switch down, or a probe of main).
    Other,
}

/// One received frame, as the controller sees it.
#[derive(Debug, Clone, Copy)]
pub struct Seen {
    pub keyframe: bool,
    /// Frames the source skipped right before this one.
    pub skipped_before: u64,
    /// Capture-to-arrival, in µs (may include a clock offset: only its rise is judged).
    pub delay_us: i64,
    pub bytes: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Open a feed of `profile` beside the current one.
    Open(Profile),
    /// Close the other feed (`reason` says why, for the log).
    CloseOther { reason: String },
    /// From this frame on, the other feed is current and the old current one is closed.
    /// Emitted on the other feed's keyframe that the viewer must start with.
    Switch { to: Profile, reason: String },
}

/// Measurements of one feed over the window.
#[derive(Debug)]
struct Meter {
    opened: Instant,
    first: Option<Instant>,
    first_key: Option<Instant>,
    /// Lowest delay seen after warm-up (µs).
    floor_us: Option<i64>,
    /// (time, skipped, late, bytes) per frame in the window.
    recent: VecDeque<(Instant, u64, bool, usize)>,
    stalled: Option<Instant>,
}

/// Frames kept per window at most (240 fps for 3 s, with room).
const MAX_RECENT: usize = 1024;

impl Meter {
    fn new(now: Instant) -> Self {
        Self {
            opened: now,
            first: None,
            first_key: None,
            floor_us: None,
            recent: VecDeque::new(),
            stalled: None,
        }
    }

    fn frame(&mut self, cfg: &AdaptConfig, s: Seen, now: Instant) {
        let first = *self.first.get_or_insert(now);
        if s.keyframe && self.first_key.is_none() {
            self.first_key = Some(now);
        }
        let warm = now.duration_since(first) >= cfg.warmup;
        let mut late = false;
        if warm {
            let floor = self.floor_us.map_or(s.delay_us, |f| f.min(s.delay_us));
            self.floor_us = Some(floor);
            late = s.delay_us.saturating_sub(floor) > cfg.late.as_micros() as i64;
        }
        self.recent.push_back((now, s.skipped_before, late, s.bytes));
        if self.recent.len() > MAX_RECENT {
            self.recent.pop_front();
        }
        self.trim(cfg, now);
    }

    fn trim(&mut self, cfg: &AdaptConfig, now: Instant) {
        while self
            .recent
            .front()
            .is_some_and(|(t, ..)| now.duration_since(*t) > cfg.window)
        {
            self.recent.pop_front();
        }
    }

    /// Why this feed is not keeping up, if it is not.
    fn trouble(&self, cfg: &AdaptConfig) -> Option<String> {
        if self.stalled.is_some() {
            return Some("the stream stalled".into());
        }
        let skipped: u64 = self.recent.iter().map(|r| r.1).sum();
        if skipped > 0 {
            return Some(format!(
                "the source skipped {skipped} frames in {:.0} s",
                cfg.window.as_secs_f64()
            ));
        }
        let n = self.recent.len();
        let late = self.recent.iter().filter(|r| r.2).count();
        if n >= 4 && late as f64 >= cfg.late_share * n as f64 {
            return Some(format!(
                "{late} of {n} frames arrived over {} ms late",
                cfg.late.as_millis()
            ));
        }
        None
    }

    /// Received bits per second over the window.
    fn goodput_bps(&self, cfg: &AdaptConfig) -> f64 {
        let bytes: usize = self.recent.iter().map(|r| r.3).sum();
        bytes as f64 * 8.0 / cfg.window.as_secs_f64()
    }
}

#[derive(Debug)]
struct Other {
    profile: Profile,
    meter: Meter,
    /// Clean since (probe of main only).
    clean_since: Option<Instant>,
    /// The probe passed: take it at its next keyframe.
    ready: bool,
    /// Why it was opened (a switch down), for the switch's reason.
    why: String,
}

/// The controller: one per adaptive watch.
#[derive(Debug)]
pub struct Adapt {
    cfg: AdaptConfig,
    current: Profile,
    meter: Meter,
    since: Instant,
    other: Option<Other>,
    /// Clean on sub since (for the next probe).
    clean_since: Option<Instant>,
    probe_wait: Duration,
    /// Profiles the camera refused.
    missing: Vec<Profile>,
    rtt_floor: Option<Duration>,
    rtt_high: bool,
}

impl Adapt {
    /// Starts on `profile` (main: the viewer drops to sub when the link needs it).
    pub fn new(cfg: AdaptConfig, profile: Profile, now: Instant) -> Self {
        let probe_wait = cfg.probe_first;
        Self {
            cfg,
            current: profile,
            meter: Meter::new(now),
            since: now,
            other: None,
            clean_since: None,
            probe_wait,
            missing: Vec::new(),
            rtt_floor: None,
            rtt_high: false,
        }
    }

    pub fn current(&self) -> Profile {
        self.current
    }

    /// The profile of the feed opened beside the current one, if any.
    pub fn other(&self) -> Option<Profile> {
        self.other.as_ref().map(|o| o.profile)
    }

    /// Goodput of the current feed over the window, bit/s.
    pub fn goodput_bps(&self) -> f64 {
        self.meter.goodput_bps(&self.cfg)
    }

    /// A frame arrived on `which` feed; for the other feed, the answer may be
    /// [`Action::Switch`]: deliver this frame (a keyframe) and what follows from it.
    pub fn frame(&mut self, which: Which, s: Seen, now: Instant) -> Vec<Action> {
        match which {
            Which::Current => {
                self.meter.stalled = None;
                self.meter.frame(&self.cfg, s, now);
                self.evaluate(now)
            }
            Which::Other => {
                let Some(o) = self.other.as_mut() else { return vec![] };
                o.meter.stalled = None;
                o.meter.frame(&self.cfg, s, now);
                if o.meter.first_key.is_none() {
                    return vec![];
                }
                let down = o.profile == Profile::Sub;
                if s.keyframe && (down || o.ready) {
                    let reason = if down {
                        String::new()
                    } else {
                        format!(
                            "main ran clean for {:.0} s beside sub",
                            self.cfg.probe_clean.as_secs_f64()
                        )
                    };
                    return self.take_other(now, reason);
                }
                self.evaluate(now)
            }
        }
    }

    /// The feed stalled or broke (its watcher retries by itself).
    pub fn interrupted(&mut self, which: Which, now: Instant) -> Vec<Action> {
        match which {
            Which::Current => self.meter.stalled = Some(now),
            Which::Other => {
                if let Some(o) = self.other.as_mut() {
                    o.meter.stalled = Some(now);
                }
            }
        }
        self.evaluate(now)
    }

    /// The other feed failed for good (e.g. the camera has no such profile).
    pub fn other_failed(&mut self, error: &str, now: Instant) -> Vec<Action> {
        let Some(o) = self.other.take() else { return vec![] };
        if !self.missing.contains(&o.profile) {
            self.missing.push(o.profile);
        }
        self.clean_since = Some(now);
        vec![Action::CloseOther {
            reason: format!("{} is not available: {error}", name(o.profile)),
        }]
    }

    /// A ping RTT to the peer serving the current feed.
    pub fn rtt(&mut self, rtt: Duration, now: Instant) -> Vec<Action> {
        let floor = self.rtt_floor.map_or(rtt, |f| f.min(rtt));
        self.rtt_floor = Some(floor);
        self.rtt_high = rtt.saturating_sub(floor) > self.cfg.rtt_rise;
        self.evaluate(now)
    }

    /// The time passed (call about every 250 ms).
    pub fn tick(&mut self, now: Instant) -> Vec<Action> {
        self.meter.trim(&self.cfg, now);
        if let Some(o) = self.other.as_mut() {
            o.meter.trim(&self.cfg, now);
        }
        self.evaluate(now)
    }

    fn trouble(&self) -> Option<String> {
        self.meter.trouble(&self.cfg).or_else(|| {
            self.rtt_high
                .then(|| format!("ping RTT rose over {} ms", self.cfg.rtt_rise.as_millis()))
        })
    }

    fn evaluate(&mut self, now: Instant) -> Vec<Action> {
        match self.current {
            Profile::Main => self.evaluate_on_main(now),
            Profile::Sub => self.evaluate_on_sub(now),
        }
    }

    /// On main: open sub beside it when the link does not carry main.
    fn evaluate_on_main(&mut self, now: Instant) -> Vec<Action> {
        if let Some(o) = &self.other {
            if o.meter.first_key.is_none() && now.duration_since(o.meter.opened) > self.cfg.deadline {
                self.other = None;
                return vec![Action::CloseOther {
                    reason: "sub did not start in time".into(),
                }];
            }
            return vec![];
        }
        let dwelt = now.duration_since(self.since) >= self.cfg.min_dwell;
        let stalled = self.meter.stalled.is_some();
        match self.trouble() {
            Some(why) if (dwelt || stalled) && !self.missing.contains(&Profile::Sub) => {
                self.other = Some(Other::new(Profile::Sub, why, now));
                vec![Action::Open(Profile::Sub)]
            }
            _ => vec![],
        }
    }

    /// On sub: probe main after a clean spell; judge a running probe.
    fn evaluate_on_sub(&mut self, now: Instant) -> Vec<Action> {
        let sub_trouble = self.trouble();
        let Some(o) = self.other.as_mut() else {
            if sub_trouble.is_some() {
                self.clean_since = None;
                return vec![];
            }
            let clean = *self.clean_since.get_or_insert(now);
            if now.duration_since(clean) >= self.probe_wait && !self.missing.contains(&Profile::Main) {
                self.other = Some(Other::new(Profile::Main, String::new(), now));
                return vec![Action::Open(Profile::Main)];
            }
            return vec![];
        };
        // A probe of main: it fails when either feed shows trouble (main crowds sub out
        // of the link too), or when it has not passed by its deadline.
        let failed = match (o.meter.trouble(&self.cfg), sub_trouble) {
            (Some(why), _) => Some(format!("main: {why}")),
            (None, Some(why)) => Some(format!("sub, while probing main: {why}")),
            (None, None)
                if !o.ready && now.duration_since(o.meter.opened) > self.cfg.deadline + self.cfg.probe_clean =>
            {
                Some("main did not run clean in time".into())
            }
            (None, None) => None,
        };
        if let Some(why) = failed {
            self.other = None;
            self.clean_since = None;
            self.probe_wait = (self.probe_wait * 2).min(self.cfg.probe_max);
            return vec![Action::CloseOther {
                reason: format!("probe of main failed ({why}); next in {} s", self.probe_wait.as_secs()),
            }];
        }
        if let Some(first_key) = o.meter.first_key {
            let clean = *o.clean_since.get_or_insert(first_key);
            if now.duration_since(clean) >= self.cfg.probe_clean {
                o.ready = true;
            }
        }
        vec![]
    }

    /// The other feed becomes current at this keyframe.
    fn take_other(&mut self, now: Instant, reason: String) -> Vec<Action> {
        let Some(o) = self.other.take() else { return vec![] };
        let reason = if o.why.is_empty() { reason } else { o.why };
        let to = o.profile;
        self.current = to;
        self.meter = o.meter;
        self.since = now;
        self.clean_since = None;
        self.rtt_floor = None;
        self.rtt_high = false;
        if to == Profile::Main {
            self.probe_wait = self.cfg.probe_first;
        }
        vec![Action::Switch { to, reason }]
    }
}

impl Other {
    fn new(profile: Profile, why: String, now: Instant) -> Self {
        Self {
            profile,
            meter: Meter::new(now),
            clean_since: None,
            ready: false,
            why,
        }
    }
}

fn name(p: Profile) -> &'static str {
    match p {
        Profile::Main => "main",
        Profile::Sub => "sub",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRAME: Duration = Duration::from_millis(33);

    fn seen(key: bool, skipped: u64, delay_ms: i64) -> Seen {
        Seen {
            keyframe: key,
            skipped_before: skipped,
            delay_us: delay_ms * 1000,
            bytes: 1000,
        }
    }

    /// Feeds `n` frames 33 ms apart on `which` (keyframe every 30th, counted from
    /// `*i`), returning every action.
    fn run(
        a: &mut Adapt,
        t: &mut Instant,
        i: &mut u64,
        which: Which,
        n: u64,
        skipped: u64,
        delay_ms: i64,
    ) -> Vec<Action> {
        let mut out = vec![];
        for _ in 0..n {
            *t += FRAME;
            *i += 1;
            out.extend(a.frame(which, seen(i.is_multiple_of(30), skipped, delay_ms), *t));
            out.extend(a.tick(*t));
        }
        out
    }

    fn opened(v: &[Action]) -> Option<Profile> {
        v.iter().find_map(|a| match a {
            Action::Open(p) => Some(*p),
            _ => None,
        })
    }

    fn switched(v: &[Action]) -> Option<Profile> {
        v.iter().find_map(|a| match a {
            Action::Switch { to, .. } => Some(*to),
            _ => None,
        })
    }

    #[test]
    fn a_clean_main_stays_main() {
        let (mut t, mut i) = (Instant::now(), 0);
        let mut a = Adapt::new(AdaptConfig::default(), Profile::Main, t);
        let out = run(&mut a, &mut t, &mut i, Which::Current, 30 * 60, 0, 40);
        assert!(out.is_empty(), "{out:?}");
        assert_eq!(a.current(), Profile::Main);
        assert!(a.goodput_bps() > 200_000.0, "{}", a.goodput_bps());
    }

    #[test]
    fn skips_on_main_switch_to_sub_make_before_break_and_a_clean_link_returns_to_main() {
        let (mut t, mut i) = (Instant::now(), 0);
        let mut a = Adapt::new(AdaptConfig::default(), Profile::Main, t);
        // Skips within the first dwell do not switch yet...
        let out = run(&mut a, &mut t, &mut i, Which::Current, 30, 10, 40);
        assert_eq!(opened(&out), None, "{out:?}");
        // ...after it, they open sub beside main.
        let out = run(&mut a, &mut t, &mut i, Which::Current, 120, 10, 40);
        assert_eq!(opened(&out), Some(Profile::Sub), "{out:?}");
        assert_eq!(a.other(), Some(Profile::Sub));
        // Sub's frames before its first keyframe do not switch; its keyframe does.
        i = 10;
        let out = run(&mut a, &mut t, &mut i, Which::Other, 19, 0, 40);
        assert_eq!(switched(&out), None, "{out:?}");
        let out = run(&mut a, &mut t, &mut i, Which::Other, 1, 0, 40);
        assert_eq!(switched(&out), Some(Profile::Sub), "{out:?}");
        let reason = out.iter().find_map(|a| match a {
            Action::Switch { reason, .. } => Some(reason.clone()),
            _ => None,
        });
        assert!(reason.is_some_and(|r| r.contains("skipped")));
        assert_eq!((a.current(), a.other()), (Profile::Sub, None));
        // Clean sub for the first probe wait: main is probed beside it.
        let out = run(&mut a, &mut t, &mut i, Which::Current, 30 * 7, 0, 40);
        assert_eq!(opened(&out), None, "{out:?}");
        let out = run(&mut a, &mut t, &mut i, Which::Current, 30 * 2, 0, 40);
        assert_eq!(opened(&out), Some(Profile::Main), "{out:?}");
        // Main clean beside sub for probe_clean after its keyframe: taken at its next keyframe.
        let mut j: u64 = 29;
        let mut took = None;
        for _ in 0..(30 * 6) {
            t += FRAME;
            j += 1;
            let mut out = a.frame(Which::Other, seen(j.is_multiple_of(30), 0, 40), t);
            out.extend(a.frame(Which::Current, seen(false, 0, 40), t));
            if let Some(p) = switched(&out) {
                took = Some((p, j.is_multiple_of(30), t));
                break;
            }
        }
        let (p, on_key, _) = took.expect("main taken");
        assert_eq!(p, Profile::Main);
        assert!(on_key, "a switch happens on a keyframe");
        assert_eq!(a.current(), Profile::Main);
    }

    #[test]
    fn a_failed_probe_doubles_the_wait_and_late_frames_count_as_trouble() {
        let (mut t, mut i) = (Instant::now(), 0);
        let cfg = AdaptConfig::default();
        let mut a = Adapt::new(cfg.clone(), Profile::Sub, t);
        let out = run(&mut a, &mut t, &mut i, Which::Current, 30 * 9, 0, 40);
        assert_eq!(opened(&out), Some(Profile::Main));
        // Main's keyframe arrives, then its frames come ever later (the link is full).
        let mut out = a.frame(Which::Other, seen(true, 0, 40), t);
        for k in 0..150 {
            t += FRAME;
            out.extend(a.frame(Which::Other, seen(false, 0, 40 + 30 * k), t));
            out.extend(a.frame(Which::Current, seen(false, 0, 40), t));
        }
        let closed = out.iter().find_map(|a| match a {
            Action::CloseOther { reason } => Some(reason.clone()),
            _ => None,
        });
        let reason = closed.expect("probe dropped");
        assert!(reason.contains("late") && reason.contains("next in 16 s"), "{reason}");
        assert_eq!((a.current(), a.other()), (Profile::Sub, None));
        // The next probe waits 16 s of clean sub, not 8.
        let out = run(&mut a, &mut t, &mut i, Which::Current, 30 * 12, 0, 40);
        assert_eq!(opened(&out), None, "{out:?}");
        let out = run(&mut a, &mut t, &mut i, Which::Current, 30 * 5, 0, 40);
        assert_eq!(opened(&out), Some(Profile::Main));
    }

    #[test]
    fn a_profile_the_camera_lacks_is_not_asked_again_and_a_stall_switches_at_once() {
        let (mut t, mut i) = (Instant::now(), 0);
        let mut a = Adapt::new(AdaptConfig::default(), Profile::Main, t);
        // A stall within the dwell opens sub at once.
        run(&mut a, &mut t, &mut i, Which::Current, 10, 0, 40);
        let out = a.interrupted(Which::Current, t);
        assert_eq!(opened(&out), Some(Profile::Sub));
        let out = a.other_failed("refused: no sub profile", t);
        assert!(matches!(&out[..], [Action::CloseOther { reason }] if reason.contains("sub is not available")));
        t += Duration::from_secs(10);
        let out = a.interrupted(Which::Current, t);
        assert!(out.is_empty(), "{out:?}");
        let out = run(&mut a, &mut t, &mut i, Which::Current, 300, 5, 40);
        assert_eq!(opened(&out), None);
    }

    #[test]
    fn a_rising_rtt_is_trouble_and_sub_that_never_starts_is_dropped() {
        let (mut t, mut i) = (Instant::now(), 0);
        let mut a = Adapt::new(AdaptConfig::default(), Profile::Main, t);
        run(&mut a, &mut t, &mut i, Which::Current, 150, 0, 40);
        assert!(a.rtt(Duration::from_millis(30), t).is_empty());
        let out = a.rtt(Duration::from_millis(900), t);
        assert_eq!(opened(&out), Some(Profile::Sub));
        let out = run(&mut a, &mut t, &mut i, Which::Current, 30 * 9, 0, 40);
        assert!(
            out.iter()
                .any(|a| matches!(a, Action::CloseOther { reason } if reason.contains("in time"))),
            "{out:?}"
        );
    }
}
