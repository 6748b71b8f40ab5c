//! The gateway from the command line: `camesh-node run --gateway` serves it on a daemon,
//! `mesh view` prints its URL and serves the fleet, `mesh top` shows the camera live.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use camesh_node::auth::Rights;
use camesh_node::Multiaddr;
use camesh_tests::cli::{mesh_command, mesh_folder, spawn_mesh_view};
use camesh_tests::ffmpeg::ffprobe_json;
use camesh_tests::http::get;
use camesh_tests::*;

use super::{GOP2, T};

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
    mesh_folder(&data, fleet_name, "viewer", &["cam1"], Rights::LIVE);
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
        .arg(fleet(fleet_name).root_text())
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

/// `mesh` as a viewer with live rights on every camera, data in `dir`, dialing `bootstrap`.
fn mesh_cmd(dir: &Path, fleet_name: &str, bootstrap: &Multiaddr) -> Command {
    mesh_folder(dir, fleet_name, "mesh", &["*"], Rights::LIVE);
    mesh_command(dir, fleet_name, std::slice::from_ref(bootstrap))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mesh_view_serves_the_fleet_and_mesh_top_shows_it() {
    init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    let cam = camera_node(&dir.path().join("cam"), "t-gw-cli", vec![camera("cam1", GOP2)], vec![]).await;
    let hub = cam.hubs().get("cam1").expect("hub");
    assert!(wait_until(T, || hub.is_live()).await);
    let addr = cam.dial_addrs().await.expect("addrs").remove(0);

    // mesh view: prints its URL, serves the snapshot and the camera list.
    let mut view = mesh_cmd(&dir.path().join("mesh-view"), "t-gw-cli", &addr);
    view.args(["view", "--port", "0", "--duration", "40s"]);
    let (mut child, gw_addr) = spawn_mesh_view(view).await;
    assert!(gw_addr.ip().is_loopback(), "{gw_addr}");
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
