//! Percentiles and the per-window record of received frames.

use serde::Serialize;

/// Nearest-rank percentile of sorted values (`q` in 0..=1).
pub fn percentile(sorted: &[i64], q: f64) -> Option<i64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Latency distribution of a window, in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Latency {
    pub n: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

impl Latency {
    pub fn from_us(values: &mut [i64]) -> Self {
        values.sort_unstable();
        let ms = |q: f64| percentile(values, q).map_or(f64::NAN, |v| v as f64 / 1000.0);
        let n = values.len();
        Latency {
            n,
            p50_ms: ms(0.5),
            p99_ms: ms(0.99),
            p999_ms: ms(0.999),
            max_ms: ms(1.0),
            mean_ms: if n == 0 {
                f64::NAN
            } else {
                values.iter().map(|&v| v as f64).sum::<f64>() / n as f64 / 1000.0
            },
        }
    }
}

/// What one path adds to another, frame by frame: for every sequence number both
/// windows hold, `via`'s latency minus `direct`'s, divided by `hops`, in µs (the input to
/// [`Latency::from_us`]). Pairing by frame keeps the jitter both paths share out of the
/// difference (a difference of two percentiles does not: it once put p99 below p50).
pub fn paired_added_us(direct: &[(u64, i64)], via: &[(u64, i64)], hops: i64) -> Vec<i64> {
    let d: std::collections::HashMap<u64, i64> = direct.iter().copied().collect();
    via.iter()
        .filter_map(|(seq, v)| d.get(seq).map(|dl| (v - dl) / hops.max(1)))
        .collect()
}

/// Median of durations in milliseconds.
pub fn median_ms(values: &[f64]) -> f64 {
    quantile_ms(values, 0.5)
}

/// Nearest-rank quantile of milliseconds.
pub fn quantile_ms(values: &[f64], q: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let rank = (q * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

/// Everything received in one measuring window, over all streams of a collector.
#[derive(Debug, Default, Clone)]
pub struct Window {
    /// Capture-to-viewer latency of every frame, microseconds.
    pub lat_us: Vec<i64>,
    /// The same for keyframes only.
    pub key_lat_us: Vec<i64>,
    /// (sequence, capture-to-viewer µs) of every frame: to pair one stream's frames as
    /// two viewers received them.
    pub by_seq: Vec<(u64, i64)>,
    pub frames: u64,
    pub bytes: u64,
    /// Frames that said the source skipped frames for this viewer before them.
    pub skips: u64,
    pub skipped_frames: u64,
    /// Sequence numbers that did not follow the previous one on the same stream.
    pub seq_gaps: u64,
    /// Streams that ended or failed.
    pub errors: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let v: Vec<i64> = (1..=1000).collect();
        assert_eq!(percentile(&v, 0.5), Some(500));
        assert_eq!(percentile(&v, 0.99), Some(990));
        assert_eq!(percentile(&v, 0.999), Some(999));
        assert_eq!(percentile(&v, 1.0), Some(1000));
        assert_eq!(percentile(&[], 0.5), None);
        assert_eq!(median_ms(&[3.0, 1.0, 2.0]), 2.0);
    }

    #[test]
    fn added_latency_pairs_frames_by_sequence() {
        // Shared jitter (frame 2 late on both paths) cancels; frame 4 reached only one.
        let direct = [(1, 1000), (2, 9000), (3, 1000), (4, 1000)];
        let via = [(2, 9400), (1, 1400), (3, 1600), (5, 1000)];
        let mut added = paired_added_us(&direct, &via, 2);
        added.sort_unstable();
        assert_eq!(added, [200, 200, 300]);
    }
}
