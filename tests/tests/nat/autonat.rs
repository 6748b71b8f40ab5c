//! "AutoNAT decides" which node relays: the public node becomes a relay, the one behind a
//! NAT does not, and video flows through the AutoNAT-decided relay.

use std::time::Duration;

use camesh_node::config::Role;
use camesh_node::PeerId;
use camesh_tests::netns::{Nat, NatLab};

use super::frames::{first_log, read_frames};
use super::lab::{camera_node, mesh, start_node, watch_via, Spec};
use super::{skip, CLIP, PORT};

/// "AutoNAT decides" (issue #5): two nodes with `relay_server` unset, AutoNAT allowed to
/// trust the lab's addresses. The one on the public segment is dialed back fine by a peer
/// behind a NAT, so AutoNAT finds it public and it starts relaying; the one behind a cone
/// NAT cannot be dialed back (its NAT drops what it did not ask for), so it stays private
/// and relays for no one. A camera behind a symmetric NAT then reserves on the
/// AutoNAT-decided relay, and a viewer behind another NAT watches it through that relay.
#[test]
fn autonat_decides_which_node_relays_and_video_flows_through_it() {
    if skip("autonat_decides_which_node_relays_and_video_flows_through_it") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let mut lab = NatLab::new("an").expect("lab");
    let pub_host = lab.public("pub").expect("public host");
    let natted_site = lab.behind_nat("priv", Nat::Cone).expect("cone NAT");
    let cam_site = lab.behind_nat("cam", Nat::Symmetric).expect("camera NAT");
    let view_site = lab.behind_nat("view", Nat::Cone).expect("viewer NAT");
    let undecided = |name, host, bootstrap| Spec {
        name,
        role: Role::Viewer,
        host,
        relay_server: None,
        relays: vec![],
        bootstrap,
        cameras: vec![],
        lab_autonat: true,
    };
    let mut public = start_node(dir.path(), undecided("public", &pub_host, vec![]));
    // Connected to the public node: each is the other's AutoNAT server.
    let mut natted = start_node(
        dir.path(),
        undecided("natted", &natted_site.host, vec![public.addr.clone()]),
    );
    let became_public = public.proc.wait_for("relay server on", Duration::from_secs(60));
    let went_private = natted.proc.wait_for("status=Private", Duration::from_secs(60));
    let (pub_out, natted_out) = (public.proc.output(), natted.proc.output());
    let since_start = |out: &str, needle: &str| {
        // The swarm's own line (the `listening:` one on stdout has no time).
        let start = first_log(out, "listening address=").map(|(t, _)| t)?;
        first_log(out, needle).map(|(t, _)| (t - start) as f64 / 1e6)
    };
    println!(
        "AutoNAT: public node said Public {:.2}s after it started listening (relay server on: {}); \
         natted node said Private after {:.2}s (relay server on: {})",
        since_start(&pub_out, "relay server on").unwrap_or(f64::NAN),
        pub_out.contains("relay server on"),
        since_start(&natted_out, "status=Private").unwrap_or(f64::NAN),
        natted_out.contains("relay server on"),
    );
    assert!(became_public, "AutoNAT never found the public node public:\n{pub_out}");
    assert!(
        pub_out.contains("status=Public"),
        "relaying without a Public verdict?\n{pub_out}"
    );
    assert!(
        went_private,
        "the node behind the cone NAT never said Private:\n{natted_out}"
    );
    // `mesh peers` (issue #5: "with NAT status") run next to the natted node, on its side
    // of the NAT: each node's row carries the verdict AutoNAT gave that node.
    let mut p = mesh(
        dir.path(),
        "peers",
        &natted_site.host,
        PORT + 50,
        &[public.addr.clone(), natted.addr.clone()],
        &["peers", "--timeout", "3s"],
    );
    let peers_ok = p.wait_exit(Duration::from_secs(40)).is_some_and(|s| s.success());
    let peers_out = p.output();
    println!("mesh peers beside the natted node:\n{peers_out}");
    let row_words = |peer: &PeerId| -> Vec<String> {
        peers_out
            .lines()
            .find(|l| l.starts_with(&peer.to_string()))
            .map(|l| l.split_whitespace().map(str::to_owned).collect())
            .unwrap_or_default()
    };
    let (pub_row, natted_row) = (row_words(&public.peer), row_words(&natted.peer));
    assert!(peers_ok, "mesh peers failed:\n{peers_out}");
    assert!(
        pub_row.iter().any(|w| w == "public") && !pub_row.iter().any(|w| w == "private"),
        "the public node's NAT status: {pub_row:?}"
    );
    assert!(
        natted_row.iter().any(|w| w == "private") && !natted_row.iter().any(|w| w == "public"),
        "the natted node's NAT status: {natted_row:?}"
    );
    // A camera behind a symmetric NAT reserves on the relay AutoNAT chose, and a viewer
    // behind another NAT watches it through that relay.
    let cam = camera_node(dir.path(), &cam_site.host, &[&public], CLIP);
    let (mut viewer, frames) = watch_via(dir.path(), &view_site.host, &public, &cam, 15);
    let status = viewer.wait_exit(Duration::from_secs(75));
    let out = viewer.output();
    let log = read_frames(&frames);
    let (holes, repeats) = log.holes_and_repeats();
    let pub_out = public.proc.output();
    let natted_out = natted.proc.output();
    println!(
        "through the AutoNAT-decided relay: {} frames in {:.1}s, holes {holes}, repeats {repeats}; \
         circuit opened on it: {}; natted node still not relaying: {}",
        log.frames.len(),
        log.span().as_secs_f64(),
        pub_out.contains("relay circuit opened"),
        !natted_out.contains("relay server on"),
    );
    assert!(
        status.is_some_and(|s| s.success()),
        "mesh watch failed: {status:?}\n{out}"
    );
    assert!(
        pub_out.contains("relay circuit opened"),
        "the video did not go through the AutoNAT-decided relay:\n{pub_out}"
    );
    assert!(
        !out.contains("stream moved to the direct path"),
        "a symmetric NAT was punched, the video left the relay:\n{out}"
    );
    assert!(
        log.frames.len() >= 150,
        "only {} frames through the relay:\n{out}",
        log.frames.len()
    );
    assert_eq!(repeats, 0, "frames repeated");
    // Still private, still not relaying, after all of that (probes went on meanwhile).
    assert!(
        !natted_out.contains("relay server on") && !natted_out.contains("status=Public"),
        "the node behind the NAT started relaying:\n{natted_out}"
    );
    drop(cam);
}
