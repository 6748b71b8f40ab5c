// Signed objects (certificates, grants, invites, camera events): a port of node/src/auth/signed.rs's
// check. The signature is Ed25519 over "camesh-v1/" || kind || 0x00 || body, by the key
// in `signer` (protobuf form), verified here with WebCrypto.

import { concat, text } from './bytes.ts'
import { Signed } from './gen/camesh.ts'
import { ed25519OfProtobuf } from './peer.ts'

/** Bound on any signed object's bytes and body (the node's MAX_SIGNED_BYTES). */
export const MAX_SIGNED_BYTES = 16 << 10

export type Kind = 'cert' | 'grant' | 'admin-cert' | 'fleet-entry' | 'invite' | 'manifest' | 'event'

export class AuthError extends Error {}

export function toSign (kind: Kind, body: Uint8Array): Uint8Array<ArrayBuffer> {
  return concat(text('camesh-v1/'), text(kind), new Uint8Array([0]), body)
}

/** Decodes a `Signed`, refusing more than MAX_SIGNED_BYTES. */
export function decodeSigned (what: string, bytes: Uint8Array): Signed {
  if (bytes.length > MAX_SIGNED_BYTES) throw new AuthError(`malformed ${what}: ${bytes.length} bytes is more than ${MAX_SIGNED_BYTES}`)
  try {
    return Signed.decode(bytes)
  } catch (e) {
    throw new AuthError(`malformed ${what}: ${String(e)}`)
  }
}

/** Checks the signature of `s` for `kind`; returns the body and the signer's raw key. */
export async function openSigned (what: string, kind: Kind, s: Signed): Promise<{ body: Uint8Array, signer: Uint8Array<ArrayBuffer> }> {
  if (s.body.length > MAX_SIGNED_BYTES) throw new AuthError(`malformed ${what}: body too large`)
  let signer: Uint8Array<ArrayBuffer>
  try {
    signer = ed25519OfProtobuf(s.signer)
  } catch (e) {
    throw new AuthError(`malformed ${what}: signer key: ${String(e)}`)
  }
  const key = await crypto.subtle.importKey('raw', signer, { name: 'Ed25519' }, true, ['verify'])
  const ok = await crypto.subtle.verify('Ed25519', key, s.signature, toSign(kind, s.body)).catch(() => false)
  if (!ok) throw new AuthError(`${what}: bad signature`)
  return { body: s.body, signer }
}
