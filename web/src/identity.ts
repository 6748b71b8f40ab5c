// The page's node identity: an Ed25519 key made once and kept in IndexedDB.
//
// Where the platform has Ed25519 in WebCrypto (Chromium 137+, Firefox 129+, Safari 17+,
// Node 20), the key pair is generated with `extractable: false`: the private key is a
// CryptoKey that IndexedDB stores by structured clone, and no script (ours included) can
// ever read its bytes; it can only sign. js-libp2p takes any object with the
// `Ed25519PrivateKey` shape and only ever calls `sign` on it (Noise's identity signature,
// awaited), so [`WebCryptoEd25519`] wraps the CryptoKey and its `raw` throws. Elsewhere
// the page falls back to js-libp2p's own Ed25519 key (@noble/curves), whose bytes are
// necessarily in script memory and stored in IndexedDB as its protobuf form; the status
// line says which one is in use.

import { generateKeyPair, privateKeyFromProtobuf, privateKeyToProtobuf, publicKeyFromRaw } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import type { Ed25519PrivateKey, Ed25519PublicKey, PeerId, PrivateKey } from '@libp2p/interface'
import type { Uint8ArrayList } from 'uint8arraylist'

export type Storage = 'webcrypto-non-extractable' | 'libp2p-extractable'

export interface Identity {
  privateKey: PrivateKey
  peerId: PeerId
  storage: Storage
}

/** A libp2p private key backed by a non-extractable WebCrypto Ed25519 key. */
export class WebCryptoEd25519 implements Ed25519PrivateKey {
  readonly type = 'Ed25519'

  constructor (readonly publicKey: Ed25519PublicKey, private readonly key: CryptoKey) {}

  get raw (): Uint8Array {
    throw new Error('the node key is non-extractable: it signs inside WebCrypto and is never read')
  }

  equals (other?: unknown): boolean {
    const o = other as Partial<Ed25519PrivateKey> | undefined
    return o?.type === 'Ed25519' && o.publicKey != null && this.publicKey.equals(o.publicKey)
  }

  async sign (data: Uint8Array | Uint8ArrayList): Promise<Uint8Array> {
    const bytes = data instanceof Uint8Array ? data : data.subarray()
    return new Uint8Array(await crypto.subtle.sign('Ed25519', this.key, bytes as Uint8Array<ArrayBuffer>))
  }
}

/** Wraps a WebCrypto Ed25519 key pair (its public key must be exportable, as WebCrypto's always are). */
export async function fromWebCrypto (pair: CryptoKeyPair): Promise<WebCryptoEd25519> {
  const raw = new Uint8Array(await crypto.subtle.exportKey('raw', pair.publicKey))
  const pub = publicKeyFromRaw(raw)
  if (pub.type !== 'Ed25519') throw new Error(`expected an Ed25519 public key, got ${pub.type}`)
  return new WebCryptoEd25519(pub, pair.privateKey)
}

/** A new Ed25519 key pair whose private half can never be exported. */
export async function generateWebCrypto (): Promise<CryptoKeyPair> {
  return await crypto.subtle.generateKey({ name: 'Ed25519' }, false, ['sign', 'verify']) as CryptoKeyPair
}

type Stored =
  | { kind: 'webcrypto', pair: CryptoKeyPair }
  | { kind: 'libp2p', protobuf: Uint8Array }

const DB = 'camesh'
const STORE = 'identity'
const KEY = 'node-key'

function request<T> (r: IDBRequest<T>): Promise<T> {
  return new Promise((resolve, reject) => {
    r.onsuccess = () => resolve(r.result)
    r.onerror = () => reject(r.error)
  })
}

async function openDb (): Promise<IDBDatabase> {
  const r = indexedDB.open(DB, 1)
  r.onupgradeneeded = () => r.result.createObjectStore(STORE)
  return await request(r)
}

async function read (db: IDBDatabase): Promise<Stored | undefined> {
  return await request(db.transaction(STORE, 'readonly').objectStore(STORE).get(KEY)) as Stored | undefined
}

async function fromStored (s: Stored): Promise<Identity> {
  const privateKey = s.kind === 'webcrypto' ? await fromWebCrypto(s.pair) : privateKeyFromProtobuf(s.protobuf)
  const storage: Storage = s.kind === 'webcrypto' ? 'webcrypto-non-extractable' : 'libp2p-extractable'
  return { privateKey, peerId: peerIdFromPrivateKey(privateKey), storage }
}

async function fresh (): Promise<Stored> {
  try {
    return { kind: 'webcrypto', pair: await generateWebCrypto() }
  } catch {
    // No Ed25519 in this platform's WebCrypto: js-libp2p's own key (see the header).
    return { kind: 'libp2p', protobuf: privateKeyToProtobuf(await generateKeyPair('Ed25519')) }
  }
}

/**
 * The page's identity: the stored one, or a new one stored first. Two tabs racing to
 * create it both end with the one that was stored first (`add` refuses the second).
 */
export async function loadIdentity (): Promise<Identity> {
  const db = await openDb()
  try {
    const stored = await read(db)
    if (stored != null) return await fromStored(stored)
    const made = await fresh()
    try {
      await request(db.transaction(STORE, 'readwrite').objectStore(STORE).add(made, KEY))
    } catch {
      const winner = await read(db)
      if (winner != null) return await fromStored(winner)
      throw new Error('could not store the node key in IndexedDB')
    }
    return await fromStored(made)
  } finally {
    db.close()
  }
}

/** Another value kept beside the node key (the membership certificate, grants). */
export async function loadValue<T> (key: string): Promise<T | undefined> {
  const db = await openDb()
  try {
    return await request(db.transaction(STORE, 'readonly').objectStore(STORE).get(key)) as T | undefined
  } finally {
    db.close()
  }
}

export async function storeValue (key: string, value: unknown): Promise<void> {
  if (key === KEY) throw new Error('the node key is never overwritten')
  const db = await openDb()
  try {
    await request(db.transaction(STORE, 'readwrite').objectStore(STORE).put(value, key))
  } finally {
    db.close()
  }
}
