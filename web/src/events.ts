// A tile's camera events over `/camesh/events/1` (node/src/events/client.rs, the direct
// case): the page asks the camera's own node, with the grant it watches with, for the
// last minute's events and new ones (follow), and reads length-delimited `EventItem`s,
// bounded. Each event must be the camera's word before the badge (badges.ts) shows it:
// signed with kind "event", a sane body (node/src/events/mod.rs `open`), of this camera,
// signed by the node the page talks to, whose membership certificate (checked when the
// page joined it) names the camera. Anything else is counted and ignored.
//
// The stream lives beside the video, never in its way: it opens after the watch has its
// connection (on it, or on another open connection to a node whose certificate names the
// camera; it dials nothing), it is tried at most once every RETRY_MS per camera (a
// refusal, a break, no camera node), and it is closed when the tile stops watching.

import { CameraEvent, EventItem, EventsRequest, EventState, Signed as SignedCodec } from './gen/camesh.ts'
import { Badge, paint } from './badges.ts'
import { equalBytes, text } from './bytes.ts'
import { ed25519OfPeer } from './peer.ts'
import { AuthError, openSigned } from './signed.ts'
import { Framed } from './wire.ts'
import type { EventWord, Happened } from './badges.ts'
import type { CertInfo } from './cert.ts'
import type { Signed } from './gen/camesh.ts'
import type { Connection, PeerId } from '@libp2p/interface'

export const EVENTS_PROTOCOL = '/camesh/events/1'
/** At most one events stream per camera this often: a refused one is not asked again sooner. */
export const RETRY_MS = 30_000
/** Past events asked for: a minute, so motion already going on shows. */
const PAST_US = 60_000_000
/** The node's `max_control_bytes` (config.rs default): an item is far smaller. */
const MAX_ITEM = 64 << 10
/** Until the past events are all sent (`done`), each read waits this long at most. */
const ANSWER_MS = 15_000
/** The node's bounds on an event (node/src/events/mod.rs). */
const MAX_CAMERA = 64
const MAX_KIND = 160
const MAX_DETAIL = 512

/** The node said no (no events of this camera there, no grant for it, access ended). */
export class Refused extends Error {}

/** What a tile's events did (window.camesh.grid.tiles[camera].events). */
export interface EventStats {
  /** off (no grant), waiting, asking, following, ended, refused, broken, no camera node, stopped. */
  state: string
  /** Streams opened. */
  opened: number
  /** Events checked and shown, and refused (not the camera's word). */
  received: number
  rejected: number
  /** The first distinct reasons events were refused. */
  rejectReasons: string[]
  /** The kinds going on now (as the node names them: `motion`, `onvif/<topic>`), and those pulsing. */
  active: string[]
  pulsing: string[]
  /** Whether the badge shows, and its words. */
  badge: boolean
  badgeText: string
  /** The last event shown: kind, `start`/`end`/`pulse`, the camera's time (Unix µs). */
  last?: Happened
  /** The past events the node sent before following (`EventsDone.sent`). */
  past?: number
  refusal?: string
  lastError?: string
  /** When the next stream may open (Unix ms), after a refusal or a break. */
  nextTryUnixMs?: number
}

export function word (s: EventState): EventWord {
  switch (s) {
    case EventState.EVENT_STATE_START: return 'start'
    case EventState.EVENT_STATE_END: return 'end'
    case EventState.EVENT_STATE_PULSE: return 'pulse'
    default: return '?'
  }
}

/**
 * The event in `s`, if it is camera `camera`'s word on a stream from `from`, whose
 * checked certificate is `cert`; throws AuthError with the reason otherwise.
 */
export async function checkEvent (s: Signed, camera: string, from: PeerId, cert: CertInfo | undefined): Promise<CameraEvent> {
  const { body, signer } = await openSigned('event', 'event', s)
  let e: CameraEvent
  try {
    e = CameraEvent.decode(body)
  } catch (err) {
    throw new AuthError(`malformed event: ${String(err)}`)
  }
  const bytes = (x: string): number => text(x).length
  if (e.cameraId === '' || bytes(e.cameraId) > MAX_CAMERA) throw new AuthError('malformed event: camera id')
  if (e.kind === '' || bytes(e.kind) > MAX_KIND || bytes(e.detail) > MAX_DETAIL) throw new AuthError('malformed event: kind or detail too long')
  if (!(e.area >= 0 && e.area <= 1)) throw new AuthError('malformed event: area outside 0..1')
  if (e.cameraId !== camera) throw new AuthError(`an event of camera ${JSON.stringify(e.cameraId.slice(0, MAX_CAMERA))}, not ${camera}`)
  const fromKey = ed25519OfPeer(from)
  if (fromKey == null || !equalBytes(fromKey, signer)) throw new AuthError(`not signed by ${from.toString()}, the node the page asked`)
  if (cert == null || !cert.peer.equals(from)) throw new AuthError(`no checked certificate of ${from.toString()}`)
  if (!cert.cameras.includes(camera)) throw new AuthError(`the certificate of ${from.toString()} does not name camera ${camera}`)
  return e
}

/** Where a follower asks: an open connection to a node, and its checked certificate. */
export interface Route { conn: Connection, cert: CertInfo | undefined }

/** A tile's events, for as long as the tile watches; `stop()` ends them. */
export class EventsFollower {
  readonly stats: EventStats = { state: 'waiting', opened: 0, received: 0, rejected: 0, rejectReasons: [], active: [], pulsing: [], badge: false, badgeText: '' }
  private readonly badge = new Badge()
  private readonly abort = new AbortController()

  /**
   * `route()` names an open connection to a node that may speak for the camera (or none);
   * `tried` holds when each camera's stream last opened (performance.now()), shared by the
   * tile's followers, so a new watch does not ask sooner than RETRY_MS either.
   */
  constructor (readonly camera: string, private readonly grant: Signed | undefined, private readonly route: () => Route | undefined, private readonly tried: Map<string, number>, private readonly el: HTMLElement | undefined, private readonly onChange: () => void) {}

  get stopped (): boolean {
    return this.abort.signal.aborted
  }

  stop (): void {
    if (this.stopped) return
    this.badge.clear()
    this.show()
    this.abort.abort()
    this.stats.state = 'stopped'
  }

  /** Draws the badge and copies its state into the stats (not once stopped: the tile may have a new follower). */
  show (): void {
    if (this.stopped) return
    const v = this.badge.view(performance.now())
    this.stats.active = v.active
    this.stats.pulsing = v.pulsing
    this.stats.badge = v.visible
    this.stats.badgeText = v.text
    if (this.el != null) paint(this.el, v)
  }

  /** Runs until `stop()`; never throws. */
  async run (): Promise<void> {
    const signal = this.abort.signal
    const grant = this.grant
    if (grant == null) {
      this.stats.state = 'off'
      this.stats.refusal = 'no grant'
      this.onChange()
      return
    }
    while (!signal.aborted) {
      const wait = (this.tried.get(this.camera) ?? -Infinity) + RETRY_MS - performance.now()
      if (wait > 0) {
        this.stats.nextTryUnixMs = Math.round(Date.now() + wait)
        this.onChange()
        await new Promise<void>(resolve => {
          const done = (): void => {
            clearTimeout(t)
            signal.removeEventListener('abort', done)
            resolve()
          }
          const t = setTimeout(done, wait)
          signal.addEventListener('abort', done, { once: true })
        })
        if (signal.aborted) return
      }
      this.tried.set(this.camera, performance.now())
      this.stats.nextTryUnixMs = undefined
      const r = this.route()
      if (r == null) {
        this.stats.state = 'no camera node'
        this.onChange()
        continue
      }
      try {
        await this.follow(r, grant)
        if (!signal.aborted) this.stats.state = 'ended'
      } catch (e) {
        if (signal.aborted) return
        const why = e instanceof Error ? e.message : String(e)
        if (e instanceof Refused) {
          this.stats.state = 'refused'
          this.stats.refusal = why
        } else {
          this.stats.state = 'broken'
          this.stats.lastError = why
        }
      }
      // Whatever was going on is no longer known.
      this.badge.clear()
      this.show()
      this.onChange()
    }
  }

  /** One stream: the request, then items until the node ends it or the tile stops. */
  private async follow ({ conn, cert }: Route, grant: Signed): Promise<void> {
    const signal = this.abort.signal
    const from = conn.remotePeer
    this.stats.state = 'asking'
    const stream = await conn.newStream(EVENTS_PROTOCOL, { signal, runOnLimitedConnection: true })
    this.stats.opened++
    const close = (): void => { stream.abort(new Error('the tile stopped watching')) }
    signal.addEventListener('abort', close, { once: true })
    if (signal.aborted) close()
    let clean = false
    try {
      const wire = new Framed(stream, MAX_ITEM)
      await wire.send(EventsRequest.encode({
        cameraId: this.camera,
        grant: SignedCodec.encode(grant),
        fromUnixUs: BigInt(Date.now()) * 1000n - BigInt(PAST_US),
        toUnixUs: 0n,
        follow: true,
        kinds: [],
        maxEvents: 0,
        userAgent: 'camesh-web/0.1'
      }))
      this.onChange()
      // Until `done`, every read is time-limited; after it, the stream waits for news as
      // long as it lasts (the abort above ends it).
      const answer = AbortSignal.timeout(ANSWER_MS)
      let live = false
      for (;;) {
        const raw = await wire.next(live ? undefined : answer)
        if (raw == null) {
          clean = true
          return
        }
        const item = EventItem.decode(raw)
        if (item.refused != null) throw new Refused(`refused by ${from.toString()}: ${item.refused.slice(0, 300)}`)
        if (item.done != null) {
          live = true
          this.stats.past = item.done.sent
          this.stats.state = 'following'
          this.stats.refusal = undefined
          this.onChange()
        } else if (item.event != null) {
          await this.take(item.event, from, cert, live)
        }
        // camera_cert: from the camera's own node, the connection's membership proves
        // its key; the page holds that node's checked certificate already.
      }
    } finally {
      signal.removeEventListener('abort', close)
      if (clean) stream.close().catch(() => {})
      else if (!signal.aborted) stream.abort(new Error('events stream given up'))
    }
  }

  private async take (s: Signed, from: PeerId, cert: CertInfo | undefined, live: boolean): Promise<void> {
    let e: CameraEvent
    try {
      e = await checkEvent(s, this.camera, from, cert)
    } catch (err) {
      if (this.stopped) return
      const why = err instanceof Error ? err.message : String(err)
      this.stats.rejected++
      if (this.stats.rejectReasons.length < 20 && !this.stats.rejectReasons.includes(why)) this.stats.rejectReasons.push(why)
      this.onChange()
      return
    }
    if (this.stopped) return
    this.stats.received++
    const h: Happened = { kind: e.kind, state: word(e.state), unixUs: Number(e.unixUs) }
    this.badge.apply(h, performance.now(), live)
    this.stats.last = h
    this.show()
    this.onChange()
  }
}

