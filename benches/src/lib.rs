//! camesh-bench: the criterion benches of the hot paths and the loopback harness.
//!
//! The harness (`camesh-bench`, see `src/main.rs`) starts real camesh nodes over QUIC on
//! 127.0.0.1 and measures what DESIGN.md promises: capture-to-viewer latency, time to
//! first frame, throughput per core, fan-out and memory, each next to a baseline measured
//! in the same run (plain quinn on the same machine, the GOP cache turned off, ...).
//!
//! Layout:
//! - [`synth`]: synthetic cameras (realistic 4 Mbit/s frame sizes) paced at 30 fps;
//! - [`server`]: the serving node runs in a child process (`camesh-bench serve-node`) so
//!   its CPU time and RSS are its own, not the viewers'; [`server::ServerProc`] drives it;
//! - [`quic_baseline`]: plain quinn (same crypto provider as libp2p-quic) in a child
//!   process (`camesh-bench serve-quinn`): bulk throughput, paced-frame latency, handshake;
//! - [`viewer`]: viewer nodes in the harness process and the frame collector;
//! - [`fleet`]: a simulated fleet of hundreds to thousands of full nodes in this process
//!   (the scale section);
//! - [`sections`]: one module per measured figure group;
//! - [`report`]: the table on stdout and the JSON file;
//! - [`procstat`], [`stats`]: CPU seconds and RSS from `/proc`, percentiles.

pub mod fleet;
pub mod procstat;
pub mod quic_baseline;
pub mod report;
pub mod sections;
pub mod server;
pub mod stats;
pub mod synth;
pub mod viewer;

/// The fleet id every bench node uses.
pub const FLEET: &str = "bench";

/// Path of a committed fixture clip.
pub fn fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures")
        .join(name)
}

/// How long bench certificates and grants are valid.
pub const CERT_VALID_S: i64 = 6 * 3600;

/// The bench fleet's root key: made once per harness run, in memory only. Serving
/// processes get the public key on their command line and a certificate in their data
/// folder, which the harness writes before starting them.
pub fn fleet() -> &'static camesh_node::auth::fleet::FleetRoot {
    static F: std::sync::OnceLock<camesh_node::auth::fleet::FleetRoot> = std::sync::OnceLock::new();
    F.get_or_init(|| camesh_node::auth::fleet::FleetRoot::ephemeral(FLEET))
}

/// A node config for 127.0.0.1 only: QUIC on a random port, no mDNS, in the fleet whose
/// root public key is `fleet_root`.
pub fn loopback_config(role: camesh_node::Role, fleet_root: &str) -> camesh_node::Config {
    let mut c = camesh_node::Config::preset(role);
    c.node.fleet_id = FLEET.into();
    c.node.fleet_root = fleet_root.to_string();
    c.node.mdns = false;
    c.node.listen = vec!["/ip4/127.0.0.1/udp/0/quic-v1".parse().expect("static multiaddr")];
    c
}

/// Initialises logging to stderr when `CAMESH_BENCH_LOG` is set (e.g. `warn`, `debug`).
pub fn init_tracing() {
    if let Ok(filter) = std::env::var("CAMESH_BENCH_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            // No colour codes when the log goes to a file or a pipe.
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init();
    }
}
