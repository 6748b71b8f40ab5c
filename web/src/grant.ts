// Grants (a port of node/src/auth/grant.rs `verify`): signed by the fleet root, by an
// admin within its certificate's scope, or delegated by the holder of a parent grant with
// the delegate right (no wider than the parent in any way), for this page's key, current.
// The nodes the page presents a grant to check it again; the page checks one before it
// keeps it, so a wrong or expired grant is refused where it arrives.

import { GrantBody } from './gen/camesh.ts'
import { openAdmin } from './cert.ts'
import { peerFromBytes } from './peer.ts'
import { AuthError, openSigned } from './signed.ts'
import type { Signed } from './gen/camesh.ts'
import type { PeerId } from '@libp2p/interface'

/** Rights bits (node/src/auth/rights.rs). */
export const RIGHTS = { live: 1, playback: 2, export: 4, ptz: 8, talk: 16, record: 32, forward: 64, delegate: 128, lock: 256 } as const
/** Longest delegation chain a node accepts (grant.rs MAX_DEPTH). */
const MAX_DEPTH = 4

export interface GrantInfo {
  holder: PeerId
  cameras: string[]
  tags: string[]
  rights: number
  notBeforeUnixS: bigint
  notAfterUnixS: bigint
}

function sameBytes (a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((v, i) => v === b[i])
}

function contains (have: number, want: number): boolean {
  return (have & want) === want
}

async function chain (s: Signed, root: Uint8Array, fleetId: string, now: bigint, depth: number): Promise<GrantInfo> {
  if (depth > MAX_DEPTH) throw new AuthError(`delegation chain longer than ${MAX_DEPTH}`)
  const { body, signer } = await openSigned('grant', 'grant', s)
  let g: GrantBody
  try {
    g = GrantBody.decode(body)
  } catch (e) {
    throw new AuthError(`malformed grant: ${String(e)}`)
  }
  if (g.fleetId !== fleetId) throw new AuthError(`grant for fleet ${g.fleetId.slice(0, 64)}, not ${fleetId}`)
  if (now < g.notBeforeUnixS) throw new AuthError('grant not valid yet')
  if (now > g.notAfterUnixS) throw new AuthError('grant expired')
  let holder: PeerId
  try {
    holder = peerFromBytes(g.holder)
  } catch (e) {
    throw new AuthError(`malformed grant: holder: ${String(e)}`)
  }
  const info: GrantInfo = { holder, cameras: g.cameras, tags: g.tags, rights: g.rights, notBeforeUnixS: g.notBeforeUnixS, notAfterUnixS: g.notAfterUnixS }
  if (g.parent == null) {
    if (sameBytes(s.signer, root)) return info
    const a = await openAdmin(g.admin, signer, root, fleetId, now)
    const all = a.cameras.includes('*')
    const out = (m: string): AuthError => new AuthError(`${m} is outside admin ${a.name}'s scope`)
    if (!contains(a.rights, info.rights)) throw out(`rights ${info.rights}`)
    for (const c of info.cameras) if (!all && !a.cameras.includes(c)) throw out(`camera ${JSON.stringify(c)}`)
    for (const t of info.tags) if (!all && !a.tags.includes(t)) throw out(`tag ${JSON.stringify(t)}`)
    if (info.notAfterUnixS > a.notAfterUnixS) throw new AuthError(`it would outlast admin ${a.name}'s certificate`)
    return info
  }
  const p = await chain(g.parent, root, fleetId, now, depth + 1)
  const signerPeer = p.holder.publicKey?.raw
  if (signerPeer == null || !sameBytes(signerPeer, signer)) throw new AuthError(`delegated grant: not signed by ${p.holder.toString()}, the parent grant's holder`)
  if (!contains(p.rights, RIGHTS.delegate)) throw new AuthError('the parent grant has no delegate right')
  if (!contains(p.rights, info.rights)) throw new AuthError(`rights ${info.rights} exceed the parent's ${p.rights}`)
  const all = p.cameras.includes('*')
  for (const c of info.cameras) if (!all && !p.cameras.includes(c)) throw new AuthError(`camera ${JSON.stringify(c)} is not in the parent grant`)
  for (const t of info.tags) if (!all && !p.tags.includes(t)) throw new AuthError(`tag ${JSON.stringify(t)} is not in the parent grant`)
  if (info.notAfterUnixS > p.notAfterUnixS || info.notBeforeUnixS < p.notBeforeUnixS) throw new AuthError("validity extends beyond the parent's")
  return info
}

/** Verifies grant `s` for `me` in fleet `fleetId` under `root` (protobuf form) at `nowUnixS`. */
export async function verifyGrant (s: Signed, root: Uint8Array, fleetId: string, me: PeerId, nowUnixS: bigint): Promise<GrantInfo> {
  const info = await chain(s, root, fleetId, nowUnixS, 1)
  if (!info.holder.equals(me)) throw new AuthError(`grant for ${info.holder.toString()}, not this page`)
  return info
}
