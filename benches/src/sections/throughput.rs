//! Throughput: how many 4 Mbit/s, 30 fps streams one node serves before the p99
//! capture-to-viewer latency passes 50 ms or frames are skipped, and what a Gbit/s costs
//! the serving node in CPU seconds. The load doubles until a step fails, then bisects.
//!
//! Streams go to 8 viewer nodes in the harness process (each stream its own QUIC stream,
//! 8 connections); the serving node is its own process, so its CPU time is its own. Both
//! share the machine's cores, as the raw quinn baseline's sender and receiver do.

use std::sync::Arc;
use std::time::Duration;

use camesh_node::PeerId;
use serde::Serialize;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Ctx;
use crate::procstat;
use crate::quic_baseline::{QuinnProc, Suite};
use crate::report::Figure;
use crate::server::{ServeOpts, ServerProc};
use crate::stats::Latency;
use crate::synth::SynthSpec;
use crate::viewer::{spawn_reader, Collector, Open, Viewer};

const S: &str = "throughput";
const VIEWERS: usize = 8;
const P99_LIMIT_MS: f64 = 50.0;
/// The one place this section departs from the limits a user gets (benches/src/server.rs).
const RAISED: &str = "limits raised for this section only: max_streams_per_peer 8 -> 1024 and \
     max_streams_total 256 -> 65536, because 8 viewer nodes carry up to 1024 streams to find \
     where the node runs out of CPU; with the defaults a node serves at most 256 streams, 8 per peer";

#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub streams: usize,
    pub window_s: f64,
    pub gbit_s: f64,
    pub frames: u64,
    pub expected_frames: f64,
    pub latency: Latency,
    pub keyframe_latency: Latency,
    pub skips: u64,
    pub seq_gaps: u64,
    pub errors: u64,
    pub queue_skips: u64,
    pub source_skipped: u64,
    pub source_late_5ms: u64,
    pub source_max_late_ms: f64,
    /// CPU cores the serving node used on average.
    pub server_cores: f64,
    pub server_cpu_s_per_gbit: f64,
    /// CPU cores the harness (all viewers) used.
    pub viewer_cores: f64,
    /// CPU cores other processes on the machine used meanwhile (noise).
    pub other_cores: f64,
    /// UDP datagrams dropped by full socket receive buffers meanwhile (loss on loopback).
    pub udp_drops: u64,
    pub server_rss_mb: f64,
    pub pass: bool,
    pub why: String,
}

struct Live {
    id: String,
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

struct Ramp {
    srv: ServerProc,
    viewers: Vec<Arc<Viewer>>,
    peer: PeerId,
    col: Arc<Collector>,
    live: Vec<Live>,
    /// Every id the serving node's certificate binds; the first `live.len()` are running.
    ids: Vec<String>,
    spec: SynthSpec,
}

impl Ramp {
    async fn set_streams(&mut self, n: usize) -> anyhow::Result<()> {
        if n > self.live.len() {
            // A stopped id starts again as a fresh camera (add_hub replaces its hub).
            let ids: Vec<String> = self.ids[self.live.len()..n].to_vec();
            self.srv.add(&ids, self.spec).await?;
            let base = self.live.len();
            let subs = futures::future::try_join_all(ids.iter().enumerate().map(|(i, id)| {
                let v = self.viewers[(base + i) % self.viewers.len()].clone();
                let peer = self.peer;
                async move { v.subscribe_retry(peer, id).await }
            }))
            .await?;
            for (id, sub) in ids.into_iter().zip(subs) {
                let cancel = CancellationToken::new();
                let task = spawn_reader(sub, self.col.clone(), Open::Sealed, cancel.clone());
                self.live.push(Live { id, cancel, task });
            }
        } else {
            let gone: Vec<Live> = self.live.drain(n..).collect();
            let ids: Vec<String> = gone.iter().map(|l| l.id.clone()).collect();
            for l in gone {
                l.cancel.cancel();
                let _ = l.task.await;
            }
            self.srv.stop(&ids).await?;
        }
        Ok(())
    }

    /// [`Self::measure`], repeated (up to twice) when it failed while other processes
    /// used more than a quarter of a core: a loaded machine is not the node's limit.
    async fn step(&mut self, n: usize, warmup: Duration, window: Duration) -> anyhow::Result<Step> {
        self.set_streams(n).await?;
        tokio::time::sleep(warmup).await;
        let mut st = self.measure(n, window).await?;
        for _ in 0..2 {
            if st.pass || st.other_cores <= 0.25 {
                break;
            }
            eprintln!(
                "  throughput: {n} streams failed while other processes used {:.2} cores; measuring again",
                st.other_cores
            );
            let again = self.measure(n, window).await?;
            if again.pass || again.other_cores < st.other_cores {
                st = again;
            }
        }
        Ok(st)
    }

    async fn measure(&mut self, n: usize, window: Duration) -> anyhow::Result<Step> {
        let s0 = self.srv.stats().await?;
        let meter = procstat::BusyMeter::start();
        let drops0 = procstat::udp_rcvbuf_errors();
        self.col.take();
        let t0 = Instant::now();
        tokio::time::sleep(window).await;
        let mut w = self.col.take();
        let secs = t0.elapsed().as_secs_f64();
        let (machine_cores, viewer_cores) = meter.cores();
        let udp_drops = procstat::udp_rcvbuf_errors().saturating_sub(drops0);
        let s1 = self.srv.stats().await?;
        let latency = Latency::from_us(&mut w.lat_us);
        let keyframe_latency = Latency::from_us(&mut w.key_lat_us);
        let gbit = w.bytes as f64 * 8.0 / 1e9;
        let server_cpu = s1.cpu_s - s0.cpu_s;
        let expected = n as f64 * f64::from(self.spec.fps) * secs;
        let mut step = Step {
            streams: n,
            window_s: secs,
            gbit_s: gbit / secs,
            frames: w.frames,
            expected_frames: expected,
            latency,
            keyframe_latency,
            skips: w.skips,
            seq_gaps: w.seq_gaps,
            errors: w.errors,
            queue_skips: s1.queue_skips - s0.queue_skips,
            source_skipped: s1.source_skipped - s0.source_skipped,
            source_late_5ms: s1.late_5ms - s0.late_5ms,
            source_max_late_ms: s1.max_late_us as f64 / 1000.0,
            server_cores: server_cpu / secs,
            server_cpu_s_per_gbit: server_cpu / gbit.max(1e-9),
            viewer_cores,
            other_cores: (machine_cores - viewer_cores - server_cpu / secs).max(0.0),
            udp_drops,
            server_rss_mb: s1.rss_bytes as f64 / 1e6,
            pass: false,
            why: String::new(),
        };
        let mut why = Vec::new();
        if latency.p99_ms.is_nan() || latency.p99_ms >= P99_LIMIT_MS {
            why.push(format!("p99 {:.1} ms", latency.p99_ms));
        }
        if step.skips + step.seq_gaps + step.queue_skips > 0 {
            why.push(format!("{} skips", step.skips + step.seq_gaps + step.queue_skips));
        }
        if step.errors > 0 {
            why.push(format!("{} streams broke", step.errors));
        }
        if step.source_skipped > 0 {
            why.push(format!("sources fell {} frames behind", step.source_skipped));
        }
        if (w.frames as f64) < 0.97 * expected {
            why.push(format!("{:.0}% of frames arrived", 100.0 * w.frames as f64 / expected));
        }
        if !why.is_empty() && step.udp_drops > 0 {
            why.push(format!(
                "{} UDP datagrams dropped by full socket buffers",
                step.udp_drops
            ));
        }
        if !why.is_empty() && step.other_cores > 0.2 {
            why.push(format!("other processes used {:.2} cores meanwhile", step.other_cores));
        }
        step.pass = why.is_empty();
        step.why = why.join(", ");
        Ok(step)
    }
}

pub async fn run(ctx: &mut Ctx) -> anyhow::Result<()> {
    let max = ctx.fixed_streams.map_or(ctx.pick(512, 1024), |f| f.0);
    let ids: Vec<String> = (1..=max).map(|i| format!("t{i}")).collect();
    let srv = ServerProc::start(ServeOpts::with_ids(ids.clone())).await?;
    let mut viewers = Vec::new();
    let mut peer = srv.peer;
    for _ in 0..VIEWERS {
        let v = Viewer::spawn().await?;
        peer = v.connect(&srv.addrs).await?;
        viewers.push(Arc::new(v));
    }
    let mut ramp = Ramp {
        srv,
        viewers,
        peer,
        col: Arc::new(Collector::default()),
        live: Vec::new(),
        ids,
        spec: SynthSpec::standard(),
    };
    let warmup = ctx.secs(2, 4);
    let window = ctx.fixed_streams.map_or(ctx.secs(5, 15), |f| Duration::from_secs(f.1));
    let bisections = if ctx.fixed_streams.is_some() { 0 } else { ctx.pick(2, 4) };
    let mut steps: Vec<Step> = Vec::new();
    let mut n = ctx.fixed_streams.map_or(16, |f| f.0);
    let (mut lo, mut hi) = (0usize, None::<usize>);
    loop {
        let st = ramp.step(n, warmup, window).await?;
        eprintln!(
            "  throughput: {:>4} streams  {:.2} Gbit/s  p99 {:>6.1} ms  server {:.2} cores  viewers {:.2}  others {:.2}  udp drops {}  {}",
            st.streams,
            st.gbit_s,
            st.latency.p99_ms,
            st.server_cores,
            st.viewer_cores,
            st.other_cores,
            st.udp_drops,
            if st.pass { "ok".to_string() } else { format!("FAIL: {}", st.why) }
        );
        let pass = st.pass;
        steps.push(st);
        if pass {
            lo = n;
            if n >= max {
                break;
            }
            n = (n * 2).min(max);
        } else {
            hi = Some(n);
            break;
        }
    }
    for _ in 0..bisections {
        let Some(h) = hi else { break };
        let mid = (lo + h) / 2;
        if mid <= lo || h - lo <= (lo / 8).max(1) {
            break;
        }
        let st = ramp.step(mid, warmup, window).await?;
        eprintln!(
            "  throughput: {:>4} streams  {:.2} Gbit/s  p99 {:>6.1} ms  server {:.2} cores  viewers {:.2}  others {:.2}  udp drops {}  {}",
            st.streams,
            st.gbit_s,
            st.latency.p99_ms,
            st.server_cores,
            st.viewer_cores,
            st.other_cores,
            st.udp_drops,
            if st.pass { "ok".to_string() } else { format!("FAIL: {}", st.why) }
        );
        if st.pass {
            lo = mid;
        } else {
            hi = Some(mid);
        }
        steps.push(st);
    }
    ramp.set_streams(0).await?;
    let Ramp { srv, viewers, .. } = ramp;
    drop(viewers);
    srv.quit().await?;

    // The same load on plain quinn (same cipher as camesh's QUIC, same number of
    // connections): how much of the cost is the workload's shape (many paced streams,
    // app-limited) rather than camesh and libp2p.
    let same_n = steps
        .iter()
        .filter(|s| s.pass)
        .map(|s| s.streams)
        .max()
        .unwrap_or_else(|| steps.first().map_or(16, |s| s.streams));
    let same_load = match QuinnProc::start().await {
        Ok(mut q) => {
            let r = q
                .paced_many(Suite::Camesh, VIEWERS, same_n, SynthSpec::standard(), warmup, window)
                .await;
            let _ = q.quit().await;
            r.ok()
        }
        Err(_) => None,
    };

    let best = steps.iter().filter(|s| s.pass).max_by_key(|s| s.streams).cloned();
    let fail = hi.and_then(|h| steps.iter().find(|s| s.streams == h)).cloned();
    let limit = match &fail {
        Some(f) => format!(
            "at {} streams: {} (server {:.2} cores, viewers {:.2} cores, of {} on the machine)",
            f.streams,
            f.why,
            f.server_cores,
            f.viewer_cores,
            procstat::machine().cpus
        ),
        None => format!("no step failed up to {max} streams"),
    };
    let base_gbit = ctx.base.quinn_gbit_s;
    let base_core = ctx.base.quinn_gbit_per_core;
    match best {
        Some(b) => {
            ctx.push(
                Figure::new(
                    S,
                    "4 Mbit/s streams served (p99 < 50 ms, no skips)",
                    b.streams as f64,
                    "",
                )
                .note(format!("limit {limit}; {RAISED}")),
            );
            let mut f = Figure::new(S, "served at that load", b.gbit_s, "Gbit/s").note(format!(
                "p50 {:.2} ms, p99 {:.2} ms; server {:.2} cores, viewers {:.2} cores, server RSS {:.0} MB, {} UDP drops",
                b.latency.p50_ms, b.latency.p99_ms, b.server_cores, b.viewer_cores, b.server_rss_mb, b.udp_drops
            ));
            if let Some(q) = base_gbit {
                f = f.baseline("raw quinn, 1 stream, bulk", q);
            }
            ctx.push(f);
            let mut f = Figure::new(S, "serving node CPU per Gbit", b.server_cpu_s_per_gbit, "CPU s");
            if let Some(q) = &same_load {
                f = f.baseline("raw quinn, same load", q.sender_cpu_s_per_gbit).note(format!(
                    "raw quinn sending the same {} paced 4 Mbit/s streams over {} connections (AES-128-GCM, as camesh's QUIC): {:.2} CPU s per Gbit, p99 {:.2} ms",
                    q.streams, q.connections, q.sender_cpu_s_per_gbit, q.latency.p99_ms
                ));
            }
            ctx.push(f);
            let per_core = 1.0 / b.server_cpu_s_per_gbit.max(1e-9);
            let mut f = Figure::new(S, "Gbit/s per core of the serving node", per_core, "Gbit/s")
                .target("≥ 1 Gbit/s per core", per_core >= 1.0);
            if let Some(q) = base_core {
                f = f.baseline("raw quinn sender per core", q);
            }
            ctx.push(f);
            if let Some(q) = base_core {
                let pct = 100.0 * per_core / q;
                ctx.push(
                    Figure::new(S, "per-core throughput vs raw quinn", pct, "%")
                        .target("≥ 50% of raw quinn", pct >= 50.0)
                        .note("Gbit/s per CPU second of the serving node over Gbit/s per CPU second of a plain quinn sender"),
                );
            }
            if let Some(q) = &same_load {
                let pct = 100.0 * q.sender_cpu_s_per_gbit / b.server_cpu_s_per_gbit.max(1e-9);
                ctx.push(
                    Figure::new(S, "per-core throughput vs raw quinn at the same load", pct, "%").note(
                        "the same paced streams on plain quinn: separates the workload's shape (many app-limited \
                         30 fps streams instead of one bulk stream) from what camesh adds (sealing each frame, \
                         libp2p's stream layer, the fan-out); the DESIGN.md target is the row above",
                    ),
                );
            }
        }
        None => {
            ctx.push(
                Figure::new(S, "4 Mbit/s streams served (p99 < 50 ms, no skips)", 0.0, "")
                    .note(format!("limit {limit}")),
            );
        }
    }
    ctx.raw("throughput_steps", &steps);
    ctx.raw("throughput_raw_quinn_same_load", &same_load);
    Ok(())
}
