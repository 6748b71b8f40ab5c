//! The NAT lab (issue #5): real `camesh-node` and `mesh` processes in network namespaces
//! behind NAT routers ([`NatLab`]): a relay on the public segment, cameras and viewers
//! behind endpoint-independent ("cone") or symmetric NATs.
//!
//! - cone ↔ cone: video starts over the relay and moves to a direct path by hole
//!   punching, with a continuous frame sequence;
//! - hole punching success rate over fresh attempts;
//! - symmetric NAT: video over the relay for minutes, far past libp2p's default circuit
//!   limits (2 min, 128 KiB);
//! - the relay is killed mid-stream: the viewer resumes through a second relay;
//! - 10% loss (and then a squeezed link) on the camera's side: video keeps playing with
//!   bounded latency, skipping to keyframes rather than building a backlog;
//! - relaying decided by AutoNAT (`relay_server` unset): the public node becomes a relay,
//!   the one behind a NAT does not, and video flows through the AutoNAT-decided relay.
//!
//! Needs root, `ip netns`, `nft` and `tc` (skipped with a message otherwise) and the
//! workspace binaries (`cargo build --workspace --bins`). Viewers are `mesh watch` with
//! `--frame-log`: one line per frame (sequence, capture and arrival time, size), which
//! is what the assertions read. Timings are printed; bounds are generous.
//!
//! The nodes of the lab are in [`lab`], the frame log and tracing lines in [`frames`];
//! the tests by topic: [`punching`], [`relayed`], [`loss`], [`autonat`].

mod adaptive;
mod autonat;
mod frames;
mod lab;
mod loss;
mod mobile;
mod punching;
mod relayed;

use camesh_node::Multiaddr;
use camesh_tests::can_run;
use camesh_tests::netns::NatLab;

const FLEET: &str = "t-nat";
const PORT: u16 = 4001;
const CLIP: &str = "cam-640x360-30fps-gop2s.h264";

/// Whether `test` must be skipped: the NAT lab needs root, ip netns, nft and tc (a
/// failure under CI, where scripts/setup.sh installs them and the run is root).
fn skip(test: &str) -> bool {
    !can_run(
        test,
        NatLab::available().map_err(|why| format!("the NAT lab needs root, ip netns, nft and tc ({why})")),
    )
}

fn quic(ip: &str, port: u16) -> Multiaddr {
    format!("/ip4/{ip}/udp/{port}/quic-v1").parse().expect("multiaddr")
}

fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}
