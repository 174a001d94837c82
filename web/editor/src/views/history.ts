/**
 * The selected step's history, from the server's audit trail (`ferrite.audit`): who changed
 * it, when, what (old → new) and whether the change was applied, merged with a newer edit or
 * rejected — live while shown. Read as a shape of its own (filtered by the step's key, bound as
 * a parameter), opened on demand and closed when another step is selected: only the admin rule
 * may read the trail (in this example, team owners; `examples/pipeline-editor/ferrite.toml`),
 * so others see the server's refusal in words.
 */

import { LiveRows, type Row } from '@ferrite/client'
import { ago, h, replaceChildren } from '../dom.js'
import type { Data, Step } from '../data.js'

/** A step's key in the server's shape logs (and the audit trail's `key` column). */
export const stepKey = (id: string) => `"public"."steps"/"${id}"`

/** One audit row, as the shape brings it. */
interface AuditRow {
  id: bigint | number
  at: string
  subject: string | null
  client_id: string
  op: 'insert' | 'update' | 'delete'
  outcome: 'applied' | 'merged' | 'rejected'
  reason: string | null
  changes: Record<string, { old?: string | null; new?: string | null }>
}

const VERBS = { insert: 'created', update: 'changed', delete: 'deleted' }

/** A value of the trail (Postgres text, or null) as shown. */
const shown = (v: string | null | undefined) => (v === null || v === undefined ? '—' : `“${v}”`)

export class HistoryPanel {
  readonly el = h('section', { class: 'panel history', 'data-testid': 'history' })
  #stepId: string | null = null
  #rows: LiveRows | undefined
  #list = h('ol', { class: 'history-list', 'data-testid': 'history-list' })
  #status = h('p', { class: 'muted small', 'data-testid': 'history-status' })
  #toggle = h('button', { class: 'secondary small', 'data-testid': 'history-button', onclick: () => (this.#rows ? this.#close() : this.#open()) }, 'Show history')

  constructor(private readonly data: Data) {}

  update(step: Step | undefined): void {
    if ((step?.id ?? null) !== this.#stepId) {
      this.#close()
      this.#stepId = step?.id ?? null
    }
    this.el.hidden = !step
    if (!step) return
    if (this.el.firstChild === null) this.el.append(h('h3', {}, 'History'), this.#toggle, this.#status, this.#list)
  }

  #open(): void {
    const id = this.#stepId
    if (!id) return
    this.#toggle.textContent = 'Hide history'
    this.#status.textContent = 'Loading…'
    this.#rows = new LiveRows(this.data.client, { table: 'ferrite.audit', where: 'key = $1', params: [stepKey(id)] }, {
      change: (rows) => this.#render(rows),
      error: (status, message) => {
        this.#status.textContent =
          status === 403 ? 'Only administrators can see a step’s history.' : `The history cannot be read: ${message}`
        this.el.dataset.refused = String(status ?? '')
        replaceChildren(this.#list)
      },
    })
  }

  #close(): void {
    this.#rows?.close()
    this.#rows = undefined
    this.#toggle.textContent = 'Show history'
    this.#status.textContent = ''
    delete this.el.dataset.refused
    replaceChildren(this.#list)
  }

  #render(rows: Row[]): void {
    const entries = (rows as unknown as AuditRow[]).sort((a, b) => Number(BigInt(b.id) - BigInt(a.id)))
    this.#status.textContent = entries.length ? '' : 'No changes recorded yet.'
    replaceChildren(
      this.#list,
      entries.map((e) => {
        const who = (e.subject && this.data.user(e.subject)?.name) ?? e.subject ?? 'Someone without sign-in'
        const changes = Object.entries(e.changes ?? {}).sort(([a], [b]) => a.localeCompare(b))
        return h(
          'li',
          { class: `history-entry ${e.outcome}`, 'data-testid': 'history-entry', 'data-outcome': e.outcome, 'data-op': e.op },
          h('div', { class: 'history-head' },
            h('strong', { 'data-testid': 'history-who' }, who),
            ` ${VERBS[e.op] ?? e.op} it `,
            h('span', { class: 'muted small', title: e.at }, ago(e.at)),
            ' ',
            h('span', { class: 'badge', 'data-testid': 'history-outcome' }, e.outcome)),
          changes.length
            ? h('ul', { class: 'history-changes' },
                changes.map(([col, c]) =>
                  h('li', { 'data-testid': 'history-change', 'data-column': col },
                    `${col}: `,
                    'old' in c ? `${shown(c.old)} → ${shown(c.new)}` : `asked for ${shown(c.new)}`)))
            : null,
          e.reason ? h('p', { class: 'muted small', 'data-testid': 'history-reason' }, e.reason) : null,
        )
      }),
    )
  }

  destroy(): void {
    this.#close()
  }
}
