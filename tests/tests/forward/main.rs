//! Application-level forwarding end to end: real nodes over QUIC on 127.0.0.1.
//!
//! A forwarder re-serves a camera it receives, sealed: the camera uploads each stream
//! once however many viewers sit behind it ([`fanout`]); a forwarder with only the
//! `forward` right never gets a key, and what it injects is rejected; a viewer without a
//! grant is refused by the forwarder with a reason ([`rights`]); a viewer whose forwarder
//! dies or goes silent resumes directly, and one found later is taken make-before-break
//! ([`routes`]); `mesh path` and `mesh peers` show it all ([`cli`]).

mod cli;
mod fanout;
mod rights;
mod routes;

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use camesh_node::auth::Rights;
use camesh_node::config::Role;
use camesh_node::{Multiaddr, Node, NodeHandle};
use camesh_proto::pb::MemberRole;
use camesh_tests::*;

const CLIP: &str = "cam-640x360-30fps-gop2s.h264";
const T: Duration = Duration::from_secs(20);

/// A fleet member (NVR role) holding only the given rights on every camera.
async fn member_with(dir: &Path, fleet_name: &str, rights: Option<Rights>, boot: Vec<Multiaddr>) -> NodeHandle {
    let f = fleet(fleet_name);
    f.enroll_dir(dir, MemberRole::Nvr, "forwarder", &[], 3600)
        .expect("enroll");
    if let Some(r) = rights {
        f.grant_dir(dir, &["*".into()], r, 3600).expect("grant");
    }
    let mut c = loopback_config(Role::Nvr, fleet_name);
    c.node.bootstrap = boot;
    Node::spawn(c, dir).await.expect("node starts")
}

/// A camera node serving cam1 and, bootstrapped from it, a member holding only the
/// `forward` right (not forwarding yet): `(camera, its addresses, member, its addresses)`.
async fn cam_and_forwarder(dir: &Path, fleet_name: &str) -> (NodeHandle, Vec<Multiaddr>, NodeHandle, Vec<Multiaddr>) {
    let cam = camera_node(&dir.join("cam"), fleet_name, vec![camera("cam1", CLIP)], vec![]).await;
    let cam_addrs = cam.dial_addrs().await.expect("addrs");
    let fwd = member_with(&dir.join("fwd"), fleet_name, Some(Rights::FORWARD), cam_addrs.clone()).await;
    let fwd_addrs = fwd.dial_addrs().await.expect("addrs");
    (cam, cam_addrs, fwd, fwd_addrs)
}

/// Bytes the camera's sessions sent for `camera`, and what its source produced.
fn camera_bytes(cam: &NodeHandle, camera: &str) -> (u64, u64) {
    let hub = cam.hubs().get(camera).expect("hub");
    let sent = hub
        .subscribers()
        .iter()
        .map(|s| s.sent_bytes.load(Ordering::Relaxed))
        .sum();
    (sent, hub.counters.bytes_in.load(Ordering::Relaxed))
}

/// How many audit events named `event` `node` holds (of its last 1000).
fn audited(node: &NodeHandle, event: &str) -> usize {
    node.trust()
        .audit
        .tail(1000)
        .iter()
        .filter(|e| e.event == event)
        .count()
}
