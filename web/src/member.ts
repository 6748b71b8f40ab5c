// The messages of `/camesh/member/1` (node/src/member.rs): each is a `MemberHello`, sent
// as one length-delimited message (unsigned varint length, then the protobuf body, as
// camesh_proto::framing::LengthCodec writes it). The page is always the dialer: its proof
// first, then (once the listener's proof checks) its certificate.

import { concat } from './bytes.ts'
import { MemberHello } from './gen/camesh.ts'
import { prove } from './proof.ts'
import { MAX_SIGNED_BYTES } from './signed.ts'
import type { Signed } from './gen/camesh.ts'

/** Bound on one member message (the node's member MAX_MSG: twice MAX_SIGNED_BYTES). */
export const MAX_MSG = 2 * MAX_SIGNED_BYTES

/** An unsigned LEB128 varint. */
export function uvarint (n: number): Uint8Array {
  const out: number[] = []
  let v = n
  while (v >= 0x80) {
    out.push((v & 0x7f) | 0x80)
    v = Math.floor(v / 128)
  }
  out.push(v)
  return new Uint8Array(out)
}

/** One message on the wire: its length as a varint, then its bytes. */
export function frame (body: Uint8Array, max: number = MAX_MSG): Uint8Array {
  if (body.length > max) throw new Error(`message of ${body.length} bytes is over ${max}`)
  return concat(uvarint(body.length), body)
}

/** The dialer's first message: its fleet proof for the connection `me` -> `other`. */
export async function dialerProof (key: CryptoKey, me: Uint8Array, other: Uint8Array): Promise<Uint8Array> {
  return MemberHello.encode({ proof: await prove(key, 'dialer', me, other) })
}

/** The dialer's certificate message. */
export function certHello (cert: Signed): Uint8Array {
  return MemberHello.encode({ cert })
}

export { MemberHello }
