//! A bounded, time-ordered store of one camera's signed events (pure): what the camera
//! node keeps of its recent events, and what an NVR loads from its event files. Events
//! are told apart by `(run, sequence)`, so the same event arriving twice (an NVR asking
//! again after a reconnect) is stored once. Past the capacity, the oldest go first.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

use camesh_proto::pb;

use super::kind_matches;

/// One stored event: what queries look at, and the signed event as it is sent.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    pub unix_us: i64,
    pub kind: String,
    pub id: (u64, u64),
    pub signed: Arc<pb::Signed>,
}

impl Stored {
    pub fn new(event: &pb::CameraEvent, signed: pb::Signed) -> Self {
        Stored {
            unix_us: event.unix_us,
            kind: event.kind.clone(),
            id: (event.run, event.sequence),
            signed: Arc::new(signed),
        }
    }
}

/// What a query asks for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Query {
    /// From this time (inclusive), Unix microseconds.
    pub from_us: i64,
    /// Up to this time (exclusive); 0: no end.
    pub to_us: i64,
    pub kinds: Vec<String>,
    /// Most events returned (the newest); 0: no limit.
    pub max: usize,
}

impl Query {
    pub fn wants(&self, unix_us: i64, kind: &str) -> bool {
        unix_us >= self.from_us && (self.to_us == 0 || unix_us < self.to_us) && kind_matches(&self.kinds, kind)
    }
}

#[derive(Debug)]
pub struct EventLog {
    events: VecDeque<Stored>,
    ids: HashSet<(u64, u64)>,
    cap: usize,
    /// Events dropped for room since the log was made.
    pub dropped: u64,
}

impl EventLog {
    pub fn new(cap: usize) -> Self {
        EventLog {
            events: VecDeque::new(),
            ids: HashSet::new(),
            cap: cap.max(1),
            dropped: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// The newest event's time.
    pub fn last_us(&self) -> Option<i64> {
        self.events.back().map(|e| e.unix_us)
    }

    /// Adds an event in time order; `false` if it was already here.
    pub fn push(&mut self, e: Stored) -> bool {
        if !self.ids.insert(e.id) {
            return false;
        }
        // Usually the newest; a late one goes where its time says.
        let at = self.events.partition_point(|x| x.unix_us <= e.unix_us);
        self.events.insert(at, e);
        while self.events.len() > self.cap {
            if let Some(old) = self.events.pop_front() {
                self.ids.remove(&old.id);
                self.dropped += 1;
            }
        }
        true
    }

    /// The events `q` asks for, oldest first; `true` when `q.max` left older ones out.
    pub fn query(&self, q: &Query) -> (Vec<Stored>, bool) {
        let start = self.events.partition_point(|x| x.unix_us < q.from_us);
        let mut out: Vec<Stored> = self
            .events
            .range(start..)
            .take_while(|e| q.to_us == 0 || e.unix_us < q.to_us)
            .filter(|e| kind_matches(&q.kinds, &e.kind))
            .cloned()
            .collect();
        let more = q.max > 0 && out.len() > q.max;
        if more {
            out.drain(..out.len() - q.max);
        }
        (out, more)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(t: i64, seq: u64, kind: &str) -> Stored {
        Stored {
            unix_us: t,
            kind: kind.into(),
            id: (1, seq),
            signed: Arc::new(pb::Signed::default()),
        }
    }

    #[test]
    fn queries_by_time_and_kind_keep_the_newest() {
        let mut log = EventLog::new(100);
        for i in 0..10 {
            let kind = if i % 2 == 0 { "motion" } else { "onvif/tns1:Door" };
            assert!(log.push(ev(i * 10, i as u64, kind)));
        }
        assert!(!log.push(ev(0, 0, "motion")), "the same event twice is stored once");
        let q = |from_us, to_us, kinds: &[&str], max| Query {
            from_us,
            to_us,
            kinds: kinds.iter().map(|s| s.to_string()).collect(),
            max,
        };
        let times = |r: (Vec<Stored>, bool)| (r.0.iter().map(|e| e.unix_us).collect::<Vec<_>>(), r.1);
        assert_eq!(times(log.query(&q(20, 50, &[], 0))), (vec![20, 30, 40], false));
        assert_eq!(
            times(log.query(&q(0, 0, &["motion"], 0))),
            (vec![0, 20, 40, 60, 80], false)
        );
        assert_eq!(times(log.query(&q(0, 0, &["onvif/"], 2))), (vec![70, 90], true));
        assert_eq!(times(log.query(&q(91, 0, &[], 0))), (vec![], false));
    }

    #[test]
    fn late_events_go_in_order_and_the_oldest_make_room() {
        let mut log = EventLog::new(3);
        log.push(ev(10, 1, "motion"));
        log.push(ev(30, 2, "motion"));
        log.push(ev(20, 3, "motion"));
        let all = Query::default();
        let t: Vec<i64> = log.query(&all).0.iter().map(|e| e.unix_us).collect();
        assert_eq!(t, vec![10, 20, 30]);
        log.push(ev(40, 4, "motion"));
        let t: Vec<i64> = log.query(&all).0.iter().map(|e| e.unix_us).collect();
        assert_eq!(t, vec![20, 30, 40]);
        assert_eq!(log.dropped, 1);
        assert!(log.push(ev(10, 1, "motion")), "a dropped event is forgotten");
        assert_eq!(log.last_us(), Some(40));
    }
}
