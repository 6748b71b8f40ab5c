//! Audio beside video (#17, item 1): GStreamer's RTSP server (tests/scripts/rtsp_server.py)
//! serves live H.264 with AAC (48 kHz) on one mount and with G.711 A-law on another; a
//! camera node pulls both with ffmpeg; the real `mesh watch --format mkv|mpegts` asks
//! for audio, and ffprobe must find both tracks in what it wrote, with the codecs the
//! camera sent and as much audio as video (frame counts within a stated tolerance). A
//! plain `mesh watch` (Annex B) still gets video only. A file with sound plays it too.
//! The gateway's live.mp4 and an NVR's export carry the audio as an MP4 track. Nodes
//! talk QUIC on 127.0.0.1.

use std::path::Path;
use std::process::Command;

use camesh_node::auth::Rights;
use camesh_node::config::{CameraConfig, Role};
use camesh_tests::cli::{mesh_command, mesh_folder};
use camesh_tests::rtsp_server::{rtsp_server_or_skip, Mount, RtspServer};
use camesh_tests::*;

const FLEET: &str = "t-audio";

fn rtsp_camera(id: &str, url: String) -> CameraConfig {
    let mut c = camera(id, "cam-640x360-30fps-gop2s.h264");
    c.source = url.into();
    c
}

/// GStreamer's RTSP server with live H.264 plus AAC 48 kHz (`/aac`) and plus G.711 A-law
/// (`/pcma`), and a camera node in `dir/cam` pulling both as `cam-aac` and `cam-pcma`
/// (and serving `extra` too). Keep the server: it stops when dropped.
async fn aac_and_pcma_cameras(dir: &Path, extra: Vec<CameraConfig>) -> (RtspServer, camesh_node::NodeHandle) {
    let server = RtspServer::start(&[
        Mount::live("/aac", "320x240,fps=30,gop=30,audio=aac"),
        Mount::live("/pcma", "320x240,fps=30,gop=30,audio=pcma"),
    ]);
    let mut c = loopback_config(Role::Camera, FLEET);
    c.cameras = vec![
        rtsp_camera("cam-aac", server.url("/aac")),
        rtsp_camera("cam-pcma", server.url("/pcma")),
    ];
    c.cameras.extend(extra);
    let cam = spawn_node(c, &dir.join("cam")).await;
    (server, cam)
}

/// What `ffmpeg -v error` says while decoding `file` (empty: it decodes cleanly).
fn decode_errors(file: &Path) -> String {
    let ff = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(file)
        .args(["-f", "null", "-"])
        .output()
        .expect("ffmpeg");
    let mut errors = String::from_utf8_lossy(&ff.stderr).trim().to_owned();
    if !ff.status.success() && errors.is_empty() {
        errors = format!("ffmpeg exited with {}", ff.status);
    }
    errors
}

/// ffprobe of `file`: per stream (codec, sample rate, packets, payload bytes).
fn probe(file: &Path) -> Vec<(String, u64, u64, u64)> {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=index,codec_name,sample_rate",
            "-show_entries",
            "packet=stream_index,size",
            "-of",
            "json",
        ])
        .arg(file)
        .output()
        .expect("ffprobe runs");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ffprobe JSON");
    let streams = v["streams"].as_array().cloned().unwrap_or_default();
    let packets = v["packets"].as_array().cloned().unwrap_or_default();
    streams
        .iter()
        .map(|s| {
            let i = s["index"].as_u64().unwrap_or(99);
            let mine: Vec<&serde_json::Value> = packets
                .iter()
                .filter(|p| p["stream_index"].as_u64() == Some(i))
                .collect();
            let bytes = mine
                .iter()
                .filter_map(|p| p["size"].as_str()?.parse::<u64>().ok())
                .sum();
            (
                s["codec_name"].as_str().unwrap_or("").to_owned(),
                s["sample_rate"].as_str().and_then(|r| r.parse().ok()).unwrap_or(0),
                mine.len() as u64,
                bytes,
            )
        })
        .collect()
}

/// `mesh watch <camera> --format <format> -o <out> --frames 150`: stderr.
fn watch(data: &Path, boot: &[camesh_node::Multiaddr], camera: &str, format: &str, out: &Path) -> String {
    watch_with(data, boot, camera, format, out, &[])
}

/// [`watch`] with more arguments.
fn watch_with(
    data: &Path,
    boot: &[camesh_node::Multiaddr],
    camera: &str,
    format: &str,
    out: &Path,
    extra: &[&str],
) -> String {
    let o = mesh_command(data, FLEET, boot)
        .args([
            "--log", "warn", "watch", camera, "--format", format, "--frames", "150", "-o",
        ])
        .arg(out)
        .args(extra)
        .output()
        .expect("mesh runs");
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "mesh watch {camera} --format {format}: {err}");
    err
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audio_reaches_a_viewer_beside_the_video() {
    init_tracing();
    if !rtsp_server_or_skip("audio_reaches_a_viewer_beside_the_video") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    // And a file with sound: the 880 Hz beep fixture, looping.
    let file = camera("cam-file", "cam-640x360-30fps-gop2s-aac.mp4");
    let (_server, cam) = aac_and_pcma_cameras(dir.path(), vec![file]).await;
    let boot = cam.dial_addrs().await.expect("addrs");
    let viewer = dir.path().join("viewer");
    mesh_folder(&viewer, FLEET, "viewer", &["*"], Rights::LIVE);

    // AAC in Matroska: 150 video frames (5 s at 30 fps) and about 46.9 AAC frames a
    // second (1024 samples at 48 kHz): 234 for those 5 s, within 20 %.
    let mkv = dir.path().join("aac.mkv");
    let t = std::time::Instant::now();
    let err = watch(&viewer, &boot, "cam-aac", "mkv", &mkv);
    println!(
        "{}",
        err.lines()
            .filter(|l| l.contains("writing") || l.contains("wrote"))
            .collect::<Vec<_>>()
            .join(" | ")
    );
    let p = probe(&mkv);
    println!("aac.mkv ({:?}): {p:?}", t.elapsed());
    assert_eq!(p.len(), 2, "{p:?}");
    let (video, audio) = (&p[0], &p[1]);
    assert_eq!(video.0, "h264", "{p:?}");
    assert!((148..=150).contains(&video.2), "{p:?}");
    assert_eq!((audio.0.as_str(), audio.1), ("aac", 48_000), "{p:?}");
    let want = video.2 as f64 / 30.0 * 48_000.0 / 1024.0;
    assert!(
        (audio.2 as f64 - want).abs() <= want * 0.2,
        "{} AAC frames for {} video frames (expected {want:.0} +- 20 %)",
        audio.2,
        video.2
    );
    let errors = decode_errors(&mkv);
    assert!(errors.is_empty(), "the file decodes cleanly: {errors}");

    // G.711 A-law (in Matroska: MPEG-TS has no standard mapping for it): one byte per
    // sample at 8 kHz, as many seconds as video.
    let alaw = dir.path().join("pcma.mkv");
    let t = std::time::Instant::now();
    watch(&viewer, &boot, "cam-pcma", "mkv", &alaw);
    let p = probe(&alaw);
    println!("pcma.mkv ({:?}): {p:?}", t.elapsed());
    let audio = p
        .iter()
        .find(|s| s.0 == "pcm_alaw")
        .unwrap_or_else(|| panic!("no A-law track: {p:?}"));
    let video = p
        .iter()
        .find(|s| s.0 == "h264")
        .unwrap_or_else(|| panic!("no video: {p:?}"));
    assert_eq!(audio.1, 8000);
    let (audio_s, video_s) = (audio.3 as f64 / 8000.0, video.2 as f64 / 30.0);
    assert!(
        (audio_s - video_s).abs() <= video_s * 0.2,
        "{audio_s:.2} s of audio for {video_s:.2} s of video"
    );

    // AAC in MPEG-TS (ADTS headers added by the muxer): both tracks found again.
    let ts = dir.path().join("aac.ts");
    let t = std::time::Instant::now();
    watch(&viewer, &boot, "cam-aac", "mpegts", &ts);
    let p = probe(&ts);
    println!("aac.ts ({:?}): {p:?}", t.elapsed());
    assert!(p.iter().any(|s| s.0 == "aac" && s.1 == 48_000), "{p:?}");
    assert!(p.iter().any(|s| s.0 == "h264" && s.2 >= 148), "{p:?}");

    // Through a forwarder (it holds the `forward` right only: ciphertext, no keys): the
    // audio comes along, sealed like the video.
    let fwd_dir = dir.path().join("fwd");
    let f = fleet(FLEET);
    f.enroll_dir(&fwd_dir, camesh_proto::pb::MemberRole::Nvr, "forwarder", &[], 3600)
        .expect("enroll");
    f.grant_dir(&fwd_dir, &["*".into()], Rights::FORWARD, 3600)
        .expect("grant");
    let mut fc = loopback_config(Role::Nvr, FLEET);
    fc.node.bootstrap = boot.clone();
    let fwd = camesh_node::Node::spawn(fc, &fwd_dir).await.expect("forwarder starts");
    let _forwarding = fwd
        .forward("cam-aac", cam.peer_id(), camesh_proto::pb::Profile::Main)
        .await
        .expect("forwards");
    let mut both = boot.clone();
    both.extend(fwd.dial_addrs().await.expect("addrs"));
    let via = dir.path().join("via.mkv");
    let fwd_peer = fwd.peer_id().to_string();
    let err = watch_with(
        &viewer,
        &both,
        "cam-aac",
        "mkv",
        &via,
        &["--via", &fwd_peer, "--prefer-via"],
    );
    let p = probe(&via);
    println!("via the forwarder: {p:?}");
    assert!(
        err.contains(&format!("from {fwd_peer}")),
        "watched through the forwarder: {err}"
    );
    let forwarded = fwd
        .hubs()
        .forwarded("cam-aac", camesh_proto::pb::Profile::Main)
        .expect("forwarded hub");
    assert!(forwarded.audio().is_some(), "the forwarder carries the audio track");
    assert!(p.iter().any(|s| s.0 == "aac" && s.1 == 48_000 && s.2 >= 150), "{p:?}");
    fwd.shutdown();

    // A file source's sound: AAC 48 kHz beside the looping pictures.
    let file = dir.path().join("file.mkv");
    watch(&viewer, &boot, "cam-file", "mkv", &file);
    let p = probe(&file);
    println!("file source: {p:?}");
    let video = p
        .iter()
        .find(|s| s.0 == "h264")
        .unwrap_or_else(|| panic!("no video: {p:?}"));
    let audio = p
        .iter()
        .find(|s| s.0 == "aac")
        .unwrap_or_else(|| panic!("no AAC: {p:?}"));
    assert_eq!(audio.1, 48_000, "{p:?}");
    let want = video.2 as f64 / 30.0 * 48_000.0 / 1024.0;
    assert!(
        (audio.2 as f64 - want).abs() <= want * 0.2,
        "{} AAC frames for {} video frames (expected {want:.0} +- 20 %)",
        audio.2,
        video.2
    );

    // Annex B is video only, as before.
    let raw = dir.path().join("video.h264");
    watch(&viewer, &boot, "cam-aac", "annexb", &raw);
    let p = probe(&raw);
    assert_eq!(
        p.iter().map(|s| s.0.as_str()).collect::<Vec<_>>(),
        vec!["h264"],
        "{p:?}"
    );
    cam.shutdown();
}

/// `GET /cam/<id>/live.mp4` with the camera's audio as a second track: a gateway on a
/// viewer node (the audio comes through the mesh) serves AAC by default; a gateway on the
/// camera node itself (straight from its hub) serves A-law when asked with `?audio=on`
/// and leaves it out by default (browsers cannot play G.711 from MP4). ffprobe reads the
/// tracks; the amount of audio matches the video's within 20 %.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateways_live_mp4_carries_the_audio() {
    use camesh_node::gateway::{Gateway, GatewayOptions};
    init_tracing();
    if !rtsp_server_or_skip("the_gateways_live_mp4_carries_the_audio") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (_server, cam) = aac_and_pcma_cameras(dir.path(), vec![]).await;
    for id in ["cam-aac", "cam-pcma"] {
        let hub = cam.hubs().get(id).expect("hub");
        assert!(
            wait_until(std::time::Duration::from_secs(20), || hub.is_live()
                && hub.audio().is_some())
            .await,
            "{id} is live with audio"
        );
    }
    let viewer = viewer_node(
        &dir.path().join("viewer"),
        FLEET,
        cam.dial_addrs().await.expect("addrs"),
    )
    .await;
    let remote = Gateway::start(viewer.clone(), GatewayOptions::default())
        .await
        .expect("gateway starts");
    let local = Gateway::start(cam.clone(), GatewayOptions::default())
        .await
        .expect("gateway starts");

    let fetch = |addr: std::net::SocketAddr, path: &'static str, name: &'static str| {
        let out = dir.path().join(name);
        async move {
            let r = camesh_tests::http::get_for(addr, path, std::time::Duration::from_secs(6), 32 << 20)
                .await
                .expect("live.mp4");
            assert_eq!(r.status, 200, "{path}: {}", r.text());
            std::fs::write(&out, &r.body).expect("written");
            (r.header("content-type").unwrap_or("").to_owned(), probe(&out))
        }
    };

    let (mime, p) = fetch(remote.local_addr(), "/cam/cam-aac/live.mp4", "aac.mp4").await;
    println!("aac live.mp4 ({mime}): {p:?}");
    assert!(mime.contains("mp4a.40.2"), "{mime}");
    let video = p
        .iter()
        .find(|s| s.0 == "h264")
        .unwrap_or_else(|| panic!("no video: {p:?}"));
    let audio = p
        .iter()
        .find(|s| s.0 == "aac")
        .unwrap_or_else(|| panic!("no AAC: {p:?}"));
    assert_eq!(audio.1, 48_000, "{p:?}");
    assert!(video.2 >= 60, "{p:?}");
    let want = video.2 as f64 / 30.0 * 48_000.0 / 1024.0;
    assert!(
        (audio.2 as f64 - want).abs() <= want * 0.2,
        "{} AAC frames for {} video frames (expected {want:.0} +- 20 %)",
        audio.2,
        video.2
    );

    let errors = decode_errors(&dir.path().join("aac.mp4"));
    assert!(errors.is_empty(), "live.mp4 decodes cleanly: {errors}");

    let (_, p) = fetch(local.local_addr(), "/cam/cam-pcma/live.mp4?audio=on", "pcma.mp4").await;
    println!("pcma live.mp4?audio=on: {p:?}");
    let video = p
        .iter()
        .find(|s| s.0 == "h264")
        .unwrap_or_else(|| panic!("no video: {p:?}"));
    let audio = p
        .iter()
        .find(|s| s.0 == "pcm_alaw")
        .unwrap_or_else(|| panic!("no A-law: {p:?}"));
    let (audio_s, video_s) = (audio.3 as f64 / 8000.0, video.2 as f64 / 30.0);
    assert!(video.2 >= 60, "{p:?}");
    assert!(
        (audio_s - video_s).abs() <= video_s * 0.2,
        "{audio_s:.2} s of audio for {video_s:.2} s of video"
    );
    let (mime, p) = fetch(local.local_addr(), "/cam/cam-pcma/live.mp4", "pcma-auto.mp4").await;
    assert_eq!(
        p.iter().map(|s| s.0.as_str()).collect::<Vec<_>>(),
        ["h264"],
        "{mime} {p:?}"
    );
    cam.shutdown();
}

/// The NVR records the camera's audio beside its video (it asks for it, the segment
/// headers describe it) and `mesh export` writes it as the MP4's second track: for the
/// AAC camera and for the A-law one, ffprobe finds both tracks with the camera's codec,
/// and as much audio as video within 20 %; ffmpeg decodes the files cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_nvr_records_the_audio_and_exports_it_in_the_mp4() {
    use camesh_node::config::RecordRule;
    use camesh_tests::nvr::{log_text, nvr_folder, start_nvr};
    init_tracing();
    if !rtsp_server_or_skip("the_nvr_records_the_audio_and_exports_it_in_the_mp4") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (_server, cam) = aac_and_pcma_cameras(dir.path(), vec![]).await;
    let cam_addr = cam.dial_addrs().await.expect("addrs").remove(0);
    let nvr_dir = dir.path().join("nvr");
    nvr_folder(&nvr_dir, FLEET, &cam_addr, "cam-aac", |c| {
        c.nvr.fsync_interval_ms = 200;
        c.nvr.records.push(RecordRule {
            camera: "cam-pcma".into(),
            ..RecordRule::default()
        });
    });
    fleet(FLEET)
        .grant_dir(&nvr_dir, &["cam-pcma".into()], Rights::LIVE.union(Rights::RECORD), 3600)
        .expect("grant");
    let nvr = start_nvr(&nvr_dir);
    let recording = |id: &str| {
        log_text(&nvr_dir)
            .lines()
            .any(|l| l.contains("recording") && l.contains(id))
    };
    assert!(
        wait_until(std::time::Duration::from_secs(40), || recording("cam-aac")
            && recording("cam-pcma"))
        .await,
        "{}",
        log_text(&nvr_dir)
    );
    let t0 = camesh_node::clock::now_unix_us();
    tokio::time::sleep(std::time::Duration::from_secs(8)).await;
    let mesh_dir = dir.path().join("mesh");
    mesh_folder(
        &mesh_dir,
        FLEET,
        "mesh",
        &["cam-aac", "cam-pcma"],
        Rights::PLAYBACK.union(Rights::EXPORT),
    );
    let secs = |us: i64| format!("{}.{:06}", us / 1_000_000, us % 1_000_000);
    let (from, to) = (secs(t0 + 1_000_000), secs(t0 + 6_000_000));
    for (id, codec) in [("cam-aac", "aac"), ("cam-pcma", "pcm_alaw")] {
        let mp4 = dir.path().join(format!("{id}.mp4"));
        let out = camesh_tests::cli::run_mesh(
            &mesh_dir,
            FLEET,
            std::slice::from_ref(&nvr.addr),
            &[
                "export",
                id,
                "--from",
                &from,
                "--to",
                &to,
                "-o",
                mp4.to_str().expect("utf-8"),
            ],
        )
        .await;
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "mesh export {id}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("audio:"), "the export says it has audio: {stdout}");
        let p = probe(&mp4);
        println!("{id} export: {p:?}");
        let video = p
            .iter()
            .find(|s| s.0 == "h264")
            .unwrap_or_else(|| panic!("no video: {p:?}"));
        let audio = p
            .iter()
            .find(|s| s.0 == codec)
            .unwrap_or_else(|| panic!("no {codec}: {p:?}"));
        assert!(video.2 >= 120, "about 5 s of video: {p:?}");
        let video_s = video.2 as f64 / 30.0;
        let audio_s = if codec == "aac" {
            assert_eq!(audio.1, 48_000, "{p:?}");
            audio.2 as f64 * 1024.0 / 48_000.0
        } else {
            assert_eq!(audio.1, 8000, "{p:?}");
            audio.3 as f64 / 8000.0
        };
        assert!(
            (audio_s - video_s).abs() <= video_s * 0.2,
            "{id}: {audio_s:.2} s of audio for {video_s:.2} s of video"
        );
        let errors = decode_errors(&mp4);
        assert!(errors.is_empty(), "{id}: decodes cleanly: {errors}");
    }
    drop(nvr);
    cam.shutdown();
}
