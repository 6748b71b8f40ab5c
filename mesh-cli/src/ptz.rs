//! `mesh ptz`: pan, tilt, zoom and presets of a camera over the mesh. The camera's node
//! turns each request into ONVIF PTZ calls (needs a grant with the `ptz` right).

use std::time::Duration;

use anyhow::{bail, Result};
use camesh_node::ptz::client;
use camesh_node::NodeHandle;
use camesh_proto::pb;

#[derive(clap::Args, Debug)]
#[command(
    after_help = "Examples:\n  mesh ptz cam1 --pan 0.3 --for 1s     pan right at 30% speed for one second, then stop\n  mesh ptz cam1 --tilt -0.5            tilt down until `mesh ptz cam1 --stop`\n  mesh ptz cam1 --preset 2             go to preset 2\n  mesh ptz cam1 --home                 go to the home position\n  mesh ptz cam1 --presets              list the camera's presets\n  mesh ptz cam1 --to 0,0.2,0.5         absolute pan,tilt,zoom (where the camera supports it)\n  mesh ptz cam1 --by 0.1,0,0           relative pan,tilt,zoom steps"
)]
pub struct Args {
    /// Camera id (as `mesh cameras` lists it).
    camera: String,
    /// Pan speed, -1 (left) to 1 (right).
    #[arg(long, allow_negative_numbers = true, default_value_t = 0.0)]
    pan: f32,
    /// Tilt speed, -1 (down) to 1 (up).
    #[arg(long, allow_negative_numbers = true, default_value_t = 0.0)]
    tilt: f32,
    /// Zoom speed, -1 (out) to 1 (in).
    #[arg(long, allow_negative_numbers = true, default_value_t = 0.0)]
    zoom: f32,
    /// Move for this long, then the camera's node stops it (e.g. 1s, 500ms; at most 60s).
    #[arg(long = "for", value_name = "DURATION", value_parser = crate::parse_duration)]
    duration: Option<Duration>,
    /// Stop moving.
    #[arg(long, conflicts_with_all = ["preset", "home", "presets", "to", "by"])]
    stop: bool,
    /// Go to this preset (its token, as --presets lists).
    #[arg(long, conflicts_with_all = ["home", "presets", "to", "by"])]
    preset: Option<String>,
    /// Go to the home position.
    #[arg(long, conflicts_with_all = ["presets", "to", "by"])]
    home: bool,
    /// List the camera's presets.
    #[arg(long, conflicts_with_all = ["to", "by"])]
    presets: bool,
    /// Absolute position PAN,TILT,ZOOM (each -1..1).
    #[arg(
        long,
        value_name = "PAN,TILT,ZOOM",
        allow_hyphen_values = true,
        conflicts_with = "by"
    )]
    to: Option<String>,
    /// Relative move PAN,TILT,ZOOM (each -1..1).
    #[arg(long, value_name = "PAN,TILT,ZOOM", allow_hyphen_values = true)]
    by: Option<String>,
}

fn triple(s: &str, what: &str) -> Result<pb::PtzPosition> {
    let v: Vec<f32> = s
        .split(',')
        .map(|x| x.trim().parse::<f32>())
        .collect::<Result<_, _>>()
        .map_err(|_| anyhow::anyhow!("--{what} takes PAN,TILT,ZOOM numbers, e.g. 0.1,0,0 (got {s:?})"))?;
    let [pan, tilt, zoom] = v[..] else {
        bail!("--{what} takes three numbers PAN,TILT,ZOOM (got {s:?})");
    };
    Ok(pb::PtzPosition { pan, tilt, zoom })
}

pub async fn run(node: &NodeHandle, args: &Args) -> Result<()> {
    use pb::ptz_request::Op;
    let moving = args.pan != 0.0 || args.tilt != 0.0 || args.zoom != 0.0;
    let op = if args.stop {
        Op::Stop(pb::PtzStop {})
    } else if let Some(p) = &args.preset {
        Op::GotoPreset(p.clone())
    } else if args.home {
        Op::Home(pb::PtzHome {})
    } else if args.presets {
        Op::ListPresets(pb::PtzListPresets {})
    } else if let Some(s) = &args.to {
        Op::Absolute(triple(s, "to")?)
    } else if let Some(s) = &args.by {
        Op::Relative(triple(s, "by")?)
    } else if moving {
        Op::Move(pb::PtzMove {
            pan: args.pan,
            tilt: args.tilt,
            zoom: args.zoom,
            duration_ms: args
                .duration
                .map_or(0, |d| u32::try_from(d.as_millis()).unwrap_or(u32::MAX)),
        })
    } else {
        bail!(
            "nothing to do: give --pan/--tilt/--zoom (with --for), --stop, --preset, --home, --presets, --to or --by"
        );
    };
    if args.duration.is_some() && !moving {
        bail!("--for goes with a move (--pan, --tilt or --zoom)");
    }
    let what = match &op {
        Op::Move(m) if m.duration_ms > 0 => format!("moving for {} ms", m.duration_ms),
        Op::Move(_) => "moving (until mesh ptz --stop)".into(),
        Op::Stop(_) => "stopped".into(),
        Op::GotoPreset(p) => format!("going to preset {p}"),
        Op::Home(_) => "going home".into(),
        Op::ListPresets(_) => String::new(),
        Op::Absolute(_) => "moving to the position".into(),
        Op::Relative(_) => "moving by the step".into(),
    };
    let list = matches!(op, Op::ListPresets(_));
    let agent = format!("mesh/{} ptz", env!("CARGO_PKG_VERSION"));
    let presets = client::request(node.reach(), &args.camera, op, &agent).await?;
    if list {
        if presets.is_empty() {
            println!("{} has no presets", args.camera);
        }
        for p in presets {
            println!("{}\t{}", p.token, p.name);
        }
    } else {
        println!("{}: {what}", args.camera);
    }
    Ok(())
}
