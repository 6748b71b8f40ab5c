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
