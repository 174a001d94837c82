/**
 * This device's data: one local database per tenant and identity — a visitor of the tenant's
 * site (`lead-forms-<tenant id>-visitor`) or one of its staff (`lead-forms-<tenant id>-staff-<user
 * id>`) — so a page of one tenant never opens another's data, and signing out deletes exactly one.
 *
 * Each database is PGlite in IndexedDB (IndexedDB database `/pglite/<name>`), run by a PGlite
 * worker: all tabs of one database share one running Postgres (see worker.ts), and so one
 * @ferrite/client replica — its rows, its outbox of unsent writes — whichever tab made them. The
 * client's own database name is the same name (it also names its Web Lock and BroadcastChannel).
 *
 * Opened databases are kept here, outside React, and counted: React's strict mode mounts,
 * unmounts and mounts again, and the second mount finds the first one's database still open
 * instead of starting a second worker on it.
 *
 * When the tab running a database closes, another takes over. PGlite's worker can lose a tab's
 * statements in that handover (they never answer, and may hold its lock); a database that stops
 * answering after a handover is closed and opened again here — what it stored is in IndexedDB —
 * and the page is given the new one.
 */

import { LeaderChangedError, PGliteWorker } from '@electric-sql/pglite/worker'
import { FerriteClient, pgliteStore, type PGliteLike, type ShapeOptions, type TokenSource } from '@ferrite/client'
import { useEffect, useRef, useState } from 'react'

/** What to open: the database, what its client syncs, and what the app keeps beside it. */
export interface LocalSpec<A> {
  database: string
  shapes: Record<string, ShapeOptions>
  token: TokenSource
  /** App tables the store mirrors shapes into (created by `prepare`). */
  tables?: Record<string, string>
  /** Creates the app's tables and whatever the app keeps with the database (before the client opens). */
  prepare: (db: PGliteLike, database: string) => Promise<A>
  /** The client's `fetch`, if the app wraps it. */
  fetch?: (app: A) => typeof fetch
  /** When the app's part is closed. */
  dispose?: (app: A) => void
  pollIntervalMs?: number
}

/** An open local database: PGlite (through the worker), the client on it, and the app's part. */
export interface Local<A> {
  database: string
  db: PGliteWorker
  client: FerriteClient
  app: A
}

type AnyLocal = Local<unknown>

interface Entry {
  spec: LocalSpec<unknown>
  refs: number
  /** The current database (or the one being opened). */
  current: Promise<AnyLocal>
  /** The current database, once open. */
  local?: AnyLocal
  /** Told when the database was opened again (see the module docs). */
  listeners: Set<(l: AnyLocal) => void>
  closeTimer?: ReturnType<typeof setTimeout>
  closed: boolean
}

const entries = new Map<string, Entry>()
/** How each open database stops its watchdog. */
const watchdogs = new WeakMap<AnyLocal, () => void>()

/** How long a database may take to open (the first visit creates it: a few seconds). */
const OPEN_TIMEOUT_MS = 120_000
/** A statement unanswered this long, after the database changed tabs, counts as lost. */
const STUCK_MS = 5000
/** How long after a handover lost statements are looked for. */
const HANDOVER_WINDOW_MS = 120_000

/** The IndexedDB database PGlite keeps `database` in (PGlite's idbfs mounts it at `/pglite/<name>`). */
export const indexedDbName = (database: string) => `/pglite/${database}`

/** `db` as the client's store and the app use it, with the watchdog's bookkeeping. */
interface Guarded extends PGliteLike {
  /** Starts watching (once open: opening a new database legitimately takes long). */
  arm(): void
  stop(): void
}

/**
 * `db` for the client's store and the app: a statement that was under way when the tab running
 * the database closed (PGlite's `LeaderChangedError`) is sent again, to the tab that took over —
 * only single statements (reads, and the schema's `IF NOT EXISTS`): a transaction cut off may
 * have committed, so its error goes to the caller. And a watchdog: `onStuck` is called once when
 * a statement stays unanswered after a handover.
 */
function guarded(db: PGliteWorker, onStuck: () => void): Guarded {
  const started = new Map<number, number>()
  let next = 0
  let handover = 0
  let armed = false
  let fired = false
  const offLeader = db.onLeaderChange(() => {
    handover = Date.now()
  })
  const timer = setInterval(() => {
    if (!armed || fired || handover === 0 || Date.now() - handover > HANDOVER_WINDOW_MS) return
    const oldest = Math.min(...started.values())
    if (Date.now() - oldest > STUCK_MS) {
      fired = true
      onStuck()
    }
  }, 1000)
  const tracked = async <T>(run: () => Promise<T>): Promise<T> => {
    const id = next++
    started.set(id, Date.now())
    try {
      return await run()
    } finally {
      started.delete(id)
    }
  }
  const again = async <T>(run: () => Promise<T>): Promise<T> => {
    for (let attempt = 0; ; attempt++) {
      try {
        return await tracked(run)
      } catch (e) {
        if (!(e instanceof LeaderChangedError) || attempt >= 5) throw e
      }
    }
  }
  return {
    query: <T>(sql: string, params?: unknown[]) => again(() => db.query<T>(sql, params)),
    exec: (sql: string) => again(() => db.exec(sql)),
    transaction: (fn) => tracked(() => db.transaction(fn)),
    close: () => db.close(),
    arm: () => {
      armed = true
    },
    stop: () => {
      clearInterval(timer)
      offLeader()
    },
  }
}

async function open<A>(spec: LocalSpec<A>, onStuck: (local: Local<A>) => void): Promise<Local<A>> {
  const worker = new Worker('/worker.js', { type: 'module', name: `PGlite ${spec.database}` })
  let fail: (e: Error) => void = () => {}
  const failed = new Promise<never>((_, reject) => {
    fail = reject
  })
  failed.catch(() => {})
  worker.addEventListener('message', (e: MessageEvent<{ type?: string; message?: string }>) => {
    if (e.data?.type === 'lead-forms:error') fail(new Error(`the local database could not start: ${e.data.message ?? 'unknown error'}`))
  })
  worker.addEventListener('error', (e) => fail(new Error(`the local database could not start: ${e.message || 'its worker did not load'}`)))
  const timer = setTimeout(() => fail(new Error('the local database took too long to open')), OPEN_TIMEOUT_MS)
  let db: PGliteWorker | undefined
  let shared: Guarded | undefined
  let app: A | undefined
  try {
    db = await Promise.race([PGliteWorker.create(worker, { dataDir: `idb://${spec.database}`, id: spec.database }), failed])
    let stuck = () => {}
    const guard = (shared = guarded(db, () => stuck()))
    app = await Promise.race([spec.prepare(guard, spec.database), failed])
    const prepared = app
    const client = await Promise.race([
      FerriteClient.open({
        url: location.origin,
        database: spec.database,
        shapes: spec.shapes,
        token: spec.token,
        pollIntervalMs: spec.pollIntervalMs,
        fetch: spec.fetch?.(prepared),
        // The client closes the database once its last writes are stored.
        store: () => pgliteStore(guard, { tables: spec.tables, closeDatabase: true }),
      }),
      failed,
    ])
    const local: Local<A> = { database: spec.database, db, client, app: prepared }
    watchdogs.set(local, guard.stop)
    stuck = () => onStuck(local)
    guard.arm()
    return local
  } catch (e) {
    shared?.stop()
    if (app !== undefined) spec.dispose?.(app)
    if (db) await db.close().catch(() => {})
    else worker.terminate()
    throw e
  } finally {
    clearTimeout(timer)
  }
}

/** Closes an open database: the client (which closes PGlite once its writes are stored), or at once. */
async function closeLocal(entry: Entry, local: AnyLocal, now: boolean): Promise<void> {
  watchdogs.get(local)?.()
  local.client.close()
  entry.spec.dispose?.(local.app)
  if (now) await local.db.close().catch(() => {})
}

function start(entry: Entry): Promise<AnyLocal> {
  const opening = open(entry.spec, (local) => void reopen(entry, local))
  opening.then(
    (local) => {
      if (entry.current === opening) entry.local = local
    },
    () => {
      if (entries.get(entry.spec.database) === entry && entry.current === opening) entries.delete(entry.spec.database)
    },
  )
  return opening
}

/** Opens the database again after it stopped answering (see the module docs). */
async function reopen(entry: Entry, stuck: AnyLocal): Promise<void> {
  if (entry.closed || entry.local !== stuck) return
  console.warn(`[lead-forms] the local database ${entry.spec.database} stopped answering after changing tabs: opening it again`)
  entry.local = undefined
  const next = (async () => {
    await closeLocal(entry, stuck, true)
    const opening = start(entry)
    entry.current = opening
    return opening
  })()
  entry.current = next
  try {
    const l = await next
    if (entry.closed) return await closeLocal(entry, l, true)
    for (const listener of [...entry.listeners]) listener(l)
  } catch (e) {
    console.error('[lead-forms] the local database could not be opened again', e)
  }
}

/** A database held by a caller (see {@link acquireLocal}). */
export interface Held<A> {
  /** The current database, once open. */
  current: () => Promise<Local<A>>
  /** Calls `listener` with the database when it was opened again; returns the unsubscribe. */
  onReopen: (listener: (l: Local<A>) => void) => () => void
  release: () => void
}

/**
 * Opens `spec.database` (or takes the one already open) for as long as the caller holds it:
 * `release` lets it go, and the last release closes it (after the current task, so that a
 * strict-mode remount keeps it).
 */
export function acquireLocal<A>(spec: LocalSpec<A>): Held<A> {
  let entry = entries.get(spec.database)
  if (entry) {
    clearTimeout(entry.closeTimer)
    entry.closeTimer = undefined
    entry.refs++
  } else {
    const made: Entry = { spec: spec as LocalSpec<unknown>, refs: 1, current: Promise.reject(new Error('not open yet')), listeners: new Set(), closed: false }
    made.current.catch(() => {})
    entries.set(spec.database, made)
    made.current = start(made)
    entry = made
  }
  const held = entry
  let released = false
  return {
    current: () => held.current as Promise<Local<A>>,
    onReopen: (listener) => {
      const l = listener as (l: AnyLocal) => void
      held.listeners.add(l)
      return () => held.listeners.delete(l)
    },
    release: () => {
      if (released) return
      released = true
      held.refs--
      if (held.refs > 0) return
      held.closeTimer = setTimeout(() => {
        if (held.refs > 0 || entries.get(spec.database) !== held) return
        void shut(held, false)
      }, 0)
    },
  }
}

/** Forgets and closes an entry. */
async function shut(entry: Entry, now: boolean): Promise<void> {
  if (entries.get(entry.spec.database) === entry) entries.delete(entry.spec.database)
  clearTimeout(entry.closeTimer)
  entry.closed = true
  entry.listeners.clear()
  let local: AnyLocal
  try {
    local = await entry.current
  } catch {
    return
  }
  await closeLocal(entry, local, now)
}

/** Closes `database` at once, whoever holds it (e.g. its user signed out in another tab). */
export async function closeLocalNow(database: string): Promise<void> {
  const entry = entries.get(database)
  if (entry) await shut(entry, true)
}

/**
 * Deletes `database` from this device: closes it, then deletes its IndexedDB database (which
 * holds the rows, the outbox and the client's state). `onBlocked` is called while another tab
 * still has it open; the deletion completes once that tab lets go.
 */
export async function deleteLocal(database: string, onBlocked?: () => void): Promise<void> {
  await closeLocalNow(database)
  await new Promise<void>((resolve, reject) => {
    const req = indexedDB.deleteDatabase(indexedDbName(database))
    req.onsuccess = () => resolve()
    req.onerror = () => reject(req.error ?? new Error('the local data could not be deleted'))
    req.onblocked = () => onBlocked?.()
  })
}

/** The open state of a local database in a component: opening, open, or failed. */
export interface LocalState<A> {
  local: Local<A> | undefined
  error: Error | undefined
  /** Resolves once open (for an action taken before it is). */
  whenOpen: () => Promise<Local<A>>
}

/**
 * Holds `spec`'s database while the component is mounted (and `spec.database` stays the same;
 * the rest of the spec is read once).
 */
export function useLocal<A>(spec: LocalSpec<A>): LocalState<A> {
  const [local, setLocal] = useState<Local<A> | undefined>(undefined)
  const [error, setError] = useState<Error | undefined>(undefined)
  const held = useRef<Held<A> | undefined>(undefined)
  const specRef = useRef(spec)
  specRef.current = spec
  const waiters = useRef<{ resolve: (l: Local<A>) => void; reject: (e: unknown) => void }[]>([])
  useEffect(() => {
    let live = true
    const h = acquireLocal(specRef.current)
    held.current = h
    setError(undefined)
    const offReopen = h.onReopen((l) => live && setLocal(l))
    h.current().then(
      (l) => {
        if (!live) return
        setLocal(l)
        for (const w of waiters.current.splice(0)) w.resolve(l)
      },
      (e: unknown) => {
        if (!live) return
        setError(e instanceof Error ? e : new Error(String(e)))
        for (const w of waiters.current.splice(0)) w.reject(e)
      },
    )
    return () => {
      live = false
      held.current = undefined
      offReopen()
      h.release()
      setLocal(undefined)
    }
  }, [spec.database])
  return {
    local,
    error,
    whenOpen: () => held.current?.current() ?? new Promise((resolve, reject) => waiters.current.push({ resolve, reject })),
  }
}
