//! Baseline: plain quinn on the same machine (bulk throughput, paced-frame latency,
//! handshake time), on equal terms with camesh: the cipher suite camesh negotiates
//! (AES-128-GCM), 4 MiB socket buffers as camesh's QUIC transport has, and the UDP
//! datagrams the kernel dropped during each run reported.

use std::time::Duration;

use super::Ctx;
use crate::quic_baseline::{Bulk, QuinnProc, Suite};
use crate::report::Figure;
use crate::stats::{median_ms, Latency};
use crate::synth::SynthSpec;

const S: &str = "baseline";

pub async fn run(ctx: &mut Ctx) -> anyhow::Result<()> {
    let mut q = QuinnProc::start().await?;
    // Best of three short runs: other work on the machine only ever makes a run slower.
    let secs = ctx.pick(2, 4);
    let mut runs = Vec::new();
    let drops0 = crate::procstat::udp_rcvbuf_errors();
    for _ in 0..3 {
        runs.push((
            q.bulk(Suite::Camesh, secs).await?,
            q.bulk(Suite::Libp2pOrder, secs).await?,
        ));
    }
    let bulk_drops = crate::procstat::udp_rcvbuf_errors().saturating_sub(drops0);
    let best = |pick: fn(&(Bulk, Bulk)) -> Bulk| {
        runs.iter()
            .map(pick)
            .max_by(|a, b| a.gbit_s.total_cmp(&b.gbit_s))
            .unwrap_or_default()
    };
    let def = best(|r| r.0);
    let chacha = best(|r| r.1);
    ctx.base.quinn_gbit_s = Some(def.gbit_s);
    ctx.base.quinn_gbit_per_core = Some(def.sender_gbit_per_core());
    ctx.push(
        Figure::new(S, "raw quinn, 1 stream, bulk", def.gbit_s, "Gbit/s").note(format!(
            "best of 3; {}, 4 MiB socket buffers: sender {:.2} CPU s, receiver {:.2} CPU s over {:.1} s; the two share the machine's cores; UDP receive-buffer drops over the 6 runs: {bulk_drops}",
            Suite::Camesh.label(),
            def.sender_cpu_s,
            def.receiver_cpu_s,
            def.secs
        )),
    );
    ctx.push(Figure::new(
        S,
        "raw quinn sender, Gbit/s per core",
        def.sender_gbit_per_core(),
        "Gbit/s",
    ));
    ctx.push(
        Figure::new(
            S,
            "raw quinn, ChaCha20 first (upstream libp2p-tls order)",
            chacha.gbit_s,
            "Gbit/s",
        )
        .baseline("raw quinn AES-128-GCM", def.gbit_s)
        .note(format!(
            "upstream libp2p-tls offers ChaCha20-Poly1305 first; camesh's patched copy (vendor/libp2p-tls) offers AES-GCM first, so this is what the patch saves; sender {:.2} Gbit/s per core",
            chacha.sender_gbit_per_core()
        )),
    );
    ctx.raw(
        "quinn_bulk",
        &serde_json::json!({ "camesh_suite": def, "libp2p_order": chacha, "runs": runs, "udp_drops": bulk_drops }),
    );

    let paced_secs = ctx.pick(10, 30);
    let drops0 = crate::procstat::udp_rcvbuf_errors();
    let mut w = q
        .paced(Suite::Camesh, paced_secs, Duration::from_secs(1), SynthSpec::standard())
        .await?;
    let lat = Latency::from_us(&mut w.lat_us);
    let key = Latency::from_us(&mut w.key_lat_us);
    ctx.base.quinn_latency = Some(lat);
    ctx.push(
        Figure::new(S, "raw quinn, paced 4 Mbit/s frames, latency p50", lat.p50_ms, "ms").note(format!(
            "n = {} frames; keyframes (150 KB) p50 {:.2} ms, max {:.2} ms; UDP receive-buffer drops {}",
            lat.n,
            key.p50_ms,
            key.max_ms,
            crate::procstat::udp_rcvbuf_errors().saturating_sub(drops0)
        )),
    );
    ctx.push(Figure::new(S, "raw quinn, paced frames, latency p99", lat.p99_ms, "ms"));
    ctx.push(Figure::new(
        S,
        "raw quinn, paced frames, latency p99.9",
        lat.p999_ms,
        "ms",
    ));

    let hs = q.handshakes(Suite::Camesh, ctx.pick(10, 30)).await?;
    let hs_ms = median_ms(&hs);
    ctx.base.quinn_handshake_ms = Some(hs_ms);
    ctx.push(Figure::new(S, "raw quinn handshake (connect), median", hs_ms, "ms"));
    ctx.raw(
        "quinn_paced",
        &serde_json::json!({ "latency": lat, "keyframes": key, "handshakes_ms": hs }),
    );
    q.quit().await?;
    Ok(())
}
