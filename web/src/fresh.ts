// Camera-signed keyframes: a port of `signed_bytes` and the signature check of
// node/src/stream/fresh.rs. The camera's node signs every live keyframe with its Ed25519
// node key over the camera id, sequence, pts, capture time, key epoch and the payload's
// AEAD tag; the page verifies it with the public key inlined in the camera node's peer id.

import { concat, i64be, text, u64be } from './bytes.ts'
import { TAG_LEN } from './media.ts'
import type { FrameHeader } from './gen/camesh.ts'

const CONTEXT = text('camesh/fresh/1\0')

export type SignedHeader = Pick<FrameHeader, 'sequence' | 'pts_90k' | 'captureUnixUs' | 'keyEpoch'>

/** The bytes the camera signs for a keyframe. */
export function signedBytes (camera: string, h: SignedHeader, sealed: Uint8Array): Uint8Array<ArrayBuffer> {
  const tag = sealed.subarray(Math.max(0, sealed.length - TAG_LEN))
  const id = text(camera)
  // Camera ids are validated short; a longer one is cut (and then never verifies).
  const n = Math.min(id.length, 0xffff)
  const len = new Uint8Array([n >> 8, n & 0xff])
  return concat(CONTEXT, len, id.subarray(0, n), u64be(h.sequence), u64be(h.pts_90k),
    i64be(h.captureUnixUs), u64be(h.keyEpoch), tag)
}

/** A camera node's Ed25519 public key (32 raw bytes) as a WebCrypto verifying key. */
export async function importVerifyKey (raw: Uint8Array<ArrayBuffer>): Promise<CryptoKey> {
  return await crypto.subtle.importKey('raw', raw, { name: 'Ed25519' }, true, ['verify'])
}

/** Whether a keyframe carries the camera node's valid signature (an empty one never is). */
export async function verifyKeyframe (origin: CryptoKey, camera: string, h: SignedHeader & Pick<FrameHeader, 'cameraSignature'>, sealed: Uint8Array): Promise<boolean> {
  if (h.cameraSignature.length === 0) return false
  try {
    return await crypto.subtle.verify('Ed25519', origin, h.cameraSignature, signedBytes(camera, h, sealed))
  } catch {
    return false
  }
}

/** Sequence numbers of audio frames have this bit set (node/src/media/mod.rs `AUDIO_SEQUENCE_BIT`): audio and video are numbered apart. */
export const AUDIO_SEQUENCE_BIT = 1n << 63n

/** Whether a frame with this sequence number is audio. */
export function isAudio (sequence: bigint): boolean {
  return (sequence & AUDIO_SEQUENCE_BIT) !== 0n
}

/**
 * The node's rule for live audio frames (node/src/stream/fresh.rs `Freshness::check`,
 * audio): captured within `maxAgeUs` (live age plus skew) and at most `skewUs` ahead,
 * never a keyframe, only after a signed video keyframe, and in order on the audio's own
 * sequence space (video numbers never compare with it: against the video's, every audio
 * frame would look newer and every later video frame "rewound").
 */
export class AudioOrder {
  last?: bigint

  constructor (private readonly maxAgeUs: bigint, private readonly skewUs: bigint) {}

  /** Why `h` is refused, or undefined (then it is the last audio frame). */
  check (h: Pick<FrameHeader, 'sequence' | 'keyframe' | 'captureUnixUs'>, keyframeSeen: boolean, nowUs: bigint): string | undefined {
    const seq = h.sequence & (AUDIO_SEQUENCE_BIT - 1n)
    const age = nowUs - h.captureUnixUs
    if (age > this.maxAgeUs) return `audio frame #${seq} was captured ${age / 1000n} ms ago (live allows ${this.maxAgeUs / 1000n} ms): replayed or held back`
    if (-age > this.skewUs) return `audio frame #${seq} claims a capture time ${-age / 1000n} ms in the future`
    if (!isAudio(h.sequence)) return `frame #${h.sequence} is not audio`
    if (!keyframeSeen || h.keyframe) return `audio frame #${seq} before any signed keyframe`
    if (this.last != null && h.sequence <= this.last) return `audio frame #${seq} after #${this.last & (AUDIO_SEQUENCE_BIT - 1n)}: the sequence went back`
    this.last = h.sequence
    return undefined
  }
}
