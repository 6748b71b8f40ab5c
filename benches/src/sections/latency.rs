//! Capture-to-viewer latency: one 4 Mbit/s camera over QUIC on 127.0.0.1, first direct
//! to one viewer, then in one window three viewers at once: direct, through one
//! forwarder (camera → F1 → viewer) and through two (camera → F1 → F2 → viewer). The
//! forwarders are real nodes with only the `forward` right (ciphertext, no keys); the
//! viewers decrypt every frame. The latency a hop adds is taken frame by frame: each
//! frame's latency at the forwarded viewer minus the same frame's (same sequence number)
//! at the direct viewer, divided by the hops; the percentiles are of those differences.

use std::sync::Arc;

use camesh_node::auth::Rights;
use camesh_proto::pb;
use tokio_util::sync::CancellationToken;

use super::Ctx;
use crate::report::Figure;
use crate::server::{ServeOpts, ServerProc};
use crate::stats::{paired_added_us, Latency};
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
    hops(ctx).await?;
    ctx.raw(
        "latency_direct",
        &serde_json::json!({ "all": lat, "keyframes": key, "frames": w.frames, "skips": w.skips,
            "seq_gaps": w.seq_gaps, "server_cpu_ms_per_s": cpu_ms_s }),
    );
    Ok(())
}

/// Direct, one hop and two hops side by side in one window.
async fn hops(ctx: &mut Ctx) -> anyhow::Result<()> {
    let mut srv = ServerProc::start(ServeOpts::new(&["hop0"])).await?;
    let cam = "hop0".to_string();
    srv.add(std::slice::from_ref(&cam), SynthSpec::standard()).await?;
    let f1 = Viewer::spawn_with(Rights::FORWARD).await?;
    let f2 = Viewer::spawn_with(Rights::FORWARD).await?;
    let cam_peer = f1.connect(&srv.addrs).await?;
    f1.node.forward(&cam, cam_peer, pb::Profile::Main).await?;
    f2.connect(&f1.node.dial_addrs().await?).await?;
    f2.node.forward(&cam, f1.node.peer_id(), pb::Profile::Main).await?;
    let direct = Viewer::spawn().await?;
    let one = Viewer::spawn().await?;
    let two = Viewer::spawn().await?;
    direct.connect(&srv.addrs).await?;
    for v in [&one, &two] {
        // Keys come from the camera's node: the viewers behind forwarders reach it too.
        v.connect(&srv.addrs).await?;
    }
    one.connect(&f1.node.dial_addrs().await?).await?;
    two.connect(&f2.node.dial_addrs().await?).await?;
    let subs = [
        direct.subscribe_retry(cam_peer, &cam).await?,
        one.subscribe_via(f1.node.peer_id(), &cam).await?,
        two.subscribe_via(f2.node.peer_id(), &cam).await?,
    ];
    let cancel = CancellationToken::new();
    let cols: Vec<Arc<Collector>> = (0..3).map(|_| Arc::new(Collector::default())).collect();
    let readers: Vec<_> = subs
        .into_iter()
        .zip(&cols)
        .map(|(sub, col)| spawn_reader(sub, col.clone(), Open::Decrypt, cancel.clone()))
        .collect();
    tokio::time::sleep(ctx.secs(3, 5)).await;
    for c in &cols {
        c.take();
    }
    let s0 = srv.stats().await?;
    let window = ctx.secs(20, 60);
    tokio::time::sleep(window).await;
    let s1 = srv.stats().await?;
    let mut w: Vec<_> = cols.iter().map(|c| c.take()).collect();
    cancel.cancel();
    for r in readers {
        let _ = r.await;
    }
    drop((direct, one, two, f2, f1));
    srv.quit().await?;

    let lat: Vec<Latency> = w.iter_mut().map(|w| Latency::from_us(&mut w.lat_us)).collect();
    let lost: Vec<u64> = w.iter().map(|w| w.skips + w.seq_gaps + w.errors).collect();
    let camera_streams = s1.streams_served;
    let camera_mbit = (s1.sent_bytes - s0.sent_bytes) as f64 * 8.0 / window.as_secs_f64() / 1e6;
    for (i, hops) in [(1usize, "1 forwarding hop"), (2, "2 forwarding hops")] {
        let added = Latency::from_us(&mut paired_added_us(&w[0].by_seq, &w[i].by_seq, i as i64));
        let (p50, p99) = (added.p50_ms, added.p99_ms);
        let note = format!(
            "per hop, frame by frame ({} frames paired by sequence); viewer behind {hops} p50 {:.2} / p99 {:.2} ms vs direct p50 {:.2} / p99 {:.2} ms in the same window ({} s); frames lost or skipped {}",
            added.n,
            lat[i].p50_ms,
            lat[i].p99_ms,
            lat[0].p50_ms,
            lat[0].p99_ms,
            window.as_secs(),
            lost[i]
        );
        ctx.push(
            Figure::new(S, &format!("added latency, {hops}, p50"), p50, "ms")
                .target("< 0.5 ms per hop", p50 < 0.5)
                .note(note),
        );
        ctx.push(Figure::new(S, &format!("added latency, {hops}, p99"), p99, "ms").target("< 2 ms per hop", p99 < 2.0));
    }
    ctx.push(
        Figure::new(
            S,
            "camera streams with 3 viewers (1 direct, 2 behind forwarders)",
            camera_streams as f64,
            "",
        )
        .target("2 (the direct viewer and the first forwarder)", camera_streams == 2)
        .note(format!("camera upload {camera_mbit:.2} Mbit/s for a 4 Mbit/s camera")),
    );
    ctx.raw(
        "latency_forwarding",
        &serde_json::json!({ "direct": lat[0], "one_hop": lat[1], "two_hops": lat[2], "lost": lost,
            "camera_streams": camera_streams, "camera_mbit_s": camera_mbit }),
    );
    Ok(())
}
