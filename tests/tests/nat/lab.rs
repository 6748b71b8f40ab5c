//! The lab's nodes: `camesh-node` daemons in namespaces (a relay, a camera behind a NAT
//! holding reservations, nodes whose relaying AutoNAT decides) and `mesh` runs as
//! viewers, `mesh watch` with a frame log.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use camesh_node::config::{CameraConfig, Role};
use camesh_node::{Multiaddr, PeerId};
use camesh_proto::pb::MemberRole;
use camesh_tests::netns::{Host, Proc};
use camesh_tests::*;

use super::{quic, FLEET, PORT};

/// A `camesh-node` in a namespace.
pub(crate) struct Daemon {
    pub(crate) proc: Proc,
    pub(crate) peer: PeerId,
    /// Its listen address with `/p2p/<id>`.
    pub(crate) addr: Multiaddr,
}

/// What a node runs as.
pub(crate) struct Spec<'a> {
    pub(crate) name: &'a str,
    pub(crate) role: Role,
    pub(crate) host: &'a Host,
    pub(crate) relay_server: Option<bool>,
    pub(crate) relays: Vec<Multiaddr>,
    /// Peers dialed at start besides the relays.
    pub(crate) bootstrap: Vec<Multiaddr>,
    pub(crate) cameras: Vec<CameraConfig>,
    /// AutoNAT that trusts the lab's private and 100.64/10 addresses and probes soon
    /// after start (production: global addresses only, first probe after 15 s).
    pub(crate) lab_autonat: bool,
}

pub(crate) fn start_node(dir: &Path, spec: Spec<'_>) -> Daemon {
    let d = dir.join(spec.name);
    let mut c = loopback_config(spec.role, FLEET);
    c.node.name = spec.name.into();
    c.node.listen = vec![quic(&spec.host.ip, PORT)];
    c.node.bootstrap = spec.relays.iter().chain(&spec.bootstrap).cloned().collect();
    c.node.relays = spec.relays;
    c.node.relay_server = spec.relay_server;
    c.cameras = spec.cameras;
    if spec.lab_autonat {
        c.limits.autonat_only_global_ips = false;
        c.limits.autonat_boot_delay_ms = 1000;
        c.limits.autonat_retry_interval_ms = 2000;
    }
    enroll(&c, &d);
    std::fs::write(d.join("config.toml"), c.to_toml()).expect("config");
    let peer = camesh_node::identity::load_or_create(&d)
        .expect("identity")
        .public()
        .to_peer_id();
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &spec.host.ns])
        .arg(bin("camesh-node"))
        .arg("--data-dir")
        .arg(&d)
        .args(["--log", "info,libp2p_dcutr=debug", "run", "--config"])
        .arg(d.join("config.toml"))
        .env("NO_COLOR", "1");
    let mut proc = Proc::spawn(cmd, d.join("node.log")).expect("camesh-node starts");
    assert!(
        proc.wait_for("listening:", Duration::from_secs(20)),
        "{} did not start:\n{}",
        spec.name,
        proc.output()
    );
    let addr = quic(&spec.host.ip, PORT).with(libp2p::multiaddr::Protocol::P2p(peer));
    Daemon { proc, peer, addr }
}

pub(crate) fn relay_node(dir: &Path, name: &str, host: &Host) -> Daemon {
    start_node(
        dir,
        Spec {
            name,
            role: Role::Viewer,
            host,
            relay_server: Some(true),
            relays: vec![],
            bootstrap: vec![],
            cameras: vec![],
            lab_autonat: false,
        },
    )
}

/// A camera node behind a NAT that keeps reservations on `relays`; returns once every
/// reservation is accepted.
pub(crate) fn camera_node(dir: &Path, host: &Host, relays: &[&Daemon], clip: &str) -> Daemon {
    let mut cam = start_node(
        dir,
        Spec {
            name: "cam",
            role: Role::Camera,
            host,
            relay_server: Some(false),
            relays: relays.iter().map(|r| r.addr.clone()).collect(),
            bootstrap: vec![],
            cameras: vec![camera("cam1", clip)],
            lab_autonat: false,
        },
    );
    for r in relays {
        let needle = format!("relay reservation accepted relay={}", r.peer);
        assert!(
            cam.proc.wait_for(&needle, Duration::from_secs(30)),
            "no reservation on {}:\n{}",
            r.peer,
            cam.proc.output()
        );
    }
    cam
}

/// The camera's address through `relay`.
pub(crate) fn circuit(relay: &Daemon, cam: &Daemon) -> Multiaddr {
    format!("{}/p2p-circuit/p2p/{}", relay.addr, cam.peer)
        .parse()
        .expect("circuit")
}

/// `mesh <args>` as viewer `name` in `host`'s namespace, listening on `port`.
pub(crate) fn mesh(dir: &Path, name: &str, host: &Host, port: u16, bootstrap: &[Multiaddr], args: &[&str]) -> Proc {
    let d = dir.join(name);
    let f = fleet(FLEET);
    f.enroll_dir(&d, MemberRole::Viewer, name, &[], 3600).expect("enroll");
    f.grant_dir(&d, &["*".to_owned()], camesh_node::auth::Rights::LIVE, 3600)
        .expect("grant");
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &host.ns])
        .arg(bin("mesh"))
        .arg("--data-dir")
        .arg(&d)
        .args(["--fleet", FLEET, "--fleet-root", &f.root_text(), "--no-mdns"])
        .arg("--listen")
        .arg(quic(&host.ip, port).to_string())
        .args(["--log", "camesh_node=info"]);
    for b in bootstrap {
        cmd.arg("-b").arg(b.to_string());
    }
    cmd.args(args).env("NO_COLOR", "1");
    Proc::spawn(cmd, d.join("mesh.log")).expect("mesh starts")
}

/// `mesh watch cam1` for `secs`, frames logged to `<dir>/<name>/frames.log`.
pub(crate) fn watch(dir: &Path, name: &str, host: &Host, bootstrap: &[Multiaddr], secs: u64) -> (Proc, PathBuf) {
    let log = dir.join(name).join("frames.log");
    std::fs::create_dir_all(dir.join(name)).expect("dir");
    let duration = format!("{secs}s");
    let p = mesh(
        dir,
        name,
        host,
        PORT,
        bootstrap,
        &[
            "watch",
            "cam1",
            "-o",
            "/dev/null",
            "--duration",
            &duration,
            "--frame-log",
            log.to_str().expect("utf-8 path"),
        ],
    );
    (p, log)
}

/// `mesh watch cam1` for `secs` as "viewer" in `host`'s namespace, reaching `cam` through
/// `relay` (bootstrapped from the relay and the camera's circuit address).
pub(crate) fn watch_via(dir: &Path, host: &Host, relay: &Daemon, cam: &Daemon, secs: u64) -> (Proc, PathBuf) {
    watch(dir, "viewer", host, &[relay.addr.clone(), circuit(relay, cam)], secs)
}
