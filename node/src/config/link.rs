//! The `[[link]]` entries of a node's config: caps on what this node sends to a peer per
//! second (a vehicle's LTE uplink, a ship's satellite link), live video first, bulk
//! transfers (replication) from what live leaves. The buckets are in
//! `crate::stream::budget`.

use libp2p::PeerId;
use serde::{Deserialize, Serialize};

/// One `[[link]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkConfig {
    /// A peer id, or `*`: one budget shared by every peer without an entry of its own
    /// (the node's uplink).
    pub peer: String,
    /// The cap in kbit/s on the wire (QUIC, UDP and IP headers counted: about 5% over the
    /// payload), live and bulk together (live first).
    pub kbit: u32,
}

/// Checks the entries: `Err((field, message))` for the first bad one.
pub(super) fn check(links: &[LinkConfig]) -> Result<(), (String, String)> {
    let mut seen = std::collections::HashSet::new();
    for (i, l) in links.iter().enumerate() {
        if l.peer != "*" && l.peer.parse::<PeerId>().is_err() {
            return Err((
                format!("link[{i}].peer"),
                format!("{:?} is neither a peer id nor *", l.peer),
            ));
        }
        if l.kbit < 8 {
            return Err((
                format!("link[{i}].kbit"),
                format!("{} kbit/s is below the least of 8", l.kbit),
            ));
        }
        if !seen.insert(l.peer.as_str()) {
            return Err((format!("link[{i}].peer"), format!("{} has two entries", l.peer)));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_checked() {
        let ok = |peer: &str, kbit| LinkConfig {
            peer: peer.into(),
            kbit,
        };
        let p = PeerId::random().to_string();
        assert!(check(&[ok(&p, 2000), ok("*", 500)]).is_ok());
        assert_eq!(check(&[ok("bus-7", 2000)]).unwrap_err().0, "link[0].peer");
        assert!(check(&[ok("*", 4)]).unwrap_err().1.contains("least of 8"));
        assert!(check(&[ok("*", 40), ok("*", 50)])
            .unwrap_err()
            .1
            .contains("two entries"));
    }
}
