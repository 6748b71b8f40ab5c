//! RTSP ingest against a real RTSP server (GStreamer's, from Debian, started by the test;
//! see `camesh_tests::rtsp_server`): cameras served by it reach viewers through the mesh
//! byte for byte as ffmpeg reads them directly ([`identity`]), over TCP and UDP, with
//! credentials, the server restarting, and clear refusals of H.265 and audio-only
//! streams ([`source`]); a main and a sub profile, and B-frames through the gateway
//! ([`viewers`]); a camera daemon's log file holds log lines only, libav's included
//! ([`logs`]).

mod identity;
mod logs;
mod source;
mod viewers;

use std::path::Path;
use std::time::Duration;

use camesh_node::config::{CameraConfig, RtspTransport};
use camesh_node::media::h264::{self, nal_type, NalType};
use camesh_node::NodeHandle;
use camesh_proto::pb;
use camesh_tests::*;

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
        onvif: None,
        motion: None,
        talkback: None,
    }
}

fn live_request(camera: &str, profile: pb::Profile) -> pb::StreamRequest {
    pb::StreamRequest {
        audio: false,
        profile: profile as i32,
        user_agent: "camesh-tests rtsp".into(),
        ..live(camera)
    }
}

/// A camera node for `cams` and a viewer connected to it; waits until `live` cameras
/// have video.
async fn mesh(dir: &Path, fleet: &str, cams: Vec<CameraConfig>) -> (NodeHandle, NodeHandle) {
    let ids: Vec<String> = cams.iter().map(|c| c.id.clone()).collect();
    let (cam, viewer) = camera_and_viewer(dir, fleet, cams).await;
    for id in ids {
        let hub = cam.hubs().get(&id).expect("hub");
        assert!(
            wait_until(T, || hub.is_live()).await,
            "camera {id} got no video from the RTSP server within {T:?}"
        );
    }
    (cam, viewer)
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
