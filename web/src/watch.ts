// Watching a camera as a node does (node/src/member.rs `exchange`, node/src/stream/
// client.rs `subscribe` and `next_frame`, node/src/stream/fresh.rs): the page dials the
// camera's node over WebRTC-direct, proves membership on `/camesh/member/1` (its proof,
// the listener's checked, its certificate, the listener's answer), asks for the camera on
// `/camesh/media/1` with its grant, then reads length-delimited frames: key updates
// (in-band, the camera's own node only) and sealed media frames, each opened with
// WebCrypto AES-GCM under the node's associated data. Live keyframes must carry the
// camera node's signature and be recent; the sequence never goes back. Opened access
// units (AVCC) go to a WebCodecs VideoDecoder configured from the SPS/PPS of the
// StreamAccept, and each decoded frame is drawn to the tile's canvas. The camera's audio,
// when it has some, comes in the same stream (its own sequence space) and goes through the
// same checks to a WebCodecs AudioDecoder (audio.ts); the MSE fallback is video only.

import { ControlRequest, FrameHeader, KeyRequest, KeyResponse, MemberHello, Profile, Signed as SignedCodec, StreamAccept, StreamReject, StreamRequest, StreamResponse } from './gen/camesh.ts'
import { AudioOrder, importVerifyKey, isAudio, verifyKeyframe } from './fresh.ts'
import { AudioPlayer, newAudioStats } from './audio.ts'
import type { AudioStats } from './audio.ts'
import { MediaKey } from './media.ts'
import { MsePlayer, mseWanted } from './mse.ts'
import { verifyCert } from './cert.ts'
import { certHello, dialerProof, MAX_MSG } from './member.ts'
import { ed25519OfPeer, peerFromBytes } from './peer.ts'
import { check, proofKey } from './proof.ts'
import { Framed } from './wire.ts'
import type { CertInfo } from './cert.ts'
import type { EventStats } from './events.ts'
import type { Membership } from './enroll.ts'
import type { CodecConfig, Signed } from './gen/camesh.ts'
import type { Connection, Libp2p, PeerId } from '@libp2p/interface'
import { multiaddr } from '@multiformats/multiaddr'
import type { Multiaddr } from '@multiformats/multiaddr'

const MEMBER_PROTOCOL = '/camesh/member/1'
const MEDIA_PROTOCOL = '/camesh/media/1'
const KEY_PROTOCOL = '/camesh/key/1'
const NVR_PROTOCOL = '/camesh/nvr/1'
const INFO_PROTOCOL = '/camesh/info/1'
/** The node's default limits (config.rs): control messages, frames, live age and clock skew. */
const MAX_CONTROL = 64 << 10
const MAX_FRAME = 8 << 20
const LIVE_MAX_AGE_US = 10_000_000n
const CLOCK_SKEW_US = 60_000_000n
const MAX_HEADER = 1024

export class Refused extends Error {}

/**
 * Dials `addrs` and proves membership to the node there; returns the connection. A
 * connection through a relay circuit is "limited" to js-libp2p (the relay states a
 * duration), and it opens streams on one only when asked to: every stream the page opens
 * says `runOnLimitedConnection`, as the circuit carries the whole session.
 */
export async function joinPeer (node: Libp2p, addrs: Multiaddr[], m: Membership, signal: AbortSignal): Promise<Joined> {
  const conn = await node.dial(addrs, { signal })
  const key = await proofKey(m.fleetRoot)
  const me = node.peerId.toMultihash().bytes
  const them = conn.remotePeer.toMultihash().bytes
  const stream = await conn.newStream(MEMBER_PROTOCOL, { signal, runOnLimitedConnection: true })
  const wire = new Framed(stream, MAX_MSG)
  await wire.send(await dialerProof(key, me, them))
  const theirs = await wire.next(signal)
  if (theirs == null) throw new Refused('the node closed the membership exchange')
  if (!await check(key, 'listener', them, me, MemberHello.decode(theirs).proof)) {
    stream.abort(new Error('no fleet proof'))
    throw new Refused(`${conn.remotePeer.toString()} did not prove it belongs to this fleet: the certificate was not shown`)
  }
  await wire.send(certHello(SignedCodec.decode(m.cert)))
  const answer = await wire.next(signal)
  stream.close().catch(() => {})
  if (answer == null) throw new Refused('the node closed the membership exchange')
  const h = MemberHello.decode(answer)
  if (h.error !== '') throw new Refused(`the node refused this page's certificate: ${h.error.slice(0, 200)}`)
  if (h.cert == null) throw new Refused('the node showed no certificate')
  // As a node does (Trust::admit): the certificate must be the fleet's, for the very key
  // this connection authenticated, and current; the membership proof alone is no proof.
  let cert: CertInfo
  try {
    cert = await verifyCert(h.cert, m.fleetRoot, m.fleetId, conn.remotePeer, BigInt(Math.floor(Date.now() / 1000)))
  } catch (e) {
    conn.close().catch(() => {})
    throw new Refused(`${conn.remotePeer.toString()} showed a certificate this page does not accept: ${e instanceof Error ? e.message : String(e)}`)
  }
  return { conn, cert }
}

/** A connection to a node whose membership certificate checked. */
export interface Joined { conn: Connection, cert: CertInfo }

/** Whether `cert` binds `camera` to its holder (node/src/auth/cert.rs `may_serve`). */
export function mayServe (cert: CertInfo | undefined, camera: string): boolean {
  return cert != null && cert.cameras.includes(camera)
}

/** One protobuf field: its number, and its varint value or its bytes. */
interface Field { num: number, varint?: bigint, bytes?: Uint8Array }

/** The fields of a protobuf message, read by hand: protons' generated decoder refuses packed repeated enums (`CameraAnnouncement.profiles`), which prost writes. */
export function fields (buf: Uint8Array): Field[] {
  const out: Field[] = []
  let pos = 0
  const varint = (): bigint => {
    let v = 0n
    for (let shift = 0n; shift < 70n; shift += 7n) {
      if (pos >= buf.length) throw new Error('truncated varint')
      const b = buf[pos++] ?? 0
      v |= BigInt(b & 0x7f) << shift
      if ((b & 0x80) === 0) return v
    }
    throw new Error('varint too long')
  }
  while (pos < buf.length) {
    const key = Number(varint())
    const num = key >>> 3
    switch (key & 7) {
      case 0: out.push({ num, varint: varint() }); break
      case 1: pos += 8; break
      case 5: pos += 4; break
      case 2: {
        const len = Number(varint())
        if (pos + len > buf.length) throw new Error('truncated field')
        out.push({ num, bytes: buf.subarray(pos, pos + len) })
        pos += len
        break
      }
      default: throw new Error(`wire type ${key & 7}`)
    }
  }
  return out
}

/** An epoch's media key from the camera's own node (`/camesh/key/1`): for streams from a forwarder, which never hands out keys. */
export async function fetchKey (conn: Connection, camera: string, profile: 'main' | 'sub', grant: Signed | undefined, epoch: bigint, signal: AbortSignal): Promise<MediaKey> {
  const stream = await conn.newStream(KEY_PROTOCOL, { signal, runOnLimitedConnection: true })
  const wire = new Framed(stream, MAX_CONTROL)
  await wire.send(KeyRequest.encode({ cameraId: camera, grant, epoch, profile: profile === 'sub' ? Profile.PROFILE_SUB : Profile.PROFILE_MAIN }))
  const raw = await wire.next(signal)
  stream.close().catch(() => {})
  if (raw == null) throw new Error('the camera closed the key stream')
  const r = KeyResponse.decode(raw)
  if (r.error !== '') throw new Refused(`the camera refused a media key: ${r.error.slice(0, 200)}`)
  return await MediaKey.import(r.epoch, new Uint8Array(r.key))
}

/** Where a watch through a forwarder gets its keys: a connection to the camera's node. */
export type KeySource = (cameraPeer: PeerId) => Promise<Connection>

function pbVarint (v: bigint): number[] {
  let x = BigInt.asUintN(64, v)
  const out: number[] = []
  while (x >= 0x80n) {
    out.push(Number(x & 0x7fn) | 0x80)
    x >>= 7n
  }
  out.push(Number(x))
  return out
}

function pbBytes (num: number, b: Uint8Array): number[] {
  return [...pbVarint(BigInt((num << 3) | 2)), ...pbVarint(BigInt(b.length)), ...b]
}

/** An `NvrRequest` (proto/proto/nvr.proto), written by hand: the page's codecs come from camesh.proto and device.proto only. */
export function nvrRequest (camera: string, grant: Signed | undefined, fromUs: bigint, toUs: bigint, kind: 'play' | 'recordings'): Uint8Array {
  const out: number[] = [...pbBytes(1, new TextEncoder().encode(camera))]
  if (grant != null) out.push(...pbBytes(2, SignedCodec.encode(grant)))
  if (fromUs !== 0n) out.push(...pbVarint(3n << 3n), ...pbVarint(fromUs))
  if (toUs !== 0n) out.push(...pbVarint(4n << 3n), ...pbVarint(toUs))
  if (kind === 'play') out.push(...pbBytes(5, new Uint8Array([...pbVarint(1n << 3n), ...pbVarint(BigInt(MAX_FRAME))])))
  else out.push(...pbBytes(6, new Uint8Array(0)))
  return new Uint8Array(out)
}

export interface Span { fromUs: number, toUs: number, recorded: boolean, reason: string }

/** What an NVR answers: a StreamAccept (play), coverage spans (recordings), or a refusal. */
export function nvrResponse (raw: Uint8Array): { accept?: StreamAccept, spans?: Span[], reject?: string } {
  const top = fields(raw)
  const dec = new TextDecoder()
  const play = top.find(f => f.num === 1)?.bytes
  if (play != null) return { accept: StreamAccept.decode(play) }
  const rej = top.find(f => f.num === 5)?.bytes
  if (rej != null) return { reject: StreamReject.decode(rej).reason }
  const cov = top.find(f => f.num === 2)?.bytes
  if (cov == null) throw new Error('the NVR sent an unexpected answer')
  const i64 = (v: bigint | undefined): number => Number(BigInt.asIntN(64, v ?? 0n))
  return {
    spans: fields(cov).filter(f => f.num === 1 && f.bytes != null).map(f => {
      const a = fields(f.bytes ?? new Uint8Array(0))
      return {
        fromUs: i64(a.find(x => x.num === 1)?.varint),
        toUs: i64(a.find(x => x.num === 2)?.varint),
        recorded: (a.find(x => x.num === 3)?.varint ?? 0n) !== 0n,
        reason: dec.decode(a.find(x => x.num === 4)?.bytes ?? new Uint8Array(0))
      }
    })
  }
}

/** A camera's coverage on an NVR between two times (`/camesh/nvr/1` recordings). */
export async function coverage (conn: Connection, camera: string, grant: Signed | undefined, fromUs: bigint, toUs: bigint, signal: AbortSignal): Promise<Span[]> {
  const stream = await conn.newStream(NVR_PROTOCOL, { signal, runOnLimitedConnection: true })
  const wire = new Framed(stream, MAX_CONTROL)
  await wire.send(nvrRequest(camera, grant, fromUs, toUs, 'recordings'))
  const raw = await wire.next(signal)
  stream.close().catch(() => {})
  if (raw == null) throw new Error('the NVR closed the stream')
  const r = nvrResponse(raw)
  if (r.reject != null) throw new Refused(`the NVR refused: ${r.reject.slice(0, 200)}`)
  return r.spans ?? []
}

export interface CameraEntry { cameraId: string, name: string, width: number, height: number }

/** A camera another member has heard of: who serves it, and at which addresses. */
export interface KnownCamera { cameraId: string, peer: PeerId, addrs: Multiaddr[] }

/**
 * The cameras a node serves (`/camesh/info/1` ListCameras), and the other members'
 * cameras it has heard of (`known`: hints; dialing one checks the camera's certificate).
 */
export async function listCameras (conn: Connection, signal: AbortSignal): Promise<{ cameras: CameraEntry[], known: KnownCamera[] }> {
  const stream = await conn.newStream(INFO_PROTOCOL, { signal, runOnLimitedConnection: true })
  const wire = new Framed(stream, MAX_CONTROL)
  await wire.send(ControlRequest.encode({ listCameras: { known: true } }))
  const raw = await wire.next(signal)
  stream.close().catch(() => {})
  if (raw == null) throw new Error('no camera list')
  const dec = new TextDecoder()
  const top = fields(raw)
  const err = top.find(f => f.num === 3)?.bytes
  if (err != null) throw new Refused(dec.decode(fields(err).find(f => f.num === 2)?.bytes ?? new Uint8Array(0)))
  const list = top.find(f => f.num === 1)?.bytes
  if (list == null) return { cameras: [], known: [] }
  const entries = fields(list)
  const cameras = entries.filter(f => f.num === 1 && f.bytes != null).map(f => {
    const a = fields(f.bytes ?? new Uint8Array(0))
    const str = (n: number): string => dec.decode(a.find(x => x.num === n)?.bytes ?? new Uint8Array(0))
    const int = (n: number): number => Number(a.find(x => x.num === n)?.varint ?? 0n)
    return { cameraId: str(1), name: str(2), width: int(5), height: int(6) }
  })
  const known: KnownCamera[] = []
  for (const f of entries.filter(f => f.num === 4 && f.bytes != null).slice(0, 256)) {
    try {
      const a = fields(f.bytes ?? new Uint8Array(0))
      const peer = peerFromBytes(a.find(x => x.num === 3)?.bytes ?? new Uint8Array(0))
      const addrs: Multiaddr[] = []
      for (const x of a.filter(x => x.num === 11 && x.bytes != null).slice(0, 32)) {
        try { addrs.push(multiaddr(x.bytes)) } catch {}
      }
      known.push({ cameraId: dec.decode(a.find(x => x.num === 1)?.bytes ?? new Uint8Array(0)), peer, addrs })
    } catch {}
  }
  return { cameras, known }
}

/** What a tile counts (window.camesh.tiles[camera]). */
export interface TileStats {
  camera: string
  profile: string
  path: string
  state: string
  received: number
  decoded: number
  decodeErrors: number
  rejected: number
  lastReject?: string
  width: number
  height: number
  firstFrameMs?: number
  /** Capture (at the camera) to decoded-and-drawn, milliseconds, the last few hundred. */
  latencyMs: number[]
  refusal?: string
  /** When the watch gave up (Unix ms). */
  endedUnixMs?: number
  /** When the last frame was drawn (Unix ms). */
  lastDrawnUnixMs?: number
  /** Streams that broke and were opened again. */
  reopened: number
  lastBreak?: string
  /** Playback: the time asked for, and the capture time of the first frame drawn (Unix µs). */
  seekUnixUs?: number
  firstCaptureUnixUs?: number
  /** Where the stream got to (for a failure's message). */
  phase?: string
  /** The first distinct reasons frames were rejected. */
  rejectReasons: string[]
  /** What decodes: WebCodecs to the canvas, or the MSE fallback (a <video>). */
  player?: 'webcodecs' | 'mse'
  /** The camera's events beside the video (events.ts): the badge's state. */
  events?: EventStats
  /** The camera's audio, when the stream carries some (audio.ts). */
  audio?: AudioStats
}

function hex2 (n: number): string {
  return n.toString(16).padStart(2, '0')
}

/** The NAL body of an SPS/PPS (the config may carry them with or without the header byte kept). */
function avcDescription (c: CodecConfig): { codec: string, description: Uint8Array<ArrayBuffer> } {
  const sps = c.sps
  const pps = c.pps
  if (sps.length < 4 || pps.length < 1) throw new Error('the stream has no SPS/PPS')
  const [, p = 0, compat = 0, level = 0] = sps
  const d = new Uint8Array(11 + sps.length + pps.length)
  d.set([1, p, compat, level, 0xff, 0xe1, sps.length >> 8, sps.length & 0xff], 0)
  d.set(sps, 8)
  let at = 8 + sps.length
  d.set([1, pps.length >> 8, pps.length & 0xff], at)
  at += 3
  d.set(pps, at)
  return { codec: `avc1.${hex2(p)}${hex2(compat)}${hex2(level)}`, description: d }
}

function decodeFrame (body: Uint8Array): { h: FrameHeader, payload: Uint8Array<ArrayBuffer> } {
  let hlen = 0
  let used = 0
  let mul = 1
  for (;;) {
    if (used >= body.length || used >= 10) throw new Error('truncated frame header length')
    const b = body[used++] ?? 0
    hlen += (b & 0x7f) * mul
    if ((b & 0x80) === 0) break
    mul *= 128
  }
  if (hlen > MAX_HEADER || used + hlen > body.length) throw new Error('bad frame header length')
  const h = FrameHeader.decode(body.subarray(used, used + hlen))
  return { h, payload: new Uint8Array(body.subarray(used + hlen)) }
}

/** One live view of a camera on a canvas; `stop()` ends it. */
export class Watch {
  readonly stats: TileStats
  private readonly abort = new AbortController()
  private decoder?: VideoDecoder
  /** The MSE fallback's player, where WebCodecs is missing. */
  private mse?: MsePlayer
  private readonly keys: MediaKey[] = []
  private lastSeq = -1n
  private freshSeen = false
  private readonly captured = new Map<number, bigint>()
  private liveFromUs?: number
  private audio?: AudioPlayer
  private audioOrder = new AudioOrder(LIVE_MAX_AGE_US + CLOCK_SKEW_US, CLOCK_SKEW_US)
  /** Where the tile's sound goes: the page's AudioContext while it is on. */
  private sound?: AudioContext

  /**
   * `certOf` names the checked certificate of a connected node (from [`joinPeer`]): a live
   * stream plays only from the node whose certificate binds the camera.
   */
  constructor (readonly camera: string, readonly profile: 'main' | 'sub', private readonly canvas: HTMLCanvasElement, private readonly onChange: () => void, private readonly certOf: (peer: PeerId) => CertInfo | undefined) {
    this.stats = { camera, profile, path: '', state: 'starting', received: 0, decoded: 0, decodeErrors: 0, rejected: 0, width: 0, height: 0, latencyMs: [], reopened: 0, rejectReasons: [] }
  }

  get stopped (): boolean {
    return this.abort.signal.aborted
  }

  stop (): void {
    this.abort.abort()
    try { this.decoder?.close() } catch {}
    this.mse?.close()
    this.audio?.close()
  }

  /** The tile's sound on (into the page's AudioContext) or off (decoded, not played). */
  setSound (ctx: AudioContext | undefined): void {
    this.sound = ctx
    this.audio?.setOutput(ctx)
  }

  /** Runs until the stream ends, is refused, or `stop()`. */
  async run (conn: Connection, grant: Signed | undefined, started: number, keySource?: KeySource, playFromUs?: bigint): Promise<void> {
    const signal = this.abort.signal
    const origin = conn.remotePeer
    // A stream opened again starts over: a new decoder, a keyframe first.
    try { this.decoder?.close() } catch {}
    this.lastSeq = -1n
    this.freshSeen = false
    this.audioOrder = new AudioOrder(LIVE_MAX_AGE_US + CLOCK_SKEW_US, CLOCK_SKEW_US)
    this.audio?.close()
    this.audio = undefined
    this.stats.path = `${conn.remoteAddr.toString().includes('/p2p-circuit') ? 'relayed' : 'direct'} ${conn.remoteAddr.toString()}`
    const playback = playFromUs != null
    const stream = await conn.newStream(playback ? NVR_PROTOCOL : MEDIA_PROTOCOL, { signal, runOnLimitedConnection: true })
    const wire = new Framed(stream, MAX_CONTROL)
    if (playback) {
      this.stats.path = `playback from ${conn.remoteAddr.toString()}`
      this.stats.seekUnixUs = Number(playFromUs)
      await wire.send(nvrRequest(this.camera, grant, playFromUs, 0n, 'play'))
    } else {
      await wire.send(StreamRequest.encode({
      cameraId: this.camera,
      profile: this.profile === 'sub' ? Profile.PROFILE_SUB : Profile.PROFILE_MAIN,
      live: {},
      grant: grant == null ? new Uint8Array(0) : SignedCodec.encode(grant),
      maxFrameBytes: 0,
      userAgent: 'camesh-web/0.1',
      // The MSE fallback plays video only: no audio asked for there.
      audio: !mseWanted()
      }))
    }
    this.stats.phase = 'asked'
    const raw = await wire.next(AbortSignal.any([signal, AbortSignal.timeout(playback ? 40_000 : 10_000)]))
    this.stats.phase = 'answered'
    if (raw == null) throw new Refused('the node closed the stream without an answer')
    const resp: { accept?: StreamAccept, reject?: { reason: string } } = playback
      ? (r => ({ accept: r.accept, reject: r.reject != null ? { reason: r.reject } : undefined }))(nvrResponse(raw))
      : StreamResponse.decode(raw)
    if (resp.reject != null) {
      this.stats.refusal = `refused by ${origin.toString()}: ${resp.reject.reason.slice(0, 300)}`
      this.stats.state = 'refused'
      this.onChange()
      throw new Refused(this.stats.refusal)
    }
    const accept = resp.accept
    if (accept?.codec == null) throw new Error('the node accepted without a codec config')
    const cameraPeer: PeerId = !playback && accept.originPeer.length > 0 ? peerFromBytes(accept.originPeer) : origin
    // Through a forwarder: keys from the camera's node only (in-band keys are ignored).
    let keyConn: Connection | undefined
    if (!cameraPeer.equals(origin)) {
      if (keySource == null) throw new Refused(`${origin.toString()} forwards this camera, and this page cannot reach the camera's node for keys`)
      keyConn = await keySource(cameraPeer)
      this.stats.path = `forwarded by ${conn.remoteAddr.toString()}, keys from ${cameraPeer.toString()}`
      this.keys.push(await fetchKey(keyConn, this.camera, this.profile, grant, accept.keyEpoch, signal))
    }
    // Viewers dial keys: the sealing node must hold a certificate that binds the camera
    // (an impostor member announcing someone else's camera is refused here).
    if (!playback && !mayServe(this.certOf(cameraPeer), this.camera)) {
      this.stats.refusal = `${cameraPeer.toString()} holds no certificate for camera ${this.camera}: not watched`
      this.stats.state = 'refused'
      this.onChange()
      throw new Refused(this.stats.refusal)
    }
    const raw32 = ed25519OfPeer(cameraPeer)
    if (raw32 == null) throw new Error('the camera node has no Ed25519 key')
    const verifyKey = await importVerifyKey(raw32)
    const { codec, description } = avcDescription(accept.codec)
    this.canvas.width = accept.codec.width
    this.canvas.height = accept.codec.height
    const presented = (ts: number, width: number, height: number): void => {
      const cap = this.captured.get(ts) ?? this.captured.get(ts - 1) ?? this.captured.get(ts + 1)
      this.captured.delete(ts)
      this.stats.width = width
      this.stats.height = height
      this.stats.decoded++
      this.audio?.video(ts)
      this.stats.lastDrawnUnixMs = Date.now()
      if (this.stats.firstFrameMs == null) {
        this.liveFromUs = Date.now() * 1000
        if (cap != null) this.stats.firstCaptureUnixUs = Number(cap)
        this.stats.firstFrameMs = Math.round(performance.now() - started)
        this.stats.state = 'playing'
        this.onChange()
      }
      // Latency counts live frames only: those captured after the first frame was drawn
      // (the cached GOP a stream starts with is up to a GOP old by design).
      if (cap != null && this.liveFromUs != null && Number(cap) >= this.liveFromUs) {
        const ms = (Date.now() * 1000 - Number(cap)) / 1000
        if (this.stats.latencyMs.length >= 600) this.stats.latencyMs.shift()
        this.stats.latencyMs.push(Math.round(ms * 10) / 10)
      }
    }
    const failed = (why: string): void => {
      this.stats.decodeErrors++
      this.stats.lastReject = `decoder: ${why}`
      this.onChange()
    }
    this.stats.phase = 'configuring'
    if (mseWanted()) {
      // No WebCodecs: fragmented MP4 into a MediaSource (mse.ts), the video in the tile.
      this.mse?.close()
      this.mse = new MsePlayer(this.mse?.video ?? this.canvas, presented, failed)
      this.stats.player = 'mse'
      await this.mse.open(codec, description, accept.codec.width, accept.codec.height)
    } else {
      const ctx = this.canvas.getContext('2d')
      if (ctx == null) throw new Error('no 2D canvas')
      this.stats.player = 'webcodecs'
      this.decoder = new VideoDecoder({
        output: f => {
          ctx.drawImage(f, 0, 0, this.canvas.width, this.canvas.height)
          const [ts, w, h] = [f.timestamp, f.displayWidth, f.displayHeight]
          f.close()
          presented(ts, w, h)
        },
        error: e => failed(e.message)
      })
      this.decoder.configure({ codec, description, optimizeForLatency: true, codedWidth: accept.codec.width, codedHeight: accept.codec.height })
    }
    if (accept.audio != null && this.mse == null) {
      this.audio = new AudioPlayer(accept.audio, newAudioStats(accept.audio))
      this.stats.audio = this.audio.stats
      await this.audio.open()
      this.audio.setOutput(this.sound)
    }
    this.stats.state = 'waiting for a keyframe'
    this.onChange()
    this.stats.phase = 'frames'
    wire.setMax(MAX_FRAME + 1024)
    const frames = wire
    for (;;) {
      const body = await frames.next(signal)
      if (body == null) {
        this.stats.state = 'ended'
        this.onChange()
        return
      }
      const { h, payload } = decodeFrame(body)
      const audio = isAudio(h.sequence)
      // Audio this watch did not take (no audio in the accept, the MSE fallback): skipped.
      if (audio && this.audio == null) continue
      if (!audio) this.stats.received++
      if (h.newKey.length > 0) {
        if (keyConn != null) continue
        this.keys.push(await MediaKey.import(h.keyEpoch, new Uint8Array(h.newKey)))
        if (this.keys.length > 4) this.keys.shift()
        continue
      }
      // Playback is not live: recorded frames are as old as they are (the node checks no
      // freshness on playback either); the AEAD still holds every byte to the camera's.
      const why = playback ? undefined : await this.fresh(h, payload, verifyKey)
      if (why != null) {
        this.reject(why, audio)
        continue
      }
      let key = this.keys.find(k => k.epoch === h.keyEpoch)
      if (key == null && keyConn != null) {
        try {
          key = await fetchKey(keyConn, this.camera, this.profile, grant, h.keyEpoch, AbortSignal.any([signal, AbortSignal.timeout(5_000)]))
          this.keys.push(key)
          if (this.keys.length > 4) this.keys.shift()
        } catch (e) {
          this.reject(`no key for epoch ${h.keyEpoch}: ${e instanceof Error ? e.message : String(e)}`, audio)
          continue
        }
      }
      if (key == null) {
        this.reject(`no key for epoch ${h.keyEpoch}`, audio)
        continue
      }
      let au: Uint8Array<ArrayBuffer>
      try {
        au = await key.open(h, payload)
      } catch (e) {
        this.reject(e instanceof Error ? e.message : String(e), audio)
        continue
      }
      if (audio) {
        this.audio?.push(h.pts_90k, au)
        continue
      }
      const ts = Number(h.pts_90k * 100n / 9n)
      this.captured.set(ts, h.captureUnixUs)
      if (this.captured.size > 256) this.captured.delete(this.captured.keys().next().value as number)
      try {
        if (this.mse != null) this.mse.push(h.keyframe, h.dts_90k, h.pts_90k, au)
        else this.decoder?.decode(new EncodedVideoChunk({ type: h.keyframe ? 'key' : 'delta', timestamp: ts, data: au }))
      } catch (e) {
        this.stats.decodeErrors++
        this.stats.lastReject = `decode: ${String(e)}`
      }
    }
  }

  private reject (why: string, audio = false): void {
    if (audio && this.audio != null) {
      // Audio frames stand alone: one refused takes nothing else with it.
      this.audio.stats.rejected++
      this.audio.stats.lastReject = why
      this.onChange()
      return
    }
    // Nothing decodes again before the next good keyframe.
    this.freshSeen = false
    this.stats.rejected++
    this.stats.lastReject = why
    const kind = why.replace(/#\d+/g, '#n').replace(/\d+ s old/, 'n s old')
    if (this.stats.rejectReasons.length < 20 && !this.stats.rejectReasons.includes(kind)) this.stats.rejectReasons.push(kind)
    this.onChange()
  }

  /** The node's freshness rule for live frames: signed recent keyframes, a sequence that only grows, nothing before the first good keyframe. */
  private async fresh (h: FrameHeader, sealed: Uint8Array, key: CryptoKey): Promise<string | undefined> {
    // Audio on its own sequence space (as the node's Freshness), after a good keyframe.
    if (isAudio(h.sequence)) return this.audioOrder.check(h, this.freshSeen, BigInt(Date.now()) * 1000n)
    if (h.sequence <= this.lastSeq) return `frame #${h.sequence} is not after #${this.lastSeq}`
    if (h.keyframe) {
      if (!await verifyKeyframe(key, this.camera, h, sealed)) return `keyframe #${h.sequence} is not signed by the camera's node`
      const now = BigInt(Date.now()) * 1000n
      if (now - h.captureUnixUs > LIVE_MAX_AGE_US + CLOCK_SKEW_US) return `keyframe #${h.sequence} is ${(now - h.captureUnixUs) / 1000000n} s old`
      this.freshSeen = true
    } else if (!this.freshSeen) {
      return `frame #${h.sequence} before any signed keyframe`
    }
    this.lastSeq = h.sequence
    return undefined
  }
}
