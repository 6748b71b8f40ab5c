//! Memory: RSS of the serving node per 4 Mbit/s stream (its GOP cache and hub) and per
//! subscriber (a viewer with its own connection), and of a viewer node.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Ctx;
use crate::procstat;
use crate::quic_baseline::{QuinnProc, Suite};
use crate::report::Figure;
use crate::server::{ServeOpts, ServerProc};
use crate::synth::SynthSpec;
use crate::viewer::{spawn_reader, Collector, Open, Viewer};

const S: &str = "memory";

/// Mean RSS over a few samples a GOP apart (the GOP caches fill and empty).
async fn rss(srv: &mut ServerProc, samples: u32) -> anyhow::Result<f64> {
    let mut sum = 0.0;
    for i in 0..samples {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(700)).await;
        }
        sum += srv.stats().await?.rss_bytes as f64;
    }
    Ok(sum / f64::from(samples))
}

pub async fn run(ctx: &mut Ctx) -> anyhow::Result<()> {
    let k = ctx.pick(20, 50);
    let m = ctx.pick(20, 50);
    let spec = SynthSpec::standard();
    let ids: Vec<String> = (0..k).map(|i| format!("m{i}")).collect();
    let mut srv = ServerProc::start(ServeOpts::with_ids(ids.clone())).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss0 = rss(&mut srv, 3).await?;
    srv.add(&ids, spec).await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let rss1 = rss(&mut srv, 4).await?;

    let col = Arc::new(Collector::default());
    let cancel = CancellationToken::new();
    let my0 = procstat::rss_bytes() as f64;
    let viewers = futures::future::try_join_all((0..m).map(|_| Viewer::spawn())).await?;
    let mut readers = Vec::new();
    for (i, v) in viewers.iter().enumerate() {
        let peer = v.connect(&srv.addrs).await?;
        let sub = v.subscribe_retry(peer, &ids[i % ids.len()]).await?;
        readers.push(spawn_reader(sub, col.clone(), Open::Decrypt, cancel.clone()));
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let rss2 = rss(&mut srv, 4).await?;
    let my1 = procstat::rss_bytes() as f64;
    let w = col.take();
    cancel.cancel();
    for r in readers {
        let _ = r.await;
    }
    drop(viewers);
    srv.quit().await?;

    // Baseline: plain quinn sending the same kind of stream on `m` connections.
    let quinn_per_conn = match QuinnProc::start().await {
        Ok(mut q) => {
            let r = q
                .paced_many(
                    Suite::Camesh,
                    m,
                    m,
                    spec,
                    Duration::from_secs(3),
                    Duration::from_secs(2),
                )
                .await;
            let _ = q.quit().await;
            r.ok()
                .map(|r| (r.sender_rss_during as f64 - r.sender_rss_before as f64) / m as f64 / 1e6)
        }
        Err(_) => None,
    };

    let per_stream = (rss1 - rss0) / k as f64 / 1e6;
    let per_sub = (rss2 - rss1) / m as f64 / 1e6;
    let per_viewer_node = (my1 - my0) / m as f64 / 1e6;
    let gop_mb = (spec.idr_bytes + (spec.gop_frames as usize - 1) * spec.p_bytes) as f64 / 1e6;
    ctx.push(
        Figure::new(S, "serving node RSS per 4 Mbit/s stream", per_stream, "MB")
            .baseline("one 2 s GOP of payload", gop_mb)
            .note(format!(
                "{k} synthetic cameras, no viewers; node alone {:.1} MB. A stream holds its GOP cache (0 to 1 GOP, {:.2} MB full)",
                rss0 / 1e6,
                gop_mb
            )),
    );
    let mut f = Figure::new(S, "serving node RSS per subscriber", per_sub, "MB");
    if let Some(q) = quinn_per_conn {
        f = f.baseline("raw quinn, per connection", q);
    }
    ctx.push(
        f.note(format!(
            "{m} viewers, each its own node and QUIC connection, {} frames received while measuring; payloads are shared, so this is connection and stream state plus in-flight send buffers",
            w.frames
        )),
    );
    ctx.push(
        Figure::new(S, "viewer node RSS (harness side)", per_viewer_node, "MB")
            .note("a whole viewer node (swarm, QUIC endpoint, one stream) in the harness process"),
    );
    ctx.raw(
        "memory",
        &serde_json::json!({ "streams": k, "subscribers": m, "rss_node_mb": rss0 / 1e6,
            "rss_streams_mb": rss1 / 1e6, "rss_subscribers_mb": rss2 / 1e6,
            "raw_quinn_per_connection_mb": quinn_per_conn,
            "per_stream_mb": per_stream, "per_subscriber_mb": per_sub, "per_viewer_node_mb": per_viewer_node }),
    );
    Ok(())
}
