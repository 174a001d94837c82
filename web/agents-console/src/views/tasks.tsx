/**
 * The tasks view: what the agents have to do. Counts by status, a form to add a task (to the
 * active environment unless another is picked), and the user's tasks newest first, each editable
 * in place — title, status, priority — with its environment and how its latest run went.
 */

import { useLiveQuery } from '@ferrite/react'
import { useRef, useState, type FormEvent } from 'react'
import { RUN_STATUS_LABELS, TASK_STATUS_LABELS, nowIso, type Environment, type Execution, type Task, type TaskStatus } from '../data.js'
import { CommitNumber, CommitText } from '../fields.js'
import { formatRelative, newestFirst } from '../format.js'
import type { SignedIn } from '../session.js'
import { useWrite } from './notices.js'

const STATS: { status: TaskStatus; testid: string }[] = [
  { status: 'todo', testid: 'stat-pending' },
  { status: 'running', testid: 'stat-running' },
  { status: 'done', testid: 'stat-done' },
  { status: 'failed', testid: 'stat-failed' },
]

const STATUSES = Object.keys(TASK_STATUS_LABELS) as TaskStatus[]

export function TasksView({ user }: { user: SignedIn }) {
  const { data: tasks, loaded } = useLiveQuery<Task>('tasks', (rows) => [...rows].sort(newestFirst((t) => t.created_at)))
  const { data: environments } = useLiveQuery<Environment, Map<string, Environment>>('environments', (rows) => new Map(rows.map((e) => [e.id, e])))
  // The latest run of each task.
  const { data: lastRuns } = useLiveQuery<Execution, Map<string, Execution>>('executions', (rows) => {
    const latest = new Map<string, Execution>()
    for (const e of [...rows].sort(newestFirst((x) => x.created_at))) if (e.task_id && !latest.has(e.task_id)) latest.set(e.task_id, e)
    return latest
  })
  const counts = new Map<TaskStatus, number>()
  for (const t of tasks) counts.set(t.status, (counts.get(t.status) ?? 0) + 1)

  return (
    <section className="view" aria-labelledby="tasks-title">
      <div className="view-head">
        <h1 id="tasks-title">Tasks</h1>
        <p className="muted">Work for your agents. The agent runner picks up pending tasks, highest priority first.</p>
      </div>
      <div className="stats">
        {STATS.map((s) => (
          <div key={s.status} className={`stat stat-${s.status}`} data-testid={s.testid}>
            <span className="stat-label">{TASK_STATUS_LABELS[s.status]}</span>
            <span className="stat-number" data-count={counts.get(s.status) ?? 0}>
              {counts.get(s.status) ?? 0}
            </span>
          </div>
        ))}
      </div>
      <NewTask user={user} environments={[...environments.values()].filter((e) => e.owner_id === user.id)} />
      {tasks.length === 0 ? (
        <p className="empty">{loaded ? 'No tasks yet: add one above.' : 'Loading your tasks…'}</p>
      ) : (
        <ul className="cards task-list">
          {tasks.map((t) => (
            <TaskRow key={t.id} task={t} environment={t.environment_id ? environments.get(t.environment_id) : undefined} lastRun={lastRuns.get(t.id)} />
          ))}
        </ul>
      )}
    </section>
  )
}

function NewTask({ user, environments }: { user: SignedIn; environments: Environment[] }) {
  const write = useWrite()
  const [title, setTitle] = useState('')
  const [description, setDescription] = useState('')
  const [priority, setPriority] = useState('0')
  // undefined: follow the active environment.
  const [environmentId, setEnvironmentId] = useState<string | undefined>(undefined)
  const [error, setError] = useState('')
  const titleInput = useRef<HTMLInputElement>(null)
  const active = environments.find((e) => e.is_active)
  const chosen = environmentId !== undefined && (environmentId === '' || environments.some((e) => e.id === environmentId)) ? environmentId : (active?.id ?? '')

  const submit = (e?: FormEvent) => {
    e?.preventDefault()
    const t = title.trim()
    const p = Number(priority)
    if (!t) {
      setError('Give the task a title.')
      titleInput.current?.focus()
      return
    }
    if (priority.trim() === '' || !Number.isInteger(p) || p < 0 || p > 10) {
      setError('Priority is a whole number from 0 to 10.')
      return
    }
    setError('')
    const now = nowIso()
    write((tx) =>
      tx.insert('tasks', {
        id: crypto.randomUUID(),
        owner_id: user.id,
        environment_id: chosen || null,
        title: t,
        description: description.trim(),
        status: 'todo',
        priority: p,
        created_at: now,
        updated_at: now,
      }),
    )
    setTitle('')
    setDescription('')
    setPriority('0')
    titleInput.current?.focus()
  }

  return (
    <form className="card new-task" onSubmit={submit} noValidate>
      <h2>New task</h2>
      <div className="form-row">
        <label className="grow">
          <span>Title</span>
          <input
            ref={titleInput}
            type="text"
            data-testid="new-task-title"
            value={title}
            maxLength={500}
            placeholder="What should the agent do?"
            aria-invalid={error !== '' && !title.trim()}
            onChange={(e) => {
              setTitle(e.target.value)
              if (error) setError('')
            }}
          />
        </label>
        <label className="narrow">
          <span>Priority</span>
          <input type="number" data-testid="new-task-priority" min={0} max={10} step={1} value={priority} onChange={(e) => setPriority(e.target.value)} />
        </label>
        <label>
          <span>Environment</span>
          <select data-testid="new-task-environment" value={chosen} onChange={(e) => setEnvironmentId(e.target.value)}>
            <option value="">No environment</option>
            {environments.map((env) => (
              <option key={env.id} value={env.id}>
                {env.name}
                {env.is_active ? ' (active)' : ''}
              </option>
            ))}
          </select>
        </label>
      </div>
      <label>
        <span>Description (optional)</span>
        <textarea
          data-testid="new-task-description"
          rows={2}
          maxLength={10000}
          value={description}
          placeholder="Details the agent should know"
          onChange={(e) => setDescription(e.target.value)}
          onKeyDown={(e) => {
            if (e.key === 'Enter' && (e.metaKey || e.ctrlKey)) submit()
          }}
        />
      </label>
      <div className="form-foot">
        <p className="field-error" role="alert" data-testid="new-task-error">
          {error}
        </p>
        <button type="submit" className="primary" data-testid="add-task">
          Add task
        </button>
      </div>
    </form>
  )
}

function TaskRow({ task, environment, lastRun }: { task: Task; environment: Environment | undefined; lastRun: Execution | undefined }) {
  const write = useWrite()
  const update = (set: Partial<Task>) => write((tx) => tx.update('tasks', { id: task.id }, { ...set, updated_at: nowIso() }))
  return (
    <li className={`card task status-${task.status}`} data-testid="task" data-id={task.id} data-status={task.status}>
      <div className="task-main">
        <CommitText className="title-input" field="title" label="Title" value={task.title} maxLength={500} onCommit={(title) => update({ title })} />
        {task.description ? <p className="task-description">{task.description}</p> : null}
        <p className="task-meta muted small">
          <span data-testid="task-environment">{environment ? environment.name : task.environment_id ? 'Environment not on this device' : 'No environment'}</span>
          <span aria-hidden="true"> · </span>
          <span data-testid="task-last-run" data-status={lastRun?.status}>
            {lastRun ? (
              <>
                Last run: <span className={`badge run-${lastRun.status}`}>{RUN_STATUS_LABELS[lastRun.status] ?? lastRun.status}</span> by {lastRun.agent},{' '}
                {formatRelative(lastRun.created_at)}
              </>
            ) : (
              task.status === 'todo' ? 'Not run yet' : 'No run in the last 30 days on this device'
            )}
          </span>
          <span aria-hidden="true"> · </span>
          <span>added {formatRelative(task.created_at)}</span>
        </p>
      </div>
      <div className="task-controls">
        <label>
          <span className="sr-only">Status</span>
          <select data-field="status" value={task.status} onChange={(e) => update({ status: e.target.value as TaskStatus })}>
            {STATUSES.map((s) => (
              <option key={s} value={s}>
                {TASK_STATUS_LABELS[s]}
              </option>
            ))}
          </select>
        </label>
        <label className="priority">
          <span>Priority</span>
          <CommitNumber field="priority" label="Priority" min={0} max={10} value={task.priority} onCommit={(priority) => update({ priority })} />
        </label>
        {task.status !== 'done' && (
          <button type="button" data-action="complete" onClick={() => update({ status: 'done' })}>
            Complete
          </button>
        )}
        <button type="button" className="danger-link" data-action="delete" onClick={() => write((tx) => tx.delete('tasks', { id: task.id }))}>
          Delete
        </button>
      </div>
    </li>
  )
}
