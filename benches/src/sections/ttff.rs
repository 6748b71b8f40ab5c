//! Time to first frame for a new viewer: cold (a fresh node: connect, open the stream,
//! first frame) and warm (an already-connected node opens a new stream), against 2 s and
//! 10 s GOP sources, with the GOP cache on and, as the baseline, off. Joins happen at
//! random moments of the GOP; the target is judged on the slowest join (a median of a
//! few joins hides the one a user waits on), the median is printed beside it.

use std::sync::Arc;
use std::time::Duration;

use camesh_node::clock::now_unix_us;
use camesh_node::{Multiaddr, PeerId};
use rand::Rng;
use serde::Serialize;
use tokio::time::Instant;

use super::{ms, Ctx};
use crate::report::Figure;
use crate::server::{ServeOpts, ServerProc};
use crate::stats::{median_ms, quantile_ms};
use crate::synth::SynthSpec;
use crate::viewer::Viewer;

const S: &str = "time to first frame";
/// A frame this close to its capture time is live (the backlog has been sent).
const LIVE_US: i64 = 50_000;

#[derive(Debug, Clone, Serialize)]
struct Join {
    cold: bool,
    at_ms: f64,
    ttff_ms: f64,
    first_is_keyframe: bool,
    /// Until the first frame within 50 ms of its capture time (the backlog is through).
    live_ms: Option<f64>,
    frames_before_live: u64,
    error: Option<String>,
}

#[derive(Debug, Serialize)]
struct Config {
    cache: bool,
    gop_s: u32,
    joins: Vec<Join>,
}

async fn join(viewer: Arc<Viewer>, addrs: Vec<Multiaddr>, peer: PeerId, cold: bool, cam: String, gop_s: u32) -> Join {
    let mut j = Join {
        cold,
        at_ms: 0.0,
        ttff_ms: f64::NAN,
        first_is_keyframe: false,
        live_ms: None,
        frames_before_live: 0,
        error: None,
    };
    let t0 = Instant::now();
    let result: anyhow::Result<()> = async {
        let peer = if cold { viewer.connect(&addrs).await? } else { peer };
        let mut sub = viewer.subscribe(peer, &cam).await?;
        let first = sub.next_frame().await?.ok_or_else(|| anyhow::anyhow!("stream ended"))?;
        j.ttff_ms = ms(t0.elapsed());
        j.first_is_keyframe = first.header.keyframe;
        let deadline = t0 + Duration::from_secs(u64::from(gop_s) + 3);
        let mut frame = first;
        loop {
            if now_unix_us() - frame.header.capture_unix_us < LIVE_US {
                j.live_ms = Some(ms(t0.elapsed()));
                break;
            }
            j.frames_before_live += 1;
            frame = match tokio::time::timeout_at(deadline, sub.next_frame()).await {
                Ok(r) => r?.ok_or_else(|| anyhow::anyhow!("stream ended"))?,
                Err(_) => break,
            };
        }
        Ok(())
    }
    .await;
    if let Err(e) = result {
        j.error = Some(e.to_string());
    }
    j
}

/// Runs `n` cold and `n` warm joins at random moments within one GOP.
async fn run_config(
    srv: &ServerProc,
    warm: &Arc<Viewer>,
    cam: &str,
    gop_s: u32,
    n: usize,
) -> anyhow::Result<Vec<Join>> {
    let mut cold = Vec::with_capacity(n);
    for _ in 0..n {
        cold.push(Arc::new(Viewer::spawn().await?));
    }
    let start = Instant::now() + Duration::from_millis(200);
    let gop = Duration::from_secs(u64::from(gop_s));
    let mut tasks = tokio::task::JoinSet::new();
    let mut rng = rand::thread_rng();
    let jobs = cold
        .iter()
        .map(|v| (v.clone(), true))
        .chain((0..n).map(|_| (warm.clone(), false)));
    for (viewer, is_cold) in jobs {
        let at = gop.mul_f64(rng.gen_range(0.0..1.0));
        let (addrs, peer, cam) = (srv.addrs.clone(), srv.peer, cam.to_string());
        tasks.spawn(async move {
            tokio::time::sleep_until(start + at).await;
            let mut j = join(viewer, addrs, peer, is_cold, cam, gop_s).await;
            j.at_ms = ms(at);
            j
        });
    }
    let mut joins = Vec::new();
    while let Some(j) = tasks.join_next().await {
        joins.push(j?);
    }
    joins.sort_by(|a, b| a.at_ms.total_cmp(&b.at_ms));
    drop(cold);
    Ok(joins)
}

pub async fn run(ctx: &mut Ctx) -> anyhow::Result<()> {
    let n = ctx.pick(6, 15);
    let mut on = ServerProc::start(ServeOpts::new(&["g2", "g10"])).await?;
    let mut off = ServerProc::start(ServeOpts {
        gop_cache_bytes: 0,
        ..ServeOpts::new(&["g2", "g10"])
    })
    .await?;
    let cams = ["g2".to_string(), "g10".to_string()];
    for srv in [&mut on, &mut off] {
        srv.add(&cams[..1], SynthSpec::cctv(2, 4_000_000)).await?;
        srv.add(&cams[1..], SynthSpec::cctv(10, 4_000_000)).await?;
    }
    let cams_started = Instant::now();
    let warm_on = Arc::new(Viewer::spawn().await?);
    let warm_off = Arc::new(Viewer::spawn().await?);
    warm_on.connect(&on.addrs).await?;
    warm_off.connect(&off.addrs).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;

    let mut configs = Vec::new();
    // Cache off first: by the time the cache-on runs start, every cache holds a GOP.
    for (cache, srv, warm) in [(false, &off, &warm_off), (true, &on, &warm_on)] {
        for (cam, gop_s) in [("g2", 2u32), ("g10", 10u32)] {
            if cache {
                let ready = cams_started + Duration::from_secs(u64::from(gop_s) + 1);
                tokio::time::sleep_until(ready).await;
            }
            let joins = run_config(srv, warm, cam, gop_s, n).await?;
            configs.push(Config { cache, gop_s, joins });
        }
    }
    drop(warm_on);
    drop(warm_off);
    on.quit().await?;
    off.quit().await?;

    let med = |cache: bool, gop_s: u32, cold: bool| -> (f64, f64, usize, usize) {
        let c = configs.iter().find(|c| c.cache == cache && c.gop_s == gop_s);
        let v: Vec<f64> = c
            .map(|c| {
                c.joins
                    .iter()
                    .filter(|j| j.cold == cold && j.error.is_none())
                    .map(|j| j.ttff_ms)
                    .collect()
            })
            .unwrap_or_default();
        let total = c.map_or(0, |c| c.joins.iter().filter(|j| j.cold == cold).count());
        (median_ms(&v), quantile_ms(&v, 1.0), v.len(), total)
    };
    for cold in [true, false] {
        let kind = if cold {
            "cold (connect + stream)"
        } else {
            "warm (new stream)"
        };
        for gop_s in [2u32, 10] {
            let (m_on, max_on, ok_on, n_on) = med(true, gop_s, cold);
            let (m_off, max_off, ok_off, n_off) = med(false, gop_s, cold);
            let mut f = Figure::new(S, &format!("{kind}, {gop_s} s GOP, cache on, slowest join"), max_on, "ms")
                .target("< 100 ms, any GOP", max_on < 100.0 && ok_on == n_on)
                .baseline("GOP cache off, slowest join", max_off)
                .note(format!(
                    "{ok_on}/{n_on} joins ok, median {m_on:.1} ms; cache off: {ok_off}/{n_off} ok, median {m_off:.0} ms, max {max_off:.0} ms (waits for the next IDR)"
                ));
            if cold {
                if let Some(h) = ctx.base.quinn_handshake_ms {
                    f.note
                        .push_str(&format!("; a raw QUIC handshake alone takes {h:.2} ms"));
                }
            }
            ctx.push(f);
            ctx.push(
                Figure::new(S, &format!("{kind}, {gop_s} s GOP, cache off, median"), m_off, "ms")
                    .target_text("(baseline)"),
            );
        }
    }
    let all: Vec<&Join> = configs
        .iter()
        .flat_map(|c| &c.joins)
        .filter(|j| j.error.is_none())
        .collect();
    let on_key = all.iter().filter(|j| j.first_is_keyframe).count();
    let failed = configs
        .iter()
        .flat_map(|c| &c.joins)
        .filter(|j| j.error.is_some())
        .count();
    ctx.push(
        Figure::new(S, "joins whose first frame is a keyframe", on_key as f64, "")
            .shown(format!("{on_key}/{}", all.len()))
            .target("all: never a P-frame", on_key == all.len() && failed == 0)
            .note(if failed > 0 {
                format!("{failed} joins failed: see raw.ttff in the JSON")
            } else {
                String::new()
            }),
    );
    for gop_s in [2u32, 10] {
        let live: Vec<f64> = configs
            .iter()
            .filter(|c| c.cache && c.gop_s == gop_s)
            .flat_map(|c| &c.joins)
            .filter_map(|j| j.live_ms)
            .collect();
        let backlog: Vec<f64> = configs
            .iter()
            .filter(|c| c.cache && c.gop_s == gop_s)
            .flat_map(|c| &c.joins)
            .map(|j| j.frames_before_live as f64)
            .collect();
        ctx.push(
            Figure::new(
                S,
                &format!("cache on, {gop_s} s GOP: until live edge, median"),
                median_ms(&live),
                "ms",
            )
            .note(format!(
                "the cached GOP is sent first (median {:.0} frames behind live); a player decodes through it",
                median_ms(&backlog)
            )),
        );
    }
    ctx.raw("ttff", &configs);
    Ok(())
}
