// The page's bound on grant pushes: a member gets PUSHES_PER_MINUTE a minute, each
// member its own window.

import assert from 'node:assert/strict'
import { test } from 'node:test'
import { PUSHES_PER_MINUTE, PushBound } from '../src/inbound.ts'

test('grant pushes are bounded per member and minute', () => {
  const b = new PushBound()
  for (let i = 0; i < PUSHES_PER_MINUTE; i++) assert.ok(b.allow('a', 1000 + i))
  assert.ok(!b.allow('a', 2000), 'one too many within the minute')
  assert.ok(b.allow('b', 2000), 'another member has its own window')
  assert.ok(b.allow('a', 61_000), 'a new minute')
})
