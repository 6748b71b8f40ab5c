//! The binaries as a user runs them: `mesh watch` into ffprobe, `mesh demo`, and
//! `camesh-node` refusing a bad config with a one-line error.

use std::process::Command;

use camesh_tests::cli::{mesh_folder, run_mesh};
use camesh_tests::ffmpeg::ffprobe_json;
use camesh_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mesh_watch_output_is_h264_that_ffprobe_counts() {
    init_tracing();
    assert!(
        have("ffprobe"),
        "ffprobe is needed (apt-get install ffmpeg; scripts/setup.sh does it)"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let cam = camera_node(
        &dir.path().join("cam"),
        "t-cli",
        vec![camera("cam1", "cam-640x360-30fps-gop2s.h264")],
        vec![],
    )
    .await;
    let addr = cam.dial_addrs().await.expect("addrs").remove(0);
    let out_file = dir.path().join("out.h264");
    let data = dir.path().join("mesh");
    mesh_folder(&data, "t-cli", "mesh", &["cam1"], camesh_node::auth::Rights::LIVE);
    let out = out_file.to_str().expect("utf-8 path");
    let watch = ["watch", "cam1", "--frames", "90", "--quiet", "-o", out];
    let status = run_mesh(&data, "t-cli", &[addr], &watch).await;
    assert!(
        status.status.success(),
        "mesh watch failed: {}",
        String::from_utf8_lossy(&status.stderr)
    );
    let json = ffprobe_json(
        &out_file,
        &[
            "-count_frames",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=codec_name,width,height,nb_read_frames",
        ],
    );
    let s = &json["streams"][0];
    assert_eq!(s["codec_name"], "h264");
    assert_eq!((s["width"].as_u64(), s["height"].as_u64()), (Some(640), Some(360)));
    assert_eq!(s["nb_read_frames"].as_str(), Some("90"), "{json}");
    cam.shutdown();
}

#[test]
fn mesh_demo_streams_every_camera() {
    let out = Command::new(bin("mesh"))
        .args(["demo", "--cameras", "3", "--duration", "6s", "--every", "2"])
        .output()
        .expect("mesh demo runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last_table: Vec<&str> = stdout
        .trim_end()
        .rsplit("CAMERA")
        .next()
        .expect("a table")
        .lines()
        .skip(1)
        .collect();
    assert_eq!(last_table.len(), 3, "{stdout}");
    for row in last_table {
        assert!(row.contains(" live "), "every camera is live: {row}");
        let frames: u64 = row
            .split_whitespace()
            .nth_back(3)
            .and_then(|f| f.parse().ok())
            .expect("frames column");
        assert!(frames > 30, "{row}");
    }
}

#[test]
fn camesh_node_names_the_bad_config_field_in_one_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("config.toml");
    std::fs::write(
        &cfg,
        "[node]\nrole = \"camera\"\nlisten_on = [\"/ip4/127.0.0.1/udp/0/quic-v1\"]\n",
    )
    .expect("write");
    let out = Command::new(bin("camesh-node"))
        .arg("--data-dir")
        .arg(dir.path())
        .args(["run", "--config"])
        .arg(&cfg)
        .output()
        .expect("camesh-node runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(err.contains("listen_on"), "{err}");

    std::fs::write(
        &cfg,
        "[[camera]]\nid = \"cam1\"\nsource = \"missing.h264\"\n[node]\nrole = \"camera\"\n",
    )
    .expect("write");
    let out = Command::new(bin("camesh-node"))
        .arg("--data-dir")
        .arg(dir.path())
        .args(["run", "--config"])
        .arg(&cfg)
        .output()
        .expect("camesh-node runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("camera[0].source"), "{err}");
}

#[test]
fn camesh_node_init_writes_the_config_for_its_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let root = fleet("t-cli-mode").root_text();
    let init = |force: bool| {
        let mut c = Command::new(bin("camesh-node"));
        c.arg("--data-dir").arg(dir.path()).args([
            "init",
            "--role",
            "camera",
            "--fleet",
            "t-cli-mode",
            "--fleet-root",
            &root,
        ]);
        if force {
            c.arg("--force");
        }
        c.output().expect("camesh-node runs")
    };
    let out = init(false);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let cfg = dir.path().join("config.toml");
    let mode = || std::fs::metadata(&cfg).expect("config").permissions().mode() & 0o777;
    assert_eq!(mode(), 0o600, "config.toml holds RTSP passwords");
    // A config an older version left readable by all is replaced by a private one.
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let out = init(true);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(mode(), 0o600);
}

/// `mesh fleet invite` and `camesh-node join` as an installer types them: the invite is
/// printed, the camera joins with it and gets its certificate, and the admin's command
/// ends once the camera has its answer.
#[test]
fn a_camera_joins_with_an_invite_from_the_command_line() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let dir = tempfile::tempdir().expect("tempdir");
    let admin = dir.path().join("admin");
    let cam = dir.path().join("cam");
    let mesh = |args: &[&str]| {
        let mut c = Command::new(bin("mesh"));
        c.env_remove("CAMESH_FLEET")
            .env_remove("CAMESH_FLEET_ROOT")
            .arg("--data-dir")
            .arg(&admin)
            .args(["--no-mdns", "--listen", "/ip4/127.0.0.1/udp/0/quic-v1"])
            .args(args);
        c
    };
    let out = mesh(&["fleet", "init", "--id", "t-cli-join"])
        .output()
        .expect("mesh runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut inviting = mesh(&[
        "fleet",
        "invite",
        "--role",
        "camera",
        "--name",
        "bus-9",
        "--cameras",
        "cam9",
        "--expires",
        "2m",
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("mesh fleet invite runs");
    let stdout = inviting.stdout.take().expect("stdout");
    let invite = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .take(20)
        .find_map(|l| {
            l.split_whitespace()
                .find(|w| w.starts_with("camesh-invite:"))
                .map(str::to_owned)
        })
        .expect("an invite printed");
    let joined = Command::new(bin("camesh-node"))
        .arg("--data-dir")
        .arg(&cam)
        .args(["--log", "warn", "join", &invite])
        .output()
        .expect("camesh-node runs");
    assert!(
        joined.status.success(),
        "join: {}",
        String::from_utf8_lossy(&joined.stderr)
    );
    assert!(String::from_utf8_lossy(&joined.stdout).contains("joined fleet t-cli-join"));
    assert!(cam.join("membership.cert").is_file());
    // The admin's command ends by itself, saying who redeemed it.
    let mut done = None;
    for _ in 0..200 {
        if let Some(status) = inviting.try_wait().expect("wait") {
            done = Some(status);
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let status = done.unwrap_or_else(|| {
        let _ = inviting.kill();
        panic!("mesh fleet invite did not end after the redemption")
    });
    let mut err = String::new();
    std::io::Read::read_to_string(&mut inviting.stderr.take().expect("stderr"), &mut err).expect("stderr");
    assert!(status.success() && err.contains("redeemed by"), "{err}");
}
