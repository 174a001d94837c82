/**
 * A tenant's staff inbox (`/t/<slug>/inbox`): sign in as one of the tenant's staff, then the
 * tenant's leads, live and newest first, each with its status and notes to work them (written
 * with `updated_at`; the server merges concurrent edits field by field, the last writer winning).
 * Works offline from the staff member's local database; "Sign out" deletes that database from the
 * device.
 */

import type { PGliteWorker } from '@electric-sql/pglite/worker'
import { devTokenSource, type Merge, type Rejection } from '@ferrite/client'
import { FerriteProvider, useFerrite, useShape } from '@ferrite/react'
import { useEffect, useMemo, useRef, useState, type CSSProperties } from 'react'
import { count, formatTime, nowIso, parseTimestamp } from '../format.js'
import { closeLocalNow, deleteLocal, useLocal, type LocalSpec } from '../local.js'
import { sitePath } from '../routes.js'
import { forgetStaff, initials, rememberStaff, rememberedStaff, staffDatabase, type SignedInStaff } from '../session.js'
import { brandColor, inkOn, type Tenant } from '../tenants.js'
import { TenantGate } from './tenant-gate.js'
import { useExposeClient, useReady } from '../test-hooks.js'
import { StaffPicker, useStaffList } from './staff-signin.js'
import { SyncIndicator, type IndicatorWords } from './sync-indicator.js'

export const STATUSES = ['new', 'contacted', 'won', 'lost'] as const
export type LeadStatus = (typeof STATUSES)[number]
const STATUS_LABELS: Record<LeadStatus, string> = { new: 'New', contacted: 'Contacted', won: 'Won', lost: 'Lost' }

/** A lead as the inbox reads it. */
export interface Lead {
  [column: string]: string | null
  id: string
  tenant_id: string
  name: string
  email: string
  phone: string | null
  message: string
  status: string
  notes: string
  created_at: string
  updated_at: string
}

const WORDS: IndicatorWords = { one: 'change', many: 'changes', synced: 'Online — up to date' }

/** Tells the other tabs that a staff member signed out (they close that database at once). */
const SIGN_OUT_CHANNEL = 'lead-forms:sign-out'
/** This tab, in those messages (a BroadcastChannel also reaches the sender's other channels). */
const TAB = crypto.randomUUID()

export function InboxPage({ slug }: { slug: string }) {
  return <TenantGate slug={slug} what="inbox" page={(tenant) => <TenantInbox key={tenant.id} tenant={tenant} />} />
}

function TenantInbox({ tenant }: { tenant: Tenant }) {
  const [staff, setStaff] = useState<SignedInStaff | undefined>(() => rememberedStaff(tenant))
  const [note, setNote] = useState<string | undefined>(undefined)
  const color = brandColor(tenant)
  const style = { '--brand': color, '--on-brand': inkOn(color) } as CSSProperties
  return (
    <div className="inbox-page" style={style} data-testid="inbox-page" data-tenant-id={tenant.id} data-slug={tenant.slug}>
      {staff ? (
        <StaffInbox
          key={staff.id}
          tenant={tenant}
          staff={staff}
          onSignedOut={(n) => {
            setNote(n)
            setStaff(undefined)
          }}
        />
      ) : (
        <InboxSignIn tenant={tenant} note={note} onSignIn={(s) => setStaff(s)} />
      )}
    </div>
  )
}

function InboxSignIn({ tenant, note, onSignIn }: { tenant: Tenant; note: string | undefined; onSignIn: (s: SignedInStaff) => void }) {
  const list = useStaffList()
  useReady(list.users !== undefined || list.error !== undefined)
  return (
    <main className="centered">
      <div className="card signin" data-testid="staff-signin">
        <p className="eyebrow">{tenant.name}</p>
        <h1>Sign in to the inbox</h1>
        {note && (
          <p className="note" role="status" data-testid="signed-out-note">
            {note}
          </p>
        )}
        <p className="muted">Pick who you are. The inbox keeps the leads on this device, so it also works offline; signing out removes them.</p>
        <StaffPicker
          list={list}
          filter={(u) => u.tenant_slug === tenant.slug || u.tenant_id === tenant.id}
          empty={`${tenant.name} has no staff to sign in as.`}
          onPick={(u) => onSignIn(rememberStaff({ id: u.id, name: u.name, tenant_id: tenant.id }))}
        />
        <p className="small">
          <a href={sitePath(tenant.slug)}>Back to the {tenant.name} site</a>
        </p>
      </div>
    </main>
  )
}

/** Creates the `leads` table the store mirrors the shape into (so the inbox could query it with SQL). */
async function createLeadsTable(db: { exec(sql: string): Promise<unknown> }): Promise<null> {
  await db.exec(`
    CREATE TABLE IF NOT EXISTS leads (
      id          uuid PRIMARY KEY,
      tenant_id   uuid,
      name        text,
      email       text,
      phone       text,
      message     text,
      status      text,
      notes       text,
      created_at  timestamptz,
      updated_at  timestamptz
    )`)
  return null
}

function staffSpec(tenant: Tenant, staff: SignedInStaff): LocalSpec<null> {
  return {
    database: staffDatabase(tenant.id, staff.id),
    shapes: { tenants: { table: 'tenants' }, leads: { table: 'leads' } },
    token: devTokenSource(staff.id),
    tables: { leads: 'leads' },
    prepare: (db) => createLeadsTable(db),
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

function StaffInbox({ tenant, staff, onSignedOut }: { tenant: Tenant; staff: SignedInStaff; onSignedOut: (note?: string) => void }) {
  const spec = useMemo(() => staffSpec(tenant, staff), [tenant, staff])
  const database = spec.database
  const { local, error } = useLocal(spec)
  const [phase, setPhase] = useState<'open' | 'signing-out' | 'waiting-for-tabs'>('open')
  useExposeClient(phase === 'open' ? local : undefined)
  const signedOut = useRef(onSignedOut)
  signedOut.current = onSignedOut

  // Signed out in another tab: let go of the database at once (that tab is deleting it).
  useEffect(() => {
    if (typeof BroadcastChannel === 'undefined') return
    const channel = new BroadcastChannel(SIGN_OUT_CHANNEL)
    channel.onmessage = (e: MessageEvent<{ database?: string; from?: string }>) => {
      if (e.data?.database !== database || e.data.from === TAB) return
      setPhase('signing-out')
      void closeLocalNow(database).then(() => signedOut.current('You were signed out in another tab.'))
    }
    return () => channel.close()
  }, [database])

  const signOut = async () => {
    setPhase('signing-out')
    if (typeof BroadcastChannel !== 'undefined') {
      const channel = new BroadcastChannel(SIGN_OUT_CHANNEL)
      channel.postMessage({ database, from: TAB })
      channel.close()
      // Other tabs close first, so none of them takes the database over meanwhile.
      await sleep(150)
    }
    let note: string | undefined
    try {
      await deleteLocal(database, () => setPhase('waiting-for-tabs'))
    } catch (e) {
      note = `Signed out, but this device’s copy of the inbox could not be deleted: ${(e as Error).message}`
    }
    forgetStaff(tenant.id)
    onSignedOut(note ?? 'Signed out. The inbox’s data was removed from this device.')
  }

  if (phase !== 'open') {
    return (
      <main className="centered">
        <div className="card" data-testid="signing-out">
          <p>{phase === 'waiting-for-tabs' ? 'Signing out: waiting for the other tabs of this inbox to close…' : 'Signing out and removing the inbox from this device…'}</p>
        </div>
      </main>
    )
  }
  const header = (
    <header className="inbox-header">
      <a className="site-name" href={sitePath(tenant.slug)}>
        <span className="site-mark" aria-hidden="true">
          {tenant.name.slice(0, 1)}
        </span>
        {tenant.name}
      </a>
      <span className="inbox-title">Inbox</span>
      <div className="inbox-status">
        {local && (
          <FerriteProvider client={local.client}>
            <SyncIndicator words={WORDS} />
          </FerriteProvider>
        )}
      </div>
      <div className="who">
        <span className="avatar small-avatar" aria-hidden="true">
          {initials(staff.name)}
        </span>
        <span data-testid="staff-name">{staff.name}</span>
        <button type="button" className="secondary" data-testid="sign-out" onClick={() => void signOut()}>
          Sign out
        </button>
      </div>
    </header>
  )
  if (error) {
    return (
      <>
        {header}
        <main className="inbox">
          <p className="error" role="alert" data-testid="local-error">
            The inbox could not be opened on this device: {error.message}
          </p>
        </main>
      </>
    )
  }
  return (
    <>
      {header}
      {local ? (
        <FerriteProvider client={local.client}>
          <Inbox tenant={tenant} db={local.db} />
        </FerriteProvider>
      ) : (
        <p className="boot">Opening the inbox on this device…</p>
      )}
    </>
  )
}

function createdMs(l: Lead): number {
  const t = parseTimestamp(l.created_at)
  return Number.isFinite(t) ? t : Infinity
}

/** What the inbox says about a write of this device the server did not keep. */
interface Notice {
  id: string
  kind: 'rejected' | 'merged'
  text: string
}

function useNotices(leadName: (id: string | null | undefined) => string): [Notice[], (id: string) => void] {
  const client = useFerrite()
  const [notices, setNotices] = useState<Notice[]>([])
  useEffect(() => {
    const add = (n: Notice) => setNotices((list) => [...list.slice(-4), n])
    const offRejected = client.on('rejected', (r: Rejection) => {
      add({ id: `r${r.id}`, kind: 'rejected', text: `A change to ${leadName(r.key?.id)} was not saved: ${r.message}` })
    })
    const offMerged = client.on('merged', (m: Merge) => {
      for (const lost of m.lost) {
        add({
          id: `m${m.id}-${lost.key.id ?? ''}`,
          kind: 'merged',
          text: `Someone else changed ${lost.columns.join(' and ')} of ${leadName(lost.key.id)} at the same time: their change was kept.`,
        })
      }
    })
    return () => {
      offRejected()
      offMerged()
    }
  }, [client, leadName])
  return [notices, (id) => setNotices((list) => list.filter((n) => n.id !== id))]
}

/**
 * Whether the leads shape's rows are on disk, not only on the screen: the client shows a batch
 * before its store has written it, and PGlite writes IndexedDB after the statement. Once the
 * shape's position is stored (it is written with the rows) and PGlite has synced its files, a
 * reload — offline too — finds the leads.
 */
function useStoredShape(db: PGliteWorker, shape: string, loaded: boolean): boolean {
  const [stored, setStored] = useState(false)
  useEffect(() => {
    if (!loaded) return
    let live = true
    void (async () => {
      for (let attempt = 0; live && attempt < 300; attempt++) {
        try {
          const { rows } = await db.query(`SELECT 1 FROM ferrite.shapes WHERE name = $1 AND record ->> 'offset' <> '-1'`, [shape])
          if (rows.length > 0) {
            await db.syncToFs()
            if (live) setStored(true)
            return
          }
        } catch {
          /* the database is closing, or changing tabs: try again */
        }
        await sleep(100)
      }
    })()
    return () => {
      live = false
    }
  }, [db, shape, loaded])
  return stored
}

function Inbox({ tenant, db }: { tenant: Tenant; db: PGliteWorker }) {
  const { rows, loaded } = useShape<Lead>('leads')
  useReady(useStoredShape(db, 'leads', loaded))
  const [filter, setFilter] = useState<LeadStatus | 'all'>('all')
  const leads = useMemo(() => rows.filter((l) => l.tenant_id === tenant.id).sort((a, b) => createdMs(b) - createdMs(a) || (a.id < b.id ? -1 : 1)), [rows, tenant.id])
  const counts = useMemo(() => {
    const c: Record<string, number> = {}
    for (const l of leads) c[l.status] = (c[l.status] ?? 0) + 1
    return c
  }, [leads])
  const names = useMemo(() => new Map(leads.map((l) => [l.id, l.name])), [leads])
  const leadName = useMemo(() => (id: string | null | undefined) => (id && names.has(id) ? `the lead from ${names.get(id)}` : 'a lead'), [names])
  const [notices, dismiss] = useNotices(leadName)
  const shown = filter === 'all' ? leads : leads.filter((l) => l.status === filter)

  return (
    <main className="inbox" data-testid="inbox" data-loaded={loaded}>
      <div className="inbox-counts" role="group" aria-label="Leads by status">
        <button type="button" className="count-chip" aria-pressed={filter === 'all'} data-testid="lead-count" data-count={leads.length} onClick={() => setFilter('all')}>
          All <span className="count-n">{leads.length}</span>
        </button>
        {STATUSES.map((s) => (
          <button
            key={s}
            type="button"
            className={`count-chip status-${s}`}
            aria-pressed={filter === s}
            data-testid="status-count"
            data-status={s}
            data-count={counts[s] ?? 0}
            onClick={() => setFilter(s)}
          >
            {STATUS_LABELS[s]} <span className="count-n">{counts[s] ?? 0}</span>
          </button>
        ))}
      </div>
      {notices.map((n) => (
        <p key={n.id} className={`notice notice-${n.kind}`} role="alert" data-testid="inbox-notice" data-kind={n.kind}>
          {n.text}{' '}
          <button type="button" className="link" onClick={() => dismiss(n.id)}>
            Dismiss
          </button>
        </p>
      ))}
      {!loaded ? (
        <p className="empty">Loading the leads…</p>
      ) : shown.length === 0 ? (
        <p className="empty">{leads.length === 0 ? 'No leads yet. Messages sent from the site’s form appear here.' : 'No leads with this status.'}</p>
      ) : (
        <ul className="lead-rows">
          {shown.map((l) => (
            <LeadRow key={l.id} lead={l} />
          ))}
        </ul>
      )}
      <p className="muted small">{count(leads.length, 'lead')} · kept on this device for offline use until you sign out.</p>
    </main>
  )
}

function LeadRow({ lead }: { lead: Lead }) {
  const client = useFerrite()
  const notes = lead.notes ?? ''
  const [draft, setDraft] = useState(notes)
  const [typing, setTyping] = useState(false)
  useEffect(() => {
    if (!typing) setDraft(notes)
  }, [notes, typing])
  const write = (set: Record<string, string>) => {
    client.transaction((tx) => tx.update('leads', { id: lead.id }, { ...set, updated_at: nowIso() })).catch((e: unknown) => {
      console.warn('[lead-forms] a change could not be queued', e)
      alert(`The change could not be saved on this device: ${(e as Error).message}`)
    })
  }
  const commitNotes = () => {
    setTyping(false)
    if (draft !== notes) write({ notes: draft })
  }
  const status = STATUSES.includes(lead.status as LeadStatus) ? (lead.status as LeadStatus) : undefined
  return (
    <li className={`lead-row status-${lead.status}`} data-testid="lead-row" data-id={lead.id} data-status={lead.status}>
      <div className="lead-head">
        <span className="avatar" aria-hidden="true">
          {initials(lead.name ?? '')}
        </span>
        <div className="lead-who">
          <span className="strong" data-field="name">
            {lead.name}
          </span>
          <span className="muted small">
            <a href={`mailto:${lead.email}`} data-field="email">
              {lead.email}
            </a>
            {lead.phone && (
              <>
                {' · '}
                <a href={`tel:${lead.phone.replace(/[^0-9+]/g, '')}`} data-field="phone">
                  {lead.phone}
                </a>
              </>
            )}
          </span>
        </div>
        <time className="muted small" data-field="created_at" dateTime={lead.created_at}>
          {formatTime(lead.created_at)}
        </time>
      </div>
      <p className="lead-message" data-field="message">
        {lead.message}
      </p>
      <div className="lead-controls">
        <label className="inline">
          <span>Status</span>
          <select data-field="status" value={lead.status} onChange={(e) => write({ status: e.target.value })}>
            {!status && <option value={lead.status}>{lead.status}</option>}
            {STATUSES.map((s) => (
              <option key={s} value={s}>
                {STATUS_LABELS[s]}
              </option>
            ))}
          </select>
        </label>
        <label className="inline grow">
          <span>Notes</span>
          <input
            data-field="notes"
            value={draft}
            placeholder="Add a note for the team"
            maxLength={5000}
            onFocus={() => setTyping(true)}
            onChange={(e) => {
              setTyping(true)
              setDraft(e.target.value)
            }}
            onBlur={commitNotes}
            onKeyDown={(e) => {
              if (e.key === 'Enter') {
                e.preventDefault()
                commitNotes()
              } else if (e.key === 'Escape') {
                setDraft(notes)
                setTyping(false)
              }
            }}
          />
        </label>
      </div>
    </li>
  )
}
