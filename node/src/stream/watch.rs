//! Watching a camera and staying on it: resolve, connect, subscribe, and when anything
//! breaks, retry with exponential backoff and report the gap once video is back.
//!
//! Paths change under a running stream: when a hole punch gives a direct connection next
//! to the relayed one the video arrives on ([`NetEvent::DirectPath`]), the watcher opens a
//! second subscription (new streams go direct) and switches make-before-break, splicing
//! on sequence numbers so the viewer sees neither a gap nor a repeated frame. A stream
//! that carries nothing for [`stall_timeout`] (a relay died silently: QUIC would take its
//! idle timeout to notice) counts as broken: the connections to the source are closed and
//! the next attempt dials every known path (other relays, direct).
//!
//! Live means live at the viewer too: QUIC buffers up to a stream window of frames on a
//! link slower than the stream, so the source's queue (which skips to the next keyframe
//! when it overflows) never fills. The watcher measures how far behind the stream has
//! fallen ([`LagMeter`]: arrival minus capture time, against the best seen, so clocks
//! need not agree) and past [`MAX_LAG`] drops the stream (the source discards what it
//! had buffered) and reopens it at the newest keyframe.
//!
//! Events go to a bounded channel: a consumer that cannot keep up slows the reads, QUIC
//! flow control pushes back to the source, and the source's queue for this viewer skips
//! to the next keyframe. Nothing here grows without bound.

use std::time::{Duration, Instant};

use camesh_proto::{pb, MediaFrame};
use libp2p::PeerId;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::client::{ClientError, Subscription};
pub use crate::backoff::next_backoff;
use crate::net::NetEvent;
use crate::reach::{live_request as request_for, Reach};

/// Frames read ahead of the consumer per subscription (the reader task's queue).
const READ_AHEAD: usize = 4;
/// How long a make-before-break switch may take before the old path is kept.
const SWITCH_TIMEOUT: Duration = Duration::from_secs(3);
/// How far behind live a stream may fall before it is reopened at the newest keyframe.
pub const MAX_LAG: Duration = Duration::from_millis(1500);
/// Frames of the new stream a switch looks at to find where the old one left off.
const SPLICE_FRAMES: usize = 600;

#[derive(Debug, Clone)]
pub struct WatchOptions {
    pub camera: String,
    /// Ask this peer only (otherwise: whoever the directory or the DHT names).
    pub peer: Option<PeerId>,
    pub profile: pb::Profile,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// Give up after this many failed attempts in a row (`None`: never).
    pub max_attempts: Option<u32>,
    pub user_agent: String,
    /// No frame for this long (at least three frame intervals) and the path is dead.
    pub stall_timeout: Duration,
}

impl WatchOptions {
    pub fn new(camera: impl Into<String>) -> Self {
        Self {
            camera: camera.into(),
            peer: None,
            profile: pb::Profile::Main,
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(2),
            max_attempts: None,
            user_agent: format!("camesh/{}", env!("CARGO_PKG_VERSION")),
            stall_timeout: Duration::from_secs(1),
        }
    }
}

#[derive(Debug)]
pub enum WatchEvent {
    /// Video (re)started; `gap` is the time without video before it, after an interruption.
    Started {
        peer: PeerId,
        accept: pb::StreamAccept,
        gap: Option<Duration>,
    },
    Frame(MediaFrame),
    /// The stream broke or could not be opened; the next attempt follows in `retry_in`.
    Interrupted {
        error: String,
        retry_in: Duration,
    },
    /// Stopped for good (refused, or out of attempts).
    Failed {
        error: String,
    },
}

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
type Last = Option<(u64, i64)>;

/// A frame the consumer already has: a new subscription to the same source replays the
/// cached GOP. A restarted source numbers from 0 again but its capture times are newer.
pub fn is_replay(header: &pb::FrameHeader, last: Last) -> bool {
    last.is_some_and(|(seq, capture)| header.sequence <= seq && header.capture_unix_us <= capture)
}

/// How far a stream has fallen behind: each frame's arrival minus capture time, less the
/// smallest such difference seen on this stream (the clock offset and the path's base
/// delay cancel out).
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

/// A subscription read by its own task (reads are not cancel-safe; a channel is), so the
/// watcher can wait on frames, path events and a switch at once. Dropping it ends the
/// task and the stream.
struct Reader {
    peer: PeerId,
    accept: pb::StreamAccept,
    rx: mpsc::Receiver<Result<Option<MediaFrame>, ClientError>>,
    task: tokio::task::JoinHandle<()>,
}

impl Reader {
    fn start(mut sub: Subscription) -> Self {
        let (tx, rx) = mpsc::channel(READ_AHEAD);
        let (peer, accept) = (sub.peer, sub.accept.clone());
        let task = tokio::spawn(async move {
            loop {
                let r = sub.next_frame().await;
                let end = !matches!(r, Ok(Some(_)));
                if tx.send(r).await.is_err() || end {
                    return;
                }
            }
        });
        Self { peer, accept, rx, task }
    }

    /// The next frame; `Err` text when the stream ended or broke.
    async fn next(&mut self) -> Result<MediaFrame, String> {
        match self.rx.recv().await {
            Some(Ok(Some(f))) => Ok(f),
            Some(Ok(None)) | None => Err(format!("{} ended the stream", self.peer)),
            Some(Err(e)) => Err(e.to_string()),
        }
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.task.abort();
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

fn live_request(opts: &WatchOptions) -> pb::StreamRequest {
    request_for(&opts.camera, opts.profile, &opts.user_agent)
}

/// Starts watching a camera until `cancel`; events arrive on the returned bounded
/// channel.
pub fn spawn(reach: Reach, opts: WatchOptions, cancel: CancellationToken) -> mpsc::Receiver<WatchEvent> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(run(reach, opts, tx, cancel));
    rx
}

pub async fn run(node: Reach, opts: WatchOptions, tx: mpsc::Sender<WatchEvent>, cancel: CancellationToken) {
    let mut backoff = Duration::ZERO;
    let mut attempts = 0u32;
    let mut last_frame: Option<Instant> = None;
    let mut last: Last = None;
    let mut interrupted = false;
    let mut net_events = node.net().subscribe();
    loop {
        if cancel.is_cancelled() {
            return;
        }
        let result = tokio::select! {
            r = node.subscribe(&opts.camera, opts.peer, live_request(&opts)) => r,
            _ = cancel.cancelled() => return,
        };
        let error = match result {
            Ok(sub) => {
                attempts = 0;
                backoff = Duration::ZERO;
                let gap = if interrupted {
                    last_frame.map(|t| t.elapsed())
                } else {
                    None
                };
                info!(camera = %opts.camera, peer = %sub.peer, gap_ms = gap.map(|g| g.as_millis() as u64), "video started");
                if tx
                    .send(WatchEvent::Started {
                        peer: sub.peer,
                        accept: sub.accept.clone(),
                        gap,
                    })
                    .await
                    .is_err()
                {
                    return;
                }
                let mut reader = Reader::start(sub);
                let stall = {
                    let c = reader.accept.codec.clone().unwrap_or_default();
                    stall_timeout(opts.stall_timeout, c.fps_num, c.fps_den)
                };
                let mut since = Instant::now();
                let mut lag = LagMeter::default();
                let mut switch: Option<std::pin::Pin<Box<dyn std::future::Future<Output = _> + Send>>> = None;
                loop {
                    let deadline = tokio::time::Instant::from_std(last_frame.unwrap_or(since).max(since) + stall);
                    tokio::select! {
                        r = reader.next() => match r {
                            Ok(f) => {
                                if is_replay(&f.header, last) {
                                    continue;
                                }
                                let behind = lag.observe(f.header.capture_unix_us, crate::clock::now_unix_us());
                                if behind > MAX_LAG {
                                    // Drop the stream and what the path holds of it; the next
                                    // one starts at the newest keyframe (a visible skip, not a
                                    // growing delay).
                                    warn!(camera = %opts.camera, peer = %reader.peer, lag_ms = behind.as_millis() as u64, "falling behind live: skipping to the newest keyframe");
                                    break format!("{:.1}s behind live: reopening at the newest keyframe", behind.as_secs_f64());
                                }
                                last = Some((f.header.sequence, f.header.capture_unix_us));
                                last_frame = Some(Instant::now());
                                if tx.send(WatchEvent::Frame(f)).await.is_err() {
                                    return;
                                }
                            }
                            Err(e) => break e,
                        },
                        _ = tokio::time::sleep_until(deadline) => {
                            // Silence on a live stream: the path is gone (a relay died, a
                            // NAT mapping expired). Drop every connection to the source so
                            // the next attempt dials all known paths afresh.
                            warn!(camera = %opts.camera, peer = %reader.peer, stall_ms = stall.as_millis() as u64, "no video: the path stalled");
                            node.net().close_connections(reader.peer).await;
                            break format!("no video from {} for {:.1}s", reader.peer, stall.as_secs_f64());
                        }
                        ev = net_events.recv() => match ev {
                            Ok(NetEvent::DirectPath { peer }) if peer == reader.peer && switch.is_none() => {
                                info!(camera = %opts.camera, %peer, "direct path: switching the stream over");
                                let (node, camera, req) = (node.clone(), opts.camera.clone(), live_request(&opts));
                                switch = Some(Box::pin(async move {
                                    tokio::time::timeout(SWITCH_TIMEOUT, node.subscribe(&camera, Some(peer), req)).await
                                }));
                            }
                            Err(broadcast::error::RecvError::Lagged(_)) | Ok(_) => {}
                            Err(broadcast::error::RecvError::Closed) => return,
                        },
                        r = async { switch.as_mut().expect("guarded").await }, if switch.is_some() => {
                            switch = None;
                            match r {
                                Ok(Ok(new)) => {
                                    let new = Reader::start(new);
                                    match splice(&mut reader, new, &mut last, &tx, stall).await {
                                        Ok(r) => {
                                            reader = r;
                                            lag = LagMeter::default();
                                            since = Instant::now();
                                            last_frame = Some(since);
                                            info!(camera = %opts.camera, peer = %reader.peer, "stream moved to the direct path");
                                        }
                                        Err(Closed) => return,
                                    }
                                }
                                Ok(Err(e)) => debug!(error = %e, "switch to the direct path failed; staying"),
                                Err(_) => debug!("switch to the direct path timed out; staying"),
                            }
                        }
                        _ = cancel.cancelled() => return,
                    }
                }
            }
            Err(e) => {
                if is_final(&e) {
                    let _ = tx.send(WatchEvent::Failed { error: e.to_string() }).await;
                    return;
                }
                e.to_string()
            }
        };
        interrupted = true;
        attempts += 1;
        if opts.max_attempts.is_some_and(|m| attempts >= m) {
            let _ = tx.send(WatchEvent::Failed { error }).await;
            return;
        }
        backoff = next_backoff(backoff, opts.backoff_min, opts.backoff_max);
        debug!(camera = %opts.camera, %error, retry_ms = backoff.as_millis() as u64, "watch interrupted");
        if tx
            .send(WatchEvent::Interrupted {
                error,
                retry_in: backoff,
            })
            .await
            .is_err()
        {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = cancel.cancelled() => return,
        }
    }
}

/// The consumer went away.
#[derive(Debug)]
struct Closed;

/// Hands the consumer the frames that continue its sequence: from the old stream until
/// it reaches the new one's first frame (a cached GOP starting at a keyframe), then from
/// the new one, skipping what the consumer already has. Returns the reader to go on
/// with: the new one, or the old one if the new one fails before it has caught up.
async fn splice(
    old: &mut Reader,
    mut new: Reader,
    last: &mut Last,
    tx: &mpsc::Sender<WatchEvent>,
    stall: Duration,
) -> Result<Reader, Closed> {
    let give_up = |r: &mut Reader| Reader {
        peer: r.peer,
        accept: r.accept.clone(),
        rx: std::mem::replace(&mut r.rx, mpsc::channel(1).1),
        task: std::mem::replace(&mut r.task, tokio::spawn(async {})),
    };
    let first = match tokio::time::timeout(stall, new.next()).await {
        Ok(Ok(f)) => f,
        _ => return Ok(give_up(old)),
    };
    // Catch the old stream up to where the new one starts.
    while let Some((seq, _)) = *last {
        if seq + 1 >= first.header.sequence {
            break;
        }
        match tokio::time::timeout(stall, old.next()).await {
            Ok(Ok(f)) => {
                if !is_replay(&f.header, *last) {
                    *last = Some((f.header.sequence, f.header.capture_unix_us));
                    tx.send(WatchEvent::Frame(f)).await.map_err(|_| Closed)?;
                }
            }
            // The old path broke first: carry on with the new one (a gap is unavoidable).
            _ => break,
        }
    }
    let mut pending = Some(first);
    for _ in 0..SPLICE_FRAMES {
        let f = match pending.take() {
            Some(f) => f,
            None => match tokio::time::timeout(stall, new.next()).await {
                Ok(Ok(f)) => f,
                _ => return Ok(give_up(old)),
            },
        };
        if is_replay(&f.header, *last) {
            continue;
        }
        *last = Some((f.header.sequence, f.header.capture_unix_us));
        tx.send(WatchEvent::Frame(f)).await.map_err(|_| Closed)?;
        break;
    }
    Ok(new)
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn feed(seqs: impl IntoIterator<Item = u64>) -> Reader {
        let (tx, rx) = mpsc::channel(64);
        for seq in seqs {
            let header = pb::FrameHeader {
                sequence: seq,
                capture_unix_us: 1_000_000 + seq as i64 * 33_000,
                keyframe: seq % 10 == 0,
                ..Default::default()
            };
            tx.try_send(Ok(Some(MediaFrame::new(header, Default::default()))))
                .expect("room");
        }
        Reader {
            peer: PeerId::random(),
            accept: Default::default(),
            rx,
            // Keeps the channel open: the feed is not over, it is just slow.
            task: tokio::spawn(async move {
                let _tx = tx;
                std::future::pending::<()>().await
            }),
        }
    }

    async fn delivered(rx: &mut mpsc::Receiver<WatchEvent>) -> Vec<u64> {
        let mut v = Vec::new();
        while let Ok(WatchEvent::Frame(f)) = rx.try_recv() {
            v.push(f.header.sequence);
        }
        v
    }

    #[tokio::test]
    async fn a_switch_catches_the_old_stream_up_and_drops_the_replay() {
        let (tx, mut rx) = mpsc::channel(64);
        let stall = Duration::from_millis(200);
        // The consumer has 0..=12; the old path still holds 13..=25; the new one starts
        // at keyframe 20 (its cached GOP): 13..=19 come from the old one, then 20 on.
        let mut old = feed(13..=25);
        let new = feed(20..=30);
        let mut last = Some((12, 1_000_000 + 12 * 33_000));
        let mut r = splice(&mut old, new, &mut last, &tx, stall).await.expect("open");
        let mut got = delivered(&mut rx).await;
        while let Ok(Ok(f)) = tokio::time::timeout(stall, r.next()).await {
            if !is_replay(&f.header, last) {
                last = Some((f.header.sequence, f.header.capture_unix_us));
                got.push(f.header.sequence);
            }
        }
        assert_eq!(got, (13..=30).collect::<Vec<_>>());

        // The new stream replays frames the consumer has (GOP from 10): they are dropped.
        let mut old = feed(16..=18);
        let new = feed(10..=22);
        let mut last = Some((15, 1_000_000 + 15 * 33_000));
        let mut r = splice(&mut old, new, &mut last, &tx, stall).await.expect("open");
        let mut got = delivered(&mut rx).await;
        while let Ok(Ok(f)) = tokio::time::timeout(stall, r.next()).await {
            if !is_replay(&f.header, last) {
                last = Some((f.header.sequence, f.header.capture_unix_us));
                got.push(f.header.sequence);
            }
        }
        assert_eq!(got, (16..=22).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_new_stream_that_says_nothing_leaves_the_old_one_in_place() {
        let (tx, mut rx) = mpsc::channel(64);
        let mut old = feed(5..=9);
        let silent = feed(std::iter::empty());
        let mut last = Some((4, 1_000_000 + 4 * 33_000));
        let mut r = splice(&mut old, silent, &mut last, &tx, Duration::from_millis(50))
            .await
            .expect("open");
        assert!(delivered(&mut rx).await.is_empty());
        assert_eq!(r.next().await.map(|f| f.header.sequence), Ok(5));
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
}
