/**
 * A client's replica in PGlite (Postgres in WebAssembly) instead of IndexedDB: the same rows,
 * positions, outbox and metadata — each change in one PGlite transaction, so a reload finds all
 * of a batch or none of it — plus what IndexedDB cannot give an app: SQL over its data.
 *
 * For each shape named in `tables`, the app creates a table with the shape's columns and
 * primary key (its own DDL, as with pglite-sync; Postgres types the values) and the store keeps:
 *
 * - `<table>`: the synced rows, as the server has them;
 * - `<table>_pending`: the rows pending local writes make (the optimistic overlay: inserted and
 *   updated rows as the app sees them, and a `ferrite_deleted` flag for rows deleted locally);
 * - `<table>_local` (a view): synced rows with pending writes on top — what the app shows.
 *
 * So an app can join, aggregate and run PGlite `live` queries over synced and pending rows. The
 * store's own state lives in the `ferrite` schema of the PGlite database (or `schema`: `rows`,
 * `shapes`, `outbox`, `meta`), values kept losslessly (bigints included).
 *
 * One client per PGlite database at a time: PGlite serves one connection (several tabs can share
 * one through `PGliteWorker`, which this store accepts as well).
 */

import { appendBookkeeping, type Loaded, type LocalStore, type ShapeRecord, type WriteBatch } from './storage.js'
import { overlay, type PendingTransaction } from './outbox.js'
import type { TagState } from './tags.js'
import type { Row } from './values.js'

/** What the store needs of PGlite (`PGlite` and `PGliteWorker` both have it). */
export interface PGliteLike {
  query<T>(sql: string, params?: unknown[]): Promise<{ rows: T[] }>
  exec(sql: string): Promise<unknown>
  transaction<T>(fn: (tx: PGliteTx) => Promise<T>): Promise<T>
  close?(): Promise<void>
}

/** A PGlite transaction. */
export interface PGliteTx {
  query<T>(sql: string, params?: unknown[]): Promise<{ rows: T[] }>
  exec(sql: string): Promise<unknown>
}

/** Options of {@link pgliteStore}. */
export interface PGliteStoreOptions {
  /**
   * App tables by shape name: the shape's synced rows are also kept in the table (which the app
   * creates beforehand), beside `<table>_pending` and the view `<table>_local` the store makes.
   */
  tables?: Record<string, string>
  /** Close the PGlite database when the client closes (default: false, the app owns it). */
  closeDatabase?: boolean
  /**
   * The schema the store's own tables live in (default `ferrite`). Several replicas may share
   * one PGlite database under schemas of their own (their shapes then have no `tables`).
   */
  schema?: string
}

/** The store's own tables, in schema `s` (quoted). */
const storeSchema = (s: string) => `
  CREATE SCHEMA IF NOT EXISTS ${s};
  CREATE TABLE IF NOT EXISTS ${s}.rows (shape text NOT NULL, key text NOT NULL, row jsonb NOT NULL, tags jsonb, PRIMARY KEY (shape, key));
  CREATE TABLE IF NOT EXISTS ${s}.shapes (name text PRIMARY KEY, record jsonb NOT NULL);
  CREATE TABLE IF NOT EXISTS ${s}.outbox (id bigint PRIMARY KEY, txn jsonb NOT NULL);
  CREATE TABLE IF NOT EXISTS ${s}.meta (key text PRIMARY KEY, value jsonb);`

/** A quoted SQL identifier (`"` doubled): table and column names are never pasted raw. */
export function ident(name: string): string {
  if (name.length === 0 || name.length > 63 || name.includes('\u0000')) throw new Error(`not a usable SQL name: ${JSON.stringify(name)}`)
  return `"${name.replace(/"/g, '""')}"`
}

/**
 * JSON text for any stored value, lossless: a bigint becomes `{"$": "b", "v": "<digits>"}`, and
 * an object that has a `$` key of its own is wrapped as `{"$": "o", "v": …}`, so no stored value
 * can pass for an encoded one.
 */
export function encodeStored(v: unknown): string {
  return JSON.stringify(escapeValue(v))
}

function escapeValue(v: unknown): unknown {
  if (typeof v === 'bigint') return { $: 'b', v: v.toString() }
  if (Array.isArray(v)) return v.map(escapeValue)
  if (v !== null && typeof v === 'object') {
    const out: Record<string, unknown> = {}
    for (const [k, x] of Object.entries(v)) if (x !== undefined) out[k] = escapeValue(x)
    return '$' in out ? { $: 'o', v: out } : out
  }
  return v
}

/** The inverse of {@link encodeStored}, for a value PGlite returned from a jsonb column. */
export function decodeStored<T>(v: unknown): T {
  return unescapeValue(v) as T
}

function unescapeValue(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(unescapeValue)
  if (v !== null && typeof v === 'object') {
    const o = v as Record<string, unknown>
    if (o.$ === 'b' && typeof o.v === 'string') return BigInt(o.v)
    const inner = o.$ === 'o' && typeof o.v === 'object' && o.v !== null ? (o.v as Record<string, unknown>) : o
    const out: Record<string, unknown> = {}
    for (const [k, x] of Object.entries(inner)) out[k] = unescapeValue(x)
    return out
  }
  return v
}

/** Plain JSON of a row for Postgres to type (`jsonb_populate_record`): bigints as digits. */
function rowJson(row: Row): string {
  return JSON.stringify(row, (_k, x) => (typeof x === 'bigint' ? x.toString() : x))
}

/** An app table the store mirrors a shape into. */
interface Mirror {
  shape: string
  table: string
  pending: string
  view: string
  columns: string[]
  key: string[]
}

/** One queued operation of a write batch. */
type Op =
  | { kind: 'putRow'; shape: string; key: string; row: Row; tags?: TagState }
  | { kind: 'deleteRow'; shape: string; key: string }
  | { kind: 'clearShape'; shape: string }
  | { kind: 'putShape'; record: ShapeRecord }
  | { kind: 'deleteShape'; name: string }
  | { kind: 'putTransaction'; t: PendingTransaction }
  | { kind: 'deleteTransaction'; id: number }
  | { kind: 'putMeta'; key: string; value: unknown }

/**
 * A store in `db` (see the module docs). Creates the store's schema, and for each of `tables`
 * checks the app's table (it must exist and have a primary key) and makes its pending table and
 * view. Use as `FerriteClient.open({ …, store: () => pgliteStore(db, { tables }) })`.
 */
export async function pgliteStore(db: PGliteLike, options: PGliteStoreOptions = {}): Promise<LocalStore> {
  const schema = ident(options.schema ?? 'ferrite')
  await db.exec(storeSchema(schema))
  const mirrors = new Map<string, Mirror>()
  for (const [shape, table] of Object.entries(options.tables ?? {})) {
    mirrors.set(shape, await prepareMirror(db, shape, table))
  }
  return new PGliteStore(db, schema, mirrors, options.closeDatabase ?? false)
}

/** Reads the app table's columns and key, and makes `<table>_pending` and `<table>_local`. */
async function prepareMirror(db: PGliteLike, shape: string, table: string): Promise<Mirror> {
  const { rows: columns } = await db.query<{ name: string; key: boolean }>(
    `SELECT a.attname AS name, coalesce(a.attnum = ANY (i.indkey), false) AS key
       FROM pg_attribute a
       LEFT JOIN pg_index i ON i.indrelid = a.attrelid AND i.indisprimary
      WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped
      ORDER BY a.attnum`,
    [ident(table)],
  )
  if (columns.length === 0) throw new Error(`shape ${JSON.stringify(shape)}: the table ${JSON.stringify(table)} does not exist (create it before opening the client)`)
  const key = columns.filter((c) => c.key).map((c) => c.name)
  if (key.length === 0) throw new Error(`shape ${JSON.stringify(shape)}: the table ${JSON.stringify(table)} has no primary key`)
  const m: Mirror = { shape, table, pending: `${table}_pending`, view: `${table}_local`, columns: columns.map((c) => c.name), key }
  const cols = m.columns.map(ident).join(', ')
  const keyMatch = m.key.map((k) => `p.${ident(k)} = t.${ident(k)}`).join(' AND ')
  const made = await db.query<{ t: string | null }>('SELECT to_regclass($1)::text AS t', [ident(m.pending)])
  if (made.rows[0]?.t == null) {
    // The app table's columns, without its constraints: a row deleted locally is only its key.
    const nullable = m.columns.filter((c) => !key.includes(c))
    await db.exec(`
      CREATE TABLE ${ident(m.pending)} (LIKE ${ident(table)}, ferrite_deleted boolean NOT NULL DEFAULT false, PRIMARY KEY (${key.map(ident).join(', ')}));
      ${nullable.map((c) => `ALTER TABLE ${ident(m.pending)} ALTER COLUMN ${ident(c)} DROP NOT NULL;`).join('\n')}`)
  }
  await db.exec(`
    CREATE OR REPLACE VIEW ${ident(m.view)} AS
      SELECT ${m.columns.map((c) => `t.${ident(c)}`).join(', ')} FROM ${ident(table)} t
       WHERE NOT EXISTS (SELECT 1 FROM ${ident(m.pending)} p WHERE ${keyMatch})
      UNION ALL
      SELECT ${cols} FROM ${ident(m.pending)} WHERE NOT ferrite_deleted;`)
  return m
}

class PGliteStore implements LocalStore {
  /** Writes in flight: a close waits for them before closing the database. */
  #inflight = new Set<Promise<unknown>>()

  constructor(
    private readonly db: PGliteLike,
    /** The store's schema, quoted. */
    private readonly s: string,
    private readonly mirrors: Map<string, Mirror>,
    private readonly closeDatabase: boolean,
  ) {}

  async load(): Promise<Loaded> {
    const [rows, shapes, outbox, meta] = await Promise.all([
      this.db.query<{ shape: string; key: string; row: unknown; tags: unknown }>(`SELECT shape, key, row, tags FROM ${this.s}.rows`),
      this.db.query<{ record: unknown }>(`SELECT record FROM ${this.s}.shapes`),
      this.outbox(),
      this.db.query<{ key: string; value: unknown }>(`SELECT key, value FROM ${this.s}.meta`),
    ])
    const byShape = new Map<string, Map<string, Row>>()
    const tags = new Map<string, Map<string, TagState>>()
    for (const r of rows.rows) {
      let m = byShape.get(r.shape)
      if (!m) byShape.set(r.shape, (m = new Map()))
      m.set(r.key, decodeStored<Row>(r.row))
      if (r.tags !== null && r.tags !== undefined) {
        let t = tags.get(r.shape)
        if (!t) tags.set(r.shape, (t = new Map()))
        t.set(r.key, decodeStored<TagState>(r.tags))
      }
    }
    return {
      rows: byShape,
      tags,
      shapes: new Map(shapes.rows.map((s) => decodeStored<ShapeRecord>(s.record)).map((s) => [s.name, s])),
      outbox,
      meta: new Map(meta.rows.map((m) => [m.key, decodeStored(m.value)])),
    }
  }

  async outbox(): Promise<PendingTransaction[]> {
    const { rows } = await this.db.query<{ txn: unknown }>(`SELECT txn FROM ${this.s}.outbox ORDER BY id`)
    return rows.map((r) => decodeStored<PendingTransaction>(r.txn))
  }

  async write(build: (batch: WriteBatch) => void): Promise<void> {
    const ops: Op[] = []
    build({
      putRow: (shape, key, row, tags) => ops.push({ kind: 'putRow', shape, key, row, tags }),
      deleteRow: (shape, key) => ops.push({ kind: 'deleteRow', shape, key }),
      clearShape: (shape) => ops.push({ kind: 'clearShape', shape }),
      putShape: (record) => ops.push({ kind: 'putShape', record }),
      deleteShape: (name) => ops.push({ kind: 'deleteShape', name }),
      putTransaction: (t) => ops.push({ kind: 'putTransaction', t }),
      deleteTransaction: (id) => ops.push({ kind: 'deleteTransaction', id }),
      putMeta: (key, value) => ops.push({ kind: 'putMeta', key, value }),
    })
    if (ops.length === 0) return
    await this.#track(
      this.db.transaction(async (tx) => {
        for (const group of runs(ops)) await this.#apply(tx, group)
        if (ops.some((o) => o.kind !== 'putShape' && o.kind !== 'putMeta' && o.kind !== 'deleteShape')) await this.#refreshPending(tx)
      }),
    )
  }

  #track<T>(p: Promise<T>): Promise<T> {
    this.#inflight.add(p)
    const done = () => this.#inflight.delete(p)
    p.then(done, done)
    return p
  }

  async append(t: PendingTransaction): Promise<number> {
    return this.#track(this.db.transaction(async (tx) => {
      const { rows } = await tx.query<{ key: string; value: unknown }>(`SELECT key, value FROM ${this.s}.meta WHERE key IN ('next_txn_id', 'hlc') FOR UPDATE`)
      const stored = new Map(rows.map((r) => [r.key, decodeStored(r.value)]))
      const { id, hlc } = appendBookkeeping(stored.get('next_txn_id'), stored.get('hlc'), t)
      await putMeta(tx, this.s, 'next_txn_id', id + 1)
      if (hlc) await putMeta(tx, this.s, 'hlc', hlc)
      await tx.query(`INSERT INTO ${this.s}.outbox (id, txn) VALUES ($1, $2::jsonb)`, [id, encodeStored({ ...t, id })])
      await this.#refreshPending(tx)
      return id
    }))
  }

  close(): void {
    if (!this.closeDatabase) return
    void Promise.allSettled([...this.#inflight]).then(() => this.db.close?.())
  }

  /** Applies a run of operations of one kind (rows in bulk, one statement per run). */
  async #apply(tx: PGliteTx, group: Op[]): Promise<void> {
    const first = group[0]
    switch (first.kind) {
      case 'putRow': {
        // The last put of a key wins (one statement may not write a row twice).
        const last = new Map<string, Extract<Op, { kind: 'putRow' }>>()
        for (const p of group as Extract<Op, { kind: 'putRow' }>[]) {
          const k = JSON.stringify([p.shape, p.key])
          last.delete(k)
          last.set(k, p)
        }
        const puts = [...last.values()]
        await tx.query(
          `INSERT INTO ${this.s}.rows (shape, key, row, tags)
           SELECT e->>0, e->>1, (e->>2)::jsonb, (e->>3)::jsonb FROM jsonb_array_elements($1::jsonb) e
           ON CONFLICT (shape, key) DO UPDATE SET row = EXCLUDED.row, tags = EXCLUDED.tags`,
          [JSON.stringify(puts.map((p) => [p.shape, p.key, encodeStored(p.row), p.tags === undefined ? null : encodeStored(p.tags)]))],
        )
        for (const [shape, rows] of byShape(puts)) {
          const m = this.mirrors.get(shape)
          if (m) await upsertMirror(tx, m, m.table, rows.map((p) => p.row))
        }
        return
      }
      case 'deleteRow': {
        const deletes = group as Extract<Op, { kind: 'deleteRow' }>[]
        for (const [shape, rows] of byShape(deletes)) {
          const keys = rows.map((d) => d.key)
          const m = this.mirrors.get(shape)
          // The app table's row is found through the stored row (before it goes).
          if (m) {
            await tx.query(
              `DELETE FROM ${ident(m.table)} t USING (SELECT (jsonb_populate_record(NULL::${ident(m.table)}, row)).* FROM ${this.s}.rows
                 WHERE shape = $1 AND key = ANY ($2::text[])) d WHERE ${m.key.map((k) => `t.${ident(k)} = d.${ident(k)}`).join(' AND ')}`,
              [shape, keys],
            )
          }
          await tx.query(`DELETE FROM ${this.s}.rows WHERE shape = $1 AND key = ANY ($2::text[])`, [shape, keys])
        }
        return
      }
      default:
        for (const op of group) await this.#applyOne(tx, op)
    }
  }

  async #applyOne(tx: PGliteTx, op: Op): Promise<void> {
    switch (op.kind) {
      case 'clearShape': {
        await tx.query(`DELETE FROM ${this.s}.rows WHERE shape = $1`, [op.shape])
        const m = this.mirrors.get(op.shape)
        if (m) await tx.exec(`DELETE FROM ${ident(m.table)}`)
        return
      }
      case 'putShape':
        await tx.query(`INSERT INTO ${this.s}.shapes (name, record) VALUES ($1, $2::jsonb) ON CONFLICT (name) DO UPDATE SET record = EXCLUDED.record`, [
          op.record.name,
          encodeStored(op.record),
        ])
        return
      case 'deleteShape':
        await tx.query(`DELETE FROM ${this.s}.shapes WHERE name = $1`, [op.name])
        return
      case 'putTransaction':
        await tx.query(`INSERT INTO ${this.s}.outbox (id, txn) VALUES ($1, $2::jsonb) ON CONFLICT (id) DO UPDATE SET txn = EXCLUDED.txn`, [op.t.id, encodeStored(op.t)])
        return
      case 'deleteTransaction':
        await tx.query(`DELETE FROM ${this.s}.outbox WHERE id = $1`, [op.id])
        return
      case 'putMeta':
        await putMeta(tx, this.s, op.key, op.value)
        return
      default:
        throw new Error(`unexpected operation ${op.kind}`)
    }
  }

  /**
   * Rewrites every mirrored shape's pending table from the outbox: each row a pending write
   * touches, as the stored row with the outbox's mutations replayed in order (the same overlay
   * the client shows).
   */
  async #refreshPending(tx: PGliteTx): Promise<void> {
    if (this.mirrors.size === 0) return
    const { rows } = await tx.query<{ txn: unknown }>(`SELECT txn FROM ${this.s}.outbox ORDER BY id`)
    const pending = rows.map((r) => decodeStored<PendingTransaction>(r.txn))
    for (const m of this.mirrors.values()) {
      await tx.exec(`DELETE FROM ${ident(m.pending)}`)
      const keys = [...new Set(pending.flatMap((t) => t.mutations).filter((mu) => mu.shape === m.shape).map((mu) => mu.key))]
      if (keys.length === 0) continue
      const { rows: stored } = await tx.query<{ key: string; row: unknown }>(`SELECT key, row FROM ${this.s}.rows WHERE shape = $1 AND key = ANY ($2::text[])`, [m.shape, keys])
      // The client's own overlay, over the stored rows the pending writes touch.
      const after = overlay(new Map(stored.map((r) => [r.key, decodeStored<Row>(r.row)])), pending, m.shape)
      const present = keys.map((k) => after.get(k)).filter((r): r is Row => r !== undefined)
      const deleted = keys.filter((k) => !after.has(k))
      if (present.length > 0) await upsertMirror(tx, m, m.pending, present)
      if (deleted.length > 0) {
        // A row deleted locally: its key, marked (the view hides the synced row).
        await tx.query(
          `INSERT INTO ${ident(m.pending)} (${m.key.map(ident).join(', ')}, ferrite_deleted)
           SELECT ${m.key.map((k) => `r.${ident(k)}`).join(', ')}, true
             FROM ${this.s}.rows f, jsonb_populate_record(NULL::${ident(m.table)}, f.row) r
            WHERE f.shape = $1 AND f.key = ANY ($2::text[])`,
          [m.shape, deleted],
        )
      }
    }
  }
}

/** Inserts or replaces `rows` in `table` (the app table or its pending table), typed by Postgres. */
async function upsertMirror(tx: PGliteTx, m: Mirror, table: string, rows: Row[]): Promise<void> {
  const cols = m.columns.map(ident)
  const update = m.columns.filter((c) => !m.key.includes(c))
  await tx.query(
    `INSERT INTO ${ident(table)} (${cols.join(', ')})
     SELECT ${cols.map((c) => `r.${c}`).join(', ')} FROM jsonb_array_elements($1::jsonb) e, jsonb_populate_record(NULL::${ident(m.table)}, e) r
     ON CONFLICT (${m.key.map(ident).join(', ')}) DO ${
       update.length === 0 ? 'NOTHING' : `UPDATE SET ${update.map((c) => `${ident(c)} = EXCLUDED.${ident(c)}`).join(', ')}`
     }`,
    [`[${rows.map(rowJson).join(',')}]`],
  )
}

async function putMeta(tx: PGliteTx, schema: string, key: string, value: unknown): Promise<void> {
  await tx.query(`INSERT INTO ${schema}.meta (key, value) VALUES ($1, $2::jsonb) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value`, [key, encodeStored(value)])
}

/** Consecutive operations of one kind, in order (so bulk statements keep the batch's order). */
function runs(ops: Op[]): Op[][] {
  const out: Op[][] = []
  for (const op of ops) {
    const last = out[out.length - 1]
    if (last && last[0].kind === op.kind && (op.kind === 'putRow' || op.kind === 'deleteRow')) last.push(op)
    else out.push([op])
  }
  return out
}

/** Operations grouped by shape, in order. */
function byShape<T extends { shape: string }>(ops: T[]): Map<string, T[]> {
  const out = new Map<string, T[]>()
  for (const op of ops) {
    let l = out.get(op.shape)
    if (!l) out.set(op.shape, (l = []))
    l.push(op)
  }
  return out
}
