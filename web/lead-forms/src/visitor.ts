/**
 * A site visitor's side of the sync: a short-lived site token (`POST /dev/site-token`), the
 * shapes, and the visitor's record of what they sent from this device.
 *
 * A visitor may add leads to the tenant but read none (the server refuses a visitor's shape of
 * `leads` with 403). So the visitor's client has `leads` as a write-only shape: no request is
 * made for it, and a lead leaves the outbox once the server has answered (committed: no shape
 * will show it back; refused: rolled back with a `rejected` event).
 *
 * The client's `fetch` (see {@link visitorFetch}) notes each answer in the visitor's journal (a table in the site's PGlite
 * database, `lead_forms.submissions`): which leads were sent, which were refused and why — so
 * every tab of the site, and the next visit, shows them, whichever tab sent them.
 */

import type { PGliteLike, Rejection, ShapeOptions, TokenSource, protocol } from '@ferrite/client'
import type { Tenant } from './tenants.js'
import { explainRejection } from './validation.js'

/** A lead as the visitor's client inserts it. */
export interface NewLead {
  [column: string]: string | null
  id: string
  tenant_id: string
  name: string
  email: string
  phone: string | null
  message: string
}

/** What a visitor syncs: their tenant's row (its branding), and `leads` for writing only. */
export const VISITOR_SHAPES = {
  tenants: { table: 'tenants' },
  leads: { table: 'leads', writeOnly: true },
} satisfies Record<string, ShapeOptions>

/** The visitor's database: one per tenant on this device. */
export const visitorDatabase = (tenant: Pick<Tenant, 'id'>) => `lead-forms-${tenant.id}-visitor`

/**
 * Site tokens for `slug` (`POST /dev/site-token`): a refusal is an error the sync status shows,
 * a network failure stays the `TypeError` fetch throws (the client then counts as offline).
 */
export function siteTokenSource(slug: string): TokenSource {
  return async () => {
    const r = await fetch('/dev/site-token', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ tenant: slug }),
      cache: 'no-store',
    })
    if (!r.ok) throw new Error(r.status === 404 ? `there is no site named ${slug}` : `the site refused a visitor token (${r.status})`)
    const { token, expires_at } = (await r.json()) as { token: string; expires_at: number }
    return { token, expiresAt: expires_at * 1000 }
  }
}

/** One lead the visitor sent (or tried to) from this device. */
export interface Submission {
  id: string
  name: string
  email: string
  phone: string | null
  message: string
  /** `queued` until the server answers; then `sent` or `rejected`. */
  state: 'queued' | 'sent' | 'rejected'
  /** For a refused lead: the server's code and message. */
  code: string | null
  reason: string | null
  /** Unix ms. */
  created: number
  updated: number
}

/** The outcome of one lead, as the server answered it. */
interface Outcome {
  lead: Record<string, string | null>
  state: 'sent' | 'rejected'
  code?: string
  reason?: string
}

/** How long sent leads stay listed on the device. */
const KEEP_SENT = "interval '1 day'"

/**
 * The visitor's journal (see the module docs). Tabs of the same database tell each other about
 * changes over a BroadcastChannel.
 */
export class Journal {
  #listeners = new Set<() => void>()
  #channel: BroadcastChannel | undefined

  private constructor(
    readonly db: PGliteLike,
    readonly database: string,
  ) {
    if (typeof BroadcastChannel !== 'undefined') {
      this.#channel = new BroadcastChannel(`lead-forms-journal:${database}`)
      this.#channel.onmessage = () => this.#emit()
    }
  }

  /** Creates the journal's table (and forgets sent leads older than a day). */
  static async open(db: PGliteLike, database: string): Promise<Journal> {
    await db.exec(`
      CREATE SCHEMA IF NOT EXISTS lead_forms;
      CREATE TABLE IF NOT EXISTS lead_forms.submissions (
        id          uuid PRIMARY KEY,
        name        text NOT NULL DEFAULT '',
        email       text NOT NULL DEFAULT '',
        phone       text,
        message     text NOT NULL DEFAULT '',
        state       text NOT NULL DEFAULT 'queued' CHECK (state IN ('queued', 'sent', 'rejected')),
        code        text,
        reason      text,
        created_at  timestamptz NOT NULL DEFAULT now(),
        updated_at  timestamptz NOT NULL DEFAULT now()
      );
      DELETE FROM lead_forms.submissions WHERE state = 'sent' AND updated_at < now() - ${KEEP_SENT};`)
    return new Journal(db, database)
  }

  /** Calls `listener` when the journal changed (in this tab or another). */
  subscribe(listener: () => void): () => void {
    this.#listeners.add(listener)
    return () => this.#listeners.delete(listener)
  }

  #emit(): void {
    for (const l of [...this.#listeners]) l()
  }

  /** Tells this tab's and the other tabs' listeners that the journal changed. */
  changed(): void {
    this.#emit()
    this.#channel?.postMessage('changed')
  }

  close(): void {
    this.#channel?.close()
    this.#listeners.clear()
  }

  /** The leads of this device, newest first. */
  async list(): Promise<Submission[]> {
    const { rows } = await this.db.query<Submission>(
      `SELECT id::text AS id, name, email, phone, message, state, code, reason,
              (extract(epoch FROM created_at) * 1000)::float8 AS created,
              (extract(epoch FROM updated_at) * 1000)::float8 AS updated
         FROM lead_forms.submissions ORDER BY created_at DESC, id LIMIT 500`,
    )
    return rows
  }

  /** Notes a new lead as queued (before the client queues it). */
  async add(lead: NewLead): Promise<void> {
    await this.db.query(
      `INSERT INTO lead_forms.submissions (id, name, email, phone, message, state) VALUES ($1, $2, $3, $4, $5, 'queued')
       ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, email = EXCLUDED.email, phone = EXCLUDED.phone,
         message = EXCLUDED.message, state = 'queued', code = NULL, reason = NULL, updated_at = now()`,
      [lead.id, lead.name, lead.email, lead.phone, lead.message],
    )
  }

  /** Puts a submission back as it was (its new version could not be queued). */
  async restore(s: Submission): Promise<void> {
    await this.db.query(
      `UPDATE lead_forms.submissions SET name = $2, email = $3, phone = $4, message = $5, state = $6, code = $7, reason = $8, updated_at = now()
        WHERE id = $1`,
      [s.id, s.name, s.email, s.phone, s.message, s.state, s.code, s.reason],
    )
  }

  /** Forgets a lead (one the visitor discarded, or one that could not be queued). */
  async remove(id: string): Promise<void> {
    await this.db.query('DELETE FROM lead_forms.submissions WHERE id = $1', [id])
  }

  /**
   * Takes lead `id` out of the client's stored outbox (the store's `ferrite.outbox`). Only for a
   * lead whose queueing failed because the disk was full: PGlite then keeps the write in memory
   * though the client was told it failed, and would send a lead the visitor was told was not
   * saved.
   */
  async unqueue(id: string): Promise<void> {
    await this.db.query(`DELETE FROM ferrite.outbox WHERE txn -> 'mutations' @> jsonb_build_array(jsonb_build_object('shape', 'leads', 'value', jsonb_build_object('id', $1::text)))`, [id])
  }

  /** Notes the server's answers. */
  async record(outcomes: Outcome[]): Promise<void> {
    if (outcomes.length === 0) return
    // Whole or not at all; the same answers noted twice are noted once (so a try cut off by a
    // closing tab may simply run again).
    for (let attempt = 0; ; attempt++) {
      try {
        await this.#record(outcomes)
        return
      } catch (e) {
        if (attempt >= 3 || !(e instanceof Error) || !/leader changed/i.test(e.message)) throw e
      }
    }
  }

  async #record(outcomes: Outcome[]): Promise<void> {
    await this.db.transaction(async (tx) => {
      for (const o of outcomes) {
        const v = o.lead
        await tx.query(
          `INSERT INTO lead_forms.submissions (id, name, email, phone, message, state, code, reason)
           VALUES ($1, coalesce($2, ''), coalesce($3, ''), $4, coalesce($5, ''), $6, $7, $8)
           ON CONFLICT (id) DO UPDATE SET state = EXCLUDED.state, code = EXCLUDED.code, reason = EXCLUDED.reason, updated_at = now()`,
          [v.id, v.name ?? null, v.email ?? null, v.phone ?? null, v.message ?? null, o.state, o.code ?? null, o.reason ?? null],
        )
      }
    })
  }

  /** Notes a refusal the client reported (also those it made itself, e.g. a lead too large). */
  async recordRejection(r: Rejection): Promise<void> {
    const outcomes: Outcome[] = []
    for (const m of r.transaction.mutations) {
      if (m.op !== 'insert' || m.shape !== 'leads') continue
      const lead: Record<string, string | null> = {}
      for (const [k, v] of Object.entries(m.value)) lead[k] = v === null ? null : String(v)
      outcomes.push({ lead, state: 'rejected', code: r.code, reason: r.message })
    }
    // Only where visitorFetch has not noted it already (it has the same answer).
    const { rows } = await this.db.query<{ id: string }>(
      `SELECT id::text AS id FROM lead_forms.submissions WHERE state = 'rejected' AND id = ANY ($1::uuid[])`,
      [outcomes.map((o) => o.lead.id)],
    )
    const noted = new Set(rows.map((r) => r.id))
    const fresh = outcomes.filter((o) => !noted.has(o.lead.id ?? ''))
    if (fresh.length === 0) return
    await this.record(fresh)
    this.changed()
  }
}

/**
 * The visitor client's `fetch`: the real one, noting the server's answers to the visitor's leads
 * in the journal (it reads the answers, never changes them).
 */
export function visitorFetch(journal: Journal): typeof fetch {
  return async (input, init) => {
    const href = input instanceof Request ? input.url : String(input)
    const url = new URL(href, location.href)
    const r = await fetch(input, init)
    if (url.pathname !== '/v1/transactions' || r.status !== 200) return r
    let body: protocol.TransactionsResponse
    let sent: protocol.TransactionsRequest
    try {
      body = (await r.clone().json()) as protocol.TransactionsResponse
      sent = JSON.parse(typeof init?.body === 'string' ? init.body : '{}') as protocol.TransactionsRequest
    } catch {
      return r
    }
    await noteOutcomes(journal, sent, body)
    return r
  }
}

async function noteOutcomes(journal: Journal, sent: protocol.TransactionsRequest, body: protocol.TransactionsResponse): Promise<void> {
  const byId = new Map((sent.transactions ?? []).map((t) => [t.id, t]))
  const outcomes: Outcome[] = []
  for (const result of body.results ?? []) {
    const t = byId.get(result.id)
    if (!t) continue
    for (const m of t.mutations) {
      if (m.op !== 'insert' || m.table !== VISITOR_SHAPES.leads.table) continue
      if (result.status === 'rejected') {
        const e = result.error ?? { code: 'invalid', message: 'rejected' }
        outcomes.push({ lead: m.value, state: 'rejected', code: e.code, reason: e.message })
      } else outcomes.push({ lead: m.value, state: 'sent' })
    }
  }
  if (outcomes.length === 0) return
  try {
    await journal.record(outcomes)
    journal.changed()
  } catch (e) {
    // The client's own answer matters more: it still retires or rolls back the leads.
    console.warn('[lead-forms] noting the server’s answer on this device failed', e)
  }
}

/** A refusal in words, for a journal entry. */
export function rejectionOf(s: Submission) {
  return explainRejection(s.code, s.reason)
}
