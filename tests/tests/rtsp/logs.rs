//! A camera daemon's log file (#19): `camesh-node run` serving an RTSP camera, its stderr
//! going to a file as under systemd or `2> node.log`. The file holds log lines only: no
//! colour escape codes (stderr is not a terminal), and libav's own messages (its RTSP
//! client, demuxer and H.264 parser on the reader thread) come through `tracing` with the
//! camera's id, never as raw lines between the node's. At the default level libav says
//! nothing; at `libav=trace` it says a lot, which is what makes the check bite.

use std::path::Path;
use std::time::{Duration, Instant};

use camesh_node::config::{Role, RtspTransport};
use camesh_proto::pb::MemberRole;
use camesh_tests::nvr::start_daemon;
use camesh_tests::rtsp_server::{rtsp_server_or_skip, Mount, RtspServer};
use camesh_tests::{fleet, loopback_config};

use super::rtsp_camera;

/// A camera daemon in `dir` for the RTSP `url`, logging at `filter` to `dir/node.log`;
/// returns the log once the camera has had video for a while.
fn camera_log(dir: &Path, fleet_name: &str, url: &str, filter: &str) -> String {
    fleet(fleet_name)
        .enroll_dir(dir, MemberRole::Camera, "rtsp-cam", &["cam1".into()], 3600)
        .expect("enroll");
    let mut c = loopback_config(Role::Camera, fleet_name);
    c.cameras = vec![rtsp_camera("cam1", url, RtspTransport::Tcp)];
    c.validate().expect("valid camera config");
    std::fs::write(dir.join("config.toml"), c.to_toml()).expect("config written");
    let daemon = start_daemon(dir, "node.log", filter, "camera: ");
    let started = Instant::now();
    let log = || std::fs::read_to_string(dir.join("node.log")).unwrap_or_default();
    while !log().contains("source started") {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the camera got no video within 30 s:\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // A few GOPs of stream, for the parser's and the RTP depacketizer's messages.
    std::thread::sleep(Duration::from_secs(3));
    daemon.interrupt();
    log()
}

fn only_log_lines(what: &str, text: &str) {
    let log_line = regex::Regex::new(r"^\d{4}-\d\d-\d\dT\S+\s+(TRACE|DEBUG|INFO|WARN|ERROR) ").expect("regex");
    assert!(!text.contains('\x1b'), "{what}: escape codes in the log file:\n{text}");
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        assert!(
            log_line.is_match(line),
            "{what}: a line that is not a log line (raw libav output?): {line:?}"
        );
    }
}

#[test]
fn a_camera_daemons_log_file_holds_log_lines_only_with_libav_routed_through_tracing() {
    if !rtsp_server_or_skip("rtsp log file") {
        return;
    }
    let server = RtspServer::start(&[Mount::live("/live", "640x360,bframes=2")]);
    let url = server.url("/live");
    let (quiet_dir, loud_dir) = (
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    );
    let (quiet, loud) = std::thread::scope(|s| {
        let q = s.spawn(|| camera_log(quiet_dir.path(), "t-log-default", &url, "info"));
        let l = s.spawn(|| camera_log(loud_dir.path(), "t-log-libav", &url, "info,libav=trace"));
        (q.join().expect("default run"), l.join().expect("libav run"))
    });

    only_log_lines("default level", &quiet);
    assert!(
        !quiet.contains(" libav:"),
        "libav's messages are debug and trace, not for the default level:\n{quiet}"
    );
    assert!(!quiet.contains("Failed to trigger bootstrap"), "{quiet}");
    assert!(
        quiet.contains("source started") && quiet.contains("camera=cam1"),
        "{quiet}"
    );

    only_log_lines("libav=trace", &loud);
    let libav: Vec<&str> = loud.lines().filter(|l| l.contains(" libav:")).collect();
    println!(
        "default level: {} log lines; libav=trace: {} lines, {} from libav, e.g.:",
        quiet.lines().count(),
        loud.lines().count(),
        libav.len()
    );
    for l in libav.iter().take(5) {
        println!("  {l}");
    }
    assert!(!libav.is_empty(), "libav said nothing at trace level:\n{loud}");
    let of_camera = libav.iter().filter(|l| l.contains("camera=cam1")).count();
    assert!(
        of_camera > 0,
        "no libav line names the camera it is about:\n{}",
        libav.join("\n")
    );
}
