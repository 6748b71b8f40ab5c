//! PTZ over the mesh (#17, item 3) and the camera's ONVIF events (item 4): `mesh ptz`
//! and `mesh events` on a viewer, the camera's node, and an ONVIF device
//! (tests/scripts/onvif_ptz.py) that checks each SOAP body and its WS-Security digest and
//! records the calls. Real nodes over QUIC on 127.0.0.1, the real
//! `mesh` binary, a real HTTP/SOAP exchange; no mock of camesh's side.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use camesh_node::auth::Rights;
use camesh_node::config::{OnvifConfig, Role};
use camesh_tests::cli::{mesh_command, mesh_folder};
use camesh_tests::*;

const FLEET: &str = "t-ptz";
const T: Duration = Duration::from_secs(20);

/// The ONVIF device: (child, its port).
struct Device {
    child: Child,
    port: u16,
}

impl Drop for Device {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn device(user: &str, password: &str, log: &Path) -> Device {
    device_in(None, user, password, log)
}

/// The device; with `at` = (namespace, address), in that namespace on that address, where
/// it also answers WS-Discovery probes.
fn device_in(at: Option<(&str, &str)>, user: &str, password: &str, log: &Path) -> Device {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/onvif_ptz.py");
    let mut cmd = match at {
        Some((ns, _)) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, "python3"]);
            c
        }
        None => Command::new("python3"),
    };
    cmd.arg(script).args([user, password]).arg(log);
    if let Some((_, host)) = at {
        cmd.arg(host);
    }
    let mut child = cmd.stdout(Stdio::piped()).spawn().expect("python3 runs");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("port line");
    let port = line
        .trim()
        .strip_prefix("port ")
        .and_then(|p| p.parse().ok())
        .expect("the device prints its port");
    Device { child, port }
}

/// The device's calls so far: (op, the whole JSON record).
fn calls(log: &Path) -> Vec<(String, serde_json::Value)> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|v| (v["op"].as_str().unwrap_or("?").to_owned(), v))
        .collect()
}

fn ptz_ops(log: &Path) -> Vec<String> {
    calls(log)
        .into_iter()
        .filter(|(op, _)| op != "GetCapabilities" && op != "GetProfiles")
        .map(|(op, _)| op)
        .collect()
}

fn mesh_ptz(data: &Path, cam: &NodeHandleAddrs, args: &[&str]) -> (bool, String) {
    let out = mesh_command(data, FLEET, &cam.0)
        .args(["--log", "warn", "ptz", "cam1"])
        .args(args)
        .output()
        .expect("mesh runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

struct NodeHandleAddrs(Vec<camesh_node::Multiaddr>);

/// A camera node (`<dir>/cam`) whose cam1 has `dev` as its ONVIF service, signing in as
/// "operator" with `password`, and a `mesh` folder (`<dir>/operator`) holding live + ptz.
async fn ptz_camera(
    dir: &Path,
    dev: &Device,
    password: &str,
    profile: &str,
) -> (camesh_node::NodeHandle, NodeHandleAddrs, std::path::PathBuf) {
    let mut c = loopback_config(Role::Camera, FLEET);
    let mut cam1 = camera("cam1", "cam-640x360-30fps-gop2s.h264");
    cam1.onvif = Some(OnvifConfig {
        url: format!("http://127.0.0.1:{}/onvif/device_service", dev.port),
        user: "operator".into(),
        password: password.into(),
        profile: profile.into(),
        events: false,
    });
    c.cameras = vec![cam1];
    let cam = spawn_node(c, &dir.join("cam")).await;
    let addrs = NodeHandleAddrs(cam.dial_addrs().await.expect("addrs"));
    let ptz = dir.join("operator");
    mesh_folder(
        &ptz,
        FLEET,
        "operator",
        &["cam1"],
        Rights(Rights::LIVE.0 | Rights::PTZ.0),
    );
    (cam, addrs, ptz)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mesh_ptz_makes_exactly_the_onvif_calls_and_needs_the_ptz_right() {
    init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("onvif-calls.jsonl");
    let dev = device("operator", "s3cret", &log);
    let cam_dir = dir.path().join("cam");
    let (cam, addrs, ptz) = ptz_camera(dir.path(), &dev, "s3cret", "").await;
    let watcher = dir.path().join("watcher");
    mesh_folder(&watcher, FLEET, "watcher", &["cam1"], Rights::LIVE);

    // A timed move: ContinuousMove now, Stop from the camera's node a second later.
    let (ok, out) = tokio::task::block_in_place(|| mesh_ptz(&ptz, &addrs, &["--pan", "0.3", "--for", "1s"]));
    assert!(ok, "{out}");
    assert!(out.contains("cam1: moving for 1000 ms"), "{out}");
    assert!(
        wait_until(T, || ptz_ops(&log) == ["ContinuousMove", "Stop"]).await,
        "calls: {:?}",
        calls(&log)
    );
    let all = calls(&log);
    let mv = &all.iter().find(|(op, _)| op == "ContinuousMove").expect("move").1;
    assert_eq!(
        (mv["pan"].as_f64(), mv["tilt"].as_f64(), mv["zoom"].as_f64()),
        (Some(0.3), Some(0.0), Some(0.0))
    );
    let (t_move, t_stop) = (
        all.iter()
            .find(|(op, _)| op == "ContinuousMove")
            .map(|c| c.1["t"].as_f64().unwrap_or(0.0)),
        all.iter()
            .find(|(op, _)| op == "Stop")
            .map(|c| c.1["t"].as_f64().unwrap_or(0.0)),
    );
    let held = t_stop.unwrap_or(0.0) - t_move.unwrap_or(0.0);
    println!("ContinuousMove then Stop {held:.2} s later");
    assert!(held >= 0.9, "stopped after {held} s");
    // Discovery happened once: GetCapabilities, then GetProfiles, and every call passed
    // the device's checks (digest, nonce, profile token, ranges).
    assert_eq!(all.iter().filter(|(op, _)| op == "GetCapabilities").count(), 1);
    assert!(all.iter().all(|(_, v)| v["ok"] == true), "{all:?}");

    // Presets, a preset, home, absolute and relative moves, a stop.
    let (ok, out) = tokio::task::block_in_place(|| mesh_ptz(&ptz, &addrs, &["--presets"]));
    assert!(ok && out.contains("1\tDoor") && out.contains("2\tTill"), "{out}");
    for args in [
        &["--preset", "2"][..],
        &["--home"],
        &["--to", "0.5,-0.25,0.1"],
        &["--by", "-0.1,0,0"],
        &["--stop"],
    ] {
        let (ok, out) = tokio::task::block_in_place(|| mesh_ptz(&ptz, &addrs, args));
        assert!(ok, "{args:?}: {out}");
    }
    assert!(
        wait_until(T, || ptz_ops(&log).len() == 8).await,
        "calls: {:?}",
        ptz_ops(&log)
    );
    assert_eq!(
        ptz_ops(&log),
        [
            "ContinuousMove",
            "Stop",
            "GetPresets",
            "GotoPreset",
            "GotoHomePosition",
            "AbsoluteMove",
            "RelativeMove",
            "Stop"
        ]
    );
    let all = calls(&log);
    assert!(all.iter().all(|(_, v)| v["ok"] == true), "{all:?}");
    let abs = &all.iter().find(|(op, _)| op == "AbsoluteMove").expect("abs").1;
    assert_eq!(abs["tilt"].as_f64(), Some(-0.25));
    assert_eq!(
        all.iter().find(|(op, _)| op == "GotoPreset").expect("preset").1["preset"],
        "2"
    );

    // Without the ptz right: refused by the camera's node, no call reaches the device.
    let before = calls(&log).len();
    let (ok, out) = tokio::task::block_in_place(|| mesh_ptz(&watcher, &addrs, &["--pan", "0.5"]));
    assert!(!ok, "{out}");
    assert!(out.contains("ptz"), "the refusal names the missing right: {out}");
    // Out of range: refused before the device.
    let (ok, out) = tokio::task::block_in_place(|| mesh_ptz(&ptz, &addrs, &["--pan", "3"]));
    assert!(!ok && out.contains("outside -1..1"), "{out}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(calls(&log).len(), before, "refused requests made no ONVIF call");

    // Audited: each call with the operator's peer id, and the refusal.
    let audit = std::fs::read_to_string(cam_dir.join("audit.log")).unwrap_or_default()
        + &std::fs::read_to_string(cam_dir.join("audit-refusals.log")).unwrap_or_default();
    let ptz_lines = audit.lines().filter(|l| l.contains("\"ptz\"")).count();
    assert!(ptz_lines >= 8, "{ptz_lines} ptz audit lines:\n{audit}");
    assert!(audit.contains("refused-ptz"), "{audit}");
    cam.shutdown();
    drop(dev);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_camera_that_refuses_the_credentials_gives_a_clear_error_and_a_request_flood_is_bounded() {
    init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("onvif-calls.jsonl");
    let dev = device("operator", "right", &log);
    let (cam, addrs, ptz) = ptz_camera(dir.path(), &dev, "wrong", "profile_main").await;
    let (ok, out) = tokio::task::block_in_place(|| mesh_ptz(&ptz, &addrs, &["--home"]));
    assert!(!ok, "{out}");
    assert!(out.contains("Sender not authorized"), "the camera's fault text: {out}");
    // A flood from one member over one connection: the node answers every request, and
    // at most the burst plus the rate reaches the camera.
    let flood = dir.path().join("flood");
    let mut vc = loopback_config(Role::Viewer, FLEET);
    vc.node.bootstrap = addrs.0.clone();
    enroll(&vc, &flood);
    fleet(FLEET)
        .grant_dir(&flood, &["cam1".to_owned()], Rights::PTZ, 3600)
        .expect("grant");
    let node = camesh_node::Node::spawn(vc, &flood).await.expect("node starts");
    let before = calls(&log).len();
    let start = std::time::Instant::now();
    let mut refused = 0;
    for _ in 0..40 {
        let r = camesh_node::ptz::client::request(
            node.reach(),
            "cam1",
            camesh_proto::pb::ptz_request::Op::Stop(Default::default()),
            "flood",
        )
        .await;
        if let Err(e) = r {
            if e.to_string().contains("too many PTZ requests") {
                refused += 1;
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let reached = calls(&log).len() - before;
    println!("40 requests in {secs:.1} s: {reached} reached the camera, {refused} refused for rate");
    assert!(refused > 0, "no request was held back");
    assert!(
        reached as f64 <= 8.0 + 4.0 * secs + 1.0,
        "{reached} calls in {secs:.1} s passed the rate bound"
    );
    node.shutdown();
    cam.shutdown();
}

/// WS-Discovery (#17, item 5): an ONVIF device in a network namespace made here answers
/// the probe `mesh cameras --onvif` sends from another; with credentials, its profiles'
/// stream URIs and a ready [[camera]] entry are printed.
#[test]
fn mesh_cameras_onvif_finds_a_device_on_the_lan_and_prints_its_stream_uris() {
    use camesh_tests::netns::Lab;
    if !can_run(
        "mesh_cameras_onvif_finds_a_device_on_the_lan_and_prints_its_stream_uris",
        Lab::available(),
    ) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (_lab, [cam_ns, lan_ns], [cam_ip, _]) = Lab::pair("od", 93).expect("namespaces");
    let log = dir.path().join("onvif-calls.jsonl");
    let dev = device_in(Some((&cam_ns, &cam_ip)), "operator", "s3cret", &log);
    let run = |args: &[&str]| {
        let out = Lab::exec(&lan_ns, &bin("mesh"))
            .arg("--data-dir")
            .arg(dir.path().join("m"))
            .args(["cameras", "--onvif", "--timeout", "2s"])
            .args(args)
            .output()
            .expect("mesh runs");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let plain = run(&[]);
    println!("{plain}");
    let xaddr = format!("http://{cam_ip}:{}/onvif/device_service", dev.port);
    assert!(
        plain.contains(&format!("ONVIF camera \"Door Cam\" TestCam-1 at {xaddr}")),
        "{plain}"
    );
    let full = run(&["--user", "operator", "--password", "s3cret"]);
    println!("{full}");
    assert!(full.contains(&format!("rtsp://{cam_ip}:554/profile_main")), "{full}");
    assert!(full.contains("1920x1080") && full.contains("640x360"), "{full}");
    // The printed entry is a camera config that parses and validates as it is.
    let entry = &full[full.find("[[camera]]").expect("an entry")..];
    let config = camesh_node::config::Config::parse(&format!("[node]\nrole = \"camera\"\n{entry}")).expect("parses");
    let cam = &config.cameras[0];
    assert_eq!(cam.id, "door-cam");
    assert_eq!(
        cam.source.to_str(),
        Some(format!("rtsp://operator:s3cret@{cam_ip}:554/profile_main").as_str())
    );
    assert_eq!(
        cam.sub_source.as_ref().and_then(|p| p.to_str()),
        Some(format!("rtsp://operator:s3cret@{cam_ip}:554/profile_sub").as_str())
    );
    assert_eq!(cam.onvif.as_ref().map(|o| o.url.as_str()), Some(xaddr.as_str()));
    assert!(
        calls(&log).iter().filter(|(op, _)| op == "Probe").count() >= 2,
        "{:?}",
        calls(&log)
    );
    drop(dev);
}

/// Makes the device "see" something: one notification for every live subscription
/// (the script's test-only `GET /trigger`); how many subscriptions got it.
fn trigger(dev: &Device, topic: &str, name: &str, value: &str) -> u32 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", dev.port)).expect("device up");
    write!(
        s,
        "GET /trigger?topic={topic}&name={name}&value={value} HTTP/1.0\r\nHost: x\r\n\r\n"
    )
    .expect("sent");
    let mut answer = String::new();
    s.read_to_string(&mut answer).expect("answer");
    answer
        .rsplit("\r\n\r\n")
        .next()
        .and_then(|b| b.trim().parse().ok())
        .unwrap_or(0)
}

/// ONVIF events (#17, item 4): the camera node keeps a PullPoint subscription on the
/// device (WS-Security checked by the device on every call) and forwards what it reports
/// as camera-signed `onvif/<topic>` events, which `mesh events --follow` prints.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cameras_onvif_events_reach_mesh_events() {
    init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("onvif-calls.jsonl");
    let dev = device("operator", "s3cret", &log);
    let mut c = loopback_config(Role::Camera, FLEET);
    let mut cam1 = camera("cam1", "cam-640x360-30fps-gop2s.h264");
    cam1.onvif = Some(OnvifConfig {
        url: format!("http://127.0.0.1:{}/onvif/device_service", dev.port),
        user: "operator".into(),
        password: "s3cret".into(),
        profile: String::new(),
        events: true,
    });
    c.cameras = vec![cam1];
    let started = camesh_node::clock::now_unix_us();
    let cam = spawn_node(c, &dir.path().join("cam")).await;
    let boot = cam.dial_addrs().await.expect("addrs");
    let subscribed = wait_until(T, || {
        calls(&log)
            .iter()
            .any(|(op, v)| op == "CreatePullPointSubscription" && v["ok"] == true)
    })
    .await;
    assert!(subscribed, "no subscription: {:?}", calls(&log));
    let topic = "tns1:RuleEngine/CellMotionDetector/Motion";
    assert_eq!(trigger(&dev, topic, "IsMotion", "true"), 1);
    assert_eq!(trigger(&dev, topic, "IsMotion", "false"), 1);

    let operator = dir.path().join("operator");
    mesh_folder(&operator, FLEET, "operator", &["cam1"], Rights::LIVE);
    let from = format!("{}", started as f64 / 1e6);
    let mut events: Vec<serde_json::Value> = Vec::new();
    let seen = wait_until(T, || {
        let out = mesh_command(&operator, FLEET, &boot)
            .args(["--log", "warn", "events", "cam1", "--from", &from, "--json"])
            .output()
            .expect("mesh runs");
        events = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        events.len() >= 2
    })
    .await;
    assert!(seen, "{events:?}");
    let kind = format!("onvif/{topic}");
    assert_eq!(events[0]["kind"], kind.as_str());
    assert_eq!(events[0]["state"], "start");
    assert_eq!(events[0]["detail"], "VideoSourceConfigurationToken=vsc1, IsMotion=true");
    assert_eq!(events[1]["state"], "end");
    let at = events[0]["unix_us"].as_i64().expect("time");
    assert!(
        at >= started - 1_000_000,
        "the camera's own time is kept: {at} vs {started}"
    );
    // Every call the node made passed the device's WS-Security check.
    let refused: Vec<_> = calls(&log).into_iter().filter(|(_, v)| v["ok"] == false).collect();
    assert!(refused.is_empty(), "{refused:?}");
    cam.shutdown();
}
