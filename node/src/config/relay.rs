//! The `relay` preset: the commented config `camesh-node init --role relay` writes for a
//! depot or shore server with a public address. It relays for NATed members (circuit
//! relay v2), serves the DHT (so members that know only this node find each other's
//! cameras through it), listens on WebRTC-direct for browsers, and has no cameras. The
//! node runs as a viewer member: relaying needs no camera or NVR certificate.

/// The relay preset as TOML with a comment on every key; it parses and validates as is.
pub fn relay_preset_toml(fleet_id: &str, fleet_root: &str) -> String {
    // Quoted with TOML basic-string escapes (ids and base58 keys never need them, but a
    // hand-typed --fleet must not break the file).
    let q = |s: &str| toml::Value::String(s.to_owned()).to_string();
    format!(
        r#"# camesh relay: a depot or shore server with a public address.
# Members behind NAT keep a reservation here and are reached through it until a hole
# punch gives a direct path; members that know only this node (`mesh -b <this node>`)
# find cameras through its DHT. It serves no cameras and records nothing.
# Dial it as /ip4/<public ip>/udp/4001/quic-v1/p2p/<peer id> (`camesh-node id`).

[node]
# A relay is a plain member (a viewer certificate); the keys below make it a relay.
role = "viewer"
# A display name for people.
name = "relay"
# The fleet this node belongs to (scopes the DHT and gossip: fleets never mix).
fleet_id = {fleet}
# The fleet root public key (`mesh fleet init` prints it): it vouches for members.
fleet_root = {root}
# Fixed ports, so members can be given this address: QUIC first, TCP as a fallback.
# Open UDP 4001, TCP 4001 and UDP 4002 (WebRTC-direct) in the firewall.
listen = ["/ip4/0.0.0.0/udp/4001/quic-v1", "/ip4/0.0.0.0/tcp/4001"]
# Other relays or servers to connect to at start (/.../p2p/<peer id>); none needed.
bootstrap = []
# A server on a public network has no LAN peers to find.
mdns = false
# Serve the Kademlia DHT: members publish their cameras' provider records here and
# look them up here, so `-b <this relay>` is all a NATed member needs.
dht_server = true
# Seconds between this node's camera announcements (it has none; kept for completeness).
announce_interval_s = 5
# Serve circuit relay v2 to fleet members (strangers are refused). Forced on: a server
# behind a firewall may never be confirmed public by AutoNAT.
relay_server = true
# Relays this node reserves a slot on: none, it is one.
relays = []
# Listen on WebRTC-direct, so browsers can reach the fleet through this node.
webrtc = true
# Where WebRTC-direct listens (a fixed port for browsers to be given).
webrtc_listen = ["/ip4/0.0.0.0/udp/4002/webrtc-direct"]
"#,
        fleet = q(fleet_id),
        root = q(fleet_root),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Role};

    #[test]
    fn the_relay_preset_parses_validates_and_relays() {
        let key = libp2p::identity::Keypair::generate_ed25519();
        let root = bs58::encode(key.public().encode_protobuf()).into_string();
        let root = root.as_str();
        let text = relay_preset_toml("depot-1", root);
        let c = Config::parse(&text).expect("parses");
        c.validate().expect("validates");
        assert_eq!(c.node.role, Role::Viewer);
        assert_eq!(c.node.fleet_id, "depot-1");
        assert_eq!(c.node.fleet_root, root);
        assert_eq!(c.node.relay_server, Some(true));
        assert!(c.dht_server(), "serves the DHT");
        assert!(c.webrtc() && c.webrtc_listen().len() == 1, "WebRTC-direct on");
        assert!(c.cameras.is_empty() && c.forwards.is_empty());
        assert!(!c.node.mdns);
        // Every key is commented: each `key =` line follows a comment line.
        let lines: Vec<&str> = text.lines().collect();
        for (i, l) in lines.iter().enumerate() {
            if l.contains(" = ") {
                assert!(lines[i - 1].starts_with('#'), "no comment above {l:?}");
            }
        }
        // A written config round-trips to the same values.
        assert_eq!(Config::parse(&c.to_toml()).expect("round trip"), c);
    }

    #[test]
    fn odd_fleet_names_are_quoted() {
        let c = Config::parse(&relay_preset_toml("a\"b", "k")).expect("parses");
        assert_eq!(c.node.fleet_id, "a\"b");
    }
}
