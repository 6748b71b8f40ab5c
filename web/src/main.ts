// The page: shows the node identity (made once, kept in IndexedDB), starts the libp2p
// node, reads an invite (pasted, or from the link `mesh fleet invite` prints: the
// invite is the URL's fragment, which no server sees), checks its signature and expiry,
// and redeems it with its admin node over WebRTC-direct (`/camesh/admin/1`): the page
// keeps the certificate it is issued. The camera grid is a placeholder until the media
// protocol is wired in.
//
// `window.camesh` holds what the page did (for tests and curious users); with `?report`
// in its URL the page also POSTs it, as JSON, to `report` on its own origin after each
// change (the tests' static server reads it; a gateway answers 404 and nothing else).

import { loadMembership, redeemInvite, redeemTimes } from './enroll.ts'
import { loadIdentity } from './identity.ts'
import { parseInvite, PREFIX } from './invite.ts'
import { dialable, startNode } from './net.ts'
import { Grid, GRANT_PREFIX } from './grid.ts'
import type { CertInfo, Membership } from './enroll.ts'
import type { GridState } from './grid.ts'
import type { InviteInfo } from './invite.ts'
import { Inbound } from './inbound.ts'
import type { Identity } from './identity.ts'
import type { Libp2p } from '@libp2p/interface'

/** What the page did, for tests (`window.camesh`). */
interface PageState {
  peerId?: string
  storage?: string
  libp2p?: string
  phase: string
  member?: { fleet: string, role: string, name: string, notAfterUnixS: string, cameras: string[] }
  error?: string
  redeemMs?: number
  redeemTimes?: typeof redeemTimes
  grid?: GridState
  serviceWorker?: string
  /** Where members reach this page: its circuit addresses through the relays it holds a reservation on. */
  reachableAt?: string[]
  /** Grants members handed it over the mesh, and the last one it refused. */
  grantsReceived?: number
  grantRefusal?: string
}

const state: PageState = { phase: 'loading' }
;(globalThis as unknown as { camesh: PageState }).camesh = state
const reporting = new URLSearchParams(location.search).has('report')
if (reporting) setInterval(report, 1000)

function report (): void {
  if (!reporting) return
  fetch('report', { method: 'POST', body: JSON.stringify(state), headers: { 'content-type': 'application/json' } }).catch(() => {})
}

function showMember (info: CertInfo): void {
  state.member = {
    fleet: info.fleetId,
    role: info.role.replace('MEMBER_ROLE_', '').toLowerCase(),
    name: info.name,
    notAfterUnixS: info.notAfterUnixS.toString(),
    cameras: info.cameras
  }
  document.body.classList.add('member')
  const m = el('membership')
  m.textContent = `${state.member.role} "${info.name}" in fleet ${info.fleetId}, until ${new Date(Number(info.notAfterUnixS) * 1000).toISOString()}`
  m.dataset.state = 'ready'
}

function el<T extends HTMLElement> (id: string): T {
  const e = document.getElementById(id)
  if (e == null) throw new Error(`the page lacks #${id}`)
  return e as T
}

function status (text: string, st: 'busy' | 'ready' | 'error'): void {
  const s = el('status')
  s.textContent = text
  s.dataset.state = st
  state.phase = text
  if (st === 'error') state.error = text
  report()
}

function row (dl: HTMLElement, term: string, value: string): void {
  const dt = document.createElement('dt')
  dt.textContent = term
  const dd = document.createElement('dd')
  dd.textContent = value
  dl.append(dt, dd)
}

function showInvite (info: InviteInfo, node: Libp2p | undefined): void {
  const out = el('invite-result')
  out.replaceChildren()
  const dl = document.createElement('dl')
  row(dl, 'fleet', info.fleetId)
  row(dl, 'role', String(info.role))
  row(dl, 'name', info.name)
  row(dl, 'admin node', info.adminPeer.toString())
  row(dl, 'addresses', info.adminAddrs.map(a => a.toString()).join(' ') || '(none)')
  row(dl, 'expires', new Date(Number(info.expiresUnixS) * 1000).toISOString())
  if (info.holder != null) row(dl, 'only for', info.holder.toString())
  out.append(dl)
  const addrs = dialable(info.adminAddrs)
  if (node == null || addrs.length === 0) {
    const p = document.createElement('p')
    p.textContent = 'The invite lists no WebRTC-direct address of its admin node: this page cannot reach it yet.'
    out.append(p)
    return
  }
  status(`redeeming the invite with the admin node ${info.adminPeer.toString()}...`, 'busy')
  const t0 = performance.now()
  redeemInvite(node, info).then(
    cert => {
      state.redeemMs = Math.round(performance.now() - t0)
      state.redeemTimes = { ...redeemTimes }
      showMember(cert)
      status(`joined fleet ${cert.fleetId} as ${state.member?.role ?? ''} "${cert.name}"`, 'ready')
      loadMembership(node.peerId).then(k => { if (k != null) void startGrid(node, k.m) }, () => {})
    },
    (e: unknown) => status(`could not join: ${e instanceof Error ? e.message : String(e)}`, 'error')
  )
}

/**
 * The link's other parts (joined by '&'): `camesh-grant:...`, `peer=<addr>`,
 * `watch=<camera>`, `via=<peer id>` (watch through that peer), `play=<camera>`,
 * `nvr=<peer id>`, `at=<Unix ms>` (play a recording from that time), `sound=<camera>`
 * (that tile's sound on from the start: where the browser lets a page play sound before
 * a tap, e.g. Chromium's `--autoplay-policy=no-user-gesture-required`; elsewhere the
 * AudioContext waits, and a tap on the tile's Sound button starts it).
 */
let pending: string[] = []
let grid: Grid | undefined

async function startGrid (node: Libp2p, m: Membership): Promise<void> {
  grid = new Grid(node, m, el('grid'), report)
  await grid.load()
  state.grid = grid.state
  // Members reach the page through its relay reservation: grants arrive over the mesh.
  const g = grid
  const inbound = new Inbound(node, m, async s => { await g.keepGrant(s) })
  await inbound.start()
  const reachable = (): void => {
    state.reachableAt = node.getMultiaddrs().map(a => a.toString()).filter(a => a.includes('/p2p-circuit'))
    state.grantsReceived = inbound.received
    state.grantRefusal = inbound.lastRefusal
  }
  node.addEventListener('self:peer:update', () => { reachable(); report() })
  setInterval(reachable, 1000)
  let watch: string | undefined
  let via: string | undefined
  let play: string | undefined
  let at: number | undefined
  let nvr: string | undefined
  for (const part of pending) {
    try {
      if (part.startsWith(GRANT_PREFIX)) await grid.addGrant(part)
      else if (part.startsWith('peer=')) await grid.addPeer(part.slice(5))
      else if (part.startsWith('watch=')) watch = part.slice(6)
      else if (part.startsWith('via=')) via = part.slice(4)
      else if (part.startsWith('play=')) play = part.slice(5)
      else if (part.startsWith('at=')) at = Number(part.slice(3))
      else if (part.startsWith('nvr=')) nvr = part.slice(4)
      else if (part.startsWith('sound=')) grid.setSound(part.slice(6), true)
    } catch (e) {
      grid.state.errors.push(e instanceof Error ? e.message : String(e))
    }
  }
  pending = []
  const started = performance.now()
  await grid.refresh()
  // A camera named in the link that no peer has heard of yet (it came up a moment ago,
  // its announcement is on its way): ask again, a few times, a second apart.
  for (let i = 0; i < 5 && watch != null && !grid.state.cameras.includes(watch); i++) {
    await new Promise(resolve => setTimeout(resolve, 1000))
    await grid.refresh()
  }
  if (watch != null) await grid.watch(watch, via == null ? undefined : grid.peerAddr(via), 'main', started)
  const nvrAddr = nvr == null ? undefined : grid.peerAddr(nvr)
  if (play != null && nvrAddr != null) {
    await grid.playback(play, nvrAddr, (at ?? Date.now() - 60_000) * 1000, performance.now()).catch((e: unknown) => {
      grid?.state.errors.push(`playback: ${e instanceof Error ? e.message : String(e)}`)
    })
  }
}

function readInvite (text: string, node: Libp2p | undefined): void {
  parseInvite(text, BigInt(Math.floor(Date.now() / 1000))).then(
    info => showInvite(info, node),
    (e: unknown) => {
      const msg = `not a valid invite: ${e instanceof Error ? e.message : String(e)}`
      el('invite-result').textContent = msg
      status(msg, 'error')
    }
  )
}

async function main (): Promise<void> {
  status('loading the node key...', 'busy')
  let id: Identity
  try {
    id = await loadIdentity()
  } catch (e) {
    status(`no node key: ${String(e)} (this page needs IndexedDB and WebCrypto)`, 'error')
    return
  }
  const peer = el('peer-id')
  peer.textContent = id.peerId.toString()
  state.peerId = id.peerId.toString()
  state.storage = id.storage
  peer.dataset.state = 'ready'
  el('key-storage').textContent = id.storage === 'webcrypto-non-extractable'
    ? 'Ed25519 in WebCrypto, non-extractable, kept in IndexedDB'
    : 'Ed25519 in script memory (this browser has no WebCrypto Ed25519), kept in IndexedDB'
  // A link: the invite, grants, peers and a camera to watch are the fragment. Take it
  // out of the address bar and history first.
  const parts = decodeURIComponent(location.hash.slice(1)).split('&').filter(p => p !== '')
  if (parts.length > 0) history.replaceState(null, '', location.pathname + location.search)
  const invite = parts.find(p => p.startsWith(PREFIX))
  pending = parts.filter(p => !p.startsWith(PREFIX))
  let node: Libp2p | undefined
  try {
    node = await startNode(id.privateKey)
    if (!node.peerId.equals(id.peerId)) throw new Error('libp2p derived another peer id')
    el('node').textContent = `libp2p ${node.status}, WebRTC-direct dialer`
    state.libp2p = node.status
    const kept = await loadMembership(id.peerId)
    if (kept != null) {
      showMember(kept.info)
      status(`member of fleet ${kept.info.fleetId}`, 'ready')
      if (invite == null) void startGrid(node, kept.m)
    } else {
      status('ready: paste an invite to join a fleet', 'ready')
    }
  } catch (e) {
    el('node').textContent = `libp2p failed to start: ${String(e)}`
    status('identity ready; libp2p failed to start', 'error')
  }
  const form = el<HTMLFormElement>('invite-form')
  form.addEventListener('submit', ev => {
    ev.preventDefault()
    readInvite(el<HTMLTextAreaElement>('invite').value, node)
  })
  el<HTMLFormElement>('grant-form').addEventListener('submit', ev => {
    ev.preventDefault()
    const text = el<HTMLTextAreaElement>('grant').value
    const p = grid?.addGrant(text).then(() => { el('grant-result').textContent = 'grant kept' })
    if (p == null) el('grant-result').textContent = 'join a fleet first'
    p?.catch((e: unknown) => { el('grant-result').textContent = String(e) })
  })
  el<HTMLFormElement>('peer-form').addEventListener('submit', ev => {
    ev.preventDefault()
    const text = el<HTMLInputElement>('peer').value
    const p = grid?.addPeer(text).then(async () => await grid?.refresh())
    if (p == null) el('grant-result').textContent = 'join a fleet first'
    p?.catch((e: unknown) => { el('grant-result').textContent = String(e) })
  })
  if (invite != null) {
    el<HTMLTextAreaElement>('invite').value = invite
    readInvite(invite, node)
  }
}

// The app shell (sw.js) for installing and starting offline; where there are no service
// workers (or on plain http other than localhost) the page simply runs without one.
if ('serviceWorker' in navigator) {
  navigator.serviceWorker.register('sw.js').then(
    () => { state.serviceWorker = 'registered' },
    (e: unknown) => { state.serviceWorker = `not registered: ${String(e)}` }
  )
}

void main()
