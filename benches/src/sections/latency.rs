//! Capture-to-viewer latency, direct: one 4 Mbit/s camera, one viewer, over QUIC on
//! 127.0.0.1. Forwarding hops are reported as n/a until forwarding exists.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::Ctx;
use crate::report::Figure;
use crate::server::{ServeOpts, ServerProc};
use crate::stats::Latency;
use crate::synth::SynthSpec;
use crate::viewer::{spawn_reader, Collector, Open, Viewer};

const S: &str = "latency";

pub async fn run(ctx: &mut Ctx) -> anyhow::Result<()> {
    let mut srv = ServerProc::start(ServeOpts::new(&["lat0"])).await?;
    let cam = vec!["lat0".to_string()];
    srv.add(&cam, SynthSpec::standard()).await?;
    let viewer = Viewer::spawn().await?;
    let peer = viewer.connect(&srv.addrs).await?;
    let sub = viewer.subscribe_retry(peer, &cam[0]).await?;
    let col = Arc::new(Collector::default());
    let cancel = CancellationToken::new();
    let reader = spawn_reader(sub, col.clone(), Open::Decrypt, cancel.clone());
    tokio::time::sleep(ctx.secs(3, 5)).await;
    col.take();
    let s0 = srv.stats().await?;
    let drops0 = crate::procstat::udp_rcvbuf_errors();
    let window = ctx.secs(30, 120);
    tokio::time::sleep(window).await;
    let mut w = col.take();
    let s1 = srv.stats().await?;
    let udp_drops = crate::procstat::udp_rcvbuf_errors().saturating_sub(drops0);
    cancel.cancel();
    let _ = reader.await;
    drop(viewer);
    srv.quit().await?;

    let lat = Latency::from_us(&mut w.lat_us);
    let key = Latency::from_us(&mut w.key_lat_us);
    let q = ctx.base.quinn_latency;
    let base = |f: Figure, v: Option<f64>| match v {
        Some(b) => f.baseline("raw quinn, same frames", b),
        None => f,
    };
    let cpu_ms_s = (s1.cpu_s - s0.cpu_s) / window.as_secs_f64() * 1000.0;
    ctx.push(base(
        Figure::new(S, "capture→viewer p50, direct", lat.p50_ms, "ms").note(format!(
            "n = {} frames over {} s; keyframes (150 KB) p50 {:.2} ms, max {:.2} ms; serving node {:.1} ms CPU per s; {} UDP drops",
            lat.n,
            window.as_secs(),
            key.p50_ms,
            key.max_ms,
            cpu_ms_s,
            udp_drops
        )),
        q.map(|l| l.p50_ms),
    ));
    ctx.push(base(
        Figure::new(S, "capture→viewer p99, direct", lat.p99_ms, "ms").target("p99 < 5 ms", lat.p99_ms < 5.0),
        q.map(|l| l.p99_ms),
    ));
    ctx.push(base(
        Figure::new(S, "capture→viewer p99.9, direct", lat.p999_ms, "ms"),
        q.map(|l| l.p999_ms),
    ));
    ctx.push(
        Figure::new(
            S,
            "frames lost or skipped, direct",
            (w.skips + w.seq_gaps + w.errors) as f64,
            "",
        )
        .target("0 (live, nothing skipped)", w.skips + w.seq_gaps + w.errors == 0),
    );
    for hops in ["1 forwarding hop", "2 forwarding hops"] {
        ctx.push(
            Figure::na(S, &format!("added latency, {hops}, p50"), "no forwarding yet").target_text("< 0.5 ms per hop"),
        );
        ctx.push(
            Figure::na(S, &format!("added latency, {hops}, p99"), "no forwarding yet").target_text("< 2 ms per hop"),
        );
    }
    ctx.raw(
        "latency_direct",
        &serde_json::json!({ "all": lat, "keyframes": key, "frames": w.frames, "skips": w.skips,
            "seq_gaps": w.seq_gaps, "server_cpu_ms_per_s": cpu_ms_s }),
    );
    Ok(())
}
