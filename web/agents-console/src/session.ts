/**
 * Who is signed in. Under `ferrite dev` a user picks one of the seeded people (`GET /dev/users`)
 * and the server issues real, short-lived JWTs for them (`POST /dev/token`). The choice — never
 * the token — is remembered in localStorage, so a reload (offline too) reopens that user's local
 * data at once.
 */

import type { IssuedToken, TokenSource } from '@ferrite/client'

/** What a user may do with workflows: only admins change them. */
export type Role = 'admin' | 'member'

/** A person one can sign in as (from `GET /dev/users`). */
export interface DevUser {
  id: string
  name: string
  email: string
  avatar_url: string | null
  color: string
  role: Role
}

/** The signed-in user, as remembered. */
export interface SignedIn {
  id: string
  name: string
  color: string
  role: Role
}

const KEY = 'agents-console:user'

/** The remembered user, if any (a damaged entry counts as signed out). */
export function currentUser(): SignedIn | undefined {
  try {
    const v = JSON.parse(localStorage.getItem(KEY) ?? 'null') as Partial<SignedIn> | null
    if (!v || typeof v.id !== 'string' || typeof v.name !== 'string') return undefined
    return { id: v.id, name: v.name, color: typeof v.color === 'string' ? v.color : '#64748b', role: v.role === 'admin' ? 'admin' : 'member' }
  } catch {
    return undefined
  }
}

/** Remembers `u` as the signed-in user (only what the header needs; the token is never stored). */
export function signIn(u: SignedIn): SignedIn {
  const kept: SignedIn = { id: u.id, name: u.name, color: u.color, role: u.role === 'admin' ? 'admin' : 'member' }
  localStorage.setItem(KEY, JSON.stringify(kept))
  return kept
}

/** Forgets the signed-in user (their local data stays, for the next time they sign in). */
export function signOut(): void {
  localStorage.removeItem(KEY)
}

/** An error answer of the dev sign-in, with the server's message (never the raw response body). */
export class SignInError extends Error {
  constructor(
    message: string,
    readonly status: number,
  ) {
    super(message)
    this.name = 'SignInError'
  }
}

/**
 * What an error response says: the `message` (or `error`) of a JSON body, or a short plain-text
 * body; otherwise its status.
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

/**
 * `fetch` for the sign-in: an error status becomes a {@link SignInError}. A network failure
 * stays the `TypeError` fetch throws — the client library takes that for "offline".
 */
async function signInFetch(url: string, init: RequestInit): Promise<Response> {
  const r = await fetch(url, { ...init, cache: 'no-store' })
  if (!r.ok) throw new SignInError(await responseMessage(r), r.status)
  return r
}

/** The people of the dev sign-in. */
export async function devUsers(): Promise<DevUser[]> {
  const r = await signInFetch('/dev/users', {})
  return (await r.json()) as DevUser[]
}

/** A fresh token for `userId` from the dev sign-in (`expires_at` is in Unix seconds). */
export async function devToken(userId: string): Promise<IssuedToken> {
  const r = await signInFetch('/dev/token', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ user_id: userId }),
  })
  const { token, expires_at } = (await r.json()) as { token: string; expires_at: number }
  return { token, expiresAt: expires_at * 1000 }
}

/**
 * The client's token source for `userId`: called whenever it needs a token (first request,
 * expiry, a 401, after an outage). A refusal becomes a plain error (a sync error the header
 * shows); a network failure stays a `TypeError`, so the client works offline.
 */
export function tokenSource(userId: string): TokenSource {
  return () =>
    devToken(userId).catch((e: unknown) => {
      throw e instanceof SignInError ? new Error(`sign-in refused (${e.status}): ${e.message}`) : e
    })
}
