/**
 * A tenant's marketing site: its branding (from the `tenants` shape once synced; before that from
 * the list of sites), a hero, and the lead form, which works offline — a message is saved in the
 * site's local database on this device and sent when the server can be reached, by this tab,
 * another tab of the site, or the next visit.
 */

import { QueueFullError } from '@ferrite/client'
import { FerriteProvider } from '@ferrite/react'
import { useEffect, useMemo, useState, type CSSProperties } from 'react'
import { QUOTA_REFUSED, isQuotaError, probeRoom, roomForLead, useDeviceStorage, type DeviceStorage } from '../device-storage.js'
import { formatBytes } from '../format.js'
import { useLocal, type Local, type LocalSpec } from '../local.js'
import { inboxPath, sitePath } from '../routes.js'
import { brandColor, inkOn, type Tenant } from '../tenants.js'
import { TenantGate } from './tenant-gate.js'
import { useExposeClient, useReady } from '../test-hooks.js'
import { normalize, type LeadInput } from '../validation.js'
import { Journal, VISITOR_SHAPES, siteTokenSource, visitorDatabase, visitorFetch, type NewLead, type Submission } from '../visitor.js'
import { LeadForm, type SubmitOutcome } from './lead-form.js'
import { Confirmation, MyLeads } from './my-leads.js'
import { StaticIndicator, SyncIndicator, type IndicatorWords } from './sync-indicator.js'

const WORDS: IndicatorWords = { one: 'message', many: 'messages', synced: 'Online — all messages sent' }

/** The site of `slug`, once its tenant is known. */
export function SitePage({ slug }: { slug: string }) {
  return <TenantGate slug={slug} what="site" page={(tenant) => <VisitorSite key={tenant.id} tenant={tenant} />} />
}

/**
 * Whether a failed write failed for want of space: the error says so, or no room is left now.
 * (PGlite reports a write the disk refused with an empty message.)
 */
async function storageFull(e: unknown): Promise<boolean> {
  return isQuotaError(e) || (await probeRoom()) === false || (e instanceof Error && e.message === '')
}

function errorText(e: unknown): string {
  return e instanceof Error && e.message ? e.message : 'the browser did not say why'
}

function visitorSpec(tenant: Tenant): LocalSpec<Journal> {
  return {
    database: visitorDatabase(tenant),
    shapes: VISITOR_SHAPES,
    token: siteTokenSource(tenant.slug),
    prepare: (db, database) => Journal.open(db, database),
    fetch: (journal) => visitorFetch(journal),
    dispose: (journal) => journal.close(),
  }
}

/** The tenant's row as the `tenants` shape has it (its branding, kept up to date), if synced. */
function useSyncedTenant(local: Local<Journal> | undefined, tenant: Tenant): Tenant {
  const [synced, setSynced] = useState<Partial<Tenant> | undefined>(undefined)
  useEffect(() => {
    if (!local) return
    const read = () => setSynced(local.client.rows('tenants').find((r) => r.id === tenant.id) as Partial<Tenant> | undefined)
    read()
    return local.client.on('change', (shapes) => {
      if (shapes.has('tenants')) read()
    })
  }, [local, tenant.id])
  return {
    ...tenant,
    name: typeof synced?.name === 'string' ? synced.name : tenant.name,
    tagline: typeof synced?.tagline === 'string' ? synced.tagline : tenant.tagline,
    brand_color: typeof synced?.brand_color === 'string' ? synced.brand_color : tenant.brand_color,
  }
}

/** The journal of this device's leads, reloaded when it or the outbox changes; and whether it has been read. */
function useSubmissions(local: Local<Journal> | undefined): { submissions: Submission[]; read: boolean } {
  const [list, setList] = useState<Submission[] | undefined>(undefined)
  useEffect(() => {
    if (!local) return
    let live = true
    let running = false
    let again = false
    const load = async () => {
      if (running) {
        again = true
        return
      }
      running = true
      try {
        do {
          again = false
          const rows = await local.app.list()
          if (live) setList(rows)
        } while (again && live)
      } catch (e) {
        if (live) console.warn('[lead-forms] reading this device’s messages failed', e)
      } finally {
        running = false
      }
    }
    void load()
    const offJournal = local.app.subscribe(() => void load())
    const offChange = local.client.on('change', (shapes) => {
      if (shapes.has('leads')) void load()
    })
    // Refusals the client made or heard itself (the fetch wrapper notes the server's).
    const offRejected = local.client.on('rejected', (r) => {
      void local.app.recordRejection(r).catch((e: unknown) => console.warn('[lead-forms] noting a refusal failed', e))
    })
    return () => {
      live = false
      offJournal()
      offChange()
      offRejected()
    }
  }, [local])
  return { submissions: list ?? NONE, read: list !== undefined }
}

const NONE: Submission[] = []

function VisitorSite({ tenant: listed }: { tenant: Tenant }) {
  const spec = useMemo(() => visitorSpec(listed), [listed])
  const { local, error, whenOpen } = useLocal(spec)
  const tenant = useSyncedTenant(local, listed)
  const { submissions, read } = useSubmissions(local)
  const storage = useDeviceStorage()
  const [last, setLast] = useState<{ id: string; at: number } | undefined>(undefined)
  const [editing, setEditing] = useState<Submission | undefined>(undefined)
  const [refused, setRefused] = useState<{ quota: boolean; text: string } | undefined>(undefined)
  const skipValidation = useMemo(() => new URLSearchParams(location.search).get('novalidate') === '1', [])
  useExposeClient(local)
  useReady(local !== undefined && read)

  const color = brandColor(tenant)
  const style = { '--brand': color, '--on-brand': inkOn(color) } as CSSProperties

  useEffect(() => {
    document.title = `${tenant.name}${tenant.tagline ? ` — ${tenant.tagline}` : ''}`
  }, [tenant.name, tenant.tagline])

  const submit = async (input: LeadInput): Promise<SubmitOutcome> => {
    setRefused(undefined)
    const quotaRefused = () => {
      storage.refresh()
      setRefused({ quota: true, text: QUOTA_REFUSED })
      return 'not-queued' as const
    }
    // No room: refuse before writing anything (the leads already queued stay).
    if (!(await roomForLead())) return quotaRefused()
    let l: Local<Journal>
    try {
      l = await whenOpen()
    } catch (e) {
      setRefused({ quota: false, text: `Your message could not be saved on this device: ${errorText(e)}` })
      return 'not-queued'
    }
    const v = normalize(input)
    const previous = editing
    const lead: NewLead = { id: previous?.id ?? crypto.randomUUID(), tenant_id: tenant.id, name: v.name, email: v.email, phone: v.phone || null, message: v.message }
    try {
      await l.app.add(lead)
    } catch (e) {
      // The database may hold it in memory while the disk refused it: take it back out.
      await (previous ? l.app.restore(previous) : l.app.remove(lead.id)).catch(() => {})
      l.app.changed()
      if (await storageFull(e)) return quotaRefused()
      setRefused({ quota: false, text: `Your message could not be saved on this device: ${errorText(e)}` })
      return 'not-queued'
    }
    try {
      await l.client.transaction((tx) => tx.insert('leads', lead))
    } catch (e) {
      await (previous ? l.app.restore(previous) : l.app.remove(lead.id)).catch(() => {})
      // Refused by the store (not by the client's own checks): PGlite may still hold it in memory.
      if (!(e instanceof QueueFullError)) await l.app.unqueue(lead.id).catch(() => {})
      l.app.changed()
      if (await storageFull(e)) return quotaRefused()
      setRefused({
        quota: false,
        text:
          e instanceof QueueFullError
            ? 'Too many messages are waiting on this device: your message was not saved. Earlier messages are kept and will be sent once you are back online.'
            : `Your message could not be saved on this device: ${errorText(e)}`,
      })
      return 'not-queued'
    }
    l.app.changed()
    storage.refresh()
    setEditing(undefined)
    setLast({ id: lead.id, at: Date.now() })
    return 'queued'
  }

  const discard = async (s: Submission) => {
    if (!local) return
    if (editing?.id === s.id) setEditing(undefined)
    await local.app.remove(s.id)
    local.app.changed()
  }

  return (
    <div className="site" style={style} data-testid="site" data-tenant-id={tenant.id} data-slug={tenant.slug} data-brand-color={color}>
      <header className="site-header">
        <a className="site-name" href={sitePath(tenant.slug)} data-testid="tenant-name">
          <span className="site-mark" aria-hidden="true">
            {tenant.name.slice(0, 1)}
          </span>
          {tenant.name}
        </a>
        <nav className="site-nav" aria-label="Site">
          <a href="#contact">Contact</a>
          <a href={inboxPath(tenant.slug)} data-testid="inbox-link">
            Staff inbox
          </a>
        </nav>
        {local ? (
          <FerriteProvider client={local.client}>
            <SyncIndicator words={WORDS} />
          </FerriteProvider>
        ) : (
          <StaticIndicator />
        )}
      </header>

      <section className="hero" data-testid="hero">
        <h1>{tenant.name}</h1>
        {tenant.tagline && (
          <p className="tagline" data-testid="tenant-tagline">
            {tenant.tagline}
          </p>
        )}
        <p className="hero-text">Tell us what you need and we will get back to you. Our form works even without a connection: write to us from anywhere.</p>
        <a className="cta brand" href="#contact">
          Get in touch
        </a>
      </section>

      <section className="features" aria-label="Why write to us">
        <div className="feature">
          <h2>Real people</h2>
          <p>Every message is read by someone on the {tenant.name} team.</p>
        </div>
        <div className="feature">
          <h2>Quick replies</h2>
          <p>We usually answer within one working day, by email or phone — your choice.</p>
        </div>
        <div className="feature">
          <h2>Works offline</h2>
          <p>No signal? Send your message anyway: it is kept on this device and sent as soon as you are back online.</p>
        </div>
      </section>

      <section className="contact" id="contact">
        <div className="contact-intro">
          <h2>Send us a message</h2>
          <p>Fill in the form and we will be in touch. Only your name, email and message are needed.</p>
          <DeviceStorageNote storage={storage} />
        </div>
        <div className="contact-card">
          {error && (
            <p className="error" role="alert" data-testid="local-error">
              This device’s storage could not be opened, so messages cannot be saved here: {error.message}
            </p>
          )}
          <LeadForm
            key={editing?.id ?? 'new'}
            initial={editing ? { name: editing.name, email: editing.email, phone: editing.phone ?? '', message: editing.message } : undefined}
            editing={editing !== undefined}
            skipValidation={skipValidation}
            onSubmit={submit}
            onCancelEdit={() => setEditing(undefined)}
          />
          {refused &&
            (refused.quota ? (
              <p className="refused" role="alert" data-testid="quota-refused">
                {refused.text}
              </p>
            ) : (
              <p className="refused" role="alert" data-testid="submit-error">
                {refused.text}
              </p>
            ))}
          {local && (
            <FerriteProvider client={local.client}>
              {last && <Confirmation last={last} submissions={submissions} />}
              <MyLeads
                submissions={submissions}
                editingId={editing?.id}
                onEdit={(s) => {
                  setEditing(s)
                  setRefused(undefined)
                  document.getElementById('contact')?.scrollIntoView({ behavior: 'smooth' })
                }}
                onDiscard={(s) => void discard(s)}
              />
            </FerriteProvider>
          )}
        </div>
      </section>

      <footer className="site-footer">
        <p>
          © {tenant.name} · <a href="/">All sites</a> · <a href={inboxPath(tenant.slug)}>Staff inbox</a>
        </p>
      </footer>
    </div>
  )
}

/** How much of this device's storage the site uses, and whether the browser keeps it. */
function DeviceStorageNote({ storage }: { storage: DeviceStorage }) {
  const e = storage.estimate
  return (
    <p className="storage-note muted small">
      <span data-testid="storage-usage" data-usage={e?.usage ?? ''} data-quota={e?.quota ?? ''}>
        {e ? `This site uses ${formatBytes(e.usage)} of the ${formatBytes(e.quota)} this browser allows it.` : 'This browser does not say how much storage the site may use.'}
      </span>{' '}
      <span data-testid="storage-persisted" data-persisted={storage.persisted === undefined ? '' : String(storage.persisted)}>
        {storage.persisted === undefined
          ? ''
          : storage.persisted
            ? 'Your unsent messages are kept even when the device runs low on space.'
            : 'The browser may clear unsent messages if the device runs very low on space.'}
      </span>
    </p>
  )
}
