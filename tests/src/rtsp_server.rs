//! A real RTSP server for tests: GStreamer's RTSP server (Debian's
//! `gir1.2-gst-rtsp-server-1.0` through `python3-gi`), run as a child process from
//! `tests/scripts/rtsp_server.py` on 127.0.0.1. No mock: cameras and ffmpeg talk to it
//! over real RTSP/RTP.
//!
//! [`RtspServer::start`] waits (bounded) until the server listens; dropping it (or
//! [`RtspServer::stop`]) kills it. [`RtspServer::restart`] brings it back on the same
//! port, as a camera that rebooted.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// How long the server may take to start listening.
const START_LIMIT: Duration = Duration::from_secs(15);

/// The Python interpreter that can import GStreamer's RTSP server, if any. Debian's
/// `/usr/bin/python3` first: a `python3` earlier on PATH (pyenv, venv) usually lacks
/// the system's `gi` module.
pub fn python_with_gst_rtsp() -> Result<PathBuf, String> {
    let probe = "import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstRtspServer', '1.0'); \
                 from gi.repository import Gst, GstRtspServer; Gst.init(None); \
                 assert Gst.ElementFactory.find('x264enc') and Gst.ElementFactory.find('qtdemux')";
    let mut last = String::from("no python3 found");
    for candidate in ["/usr/bin/python3", "python3"] {
        match Command::new(candidate).args(["-c", probe]).output() {
            Ok(o) if o.status.success() => return Ok(PathBuf::from(candidate)),
            Ok(o) => {
                last = String::from_utf8_lossy(&o.stderr)
                    .lines()
                    .last()
                    .unwrap_or("")
                    .to_owned()
            }
            Err(e) => last = e.to_string(),
        }
    }
    Err(format!(
        "GStreamer's RTSP server is not usable from Python ({last}); install it with scripts/setup.sh \
         (gstreamer1.0-rtsp gir1.2-gst-rtsp-server-1.0 python3-gi gstreamer1.0-plugins-{{base,good,bad,ugly}})"
    ))
}

/// Whether RTSP tests can run (a failure under CI, where scripts/setup.sh installs the
/// server: [`crate::can_run`]).
pub fn rtsp_server_or_skip(test: &str) -> bool {
    crate::can_run(test, python_with_gst_rtsp().map(|_| ()))
}

/// One mount of the server: its path (`/cam`) and what it serves (see the script).
#[derive(Clone, Debug)]
pub struct Mount {
    pub path: String,
    pub spec: String,
}

impl Mount {
    /// An MP4 fixture through qtdemux (each client gets the file from its start).
    pub fn file(path: &str, clip: &Path) -> Self {
        Mount {
            path: path.into(),
            spec: format!("file:{}", clip.display()),
        }
    }

    /// An MP4 fixture whose SPS/PPS go only in the SDP.
    pub fn file_sdp_params(path: &str, clip: &Path) -> Self {
        Mount {
            path: path.into(),
            spec: format!("file:{},params=sdp", clip.display()),
        }
    }

    /// A live x264 encoder shared by all clients; `opts` like `"640x360,bframes=2"`.
    pub fn live(path: &str, opts: &str) -> Self {
        Mount {
            path: path.into(),
            spec: format!("live:{opts}"),
        }
    }

    pub fn h265(path: &str) -> Self {
        Mount {
            path: path.into(),
            spec: "h265:320x180".into(),
        }
    }

    pub fn audio_only(path: &str) -> Self {
        Mount {
            path: path.into(),
            spec: "audio".into(),
        }
    }
}

#[derive(Debug)]
pub struct RtspServer {
    child: Option<(Child, ChildStdin)>,
    pub port: u16,
    mounts: Vec<Mount>,
    auth: Option<(String, String)>,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/rtsp_server.py")
}

impl RtspServer {
    /// Starts a server on a free port.
    pub fn start(mounts: &[Mount]) -> RtspServer {
        Self::start_with(mounts, None, 0)
    }

    /// Starts a server that requires HTTP Basic credentials.
    pub fn start_with_auth(mounts: &[Mount], user: &str, password: &str) -> RtspServer {
        Self::start_with(mounts, Some((user.into(), password.into())), 0)
    }

    fn start_with(mounts: &[Mount], auth: Option<(String, String)>, port: u16) -> RtspServer {
        let mut s = RtspServer {
            child: None,
            port,
            mounts: mounts.to_vec(),
            auth,
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let python = python_with_gst_rtsp().unwrap_or_else(|e| panic!("{e}"));
        let mut cmd = Command::new(python);
        cmd.arg(script()).arg("--port").arg(self.port.to_string());
        if let Some((u, p)) = &self.auth {
            cmd.args(["--user", u, "--password", p]);
        }
        for m in &self.mounts {
            cmd.arg("--mount").arg(format!("{}={}", m.path, m.spec));
        }
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn().expect("the RTSP server script starts");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let port = loop {
            match rx.recv_timeout(START_LIMIT) {
                Ok(line) => {
                    if let Some(p) = line.strip_prefix("READY ") {
                        break p.trim().parse::<u16>().expect("a port number");
                    }
                    if line.starts_with("ERROR") {
                        let _ = child.kill();
                        panic!("the RTSP server did not start: {line}");
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("the RTSP server did not say READY within {START_LIMIT:?}");
                }
            }
        };
        self.port = port;
        self.child = Some((child, stdin));
    }

    /// `rtsp://127.0.0.1:<port><mount>`, with the credentials when the server has them.
    pub fn url(&self, mount: &str) -> String {
        match &self.auth {
            Some((u, p)) => format!("rtsp://{u}:{p}@127.0.0.1:{}{mount}", self.port),
            None => format!("rtsp://127.0.0.1:{}{mount}", self.port),
        }
    }

    /// The URL without credentials.
    pub fn url_without_auth(&self, mount: &str) -> String {
        format!("rtsp://127.0.0.1:{}{mount}", self.port)
    }

    /// Kills the server (as a camera losing power): clients see their connection drop.
    pub fn stop(&mut self) {
        if let Some((mut child, stdin)) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            drop(stdin);
        }
    }

    /// Starts it again on the same port with the same mounts.
    pub fn restart(&mut self) {
        self.stop();
        // The listening socket is gone with the process; retry briefly if the port is
        // still held by the kernel.
        for attempt in 0..20 {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.spawn()));
            if r.is_ok() {
                return;
            }
            assert!(
                attempt < 19,
                "the RTSP server could not be restarted on port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }
}

impl Drop for RtspServer {
    fn drop(&mut self) {
        self.stop();
    }
}
