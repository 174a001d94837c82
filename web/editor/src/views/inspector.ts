/**
 * The selected step's details: name, type, config (JSON, validated before it is saved), its
 * connections (connect to another step, remove one), delete. Fields the user is editing are
 * never overwritten by incoming changes.
 */

import { h, replaceChildren, setValue } from '../dom.js'
import type { Actions, Connection, Pipeline, Step } from '../data.js'

const TYPES = ['shell', 'git', 'sql', 'copy', 'deploy', 'http', 'docker']

/** Parses a step config: a JSON object, or an error message naming the problem. */
export function parseConfig(text: string): { ok: true; value: Record<string, unknown> } | { ok: false; error: string } {
  let v: unknown
  try {
    v = JSON.parse(text)
  } catch (e) {
    return { ok: false, error: `Config is not valid JSON: ${(e as Error).message}` }
  }
  if (v === null || typeof v !== 'object' || Array.isArray(v)) {
    return { ok: false, error: `Config must be a JSON object like {"run": "make"}, not ${Array.isArray(v) ? 'an array' : JSON.stringify(v)}` }
  }
  return { ok: true, value: v as Record<string, unknown> }
}

const pretty = (c: unknown) => JSON.stringify(c ?? {}, null, 2)

export class Inspector {
  readonly el = h('section', { class: 'panel inspector', 'data-testid': 'inspector' })
  #stepId: string | null = null
  #name = h('input', { 'data-testid': 'step-name-input', 'aria-label': 'Step name', maxlength: '200' })
  #nameError = h('div', { class: 'field-error', 'data-testid': 'name-error' })
  #type = h('input', { 'data-testid': 'step-type-input', 'aria-label': 'Step type', list: 'step-types' })
  #config = h('textarea', { 'data-testid': 'step-config-input', 'aria-label': 'Step config (JSON)', rows: '6', spellcheck: 'false' })
  #configError = h('div', { class: 'field-error', 'data-testid': 'config-error', role: 'alert' })
  #configShown = ''
  #connections = h('div', { class: 'connections' })
  #target = h('select', { 'data-testid': 'connect-target', 'aria-label': 'Connect to' })
  #step: Step | undefined
  #pipeline: Pipeline | undefined

  constructor(private readonly actions: Actions, private readonly onDeleted: () => void) {
    this.#name.addEventListener('change', () => this.#commitName())
    this.#name.addEventListener('keydown', (e) => e.key === 'Enter' && this.#name.blur())
    this.#type.addEventListener('change', () => {
      const t = this.#type.value.trim()
      if (this.#step && t && t !== this.#step.type) void this.actions.setType(this.#step.id, t)
      else if (this.#step) this.#type.value = this.#step.type
    })
    this.#config.addEventListener('input', () => {
      const r = parseConfig(this.#config.value)
      this.#configError.textContent = r.ok ? '' : r.error
    })
  }

  #commitName(): void {
    const s = this.#step
    if (!s) return
    const name = this.#name.value.trim()
    if (!name) {
      this.#nameError.textContent = 'A step needs a name.'
      this.#name.value = s.name
      return
    }
    this.#nameError.textContent = ''
    if (name !== s.name) void this.actions.renameStep(s.id, name)
  }

  #saveConfig(): void {
    const s = this.#step
    if (!s) return
    const r = parseConfig(this.#config.value)
    if (!r.ok) {
      this.#configError.textContent = r.error
      return
    }
    this.#configError.textContent = ''
    this.#configShown = pretty(r.value)
    this.#config.value = this.#configShown
    void this.actions.setConfig(s.id, r.value)
  }

  update(p: Pipeline, step: Step | undefined, steps: Step[], connections: Connection[], readOnly = false): void {
    this.#pipeline = p
    if (!step) {
      this.#step = undefined
      this.#stepId = null
      replaceChildren(this.el, h('h3', {}, 'Step'), h('p', { class: 'muted' }, readOnly ? 'Select a step on the canvas.' : 'Select a step on the canvas, or add one.'))
      return
    }
    if (readOnly) {
      // A viewer: the step as it is, without controls (the server would refuse the edits).
      this.#step = undefined
      this.#stepId = null
      const name = (id: string) => steps.find((s) => s.id === id)?.name ?? '?'
      replaceChildren(
        this.el,
        h('h3', {}, 'Step'),
        h('dl', { class: 'step-readonly', 'data-testid': 'step-readonly' },
          h('dt', {}, 'Name'), h('dd', { 'data-testid': 'step-readonly-name' }, step.name),
          h('dt', {}, 'Type'), h('dd', {}, step.type),
          h('dt', {}, 'Config'), h('dd', {}, h('pre', {}, pretty(step.config)))),
        h('h4', {}, 'Connections'),
        h('ul', {},
          connections.filter((c) => c.to_step_id === step.id).map((c) => h('li', {}, `← from ${name(c.from_step_id)}`)),
          connections.filter((c) => c.from_step_id === step.id).map((c) => h('li', {}, `→ to ${name(c.to_step_id)}`))),
      )
      return
    }
    const fresh = step.id !== this.#stepId
    this.#step = step
    if (fresh) {
      this.#stepId = step.id
      this.#nameError.textContent = ''
      this.#configError.textContent = ''
      this.#name.value = step.name
      this.#type.value = step.type
      this.#configShown = pretty(step.config)
      this.#config.value = this.#configShown
      replaceChildren(
        this.el,
        h('h3', {}, 'Step'),
        h('label', {}, 'Name', this.#name),
        this.#nameError,
        h('label', {}, 'Type', this.#type),
        h('datalist', { id: 'step-types' }, TYPES.map((t) => h('option', { value: t }))),
        h('label', {}, 'Config (JSON)', this.#config),
        this.#configError,
        h('button', { 'data-testid': 'save-config', onclick: () => this.#saveConfig() }, 'Save config'),
        h('h4', {}, 'Connections'),
        this.#connections,
        h('div', { class: 'row' }, this.#target, h('button', { 'data-testid': 'connect-button', onclick: () => this.#connect() }, 'Connect')),
        h('button', { class: 'danger', 'data-testid': 'delete-step', onclick: () => this.#delete() }, 'Delete step'),
      )
    } else {
      setValue(this.#name, step.name)
      setValue(this.#type, step.type)
      // Take the new config unless the user has an edit of their own in progress.
      const incoming = pretty(step.config)
      if (incoming !== this.#configShown && (this.#config.value === this.#configShown || document.activeElement !== this.#config)) {
        if (this.#config.value === this.#configShown) {
          this.#config.value = incoming
          this.#configError.textContent = ''
        }
        this.#configShown = incoming
      }
    }
    const name = (id: string) => steps.find((s) => s.id === id)?.name ?? '?'
    const out = connections.filter((c) => c.from_step_id === step.id)
    const into = connections.filter((c) => c.to_step_id === step.id)
    const item = (c: Connection, label: string) =>
      h(
        'li',
        { 'data-testid': 'step-connection', 'data-connection-id': c.id },
        label,
        h('button', { class: 'link', 'data-testid': 'remove-connection', onclick: () => void this.actions.disconnect(c.id) }, 'Remove'),
      )
    replaceChildren(
      this.#connections,
      out.length + into.length === 0 ? h('p', { class: 'muted small' }, 'Not connected.') : null,
      h('ul', {}, into.map((c) => item(c, `← from ${name(c.from_step_id)} `)), out.map((c) => item(c, `→ to ${name(c.to_step_id)} `))),
    )
    const linked = new Set(out.map((c) => c.to_step_id))
    const options = steps.filter((s) => s.id !== step.id && !linked.has(s.id))
    const chosen = this.#target.value
    replaceChildren(
      this.#target,
      h('option', { value: '' }, options.length ? 'Connect to…' : 'No other step'),
      options.map((s) => h('option', { value: s.id }, s.name)),
    )
    if (options.some((s) => s.id === chosen)) this.#target.value = chosen
  }

  #connect(): void {
    const to = this.#target.value
    if (this.#step && this.#pipeline && to) void this.actions.connect(this.#pipeline, this.#step.id, to)
  }

  #delete(): void {
    if (!this.#step) return
    void this.actions.deleteStep(this.#step.id)
    this.onDeleted()
  }
}
