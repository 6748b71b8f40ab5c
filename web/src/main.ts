// The page: shows the node identity (made once, kept in IndexedDB), starts the libp2p
// node, reads a pasted invite (signature and expiry checked here; the admin node checks
// the rest when it is redeemed) and, when the invite lists WebRTC-direct addresses,
// dials its admin node. The camera grid is a placeholder until the media protocol is
// wired in.

import { loadIdentity } from './identity.ts'
import { parseInvite } from './invite.ts'
import { dialable, startNode } from './net.ts'
import type { InviteInfo } from './invite.ts'
import type { Identity } from './identity.ts'
import type { Libp2p } from '@libp2p/interface'

function el<T extends HTMLElement> (id: string): T {
  const e = document.getElementById(id)
  if (e == null) throw new Error(`the page lacks #${id}`)
  return e as T
}

function status (text: string, state: 'busy' | 'ready' | 'error'): void {
  const s = el('status')
  s.textContent = text
  s.dataset.state = state
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
  status(`dialing the admin node ${info.adminPeer.toString()}...`, 'busy')
  node.dial(addrs, { signal: AbortSignal.timeout(10_000) }).then(
    c => status(`connected to the admin node ${c.remotePeer.toString()}`, 'ready'),
    (e: unknown) => status(`could not reach the admin node: ${String(e)}`, 'error')
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
  peer.dataset.state = 'ready'
  el('key-storage').textContent = id.storage === 'webcrypto-non-extractable'
    ? 'Ed25519 in WebCrypto, non-extractable, kept in IndexedDB'
    : 'Ed25519 in script memory (this browser has no WebCrypto Ed25519), kept in IndexedDB'
  let node: Libp2p | undefined
  try {
    node = await startNode(id.privateKey)
    if (!node.peerId.equals(id.peerId)) throw new Error('libp2p derived another peer id')
    el('node').textContent = `libp2p ${node.status}, WebRTC-direct dialer`
    status('ready: paste an invite to join a fleet', 'ready')
  } catch (e) {
    el('node').textContent = `libp2p failed to start: ${String(e)}`
    status('identity ready; libp2p failed to start', 'error')
  }
  const form = el<HTMLFormElement>('invite-form')
  form.addEventListener('submit', ev => {
    ev.preventDefault()
    const text = el<HTMLTextAreaElement>('invite').value
    parseInvite(text, BigInt(Math.floor(Date.now() / 1000))).then(
      info => showInvite(info, node),
      (e: unknown) => {
        el('invite-result').textContent = `not a valid invite: ${e instanceof Error ? e.message : String(e)}`
      }
    )
  })
}

void main()
