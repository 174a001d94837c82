/**
 * What the visitor sent from this device, under the form: the confirmation of the last message,
 * the messages waiting to be sent (`queued-lead`), those the site did not accept
 * (`lead-rejected`: why, what was written, and a way to correct and resend it or to discard it —
 * never silently dropped), and those sent (`sent-lead`). Rendered inside the site's
 * FerriteProvider: waiting messages are the client's pending inserts into `leads`.
 */

import { useFerrite, useShape, useSyncStatus } from '@ferrite/react'
import { useEffect, useMemo, useState } from 'react'
import { count, formatTime } from '../format.js'
import { FIELD_LABELS } from '../validation.js'
import { rejectionOf, type NewLead, type Submission } from '../visitor.js'
import { useBrowserOnline } from './sync-indicator.js'

/** How long a message sent online may take before the page says it is kept on the device. */
const SENDING_GRACE_MS = 4000

export type LeadState = 'queued' | 'sent' | 'rejected'

/** Each lead of this device with where it stands: waiting (the client's outbox), sent, refused. */
export function useMyLeads(submissions: Submission[]): { queued: { lead: NewLead; created?: number }[]; rejected: Submission[]; sent: Submission[]; stateOf: (id: string) => LeadState | undefined } {
  const client = useFerrite()
  const { rows } = useShape<NewLead>('leads')
  return useMemo(() => {
    const known = new Map(submissions.map((s) => [s.id, s]))
    const pending = new Set(rows.map((r) => r.id))
    // Listed as waiting once stored (a reload finds it), not while it is being written.
    const stored = new Set(
      client.pendingTransactions
        .filter((t) => t.id !== undefined)
        .flatMap((t) => t.mutations)
        .flatMap((m) => (m.op === 'insert' && m.shape === 'leads' && typeof m.value.id === 'string' ? [m.value.id] : [])),
    )
    const queued = rows
      .filter((lead) => stored.has(lead.id))
      .map((lead) => ({ lead, created: known.get(lead.id)?.created }))
      .sort((a, b) => (b.created ?? Infinity) - (a.created ?? Infinity))
    // Not waiting any more: the server answered (a `queued` entry means the answer was not noted).
    const rejected = submissions.filter((s) => !pending.has(s.id) && s.state === 'rejected')
    const sent = submissions.filter((s) => !pending.has(s.id) && s.state !== 'rejected')
    const stateOf = (id: string): LeadState | undefined => {
      if (pending.has(id)) return 'queued'
      const s = known.get(id)
      if (!s) return undefined
      return s.state === 'rejected' ? 'rejected' : 'sent'
    }
    return { queued, rejected, sent, stateOf }
  }, [client, rows, submissions])
}

/** The confirmation of the last message sent from this page. */
export function Confirmation({ last, submissions }: { last: { id: string; at: number }; submissions: Submission[] }) {
  const { stateOf } = useMyLeads(submissions)
  const status = useSyncStatus()
  const online = useBrowserOnline()
  const [, setTick] = useState(0)
  const state = stateOf(last.id) ?? 'queued'
  const young = Date.now() - last.at < SENDING_GRACE_MS
  useEffect(() => {
    if (!young) return
    const t = setTimeout(() => setTick((n) => n + 1), SENDING_GRACE_MS - (Date.now() - last.at) + 10)
    return () => clearTimeout(t)
  }, [young, last.at])
  let shown: 'sending' | 'saved' | 'sent' | 'rejected'
  if (state === 'sent') shown = 'sent'
  else if (state === 'rejected') shown = 'rejected'
  else if (!online || status.state === 'offline' || status.state === 'error' || !young) shown = 'saved'
  else shown = 'sending'
  const text = {
    sending: 'Sending your message…',
    saved: 'Saved on this device — it will be sent when you’re back online.',
    sent: 'Thanks! We received your message.',
    rejected: 'Your message was not accepted: see below for why, then correct it and send it again.',
  }[shown]
  return (
    <p className={`confirmation confirmation-${shown}`} data-testid="lead-confirmation" data-state={shown} data-id={last.id} role="status" aria-live="polite">
      {text}
    </p>
  )
}

function LeadSummary({ lead }: { lead: { name: string; email: string; phone: string | null; message: string } }) {
  return (
    <div className="lead-summary">
      <p className="lead-who">
        <span className="strong" data-field="name">
          {lead.name}
        </span>{' '}
        <span className="muted" data-field="email">
          {lead.email}
        </span>
        {lead.phone && (
          <span className="muted" data-field="phone">
            {' '}
            · {lead.phone}
          </span>
        )}
      </p>
      <p className="lead-message" data-field="message">
        {lead.message}
      </p>
    </div>
  )
}

export function MyLeads({
  submissions,
  editingId,
  onEdit,
  onDiscard,
}: {
  submissions: Submission[]
  editingId: string | undefined
  onEdit: (s: Submission) => void
  onDiscard: (s: Submission) => void
}) {
  const { queued, rejected, sent } = useMyLeads(submissions)
  if (queued.length === 0 && rejected.length === 0 && sent.length === 0) return null
  return (
    <div className="my-leads" data-testid="my-leads">
      {rejected.length > 0 && (
        <section className="leads-group" aria-label="Messages not accepted">
          <h3>Not accepted — please check</h3>
          {rejected.map((s) => {
            const why = rejectionOf(s)
            return (
              <article
                key={s.id}
                className="lead-card rejected"
                data-testid="lead-rejected"
                data-id={s.id}
                data-state="rejected"
                data-field={why.field}
                data-constraint={why.constraint}
                data-code={s.code ?? undefined}
              >
                <p className="reject-reason" data-testid="lead-rejected-reason">
                  {why.field ? `${FIELD_LABELS[why.field]}: ` : ''}
                  {why.text}
                </p>
                <LeadSummary lead={s} />
                <div className="lead-actions">
                  <button type="button" className="primary brand" data-testid="lead-edit" disabled={editingId === s.id} onClick={() => onEdit(s)}>
                    {editingId === s.id ? 'Being corrected above' : 'Correct and send again'}
                  </button>
                  <button type="button" className="danger-link" data-testid="lead-discard" onClick={() => onDiscard(s)}>
                    Discard
                  </button>
                </div>
              </article>
            )
          })}
        </section>
      )}
      {queued.length > 0 && (
        <section className="leads-group" aria-label="Messages waiting to be sent">
          <h3>Waiting to be sent ({count(queued.length, 'message')})</h3>
          <ul className="lead-list">
            {queued.map(({ lead, created }) => (
              <li key={lead.id} className="lead-card queued" data-testid="queued-lead" data-id={lead.id} data-state="queued">
                <LeadSummary lead={lead} />
                <p className="lead-status muted small">Saved on this device{created ? ` at ${formatTime(created)}` : ''} · waiting to be sent</p>
              </li>
            ))}
          </ul>
        </section>
      )}
      {sent.length > 0 && (
        <section className="leads-group" aria-label="Messages sent">
          <h3>Sent</h3>
          <ul className="lead-list">
            {sent.map((s) => (
              <li key={s.id} className="lead-card sent" data-testid="sent-lead" data-id={s.id} data-state="sent">
                <LeadSummary lead={s} />
                <p className="lead-status muted small">Sent · {formatTime(s.updated)}</p>
              </li>
            ))}
          </ul>
        </section>
      )}
    </div>
  )
}
