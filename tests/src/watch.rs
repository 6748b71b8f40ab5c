//! Reading a watch's events ([`WatchEvent`]) in tests: every read is bounded in time, a
//! `Failed` event fails the test, and frames can be checked for order as they arrive.
//!
//! The loops themselves stay in the tests (their stop conditions and what they assert on
//! a `Started` or an `Interrupted` differ); what they all do on each event lives here:
//! [`next_event`] for one event, [`Watching::step`] for an event that also tracks the
//! route in use and the frame sequence ([`Seen`]).

use std::time::Duration;

use camesh_node::watch::WatchEvent;
use camesh_node::PeerId;
use camesh_proto::MediaFrame;
use tokio::sync::mpsc::Receiver;

/// The next event within `limit`; panics with `what` if none comes in time, and if the
/// watch has ended (its channel closed).
pub async fn next_event(events: &mut Receiver<WatchEvent>, limit: Duration, what: &str) -> WatchEvent {
    tokio::time::timeout(limit, events.recv())
        .await
        .expect(what)
        .expect("open")
}

/// Reads events until `n` frames came (each event within `limit`), ignoring starts and
/// interruptions; a `Failed` event fails the test.
pub async fn skip_frames(events: &mut Receiver<WatchEvent>, limit: Duration, n: usize) {
    let mut frames = 0;
    while frames < n {
        match next_event(events, limit, "event").await {
            WatchEvent::Frame(_) => frames += 1,
            WatchEvent::Failed { error } => panic!("{error}"),
            _ => {}
        }
    }
}

/// Reads events until an interruption (each within `limit`, else panics with `what`); a
/// `Failed` event fails the test.
pub async fn until_interrupted(events: &mut Receiver<WatchEvent>, limit: Duration, what: &str) {
    loop {
        match next_event(events, limit, what).await {
            WatchEvent::Interrupted { .. } => break,
            WatchEvent::Failed { error } => panic!("{error}"),
            _ => {}
        }
    }
}

/// Sequence numbers of a watch's frames in arrival order. Each frame must come after the
/// one before it (no duplicate, no reordering); jumps the frame does not explain with
/// `skipped_before` are counted.
#[derive(Debug, Default)]
pub struct Seen {
    pub seqs: Vec<u64>,
    pub unexplained_gaps: usize,
}

impl Seen {
    pub fn push(&mut self, f: &MediaFrame) {
        if let Some(&last) = self.seqs.last() {
            assert!(
                f.header.sequence > last,
                "duplicate or reordered frame {} after {last}",
                f.header.sequence
            );
            if f.header.sequence != last + 1 && f.header.skipped_before == 0 {
                self.unexplained_gaps += 1;
            }
        }
        self.seqs.push(f.header.sequence);
    }
}

/// What [`Watching::step`] read (a `Failed` event has already failed the test).
#[derive(Debug)]
pub enum Step {
    Started { peer: PeerId, gap: Option<Duration> },
    Frame,
    Interrupted { error: String },
}

/// A watch being read: the peer whose stream carries the video now (`source`, from the
/// last `Started`) and every frame so far (`seen`).
#[derive(Debug)]
pub struct Watching {
    events: Receiver<WatchEvent>,
    limit: Duration,
    pub source: Option<PeerId>,
    pub seen: Seen,
}

impl Watching {
    /// Reads `events`, each event within `limit`.
    pub fn new(events: Receiver<WatchEvent>, limit: Duration) -> Self {
        Self {
            events,
            limit,
            source: None,
            seen: Seen::default(),
        }
    }

    /// The next event: a start sets `source`, a frame goes into `seen` (checked for
    /// order), a `Failed` event fails the test.
    pub async fn step(&mut self) -> Step {
        match next_event(&mut self.events, self.limit, "event").await {
            WatchEvent::Started { peer, gap, .. } => {
                self.source = Some(peer);
                Step::Started { peer, gap }
            }
            WatchEvent::Frame(f) => {
                self.seen.push(&f);
                Step::Frame
            }
            WatchEvent::Interrupted { error, .. } => Step::Interrupted { error },
            WatchEvent::Failed { error } => panic!("{error}"),
            WatchEvent::Switched { profile, reason } => Step::Interrupted {
                error: format!("switched to {profile:?}: {reason}"),
            },
        }
    }

    /// [`Self::step`], printing an interruption (the watch carries on by itself).
    pub async fn step_logged(&mut self) -> Step {
        let step = self.step().await;
        if let Step::Interrupted { error } = &step {
            eprintln!("interrupted: {error}");
        }
        step
    }

    /// Frames seen so far.
    pub fn frames(&self) -> usize {
        self.seen.seqs.len()
    }
}
