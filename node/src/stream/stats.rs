//! Live statistics of a received stream (pure): frame rate, bitrate, capture-to-viewer
//! latency and skips over a sliding window, plus totals. Fed by `mesh watch`,
//! `mesh demo` and the benchmark harness.

use std::collections::VecDeque;

use camesh_proto::pb::FrameHeader;

/// One frame as the stats see it.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at_us: i64,
    bytes: usize,
    latency_us: i64,
}

/// What a viewer shows per stream.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Snapshot {
    pub fps: f64,
    pub kbit_s: f64,
    pub latency_p50_ms: f64,
    pub latency_max_ms: f64,
    /// Times the source skipped to a keyframe for us (total).
    pub skips: u64,
    /// Frames skipped in those skips (total).
    pub skipped_frames: u64,
    pub frames: u64,
    pub bytes: u64,
    pub keyframes: u64,
    /// Restarts of the stream after an interruption, and the longest gap.
    pub gaps: u64,
    pub longest_gap_ms: u64,
}

#[derive(Debug)]
pub struct LiveStats {
    window_us: i64,
    samples: VecDeque<Sample>,
    totals: Snapshot,
}

/// Bound on samples kept (a window of 2 s at 240 fps).
const MAX_SAMPLES: usize = 480;

impl LiveStats {
    pub fn new(window_ms: u64) -> Self {
        Self {
            window_us: i64::try_from(window_ms).unwrap_or(i64::MAX / 1000) * 1000,
            samples: VecDeque::with_capacity(64),
            totals: Snapshot::default(),
        }
    }

    pub fn on_frame(&mut self, header: &FrameHeader, payload_len: usize, now_us: i64) {
        let t = &mut self.totals;
        t.frames += 1;
        t.bytes += payload_len as u64;
        if header.keyframe {
            t.keyframes += 1;
        }
        if header.skipped_before > 0 && t.frames > 1 {
            t.skips += 1;
            t.skipped_frames += u64::from(header.skipped_before);
        }
        if self.samples.len() == MAX_SAMPLES {
            self.samples.pop_front();
        }
        self.samples.push_back(Sample {
            at_us: now_us,
            bytes: payload_len,
            latency_us: now_us - header.capture_unix_us,
        });
        self.expire(now_us);
    }

    pub fn on_gap(&mut self, gap_ms: u64) {
        self.totals.gaps += 1;
        self.totals.longest_gap_ms = self.totals.longest_gap_ms.max(gap_ms);
    }

    fn expire(&mut self, now_us: i64) {
        while self.samples.front().is_some_and(|s| now_us - s.at_us > self.window_us) {
            self.samples.pop_front();
        }
    }

    pub fn snapshot(&mut self, now_us: i64) -> Snapshot {
        self.expire(now_us);
        let mut s = self.totals;
        let n = self.samples.len();
        if n > 0 {
            let secs = self.window_us as f64 / 1e6;
            s.fps = n as f64 / secs;
            s.kbit_s = self.samples.iter().map(|x| x.bytes as f64).sum::<f64>() * 8.0 / 1000.0 / secs;
            let mut lat: Vec<i64> = self.samples.iter().map(|x| x.latency_us).collect();
            lat.sort_unstable();
            s.latency_p50_ms = lat[n / 2] as f64 / 1000.0;
            s.latency_max_ms = lat[n - 1] as f64 / 1000.0;
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(capture: i64, key: bool, skipped: u32) -> FrameHeader {
        FrameHeader {
            capture_unix_us: capture,
            keyframe: key,
            skipped_before: skipped,
            ..Default::default()
        }
    }

    #[test]
    fn rates_and_latency_over_the_window() {
        let mut st = LiveStats::new(1000);
        // 30 frames of 1000 bytes over one second, each 2 ms late.
        for i in 0..30 {
            let now = 1_000_000 + i * 33_333;
            st.on_frame(&h(now - 2000, i == 0, 0), 1000, now);
        }
        let s = st.snapshot(1_000_000 + 29 * 33_333);
        assert!((s.fps - 30.0).abs() < 0.01, "{s:?}");
        assert!((s.kbit_s - 240.0).abs() < 0.01, "{s:?}");
        assert_eq!(s.latency_p50_ms, 2.0);
        assert_eq!(s.keyframes, 1);
        assert_eq!(s.skips, 0);
    }

    #[test]
    fn skips_are_counted_but_not_the_first_frame() {
        let mut st = LiveStats::new(1000);
        st.on_frame(&h(0, true, 5), 10, 0);
        st.on_frame(&h(0, true, 7), 10, 0);
        let s = st.snapshot(0);
        assert_eq!((s.skips, s.skipped_frames), (1, 7));
    }
}
