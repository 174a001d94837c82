/**
 * The dev sign-in of `ferrite dev` (`GET /dev/users`, `POST /dev/token`), as its example apps use
 * it: the people one can sign in as, and a token source that asks the server for a fresh,
 * short-lived JWT whenever the client needs one. Only for `ferrite dev` — `ferrite serve` has no
 * such routes; a real app gets its tokens from its own sign-in.
 *
 * A refusal (an error status) becomes a {@link DevSignInError} with the server's message, never
 * the raw response body; a network failure stays the `TypeError` fetch throws, which the client
 * takes for "offline" — so an app keeps working offline with its local data.
 */

import type { IssuedToken, TokenSource } from './transport.js'

/** An error answer of the dev sign-in: the server's message and the status. */
export class DevSignInError extends Error {
  constructor(
    message: string,
    readonly status: number,
  ) {
    super(message)
    this.name = 'DevSignInError'
  }
}

/**
 * What an error response says: the `message` (or `error`) of a JSON body, or a short plain-text
 * body; otherwise (an empty, HTML or message-less JSON body) its status.
 */
async function responseMessage(r: Response): Promise<string> {
  const text = (await r.text().catch(() => '')).trim()
  let plain = text
  try {
    const body: unknown = JSON.parse(text)
    const fields = typeof body === 'object' && body !== null ? (body as Record<string, unknown>) : {}
    const m = typeof body === 'string' ? body : (fields.message ?? fields.error)
    if (typeof m === 'string' && m.trim()) return m.trim()
    plain = ''
  } catch {
    /* not JSON */
  }
  if (plain && !plain.startsWith('<') && plain.length <= 300) return plain
  return `the server answered ${r.status}${r.statusText ? ` ${r.statusText}` : ''}`
}

async function signInFetch(url: string, init: RequestInit): Promise<Response> {
  const r = await fetch(url, { ...init, cache: 'no-store' })
  if (!r.ok) throw new DevSignInError(await responseMessage(r), r.status)
  return r
}

/**
 * The people of the dev sign-in (`GET <base>/dev/users`), as the example's users table has them
 * (`T`: each example adds its own fields, e.g. teams or a role).
 */
export async function devUsers<T>(base = ''): Promise<T[]> {
  const r = await signInFetch(`${base}/dev/users`, {})
  return (await r.json()) as T[]
}

/** A fresh token for `userId` (`POST <base>/dev/token`). */
export async function devToken(userId: string, base = ''): Promise<IssuedToken> {
  const r = await signInFetch(`${base}/dev/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ user_id: userId }),
  })
  const { token, expires_at } = (await r.json()) as { token: string; expires_at: number }
  return { token, expiresAt: expires_at * 1000 }
}

/**
 * The client's token source for `userId`: a refusal becomes a plain error (a sync error the app's
 * status shows); a network failure stays a `TypeError`.
 */
export function devTokenSource(userId: string, base = ''): TokenSource {
  return () =>
    devToken(userId, base).catch((e: unknown) => {
      throw e instanceof DevSignInError ? new Error(`sign-in refused (${e.status}): ${e.message}`) : e
    })
}
