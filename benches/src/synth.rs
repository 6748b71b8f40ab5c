//! Synthetic cameras: H.264-shaped access units of realistic sizes, paced in real time.
//!
//! A 4 Mbit/s, 30 fps security camera with a 2 s GOP sends a ~150 KB IDR every 60
//! frames and ~14 KB P-frames in between (the "~13 KB", scaled so the stream is
//! 4 Mbit/s). Payloads are AVCC like the real ingest path produces: the keyframe carries
//! SPS and PPS in front of its IDR slice.
//!
//! The payloads of one GOP are built once per stream shape and shared by every synthetic
//! camera ([`gop_pool`]): publishing a frame clones a `Bytes`, so the serving node's CPU
//! time is the node's work, not the generator's. Memory stays honest: the hub seals every
//! frame into a fresh ciphertext buffer, and that is what the GOP cache and the queues
//! hold, per camera.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use camesh_node::media::{AccessUnit, CodecParams};
use camesh_node::stream::hub::Hub;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Shape of a synthetic stream.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SynthSpec {
    pub fps: u32,
    /// Frames from one IDR to the next.
    pub gop_frames: u32,
    pub idr_bytes: usize,
    /// Mean P-frame size; each P-frame is within ±25% of it.
    pub p_bytes: usize,
}

impl SynthSpec {
    /// A 30 fps camera at `bitrate` bit/s with a 150 KB IDR every `gop_s` seconds.
    pub fn cctv(gop_s: u32, bitrate: u64) -> Self {
        let fps = 30;
        let gop_frames = (fps * gop_s.max(1)).max(2);
        let idr_bytes = 150_000;
        let gop_bytes = bitrate / 8 * u64::from(gop_s.max(1));
        let p_bytes = (gop_bytes.saturating_sub(idr_bytes as u64) / u64::from(gop_frames - 1)).max(200) as usize;
        SynthSpec {
            fps,
            gop_frames,
            idr_bytes,
            p_bytes,
        }
    }

    /// The throughput stream: 4 Mbit/s, 30 fps, 2 s GOP.
    pub fn standard() -> Self {
        Self::cctv(2, 4_000_000)
    }

    pub fn frame_period(&self) -> Duration {
        Duration::from_nanos(1_000_000_000 / u64::from(self.fps.max(1)))
    }

    /// Payload bit rate this spec produces on average.
    pub fn bitrate(&self) -> f64 {
        let gop = self.idr_bytes as f64 + (self.gop_frames - 1) as f64 * self.p_bytes as f64;
        gop * 8.0 * f64::from(self.fps) / f64::from(self.gop_frames)
    }

    /// Frame `n` (counting from an IDR at 0) is an IDR.
    pub fn is_key(&self, n: u64) -> bool {
        n.is_multiple_of(u64::from(self.gop_frames))
    }

    /// Payload size of frame `n` (`n` counts from an IDR at 0).
    pub fn size_of(&self, n: u64) -> usize {
        if self.is_key(n) {
            return self.idr_bytes;
        }
        // A cheap hash of n gives a spread of ±25% around the mean.
        let h = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40;
        let u = (h % 1001) as f64 / 1000.0;
        (self.p_bytes as f64 * (0.75 + 0.5 * u)) as usize
    }
}

/// Random bytes frames are cut from.
fn template() -> &'static [u8] {
    static T: OnceLock<Vec<u8>> = OnceLock::new();
    T.get_or_init(|| {
        let mut rng = rand::rngs::StdRng::seed_from_u64(0xca3e5);
        (0..1usize << 20).map(|_| rng.gen::<u8>()).collect()
    })
}

/// `len` random bytes (at most 1 MiB) in one buffer.
pub fn random_bytes(len: usize) -> Bytes {
    let t = template();
    Bytes::copy_from_slice(&t[..len.min(t.len())])
}

/// Codec parameters of a real 1280x720 clip (the synthetic frames are not decodable,
/// but the stream announces and accepts like a real one).
pub fn codec_params() -> CodecParams {
    static P: OnceLock<CodecParams> = OnceLock::new();
    P.get_or_init(|| {
        let opts = camesh_node::media::source::SourceOptions::default();
        camesh_node::media::source::load_clip(crate::fixture("cam-1280x720-30fps-gop1s.h264"), &opts)
            .map(|c| CodecParams {
                fps_num: 30,
                fps_den: 1,
                ..c.params
            })
            .unwrap_or_else(|_| CodecParams {
                sps: Bytes::from_static(&[0x67, 0x64, 0x00, 0x1f, 0xac, 0xd9, 0x40, 0x50]),
                pps: Bytes::from_static(&[0x68, 0xeb, 0xe3, 0xcb, 0x22, 0xc0]),
                width: 1280,
                height: 720,
                profile_idc: 100,
                level_idc: 31,
                fps_num: 30,
                fps_den: 1,
            })
    })
    .clone()
}

/// The AVCC payload of frame `n`: `[len][SPS][len][PPS][len][IDR…]` or `[len][P…]`.
pub fn payload(spec: &SynthSpec, params: &CodecParams, n: u64) -> Bytes {
    let size = spec.size_of(n);
    let key = spec.is_key(n);
    let t = template();
    let mut b = BytesMut::with_capacity(size + 32);
    if key {
        for ps in [&params.sps, &params.pps] {
            b.put_u32(ps.len() as u32);
            b.put_slice(ps);
        }
    }
    let slice_len = size.saturating_sub(b.len() + 4).max(2);
    b.put_u32(slice_len as u32);
    b.put_u8(if key { 0x65 } else { 0x41 });
    // first_mb_in_slice = 0 (ue "1"), then slice data.
    b.put_u8(0x88);
    let off = (n as usize * 4099) % (t.len() / 2);
    let rest = slice_len - 2;
    let mut left = rest;
    while left > 0 {
        let take = left.min(t.len() - off);
        b.put_slice(&t[off..off + take]);
        left -= take;
    }
    b.freeze()
}

/// The payloads of one GOP of `spec` (index = position in the GOP), built once.
pub fn gop_pool(spec: &SynthSpec) -> Arc<Vec<Bytes>> {
    type Pools = std::sync::Mutex<Vec<(SynthSpec, Arc<Vec<Bytes>>)>>;
    static POOLS: OnceLock<Pools> = OnceLock::new();
    let pools = POOLS.get_or_init(Default::default);
    let mut pools = pools.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, p)) = pools.iter().find(|(s, _)| s == spec) {
        return p.clone();
    }
    let params = codec_params();
    let pool: Arc<Vec<Bytes>> = Arc::new(
        (0..u64::from(spec.gop_frames))
            .map(|n| payload(spec, &params, n))
            .collect(),
    );
    pools.push((*spec, pool.clone()));
    pool
}

/// The access unit of frame `n` (90 kHz timestamps from 0), its payload from the pool.
pub fn access_unit_from(spec: &SynthSpec, pool: &[Bytes], n: u64) -> AccessUnit {
    let ts = n * 90_000 / u64::from(spec.fps.max(1));
    AccessUnit {
        data: pool[(n % pool.len() as u64) as usize].clone(),
        pts_90k: ts,
        dts_90k: ts,
        keyframe: spec.is_key(n),
    }
}

/// The access unit of frame `n` (90 kHz timestamps from 0), freshly built.
pub fn access_unit(spec: &SynthSpec, params: &CodecParams, n: u64) -> AccessUnit {
    let ts = n * 90_000 / u64::from(spec.fps.max(1));
    AccessUnit {
        data: payload(spec, params, n),
        pts_90k: ts,
        dts_90k: ts,
        keyframe: spec.is_key(n),
    }
}

/// What the pacers of a process did (shared by all synthetic cameras).
#[derive(Debug, Default)]
pub struct PacerCounters {
    pub published: AtomicU64,
    pub bytes: AtomicU64,
    /// Frames not sent because the pacer woke more than a frame period late (overload).
    pub skipped: AtomicU64,
    /// Frames published more than 5 ms after their due time.
    pub late_5ms: AtomicU64,
    pub max_late_us: AtomicU64,
}

/// Runs one synthetic camera into `hub` until `cancel`: frames at their due time, the
/// first at `phase`, the GOP starting `gop_offset` frames in.
pub async fn run_camera(
    hub: Arc<Hub>,
    spec: SynthSpec,
    phase: Duration,
    gop_offset: u64,
    counters: Arc<PacerCounters>,
    cancel: CancellationToken,
) {
    let params = codec_params();
    let pool = gop_pool(&spec);
    hub.set_params(params);
    let period = spec.frame_period();
    let start = Instant::now() + phase;
    let mut i: u64 = 0;
    loop {
        let due = start + period * u32::try_from(i).unwrap_or(u32::MAX);
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep_until(due) => {}
        }
        let late = Instant::now().saturating_duration_since(due);
        let behind = (late.as_nanos() / period.as_nanos().max(1)) as u64;
        if behind >= 1 {
            counters.skipped.fetch_add(behind, Ordering::Relaxed);
            i += behind;
        }
        let late_us = late.as_micros() as u64;
        if late_us > 5_000 {
            counters.late_5ms.fetch_add(1, Ordering::Relaxed);
        }
        counters.max_late_us.fetch_max(late_us, Ordering::Relaxed);
        let au = access_unit_from(&spec, &pool, i + gop_offset);
        counters.bytes.fetch_add(au.data.len() as u64, Ordering::Relaxed);
        hub.publish(au);
        counters.published.fetch_add(1, Ordering::Relaxed);
        i += 1;
    }
    hub.set_offline("synthetic camera stopped");
}

#[cfg(test)]
mod tests {
    use super::*;
    use camesh_node::media::h264::{avcc_nals, nal_type, NalType};

    #[test]
    fn standard_stream_is_4_mbit() {
        let s = SynthSpec::standard();
        assert_eq!(s.gop_frames, 60);
        assert!((s.bitrate() - 4e6).abs() < 4e4, "{}", s.bitrate());
        let measured: usize = (0..6000).map(|n| s.size_of(n)).sum();
        let bps = measured as f64 * 8.0 / 200.0;
        assert!((bps - 4e6).abs() < 1e5, "{bps}");
        let pool: usize = gop_pool(&s).iter().map(|b| b.len()).sum();
        let bps = pool as f64 * 8.0 / 2.0;
        assert!((bps - 4e6).abs() < 1.2e5, "{bps}");
    }

    #[test]
    fn payloads_are_avcc_with_parameter_sets_on_keyframes() {
        let s = SynthSpec::standard();
        let p = codec_params();
        let key = payload(&s, &p, 0);
        let types: Vec<_> = avcc_nals(&key).map(|n| nal_type(n.expect("valid avcc"))).collect();
        assert_eq!(types, vec![Some(NalType::SPS), Some(NalType::PPS), Some(NalType::IDR)]);
        assert!((key.len() as i64 - s.idr_bytes as i64).abs() < 64);
        let p1 = payload(&s, &p, 1);
        let types: Vec<_> = avcc_nals(&p1).map(|n| nal_type(n.expect("valid avcc"))).collect();
        assert_eq!(types, vec![Some(NalType::SLICE)]);
    }
}
