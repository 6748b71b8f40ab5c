// The camera's audio in the page (#17): the StreamAccept's AudioConfig turned into a
// WebCodecs AudioDecoder configuration (AAC with its AudioSpecificConfig, Opus, G.711),
// decoded frames played through one AudioContext, each buffer started at the moment the
// video frame of the same pts was (or will be) drawn, plus a small lead for jitter. Audio
// that would start in the past is dropped (the live edge, never a growing delay). Where
// the browser's AudioDecoder takes no G.711, the page decodes it itself (a 256-entry
// table). Audio frames reach this file opened: the same freshness rule (ordered on their
// own sequence space: fresh.ts `AudioOrder`), signatures and AES-GCM as video came first.
//
// A tile's sound is off until the user turns it on (browsers block autoplay with sound):
// the speaker button creates and resumes the one AudioContext inside its click. While off,
// audio is still decoded (counted in the stats) and not scheduled.

import type { AudioConfig } from './gen/camesh.ts'

/** What a tile counts about its audio (window.camesh ... tiles[camera].audio). */
export interface AudioStats {
  /** As the accept names it: aac, pcma, pcmu, opus. */
  codec: string
  sampleRate: number
  channels: number
  /** The WebCodecs codec string, or `js` for the page's own G.711 decoder. */
  decoder: string
  /** `decoding`, `unsupported: ...`, `failed: ...`. */
  state: string
  /** Whether the tile's sound is on, and the AudioContext's state. */
  on: boolean
  context?: string
  /** Audio frames opened; decoded (decoder outputs) and their length in ms. */
  received: number
  decoded: number
  decodedMs: number
  decodeErrors: number
  /** Audio frames refused before decoding (freshness, key, authentication). */
  rejected: number
  lastReject?: string
  /** Buffers scheduled to play; dropped as late (they would have started in the past). */
  played: number
  late: number
}

export function newAudioStats (c: AudioConfig): AudioStats {
  return { codec: c.codec, sampleRate: c.sampleRate, channels: c.channels, decoder: '', state: 'starting', on: false, received: 0, decoded: 0, decodedMs: 0, decodeErrors: 0, rejected: 0, played: 0, late: 0 }
}

/** Sampling frequencies by their AAC index (ISO/IEC 14496-3, 1.6.3.4). */
const AAC_RATES = [96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350]

/** The audio object type an AudioSpecificConfig starts with (5 bits; 31 escapes to 32 + 6 more bits). */
export function aacObjectType (asc: Uint8Array): number {
  if (asc.length < 2) throw new Error('the AudioSpecificConfig is shorter than 2 bytes')
  const first = (asc[0] ?? 0) >> 3
  if (first !== 31) return first
  return 32 + ((((asc[0] ?? 0) & 0x07) << 3) | ((asc[1] ?? 0) >> 5))
}

/** An AAC-LC AudioSpecificConfig for a rate and channel count, for an accept that carries none. */
export function aacLcConfig (sampleRate: number, channels: number): Uint8Array<ArrayBuffer> {
  const idx = AAC_RATES.indexOf(sampleRate)
  if (idx < 0 || channels < 1 || channels > 7) throw new Error(`no AAC-LC config for ${sampleRate} Hz, ${channels} channels`)
  return new Uint8Array([(2 << 3) | (idx >> 1), ((idx & 1) << 7) | (channels << 3)])
}

/** The WebCodecs configuration of an accept's audio (the codec registry's names: mp4a.40.<type>, opus, alaw, ulaw). */
export function decoderConfig (c: AudioConfig): AudioDecoderConfig {
  const base = { sampleRate: c.sampleRate, numberOfChannels: c.channels }
  switch (c.codec) {
    case 'aac': {
      const asc = c.extradata.length > 0 ? c.extradata : aacLcConfig(c.sampleRate, c.channels)
      // Raw access units, as the node carries them: the description says so (without
      // one, WebCodecs expects ADTS).
      return { ...base, codec: `mp4a.40.${aacObjectType(asc)}`, description: asc }
    }
    case 'opus': {
      const head = new TextDecoder().decode(c.extradata.subarray(0, 8)) === 'OpusHead'
      return head ? { ...base, codec: 'opus', description: c.extradata } : { ...base, codec: 'opus' }
    }
    case 'pcma': return { ...base, codec: 'alaw' }
    case 'pcmu': return { ...base, codec: 'ulaw' }
    default: throw new Error(`audio codec "${c.codec.slice(0, 20)}" is not one the page knows`)
  }
}

/** G.711 A-law byte to a 16-bit linear sample (ITU-T G.711; as Sun's g711.c `alaw2linear`). */
export function alawSample (a: number): number {
  a ^= 0x55
  let t = (a & 0x0f) << 4
  const seg = (a & 0x70) >> 4
  if (seg === 0) t += 8
  else t = (t + 0x108) << (seg - 1)
  return (a & 0x80) !== 0 ? t : -t
}

/** G.711 µ-law byte to a 16-bit linear sample (as Sun's g711.c `ulaw2linear`). */
export function ulawSample (u: number): number {
  u = ~u & 0xff
  const t = (((u & 0x0f) << 3) + 0x84) << ((u & 0x70) >> 4)
  return (u & 0x80) !== 0 ? 0x84 - t : t - 0x84
}

function table (f: (b: number) => number): Float32Array {
  const out = new Float32Array(256)
  for (let b = 0; b < 256; b++) out[b] = f(b) / 32768
  return out
}

let alaw: Float32Array | undefined
let ulaw: Float32Array | undefined

/** A G.711 packet (interleaved when more than one channel) as one float array per channel, -1..1. */
export function decodeG711 (law: 'pcma' | 'pcmu', data: Uint8Array, channels: number): Float32Array[] {
  const t = law === 'pcma' ? (alaw ??= table(alawSample)) : (ulaw ??= table(ulawSample))
  const n = Math.floor(data.length / channels)
  const out = Array.from({ length: channels }, () => new Float32Array(n))
  for (let i = 0; i < n; i++) {
    for (let c = 0; c < channels; c++) (out[c] as Float32Array)[i] = t[data[i * channels + c] ?? 0xd5] ?? 0
  }
  return out
}

/** How long the video's lowest drawing delay is remembered (a delay that grows is taken after this). */
const SYNC_WINDOW_MS = 2000
/** Audio starts this much after its video frame would be drawn: room for the audio's own jitter and decoding. */
export const LEAD_MS = 80
/** A buffer this close to the end of the last one follows it seamlessly instead of at its own time. */
const JOIN_S = 0.04
/** Nothing is scheduled further ahead than this (a video that stalled says nothing about now). */
const AHEAD_S = 1

/**
 * Where audio belongs against the video (pure): each drawn video frame says how late
 * after its pts it was drawn (`atMs - ptsUs / 1000`, the page's clock); the lowest of the
 * last two seconds is the live edge (the cached GOP a stream starts with is drawn in a
 * burst: its early frames look late, the burst's end shows the edge).
 */
export class AvSync {
  private readonly seen: Array<{ atMs: number, offsetMs: number }> = []

  video (ptsUs: number, atMs: number): void {
    this.seen.push({ atMs, offsetMs: atMs - ptsUs / 1000 })
    while (this.seen.length > 0 && (this.seen[0]?.atMs ?? 0) < atMs - SYNC_WINDOW_MS) this.seen.shift()
    if (this.seen.length > 512) this.seen.shift()
  }

  /** When (page clock, ms) audio of `ptsUs` should start; undefined before any video was drawn. */
  target (ptsUs: number): number | undefined {
    if (this.seen.length === 0) return undefined
    let min = Infinity
    for (const s of this.seen) min = Math.min(min, s.offsetMs)
    return ptsUs / 1000 + min + LEAD_MS
  }
}

/**
 * Where a buffer wanted at `atS` (AudioContext seconds) starts, given the end of the last
 * one (`nextS`) and the context's time now (pure): right after the last when it is within
 * 40 ms of it (no click between buffers), else at its own time; `late` if that is past
 * (dropped: the live edge), `ahead` if further than a second away.
 */
export function place (atS: number, nextS: number | undefined, nowS: number): number | 'late' | 'ahead' {
  const start = nextS != null && Math.abs(atS - nextS) < JOIN_S ? nextS : atS
  if (start < nowS) return 'late'
  if (start > nowS + AHEAD_S) return 'ahead'
  return start
}

let shared: AudioContext | undefined

/** The page's one AudioContext (made at the first use: call it inside a click so it may run). */
export function audioContext (): AudioContext {
  shared ??= new AudioContext({ latencyHint: 'interactive' })
  return shared
}

/** One watch's audio: decodes what it is given, plays it when its output is set. */
export class AudioPlayer {
  private decoder?: AudioDecoder
  private js?: 'pcma' | 'pcmu'
  private ctx?: AudioContext
  private next?: number
  private readonly scheduled = new Set<AudioBufferSourceNode>()
  readonly sync = new AvSync()
  private config?: AudioDecoderConfig
  private decodedS = 0

  constructor (private readonly c: AudioConfig, readonly stats: AudioStats) {}

  /**
   * Chooses the decoder: WebCodecs where it takes the config, the page's own for G.711
   * (always with `?g711js` in the page's URL), else none (the stats say why).
   */
  async open (): Promise<void> {
    let config: AudioDecoderConfig
    try {
      config = decoderConfig(this.c)
    } catch (e) {
      this.stats.state = `unsupported: ${e instanceof Error ? e.message : String(e)}`
      return
    }
    let supported = false
    const g711js = new URLSearchParams(globalThis.location?.search ?? '').has('g711js') && (this.c.codec === 'pcma' || this.c.codec === 'pcmu')
    if (typeof AudioDecoder !== 'undefined' && !g711js) {
      try { supported = (await AudioDecoder.isConfigSupported(config)).supported === true } catch {}
    }
    if (supported) {
      this.config = config
      this.stats.decoder = config.codec
      this.stats.state = 'decoding'
      this.configure()
    } else if (this.c.codec === 'pcma' || this.c.codec === 'pcmu') {
      this.js = this.c.codec
      this.stats.decoder = 'js'
      this.stats.state = 'decoding'
    } else {
      this.stats.state = `unsupported: this browser does not decode ${config.codec}`
    }
  }

  private configure (): void {
    if (this.config == null) return
    this.decoder = new AudioDecoder({
      output: d => this.output(d),
      error: e => {
        this.stats.decodeErrors++
        this.stats.lastReject = `decoder: ${e.message}`
      }
    })
    this.decoder.configure(this.config)
  }

  /** An opened audio frame (its pts on the video's 90 kHz timeline). */
  push (pts90k: bigint, data: Uint8Array<ArrayBuffer>): void {
    this.stats.received++
    const ts = Number(pts90k * 100n / 9n)
    if (this.js != null) {
      const ch = decodeG711(this.js, data, Math.max(1, this.c.channels))
      this.decoded(ch, this.c.sampleRate, ts)
      return
    }
    if (this.config == null) return
    // A decoder that failed closes itself: a new one for the next frame.
    if (this.decoder == null || this.decoder.state === 'closed') this.configure()
    try {
      this.decoder?.decode(new EncodedAudioChunk({ type: 'key', timestamp: ts, data }))
    } catch (e) {
      this.stats.decodeErrors++
      this.stats.lastReject = `decode: ${String(e)}`
    }
  }

  private output (d: AudioData): void {
    try {
      const ch: Float32Array[] = []
      for (let c = 0; c < d.numberOfChannels; c++) {
        const plane = new Float32Array(d.numberOfFrames)
        d.copyTo(plane, { planeIndex: c, format: 'f32-planar' })
        ch.push(plane)
      }
      this.decoded(ch, d.sampleRate, d.timestamp)
    } catch (e) {
      this.stats.decodeErrors++
      this.stats.lastReject = `output: ${String(e)}`
    } finally {
      d.close()
    }
  }

  private decoded (ch: Float32Array[], rate: number, tsUs: number): void {
    const frames = ch[0]?.length ?? 0
    this.stats.decoded++
    this.decodedS += frames / rate
    this.stats.decodedMs = Math.round(this.decodedS * 10_000) / 10
    const ctx = this.ctx
    if (ctx == null || frames === 0) return
    this.stats.context = ctx.state
    if (ctx.state !== 'running') return
    const want = this.sync.target(tsUs)
    if (want == null) return
    const now = ctx.currentTime
    const at = place(now + (want - performance.now()) / 1000, this.next, now)
    if (at === 'ahead') return
    if (at === 'late') {
      this.stats.late++
      this.next = undefined
      return
    }
    // The timeline went back (the video caught up with the live edge, e.g. after the
    // cached GOP's burst): what was scheduled for later is stale, so it is cut.
    if (this.next != null && at < this.next - JOIN_S) this.cut(at)
    const buf = ctx.createBuffer(ch.length, frames, rate)
    ch.forEach((p, i) => buf.copyToChannel(p as Float32Array<ArrayBuffer>, i))
    const src = ctx.createBufferSource()
    src.buffer = buf
    src.connect(ctx.destination)
    src.onended = () => this.scheduled.delete(src)
    src.start(at)
    this.scheduled.add(src)
    this.next = at + frames / rate
    this.stats.played++
  }

  private cut (from: number): void {
    for (const s of this.scheduled) {
      try { s.stop(from) } catch {}
    }
    this.scheduled.clear()
  }

  /** A video frame of this watch was drawn now. */
  video (ptsUs: number): void {
    this.sync.video(ptsUs, performance.now())
  }

  /** Plays into `ctx` (sound on), or nowhere (off: decoded, not played). */
  setOutput (ctx: AudioContext | undefined): void {
    this.ctx = ctx
    this.stats.on = ctx != null
    this.stats.context = ctx?.state
    this.next = undefined
    if (ctx == null) this.cut(0)
  }

  close (): void {
    this.setOutput(undefined)
    try { this.decoder?.close() } catch {}
  }
}
