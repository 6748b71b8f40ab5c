// Byte helpers shared by the ports of the node's pure code (no IO).

const utf8 = new TextEncoder()

/** UTF-8 bytes of `s`. */
export function text (s: string): Uint8Array<ArrayBuffer> {
  return utf8.encode(s) as Uint8Array<ArrayBuffer>
}

/** The parts one after another. */
export function concat (...parts: Uint8Array[]): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0))
  let at = 0
  for (const p of parts) {
    out.set(p, at)
    at += p.length
  }
  return out
}

/** `v` as 8 bytes big-endian (an unsigned 64-bit field; negative values wrap like Rust's `as`). */
export function u64be (v: bigint | number): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(8)
  new DataView(out.buffer).setBigUint64(0, BigInt.asUintN(64, BigInt(v)))
  return out
}

/** `v` as 8 bytes big-endian, two's complement (a signed 64-bit field). */
export function i64be (v: bigint | number): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(8)
  new DataView(out.buffer).setBigInt64(0, BigInt.asIntN(64, BigInt(v)))
  return out
}

export function toHex (b: Uint8Array): string {
  return Array.from(b, x => x.toString(16).padStart(2, '0')).join('')
}

export function fromHex (s: string): Uint8Array<ArrayBuffer> {
  if (s.length % 2 !== 0 || /[^0-9a-f]/i.test(s)) throw new Error('not hex')
  const out = new Uint8Array(s.length / 2)
  for (let i = 0; i < out.length; i++) out[i] = parseInt(s.slice(2 * i, 2 * i + 2), 16)
  return out
}

/** Whether two byte strings are equal, in time independent of where they differ. */
export function equalBytes (a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false
  let diff = 0
  for (let i = 0; i < a.length; i++) diff |= (a[i] as number) ^ (b[i] as number)
  return diff === 0
}
