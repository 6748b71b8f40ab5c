//! `GET /metrics`: the node and its gateway in the Prometheus text format.
//!
//! One function per group of families, in the order they are written: the node (uptime,
//! peers, RTT per peer, cameras, streams served), the cameras it serves (sources), the
//! streams the gateway receives (taps) and how they arrive, and the gateway's requests by
//! route. Values are read from counters and status snapshots; the text format is
//! [`super::exposition`]'s (its writer is re-exported here, where it used to live).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use camesh_proto::pb;

use super::cameras::camera_rows;
pub use super::exposition::{Exposition, Kind};
use super::guard::{Route, RouteCounters};
use super::tap::{self, Tap, TapStatus};
use super::Shared;
use crate::net::PeerSummary;
use crate::stream::hub::Hub;

pub(super) async fn metrics_text(State(s): State<Arc<Shared>>) -> Response {
    let body = render(&s).await;
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        body,
    )
        .into_response()
}

async fn render(s: &Shared) -> String {
    let mut e = Exposition::default();
    let peers = s.node.reach.peers().await.unwrap_or_default();
    let connected: Vec<&PeerSummary> = peers.iter().filter(|p| p.connected).collect();
    node(&mut e, s, &connected);
    let hubs: Vec<(Arc<Hub>, &str)> = s
        .node
        .hubs
        .all()
        .into_iter()
        .map(|h| (h, "main"))
        .chain(s.node.hubs.subs().into_iter().map(|h| (h, "sub")))
        .collect();
    sources(&mut e, &hubs);
    let taps: Vec<(Arc<Tap>, TapStatus)> = s
        .taps
        .all()
        .into_iter()
        .map(|t| {
            let st = t.status();
            (t, st)
        })
        .collect();
    streams(&mut e, &taps);
    stream_paths(&mut e, &taps);
    requests(&mut e, &s.requests);
    e.finish()
}

/// Uptime, connected peers and their RTT, cameras known, streams served.
fn node(e: &mut Exposition, s: &Shared, connected: &[&PeerSummary]) {
    e.family(
        "camesh_uptime_seconds",
        Kind::Gauge,
        "Seconds since the gateway started.",
    )
    .sample("camesh_uptime_seconds", &[], s.started.elapsed().as_secs_f64());
    e.family(
        "camesh_peers_connected",
        Kind::Gauge,
        "Fleet peers this node is connected to.",
    )
    .sample("camesh_peers_connected", &[], connected.len() as f64);
    e.family(
        "camesh_peer_rtt_seconds",
        Kind::Gauge,
        "Round-trip time to each connected peer (libp2p ping).",
    );
    for p in connected {
        if let Some(rtt) = p.rtt {
            let peer = p.peer.to_string();
            let path = tap::peer_path(p).as_str();
            e.sample(
                "camesh_peer_rtt_seconds",
                &[("peer", &peer), ("path", path)],
                rtt.as_secs_f64(),
            );
        }
    }
    e.family(
        "camesh_cameras_known",
        Kind::Gauge,
        "Cameras this node knows of (its own and the fleet's).",
    )
    .sample("camesh_cameras_known", &[], camera_rows(&s.node).len() as f64);
    e.family(
        "camesh_streams_served",
        Kind::Gauge,
        "Media streams this node serves to peers now.",
    )
    .sample("camesh_streams_served", &[], s.node.slots.total() as f64);
}

/// A family of per-camera values: name, type, help and how to read it.
type Family<T> = (&'static str, Kind, &'static str, fn(&T) -> f64);

fn load(c: &AtomicU64) -> f64 {
    c.load(Ordering::Relaxed) as f64
}

/// The cameras this node serves (main and sub profiles), from their hubs' counters.
fn sources(e: &mut Exposition, hubs: &[(Arc<Hub>, &str)]) {
    let families: [Family<Hub>; 6] = [
        (
            "camesh_source_frames_total",
            Kind::Counter,
            "Access units a served camera's source produced.",
            |h| load(&h.counters.frames_in),
        ),
        (
            "camesh_source_bytes_total",
            Kind::Counter,
            "Bytes of video a served camera's source produced.",
            |h| load(&h.counters.bytes_in),
        ),
        (
            "camesh_source_keyframes_total",
            Kind::Counter,
            "Keyframes a served camera's source produced.",
            |h| load(&h.counters.keyframes_in),
        ),
        (
            "camesh_source_gaps_total",
            Kind::Counter,
            "Times a served camera's source came back after an interruption.",
            |h| load(&h.counters.source_gaps),
        ),
        (
            "camesh_source_live",
            Kind::Gauge,
            "1 while a served camera's source delivers video.",
            |h| f64::from(u8::from(h.is_live())),
        ),
        (
            "camesh_source_subscribers",
            Kind::Gauge,
            "Viewers subscribed to a served camera.",
            |h| h.subscriber_count() as f64,
        ),
    ];
    for (name, kind, help, get) in families {
        e.family(name, kind, help);
        for (h, profile) in hubs {
            e.sample(name, &[("camera", &h.id), ("profile", profile)], get(h));
        }
    }
}

/// The streams this gateway receives (its taps): counters, rates, clients.
fn streams(e: &mut Exposition, taps: &[(Arc<Tap>, TapStatus)]) {
    e.family(
        "camesh_gateway_streams",
        Kind::Gauge,
        "Cameras the gateway receives now.",
    )
    .sample("camesh_gateway_streams", &[], taps.len() as f64);
    let families: [Family<(Arc<Tap>, TapStatus)>; 12] = [
        (
            "camesh_stream_frames_total",
            Kind::Counter,
            "Frames received.",
            |(t, _)| load(&t.counters.frames),
        ),
        (
            "camesh_stream_bytes_total",
            Kind::Counter,
            "Bytes of video received.",
            |(t, _)| load(&t.counters.bytes),
        ),
        (
            "camesh_stream_keyframes_total",
            Kind::Counter,
            "Keyframes received.",
            |(t, _)| load(&t.counters.keyframes),
        ),
        (
            "camesh_stream_skips_total",
            Kind::Counter,
            "Times the source skipped to a keyframe because this stream fell behind.",
            |(_, st)| st.stats.skips as f64,
        ),
        (
            "camesh_stream_skipped_frames_total",
            Kind::Counter,
            "Frames the source skipped for this stream.",
            |(_, st)| st.stats.skipped_frames as f64,
        ),
        (
            "camesh_stream_client_skips_total",
            Kind::Counter,
            "Times an HTTP client fell behind and skipped to a keyframe.",
            |(t, _)| load(&t.counters.consumer_skips),
        ),
        (
            "camesh_stream_gaps_total",
            Kind::Counter,
            "Times video came back after an interruption.",
            |(t, _)| load(&t.counters.gaps),
        ),
        (
            "camesh_stream_http_bytes_total",
            Kind::Counter,
            "Bytes of fragmented MP4 sent to HTTP clients.",
            |(t, _)| load(&t.counters.http_bytes),
        ),
        (
            "camesh_stream_bitrate_bits_per_second",
            Kind::Gauge,
            "Video bitrate over the last 2 s.",
            |(_, st)| st.stats.kbit_s * 1000.0,
        ),
        (
            "camesh_stream_fps",
            Kind::Gauge,
            "Frames per second over the last 2 s.",
            |(_, st)| st.stats.fps,
        ),
        (
            "camesh_stream_latency_seconds",
            Kind::Gauge,
            "Capture-to-gateway latency, median over the last 2 s.",
            |(_, st)| st.stats.latency_p50_ms / 1000.0,
        ),
        (
            "camesh_stream_http_clients",
            Kind::Gauge,
            "HTTP clients playing the stream.",
            |(t, _)| t.counters.http_clients.load(Ordering::Relaxed) as f64,
        ),
    ];
    for (name, kind, help, get) in families {
        e.family(name, kind, help);
        for tap in taps {
            let profile = if tap.0.profile == pb::Profile::Sub {
                "sub"
            } else {
                "main"
            };
            e.sample(name, &[("camera", &tap.0.camera), ("profile", profile)], get(tap));
        }
    }
}

/// How each received stream reaches this node (peer and path), as an info gauge.
fn stream_paths(e: &mut Exposition, taps: &[(Arc<Tap>, TapStatus)]) {
    e.family(
        "camesh_stream_path_info",
        Kind::Gauge,
        "How each stream reaches this node: the serving peer and the path (local, direct, relay, forwarded).",
    );
    for (t, st) in taps {
        let peer = st.peer.map(|p| p.to_string()).unwrap_or_default();
        let path = st.path.map_or("none", |p| p.as_str());
        let live = if st.live { "yes" } else { "no" };
        e.sample(
            "camesh_stream_path_info",
            &[("camera", &t.camera), ("peer", &peer), ("path", path), ("live", live)],
            1.0,
        );
    }
}

/// The gateway's HTTP requests by route.
fn requests(e: &mut Exposition, counters: &RouteCounters) {
    e.family(
        "camesh_http_requests_total",
        Kind::Counter,
        "Gateway HTTP requests by route.",
    );
    for route in Route::ALL {
        e.sample(
            "camesh_http_requests_total",
            &[("route", route.label())],
            counters.get(route) as f64,
        );
    }
}
