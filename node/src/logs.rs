//! Log output of the `camesh-node` and `mesh` binaries: `tracing` events on stderr,
//! coloured only when stderr is a terminal (a log file or a pipe gets plain text), with
//! the user's filter (`--log`, `CAMESH_LOG`). libav's own messages reach the same output
//! through `crate::media::avlog`, with the camera they are about.
//!
//! Nothing is shown at the default levels that does not need a user's attention: libp2p's
//! Kademlia warns "Failed to trigger bootstrap: No known peers." on every node that has
//! none yet (a lone camera, a `mesh` command before it dials), so its target is held to
//! errors unless the filter names libp2p or asks for debug or trace.

use std::io::IsTerminal;

/// The filter with camesh's defaults for chatty dependencies added (see the module docs).
pub fn filter_text(filter: &str) -> String {
    let f = filter.to_ascii_lowercase();
    if f.contains("libp2p") || f.contains("debug") || f.contains("trace") {
        return filter.to_owned();
    }
    if filter.trim().is_empty() {
        "libp2p_kad=error".to_owned()
    } else {
        format!("{filter},libp2p_kad=error")
    }
}

/// Installs the global subscriber; the error names the filter that does not parse.
pub fn init(filter: &str) -> Result<(), String> {
    let filter =
        tracing_subscriber::EnvFilter::try_new(filter_text(filter)).map_err(|e| format!("--log {filter:?}: {e}"))?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .try_init()
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kademlia_is_quiet_unless_asked_for() {
        assert_eq!(filter_text("info"), "info,libp2p_kad=error");
        assert_eq!(filter_text("warn"), "warn,libp2p_kad=error");
        assert_eq!(filter_text(""), "libp2p_kad=error");
        assert_eq!(filter_text("debug"), "debug");
        assert_eq!(filter_text("info,libp2p_kad=warn"), "info,libp2p_kad=warn");
        assert_eq!(filter_text("info,camesh_node=trace"), "info,camesh_node=trace");
        for f in ["info", "warn", "debug", "info,libav=debug"] {
            tracing_subscriber::EnvFilter::try_new(filter_text(f)).expect("parses");
        }
    }
}
