/**
 * The sign-in: under `ferrite dev`, pick one of the seeded people. Each button signs in as that
 * person (their role decides whether they may change workflows).
 */

import { useCallback, useEffect, useState } from 'react'
import { initials } from '../format.js'
import { DevSignInError, devUsers } from '@ferrite/client'
import type { DevUser, SignedIn } from '../session.js'

export function SignInView({ onSignIn }: { onSignIn: (u: SignedIn) => void }) {
  const [users, setUsers] = useState<DevUser[] | undefined>(undefined)
  const [error, setError] = useState<string | undefined>(undefined)
  const load = useCallback(() => {
    setError(undefined)
    let live = true
    devUsers<DevUser>().then(
      (u) => live && setUsers(u),
      (e: unknown) => {
        if (!live) return
        setError(
          e instanceof DevSignInError
            ? `The server refused the sign-in list: ${e.message}`
            : 'The server cannot be reached. Signing in needs it; once signed in, the console also works offline.',
        )
      },
    )
    return () => {
      live = false
    }
  }, [])
  useEffect(() => load(), [load])

  return (
    <main className="centered">
      <div className="card signin">
        <div className="brand big">
          <img src="/icon.svg" alt="" width={40} height={40} />
          <span>Agents console</span>
        </div>
        <h1>Sign in</h1>
        <p className="muted">Pick who you are. Your data is kept on this device, so the console keeps working offline.</p>
        {error ? (
          <div className="signin-error">
            <p className="error" role="alert">
              {error}
            </p>
            <button type="button" onClick={load}>
              Try again
            </button>
          </div>
        ) : users === undefined ? (
          <p className="muted">Loading the people…</p>
        ) : users.length === 0 ? (
          <p className="muted">Nobody to sign in as: the example has no users.</p>
        ) : (
          <ul className="signin-users">
            {users.map((u) => (
              <li key={u.id}>
                <button type="button" data-testid="signin-user" data-user-id={u.id} onClick={() => onSignIn({ id: u.id, name: u.name, color: u.color, role: u.role })}>
                  <Avatar user={u} />
                  <span className="signin-who">
                    <span className="strong">{u.name}</span>
                    <span className="muted small">{u.email}</span>
                  </span>
                  <span className={`badge role-${u.role}`}>{u.role === 'admin' ? 'Admin' : 'Member'}</span>
                </button>
              </li>
            ))}
          </ul>
        )}
      </div>
    </main>
  )
}

/** The user's picture, or their initials on their colour when there is none (or it fails). */
function Avatar({ user }: { user: DevUser }) {
  const [broken, setBroken] = useState(false)
  if (user.avatar_url && !broken) return <img className="avatar" src={user.avatar_url} alt="" width={36} height={36} onError={() => setBroken(true)} />
  return (
    <span className="avatar" style={{ background: user.color }} aria-hidden="true">
      {initials(user.name)}
    </span>
  )
}
