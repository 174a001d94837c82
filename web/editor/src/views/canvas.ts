/**
 * The pipeline canvas: steps as nodes at their (x, y), connections as arrows between them, and
 * the other people's cursors and selections. Dragging a node moves it (one write when it is
 * dropped); dragging from a node's right-hand port onto another node connects them.
 *
 * The canvas scrolls over a surface as large as the steps' extent (and at least its view), and
 * zooms: when a pipeline opens, the zoom fits its steps into the view (never above 100%, nor
 * below {@link FIT_MIN}, where the canvas scrolls instead). Coordinates (the steps' x and y, the
 * cursors) are the surface's, whatever the zoom.
 */

import { h } from '../dom.js'
import type { Connection, Step } from '../data.js'

/** Node size (for edge geometry). */
export const NODE_W = 168
export const NODE_H = 64
const SVG_NS = 'http://www.w3.org/2000/svg'
/** Zoom bounds of the buttons, and the smallest zoom a fit uses (text below it is hard to read). */
const ZOOM_MIN = 0.4
const ZOOM_MAX = 1.5
const FIT_MIN = 0.6
/** Space around the steps when fitting them into the view. */
const FIT_MARGIN = 40
/** How far the surface reaches beyond the last step (room to drag steps into). */
const ROOM = 120
/** The grid new steps are placed on, and the space kept free around them. */
const SLOT = { x0: 80, y0: 40, dx: NODE_W + 52, dy: NODE_H + 56, gap: 24 }

/** Someone else in the room. */
export interface RemotePerson {
  key: string
  userId: string
  name: string
  color: string
  cursor?: { x: number; y: number } | null
  selected?: string | null
}

export interface CanvasEvents {
  select(stepId: string | null): void
  selectConnection(id: string): void
  move(stepId: string, x: number, y: number): void
  connect(from: string, to: string): void
  cursor(at: { x: number; y: number } | null): void
}

function svg<K extends keyof SVGElementTagNameMap>(tag: K, attrs: Record<string, string | number>): SVGElementTagNameMap[K] {
  const el = document.createElementNS(SVG_NS, tag)
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v))
  return el
}

function edgePath(a: { x: number; y: number }, b: { x: number; y: number }): string {
  const x1 = a.x + NODE_W
  const y1 = a.y + NODE_H / 2
  const x2 = b.x
  const y2 = b.y + NODE_H / 2
  const bend = Math.max(40, Math.abs(x2 - x1) / 2)
  return `M ${x1} ${y1} C ${x1 + bend} ${y1}, ${x2 - bend} ${y2}, ${x2} ${y2}`
}

export class Canvas {
  readonly el: HTMLElement
  #readOnly = false
  /** Zoom out, the zoom level (a click: 100%), zoom in, fit: for the toolbar. */
  readonly controls: HTMLElement
  #surface: HTMLElement
  /** The surface's size as zoomed: what the canvas scrolls over. */
  #sizer: HTMLElement
  #zoom = 1
  #zoomLevel: HTMLElement
  /** Whether the zoom was fitted (or chosen) since the canvas opened. */
  #fitted = false
  /** The steps' bounding box, in surface coordinates (none without steps). */
  #extent: { left: number; top: number; right: number; bottom: number } | undefined
  #edges: SVGSVGElement
  #nodes = new Map<string, HTMLElement>()
  #edgeEls = new Map<string, SVGGElement>()
  #cursors = new Map<string, HTMLElement>()
  #steps = new Map<string, Step>()
  #connections: Connection[] = []
  #drag: { id: string; startX: number; startY: number; x: number; y: number; moved: boolean } | undefined
  /** Where a dropped node is drawn until its write shows in the data. */
  #held = new Map<string, { x: number; y: number }>()

  constructor(private readonly on: CanvasEvents) {
    this.#edges = svg('svg', { class: 'edges', width: '100%', height: '100%' })
    const defs = svg('defs', {})
    const marker = svg('marker', { id: 'arrow', viewBox: '0 0 10 10', refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: 'auto-start-reverse' })
    marker.append(svg('path', { d: 'M 0 0 L 10 5 L 0 10 z', class: 'arrow-head' }))
    defs.append(marker)
    this.#edges.append(defs)
    this.#surface = h('div', { class: 'surface' })
    this.#surface.append(this.#edges)
    this.#sizer = h('div', { class: 'surface-size' }, this.#surface)
    this.el = h('div', { class: 'canvas', 'data-testid': 'canvas' }, this.#sizer)
    this.#zoomLevel = h('button', { class: 'zoom-level', 'data-testid': 'zoom-level', title: 'Actual size', onclick: () => this.setZoom(1) }, '100%')
    this.controls = h(
      'div',
      { class: 'zoom', role: 'group', 'aria-label': 'Zoom' },
      h('button', { 'data-testid': 'zoom-out', title: 'Zoom out', 'aria-label': 'Zoom out', onclick: () => this.setZoom(this.#zoom - 0.1) }, '−'),
      this.#zoomLevel,
      h('button', { 'data-testid': 'zoom-in', title: 'Zoom in', 'aria-label': 'Zoom in', onclick: () => this.setZoom(this.#zoom + 0.1) }, '+'),
      h('button', { 'data-testid': 'zoom-fit', title: 'Fit the pipeline into the view', onclick: () => this.fit() }, 'Fit'),
    )
    // The surface covers at least the view, also when the window (or the panel) changes size.
    // (Next frame: a change made from the observer's callback would be reported as a loop.)
    new ResizeObserver(() => requestAnimationFrame(() => this.#layout())).observe(this.el)
    this.#surface.addEventListener('pointerdown', (e) => {
      if (e.target === this.#surface || e.target === this.#edges) this.on.select(null)
    })
    this.el.addEventListener('pointermove', (e) => this.on.cursor(this.#point(e)))
    this.el.addEventListener('pointerleave', () => this.on.cursor(null))
  }

  /** A pointer event in canvas coordinates. */
  #point(e: PointerEvent | MouseEvent): { x: number; y: number } {
    const r = this.#surface.getBoundingClientRect()
    return { x: Math.round((e.clientX - r.left) / this.#zoom), y: Math.round((e.clientY - r.top) / this.#zoom) }
  }

  /** Sizes the surface: the steps' extent and room beyond it, and at least the view. */
  #layout(): void {
    const z = this.#zoom
    const w = Math.max((this.#extent?.right ?? 0) + ROOM, Math.floor(this.el.clientWidth / z))
    const h = Math.max((this.#extent?.bottom ?? 0) + ROOM, Math.floor(this.el.clientHeight / z))
    this.#surface.style.width = `${w}px`
    this.#surface.style.height = `${h}px`
    this.#surface.style.transform = z === 1 ? '' : `scale(${z})`
    this.#sizer.style.width = `${Math.ceil(w * z)}px`
    this.#sizer.style.height = `${Math.ceil(h * z)}px`
  }

  /** Zooms to `zoom` (within bounds), keeping the middle of the view where it is. */
  setZoom(zoom: number): void {
    this.#fitted = true
    const z = Math.min(ZOOM_MAX, Math.max(ZOOM_MIN, Math.round(zoom * 100) / 100))
    const c = this.el
    const mid = { x: (c.scrollLeft + c.clientWidth / 2) / this.#zoom, y: (c.scrollTop + c.clientHeight / 2) / this.#zoom }
    this.#setZoom(z)
    c.scrollLeft = mid.x * z - c.clientWidth / 2
    c.scrollTop = mid.y * z - c.clientHeight / 2
  }

  #setZoom(z: number): void {
    this.#zoom = z
    this.#layout()
    this.#zoomLevel.textContent = `${Math.round(z * 100)}%`
  }

  /**
   * Fits the steps into the view: the largest zoom (at most 100%) that shows them all with a
   * margin, scrolled as little as needed. Where they would need less than {@link FIT_MIN}, the
   * zoom is that, scrolled to the steps' top left.
   */
  fit(): void {
    this.#fitted = true
    const e = this.#extent
    const c = this.el
    if (!e || c.clientWidth === 0 || c.clientHeight === 0) return this.#setZoom(1)
    const box = { left: e.left - FIT_MARGIN, top: e.top - FIT_MARGIN, right: e.right + FIT_MARGIN, bottom: e.bottom + FIT_MARGIN }
    const fits = Math.min(c.clientWidth / (box.right - box.left), c.clientHeight / (box.bottom - box.top))
    const z = Math.max(FIT_MIN, Math.min(1, Math.floor(fits * 100) / 100))
    this.#setZoom(z)
    c.scrollLeft = Math.min(Math.max(0, box.left * z), Math.max(0, box.right * z - c.clientWidth))
    c.scrollTop = Math.min(Math.max(0, box.top * z), Math.max(0, box.bottom * z - c.clientHeight))
  }

  /** Scrolls the canvas (as little as needed) so that step `id` is in view. */
  reveal(id: string): void {
    const at = this.#position(id)
    if (!at) return
    const z = this.#zoom
    const c = this.el
    const pad = 24
    // (The names of the people who selected a step show above it.)
    const left = at.x * z - pad
    const right = (at.x + NODE_W) * z + pad
    const top = (at.y - 24) * z - pad
    const bottom = (at.y + NODE_H) * z + pad
    if (left < c.scrollLeft) c.scrollLeft = left
    else if (right > c.scrollLeft + c.clientWidth) c.scrollLeft = Math.min(left, right - c.clientWidth)
    if (top < c.scrollTop) c.scrollTop = top
    else if (bottom > c.scrollTop + c.clientHeight) c.scrollTop = Math.min(top, bottom - c.clientHeight)
  }

  /**
   * Where a new step goes: the first free place (clear of the other steps) of a grid, row by
   * row, in the part of the canvas in view; below the other steps if the view has none.
   */
  freeSpot(): { x: number; y: number } {
    const z = this.#zoom
    const c = this.el
    const view = { left: c.scrollLeft / z, top: c.scrollTop / z, right: (c.scrollLeft + c.clientWidth) / z, bottom: (c.scrollTop + c.clientHeight) / z }
    const taken = [...this.#steps.keys()].map((id) => this.#position(id)!)
    const free = (x: number, y: number) =>
      taken.every((t) => x + NODE_W + SLOT.gap <= t.x || t.x + NODE_W + SLOT.gap <= x || y + NODE_H + SLOT.gap <= t.y || t.y + NODE_H + SLOT.gap <= y)
    const first = (from: number, origin: number, step: number) => origin + Math.max(0, Math.ceil((from - origin) / step)) * step
    for (let y = first(view.top, SLOT.y0, SLOT.dy); y + NODE_H <= view.bottom; y += SLOT.dy) {
      for (let x = first(view.left, SLOT.x0, SLOT.dx); x + NODE_W <= view.right; x += SLOT.dx) if (free(x, y)) return { x, y }
    }
    const below = this.#extent ? this.#extent.bottom + SLOT.dy - NODE_H : SLOT.y0
    return { x: first(view.left, SLOT.x0, SLOT.dx), y: first(below, SLOT.y0, SLOT.dy) }
  }

  #position(id: string): { x: number; y: number } | undefined {
    if (this.#drag?.id === id) return { x: this.#drag.x, y: this.#drag.y }
    const held = this.#held.get(id)
    if (held) return held
    const s = this.#steps.get(id)
    return s ? { x: s.x, y: s.y } : undefined
  }

  /** A viewer's canvas: steps can be selected, not moved or connected. */
  set readOnly(on: boolean) {
    this.#readOnly = on
    this.el.classList.toggle('read-only', on)
  }

  update(steps: Step[], connections: Connection[], selected: { step: string | null; connection: string | null }, people: RemotePerson[], comments: Map<string, number>): void {
    this.#steps = new Map(steps.map((s) => [s.id, s]))
    this.#connections = connections
    for (const [id, at] of this.#held) {
      const s = this.#steps.get(id)
      if (!s || (s.x === at.x && s.y === at.y)) this.#held.delete(id)
    }
    const selectedBy = new Map<string, RemotePerson[]>()
    for (const p of people) if (p.selected) selectedBy.set(p.selected, [...(selectedBy.get(p.selected) ?? []), p])

    // Nodes.
    for (const [id, el] of this.#nodes) {
      if (!this.#steps.has(id)) {
        el.remove()
        this.#nodes.delete(id)
      }
    }
    let extent: { left: number; top: number; right: number; bottom: number } | undefined
    for (const s of steps) {
      let el = this.#nodes.get(s.id)
      if (!el) {
        el = this.#createNode(s.id)
        this.#nodes.set(s.id, el)
        this.#surface.append(el)
      }
      const at = this.#position(s.id)!
      el.style.left = `${at.x}px`
      el.style.top = `${at.y}px`
      extent = {
        left: Math.min(extent?.left ?? at.x, at.x),
        top: Math.min(extent?.top ?? at.y, at.y),
        right: Math.max(extent?.right ?? 0, at.x + NODE_W),
        bottom: Math.max(extent?.bottom ?? 0, at.y + NODE_H),
      }
      el.querySelector('.step-name')!.textContent = s.name
      el.querySelector('.step-type')!.textContent = s.type
      const n = comments.get(s.id) ?? 0
      const badge = el.querySelector<HTMLElement>('.step-comments')!
      badge.textContent = n === 1 ? "1 comment" : `${n} comments`
      badge.hidden = n === 0
      el.classList.toggle('selected', selected.step === s.id)
      const by = selectedBy.get(s.id) ?? []
      el.dataset.selectedBy = by.map((p) => p.userId).join(',')
      el.style.setProperty('--remote', by[0]?.color ?? 'transparent')
      el.classList.toggle('remote-selected', by.length > 0)
      el.querySelector('.step-remote')!.textContent = by.map((p) => p.name.split(' ')[0]).join(', ')
    }
    this.#extent = extent
    // The first time there are steps (the pipeline has loaded), they are fitted into the view.
    if (!this.#fitted && extent) this.fit()
    else this.#layout()

    // Edges.
    const live = new Set(connections.map((c) => c.id))
    for (const [id, g] of this.#edgeEls) {
      if (!live.has(id)) {
        g.remove()
        this.#edgeEls.delete(id)
      }
    }
    for (const c of connections) {
      let g = this.#edgeEls.get(c.id)
      if (!g) {
        g = svg('g', { class: 'edge', 'data-testid': 'connection', 'data-connection-id': c.id })
        const hit = svg('path', { class: 'edge-hit', d: '' })
        const line = svg('path', { class: 'edge-line', d: '', 'marker-end': 'url(#arrow)' })
        g.append(hit, line)
        g.addEventListener('pointerdown', (e) => {
          e.stopPropagation()
          this.on.selectConnection(c.id)
        })
        this.#edgeEls.set(c.id, g)
        this.#edges.append(g)
      }
      g.dataset.from = c.from_step_id
      g.dataset.to = c.to_step_id
      g.classList.toggle('selected', selected.connection === c.id)
    }
    this.#drawEdges()

    // Other people's cursors.
    const seen = new Set<string>()
    for (const p of people) {
      if (!p.cursor) continue
      seen.add(p.key)
      let el = this.#cursors.get(p.key)
      if (!el) {
        el = h('div', { class: 'remote-cursor', 'data-testid': 'remote-cursor' })
        el.innerHTML = '<svg width="16" height="20" viewBox="0 0 16 20" aria-hidden="true"><path d="M1 1 L1 16 L5 12 L8 19 L11 18 L8 11 L14 11 Z"/></svg><span class="cursor-label"></span>'
        this.#cursors.set(p.key, el)
        this.#surface.append(el)
      }
      el.dataset.userId = p.userId
      el.style.left = `${p.cursor.x}px`
      el.style.top = `${p.cursor.y}px`
      el.style.setProperty('--color', p.color)
      el.querySelector('.cursor-label')!.textContent = p.name
    }
    for (const [k, el] of this.#cursors) {
      if (!seen.has(k)) {
        el.remove()
        this.#cursors.delete(k)
      }
    }
  }

  #drawEdges(): void {
    for (const c of this.#connections) {
      const g = this.#edgeEls.get(c.id)
      const a = this.#position(c.from_step_id)
      const b = this.#position(c.to_step_id)
      if (!g || !a || !b) continue
      const d = edgePath(a, b)
      for (const p of g.querySelectorAll('path')) p.setAttribute('d', d)
    }
  }

  #createNode(id: string): HTMLElement {
    const port = h('div', { class: 'port', title: 'Drag onto another step to connect', 'data-testid': 'step-port' })
    const el = h(
      'div',
      { class: 'node', 'data-testid': 'step', 'data-step-id': id, tabindex: '0' },
      h('div', { class: 'step-name' }),
      h('div', { class: 'step-meta' }, h('span', { class: 'step-type' }), h('span', { class: 'step-comments' })),
      h('div', { class: 'step-remote' }),
      port,
    )
    el.addEventListener('pointerdown', (e) => {
      if (e.button !== 0) return
      e.stopPropagation()
      if (e.target === port && !this.#readOnly) return this.#startLink(id, e)
      const at = this.#position(id)!
      this.#drag = { id, startX: e.clientX, startY: e.clientY, x: at.x, y: at.y, moved: false }
      el.setPointerCapture(e.pointerId)
      el.classList.add('dragging')
    })
    el.addEventListener('pointermove', (e) => {
      const d = this.#drag
      if (!d || d.id !== id) return
      const dx = e.clientX - d.startX
      const dy = e.clientY - d.startY
      if (this.#readOnly || (!d.moved && Math.hypot(dx, dy) < 3)) return
      d.moved = true
      const s = this.#steps.get(id)
      if (!s) return
      d.x = Math.max(0, Math.round(s.x + dx / this.#zoom))
      d.y = Math.max(0, Math.round(s.y + dy / this.#zoom))
      el.style.left = `${d.x}px`
      el.style.top = `${d.y}px`
      this.#drawEdges()
    })
    const end = () => {
      const d = this.#drag
      if (!d || d.id !== id) return
      this.#drag = undefined
      el.classList.remove('dragging')
      if (d.moved) {
        this.#held.set(id, { x: d.x, y: d.y })
        this.on.move(id, d.x, d.y)
      } else this.on.select(id)
    }
    el.addEventListener('pointerup', end)
    el.addEventListener('pointercancel', end)
    return el
  }

  #startLink(from: string, e: PointerEvent): void {
    const a = this.#position(from)
    if (!a) return
    const line = svg('path', { class: 'edge-line linking', d: '' })
    this.#edges.append(line)
    const move = (ev: PointerEvent) => {
      const p = this.#point(ev)
      line.setAttribute('d', edgePath(a, { x: p.x, y: p.y - NODE_H / 2 }))
    }
    const up = (ev: PointerEvent) => {
      window.removeEventListener('pointermove', move)
      window.removeEventListener('pointerup', up)
      line.remove()
      const target = (document.elementFromPoint(ev.clientX, ev.clientY) as HTMLElement | null)?.closest<HTMLElement>('.node')
      const to = target?.dataset.stepId
      if (to && to !== from) this.on.connect(from, to)
    }
    move(e)
    window.addEventListener('pointermove', move)
    window.addEventListener('pointerup', up)
  }
}
