/**
 * Every request a client makes goes through one {@link Transport}: it adds the bearer token,
 * takes a new token when the server says 401 (once per request) or the cached one is about to
 * expire, and retries what can succeed later — network failures, 429 and 5xx — on the backoff
 * schedule (honouring `Retry-After`), until the request is aborted. It also keeps the client's
 * view of the connection: a network failure makes the client offline until a request gets an
 * answer again.
 *
 * A token is never reused across a network outage: permission changes made in the meantime (a
 * membership removed while the user was offline) apply before any queued write is pushed.
 */

import { backoffDelay, parseRetryAfter } from './backoff.js'
import { Emitter } from './emitter.js'

/** Where the client stands with the server. */
export type ConnectionState = 'disconnected' | 'connecting' | 'connected'

/** A token and, optionally, when it expires (Unix ms; read from the JWT's `exp` otherwise). */
export interface IssuedToken {
  token: string
  expiresAt?: number
}

/**
 * Supplies bearer tokens. Called when the client has none, when the last one is (nearly)
 * expired, after a 401, and after a network outage. A `TypeError` (what `fetch` throws when the
 * network is down) counts as being offline; any other error is reported as a sync error.
 */
export type TokenSource = () => Promise<string | IssuedToken>

/** A failure the client keeps retrying, for the sync status. */
export interface TransportError {
  reason: string
  /** When the next attempt is due (Unix ms). */
  retryAt: number
}

/** Options of a {@link Transport}. */
export interface TransportOptions {
  token?: TokenSource
  fetch?: typeof fetch
  /** Renew a token this long before it expires (default 30 s). */
  tokenMarginMs?: number
}

/** Thrown by {@link Transport.fetch} when its signal aborts. */
export class AbortedError extends Error {
  constructor() {
    super('aborted')
    this.name = 'AbortError'
  }
}

/** The `exp` claim of a JWT in Unix ms, if readable. */
export function jwtExpiry(token: string): number | undefined {
  const exp = jwtClaims(token).exp
  return typeof exp === 'number' ? exp * 1000 : undefined
}

/** The claims of a JWT (unverified: for reading `sub` and the like on the client); `{}` if unreadable. */
export function jwtClaims(token: string): Record<string, unknown> {
  const part = token.split('.')[1] ?? ''
  try {
    const binary = atob(part.replace(/-/g, '+').replace(/_/g, '/').padEnd(Math.ceil(part.length / 4) * 4, '='))
    const json = new TextDecoder().decode(Uint8Array.from(binary, (c) => c.charCodeAt(0)))
    const claims: unknown = JSON.parse(json)
    return claims && typeof claims === 'object' ? (claims as Record<string, unknown>) : {}
  } catch {
    return {}
  }
}

function isNetworkError(e: unknown): boolean {
  return e instanceof TypeError
}

/** Authenticated, retrying HTTP with a connection state (see the module docs). */
export class Transport {
  readonly events = new Emitter<{ connection: ConnectionState; error: TransportError | undefined; token: string }>()
  #connection: ConnectionState = 'connecting'
  #reachable: boolean | undefined
  /** Failures being retried, by what failed (a route's path, or the source a caller names). */
  #errors = new Map<string, TransportError>()
  #token: IssuedToken | undefined
  #tokenRequest: Promise<string> | undefined
  #wakers = new Set<() => void>()
  #fetch: typeof fetch
  #source: TokenSource | undefined
  #margin: number

  constructor(options: TransportOptions = {}) {
    this.#fetch = options.fetch ?? ((input, init) => globalThis.fetch(input, init))
    this.#source = options.token
    this.#margin = options.tokenMarginMs ?? 30_000
  }

  /** The connection as last observed. */
  get connection(): ConnectionState {
    return this.#connection
  }

  /** False after a network failure until a request gets an answer; undefined before any request. */
  get reachable(): boolean | undefined {
    return this.#reachable
  }

  /**
   * The failure being retried (server errors, token errors), if any: the newest of those still
   * unresolved. A success clears only the failure of the same source (a route's path, or what a
   * caller reported), so a failing write path is not hidden by a shape poll that works.
   */
  get error(): TransportError | undefined {
    let newest: TransportError | undefined
    for (const e of this.#errors.values()) newest = e
    return newest
  }

  /** The current token, if one is held (for reading its claims). */
  get token(): string | undefined {
    return this.#token?.token
  }

  #setConnection(c: ConnectionState): void {
    if (c === 'connected') this.#reachable = true
    if (c === 'disconnected') {
      this.#reachable = false
      this.#token = undefined
    }
    if (c !== this.#connection) {
      this.#connection = c
      this.events.emit('connection', c)
    }
  }

  #setError(source: string | undefined, e: TransportError | undefined): void {
    const before = this.error
    if (source === undefined) this.#errors.clear()
    else if (e) {
      this.#errors.delete(source)
      this.#errors.set(source, e)
    } else this.#errors.delete(source)
    const after = this.error
    if (after?.reason !== before?.reason || after?.retryAt !== before?.retryAt) this.events.emit('error', after)
  }

  /** The browser reports the network gone: offline at once, without waiting for a request to fail. */
  markOffline(): void {
    this.#setConnection('disconnected')
  }

  /** Ends every backoff wait now (the Retry button, the browser coming back online). */
  retryNow(): void {
    const wakers = [...this.#wakers]
    this.#wakers.clear()
    for (const w of wakers) w()
  }

  /** Forgets the cached token, so the next request asks the token source. */
  forgetToken(): void {
    this.#token = undefined
  }

  /** A valid token (asking the source when none is cached or it is about to expire). */
  async bearer(): Promise<string | undefined> {
    if (!this.#source) return undefined
    const t = this.#token
    if (t && (t.expiresAt === undefined || t.expiresAt - Date.now() > this.#margin)) return t.token
    this.#tokenRequest ??= (async () => {
      try {
        const got = await this.#source!()
        const issued: IssuedToken = typeof got === 'string' ? { token: got } : got
        issued.expiresAt ??= jwtExpiry(issued.token)
        this.#token = issued
        this.events.emit('token', issued.token)
        return issued.token
      } finally {
        this.#tokenRequest = undefined
      }
    })()
    return this.#tokenRequest
  }

  /** Sleeps `ms` unless woken by {@link retryNow} or aborted. */
  #sleep(ms: number, signal?: AbortSignal): Promise<void> {
    return new Promise((resolve, reject) => {
      if (signal?.aborted) return reject(new AbortedError())
      const wake = () => {
        clearTimeout(timer)
        signal?.removeEventListener('abort', abort)
        this.#wakers.delete(wake)
        resolve()
      }
      const abort = () => {
        clearTimeout(timer)
        this.#wakers.delete(wake)
        reject(new AbortedError())
      }
      const timer = setTimeout(wake, ms)
      this.#wakers.add(wake)
      signal?.addEventListener('abort', abort, { once: true })
    })
  }

  /**
   * `fetch` with auth and retries (see the module docs). Resolves with the first response that
   * is neither 429 nor 5xx (a 401 only after a fresh token was refused too); rejects only with
   * {@link AbortedError}. With `once`, for a request worth making only now (a comparison with
   * the server's digest, due again later anyway): a 429 or 5xx is answered as it is and a
   * network failure rejects, neither retried nor reported as the client's error.
   */
  async fetch(url: string | URL, init: RequestInit = {}, { once = false }: { once?: boolean } = {}): Promise<Response> {
    const signal = init.signal ?? undefined
    const source = new URL(url, 'http://x').pathname
    let attempt = 0
    let refreshed = false
    for (;;) {
      if (signal?.aborted) throw new AbortedError()
      if (this.#connection === 'disconnected') this.#setConnection('connecting')
      let response: Response
      try {
        const headers = new Headers(init.headers)
        const token = await this.bearer()
        if (token) headers.set('authorization', `Bearer ${token}`)
        response = await this.#fetch(url, { ...init, headers, cache: 'no-store' })
      } catch (e) {
        if (signal?.aborted) throw new AbortedError()
        if (once) throw e
        if (isNetworkError(e)) {
          // Being offline supersedes whatever failed before.
          this.#setError(undefined, undefined)
          this.#setConnection('disconnected')
          await this.#sleep(backoffDelay(attempt++), signal)
        } else {
          const wait = backoffDelay(attempt++)
          this.#setError(source, { reason: e instanceof Error ? e.message : String(e), retryAt: Date.now() + wait })
          await this.#sleep(wait, signal)
        }
        continue
      }
      this.#setConnection('connected')
      if (response.status === 401 && this.#source && !refreshed) {
        refreshed = true
        this.forgetToken()
        await response.body?.cancel()
        continue
      }
      if ((response.status === 429 || response.status >= 500) && !once) {
        const wait = backoffDelay(attempt++, parseRetryAfter(response.headers.get('retry-after')))
        this.#setError(source, { reason: await describe(response), retryAt: Date.now() + wait })
        await this.#sleep(wait, signal)
        continue
      }
      if (response.ok) this.#setError(source, undefined)
      return response
    }
  }

  /**
   * Reports (or clears, with undefined) an error that is not a transport failure — e.g. a 4xx the
   * caller retries. `source` names what failed (a route's path clears it on the route's next
   * success).
   */
  reportError(e: TransportError | undefined, source: string): void {
    this.#setError(source, e)
  }

  /** Waits like a failed request would before attempt number `attempt`. */
  backoff(attempt: number, signal?: AbortSignal): Promise<void> {
    return this.#sleep(backoffDelay(attempt), signal)
  }
}

/** `"<status>: <message from the body>"` for an error response. */
export async function describe(response: Response): Promise<string> {
  let detail = ''
  try {
    const text = await response.clone().text()
    try {
      const body = JSON.parse(text) as { message?: unknown; error?: unknown; errors?: unknown }
      detail = String(body.message ?? body.error ?? '')
      if (body.errors) detail += ` ${JSON.stringify(body.errors)}`
    } catch {
      detail = text.slice(0, 200)
    }
  } catch {
    /* body unreadable */
  }
  return `server answered ${response.status}${detail ? `: ${detail.trim()}` : ''}`
}
