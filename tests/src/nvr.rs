//! The NVR daemon (`camesh-node run` in the nvr role) as a child process: its data
//! folder (certificate, grant, config), its start (waiting for the address it prints),
//! SIGKILL and SIGINT, and its log. Used by the NVR suite and the attack suite (which
//! starts a camera daemon the same way: [`start_daemon`]).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use camesh_node::auth::Rights;
use camesh_node::config::{Config, RecordRule, Role};
use camesh_node::{Multiaddr, PeerId};
use camesh_proto::pb::MemberRole;

use crate::{bin, fleet, loopback_config};

/// How long the daemon may take to print its address.
const START: Duration = Duration::from_secs(30);

/// The NVR daemon, a child process.
#[derive(Debug)]
pub struct NvrProc {
    child: Child,
    pub peer: PeerId,
    pub addr: Multiaddr,
}

impl NvrProc {
    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn kill9(mut self) {
        // `Child::kill` is SIGKILL on Unix: no handler runs, nothing is flushed.
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reaped");
    }
}

impl NvrProc {
    /// Ctrl-C (SIGINT): the daemon seals its segments and marks the index clean.
    pub fn interrupt(mut self) -> bool {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .is_ok_and(|s| s.success());
        for _ in 0..200 {
            if let Ok(Some(status)) = self.child.try_wait() {
                return sent && status.success();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }
}

impl NvrProc {
    /// Whether the process is still the one started (it has not exited).
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for NvrProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Provisions an NVR data folder that records `camera` (served at `cam`): certificate
/// (role nvr), a live+record grant, config.
pub fn nvr_folder(dir: &Path, fleet_name: &str, cam: &Multiaddr, camera: &str, edit: impl FnOnce(&mut Config)) {
    nvr_folder_without_grant(dir, fleet_name, cam, camera, edit);
    fleet(fleet_name)
        .grant_dir(dir, &[camera.into()], Rights::LIVE.union(Rights::RECORD), 3600)
        .expect("grant");
}

/// [`nvr_folder`] without the grant: the NVR waits for one.
pub fn nvr_folder_without_grant(
    dir: &Path,
    fleet_name: &str,
    cam: &Multiaddr,
    camera: &str,
    edit: impl FnOnce(&mut Config),
) {
    let f = fleet(fleet_name);
    f.enroll_dir(dir, MemberRole::Nvr, "nvr", &[], 3600).expect("enroll");
    let mut c = loopback_config(Role::Nvr, fleet_name);
    // A fixed port, as an installed NVR has: after a restart, peers reach it where it was.
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("a free UDP port")
        .port();
    c.node.listen = vec![format!("/ip4/127.0.0.1/udp/{port}/quic-v1").parse().expect("multiaddr")];
    c.node.bootstrap = vec![cam.clone()];
    c.nvr.records = vec![RecordRule {
        camera: camera.into(),
        ..RecordRule::default()
    }];
    edit(&mut c);
    c.validate().expect("valid nvr config");
    std::fs::write(dir.join("config.toml"), c.to_toml()).expect("config written");
}

/// Starts `camesh-node run` in `dir` (stderr appended to `dir/nvr.log`) and waits until
/// it prints its address and recordings folder.
pub fn start_nvr(dir: &Path) -> NvrProc {
    start_daemon(dir, "nvr.log", "info,camesh_node::net=warn", "recordings: ")
}

/// Starts `camesh-node run` in `dir` in whatever role its config gives, stderr appended
/// to `dir/<log>` at `filter`, and waits until it has printed its peer id, an address and
/// then a line starting with `ready` (`recordings: ` for an NVR, `camera: ` for a camera).
pub fn start_daemon(dir: &Path, log: &str, filter: &str, ready: &'static str) -> NvrProc {
    start_daemon_in(None, dir, log, filter, ready)
}

/// [`start_daemon`] inside network namespace `ns` (`ip netns exec` execs the daemon, so
/// the child is the daemon itself: SIGKILL reaches it).
pub fn start_daemon_in(ns: Option<&str>, dir: &Path, log: &str, filter: &str, ready: &'static str) -> NvrProc {
    start_daemon_env(ns, dir, (log, filter), ready, &[])
}

/// [`start_daemon_in`] with extra environment variables for the daemon.
pub fn start_daemon_env(
    ns: Option<&str>,
    dir: &Path,
    (log, filter): (&str, &str),
    ready: &'static str,
    env: &[(&str, &std::ffi::OsStr)],
) -> NvrProc {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(log))
        .expect("log file");
    let mut cmd = match ns {
        Some(ns) => crate::netns::Lab::exec(ns, &bin("camesh-node")),
        None => Command::new(bin("camesh-node")),
    };
    let mut child = cmd
        .arg("--data-dir")
        .arg(dir)
        .args(["--log", filter])
        .arg("run")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .spawn()
        .expect("camesh-node starts");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let (mut peer, mut addr) = (None, None);
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(p) = line.strip_prefix("peer id: ") {
                peer = p.trim().parse::<PeerId>().ok();
            } else if let Some(a) = line.strip_prefix("listening: ") {
                addr = addr.or_else(|| a.trim().parse::<Multiaddr>().ok());
            } else if line.starts_with(ready) && peer.is_some() {
                let _ = tx.send((peer, addr));
                // Keep draining so the pipe never fills.
                peer = None;
                addr = None;
            }
        }
    });
    let (peer, addr) = rx
        .recv_timeout(START)
        .expect("the daemon started within the time limit");
    NvrProc {
        child,
        peer: peer.expect("peer id printed"),
        addr: addr.expect("address printed"),
    }
}

pub fn log_text(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("nvr.log")).unwrap_or_default()
}

/// Sums over a replicating node's "replicated chunk" log lines: (chunks, bytes, ms).
pub fn replicated_chunks(log: &str) -> (u64, u64, u64) {
    let field = |l: &str, name: &str| -> u64 {
        l.split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .and_then(|v| v.trim_matches('"').parse().ok())
            .unwrap_or(0)
    };
    log.lines()
        .filter(|l| l.contains("replicated chunk"))
        .fold((0, 0, 0), |(n, b, ms), l| {
            (n + 1, b + field(l, "bytes="), ms + field(l, "ms="))
        })
}
