// The events badge's state (badges.ts): start until the end of the same kind, pulses
// flash for PULSE_MS when live, onvif kinds shortened, bounded.

import assert from 'node:assert/strict'
import { test } from 'node:test'
import { Badge, label, MAX_KINDS, PULSE_MS } from '../src/badges.ts'

const MOTION = 'motion'
const ONVIF = 'onvif/tns1:RuleEngine/CellMotionDetector/Motion'

test('kinds for people: motion as is, an ONVIF topic by its last segment', () => {
  assert.equal(label(MOTION), 'motion')
  assert.equal(label(ONVIF), 'Motion')
  assert.equal(label('onvif/tns1:VideoSource/MotionAlarm'), 'MotionAlarm')
  assert.equal(label('onvif/tns1:Device'), 'Device')
  assert.equal(label('onvif/'), 'onvif/')
})

test('a start shows until its own kind ends; other kinds do not end it', () => {
  const b = new Badge()
  assert.equal(b.view(0).visible, false)
  b.apply({ kind: MOTION, state: 'start', unixUs: 1_000_000 }, 0, true)
  let v = b.view(10)
  assert.equal(v.visible, true)
  assert.deepEqual(v.active, [MOTION])
  assert.equal(v.text, 'motion')
  assert.match(v.title, /motion since 1970-01-01T00:00:01.000Z/)
  b.apply({ kind: ONVIF, state: 'start', unixUs: 2_000_000 }, 20, true)
  b.apply({ kind: ONVIF, state: 'end', unixUs: 3_000_000 }, 30, true)
  v = b.view(40)
  assert.deepEqual(v.active, [MOTION])
  assert.match(v.title, /last event: onvif\/.* end at 1970-01-01T00:00:03.000Z/)
  // An end older than the start it would close is out of order: it changes nothing.
  b.apply({ kind: MOTION, state: 'end', unixUs: 500_000 }, 50, true)
  assert.equal(b.view(60).visible, true)
  b.apply({ kind: MOTION, state: 'end', unixUs: 4_000_000 }, 70, true)
  assert.equal(b.view(80).visible, false)
  // An end with no start (its start was before the past asked for): nothing to hide.
  b.apply({ kind: MOTION, state: 'end', unixUs: 5_000_000 }, 90, true)
  assert.equal(b.view(100).visible, false)
})

test('a live pulse flashes for PULSE_MS; a past one does not', () => {
  const b = new Badge()
  b.apply({ kind: 'onvif/tns1:Device/Trigger/DigitalInput', state: 'pulse', unixUs: 1 }, 1000, false)
  assert.equal(b.view(1000).visible, false)
  assert.equal(b.last?.state, 'pulse')
  b.apply({ kind: 'onvif/tns1:Device/Trigger/DigitalInput', state: 'pulse', unixUs: 2 }, 1000, true)
  let v = b.view(1000 + PULSE_MS - 1)
  assert.equal(v.visible, true)
  assert.equal(v.text, 'DigitalInput')
  assert.deepEqual(v.pulsing, ['onvif/tns1:Device/Trigger/DigitalInput'])
  assert.deepEqual(v.active, [])
  v = b.view(1000 + PULSE_MS)
  assert.equal(v.visible, false)
  assert.deepEqual(v.pulsing, [])
  // A pulse of an active kind flashes it; the words do not repeat.
  b.apply({ kind: MOTION, state: 'start', unixUs: 3 }, 5000, true)
  b.apply({ kind: MOTION, state: 'pulse', unixUs: 4 }, 5000, true)
  v = b.view(5001)
  assert.equal(v.text, 'motion')
  assert.deepEqual(v.pulsing, [MOTION])
  b.clear()
  assert.equal(b.view(5002).visible, false)
  assert.equal(b.last, undefined)
})

test('kinds held are bounded, the oldest dropped first', () => {
  const b = new Badge()
  for (let i = 0; i < MAX_KINDS + 5; i++) b.apply({ kind: `k${i}`, state: 'start', unixUs: i }, 0, true)
  const v = b.view(0)
  assert.equal(v.active.length, MAX_KINDS)
  assert.equal(v.active[0], 'k5')
  // Unknown states change nothing but the last event.
  b.apply({ kind: 'k20', state: '?', unixUs: 99 }, 0, true)
  assert.equal(b.view(0).active.length, MAX_KINDS)
})
