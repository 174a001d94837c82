/** A small helper for building DOM without a framework. */

type Child = Node | string | number | null | undefined | false | Child[]
type Props = Record<string, unknown>

/**
 * Creates an element: `on<event>` props become listeners, `class`/`className` the class,
 * `style` objects inline styles, `dataset` data attributes, booleans boolean attributes, and
 * everything else an attribute. Strings among the children become text (never HTML).
 */
export function h<K extends keyof HTMLElementTagNameMap>(tag: K, props: Props = {}, ...children: Child[]): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag)
  for (const [k, v] of Object.entries(props)) {
    if (v === undefined || v === null || v === false) continue
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2).toLowerCase(), v as EventListener)
    else if (k === 'class' || k === 'className') el.className = String(v)
    else if (k === 'style' && typeof v === 'object') Object.assign(el.style, v)
    else if (k === 'dataset' && typeof v === 'object') Object.assign(el.dataset, v)
    else if (k === 'value' && 'value' in el) (el as unknown as { value: string }).value = String(v)
    else if (v === true) el.setAttribute(k, '')
    else el.setAttribute(k, String(v))
  }
  append(el, children)
  return el
}

function append(el: Element, children: Child[]): void {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue
    if (Array.isArray(c)) append(el, c)
    else el.append(c instanceof Node ? c : String(c))
  }
}

/** Replaces an element's children. */
export function replaceChildren(el: Element, ...children: Child[]): void {
  el.replaceChildren()
  append(el, children)
}

/** Sets an input's value unless the user is typing in it. */
export function setValue(input: HTMLInputElement | HTMLTextAreaElement | HTMLSelectElement, value: string): void {
  if (document.activeElement !== input && input.value !== value) input.value = value
}

/**
 * A timestamp as Unix ms: ISO 8601 as the app writes it, or Postgres's text form
 * (`2026-11-25 06:00:00.12+00`) as the server sends it; NaN if unreadable.
 */
export function parseTime(v: unknown): number {
  if (typeof v !== 'string') return NaN
  const iso = v.replace(' ', 'T').replace(/([+-]\d\d)$/, '$1:00')
  return Date.parse(iso)
}

/** "3 min ago"-style text for a timestamp. */
export function ago(v: unknown, now = Date.now()): string {
  const t = parseTime(v)
  if (!Number.isFinite(t)) return ''
  const s = Math.max(0, Math.round((now - t) / 1000))
  if (s < 45) return 'just now'
  if (s < 3600) return `${Math.round(s / 60)} min ago`
  if (s < 86400) return `${Math.round(s / 3600)} h ago`
  return `${Math.round(s / 86400)} d ago`
}
