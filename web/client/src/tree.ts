/**
 * Include trees: a shape and the rows related to it through foreign keys — a pipeline, its
 * steps, the steps' connections, its comments and their authors — synced as one subscription
 * and shown only at common points of the server's log, so the app never sees a connection
 * without its steps or a step without its pipeline.
 *
 * {@link compileTree} turns a tree into one ordinary shape per node: a child's where clause is a
 * subquery on its parent's rows through the foreign keys between the two tables (read from
 * `GET /v1/foreign-keys`): `pipeline_id IN (SELECT id FROM pipelines WHERE …)` for a child that
 * references its parent, `id IN (SELECT user_id FROM comments WHERE …)` for one its parent
 * references, tuples for composite keys, alternatives (OR) for several keys unless `via` picks
 * one. The same rules as the Rust client (`ferrite_client::tree`).
 *
 * {@link TreeSync} syncs the members and holds their batches until every member is complete up
 * to a common position `L` (its up-to-date, or the earlier `ferrite-complete-lsn` of a member
 * whose move-in is still to come) and none holds anything after `L`; then the held batches are
 * applied together (one storage write) and become visible. A member that is behind is asked
 * again at once (its long-poll restarted as a catch-up request) rather than waited for.
 */

import { ShapeSync, type ShapeBatch, type ShapeHost, type ShapeOptions } from './shape.js'
import type { ShapeRecord } from './storage.js'
import type { TagState } from './tags.js'
import type { Row } from './values.js'

/** Rows of another table linked by a foreign key to the rows of their parent node. */
export interface IncludeOptions {
  /** Table (`name` or `schema.name`); the include's name when omitted. */
  table?: string
  /** A where clause the included rows must also satisfy (`$1`… from `params`). */
  where?: string
  /** Values of `$1`… in `where`. */
  params?: string[]
  /** Columns to sync (must include the primary key); all when omitted. */
  columns?: string[]
  /** Primary-key columns (default `["id"]`). */
  key?: string[]
  /** The foreign key to follow (its constraint name) when several link the two tables. */
  via?: string
  /**
   * Top N per parent: only this many rows of each parent row, in `orderBy`'s order, are shown
   * (exact: every matching row is synced, so when one of them goes the next one appears; bound
   * what that holds with `where`, e.g. a time window). Only for a child that references its
   * parent through one foreign key (or the one `via` names), without includes of its own.
   */
  limit?: number
  /** The order of `limit`: columns, each ascending unless `desc`. */
  orderBy?: { column: string; desc?: boolean }[]
  /** What this node includes in turn. */
  include?: Record<string, IncludeOptions>
}

/** The top rows per parent a member shows (see {@link IncludeOptions.limit}). */
export interface TopRows {
  /** The columns naming the parent. */
  partition: string[]
  orderBy: { column: string; desc?: boolean }[]
  limit: number
}

/** A member shape of a tree: its shape, and the top rows per parent it shows, if limited. */
export type MemberOptions = ShapeOptions & { top?: TopRows }

/** Compares two column values as the app sees them (numbers as numbers, the rest as text). */
function compareValues(a: unknown, b: unknown): number {
  if (a === b) return 0
  if (a === null || a === undefined) return 1
  if (b === null || b === undefined) return -1
  if (typeof a === 'number' && typeof b === 'number') return a - b
  if (typeof a === 'bigint' && typeof b === 'bigint') return a < b ? -1 : 1
  const x = typeof a === 'object' ? JSON.stringify(a) : String(a)
  const y = typeof b === 'object' ? JSON.stringify(b) : String(b)
  return x < y ? -1 : x > y ? 1 : 0
}

/** The first `top.limit` rows of each parent, in `top.orderBy`'s order (NULLs last). */
export function topRows(rows: ReadonlyMap<string, Row>, top: TopRows): Map<string, Row> {
  const groups = new Map<string, [string, Row][]>()
  for (const [key, row] of rows) {
    const parent = JSON.stringify(top.partition.map((c) => row[c] ?? null))
    let g = groups.get(parent)
    if (!g) groups.set(parent, (g = []))
    g.push([key, row])
  }
  const out = new Map<string, Row>()
  for (const g of groups.values()) {
    g.sort(([ka, a], [kb, b]) => {
      for (const { column, desc } of top.orderBy) {
        const c = compareValues(a[column], b[column])
        if (c !== 0) return desc && a[column] != null && b[column] != null ? -c : c
      }
      return ka < kb ? -1 : ka > kb ? 1 : 0
    })
    for (const [k, row] of g.slice(0, top.limit)) out.set(k, row)
  }
  return out
}

/** A tree: its root shape and what it includes. */
export interface TreeOptions extends ShapeOptions {
  include?: Record<string, IncludeOptions>
}

/** A foreign key as `GET /v1/foreign-keys` lists it. */
export interface ForeignKey {
  name: string
  table: [string, string]
  columns: string[]
  references: [string, string]
  referenced_columns: string[]
}

/** A table name as `[schema, name]` (`name` alone is in `public`; `"…"` quotes). */
export function parseTable(text: string): [string, string] {
  const parts: string[] = []
  let i = 0
  while (i < text.length) {
    if (text[i] === '"') {
      let j = i + 1
      let part = ''
      for (; j < text.length; j++) {
        if (text[j] === '"') {
          if (text[j + 1] === '"') {
            part += '"'
            j++
            continue
          }
          break
        }
        part += text[j]
      }
      parts.push(part)
      i = j + 1
    } else {
      const dot = text.indexOf('.', i)
      const end = dot === -1 ? text.length : dot
      parts.push(text.slice(i, end).toLowerCase())
      i = end
    }
    if (text[i] === '.') i++
  }
  if (parts.length === 1) return ['public', parts[0]!]
  if (parts.length === 2) return [parts[0]!, parts[1]!]
  throw new Error(`table ${JSON.stringify(text)}: expected name or schema.name`)
}

const quoteIdent = (name: string): string => `"${name.replace(/"/g, '""')}"`
const quoteTable = ([schema, name]: [string, string]): string => `${quoteIdent(schema)}.${quoteIdent(name)}`

/**
 * `sql` with every parameter `$n` renumbered `$(n + by)`, leaving string literals, quoted
 * identifiers, comments and dollar-quoted strings as they are.
 */
export function shiftParams(sql: string, by: number): string {
  if (by === 0) return sql
  let out = ''
  let i = 0
  const isIdent = (c: string | undefined) => c !== undefined && /[A-Za-z0-9_]/.test(c)
  while (i < sql.length) {
    const c = sql[i]!
    if (c === "'" || c === '"') {
      const start = i
      const escapes = c === "'" && (sql[i - 1] === 'E' || sql[i - 1] === 'e')
      i++
      while (i < sql.length) {
        if (escapes && sql[i] === '\\') {
          i += 2
          continue
        }
        if (sql[i] === c) {
          if (sql[i + 1] === c) {
            i += 2
            continue
          }
          i++
          break
        }
        i++
      }
      out += sql.slice(start, i)
    } else if (c === '-' && sql[i + 1] === '-') {
      const end = sql.indexOf('\n', i)
      const stop = end === -1 ? sql.length : end
      out += sql.slice(i, stop)
      i = stop
    } else if (c === '/' && sql[i + 1] === '*') {
      const end = sql.indexOf('*/', i + 2)
      const stop = end === -1 ? sql.length : end + 2
      out += sql.slice(i, stop)
      i = stop
    } else if (c === '$') {
      const afterIdent = isIdent(sql[i - 1])
      let j = i + 1
      while (j < sql.length && /[0-9]/.test(sql[j]!)) j++
      if (j > i + 1 && !afterIdent) {
        out += `$${Number(sql.slice(i + 1, j)) + by}`
        i = j
        continue
      }
      while (j < sql.length && isIdent(sql[j])) j++
      if (!afterIdent && sql[j] === '$') {
        const tag = sql.slice(i, j + 1)
        const end = sql.indexOf(tag, j + 1)
        const stop = end === -1 ? sql.length : end + tag.length
        out += sql.slice(i, stop)
        i = stop
        continue
      }
      out += '$'
      i++
    } else {
      out += c
      i++
    }
  }
  return out
}

interface Node {
  table: [string, string]
  where?: string
  params: string[]
}

/** The where clause linking `table`'s rows to `parent`'s (see the module docs). */
export function linkWhere(parent: Node, table: [string, string], keys: ForeignKey[], via: string | undefined, name: string): string {
  const same = (a: [string, string], b: [string, string]) => a[0] === b[0] && a[1] === b[1]
  const tuple = (cols: string[]) => (cols.length === 1 ? quoteIdent(cols[0]!) : `(${cols.map(quoteIdent).join(', ')})`)
  const from = (cols: string[]) =>
    `SELECT ${cols.map(quoteIdent).join(', ')} FROM ${quoteTable(parent.table)}${parent.where?.trim() ? ` WHERE ${parent.where}` : ''}`
  const alternatives: string[] = []
  for (const k of keys) {
    if (via !== undefined && k.name !== via) continue
    if (same(k.table, table) && same(k.references, parent.table)) {
      alternatives.push(`${tuple(k.columns)} IN (${from(k.referenced_columns)})`)
    } else if (same(k.table, parent.table) && same(k.references, table)) {
      alternatives.push(`${tuple(k.referenced_columns)} IN (${from(k.columns)})`)
    }
  }
  if (alternatives.length === 0) {
    throw new Error(
      `include ${JSON.stringify(name)}: no foreign key${via ? ` named ${JSON.stringify(via)}` : ''} links ${quoteTable(table)} and ${quoteTable(parent.table)} (that the caller may read)`,
    )
  }
  return alternatives.length === 1 ? alternatives[0]! : alternatives.map((a) => `(${a})`).join(' OR ')
}

/**
 * The member shapes of tree `name`, root first, as [shape name, options]: the root under the
 * tree's name, each include under its own name. `foreignKeys` answers `GET /v1/foreign-keys`
 * for a table.
 */
export async function compileTree(
  name: string,
  tree: TreeOptions,
  foreignKeys: (table: [string, string]) => Promise<ForeignKey[]>,
): Promise<[string, MemberOptions][]> {
  const { include, ...root } = tree
  const out: [string, MemberOptions][] = [[name, root]]
  const cache = new Map<string, ForeignKey[]>()
  const stack: [Node, Record<string, IncludeOptions>][] = [
    [{ table: parseTable(tree.table), where: tree.where, params: tree.params ?? [] }, include ?? {}],
  ]
  while (stack.length > 0) {
    const [parent, includes] = stack.pop()!
    for (const [child, inc] of Object.entries(includes)) {
      const table = parseTable(inc.table ?? child)
      const cacheKey = JSON.stringify(table)
      let keys = cache.get(cacheKey)
      if (!keys) cache.set(cacheKey, (keys = await foreignKeys(table)))
      const link = linkWhere(parent, table, keys, inc.via, child)
      const params = [...parent.params]
      let where = link
      if (inc.where?.trim()) {
        where = `(${link}) AND (${shiftParams(inc.where, params.length)})`
        params.push(...(inc.params ?? []))
      }
      const options: MemberOptions = { table: quoteTable(table), where, key: inc.key, live: tree.live }
      if (params.length > 0) options.params = params
      if (inc.columns) options.columns = inc.columns
      if (inc.limit !== undefined) {
        if (!inc.orderBy?.length) throw new Error(`include ${JSON.stringify(child)}: a limit needs an orderBy`)
        if (inc.include && Object.keys(inc.include).length > 0) {
          throw new Error(`include ${JSON.stringify(child)}: an include with a limit cannot include further`)
        }
        const same = (a: [string, string], b: [string, string]) => a[0] === b[0] && a[1] === b[1]
        const toParent = keys.filter((k) => (inc.via === undefined || k.name === inc.via) && same(k.table, table) && same(k.references, parent.table))
        if (toParent.length !== 1) {
          throw new Error(
            toParent.length === 0
              ? `include ${JSON.stringify(child)}: a limit is per parent row, so ${quoteTable(table)} must reference ${quoteTable(parent.table)} through a foreign key`
              : `include ${JSON.stringify(child)}: several foreign keys link it to its parent; name the one to rank by with via`,
          )
        }
        options.top = { partition: toParent[0]!.columns, orderBy: inc.orderBy, limit: inc.limit }
      }
      out.push([child, options])
      stack.push([{ table, where, params }, inc.include ?? {}])
    }
  }
  return out
}

/** What a tree's host does with it. */
export interface TreeHost extends Omit<ShapeHost, 'applyBatch'> {
  /** Persists the batches of one common point together, then calls `makeVisible` (before the
   *  writes they confirm leave the outbox). */
  applyBatches(batches: ShapeBatch[], makeVisible: () => void): Promise<void>
}

/** Where one member of a tree stands in the server's log, by what it has fetched. */
export interface Standing {
  /** The position its last entry is at (0 for a snapshot's rows). */
  end: bigint
  /** The position it is complete up to (undefined: not known, or not up to date). */
  complete?: bigint
  /** When it was rebuilt: the position it was complete up to when its snapshot ended (its rows
   * are no newer). */
  snapshotAt?: bigint
}

/** How far a member's rows may reach: its last entry, or a snapshot that may be newer. */
function reach(at: Standing): bigint {
  return at.snapshotAt !== undefined && at.snapshotAt > at.end ? at.snapshotAt : at.end
}

/** The furthest any member reaches (what the ones behind must catch up to). */
function furthest(members: Iterable<Standing>): bigint {
  let greatest = 0n
  for (const at of members) if (reach(at) > greatest) greatest = reach(at)
  return greatest
}

/**
 * The common point a tree's members can be shown at: `L`, the least position they are all
 * complete up to, when none holds anything after it — no entry, and no snapshot that may be
 * newer. (Move-ins sit one byte after the transaction before them; no commit is that close.)
 */
export function commonPoint(members: readonly Standing[]): bigint | undefined {
  let least: bigint | undefined
  for (const at of members) {
    if (at.complete === undefined) return undefined
    if (least === undefined || at.complete < least) least = at.complete
  }
  if (least === undefined) return undefined
  return members.every((at) => reach(at) <= least + 1n) ? least : undefined
}

/** The transaction part of an offset (`<tx>_<op>`; 0 for `-1` and the snapshot's). */
function offsetTx(offset: string | undefined): bigint {
  const tx = offset?.split('_')[0]
  try {
    return tx && /^[0-9]+$/.test(tx) ? BigInt(tx) : 0n
  } catch {
    return 0n
  }
}

/** A synced include tree (see the module docs). */
export class TreeSync {
  /** The member shapes, root first. */
  readonly members = new Map<string, ShapeSync>()
  /** What the app sees: each member's rows at the last common point (its top rows per parent
   * for a member with a limit). */
  readonly visible = new Map<string, Map<string, Row>>()
  /** Every row of each member at the last common point (what `visible` is cut from). */
  readonly #all = new Map<string, Map<string, Row>>()
  readonly #top = new Map<string, TopRows>()
  /** Reached a common point since it started. */
  upToDate = false
  /** Each member's position as of what is visible (stored with it). */
  readonly applied = new Map<string, ShapeRecord>()
  /** Called after held batches were applied, with the members they changed. */
  onApplied: ((members: Set<string>) => void) | undefined
  #held = new Map<string, ShapeBatch[]>()
  #at = new Map<string, Standing>()
  #timer: ReturnType<typeof setTimeout> | undefined
  #pause = 20
  /** The furthest end among the members when the pending ask was scheduled. */
  #waitingFor = -1n
  #applying: Promise<void> = Promise.resolve()

  constructor(
    readonly name: string,
    members: [string, MemberOptions][],
    stored: { records: Map<string, ShapeRecord>; rows: Map<string, Map<string, Row>>; tags: Map<string, Map<string, TagState>> },
    private readonly host: TreeHost,
  ) {
    for (const [member, options] of members) {
      const shapeHost: ShapeHost = { ...host, applyBatch: (b) => this.#hold(member, b), advanced: (_, lsn) => this.#advanced(member, lsn) }
      const sync = new ShapeSync(member, options, stored.records.get(member), stored.rows.get(member), shapeHost, stored.tags.get(member))
      this.members.set(member, sync)
      this.#all.set(member, new Map(sync.rows))
      if (options.top) this.#top.set(member, options.top)
      this.visible.set(member, options.top ? topRows(sync.rows, options.top) : new Map(sync.rows))
      const record = stored.records.get(member)
      if (record) this.applied.set(member, record)
      this.#at.set(member, { end: offsetTx(sync.record.offset) })
    }
  }

  /** Starts (or restarts) every member. */
  start(): void {
    for (const m of this.members.values()) m.start()
  }

  /** Stops every member (rows and positions stay). */
  stop(): void {
    for (const m of this.members.values()) m.stop()
    if (this.#timer) clearTimeout(this.#timer)
    this.#timer = undefined
  }

  /** Held batches not yet visible. */
  get held(): number {
    let n = 0
    for (const b of this.#held.values()) n += b.length
    return n
  }

  async #hold(member: string, batch: ShapeBatch): Promise<void> {
    let held = this.#held.get(member)
    if (!held) this.#held.set(member, (held = []))
    held.push(batch)
    const at = this.#at.get(member)!
    if (batch.end !== undefined) at.end = offsetTx(batch.end)
    // A rebuilt member's snapshot is as of some point up to where the member was complete when
    // the snapshot ended, which its offsets (`0_*`) do not tell.
    if (batch.replaced && batch.completeLsn !== undefined) at.snapshotAt = BigInt(batch.completeLsn)
    if (batch.upToDate && batch.completeLsn !== undefined) at.complete = BigInt(batch.completeLsn)
    else if (batch.replaced || batch.upserts.size > 0 || batch.deletes.size > 0) at.complete = undefined
    this.#check()
  }

  /**
   * A member waiting on the client's watch is complete through `lsn` with nothing new (its
   * position is the end of its last batch): that may be the common point the others wait for.
   */
  #advanced(member: string, lsn: string): void {
    const at = this.#at.get(member)!
    const complete = BigInt(lsn)
    if (at.complete !== undefined && complete > at.complete && this.members.get(member)!.upToDate) {
      at.complete = complete
      this.#check()
    }
  }

  /** Applies the held batches when the members stand at a common point; else asks the ones behind. */
  #check(): void {
    const standing = [...this.#at].map(([member, at]) => (this.members.get(member)!.upToDate ? at : { ...at, complete: undefined }))
    const greatest = furthest(standing)
    if (commonPoint(standing) !== undefined) {
      this.#pause = 20
      const batches: ShapeBatch[] = []
      for (const member of this.members.keys()) batches.push(...(this.#held.get(member) ?? []))
      this.#held.clear()
      if (batches.length === 0) {
        this.upToDate = true
        return
      }
      this.#applying = this.#applying.then(() => this.#apply(batches))
      return
    }
    // Members behind the others are asked again, after a pause that grows while the same point
    // stays out of reach (and starts short again for a new one: new data is worth asking for).
    if (this.#timer && this.#waitingFor !== greatest) {
      clearTimeout(this.#timer)
      this.#timer = undefined
      this.#pause = 20
    }
    if (!this.#timer) {
      this.#waitingFor = greatest
      this.#timer = setTimeout(() => {
        this.#timer = undefined
        this.#askLagging()
      }, this.#pause)
      this.#pause = Math.min(this.#pause * 2, 1000)
    }
  }

  /** Restarts the members behind the others (their long-poll becomes a catch-up request). */
  #askLagging(): void {
    const greatest = furthest(this.#at.values())
    for (const [member, at] of this.#at) {
      const sync = this.members.get(member)!
      if (at.complete === undefined || at.complete + 1n < greatest) {
        if (sync.upToDate) sync.start()
      }
    }
  }

  async #apply(batches: ShapeBatch[]): Promise<void> {
    const changed = new Set<string>()
    await this.host.applyBatches(batches, () => this.#show(batches, changed))
    this.onApplied?.(changed)
  }

  /** Puts stored batches into the members' rows and what is visible; notes the members changed. */
  #show(batches: ShapeBatch[], changed: Set<string>): void {
    for (const b of batches) {
      const rows = this.#all.get(b.shape)!
      if (b.replaced) {
        rows.clear()
        for (const [k, v] of b.replaced) rows.set(k, v)
      } else {
        for (const [k, v] of b.upserts) rows.set(k, v)
        for (const k of b.deletes) rows.delete(k)
      }
      if (b.replaced || b.upserts.size > 0 || b.deletes.size > 0) changed.add(b.shape)
      if (b.position) this.applied.set(b.shape, b.position)
    }
    for (const member of changed) {
      const top = this.#top.get(member)
      this.visible.set(member, top ? topRows(this.#all.get(member)!, top) : this.#all.get(member)!)
    }
    this.upToDate = true
  }
}
