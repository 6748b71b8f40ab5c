//! The local HTTP gateway with real clients on the other end: ffprobe/ffmpeg read
//! `/cam/<id>/live.mp4` and `snapshot.jpg`, headless Chromium plays the page through
//! Media Source Extensions, `/metrics` parses as Prometheus text and moves while video
//! flows, and the `mesh view` / `mesh top` commands serve and show the fleet.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use camesh_node::gateway::{Gateway, GatewayOptions};
use camesh_node::NodeHandle;
use camesh_tests::http::{get, get_for};
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

fn ffprobe_json(path: &Path, extra: &[&str]) -> serde_json::Value {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-of", "json"])
        .args(extra)
        .arg(path)
        .output()
        .expect("ffprobe runs");
    assert!(
        out.status.success(),
        "ffprobe {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("ffprobe json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ffprobe_reads_live_mp4_and_snapshot_jpg_at_the_cameras_size() {
    init_tracing();
    assert!(have("ffprobe"), "ffprobe is needed (scripts/setup.sh installs ffmpeg)");
    let dir = tempfile::tempdir().expect("tempdir");
    let (cam, viewer, gw) = fleet_with_gateway(dir.path(), "t-gw-probe", &[("cam1", GOP2), ("bf", BFRAMES)]).await;
    let addr = gw.local_addr();

    for id in ["cam1", "bf"] {
        // A few seconds of the endless live stream, into a file.
        let r = get_for(addr, &format!("/cam/{id}/live.mp4"), Duration::from_secs(4), 32 << 20)
            .await
            .expect("live.mp4");
        assert_eq!(r.status, 200, "{}", r.text());
        let ctype = r.header("content-type").unwrap_or("");
        assert!(ctype.starts_with("video/mp4; codecs=\"avc1."), "{ctype}");
        let file = dir.path().join(format!("{id}.mp4"));
        std::fs::write(&file, &r.body).expect("write");
        let json = ffprobe_json(
            &file,
            &[
                "-count_frames",
                "-show_entries",
                "stream=codec_name,width,height,nb_read_frames:format=format_name",
            ],
        );
        let s = &json["streams"][0];
        assert_eq!(s["codec_name"], "h264", "{id}: {json}");
        assert_eq!(
            (s["width"].as_u64(), s["height"].as_u64()),
            (Some(640), Some(360)),
            "{id}"
        );
        let frames: u64 = s["nb_read_frames"].as_str().and_then(|n| n.parse().ok()).unwrap_or(0);
        // Behaviour, not rate: a shared 2-core machine may deliver fewer than 4 s' worth.
        // More than one GOP (the clips' GOPs are 30-60 frames) proves a continuing stream.
        assert!(frames > 30, "{id}: only {frames} frames of live.mp4");
        assert!(json["format"]["format_name"].as_str().unwrap_or("").contains("mp4"));
        // Every frame decodes, without a single decoder complaint (B-frames included).
        let dec = Command::new("ffmpeg")
            .args(["-v", "error", "-i"])
            .arg(&file)
            .args(["-f", "null", "-"])
            .output()
            .expect("ffmpeg runs");
        assert!(dec.status.success());
        assert_eq!(
            String::from_utf8_lossy(&dec.stderr),
            "",
            "{id}: decoding live.mp4 reported errors"
        );
        // Presentation order differs from decode order in the B-frame camera.
        let pk = ffprobe_json(&file, &["-show_entries", "packet=pts,dts"]);
        let reordered = pk["packets"]
            .as_array()
            .expect("packets")
            .iter()
            .filter(|p| p["pts"] != p["dts"])
            .count();
        if id == "bf" {
            assert!(reordered > 10, "B-frames keep their composition offsets ({reordered})");
        }

        let r = get(addr, &format!("/cam/{id}/snapshot.jpg"), T)
            .await
            .expect("snapshot");
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("content-type"), Some("image/jpeg"));
        let jpg = dir.path().join(format!("{id}.jpg"));
        std::fs::write(&jpg, &r.body).expect("write");
        let json = ffprobe_json(&jpg, &["-show_entries", "stream=codec_name,width,height"]);
        let s = &json["streams"][0];
        assert_eq!(s["codec_name"], "mjpeg", "{json}");
        assert_eq!((s["width"].as_u64(), s["height"].as_u64()), (Some(640), Some(360)));
    }

    // Bad requests are answered, not crashed on.
    for (path, status) in [
        ("/cam/nope/live.mp4", 404),
        ("/cam/nope/snapshot.jpg", 404),
        ("/cam/NOT%20AN%20ID/live.mp4", 404),
        ("/cam/cam1/live.mp4?profile=huge", 400),
        ("/nothing/here", 404),
        ("/cam/cam1", 404),
    ] {
        let r = get(addr, path, T).await.expect(path);
        assert_eq!(r.status, status, "{path}: {}", r.text());
    }
    let page = get(addr, "/", T).await.expect("page");
    assert_eq!(page.status, 200);
    assert!(page.text().contains("MediaSource"));
    let api = get(addr, "/api/cameras", T).await.expect("api");
    let json: serde_json::Value = serde_json::from_slice(&api.body).expect("json");
    let ids: Vec<&str> = json["cameras"]
        .as_array()
        .expect("cameras")
        .iter()
        .filter_map(|c| c["id"].as_str())
        .collect();
    assert_eq!(ids, ["bf", "cam1"]);
    gw.shutdown();
    viewer.shutdown();
    cam.shutdown();
}

/// VLC (Debian's vlc-bin, the player integrators open streams in) plays
/// `/cam/<id>/live.mp4`: it reads the endless fragmented MP4 over HTTP, decodes the
/// H.264 and re-encodes what it decoded into a file, which ffprobe then counts. VLC
/// refuses to run as root, so as root it runs as `nobody` (setpriv).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vlc_plays_live_mp4() {
    init_tracing();
    assert!(
        have("cvlc"),
        "cvlc is needed (scripts/setup.sh installs vlc-bin and vlc-plugin-base)"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let (cam, viewer, gw) = fleet_with_gateway(dir.path(), "t-gw-vlc", &[("cam1", GOP2)]).await;
    let url = format!("http://{}/cam/cam1/live.mp4", gw.local_addr());

    // A folder the unprivileged player can write: its HOME (VLC's config) and the output.
    let out_dir = dir.path().join("vlc");
    std::fs::create_dir(&out_dir).expect("mkdir");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::set_permissions(&out_dir, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let out = out_dir.join("decoded.ts");
    // Decode (transcode needs decoded pictures) and write MPEG-2 video in a TS file.
    let sout = format!(
        "#transcode{{vcodec=mp2v,vb=1000}}:std{{access=file,mux=ts,dst={}}}",
        out.display()
    );
    let is_root = effective_uid() == 0;
    let mut cmd = if is_root {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--", "cvlc"]);
        c
    } else {
        Command::new("cvlc")
    };
    cmd.env("HOME", &out_dir)
        .args(["-I", "dummy", "--no-audio", "--run-time=6", "--sout"])
        .arg(&sout)
        .arg(&url)
        .arg("vlc://quit")
        .stdin(Stdio::null());
    let run = tokio::task::spawn_blocking(move || cmd.output());
    let res = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("VLC exits within 60 s")
        .expect("join")
        .expect("cvlc runs");
    let log = String::from_utf8_lossy(&res.stderr).into_owned();
    assert!(out.exists(), "VLC wrote nothing; its log:\n{log}");
    let json = ffprobe_json(
        &out,
        &[
            "-count_frames",
            "-show_entries",
            "stream=codec_name,width,height,nb_read_frames",
        ],
    );
    let s = &json["streams"][0];
    assert_eq!(s["codec_name"], "mpeg2video", "{json}");
    assert_eq!(
        (s["width"].as_u64(), s["height"].as_u64()),
        (Some(640), Some(360)),
        "{json}"
    );
    let frames: u64 = s["nb_read_frames"].as_str().and_then(|n| n.parse().ok()).unwrap_or(0);
    // Behaviour, not rate: more than one 2 s GOP of pictures went through VLC's decoder.
    assert!(frames > 60, "VLC decoded only {frames} frames; its log:\n{log}");
    eprintln!("VLC decoded {frames} frames of {url} in 6 s");
    gw.shutdown();
    viewer.shutdown();
    cam.shutdown();
}

/// The effective user id, from /proc (no libc call needed).
fn effective_uid() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(u32::MAX)
}

/// The gateway on a daemon: `camesh-node run --gateway 127.0.0.1:0` serves the same
/// endpoints, here a snapshot of a camera it reaches through the mesh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn camesh_node_run_serves_the_gateway() {
    init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    let fleet_name = "t-gw-daemon";
    let cam = camera_node(&dir.path().join("cam"), fleet_name, vec![camera("cam1", GOP2)], vec![]).await;
    let hub = cam.hubs().get("cam1").expect("hub");
    assert!(wait_until(T, || hub.is_live()).await, "cam1 is live");
    let data = dir.path().join("viewer");
    let f = fleet(fleet_name);
    f.enroll_dir(&data, camesh_proto::pb::MemberRole::Viewer, "viewer", &[], 3600)
        .expect("enroll");
    f.grant_dir(&data, &["cam1".into()], camesh_node::auth::Rights::LIVE, 3600)
        .expect("grant");
    let addr = cam.dial_addrs().await.expect("addrs").remove(0);
    let mut child = Command::new(bin("camesh-node"))
        .arg("--data-dir")
        .arg(&data)
        .args([
            "--log",
            "warn",
            "run",
            "--no-mdns",
            "--fleet",
            fleet_name,
            "--fleet-root",
        ])
        .arg(f.root_text())
        .args([
            "--listen",
            "/ip4/127.0.0.1/udp/0/quic-v1",
            "--gateway",
            "127.0.0.1:0",
            "-b",
        ])
        .arg(addr.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("camesh-node starts");
    let stdout = child.stdout.take().expect("stdout");
    let child = KillOnDrop(child);
    let line = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .take(64)
            .find(|l| l.starts_with("gateway: "))
    });
    let line = tokio::time::timeout(T, line)
        .await
        .expect("the daemon prints its gateway address")
        .expect("join")
        .expect("a gateway line");
    let gw: SocketAddr = line
        .trim_start_matches("gateway: http://")
        .trim_end_matches('/')
        .parse()
        .expect("address");
    assert!(gw.ip().is_loopback(), "{line}");
    // The daemon finds cam1 through its bootstrap peer; until then the API lists nothing.
    let mut snapshot = None;
    for _ in 0..20 {
        let r = get(gw, "/cam/cam1/snapshot.jpg", T).await.expect("snapshot");
        if r.status == 200 {
            snapshot = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let r = snapshot.expect("the daemon's gateway serves cam1's snapshot");
    assert_eq!(r.header("content-type"), Some("image/jpeg"));
    let jpg = dir.path().join("daemon.jpg");
    std::fs::write(&jpg, &r.body).expect("write");
    let json = ffprobe_json(&jpg, &["-show_entries", "stream=codec_name,width,height"]);
    assert_eq!(json["streams"][0]["width"].as_u64(), Some(640), "{json}");
    let m = get(gw, "/metrics", T).await.expect("metrics");
    assert_eq!(m.status, 200);
    drop(child);
    cam.shutdown();
}

/// Kills the daemon when the test ends, however it ends.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_host_header_is_refused_and_remote_binds_need_consent() {
    init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    let viewer = viewer_node(&dir.path().join("viewer"), "t-gw-host", vec![]).await;
    let opts = GatewayOptions {
        listen: "0.0.0.0:0".parse().expect("addr"),
        ..GatewayOptions::default()
    };
    let e = Gateway::start(viewer.clone(), opts).await.expect_err("refused");
    assert!(e.to_string().contains("not a loopback address"), "{e}");
    let gw = Gateway::start(viewer.clone(), GatewayOptions::default())
        .await
        .expect("starts");
    // DNS rebinding: the browser would send the attacker's host name.
    let mut s = tokio::net::TcpStream::connect(gw.local_addr()).await.expect("connect");
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: evil.example:8090\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut resp = String::new();
    tokio::time::timeout(T, s.read_to_string(&mut resp))
        .await
        .expect("answer")
        .expect("read");
    assert!(resp.starts_with("HTTP/1.1 403"), "{resp}");
    gw.shutdown();
    viewer.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_as_prometheus_text_and_counters_move_while_video_flows() {
    init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    let (cam, viewer, gw) = fleet_with_gateway(dir.path(), "t-gw-metrics", &[("cam1", GOP2)]).await;
    let addr = gw.local_addr();
    // A player keeps the stream flowing for the whole test.
    let player = tokio::spawn(get_for(addr, "/cam/cam1/live.mp4", Duration::from_secs(8), 64 << 20));

    let scrape = |addr: SocketAddr| async move {
        let r = get(addr, "/metrics", T).await.expect("metrics");
        assert_eq!(r.status, 200);
        assert!(r
            .header("content-type")
            .unwrap_or("")
            .starts_with("text/plain; version=0.0.4"));
        prom::parse(&r.text()).unwrap_or_else(|e| panic!("/metrics is not Prometheus text: {e}\n{}", r.text()))
    };
    let cam1 = [("camera", "cam1"), ("profile", "main")];
    // Wait until the player's stream is flowing.
    let deadline = tokio::time::Instant::now() + T;
    let a = loop {
        let m = scrape(addr).await;
        if m.value("camesh_stream_http_bytes_total", &cam1).unwrap_or(0.0) > 0.0 {
            break m;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the player's stream never flowed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let b = scrape(addr).await;

    for counter in [
        "camesh_stream_frames_total",
        "camesh_stream_bytes_total",
        "camesh_stream_http_bytes_total",
    ] {
        assert_eq!(a.types.get(counter).map(String::as_str), Some("counter"));
        let (x, y) = (a.value(counter, &cam1), b.value(counter, &cam1));
        let (Some(x), Some(y)) = (x, y) else {
            panic!("{counter} missing")
        };
        assert!(y > x, "{counter} did not move while video flowed: {x} -> {y}");
    }
    let bitrate = b
        .value("camesh_stream_bitrate_bits_per_second", &cam1)
        .expect("bitrate");
    let fps = b.value("camesh_stream_fps", &cam1).expect("fps");
    let latency = b.value("camesh_stream_latency_seconds", &cam1).expect("latency");
    assert!(bitrate > 50_000.0, "bitrate {bitrate}");
    // It moves (not a rate check: a shared machine may run the source late).
    assert!(fps > 1.0 && fps < 1000.0, "fps {fps}");
    assert!((0.0..1.0).contains(&latency), "latency {latency}");
    assert_eq!(b.value("camesh_stream_http_clients", &cam1), Some(1.0));
    assert_eq!(b.value("camesh_stream_skips_total", &cam1), Some(0.0));
    assert!(b.value("camesh_peers_connected", &[]).unwrap_or(0.0) >= 1.0);
    let path = b.all("camesh_stream_path_info");
    assert_eq!(path.len(), 1);
    assert_eq!(path[0].label("path"), Some("direct"));
    assert_eq!(path[0].label("peer"), Some(cam.peer_id().to_string().as_str()));
    assert!(b
        .value("camesh_peer_rtt_seconds", &[("peer", &cam.peer_id().to_string())])
        .is_some());
    assert!(
        b.value("camesh_http_requests_total", &[("route", "metrics")])
            .unwrap_or(0.0)
            >= 2.0
    );

    // The camera node's own gateway reports its source.
    let cam_gw = Gateway::start(cam.clone(), GatewayOptions::default())
        .await
        .expect("gateway");
    let c = scrape(cam_gw.local_addr()).await;
    let frames_in = c.value("camesh_source_frames_total", &cam1).expect("source frames");
    assert!(frames_in > 30.0);
    assert_eq!(c.value("camesh_source_live", &cam1), Some(1.0));
    assert!(c.value("camesh_source_subscribers", &cam1).unwrap_or(0.0) >= 1.0);
    cam_gw.shutdown();

    let played = player.await.expect("player").expect("played");
    assert!(played.body.len() > 100_000);
    gw.shutdown();
    viewer.shutdown();
    cam.shutdown();
}

/// A tiny HTTP server collecting the page's reports (`GET /report?...`).
async fn report_server() -> (SocketAddr, tokio::sync::mpsc::Receiver<String>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = tokio::sync::mpsc::channel(1024);
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut buf = vec![0u8; 8192];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") && got.len() < 8192 {
                    match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
                        Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
                        _ => return,
                    }
                }
                let line = String::from_utf8_lossy(&got).lines().next().unwrap_or("").to_owned();
                let _ = tx.try_send(line);
                let _ = s
                    .write_all(
                        b"HTTP/1.1 204 No Content\r\nAccess-Control-Allow-Origin: *\r\nConnection: close\r\n\r\n",
                    )
                    .await;
            });
        }
    });
    (addr, rx)
}

fn query_of(line: &str) -> std::collections::HashMap<String, String> {
    let target = line.split_whitespace().nth(1).unwrap_or("");
    let q = target.split_once('?').map_or("", |(_, q)| q);
    q.split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), percent_decode(v)))
        .collect()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headless_chromium_plays_the_live_page() {
    init_tracing();
    let Some(chromium) = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| have(b))
    else {
        assert!(
            std::env::var_os("CI").is_none(),
            "chromium is missing under CI: scripts/setup.sh installs it"
        );
        eprintln!("SKIPPED headless_chromium_plays_the_live_page: no chromium (apt-get install chromium)");
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let (cam, viewer, gw) = fleet_with_gateway(dir.path(), "t-gw-chromium", &[("cam1", GOP2)]).await;
    let (report_addr, mut reports) = report_server().await;
    let url = format!("{}?report=http://{report_addr}/report", gw.url());
    let profile = dir.path().join("chromium-profile");
    let log = std::fs::File::create(dir.path().join("chromium.log")).expect("log");
    let mut child = tokio::process::Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--autoplay-policy=no-user-gesture-required",
            "--mute-audio",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(&url)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .expect("chromium starts");

    // The video element must decode frames with its clock advancing and no media error.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut first: Option<(f64, u64)> = None;
    let mut last = None;
    let verdict = loop {
        let line = match tokio::time::timeout_at(deadline, reports.recv()).await {
            Ok(Some(l)) => l,
            _ => break Err(format!("no passing report within 60 s; last: {last:?}")),
        };
        let q = query_of(&line);
        if q.get("cam").map(String::as_str) != Some("cam1") {
            continue;
        }
        let t: f64 = q.get("t").and_then(|v| v.parse().ok()).unwrap_or(0.0);
        let frames: u64 = q.get("frames").and_then(|v| v.parse().ok()).unwrap_or(0);
        let err = q.get("err").cloned().unwrap_or_default();
        assert!(
            err.is_empty(),
            "the video element reports a media error: {err} ({line})"
        );
        last = Some(q.clone());
        if frames > 0 && first.is_none() {
            first = Some((t, frames));
        }
        if let Some((t0, f0)) = first {
            if t >= t0 + 2.0 && frames >= f0 + 45 {
                break Ok(q);
            }
        }
    };
    let _ = child.kill().await;
    let q = verdict.unwrap_or_else(|e| {
        let log = std::fs::read_to_string(dir.path().join("chromium.log")).unwrap_or_default();
        panic!(
            "{e}\nchromium log (tail):\n{}",
            log.lines().rev().take(30).collect::<Vec<_>>().join("\n")
        )
    });
    assert_eq!(
        (q.get("w").map(String::as_str), q.get("h").map(String::as_str)),
        (Some("640"), Some("360")),
        "{q:?}"
    );
    gw.shutdown();
    viewer.shutdown();
    cam.shutdown();
}

fn mesh_cmd(dir: &Path, fleet_name: &str, bootstrap: &str) -> Command {
    let f = fleet(fleet_name);
    f.enroll_dir(dir, camesh_proto::pb::MemberRole::Viewer, "mesh", &[], 3600)
        .expect("enroll");
    f.grant_dir(dir, &["*".into()], camesh_node::auth::Rights::LIVE, 3600)
        .expect("grant");
    let mut c = Command::new(bin("mesh"));
    c.arg("--data-dir")
        .arg(dir)
        .args(["--fleet", fleet_name, "--fleet-root", &f.root_text(), "--no-mdns"])
        .args(["--listen", "/ip4/127.0.0.1/udp/0/quic-v1", "-b", bootstrap]);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mesh_view_serves_the_fleet_and_mesh_top_shows_it() {
    init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    let cam = camera_node(&dir.path().join("cam"), "t-gw-cli", vec![camera("cam1", GOP2)], vec![]).await;
    let hub = cam.hubs().get("cam1").expect("hub");
    assert!(wait_until(T, || hub.is_live()).await);
    let addr = cam.dial_addrs().await.expect("addrs").remove(0).to_string();

    // mesh view: prints its URL, serves the snapshot and the camera list.
    let mut view = tokio::process::Command::from(mesh_cmd(&dir.path().join("mesh-view"), "t-gw-cli", &addr));
    view.args(["view", "--port", "0", "--duration", "40s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    let mut child = view.spawn().expect("mesh view starts");
    let stdout = child.stdout.take().expect("stdout");
    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let url = tokio::time::timeout(T, async {
        while let Ok(Some(l)) = lines.next_line().await {
            if let Some(u) = l.strip_prefix("mesh view: ") {
                return Some(u.trim().to_owned());
            }
        }
        None
    })
    .await
    .expect("mesh view prints its URL")
    .expect("a URL line");
    let gw_addr: SocketAddr = url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .expect("host:port");
    assert!(gw_addr.ip().is_loopback(), "{url}");
    let snap = get(gw_addr, "/cam/cam1/snapshot.jpg", T).await.expect("snapshot");
    assert_eq!(snap.status, 200, "{}", snap.text());
    assert!(snap.body.starts_with(&[0xff, 0xd8]), "a JPEG");
    let api = get(gw_addr, "/api/cameras", T).await.expect("api");
    assert!(api.text().contains("\"cam1\""), "{}", api.text());
    let _ = child.kill().await;

    // mesh top: a few refreshes, the camera with a live frame rate and the camera peer.
    let mut top = mesh_cmd(&dir.path().join("mesh-top"), "t-gw-cli", &addr);
    top.args(["top", "--plain", "--interval", "1s", "--duration", "6s"]);
    let out = tokio::task::spawn_blocking(move || top.output().expect("mesh top runs"))
        .await
        .expect("join");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let last = text.rsplit("camesh top").next().unwrap_or("");
    let row = last
        .lines()
        .find(|l| l.starts_with("cam1 "))
        .unwrap_or_else(|| panic!("no cam1 row in the last refresh:\n{text}"));
    let cols: Vec<&str> = row.split_whitespace().collect();
    // CAMERA NAME(2 words) PEER SIZE PATH FPS KBIT/S ...
    assert!(row.contains("640x360") && row.contains("direct"), "{row}");
    let fps: f64 = cols
        .iter()
        .skip_while(|c| **c != "direct")
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    assert!(fps > 0.0, "fps in {row:?}");
    assert!(last.contains("camera"), "the camera peer's role is shown:\n{last}");
    cam.shutdown();
}
