/**
 * The IndexedDB side of a client: shape rows and positions, the outbox, and small metadata —
 * each change written in one IndexedDB transaction, so a reload (or a crash) finds either all of
 * a batch or none of it: never rows without the offset they belong to, nor a retired write still
 * replayed over the rows that already contain it.
 */

import { compareHlc, parseHlc } from './hlc.js'
import type { PendingTransaction } from './outbox.js'
import type { TagState } from './tags.js'
import type { Row } from './values.js'

const VERSION = 1

/** Where a shape's stored rows came from, so its stream resumes instead of starting over. */
export interface ShapeRecord {
  /** Local shape name. */
  name: string
  /** The shape's definition (table, where, params, columns) as JSON: a changed definition starts over. */
  definition: string
  /** Server shape handle. */
  handle?: string
  /** Offset to resume from. */
  offset: string
  /** `global_last_seen_lsn` of the last up-to-date. */
  lastLsn?: string
  /** The server's convergence digest after the last change applied (`ferrite_digest`, see `digest.ts`). */
  digest?: string
}

/** Everything stored, as loaded at open. */
export interface Loaded {
  meta: Map<string, unknown>
  shapes: Map<string, ShapeRecord>
  rows: Map<string, Map<string, Row>>
  /** Relational shapes: why each stored row is in its shape, by shape and key. */
  tags: Map<string, Map<string, TagState>>
  outbox: PendingTransaction[]
}

/** The changes of one atomic write. */
export interface WriteBatch {
  /** Stores a row (with why it is in its shape, for a relational shape). */
  putRow(shape: string, key: string, row: Row, tags?: TagState): void
  deleteRow(shape: string, key: string): void
  /** Removes every row of a shape (before a full replacement). */
  clearShape(shape: string): void
  putShape(record: ShapeRecord): void
  deleteShape(name: string): void
  putTransaction(t: PendingTransaction): void
  deleteTransaction(id: number): void
  putMeta(key: string, value: unknown): void
}

type Op = (stores: Record<'rows' | 'shapes' | 'outbox' | 'meta', IDBObjectStore>) => void

function promised<T>(req: IDBRequest<T>): Promise<T> {
  return new Promise((resolve, reject) => {
    req.onsuccess = () => resolve(req.result)
    req.onerror = () => reject(req.error)
  })
}

function done(tx: IDBTransaction): Promise<void> {
  return new Promise((resolve, reject) => {
    tx.oncomplete = () => resolve()
    tx.onerror = () => reject(tx.error ?? new Error('IndexedDB transaction failed'))
    tx.onabort = () => reject(tx.error ?? new Error('IndexedDB transaction aborted'))
  })
}

/**
 * Where a client keeps its replica: the IndexedDB store below by default, or another one given
 * to `FerriteClient.open` (`store`, e.g. `pgliteStore` in pglite-store.ts). Every method's
 * changes are atomic and durable when its promise resolves.
 */
export interface LocalStore {
  /** Reads everything (at open). */
  load(): Promise<Loaded>
  /** The stored outbox, oldest first (other tabs of the same database may add to it). */
  outbox(): Promise<PendingTransaction[]>
  /** Applies a batch of changes atomically. */
  write(build: (batch: WriteBatch) => void): Promise<void>
  /** Stores a new transaction under the next id (with the HLC, atomically); returns the id. */
  append(t: PendingTransaction): Promise<number>
  /** Closes the store (the client is closing). */
  close(): void
}

/** Opens the store of database `name` (one per user: rows depend on the caller's read rules). */
export type StoreFactory = (name: string) => Promise<LocalStore>

/** The next id and whether `t.hlc` advances the stored one: the bookkeeping of `append`. */
export function appendBookkeeping(storedNextId: unknown, storedHlc: unknown, t: PendingTransaction): { id: number; hlc: string | undefined } {
  const id = Number(storedNextId ?? 1)
  const last = parseHlc(typeof storedHlc === 'string' ? storedHlc : undefined)
  const mine = parseHlc(t.hlc)
  return { id, hlc: mine && (!last || compareHlc(mine, last) > 0) ? t.hlc : undefined }
}

/** One client's IndexedDB database. */
export class Store implements LocalStore {
  private constructor(readonly db: IDBDatabase) {}

  /** Opens (creating if needed) the database `name`. */
  static async open(name: string): Promise<Store> {
    if (typeof indexedDB === 'undefined') throw new Error('IndexedDB is not available in this environment')
    const req = indexedDB.open(name, VERSION)
    req.onupgradeneeded = () => {
      const db = req.result
      if (!db.objectStoreNames.contains('rows')) db.createObjectStore('rows', { keyPath: ['shape', 'key'] })
      if (!db.objectStoreNames.contains('shapes')) db.createObjectStore('shapes', { keyPath: 'name' })
      if (!db.objectStoreNames.contains('outbox')) db.createObjectStore('outbox', { keyPath: 'id' })
      if (!db.objectStoreNames.contains('meta')) db.createObjectStore('meta', { keyPath: 'key' })
    }
    const db = await promised(req)
    return new Store(db)
  }

  /** Reads everything (at open). */
  async load(): Promise<Loaded> {
    const tx = this.db.transaction(['rows', 'shapes', 'outbox', 'meta'], 'readonly')
    const [rows, shapes, outbox, meta] = await Promise.all([
      promised(tx.objectStore('rows').getAll()) as Promise<{ shape: string; key: string; row: Row; tags?: TagState }[]>,
      promised(tx.objectStore('shapes').getAll()) as Promise<ShapeRecord[]>,
      promised(tx.objectStore('outbox').getAll()) as Promise<PendingTransaction[]>,
      promised(tx.objectStore('meta').getAll()) as Promise<{ key: string; value: unknown }[]>,
    ])
    const byShape = new Map<string, Map<string, Row>>()
    const tags = new Map<string, Map<string, TagState>>()
    for (const r of rows) {
      let m = byShape.get(r.shape)
      if (!m) byShape.set(r.shape, (m = new Map()))
      m.set(r.key, r.row)
      if (r.tags) {
        let t = tags.get(r.shape)
        if (!t) tags.set(r.shape, (t = new Map()))
        t.set(r.key, r.tags)
      }
    }
    return {
      rows: byShape,
      tags,
      shapes: new Map(shapes.map((s) => [s.name, s])),
      outbox: outbox.sort((a, b) => (a.id ?? 0) - (b.id ?? 0)),
      meta: new Map(meta.map((m) => [m.key, m.value])),
    }
  }

  /** The stored outbox, oldest first (other tabs of the same database add to it too). */
  async outbox(): Promise<PendingTransaction[]> {
    const tx = this.db.transaction('outbox', 'readonly')
    const all = (await promised(tx.objectStore('outbox').getAll())) as PendingTransaction[]
    return all.sort((a, b) => (a.id ?? 0) - (b.id ?? 0))
  }

  /** Applies a batch of changes in one transaction; resolves once it is durable. */
  async write(build: (batch: WriteBatch) => void): Promise<void> {
    const ops: Op[] = []
    build({
      putRow: (shape, key, row, tags) => ops.push((s) => s.rows.put(tags ? { shape, key, row, tags } : { shape, key, row })),
      deleteRow: (shape, key) => ops.push((s) => s.rows.delete([shape, key])),
      clearShape: (shape) => ops.push((s) => s.rows.delete(IDBKeyRange.bound([shape, ''], [shape, '\uffff']))),
      putShape: (record) => ops.push((s) => s.shapes.put(record)),
      deleteShape: (name) => ops.push((s) => s.shapes.delete(name)),
      putTransaction: (t) => ops.push((s) => s.outbox.put(t)),
      deleteTransaction: (id) => ops.push((s) => s.outbox.delete(id)),
      putMeta: (key, value) => ops.push((s) => s.meta.put({ key, value })),
    })
    if (ops.length === 0) return
    const tx = this.db.transaction(['rows', 'shapes', 'outbox', 'meta'], 'readwrite', { durability: 'strict' })
    const stores = {
      rows: tx.objectStore('rows'),
      shapes: tx.objectStore('shapes'),
      outbox: tx.objectStore('outbox'),
      meta: tx.objectStore('meta'),
    }
    for (const op of ops) op(stores)
    await done(tx)
  }

  /**
   * Stores a new transaction under the next id, atomically with the id counter and the HLC
   * (so ids are never reused and stamps never go backwards, also across tabs and reloads).
   * Returns the id.
   */
  async append(t: PendingTransaction): Promise<number> {
    const tx = this.db.transaction(['outbox', 'meta'], 'readwrite', { durability: 'strict' })
    const meta = tx.objectStore('meta')
    const outbox = tx.objectStore('outbox')
    const [stored, lastHlc] = await Promise.all([promised(meta.get('next_txn_id')), promised(meta.get('hlc'))])
    const { id, hlc } = appendBookkeeping((stored as { value?: number } | undefined)?.value, (lastHlc as { value?: string } | undefined)?.value, t)
    meta.put({ key: 'next_txn_id', value: id + 1 })
    if (hlc) meta.put({ key: 'hlc', value: hlc })
    outbox.put({ ...t, id })
    await done(tx)
    return id
  }

  /** Closes the connection. */
  close(): void {
    this.db.close()
  }
}
