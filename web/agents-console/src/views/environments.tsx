/**
 * The environments view: where the user's agents run. One environment is active — new tasks go
 * there — and activating another switches in one transaction (Postgres's trigger keeps it at one
 * even when two devices activate different ones: the later activation wins).
 */

import { useLiveQuery } from '@ferrite/react'
import { nowIso, type Environment, type Task } from '../data.js'
import { CommitText, NameForm } from '../fields.js'
import { formatRelative } from '../format.js'
import type { SignedIn } from '../session.js'
import { useWrite } from './notices.js'

export function EnvironmentsView({ user }: { user: SignedIn }) {
  const write = useWrite()
  const { data: environments, loaded } = useLiveQuery<Environment>('environments', (rows) =>
    [...rows].sort((a, b) => a.name.localeCompare(b.name) || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0)),
  )
  const { data: taskCounts } = useLiveQuery<Task, Map<string, number>>('tasks', (rows) => {
    const m = new Map<string, number>()
    for (const t of rows) if (t.environment_id) m.set(t.environment_id, (m.get(t.environment_id) ?? 0) + 1)
    return m
  })
  const mine = environments.filter((e) => e.owner_id === user.id)

  const activate = (env: Environment) => {
    const now = nowIso()
    write((tx) => {
      // Others first, so no moment has two active.
      for (const other of mine) if (other.id !== env.id && other.is_active) tx.update('environments', { id: other.id }, { is_active: false, updated_at: now })
      tx.update('environments', { id: env.id }, { is_active: true, updated_at: now })
    })
  }

  return (
    <section className="view" aria-labelledby="environments-title">
      <div className="view-head">
        <h1 id="environments-title">Environments</h1>
        <p className="muted">Where your agents run. New tasks go to the active environment; only one is active at a time.</p>
      </div>
      <NewEnvironment user={user} hasActive={mine.some((e) => e.is_active)} />
      {environments.length === 0 ? (
        <p className="empty">{loaded ? 'No environments yet: add one above.' : 'Loading your environments…'}</p>
      ) : (
        <ul className="cards env-list">
          {environments.map((env) => (
            <li key={env.id} className={`card environment${env.is_active ? ' is-active' : ''}`} data-testid="environment" data-id={env.id} data-active={env.is_active ? 'true' : 'false'}>
              <div className="env-head">
                <CommitText
                  className="title-input"
                  field="name"
                  label="Name"
                  value={env.name}
                  maxLength={200}
                  onCommit={(name) => write((tx) => tx.update('environments', { id: env.id }, { name, updated_at: nowIso() }))}
                />
                {env.is_active ? <span className="badge active-badge">Active</span> : null}
              </div>
              <pre className="config" aria-label="Configuration">
                {JSON.stringify(env.config, null, 2)}
              </pre>
              <div className="env-foot">
                <span className="muted small">
                  {taskCounts.get(env.id) ?? 0} task{(taskCounts.get(env.id) ?? 0) === 1 ? '' : 's'} · changed {formatRelative(env.updated_at)}
                </span>
                <span className="actions">
                  {!env.is_active && (
                    <button type="button" data-action="activate" onClick={() => activate(env)}>
                      Make active
                    </button>
                  )}
                  <button type="button" className="danger-link" data-action="delete" onClick={() => write((tx) => tx.delete('environments', { id: env.id }))}>
                    Delete
                  </button>
                </span>
              </div>
            </li>
          ))}
        </ul>
      )}
    </section>
  )
}

function NewEnvironment({ user, hasActive }: { user: SignedIn; hasActive: boolean }) {
  const write = useWrite()
  return (
    <NameForm
      label="New environment"
      placeholder="Name, e.g. Staging"
      button="Add environment"
      required="Give the environment a name."
      inputTestId="new-environment-name"
      buttonTestId="add-environment"
      // The first environment becomes the active one.
      onAdd={(name) =>
        write((tx) => tx.insert('environments', { id: crypto.randomUUID(), owner_id: user.id, name, config: {}, is_active: !hasActive, updated_at: nowIso() }))
      }
    />
  )
}
