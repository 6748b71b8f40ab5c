//! Path choice, pure: candidates in, a decision out. No sockets, no clocks of its own
//! (the caller passes `now`), so tests drive it step by step.
//!
//! A viewer can reach a camera's stream directly (the connection to the camera's node,
//! which libp2p may have made through a circuit relay) or through a forwarder that
//! already receives it. Each candidate has a cost in microseconds: its measured round trip
//! (or a pessimistic guess when unmeasured), plus a penalty per forwarding hop and for a
//! relayed connection, plus a large penalty per recent failure, minus a bonus when the
//! operator prefers it (a camera on a thin uplink: prefer the forwarder). The lowest cost
//! wins, with hysteresis: a running path is only left for one that is better by a margin
//! (absolute and relative), and only after it has been held for a dwell time, so nearly
//! equal paths never flap. A failed or unreachable current path is left at once.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

pub use crate::reach::{Candidate, Link, Route};

/// The knobs of the policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathPolicy {
    /// Cost assumed for a candidate without a measured RTT.
    pub unknown_rtt: Duration,
    /// Added per forwarding hop (a forwarder's own upstream is not measured here).
    pub hop_penalty: Duration,
    /// Added for a connection through a circuit relay.
    pub relay_penalty: Duration,
    /// Added per failure within `failure_memory`.
    pub failure_penalty: Duration,
    pub failure_memory: Duration,
    /// Subtracted for a preferred candidate.
    pub preferred_bonus: Duration,
    /// A better path must beat the current one by at least this...
    pub min_margin: Duration,
    /// ...and by at least this percentage of the current cost.
    pub margin_percent: u32,
    /// A path is held at least this long before a voluntary switch.
    pub dwell: Duration,
}

impl Default for PathPolicy {
    fn default() -> Self {
        Self {
            unknown_rtt: Duration::from_millis(50),
            hop_penalty: Duration::from_millis(2),
            relay_penalty: Duration::from_millis(10),
            failure_penalty: Duration::from_secs(1),
            failure_memory: Duration::from_secs(30),
            preferred_bonus: Duration::from_millis(500),
            min_margin: Duration::from_millis(5),
            margin_percent: 20,
            dwell: Duration::from_secs(10),
        }
    }
}

/// What to do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Keep the current path.
    Stay,
    /// No current path: open this one.
    Open(Route),
    /// A clearly better path: open it, switch on its first keyframe, then close `from`.
    Switch { from: Route, to: Route },
    /// Nothing usable: wait and ask again.
    NoPath,
}

/// Failures remembered per route (bounded).
const FAILURES_KEPT: usize = 8;

/// The chooser's state: the current path, since when, and recent failures.
#[derive(Debug, Clone)]
pub struct PathChooser {
    policy: PathPolicy,
    current: Option<(Route, Instant)>,
    failures: HashMap<Route, VecDeque<Instant>>,
}

fn us(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX / 4)
}

impl PathChooser {
    pub fn new(policy: PathPolicy) -> Self {
        Self {
            policy,
            current: None,
            failures: HashMap::new(),
        }
    }

    pub fn policy(&self) -> &PathPolicy {
        &self.policy
    }

    pub fn current(&self) -> Option<Route> {
        self.current.map(|(r, _)| r)
    }

    /// Failures of `route` within the policy's memory.
    pub fn recent_failures(&self, route: &Route, now: Instant) -> usize {
        self.failures.get(route).map_or(0, |f| {
            f.iter()
                .filter(|t| now.saturating_duration_since(**t) < self.policy.failure_memory)
                .count()
        })
    }

    /// The cost of a candidate now, in microseconds (lower is better).
    pub fn cost(&self, c: &Candidate, now: Instant) -> i64 {
        let p = &self.policy;
        let mut cost = us(c.rtt.unwrap_or(p.unknown_rtt));
        if matches!(c.route, Route::Forwarded(_)) {
            cost += us(p.hop_penalty);
        }
        if matches!(c.link, Link::Relayed(_)) {
            cost += us(p.relay_penalty);
        }
        cost += us(p.failure_penalty) * self.recent_failures(&c.route, now) as i64;
        if c.preferred {
            cost -= us(p.preferred_bonus);
        }
        cost
    }

    /// The best usable candidate and its cost (ties: the smaller route, deterministic).
    pub fn best<'a>(&self, cands: &'a [Candidate], now: Instant) -> Option<(&'a Candidate, i64)> {
        cands
            .iter()
            .filter(|c| c.reachable)
            .map(|c| (c, self.cost(c, now)))
            .min_by(|(a, ca), (b, cb)| ca.cmp(cb).then(a.route.cmp(&b.route)))
    }

    /// The decision for these candidates at `now`.
    pub fn decide(&self, cands: &[Candidate], now: Instant) -> Decision {
        let Some((best, best_cost)) = self.best(cands, now) else {
            return Decision::NoPath;
        };
        let Some((cur, since)) = self.current else {
            return Decision::Open(best.route);
        };
        let Some(cur_c) = cands.iter().find(|c| c.route == cur && c.reachable) else {
            return Decision::Open(best.route);
        };
        if best.route == cur {
            return Decision::Stay;
        }
        let cur_cost = self.cost(cur_c, now);
        let margin = us(self.policy.min_margin).max(cur_cost.abs() * i64::from(self.policy.margin_percent) / 100);
        let held = now.saturating_duration_since(since);
        if best_cost + margin < cur_cost && held >= self.policy.dwell {
            Decision::Switch {
                from: cur,
                to: best.route,
            }
        } else {
            Decision::Stay
        }
    }

    /// The IO layer now receives video over `route`.
    pub fn switched(&mut self, route: Route, now: Instant) {
        self.current = Some((route, now));
        self.failures.remove(&route);
    }

    /// `route` failed (could not open, broke, or stalled). If it was current, there is no
    /// current path any more.
    pub fn failed(&mut self, route: Route, now: Instant) {
        let f = self.failures.entry(route).or_default();
        if f.len() == FAILURES_KEPT {
            f.pop_front();
        }
        f.push_back(now);
        if self.current() == Some(route) {
            self.current = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p::PeerId;
    use proptest::prelude::*;

    fn peers() -> (PeerId, PeerId, PeerId) {
        (PeerId::random(), PeerId::random(), PeerId::random())
    }

    fn cand(route: Route, rtt_ms: u64) -> Candidate {
        Candidate {
            route,
            link: Link::Direct,
            rtt: Some(Duration::from_millis(rtt_ms)),
            reachable: true,
            preferred: false,
        }
    }

    #[test]
    fn prefers_direct_over_an_equal_forwarder_and_a_relay() {
        let (cam, fwd, relay) = peers();
        let ch = PathChooser::new(PathPolicy::default());
        let now = Instant::now();
        let direct = cand(Route::Direct(cam), 20);
        let via = cand(Route::Forwarded(fwd), 20);
        assert_eq!(
            ch.decide(&[via.clone(), direct.clone()], now),
            Decision::Open(Route::Direct(cam))
        );
        // The same camera reached through a circuit relay loses to a forwarder.
        let relayed = Candidate {
            link: Link::Relayed(relay),
            ..direct
        };
        assert_eq!(ch.decide(&[relayed, via], now), Decision::Open(Route::Forwarded(fwd)));
    }

    #[test]
    fn nothing_reachable_means_no_path() {
        let (cam, _, _) = peers();
        let ch = PathChooser::new(PathPolicy::default());
        let mut c = cand(Route::Direct(cam), 5);
        c.reachable = false;
        assert_eq!(ch.decide(&[c], Instant::now()), Decision::NoPath);
        assert_eq!(ch.decide(&[], Instant::now()), Decision::NoPath);
    }

    #[test]
    fn preferred_forwarder_wins_and_direct_is_the_fallback() {
        let (cam, fwd, _) = peers();
        let mut ch = PathChooser::new(PathPolicy::default());
        let t0 = Instant::now();
        let mut via = cand(Route::Forwarded(fwd), 40);
        via.preferred = true;
        let direct = cand(Route::Direct(cam), 10);
        let cands = [direct.clone(), via.clone()];
        assert_eq!(ch.decide(&cands, t0), Decision::Open(via.route));
        ch.switched(via.route, t0);
        // The forwarder dies: straight to direct, no dwell for a dead path.
        ch.failed(via.route, t0 + Duration::from_secs(1));
        assert_eq!(ch.current(), None);
        assert_eq!(
            ch.decide(&cands, t0 + Duration::from_secs(1)),
            Decision::Open(direct.route)
        );
        ch.switched(direct.route, t0 + Duration::from_secs(1));
        // While the failure is remembered, the forwarder does not win back.
        assert_eq!(ch.decide(&cands, t0 + Duration::from_secs(20)), Decision::Stay);
        // Once forgotten (and after the dwell), the preference returns, make-before-break.
        assert_eq!(
            ch.decide(&cands, t0 + Duration::from_secs(40)),
            Decision::Switch {
                from: direct.route,
                to: via.route
            }
        );
    }

    #[test]
    fn a_clearly_better_path_waits_for_the_dwell_time() {
        let (cam, fwd, _) = peers();
        let mut ch = PathChooser::new(PathPolicy::default());
        let t0 = Instant::now();
        ch.switched(Route::Forwarded(fwd), t0);
        let cands = [cand(Route::Forwarded(fwd), 80), cand(Route::Direct(cam), 10)];
        assert_eq!(ch.decide(&cands, t0 + Duration::from_secs(3)), Decision::Stay);
        assert_eq!(
            ch.decide(&cands, t0 + Duration::from_secs(10)),
            Decision::Switch {
                from: Route::Forwarded(fwd),
                to: Route::Direct(cam)
            }
        );
    }

    #[test]
    fn a_current_path_that_vanished_is_replaced_at_once() {
        let (cam, fwd, _) = peers();
        let mut ch = PathChooser::new(PathPolicy::default());
        let t0 = Instant::now();
        ch.switched(Route::Forwarded(fwd), t0);
        let mut gone = cand(Route::Forwarded(fwd), 5);
        gone.reachable = false;
        assert_eq!(
            ch.decide(&[gone, cand(Route::Direct(cam), 50)], t0),
            Decision::Open(Route::Direct(cam))
        );
    }

    #[test]
    fn failures_are_bounded_and_forgotten() {
        let (cam, _, _) = peers();
        let mut ch = PathChooser::new(PathPolicy::default());
        let t0 = Instant::now();
        for i in 0..100 {
            ch.failed(Route::Direct(cam), t0 + Duration::from_millis(i));
        }
        assert_eq!(ch.recent_failures(&Route::Direct(cam), t0), FAILURES_KEPT);
        assert_eq!(ch.recent_failures(&Route::Direct(cam), t0 + Duration::from_secs(60)), 0);
    }

    proptest! {
        /// Two paths whose RTTs wander within the margin of each other never cause a
        /// switch, whatever the sequence of measurements.
        #[test]
        fn nearly_equal_paths_never_flap(rtts in proptest::collection::vec((20u64..24, 20u64..24), 1..200)) {
            let (cam, fwd, _) = peers();
            let mut ch = PathChooser::new(PathPolicy { hop_penalty: Duration::ZERO, ..Default::default() });
            let t0 = Instant::now();
            ch.switched(Route::Direct(cam), t0);
            for (i, (a, b)) in rtts.into_iter().enumerate() {
                let now = t0 + Duration::from_secs(i as u64 * 5);
                let d = ch.decide(&[cand(Route::Direct(cam), a), cand(Route::Forwarded(fwd), b)], now);
                prop_assert_eq!(d, Decision::Stay);
            }
        }

        /// Whatever the RTTs, voluntary switches are at least one dwell time apart, and
        /// the chooser only ever picks reachable candidates.
        #[test]
        fn switches_respect_dwell_and_reachability(
            steps in proptest::collection::vec((1u64..300, 1u64..300, any::<bool>(), any::<bool>()), 1..300)
        ) {
            let (cam, fwd, _) = peers();
            let mut ch = PathChooser::new(PathPolicy::default());
            let t0 = Instant::now();
            let mut last_switch: Option<Instant> = None;
            for (i, (a, b, ra, rb)) in steps.into_iter().enumerate() {
                let now = t0 + Duration::from_millis(i as u64 * 700);
                let mut da = cand(Route::Direct(cam), a);
                da.reachable = ra;
                let mut fb = cand(Route::Forwarded(fwd), b);
                fb.reachable = rb;
                let cands = [da, fb];
                match ch.decide(&cands, now) {
                    Decision::Stay => prop_assert!(ch.current().is_some()),
                    Decision::NoPath => prop_assert!(!ra && !rb),
                    Decision::Open(r) => {
                        prop_assert!(cands.iter().any(|c| c.route == r && c.reachable));
                        ch.switched(r, now);
                    }
                    Decision::Switch { from, to } => {
                        prop_assert_eq!(Some(from), ch.current());
                        prop_assert!(cands.iter().any(|c| c.route == to && c.reachable));
                        if let Some(t) = last_switch {
                            prop_assert!(now - t >= ch.policy().dwell);
                        }
                        last_switch = Some(now);
                        ch.switched(to, now);
                    }
                }
            }
        }
    }
}
