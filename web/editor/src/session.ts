/**
 * Who is signed in. In `ferrite dev` a user picks one of the seeded people (`GET /dev/users`)
 * and the server issues real JWTs for them (`POST /dev/token`); the choice is remembered in
 * localStorage so a reload — also offline — reopens that user's local replica.
 */

import { FerriteClient, devTokenSource } from '@ferrite/client'
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

/** Opens the signed-in user's replica (one IndexedDB database per user). */
export function openClient(user: SignedIn): Promise<FerriteClient> {
  return FerriteClient.open({
    url: location.origin,
    database: `pipeline-editor:${user.id}`,
    shapes: SHAPES,
    trees: TREES,
    // (A network failure stays a TypeError: the client takes it for "offline".)
    token: devTokenSource(user.id),
  })
}
