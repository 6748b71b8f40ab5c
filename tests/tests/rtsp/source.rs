//! The RTSP source itself: UDP transport and credentials in the URL (a wrong password
//! is refused clearly, without showing it), coming back by itself when the server
//! restarts (the gap reported), and clear messages for H.265 and audio-only cameras.

use std::time::Duration;

use camesh_node::config::RtspTransport;
use camesh_node::media::source::{RtspOptions, RtspSource, SourceEvent};
use camesh_node::watch::{WatchEvent, WatchOptions};
use camesh_proto::pb;
use camesh_tests::rtsp_server::{rtsp_server_or_skip, Mount, RtspServer};
use camesh_tests::watch::{next_event, skip_frames};
use camesh_tests::*;
use tokio_util::sync::CancellationToken;

use super::{avcc, live_request, mesh, rtsp_camera, T};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_transport_with_credentials_in_the_url_and_a_clear_refusal_of_a_wrong_password() {
    init_tracing();
    if !rtsp_server_or_skip("rtsp udp + credentials") {
        return;
    }
    let server = RtspServer::start_with_auth(&[Mount::live("/live", "320x180")], "operator", "s3cret-pw");
    let url = server.url("/live");
    assert!(url.contains("operator:s3cret-pw@"));

    // A wrong password: the source says so, and never shows the password.
    let bad = url.replace("s3cret-pw", "wrong-pw");
    let (tx, mut rx) = tokio::sync::mpsc::channel(8);
    let cancel = CancellationToken::new();
    let task = tokio::spawn(RtspSource::new(bad, RtspOptions::default()).run(tx, cancel.clone()));
    let ev = tokio::time::timeout(T, rx.recv())
        .await
        .expect("an answer")
        .expect("an event");
    let SourceEvent::Failed { error } = ev else {
        panic!("expected a failure, got {ev:?}")
    };
    assert!(error.contains("401") && error.contains("credentials"), "{error}");
    assert!(!error.contains("wrong-pw"), "the password leaks into: {error}");
    task.await.expect("source task");

    let dir = tempfile::tempdir().expect("tempdir");
    let (cam, viewer) = mesh(
        dir.path(),
        "t-rtsp-udp",
        vec![rtsp_camera("cam1", &url, RtspTransport::Udp)],
    )
    .await;
    let mut sub = viewer
        .subscribe_camera("cam1", Some(cam.peer_id()), live_request("cam1", pb::Profile::Main))
        .await
        .expect("subscribed");
    let codec = sub.accept.codec.clone().expect("codec");
    assert_eq!((codec.width, codec.height), (320, 180));
    let first = next_frame(&mut sub, T).await;
    assert!(first.header.keyframe);
    // The cached GOP comes at once; from the next keyframe on, frames arrive live.
    while !next_frame(&mut sub, T).await.header.keyframe {}
    let started = std::time::Instant::now();
    for _ in 0..60 {
        let f = next_frame(&mut sub, T).await;
        assert!(!avcc(&f.payload).is_empty());
    }
    // A live 30 fps camera: 60 frames take about 2 s (not a burst, not a stall).
    let took = started.elapsed();
    assert!(
        took > Duration::from_millis(1500) && took < Duration::from_secs(10),
        "{took:?}"
    );
    viewer.shutdown();
    cam.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_comes_back_by_itself_when_the_rtsp_server_restarts_and_the_gap_is_reported() {
    init_tracing();
    if !rtsp_server_or_skip("rtsp restart") {
        return;
    }
    let mut server = RtspServer::start(&[Mount::live("/live", "320x180,gop=15")]);
    let url = server.url("/live");
    let dir = tempfile::tempdir().expect("tempdir");
    let (cam, viewer) = mesh(
        dir.path(),
        "t-rtsp-restart",
        vec![rtsp_camera("cam1", &url, RtspTransport::Tcp)],
    )
    .await;
    let hub = cam.hubs().get("cam1").expect("hub");
    let mut opts = WatchOptions::new("cam1");
    opts.peer = Some(cam.peer_id());
    let cancel = CancellationToken::new();
    let mut events = viewer.watch(opts, cancel.clone());
    skip_frames(&mut events, T, 30).await;
    // The camera goes away.
    server.stop();
    let stopped_at = std::time::Instant::now();
    assert!(
        wait_until(T, || !hub.is_live()).await,
        "the camera node notices the RTSP server is gone"
    );
    // Drain what was in flight, then nothing comes while the server is down.
    let quiet = tokio::time::sleep(Duration::from_millis(1500));
    tokio::pin!(quiet);
    loop {
        tokio::select! {
            _ = &mut quiet => break,
            ev = events.recv() => if let Some(WatchEvent::Failed { error }) = ev { panic!("{error}") },
        }
    }
    server.restart();
    let restarted_at = std::time::Instant::now();
    // Video resumes by itself: the camera node reconnects, the viewer's stream carries on.
    let mut after = Vec::new();
    while after.len() < 30 {
        match next_event(&mut events, T, "video comes back after the restart").await {
            WatchEvent::Frame(f) => {
                let captured_after_restart = f.header.capture_unix_us
                    > camesh_node::clock::now_unix_us() - restarted_at.elapsed().as_micros() as i64;
                if captured_after_restart {
                    after.push(f);
                }
            }
            WatchEvent::Failed { error } => panic!("{error}"),
            _ => {}
        }
    }
    let resumed_in = restarted_at.elapsed();
    assert!(after[0].header.keyframe, "video resumes on a keyframe");
    assert!(resumed_in < Duration::from_secs(10), "resumed after {resumed_in:?}");
    // The gap is reported, and it is about as long as the outage.
    let gaps = hub.counters.source_gaps.load(std::sync::atomic::Ordering::Relaxed);
    let gap_ms = hub.counters.last_gap_ms.load(std::sync::atomic::Ordering::Relaxed);
    assert!(gaps >= 1, "the source's gap is counted");
    let outage = stopped_at.elapsed();
    assert!(
        gap_ms >= 1000 && Duration::from_millis(gap_ms) <= outage,
        "gap {gap_ms} ms for an outage of {outage:?}"
    );
    cancel.cancel();
    viewer.shutdown();
    cam.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h265_and_audio_only_cameras_get_a_clear_message() {
    init_tracing();
    if !rtsp_server_or_skip("rtsp h265/audio") {
        return;
    }
    let server = RtspServer::start(&[Mount::h265("/hevc"), Mount::audio_only("/audio")]);
    for (mount, expect) in [("/hevc", "H.265"), ("/audio", "no video stream")] {
        let (tx, mut rx) = tokio::sync::mpsc::channel(8);
        let task =
            tokio::spawn(RtspSource::new(server.url(mount), RtspOptions::default()).run(tx, CancellationToken::new()));
        let ev = tokio::time::timeout(T, rx.recv())
            .await
            .expect("an answer")
            .expect("an event");
        let SourceEvent::Failed { error } = ev else {
            panic!("{mount}: expected a failure, got {ev:?}")
        };
        assert!(error.contains(expect), "{mount}: {error}");
        assert!(
            error.contains("H.264"),
            "{mount}: the message says what is needed: {error}"
        );
        task.await.expect("source task");
    }
    // End to end: a viewer asking for the H.265 camera is told why there is no video.
    let dir = tempfile::tempdir().expect("tempdir");
    let cam = camera_node(
        &dir.path().join("cam"),
        "t-rtsp-hevc",
        vec![rtsp_camera("cam1", &server.url("/hevc"), RtspTransport::Tcp)],
        vec![],
    )
    .await;
    let viewer = viewer_node(
        &dir.path().join("viewer"),
        "t-rtsp-hevc",
        cam.dial_addrs().await.expect("addrs"),
    )
    .await;
    let mut reason = String::new();
    for _ in 0..50 {
        match viewer
            .subscribe_camera("cam1", Some(cam.peer_id()), live_request("cam1", pb::Profile::Main))
            .await
        {
            Err(e) if e.to_string().contains("H.265") => {
                reason = e.to_string();
                break;
            }
            Err(e) => reason = e.to_string(),
            Ok(_) => panic!("an H.265 camera must not be served as H.264"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(reason.contains("H.265") && reason.contains("not H.264"), "{reason}");
    viewer.shutdown();
    cam.shutdown();
}
