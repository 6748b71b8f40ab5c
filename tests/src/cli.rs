//! The `mesh` command as a test runs it on 127.0.0.1: a data folder enrolled in a test
//! fleet, and the command line every run shares (fleet, root, no mDNS, a loopback QUIC
//! listener, bootstrap peers). Runs in network namespaces build their own (`netns`).

use std::path::Path;
use std::process::{Command, Output};

use camesh_node::auth::Rights;
use camesh_node::Multiaddr;
use camesh_proto::pb::MemberRole;

use crate::{bin, fleet};

/// Enrolls `dir` as viewer `name` of `fleet_name` with `rights` on `cameras` (`"*"`: all).
pub fn mesh_folder(dir: &Path, fleet_name: &str, name: &str, cameras: &[&str], rights: Rights) {
    let f = fleet(fleet_name);
    f.enroll_dir(dir, MemberRole::Viewer, name, &[], 3600).expect("enroll");
    let cameras: Vec<String> = cameras.iter().map(|c| (*c).to_owned()).collect();
    f.grant_dir(dir, &cameras, rights, 3600).expect("grant");
}

/// `mesh --data-dir <data>` in `fleet_name`, without mDNS, listening on a random
/// 127.0.0.1 QUIC port, dialing `bootstrap`; the caller adds the subcommand.
pub fn mesh_command(data: &Path, fleet_name: &str, bootstrap: &[Multiaddr]) -> Command {
    let mut cmd = Command::new(bin("mesh"));
    cmd.arg("--data-dir")
        .arg(data)
        .args(["--fleet", fleet_name, "--fleet-root", &fleet(fleet_name).root_text()])
        .args(["--no-mdns", "--listen", "/ip4/127.0.0.1/udp/0/quic-v1"]);
    for b in bootstrap {
        cmd.arg("-b").arg(b.to_string());
    }
    cmd
}

/// `mesh --data-dir <data> <args>` with only what that folder holds (no fleet from the
/// environment), as a user types it: (success, stdout, stderr).
pub fn mesh_in(data: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(bin("mesh"))
        .env_remove("CAMESH_FLEET")
        .env_remove("CAMESH_FLEET_ROOT")
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .output()
        .expect("mesh runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `mesh <args>` as [`mesh_command`] builds it, to its end, on a blocking thread.
pub async fn run_mesh(data: &Path, fleet_name: &str, bootstrap: &[Multiaddr], args: &[&str]) -> Output {
    let mut cmd = mesh_command(data, fleet_name, bootstrap);
    cmd.args(args);
    tokio::task::spawn_blocking(move || cmd.output().expect("mesh runs"))
        .await
        .expect("join")
}

/// Starts `mesh view` (`cmd`, arguments given) with its stdout piped and returns the child
/// and the gateway's address from the `mesh view: http://<addr>/` line it prints.
pub async fn spawn_mesh_view(cmd: Command) -> (tokio::process::Child, std::net::SocketAddr) {
    use tokio::io::AsyncBufReadExt;
    let mut view = tokio::process::Command::from(cmd);
    view.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true);
    let mut child = view.spawn().expect("mesh view starts");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
    let url = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        while let Ok(Some(l)) = lines.next_line().await {
            if let Some(u) = l.strip_prefix("mesh view: ") {
                return Some(u.trim().to_owned());
            }
        }
        None
    })
    .await
    .expect("mesh view prints its URL in time")
    .expect("a URL line");
    // Keep reading: mesh view prints more, and a closed pipe would end it.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let addr = url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .expect("host:port");
    (child, addr)
}
