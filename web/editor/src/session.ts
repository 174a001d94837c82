/**
 * Who is signed in. In `ferrite dev` a user picks one of the seeded people (`GET /dev/users`)
 * and the server issues real JWTs for them (`POST /dev/token`); the choice is remembered in
 * localStorage so a reload — also offline — reopens that user's local replica.
 */

import { FerriteClient } from '@ferrite/client'
import { SHAPES } from './data.js'

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

/** The people of the dev sign-in. */
export async function devUsers(): Promise<DevUser[]> {
  const r = await fetch('/dev/users', { cache: 'no-store' })
  if (!r.ok) throw new Error(`the server answered ${r.status} for /dev/users: ${await r.text()}`)
  return (await r.json()) as DevUser[]
}

/** A fresh token for `userId` from the dev sign-in. */
export async function devToken(userId: string): Promise<{ token: string; expiresAt: number }> {
  const r = await fetch('/dev/token', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ user_id: userId }),
    cache: 'no-store',
  })
  if (!r.ok) {
    const body = await r.text()
    let message = body
    try {
      message = (JSON.parse(body) as { message?: string }).message ?? body
    } catch {
      /* not JSON */
    }
    throw new Error(`sign-in refused (${r.status}): ${message}`)
  }
  const { token, expires_at } = (await r.json()) as { token: string; expires_at: number }
  return { token, expiresAt: expires_at * 1000 }
}

/** Opens the signed-in user's replica (one IndexedDB database per user). */
export function openClient(user: SignedIn): Promise<FerriteClient> {
  return FerriteClient.open({
    url: location.origin,
    database: `pipeline-editor:${user.id}`,
    shapes: SHAPES,
    token: () => devToken(user.id),
  })
}
