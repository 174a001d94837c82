/**
 * Tag tracking for relational shapes (where clauses with subqueries), Electric 1.7's format: each
 * change carries the row's `tags` — one per alternative of the where clause, `/`-joined slots, one
 * per position (condition): empty when the position is not part of that alternative, otherwise a
 * value naming why it holds — and its `active_conditions`. A `move-out` event `{pos, value}`
 * makes position `pos` false on the rows one of whose tags holds `value` there; a row none of
 * whose alternatives then has every position true leaves the shape. A `move-in` event makes it
 * true again (the rows newly in the shape follow as inserts). The same rules as the Rust client's
 * (`ferrite_protocol::tags`).
 */

/** Why a row is in its shape. */
export interface TagState {
  tags: string[]
  active: boolean[]
}

/** The distinct `[position, value]` slots of a row's tags that are part of an alternative. */
export function tagSlots(s: TagState): [number, string][] {
  const out: [number, string][] = []
  for (const tag of s.tags) {
    tag.split('/').forEach((slot, pos) => {
      if (slot !== '' && !out.some(([p, v]) => p === pos && v === slot)) out.push([pos, slot])
    })
  }
  return out
}

/** Whether one of the row's alternatives has every position true. */
export function tagsHold(s: TagState): boolean {
  return s.tags.some((tag) => tag.split('/').every((slot, pos) => slot === '' || s.active[pos] === true))
}

const slotKey = (pos: number, value: string): string => `${pos}\u0000${value}`

/** The tag states of one shape's rows, indexed by slot for move events. */
export class TagIndex {
  readonly states = new Map<string, TagState>()
  readonly #bySlot = new Map<string, Set<string>>()

  constructor(initial?: Iterable<[string, TagState]>) {
    for (const [key, state] of initial ?? []) this.set(key, state)
  }

  /** Records why row `key` is in the shape (replacing what was known). */
  set(key: string, state: TagState): void {
    this.delete(key)
    this.states.set(key, state)
    for (const [pos, value] of tagSlots(state)) {
      const k = slotKey(pos, value)
      let keys = this.#bySlot.get(k)
      if (!keys) this.#bySlot.set(k, (keys = new Set()))
      keys.add(key)
    }
  }

  /** Forgets a row. */
  delete(key: string): void {
    const state = this.states.get(key)
    if (!state) return
    this.states.delete(key)
    for (const [pos, value] of tagSlots(state)) {
      const k = slotKey(pos, value)
      const keys = this.#bySlot.get(k)
      keys?.delete(key)
      if (keys?.size === 0) this.#bySlot.delete(k)
    }
  }

  /**
   * Applies one pattern of a `move-out` (`active` false) or `move-in` event. Returns the rows
   * that left the shape (forgotten here; the caller removes them) and those whose state changed.
   */
  move(pos: number, value: string, active: boolean): { left: string[]; changed: string[] } {
    const left: string[] = []
    const changed: string[] = []
    for (const key of [...(this.#bySlot.get(slotKey(pos, value)) ?? [])]) {
      const state = this.states.get(key)
      if (!state) continue
      const next = { tags: state.tags, active: [...state.active] }
      while (next.active.length <= pos) next.active.push(false)
      next.active[pos] = active
      if (!active && !tagsHold(next)) {
        this.delete(key)
        left.push(key)
      } else {
        this.states.set(key, next)
        changed.push(key)
      }
    }
    return { left, changed }
  }
}
