/**
 * What happened to the user's writes, in plain words: a change the server refused (rolled
 * back), a change another device's later edit or the server's conflict policy did not keep, and
 * a write the client itself could not queue. Listens to the client's `rejected` and `merged`
 * events, so every write counts, whichever component (or test) made it. Views write through
 * {@link useWrite}, which reports what fails to queue here.
 */

import type { FerriteClient, LostChange, Merge, Mutation, Rejection, Row, TransactionWriter } from '@ferrite/client'
import { useFerrite, useMutation, useReapply } from '@ferrite/react'
import { createContext, useCallback, useContext, useEffect, useMemo, useReducer, useRef, useState, type ReactNode } from 'react'
import { SHAPES, nowIso, type ShapeName } from '../data.js'
import { columnLabel, formatValue } from '../format.js'
import type { Role } from '../session.js'

type Notice =
  | { id: number; kind: 'rejected'; rejection: Rejection }
  | { id: number; kind: 'merged'; merge: Merge; lost: LostChange }
  | { id: number; kind: 'error'; message: string; table?: string }

interface NoticesApi {
  notices: Notice[]
  role: Role
  dismiss(id: number): void
  /** Shows a write that could not be queued (the client threw). */
  report(message: string, table?: string): void
}

const NoticesContext = createContext<NoticesApi | undefined>(undefined)

/** The most notices kept on screen (the oldest go first). */
const MAX_NOTICES = 20

/** Collects the client's rejections and merges for {@link Notices} (see the module docs). */
export function NoticesProvider({ role, children }: { role: Role; children: ReactNode }) {
  const client = useFerrite()
  const [notices, setNotices] = useState<Notice[]>([])
  const next = useRef(1)
  const add = useCallback((made: ((id: number) => Notice)[]) => {
    if (made.length === 0) return
    setNotices((list) => [...list, ...made.map((f) => f(next.current++))].slice(-MAX_NOTICES))
  }, [])
  useEffect(() => {
    const offRejected = client.on('rejected', (rejection) => add([(id) => ({ id, kind: 'rejected', rejection })]))
    const offMerged = client.on('merged', (merge) =>
      add(merge.lost.filter((lost) => !bookkeepingOnly(lost)).map((lost) => (id: number) => ({ id, kind: 'merged', merge, lost }))),
    )
    return () => {
      offRejected()
      offMerged()
    }
  }, [client, add])
  const api = useMemo<NoticesApi>(
    () => ({
      notices,
      role,
      dismiss: (id) => setNotices((list) => list.filter((n) => n.id !== id)),
      report: (message, table) => add([(id) => ({ id, kind: 'error', message, table })]),
    }),
    [notices, role, add],
  )
  return <NoticesContext.Provider value={api}>{children}</NoticesContext.Provider>
}

function useNotices(): NoticesApi {
  const api = useContext(NoticesContext)
  if (!api) throw new Error('useNotices: no <NoticesProvider> above this component')
  return api
}

/**
 * Writes one transaction: optimistic at once, sent when online. A write the client refuses to
 * queue (a full queue, a row that is gone) is shown as a notice instead of failing silently.
 */
export function useWrite(): (build: (tx: TransactionWriter) => void) => void {
  const { transaction } = useMutation()
  const { report } = useNotices()
  return useCallback(
    (build: (tx: TransactionWriter) => void) => {
      transaction(build).catch((e: unknown) => report(`Not saved: ${e instanceof Error ? e.message : String(e)}`))
    },
    [transaction, report],
  )
}

/** The list of notices, newest last, each dismissible. */
export function Notices() {
  const { notices, dismiss, role } = useNotices()
  if (notices.length === 0) return null
  return (
    <section className="notices" aria-label="Notices" aria-live="polite">
      {notices.map((n) =>
        n.kind === 'rejected' ? (
          <RejectedNotice key={n.id} rejection={n.rejection} role={role} onDismiss={() => dismiss(n.id)} />
        ) : n.kind === 'merged' ? (
          <MergedNotice key={n.id} merge={n.merge} lost={n.lost} onDismiss={() => dismiss(n.id)} />
        ) : (
          <NoticeBox key={n.id} kind="error" table={n.table} onDismiss={() => dismiss(n.id)}>
            <p>{n.message}</p>
          </NoticeBox>
        ),
      )}
    </section>
  )
}

function NoticeBox({ kind, table, onDismiss, children, actions }: { kind: string; table?: string; onDismiss: () => void; children: ReactNode; actions?: ReactNode }) {
  return (
    <div className={`notice notice-${kind}`} data-testid="notice" data-kind={kind} data-table={table} role={kind === 'merged' ? 'status' : 'alert'}>
      <div className="notice-text">{children}</div>
      <div className="notice-actions">
        {actions}
        <button type="button" className="link" data-action="dismiss" onClick={onDismiss}>
          Dismiss
        </button>
      </div>
    </div>
  )
}

/** What the console calls a row of each shape. */
const NOUNS: Record<ShapeName, string> = {
  users: 'person',
  tasks: 'task',
  environments: 'environment',
  executions: 'run',
  events: 'event',
  memory: 'memory',
  workflows: 'workflow',
  workflow_runs: 'workflow run',
}

function nounOf(shape: string): string {
  return shape in NOUNS ? NOUNS[shape as ShapeName] : 'row'
}

function tableOfShape(shape: string): string | undefined {
  return shape in SHAPES ? SHAPES[shape as ShapeName].table : undefined
}

/** The name a row goes by (a task's title, an environment's name…), if it has one. */
function nameOf(row: Row | undefined): string | undefined {
  const v = row?.title ?? row?.name ?? row?.content
  return typeof v === 'string' && v ? (v.length > 60 ? `${v.slice(0, 57)}…` : v) : undefined
}

function safeGet(client: FerriteClient, shape: string, key: Row): Row | undefined {
  try {
    return client.get(shape, key)
  } catch {
    return undefined
  }
}

/** "adding the task “Write the report”" — what a refused change was. */
function describeChange(client: FerriteClient, m: Mutation): string {
  const noun = nounOf(m.shape)
  // An update goes by the row's name as it is (the change was undone), else by the new one.
  const name = m.op === 'insert' ? nameOf(m.value) : (nameOf(safeGet(client, m.shape, m.keyValues)) ?? (m.op === 'update' ? nameOf(m.value) : undefined))
  const verb = m.op === 'insert' ? 'adding' : m.op === 'update' ? 'changing' : 'deleting'
  return `${verb} ${name ? `the ${noun} “${name}”` : `a ${noun}`}`
}

/** The refused transaction's change to the offending row (or its first change). */
function offendingMutation(r: Rejection): Mutation | undefined {
  const ms = r.transaction.mutations
  if (r.table) {
    const same = ms.find((m) => tableOfShape(m.shape) === r.table && (!r.key || m.op === 'insert' || Object.entries(r.key).every(([c, v]) => m.keyValues[c] === v)))
    if (same) return same
    const sameTable = ms.find((m) => tableOfShape(m.shape) === r.table)
    if (sameTable) return sameTable
  }
  return ms[0]
}

/** Tables the agent runner owns (server-wins): a change on top of an old version is refused. */
const RUNNER_TABLES = new Set(['agent_executions', 'workflow_executions'])

/** Re-renders the component when rows of `shape` change (a server version may arrive later). */
function useRowChanges(client: FerriteClient, shape: string): void {
  const [, bump] = useReducer((x: number) => x + 1, 0)
  useEffect(() => client.on('change', (shapes) => (shapes.has(shape) ? bump() : undefined)), [client, shape])
}

/** "The agent runtime owns this run's status: the server kept …" for a run change that lost. */
function RunnerOwns({ row, column, mine }: { row: Row | undefined; column: string; mine: unknown }) {
  if (!row) return <p>The agent runtime owns this run: it is no longer on the server, your change was not applied.</p>
  const what = column === 'status' ? 'status' : columnLabel(column).toLowerCase()
  return <p>{`The agent runtime owns this run's ${what}: the server kept “${formatValue(row[column])}”, your change to “${formatValue(mine)}” was not applied.`}</p>
}

function RejectedNotice({ rejection, role, onDismiss }: { rejection: Rejection; role: Role; onDismiss: () => void }) {
  const client = useFerrite()
  const m = offendingMutation(rejection)
  const table = rejection.table ?? (m ? tableOfShape(m.shape) : undefined)
  useRowChanges(client, m?.shape ?? '')
  const what = m ? describeChange(client, m) : 'a change'
  const count = rejection.transaction.mutations.length
  const undone = count > 1 ? ` All ${count} changes made with it were undone.` : ' It was undone.'
  if (rejection.code === 'conflict' && table && RUNNER_TABLES.has(table) && m && m.op === 'update') {
    // The runner moved the run on since the user saw it: say what it kept (its row, now that the
    // change was undone) instead of only the server's words.
    const column = 'status' in m.value ? 'status' : (Object.keys(m.value)[0] ?? 'status')
    return (
      <NoticeBox kind="rejected" table={table} onDismiss={onDismiss}>
        <RunnerOwns row={safeGet(client, m.shape, m.keyValues)} column={column} mine={m.value[column]} />
        <p className="muted small">
          Refused: {rejection.message}. {undone.trim()}
        </p>
      </NoticeBox>
    )
  }
  if (table === 'workflows' && role !== 'admin') {
    return (
      <NoticeBox kind="rejected" table={table} onDismiss={onDismiss}>
        <p>Only admins can change workflows — the server refused this change ({rejection.message})</p>
        <p className="muted small">
          While {what}.{undone}
        </p>
      </NoticeBox>
    )
  }
  return (
    <NoticeBox kind="rejected" table={table} onDismiss={onDismiss}>
      <p>Refused: {rejection.message}</p>
      <p className="muted small">
        While {what}
        {table ? ` (table ${table})` : ''}.{undone}
      </p>
    </NoticeBox>
  )
}

/** Columns the console stamps on every edit: that another device's stamp won is not news. */
const BOOKKEEPING = new Set(['updated_at'])

function bookkeepingOnly(lost: LostChange): boolean {
  return lost.columns.length > 0 && lost.columns.every((c) => BOOKKEEPING.has(c))
}

/** Tables whose later edit wins per column: the user may put their value back. */
const LWW_TABLES = new Set(['tasks', 'environments'])

function MergedNotice({ merge, lost, onDismiss }: { merge: Merge; lost: LostChange; onDismiss: () => void }) {
  const client = useFerrite()
  const reapply = useReapply()
  const { report } = useNotices()
  // Re-render when the row changes: the server's version may arrive after the answer.
  useRowChanges(client, lost.shape)

  // Until the transaction leaves the outbox, what the app reads still has the user's values on top.
  const settled = !client.pendingTransactions.some((t) => t.id === merge.id)
  const row = settled ? safeGet(client, lost.shape, lost.key) : undefined
  const noun = nounOf(lost.shape)
  const mineCols = lost.columns.filter((c) => c in lost.mine && !BOOKKEEPING.has(c))
  let text: ReactNode
  if (!settled) {
    text = <p>Checking what the server kept of your change to this {noun}…</p>
  } else if (RUNNER_TABLES.has(lost.table)) {
    const col = lost.columns.includes('status') ? 'status' : (lost.columns[0] ?? 'status')
    text = <RunnerOwns row={row} column={col} mine={lost.mine[col]} />
  } else if (lost.table === 'agent_memory') {
    text =
      'importance' in lost.mine ? (
        <p>
          A more important version of this memory won (importance {formatValue(row?.importance)}); your importance {formatValue(lost.mine.importance)} was not kept.
        </p>
      ) : (
        <p>A more important or more recently used version of this memory won; your change to {lost.columns.map((c) => columnLabel(c).toLowerCase()).join(', ')} was not kept.</p>
      )
  } else if (!row) {
    text = <p>This {noun} was deleted on another device, so your change was not kept.</p>
  } else if (mineCols.length === 0) {
    text = <p>This {noun} was changed on another device later, so your delete was not applied.</p>
  } else {
    text = mineCols.map((c) => (
      <p key={c}>
        {columnLabel(c)} was changed on another device later: it is now “{formatValue(row[c])}”, your “{formatValue(lost.mine[c])}” was replaced.
      </p>
    ))
  }
  const canReapply = settled && LWW_TABLES.has(lost.table) && row !== undefined && mineCols.length > 0
  const actions = canReapply ? (
    <button
      type="button"
      data-action="use-mine"
      onClick={() => {
        // Put the user's values back as a new edit, stamped now.
        const mine = 'updated_at' in lost.mine ? { ...lost.mine, updated_at: nowIso() } : lost.mine
        reapply({ ...lost, mine }).then(onDismiss, (e: unknown) => report(`Not saved: ${e instanceof Error ? e.message : String(e)}`, lost.table))
      }}
    >
      Use mine
    </button>
  ) : undefined
  return (
    <NoticeBox kind="merged" table={lost.table} onDismiss={onDismiss} actions={actions}>
      {text}
    </NoticeBox>
  )
}
