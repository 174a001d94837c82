/**
 * {@link FerriteClient}: a local replica of some shapes of a Ferrite server, in IndexedDB (or PGlite, pglite-store.ts),
 * that the app reads synchronously and writes to offline.
 *
 * - Reads: each shape is synced by the official `@electric-sql/client` `ShapeStream`; its rows,
 *   handle and offset are stored together per batch, so a reload (also offline) shows the last
 *   rows at once and the stream resumes where it stopped, without fetching the shape again.
 * - Writes: {@link FerriteClient.transaction} applies changes to what the app reads at once (an
 *   overlay over the server rows) and stores them in an outbox, pushed to
 *   `POST /v1/transactions` when the server is reachable. A write leaves the outbox when the
 *   shapes show it (its txid comes back), when the server answers that it changed nothing, or
 *   when the server rejects it — then its effects vanish and a `rejected` event says why.
 * - Status: `synced | syncing | offline | error` with the number of pending writes, a
 *   connection state, backoff 1/2/5/10/30 s with jitter and `Retry-After`, {@link FerriteClient.retryNow}.
 * - Presence rooms ({@link FerriteClient.presence}).
 *
 * Several tabs may open the same database: transaction ids come from IndexedDB, one tab at a
 * time pushes (Web Locks), and tabs tell each other about outbox changes (BroadcastChannel).
 */

import { Emitter } from './emitter.js'
import { formatHlc, nextHlc, parseHlc, type Stamp } from './hlc.js'
import { isCovered, overlay, touchedShapes, visibleInSnapshot, type Mutation, type PendingTransaction } from './outbox.js'
import { PresenceRoom } from './presence.js'
import { ShapeSync, type ChecksumOutcome, type ShapeBatch, type ShapeHost, type ShapeOptions } from './shape.js'
import { Store, type LocalStore, type ShapeRecord, type StoreFactory } from './storage.js'
import type { TagState } from './tags.js'
import { TreeSync, compileTree, type ForeignKey, type TreeHost, type TreeOptions } from './tree.js'
import { AbortedError, Transport, describe, type ConnectionState, type TokenSource } from './transport.js'
import { Watcher } from './watch.js'
import type { ClientConfig, ClientTransaction, Overridden, TransactionResult, TransactionsResponse } from './protocol.js'
import { keyOf, keyValues, rowToText, type Row, type TextValues } from './values.js'

/** Options of {@link FerriteClient.open}. */
export interface FerriteClientOptions {
  /** Server base URL, e.g. `http://127.0.0.1:3000` (or `location.origin`). */
  url: string
  /**
   * IndexedDB database name. Rows depend on the caller's read rules, so use one database per
   * user (e.g. `my-app:<user id>`).
   */
  database: string
  /** The shapes to sync, by the local name the app reads and writes them under. */
  shapes: Record<string, ShapeOptions>
  /**
   * Include trees, by name: the root shape is read under the tree's name, each include under its
   * own (see `tree.ts`). Their members change together, at common points of the server's log.
   * A tree compiles to shapes once the server has answered which foreign keys link its tables;
   * after that the compiled form is stored, so a reload offline shows the tree at once.
   */
  trees?: Record<string, TreeOptions>
  /** Bearer tokens (jwt mode). */
  token?: TokenSource
  /**
   * Where the replica is kept: IndexedDB (the default, database `database`), or the store this
   * opens for `database` — e.g. `(name) => pgliteStore(new PGlite('idb://' + name), …)` to keep
   * it in PGlite, where the app can query synced and pending rows with SQL (pglite-store.ts).
   */
  store?: StoreFactory
  /** `fetch` to use (default: the global one). */
  fetch?: typeof fetch
  /** How often non-live shapes catch up (default 10 s). */
  pollIntervalMs?: number
  /**
   * How live shapes wait for changes. `'watch'` (default): all of them together on one held
   * `POST /v1/watch` request (a Ferrite extension), each reading its news with an ordinary shape
   * request — so the client holds one of the browser's six connections per server, whatever it
   * syncs. `'long-poll'`: one held request per shape, as Electric's protocol has it (for a
   * server without the extension, or behind HTTP/2 where connections are not scarce).
   */
  liveRequests?: 'watch' | 'long-poll'
  /**
   * How often a shape's rows are compared with the server's convergence digest, at an
   * up-to-date (default 10 minutes; 0: at every up-to-date; null: never). A shape read back from
   * storage is compared at its first up-to-date. One that differs (storage damaged or edited
   * behind the client's back) is fetched afresh (a tree's member too, shown again at a common
   * point); see {@link FerriteClient.checksums}. Shapes with subqueries or time windows, and so
   * include trees' members, carry no digest: the server is asked for one (`GET
   * /v1/shape/digest`, a replay of the shape's log on its side) when their check is due.
   */
  checksumIntervalMs?: number | null
}

/** Comparisons of shapes with the server's digest since the client opened. */
export interface ChecksumStats {
  /** Comparisons made. */
  verified: number
  /** … that found the rows differing from the server's. */
  mismatches: number
  /** Shapes fetched afresh because they differed. */
  repairs: number
  /** Shapes that still differed right after being fetched afresh (not retried). */
  unrepaired: number
}

/** How often shapes are compared with the server's digest unless the options say otherwise. */
export const DEFAULT_CHECKSUM_INTERVAL_MS = 10 * 60 * 1000

/** What the sync indicator shows. */
export type SyncStatus =
  | { state: 'synced'; pending: 0 }
  | { state: 'syncing'; pending: number }
  | { state: 'offline'; pending: number }
  | { state: 'error'; pending: number; reason: string; /** ms until the next attempt */ retryIn: number; retryAt: number }

/** A write the server refused (final: its effects were rolled back). */
export interface Rejection {
  /** The transaction's id. */
  id: number
  /** `forbidden`, `constraint`, `conflict`, `invalid`, `clock_skew`, or `too_large` (refused by the client). */
  code: string
  /** The server's explanation. */
  message: string
  /** Table and key of the offending row, when known. */
  table?: string
  key?: TextValues
  /** The transaction as it was queued. */
  transaction: PendingTransaction
}

/**
 * A change of the user's the server's conflict policy did not keep (in whole or in part): which
 * columns lost, and the values the user had written to them — what an app shows ("yours was not
 * kept") and what a "use mine" re-applies as a new edit (`tx.update(shape, key, mine)`).
 */
export interface LostChange {
  /** The shape (local name) the change was made to. */
  shape: string
  /** The server table, as the result names it. */
  table: string
  /** The row's primary key (text values). */
  key: TextValues
  /** The columns that kept other values (all the change's columns when the row was deleted meanwhile). */
  columns: string[]
  /** The user's values for those columns (empty for a delete that did not happen). */
  mine: Row
}

/** A transaction the server answered `merged`: committed, but some of it was not kept. */
export interface Merge {
  /** The transaction's id. */
  id: number
  /** Its changes that lost, per row. */
  lost: LostChange[]
  /** The transaction as it was queued. */
  transaction: PendingTransaction
}

/** Events of a {@link FerriteClient}. */
export interface ClientEvents extends Record<string, unknown> {
  /** Rows of these shapes changed (server changes, local writes, retirements). */
  change: Set<string>
  status: SyncStatus
  connection: ConnectionState
  rejected: Rejection
  /** A transaction was merged: some of the user's columns lost to newer edits (or a delete). */
  merged: Merge
  /** A shape's rows were compared with the server's digest (see {@link FerriteClientOptions.checksumIntervalMs}). */
  checksum: { shape: string } & ChecksumOutcome
}

/** Thrown by {@link FerriteClient.transaction} when `max_offline_queue` writes are already waiting. */
export class QueueFullError extends Error {
  constructor(readonly limit: number) {
    super(`${limit} changes are waiting to be sent; reconnect before making more`)
    this.name = 'QueueFullError'
  }
}

/**
 * Thrown by an update or delete of a row the app cannot see (not in the shape, or deleted earlier
 * in the same transaction): the app cannot have shown it, so the write is a mistake, and sent it
 * could change a row nobody here saw. To create a row, insert it.
 */
export class NoRowError extends Error {
  constructor(readonly shape: string, readonly key: string) {
    super(`${shape} has no row ${key}: an update or delete needs a row the app can see (insert to create one)`)
    this.name = 'NoRowError'
  }
}

/** Builds one transaction's mutations (see {@link FerriteClient.transaction}). */
export interface TransactionWriter {
  /** A new row: every column the app wants set, primary key included. */
  insert(shape: string, row: Row): void
  /** Changes `set` on the row whose primary key is in `key` (a row or just its key columns). */
  update(shape: string, key: Row, set: Row): void
  /** Removes the row whose primary key is in `key`. */
  delete(shape: string, key: Row): void
}

const RECENT_TXIDS = 2000

/** The client (see the module docs). Create with {@link FerriteClient.open}. */
export class FerriteClient {
  readonly events = new Emitter<ClientEvents>()
  readonly transport: Transport
  readonly clientId: string
  #store: LocalStore
  #shapes = new Map<string, ShapeSync>()
  /** Trees by name, once compiled. */
  #trees = new Map<string, TreeSync>()
  /** The tree each member shape name belongs to (known from the options before compiling). */
  #memberOf = new Map<string, string>()
  #loaded: { records: Map<string, ShapeRecord>; rows: Map<string, Map<string, Row>>; tags: Map<string, Map<string, TagState>> }
  #outbox: PendingTransaction[]
  #views = new Map<string, ReadonlyMap<string, Row>>()
  #recent: Map<string, { lsn?: string; shapes: string[] }>
  #lastHlc: Stamp | undefined
  /** The server's settings (`GET /v1/config`), these defaults until it has answered. */
  #config: Required<Omit<ClientConfig, 'auth_mode'>> = {
    sync_batch_size: 100,
    max_offline_queue: 1000,
    max_clock_skew_ms: 300_000,
    presence_ttl_secs: 30,
    max_mutations_per_transaction: 500,
    max_mutations_per_request: 5000,
  }
  #batchSize = 100
  #pushing = false
  #pushAgain = false
  #closed = new AbortController()
  #shapeErrors = new Map<string, string>()
  #lastStatus = ''
  #channel: BroadcastChannel | undefined
  #rooms = new Map<string, PresenceRoom>()
  #cleanup: (() => void)[] = []
  /** The one held request live shapes wait on (unless `liveRequests: 'long-poll'`). */
  #watcher: Watcher | undefined
  #checksums: ChecksumStats = { verified: 0, mismatches: 0, repairs: 0, unrepaired: 0 }

  private constructor(readonly options: FerriteClientOptions, store: LocalStore, clientId: string, loaded: Awaited<ReturnType<LocalStore['load']>>) {
    this.#store = store
    this.clientId = clientId
    this.transport = new Transport({ token: options.token, fetch: options.fetch })
    this.#outbox = loaded.outbox
    this.#lastHlc = parseHlc(loaded.meta.get('hlc') as string | undefined)
    this.#recent = new Map((loaded.meta.get('recent_txids') as [string, { lsn?: string; shapes: string[] }][] | undefined) ?? [])
    if ((options.liveRequests ?? 'watch') === 'watch') this.#watcher = new Watcher(options.url.replace(/\/$/, ''), this.transport, this.#closed.signal)
    const host: ShapeHost = { ...this.#host(), applyBatch: (b) => this.#applyBatch(b) }
    for (const [name, o] of Object.entries(options.shapes)) {
      this.#shapes.set(name, new ShapeSync(name, o, loaded.shapes.get(name), loaded.rows.get(name), host, loaded.tags.get(name)))
    }
    this.#loaded = { records: loaded.shapes, rows: loaded.rows, tags: loaded.tags }
    for (const [tree, o] of Object.entries(options.trees ?? {})) {
      for (const member of memberNames(tree, o)) {
        if (this.#shapes.has(member) || this.#memberOf.has(member)) {
          throw new Error(`shape name ${JSON.stringify(member)} is used twice (trees and shapes share one namespace)`)
        }
        this.#memberOf.set(member, tree)
      }
      // Compiled before: the tree is there at once, offline too.
      const stored = loaded.meta.get(`tree:${tree}`) as { definition: string; members: [string, ShapeOptions][] } | undefined
      if (stored && stored.definition === JSON.stringify(o)) this.#setTree(tree, stored.members)
    }
  }

  /** What every shape gets from the client, trees' members too (they are compared alike). */
  #host(): Omit<ShapeHost, 'applyBatch'> {
    const checksumIntervalMs = this.options.checksumIntervalMs
    return {
      url: this.#url,
      transport: this.transport,
      shapeError: (shape, reason) => {
        if (reason) this.#shapeErrors.set(shape, reason)
        else this.#shapeErrors.delete(shape)
        this.#emitStatus()
      },
      pollIntervalMs: this.options.pollIntervalMs ?? 10_000,
      watcher: this.#watcher,
      checksumIntervalMs: checksumIntervalMs === undefined ? DEFAULT_CHECKSUM_INTERVAL_MS : checksumIntervalMs,
      checked: (shape, outcome) => {
        const c = this.#checksums
        c.verified++
        if (!outcome.ok) c.mismatches++
        if (outcome.action === 'refetch') c.repairs++
        if (outcome.action === 'gave-up') c.unrepaired++
        this.events.emit('checksum', { shape, ...outcome })
      },
    }
  }

  /** The tree host: its batches go to storage together, then become visible. */
  #treeHost(): TreeHost {
    return { ...this.#host(), applyBatches: (bs, makeVisible) => this.#applyBatches(bs, makeVisible) }
  }

  /** Builds (or rebuilds, when its compiled form changed) tree `name` from its member shapes. */
  #setTree(name: string, members: [string, ShapeOptions][]): TreeSync {
    this.#trees.get(name)?.stop()
    const tree = new TreeSync(name, members, this.#loaded, this.#treeHost())
    // (The members' changes were announced by #applyBatches, once they were visible.)
    tree.onApplied = () => this.#emitStatus()
    this.#trees.set(name, tree)
    return tree
  }

  /** Compiles the trees from the server's foreign keys; a tree whose form changed starts anew. */
  async #compileTrees(): Promise<void> {
    for (const [name, o] of Object.entries(this.options.trees ?? {})) {
      try {
        const members = await compileTree(name, o, (table) => this.#foreignKeys(table))
        const current = this.#trees.get(name)
        const stored = { definition: JSON.stringify(o), members }
        const same = current && JSON.stringify([...current.members].map(([n, m]) => [n, m.options])) === JSON.stringify(members)
        if (!same) {
          await this.#store.write((w) => w.putMeta(`tree:${name}`, stored))
          if (this.#closed.signal.aborted) return
          this.#setTree(name, members).start()
          this.#changed(memberNames(name, o))
        }
      } catch (e) {
        if (e instanceof AbortedError) return
        this.#shapeErrors.set(name, `tree ${name}: ${(e as Error).message}`)
        this.#emitStatus()
      }
    }
  }

  async #foreignKeys([schema, table]: [string, string]): Promise<ForeignKey[]> {
    const q = new URLSearchParams({ table: `"${schema.replace(/"/g, '""')}"."${table.replace(/"/g, '""')}"` })
    const r = await this.transport.fetch(`${this.#url}/v1/foreign-keys?${q}`, { signal: this.#closed.signal })
    const body = (await r.json()) as { foreign_keys?: ForeignKey[]; message?: string }
    if (!r.ok) throw new Error(body.message ?? `foreign keys of ${schema}.${table}: ${r.status}`)
    return body.foreign_keys ?? []
  }

  /**
   * Opens the database, shows what it holds, and starts syncing. Resolves before any network
   * request completes, so an app opened offline renders its stored rows at once.
   */
  static async open(options: FerriteClientOptions): Promise<FerriteClient> {
    const store = await (options.store ?? Store.open)(options.database)
    const loaded = await store.load()
    let clientId = loaded.meta.get('client_id') as string | undefined
    if (!clientId) {
      const bytes = crypto.getRandomValues(new Uint8Array(12))
      clientId = `web-${Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('')}`
      await store.write((b) => b.putMeta('client_id', clientId))
    }
    const client = new FerriteClient(options, store, clientId, loaded)
    client.#start()
    return client
  }

  #start(): void {
    const t = this.transport
    this.#cleanup.push(
      t.events.on('connection', (c) => {
        this.events.emit('connection', c)
        if (c === 'connected') {
          for (const s of this.#allShapes()) s.poke()
          this.#schedulePush()
        }
        this.#emitStatus()
      }),
      t.events.on('error', () => this.#emitStatus()),
    )
    if (typeof window !== 'undefined') {
      const online = () => {
        for (const s of this.#shapes.values()) s.start()
        for (const t of this.#trees.values()) t.start()
        if (this.#trees.size < Object.keys(this.options.trees ?? {}).length) void this.#compileTrees()
        this.transport.retryNow()
        this.#schedulePush()
      }
      const offline = () => {
        // A live request in flight can outlive the network (and the browser's offline mode may
        // keep it): end the streams, so nothing arrives while the browser says offline. They
        // start again from the stored positions when it is back.
        for (const s of this.#shapes.values()) s.stop()
        for (const t of this.#trees.values()) t.stop()
        this.transport.markOffline()
      }
      window.addEventListener('online', online)
      window.addEventListener('offline', offline)
      this.#cleanup.push(() => window.removeEventListener('online', online), () => window.removeEventListener('offline', offline))
      if (navigator.onLine === false) this.transport.markOffline()
    }
    if (typeof BroadcastChannel !== 'undefined') {
      this.#channel = new BroadcastChannel(`ferrite:${this.options.database}`)
      this.#channel.onmessage = () => void this.#reloadOutbox()
    }
    void this.#loadConfig()
    for (const s of this.#shapes.values()) s.start()
    for (const t of this.#trees.values()) t.start()
    void this.#compileTrees()
    this.#schedulePush()
    this.#emitStatus()
  }

  async #loadConfig(): Promise<void> {
    try {
      const r = await this.transport.fetch(`${this.#url}/v1/config`, { signal: this.#closed.signal })
      if (r.ok) {
        const config = (await r.json()) as ClientConfig
        // Servers before the mutation limits leave them out: keep the defaults then.
        for (const [k, v] of Object.entries(config)) if (k in this.#config && typeof v === 'number') Object.assign(this.#config, { [k]: v })
        this.#batchSize = Math.max(1, this.#config.sync_batch_size)
      }
    } catch (e) {
      if (!(e instanceof AbortedError)) console.warn('[ferrite] reading /v1/config', e)
    }
  }

  get #url(): string {
    return this.options.url.replace(/\/$/, '')
  }

  // ---- reading -------------------------------------------------------------------------------

  /** Every shape synced, trees' members included. */
  #allShapes(): ShapeSync[] {
    const all = [...this.#shapes.values()]
    for (const t of this.#trees.values()) all.push(...t.members.values())
    return all
  }

  #shape(name: string): ShapeSync {
    const s = this.#shapes.get(name) ?? this.#trees.get(this.#memberOf.get(name) ?? '')?.members.get(name)
    if (!s) throw new Error(`unknown shape ${JSON.stringify(name)} (known: ${[...this.#shapes.keys(), ...this.#memberOf.keys()].join(', ')})`)
    return s
  }

  /** The server rows the app sees of a shape: a tree member's at the tree's last common point. */
  #serverRows(name: string): ReadonlyMap<string, Row> {
    const tree = this.#memberOf.get(name)
    if (tree !== undefined) {
      const t = this.#trees.get(tree)
      return t?.visible.get(name) ?? new Map()
    }
    return this.#shape(name).rows
  }

  #view(name: string): ReadonlyMap<string, Row> {
    let v = this.#views.get(name)
    if (!v) {
      v = overlay(this.#serverRows(name), this.#outbox, name)
      this.#views.set(name, v)
    }
    return v
  }

  /** The rows of a shape as the app should show them: server rows with pending writes on top. */
  rows(shape: string): Row[] {
    return [...this.#view(shape).values()]
  }

  /** One row by primary key (a row or its key columns), or undefined. */
  get(shape: string, key: Row): Row | undefined {
    if (this.#memberOf.has(shape) && !this.#trees.has(this.#memberOf.get(shape)!)) return undefined
    return this.#view(shape).get(keyOf(key, this.#shape(shape).key))
  }

  /** Whether the shape has stored or synced rows (false before its first sync completes). */
  isLoaded(shape: string): boolean {
    const tree = this.#memberOf.get(shape)
    if (tree !== undefined) {
      const t = this.#trees.get(tree)
      return t !== undefined && (t.upToDate || [...t.members.values()].every((m) => m.hasStoredState))
    }
    const s = this.#shape(shape)
    return s.hasStoredState || s.upToDate
  }

  /**
   * One tree's sync status (see {@link SyncStatus}): synced once all its shapes stand at a
   * common point with nothing held back; syncing meanwhile; offline or error as the client.
   */
  treeStatus(name: string): SyncStatus {
    const s = this.status
    if (s.state === 'offline' || s.state === 'error') return s
    const t = this.#trees.get(name)
    const settled = t !== undefined && t.upToDate && t.held === 0 && [...t.members.values()].every((m) => m.upToDate)
    if (!settled) return { state: 'syncing', pending: s.pending }
    return s
  }

  /** Subscribes to an event; returns the function that unsubscribes. */
  on<K extends keyof ClientEvents>(event: K, listener: (payload: ClientEvents[K]) => void): () => void {
    return this.events.on(event, listener)
  }

  /** Writes not yet confirmed by the server (queued or waiting for their txid). */
  get pending(): number {
    return this.#outbox.length
  }

  /** Comparisons of shapes with the server's convergence digest since the client opened. */
  get checksums(): Readonly<ChecksumStats> {
    return { ...this.#checksums }
  }

  /** The pending transactions, oldest first. */
  get pendingTransactions(): readonly PendingTransaction[] {
    return this.#outbox
  }

  /** The connection state. */
  get connection(): ConnectionState {
    return this.transport.connection
  }

  /** The sync status (see {@link SyncStatus}). */
  get status(): SyncStatus {
    const pending = this.#outbox.length
    const err = this.transport.error
    const shapeError = [...this.#shapeErrors.values()][0]
    if (err || shapeError) {
      const retryAt = err?.retryAt ?? Date.now()
      return { state: 'error', pending, reason: err?.reason ?? shapeError!, retryAt, retryIn: Math.max(0, retryAt - Date.now()) }
    }
    if (this.transport.reachable === false) return { state: 'offline', pending }
    const catchingUp =
      [...this.#shapes.values()].some((s) => !s.upToDate) ||
      [...this.#trees.values()].some((t) => !t.upToDate || t.held > 0) ||
      this.#trees.size < Object.keys(this.options.trees ?? {}).length
    if (pending > 0 || catchingUp || this.transport.connection !== 'connected') return { state: 'syncing', pending }
    return { state: 'synced', pending: 0 }
  }

  #emitStatus(): void {
    const s = this.status
    const text = JSON.stringify({ ...s, retryIn: undefined })
    if (text !== this.#lastStatus) {
      this.#lastStatus = text
      this.events.emit('status', s)
    }
  }

  #changed(shapes: Iterable<string>): void {
    const set = new Set(shapes)
    if (set.size === 0) return
    for (const s of set) this.#views.delete(s)
    this.events.emit('change', set)
  }

  /** Tries everything now instead of waiting for the backoff (e.g. a Retry button). */
  retryNow(): void {
    this.transport.retryNow()
    for (const s of this.#allShapes()) s.poke()
    if (this.#trees.size < Object.keys(this.options.trees ?? {}).length) void this.#compileTrees()
    this.#schedulePush()
  }

  // ---- applying shape batches ----------------------------------------------------------------

  async #applyBatch(b: ShapeBatch): Promise<void> {
    await this.#applyBatches([b])
  }

  /**
   * Stores batches together (a tree's, at a common point): rows, positions, outbox updates.
   * Once stored, `makeVisible` puts the rows where the app reads them (a tree's members show
   * them only now; a flat shape's rows are in memory already), and only then are the writes
   * they confirm taken off the outbox: a confirmed row never disappears for a moment between
   * its pending copy and the synced one.
   */
  async #applyBatches(bs: ShapeBatch[], makeVisible?: () => void): Promise<void> {
    let updated: PendingTransaction[] = []
    for (const b of bs) {
      for (const { txid, lsn } of b.txids) {
        const r = this.#recent.get(txid) ?? { lsn, shapes: [] }
        if (!r.shapes.includes(b.shape)) r.shapes.push(b.shape)
        r.lsn ??= lsn
        this.#recent.delete(txid)
        this.#recent.set(txid, r)
      }
      while (this.#recent.size > RECENT_TXIDS) this.#recent.delete(this.#recent.keys().next().value!)
      const noted = this.#noteCoverage(b.snapshots.length > 0 ? { shape: b.shape, snapshots: b.snapshots } : undefined)
      updated = [...new Set([...updated, ...noted])]
    }
    const retired = this.#retirable(bs)
    const retiredIds = new Set(retired.map((t) => t.id))
    const changed = new Set<string>()
    for (const b of bs) if (b.replaced || b.upserts.size > 0 || b.deletes.size > 0) changed.add(b.shape)
    for (const t of retired) for (const s of touchedShapes(t)) changed.add(s)
    try {
      await this.#store.write((w) => {
        for (const b of bs) {
          if (b.replaced) {
            w.clearShape(b.shape)
            for (const [k, row] of b.replaced) w.putRow(b.shape, k, row, b.tags.get(k))
          } else {
            for (const [k, row] of b.upserts) w.putRow(b.shape, k, row, b.tags.get(k))
            for (const k of b.deletes) w.deleteRow(b.shape, k)
          }
          if (b.position) w.putShape(b.position)
        }
        for (const t of retired) if (t.id !== undefined) w.deleteTransaction(t.id)
        for (const t of updated) if (t.id !== undefined && !retiredIds.has(t.id)) w.putTransaction(t)
        if (bs.some((b) => b.txids.length > 0)) w.putMeta('recent_txids', [...this.#recent])
      })
    } catch (e) {
      this.transport.reportError({ reason: `storing synced rows failed: ${(e as Error).message}`, retryAt: Date.now() }, 'storage')
      throw e
    }
    this.transport.reportError(undefined, 'storage')
    makeVisible?.()
    this.#outbox = this.#outbox.filter((t) => !retired.includes(t))
    this.#changed(changed)
    this.#emitStatus()
    if (retired.length > 0) this.#tellOtherTabs()
  }

  /** Marks which shapes have shown each answered transaction; returns the ones that changed. */
  #noteCoverage(snap?: { shape: string; snapshots: ShapeBatch['snapshots'] }): PendingTransaction[] {
    const updated: PendingTransaction[] = []
    for (const t of this.#outbox) {
      if (t.state !== 'answered' || t.txid === undefined) continue
      const before = `${t.covered.join()}|${t.seenLsn}`
      const r = this.#recent.get(t.txid)
      if (r) {
        for (const s of r.shapes) if (!t.covered.includes(s)) t.covered.push(s)
        t.seenLsn ??= r.lsn
      }
      if (snap && !t.covered.includes(snap.shape)) {
        const x = Number(t.txid)
        if (snap.snapshots.some((s) => visibleInSnapshot(x, s.xmin, s.xmax, s.xip))) t.covered.push(snap.shape)
      }
      if (`${t.covered.join()}|${t.seenLsn}` !== before) updated.push(t)
    }
    return updated
  }

  /**
   * The answered writes every shape they touch has shown. A tree member counts from the
   * position of what is visible: its stored position, or the one `applying` brings.
   */
  #retirable(applying: ShapeBatch[] = []): PendingTransaction[] {
    const lastLsn = (s: string): string | undefined => {
      if (!this.#memberOf.has(s)) return this.#shapes.get(s)?.record.lastLsn
      const pos = [...applying].reverse().find((b) => b.shape === s && b.position)?.position
      return pos?.lastLsn ?? this.#trees.get(this.#memberOf.get(s)!)?.applied.get(s)?.lastLsn
    }
    return this.#outbox.filter((t) =>
      isCovered(
        t,
        // A write-only shape never shows a write back: answered is enough.
        (s) => (this.#shapes.has(s) && !this.#shapes.get(s)!.options.writeOnly) || this.#trees.has(this.#memberOf.get(s) ?? ''),
        lastLsn,
      ),
    )
  }

  // ---- writing -------------------------------------------------------------------------------

  /**
   * Makes one transaction: the changes `build` records are applied to what the app reads at
   * once and queued to be sent; they reach Postgres together or not at all. Resolves with the
   * transaction's id once it is stored (durable across reloads).
   *
   * Throws (changing nothing) on an unknown shape, a missing primary key, an update of a primary
   * key column, an update or delete of a row the app cannot see ({@link NoRowError}), an empty
   * transaction, or a full queue ({@link QueueFullError}).
   */
  async transaction(build: (tx: TransactionWriter) => void): Promise<number> {
    if (this.#outbox.length >= this.#config.max_offline_queue) throw new QueueFullError(this.#config.max_offline_queue)
    const mutations: Mutation[] = []
    build({
      insert: (shape, row) => {
        const s = this.#shape(shape)
        mutations.push({ op: 'insert', shape, key: keyOf(row, s.key), value: { ...row } })
      },
      update: (shape, key, set) => {
        const s = this.#shape(shape)
        for (const c of s.key) if (c in set && set[c] !== key[c]) throw new Error(`${shape}: the primary key column ${c} cannot be changed`)
        if (Object.keys(set).length === 0) throw new Error(`${shape}: an update needs at least one column to set`)
        const k = keyOf(key, s.key)
        if (!this.#rowBefore(shape, k, mutations)) throw new NoRowError(shape, k)
        mutations.push({ op: 'update', shape, key: k, keyValues: keyValues(key, s.key), value: { ...set }, base: this.#base(shape, k, mutations, Object.keys(set)) })
      },
      delete: (shape, key) => {
        const s = this.#shape(shape)
        const k = keyOf(key, s.key)
        if (!this.#rowBefore(shape, k, mutations)) throw new NoRowError(shape, k)
        mutations.push({ op: 'delete', shape, key: k, keyValues: keyValues(key, s.key), base: this.#base(shape, k, mutations) })
      },
    })
    if (mutations.length === 0) throw new Error('a transaction needs at least one change')
    const most = this.#config.max_mutations_per_transaction
    if (mutations.length > most) throw new Error(`a transaction holds at most ${most} changes (the server's limit), got ${mutations.length}`)
    this.#lastHlc = nextHlc(this.#lastHlc, Date.now())
    const t: PendingTransaction = { hlc: formatHlc(this.#lastHlc), mutations, createdAt: Date.now(), state: 'queued', covered: [] }
    this.#outbox.push(t)
    this.#changed(touchedShapes(t))
    this.#emitStatus()
    try {
      t.id = await this.#store.append(t)
    } catch (e) {
      // Not stored: take it back out, so what the app sees is what will be sent.
      this.#outbox = this.#outbox.filter((x) => x !== t)
      this.#changed(touchedShapes(t))
      this.#emitStatus()
      throw e
    }
    this.#tellOtherTabs()
    this.#schedulePush()
    return t.id
  }

  /**
   * What the app saw of a row before this change (its `columns`, or all of it), as text: the
   * `base` a server-wins table applies a change on top of. Earlier changes of the same
   * transaction count as seen. Undefined for a row the app does not know.
   */
  #base(shape: string, key: string, earlier: readonly Mutation[], columns?: string[]): TextValues | undefined {
    const row = this.#rowBefore(shape, key, earlier)
    if (!row) return undefined
    const seen = columns ? Object.fromEntries(columns.filter((c) => c in row).map((c) => [c, row[c]])) : row
    return rowToText(seen)
  }

  /** The row as the app sees it, with the earlier changes of the same transaction applied. */
  #rowBefore(shape: string, key: string, earlier: readonly Mutation[]): Row | undefined {
    let row: Row | undefined = this.#view(shape).get(key)
    for (const m of earlier) {
      if (m.shape !== shape || m.key !== key) continue
      row = m.op === 'delete' ? undefined : m.op === 'insert' ? { ...m.value } : row && { ...row, ...m.value }
    }
    return row
  }

  #schedulePush(): void {
    if (this.#closed.signal.aborted) return
    if (this.#pushing) {
      this.#pushAgain = true
      return
    }
    this.#pushing = true
    queueMicrotask(() => void this.#pushLoop())
  }

  async #withLock<T>(fn: () => Promise<T>): Promise<T> {
    const locks = typeof navigator !== 'undefined' ? navigator.locks : undefined
    if (!locks) return fn()
    return locks.request(`ferrite-push:${this.options.database}`, fn) as Promise<T>
  }

  async #pushLoop(): Promise<void> {
    let attempt = 0
    try {
      for (;;) {
        this.#pushAgain = false
        // Closed meanwhile: its store is closed too; the next client of the database sends.
        if (this.#closed.signal.aborted) break
        const outcome = await this.#withLock(() => (this.#closed.signal.aborted ? Promise.resolve('done' as const) : this.#pushOnce()))
        if (outcome === 'done') {
          if (!this.#pushAgain) break
        } else if (outcome === 'failed') {
          await this.transport.backoff(attempt++, this.#closed.signal)
        } else attempt = 0
      }
    } catch (e) {
      if (!(e instanceof AbortedError)) console.error('[ferrite] pushing writes failed', e)
    } finally {
      this.#pushing = false
    }
  }

  /** Sends one batch of queued transactions: `done` (nothing queued), `sent`, or `failed`. */
  async #pushOnce(): Promise<'done' | 'sent' | 'failed'> {
    const stored = await this.#store.outbox()
    // At most sync_batch_size transactions holding at most max_mutations_per_request changes
    // (always at least one: the server judges a lone one by its per-transaction limit).
    const queued: PendingTransaction[] = []
    let changes = 0
    for (const t of stored) {
      if (t.state !== 'queued') continue
      if (queued.length >= this.#batchSize) break
      if (queued.length > 0 && changes + t.mutations.length > this.#config.max_mutations_per_request) break
      queued.push(t)
      changes += t.mutations.length
    }
    if (queued.length === 0) return 'done'
    const body = JSON.stringify({ client_id: this.clientId, transactions: queued.map((t) => this.#wire(t)) })
    const r = await this.transport.fetch(`${this.#url}/v1/transactions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body,
      signal: this.#closed.signal,
    })
    if (r.status === 200) {
      const { results } = (await r.json()) as TransactionsResponse
      await this.#recordResults(results, stored)
      return 'sent'
    }
    if (r.status === 413 && queued.length > 1) {
      this.#batchSize = Math.max(1, Math.floor(queued.length / 2))
      return 'sent'
    }
    if (r.status === 413) {
      // One transaction alone is too large for the server: it can never be sent.
      await this.#recordResults([{ id: queued[0]!.id!, status: 'rejected', error: { code: 'too_large', message: await describe(r) } }], stored)
      return 'sent'
    }
    this.transport.reportError({ reason: `sending changes: ${await describe(r)}`, retryAt: Date.now() + 1000 }, '/v1/transactions')
    return 'failed'
  }

  #wire(t: PendingTransaction): ClientTransaction {
    if (t.id === undefined) throw new Error('a transaction is sent only once stored (it has no id yet)')
    return {
      id: t.id,
      hlc: t.hlc,
      mutations: t.mutations.map((m) => {
        const table = this.#shape(m.shape).options.table
        switch (m.op) {
          case 'insert':
            return { op: 'insert', table, value: rowToText(m.value) }
          case 'update':
            return { op: 'update', table, key: m.keyValues, value: rowToText(m.value), ...(m.base ? { base: m.base } : {}) }
          case 'delete':
            return { op: 'delete', table, key: m.keyValues, ...(m.base ? { base: m.base } : {}) }
        }
      }),
    }
  }

  async #recordResults(results: Array<TransactionResult | TooLarge>, stored: PendingTransaction[]): Promise<void> {
    // Other tabs may have queued some of these: know them all.
    for (const t of stored) if (t.id !== undefined && !this.#outbox.some((x) => x.id === t.id)) this.#outbox.push(t)
    this.#outbox.sort((a, b) => (a.id ?? Infinity) - (b.id ?? Infinity))
    const gone: PendingTransaction[] = []
    const rejections: Rejection[] = []
    const merges: Merge[] = []
    for (const r of results) {
      const t = this.#outbox.find((x) => x.id === r.id)
      if (!t) continue
      if (r.status === 'merged' && r.overridden?.length) merges.push({ id: r.id, lost: this.#lostChanges(t, r.overridden), transaction: t })
      if (r.status === 'rejected') {
        gone.push(t)
        const e = r.error ?? { code: 'invalid', message: 'rejected' }
        rejections.push({ id: r.id, code: e.code, message: e.message, table: e.table ?? undefined, key: e.key ?? undefined, transaction: t })
      } else if (r.unchanged) {
        gone.push(t)
      } else {
        t.state = 'answered'
        t.txid = r.txid ?? undefined
      }
    }
    const updated = this.#noteCoverage()
    const retired = [...gone, ...this.#retirable()]
    const changed = new Set<string>()
    for (const t of retired) for (const s of touchedShapes(t)) changed.add(s)
    this.#outbox = this.#outbox.filter((t) => !retired.includes(t))
    await this.#store.write((w) => {
      for (const t of retired) if (t.id !== undefined) w.deleteTransaction(t.id)
      for (const t of this.#outbox) if (t.id !== undefined && (t.state === 'answered' || updated.includes(t))) w.putTransaction(t)
    })
    this.#changed(changed)
    this.#emitStatus()
    for (const r of rejections) this.events.emit('rejected', r)
    for (const m of merges) this.events.emit('merged', m)
    this.#tellOtherTabs()
  }

  /** Each overridden row of a merged result with the mutation that wrote it (the last on the row). */
  #lostChanges(t: PendingTransaction, overridden: Overridden[]): LostChange[] {
    return overridden.map((o) => {
      const lost: LostChange = { shape: '', table: o.table, key: o.key, columns: o.columns, mine: {} }
      for (const m of t.mutations) {
        const shape = this.#shape(m.shape)
        const key = m.op === 'insert' ? keyValues(m.value, shape.key) : m.keyValues
        const same = shape.options.table === o.table && Object.entries(o.key).every(([c, v]) => key[c] === v)
        if (!same) continue
        lost.shape = m.shape
        if (m.op !== 'delete') for (const c of o.columns) if (c in m.value) lost.mine[c] = m.value[c]!
      }
      return lost
    })
  }

  /** Tells the other tabs on this database that the outbox changed (not once closed: a write
   *  still finishing after `close()` has no one here to tell). */
  #tellOtherTabs(): void {
    if (!this.#closed.signal.aborted) this.#channel?.postMessage('outbox')
  }

  /** Another tab changed the outbox: take the stored one (keeping writes still being stored). */
  async #reloadOutbox(): Promise<void> {
    const stored = await this.#store.outbox()
    const unsaved = this.#outbox.filter((t) => t.id === undefined)
    const before = new Set(this.#outbox.flatMap((t) => [...touchedShapes(t)]))
    this.#outbox = [...stored, ...unsaved]
    const after = this.#outbox.flatMap((t) => [...touchedShapes(t)])
    this.#changed([...before, ...after])
    this.#emitStatus()
    this.#schedulePush()
  }

  // ---- presence ------------------------------------------------------------------------------

  /** The presence room `room` (one object per room per client). */
  presence(room: string): PresenceRoom {
    let r = this.#rooms.get(room)
    if (!r) {
      r = new PresenceRoom({ url: this.#url, transport: this.transport, clientId: this.clientId, ttlSecs: () => this.#config.presence_ttl_secs }, room)
      this.#rooms.set(room, r)
    }
    return r
  }

  /** Leaves a presence room and forgets it. */
  leavePresence(room: string): void {
    this.#rooms.get(room)?.leave()
    this.#rooms.delete(room)
  }

  /** Stops syncing and closes the database (leaving presence rooms). */
  close(): void {
    this.#closed.abort()
    for (const s of this.#shapes.values()) s.stop()
    for (const t of this.#trees.values()) t.stop()
    for (const r of this.#rooms.values()) r.leave()
    this.#rooms.clear()
    for (const c of this.#cleanup) c()
    this.#channel?.close()
    this.#store.close()
  }
}

/** A transaction the client refuses itself: alone, it is larger than the server accepts. */
interface TooLarge {
  id: number
  status: 'rejected'
  error: { code: 'too_large'; message: string; table?: undefined; key?: undefined }
}

/** The shape names a tree's members are read under: the tree's, and each include's. */
function memberNames(tree: string, o: TreeOptions): string[] {
  const names = [tree]
  const walk = (includes: TreeOptions['include']) => {
    for (const [name, inc] of Object.entries(includes ?? {})) {
      names.push(name)
      walk(inc.include)
    }
  }
  walk(o.include)
  return names
}
