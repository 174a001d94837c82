/**
 * The memory view: what the agents remember about the user, most important first. Importance can
 * be changed, and "Use" marks a memory as just used. Memories that expire leave the device when
 * they do; when two devices disagree, the more important version wins, then the more recently
 * used one.
 */

import { useLiveQuery } from '@ferrite/react'
import { nowIso, type Memory } from '../data.js'
import { CommitNumber } from '../fields.js'
import { formatDateTime, formatRelative, timeOf } from '../format.js'
import { useWrite } from './notices.js'

/** Importance first, then the more recently used, then id. */
function byImportance(a: Memory, b: Memory): number {
  if (a.importance !== b.importance) return b.importance - a.importance
  const ua = timeOf(a.last_accessed_at)
  const ub = timeOf(b.last_accessed_at)
  if (ua !== ub && !Number.isNaN(ua) && !Number.isNaN(ub)) return ub - ua
  return a.id < b.id ? -1 : a.id > b.id ? 1 : 0
}

function expiry(m: Memory): string {
  if (m.expires_at === null) return 'kept until deleted'
  const t = timeOf(m.expires_at)
  if (Number.isNaN(t)) return 'kept until deleted'
  return t <= Date.now() ? 'expired' : `expires ${formatRelative(m.expires_at)}`
}

export function MemoryView() {
  const write = useWrite()
  const { data: memories, loaded } = useLiveQuery<Memory>('memory', (rows) => [...rows].sort(byImportance))
  const update = (m: Memory, set: Partial<Record<'importance' | 'last_accessed_at', number | string>>) =>
    write((tx) => tx.update('memory', { id: m.id }, { ...set, updated_at: nowIso() }))

  return (
    <section className="view" aria-labelledby="memory-title">
      <div className="view-head">
        <h1 id="memory-title">Memory</h1>
        <p className="muted">What your agents remember, most important first.</p>
        <p className="muted small">Conflicts: the more important version wins, then the more recently used.</p>
      </div>
      {memories.length === 0 ? (
        <p className="empty">{loaded ? 'Your agents remember nothing yet.' : 'Loading memory…'}</p>
      ) : (
        <ul className="cards memory-list">
          {memories.map((m) => (
            <li key={m.id} className="card memory" data-testid="memory" data-id={m.id}>
              <p className="memory-content">{m.content}</p>
              <div className="memory-meta">
                <span className="badge agent">{m.agent}</span>
                <label className="priority">
                  <span>Importance</span>
                  <CommitNumber field="importance" label="Importance" min={0} max={10} value={m.importance} onCommit={(importance) => update(m, { importance })} />
                </label>
                <span className="muted small" data-testid="memory-last-used" title={formatDateTime(m.last_accessed_at)}>
                  used {formatRelative(m.last_accessed_at)}
                </span>
                <span className="muted small" data-testid="memory-expiry">
                  {expiry(m)}
                </span>
                <span className="actions">
                  <button type="button" data-action="use" onClick={() => update(m, { last_accessed_at: nowIso() })}>
                    Use
                  </button>
                  <button type="button" className="danger-link" data-action="delete" onClick={() => write((tx) => tx.delete('memory', { id: m.id }))}>
                    Forget
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
