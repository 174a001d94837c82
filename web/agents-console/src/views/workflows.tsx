/**
 * The workflows view: shared recipes of tasks. Everyone sees them and can start a run (the agent
 * runner turns each step into a task); only admins change them — the server refuses anyone
 * else's change, and the console does not offer it.
 */

import { useLiveQuery } from '@ferrite/react'
import { RUN_STATUS_LABELS, nowIso, stepsOf, type Workflow, type WorkflowRun } from '../data.js'
import { CommitText, CommitTextArea, NameForm } from '../fields.js'
import { formatDateTime, formatDuration, newestFirst } from '../format.js'
import type { SignedIn } from '../session.js'
import { useWrite } from './notices.js'

export function WorkflowsView({ user }: { user: SignedIn }) {
  const admin = user.role === 'admin'
  const { data: workflows, loaded } = useLiveQuery<Workflow>('workflows', (rows) =>
    [...rows].sort((a, b) => a.name.localeCompare(b.name) || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0)),
  )
  const { data: runsOf } = useLiveQuery<WorkflowRun, Map<string, WorkflowRun[]>>('workflow_runs', (rows) => {
    const m = new Map<string, WorkflowRun[]>()
    for (const r of [...rows].sort(newestFirst((x) => x.started_at))) {
      const list = m.get(r.workflow_id)
      if (list) list.push(r)
      else m.set(r.workflow_id, [r])
    }
    return m
  })

  return (
    <section className="view" aria-labelledby="workflows-title">
      <div className="view-head">
        <h1 id="workflows-title">Workflows</h1>
        <p className="muted">Recipes of tasks. Running one asks the agent runner to create a task for each step.</p>
        {!admin && (
          <p className="note" data-testid="admin-only">
            Only admins can change workflows.
          </p>
        )}
      </div>
      {admin && <NewWorkflow />}
      {workflows.length === 0 ? (
        <p className="empty">{loaded ? 'No workflows yet.' : 'Loading workflows…'}</p>
      ) : (
        <ul className="cards workflow-list">
          {workflows.map((w) => (
            <WorkflowCard key={w.id} workflow={w} runs={runsOf.get(w.id) ?? []} admin={admin} user={user} />
          ))}
        </ul>
      )}
    </section>
  )
}

function WorkflowCard({ workflow, runs, admin, user }: { workflow: Workflow; runs: WorkflowRun[]; admin: boolean; user: SignedIn }) {
  const write = useWrite()
  const steps = stepsOf(workflow.definition)
  const update = (set: { name?: string; description?: string; definition?: { steps: string[] } }) =>
    write((tx) => tx.update('workflows', { id: workflow.id }, { ...set, updated_at: nowIso() }))
  const run = () =>
    write((tx) =>
      tx.insert('workflow_runs', { id: crypto.randomUUID(), owner_id: user.id, workflow_id: workflow.id, status: 'queued', started_at: nowIso() }),
    )

  return (
    <li className="card workflow" data-testid="workflow" data-id={workflow.id}>
      <div className="workflow-head">
        {admin ? (
          <CommitText className="title-input" field="name" label="Name" value={workflow.name} maxLength={200} onCommit={(name) => update({ name })} />
        ) : (
          <h2 className="workflow-name">{workflow.name}</h2>
        )}
        <button type="button" className="primary" data-action="run" onClick={run}>
          Run
        </button>
      </div>
      {admin ? (
        <CommitTextArea field="description" label="Description" value={workflow.description} rows={2} maxLength={2000} placeholder="What this workflow is for" onCommit={(description) => update({ description })} />
      ) : workflow.description ? (
        <p className="workflow-description">{workflow.description}</p>
      ) : null}
      <h3>Steps</h3>
      {admin ? (
        <>
          <CommitTextArea
            field="steps"
            label="Steps, one per line"
            className="steps-input"
            value={steps.join('\n')}
            rows={Math.max(3, steps.length + 1)}
            placeholder="One step per line"
            onCommit={(text) =>
              update({
                definition: {
                  steps: text
                    .split('\n')
                    .map((s) => s.trim())
                    .filter(Boolean),
                },
              })
            }
          />
          <p className="muted small">One step per line; each becomes a task when the workflow runs.</p>
        </>
      ) : steps.length === 0 ? (
        <p className="muted">No steps yet.</p>
      ) : (
        <ol className="steps">
          {steps.map((s, i) => (
            <li key={i}>{s}</li>
          ))}
        </ol>
      )}
      <h3>Your runs</h3>
      {runs.length === 0 ? (
        <p className="muted small">Not run yet.</p>
      ) : (
        <ul className="runs">
          {runs.map((r) => (
            <li key={r.id} data-testid="workflow-run" data-id={r.id} data-status={r.status}>
              <span className={`badge run-${r.status}`}>{RUN_STATUS_LABELS[r.status] ?? r.status}</span>
              <span className="muted small">
                started {formatDateTime(r.started_at)}
                {r.finished_at ? `, took ${formatDuration(r.started_at, r.finished_at) ?? '—'}` : ''}
              </span>
            </li>
          ))}
        </ul>
      )}
    </li>
  )
}

function NewWorkflow() {
  const write = useWrite()
  return (
    <NameForm
      label="New workflow"
      placeholder="Name, e.g. Weekly report"
      button="New workflow"
      required="Give the workflow a name."
      inputTestId="new-workflow-name"
      buttonTestId="add-workflow"
      onAdd={(name) => write((tx) => tx.insert('workflows', { id: crypto.randomUUID(), name, description: '', definition: { steps: [] }, updated_at: nowIso() }))}
    />
  )
}
