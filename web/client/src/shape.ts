/**
 * One synced shape: a `ShapeStream` of the official `@electric-sql/client`, resumed from the
 * handle and offset stored with the shape's rows, whose messages are applied to the shape's
 * server rows batch by batch.
 *
 * A shape that starts over (first sync, or the server answering 409 must-refetch — e.g. because
 * the caller's token now grants different rows) is rebuilt aside and swapped in whole at its
 * first up-to-date, so readers never see a half-loaded shape and a reload in between still finds
 * the previous complete state.
 *
 * A transaction larger than the server's chunk size arrives over several responses; its pieces
 * are held back and applied together with the response that ends it, so readers never see part
 * of a transaction either.
 *
 * From time to time, at an up-to-date, the rows are compared with the server's convergence
 * digest (see `digest.ts`); a shape that differs (storage damaged or edited behind the client's
 * back) starts over the same way.
 */

import { ShapeStream, isChangeMessage, isControlMessage, type Message, type Row as ElectricRow } from '@electric-sql/client'
import type { ShapeRecord } from './storage.js'
import type { Transport } from './transport.js'
import { TagIndex, type TagState } from './tags.js'
import { keyOf, type Row } from './values.js'
import { digestInSlices, formatDigest, parseDigest, type Digest } from './digest.js'
import { nextQuery, type Watcher } from './watch.js'

/** What to sync, and how. */
export interface ShapeOptions {
  /** Server table (`name` or `schema.name`). */
  table: string
  /** A where clause (the server ANDs the caller's read rule into it). */
  where?: string
  /** Values for `$1…$n` in `where`. */
  params?: string[]
  /** Columns to sync (must include the primary key); all when omitted. */
  columns?: string[]
  /** Primary-key columns (default `["id"]`). */
  key?: string[]
  /**
   * `true` (default): a live stream, changes arrive as they happen. `false`: caught up now and
   * again every `pollIntervalMs` of the client and whenever the connection comes back — for
   * rarely changing tables, so they do not hold one of the browser's six connections per server.
   */
  live?: boolean
  /**
   * Written, never read: the client makes no request for it — for a table the caller may add
   * rows to but not read (a site visitor's leads). Its writes show locally until the server has
   * answered them (no shape will ever show them back), then leave the outbox.
   */
  writeOnly?: boolean
}

/** A Postgres snapshot (from a `snapshot-end` message). */
export interface SnapshotBounds {
  xmin: bigint
  xmax: bigint
  xip: bigint[]
}

/** What one batch of messages did, for the client to persist and reconcile. */
export interface ShapeBatch {
  shape: string
  /** Rows now present (inserted or updated), by key. */
  upserts: Map<string, Row>
  /** Relational shapes: why rows of `upserts` (or `replaced`) are in the shape, to store with them. */
  tags: Map<string, TagState>
  /** Keys removed. */
  deletes: Set<string>
  /** Set when the shape was rebuilt: every row it now has. */
  replaced?: Map<string, Row>
  /** Transaction ids this batch delivered, with their commit LSN. */
  txids: { txid: string; lsn?: string }[]
  /** Snapshots a rebuild was taken at. */
  snapshots: SnapshotBounds[]
  /** The position to store (undefined while a rebuild is in progress). */
  position?: ShapeRecord
  /** The batch ended with up-to-date. */
  upToDate: boolean
  /** The offset the shape's log stands at after the batch. */
  end?: string
  /** Of an up-to-date batch: the position the shape is complete up to — its
   * `global_last_seen_lsn`, or the earlier `ferrite-complete-lsn` of a relational shape whose
   * move-in is still to come (include trees wait for it). */
  completeLsn?: string
}

/** Dependencies a shape gets from its client. */
export interface ShapeHost {
  url: string
  transport: Transport
  /** Persists and reconciles a batch; the stream waits for it before its next request. */
  applyBatch(batch: ShapeBatch): Promise<void>
  /** A non-retryable error (4xx) of this shape; the shape restarts after a backoff. */
  shapeError(shape: string, reason: string | undefined): void
  pollIntervalMs: number
  /**
   * When set, a live shape holds no long-poll of its own: once up to date it waits on this
   * watcher's one request for all shapes, then catches up (see `watch.ts`).
   */
  watcher?: Watcher
  /**
   * A watched shape with nothing new is complete through `completeLsn` (a watch answer said so);
   * its position is unchanged. Include trees use it to reach a common point.
   */
  advanced?(shape: string, completeLsn: string): void
  /**
   * How often (ms) the shape's rows are compared with the server's digest at an up-to-date;
   * undefined or null: never (see `digest.ts`). A shape resumed from storage is checked at its
   * first up-to-date, then every interval. The digest is the one the last change carried
   * (`ferrite_digest`) or, for shapes without one (subqueries, time windows, include trees'
   * members), the one `GET /v1/shape/digest` computes for the same handle and offset.
   */
  checksumIntervalMs?: number | null
  /** The outcome of each comparison with the server's digest. */
  checked?(shape: string, outcome: ChecksumOutcome): void
}

/** One comparison of a shape's rows with the server's digest. */
export interface ChecksumOutcome {
  /** The rows are what the server sent. */
  ok: boolean
  /** The digests, in the header form. */
  local: string
  server: string
  /** What the client did: nothing, fetch the shape afresh, or give up (it still differed right after a refetch). */
  action: 'none' | 'refetch' | 'gave-up'
}

/** The definition part of a shape (what makes two shapes the same), as stored. */
export function definitionOf(o: ShapeOptions): string {
  return JSON.stringify({ table: o.table, where: o.where ?? null, params: o.params ?? null, columns: o.columns ?? null })
}

/** A synced shape (see the module docs). */
export class ShapeSync {
  readonly key: string[]
  readonly definition: string
  /** The server's rows, as of the last applied batch. */
  rows: Map<string, Row>
  /** Relational shapes: why each of those rows is in the shape (see `tags.ts`). */
  tags: TagIndex
  /** Reached up-to-date since it (re)started. */
  upToDate = false
  /** The stored position. */
  record: ShapeRecord
  #staging: Staging | undefined
  /** When the rows were last compared with the server's digest (ms; -Infinity: due at once). */
  #checkedAt: number
  /** A comparison with the server's digest in progress (`#compare`). */
  #comparing: AbortController | undefined
  /** A check fell due while one was in progress: it is made when that one is done. */
  #missed = false
  /** Fetched afresh after a mismatch: compared again at its next up-to-date. */
  #repairing = false
  /** Still differed after a refetch: not fetched afresh again (that would loop). */
  #gaveUp = false
  #abort: AbortController | undefined
  #timer: ReturnType<typeof setTimeout> | undefined
  #errors = 0
  #running = false
  /** `ferrite-complete-lsn` of the latest responses, by the offset they end at. */
  #completeAt = new Map<string, string>()
  /** The query of the next request, from the last successful response (for the watcher). */
  #nextQuery: string | undefined
  /** Waiting on the watcher (not on a request of its own). */
  #watching = false

  constructor(
    readonly name: string,
    readonly options: ShapeOptions,
    record: ShapeRecord | undefined,
    rows: Map<string, Row> | undefined,
    private readonly host: ShapeHost,
    tags?: Map<string, TagState>,
  ) {
    this.key = options.key ?? ['id']
    this.definition = definitionOf(options)
    if (record && record.definition === this.definition) {
      this.record = record
      this.rows = rows ?? new Map()
      this.tags = new TagIndex(tags)
    } else {
      this.record = { name, definition: this.definition, offset: '-1' }
      this.rows = new Map()
      this.tags = new TagIndex()
      this.#staging = newStaging()
    }
    // Rows read back from storage are checked at once; rows fetched now, after an interval.
    this.#checkedAt = this.#staging ? Date.now() : -Infinity
  }

  /** Whether a stored state was found (the app can show rows before any request). */
  get hasStoredState(): boolean {
    return this.record.offset !== '-1'
  }

  get live(): boolean {
    return this.options.live ?? true
  }

  /** Starts (or restarts) syncing from the stored position (never, for a write-only shape). */
  start(): void {
    this.#halt()
    if (this.options.writeOnly) {
      this.upToDate = true
      return
    }
    this.#running = true
    const abort = new AbortController()
    this.#abort = abort
    const params: { table: string; where?: string; params?: string[]; columns?: string[] } = { table: this.options.table }
    if (this.options.where) params.where = this.options.where
    if (this.options.params) params.params = this.options.params
    if (this.options.columns) params.columns = this.options.columns
    const resume = this.#staging === undefined && this.record.offset !== '-1' && this.record.handle
    const stream = new ShapeStream<ElectricRow>({
      url: `${this.host.url}/v1/shape`,
      params,
      offset: resume ? (this.record.offset as `${number}_${number}`) : undefined,
      handle: resume ? this.record.handle : undefined,
      subscribe: this.live && !this.host.watcher,
      signal: abort.signal,
      fetchClient: async (input, init) => {
        const url = input instanceof Request ? input.url : String(input)
        const r = await this.host.transport.fetch(url, init)
        const offset = r.headers.get('electric-offset')
        const handle = r.headers.get('electric-handle')
        if (r.ok && offset && handle) this.#nextQuery = nextQuery(url, handle, offset)
        if (offset) {
          const complete = r.headers.get('ferrite-complete-lsn')
          if (complete) this.#completeAt.set(offset, complete)
          else this.#completeAt.delete(offset)
          while (this.#completeAt.size > 32) this.#completeAt.delete(this.#completeAt.keys().next().value!)
        }
        return r
      },
      warnOnHttp: false,
      onError: (error) => {
        if (abort.signal.aborted) return
        this.#errors++
        const reason = `shape ${this.name}: ${error.message}`
        this.host.shapeError(this.name, reason)
        // Start again from the stored position once the backoff has passed.
        void this.host.transport.backoff(this.#errors - 1, abort.signal).then(
          () => this.#running && this.start(),
          () => {},
        )
      },
    })
    // Pieces of a transaction that continues in the next response (dropped with this stream: a
    // restart resumes from the stored position, which is before them).
    let held: Message<Row>[] = []
    stream.subscribe(async (messages) => {
      if (abort.signal.aborted) return
      const all = held.length ? [...held, ...(messages as Message<Row>[])] : (messages as Message<Row>[])
      if (endsInsideTransaction(all)) {
        held = all
        return
      }
      held = []
      await this.#onMessages(all, stream, abort.signal)
    })
  }

  /** Stops syncing (rows and position stay); a comparison still waiting for the server is dropped. */
  stop(): void {
    this.#halt()
    this.#comparing?.abort()
  }

  /** Ends the stream (restarting keeps a comparison that is out: it is of rows still held). */
  #halt(): void {
    this.#running = false
    this.#watching = false
    this.#abort?.abort()
    this.#abort = undefined
    if (this.#timer) clearTimeout(this.#timer)
    this.#timer = undefined
  }

  /** A polled or watching shape catches up now (e.g. when the connection comes back). */
  poke(): void {
    if (this.#running && (this.#watching || (!this.live && this.#timer))) this.start()
  }

  /**
   * When due, compares the rows with the server's digest (see `digest.ts`), in the background
   * (`#compare`): the stream goes on meanwhile. Rows with pending local writes need no
   * exception: the app's overlay is not in `rows`.
   */
  #verify(): void {
    const interval = this.host.checksumIntervalMs
    if (interval === undefined || interval === null) return
    if (!this.#repairing && Date.now() - this.#checkedAt < interval) return
    if (this.#comparing) this.#missed = true
    else void this.#compare()
  }

  /**
   * Compares the rows as they stand now — at the stored offset: a check is made between batches
   * — with the server's digest of the same point: the one the last change carried, or, for a
   * shape without one (subqueries, time windows, include trees' members), the one
   * `GET /v1/shape/digest` computes for the same handle and offset. That costs the server a
   * replay of the shape's log, so it is asked only when a check is due. The rows are digested in
   * slices, so a large shape never holds the page for long. The result is dropped when the shape
   * was stopped or started over in between; no answer at all (the server cannot tell, the handle
   * is gone, it is busy or unreachable) makes no outcome: the next due check asks again. A check
   * that fell due meanwhile is made as soon as this one is done.
   */
  async #compare(): Promise<void> {
    const { handle, offset, digest: carried } = this.record
    // The definition exactly as the stream sends it (params, quoted columns), at this point.
    if (carried === undefined && (!handle || !this.#nextQuery)) return
    this.#checkedAt = Date.now()
    this.#missed = false
    const rows = this.rows
    const snapshot = [...rows.values()]
    const comparing = new AbortController()
    this.#comparing = comparing
    let judged: { local: Digest; server: string | undefined } | undefined
    try {
      const server = carried ?? this.#askServer(nextQuery(`?${this.#nextQuery}`, handle!, offset), comparing.signal)
      const [local, theirs] = await Promise.all([digestInSlices(snapshot, comparing.signal), server])
      judged = { local, server: theirs }
    } catch (e) {
      if (!comparing.signal.aborted) console.debug(`[ferrite] shape ${this.name}: not compared: ${(e as Error).message}`)
    } finally {
      if (this.#comparing === comparing) this.#comparing = undefined
    }
    if (comparing.signal.aborted || this.#staging || !judged) return
    if (judged.server !== undefined && this.rows === rows && this.#judge(judged.local, judged.server)) return
    if (this.#missed) this.#verify()
  }

  /** The server's digest at the point `query` names (a digest, or undefined: it gave none). */
  async #askServer(query: string, signal: AbortSignal): Promise<string | undefined> {
    const r = await this.host.transport.fetch(`${this.host.url}/v1/shape/digest?${query}`, { signal }, { once: true })
    if (!r.ok) {
      await r.body?.cancel()
      console.debug(`[ferrite] shape ${this.name}: not compared, the server's digest answered ${r.status}`)
      return undefined
    }
    const body = (await r.json()) as { digest?: unknown; reason?: unknown }
    if (typeof body.digest === 'string') return body.digest
    console.debug(`[ferrite] shape ${this.name}: not compared, the server cannot tell (${String(body.reason)})`)
    return undefined
  }

  /**
   * Reports one comparison; on a mismatch starts the shape over (rebuilt aside, swapped in
   * whole) and returns true — unless it still differs right after doing so: then it is given up
   * on, as fetching it afresh again would loop.
   */
  #judge(local: Digest, server: string): boolean {
    const theirs = parseDigest(server)
    if (theirs === undefined) return false
    const ok = local.count === theirs.count && local.hi === theirs.hi && local.lo === theirs.lo
    const outcome = (action: ChecksumOutcome['action']) => this.host.checked?.(this.name, { ok, local: formatDigest(local), server, action })
    if (ok) {
      this.#repairing = false
      outcome('none')
      return false
    }
    if (this.#repairing || this.#gaveUp) {
      if (!this.#gaveUp) console.error(`[ferrite] shape ${this.name}: still differs from the server after fetching it afresh; not retrying`)
      this.#repairing = false
      this.#gaveUp = true
      outcome('gave-up')
      return false
    }
    console.warn(`[ferrite] shape ${this.name}: the local rows differ from the server's (${formatDigest(local)} ≠ ${server}); fetching it afresh`)
    this.#repairing = true
    outcome('refetch')
    this.#staging = newStaging()
    this.upToDate = false
    this.start()
    return true
  }

  async #onMessages(messages: Message<Row>[], stream: ShapeStream<ElectricRow>, signal: AbortSignal): Promise<void> {
    const batch: ShapeBatch = { shape: this.name, upserts: new Map(), tags: new Map(), deletes: new Set(), txids: [], snapshots: [], upToDate: false }
    let upToDateLsn: string | undefined
    // The server's digest after the last message carrying one.
    let digest: string | undefined
    for (const m of messages) {
      const d = (m.headers as { ferrite_digest?: string }).ferrite_digest
      if (d !== undefined) digest = d
      const event = m.headers as { event?: string; patterns?: { pos: number; value: string }[] }
      if (event.event === 'move-out' || event.event === 'move-in') {
        // A subquery's value left (or entered) its result: the rows it names lose (or regain)
        // that condition; those left with no alternative that holds leave the shape.
        const target = this.#staging?.rows ?? this.rows
        const index = this.#staging?.tags ?? this.tags
        for (const p of event.patterns ?? []) {
          const { left, changed } = index.move(p.pos, p.value, event.event === 'move-in')
          for (const key of left) {
            target.delete(key)
            if (!this.#staging) {
              batch.deletes.add(key)
              batch.upserts.delete(key)
              batch.tags.delete(key)
            }
          }
          if (!this.#staging) {
            for (const key of changed) {
              const row = target.get(key)
              if (!row) continue
              batch.upserts.set(key, row)
              batch.tags.set(key, index.states.get(key)!)
            }
          }
        }
        continue
      }
      if (isChangeMessage(m)) {
        const target = this.#staging?.rows ?? this.rows
        const index = this.#staging?.tags ?? this.tags
        const value = m.value as Row
        let key: string
        try {
          key = keyOf(value, this.key)
        } catch (e) {
          console.warn(`[ferrite] shape ${this.name}: ${(e as Error).message}; message skipped`)
          continue
        }
        const op = m.headers.operation
        if (op === 'insert') target.set(key, { ...value })
        else if (op === 'update') {
          const old = target.get(key)
          if (old) target.set(key, { ...old, ...value })
          else continue
        } else target.delete(key)
        const tagged = m.headers as { tags?: string[]; active_conditions?: boolean[] }
        if (op === 'delete') index.delete(key)
        else if (tagged.tags) index.set(key, { tags: tagged.tags, active: tagged.active_conditions ?? [] })
        if (!this.#staging) {
          if (op === 'delete') {
            batch.deletes.add(key)
            batch.upserts.delete(key)
            batch.tags.delete(key)
          } else {
            batch.upserts.set(key, target.get(key)!)
            batch.deletes.delete(key)
            const state = index.states.get(key)
            if (state) batch.tags.set(key, state)
          }
        }
        const txids = (m.headers as { txids?: (number | string)[] }).txids ?? []
        const lsn = (m.headers as { lsn?: string }).lsn
        for (const t of txids) (this.#staging?.txids ?? batch.txids).push({ txid: String(t), lsn })
      } else if (isControlMessage(m)) {
        const h = m.headers as { control: string; global_last_seen_lsn?: string; xmin?: string; xmax?: string; xip_list?: string[] }
        if (h.control === 'must-refetch') {
          this.#staging = newStaging()
          digest = undefined
          this.upToDate = false
          batch.upserts.clear()
          batch.tags.clear()
          batch.deletes.clear()
        } else if (h.control === 'snapshot-end' && h.xmin !== undefined && h.xmax !== undefined) {
          const s = { xmin: BigInt(h.xmin), xmax: BigInt(h.xmax), xip: (h.xip_list ?? []).map((x) => BigInt(x)) }
          ;(this.#staging?.snapshots ?? batch.snapshots).push(s)
        } else if (h.control === 'up-to-date') {
          batch.upToDate = true
          upToDateLsn = h.global_last_seen_lsn
        }
      }
    }
    if (this.#staging && digest !== undefined) this.#staging.digest = digest
    let serverDigest = digest ?? this.record.digest
    if (batch.upToDate && this.#staging) {
      // The rebuild is complete: swap it in whole.
      serverDigest = this.#staging.digest
      this.rows = this.#staging.rows
      this.tags = this.#staging.tags
      // A copy: the rows go on changing with later batches, while a tree may hold this one
      // (and show it, as of its own point) until its other members catch up.
      batch.replaced = new Map(this.rows)
      for (const [key, state] of this.tags.states) batch.tags.set(key, state)
      batch.txids.push(...this.#staging.txids)
      batch.snapshots.push(...this.#staging.snapshots)
      this.#staging = undefined
    }
    if (!this.#staging) {
      this.record = {
        name: this.name,
        definition: this.definition,
        handle: stream.shapeHandle ?? this.record.handle,
        offset: stream.lastOffset,
        lastLsn: maxLsn(this.record.lastLsn, upToDateLsn),
      }
      if (serverDigest !== undefined) this.record.digest = serverDigest
      batch.position = this.record
    }
    batch.end = stream.lastOffset
    if (batch.upToDate && upToDateLsn !== undefined) {
      const held = this.#completeAt.get(stream.lastOffset)
      batch.completeLsn = held !== undefined && BigInt(held) < BigInt(upToDateLsn) ? held : upToDateLsn
    }
    if (batch.upToDate) {
      this.upToDate = true
      this.#errors = 0
      this.host.shapeError(this.name, undefined)
    }
    await this.host.applyBatch(batch)
    // Restarted meanwhile (e.g. a mismatch found in the background): the new stream goes on.
    if (signal.aborted) return
    if (batch.upToDate && !this.#staging) this.#verify()
    const watcher = this.host.watcher
    if (batch.upToDate && this.live && watcher && this.#running && this.#abort && this.#nextQuery) {
      // Watched: wait with the client's other shapes on one request, then catch up.
      const abort = this.#abort
      this.#watching = true
      const advanced = (lsn: string) => this.host.advanced?.(this.name, lsn)
      void watcher.wait(this, this.#nextQuery, abort.signal, advanced).then(() => {
        if (this.#abort === abort && this.#running) this.start()
      })
    } else if (batch.upToDate && !this.live && this.#running) {
      // A polled shape: done for now; catch up again later.
      this.#abort?.abort()
      if (this.#timer) clearTimeout(this.#timer)
      this.#timer = setTimeout(() => this.#running && this.start(), this.host.pollIntervalMs)
    }
  }
}

function newStaging(): Staging {
  return { rows: new Map(), tags: new TagIndex(), snapshots: [], txids: [] }
}

/** A shape being rebuilt from its snapshot, swapped in at its first up-to-date. */
interface Staging {
  rows: Map<string, Row>
  tags: TagIndex
  snapshots: SnapshotBounds[]
  txids: { txid: string; lsn?: string }[]
  /** The digest the server sent with the rebuild's last change. */
  digest?: string
}

/**
 * Whether a response's messages stop inside a transaction: the last is a change from the log
 * (it has an `lsn`) that is not its transaction's last (`last: true`). Snapshot rows carry no
 * `lsn`; a response ending in a control message ends at a transaction boundary.
 */
export function endsInsideTransaction(messages: readonly Message<Row>[]): boolean {
  const final = messages[messages.length - 1]
  if (!final || !isChangeMessage(final)) return false
  const headers = final.headers as { lsn?: unknown; last?: unknown }
  return headers.lsn !== undefined && headers.last !== true
}

/** The larger of two decimal LSNs. */
export function maxLsn(a: string | undefined, b: string | undefined): string | undefined {
  if (a === undefined) return b
  if (b === undefined) return a
  try {
    return BigInt(a) >= BigInt(b) ? a : b
  } catch {
    return b
  }
}
