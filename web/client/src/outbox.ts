/**
 * Pending local writes and the optimistic overlay — pure logic, no I/O.
 *
 * The app reads *server rows with pending writes replayed on top*: every read recomputes the
 * overlay from the shape's server rows and the queued transactions in order, so a server change
 * to a row with a pending write is rebased under it, and a transaction leaving the queue (seen
 * back through the shapes, answered as unchanged, or rejected) simply stops being replayed.
 *
 * A transaction the server committed leaves the queue only once the shapes show it, so the app
 * never sees its effect disappear and come back: each shape it touched has either delivered a
 * change carrying its txid, held it in a snapshot (`snapshot-end` visibility), or reported being
 * up to date at or past the log position where another shape delivered it.
 */

import type { Row, TextValues } from './values.js'

/** One row change, addressed to a shape (the local name of a synced table). */
export type Mutation =
  | { op: 'insert'; shape: string; key: string; value: Row }
  | { op: 'update'; shape: string; key: string; keyValues: TextValues; value: Row; base?: TextValues }
  | { op: 'delete'; shape: string; key: string; keyValues: TextValues; base?: TextValues }

/** A client transaction waiting to be confirmed. */
export interface PendingTransaction {
  /** The write-protocol id (per client, strictly increasing); assigned when stored. */
  id?: number
  /** HLC stamp, `"<unix_ms>-<counter>"`. */
  hlc: string
  /** The changes, in order. */
  mutations: Mutation[]
  /** When it was made (Unix ms). */
  createdAt: number
  /** `queued` until the server answers; `answered` (committed, with `txid`) until the shapes show it. */
  state: 'queued' | 'answered'
  /** The Postgres transaction id it committed in. */
  txid?: string
  /** Shapes that have shown it. */
  covered: string[]
  /** Log position (commit LSN, decimal) at which a shape delivered it. */
  seenLsn?: string
}

/** Applies one mutation to a row (undefined = no row). */
export function applyMutation(row: Row | undefined, m: Mutation): Row | undefined {
  switch (m.op) {
    case 'insert':
      return { ...m.value }
    case 'update':
      return row ? { ...row, ...m.value } : undefined
    case 'delete':
      return undefined
  }
}

/**
 * The rows the app sees for `shape`: `server` with every pending mutation to the shape
 * replayed in order. Returns `server` itself when no pending write touches the shape.
 */
export function overlay(server: ReadonlyMap<string, Row>, pending: readonly PendingTransaction[], shape: string): ReadonlyMap<string, Row> {
  let out: Map<string, Row> | undefined
  for (const t of pending) {
    for (const m of t.mutations) {
      if (m.shape !== shape) continue
      out ??= new Map(server)
      const next = applyMutation(out.get(m.key), m)
      if (next) out.set(m.key, next)
      else out.delete(m.key)
    }
  }
  return out ?? server
}

/** The shapes a transaction writes to. */
export function touchedShapes(t: PendingTransaction): Set<string> {
  return new Set(t.mutations.map((m) => m.shape))
}

/** Compares two decimal LSN strings. */
export function lsnAtLeast(have: string | undefined, want: string): boolean {
  if (have === undefined) return false
  try {
    return BigInt(have) >= BigInt(want)
  } catch {
    return false
  }
}

/**
 * Whether an answered transaction is fully visible through the shapes.
 * @param shapeLsn the `global_last_seen_lsn` each shape last reported at up-to-date; shapes the
 *   client does not sync return undefined and count as covering (nothing could show the write).
 * @param synced whether the client syncs a shape
 */
export function isCovered(t: PendingTransaction, synced: (shape: string) => boolean, shapeLsn: (shape: string) => string | undefined): boolean {
  if (t.state !== 'answered') return false
  for (const s of touchedShapes(t)) {
    if (!synced(s) || t.covered.includes(s)) continue
    if (t.seenLsn !== undefined && lsnAtLeast(shapeLsn(s), t.seenLsn)) continue
    return false
  }
  return true
}

/**
 * Whether 32-bit `txid` is visible in a Postgres snapshot (`xmin`, `xmax`, in-progress `xip`;
 * 64-bit values compared modulo 2^32 with wraparound, as Postgres does).
 */
export function visibleInSnapshot(txid: number, xmin: bigint, xmax: bigint, xip: readonly bigint[]): boolean {
  const before = (a: number, b: bigint) => ((a - Number(b & 0xffffffffn)) | 0) < 0
  return before(txid, xmin) || (before(txid, xmax) && !xip.some((x) => Number(x & 0xffffffffn) === txid))
}
