/**
 * The device view: what this browser keeps, and why. Each shape keeps a window of its table —
 * recent runs, a week of events, memories until they expire, everything else the user can read —
 * so the table shows how many rows are here, the rule, and the oldest row kept. Also: how much
 * storage the browser gives the console, and how writes travel to the server.
 */

import type { Row } from '@ferrite/client'
import { useFerrite, useShape, useSyncStatus } from '@ferrite/react'
import { useEffect, useState } from 'react'
import { SHAPES, type ShapeName } from '../data.js'
import { formatBytes, formatDateTime, formatRelative, timeOf } from '../format.js'

/** How each shape decides what stays on the device, and which column dates its rows. */
const RETENTION: Record<ShapeName, { label: string; rule: string; oldest?: { column: string; words: string }; soonest?: string }> = {
  users: { label: 'People', rule: 'everything you can read' },
  tasks: { label: 'Tasks', rule: 'everything you can read' },
  environments: { label: 'Environments', rule: 'everything you can read' },
  executions: { label: 'Executions', rule: 'last 30 days', oldest: { column: 'created_at', words: 'oldest run' } },
  events: { label: 'Events', rule: 'last 7 days', oldest: { column: 'at', words: 'oldest event' } },
  memory: { label: 'Memory', rule: 'until it expires', soonest: 'expires_at' },
  workflows: { label: 'Workflows', rule: 'everything you can read' },
  workflow_runs: { label: 'Workflow runs', rule: 'everything you can read' },
}

const SHAPE_NAMES = Object.keys(SHAPES) as ShapeName[]

export function DeviceView() {
  const client = useFerrite()
  return (
    <section className="view" data-testid="device" aria-labelledby="device-title">
      <div className="view-head">
        <h1 id="device-title">This device</h1>
        <p className="muted">
          Your data lives in this browser, so the console works offline. Older history stays on the server: the server takes rows out of this device's copy as they age
          out.
        </p>
      </div>
      <div className="card">
        <h2>What is kept here</h2>
        <table className="table retention">
          <thead>
            <tr>
              <th>Data</th>
              <th>Table</th>
              <th className="num">Rows on this device</th>
              <th>Kept</th>
              <th>Oldest kept</th>
            </tr>
          </thead>
          <tbody>
            {SHAPE_NAMES.map((name) => (
              <RetentionRow key={name} name={name} />
            ))}
          </tbody>
        </table>
        <p className="muted small">
          Local database: <code>{client.options.database}</code> · device id <code>{client.clientId}</code>
        </p>
      </div>
      <div className="device-grid">
        <Storage />
        <SyncSettings />
      </div>
    </section>
  )
}

function RetentionRow({ name }: { name: ShapeName }) {
  const { rows, loaded } = useShape<Row>(name)
  const r = RETENTION[name]
  let oldest = '—'
  if (r.oldest) {
    const col = r.oldest.column
    const times = rows.map((row) => timeOf(row[col])).filter((t) => !Number.isNaN(t))
    if (times.length > 0) {
      const t = Math.min(...times)
      oldest = `${formatDateTime(new Date(t).toISOString())} (${formatRelative(new Date(t).toISOString())})`
    }
  } else if (r.soonest) {
    const col = r.soonest
    const times = rows.map((row) => timeOf(row[col])).filter((t) => !Number.isNaN(t))
    oldest = times.length > 0 ? `next expiry ${formatRelative(new Date(Math.min(...times)).toISOString())}` : 'none expire'
  }
  return (
    <tr data-testid="retention" data-shape={name}>
      <td className="strong">{r.label}</td>
      <td>
        <code>{SHAPES[name].table}</code>
      </td>
      <td className="num" data-count={rows.length}>
        {rows.length}
        {!loaded && <span className="muted small"> (loading)</span>}
      </td>
      <td data-testid="retention-rule">{r.rule}</td>
      <td>{oldest}</td>
    </tr>
  )
}

/** The browser's storage estimate, refreshed every 5 s while shown. */
function Storage() {
  const [estimate, setEstimate] = useState<StorageEstimate | null | undefined>(undefined)
  useEffect(() => {
    if (!navigator.storage?.estimate) {
      setEstimate(null)
      return
    }
    let live = true
    const read = () =>
      navigator.storage.estimate().then(
        (e) => live && setEstimate(e),
        () => live && setEstimate(null),
      )
    void read()
    const timer = setInterval(read, 5000)
    return () => {
      live = false
      clearInterval(timer)
    }
  }, [])
  let text: string
  if (estimate === undefined) text = 'Measuring…'
  else if (estimate === null || estimate.usage === undefined) text = 'This browser does not say how much storage the console uses.'
  else text = `${formatBytes(estimate.usage)} used of ${estimate.quota !== undefined ? formatBytes(estimate.quota) : 'an unknown amount'} available`
  return (
    <div className="card">
      <h2>Storage</h2>
      <p data-testid="storage-usage" data-usage={estimate?.usage} data-quota={estimate?.quota}>
        {text}
      </p>
      <p className="muted small">What the browser reports for this site: your data, the app itself and its offline copy.</p>
    </div>
  )
}

/** The server's batch size (`GET /v1/config`; 100 when it cannot be asked) and the changes waiting. */
function SyncSettings() {
  const { pending, state } = useSyncStatus()
  const [batch, setBatch] = useState<{ size: number; known: boolean } | undefined>(undefined)
  useEffect(() => {
    let live = true
    fetch('/v1/config', { cache: 'no-store' })
      .then((r) => (r.ok ? (r.json() as Promise<{ sync_batch_size?: unknown }>) : Promise.reject(new Error(String(r.status)))))
      .then((c) => {
        if (!live) return
        const n = c.sync_batch_size
        setBatch(typeof n === 'number' && n > 0 ? { size: n, known: true } : { size: 100, known: false })
      })
      .catch(() => live && setBatch({ size: 100, known: false }))
    return () => {
      live = false
    }
  }, [])
  return (
    <div className="card">
      <h2>Sync</h2>
      {batch === undefined ? (
        <p className="muted">Asking the server…</p>
      ) : (
        <>
          <p data-testid="batch-size" data-value={batch.size}>
            Changes are sent in batches of {batch.size}
          </p>
          {!batch.known && <p className="muted small">(the usual size: the server could not be asked just now)</p>}
        </>
      )}
      <p data-testid="pending-count" data-count={pending}>
        {pending === 0 ? 'No changes waiting to be sent' : `${pending} change${pending === 1 ? '' : 's'} waiting to be sent`}
        {state === 'offline' && pending > 0 ? ' — they go out when you are back online' : ''}
      </p>
    </div>
  )
}
