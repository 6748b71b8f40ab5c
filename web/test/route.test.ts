// The page's choice of route to a camera another member told of, and its check that the
// node it watches from holds a certificate binding the camera.

import assert from 'node:assert/strict'
import { test } from 'node:test'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { multiaddr } from '@multiformats/multiaddr'
import { knownRoute } from '../src/grid.ts'
import { mayServe } from '../src/watch.ts'
import type { CertInfo } from '../src/cert.ts'

async function peer (): Promise<string> {
  return peerIdFromPrivateKey(await generateKeyPair('Ed25519')).toString()
}

const CERTHASH = 'uEiDDq4_xNyDorZBH3TlGazyJdOWSwvo4PUo5YHFMrvDE8g'

test('a camera with a reservation on the relay that told of it is reached through that relay', async () => {
  const relay = await peer()
  const other = await peer()
  const camPeer = await peer()
  const from = `/ip4/100.64.0.1/udp/4002/webrtc-direct/certhash/${CERTHASH}/p2p/${relay}`
  const cam = (addrs: string[]): Parameters<typeof knownRoute>[1] => ({
    cameraId: 'cam1',
    peer: { toString: () => camPeer } as never,
    addrs: addrs.map(a => multiaddr(a))
  })
  const lan = '/ip4/10.0.0.2/udp/4001/quic-v1'
  const viaRelay = `/ip4/100.64.0.1/udp/4001/quic-v1/p2p/${relay}/p2p-circuit`
  const viaOther = `/ip4/100.64.0.9/udp/4001/quic-v1/p2p/${other}/p2p-circuit`
  assert.equal(knownRoute(from, cam([lan, viaRelay])), `${from}/p2p-circuit/p2p/${camPeer}`)
  // A reservation elsewhere only, and no address a browser can dial: no route.
  assert.equal(knownRoute(from, cam([lan, viaOther])), undefined)
  // Its own WebRTC-direct address (with the certhash a browser needs).
  const webrtc = `/ip4/192.168.1.5/udp/4002/webrtc-direct/certhash/${CERTHASH}`
  assert.equal(knownRoute(from, cam([lan, webrtc])), `${webrtc}/p2p/${camPeer}`)
  // Told of by a peer the page reaches through a circuit itself: not a relay to ask.
  assert.equal(knownRoute(`${from}/p2p-circuit/p2p/${other}`, cam([viaRelay])), undefined)
})

test('a live stream plays only from a node whose certificate binds the camera', () => {
  const cert = (cameras: string[]): CertInfo => ({ fleetId: 'f', peer: {} as never, role: 'MEMBER_ROLE_CAMERA', name: 'n', notAfterUnixS: 0n, cameras })
  assert.ok(mayServe(cert(['cam1', 'cam2']), 'cam1'))
  assert.ok(!mayServe(cert(['cam2']), 'cam1'))
  assert.ok(!mayServe(cert([]), 'cam1'))
  assert.ok(!mayServe(undefined, 'cam1'))
})
