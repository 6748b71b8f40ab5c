//! Address helpers of the swarm task: peer ids in addresses, and which addresses are
//! worth dialing.

use libp2p::multiaddr::Protocol;
use libp2p::Multiaddr;

/// Addresses worth dialing: not unspecified (0.0.0.0 / ::).
pub(super) fn usable_addr(a: &Multiaddr) -> bool {
    !a.iter().any(|p| match p {
        Protocol::Ip4(ip) => ip.is_unspecified(),
        Protocol::Ip6(ip) => ip.is_unspecified(),
        _ => false,
    })
}

/// Addresses nodes give each other through identify, Kademlia and mDNS: usable ones but
/// WebRTC-direct, which is for browsers. Between two nodes QUIC is faster and lighter
/// (webrtc-rs data channels over SCTP), and a node dialing both would race them. A node
/// still dials a WebRTC-direct address it is explicitly given.
pub(super) fn node_addr(a: &Multiaddr) -> bool {
    usable_addr(a) && !crate::addr::is_webrtc_direct(a)
}
