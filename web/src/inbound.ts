// What the page answers when another member dials it. A page cannot be dialed directly,
// so it keeps a reservation on a relay it joined (circuit relay v2, `/p2p-circuit`), and
// members reach it through that relay: `mesh -b <relay> grant <page> --send` hands it a
// grant over the mesh. Two protocols, as a node answers them:
// - `/camesh/member/1`, the listener's side (node/src/member.rs `answer_member`): the
//   dialer's proof first (a stranger gets an empty answer), this page's proof, the
//   dialer's certificate checked against the fleet root and the dialing key, then this
//   page's certificate (or why not);
// - `/camesh/grant/1` (node/src/grants.rs): from a verified member only, one grant per
//   stream, checked for this page (grant.ts) before it is kept, answered with a
//   `ControlError` whose reason is empty when it was kept; at most PUSHES_PER_MINUTE per
//   member.

import { ControlError, MemberHello, Signed as SignedCodec } from './gen/camesh.ts'
import { verifyCert } from './cert.ts'
import { verifyGrant } from './grant.ts'
import { certHello, MAX_MSG } from './member.ts'
import { check, prove, proofKey } from './proof.ts'
import { decodeSigned, MAX_SIGNED_BYTES } from './signed.ts'
import { Framed } from './wire.ts'
import type { CertInfo } from './cert.ts'
import type { Membership } from './enroll.ts'
import type { Signed } from './gen/camesh.ts'
import type { GrantInfo } from './grant.ts'
import type { Connection, Libp2p, Stream } from '@libp2p/interface'

export const MEMBER_PROTOCOL = '/camesh/member/1'
export const GRANT_PROTOCOL = '/camesh/grant/1'
/** How long a dialer has for each step of the exchange (the node's grace is 1 s; a relayed page is slower). */
const STEP_MS = 5_000
/** How long a grant push waits for the pusher's membership exchange to finish. */
const MEMBER_WAIT_MS = 5_000
/** Grant pushes one member may make per minute (the node's PUSHES_PER_WINDOW). */
export const PUSHES_PER_MINUTE = 20
/** Members whose push windows are remembered at once. */
const MAX_TRACKED = 256

/** Pushes per member per minute (pure: driven with `nowMs`). */
export class PushBound {
  private readonly windows = new Map<string, { startMs: number, n: number }>()

  /** Whether one more push from `peer` at `nowMs` is allowed (and counts it). */
  allow (peer: string, nowMs: number): boolean {
    const w = this.windows.get(peer)
    if (w == null || nowMs - w.startMs >= 60_000) {
      if (w == null && this.windows.size >= MAX_TRACKED) {
        for (const [p, old] of this.windows) if (nowMs - old.startMs >= 60_000) this.windows.delete(p)
        if (this.windows.size >= MAX_TRACKED) return false
      }
      this.windows.set(peer, { startMs: nowMs, n: 1 })
      return true
    }
    if (w.n >= PUSHES_PER_MINUTE) return false
    w.n++
    return true
  }
}

export class Inbound {
  /** Members that proved themselves on a connection to this page, by peer id. */
  private readonly verified = new Map<string, CertInfo>()
  private readonly pushes = new PushBound()
  /** Grants kept from pushes, and the last refusal (for the page's report). */
  received = 0
  lastRefusal?: string

  constructor (
    private readonly node: Libp2p,
    private readonly m: Membership,
    private readonly keep: (s: Signed, info: GrantInfo) => Promise<void>
  ) {}

  async start (): Promise<void> {
    // Relayed connections are "limited" to js-libp2p: the page is reached only over them.
    const opts = { runOnLimitedConnection: true, maxInboundStreams: 4 }
    await this.node.handle(MEMBER_PROTOCOL, (s, c) => { void this.member(s, c).catch(() => s.abort(new Error('membership exchange failed'))) }, opts)
    await this.node.handle(GRANT_PROTOCOL, (s, c) => { void this.grant(s, c).catch(() => s.abort(new Error('grant push failed'))) }, opts)
    this.node.addEventListener('peer:disconnect', ev => { this.verified.delete(ev.detail.toString()) })
  }

  private async member (stream: Stream, conn: Connection): Promise<void> {
    const wire = new Framed(stream, MAX_MSG)
    const key = await proofKey(this.m.fleetRoot)
    const me = this.node.peerId.toMultihash().bytes
    const them = conn.remotePeer.toMultihash().bytes
    const first = await wire.next(AbortSignal.timeout(STEP_MS))
    const proof = first == null ? undefined : MemberHello.decode(first).proof
    if (proof == null || !await check(key, 'dialer', them, me, proof)) {
      await wire.send(MemberHello.encode({}))
      stream.close().catch(() => {})
      return
    }
    await wire.send(MemberHello.encode({ proof: await prove(key, 'listener', me, them) }))
    const hello = await wire.next(AbortSignal.timeout(STEP_MS))
    let cert: CertInfo
    try {
      const h = hello == null ? undefined : MemberHello.decode(hello)
      if (h?.cert == null) throw new Error('no certificate presented')
      cert = await verifyCert(h.cert, this.m.fleetRoot, this.m.fleetId, conn.remotePeer, BigInt(Math.floor(Date.now() / 1000)))
    } catch (e) {
      await wire.send(MemberHello.encode({ error: e instanceof Error ? e.message : String(e) }))
      stream.close().catch(() => {})
      return
    }
    await wire.send(certHello(SignedCodec.decode(this.m.cert)))
    stream.close().catch(() => {})
    this.verified.set(conn.remotePeer.toString(), cert)
  }

  private async waitMember (peer: string): Promise<CertInfo | undefined> {
    const until = Date.now() + MEMBER_WAIT_MS
    for (;;) {
      const c = this.verified.get(peer)
      if (c != null || Date.now() >= until) return c
      await new Promise(resolve => setTimeout(resolve, 50))
    }
  }

  private async grant (stream: Stream, conn: Connection): Promise<void> {
    const wire = new Framed(stream, 2 * MAX_SIGNED_BYTES)
    const peer = conn.remotePeer.toString()
    const answer = async (reason: string): Promise<void> => {
      if (reason !== '') this.lastRefusal = `grant from ${peer}: ${reason}`
      await wire.send(ControlError.encode({ reason }))
      stream.close().catch(() => {})
    }
    if (await this.waitMember(peer) == null) return await answer('not a fleet member')
    if (!this.pushes.allow(peer, Date.now())) return await answer(`more than ${PUSHES_PER_MINUTE} grants a minute`)
    const body = await wire.next(AbortSignal.timeout(STEP_MS))
    if (body == null) return await answer('no grant sent')
    try {
      const s = decodeSigned('grant', body)
      const info = await verifyGrant(s, this.m.fleetRoot, this.m.fleetId, this.node.peerId, BigInt(Math.floor(Date.now() / 1000)))
      await this.keep(s, info)
      this.received++
      await answer('')
    } catch (e) {
      await answer(e instanceof Error ? e.message : String(e))
    }
  }
}
