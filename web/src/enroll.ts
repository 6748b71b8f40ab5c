// Redeeming an invite as a node does (node/src/member.rs `redeem_invite`): dial the admin
// node the invite names, open `/camesh/admin/1`, send one `AdminRequest` (the invite's
// token and the signed invite itself), read one `AdminResponse`: the membership
// certificate the admin node issued for this page's peer id, or why not. The admin node
// checks the invite (signature, expiry, that it names that node, unused token, holder);
// the page checks the certificate it gets (the fleet root's signature, or an admin's
// whose own certificate the root signed; its fleet; that it is this page's peer id) and
// keeps it in IndexedDB beside the node key.

import { verifyCert } from './cert.ts'
import { AdminRequest, AdminResponse, Signed } from './gen/camesh.ts'
import type { CertInfo } from './cert.ts'
import { loadValue, storeValue } from './identity.ts'
import { dialable } from './net.ts'
import { AuthError, MAX_SIGNED_BYTES } from './signed.ts'
import { Framed } from './wire.ts'
import type { InviteInfo } from './invite.ts'
import type { Libp2p, PeerId } from '@libp2p/interface'

export const ADMIN_PROTOCOL = '/camesh/admin/1'
/** The node's admin MAX_MSG. */
const MAX_MSG = 2 * MAX_SIGNED_BYTES
const MEMBERSHIP = 'membership'

/** What the page keeps once it joined. */
export interface Membership {
  fleetId: string
  /** The fleet root's public key, protobuf form. */
  fleetRoot: Uint8Array
  /** The certificate, as the node stores it (`Signed` bytes). */
  cert: Uint8Array
}

export { verifyCert } from './cert.ts'
export type { CertInfo } from './cert.ts'

/** Redeems `invite` with its admin node; returns the verified certificate, stored. */
/** Milliseconds the last redemption spent dialing, opening its stream, and in the exchange. */
export const redeemTimes = { dialMs: 0, streamMs: 0, exchangeMs: 0 }

export async function redeemInvite (node: Libp2p, invite: InviteInfo, timeoutMs = 20_000): Promise<CertInfo> {
  const addrs = dialable(invite.adminAddrs)
  if (addrs.length === 0) throw new Error('the invite lists no WebRTC-direct address of its admin node (is `mesh fleet invite` current?)')
  const signal = AbortSignal.timeout(timeoutMs)
  let t = performance.now()
  const conn = await node.dial(addrs, { signal })
  redeemTimes.dialMs = Math.round(performance.now() - t)
  t = performance.now()
  if (!conn.remotePeer.equals(invite.adminPeer)) throw new Error(`dialed ${conn.remotePeer.toString()}, not the invite's admin node`)
  const stream = await conn.newStream(ADMIN_PROTOCOL, { signal, runOnLimitedConnection: true })
  redeemTimes.streamMs = Math.round(performance.now() - t)
  t = performance.now()
  const wire = new Framed(stream, MAX_MSG)
  await wire.send(AdminRequest.encode({ redeemToken: new Uint8Array(invite.token), invite: invite.signed }))
  const raw = await wire.next(signal)
  redeemTimes.exchangeMs = Math.round(performance.now() - t)
  // Not awaited: a close waits for the remote's close of its end (seconds over a data channel).
  stream.close().catch(() => {})
  if (raw == null) throw new Error('the admin node closed the stream without an answer')
  const resp = AdminResponse.decode(raw)
  if (resp.error !== '') throw new AuthError(`the admin node refused the invite: ${resp.error.slice(0, 200)}`)
  if (resp.cert == null) throw new Error('the admin node sent no certificate')
  const info = await verifyCert(resp.cert, invite.fleetRoot, invite.fleetId, node.peerId, BigInt(Math.floor(Date.now() / 1000)))
  const m: Membership = { fleetId: invite.fleetId, fleetRoot: invite.fleetRoot, cert: Signed.encode(resp.cert) }
  await storeValue(MEMBERSHIP, m)
  return info
}

/** The membership kept from an earlier visit, verified again (undefined when none, or no longer valid). */
export async function loadMembership (me: PeerId): Promise<{ m: Membership, info: CertInfo } | undefined> {
  const m = await loadValue<Membership>(MEMBERSHIP)
  if (m == null) return undefined
  try {
    const info = await verifyCert(Signed.decode(m.cert), m.fleetRoot, m.fleetId, me, BigInt(Math.floor(Date.now() / 1000)))
    return { m, info }
  } catch {
    return undefined
  }
}
