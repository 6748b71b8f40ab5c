//! The gateway's guards and numbers: a non-loopback bind needs consent and a foreign
//! Host header (DNS rebinding) is refused; `/metrics` is Prometheus text whose counters
//! move while video flows, on a viewer's gateway and on the camera node's own.

use std::net::SocketAddr;
use std::time::Duration;

use camesh_node::gateway::{Gateway, GatewayOptions};
use camesh_tests::http::{get, get_for};
use camesh_tests::*;

use super::{fleet_with_gateway, GOP2, T};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_host_header_is_refused_and_remote_binds_need_consent() {
    init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    let viewer = viewer_node(&dir.path().join("viewer"), "t-gw-host", vec![]).await;
    let opts = GatewayOptions {
        listen: "0.0.0.0:0".parse().expect("addr"),
        ..GatewayOptions::default()
    };
    let e = Gateway::start(viewer.clone(), opts).await.expect_err("refused");
    assert!(e.to_string().contains("not a loopback address"), "{e}");
    let gw = Gateway::start(viewer.clone(), GatewayOptions::default())
        .await
        .expect("starts");
    // DNS rebinding: the browser would send the attacker's host name.
    let mut s = tokio::net::TcpStream::connect(gw.local_addr()).await.expect("connect");
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: evil.example:8090\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut resp = String::new();
    tokio::time::timeout(T, s.read_to_string(&mut resp))
        .await
        .expect("answer")
        .expect("read");
    assert!(resp.starts_with("HTTP/1.1 403"), "{resp}");
    gw.shutdown();
    viewer.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_as_prometheus_text_and_counters_move_while_video_flows() {
    init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    let (cam, viewer, gw) = fleet_with_gateway(dir.path(), "t-gw-metrics", &[("cam1", GOP2)]).await;
    let addr = gw.local_addr();
    // A player keeps the stream flowing for the whole test.
    let player = tokio::spawn(get_for(addr, "/cam/cam1/live.mp4", Duration::from_secs(8), 64 << 20));

    let scrape = |addr: SocketAddr| async move {
        let r = get(addr, "/metrics", T).await.expect("metrics");
        assert_eq!(r.status, 200);
        assert!(r
            .header("content-type")
            .unwrap_or("")
            .starts_with("text/plain; version=0.0.4"));
        prom::parse(&r.text()).unwrap_or_else(|e| panic!("/metrics is not Prometheus text: {e}\n{}", r.text()))
    };
    let cam1 = [("camera", "cam1"), ("profile", "main")];
    // Wait until the player's stream is flowing.
    let deadline = tokio::time::Instant::now() + T;
    let a = loop {
        let m = scrape(addr).await;
        if m.value("camesh_stream_http_bytes_total", &cam1).unwrap_or(0.0) > 0.0 {
            break m;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the player's stream never flowed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let b = scrape(addr).await;

    for counter in [
        "camesh_stream_frames_total",
        "camesh_stream_bytes_total",
        "camesh_stream_http_bytes_total",
    ] {
        assert_eq!(a.types.get(counter).map(String::as_str), Some("counter"));
        let (x, y) = (a.value(counter, &cam1), b.value(counter, &cam1));
        let (Some(x), Some(y)) = (x, y) else {
            panic!("{counter} missing")
        };
        assert!(y > x, "{counter} did not move while video flowed: {x} -> {y}");
    }
    let bitrate = b
        .value("camesh_stream_bitrate_bits_per_second", &cam1)
        .expect("bitrate");
    let fps = b.value("camesh_stream_fps", &cam1).expect("fps");
    let latency = b.value("camesh_stream_latency_seconds", &cam1).expect("latency");
    assert!(bitrate > 50_000.0, "bitrate {bitrate}");
    // It moves (not a rate check: a shared machine may run the source late).
    assert!(fps > 1.0 && fps < 1000.0, "fps {fps}");
    assert!((0.0..1.0).contains(&latency), "latency {latency}");
    assert_eq!(b.value("camesh_stream_http_clients", &cam1), Some(1.0));
    assert_eq!(b.value("camesh_stream_skips_total", &cam1), Some(0.0));
    assert!(b.value("camesh_peers_connected", &[]).unwrap_or(0.0) >= 1.0);
    let path = b.all("camesh_stream_path_info");
    assert_eq!(path.len(), 1);
    assert_eq!(path[0].label("path"), Some("direct"));
    assert_eq!(path[0].label("peer"), Some(cam.peer_id().to_string().as_str()));
    assert!(b
        .value("camesh_peer_rtt_seconds", &[("peer", &cam.peer_id().to_string())])
        .is_some());
    assert!(
        b.value("camesh_http_requests_total", &[("route", "metrics")])
            .unwrap_or(0.0)
            >= 2.0
    );

    // The camera node's own gateway reports its source.
    let cam_gw = Gateway::start(cam.clone(), GatewayOptions::default())
        .await
        .expect("gateway");
    let c = scrape(cam_gw.local_addr()).await;
    let frames_in = c.value("camesh_source_frames_total", &cam1).expect("source frames");
    assert!(frames_in > 30.0);
    assert_eq!(c.value("camesh_source_live", &cam1), Some(1.0));
    assert!(c.value("camesh_source_subscribers", &cam1).unwrap_or(0.0) >= 1.0);
    cam_gw.shutdown();

    let played = player.await.expect("player").expect("played");
    assert!(played.body.len() > 100_000);
    gw.shutdown();
    viewer.shutdown();
    cam.shutdown();
}
