//! Camera-class budget: what a camera node costs on the camera's own hardware. The
//! release `camesh-node` pulls one 1080p 4 Mbit/s H.264 stream from GStreamer's RTSP
//! server (RTP over RTSP/TCP, as `[[camera]] source = "rtsp://..."` does) and serves it,
//! first to nobody, then to one viewer; beside it, in the same run, `ffmpeg
//! -rtsp_transport tcp -i rtsp://... -c copy -f null -` pulls and remuxes the same stream:
//! the floor (what any RTSP ingest costs before camesh does anything of its own).
//!
//! The stream: a 20 s 1920x1080 x264 clip at 4 Mbit/s, 30 fps, 2 s GOP, no B-frames,
//! encoded once by ffmpeg (kept in `target/bench/`), looped by `rtsp_peer.py` as one live
//! shared mount (nothing is encoded during the run). CPU from `/proc/<pid>/stat`, RSS
//! (`VmRSS`) and peak RSS (`VmHWM`) from `/proc/<pid>/status`, and where the RSS lives
//! from `/proc/<pid>/smaps`. The node runs twice: as configured, and with
//! `MALLOC_ARENA_MAX=2` (glibc's per-thread malloc arenas capped).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context};
use camesh_node::config::CameraConfig;
use camesh_node::Role;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::rtsp::{pid_cpu_by_thread, pid_cpu_s, pid_status, pid_switches, write_frames, GstPeer};
use super::Ctx;
use crate::procstat::BusyMeter;
use crate::report::Figure;
use crate::viewer::{spawn_reader, Collector, Open, Viewer};

const S: &str = "camera";
const CAM: &str = "cam";
/// DESIGN goals of issue #18 for a camera node with one viewer.
const CPU_GOAL_X_FLOOR: f64 = 1.5;
const RSS_GOAL_MB: f64 = 40.0;

/// CPU and memory of one process over one window.
#[derive(Debug, Clone, Default, Serialize)]
struct Usage {
    cpu_ms_per_s: f64,
    rss_mb: f64,
    hwm_mb: f64,
    threads: u64,
    /// Context switches of its threads per second (wake-ups).
    switches_per_s: f64,
    /// ms of CPU per second by thread name.
    cpu_by_thread: BTreeMap<String, f64>,
    other_cores: f64,
    /// RSS by kind of mapping, MB (`/proc/<pid>/smaps`).
    rss_by_kind: BTreeMap<String, f64>,
}

fn mb(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

async fn measure(pid: u32, win: Duration) -> Usage {
    let meter = BusyMeter::start();
    let (c0, w0, t0) = (pid_cpu_s(pid), pid_switches(pid), pid_cpu_by_thread(pid));
    tokio::time::sleep(win).await;
    let cpu_by_thread = pid_cpu_by_thread(pid)
        .into_iter()
        .map(|(k, v)| {
            let d = v - t0.get(&k).copied().unwrap_or(0.0);
            (k, d / win.as_secs_f64() * 1000.0)
        })
        .collect();
    let cpu = (pid_cpu_s(pid) - c0) / win.as_secs_f64();
    let switches_per_s = pid_switches(pid).saturating_sub(w0) as f64 / win.as_secs_f64();
    let (machine, harness) = meter.cores();
    Usage {
        cpu_ms_per_s: cpu * 1000.0,
        rss_mb: mb(pid_status(pid, "VmRSS:")),
        hwm_mb: mb(pid_status(pid, "VmHWM:")),
        threads: pid_status(pid, "Threads:"),
        switches_per_s,
        cpu_by_thread,
        other_cores: (machine - harness - cpu).max(0.0),
        rss_by_kind: rss_by_kind(pid),
    }
}

/// Resident MB per kind of mapping: the program's own file, FFmpeg's libraries, other
/// libraries, the brk heap, anonymous mappings (malloc arenas, thread stacks, large
/// allocations), the main stack and the rest; then, over all mappings, what is private
/// and dirty (no other process shares it, the kernel cannot drop it), Pss, and the
/// files with the most resident pages.
fn rss_by_kind(pid: u32) -> BTreeMap<String, f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let mut out: BTreeMap<String, f64> = BTreeMap::new();
    let mut files: BTreeMap<String, f64> = BTreeMap::new();
    let (mut kind, mut file, mut perms, mut size_kb) = (String::new(), String::new(), String::new(), 0u64);
    for line in text.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if first.contains('-') && first.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            let path = line.split_whitespace().nth(5).unwrap_or("");
            perms = line.split_whitespace().nth(1).unwrap_or("").to_string();
            size_kb = first
                .split_once('-')
                .and_then(|(a, b)| Some((u64::from_str_radix(b, 16).ok()? - u64::from_str_radix(a, 16).ok()?) / 1024))
                .unwrap_or(0);
            file = path.rsplit('/').next().unwrap_or("").to_string();
            kind = match path {
                "" => "anonymous (malloc arenas, thread stacks, large allocations)",
                "[heap]" => "heap (brk: the main malloc arena)",
                "[stack]" => "main thread stack",
                _ if file.starts_with("camesh-node") || file.starts_with("ffmpeg") => "program file",
                _ if ["libav", "libsw", "libpostproc"].iter().any(|p| file.starts_with(p)) => "FFmpeg libraries",
                _ if file.contains(".so") => "other shared libraries (FFmpeg's dependencies, libc, ...)",
                _ => "other",
            }
            .to_string();
        } else if let Some((key, kb)) = line.split_once(':') {
            let kb: f64 = kb.trim().trim_end_matches("kB").trim().parse::<u64>().map_or(0.0, mb);
            match key {
                "Rss" => {
                    *out.entry(kind.clone()).or_default() += kb;
                    // Thread stacks: tokio's and std's threads get 2 MiB anonymous stacks.
                    if kind.starts_with("anonymous") && size_kb == 2048 {
                        *out.entry("of which 2 MiB anonymous mappings (thread stacks)".into())
                            .or_default() += kb;
                    }
                    if kind == "program file" {
                        let seg = match perms.get(..3) {
                            Some("r-x") => "program file: code",
                            Some("rw-") => "program file: writable data",
                            _ => "program file: read-only data (constants, relocated tables)",
                        };
                        *out.entry(seg.into()).or_default() += kb;
                    }
                    if file.contains(".so") || file.starts_with("camesh-node") {
                        *files.entry(file.clone()).or_default() += kb;
                    }
                }
                "Pss" => {
                    *out.entry("total Pss (shared pages divided among their users)".into())
                        .or_default() += kb
                }
                "Private_Dirty" => *out.entry("total private dirty".into()).or_default() += kb,
                _ => {}
            }
        }
    }
    let n_files = files.len();
    let mut top: Vec<_> = files.into_iter().collect();
    top.sort_by(|a, b| b.1.total_cmp(&a.1));
    for (f, v) in top.into_iter().take(6) {
        out.insert(format!("file {f}"), v);
    }
    out.insert("mapped files (count)".into(), n_files as f64);
    out
}

/// The 1080p clip, encoded once and kept.
fn clip() -> anyhow::Result<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("cam-1920x1080-30fps-gop2s-4mbit.h264");
    if path.exists() {
        return Ok(path);
    }
    let tmp = dir.join("cam-1080p.partial.h264");
    let out = std::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i"])
        .arg("testsrc2=size=1920x1080:rate=30,noise=alls=12:allf=t")
        .args([
            "-t",
            "20",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-tune",
            "zerolatency",
        ])
        .args([
            "-b:v",
            "4M",
            "-maxrate",
            "4M",
            "-bufsize",
            "4M",
            "-g",
            "60",
            "-keyint_min",
            "60",
        ])
        .args(["-sc_threshold", "0", "-bf", "0", "-pix_fmt", "yuv420p", "-f", "h264"])
        .arg(&tmp)
        .output()
        .context("running ffmpeg to encode the 1080p clip")?;
    anyhow::ensure!(
        out.status.success(),
        "ffmpeg: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

/// The floor: ffmpeg pulling the stream over RTSP/TCP and remuxing it to nothing.
async fn ffmpeg_floor(url: &str, warm: Duration, win: Duration) -> anyhow::Result<Usage> {
    let mut child = tokio::process::Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-nostdin",
            "-rtsp_transport",
            "tcp",
            "-i",
        ])
        .arg(url)
        .args(["-c", "copy", "-f", "null", "-"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .context("starting ffmpeg")?;
    let pid = child.id().ok_or_else(|| anyhow!("ffmpeg exited"))?;
    tokio::time::sleep(warm).await;
    let u = measure(pid, win).await;
    anyhow::ensure!(child.try_wait()?.is_none(), "ffmpeg exited during the window");
    let _ = child.kill().await;
    Ok(u)
}

#[derive(Debug, Clone, Default, Serialize)]
struct NodeRun {
    variant: String,
    ingest: Usage,
    one_viewer: Usage,
    viewer_mbit_s: f64,
    viewer_frames: u64,
    skips: u64,
}

fn write_config(dir: &Path, url: &str) -> anyhow::Result<()> {
    let f = crate::fleet();
    f.enroll_dir(
        dir,
        camesh_proto::pb::MemberRole::Camera,
        "bench-camera",
        &[CAM.into()],
        crate::CERT_VALID_S,
    )?;
    let mut c = crate::loopback_config(Role::Camera, &f.root_text());
    let port = std::net::UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port();
    c.node.listen = vec![format!("/ip4/127.0.0.1/udp/{port}/quic-v1").parse()?];
    c.cameras = vec![CameraConfig {
        id: CAM.into(),
        name: "bench 1080p".into(),
        source: PathBuf::from(url),
        sub_source: None,
        rtsp_transport: Default::default(),
        looping: true,
        tags: vec![],
        onvif: None,
        motion: None,
        talkback: None,
    }];
    c.validate().map_err(|e| anyhow!("config: {e}"))?;
    std::fs::write(dir.join("config.toml"), c.to_toml())?;
    Ok(())
}

async fn node_run(
    url: &str,
    variant: &str,
    env: Vec<(String, String)>,
    warm: Duration,
    win: Duration,
) -> anyhow::Result<NodeRun> {
    let dir = tempfile::tempdir()?;
    write_config(dir.path(), url)?;
    let d = dir.path().to_path_buf();
    let node = tokio::task::spawn_blocking(move || {
        let env: Vec<(&str, &std::ffi::OsStr)> =
            env.iter().map(|(k, v)| (k.as_str(), std::ffi::OsStr::new(v))).collect();
        camesh_tests::nvr::start_daemon_env(None, &d, ("node.log", "warn"), "camera: ", &env)
    })
    .await
    .map_err(|_| anyhow!("camesh-node did not start (release build: cargo build --release -p camesh-node)"))?;
    let pid = node.pid();
    tokio::time::sleep(warm).await;
    let ingest = measure(pid, win).await;
    eprintln!(
        "  camesh-node ({variant}), ingest only: {:.1} ms/s, RSS {:.1} MB (peak {:.1})",
        ingest.cpu_ms_per_s, ingest.rss_mb, ingest.hwm_mb
    );
    let viewer = Viewer::spawn().await?;
    let peer = viewer.connect(std::slice::from_ref(&node.addr)).await?;
    let sub = viewer.subscribe_retry(peer, CAM).await?;
    let col = Arc::new(Collector::default());
    let cancel = CancellationToken::new();
    let reader = spawn_reader(sub, col.clone(), Open::Decrypt, cancel.clone());
    tokio::time::sleep(warm).await;
    col.take();
    let one_viewer = measure(pid, win).await;
    let w = col.take();
    eprintln!(
        "  camesh-node ({variant}), one viewer: {:.1} ms/s, RSS {:.1} MB (peak {:.1}), viewer got {} frames",
        one_viewer.cpu_ms_per_s, one_viewer.rss_mb, one_viewer.hwm_mb, w.frames
    );
    cancel.cancel();
    let _ = reader.await;
    drop(viewer);
    drop(node);
    Ok(NodeRun {
        variant: variant.into(),
        ingest,
        one_viewer,
        viewer_mbit_s: w.bytes as f64 * 8.0 / 1e6 / win.as_secs_f64(),
        viewer_frames: w.frames,
        skips: w.skips + w.seq_gaps + w.errors,
    })
}

fn by_thread(u: &Usage) -> String {
    u.cpu_by_thread
        .iter()
        .filter(|(_, v)| **v >= 0.05)
        .map(|(k, v)| format!("{k} {v:.1}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn kinds(u: &Usage) -> String {
    u.rss_by_kind
        .iter()
        .filter(|(_, v)| **v >= 0.05)
        .map(|(k, v)| format!("{k} {v:.1}"))
        .collect::<Vec<_>>()
        .join(", ")
}

pub async fn run(ctx: &mut Ctx) -> anyhow::Result<()> {
    // ffmpeg (the CLI and camesh's ingest alike) probes the stream for up to 5 s
    // (analyzeduration) before it settles: the windows start after that.
    let (warm, win) = (ctx.secs(7, 8), ctx.secs(6, 20));
    let path = tokio::task::spawn_blocking(clip).await??;
    let p = path.clone();
    let loaded = tokio::task::spawn_blocking(move || {
        camesh_node::media::source::load_clip(&p, &camesh_node::media::source::SourceOptions::default())
    })
    .await??;
    let tmp = tempfile::tempdir()?;
    let frames = tmp.path().join("cam1080.frames");
    write_frames(
        &frames,
        &loaded.params,
        loaded.frames.iter().map(|a| (a.keyframe, &a.data)),
    )?;
    let bytes: usize = loaded.frames.iter().map(|a| a.data.len()).sum();
    let mbit = bytes as f64 * 8.0 / 1e6 / (loaded.frames.len() as f64 / 30.0);
    let gst = GstPeer::start(&frames).await?;

    let floor_a = ffmpeg_floor(&gst.url, warm, win).await?;
    eprintln!(
        "  ffmpeg remux (floor): {:.1} ms/s, RSS {:.1} MB",
        floor_a.cpu_ms_per_s, floor_a.rss_mb
    );
    let plain = node_run(&gst.url, "as configured", vec![], warm, win).await?;
    let arena = node_run(
        &gst.url,
        "MALLOC_ARENA_MAX=2",
        vec![("MALLOC_ARENA_MAX".into(), "2".into())],
        warm,
        win,
    )
    .await?;
    let floor_b = ffmpeg_floor(&gst.url, warm, win).await?;
    eprintln!("  ffmpeg remux (floor, again): {:.1} ms/s", floor_b.cpu_ms_per_s);
    gst.quit().await;
    let floor = (floor_a.cpu_ms_per_s + floor_b.cpu_ms_per_s) / 2.0;

    ctx.push(
        Figure::new(S, "ffmpeg remux of the stream (the floor)", floor, "ms/s").note(format!(
            "ffmpeg -rtsp_transport tcp -i rtsp://... -c copy -f null -, before and after the camesh runs: {:.1} and {:.1} ms/s; RSS {:.1} MB (peak {:.1}), {:.0} context switches/s; stream {}x{} at {mbit:.2} Mbit/s, 30 fps, 2 s GOP",
            floor_a.cpu_ms_per_s, floor_b.cpu_ms_per_s, floor_a.rss_mb, floor_a.hwm_mb, floor_a.switches_per_s, loaded.params.width, loaded.params.height
        )),
    );
    for r in [&plain, &arena] {
        let v = &r.variant;
        ctx.push(
            Figure::new(
                S,
                &format!("camesh-node ({v}), ingest only: CPU"),
                r.ingest.cpu_ms_per_s,
                "ms/s",
            )
            .baseline("ffmpeg remux", floor)
            .note(format!(
                "ms/s by thread: {}; RSS {:.1} MB (peak {:.1}), {} threads, {:.0} context switches/s; other processes {:.2} cores",
                by_thread(&r.ingest),
                r.ingest.rss_mb, r.ingest.hwm_mb, r.ingest.threads, r.ingest.switches_per_s, r.ingest.other_cores
            )),
        );
        let ratio = r.one_viewer.cpu_ms_per_s / floor;
        ctx.push(
            Figure::new(
                S,
                &format!("camesh-node ({v}), one viewer: CPU"),
                r.one_viewer.cpu_ms_per_s,
                "ms/s",
            )
            .target(
                &format!("≤ {CPU_GOAL_X_FLOOR}x the remux floor"),
                ratio <= CPU_GOAL_X_FLOOR,
            )
            .baseline("ffmpeg remux", floor)
            .note(format!(
                "ms/s by thread: {}; the viewer received {} frames ({:.2} Mbit/s), {} skips or errors; {:.0} context switches/s; other processes {:.2} cores",
                by_thread(&r.one_viewer),
                r.viewer_frames, r.viewer_mbit_s, r.skips, r.one_viewer.switches_per_s, r.one_viewer.other_cores
            )),
        );
        ctx.push(
            Figure::new(
                S,
                &format!("camesh-node ({v}), one viewer: RSS"),
                r.one_viewer.rss_mb,
                "MB",
            )
            .target(&format!("< {RSS_GOAL_MB} MB"), r.one_viewer.rss_mb < RSS_GOAL_MB)
            .baseline("ffmpeg remux RSS", floor_a.rss_mb)
            .note(format!(
                "peak (VmHWM) {:.1} MB, {} threads; by mapping (MB, from /proc/<pid>/smaps): {}",
                r.one_viewer.hwm_mb,
                r.one_viewer.threads,
                kinds(&r.one_viewer)
            )),
        );
    }
    for r in [&plain, &arena] {
        let dirty = r
            .one_viewer
            .rss_by_kind
            .get("total private dirty")
            .copied()
            .unwrap_or(f64::NAN);
        ctx.push(
            Figure::new(S, &format!("camesh-node ({}), one viewer: private dirty", r.variant), dirty, "MB").note(
                "the part of the RSS no other process shares and the kernel cannot drop (heap, arenas, stacks, relocated data); the rest of the RSS is file-backed pages of the program and its 215 shared libraries",
            ),
        );
    }
    ctx.raw(
        "camera",
        &serde_json::json!({ "clip": path, "clip_mbit_s": mbit, "floor": [floor_a, floor_b], "node": [plain, arena] }),
    );
    Ok(())
}
