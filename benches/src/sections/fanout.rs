//! Fan-out: one camera to 1, 10 and 50 viewers (each its own node and QUIC connection):
//! the serving node's CPU per viewer and the viewers' latency.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::Ctx;
use crate::procstat;
use crate::report::Figure;
use crate::server::{ServeOpts, ServerProc};
use crate::stats::Latency;
use crate::synth::SynthSpec;
use crate::viewer::{spawn_reader, Collector, Open, Viewer};

const S: &str = "fan-out";

#[derive(Debug, Clone, Serialize)]
struct Step {
    viewers: usize,
    server_cores: f64,
    /// Serving-node CPU above the no-viewer baseline, per viewer, ms per second.
    cpu_ms_per_s_per_viewer: f64,
    viewer_cores: f64,
    other_cores: f64,
    udp_drops: u64,
    latency: Latency,
    keyframe_latency: Latency,
    skips: u64,
    errors: u64,
    gbit_s: f64,
}

pub async fn run(ctx: &mut Ctx) -> anyhow::Result<()> {
    let mut srv = ServerProc::start(ServeOpts::new(&["fan"])).await?;
    let cam = vec!["fan".to_string()];
    srv.add(&cam, SynthSpec::standard()).await?;
    let window = ctx.secs(6, 20);
    tokio::time::sleep(Duration::from_secs(2)).await;
    // The node with its camera and nobody watching.
    let s0 = srv.stats().await?;
    tokio::time::sleep(window).await;
    let s1 = srv.stats().await?;
    let idle_cores = (s1.cpu_s - s0.cpu_s) / window.as_secs_f64();

    let col = Arc::new(Collector::default());
    let cancel = CancellationToken::new();
    let mut viewers = Vec::new();
    let mut readers = Vec::new();
    let mut steps = Vec::new();
    for target in [1usize, 10, 50] {
        let new = futures::future::try_join_all((viewers.len()..target).map(|_| Viewer::spawn())).await?;
        for v in new {
            let peer = v.connect(&srv.addrs).await?;
            let sub = v.subscribe_retry(peer, &cam[0]).await?;
            readers.push(spawn_reader(sub, col.clone(), Open::Decrypt, cancel.clone()));
            viewers.push(v);
        }
        tokio::time::sleep(ctx.secs(2, 4)).await;
        col.take();
        let s0 = srv.stats().await?;
        let meter = procstat::BusyMeter::start();
        let drops0 = procstat::udp_rcvbuf_errors();
        tokio::time::sleep(window).await;
        let mut w = col.take();
        let (machine_cores, viewer_cores) = meter.cores();
        let s1 = srv.stats().await?;
        let secs = window.as_secs_f64();
        let server_cores = (s1.cpu_s - s0.cpu_s) / secs;
        let step = Step {
            viewers: target,
            server_cores,
            cpu_ms_per_s_per_viewer: (server_cores - idle_cores) / target as f64 * 1000.0,
            viewer_cores,
            other_cores: (machine_cores - viewer_cores - server_cores).max(0.0),
            udp_drops: procstat::udp_rcvbuf_errors().saturating_sub(drops0),
            latency: Latency::from_us(&mut w.lat_us),
            keyframe_latency: Latency::from_us(&mut w.key_lat_us),
            skips: w.skips + w.seq_gaps,
            errors: w.errors,
            gbit_s: w.bytes as f64 * 8.0 / 1e9 / secs,
        };
        eprintln!(
            "  fan-out: {:>2} viewers  server {:.3} cores ({:.2} ms/s per viewer)  p50 {:.2} ms  p99 {:.2} ms  skips {}",
            step.viewers,
            step.server_cores,
            step.cpu_ms_per_s_per_viewer,
            step.latency.p50_ms,
            step.latency.p99_ms,
            step.skips
        );
        steps.push(step);
    }
    cancel.cancel();
    for r in readers {
        let _ = r.await;
    }
    drop(viewers);
    srv.quit().await?;

    let one = steps.first().map_or(f64::NAN, |s| s.cpu_ms_per_s_per_viewer);
    for s in &steps {
        ctx.push(
            Figure::new(
                S,
                &format!("1 camera → {} viewers: server CPU per viewer", s.viewers),
                s.cpu_ms_per_s_per_viewer,
                "ms/s",
            )
            .baseline("per viewer at 1 viewer", one)
            .note(format!(
                "ms of CPU per second per viewer (10 ms/s = 1% of a core); server {:.3} cores in all ({:.3} with no viewer), {:.3} Gbit/s out; viewers {:.2} cores; other processes {:.2} cores",
                s.server_cores, idle_cores, s.gbit_s, s.viewer_cores, s.other_cores
            )),
        );
        ctx.push(
            Figure::new(
                S,
                &format!("1 camera → {} viewers: latency p50", s.viewers),
                s.latency.p50_ms,
                "ms",
            )
            .note(format!(
                "keyframes p50 {:.2} ms, max {:.2} ms; {} skips, {} broken streams, {} UDP datagrams dropped by full socket buffers",
                s.keyframe_latency.p50_ms, s.keyframe_latency.max_ms, s.skips, s.errors, s.udp_drops
            )),
        );
        ctx.push(
            Figure::new(
                S,
                &format!("1 camera → {} viewers: latency p99", s.viewers),
                s.latency.p99_ms,
                "ms",
            )
            .target(
                "p99 < 5 ms (direct)",
                s.latency.p99_ms < 5.0 && s.skips == 0 && s.errors == 0,
            ),
        );
    }
    ctx.raw(
        "fanout",
        &serde_json::json!({ "idle_server_cores": idle_cores, "steps": steps }),
    );
    Ok(())
}
