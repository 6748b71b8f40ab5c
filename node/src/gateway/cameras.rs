//! The cameras this node knows (its own, then the fleet directory's), and
//! `GET /api/cameras`: them as JSON, with the live state of the gateway's stream of each.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use camesh_proto::pb;

use super::guard::Viewer;
use super::GatewayNode;
use super::{tap, Shared};
use crate::media::fmp4;

/// One camera as the page and `/api/cameras` show it.
#[derive(Debug, Clone)]
pub(super) struct CameraRow {
    id: String,
    name: String,
    peer: String,
    width: u32,
    height: u32,
    fps: f64,
    live: bool,
    profiles: Vec<&'static str>,
    local: bool,
}

fn profile_names(profiles: &[i32]) -> Vec<&'static str> {
    let mut v: Vec<&'static str> = profiles
        .iter()
        .filter_map(|p| match pb::Profile::try_from(*p) {
            Ok(pb::Profile::Main) => Some("main"),
            Ok(pb::Profile::Sub) => Some("sub"),
            Err(_) => None,
        })
        .collect();
    if v.is_empty() {
        v.push("main");
    }
    v
}

/// The cameras this node knows: its own, then the directory's (one row per camera).
pub(super) fn camera_rows(node: &GatewayNode) -> Vec<CameraRow> {
    let mut rows: BTreeMap<String, CameraRow> = BTreeMap::new();
    let me = node.peer_id();
    for ann in node.hubs.announcements(me, &[]) {
        rows.insert(
            ann.camera_id.clone(),
            CameraRow {
                id: ann.camera_id.clone(),
                name: ann.name.clone(),
                peer: me.to_string(),
                width: ann.width,
                height: ann.height,
                fps: fps(ann.fps_num, ann.fps_den),
                live: ann.live,
                profiles: profile_names(&ann.profiles),
                local: true,
            },
        );
    }
    for e in node.reach.directory().cameras() {
        let a = &e.announcement;
        let better = rows.get(&a.camera_id).is_none_or(|r| !r.local && !r.live && a.live);
        if better {
            rows.insert(
                a.camera_id.clone(),
                CameraRow {
                    id: a.camera_id.clone(),
                    name: a.name.clone(),
                    peer: e.peer.to_string(),
                    width: a.width,
                    height: a.height,
                    fps: fps(a.fps_num, a.fps_den),
                    live: a.live,
                    profiles: profile_names(&a.profiles),
                    local: false,
                },
            );
        }
    }
    rows.into_values().collect()
}

fn fps(num: u32, den: u32) -> f64 {
    if den == 0 {
        0.0
    } else {
        f64::from(num) / f64::from(den)
    }
}

pub(super) async fn api_cameras(State(s): State<Arc<Shared>>, viewer: Option<Extension<Viewer>>) -> Response {
    let taps: BTreeMap<String, tap::TapStatus> = s
        .taps
        .all()
        .into_iter()
        .filter(|t| t.profile == pb::Profile::Main)
        .map(|t| (t.camera.clone(), t.status()))
        .collect();
    let cameras: Vec<serde_json::Value> = camera_rows(&s.node)
        .into_iter()
        .filter(|r| viewer.as_ref().is_none_or(|v| v.0 .0.may_watch(&r.id)))
        .map(|r| {
            let stream = taps.get(&r.id).map(|t| {
                serde_json::json!({
                    "status": t.status,
                    "live": t.live,
                    "peer": t.peer.map(|p| p.to_string()),
                    "path": t.path.map(|p| p.as_str()),
                    "fps": t.stats.fps,
                    "kbit_s": t.stats.kbit_s,
                    "latency_p50_ms": t.stats.latency_p50_ms,
                    "skips": t.stats.skips,
                    "gaps": t.stats.gaps,
                    "codecs": t.params.as_ref().map(|p| fmp4::codec_string(&p.sps)),
                    "audio": t.audio.as_ref().map(|a| a.codec.name()),
                })
            });
            serde_json::json!({
                "id": r.id, "name": r.name, "peer": r.peer, "width": r.width, "height": r.height,
                "fps": r.fps, "live": r.live, "profiles": r.profiles, "local": r.local,
                "live_mp4": format!("/cam/{}/live.mp4", r.id),
                "snapshot": format!("/cam/{}/snapshot.jpg", r.id),
                "stream": stream,
            })
        })
        .collect();
    let body = serde_json::json!({
        "node": { "peer_id": s.node.peer_id().to_string(), "fleet": s.node.fleet_id },
        "cameras": cameras,
    });
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body.to_string(),
    )
        .into_response()
}
