//! `mesh events`: a camera's events (motion, the camera's own ONVIF events), live from its
//! node or stored on an NVR. Every event is checked against the camera's signature.

use anyhow::{Context, Result};
use camesh_node::auth::Rights;
use camesh_node::clock::now_unix_us;
use camesh_node::events::client::{self, Ask, Item};
use camesh_node::events::state_word;
use camesh_node::nvr::client::find_nvrs;
use camesh_node::{NodeHandle, PeerId};
use camesh_proto::pb;

use crate::nvr::{fmt_time, parse_time};

#[derive(clap::Args, Debug)]
#[command(
    after_help = "Examples:\n  mesh events cam1 --follow             new events as they happen (from the camera's node)\n  mesh events cam1 --from -1h           the last hour (from an NVR that records cam1, else the camera's recent ones)\n  mesh events cam1 --from -1d --kind motion --json\n  mesh events cam1 --from -10m --follow the last ten minutes, then new ones\n\nLive events need a grant with the live right for the camera; stored ones on an NVR the\nplayback right. Motion events come from cameras with a [camera.motion] section in their\nnode's config; ONVIF events from [camera.onvif] events = true."
)]
pub struct Args {
    /// Camera id (as `mesh cameras` lists it).
    camera: String,
    /// Keep going: print new events as they happen (Ctrl-C ends).
    #[arg(long, short)]
    follow: bool,
    /// Past events from this time (RFC 3339, Unix seconds, `-1h`, `90s ago`).
    #[arg(long, value_parser = time_arg, allow_hyphen_values = true)]
    from: Option<i64>,
    /// Past events up to this time (default: now).
    #[arg(long, value_parser = time_arg, allow_hyphen_values = true)]
    to: Option<i64>,
    /// Only this kind (`motion`, `onvif/` for every ONVIF topic); repeatable.
    #[arg(long = "kind")]
    kinds: Vec<String>,
    /// Most past events to print (the newest).
    #[arg(long, default_value_t = 1000)]
    max: u32,
    /// Ask this NVR (its peer id); default: an NVR among connected peers for --from, the
    /// camera's own node otherwise.
    #[arg(long, conflicts_with = "camera_node")]
    nvr: Option<PeerId>,
    /// Ask the camera's own node even for --from (it keeps its recent events only).
    #[arg(long)]
    camera_node: bool,
    /// One JSON object per line.
    #[arg(long)]
    json: bool,
}

fn time_arg(s: &str) -> Result<i64, String> {
    parse_time(s, now_unix_us())
}

/// Where to ask, and the grant to show there.
async fn source(node: &NodeHandle, a: &Args) -> Result<(PeerId, pb::Signed, &'static str)> {
    let trust = node.trust();
    let live = || {
        trust.grant_for(&a.camera, Rights::LIVE).with_context(|| {
            format!(
                "no grant with the live right for camera {0}: ask a fleet admin (mesh grant <your peer id> --cameras {0} --rights live)",
                a.camera
            )
        })
    };
    let playback = || {
        trust.grant_for(&a.camera, Rights::PLAYBACK).with_context(|| {
            format!(
                "no grant with the playback right for camera {0}: ask a fleet admin (mesh grant <your peer id> --cameras {0} --rights playback)",
                a.camera
            )
        })
    };
    if let Some(nvr) = a.nvr {
        return Ok((nvr, playback()?, "NVR"));
    }
    if a.from.is_some() && !a.camera_node {
        if let Ok(g) = playback() {
            let wait = std::time::Duration::from_secs(3);
            if let Some(nvr) = find_nvrs(node.reach(), wait).await.into_iter().next() {
                return Ok((nvr, g, "NVR"));
            }
        }
    }
    let grant = live()?;
    let peer = node.reach().camera_node(&a.camera).await?;
    Ok((peer, grant, "camera"))
}

pub async fn run(node: &NodeHandle, a: &Args) -> Result<()> {
    let (peer, grant, what) = source(node, a).await?;
    let ask = Ask {
        camera: a.camera.clone(),
        from_us: a.from.unwrap_or(0),
        to_us: if a.follow { 0 } else { a.to.unwrap_or(0) },
        follow: a.follow,
        kinds: a.kinds.clone(),
        max: a.max,
    };
    if a.from.is_none() && !a.follow {
        anyhow::bail!("nothing to show: give --from <time> for past events, --follow for new ones, or both");
    }
    let agent = format!("mesh/{} events", env!("CARGO_PKG_VERSION"));
    let mut events = client::open(node.reach(), peer, &grant, &ask, &agent).await?;
    if !a.json {
        eprintln!("events of {} from the {what} {peer}", a.camera);
    }
    let mut shown = 0u64;
    loop {
        let item = tokio::select! {
            i = events.next() => i?,
            _ = tokio::signal::ctrl_c() => break,
        };
        match item {
            None => break,
            Some(Item::Done { sent, more }) => {
                if !a.json {
                    let cut = if more {
                        format!(" (the newest {sent}; --max shows more)")
                    } else {
                        String::new()
                    };
                    eprintln!("{sent} past events{cut}{}", if a.follow { "; following" } else { "" });
                }
                if !a.follow {
                    break;
                }
            }
            Some(Item::Event(ev)) => {
                let (e, _) = &*ev;
                shown += 1;
                print_event(e, a.json);
            }
        }
    }
    tracing::debug!(shown, "events done");
    Ok(())
}

fn print_event(e: &pb::CameraEvent, json: bool) {
    if json {
        let v = serde_json::json!({
            "camera": e.camera_id,
            "time": fmt_time(e.unix_us),
            "unix_us": e.unix_us,
            "kind": e.kind,
            "state": state_word(e.state),
            "area": e.area,
            "pts_90k": e.pts_90k,
            "detail": e.detail,
            "run": e.run,
            "sequence": e.sequence,
        });
        println!("{v}");
        return;
    }
    let mut line = format!(
        "{}  {}  {:<7} {:<5}",
        fmt_time(e.unix_us),
        e.camera_id,
        e.kind,
        state_word(e.state)
    );
    if e.area > 0.0 {
        line.push_str(&format!("  area {:.1}%", e.area * 100.0));
    }
    if !e.detail.is_empty() {
        line.push_str("  ");
        line.push_str(&e.detail);
    }
    println!("{line}");
}
