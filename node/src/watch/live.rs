//! The small rules of watching live, pure: how long silence may last ([`stall_timeout`]),
//! how far behind live a stream has fallen ([`LagMeter`], [`MAX_LAG`]), which frames the
//! viewer already has ([`is_replay`]), and which refusals no retry can fix ([`Fault`],
//! [`is_final`]). (The wait between attempts is [`crate::backoff::next_backoff`].)
//!
//! The state machine ([`super::machine`]) applies them; nothing here keeps state beyond
//! the lag meter's base, reads a clock or touches a socket.

use std::time::Duration;

use camesh_proto::pb;

use super::splice::Mark;
use crate::stream::client::ClientError;

/// How far behind live a stream may fall before it is reopened at the newest keyframe.
pub const MAX_LAG: Duration = Duration::from_millis(1500);

/// How long a stream may go without a frame: `min`, or three frame intervals of a slow
/// camera (`fps_num/fps_den`, 0/0 when unknown).
pub fn stall_timeout(min: Duration, fps_num: u32, fps_den: u32) -> Duration {
    if fps_num == 0 || fps_den == 0 {
        return min.max(Duration::from_secs(3));
    }
    let interval = Duration::from_secs_f64(f64::from(fps_den) / f64::from(fps_num));
    min.max(interval * 3).min(Duration::from_secs(30))
}

/// The last frame handed to the consumer: (sequence, capture time).
pub type Last = Option<(u64, i64)>;

/// A frame the consumer already has: a new subscription to the same source replays the
/// cached GOP. A restarted source numbers from 0 again but its capture times are newer.
/// (The splice applies the same rule to its [`Mark`]s.)
pub fn is_replay(header: &pb::FrameHeader, last: Last) -> bool {
    let m = Mark {
        sequence: header.sequence,
        capture_us: header.capture_unix_us,
        keyframe: header.keyframe,
    };
    last.is_some_and(|(sequence, capture_us)| {
        m.is_at_or_before(&Mark {
            sequence,
            capture_us,
            keyframe: false,
        })
    })
}

/// How far a stream has fallen behind: each frame's arrival minus capture time, less the
/// smallest such difference seen on this stream (the clock offset and the path's base
/// delay cancel out, so the arrival clock may be any clock counting microseconds).
#[derive(Debug, Default, Clone)]
pub struct LagMeter {
    base: Option<i64>,
}

impl LagMeter {
    /// The lag of a frame captured at `capture_us` (source clock) arriving at `recv_us`.
    pub fn observe(&mut self, capture_us: i64, recv_us: i64) -> Duration {
        let d = recv_us.saturating_sub(capture_us);
        let base = *self.base.get_or_insert(d);
        if d < base {
            self.base = Some(d);
            return Duration::ZERO;
        }
        Duration::from_micros(d.saturating_sub(base).unsigned_abs())
    }
}

/// What kind of failure a feed reported, for the machine to judge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Broken, timed out, closed: another attempt may work.
    Retry,
    /// A refusal that retrying cannot fix ([`is_final`]).
    Refused,
    /// The peer claims the camera without a certificate that binds it.
    Impostor,
}

impl Fault {
    pub fn of(e: &ClientError) -> Self {
        if is_final(e) {
            Fault::Refused
        } else if matches!(e, ClientError::Impostor { .. }) {
            Fault::Impostor
        } else {
            Fault::Retry
        }
    }
}

/// Refusals that retrying cannot fix.
pub fn is_final(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::Rejected {
            code: pb::RejectCode::RejectUnknownCamera
                | pb::RejectCode::RejectNotAuthorized
                | pb::RejectCode::RejectBadRequest
                | pb::RejectCode::RejectUnsupported,
            ..
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p::PeerId;

    #[test]
    fn replays_are_recognised_and_restarts_are_not() {
        let h = |sequence, capture_unix_us| pb::FrameHeader {
            sequence,
            capture_unix_us,
            ..Default::default()
        };
        assert!(!is_replay(&h(0, 10), None));
        let last = Some((100, 5_000));
        assert!(is_replay(&h(90, 4_000), last));
        assert!(is_replay(&h(100, 5_000), last));
        assert!(!is_replay(&h(101, 5_033), last));
        // A restarted source numbers from 0 again, with newer capture times.
        assert!(!is_replay(&h(0, 9_000), last));
    }

    #[test]
    fn lag_is_measured_against_the_best_arrival_seen() {
        let mut m = LagMeter::default();
        // Source clock 5 s ahead of ours: differences are negative, only changes count.
        assert_eq!(m.observe(10_000_000, 5_000_000), Duration::ZERO);
        assert_eq!(m.observe(10_033_000, 5_040_000), Duration::from_millis(7));
        // A faster arrival lowers the base.
        assert_eq!(m.observe(10_066_000, 5_066_000), Duration::ZERO);
        // A backlog: frames arrive ever later relative to capture.
        assert_eq!(m.observe(11_066_000, 7_066_000), Duration::from_secs(1));
    }

    #[test]
    fn stall_timeout_covers_slow_cameras() {
        let min = Duration::from_secs(1);
        assert_eq!(stall_timeout(min, 30, 1), min);
        assert_eq!(stall_timeout(min, 1, 1), Duration::from_secs(3));
        assert_eq!(stall_timeout(min, 0, 0), Duration::from_secs(3));
        assert_eq!(stall_timeout(min, 1, 3600), Duration::from_secs(30));
    }

    #[test]
    fn backoff_doubles_and_caps() {
        use crate::backoff::next_backoff;
        let (min, max) = (Duration::from_millis(100), Duration::from_secs(1));
        let mut b = Duration::ZERO;
        let seq: Vec<_> = (0..6)
            .map(|_| {
                b = next_backoff(b, min, max);
                b.as_millis()
            })
            .collect();
        assert_eq!(seq, vec![100, 200, 400, 800, 1000, 1000]);
    }

    #[test]
    fn refusals_are_classified_once() {
        let peer = PeerId::random();
        let rejected = |code| ClientError::Rejected {
            peer,
            code,
            reason: String::new(),
        };
        assert_eq!(
            Fault::of(&rejected(pb::RejectCode::RejectNotAuthorized)),
            Fault::Refused
        );
        assert_eq!(
            Fault::of(&rejected(pb::RejectCode::RejectUnknownCamera)),
            Fault::Refused
        );
        assert_eq!(
            Fault::of(&ClientError::Impostor {
                peer,
                camera: "c".into()
            }),
            Fault::Impostor
        );
        assert_eq!(Fault::of(&ClientError::Closed { peer }), Fault::Retry);
        // Nobody knows the camera yet: it may be announced any moment (a camera coming
        // online, a relay's DHT filling up), so the watch looks again.
        let missing = ClientError::NotFound { camera: "c".into() };
        assert_eq!(Fault::of(&missing), Fault::Retry);
        assert!(!is_final(&missing));
        assert!(!is_final(&ClientError::Closed { peer }));
    }
}
