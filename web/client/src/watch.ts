/**
 * One held request for every live shape of a client: `POST /v1/watch`, a Ferrite extension.
 *
 * A browser opens at most six HTTP/1.1 connections per server. One long-poll per shape uses
 * them up with an include tree of seven shapes (or two tabs of four), and then a write waits for
 * a free connection for up to a long-poll timeout. Instead, a shape that is up to date hands the
 * query of its next request to the {@link Watcher}, which holds a single request for all of them;
 * when the server answers which shapes moved, those shapes read their news with ordinary
 * (non-live) shape requests, which end at once. So a client holds one connection for reads
 * whatever it syncs.
 */

import { AbortedError, describe, type Transport } from './transport.js'

/** Definition parameters of a shape request (what a watch entry keeps of its URL). */
const DEFINITION = new Set(['table', 'where', 'columns', 'replica', 'log'])

/** The query of a shape's next request: the definition of `url`, with `handle` and `offset`. */
export function nextQuery(url: string, handle: string, offset: string): string {
  const from = new URL(url, 'http://x').searchParams
  const out = new URLSearchParams()
  for (const [k, v] of from) if (DEFINITION.has(k) || k.startsWith('params[')) out.append(k, v)
  out.set('handle', handle)
  out.set('offset', offset)
  return out.toString()
}

/** How long a new watch waits for other shapes to join it. */
const COALESCE_MS = 5

interface Entry {
  query: string
  wake: () => void
  advance?: (completeLsn: string) => void
}

/** Holds `POST /v1/watch` for the shapes waiting on it (see the module docs). */
export class Watcher {
  #entries = new Map<object, Entry>()
  #request: AbortController | undefined
  #running = false
  #failures = 0

  constructor(
    private readonly url: string,
    private readonly transport: Transport,
    private readonly closed: AbortSignal,
  ) {}

  /**
   * Resolves when the shape whose next request is `query` may have news (or the watch cannot
   * tell: then the shape asks anyway, and its own request reports any error). `owner` identifies
   * the waiting shape; `signal` withdraws it. Meanwhile `advance` hears the log position the
   * shape is complete through whenever an answer says so (an include tree moves its members on
   * with it without asking each of them).
   */
  wait(owner: object, query: string, signal: AbortSignal, advance?: (completeLsn: string) => void): Promise<void> {
    return new Promise((resolve) => {
      if (signal.aborted) return
      const entry: Entry = {
        query,
        advance,
        wake: () => {
          signal.removeEventListener('abort', withdraw)
          resolve()
        },
      }
      const withdraw = () => {
        if (this.#entries.get(owner) === entry) {
          this.#entries.delete(owner)
          this.#changed()
        }
      }
      signal.addEventListener('abort', withdraw, { once: true })
      this.#entries.set(owner, entry)
      this.#changed()
    })
  }

  /** The set of watched shapes changed: the request in flight is replaced by a new one. */
  #changed(): void {
    this.#request?.abort()
    if (!this.#running) void this.#run()
  }

  async #run(): Promise<void> {
    this.#running = true
    try {
      while (this.#entries.size > 0 && !this.closed.aborted) {
        // Let shapes that catch up together join the same request.
        await new Promise((r) => setTimeout(r, COALESCE_MS))
        if (this.#entries.size === 0) break
        const entries = [...this.#entries]
        const request = new AbortController()
        this.#request = request
        const stop = () => request.abort()
        this.closed.addEventListener('abort', stop, { once: true })
        let woken: number[] | 'all' = []
        let complete: (string | null)[] = []
        try {
          const r = await this.transport.fetch(`${this.url}/v1/watch`, {
            method: 'POST',
            headers: { 'content-type': 'application/json' },
            body: JSON.stringify({ shapes: entries.map(([, e]) => e.query) }),
            signal: request.signal,
          })
          if (r.status === 200) {
            const answer = (await r.json()) as { changed: number[]; complete?: (string | null)[] }
            woken = answer.changed
            complete = answer.complete ?? []
            this.#failures = 0
          } else {
            // One entry the server cannot read (its index named): that shape's own request
            // will say why. Anything else: every shape asks for itself after a pause.
            const index = r.headers.get('ferrite-watch-index')
            if (index !== null) woken = [Number(index)]
            else {
              this.transport.reportError({ reason: `watching shapes: ${await describe(r)}`, retryAt: Date.now() + 1000 }, '/v1/watch')
              await this.transport.backoff(this.#failures++, request.signal)
              woken = 'all'
            }
          }
        } catch (e) {
          // Replaced (the watched set changed) or closed: go round again.
          if (e instanceof AbortedError || request.signal.aborted) continue
          // An answer that is not what a watch answers: every shape asks for itself.
          this.transport.reportError({ reason: `watching shapes: ${(e as Error).message}`, retryAt: Date.now() + 1000 }, '/v1/watch')
          woken = 'all'
        } finally {
          this.closed.removeEventListener('abort', stop)
        }
        for (const [i, [owner, entry]] of entries.entries()) {
          if (this.#entries.get(owner) !== entry) continue
          if (woken === 'all' || woken.includes(i)) {
            this.#entries.delete(owner)
            entry.wake()
          } else if (complete[i]) entry.advance?.(complete[i]!)
        }
      }
    } finally {
      this.#running = false
      this.#request = undefined
    }
  }
}
