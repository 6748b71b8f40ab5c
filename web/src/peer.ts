// Peer ids and public keys as the node writes them: a peer id's bytes are its multihash
// (for Ed25519, the identity multihash of the protobuf-encoded public key), its text the
// base58btc of those bytes ("12D3KooW...").

import { publicKeyFromProtobuf } from '@libp2p/crypto/keys'
import { peerIdFromMultihash } from '@libp2p/peer-id'
import { base58btc } from 'multiformats/bases/base58'
import * as Digest from 'multiformats/hashes/digest'
import type { PeerId } from '@libp2p/interface'

/** A peer id from its bytes; throws on anything that is not one. */
export function peerFromBytes (bytes: Uint8Array): PeerId {
  return peerIdFromMultihash(Digest.decode(bytes))
}

/** The raw 32-byte Ed25519 public key inlined in a peer id, if it has one. */
export function ed25519OfPeer (peer: PeerId): Uint8Array<ArrayBuffer> | undefined {
  if (peer.type !== 'Ed25519') return undefined
  return new Uint8Array(peer.publicKey.raw)
}

/** The raw 32-byte Ed25519 key of a protobuf-encoded public key (a `Signed.signer`). */
export function ed25519OfProtobuf (bytes: Uint8Array): Uint8Array<ArrayBuffer> {
  const key = publicKeyFromProtobuf(bytes)
  if (key.type !== 'Ed25519') throw new Error(`a ${key.type} key where Ed25519 is expected`)
  return new Uint8Array(key.raw)
}

export function bs58Encode (bytes: Uint8Array): string {
  return base58btc.baseEncode(bytes)
}

export function bs58Decode (s: string): Uint8Array {
  return base58btc.baseDecode(s)
}
