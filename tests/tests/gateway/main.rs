//! The local HTTP gateway with real clients on the other end: ffprobe/ffmpeg and VLC read
//! `/cam/<id>/live.mp4` and `snapshot.jpg` ([`players`]), headless Chromium plays the
//! page through Media Source Extensions ([`browser`]), `/metrics` parses as Prometheus
//! text and moves while video flows, and a foreign Host header is refused
//! ([`endpoints`]); `camesh-node run --gateway`, `mesh view` and `mesh top` serve and
//! show the fleet ([`cli`]).

mod browser;
mod cli;
mod endpoints;
mod players;

use std::path::Path;
use std::time::Duration;

use camesh_node::gateway::{Gateway, GatewayOptions};
use camesh_node::NodeHandle;
use camesh_tests::*;

const T: Duration = Duration::from_secs(20);
const GOP2: &str = "cam-640x360-30fps-gop2s.h264";
const BFRAMES: &str = "cam-640x360-bframes.mp4";

/// A camera node serving `cams` (id, clip), a viewer connected to it, and a gateway on
/// the viewer.
async fn fleet_with_gateway(dir: &Path, fleet: &str, cams: &[(&str, &str)]) -> (NodeHandle, NodeHandle, Gateway) {
    let cam = camera_node(
        &dir.join("cam"),
        fleet,
        cams.iter().map(|(id, clip)| camera(id, clip)).collect(),
        vec![],
    )
    .await;
    for (id, _) in cams {
        let hub = cam.hubs().get(id).expect("hub");
        assert!(wait_until(T, || hub.is_live()).await, "{id} is live");
    }
    let viewer = viewer_node(&dir.join("viewer"), fleet, cam.dial_addrs().await.expect("addrs")).await;
    let gw = Gateway::start(viewer.clone(), GatewayOptions::default())
        .await
        .expect("gateway starts");
    assert!(gw.local_addr().ip().is_loopback(), "bound to 127.0.0.1 by default");
    (cam, viewer, gw)
}
