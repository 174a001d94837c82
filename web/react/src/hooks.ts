/**
 * Hooks over the provider's client. Reads go through `useSyncExternalStore` (concurrent
 * rendering never tears: every component rendered in one pass sees the same rows), writes
 * through the client's optimistic outbox.
 */

import type { ConnectionState, LostChange, Merge, PresenceMember, Rejection, Row, SyncStatus, TransactionWriter } from '@ferrite/client'
import { useCallback, useEffect, useMemo, useRef, useState, useSyncExternalStore } from 'react'
import { useFerrite } from './provider.js'
import { storeOf, type ShapeSnapshot } from './store.js'

/**
 * The rows of shape (or tree member) `name` as the app should show them — synced rows with
 * pending local writes on top — and whether the shape has loaded. Re-renders when they change.
 * Every component reading a shape shares the client's one stream of it.
 */
export function useShape<T = Row>(name: string): ShapeSnapshot<T> {
  const store = storeOf(useFerrite())
  const subscribe = useCallback((l: () => void) => store.subscribeShape(name, l), [store, name])
  const get = useCallback(() => store.shape(name), [store, name])
  return useSyncExternalStore(subscribe, get, get) as ShapeSnapshot<T>
}

/**
 * A view computed from a shape's rows (filter, sort, join with another shape's): recomputed only
 * when the rows or `deps` change. `loaded` as for {@link useShape}.
 */
export function useLiveQuery<T = Row, R = T[]>(name: string, select: (rows: T[]) => R, deps: readonly unknown[] = []): { data: R; loaded: boolean } {
  const { rows, loaded } = useShape<T>(name)
  // eslint-disable-next-line react-hooks/exhaustive-deps
  const data = useMemo(() => select(rows), [rows, ...deps])
  return { data, loaded }
}

/** The client's sync status (synced / syncing / offline with pending / error with retry), and `retry`. */
export function useSyncStatus(): SyncStatus & { retry: () => void } {
  const client = useFerrite()
  const store = storeOf(client)
  const status = useSyncExternalStore(
    useCallback((l: () => void) => store.subscribeStatus(l), [store]),
    () => store.status(),
    () => store.status(),
  )
  return useMemo(() => ({ ...status, retry: () => client.retryNow() }), [status, client])
}

/** What an offline indicator needs: whether the client is offline, and how many changes wait. */
export function useOfflineState(): { isOffline: boolean; pendingChanges: number } {
  const s = useSyncStatus()
  return useMemo(() => ({ isOffline: s.state === 'offline', pendingChanges: s.pending }), [s.state, s.pending])
}

/** The connection state: connected / connecting / disconnected. */
export function useConnection(): ConnectionState {
  const store = storeOf(useFerrite())
  return useSyncExternalStore(
    useCallback((l: () => void) => store.subscribeConnection(l), [store]),
    () => store.connection(),
    () => store.connection(),
  )
}

/** What {@link useMutation} returns. */
export interface Mutations {
  /** Inserts a row (visible at once; sent when online). Resolves with the transaction id. */
  insert(shape: string, row: Row): Promise<number>
  /** Updates `set` on the row with key `key`. */
  update(shape: string, key: Row, set: Row): Promise<number>
  /** Deletes the row with key `key`. */
  remove(shape: string, key: Row): Promise<number>
  /** Several changes as one transaction (applied whole or not at all). */
  transaction(build: (tx: TransactionWriter) => void): Promise<number>
  /** The last of this component's writes the server refused (rolled back), with the reason. */
  rejection: Rejection | undefined
  /** The last of this component's writes whose columns lost to newer edits (see `LostChange`). */
  merge: Merge | undefined
  /** Forgets `rejection` and `merge` (e.g. once the message was shown). */
  clear(): void
}

/**
 * Writes with optimistic results: what a component changes shows at once in every
 * {@link useShape}, and is rolled back if the server refuses it — `rejection` then says why.
 * Safe across unmounts: a write in flight when the component goes still happens; only the
 * component's state is no longer updated.
 */
export function useMutation(): Mutations {
  const client = useFerrite()
  const mine = useRef(new Set<number>())
  const mounted = useRef(true)
  const [rejection, setRejection] = useState<Rejection | undefined>(undefined)
  const [merge, setMerge] = useState<Merge | undefined>(undefined)
  useEffect(() => {
    mounted.current = true
    const offRejected = client.on('rejected', (r) => {
      if (mine.current.delete(r.id) && mounted.current) setRejection(r)
    })
    const offMerged = client.on('merged', (m) => {
      if (mine.current.has(m.id) && mounted.current) setMerge(m)
    })
    return () => {
      mounted.current = false
      offRejected()
      offMerged()
    }
  }, [client])
  const transaction = useCallback(
    async (build: (tx: TransactionWriter) => void) => {
      const id = await client.transaction(build)
      mine.current.add(id)
      // Bounded: ids of writes long confirmed are not kept for ever.
      if (mine.current.size > 1000) mine.current.delete(mine.current.values().next().value!)
      return id
    },
    [client],
  )
  return useMemo(
    () => ({
      transaction,
      insert: (shape: string, row: Row) => transaction((tx) => tx.insert(shape, row)),
      update: (shape: string, key: Row, set: Row) => transaction((tx) => tx.update(shape, key, set)),
      remove: (shape: string, key: Row) => transaction((tx) => tx.delete(shape, key)),
      rejection,
      merge,
      clear: () => {
        setRejection(undefined)
        setMerge(undefined)
      },
    }),
    [transaction, rejection, merge],
  )
}

/** Re-applies a lost change's values as a new edit ("use mine"). */
export function useReapply(): (lost: LostChange) => Promise<number> {
  const client = useFerrite()
  return useCallback((lost: LostChange) => client.transaction((tx) => tx.update(lost.shape, lost.key, lost.mine)), [client])
}

/**
 * Presence in `room`: joins with `state` while the component is mounted (updated when `state`
 * changes), leaves when it unmounts; returns the other members.
 */
export function usePresence(room: string, state: Record<string, unknown>): PresenceMember[] {
  const client = useFerrite()
  const [others, setOthers] = useState<PresenceMember[]>([])
  const key = JSON.stringify(state)
  const latest = useRef(state)
  latest.current = state
  useEffect(() => {
    const r = client.presence(room)
    const off = r.events.on('change', () => setOthers(r.others))
    r.join(latest.current)
    setOthers(r.others)
    return () => {
      off()
      client.leavePresence(room)
    }
  }, [client, room])
  const first = useRef(true)
  useEffect(() => {
    if (first.current) {
      first.current = false
      return
    }
    client.presence(room).update(latest.current)
  }, [client, room, key])
  return others
}
