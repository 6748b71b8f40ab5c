// Fleet proofs for the membership exchange: a port of node/src/auth/proof.rs (pure).
//
// Each side of a connection proves it belongs to the fleet with an HMAC-SHA-256 over a
// side label and both peer ids (each part length-prefixed with its length as 8 bytes
// big-endian), keyed by SHA-256("camesh-v1/member-proof-key\0" || the fleet root's
// protobuf-encoded public key). WebCrypto's HMAC is the standard one, which for a 32-byte
// key is exactly the node's hand-rolled HMAC (key zero-padded to the 64-byte block).

import { concat, equalBytes, text, u64be } from './bytes.ts'

export const PROOF_BYTES = 32
const KEY_CONTEXT = text('camesh-v1/member-proof-key\0')

export type Side = 'dialer' | 'listener'

const LABELS: Record<Side, Uint8Array> = {
  dialer: text('camesh-v1/member-proof/dialer\0'),
  listener: text('camesh-v1/member-proof/listener\0')
}

/** The HMAC key of a fleet, from its root's protobuf-encoded public key (non-extractable). */
export async function proofKey (rootProtobuf: Uint8Array): Promise<CryptoKey> {
  const k = await crypto.subtle.digest('SHA-256', concat(KEY_CONTEXT, rootProtobuf))
  return await crypto.subtle.importKey('raw', k, { name: 'HMAC', hash: 'SHA-256' }, false, ['sign'])
}

function message (parts: Uint8Array[]): Uint8Array<ArrayBuffer> {
  return concat(...parts.flatMap(p => [u64be(p.length), p]))
}

/**
 * The proof `side` sends on a connection from `me` to `other` (peer ids as bytes: their
 * multihash).
 */
export async function prove (key: CryptoKey, side: Side, me: Uint8Array, other: Uint8Array): Promise<Uint8Array<ArrayBuffer>> {
  const mac = await crypto.subtle.sign('HMAC', key, message([LABELS[side], me, other]))
  return new Uint8Array(mac)
}

/** Whether `proof` is the one `side` (peer `them`) must send to `me`. */
export async function check (key: CryptoKey, side: Side, them: Uint8Array, me: Uint8Array, proof: Uint8Array): Promise<boolean> {
  const want = await prove(key, side, them, me)
  return proof.length === PROOF_BYTES && equalBytes(want, proof)
}
