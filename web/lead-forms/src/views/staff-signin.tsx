/**
 * The staff sign-in: the people of `GET /dev/users` (on a tenant's inbox, only that tenant's),
 * each a button (`staff-user`, `data-user-id`).
 */

import { DevSignInError, devUsers } from '@ferrite/client'
import { useCallback, useEffect, useState, type ReactNode } from 'react'
import { initials, type StaffUser } from '../session.js'

export interface StaffList {
  users: StaffUser[] | undefined
  error: string | undefined
  reload: () => void
}

/** The staff list from the server (sign-in needs it; once signed in, the inbox works offline). */
export function useStaffList(): StaffList {
  const [users, setUsers] = useState<StaffUser[] | undefined>(undefined)
  const [error, setError] = useState<string | undefined>(undefined)
  const [attempt, setAttempt] = useState(0)
  useEffect(() => {
    let live = true
    setError(undefined)
    devUsers<StaffUser>().then(
      (u) => live && setUsers(u),
      (e: unknown) => {
        if (!live) return
        setError(
          e instanceof DevSignInError
            ? `The server refused the list of staff: ${e.message}`
            : 'The server cannot be reached. Signing in needs it; once signed in, the inbox also works offline.',
        )
      },
    )
    return () => {
      live = false
    }
  }, [attempt])
  return { users, error, reload: useCallback(() => setAttempt((n) => n + 1), []) }
}

function Avatar({ user }: { user: StaffUser }) {
  const [broken, setBroken] = useState(false)
  if (user.avatar_url && !broken) return <img className="avatar" src={user.avatar_url} alt="" width={32} height={32} onError={() => setBroken(true)} />
  return (
    <span className="avatar" style={{ background: /^#[0-9a-f]{3,8}$/i.test(user.color) ? user.color : '#64748b' }} aria-hidden="true">
      {initials(user.name)}
    </span>
  )
}

/** The buttons of `users`; `onPick` signs in. */
export function StaffButtons({ users, onPick }: { users: StaffUser[]; onPick: (u: StaffUser) => void }) {
  return (
    <ul className="staff-users">
      {users.map((u) => (
        <li key={u.id}>
          <button type="button" data-testid="staff-user" data-user-id={u.id} data-tenant={u.tenant_slug} onClick={() => onPick(u)}>
            <Avatar user={u} />
            <span className="staff-who">
              <span className="strong">{u.name}</span>
              <span className="muted small">{u.email}</span>
            </span>
          </button>
        </li>
      ))}
    </ul>
  )
}

/** The list's state in words, or the buttons. */
export function StaffPicker({
  list,
  filter,
  onPick,
  empty,
  render,
}: {
  list: StaffList
  filter?: (u: StaffUser) => boolean
  onPick: (u: StaffUser) => void
  empty: string
  /** Renders the (non-empty) list instead of one list of buttons. */
  render?: (users: StaffUser[]) => ReactNode
}) {
  if (list.error) {
    return (
      <div className="signin-error">
        <p className="error" role="alert" data-testid="signin-error">
          {list.error}
        </p>
        <button type="button" onClick={list.reload}>
          Try again
        </button>
      </div>
    )
  }
  if (!list.users) return <p className="muted">Loading the staff…</p>
  const users = filter ? list.users.filter(filter) : list.users
  if (users.length === 0) return <p className="muted">{empty}</p>
  return render ? <>{render(users)}</> : <StaffButtons users={users} onPick={onPick} />
}
