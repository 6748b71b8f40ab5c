//! The camera's audio in the web page (#17, item 1): GStreamer's RTSP server
//! (tests/scripts/rtsp_server.py) serves live H.264 with AAC (48 kHz mono) on one mount
//! and with G.711 A-law (8 kHz) on another; a camera node pulls both with ffmpeg and
//! listens on WebRTC-direct. Headless Chromium (allowed to play sound without a tap) runs
//! the page as a fleet member, watches each camera with its tile's sound on (`sound=` in
//! the link) and must decode as much audio as the video it drew (WebCodecs AudioDecoder,
//! every audio frame through the same freshness and AES-GCM checks as video), none of it
//! rejected, with the video decoding as before. G.711 is watched twice: through the
//! browser's AudioDecoder ("alaw") and through the page's own table (`?g711js`), the path
//! for browsers whose AudioDecoder takes no G.711.

use std::time::Duration;

use camesh_node::auth::grant::GrantRequest;
use camesh_node::auth::{now_s, Rights};
use camesh_node::config::{CameraConfig, Role};
use camesh_tests::rtsp_server::{rtsp_server_or_skip, Mount, RtspServer};
use camesh_tests::web::*;
use camesh_tests::*;

/// The mounts' video frame rate.
const FPS: f64 = 30.0;
/// Video frames the page draws before its figures are read (10 s).
const VIDEO_FRAMES: u64 = 300;

fn rtsp_camera(id: &str, url: String) -> CameraConfig {
    let mut c = camera(id, "cam-640x360-30fps-gop2s.h264");
    c.source = url.into();
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_plays_the_cameras_audio() {
    init_tracing();
    let test = "the_page_plays_the_cameras_audio";
    let Some(chromium) = web_test_ready(test, || Ok(())) else {
        return;
    };
    if !rtsp_server_or_skip(test) {
        return;
    }
    let server = RtspServer::start(&[
        Mount::live("/aac", "320x240,fps=30,gop=30,audio=aac"),
        Mount::live("/pcma", "320x240,fps=30,gop=30,audio=pcma"),
    ]);
    let name = "t-web-audio";
    let dir = tempfile::tempdir().expect("tempdir");
    let f = fleet(name);
    let admin = dir.path().join("admin");
    f.save(&admin).expect("admin folder");
    let mut c = loopback_config(Role::Camera, name);
    c.node.webrtc = Some(true);
    c.cameras = vec![
        rtsp_camera("cam-aac", server.url("/aac")),
        rtsp_camera("cam-pcma", server.url("/pcma")),
    ];
    let cam = spawn_node(c, &dir.path().join("cam")).await;
    let cam_addr = cam
        .dial_addrs()
        .await
        .expect("addrs")
        .into_iter()
        .find(camesh_node::addr::is_webrtc_direct)
        .expect("the camera listens on WebRTC-direct");

    let JoinedPage {
        site,
        mut reports,
        profile,
        peer: page_peer,
        inviting: _inviting,
    } = join_page(chromium, &admin, dir.path().join("profile")).await;
    let now = now_s();
    let g = f.grant(&GrantRequest {
        holder: page_peer,
        cameras: vec!["cam-aac".into(), "cam-pcma".into()],
        tags: vec![],
        rights: Rights::LIVE,
        not_before_unix_s: now - 60,
        not_after_unix_s: now + 3600,
    });

    for (camera, codec, rate, decoder, query) in [
        ("cam-aac", "aac", 48_000, "mp4a.40.2", "report"),
        ("cam-pcma", "pcma", 8_000, "alaw", "report"),
        ("cam-pcma", "pcma", 8_000, "js", "report&g711js"),
    ] {
        drain_reports(&mut reports);
        let url = format!(
            "{site}index.html?{query}#{}&peer={cam_addr}&watch={camera}&sound={camera}",
            grant_text(&g)
        );
        // Sound without a tap: the tile's sound is on from the link (`sound=`), and this
        // switch lets the page's AudioContext run as a tap on the Sound button would.
        let page = open_page_with(
            chromium,
            &url,
            &profile,
            &["--autoplay-policy=no-user-gesture-required"],
        );
        let played = wait_report(&mut reports, camera, Duration::from_secs(90), |v| {
            let t = &v["grid"]["tiles"][camera];
            t["decoded"].as_u64().is_some_and(|n| n >= VIDEO_FRAMES)
                && t["audio"]["decoded"].as_u64().is_some_and(|n| n > 0)
        })
        .await;
        let t = &played["grid"]["tiles"][camera];
        let a = &t["audio"];
        println!("{camera} ({decoder}): video {} frames decoded; audio {a}", t["decoded"]);
        assert_eq!(a["codec"], codec, "{a}");
        assert_eq!(a["decoder"], decoder, "{a}");
        assert_eq!(a["sampleRate"], rate, "{a}");
        assert_eq!(a["channels"], 1, "{a}");
        assert_eq!(a["state"], "decoding", "{a}");
        assert_eq!(a["rejected"], 0, "{a}");
        assert_eq!(a["decodeErrors"], 0, "{a}");
        assert_eq!((&a["on"], &a["context"]), (&true.into(), &"running".into()), "{a}");
        assert!(a["played"].as_u64().unwrap_or(0) > 0, "the sound was scheduled: {a}");
        let video = t["decoded"].as_u64().unwrap_or(0);
        assert!(video > 60, "the video decodes: {t}");
        assert_eq!(t["decodeErrors"], 0, "{t}");
        assert_eq!(t["rejected"], 0, "{t}");
        let video_s = video as f64 / FPS;
        let audio_s = a["decodedMs"].as_f64().unwrap_or(0.0) / 1000.0;
        let frames = a["decoded"].as_u64().unwrap_or(0) as f64;
        if codec == "aac" {
            // 1024 samples a frame: 46.875 frames a second at 48 kHz.
            let want = video_s * 48_000.0 / 1024.0;
            println!("{camera}: {frames} AAC frames decoded, {want:.0} expected for {video_s:.2} s of video");
            assert!(
                (frames - want).abs() <= want * 0.2,
                "{frames} AAC frames for {video} video frames (expected {want:.0} +- 20 %): {a}"
            );
        }
        // Any codec: as much sound as picture (G.711's frame size is the packetiser's).
        println!("{camera}: {audio_s:.2} s of audio decoded for {video_s:.2} s of video");
        assert!(
            (audio_s - video_s).abs() <= video_s * 0.2,
            "{audio_s:.2} s of audio for {video_s:.2} s of video: {a}"
        );
        close_page(page).await;
    }
    cam.shutdown();
}
