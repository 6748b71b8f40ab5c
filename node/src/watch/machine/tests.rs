//! The machine driven with events and time: what the two former viewers promised.

use std::time::{Duration, Instant};

use camesh_proto::pb;
use libp2p::PeerId;

use super::*;
use crate::watch::live::MAX_LAG;
use crate::watch::options::{RouteOptions, WatchOptions};
use crate::watch::path::{Candidate, Link, Route};

const FRAME_US: i64 = 33_000;

fn mark(seq: u64) -> Mark {
    Mark {
        sequence: seq,
        capture_us: 1_000_000 + seq as i64 * FRAME_US,
        keyframe: seq.is_multiple_of(10),
    }
}

fn accept_30fps() -> pb::StreamAccept {
    pb::StreamAccept {
        codec: Some(pb::CodecConfig {
            fps_num: 30,
            fps_den: 1,
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A watch and its clock; every output is kept for the test to look at.
struct Sim {
    w: Watch<u64>,
    t0: Instant,
    now: Instant,
    wake: Option<Instant>,
    frames: Vec<u64>,
    out: Vec<Output<u64>>,
}

impl Sim {
    fn new(cfg: Config) -> Self {
        let now = Instant::now();
        let mut s = Self {
            w: Watch::new(cfg, now),
            t0: now,
            now,
            wake: None,
            frames: Vec::new(),
            out: Vec::new(),
        };
        let o = s.w.start(now);
        s.take(o);
        s
    }

    fn one() -> Self {
        Self::new(Config::one(&WatchOptions::new("cam")))
    }

    fn take(&mut self, outs: Vec<Output<u64>>) {
        self.wake = None;
        for o in outs {
            match o {
                Output::Deliver(f) => self.frames.push(f),
                Output::WakeAt(t) => self.wake = Some(t),
                o => self.out.push(o),
            }
        }
    }

    fn input(&mut self, i: Input<u64>) {
        let o = self.w.handle(i, self.now);
        self.take(o);
    }

    /// Moves the clock on and fires the timer if it is due.
    fn advance(&mut self, d: Duration) {
        self.now += d;
        if self.wake.is_some_and(|t| t <= self.now) {
            self.input(Input::Timer);
        }
    }

    /// Runs the clock to the next wake-up.
    fn fire_next(&mut self) {
        let t = self.wake.expect("a timer is set");
        self.now = self.now.max(t);
        self.input(Input::Timer);
    }

    fn drain(&mut self) -> Vec<Output<u64>> {
        std::mem::take(&mut self.out)
    }

    /// The feed of the last `Open`.
    fn opened(&mut self) -> (FeedId, Target) {
        self.out
            .iter()
            .rev()
            .find_map(|o| match o {
                Output::Open { feed, target } => Some((*feed, *target)),
                _ => None,
            })
            .expect("a feed was opened")
    }

    fn accept(&mut self, feed: FeedId, peer: PeerId) {
        self.input(Input::Accepted {
            feed,
            peer,
            accept: Box::new(accept_30fps()),
        });
    }

    fn frame(&mut self, feed: FeedId, seq: u64) {
        self.input(Input::Frame {
            feed,
            mark: mark(seq),
            frame: seq,
        });
    }

    /// Frames at the camera's pace (one per 33 ms).
    fn play(&mut self, feed: FeedId, seqs: impl IntoIterator<Item = u64>) {
        for q in seqs {
            self.now += Duration::from_micros(FRAME_US as u64);
            self.frame(feed, q);
        }
    }

    fn fail(&mut self, feed: FeedId, fault: Fault) {
        self.input(Input::FeedFailed {
            feed,
            error: "broken".into(),
            fault,
        });
    }

    fn interruptions(&self) -> Vec<Duration> {
        self.out
            .iter()
            .filter_map(|o| match o {
                Output::Interrupted { retry_in, .. } => Some(*retry_in),
                _ => None,
            })
            .collect()
    }
}

/// A one-route watch that delivered frames `0..=upto` on its first feed.
fn watching(upto: u64) -> (Sim, FeedId, PeerId) {
    let mut s = Sim::one();
    let (feed, target) = s.opened();
    assert_eq!(target, Target::Camera(None));
    let cam = PeerId::random();
    s.accept(feed, cam);
    s.play(feed, 0..=upto);
    assert_eq!(s.frames, (0..=upto).collect::<Vec<_>>());
    (s, feed, cam)
}

#[test]
fn one_route_starts_and_delivers() {
    let (mut s, _, cam) = watching(5);
    let out = s.drain();
    assert!(matches!(&out[..], [Output::Open { .. }, Output::Started { peer, gap: None, .. }] if *peer == cam));
    assert!(s.wake.is_some(), "the stall timer runs");
}

#[test]
fn a_switch_catches_the_old_stream_up_and_drops_the_replay() {
    // The consumer has 0..=12; the old path still holds 13..=25; the new one starts at
    // keyframe 20 (its cached GOP): 13..=19 come from the old one, then 20 on.
    let (mut s, old, cam) = watching(12);
    s.input(Input::DirectPath(cam));
    let (new, target) = s.opened();
    assert_eq!(target, Target::Route(Route::Direct(cam)));
    s.accept(new, cam);
    for q in 20..=30 {
        s.frame(new, q);
    }
    for q in 13..=25 {
        s.frame(old, q);
    }
    assert!(s.out.contains(&Output::Close { feed: old }));
    s.play(new, 31..=32);
    assert_eq!(s.frames, (0..=32).collect::<Vec<_>>());
    // One route: a switch is no new start.
    assert_eq!(s.out.iter().filter(|o| matches!(o, Output::Started { .. })).count(), 1);

    // The new stream replays frames the consumer has (GOP from 10): they are dropped.
    let (mut s, old, cam) = watching(15);
    s.input(Input::DirectPath(cam));
    let (new, _) = s.opened();
    s.accept(new, cam);
    s.play(new, 10..=22);
    s.play(old, 16..=18);
    assert_eq!(s.frames, (0..=22).collect::<Vec<_>>());
    assert!(s.out.contains(&Output::Close { feed: old }));
}

#[test]
fn a_new_stream_that_says_nothing_leaves_the_old_one_in_place() {
    let (mut s, old, cam) = watching(4);
    s.input(Input::DirectPath(cam));
    let (silent, _) = s.opened();
    s.accept(silent, cam);
    // The old feed keeps the watch alive until the switch is given up.
    for _ in 0..150 {
        s.play(old, [s.frames.last().copied().unwrap_or(0) + 1]);
        s.advance(Duration::ZERO);
        if s.out.contains(&Output::Close { feed: silent }) {
            break;
        }
    }
    assert!(s.out.contains(&Output::Close { feed: silent }));
    assert!(!s.out.contains(&Output::Close { feed: old }));
    let n = *s.frames.last().expect("frames");
    s.play(old, [n + 1]);
    assert_eq!(s.frames, (0..=n + 1).collect::<Vec<_>>());
    assert!(s.interruptions().is_empty());
}

#[test]
fn a_direct_path_to_another_peer_is_ignored() {
    let (mut s, _, _) = watching(3);
    s.drain();
    s.input(Input::DirectPath(PeerId::random()));
    assert!(s.drain().is_empty());
}

#[test]
fn the_old_path_dying_mid_switch_hands_over_to_the_new_one() {
    let (mut s, old, cam) = watching(4);
    s.input(Input::DirectPath(cam));
    let (new, _) = s.opened();
    s.accept(new, cam);
    s.play(new, 10..=12);
    s.fail(old, Fault::Retry);
    s.play(new, 13..=14);
    let mut want: Vec<u64> = (0..=4).collect();
    want.extend(10..=14);
    assert_eq!(s.frames, want);
    assert!(s.interruptions().is_empty());
    assert_eq!(s.w.spliced().1, 1, "the gap is counted");
}

#[test]
fn replays_after_a_reconnect_are_dropped() {
    let (mut s, feed, cam) = watching(14);
    s.fail(feed, Fault::Retry);
    s.fire_next();
    let (again, _) = s.opened();
    assert_ne!(again, feed);
    s.accept(again, cam);
    // The source's cached GOP starts at keyframe 10.
    s.play(again, 10..=20);
    assert_eq!(s.frames, (0..=20).collect::<Vec<_>>());
    // Video is back: Started with the gap since the last frame.
    let gaps: Vec<_> = s
        .out
        .iter()
        .filter_map(|o| match o {
            Output::Started { gap, .. } => Some(*gap),
            _ => None,
        })
        .collect();
    assert_eq!(gaps.len(), 2);
    assert_eq!(gaps[0], None);
    assert!(gaps[1].is_some_and(|g| g >= ms(100)), "{gaps:?}");
}

#[test]
fn a_stream_falling_behind_is_reopened_at_the_newest_keyframe() {
    let (mut s, feed, cam) = watching(3);
    // The path backs up: frames arrive ever later than their capture pace.
    let mut q = 4;
    while s.interruptions().is_empty() {
        s.now += ms(100);
        s.frame(feed, q);
        q += 1;
        assert!(q < 100, "never reopened");
    }
    let last = *s.frames.last().expect("frames");
    // Frames up to MAX_LAG behind went out; the one past it did not.
    assert!(last >= 3 && last < q - 1, "{last} {q}");
    assert!(
        s.out
            .iter()
            .any(|o| matches!(o, Output::Interrupted { error, .. } if error.contains("behind live"))),
        "{:?}",
        s.out
    );
    assert!(s.out.contains(&Output::Close { feed }));
    assert!(!s.out.iter().any(|o| matches!(o, Output::CloseConnections(_))));
    s.fire_next();
    let (again, target) = s.opened();
    assert_ne!(again, feed);
    assert_eq!(target, Target::Camera(None));
    s.accept(again, cam);
    assert!(MAX_LAG > ms(100));
}

#[test]
fn a_silent_stream_closes_the_connections_and_retries() {
    let (mut s, feed, cam) = watching(3);
    let stalled_at = s.wake.expect("stall timer");
    assert_eq!(
        stalled_at,
        s.now + Duration::from_secs(1),
        "stall timeout from the last frame"
    );
    s.fire_next();
    let out = s.drain();
    assert!(out.contains(&Output::CloseConnections(cam)));
    assert!(out.contains(&Output::Close { feed }));
    assert!(out.iter().any(
        |o| matches!(o, Output::Interrupted { error, retry_in } if error.starts_with("no video from") && *retry_in == ms(100))
    ));
}

#[test]
fn backoff_grows_until_video_is_back_and_attempts_run_out() {
    let mut opts = WatchOptions::new("cam");
    opts.max_attempts = Some(5);
    opts.backoff_max = ms(500);
    let mut s = Sim::new(Config::one(&opts));
    for _ in 0..3 {
        let (feed, _) = s.opened();
        s.fail(feed, Fault::Retry);
        s.fire_next();
    }
    assert_eq!(s.interruptions(), vec![ms(100), ms(200), ms(400)]);
    // Video is back: the count and the backoff start over.
    let (feed, _) = s.opened();
    s.accept(feed, PeerId::random());
    s.fail(feed, Fault::Retry);
    assert_eq!(s.interruptions().last(), Some(&ms(100)));
    for _ in 0..4 {
        s.fire_next();
        let (feed, _) = s.opened();
        s.fail(feed, Fault::Retry);
    }
    assert_eq!(s.interruptions()[3..], [ms(100), ms(200), ms(400), ms(500)]);
    assert!(
        matches!(s.out.last(), Some(Output::Failed { .. })),
        "{:?}",
        s.out.last()
    );
    assert!(s.w.is_done());
    assert!(s.w.handle(Input::Timer, s.now).is_empty());
}

#[test]
fn refusals_that_no_retry_fixes_end_the_watch() {
    let mut s = Sim::one();
    let (feed, _) = s.opened();
    s.fail(feed, Fault::Refused);
    assert!(matches!(s.out.last(), Some(Output::Failed { .. })));
    assert!(s.interruptions().is_empty());

    // One route: an impostor among the candidates is retried (another may be genuine).
    let mut s = Sim::one();
    let (feed, _) = s.opened();
    s.fail(feed, Fault::Impostor);
    assert_eq!(s.interruptions().len(), 1);

    // A node that goes away stops the watch without a word.
    let (mut s, _, _) = watching(1);
    s.input(Input::NetClosed);
    assert!(matches!(s.out.last(), Some(Output::Stop)));
}

// ---- several routes ----

fn routes(cam: PeerId, via: Vec<PeerId>, edit: impl FnOnce(&mut RouteOptions)) -> Sim {
    let mut opts = WatchOptions::new("cam");
    opts.peer = Some(cam);
    let mut r = RouteOptions::via(via);
    edit(&mut r);
    Sim::new(Config::routes(&opts, &r, Duration::from_secs(20)))
}

fn cand(route: Route, rtt_ms: u64, reachable: bool) -> Candidate {
    Candidate {
        route,
        link: Link::Direct,
        rtt: Some(ms(rtt_ms)),
        reachable,
        preferred: false,
    }
}

/// Answers the last `Measure`.
fn answer(s: &mut Sim, cands: Vec<Candidate>) {
    assert!(
        matches!(s.out.last(), Some(Output::Measure { .. })),
        "expected a measure, got {:?}",
        s.out.last()
    );
    s.input(Input::Candidates(cands));
}

#[test]
fn routes_switch_with_hysteresis_make_before_break() {
    let (cam, fwd) = (PeerId::random(), PeerId::random());
    let mut s = routes(cam, vec![fwd], |_| {});
    assert_eq!(
        s.out,
        vec![Output::Measure {
            owners: vec![cam],
            via: vec![fwd]
        }]
    );
    answer(
        &mut s,
        vec![
            cand(Route::Direct(cam), 10, false),
            cand(Route::Forwarded(fwd), 80, true),
        ],
    );
    let (f1, target) = s.opened();
    assert_eq!(target, Target::Route(Route::Forwarded(fwd)));
    s.accept(f1, fwd);
    s.play(f1, 0..=5);
    let better = vec![
        cand(Route::Direct(cam), 10, true),
        cand(Route::Forwarded(fwd), 80, true),
    ];
    // Within the dwell time a better route is not taken.
    s.advance(Duration::from_secs(1));
    answer(&mut s, better.clone());
    assert!(!s
        .out
        .iter()
        .any(|o| matches!(o, Output::Open { feed, .. } if *feed != f1)));
    let mut q = 6;
    let f2 = loop {
        s.play(f1, [q]);
        q += 1;
        s.advance(Duration::ZERO);
        if matches!(s.out.last(), Some(Output::Measure { .. })) {
            s.out.clear();
            s.input(Input::Candidates(better.clone()));
            if let Some(Output::Open {
                feed,
                target: Target::Route(Route::Direct(_)),
            }) = s.out.last()
            {
                break *feed;
            }
        }
        assert!(q < 1_000, "never switched");
    };
    assert!(s.now - s.t0 >= Duration::from_secs(10), "dwell time respected");
    s.accept(f2, cam);
    // The direct route starts at the last keyframe it has; the forwarder still runs.
    let key = q / 10 * 10;
    s.play(f2, key..q + 3);
    assert!(s.out.contains(&Output::Close { feed: f1 }));
    s.play(f1, [q]);
    s.play(f2, q + 3..q + 5);
    assert_eq!(s.frames, (0..q + 5).collect::<Vec<_>>());
    // Several routes: the switch is announced.
    assert!(matches!(
        s.out.iter().rev().find(|o| matches!(o, Output::Started { .. })),
        Some(Output::Started { peer, gap: None, .. }) if *peer == cam
    ));
}

#[test]
fn a_failed_route_is_replaced_at_once_and_backs_off_when_all_failed() {
    let (cam, fwd) = (PeerId::random(), PeerId::random());
    let mut s = routes(cam, vec![fwd], |_| {});
    let both = vec![
        cand(Route::Direct(cam), 10, true),
        cand(Route::Forwarded(fwd), 12, true),
    ];
    answer(&mut s, both.clone());
    let (f1, target) = s.opened();
    assert_eq!(target, Target::Route(Route::Direct(cam)));
    s.accept(f1, cam);
    s.play(f1, 0..=3);
    s.fail(f1, Fault::Retry);
    assert_eq!(s.interruptions(), vec![Duration::ZERO]);
    answer(&mut s, both.clone());
    let (f2, target) = s.opened();
    assert_eq!(
        target,
        Target::Route(Route::Forwarded(fwd)),
        "the failed route is penalised"
    );
    // The forwarder refuses: not fatal, the direct route may still work.
    s.fail(f2, Fault::Refused);
    assert!(!s.w.is_done());
    // Both failed lately: back off before opening again.
    answer(&mut s, both);
    assert!(s.wake.is_some_and(|t| t > s.now));
    assert!(
        matches!(s.out.last(), Some(Output::Measure { .. })),
        "nothing opened before the backoff"
    );
    s.fire_next();
    assert!(matches!(s.out.last(), Some(Output::Open { .. })));
}

#[test]
fn a_route_that_never_answers_or_goes_silent_fails() {
    let (cam, fwd) = (PeerId::random(), PeerId::random());
    let mut s = routes(cam, vec![fwd], |_| {});
    answer(&mut s, vec![cand(Route::Direct(cam), 10, true)]);
    let (f1, _) = s.opened();
    // Not accepted within the opening time.
    s.advance(Duration::from_secs(20));
    assert!(s.out.contains(&Output::Close { feed: f1 }));
    assert!(s
        .out
        .iter()
        .any(|o| matches!(o, Output::Interrupted { error, .. } if error == "no video for 1.5s")));
    answer(&mut s, vec![cand(Route::Forwarded(fwd), 10, true)]);
    let (f2, _) = s.opened();
    s.accept(f2, fwd);
    s.play(f2, 0..=2);
    s.advance(ms(1600));
    assert!(s.out.contains(&Output::Close { feed: f2 }));
    // Several routes: no connection is closed, the next route is tried.
    assert!(!s.out.iter().any(|o| matches!(o, Output::CloseConnections(_))));
}

#[test]
fn a_refusal_by_the_cameras_node_ends_a_routed_watch() {
    let (cam, fwd) = (PeerId::random(), PeerId::random());
    let mut s = routes(cam, vec![fwd], |_| {});
    answer(&mut s, vec![cand(Route::Direct(cam), 10, true)]);
    let (f1, _) = s.opened();
    s.fail(f1, Fault::Impostor);
    assert!(matches!(s.out.last(), Some(Output::Failed { .. })));
}

#[test]
fn forwarders_are_discovered_first_then_while_watching() {
    let (cam, fwd, found) = (PeerId::random(), PeerId::random(), PeerId::random());
    let mut s = routes(cam, vec![fwd], |r| r.discover_every = Some(Duration::from_secs(5)));
    assert_eq!(s.drain(), vec![Output::Discover]);
    s.input(Input::Forwarders(vec![found, fwd]));
    assert_eq!(
        s.out,
        vec![Output::Measure {
            owners: vec![cam],
            via: vec![fwd, found]
        }]
    );
    answer(&mut s, vec![cand(Route::Forwarded(found), 10, true)]);
    let (f1, _) = s.opened();
    s.accept(f1, found);
    s.drain();
    let mut discovered = 0;
    for _ in 0..12 {
        s.play(f1, [s.frames.len() as u64]);
        s.advance(Duration::from_secs(1) - Duration::from_micros(FRAME_US as u64));
        for o in s.drain() {
            match o {
                Output::Discover => {
                    discovered += 1;
                    s.input(Input::Forwarders(Vec::new()));
                }
                Output::Measure { .. } => s.input(Input::Candidates(vec![cand(Route::Forwarded(found), 10, true)])),
                _ => {}
            }
        }
    }
    assert_eq!(discovered, 2, "every 5 s");
}

#[test]
fn an_unpinned_camera_is_resolved_first() {
    let mut opts = WatchOptions::new("cam");
    opts.peer = None;
    let mut s = Sim::new(Config::routes(
        &opts,
        &RouteOptions::via(vec![]),
        Duration::from_secs(20),
    ));
    assert_eq!(s.drain(), vec![Output::Resolve]);
    // Nobody yet: asked again before measuring.
    s.input(Input::Owners(vec![]));
    assert_eq!(s.drain(), vec![Output::Resolve]);
    s.input(Input::Owners(vec![]));
    answer(&mut s, vec![]);
    // No path: back off, then resolve again.
    s.fire_next();
    assert_eq!(s.drain().last(), Some(&Output::Resolve));
}
