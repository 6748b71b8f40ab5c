//! The web app across NATs (#15): headless Chromium in a network namespace of its own,
//! behind a NAT router, enrolls with the link of `mesh fleet invite --role viewer` and
//! watches a camera that sits behind another NAT, through a relay on the public segment:
//! the page dials the relay over WebRTC-direct, proves membership to it, keeps a
//! reservation there (an admin hands it its grant over the mesh through it), learns of
//! the camera from the relay's camera list, and opens a circuit-relay-v2 circuit to the
//! camera's node, with Noise end to end over it. The relay holds no grant and sees only
//! sealed frames; the page opens them itself.
//!
//! The NAT lab is [`NatLab`] (tests/src/netns.rs): a public segment 100.64.77.0/24, the
//! relay and the admin node on it, the camera and the page each behind a NAT router
//! (10.77.<n>.2). The page's files and its report endpoint are served on 127.0.0.1 inside
//! the page's own namespace (a loopback page is a secure context, as WebCrypto and
//! WebCodecs need). Needs root, `ip netns`, `nft`, `tc`, Chromium and web/dist (skipped
//! with a message otherwise); namespaces and processes go when the test ends.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use camesh_node::config::{Config, Role};
use camesh_node::{Multiaddr, PeerId};
use camesh_proto::pb::MemberRole;
use camesh_tests::netns::{Host, Nat, NatLab, Proc};
use camesh_tests::web::*;
use camesh_tests::*;

const FLEET: &str = "t-web-nat";
const PORT: u16 = 4001;
const CLIP: &str = "cam-640x360-30fps-gop2s.h264";
/// Frames in 30 s of the clip (30 fps): well past the 15 s after which the page's
/// connections used to be aborted.
const LONG_FRAMES: u64 = 900;
/// The clip's picture size.
const SIZE: (u64, u64) = (640, 360);
/// Frames the page must decode: five seconds of the clip at 30 fps, well past the cached
/// GOP (2 s) a stream starts with, so live frames crossed the circuit.
const FRAMES: u64 = 150;

/// A `camesh-node` daemon in a namespace.
struct Daemon {
    proc: Proc,
    peer: PeerId,
    /// Its QUIC listen address with `/p2p/`.
    quic: Multiaddr,
}

/// Starts `camesh-node run` for `config` in `host`'s namespace (data in `dir`, already
/// enrolled), listening on QUIC at the host's address.
fn start(dir: &Path, mut c: Config, host: &Host) -> Daemon {
    c.node.listen = vec![format!("/ip4/{}/udp/{PORT}/quic-v1", host.ip)
        .parse()
        .expect("multiaddr")];
    std::fs::write(dir.join("config.toml"), c.to_toml()).expect("config");
    let peer = camesh_node::identity::load_or_create(dir)
        .expect("identity")
        .public()
        .to_peer_id();
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &host.ns])
        .arg(bin("camesh-node"))
        .arg("--data-dir")
        .arg(dir)
        .args(["--log", "info", "run", "--config"])
        .arg(dir.join("config.toml"))
        .env("NO_COLOR", "1");
    let mut proc = Proc::spawn(cmd, dir.join("node.log")).expect("camesh-node starts");
    assert!(
        proc.wait_for("listening:", Duration::from_secs(30)),
        "{} did not start:\n{}",
        c.node.name,
        proc.output()
    );
    let quic = c.node.listen[0].clone().with(libp2p::multiaddr::Protocol::P2p(peer));
    Daemon { proc, peer, quic }
}

/// The WebRTC-direct address (`.../webrtc-direct/certhash/.../p2p/<id>`) the daemon printed.
fn webrtc_addr(d: &mut Daemon, ip: &str) -> Multiaddr {
    let needle = format!("listening: /ip4/{ip}/udp/");
    let found = |out: &str| {
        out.lines()
            .filter_map(|l| l.strip_prefix("listening: "))
            .find(|a| a.contains("/webrtc-direct/") && format!("listening: {a}").starts_with(&needle))
            .map(str::to_owned)
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(a) = found(&d.proc.output()) {
            return a.parse().expect("a multiaddr");
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no WebRTC-direct address on {ip}:\n{}",
            d.proc.output()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Chromium, web/dist and the NAT lab, or why this test cannot run here.
fn ready(test: &str) -> Option<&'static str> {
    web_test_ready(test, || {
        NatLab::available().map_err(|why| format!("the NAT lab needs root, ip netns, nft and tc ({why})"))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_behind_nat_enrolls_and_watches_a_camera_behind_another_nat_through_a_relay() {
    init_tracing();
    let test = "page_behind_nat_enrolls_and_watches_a_camera_behind_another_nat_through_a_relay";
    let Some(chromium) = ready(test) else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let f = fleet(FLEET);
    let mut lab = NatLab::new("wn").expect("lab");
    let relay_host = lab.public("relay").expect("relay host");
    let admin_host = lab.public("admin").expect("admin host");
    let cam_site = lab.behind_nat("cam", Nat::Cone).expect("camera NAT");
    let page_site = lab.behind_nat("page", Nat::Cone).expect("page NAT");

    // The relay: a fleet member (certificate, no grant) relaying on the public segment,
    // with WebRTC-direct on for browsers.
    let relay_dir = dir.path().join("relay");
    f.enroll_dir(&relay_dir, MemberRole::Viewer, "relay", &[], 3600)
        .expect("enroll");
    let mut c = loopback_config(Role::Viewer, FLEET);
    c.node.name = "relay".into();
    c.node.relay_server = Some(true);
    c.node.webrtc = Some(true);
    let mut relay = tokio::task::block_in_place(|| start(&relay_dir, c, &relay_host));
    let relay_webrtc = tokio::task::block_in_place(|| webrtc_addr(&mut relay, &relay_host.ip));
    let relay_grants = std::fs::read_dir(relay_dir.join(camesh_node::auth::GRANTS_DIR)).map_or(0, |d| d.count());
    assert_eq!(relay_grants, 0, "the relay holds no grant");

    // The camera behind its NAT, holding a reservation on the relay.
    let cam_dir = dir.path().join("cam");
    let mut c = loopback_config(Role::Camera, FLEET);
    c.node.name = "cam".into();
    c.node.relays = vec![relay.quic.clone()];
    c.node.bootstrap = vec![relay.quic.clone()];
    c.node.relay_server = Some(false);
    c.cameras = vec![camera("cam1", CLIP)];
    enroll(&c, &cam_dir);
    let mut cam = tokio::task::block_in_place(|| start(&cam_dir, c, &cam_site.host));
    let reserved = format!("relay reservation accepted relay={}", relay.peer);
    assert!(
        tokio::task::block_in_place(|| cam.proc.wait_for(&reserved, Duration::from_secs(30))),
        "no reservation on the relay:\n{}",
        cam.proc.output()
    );

    // 1. The page, in its own namespace behind a NAT, joins with the invite link of an
    // admin node on the public segment.
    let admin = dir.path().join("admin");
    f.save(&admin).expect("admin folder");
    let (_inviting, _invite, link) = invite_from_in(Some(&admin_host.ns), &admin_host.ip, &admin).await;
    let fragment = link.split_once('#').expect("fragment").1.to_owned();
    let (site, mut reports) = static_server_in(&page_site.host.ns, dist());
    let profile = dir.path().join("profile");
    let ns = Some(page_site.host.ns.as_str());
    let page = open_page_in(ns, chromium, &format!("{site}index.html?report#{fragment}"), &profile);
    let joined = wait_report(&mut reports, "joining across the NAT", Duration::from_secs(90), |v| {
        v.get("member").is_some_and(|m| !m.is_null())
    })
    .await;
    println!(
        "page (behind NAT {}) joined through its NAT: redeem {} ms {}",
        page_site.outside_ip, joined["redeemMs"], joined["redeemTimes"]
    );
    assert_eq!(joined["member"]["role"], "viewer");
    let page_peer: PeerId = joined["peerId"].as_str().expect("peer id").parse().expect("a peer id");
    close_page(page).await;

    // 2. Given nothing but the relay's address, the page joins it and keeps a reservation
    // there; the admin, on the public segment and knowing only the relay, hands it a grant
    // for cam1 over the mesh (`mesh grant --send`, through the page's reservation).
    let url = format!("{site}index.html?report#peer={relay_webrtc}");
    let page = open_page_in(ns, chromium, &url, &profile);
    let reserved = wait_report(
        &mut reports,
        "a reservation on the relay",
        Duration::from_secs(60),
        |v| v["reachableAt"].as_array().is_some_and(|a| !a.is_empty()),
    )
    .await;
    println!("page reachable at {}", reserved["reachableAt"]);
    // The admin's laptop: an admin certificate (what `mesh fleet init` gives it) and its
    // membership, beside the root key the invite came from.
    f.admin_dir(&admin, "admin", 7200).expect("admin certificate");
    f.enroll_dir(&admin, MemberRole::Admin, "admin", &[], 3600)
        .expect("enrolled");
    let granted = Command::new("ip")
        .args(["netns", "exec", &admin_host.ns])
        .arg(bin("mesh"))
        .env_remove("CAMESH_FLEET")
        .env_remove("CAMESH_FLEET_ROOT")
        .arg("--data-dir")
        .arg(&admin)
        .args([
            "--no-mdns",
            "--listen",
            &format!("/ip4/{}/udp/0/quic-v1", admin_host.ip),
        ])
        .args(["-b", &relay.quic.to_string()])
        .args([
            "grant",
            &page_peer.to_string(),
            "--cameras",
            "cam1",
            "--rights",
            "live",
            "--until",
            "1h",
            "--send",
        ])
        .output()
        .expect("mesh grant --send");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&granted.stdout),
        String::from_utf8_lossy(&granted.stderr)
    );
    println!("mesh grant --send: {}", said.trim());
    assert!(granted.status.success(), "the grant did not reach the page:\n{said}");
    let kept = wait_report(&mut reports, "the grant kept", Duration::from_secs(30), |v| {
        v["grantsReceived"].as_u64().is_some_and(|n| n >= 1) || v["grantRefusal"].is_string()
    })
    .await;
    assert_eq!(kept["grantsReceived"], 1, "{}", kept["grantRefusal"]);
    assert_eq!(kept["grid"]["grants"], 1);
    close_page(page).await;

    // 3. With that grant and nothing but the relay's address, it finds the camera through
    // the relay (the relay's camera list names the cameras it heard of; cam1 holds a
    // reservation there) and watches through a circuit: the click is the watch starting
    // (the page's `started`).
    let url = format!("{site}index.html?report#watch=cam1");
    let page = open_page_in(ns, chromium, &url, &profile);
    let playing = wait_report(
        &mut reports,
        "watching through the relay",
        Duration::from_secs(90),
        |v| {
            let t = &v["grid"]["tiles"]["cam1"];
            t["decoded"].as_u64().is_some_and(|n| n >= FRAMES)
                || t["refusal"].is_string()
                || v["grid"]["errors"].as_array().is_some_and(|e| !e.is_empty())
        },
    )
    .await;
    let t = &playing["grid"]["tiles"]["cam1"];
    let lat = tile_latencies(t);
    println!(
        "page watched cam1 over {}: {} decoded, {} received, decode errors {}, rejected {}, {}x{}, \
         first frame {} ms after the watch began (relay dial, membership with relay and camera, circuit, \
         stream, keyframe, decode); capture-to-drawn of live frames p50 {:.1} ms p99 {:.1} ms over {}; streams \
         reopened {}",
        t["path"],
        t["decoded"],
        t["received"],
        t["decodeErrors"],
        t["rejected"],
        t["width"],
        t["height"],
        t["firstFrameMs"],
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        lat.len(),
        t["reopened"]
    );
    let errors = &playing["grid"]["errors"];
    assert!(
        t["refusal"].is_null() && errors.as_array().is_none_or(Vec::is_empty),
        "the page could not watch: {t}\nerrors: {errors}"
    );
    assert!(t["decoded"].as_u64().is_some_and(|n| n >= FRAMES), "{t}");
    assert_eq!(t["decodeErrors"], 0, "{t}");
    assert_eq!(t["rejected"], 0, "{t}");
    assert_eq!(
        (t["width"].as_u64(), t["height"].as_u64()),
        (Some(SIZE.0), Some(SIZE.1)),
        "{t}"
    );
    assert!(t["firstFrameMs"].is_u64(), "{t}");
    let path = t["path"].as_str().unwrap_or_default();
    assert!(
        path.starts_with("relayed ") && path.contains(&format!("/p2p/{}/p2p-circuit", relay.peer)),
        "a circuit through the relay: {path}"
    );
    // It keeps playing on the same connections: nothing closes them after a while (the
    // page's heartbeat used to abort its connection about 15 s after it opened).
    let long = wait_report(&mut reports, "watching for 30 s", Duration::from_secs(90), |v| {
        let t = &v["grid"]["tiles"]["cam1"];
        t["decoded"].as_u64().is_some_and(|n| n >= LONG_FRAMES)
            || t["reopened"].as_u64().is_some_and(|n| n > 0)
            || t["endedUnixMs"].is_i64()
    })
    .await;
    let t = &long["grid"]["tiles"]["cam1"];
    println!(
        "after {} frames (30 s at 30 fps): streams reopened {}, last break {}",
        t["decoded"], t["reopened"], t["lastBreak"]
    );
    assert_eq!(t["reopened"], 0, "{t}");
    assert!(t["endedUnixMs"].is_null(), "{t}");
    close_page(page).await;
    let relay_log = relay.proc.output();
    assert!(
        relay_log.contains("relay circuit opened"),
        "no circuit on the relay:\n{relay_log}"
    );
    relay.proc.kill();
    cam.proc.kill();
}
