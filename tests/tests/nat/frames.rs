//! What the assertions read: the frame log `mesh watch --frame-log` writes (frames,
//! starts, interruptions) and the times of tracing lines in a process's output.

use std::path::Path;
use std::time::Duration;

#[derive(Debug, Clone, Copy)]
pub(crate) struct Frame {
    pub(crate) seq: u64,
    pub(crate) capture_us: i64,
    pub(crate) recv_us: i64,
    pub(crate) skipped: u64,
    pub(crate) bytes: u64,
}

#[derive(Debug, Default)]
pub(crate) struct FrameLog {
    pub(crate) frames: Vec<Frame>,
    /// Arrival time and reported gap (ms, -1 for the first start) of each (re)start.
    pub(crate) started: Vec<(i64, i64)>,
    pub(crate) interrupted: Vec<String>,
}

fn field(line: &str, key: &str) -> Option<i64> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
}

pub(crate) fn read_frames(path: &Path) -> FrameLog {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut log = FrameLog::default();
    for line in text.lines() {
        if line.starts_with("frame ") {
            let get = |k| field(line, k).unwrap_or(0);
            log.frames.push(Frame {
                seq: get("seq") as u64,
                capture_us: get("capture_us"),
                recv_us: get("recv_us"),
                skipped: get("skipped") as u64,
                bytes: get("bytes") as u64,
            });
        } else if line.starts_with("started ") {
            log.started
                .push((field(line, "recv_us").unwrap_or(0), field(line, "gap_ms").unwrap_or(-1)));
        } else if line.starts_with("interrupted ") {
            log.interrupted.push(line.to_owned());
        }
    }
    log
}

impl FrameLog {
    /// Frames missing from the sequence (each jump beyond +1) and frames that went
    /// backwards (a repeat), over the whole log.
    pub(crate) fn holes_and_repeats(&self) -> (u64, usize) {
        let mut holes = 0;
        let mut repeats = 0;
        for w in self.frames.windows(2) {
            if w[1].seq <= w[0].seq {
                repeats += 1;
            } else {
                holes += w[1].seq - w[0].seq - 1;
            }
        }
        (holes, repeats)
    }

    /// The longest time without a frame among frames arriving after `from_us`, and when
    /// it ended.
    pub(crate) fn max_gap_after(&self, from_us: i64) -> (Duration, i64) {
        let mut best = (0, 0);
        for w in self.frames.windows(2) {
            if w[1].recv_us >= from_us {
                let g = w[1].recv_us - w[0].recv_us;
                if g > best.0 {
                    best = (g, w[1].recv_us);
                }
            }
        }
        (Duration::from_micros(best.0.max(0) as u64), best.1)
    }

    pub(crate) fn span(&self) -> Duration {
        match (self.frames.first(), self.frames.last()) {
            (Some(a), Some(b)) => Duration::from_micros((b.recv_us - a.recv_us).max(0) as u64),
            _ => Duration::ZERO,
        }
    }
}

/// Capture-to-arrival latency (ms) of frames that arrived in `[from, to)`: p50 and max.
pub(crate) fn latency_ms(frames: &[Frame], from: i64, to: i64) -> (f64, f64, usize) {
    let mut l: Vec<f64> = frames
        .iter()
        .filter(|f| f.recv_us >= from && f.recv_us < to)
        .map(|f| (f.recv_us - f.capture_us) as f64 / 1000.0)
        .collect();
    if l.is_empty() {
        return (f64::NAN, f64::NAN, 0);
    }
    l.sort_by(|a, b| a.total_cmp(b));
    (l[l.len() / 2], l[l.len() - 1], l.len())
}

/// Unix microseconds of a tracing line's RFC 3339 timestamp (`2026-01-02T03:04:05.678901Z`).
pub(crate) fn log_time_us(line: &str) -> Option<i64> {
    let ts = line.split_whitespace().next()?;
    let (date, time) = ts.trim_end_matches('Z').split_once('T')?;
    let d: Vec<i64> = date.split('-').map(|x| x.parse().ok()).collect::<Option<_>>()?;
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let t: Vec<i64> = hms.split(':').map(|x| x.parse().ok()).collect::<Option<_>>()?;
    if d.len() != 3 || t.len() != 3 {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let (y, m) = if d[1] <= 2 {
        (d[0] - 1, d[1] + 9)
    } else {
        (d[0], d[1] - 3)
    };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d[2] - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    let micros: i64 = format!("{frac:0<6}")[..6].parse().ok()?;
    Some(((days * 86_400 + t[0] * 3600 + t[1] * 60 + t[2]) * 1_000_000) + micros)
}

/// The first line of `text` containing `needle`, with its time.
pub(crate) fn first_log(text: &str, needle: &str) -> Option<(i64, String)> {
    text.lines()
        .find(|l| l.contains(needle))
        .and_then(|l| Some((log_time_us(l)?, l.to_owned())))
}

/// Waits until the frame log holds `n` frames (at most `limit`).
pub(crate) fn wait_frames(path: &Path, n: usize, limit: Duration) -> bool {
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        if read_frames(path).frames.len() >= n {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

#[test]
fn log_timestamps_parse() {
    assert_eq!(log_time_us("1970-01-01T00:00:01.5Z  INFO x"), Some(1_500_000));
    assert_eq!(
        log_time_us("2026-11-23T18:03:01.123456Z  INFO x"),
        Some(1_795_456_981_123_456)
    );
    assert_eq!(log_time_us("garbage"), None);
}
