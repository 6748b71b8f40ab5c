//! The media protocol end to end: real nodes over QUIC on 127.0.0.1.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use camesh_node::config::Role;
use camesh_node::media::h264;
use camesh_node::stream::client::{media_protocol, ClientError};
use camesh_node::watch::{WatchEvent, WatchOptions};
use camesh_node::{Node, NodeHandle};
use camesh_proto::{pb, LengthCodec};
use camesh_tests::watch::{next_event, skip_frames, until_interrupted};
use camesh_tests::*;
use futures::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

const GOP2: &str = "cam-640x360-30fps-gop2s.h264";
const GOP1_720: &str = "cam-1280x720-30fps-gop1s.h264";
const GOP10: &str = "cam-640x360-30fps-gop10s.h264";
const T: Duration = Duration::from_secs(20);

fn live(camera: &str) -> pb::StreamRequest {
    pb::StreamRequest {
        audio: false,
        user_agent: "camesh-tests".into(),
        ..camesh_tests::live(camera)
    }
}

fn nal_types(payload: &[u8]) -> Vec<u8> {
    h264::avcc_nals(payload)
        .map(|n| n.expect("valid AVCC")[0] & 0x1f)
        .collect()
}

async fn pair(dir: &std::path::Path, fleet: &str, clip: &str) -> (NodeHandle, NodeHandle) {
    camera_and_viewer(dir, fleet, vec![camera("cam1", clip)]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewer_receives_the_fixtures_nal_units_byte_identical_and_in_order() {
    init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    let (cam, viewer) = pair(dir.path(), "t-nals", GOP2).await;
    let mut sub = viewer
        .subscribe_camera("cam1", Some(cam.peer_id()), live("cam1"))
        .await
        .expect("subscribed");
    let codec = sub.accept.codec.clone().expect("codec config");
    assert_eq!((codec.codec.as_str(), codec.width, codec.height), ("h264", 640, 360));

    let file = std::fs::read(fixture(GOP2)).expect("fixture");
    let file_nals: Vec<&[u8]> = h264::split_annexb(&file).collect();
    let mut got: Vec<Bytes> = Vec::new();
    let mut last_seq = None;
    // 200 frames: more than the clip's 180, so the loop point is crossed too.
    for _ in 0..200 {
        let f = next_frame(&mut sub, T).await;
        if let Some(prev) = last_seq {
            assert_eq!(f.header.sequence, prev + 1, "frames arrive in order without gaps");
        }
        last_seq = Some(f.header.sequence);
        for nal in h264::avcc_nals(&f.payload) {
            got.push(Bytes::copy_from_slice(nal.expect("valid AVCC")));
        }
    }
    assert_eq!(got[0][0] & 0x1f, 7, "the first NAL unit is an SPS");
    let n = file_nals.len();
    let start = (0..n).find(|&k| {
        got.iter()
            .enumerate()
            .all(|(i, nal)| file_nals[(k + i) % n] == &nal[..])
    });
    assert!(
        start.is_some(),
        "the {} received NAL units are not a byte-identical run of the fixture's {} NAL units",
        got.len(),
        n
    );
    viewer.shutdown();
    cam.shutdown();
}

/// Streams that reach a node together are all accepted: libp2p-stream used to keep one
/// slot per protocol for all connections together and dropped the rest while the acceptor
/// had not run yet (the opener saw "sending stopped by peer"; vendor/libp2p-stream).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_opened_at_the_same_moment_are_all_served() {
    init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    let (cam, viewer) = pair(dir.path(), "t-burst", GOP2).await;
    // One first, so the connection and membership are up and the rest arrive together.
    let mut first = viewer
        .subscribe_camera("cam1", Some(cam.peer_id()), live("cam1"))
        .await
        .expect("subscribed");
    next_frame(&mut first, T).await;
    // The per-peer limit is 8 streams: the first and seven more, all opened at once.
    let burst =
        futures::future::join_all((0..7).map(|_| viewer.subscribe_camera("cam1", Some(cam.peer_id()), live("cam1"))))
            .await;
    let mut subs = Vec::new();
    for (i, r) in burst.into_iter().enumerate() {
        match r {
            Ok(s) => subs.push(s),
            Err(e) => panic!("stream {i} of the burst was refused: {e}"),
        }
    }
    for sub in &mut subs {
        let f = next_frame(sub, T).await;
        assert!(f.header.keyframe, "each starts on the cached keyframe");
    }
}

/// The mechanism under the test above, made deterministic: streams that arrive while the
/// acceptor is not polling wait for it (up to a bound) instead of being dropped. Plain
/// libp2p swarms with libp2p-stream, as camesh builds it (the vendored copy).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_streams_wait_for_a_busy_acceptor() {
    use futures::StreamExt;
    use libp2p::swarm::SwarmEvent;
    init_tracing();
    let proto = libp2p::StreamProtocol::new("/camesh-test/burst/1");
    let build = || {
        libp2p::SwarmBuilder::with_new_identity()
            .with_tokio()
            .with_quic()
            .with_behaviour(|_| libp2p_stream::Behaviour::new())
            .expect("behaviour")
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(30)))
            .build()
    };
    let mut a = build();
    let mut b = build();
    let peer_a = *a.local_peer_id();
    let mut incoming = a.behaviour().new_control().accept(proto.clone()).expect("accept");
    a.listen_on("/ip4/127.0.0.1/udp/0/quic-v1".parse().expect("addr"))
        .expect("listen");
    let addr = tokio::time::timeout(T, async {
        loop {
            if let SwarmEvent::NewListenAddr { address, .. } = a.select_next_some().await {
                return address;
            }
        }
    })
    .await
    .expect("listening");
    b.dial(addr).expect("dial");
    tokio::time::timeout(T, async {
        loop {
            tokio::select! {
                _ = a.select_next_some() => {}
                ev = b.select_next_some() => if let SwarmEvent::ConnectionEstablished { .. } = ev { return },
            }
        }
    })
    .await
    .expect("connected");
    let control_b = b.behaviour().new_control();
    let drive = |mut s: libp2p::Swarm<libp2p_stream::Behaviour>| {
        tokio::spawn(async move {
            loop {
                s.select_next_some().await;
            }
        })
    };
    let (ta, tb) = (drive(a), drive(b));

    // Six streams at once, while nobody polls `incoming`.
    const N: usize = 6;
    let opened = tokio::time::timeout(
        T,
        futures::future::join_all((0..N).map(|_| {
            let mut c = control_b.clone();
            let proto = proto.clone();
            async move {
                let mut s = c.open_stream(peer_a, proto).await.expect("stream opens");
                s.write_all(b"x").await.expect("write");
                s.flush().await.expect("flush");
                s
            }
        })),
    )
    .await
    .expect("streams open in time");
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Now the acceptor looks: every stream is there, each with its byte.
    let mut got = 0;
    while let Ok(Some((_, mut s))) = tokio::time::timeout(Duration::from_secs(1), incoming.next()).await {
        let mut byte = [0u8; 1];
        if s.read_exact(&mut byte).await.is_ok() {
            got += 1;
        }
    }
    assert!(
        got >= N,
        "{got} of {N} streams reached the acceptor (the rest were dropped)"
    );
    drop(opened);
    ta.abort();
    tb.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewer_joining_mid_gop_starts_at_once_on_the_cached_keyframe() {
    init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    let (cam, viewer) = pair(dir.path(), "t-midgop", GOP10).await;
    let hub = cam.hubs().get("cam1").expect("hub");
    // Join 3 s into a 10 s GOP.
    assert!(
        wait_until(T, || hub.counters.frames_in.load(std::sync::atomic::Ordering::Relaxed)
            >= 90)
        .await
    );
    let mut sub = viewer
        .subscribe_camera("cam1", Some(cam.peer_id()), live("cam1"))
        .await
        .expect("subscribed");
    let published_at_join = hub.counters.frames_in.load(std::sync::atomic::Ordering::Relaxed);
    let first = next_frame(&mut sub, T).await;
    assert!(first.header.keyframe, "first frame is a keyframe");
    let types = nal_types(&first.payload);
    assert_eq!(&types[..2], &[7, 8], "keyframe carries SPS and PPS first: {types:?}");
    assert!(types.contains(&5), "keyframe has an IDR slice: {types:?}");
    assert!(
        first.header.sequence < published_at_join,
        "first frame #{} is the cached keyframe, not the next GOP (published {published_at_join} at join)",
        first.header.sequence
    );
    assert_eq!(first.header.sequence % 300, 0, "the GOP's keyframe");
    // The rest of the cached GOP follows without gaps, then live frames.
    let mut seq = first.header.sequence;
    for _ in 0..(published_at_join - first.header.sequence + 10) {
        let f = next_frame(&mut sub, T).await;
        assert_eq!(f.header.sequence, seq + 1);
        assert!(!f.header.keyframe || f.header.sequence % 300 == 0);
        seq = f.header.sequence;
    }
    viewer.shutdown();
    cam.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_viewer_slows_nobody_and_resumes_on_a_keyframe_with_the_skip_counted() {
    init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cc = loopback_config(Role::Camera, "t-slow");
    cc.limits.subscriber_queue_frames = 30;
    cc.cameras = vec![camera("cam1", GOP1_720)];
    let cam = spawn_node(cc, &dir.path().join("cam")).await;
    let addrs = cam.dial_addrs().await.expect("addrs");
    // The stalled viewer takes little in flight, so its backlog reaches the source soon.
    let mut sc = loopback_config(Role::Viewer, "t-slow");
    sc.limits.stream_window_bytes = 32 << 10;
    sc.node.bootstrap = addrs.clone();
    let slow_node = spawn_node(sc, &dir.path().join("slow")).await;
    let fast_node = viewer_node(&dir.path().join("fast"), "t-slow", addrs).await;
    let hub = cam.hubs().get("cam1").expect("hub");

    let mut slow = slow_node
        .subscribe_camera("cam1", Some(cam.peer_id()), live("cam1"))
        .await
        .expect("slow subscribed");
    let mut fast = fast_node
        .subscribe_camera("cam1", Some(cam.peer_id()), live("cam1"))
        .await
        .expect("fast subscribed");
    let fast_log: Arc<Mutex<Vec<(u64, u32)>>> = Arc::default();
    let log = fast_log.clone();
    let stop = CancellationToken::new();
    let stop2 = stop.clone();
    let fast_task = tokio::spawn(async move {
        loop {
            tokio::select! {
                f = fast.next_frame() => match f {
                    Ok(Some(f)) => log.lock().expect("lock").push((f.header.sequence, f.header.skipped_before)),
                    _ => break,
                },
                _ = stop2.cancelled() => break,
            }
        }
    });
    for _ in 0..5 {
        next_frame(&mut slow, T).await;
    }
    // Stop reading the slow stream until the camera has skipped it at least once.
    let slow_peer = slow_node.peer_id();
    let skipped = wait_until(Duration::from_secs(30), || {
        hub.subscribers()
            .iter()
            .filter(|s| s.peer == slow_peer)
            .any(|s| s.stats().skips >= 1)
    })
    .await;
    assert!(skipped, "the camera skipped the stalled viewer to a keyframe");
    let published = hub.counters.frames_in.load(std::sync::atomic::Ordering::Relaxed);
    // The fast viewer kept up: every frame, in order, none skipped, and close to live.
    assert!(wait_until(T, || fast_log.lock().expect("lock").len() as u64 + 5 >= published).await);
    {
        let log = fast_log.lock().expect("lock");
        assert!(
            log.windows(2).all(|w| w[1].0 == w[0].0 + 1),
            "fast viewer saw every frame in order"
        );
        assert!(
            log.iter().skip(1).all(|&(_, skipped)| skipped == 0),
            "fast viewer was never skipped"
        );
    }
    // Resume: stale frames that were in flight drain, then a keyframe that says what was skipped.
    let mut resumed_on = None;
    for _ in 0..2000 {
        let f = next_frame(&mut slow, T).await;
        if f.header.skipped_before > 0 {
            resumed_on = Some(f);
            break;
        }
    }
    let f = resumed_on.expect("a frame reporting the skip");
    assert!(f.header.keyframe, "after a skip the viewer resumes on a keyframe");
    stop.cancel();
    let _ = fast_task.await;
    for n in [&slow_node, &fast_node, &cam] {
        n.shutdown();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_peers_get_their_stream_reset_and_the_node_keeps_serving() {
    init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    let garbage = dir.path().join("garbage.h264");
    std::fs::write(
        &garbage,
        (0..50_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect::<Vec<_>>(),
    )
    .expect("write");
    let mut bad = camera("bad", GOP2);
    bad.source = garbage;
    let cam = camera_node(
        &dir.path().join("cam"),
        "t-bad",
        vec![camera("cam1", GOP2), bad],
        vec![],
    )
    .await;
    let viewer = viewer_node(
        &dir.path().join("viewer"),
        "t-bad",
        cam.dial_addrs().await.expect("addrs"),
    )
    .await;
    let peer = cam.peer_id();
    let mut good = viewer
        .subscribe_camera("cam1", Some(peer), live("cam1"))
        .await
        .expect("subscribed");
    let first = next_frame(&mut good, T).await.header.sequence;

    let mut control = viewer.stream_control();
    // 1. An oversize length prefix: reset without an answer.
    let mut s = control.open_stream(peer, media_protocol()).await.expect("open");
    s.write_all(&[0x80, 0x80, 0x80, 0x80, 0x01]).await.expect("write"); // 256 MiB
    s.flush().await.expect("flush");
    let mut buf = Vec::new();
    let r = tokio::time::timeout(T, s.read_to_end(&mut buf))
        .await
        .expect("closed in time");
    assert!(r.is_err() || buf.is_empty(), "no answer to an oversize request");

    // 2. Garbage protobuf: a readable refusal.
    let mut s = control.open_stream(peer, media_protocol()).await.expect("open");
    s.write_all(&[3, 0x0a, 0xff, 0xff]).await.expect("write");
    s.flush().await.expect("flush");
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(T, s.read_to_end(&mut buf))
        .await
        .expect("closed in time");
    let mut bm = bytes::BytesMut::from(&buf[..]);
    let body = LengthCodec::new(1 << 16)
        .decode(&mut bm)
        .expect("framed")
        .expect("an answer");
    let resp: pb::StreamResponse = camesh_proto::framing::decode_message("response", body).expect("protobuf");
    match resp.result {
        Some(pb::stream_response::Result::Reject(r)) => {
            assert_eq!(r.code, pb::RejectCode::RejectBadRequest as i32);
            assert!(!r.reason.is_empty());
        }
        other => panic!("expected a refusal, got {other:?}"),
    }

    // 3. Hanging up in the middle of a message.
    let mut s = control.open_stream(peer, media_protocol()).await.expect("open");
    s.write_all(&[0x90, 0x4e, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
        .await
        .expect("write");
    s.close().await.expect("close");
    drop(s);

    // 4. Unknown camera, and a camera whose file is garbage: clear reasons.
    // The viewer itself refuses: the camera node's certificate does not bind "nope".
    assert!(matches!(
        viewer.subscribe_camera("nope", Some(peer), live("nope")).await,
        Err(ClientError::Impostor { .. })
    ));
    // Asked anyway (raw request), the camera node refuses with a reason.
    let mut control2 = viewer.stream_control();
    match camesh_node::stream::client::subscribe(&mut control2, peer, live("nope"), &viewer.config().limits).await {
        Err(ClientError::Rejected { code, reason, .. }) => {
            assert_eq!(code, pb::RejectCode::RejectUnknownCamera);
            assert!(reason.contains("nope"), "{reason}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    let hub = cam.hubs().get("bad").expect("hub");
    let mut reason = String::new();
    for _ in 0..100 {
        match viewer.subscribe_camera("bad", Some(peer), live("bad")).await {
            Err(ClientError::Rejected { reason: r, .. }) if !r.contains("starting") => {
                reason = r;
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            Ok(_) => panic!("a garbage file must not stream"),
        }
    }
    assert!(!hub.is_live());
    assert!(
        reason.contains("H.264") || reason.contains("start code"),
        "clear reason: {reason}"
    );

    // The good stream kept flowing, and new viewers are still served.
    for seq in first + 1..first + 31 {
        assert_eq!(next_frame(&mut good, T).await.header.sequence, seq);
    }
    let mut again = viewer
        .subscribe_camera("cam1", Some(peer), live("cam1"))
        .await
        .expect("still serving");
    assert!(next_frame(&mut again, T).await.header.keyframe);
    viewer.shutdown();
    cam.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewer_resumes_by_itself_after_the_camera_node_restarts_and_reports_the_gap() {
    init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    let cam_dir = dir.path().join("cam");
    let cam = camera_node(&cam_dir, "t-restart", vec![camera("cam1", GOP2)], vec![]).await;
    let addr = cam.dial_addrs().await.expect("addrs").remove(0);
    let (_, plain) = camesh_node::addr::split_p2p(addr.clone());
    let viewer = viewer_node(&dir.path().join("viewer"), "t-restart", vec![addr]).await;
    let mut opts = WatchOptions::new("cam1");
    opts.peer = Some(cam.peer_id());
    opts.backoff_max = Duration::from_millis(500);
    let cancel = CancellationToken::new();
    let mut events = viewer.watch(opts, cancel.clone());
    skip_frames(&mut events, T, 30).await;
    cam.shutdown();
    until_interrupted(&mut events, T, "interruption noticed").await;
    // Same identity, same address.
    let mut c = loopback_config(Role::Camera, "t-restart");
    c.cameras = vec![camera("cam1", GOP2)];
    c.node.listen = vec![plain];
    let mut restarted = None;
    for _ in 0..50 {
        match Node::spawn(c.clone(), &cam_dir).await {
            Ok(n) => {
                restarted = Some(n);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let cam2 = restarted.expect("camera node restarts on its old address");
    assert_eq!(cam2.peer_id(), cam.peer_id());
    let mut gap = None;
    let mut after = 0;
    while after < 10 {
        match next_event(&mut events, T, "video resumes").await {
            WatchEvent::Started { gap: g, .. } => gap = g,
            WatchEvent::Frame(_) if gap.is_some() => after += 1,
            WatchEvent::Failed { error } => panic!("{error}"),
            _ => {}
        }
    }
    assert!(gap.expect("the gap is reported") > Duration::ZERO);
    cancel.cancel();
    viewer.shutdown();
    cam2.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn video_flows_over_the_tcp_fallback_when_quic_is_not_available() {
    init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cc = loopback_config(Role::Camera, "t-tcp");
    cc.node.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().expect("addr")];
    cc.cameras = vec![camera("cam1", GOP2)];
    let cam = spawn_node(cc, &dir.path().join("cam")).await;
    let addrs = cam.dial_addrs().await.expect("addrs");
    assert!(addrs.iter().all(|a| a.to_string().contains("/tcp/")), "{addrs:?}");
    let viewer = viewer_node(&dir.path().join("viewer"), "t-tcp", addrs).await;
    let mut sub = viewer
        .subscribe_camera("cam1", Some(cam.peer_id()), live("cam1"))
        .await
        .expect("subscribed over TCP + Noise + Yamux");
    let first = next_frame(&mut sub, T).await;
    assert!(first.header.keyframe);
    for _ in 0..30 {
        next_frame(&mut sub, T).await;
    }
    viewer.shutdown();
    cam.shutdown();
}

/// The kernel's size of a UDP socket's receive buffer (`ss`'s `skmem:(r…,rb<N>,…)`), found
/// by the local port.
fn udp_receive_buffer(port: u16) -> Option<u64> {
    let out = std::process::Command::new("ss")
        .args(["-uamnH", "sport", "=", &format!(":{port}")])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let at = text.find(",rb")? + 3;
    text[at..].split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

/// camesh's QUIC sockets ask for 4 MiB buffers (the vendor/libp2p-quic patch): with the
/// default 208 KiB, a few streams' keyframes arriving at once overflow the receive buffer
/// and every dropped datagram is a QUIC loss (docs/BENCHMARKS.md: 337 drops at 256
/// streams before, none after). The kernel caps the request at `net.core.rmem_max` and
/// reports double what it grants.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_sockets_get_receive_buffers_sized_for_video() {
    init_tracing();
    assert!(have("ss"), "ss is needed (scripts/setup.sh installs iproute2)");
    let read = |p: &str| -> u64 {
        std::fs::read_to_string(p)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    };
    let (max, default) = (
        read("/proc/sys/net/core/rmem_max"),
        read("/proc/sys/net/core/rmem_default"),
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let node = viewer_node(dir.path(), "t-sockbuf", vec![]).await;
    let addrs = node.net().listen_addrs().await.expect("listen addresses");
    let port = addrs
        .iter()
        .find_map(|a| {
            a.iter().find_map(|p| match p {
                libp2p::multiaddr::Protocol::Udp(port) => Some(port),
                _ => None,
            })
        })
        .expect("a QUIC listen address");
    let rb = udp_receive_buffer(port).expect("ss shows the node's UDP socket");
    let expected = 2 * max.min(4 << 20);
    eprintln!("QUIC socket on :{port}: rb {rb} (rmem_default {default}, rmem_max {max}, asked 4 MiB)");
    assert!(
        rb >= expected,
        "receive buffer {rb}, expected {expected} (asked 4 MiB, rmem_max {max})"
    );
    if max > default {
        assert!(rb > 2 * default, "the socket kept the default buffer ({rb})");
    }
    node.shutdown();
}

/// A `[[link]]` cap on one viewer (#16, link budget): the camera sends that viewer no
/// more than the cap (its queue skips to keyframes instead), while an uncapped viewer of
/// the same camera gets every frame.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_cap_paces_one_peer_and_leaves_the_others_alone() {
    init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    let capped_dir = dir.path().join("capped");
    std::fs::create_dir_all(&capped_dir).expect("dir");
    let capped_peer = camesh_node::identity::load_or_create(&capped_dir)
        .expect("identity")
        .public()
        .to_peer_id();
    let mut cc = loopback_config(Role::Camera, "t-cap");
    cc.cameras = vec![camera("cam1", GOP1_720)]; // about 1 Mbit/s
    cc.links = vec![camesh_node::config::LinkConfig {
        peer: capped_peer.to_string(),
        kbit: 300,
    }];
    let cam = spawn_node(cc, &dir.path().join("cam")).await;
    let addrs = cam.dial_addrs().await.expect("addrs");
    let capped = viewer_node(&capped_dir, "t-cap", addrs.clone()).await;
    assert_eq!(capped.peer_id(), capped_peer);
    let free = viewer_node(&dir.path().join("free"), "t-cap", addrs).await;
    let mut subs = Vec::new();
    for v in [&capped, &free] {
        subs.push(
            v.subscribe_camera("cam1", Some(cam.peer_id()), live("cam1"))
                .await
                .expect("subscribed"),
        );
    }
    // Read both for 8 s; count bytes after the first 2 s (past the cached GOP and the burst).
    let start = tokio::time::Instant::now();
    let mut tallies = Vec::new();
    for mut sub in subs {
        tallies.push(tokio::spawn(async move {
            let (mut bytes, mut frames, mut skipped, mut holes, mut last) = (0usize, 0u64, 0u64, 0u64, None);
            while start.elapsed() < Duration::from_secs(8) {
                let Ok(Ok(Some(f))) = tokio::time::timeout(Duration::from_secs(2), sub.next_frame()).await else {
                    continue;
                };
                if start.elapsed() >= Duration::from_secs(2) {
                    bytes += f.payload.len();
                    frames += 1;
                }
                skipped += u64::from(f.header.skipped_before);
                if let Some(l) = last {
                    holes += f.header.sequence.saturating_sub(l + 1);
                }
                last = Some(f.header.sequence);
            }
            (bytes, frames, skipped, holes)
        }));
    }
    let mut out = Vec::new();
    for t in tallies {
        out.push(t.await.expect("reader"));
    }
    let kbit = |b: usize| b as f64 * 8.0 / 6.0 / 1000.0;
    let (cb, cf, cs, ch) = out[0];
    let (fb, ff, fs, fh) = out[1];
    println!(
        "capped at 300 kbit/s: {:.0} kbit/s, {cf} frames, {cs} skipped by the source; uncapped: {:.0} kbit/s, {ff} frames, {fs} skipped, {fh} holes",
        kbit(cb),
        kbit(fb)
    );
    assert!(kbit(cb) <= 300.0 * 1.2, "the capped viewer got {:.0} kbit/s", kbit(cb));
    assert!(
        kbit(cb) >= 300.0 * 0.5,
        "the cap starved the viewer: {:.0} kbit/s",
        kbit(cb)
    );
    assert!(cs + ch > 0, "over its cap the viewer's queue skipped to keyframes");
    assert!(kbit(fb) > 600.0, "the uncapped viewer got {:.0} kbit/s", kbit(fb));
    assert_eq!((fs, fh), (0, 0), "the uncapped viewer lost nothing");
    for n in [&capped, &free, &cam] {
        n.shutdown();
    }
}
