// End-to-end media decryption in the page: a port of `open` in node/src/auth/media_key.rs.
//
// A frame's payload is sealed once at the camera with AES-256-GCM under the key of its
// (camera, epoch): the nonce is 4 zero bytes and the frame's sequence number big-endian;
// the associated data is the 41 bytes below (sequence, pts, dts, capture time, keyframe
// flag, epoch), so no hop can change a protected header field; the tag is the full 16
// bytes at the end. `skipped_before` is per subscriber and deliberately outside.

import { i64be, u64be } from './bytes.ts'
import type { FrameHeader } from './gen/camesh.ts'

export const KEY_LEN = 32
export const TAG_LEN = 16

/** The header fields a frame's AEAD protects. */
export type ProtectedHeader = Pick<FrameHeader, 'sequence' | 'pts_90k' | 'dts_90k' | 'captureUnixUs' | 'keyframe' | 'keyEpoch'>

/** The associated data: exactly the 41 bytes the node's `aad()` builds. */
export function aad (h: ProtectedHeader): Uint8Array<ArrayBuffer> {
  const a = new Uint8Array(41)
  a.set(u64be(h.sequence), 0)
  a.set(u64be(h.pts_90k), 8)
  a.set(u64be(h.dts_90k), 16)
  a.set(i64be(h.captureUnixUs), 24)
  a[32] = h.keyframe ? 1 : 0
  a.set(u64be(h.keyEpoch), 33)
  return a
}

/** The 12-byte nonce of a frame: 4 zero bytes, then the sequence big-endian. */
export function nonce (sequence: bigint): Uint8Array<ArrayBuffer> {
  const n = new Uint8Array(12)
  n.set(u64be(sequence), 4)
  return n
}

export class MediaError extends Error {}

/** One epoch's media key, held as a non-extractable WebCrypto key that can only decrypt. */
export class MediaKey {
  private constructor (readonly epoch: bigint, private readonly key: CryptoKey) {}

  static async import (epoch: bigint, raw: Uint8Array<ArrayBuffer>): Promise<MediaKey> {
    if (raw.length !== KEY_LEN) throw new MediaError(`media key: ${raw.length} bytes, expected ${KEY_LEN}`)
    const key = await crypto.subtle.importKey('raw', raw, { name: 'AES-GCM' }, false, ['decrypt'])
    return new MediaKey(epoch, key)
  }

  /** Opens a sealed payload: fails if any byte of it or of the protected header changed. */
  async open (h: ProtectedHeader, sealed: Uint8Array<ArrayBuffer>): Promise<Uint8Array<ArrayBuffer>> {
    if (h.keyEpoch !== this.epoch) {
      throw new MediaError(`frame is for key epoch ${h.keyEpoch}, this key is epoch ${this.epoch}`)
    }
    try {
      const pt = await crypto.subtle.decrypt(
        { name: 'AES-GCM', iv: nonce(h.sequence), additionalData: aad(h), tagLength: TAG_LEN * 8 },
        this.key,
        sealed
      )
      return new Uint8Array(pt)
    } catch {
      throw new MediaError(`frame #${h.sequence} failed authentication (tampered or wrong key)`)
    }
  }
}
