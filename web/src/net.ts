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

/**
 * A page cannot listen on WebRTC-direct; it dials, and is reachable through a relay: it
 * listens on `/p2p-circuit`, which makes a reservation on one relay it is connected to
 * (a peer whose identify lists the hop protocol; camesh relays serve members only).
 */
export async function startNode (privateKey: PrivateKey): Promise<Libp2p> {
  return await createLibp2p({
    privateKey,
    addresses: { listen: ['/p2p-circuit'] },
    // No DNS: libp2p's browser default resolves over HTTPS at third-party servers, which
    // the page's CSP (connect-src 'self') would block anyway. Invites carry IP addresses.
    dns: dns({
      resolvers: {
        '.': async (name: string) => { throw new Error(`this page resolves no DNS names (${name})`) }
      }
    }),
    // No ping heartbeat: js-libp2p's connection monitor aborted the page's connections
    // about 15 s after they opened (a watch through a relay ended at 442 frames). Half of
    // it was the FIN_ACK rust-libp2p's WebRTC streams did not send (vendor/README.md);
    // with that fixed the watch still ended, at 491 frames, so the monitor stays off.
    // WebRTC's own consent checks (ICE) still end a connection whose far end went away.
    connectionMonitor: { enabled: false },
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
