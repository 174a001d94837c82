/**
 * Who is signed in. In `ferrite dev` a user picks one of the seeded people (`GET /dev/users`)
 * and the server issues real JWTs for them (`POST /dev/token`); the choice is remembered in
 * localStorage so a reload — also offline — reopens that user's local replica.
 */

import { FerriteClient } from '@ferrite/client'
import { SHAPES, TREES } from './data.js'

/** A person one can sign in as, with their teams (from `GET /dev/users`). */
export interface DevUser {
  id: string
  name: string
  email: string
  avatar_url: string | null
  color: string
  teams: { id: string; name: string; role: string }[]
}

/** The signed-in user, as remembered. */
export interface SignedIn {
  id: string
  name: string
  color: string
  avatar_url: string | null
}

const KEY = 'pipeline-editor:user'

export function currentUser(): SignedIn | undefined {
  try {
    const v = JSON.parse(localStorage.getItem(KEY) ?? 'null') as SignedIn | null
    return v && typeof v.id === 'string' ? v : undefined
  } catch {
    return undefined
  }
}

export function signIn(u: SignedIn): void {
  localStorage.setItem(KEY, JSON.stringify({ id: u.id, name: u.name, color: u.color, avatar_url: u.avatar_url }))
}

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

/**
 * `fetch` for the sign-in: an error status becomes a {@link SignInError}. A network failure
 * stays the `TypeError` fetch throws (the client library takes that for "offline").
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

/** A fresh token for `userId` from the dev sign-in. */
export async function devToken(userId: string): Promise<{ token: string; expiresAt: number }> {
  const r = await signInFetch('/dev/token', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ user_id: userId }),
  })
  const { token, expires_at } = (await r.json()) as { token: string; expires_at: number }
  return { token, expiresAt: expires_at * 1000 }
}

/** Opens the signed-in user's replica (one IndexedDB database per user). */
export function openClient(user: SignedIn): Promise<FerriteClient> {
  return FerriteClient.open({
    url: location.origin,
    database: `pipeline-editor:${user.id}`,
    shapes: SHAPES,
    trees: TREES,
    // (A network failure stays a TypeError: the client takes it for "offline".)
    token: () =>
      devToken(user.id).catch((e: unknown) => {
        throw e instanceof SignInError ? new Error(`sign-in refused (${e.status}): ${e.message}`) : e
      }),
  })
}
