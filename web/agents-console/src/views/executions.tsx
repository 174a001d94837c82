/**
 * The executions view: the agent runs of the last 30 days, newest first, and — for the run the
 * user opens — its observability events as they arrive. Runs and events are written by the agent
 * runner; the user can only ask to cancel a run that has not finished (the server-wins policy
 * keeps the runner's status if it moved on meanwhile).
 */

import { useLiveQuery } from '@ferrite/react'
import { useState } from 'react'
import { RUN_STATUS_LABELS, isCancellable, type Execution, type ObservabilityEvent, type Task } from '../data.js'
import { formatClock, formatDateTime, formatDuration, formatShort, isoOf, newestFirst, oldestFirst } from '../format.js'
import { useWrite } from './notices.js'

export function ExecutionsView() {
  const write = useWrite()
  const [selected, setSelected] = useState<string | undefined>(undefined)
  const { data: executions, loaded } = useLiveQuery<Execution>('executions', (rows) => [...rows].sort(newestFirst((e) => e.created_at)))
  const { data: titles } = useLiveQuery<Task, Map<string, string>>('tasks', (rows) => new Map(rows.map((t) => [t.id, t.title])))
  const open = executions.find((e) => e.id === selected)

  return (
    <section className="view" aria-labelledby="executions-title">
      <div className="view-head">
        <h1 id="executions-title">Executions</h1>
        <p className="muted">Runs and their events are written by the agent runner; the server's version always wins.</p>
      </div>
      <div className="split">
        <div className="split-main">
          {executions.length === 0 ? (
            <p className="empty">{loaded ? 'No runs in the last 30 days.' : 'Loading runs…'}</p>
          ) : (
            <table className="table executions">
              <thead>
                <tr>
                  <th>Task</th>
                  <th>Agent</th>
                  <th>Status</th>
                  <th>Started</th>
                  <th>Finished</th>
                  <th>Took</th>
                  <th>
                    <span className="sr-only">Actions</span>
                  </th>
                </tr>
              </thead>
              <tbody>
                {executions.map((e) => (
                  <tr
                    key={e.id}
                    data-testid="execution"
                    data-id={e.id}
                    data-status={e.status}
                    className={e.id === selected ? 'selected' : undefined}
                    aria-selected={e.id === selected}
                    onClick={() => setSelected(e.id)}
                  >
                    <td className="strong">{e.task_id ? (titles.get(e.task_id) ?? 'A task not on this device') : 'No task'}</td>
                    <td>{e.agent}</td>
                    <td>
                      <span className={`badge run-${e.status}`} data-field="status" title={RUN_STATUS_LABELS[e.status]}>
                        {e.status}
                      </span>
                    </td>
                    <td title={formatDateTime(e.started_at)}>{e.started_at ? formatShort(e.started_at) : 'not yet'}</td>
                    <td title={formatDateTime(e.finished_at)}>{e.finished_at ? formatShort(e.finished_at) : isCancellable(e.status) ? 'not yet' : '—'}</td>
                    <td>{formatDuration(e.started_at, e.finished_at ?? (e.status === 'running' ? new Date().toISOString() : null)) ?? '—'}</td>
                    <td className="row-actions">
                      <button
                        type="button"
                        className="link"
                        data-action="open"
                        onClick={(ev) => {
                          ev.stopPropagation()
                          setSelected(e.id)
                        }}
                      >
                        Events
                      </button>
                      {isCancellable(e.status) && (
                        <button
                          type="button"
                          className="danger-link"
                          data-action="cancel"
                          onClick={(ev) => {
                            ev.stopPropagation()
                            write((tx) => tx.update('executions', { id: e.id }, { status: 'cancelled' }))
                          }}
                        >
                          Cancel
                        </button>
                      )}
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          )}
        </div>
        <aside className="split-side">{open ? <ExecutionDetail execution={open} title={open.task_id ? titles.get(open.task_id) : undefined} /> : <p className="empty">Pick a run to see its events.</p>}</aside>
      </div>
    </section>
  )
}

/** One run's events, ordered by time then id, live. */
function ExecutionDetail({ execution, title }: { execution: Execution; title: string | undefined }) {
  const { data: events } = useLiveQuery<ObservabilityEvent>('events', (rows) => rows.filter((ev) => ev.execution_id === execution.id).sort(oldestFirst((ev) => ev.at)), [
    execution.id,
  ])
  return (
    <div className="card detail" data-testid="execution-detail" data-id={execution.id}>
      <h2>{title ?? 'Run'}</h2>
      <p className="muted small">
        {execution.agent} · <span className={`badge run-${execution.status}`}>{RUN_STATUS_LABELS[execution.status] ?? execution.status}</span> · created {formatDateTime(execution.created_at)}
      </p>
      {events.length === 0 ? (
        <p className="empty">No events on this device (events are kept for 7 days).</p>
      ) : (
        <ol className="events">
          {events.map((ev) => (
            <li key={ev.id} data-testid="event" data-level={ev.level} className="event">
              <time dateTime={isoOf(ev.at)}>{formatClock(ev.at)}</time>
              <span className={`level level-${ev.level}`}>{ev.level}</span>
              <span className="event-message">{ev.message}</span>
            </li>
          ))}
        </ol>
      )}
    </div>
  )
}
