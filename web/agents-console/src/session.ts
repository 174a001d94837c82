/**
 * Who is signed in. Under `ferrite dev` a user picks one of the seeded people (`GET /dev/users`)
 * and the server issues real, short-lived JWTs for them (`POST /dev/token`). The choice — never
 * the token — is remembered in localStorage, so a reload (offline too) reopens that user's local
 * data at once.
 */

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
