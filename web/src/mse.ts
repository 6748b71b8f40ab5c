// The fallback where WebCodecs is missing (or `?mse` asks for it): each opened access
// unit becomes one fragment of a fragmented MP4 (ISO/IEC 14496-12: an init segment with
// the stream's avcC, then a `moof`+`mdat` per frame, 90 kHz timescale as the frame
// headers carry) appended to a MediaSource that a muted <video> plays at the live edge.
// A fragment per frame keeps the added latency to the browser's own buffering; the
// decrypting, freshness and signature checks before it are the same as for WebCodecs.
// Video only: a watch on this fallback does not ask for the camera's audio (a browser
// without WebCodecs has no AudioDecoder either; an audio track here would need a second
// SourceBuffer and AAC/G.711 in fMP4, which is not built).

import { concat } from './bytes.ts'

/** Whether the page plays through MSE: no WebCodecs here, or `?mse` in the page's URL. */
export function mseWanted (): boolean {
  return typeof VideoDecoder === 'undefined' || new URLSearchParams(globalThis.location?.search ?? '').has('mse')
}

function u8 (...v: number[]): Uint8Array {
  return new Uint8Array(v)
}

function u16 (v: number): Uint8Array {
  return u8((v >> 8) & 0xff, v & 0xff)
}

function u32 (v: number): Uint8Array {
  return u8((v >>> 24) & 0xff, (v >>> 16) & 0xff, (v >>> 8) & 0xff, v & 0xff)
}

function u64 (v: bigint): Uint8Array {
  return concat(u32(Number((v >> 32n) & 0xffffffffn)), u32(Number(v & 0xffffffffn)))
}

function zeros (n: number): Uint8Array {
  return new Uint8Array(n)
}

/** An ISO BMFF box: its size, its four-character type, its payload. */
export function box (type: string, ...payload: Uint8Array[]): Uint8Array {
  const body = concat(...payload)
  return concat(u32(8 + body.length), new TextEncoder().encode(type), body)
}

function fullBox (type: string, version: number, flags: number, ...payload: Uint8Array[]): Uint8Array {
  return box(type, u8(version, (flags >> 16) & 0xff, (flags >> 8) & 0xff, flags & 0xff), ...payload)
}

const MATRIX = concat(u32(0x00010000), u32(0), u32(0), u32(0), u32(0x00010000), u32(0), u32(0), u32(0), u32(0x40000000))
/** Ticks per second of the frame headers' pts/dts. */
export const TIMESCALE = 90_000

/** The init segment (`ftyp` + `moov`) of one H.264 track with decoder config `avcC`. */
export function initSegment (avcC: Uint8Array, width: number, height: number): Uint8Array {
  const ftyp = box('ftyp', new TextEncoder().encode('isom'), u32(0x200), new TextEncoder().encode('isomiso6avc1mp41'))
  const mvhd = fullBox('mvhd', 0, 0, u32(0), u32(0), u32(TIMESCALE), u32(0), u32(0x00010000), u16(0x0100), zeros(10), MATRIX, zeros(24), u32(2))
  const tkhd = fullBox('tkhd', 0, 3, u32(0), u32(0), u32(1), u32(0), u32(0), zeros(8), u16(0), u16(0), u16(0), u16(0), MATRIX, u32(width << 16), u32(height << 16))
  const mdhd = fullBox('mdhd', 0, 0, u32(0), u32(0), u32(TIMESCALE), u32(0), u16(0x55c4), u16(0))
  const hdlr = fullBox('hdlr', 0, 0, u32(0), new TextEncoder().encode('vide'), zeros(12), new TextEncoder().encode('camesh\0'))
  const vmhd = fullBox('vmhd', 0, 1, zeros(8))
  const dinf = box('dinf', fullBox('dref', 0, 0, u32(1), fullBox('url ', 0, 1)))
  const avc1 = box('avc1', zeros(6), u16(1), u16(0), u16(0), zeros(12), u16(width), u16(height), u32(0x00480000), u32(0x00480000), u32(0), u16(1), zeros(32), u16(0x0018), u16(0xffff), box('avcC', avcC))
  const stbl = box('stbl', fullBox('stsd', 0, 0, u32(1), avc1), fullBox('stts', 0, 0, u32(0)), fullBox('stsc', 0, 0, u32(0)), fullBox('stsz', 0, 0, u32(0), u32(0)), fullBox('stco', 0, 0, u32(0)))
  const trak = box('trak', tkhd, box('mdia', mdhd, hdlr, box('minf', vmhd, dinf, stbl)))
  const mvex = box('mvex', fullBox('trex', 0, 0, u32(1), u32(1), u32(0), u32(0), u32(0)))
  return concat(ftyp, box('moov', mvhd, trak, mvex))
}

/** One sample of the track. */
export interface Sample {
  /** Decode time and composition (presentation) time, 90 kHz. */
  dts: bigint
  pts: bigint
  /** Ticks until the next sample (an estimate for the newest). */
  duration: number
  keyframe: boolean
  /** The access unit, AVCC (length-prefixed NAL units), as the node sends it. */
  data: Uint8Array
}

/** `moof` + `mdat` for one sample, fragment number `seq` (from 1). */
export function fragment (seq: number, s: Sample): Uint8Array {
  // trun: data offset, duration, size, flags and composition offset present (version 1:
  // signed offsets).
  const flags = s.keyframe ? 0x02000000 : 0x01010000
  const trun = (offset: number): Uint8Array => fullBox('trun', 1, 0x000f01, u32(1), u32(offset), u32(s.duration), u32(s.data.length), u32(flags), u32(Number(s.pts - s.dts) | 0))
  const moofWith = (offset: number): Uint8Array => box('moof',
    fullBox('mfhd', 0, 0, u32(seq)),
    box('traf', fullBox('tfhd', 0, 0x020000, u32(1)), fullBox('tfdt', 1, 0, u64(s.dts)), trun(offset)))
  const size = moofWith(0).length
  return concat(moofWith(size + 8), box('mdat', s.data))
}

/**
 * A muted <video> fed through MediaSource: `push` one access unit at a time; `onPresented`
 * hears of each frame the video shows (its presentation time in µs) for the tile's counts.
 */
export class MsePlayer {
  readonly video: HTMLVideoElement
  private sb?: SourceBuffer
  private readonly queue: Uint8Array[] = []
  private seq = 1
  private last?: { dts: bigint }
  private failed?: string
  /** Bound on fragments waiting for the SourceBuffer (about 4 s at 30 fps). */
  static readonly MAX_QUEUE = 120

  constructor (
    replacing: HTMLElement,
    private readonly onPresented: (ptsUs: number, width: number, height: number) => void,
    private readonly onError: (why: string) => void
  ) {
    this.video = document.createElement('video')
    this.video.muted = true
    this.video.playsInline = true
    this.video.autoplay = true
    this.video.className = replacing.className
    this.video.style.width = '100%'
    replacing.replaceWith(this.video)
    this.video.addEventListener('error', () => this.fail(`video: ${this.video.error?.message ?? 'error'}`))
  }

  /** Opens the MediaSource for H.264 `codec` (an `avc1.` string) and appends the init segment. */
  async open (codec: string, avcC: Uint8Array, width: number, height: number): Promise<void> {
    const type = `video/mp4; codecs="${codec}"`
    if (typeof MediaSource === 'undefined' || !MediaSource.isTypeSupported(type)) throw new Error(`this browser has neither WebCodecs nor MSE for ${type}`)
    const ms = new MediaSource()
    this.video.src = URL.createObjectURL(ms)
    await new Promise<void>(resolve => ms.addEventListener('sourceopen', () => resolve(), { once: true }))
    this.sb = ms.addSourceBuffer(type)
    this.sb.mode = 'segments'
    this.sb.addEventListener('updateend', () => { this.liveEdge(); this.pump() })
    this.sb.addEventListener('error', () => this.fail('SourceBuffer error'))
    this.queue.push(initSegment(avcC, width, height))
    this.pump()
    const frame = (_now: number, meta: VideoFrameCallbackMetadata): void => {
      this.onPresented(Math.round(meta.mediaTime * 1e6), meta.width, meta.height)
      this.video.requestVideoFrameCallback(frame)
    }
    this.video.requestVideoFrameCallback(frame)
  }

  /** One opened access unit. */
  push (keyframe: boolean, dts: bigint, pts: bigint, data: Uint8Array): void {
    if (this.failed != null) return
    const duration = this.last == null ? 3000 : Math.max(1, Math.min(90_000, Number(dts - this.last.dts)))
    this.last = { dts }
    if (this.queue.length >= MsePlayer.MAX_QUEUE) {
      // The browser fell behind: drop to the next keyframe rather than grow.
      if (!keyframe) return
      this.queue.length = 0
    }
    this.queue.push(fragment(this.seq++, { dts, pts, duration, keyframe, data }))
    this.pump()
  }

  close (): void {
    this.queue.length = 0
    try { URL.revokeObjectURL(this.video.src) } catch {}
  }

  private pump (): void {
    const sb = this.sb
    if (sb == null || sb.updating || this.failed != null) return
    const next = this.queue.shift()
    if (next == null) return
    try {
      sb.appendBuffer(next as Uint8Array<ArrayBuffer>)
    } catch (e) {
      this.fail(`append: ${String(e)}`)
    }
  }

  /** Keeps playback at the newest buffered frame (live), and trims what was played. */
  private liveEdge (): void {
    const b = this.video.buffered
    if (b.length === 0) return
    const end = b.end(b.length - 1)
    if (end - this.video.currentTime > 0.3) this.video.currentTime = Math.max(b.start(b.length - 1), end - 0.05)
    if (this.video.paused) void this.video.play().catch(() => {})
    const sb = this.sb
    if (sb != null && !sb.updating && this.video.currentTime - b.start(0) > 30) {
      try { sb.remove(b.start(0), this.video.currentTime - 10) } catch {}
    }
  }

  private fail (why: string): void {
    if (this.failed != null) return
    this.failed = why
    this.onError(why)
  }
}
