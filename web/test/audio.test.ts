// The page's audio (audio.ts, fresh.ts `AudioOrder`): the AAC codec string from the
// AudioSpecificConfig, the G.711 tables, the audio freshness rule on its own sequence
// space, and where a buffer is played against the video.

import assert from 'node:assert/strict'
import { test } from 'node:test'
import { AvSync, LEAD_MS, aacLcConfig, aacObjectType, alawSample, decodeG711, decoderConfig, place, ulawSample } from '../src/audio.ts'
import { AUDIO_SEQUENCE_BIT, AudioOrder, isAudio } from '../src/fresh.ts'

const cfg = (codec: string, sampleRate: number, channels: number, extradata = new Uint8Array(0)): Parameters<typeof decoderConfig>[0] =>
  ({ codec, sampleRate, channels, extradata })

test('the AAC object type comes from the AudioSpecificConfig, escapes included', () => {
  // AAC-LC, 48 kHz (index 3), mono: what ffmpeg's encoder and GStreamer's faac write.
  assert.equal(aacObjectType(new Uint8Array([0x11, 0x88])), 2)
  // HE-AAC (SBR, 5) at 24 kHz core, stereo.
  assert.equal(aacObjectType(new Uint8Array([0x2b, 0x10])), 5)
  // Escape: 31, then 6 bits: 32 + 10 = 42 (USAC).
  assert.equal(aacObjectType(new Uint8Array([0xf8 | 0b001, 0b01000000])), 42)
  assert.throws(() => aacObjectType(new Uint8Array([0x11])))
  assert.deepEqual([...aacLcConfig(48000, 1)], [0x11, 0x88])
  assert.deepEqual([...aacLcConfig(44100, 2)], [0x12, 0x10])
  assert.deepEqual([...aacLcConfig(8000, 1)], [0x15, 0x88])
  assert.throws(() => aacLcConfig(47000, 1))
})

test('decoder configurations use the WebCodecs registry names', () => {
  const asc = new Uint8Array([0x11, 0x88])
  const aac = decoderConfig(cfg('aac', 48000, 1, asc))
  assert.equal(aac.codec, 'mp4a.40.2')
  assert.deepEqual(aac.description, asc)
  assert.equal(aac.sampleRate, 48000)
  assert.equal(aac.numberOfChannels, 1)
  // No ASC in the accept: an AAC-LC one is made (raw access units need a description).
  assert.deepEqual([...(decoderConfig(cfg('aac', 16000, 1)).description as Uint8Array)], [0x14, 0x08])
  assert.equal(decoderConfig(cfg('pcma', 8000, 1)).codec, 'alaw')
  assert.equal(decoderConfig(cfg('pcmu', 8000, 1)).codec, 'ulaw')
  assert.equal(decoderConfig(cfg('opus', 48000, 2)).description, undefined)
  const head = new Uint8Array([...new TextEncoder().encode('OpusHead'), 1, 2, 0, 0, 0x80, 0xbb, 0, 0, 0, 0, 0])
  assert.deepEqual(decoderConfig(cfg('opus', 48000, 2, head)).description, head)
  assert.throws(() => decoderConfig(cfg('mp3', 44100, 2)), /not one the page knows/)
})

test('G.711 decodes as ITU-T G.711 (Sun g711.c values)', () => {
  // A-law: 0xd5/0x55 are the smallest steps either side of zero, 0xaa/0x2a the largest.
  assert.equal(alawSample(0xd5), 8)
  assert.equal(alawSample(0x55), -8)
  assert.equal(alawSample(0xaa), 32256)
  assert.equal(alawSample(0x2a), -32256)
  assert.equal(alawSample(0x80), 5504)
  // µ-law: 0xff/0x7f are zero, 0x80/0x00 the largest.
  assert.equal(ulawSample(0xff), 0)
  assert.equal(ulawSample(0x7f), 0)
  assert.equal(ulawSample(0x80), 32124)
  assert.equal(ulawSample(0x00), -32124)
  assert.equal(ulawSample(0xfe), 8)
  // Every code is symmetric about its sign bit and the magnitudes grow with the code.
  for (let b = 0; b < 128; b++) {
    assert.equal(alawSample(b | 0x80), -alawSample(b))
    assert.ok(ulawSample(b) === -ulawSample(b | 0x80), `µ-law ${b}`)
  }
  const a = Array.from({ length: 128 }, (_, i) => alawSample((i ^ 0x55) | 0x80))
  const u = Array.from({ length: 128 }, (_, i) => ulawSample(0xff - i))
  for (let i = 1; i < 128; i++) {
    assert.ok(a[i]! > a[i - 1]!, `A-law step ${i}`)
    assert.ok(u[i]! > u[i - 1]!, `µ-law step ${i}`)
  }
  // A stereo packet is interleaved; samples are scaled to -1..1.
  const [l, r] = decodeG711('pcma', new Uint8Array([0xaa, 0x2a, 0xd5, 0x55]), 2)
  assert.deepEqual([...l!], [32256 / 32768, 8 / 32768])
  assert.deepEqual([...r!], [-32256 / 32768, -8 / 32768])
  assert.equal(decodeG711('pcmu', new Uint8Array(160), 1)[0]!.length, 160)
})

test('audio freshness orders audio on its own sequence space, after a keyframe', () => {
  const A = AUDIO_SEQUENCE_BIT
  const t = 1_000_000_000_000n
  const o = new AudioOrder(70_000_000n, 60_000_000n)
  const f = (seq: bigint, capture = t, keyframe = false): { sequence: bigint, captureUnixUs: bigint, keyframe: boolean } =>
    ({ sequence: seq, captureUnixUs: capture, keyframe })
  assert.ok(isAudio(A | 5n))
  assert.ok(!isAudio(5n))
  assert.match(o.check(f(A), false, t) ?? '', /before any signed keyframe/)
  assert.equal(o.check(f(A), true, t), undefined)
  // Audio numbers are far above any video number, and video numbers below audio ones:
  // neither ever "rewinds" the other (the video's own rule lives in the Watch).
  assert.equal(o.check(f(A | 1n), true, t), undefined)
  assert.match(o.check(f(A | 1n), true, t) ?? '', /#1 after #1: the sequence went back/)
  assert.match(o.check(f(A), true, t) ?? '', /went back/)
  assert.equal(o.check(f(A | 7n), true, t), undefined, 'gaps are fine')
  assert.match(o.check(f(A | 8n, t, true), true, t) ?? '', /keyframe/)
  assert.match(o.check(f(A | 9n, t - 71_000_000n), true, t) ?? '', /captured 71000 ms ago/)
  assert.match(o.check(f(A | 9n, t + 61_000_000n), true, t) ?? '', /in the future/)
  assert.match(o.check(f(9n), true, t) ?? '', /not audio/)
  assert.equal(o.check(f(A | 9n), true, t), undefined)
  assert.equal(o.last, A | 9n)
})

test('audio is placed by the video drawn with the same pts, at the live edge', () => {
  const s = new AvSync()
  assert.equal(s.target(0), undefined, 'nothing before the first video frame')
  // The cached GOP is drawn in a burst: pts 0..900 ms drawn at 5000..5030 ms.
  for (let i = 0; i < 28; i++) s.video(i * 33_333, 5000 + i)
  // The edge is the burst's end: pts 900 ms was drawn at 5027 ms (offset 4127 ms).
  assert.equal(Math.round(s.target(900_000)! - LEAD_MS), 5027)
  // Live frames drawn 4127 ms after their pts keep it; a later, slower path is taken
  // only once the faster frames are more than 2 s old.
  s.video(1_000_000, 5127)
  s.video(1_033_333, 5260)
  assert.equal(Math.round(s.target(1_000_000)! - LEAD_MS), 5127)
  for (let i = 0; i < 80; i++) s.video(1_066_667 + i * 33_333, (1_066_667 + i * 33_333) / 1000 + 4227)
  assert.equal(Math.round(s.target(1_000_000)! - LEAD_MS), 5227)

  // Contiguous buffers follow each other; a late one is dropped, a far one too.
  assert.equal(place(10.02, 10, 9.9), 10)
  assert.equal(place(10.2, 10, 9.9), 10.2)
  assert.equal(place(9.8, undefined, 9.9), 'late')
  assert.equal(place(9.89, 9.91, 9.9), 9.91)
  assert.equal(place(12, undefined, 9.9), 'ahead')
})
