// The page's libp2p node: a dialer over WebRTC-direct (certhash multiaddrs), the transport
// camesh nodes listen on for browsers. WebRTC-direct runs Noise inside its own handshake
// and carries each stream on a data channel, so no separate encrypter or muxer is needed.
// A camera behind NAT is reached through a relay circuit: the page dials a public member
// over WebRTC-direct and asks it (circuit relay v2 hop) for a relayed connection to the
// camera, which holds a reservation there; Noise and yamux run end to end over that
// circuit, so the relay carries only sealed frames.

import { circuitRelayTransport } from '@libp2p/circuit-relay-v2'
import { identify } from '@libp2p/identify'
import { noise } from '@libp2p/noise'
import { yamux } from '@libp2p/yamux'
import { webRTCDirect } from '@libp2p/webrtc'
import { dns } from '@multiformats/dns'
import { createLibp2p } from 'libp2p'
import { Circuit, WebRTCDirect } from '@multiformats/multiaddr-matcher'
import type { Libp2p, PrivateKey } from '@libp2p/interface'
import type { Multiaddr } from '@multiformats/multiaddr'

/** A node that only dials: a page cannot listen on WebRTC-direct. */
export async function startNode (privateKey: PrivateKey): Promise<Libp2p> {
  return await createLibp2p({
    privateKey,
    // No ping heartbeat: js-libp2p's connection monitor closes each ping stream and
    // waits for the FIN_ACK that WebRTC-direct streams end with, which rust-libp2p does
    // not send (rust-libp2p#5687, open); every heartbeat failed and aborted the
    // connection to the node about 15 s after it opened, cutting a watch off. WebRTC's
    // own consent checks (ICE) still end a connection whose far end went away.
    connectionMonitor: { enabled: false },
    // No DNS: libp2p's browser default resolves over HTTPS at third-party servers, which
    // the page's CSP (connect-src 'self') would block anyway. Invites carry IP addresses.
    dns: dns({
      resolvers: {
        '.': async (name: string) => { throw new Error(`this page resolves no DNS names (${name})`) }
      }
    }),
    transports: [webRTCDirect(), circuitRelayTransport()],
    // A relayed connection needs Noise and a muxer of its own (the circuit is a plain
    // stream), and the circuit transport needs identify on the relay connection.
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    services: { identify: identify() },
    connectionGater: {
      // js-libp2p refuses private addresses in browsers by default; a fleet's NVR or
      // camera on the same LAN is exactly what a depot PC watches, so allow them.
      denyDialMultiaddr: () => false
    }
  })
}

/** The addresses of `addrs` the page can dial. */
export function dialable (addrs: Multiaddr[]): Multiaddr[] {
  return addrs.filter(a => WebRTCDirect.matches(a) || Circuit.matches(a))
}
