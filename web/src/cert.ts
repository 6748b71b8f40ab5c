// Membership certificates (a port of node/src/auth/cert.rs `verify` and the admin checks
// of node/src/auth/admin.rs that a certificate needs): signed by the fleet root, or by an
// admin whose own certificate (embedded, signed by the root) lets it admit members, for
// cameras in its scope, until no later than its own certificate ends.

import { AdminCertBody, MemberRole, MembershipCert } from './gen/camesh.ts'
import { ed25519OfPeer, peerFromBytes } from './peer.ts'
import { AuthError, openSigned } from './signed.ts'
import type { Signed } from './gen/camesh.ts'
import type { PeerId } from '@libp2p/interface'

export interface CertInfo {
  fleetId: string
  peer: PeerId
  role: string
  name: string
  notAfterUnixS: bigint
  cameras: string[]
  /** The admin that signed it (its peer id text and name); undefined for the root. */
  admin?: { peer: string, name: string }
}

function sameBytes (a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((v, i) => v === b[i])
}

function decode<T> (what: string, f: () => T): T {
  try {
    return f()
  } catch (e) {
    throw new AuthError(`malformed ${what}: ${String(e)}`)
  }
}

/** The admin certificate `s` (signed by `root`, for `fleetId`), checked against the key that signed the member's certificate. */
export async function openAdmin (s: Signed | undefined, signerRaw: Uint8Array, root: Uint8Array, fleetId: string, nowUnixS: bigint): Promise<AdminCertBody> {
  if (s == null) throw new AuthError('certificate: signed neither by the fleet root nor by an admin')
  const { body } = await openSigned('admin certificate', 'admin-cert', s)
  if (!sameBytes(s.signer, root)) throw new AuthError('admin certificate: not signed by the fleet root')
  const a = decode('admin certificate', () => AdminCertBody.decode(body))
  if (a.fleetId !== fleetId) throw new AuthError(`admin certificate for fleet ${a.fleetId.slice(0, 64)}, not ${fleetId}`)
  const adminPeer = decode('admin certificate', () => peerFromBytes(a.admin))
  const adminKey = ed25519OfPeer(adminPeer)
  if (adminKey == null || !sameBytes(adminKey, signerRaw)) {
    throw new AuthError(`certificate: not signed by ${adminPeer.toString()}, the admin its certificate names`)
  }
  if (nowUnixS < a.notBeforeUnixS) throw new AuthError('admin certificate not valid yet')
  if (nowUnixS > a.notAfterUnixS) throw new AuthError('admin certificate expired')
  return a
}

/** Verifies a membership certificate for `me` in fleet `fleetId` under `root` (protobuf form) at `nowUnixS`. */
export async function verifyCert (s: Signed, root: Uint8Array, fleetId: string, me: PeerId, nowUnixS: bigint): Promise<CertInfo> {
  const { body, signer } = await openSigned('certificate', 'cert', s)
  const c = decode('certificate', () => MembershipCert.decode(body))
  const admin = sameBytes(s.signer, root) ? undefined : await openAdmin(c.admin, signer, root, fleetId, nowUnixS)
  if (c.fleetId !== fleetId) throw new AuthError(`certificate for fleet ${c.fleetId.slice(0, 64)}, not ${fleetId}`)
  const peer = decode('certificate', () => peerFromBytes(c.peerId))
  if (!peer.equals(me)) throw new AuthError(`certificate for ${peer.toString()}, not this page`)
  if (nowUnixS < c.notBeforeUnixS) throw new AuthError('certificate not valid yet')
  if (nowUnixS > c.notAfterUnixS) throw new AuthError('certificate expired')
  if (c.role === MemberRole.MEMBER_ROLE_UNSPECIFIED) throw new AuthError('malformed certificate: no role')
  if (admin != null) {
    const all = admin.cameras.includes('*')
    if (!admin.mayAdmit) throw new AuthError(`admin ${admin.name} may not admit members`)
    if (c.role === MemberRole.MEMBER_ROLE_ADMIN && !peer.equals(peerFromBytes(admin.admin))) {
      throw new AuthError(`admin ${admin.name} may not admit other admins (the fleet root does)`)
    }
    const outside = c.cameras.find(cam => !all && !admin.cameras.includes(cam))
    if (outside != null) throw new AuthError(`camera ${JSON.stringify(outside)} is outside admin ${admin.name}'s scope`)
    if (c.notAfterUnixS > admin.notAfterUnixS) throw new AuthError(`a validity beyond admin ${admin.name}'s certificate`)
  }
  return {
    fleetId: c.fleetId,
    peer,
    role: c.role,
    name: c.name,
    notAfterUnixS: c.notAfterUnixS,
    cameras: c.cameras,
    admin: admin == null ? undefined : { peer: peerFromBytes(admin.admin).toString(), name: admin.name }
  }
}
