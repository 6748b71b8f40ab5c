// The web app's ports of the node's pure code, checked byte for byte against vectors the
// node's own code made (vectors.json, written by tests/tests/web_vectors.rs).

import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { test } from 'node:test'
import { publicKeyFromRaw } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey, peerIdFromString } from '@libp2p/peer-id'
import { fromHex, toHex } from '../src/bytes.ts'
import { importVerifyKey, signedBytes, verifyKeyframe } from '../src/fresh.ts'
import { CameraEvent, EventItem, EventsRequest, EventState, FrameHeader, MemberRole, Signed } from '../src/gen/camesh.ts'
import { fromWebCrypto, generateWebCrypto } from '../src/identity.ts'
import { parseInvite } from '../src/invite.ts'
import { verifyCert } from '../src/cert.ts'
import { verifyGrant } from '../src/grant.ts'
import { checkEvent, word } from '../src/events.ts'
import { MediaKey, aad } from '../src/media.ts'
import { MemberHello, certHello, dialerProof, frame } from '../src/member.ts'
import { ed25519OfPeer, peerFromBytes } from '../src/peer.ts'
import { check, proofKey, prove } from '../src/proof.ts'
import type { CertInfo } from '../src/cert.ts'

interface HeaderJson {
  sequence: string
  pts_90k: string
  dts_90k: string
  capture_unix_us: string
  keyframe: boolean
  key_epoch: string
  skipped_before: number
  camera_signature_hex: string
}

const v = JSON.parse(readFileSync(new URL('./vectors.json', import.meta.url), 'utf8'))

function header (h: HeaderJson): FrameHeader {
  return {
    sequence: BigInt(h.sequence),
    pts_90k: BigInt(h.pts_90k),
    dts_90k: BigInt(h.dts_90k),
    captureUnixUs: BigInt(h.capture_unix_us),
    keyframe: h.keyframe,
    keyEpoch: BigInt(h.key_epoch),
    skippedBefore: h.skipped_before,
    newKey: new Uint8Array(0),
    cameraSignature: fromHex(h.camera_signature_hex)
  }
}

test('frames the node sealed open in the page, and their headers decode and encode alike', async () => {
  assert.ok(v.frames.length >= 3)
  for (const f of v.frames) {
    const h = header(f.header)
    const pb = fromHex(f.header_pb_hex)
    assert.deepEqual(FrameHeader.decode(pb), h, f.name)
    assert.equal(toHex(FrameHeader.encode(h)), f.header_pb_hex, f.name)
    assert.equal(aad(h).length, 41)
    const key = await MediaKey.import(BigInt(f.epoch), fromHex(f.key_hex))
    const pt = await key.open(h, fromHex(f.sealed_hex))
    assert.equal(toHex(pt), f.plaintext_hex, f.name)
  }
})

test('a tampered frame, header field or wrong key is refused', async () => {
  const f = v.frames[0]
  const h = header(f.header)
  const key = await MediaKey.import(BigInt(f.epoch), fromHex(f.key_hex))
  const sealed = fromHex(f.sealed_hex)
  for (let bit = 0; bit < sealed.length * 8; bit += 97) {
    const bad = sealed.slice()
    bad[bit >> 3]! ^= 1 << (bit & 7)
    await assert.rejects(key.open(h, bad), /failed authentication/)
  }
  const bent: Array<Partial<FrameHeader>> = [
    { sequence: h.sequence + 1n }, { pts_90k: h.pts_90k + 1n }, { dts_90k: h.dts_90k + 1n },
    { captureUnixUs: h.captureUnixUs + 1n }, { keyframe: !h.keyframe }
  ]
  for (const change of bent) {
    await assert.rejects(key.open({ ...h, ...change }, sealed), /failed authentication/, JSON.stringify(Object.keys(change)))
  }
  // skipped_before is per subscriber and outside the associated data.
  const resent: FrameHeader = { ...h, skippedBefore: 99 }
  assert.equal(toHex(await key.open(resent, sealed)), f.plaintext_hex)
  await assert.rejects(key.open({ ...h, keyEpoch: 4n }, sealed), /epoch/)
  const other = await MediaKey.import(BigInt(f.epoch), new Uint8Array(32))
  await assert.rejects(other.open(h, sealed), /failed authentication/)
  await assert.rejects(MediaKey.import(1n, new Uint8Array(31)), /31 bytes/)
})

test('a keyframe the camera signed verifies with the key in its peer id, and nothing else does', async () => {
  const k = v.keyframe
  const h = FrameHeader.decode(fromHex(k.header_pb_hex))
  const sealed = fromHex(k.sealed_hex)
  assert.equal(toHex(signedBytes(k.camera, h, sealed)), k.signed_bytes_hex)
  const peer = peerIdFromString(k.signer_peer_id)
  const raw = ed25519OfPeer(peer)
  assert.ok(raw != null)
  assert.equal(toHex(raw), k.signer_public_hex)
  const origin = await importVerifyKey(raw)
  assert.equal(await verifyKeyframe(origin, k.camera, h, sealed), true)
  assert.equal(await verifyKeyframe(origin, 'depot-7/cam-3', h, sealed), false, 'another camera')
  assert.equal(await verifyKeyframe(origin, k.camera, { ...h, sequence: h.sequence + 1n }, sealed), false, 'another sequence')
  const badTag = sealed.slice()
  badTag[badTag.length - 1]! ^= 1
  assert.equal(await verifyKeyframe(origin, k.camera, h, badTag), false, 'another payload tag')
  assert.equal(await verifyKeyframe(origin, k.camera, { ...h, cameraSignature: new Uint8Array(0) }, sealed), false, 'unsigned')
  const stranger = await importVerifyKey(fromHex(v.proof.root_protobuf_hex).slice(4))
  assert.equal(await verifyKeyframe(stranger, k.camera, h, sealed), false, 'another signer')
})

test('fleet proofs are the node\'s, bound to their fleet, peers and direction', async () => {
  const p = v.proof
  const key = await proofKey(fromHex(p.root_protobuf_hex))
  const d = fromHex(p.dialer_peer_hex)
  const l = fromHex(p.listener_peer_hex)
  assert.equal(peerFromBytes(d).toString(), p.dialer_peer_id)
  assert.equal(toHex(await prove(key, 'dialer', d, l)), p.dialer_proof_hex)
  assert.equal(toHex(await prove(key, 'listener', l, d)), p.listener_proof_hex)
  assert.equal(await check(key, 'listener', l, d, fromHex(p.listener_proof_hex)), true)
  assert.equal(await check(key, 'dialer', l, d, fromHex(p.listener_proof_hex)), false, 'reflected')
  assert.equal(await check(key, 'listener', l, d, fromHex(p.listener_proof_hex).slice(1)), false, 'short')
  const other = await proofKey(fromHex(p.root_protobuf_hex.slice(0, -2) + '00'))
  assert.equal(await check(other, 'listener', l, d, fromHex(p.listener_proof_hex)), false, 'another fleet')
})

test('MemberHello messages encode to the node\'s bytes, framed as the node frames them', async () => {
  const m = v.member_hello
  const key = await proofKey(fromHex(m.root_protobuf_hex))
  const hello = await dialerProof(key, fromHex(m.dialer_peer_hex), fromHex(m.listener_peer_hex))
  assert.equal(toHex(hello), m.proof_hello_hex)
  assert.equal(toHex(frame(hello)), m.proof_hello_framed_hex)
  const cert = Signed.decode(fromHex(m.cert_signed_hex))
  assert.equal(toHex(certHello(cert)), m.cert_hello_hex)
  assert.equal(toHex(MemberHello.encode({ error: 'certificate expired' })), m.error_hello_hex)
  assert.equal(MemberHello.decode(fromHex(m.error_hello_hex)).error, 'certificate expired')
})

test('certificates an admin signed: accepted within its scope, refused beyond it, as the node decides', async () => {
  const a = v.admin_certs
  const root = fromHex(a.root_protobuf_hex)
  const page = peerFromBytes(fromHex(a.page_peer_hex))
  const now = BigInt(a.now_unix_s)
  const open = async (hex: string, at = now): Promise<CertInfo> => await verifyCert(Signed.decode(fromHex(hex)), root, 'depot', page, at)
  const info = await open(a.ok_hex)
  assert.equal(info.admin?.peer, a.admin_peer_id)
  assert.equal(info.admin?.name, 'depot-laptop')
  assert.equal(info.role, MemberRole.MEMBER_ROLE_VIEWER)
  await assert.rejects(open(a.too_long_hex), /beyond admin depot-laptop/)
  await assert.rejects(open(a.may_not_admit_hex), /may not admit/)
  // The admin's own certificate ends before the member's would.
  await assert.rejects(open(a.ok_hex, 1_765_500_001n), /expired/)
  // Another fleet's root, another holder.
  await assert.rejects(verifyCert(Signed.decode(fromHex(a.ok_hex)), fromHex(v.invite.root_protobuf_hex).slice(0, 4), 'depot', page, now))
  await assert.rejects(verifyCert(Signed.decode(fromHex(a.ok_hex)), root, 'depot', peerFromBytes(fromHex(v.member_hello.listener_peer_hex)), now), /not this page/)
})

test('an invite from the node parses, with its signature and expiry checked', async () => {
  const i = v.invite
  const info = await parseInvite(`  ${i.text}\n`, 1_765_000_000n)
  assert.equal(info.fleetId, i.fleet_id)
  assert.equal(toHex(info.token), i.token_hex)
  assert.equal(info.role, MemberRole.MEMBER_ROLE_VIEWER)
  assert.equal(info.name, i.name)
  assert.equal(info.expiresUnixS, BigInt(i.expires_unix_s))
  assert.equal(info.adminPeer.toString(), i.admin_peer_id)
  assert.deepEqual(info.adminAddrs.map(a => a.toString()), i.admin_addrs)
  assert.deepEqual(info.cameras, i.cameras)
  assert.equal(info.certValidS, BigInt(i.cert_valid_s))
  assert.equal(info.holder?.toString(), i.holder_peer_id)
  assert.equal(toHex(info.fleetRoot), i.root_protobuf_hex)
  await assert.rejects(parseInvite(i.text, BigInt(i.expires_unix_s) + 1n), /expired/)
  await assert.rejects(parseInvite('hello', 0n), /does not start with/)
  await assert.rejects(parseInvite('camesh-invite:zzzz0OIl', 0n), /malformed/)
  await assert.rejects(parseInvite(`camesh-invite:${'z'.repeat(40_000)}`, 0n), /too long/)
  // One changed character in the signed bytes: refused, however it decodes.
  const b58 = i.text.slice('camesh-invite:'.length) as string
  const at = Math.floor(b58.length / 2)
  const swapped = b58[at] === '2' ? '3' : '2'
  const bent = `camesh-invite:${b58.slice(0, at)}${swapped}${b58.slice(at + 1)}`
  await assert.rejects(parseInvite(bent, 0n), /signature|malformed/)
})

test('a non-extractable WebCrypto key is a libp2p Ed25519 key: peer id, signatures', async () => {
  const pair = await generateWebCrypto()
  assert.equal(pair.privateKey.extractable, false)
  await assert.rejects(crypto.subtle.exportKey('pkcs8', pair.privateKey))
  const key = await fromWebCrypto(pair)
  assert.throws(() => key.raw, /non-extractable/)
  const peer = peerIdFromPrivateKey(key)
  assert.equal(peer.type, 'Ed25519')
  assert.ok(peer.toString().startsWith('12D3KooW'))
  assert.ok(key.equals({ type: 'Ed25519', publicKey: publicKeyFromRaw(key.publicKey.raw) }))
  const msg = new TextEncoder().encode('noise static key')
  const sig = await key.sign(msg)
  assert.equal(await key.publicKey.verify(msg, sig), true, 'libp2p verifies what WebCrypto signed')
  assert.equal(await key.publicKey.verify(new TextEncoder().encode('other'), sig), false)
})

test('grants: the page accepts and refuses exactly what the node does', async () => {
  const g = v.grants
  const root = fromHex(g.root_protobuf_hex)
  const page = peerFromBytes(fromHex(g.page_peer_hex))
  const now = BigInt(g.now_unix_s)
  const names = Object.keys(g.cases)
  assert.ok(names.length >= 7)
  for (const name of names) {
    const c = g.cases[name]
    const got = await verifyGrant(Signed.decode(fromHex(c.hex)), root, 'depot', page, now).then(() => null, (e: unknown) => String(e))
    assert.equal(got == null, c.ok, `${name}: the node says ${c.ok ? 'ok' : c.error}, the page ${got ?? 'ok'}`)
  }
  // After its end, any of them is refused.
  await assert.rejects(verifyGrant(Signed.decode(fromHex(g.cases.root.hex)), root, 'depot', page, 1_765_086_401n), /expired/)
})

test('camera events: the codecs write the node\'s bytes, and the page shows and refuses exactly what the node does', async () => {
  const ev = v.events
  const root = fromHex(ev.root_protobuf_hex)
  const now = BigInt(ev.now_unix_s)
  // device.proto's codecs, generated with camesh.proto's, read and write prost's bytes.
  for (const hex of [ev.motion_body_hex, ev.onvif_body_hex]) assert.equal(toHex(CameraEvent.encode(CameraEvent.decode(fromHex(hex)))), hex)
  const motion = CameraEvent.decode(fromHex(ev.motion_body_hex))
  assert.equal(motion.state, EventState.EVENT_STATE_START)
  assert.equal(motion.area, 0.25)
  const req = EventsRequest.encode({
    cameraId: 'cam1',
    grant: fromHex(ev.grant_hex),
    fromUnixUs: 1_765_009_940_000_000n,
    toUnixUs: 0n,
    follow: true,
    kinds: [],
    maxEvents: 0,
    userAgent: 'camesh-web/0.1'
  })
  assert.equal(toHex(req), ev.request_hex)
  const it = ev.items
  assert.equal(EventItem.decode(fromHex(it.done)).done?.sent, 3)
  assert.equal(EventItem.decode(fromHex(it.done)).done?.more, true)
  assert.match(EventItem.decode(fromHex(it.refused)).refused ?? '', /no events of camera "cam1"/)
  assert.equal(toHex(Signed.encode(EventItem.decode(fromHex(it.camera_cert)).cameraCert as Signed)), ev.cases.motion_start.cert_hex)
  assert.equal(toHex(Signed.encode(EventItem.decode(fromHex(it.event)).event as Signed)), ev.cases.motion_start.signed_hex)
  for (const hex of Object.values(it) as string[]) assert.equal(toHex(EventItem.encode(EventItem.decode(fromHex(hex)))), hex)
  const names = Object.keys(ev.cases)
  assert.ok(names.length >= 8)
  for (const name of names) {
    const c = ev.cases[name]
    const from = peerFromBytes(fromHex(c.from_peer_hex))
    // As the page does: the node's certificate checked when it joined, then the event.
    const got = await verifyCert(Signed.decode(fromHex(c.cert_hex)), root, 'depot', from, now)
      .then(async cert => await checkEvent(Signed.decode(fromHex(c.signed_hex)), ev.camera, from, cert))
      .then(e => ({ e }), (err: unknown) => ({ err: String(err) }))
    assert.equal('e' in got, c.ok, `${name}: the node says ${c.ok ? 'ok' : c.error}, the page ${'err' in got ? got.err : 'ok'}`)
    if ('e' in got) {
      assert.equal(got.e.kind, c.kind, name)
      assert.equal(word(got.e.state), c.state, name)
      assert.equal(got.e.unixUs.toString(), c.unix_us, name)
    }
  }
  // No certificate at all (a node the page never checked): refused.
  const ok = ev.cases.motion_start
  await assert.rejects(checkEvent(Signed.decode(fromHex(ok.signed_hex)), 'cam1', peerFromBytes(fromHex(ok.from_peer_hex)), undefined), /no checked certificate/)
})
