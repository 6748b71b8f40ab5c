//! Fan-out against a real peer: GStreamer's RTSP server (gst-rtsp-server, shared media,
//! RTP over RTSP/TCP) and camesh's serving node, the same 4 Mbit/s stream to the same
//! number of readers, in the same run (DESIGN.md: "fan-out cost per viewer ≤ GStreamer's
//! RTSP server ... measured in the same run").
//!
//! The stream is the harness's synthetic camera ([`SynthSpec::standard`]: 30 fps, 2 s
//! GOP, 150 KB IDR, 4 Mbit/s): camesh's serving process publishes it from the shared GOP
//! pool; GStreamer's process pushes the very same access units through appsrc →
//! rtph264pay (`benches/scripts/rtsp_peer.py`). Neither side encodes.
//!
//! Readers: camesh viewers are full nodes in the harness (QUIC, decrypting every frame);
//! GStreamer's readers are RTSP clients in the harness (DESCRIBE, SETUP interleaved,
//! PLAY, then read `$` frames). Only each server process's CPU is measured
//! (`/proc/<pid>/stat`).
//!
//! Cost per viewer: each side keeps one anchor reader for the whole section (so the
//! source, the packetiser or sealer, and whatever a server does for its first reader run
//! throughout); a step adds N readers, and the cost per viewer is
//! (CPU with anchor + N − CPU with the anchor alone) / N. Both sides are measured the same
//! way; the cost with no reader and with the anchor alone are reported beside it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::rtsp::{child_with_arg, pid_cpu_s, pid_switches, write_frames, GstPeer, RtspReader};
use super::Ctx;
use crate::procstat::{self, BusyMeter};
use crate::report::Figure;
use crate::server::{ServeOpts, ServerProc};
use crate::synth::{self, SynthSpec};
use crate::viewer::{spawn_reader, Collector, Open, Viewer};

const S: &str = "peers";
const STEPS: [usize; 2] = [10, 50];

/// One measuring window of one server.
#[derive(Debug, Clone, Copy, Default, Serialize)]
struct Point {
    readers: usize,
    server_cores: f64,
    /// Payload Mbit/s each reader received (RTP payload / camesh frame payload).
    mbit_per_reader: f64,
    other_cores: f64,
    /// Context switches of the server's threads per second (wake-ups).
    switches_per_s: f64,
    /// camesh only: skips and sequence gaps, broken streams.
    skips: u64,
    errors: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
struct Side {
    idle: Point,
    anchor: Point,
    steps: Vec<Point>,
}

impl Side {
    fn per_viewer_ms(&self, p: &Point) -> f64 {
        (p.server_cores - self.anchor.server_cores) / (p.readers - 1) as f64 * 1000.0
    }

    /// Context switches per second per added reader.
    fn per_viewer_switches(&self, p: &Point) -> f64 {
        (p.switches_per_s - self.anchor.switches_per_s) / (p.readers - 1) as f64
    }
}

/// Measures process `pid` over `window`: its cores, its context switches per second, and
/// other processes' cores (the harness and `pid` excluded).
async fn window(window: Duration, pid: u32) -> Point {
    let meter = BusyMeter::start();
    let (c0, w0) = (pid_cpu_s(pid), pid_switches(pid));
    tokio::time::sleep(window).await;
    let (c1, w1) = (pid_cpu_s(pid), pid_switches(pid));
    let (machine, harness) = meter.cores();
    let secs = window.as_secs_f64();
    let server_cores = (c1 - c0) / secs;
    Point {
        server_cores,
        other_cores: (machine - harness - server_cores).max(0.0),
        switches_per_s: w1.saturating_sub(w0) as f64 / secs,
        ..Point::default()
    }
}

async fn gstreamer(ctx: &Ctx, frames: &std::path::Path) -> anyhow::Result<Side> {
    let gst = GstPeer::start(frames).await?;
    let pid = gst.pid;
    let (win, warm) = (ctx.secs(6, 20), ctx.secs(2, 4));
    let bytes = Arc::new(AtomicU64::new(0));
    let cancel = CancellationToken::new();
    let mut tasks = Vec::new();
    let mut side = Side::default();
    tokio::time::sleep(Duration::from_secs(1)).await;
    side.idle = window(win, pid).await;
    for target in std::iter::once(1).chain(STEPS.iter().map(|n| n + 1)) {
        while tasks.len() < target {
            let r = RtspReader::connect(&gst.url).await?;
            tasks.push(r.spawn(bytes.clone(), cancel.clone()));
        }
        tokio::time::sleep(warm).await;
        let b0 = bytes.load(Ordering::Relaxed);
        let p = window(win, pid).await;
        let b = bytes.load(Ordering::Relaxed) - b0;
        let p = Point {
            readers: target,
            mbit_per_reader: b as f64 * 8.0 / 1e6 / win.as_secs_f64() / target as f64,
            ..p
        };
        eprintln!(
            "  GStreamer: {target:>2} readers  server {:.3} cores  {:.2} Mbit/s per reader",
            p.server_cores, p.mbit_per_reader
        );
        if target == 1 {
            side.anchor = p;
        } else {
            side.steps.push(p);
        }
    }
    cancel.cancel();
    let mut errors = 0;
    for t in tasks {
        if !matches!(t.await, Ok(Ok(()))) {
            errors += 1;
        }
    }
    if let Some(last) = side.steps.last_mut() {
        last.errors = errors;
    }
    gst.quit().await;
    Ok(side)
}

async fn camesh(ctx: &Ctx) -> anyhow::Result<Side> {
    let mut srv = ServerProc::start(ServeOpts::new(&["peer"])).await?;
    let pid = child_with_arg("serve-node").ok_or_else(|| anyhow::anyhow!("serve-node child not found in /proc"))?;
    let cam = "peer".to_string();
    srv.add(std::slice::from_ref(&cam), SynthSpec::standard()).await?;
    let (win, warm) = (ctx.secs(6, 20), ctx.secs(2, 4));
    let mut side = Side::default();
    tokio::time::sleep(Duration::from_secs(1)).await;
    side.idle = window(win, pid).await;
    let col = Arc::new(Collector::default());
    let cancel = CancellationToken::new();
    let (mut viewers, mut readers) = (Vec::new(), Vec::new());
    for target in std::iter::once(1).chain(STEPS.iter().map(|n| n + 1)) {
        let new = futures::future::try_join_all((viewers.len()..target).map(|_| Viewer::spawn())).await?;
        for v in new {
            let peer = v.connect(&srv.addrs).await?;
            let sub = v.subscribe_retry(peer, &cam).await?;
            readers.push(spawn_reader(sub, col.clone(), Open::Decrypt, cancel.clone()));
            viewers.push(v);
        }
        tokio::time::sleep(warm).await;
        col.take();
        let p = window(win, pid).await;
        let w = col.take();
        let p = Point {
            readers: target,
            mbit_per_reader: w.bytes as f64 * 8.0 / 1e6 / win.as_secs_f64() / target as f64,
            skips: w.skips + w.seq_gaps,
            errors: w.errors,
            ..p
        };
        eprintln!(
            "  camesh:    {target:>2} viewers  server {:.3} cores  {:.2} Mbit/s per viewer  skips {}",
            p.server_cores, p.mbit_per_reader, p.skips
        );
        if target == 1 {
            side.anchor = p;
        } else {
            side.steps.push(p);
        }
    }
    cancel.cancel();
    for r in readers {
        let _ = r.await;
    }
    drop(viewers);
    srv.quit().await?;
    Ok(side)
}

pub async fn run(ctx: &mut Ctx) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let frames = dir.path().join("synthetic.frames");
    let spec = SynthSpec::standard();
    let pool = synth::gop_pool(&spec);
    write_frames(
        &frames,
        &synth::codec_params(),
        pool.iter().enumerate().map(|(i, b)| (spec.is_key(i as u64), b)),
    )?;
    let drops0 = procstat::udp_rcvbuf_errors();
    let g = gstreamer(ctx, &frames).await?;
    let c = camesh(ctx).await?;
    let drops = procstat::udp_rcvbuf_errors().saturating_sub(drops0);

    ctx.push(
        Figure::new(S, "GStreamer RTSP server, 0 readers", g.idle.server_cores * 1000.0, "ms/s").note(
            "gst-rtsp-server with the mount but no client: the shared media is built at the first DESCRIBE, so nothing runs yet",
        ),
    );
    ctx.push(
        Figure::new(S, "camesh serving node, 0 viewers", c.idle.server_cores * 1000.0, "ms/s")
            .baseline("GStreamer, 0 readers", g.idle.server_cores * 1000.0)
            .note("the synthetic camera published, sealed and cached, the swarm idle: what a camera node spends before anyone watches"),
    );
    ctx.push(
        Figure::new(S, "GStreamer, 1 reader (the anchor)", g.anchor.server_cores * 1000.0, "ms/s").note(format!(
            "appsrc (Python's need-data callback) → rtph264pay → the shared media's sink → one TCP client: the stream's fixed cost plus one reader; {:.2} Mbit/s received; {:.0} context switches/s",
            g.anchor.mbit_per_reader, g.anchor.switches_per_s
        )),
    );
    ctx.push(
        Figure::new(
            S,
            "camesh, 1 viewer (the anchor)",
            c.anchor.server_cores * 1000.0,
            "ms/s",
        )
        .baseline("GStreamer, 1 reader", g.anchor.server_cores * 1000.0)
        .note(format!(
            "the camera, its sealing, the swarm and one QUIC viewer; {:.2} Mbit/s received; {:.0} context switches/s ({:.0} with no viewer)",
            c.anchor.mbit_per_reader, c.anchor.switches_per_s, c.idle.switches_per_s
        )),
    );
    for (gp, cp) in g.steps.iter().zip(&c.steps) {
        let n = cp.readers - 1;
        let (gv, cv) = (g.per_viewer_ms(gp), c.per_viewer_ms(cp));
        ctx.push(
            Figure::new(S, &format!("GStreamer, {n} more readers: CPU per reader"), gv, "ms/s").note(format!(
                "server {:.3} cores with {} readers ({:.3} with the anchor alone); {:.2} Mbit/s per reader; {:.0} context switches per s per added reader ({:.0}/s with the anchor alone); other processes {:.2} cores",
                gp.server_cores, gp.readers, g.anchor.server_cores, gp.mbit_per_reader, g.per_viewer_switches(gp), g.anchor.switches_per_s, gp.other_cores
            )),
        );
        let ratio = cv / gv;
        ctx.push(
            Figure::new(S, &format!("camesh, {n} more viewers: CPU per viewer"), cv, "ms/s")
                .target("≤ GStreamer's per reader (ratio ≤ 1.0)", ratio <= 1.0)
                .baseline("GStreamer, same readers", gv)
                .note(format!(
                    "server {:.3} cores with {} viewers ({:.3} with the anchor alone); {:.2} Mbit/s per viewer; {:.0} context switches per s per added viewer ({:.0}/s with the anchor alone); {} skips, {} broken streams; other processes {:.2} cores; camesh encrypts twice (QUIC's AES-128-GCM per viewer, the frame's AEAD once), GStreamer sends plain RTP over TCP",
                    cp.server_cores, cp.readers, c.anchor.server_cores, cp.mbit_per_reader, c.per_viewer_switches(cp), c.anchor.switches_per_s, cp.skips, cp.errors, cp.other_cores
                )),
        );
    }
    ctx.raw(
        "peers",
        &serde_json::json!({ "gstreamer": g, "camesh": c, "udp_rcvbuf_drops": drops,
            "per_viewer": "(server CPU with anchor + N readers - with the anchor alone) / N" }),
    );
    Ok(())
}
