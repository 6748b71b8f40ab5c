//! RTSP ingest against a real RTSP server (GStreamer's, from Debian, started by the test;
//! see `camesh_tests::rtsp_server`): cameras served by it reach viewers through the mesh
//! byte for byte as ffmpeg reads them directly, over TCP and UDP, with credentials,
//! B-frames, SPS/PPS only in the SDP, a main and a sub profile, the server restarting,
//! and clear refusals of H.265 and audio-only streams.

use std::process::Command;
use std::time::Duration;

use camesh_node::config::{CameraConfig, RtspTransport};
use camesh_node::media::h264::{self, nal_type, NalType};
use camesh_node::media::source::{RtspOptions, RtspSource, SourceEvent};
use camesh_node::stream::client::Subscription;
use camesh_node::watch::{WatchEvent, WatchOptions};
use camesh_node::NodeHandle;
use camesh_proto::{pb, MediaFrame};
use camesh_tests::http;
use camesh_tests::rtsp_server::{rtsp_server_or_skip, Mount, RtspServer};
use camesh_tests::*;
use tokio_util::sync::CancellationToken;

const T: Duration = Duration::from_secs(20);
const GOP2_MP4: &str = "cam-640x360-30fps-gop2s.mp4";
const BFRAMES_MP4: &str = "cam-640x360-bframes.mp4";

fn rtsp_camera(id: &str, url: &str, transport: RtspTransport) -> CameraConfig {
    CameraConfig {
        id: id.into(),
        name: format!("RTSP {id}"),
        source: url.into(),
        sub_source: None,
        rtsp_transport: transport,
        looping: true,
        tags: vec![],
    }
}

fn live_request(camera: &str, profile: pb::Profile) -> pb::StreamRequest {
    pb::StreamRequest {
        camera_id: camera.into(),
        profile: profile as i32,
        mode: Some(pb::stream_request::Mode::Live(pb::Live {})),
        user_agent: "camesh-tests rtsp".into(),
        ..Default::default()
    }
}

/// A camera node for `cams` and a viewer connected to it; waits until `live` cameras
/// have video.
async fn mesh(dir: &std::path::Path, fleet: &str, cams: Vec<CameraConfig>) -> (NodeHandle, NodeHandle) {
    let ids: Vec<String> = cams.iter().map(|c| c.id.clone()).collect();
    let cam = camera_node(&dir.join("cam"), fleet, cams, vec![]).await;
    let viewer = viewer_node(&dir.join("viewer"), fleet, cam.dial_addrs().await.expect("addrs")).await;
    for id in ids {
        let hub = cam.hubs().get(&id).expect("hub");
        assert!(
            wait_until(T, || hub.is_live()).await,
            "camera {id} got no video from the RTSP server within {T:?}"
        );
    }
    (cam, viewer)
}

async fn next(sub: &mut Subscription) -> MediaFrame {
    tokio::time::timeout(T, sub.next_frame())
        .await
        .expect("a frame within the time limit")
        .expect("no protocol error")
        .expect("stream still open")
}

/// NAL units of an AVCC access unit.
fn avcc(payload: &[u8]) -> Vec<Vec<u8>> {
    h264::avcc_nals(payload)
        .map(|n| n.expect("valid AVCC").to_vec())
        .collect()
}

fn is_param_set(nal: &[u8]) -> bool {
    matches!(nal_type(nal), Some(NalType::SPS | NalType::PPS))
}

/// The NAL units that carry the picture (and its SEI): what must be identical. SPS/PPS
/// are compared separately (a source may add them in front of an IDR), AUDs are dropped.
fn picture_nals(nals: &[Vec<u8>]) -> Vec<Vec<u8>> {
    nals.iter()
        .filter(|n| !is_param_set(n) && nal_type(n) != Some(NalType::AUD))
        .cloned()
        .collect()
}

/// One packet as ffmpeg's own RTSP client (ffprobe) reads it.
#[derive(Debug, Clone)]
struct DirectAu {
    pts: Option<i64>,
    nals: Vec<Vec<u8>>,
}

/// What ffprobe reads directly from `url`: the packets (NAL units and pts, 90 kHz) and
/// the SPS/PPS of the stream's configuration (the SDP). `seconds`: read at most this
/// long (file mounts end by themselves).
fn ffprobe_direct(url: &str, transport: &str, seconds: u32) -> (Vec<DirectAu>, Vec<Vec<u8>>) {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-rtsp_transport", transport, "-select_streams", "v:0"])
        .args(["-read_intervals", &format!("%+{seconds}")])
        .args(["-show_packets", "-show_streams", "-show_data"])
        .args(["-show_entries", "packet=pts,flags,data:stream=extradata,time_base"])
        .args(["-of", "json"])
        .arg(url)
        .output()
        .expect("ffprobe runs");
    assert!(
        out.status.success(),
        "ffprobe {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ffprobe json");
    let stream = &json["streams"][0];
    assert_eq!(stream["time_base"], "1/90000", "RTSP video runs on the RTP clock");
    let extradata = hexdump(stream["extradata"].as_str().unwrap_or(""));
    let params: Vec<Vec<u8>> = h264::split_annexb(&extradata).map(<[u8]>::to_vec).collect();
    let packets = json["packets"]
        .as_array()
        .expect("packets")
        .iter()
        .map(|p| {
            let data = hexdump(p["data"].as_str().expect("packet data"));
            DirectAu {
                pts: p["pts"].as_i64(),
                nals: h264::split_annexb(&data).map(<[u8]>::to_vec).collect(),
            }
        })
        .collect();
    (packets, params)
}

/// Bytes of ffprobe's `-show_data` hexdump ("00000000: 0000 0001 6764 ...  ascii").
fn hexdump(text: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some((_, rest)) = line.split_once(": ") else {
            continue;
        };
        // 8 groups of up to 4 hex digits, then two spaces and the ASCII column.
        let hex_part = rest.get(..40.min(rest.len())).unwrap_or(rest);
        let hex_part = hex_part.split("  ").next().unwrap_or("");
        let digits: String = hex_part.chars().filter(|c| c.is_ascii_hexdigit()).collect();
        for i in (0..digits.len() / 2 * 2).step_by(2) {
            out.push(u8::from_str_radix(&digits[i..i + 2], 16).expect("hex"));
        }
    }
    out
}

/// Receives `count` frames and splits them into runs without a timeline break (a file
/// mount ends and the camera reconnects: the camera's next connection starts over).
async fn runs_of_frames(sub: &mut Subscription, count: usize) -> Vec<Vec<MediaFrame>> {
    let mut runs: Vec<Vec<MediaFrame>> = vec![Vec::new()];
    let mut last_dts: Option<u64> = None;
    for _ in 0..count {
        let f = next(sub).await;
        if let Some(prev) = last_dts {
            assert!(
                f.header.dts_90k > prev,
                "decode times increase across reconnections too"
            );
            if f.header.dts_90k - prev > 45_000 {
                runs.push(Vec::new());
            }
        }
        last_dts = Some(f.header.dts_90k);
        runs.last_mut().expect("a run").push(f);
    }
    runs.retain(|r| !r.is_empty());
    runs
}

/// Checks that `run` (mesh frames) is a contiguous, byte-identical run of `direct`
/// (matching picture NAL units access unit by access unit) and returns where it starts.
fn find_in_direct(run: &[MediaFrame], direct: &[DirectAu]) -> usize {
    let mesh: Vec<Vec<Vec<u8>>> = run.iter().map(|f| picture_nals(&avcc(&f.payload))).collect();
    let direct_pics: Vec<Vec<Vec<u8>>> = direct.iter().map(|a| picture_nals(&a.nals)).collect();
    let start = (0..direct_pics.len())
        .find(|&j| direct_pics[j] == mesh[0])
        .unwrap_or_else(|| {
            panic!(
                "the mesh's first access unit is not among the {} ffmpeg read",
                direct.len()
            )
        });
    let n = mesh.len().min(direct_pics.len() - start);
    assert!(n >= 30, "only {n} access units overlap; the test needs a longer run");
    for i in 0..n {
        assert_eq!(
            mesh[i],
            direct_pics[start + i],
            "access unit {i} of the run differs from what ffmpeg read directly"
        );
    }
    start
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_rtsp_camera_reaches_a_viewer_with_the_nal_units_ffmpeg_reads_directly() {
    init_tracing();
    if !rtsp_server_or_skip("rtsp NAL identity") {
        return;
    }
    let server = RtspServer::start(&[Mount::file("/cam", &fixture(GOP2_MP4))]);
    let url = server.url("/cam");
    // ffmpeg's own RTSP client, directly from the server (the whole 6 s file).
    let direct_url = url.clone();
    let direct = tokio::task::spawn_blocking(move || ffprobe_direct(&direct_url, "tcp", 10));

    let dir = tempfile::tempdir().expect("tempdir");
    let (cam, viewer) = mesh(
        dir.path(),
        "t-rtsp-nals",
        vec![rtsp_camera("cam1", &url, RtspTransport::Tcp)],
    )
    .await;
    let mut sub = viewer
        .subscribe_camera("cam1", Some(cam.peer_id()), live_request("cam1", pb::Profile::Main))
        .await
        .expect("subscribed");
    let codec = sub.accept.codec.clone().expect("codec config");
    assert_eq!((codec.width, codec.height), (640, 360));
    let runs = runs_of_frames(&mut sub, 150).await;
    let (direct, sdp_params) = direct.await.expect("ffprobe thread");
    assert!(
        direct.len() >= 170,
        "ffmpeg read {} access units of the 180",
        direct.len()
    );

    let longest = runs.iter().map(Vec::len).max().unwrap_or(0);
    let mut matched = 0;
    for run in runs.iter().filter(|r| r.len() >= 30) {
        assert!(run[0].header.keyframe, "every run starts on a keyframe");
        find_in_direct(run, &direct);
        matched += 1;
    }
    assert!(matched >= 1, "no run of 30+ frames (longest {longest})");
    // Parameter sets: what the viewer gets in front of each IDR is what the camera sent.
    let direct_params: Vec<Vec<u8>> = direct
        .iter()
        .flat_map(|a| a.nals.iter().filter(|n| is_param_set(n)).cloned())
        .chain(sdp_params)
        .collect();
    for f in runs.iter().flatten().filter(|f| f.header.keyframe) {
        let nals = avcc(&f.payload);
        assert_eq!(nal_type(&nals[0]), Some(NalType::SPS));
        for p in nals.iter().filter(|n| is_param_set(n)) {
            assert!(direct_params.contains(p), "a parameter set ffmpeg never saw");
        }
    }
    viewer.shutdown();
    cam.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b_frames_and_sdp_only_parameter_sets_are_carried_with_their_timestamps() {
    init_tracing();
    if !rtsp_server_or_skip("rtsp B-frames") {
        return;
    }
    let server = RtspServer::start(&[Mount::file_sdp_params("/bf", &fixture(BFRAMES_MP4))]);
    let url = server.url("/bf");
    let direct_url = url.clone();
    let direct = tokio::task::spawn_blocking(move || ffprobe_direct(&direct_url, "tcp", 10));

    let dir = tempfile::tempdir().expect("tempdir");
    let (cam, viewer) = mesh(
        dir.path(),
        "t-rtsp-bf",
        vec![rtsp_camera("cam1", &url, RtspTransport::Tcp)],
    )
    .await;
    let mut sub = viewer
        .subscribe_camera("cam1", Some(cam.peer_id()), live_request("cam1", pb::Profile::Main))
        .await
        .expect("subscribed");
    let runs = runs_of_frames(&mut sub, 110).await;
    let (direct, sdp_params) = direct.await.expect("ffprobe thread");
    assert!(
        direct.len() >= 110,
        "ffmpeg read {} access units of the 120",
        direct.len()
    );
    assert!(
        direct.iter().all(|a| !a.nals.iter().any(|n| is_param_set(n))),
        "the server must send SPS/PPS only in the SDP for this test"
    );
    assert_eq!(sdp_params.len(), 2, "SPS and PPS in the SDP");

    let run = runs.iter().max_by_key(|r| r.len()).expect("a run");
    let start = find_in_direct(run, &direct);
    // SPS/PPS from the SDP in front of every IDR.
    for f in run.iter().filter(|f| f.header.keyframe) {
        let nals = avcc(&f.payload);
        assert_eq!(
            &nals[..2],
            &sdp_params[..],
            "keyframes carry the SDP's SPS and PPS in front"
        );
    }
    // Presentation times as the camera sent them; decode times before them, increasing.
    let reference = (0..run.len())
        .find(|&i| direct[start + i].pts.is_some())
        .expect("ffmpeg knows some pts");
    let (mesh_ref, direct_ref) = (
        run[reference].header.pts_90k as i64,
        direct[start + reference].pts.expect("pts"),
    );
    let mut reordered = 0;
    for (i, f) in run.iter().enumerate() {
        let h = &f.header;
        assert!(
            h.dts_90k <= h.pts_90k,
            "frame {i}: dts {} after pts {}",
            h.dts_90k,
            h.pts_90k
        );
        if i > 0 {
            assert!(
                h.dts_90k > run[i - 1].header.dts_90k,
                "frame {i}: dts does not increase"
            );
        }
        assert!(
            run[i..].iter().all(|later| later.header.pts_90k >= h.dts_90k),
            "frame {i} decodes after a later frame is shown"
        );
        if let Some(p) = direct.get(start + i).and_then(|a| a.pts) {
            assert_eq!(
                h.pts_90k as i64 - mesh_ref,
                p - direct_ref,
                "frame {i}: pts differs from the camera's"
            );
        }
        if h.pts_90k != h.dts_90k {
            reordered += 1;
        }
    }
    assert!(
        reordered > run.len() / 2,
        "B-frame stream: pts and dts differ ({reordered} of {})",
        run.len()
    );
    viewer.shutdown();
    cam.shutdown();
}

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
    let first = next(&mut sub).await;
    assert!(first.header.keyframe);
    // The cached GOP comes at once; from the next keyframe on, frames arrive live.
    while !next(&mut sub).await.header.keyframe {}
    let started = std::time::Instant::now();
    for _ in 0..60 {
        let f = next(&mut sub).await;
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
    let mut frames = 0;
    while frames < 30 {
        match tokio::time::timeout(T, events.recv())
            .await
            .expect("event")
            .expect("open")
        {
            WatchEvent::Frame(_) => frames += 1,
            WatchEvent::Failed { error } => panic!("{error}"),
            _ => {}
        }
    }
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
        match tokio::time::timeout(T, events.recv())
            .await
            .expect("video comes back after the restart")
            .expect("open")
        {
            WatchEvent::Frame(f) => {
                let captured_after_restart = f.header.capture_unix_us
                    > camesh_node::stream::hub::now_unix_us() - restarted_at.elapsed().as_micros() as i64;
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
async fn the_stream_request_profile_picks_the_main_or_the_sub_stream() {
    init_tracing();
    if !rtsp_server_or_skip("rtsp profiles") {
        return;
    }
    let server = RtspServer::start(&[Mount::live("/main", "640x360"), Mount::live("/sub", "320x180,fps=15")]);
    let mut cam_cfg = rtsp_camera("cam1", &server.url("/main"), RtspTransport::Tcp);
    cam_cfg.sub_source = Some(server.url("/sub").into());
    let dir = tempfile::tempdir().expect("tempdir");
    let (cam, viewer) = mesh(dir.path(), "t-rtsp-profiles", vec![cam_cfg]).await;
    let sub_hub = cam.hubs().sub("cam1").expect("a sub hub");
    assert!(wait_until(T, || sub_hub.is_live()).await, "the sub stream is live");

    let found = viewer.discover_cameras(Duration::from_secs(2)).await;
    let ann = &found
        .iter()
        .find(|e| e.announcement.camera_id == "cam1")
        .expect("cam1 listed")
        .announcement;
    assert_eq!(found.len(), 1, "the sub stream is not a camera of its own");
    assert_eq!(ann.profiles, vec![pb::Profile::Main as i32, pb::Profile::Sub as i32]);

    for (profile, size) in [(pb::Profile::Main, (640, 360)), (pb::Profile::Sub, (320, 180))] {
        let mut sub = viewer
            .subscribe_camera("cam1", Some(cam.peer_id()), live_request("cam1", profile))
            .await
            .expect("subscribed");
        let codec = sub.accept.codec.clone().expect("codec");
        assert_eq!((codec.width, codec.height), size, "{profile:?}");
        let f = next(&mut sub).await;
        let sps = avcc(&f.payload)
            .into_iter()
            .find(|n| nal_type(n) == Some(NalType::SPS))
            .expect("sps");
        let info = h264::parse_sps(&sps).expect("sps parses");
        assert_eq!(
            (info.width, info.height),
            size,
            "{profile:?}: the frames are that stream's"
        );
    }
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_b_frame_rtsp_camera_plays_as_live_mp4_through_the_gateway() {
    init_tracing();
    if !rtsp_server_or_skip("rtsp to gateway") {
        return;
    }
    let server = RtspServer::start(&[Mount::live("/bf", "320x180,bframes=2,gop=30")]);
    let dir = tempfile::tempdir().expect("tempdir");
    let (cam, viewer) = mesh(
        dir.path(),
        "t-rtsp-gw",
        vec![rtsp_camera("cam1", &server.url("/bf"), RtspTransport::Tcp)],
    )
    .await;
    let gw = camesh_node::gateway::Gateway::start(viewer.clone(), Default::default())
        .await
        .expect("gateway");
    let r = http::get_for(gw.local_addr(), "/cam/cam1/live.mp4", Duration::from_secs(4), 16 << 20)
        .await
        .expect("live.mp4");
    assert_eq!(r.status, 200, "{}", r.text());
    let file = dir.path().join("live.mp4");
    std::fs::write(&file, &r.body).expect("write");
    // Real players' demuxer and decoder: every frame decodes, in presentation order.
    let dec = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(&file)
        .args(["-f", "null", "-"])
        .output()
        .expect("ffmpeg runs");
    assert!(dec.status.success());
    assert_eq!(String::from_utf8_lossy(&dec.stderr), "", "decoding reported errors");
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-of",
            "json",
            "-show_entries",
            "stream=width,height:packet=pts,dts",
        ])
        .arg(&file)
        .output()
        .expect("ffprobe runs");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(json["streams"][0]["width"], 320);
    assert_eq!(json["streams"][0]["height"], 180);
    let packets = json["packets"].as_array().expect("packets");
    assert!(packets.len() >= 60, "{} frames in 4 s", packets.len());
    let reordered = packets.iter().filter(|p| p["pts"] != p["dts"]).count();
    assert!(
        reordered > packets.len() / 2,
        "B-frames keep their reordering ({reordered})"
    );
    gw.shutdown();
    viewer.shutdown();
    cam.shutdown();
}
