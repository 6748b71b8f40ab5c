// The fleet's cameras in a grid: the page joins the peers it knows (addresses pasted or
// from the link's `peer=` part, kept in IndexedDB), asks each for its cameras, and shows
// one tile per camera: a canvas, its path and latency, main/sub, full screen and a PNG
// snapshot, and a badge while the camera's events say something goes on (events.ts,
// badges.ts: the events stream opens beside the watch and closes with it), and a sound
// button once the stream carries the camera's audio (off until pressed: audio.ts). Grants are
// pasted (`camesh-grant:` text from `mesh grant`) or handed over the mesh (inbound.ts),
// checked for this page (grant.ts) and kept.

import { multiaddr } from '@multiformats/multiaddr'
import { WebRTCDirect } from '@multiformats/multiaddr-matcher'
import { Signed } from './gen/camesh.ts'
import { loadValue, storeValue } from './identity.ts'
import { dialable } from './net.ts'
import { bs58Decode } from './peer.ts'
import { verifyGrant } from './grant.ts'
import { decodeSigned } from './signed.ts'
import { coverage, joinPeer, listCameras, mayServe, Refused, Watch } from './watch.ts'
import { EventsFollower } from './events.ts'
import { audioContext } from './audio.ts'

/** Times a broken stream is opened again before the tile gives up. */
const REOPEN = 5
import type { Membership } from './enroll.ts'
import type { CertInfo } from './cert.ts'
import type { KnownCamera, Span, TileStats } from './watch.ts'
import type { Route } from './events.ts'
import type { Connection, Libp2p, PeerId } from '@libp2p/interface'

export const GRANT_PREFIX = 'camesh-grant:'

/**
 * How the page reaches a camera that the peer at `from` (an address the page joined)
 * told of: through that peer's relay when the camera holds a reservation on it (one of
 * its addresses is a circuit through that peer), else at a WebRTC-direct address of its
 * own (a camera on the page's LAN or a public one); undefined when neither exists.
 */
export function knownRoute (from: string, k: KnownCamera): string | undefined {
  const cam = k.peer.toString()
  const via = /\/p2p\/([^/]+)$/.exec(from)?.[1]
  if (via != null && !from.includes('/p2p-circuit') && k.addrs.some(a => a.toString().includes(`/p2p/${via}/p2p-circuit`))) {
    return `${from}/p2p-circuit/p2p/${cam}`
  }
  const direct = k.addrs.find(a => WebRTCDirect.matches(a) && a.toString().includes('/certhash/'))
  if (direct != null) return direct.toString().includes('/p2p/') ? direct.toString() : `${direct.toString()}/p2p/${cam}`
  return undefined
}

export interface GridState {
  peers: string[]
  grants: number
  cameras: string[]
  /** Cameras other members told of that this page has no route to (no relay it knows holds their reservation, no WebRTC-direct address). */
  unreachable: string[]
  tiles: Record<string, TileStats>
  errors: string[]
  /** NVR playback: the coverage shown on the timeline, and the playing view. */
  coverage?: Span[]
  playback?: TileStats
}

export class Grid {
  readonly state: GridState = { peers: [], grants: 0, cameras: [], unreachable: [], tiles: {}, errors: [] }
  private grants: Uint8Array[] = []
  private readonly conns = new Map<string, Connection>()
  /** Checked certificates of the nodes joined, by peer id. */
  private readonly certs = new Map<string, CertInfo>()
  private readonly watches = new Map<string, Watch>()
  /** The peer each camera was listed by (where the tile watches it from). */
  private readonly homes = new Map<string, string>()
  /** Each watched tile's events, and when each camera's events stream last opened. */
  private readonly followers = new Map<string, EventsFollower>()
  private readonly eventsTried = new Map<string, number>()
  /** Tiles whose sound is on (off by default: browsers block autoplay with sound). */
  private readonly sound = new Set<string>()

  constructor (private readonly node: Libp2p, private readonly m: Membership, private readonly root: HTMLElement, private readonly changed: () => void) {}

  async load (): Promise<void> {
    this.grants = await loadValue<Uint8Array[]>('grants') ?? []
    this.state.peers = await loadValue<string[]>('peers') ?? []
    this.state.grants = this.grants.length
  }

  /** Keeps a pasted grant (`camesh-grant:...`). */
  async addGrant (text: string): Promise<void> {
    const t = text.trim()
    if (!t.startsWith(GRANT_PREFIX)) throw new Error(`not a grant: expected text starting with ${GRANT_PREFIX}`)
    const s = decodeSigned('grant', bs58Decode(t.slice(GRANT_PREFIX.length)))
    // As a node installs a grant (Trust::add_grant): only one that verifies for this page.
    await verifyGrant(s, this.m.fleetRoot, this.m.fleetId, this.node.peerId, BigInt(Math.floor(Date.now() / 1000)))
    await this.keepGrant(s)
  }

  /** Keeps a grant already checked for this page (pasted, or handed over the mesh: inbound.ts). */
  async keepGrant (s: Signed): Promise<void> {
    this.grants.push(Signed.encode(s))
    if (this.grants.length > 32) this.grants.shift()
    await storeValue('grants', this.grants)
    this.state.grants = this.grants.length
    this.changed()
  }

  /** Keeps a peer address (a node's WebRTC-direct address with /p2p/, or a circuit through one). */
  async addPeer (addr: string): Promise<void> {
    const a = multiaddr(addr.trim())
    if (dialable([a]).length === 0) throw new Error(`${addr}: not a WebRTC-direct address`)
    if (!this.state.peers.includes(a.toString())) this.state.peers.push(a.toString())
    await storeValue('peers', this.state.peers)
    this.changed()
  }

  /**
   * Joins every known peer and lists its cameras, then the cameras those peers have
   * heard of (a relay knows the fleet's): each gets a tile with a route through the peer
   * that told of it ([`knownRoute`]).
   */
  async refresh (): Promise<void> {
    const heard: Array<{ from: string, known: KnownCamera[] }> = []
    for (const p of this.state.peers) {
      try {
        const conn = await this.connect(p).catch((e: unknown) => { throw new Error(`joining: ${e instanceof Error ? e.message : String(e)}`) })
        const list = await listCameras(conn, AbortSignal.timeout(10_000)).catch((e: unknown) => { throw new Error(`listing cameras: ${e instanceof Error ? e.message : String(e)}`) })
        for (const c of list.cameras) this.addTile(c.cameraId, p)
        heard.push({ from: p, known: list.known })
      } catch (e) {
        this.state.errors.push(`${p}: ${e instanceof Error ? e.message : String(e)}`)
      }
    }
    for (const { from, known } of heard) {
      for (const k of known) {
        if (this.state.cameras.includes(k.cameraId)) continue
        const route = knownRoute(from, k)
        if (route == null) {
          if (!this.state.unreachable.includes(k.cameraId)) this.state.unreachable.push(k.cameraId)
          continue
        }
        this.addTile(k.cameraId, route)
      }
    }
    this.changed()
  }

  private addTile (camera: string, route: string): void {
    if (this.state.cameras.includes(camera)) return
    this.state.cameras.push(camera)
    this.homes.set(camera, route)
    this.tile(camera, route)
  }

  /** The checked certificate of a node this page joined. */
  private readonly certOf = (peer: PeerId): CertInfo | undefined => this.certs.get(peer.toString())

  private async connect (p: string): Promise<Connection> {
    const have = this.conns.get(p)
    if (have != null && have.status === 'open') return have
    // Through a relay (`<relay>/p2p-circuit/p2p/<camera>`): the relay opens circuits for
    // fleet members only, so the page proves membership to it first; the circuit then
    // runs over that connection, with Noise end to end to the camera's node (the relay
    // gets no grant and carries sealed frames).
    const at = p.indexOf('/p2p-circuit')
    if (at > 0) await this.connect(p.slice(0, at))
    const { conn, cert } = await joinPeer(this.node, [multiaddr(p)], this.m, AbortSignal.timeout(15_000))
    this.conns.set(p, conn)
    this.certs.set(conn.remotePeer.toString(), cert)
    return conn
  }

  private tile (camera: string, peer: string): void {
    this.root.querySelector('.empty')?.remove()
    const fig = document.createElement('figure')
    fig.className = 'tile'
    fig.dataset.camera = camera
    const canvas = document.createElement('canvas')
    canvas.width = 320
    canvas.height = 180
    const cap = document.createElement('figcaption')
    const label = document.createElement('span')
    label.className = 'label'
    label.textContent = camera
    const info = document.createElement('output')
    info.className = 'info'
    const profile = document.createElement('select')
    for (const p of ['main', 'sub']) profile.append(new Option(p, p))
    const play = document.createElement('button')
    play.textContent = 'Watch'
    const full = document.createElement('button')
    full.textContent = 'Full screen'
    const snap = document.createElement('button')
    snap.textContent = 'Snapshot'
    // Sound: shown once the stream carries audio; a press turns it on or off (and, inside
    // the click, lets the page's AudioContext run).
    const speaker = document.createElement('button')
    speaker.className = 'sound'
    speaker.hidden = true
    speaker.textContent = 'Sound off'
    speaker.setAttribute('aria-pressed', 'false')
    cap.append(label, info, profile, play, full, snap, speaker)
    // The events badge, over the picture: text (the dot is decoration), announced politely.
    const badge = document.createElement('span')
    badge.className = 'badge'
    badge.hidden = true
    badge.setAttribute('role', 'status')
    const dot = document.createElement('span')
    dot.className = 'dot'
    dot.setAttribute('aria-hidden', 'true')
    dot.textContent = '●'
    const what = document.createElement('span')
    what.className = 'what'
    badge.append(dot, ' ', what)
    fig.append(canvas, badge, cap)
    this.root.append(fig)
    play.addEventListener('click', () => { void this.watch(camera, peer, profile.value === 'sub' ? 'sub' : 'main') })
    profile.addEventListener('change', () => { if (this.watches.has(camera)) void this.watch(camera, peer, profile.value === 'sub' ? 'sub' : 'main') })
    // A press while the browser still holds the sound (on from the link, no tap yet) starts it rather than turning it off.
    speaker.addEventListener('click', () => { this.setSound(camera, !this.sound.has(camera) || audioContext().state !== 'running') })
    canvas.addEventListener('dblclick', () => { void fig.requestFullscreen?.() })
    full.addEventListener('click', () => { void fig.requestFullscreen?.() })
    snap.addEventListener('click', () => {
      // Under the MSE fallback the tile shows a <video> in the canvas's place: draw its
      // current frame onto the canvas first.
      const video = fig.querySelector('video')
      if (video != null && video.videoWidth > 0) {
        canvas.width = video.videoWidth
        canvas.height = video.videoHeight
        canvas.getContext('2d')?.drawImage(video, 0, 0)
      }
      canvas.toBlob(b => {
        if (b == null) return
        const a = document.createElement('a')
        a.href = URL.createObjectURL(b)
        a.download = `${camera}-${new Date().toISOString().replace(/[:.]/g, '-')}.png`
        a.click()
        setTimeout(() => URL.revokeObjectURL(a.href), 10_000)
      }, 'image/png')
    })
    setInterval(() => {
      // A pulse's flash ends on time.
      this.followers.get(camera)?.show()
      const s = this.state.tiles[camera]
      if (s == null) return
      const on = this.sound.has(camera)
      const held = on && s.audio?.context !== 'running'
      speaker.hidden = s.audio == null
      speaker.setAttribute('aria-pressed', String(on && !held))
      speaker.textContent = held ? 'Tap for sound' : on ? 'Sound on' : 'Sound off'
      speaker.title = s.audio == null ? '' : `${s.audio.codec}, ${s.audio.sampleRate} Hz, ${s.audio.channels} ch`
      const l = [...s.latencyMs].sort((x, y) => x - y)
      const p50 = l.length > 0 ? l[Math.floor(l.length / 2)] : undefined
      info.textContent = `${s.state} · ${s.path} · ${s.width}x${s.height} · ${s.decoded} frames` + (p50 != null ? ` · ${p50} ms` : '')
    }, 500)
  }

  private player?: Watch

  /**
   * Plays `camera` from the NVR at `nvrAddr`, starting at `fromUs` (the NVR starts at the
   * keyframe before it): the coverage of the hour around it on a timeline, a click or tap
   * on which seeks there.
   */
  async playback (camera: string, nvrAddr: string, fromUs: number, started = performance.now()): Promise<void> {
    const section = document.getElementById('playback-section')
    const canvas = document.getElementById('playback-canvas') as HTMLCanvasElement | null
    const line = document.getElementById('timeline')
    const info = document.getElementById('playback-info')
    if (section == null || canvas == null || line == null || info == null) throw new Error('the page lacks its playback view')
    section.hidden = false
    const grant = this.grants.length > 0 ? Signed.decode(this.grants[this.grants.length - 1] ?? new Uint8Array(0)) : undefined
    const conn = await this.connect(nvrAddr)
    const qlo = fromUs - 30 * 60e6
    const qhi = Math.max(fromUs + 30 * 60e6, Date.now() * 1000)
    const spans = await coverage(conn, camera, grant, BigInt(Math.round(qlo)), BigInt(Math.round(qhi)), AbortSignal.timeout(20_000))
    this.state.coverage = spans
    // The timeline shows what was recorded and the time asked for, with a margin (at
    // least a minute), so a short recording is not a hairline in an hour.
    const rec = spans.filter(x => x.recorded)
    const first = Math.min(fromUs, ...rec.map(x => x.fromUs))
    const last = Math.max(fromUs, ...rec.map(x => x.toUs))
    const pad = Math.max(60e6 - (last - first), (last - first) * 0.2) / 2
    const lo = first - pad
    const hi = last + pad
    line.replaceChildren()
    const pct = (us: number): string => `${Math.max(0, Math.min(100, (us - lo) / (hi - lo) * 100))}%`
    for (const sp of spans.filter(x => x.recorded)) {
      const d = document.createElement('div')
      d.className = 'span'
      d.style.left = pct(sp.fromUs)
      d.style.width = `calc(${pct(sp.toUs)} - ${pct(sp.fromUs)})`
      d.title = `${new Date(sp.fromUs / 1000).toISOString()} to ${new Date(sp.toUs / 1000).toISOString()}`
      line.append(d)
    }
    const cursor = document.createElement('div')
    cursor.className = 'cursor'
    cursor.style.left = pct(fromUs)
    line.append(cursor)
    line.onpointerdown = ev => {
      const r = line.getBoundingClientRect()
      const at = lo + (ev.clientX - r.left) / r.width * (hi - lo)
      void this.playback(camera, nvrAddr, at)
    }
    this.player?.stop()
    const w = new Watch(camera, 'main', canvas, this.changed, this.certOf)
    this.player = w
    this.state.playback = w.stats
    const show = setInterval(() => {
      const c = w.stats.firstCaptureUnixUs
      info.textContent = `${camera} from ${new Date(fromUs / 1000).toISOString()} · ${w.stats.state} · ${w.stats.decoded} frames` +
        (c != null ? ` · first frame captured ${new Date(c / 1000).toISOString()}` : '')
    }, 250)
    try {
      await w.run(conn, grant, started, undefined, BigInt(Math.round(fromUs)))
    } catch (e) {
      w.stats.state = 'stopped'
      w.stats.refusal ??= e instanceof Error ? `${e.name}: ${e.message} (${w.stats.phase ?? ''})` : String(e)
    } finally {
      w.stats.endedUnixMs = Date.now()
      clearInterval(show)
      this.changed()
    }
  }

  /**
   * Turns a tile's sound on or off. On: the page's AudioContext, resumed here (a click
   * lets it run; without one the browser may hold it until the next tap).
   */
  setSound (camera: string, on: boolean): void {
    let ctx: AudioContext | undefined
    if (on) {
      this.sound.add(camera)
      ctx = audioContext()
      ctx.resume().catch(() => {})
    } else {
      this.sound.delete(camera)
    }
    this.watches.get(camera)?.setSound(ctx)
    this.changed()
  }

  /** The known peer address of peer id `id`. */
  peerAddr (id: string): string | undefined {
    return this.state.peers.find(p => p.endsWith(`/p2p/${id}`))
  }

  /** Watches `camera` (again, with `profile`); `started` is when the user asked. */
  async watch (camera: string, peer?: string, profile: 'main' | 'sub' = 'main', started = performance.now()): Promise<void> {
    this.watches.get(camera)?.stop()
    this.followers.get(camera)?.stop()
    const fig = this.root.querySelector<HTMLElement>(`figure[data-camera="${CSS.escape(camera)}"]`)
    const canvas = fig?.querySelector('canvas')
    const from = peer ?? this.homes.get(camera) ?? this.state.peers[0]
    if (canvas == null || from == null) throw new Error(`no camera ${camera} in the grid`)
    const w = new Watch(camera, profile, canvas, this.changed, this.certOf)
    if (this.sound.has(camera)) w.setSound(audioContext())
    this.watches.set(camera, w)
    this.state.tiles[camera] = w.stats
    const grant = this.grants.length > 0 ? Signed.decode(this.grants[this.grants.length - 1] ?? new Uint8Array(0)) : undefined
    // A stream that breaks is opened again (a few times, half a second apart), as a
    // node's viewer resumes; a refusal (no grant, not a member) and a stream the node
    // ended (revocation, the grant's expiry) are final.
    let events: EventsFollower | undefined
    let current: Connection | undefined
    for (let attempt = 0; ; attempt++) {
      try {
        const conn = await this.connect(from)
        current = conn
        if (!w.stopped) events ??= this.startEvents(camera, w, grant, () => current)
        await w.run(conn, grant, started, async cameraPeer => {
          const at = [...this.state.peers, ...this.homes.values()].find(p => p.endsWith(`/p2p/${cameraPeer.toString()}`))
          if (at == null) throw new Refused(`the camera's node ${cameraPeer.toString()} is not among this page's peers: add its address for keys`)
          return await this.connect(at)
        })
        break
      } catch (e) {
        const why = e instanceof Error ? e.message : String(e)
        if (w.stopped || e instanceof Refused || attempt >= REOPEN) {
          w.stats.state = 'stopped'
          w.stats.refusal ??= why
          break
        }
        w.stats.lastBreak = why
      }
      w.stats.reopened++
      this.changed()
      await new Promise(resolve => setTimeout(resolve, 500))
    }
    events?.stop()
    if (this.followers.get(camera) === events) this.followers.delete(camera)
    w.stats.endedUnixMs = Date.now()
    this.changed()
  }

  /**
   * The events of a watched camera (its badge), from a node this page joined whose
   * certificate names the camera: the watch's own connection first. It opens once the
   * first frame is drawn (or 2 s on), so it never delays the picture.
   */
  private startEvents (camera: string, w: Watch, grant: Signed | undefined, preferred: () => Connection | undefined): EventsFollower {
    const fig = this.root.querySelector<HTMLElement>(`figure[data-camera="${CSS.escape(camera)}"]`)
    const route = (): Route | undefined => {
      const fit = (c: Connection | undefined): Route | undefined => {
        const cert = c == null ? undefined : this.certOf(c.remotePeer)
        return c != null && c.status === 'open' && mayServe(cert, camera) ? { conn: c, cert } : undefined
      }
      return fit(preferred()) ?? [...this.conns.values()].map(fit).find(r => r != null)
    }
    const f = new EventsFollower(camera, grant, route, this.eventsTried, fig?.querySelector<HTMLElement>('.badge') ?? undefined, this.changed)
    this.followers.set(camera, f)
    w.stats.events = f.stats
    void (async () => {
      for (let i = 0; i < 20 && w.stats.firstFrameMs == null && !f.stopped; i++) await new Promise(resolve => setTimeout(resolve, 100))
      if (!f.stopped) await f.run()
    })()
    return f
  }
}
