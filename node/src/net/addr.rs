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

/// The addresses of one peer to dial, given explicitly: its WebRTC-direct ones only when
/// it has nothing else (a node's whole `dial_addrs` list handed over as bootstrap would
/// otherwise race a WebRTC connection against the QUIC one).
pub(super) fn prefer_quic(addrs: Vec<Multiaddr>) -> Vec<Multiaddr> {
    if addrs.iter().all(crate::addr::is_webrtc_direct) {
        return addrs;
    }
    addrs
        .into_iter()
        .filter(|a| !crate::addr::is_webrtc_direct(a))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webrtc_direct_is_dialed_only_when_there_is_nothing_else() {
        let quic: Multiaddr = "/ip4/127.0.0.1/udp/4001/quic-v1".parse().expect("addr");
        let webrtc: Multiaddr = "/ip4/127.0.0.1/udp/4002/webrtc-direct".parse().expect("addr");
        assert_eq!(prefer_quic(vec![webrtc.clone(), quic.clone()]), vec![quic]);
        assert_eq!(prefer_quic(vec![webrtc.clone()]), vec![webrtc]);
        assert!(prefer_quic(vec![]).is_empty());
    }
}
