//! The web app in real headless Chromium on loopback (#15): time to first decoded frame
//! for a cold page (a new Chromium process: its libp2p node, the WebRTC-direct handshake
//! to the camera node, membership, the media stream, the cached keyframe, WebCodecs) and
//! capture-to-drawn latency of live frames in the page. The page is enrolled once with a
//! real `mesh fleet invite`; each cold run is a fresh Chromium process on that profile.

use std::time::Duration;

use camesh_node::auth::grant::GrantRequest;
use camesh_node::auth::{now_s, Rights};
use camesh_node::config::Role;
use camesh_tests::web::{
    chromium, close_page, dist, grant_text, invite_from, open_page, percentile, static_server_with_reports, wait_report,
};
use camesh_tests::{camera, fleet, loopback_config, spawn_node};
use serde::Serialize;

use super::Ctx;
use crate::report::Figure;

const S: &str = "browser";
/// Frames decoded before a cold run ends (its live latencies are read then).
const FRAMES: u64 = 120;

#[derive(Debug, Clone, Serialize)]
struct Run {
    first_frame_ms: f64,
    decoded: u64,
    decode_errors: u64,
    width: u64,
    height: u64,
    latency_ms: Vec<f64>,
}

pub async fn run(ctx: &mut Ctx) -> anyhow::Result<()> {
    let Some(chromium) = chromium() else {
        ctx.push(Figure::na(S, "time to first frame, cold", "no chromium"));
        return Ok(());
    };
    if !dist().join("app.js").exists() {
        ctx.push(Figure::na(
            S,
            "time to first frame, cold",
            "web/dist not built: scripts/web.sh",
        ));
        return Ok(());
    }
    let n = ctx.pick(3, 8);
    // The shared helpers panic with a message on failure (they are test helpers): run
    // them in a task so a failure is this section's error, not the harness's end.
    let runs = tokio::spawn(measure(chromium, n))
        .await
        .map_err(|e| anyhow::anyhow!("the browser run failed: {e}"))?;
    let ttff: Vec<f64> = runs.iter().map(|r| r.first_frame_ms).collect();
    let lat: Vec<f64> = runs.iter().flat_map(|r| r.latency_ms.iter().copied()).collect();
    let errors: u64 = runs.iter().map(|r| r.decode_errors).sum();
    let sizes: Vec<String> = runs.iter().map(|r| format!("{}x{}", r.width, r.height)).collect();
    let med = percentile(&ttff, 0.5);
    let max = ttff.iter().copied().fold(f64::NAN, f64::max);
    ctx.push(
        Figure::new(S, "time to first frame, cold (new page, WebRTC-direct handshake), median", med, "ms")
            .target("< 300 ms", med < 300.0)
            .note(format!(
                "{} runs: {}; max {max:.0} ms; from the watch beginning in the page (dial, DTLS/SCTP, Noise, membership, stream, cached keyframe, WebCodecs decode); {errors} decode errors; sizes {}",
                runs.len(),
                ttff.iter().map(|t| format!("{t:.0}")).collect::<Vec<_>>().join(", "),
                sizes.join(", ")
            )),
    );
    let (p50, p99) = (percentile(&lat, 0.5), percentile(&lat, 0.99));
    ctx.push(
        Figure::new(S, "capture-to-decoded-and-drawn latency in the page, p50", p50, "ms").note(format!(
            "{} live frames over {} runs",
            lat.len(),
            runs.len()
        )),
    );
    ctx.push(
        Figure::new(S, "capture-to-decoded-and-drawn latency in the page, p99", p99, "ms")
            .target("< 50 ms", p99 < 50.0)
            .note("frames captured after the first was drawn (the cached GOP a stream starts with is up to a GOP old by design)"),
    );
    ctx.raw("browser", &runs);
    Ok(())
}

async fn measure(chromium: &'static str, n: usize) -> Vec<Run> {
    let name = "bench-web";
    let dir = tempfile::tempdir().expect("tempdir");
    let f = fleet(name);
    let admin = dir.path().join("admin");
    f.save(&admin).expect("admin folder");
    let mut c = loopback_config(Role::Camera, name);
    c.node.webrtc = Some(true);
    c.cameras = vec![camera("cam1", "cam-640x360-30fps-gop2s.h264")];
    let cam = spawn_node(c, &dir.path().join("cam")).await;
    let cam_addr = cam
        .dial_addrs()
        .await
        .expect("addrs")
        .into_iter()
        .find(camesh_node::addr::is_webrtc_direct)
        .expect("the camera listens on WebRTC-direct");

    let (inviting, _invite, link) = invite_from(&admin).await;
    let fragment = link.split_once('#').expect("fragment").1.to_owned();
    let (site, mut reports) = static_server_with_reports(dist()).await;
    let profile = dir.path().join("profile");
    let page = open_page(chromium, &format!("{site}index.html?report#{fragment}"), &profile);
    let joined = wait_report(&mut reports, "joining", Duration::from_secs(60), |v| {
        v.get("member").is_some_and(|m| !m.is_null())
    })
    .await;
    let page_peer: camesh_node::PeerId = joined["peerId"].as_str().expect("peer id").parse().expect("a peer id");
    close_page(page).await;
    drop(inviting);
    eprintln!("   page enrolled as {page_peer}");

    let now = now_s();
    let g = f.grant(&GrantRequest {
        holder: page_peer,
        cameras: vec!["cam1".into()],
        tags: vec![],
        rights: Rights::LIVE,
        not_before_unix_s: now - 60,
        not_after_unix_s: now + 3600,
    });
    let url = format!("{site}index.html?report#{}&peer={cam_addr}&watch=cam1", grant_text(&g));
    let mut runs = Vec::new();
    for i in 0..n {
        let page = open_page(chromium, &url, &profile);
        let v = wait_report(&mut reports, "watching", Duration::from_secs(60), |v| {
            v["grid"]["tiles"]["cam1"]["decoded"]
                .as_u64()
                .is_some_and(|d| d >= FRAMES)
        })
        .await;
        close_page(page).await;
        // Reports still queued from the closed page are not the next run's.
        while reports.try_recv().is_ok() {}
        let t = &v["grid"]["tiles"]["cam1"];
        let r = Run {
            first_frame_ms: t["firstFrameMs"].as_f64().unwrap_or(f64::NAN),
            decoded: t["decoded"].as_u64().unwrap_or(0),
            decode_errors: t["decodeErrors"].as_u64().unwrap_or(u64::MAX),
            width: t["width"].as_u64().unwrap_or(0),
            height: t["height"].as_u64().unwrap_or(0),
            latency_ms: t["latencyMs"]
                .as_array()
                .map(|a| a.iter().filter_map(|x| x.as_f64()).collect())
                .unwrap_or_default(),
        };
        eprintln!(
            "   run {}: first frame {:.0} ms, {} decoded, {} decode errors, {}x{}, {} live latencies",
            i + 1,
            r.first_frame_ms,
            r.decoded,
            r.decode_errors,
            r.width,
            r.height,
            r.latency_ms.len()
        );
        runs.push(r);
    }
    cam.shutdown();
    runs
}
