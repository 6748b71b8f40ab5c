//! Address helpers of the swarm task: peer ids in addresses, and which addresses are
//! worth dialing.

use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};

/// Splits `/.../p2p/<id>` into the peer id and the address before it.
pub fn split_p2p(mut addr: Multiaddr) -> (Option<PeerId>, Multiaddr) {
    match addr.iter().last() {
        Some(Protocol::P2p(peer)) => {
            addr.pop();
            (Some(peer), addr)
        }
        _ => (None, addr),
    }
}

/// Addresses worth dialing: not unspecified (0.0.0.0 / ::).
pub(super) fn usable_addr(a: &Multiaddr) -> bool {
    !a.iter().any(|p| match p {
        Protocol::Ip4(ip) => ip.is_unspecified(),
        Protocol::Ip6(ip) => ip.is_unspecified(),
        _ => false,
    })
}
