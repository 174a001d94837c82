/**
 * Snapshots of a client's state for `useSyncExternalStore`: React needs the same object back
 * until something changed, and a listener per piece of state. One {@link ClientStore} per
 * client (kept in a WeakMap), shared by every hook and component on it, so a hundred components
 * reading one shape cost one listener on the client and one array per change.
 */

import type { ConnectionState, FerriteClient, Row, SyncStatus } from '@ferrite/client'

/** What a component sees of a shape: its rows (pending local writes included) and whether it has loaded. */
export interface ShapeSnapshot<T = Row> {
  rows: T[]
  loaded: boolean
}

type Listener = () => void

/** The snapshots of one client (see the module docs). */
export class ClientStore {
  #shapes = new Map<string, ShapeSnapshot>()
  #shapeListeners = new Map<string, Set<Listener>>()
  #status: SyncStatus
  #statusKey: string
  #statusListeners = new Set<Listener>()
  #connectionListeners = new Set<Listener>()

  constructor(readonly client: FerriteClient) {
    this.#status = client.status
    this.#statusKey = JSON.stringify(this.#status)
    client.on('change', (shapes) => {
      for (const s of shapes) {
        this.#shapes.delete(s)
        for (const l of this.#shapeListeners.get(s) ?? []) l()
      }
    })
    client.on('status', (s) => {
      const key = JSON.stringify(s)
      if (key !== this.#statusKey) {
        this.#status = s
        this.#statusKey = key
        for (const l of this.#statusListeners) l()
      }
      // A shape becomes loaded with its first sync, which may change no row.
      for (const [name, snap] of this.#shapes) {
        if (snap.loaded !== this.#loaded(name)) {
          this.#shapes.delete(name)
          for (const l of this.#shapeListeners.get(name) ?? []) l()
        }
      }
    })
    client.on('connection', () => {
      for (const l of this.#connectionListeners) l()
    })
  }

  #loaded(name: string): boolean {
    try {
      return this.client.isLoaded(name)
    } catch {
      return false
    }
  }

  subscribeShape(name: string, listener: Listener): () => void {
    let set = this.#shapeListeners.get(name)
    if (!set) this.#shapeListeners.set(name, (set = new Set()))
    set.add(listener)
    return () => {
      set.delete(listener)
      if (set.size === 0) this.#shapeListeners.delete(name)
    }
  }

  shape(name: string): ShapeSnapshot {
    let snap = this.#shapes.get(name)
    if (!snap) {
      snap = { rows: this.client.rows(name), loaded: this.#loaded(name) }
      this.#shapes.set(name, snap)
    }
    return snap
  }

  subscribeStatus(listener: Listener): () => void {
    this.#statusListeners.add(listener)
    return () => this.#statusListeners.delete(listener)
  }

  status(): SyncStatus {
    return this.#status
  }

  subscribeConnection(listener: Listener): () => void {
    this.#connectionListeners.add(listener)
    return () => this.#connectionListeners.delete(listener)
  }

  connection(): ConnectionState {
    return this.client.connection
  }
}

const stores = new WeakMap<FerriteClient, ClientStore>()

/** The store of `client` (made on first use). */
export function storeOf(client: FerriteClient): ClientStore {
  let s = stores.get(client)
  if (!s) stores.set(client, (s = new ClientStore(client)))
  return s
}
