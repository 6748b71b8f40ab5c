// Invites as `mesh fleet invite` prints them: a port of node/src/auth/invite.rs `parse`.
//
// "camesh-invite:" then base58 of a `Signed` whose body is an `InviteBody`, signed by
// the fleet root. The page checks the signature and the expiry; the admin node named in
// it checks everything else when the page redeems it.

import { multiaddr } from '@multiformats/multiaddr'
import { InviteBody, MemberRole } from './gen/camesh.ts'
import { bs58Decode, peerFromBytes } from './peer.ts'
import { AuthError, decodeSigned, MAX_SIGNED_BYTES, openSigned } from './signed.ts'
import type { Signed } from './gen/camesh.ts'
import type { PeerId } from '@libp2p/interface'
import type { Multiaddr } from '@multiformats/multiaddr'

export const PREFIX = 'camesh-invite:'

export interface InviteInfo {
  token: Uint8Array
  role: MemberRole
  name: string
  expiresUnixS: bigint
  adminPeer: PeerId
  adminAddrs: Multiaddr[]
  cameras: string[]
  certValidS: bigint
  /** The fleet root's public key, protobuf-encoded (as the node's `encode_protobuf`). */
  fleetRoot: Uint8Array
  fleetId: string
  /** The only peer that may redeem it, when the invite names one. */
  holder?: PeerId
  /** The signed invite itself, sent back to the admin node on redemption. */
  signed: Signed
}

function clamp (v: bigint, lo: bigint, hi: bigint): bigint {
  return v < lo ? lo : v > hi ? hi : v
}

/** Parses invite text; checks the signature and the expiry against `nowUnixS`. */
export async function parseInvite (textIn: string, nowUnixS: bigint): Promise<InviteInfo> {
  const t = textIn.trim()
  if (!t.startsWith(PREFIX)) throw new AuthError(`malformed invite: does not start with ${PREFIX}`)
  const b58 = t.slice(PREFIX.length)
  if (b58.length > MAX_SIGNED_BYTES * 2) throw new AuthError('malformed invite: too long')
  let bytes: Uint8Array
  try {
    bytes = bs58Decode(b58)
  } catch (e) {
    throw new AuthError(`malformed invite: ${String(e)}`)
  }
  const s = decodeSigned('invite', bytes)
  // The signer is the fleet root (the admin node checks it is its fleet's).
  const { body: raw } = await openSigned('invite', 'invite', s)
  let body: InviteBody
  try {
    body = InviteBody.decode(raw)
  } catch (e) {
    throw new AuthError(`malformed invite: ${String(e)}`)
  }
  if (nowUnixS > body.expiresUnixS) {
    throw new AuthError(`invite expired ${nowUnixS - body.expiresUnixS} s ago`)
  }
  const peer = (what: string, b: Uint8Array): PeerId => {
    try {
      return peerFromBytes(b)
    } catch (e) {
      throw new AuthError(`malformed ${what}: peer id: ${String(e)}`)
    }
  }
  const adminAddrs: Multiaddr[] = []
  for (const a of body.adminAddrs) {
    try {
      adminAddrs.push(multiaddr(a))
    } catch {
      // Like the node: an address it cannot read is skipped.
    }
  }
  return {
    token: body.token,
    role: body.role,
    name: body.name,
    expiresUnixS: body.expiresUnixS,
    adminPeer: peer('invite', body.adminPeer),
    adminAddrs,
    cameras: body.cameras,
    certValidS: clamp(body.certValidS, 60n, 400n * 86400n),
    fleetRoot: s.signer,
    fleetId: body.fleetId,
    holder: body.holder.length === 0 ? undefined : peer('invite holder', body.holder),
    signed: s
  }
}

export { MemberRole }
