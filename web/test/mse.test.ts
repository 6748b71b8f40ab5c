// The MSE fallback's fragmented MP4: boxes nest with consistent sizes, and each
// fragment's `trun` data offset points at its `mdat` payload.

import assert from 'node:assert/strict'
import { test } from 'node:test'
import { fragment, initSegment } from '../src/mse.ts'

interface Box { type: string, start: number, size: number, children: Box[] }

const CONTAINERS = new Set(['moov', 'trak', 'mdia', 'minf', 'stbl', 'mvex', 'moof', 'traf', 'dinf'])

function parse (b: Uint8Array, start = 0, end = b.length): Box[] {
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength)
  const out: Box[] = []
  let at = start
  while (at < end) {
    const size = v.getUint32(at)
    assert.ok(size >= 8 && at + size <= end, `box at ${at} of size ${size} overruns ${end}`)
    const type = new TextDecoder().decode(b.subarray(at + 4, at + 8))
    out.push({ type, start: at, size, children: CONTAINERS.has(type) ? parse(b, at + 8, at + size) : [] })
    at += size
  }
  return out
}

function find (boxes: Box[], path: string[]): Box | undefined {
  const [first, ...rest] = path
  const b = boxes.find(x => x.type === first)
  return b == null || rest.length === 0 ? b : find(b.children, rest)
}

test('the init segment is ftyp + moov with one avc1 track and its avcC', () => {
  const avcC = new Uint8Array([1, 0x64, 0, 0x1f, 0xff, 0xe1, 0, 4, 0x67, 0x64, 0, 0x1f, 1, 0, 1, 0x68])
  const init = initSegment(avcC, 640, 360)
  const top = parse(init)
  assert.deepEqual(top.map(b => b.type), ['ftyp', 'moov'])
  for (const p of [['moov', 'mvhd'], ['moov', 'trak', 'tkhd'], ['moov', 'trak', 'mdia', 'minf', 'stbl', 'stsd'], ['moov', 'mvex', 'trex']]) {
    assert.ok(find(top, p) != null, `no ${p.join('/')}`)
  }
  const stsd = find(top, ['moov', 'trak', 'mdia', 'minf', 'stbl', 'stsd'])
  assert.ok(stsd != null)
  const body = init.subarray(stsd.start, stsd.start + stsd.size)
  const at = new TextDecoder('latin1').decode(body).indexOf('avcC')
  assert.ok(at > 0, 'avcC inside stsd')
  assert.deepEqual([...body.subarray(at + 4, at + 4 + avcC.length)], [...avcC])
})

test('a fragment carries one sample, its trun pointing at the mdat payload', () => {
  const data = new Uint8Array([0, 0, 0, 3, 0x65, 0x88, 0x84])
  const f = fragment(7, { dts: 900_000n, pts: 903_000n, duration: 3000, keyframe: true, data })
  const top = parse(f)
  assert.deepEqual(top.map(b => b.type), ['moof', 'mdat'])
  const trun = find(top, ['moof', 'traf', 'trun'])
  assert.ok(trun != null)
  const v = new DataView(f.buffer, f.byteOffset)
  // version/flags, sample_count, data_offset, duration, size, flags, composition offset
  assert.equal(v.getUint32(trun.start + 12), 1)
  const offset = v.getUint32(trun.start + 16)
  assert.equal(v.getUint32(trun.start + 20), 3000)
  assert.equal(v.getUint32(trun.start + 24), data.length)
  assert.equal(v.getUint32(trun.start + 28), 0x02000000)
  assert.equal(v.getInt32(trun.start + 32), 3000)
  assert.deepEqual([...f.subarray(offset, offset + data.length)], [...data])
  const tfdt = find(top, ['moof', 'traf', 'tfdt'])
  assert.ok(tfdt != null)
  assert.equal(v.getBigUint64(tfdt.start + 12), 900_000n)
  assert.equal(v.getUint32((find(top, ['moof', 'mfhd'])?.start ?? 0) + 12), 7)
})
