// Length-delimited messages on a libp2p stream, as camesh_proto::framing::LengthCodec
// reads and writes them: an unsigned LEB128 varint length, then that many bytes. Reads
// are bounded (a length over `max` is a protocol error, before any of it is buffered
// past the bound) and time-limited by the caller.

import { Uint8ArrayList } from 'uint8arraylist'
import { frame } from './member.ts'
import type { Stream } from '@libp2p/interface'

export class WireError extends Error {}

/** Reads framed messages from `stream`, one at a time. */
export class Framed {
  private readonly buf = new Uint8ArrayList()
  private readonly it: AsyncIterator<Uint8Array | Uint8ArrayList>
  private ended = false

  constructor (readonly stream: Stream, private max: number) {
    this.it = stream[Symbol.asyncIterator]()
  }

  /** A new bound for the messages that follow (frames after a stream's answer). */
  setMax (max: number): void {
    this.max = max
  }

  /** Writes one message (its varint length, then the bytes). */
  async send (body: Uint8Array): Promise<void> {
    if (!this.stream.send(frame(body, this.max))) await this.stream.onDrain()
  }

  /** The length prefix at the start of the buffer: [length, prefix bytes], or undefined when incomplete. */
  private header (): [number, number] | undefined {
    let n = 0
    let mul = 1
    for (let i = 0; i < Math.min(this.buf.length, 10); i++) {
      const b = this.buf.get(i)
      n += (b & 0x7f) * mul
      if ((b & 0x80) === 0) {
        if (n > this.max) throw new WireError(`a message of ${n} bytes is over the ${this.max}-byte bound`)
        return [n, i + 1]
      }
      mul *= 128
    }
    if (this.buf.length >= 10) throw new WireError('a length prefix longer than 10 bytes')
    return undefined
  }

  /** The next message, or null when the stream ended cleanly between messages. */
  async next (signal?: AbortSignal): Promise<Uint8Array | null> {
    for (;;) {
      const h = this.header()
      if (h != null && this.buf.length >= h[0] + h[1]) {
        const body = this.buf.subarray(h[1], h[1] + h[0])
        this.buf.consume(h[0] + h[1])
        return body
      }
      if (this.ended) {
        if (this.buf.length === 0) return null
        throw new WireError('the stream ended inside a message')
      }
      const step = this.it.next()
      const r = signal == null
        ? await step
        : await Promise.race([step, new Promise<never>((_resolve, reject) => {
          if (signal.aborted) reject(new WireError('timed out'))
          signal.addEventListener('abort', () => reject(new WireError('timed out')), { once: true })
        })])
      if (r.done === true) {
        this.ended = true
      } else {
        this.buf.append(r.value)
      }
    }
  }
}
