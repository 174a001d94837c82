/**
 * A live shape held in memory only: not stored in the replica, not written to, gone when
 * closed. For views that come and go and read what the app never edits — a row's history from
 * the server's audit trail (`ferrite.audit`), say — without adding a shape to the client's
 * stored set. It reads through the client's {@link Transport} (its token, its connection
 * state and backoff) and holds one long-poll of its own while open.
 *
 * ```ts
 * const history = new LiveRows(client, { table: 'ferrite.audit', where: 'key = $1', params: [key] }, {
 *   change: (rows) => render(rows),
 *   error: (status, message) => showRefusal(status, message),
 * })
 * // later
 * history.close()
 * ```
 */

import { ShapeStream, isChangeMessage, isControlMessage, type Row as ElectricRow } from '@electric-sql/client'
import type { ShapeOptions } from './shape.js'
import type { Transport } from './transport.js'
import type { Row } from './values.js'

/** What a {@link LiveRows} tells its owner. */
export interface LiveRowsListener {
  /** The rows after each batch the server sent (in the order they first arrived). */
  change(rows: Row[]): void
  /**
   * The server refused the shape (a 4xx: e.g. 403 when the caller's token may not read the
   * table): it is not retried. `status` is undefined for other failures.
   */
  error?(status: number | undefined, message: string): void
}

/** Where a {@link LiveRows} reads: a {@link FerriteClient} has both. */
export interface LiveRowsHost {
  /** The server's base URL (`FerriteClientOptions.url`). */
  readonly options: { url: string }
  /** The transport that authenticates and retries requests. */
  readonly transport: Transport
}

/** A live, unstored shape (see the module docs). */
export class LiveRows {
  readonly #rows = new Map<string, Row>()
  readonly #abort = new AbortController()

  constructor(host: LiveRowsHost, options: Pick<ShapeOptions, 'table' | 'where' | 'params' | 'columns'>, listener: LiveRowsListener) {
    const params: { table: string; where?: string; params?: string[]; columns?: string[] } = { table: options.table }
    if (options.where) params.where = options.where
    if (options.params) params.params = options.params
    if (options.columns) params.columns = options.columns
    const stream = new ShapeStream<ElectricRow>({
      url: `${host.options.url.replace(/\/$/, '')}/v1/shape`,
      params,
      subscribe: true,
      signal: this.#abort.signal,
      fetchClient: (input, init) => host.transport.fetch(input instanceof Request ? input.url : String(input), init),
      warnOnHttp: false,
      onError: (error) => {
        if (this.#abort.signal.aborted) return
        const status = (error as { status?: number }).status
        listener.error?.(status, error.message)
      },
    })
    stream.subscribe((messages) => {
      if (this.#abort.signal.aborted) return
      let changed = false
      for (const m of messages) {
        if (isChangeMessage(m)) {
          changed = true
          if (m.headers.operation === 'delete') this.#rows.delete(m.key)
          else this.#rows.set(m.key, { ...(this.#rows.get(m.key) ?? {}), ...(m.value as Row) })
        } else if (isControlMessage(m) && m.headers.control === 'must-refetch') {
          // The server starts the shape over: what follows is all of it.
          this.#rows.clear()
          changed = true
        }
      }
      if (changed || messages.some((m) => isControlMessage(m) && m.headers.control === 'up-to-date')) listener.change(this.rows)
    })
  }

  /** The rows as they are now. */
  get rows(): Row[] {
    return [...this.#rows.values()]
  }

  /** Stops following the shape (its request is aborted). */
  close(): void {
    this.#abort.abort()
  }
}
