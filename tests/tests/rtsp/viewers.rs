//! What viewers pick and play: the stream request's profile chooses the main or the sub
//! stream, and a live B-frame camera plays as `live.mp4` through the gateway.

use std::time::Duration;

use camesh_node::config::RtspTransport;
use camesh_node::media::h264::{self, nal_type, NalType};
use camesh_proto::pb;
use camesh_tests::ffmpeg::{ffmpeg_decode, ffprobe_json};
use camesh_tests::http;
use camesh_tests::rtsp_server::{rtsp_server_or_skip, Mount, RtspServer};
use camesh_tests::*;

use super::{avcc, live_request, mesh, rtsp_camera, T};

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
        let f = next_frame(&mut sub, T).await;
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
    let dec = ffmpeg_decode(&file);
    assert!(dec.status.success());
    assert_eq!(String::from_utf8_lossy(&dec.stderr), "", "decoding reported errors");
    let json = ffprobe_json(&file, &["-show_entries", "stream=width,height:packet=pts,dts"]);
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
