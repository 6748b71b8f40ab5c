//! `mesh watch`: a camera's live video as H.264 Annex B (or, with `--format mkv|mpegts`,
//! a container with its audio too) on stdout or in a file, with live stats on stderr. Survives source restarts (the node's watcher retries with
//! backoff) and reports each gap.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use camesh_node::clock::now_unix_us;
use camesh_node::media::h264;
use camesh_node::media::is_audio;
use camesh_node::media::mux::{Container, Muxer};
use camesh_node::stream::codecs::audio_params;
use camesh_node::stream::server::codec_params;
use camesh_node::stream::stats::LiveStats;
use camesh_node::watch::{WatchEvent, WatchOptions};
use camesh_node::{NodeHandle, PeerId};
use tokio_util::sync::CancellationToken;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Camera id (as `mesh cameras` lists it).
    camera: String,
    /// Output file, or - for stdout (the default).
    #[arg(long, short, default_value = "-")]
    output: PathBuf,
    /// What to write: `annexb` (raw H.264, video only; the default), or a container with
    /// the camera's audio too when it has some: `mkv` (Matroska) or `mpegts`.
    #[arg(long, value_enum, default_value_t = FormatArg::Annexb)]
    format: FormatArg,
    /// Stop after this long (e.g. 10s, 2m).
    #[arg(long, value_parser = crate::parse_duration)]
    duration: Option<Duration>,
    /// Stop after this many frames.
    #[arg(long)]
    frames: Option<u64>,
    /// How long to keep looking for the camera (discovery is retried meanwhile) and to
    /// wait for its first frame; then give up, saying whether any member knew it.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    timeout: Duration,
    /// Ask this peer only.
    #[arg(long)]
    peer: Option<PeerId>,
    /// Which of the camera's streams: `main`, `sub` (its smaller stream, when it has
    /// one), or `auto`: start on main and move to sub when the link does not carry main
    /// (the source skips frames, frames arrive late, the ping RTT rises), and back to main
    /// when a probe of main beside sub runs clean. Switches happen at a keyframe, make
    /// before break. Not with --via/--find-forwarders.
    #[arg(long, value_enum, default_value_t = ProfileArg::Main)]
    profile: ProfileArg,
    /// Also consider this forwarder (repeatable): the best route is used, with failover
    /// and make-before-break switching between the camera's node and the forwarders.
    #[arg(long)]
    via: Vec<PeerId>,
    /// Prefer the forwarders over the direct route (spare the camera's uplink).
    #[arg(long)]
    prefer_via: bool,
    /// Ask connected peers now and then which of them forward the camera, and consider
    /// those routes too.
    #[arg(long)]
    find_forwarders: bool,
    /// No stats on stderr.
    #[arg(long, short)]
    quiet: bool,
    /// Diagnostics: append one line per event to this file (`frame seq=.. key=..
    /// capture_us=.. recv_us=.. skipped=.. bytes=..`, `started peer=.. gap_ms=..`, `interrupted ..`).
    #[arg(long, value_name = "FILE")]
    frame_log: Option<PathBuf>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum FormatArg {
    Annexb,
    Mkv,
    Mpegts,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProfileArg {
    Main,
    Sub,
    Auto,
}

pub async fn run(node: &NodeHandle, args: &Args) -> Result<()> {
    let adaptive = args.profile == ProfileArg::Auto;
    if adaptive && (!args.via.is_empty() || args.find_forwarders) {
        bail!("--profile auto watches the camera's own node; it does not combine with --via or --find-forwarders");
    }
    // A player on stdout gets each frame as it comes (and a player that quits is noticed
    // at the next frame); a file gets large writes.
    let to_stdout = args.output.as_os_str() == "-";
    let container = match args.format {
        FormatArg::Annexb => None,
        FormatArg::Mkv => Some(Container::Matroska),
        FormatArg::Mpegts => Some(Container::MpegTs),
    };
    // A container is written by ffmpeg itself, once the codecs are known.
    let mut muxer: Option<Muxer> = None;
    let mut out: Box<dyn Write + Send> = if to_stdout || container.is_some() {
        Box::new(std::io::BufWriter::with_capacity(1 << 20, std::io::stdout()))
    } else {
        Box::new(std::io::BufWriter::new(
            std::fs::File::create(&args.output).with_context(|| format!("creating {}", args.output.display()))?,
        ))
    };
    let cancel = CancellationToken::new();
    let mut opts = WatchOptions::new(args.camera.clone());
    opts.peer = args.peer;
    opts.profile = match args.profile {
        ProfileArg::Sub => camesh_proto::pb::Profile::Sub,
        ProfileArg::Main | ProfileArg::Auto => camesh_proto::pb::Profile::Main,
    };
    opts.user_agent = format!("mesh/{} watch", env!("CARGO_PKG_VERSION"));
    opts.audio = container.is_some();
    let mut events = if adaptive {
        node.watch_adaptive(opts, cancel.clone())
    } else if args.via.is_empty() && !args.find_forwarders {
        node.watch(opts, cancel.clone())
    } else {
        let mut routes = camesh_node::watch::RouteOptions::via(args.via.clone());
        routes.prefer_via = args.prefer_via;
        routes.discover_every = args.find_forwarders.then_some(Duration::from_secs(10));
        node.watch_routes(opts, routes, cancel.clone())
    };
    let deadline = args.duration.map(|d| tokio::time::Instant::now() + d);
    // Until video starts: give up at `--timeout` with the last reason.
    let mut find_deadline = Some(tokio::time::Instant::now() + args.timeout);
    let mut last_error: Option<String> = None;
    let mut stats = LiveStats::new(2000);
    let mut last_print = Instant::now();
    let mut annexb = Vec::with_capacity(256 << 10);
    let mut frames = 0u64;
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let mut log = match &args.frame_log {
        Some(p) => Some(std::io::LineWriter::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .with_context(|| format!("opening {}", p.display()))?,
        )),
        None => None,
    };
    let result = loop {
        let ev = tokio::select! {
            ev = events.recv() => ev,
            _ = sleep_until_opt(deadline) => break Ok(()),
            _ = sleep_until_opt(find_deadline) => break Err(not_started(&args.camera, args.timeout, last_error.as_deref())),
            _ = tokio::signal::ctrl_c() => break Ok(()),
        };
        let Some(ev) = ev else { break Ok(()) };
        if let Some(log) = log.as_mut() {
            let line = match &ev {
                WatchEvent::Started { peer, gap, .. } => format!(
                    "started peer={peer} gap_ms={} recv_us={}",
                    gap.map_or(-1, |g| g.as_millis() as i64),
                    now_unix_us()
                ),
                WatchEvent::Frame(f) => format!(
                    "frame seq={} key={} capture_us={} recv_us={} skipped={} bytes={}",
                    f.header.sequence,
                    u8::from(f.header.keyframe),
                    f.header.capture_unix_us,
                    now_unix_us(),
                    f.header.skipped_before,
                    f.payload.len()
                ),
                WatchEvent::Interrupted { error, .. } => format!("interrupted recv_us={} {error}", now_unix_us()),
                WatchEvent::Failed { error } => format!("failed {error}"),
                WatchEvent::Switched { profile, reason } => format!(
                    "switched profile={} recv_us={} {reason}",
                    profile_name(*profile),
                    now_unix_us()
                ),
            };
            writeln!(log, "{line}").context("writing the frame log")?;
        }
        match ev {
            WatchEvent::Started { peer, accept, gap } => {
                find_deadline = None;
                if let (Some(c), None, Some(codec)) = (container, muxer.as_ref(), accept.codec.as_ref()) {
                    let audio = accept.audio.as_ref().and_then(audio_params);
                    let path = args.output.to_string_lossy().into_owned();
                    muxer = Some(Muxer::create(&path, c, &codec_params(codec), audio.as_ref())?);
                    let what = audio.as_ref().map_or("no audio".to_owned(), |a| {
                        format!("{} {} Hz x{}", a.codec.name(), a.sample_rate, a.channels)
                    });
                    note(args.quiet, tty, &format!("writing {path} with {what}"));
                }
                if let Some(gap) = gap {
                    stats.on_gap(gap.as_millis() as u64);
                    note(
                        args.quiet,
                        tty,
                        &format!("video back from {peer} after a gap of {:.1}s", gap.as_secs_f64()),
                    );
                } else if let Some(c) = accept.codec {
                    note(
                        args.quiet,
                        tty,
                        &format!(
                            "watching {} ({}x{} {}) from {peer}",
                            args.camera, c.width, c.height, c.codec
                        ),
                    );
                }
            }
            WatchEvent::Frame(f) if is_audio(f.header.sequence) => {
                if let Some(m) = muxer.as_mut() {
                    if let Err(e) = m.audio(&f.payload, f.header.pts_90k) {
                        break Err(e).context("writing audio");
                    }
                }
                continue;
            }
            WatchEvent::Frame(f) if muxer.is_some() => {
                stats.on_frame(&f.header, f.payload.len(), now_unix_us());
                if let Some(m) = muxer.as_mut() {
                    let h = &f.header;
                    if let Err(e) = m.video(&f.payload, h.keyframe, h.pts_90k, h.dts_90k) {
                        break Err(e).context("writing video");
                    }
                }
                frames += 1;
                if args.frames.is_some_and(|n| frames >= n) {
                    break Ok(());
                }
            }
            // A container whose codecs are not known yet: nothing to write into.
            WatchEvent::Frame(_) if container.is_some() => continue,
            WatchEvent::Frame(f) => {
                stats.on_frame(&f.header, f.payload.len(), now_unix_us());
                annexb.clear();
                if let Err(e) = avcc_to_annexb(&f.payload, &mut annexb) {
                    note(args.quiet, tty, &format!("dropping a malformed frame: {e}"));
                    continue;
                }
                if let Err(e) = out
                    .write_all(&annexb)
                    .and_then(|()| if to_stdout { out.flush() } else { Ok(()) })
                {
                    if e.kind() == std::io::ErrorKind::BrokenPipe {
                        break Ok(());
                    }
                    break Err(e).context("writing video");
                }
                frames += 1;
                if args.frames.is_some_and(|n| frames >= n) {
                    break Ok(());
                }
            }
            WatchEvent::Interrupted { error, retry_in } => {
                last_error = Some(error.clone());
                note(
                    args.quiet,
                    tty,
                    &format!("interrupted: {error}; retrying in {:.1}s", retry_in.as_secs_f64()),
                );
            }
            WatchEvent::Failed { error } => break Err(anyhow::anyhow!(error)),
            WatchEvent::Switched { profile, reason } => {
                note(
                    args.quiet,
                    tty,
                    &format!("switched to {}: {reason}", profile_name(profile)),
                );
            }
        }
        if !args.quiet && last_print.elapsed() >= Duration::from_secs(1) {
            last_print = Instant::now();
            let line = stats_line(&args.camera, &stats.snapshot(now_unix_us()));
            if tty {
                eprint!("\r{line}\x1b[K");
            } else {
                eprintln!("{line}");
            }
        }
    };
    cancel.cancel();
    let flushed = out.flush();
    if let Some(m) = muxer.take() {
        let (v, a) = (m.video_frames, m.audio_frames);
        m.finish().context("finishing the container")?;
        if !args.quiet {
            eprintln!("wrote {v} video and {a} audio frames");
        }
    }
    if !args.quiet {
        // The last line holds the totals of the whole run (the periodic ones can be a
        // second old, or from before the first frame).
        let line = stats_line(&args.camera, &stats.snapshot(now_unix_us()));
        if tty {
            eprintln!("\r{line}\x1b[K");
        } else {
            eprintln!("{line}");
        }
    }
    if let Err(e) = flushed {
        if e.kind() != std::io::ErrorKind::BrokenPipe && result.is_ok() {
            return Err(e).context("writing video");
        }
    }
    if result.is_ok() && frames == 0 {
        bail!("no video received from camera {:?}", args.camera);
    }
    result
}

fn profile_name(p: camesh_proto::pb::Profile) -> &'static str {
    match p {
        camesh_proto::pb::Profile::Main => "main",
        camesh_proto::pb::Profile::Sub => "sub",
    }
}

/// One stats line: the window's rate and latency, the run's totals.
fn stats_line(camera: &str, s: &camesh_node::stream::stats::Snapshot) -> String {
    format!(
        "{camera}: {:>5.1} fps {:>7.0} kbit/s latency p50 {:>6.1} ms max {:>6.1} ms | frames {} skips {} gaps {}",
        s.fps, s.kbit_s, s.latency_p50_ms, s.latency_max_ms, s.frames, s.skips, s.gaps
    )
}

/// Why `mesh watch` gave up before any video: nobody knew the camera, or it was known
/// but could not be reached.
fn not_started(camera: &str, timeout: Duration, last: Option<&str>) -> anyhow::Error {
    let waited = humantime::format_duration(timeout);
    match last {
        None => anyhow::anyhow!(
            "camera {camera:?} not found within {waited}: the search was still going, no member had named it \
             (pass -b <a relay or member>, or a longer --timeout)"
        ),
        Some(e) if e.contains("knows camera") => anyhow::anyhow!(
            "camera {camera:?} not found within {waited}: no member this node reached knows it \
             (check the camera id with `mesh cameras`, pass -b <a relay or member>, or a longer --timeout)"
        ),
        Some(e) => anyhow::anyhow!("camera {camera:?} was found but not reachable within {waited}: {e}"),
    }
}

fn note(quiet: bool, tty: bool, msg: &str) {
    if !quiet {
        if tty {
            eprintln!("\r{msg}\x1b[K");
        } else {
            eprintln!("{msg}");
        }
    }
}

async fn sleep_until_opt(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// AVCC (4-byte lengths) to Annex B (4-byte start codes), appended to `out`.
fn avcc_to_annexb(avcc: &[u8], out: &mut Vec<u8>) -> Result<(), h264::H264Error> {
    for nal in h264::avcc_nals(avcc) {
        out.extend_from_slice(&[0, 0, 0, 1]);
        out.extend_from_slice(nal?);
    }
    Ok(())
}
