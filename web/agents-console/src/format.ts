/**
 * Reading and showing times, durations, sizes and values: Postgres sends timestamps as text
 * (`2025-01-31 12:00:00.123456+00`), the console writes ISO strings; both are read here, and
 * every view words them the same way.
 */

const PG_TIME = /^(\d{4}-\d{2}-\d{2})[ T](\d{2}:\d{2}(?::\d{2})?)(?:\.(\d+))?\s*(Z|[+-]\d{2}(?::?\d{2})?)?$/i

/**
 * A timestamp as Unix milliseconds (with sub-millisecond precision kept as a fraction, so rows
 * written in the same millisecond still sort), or NaN when it is not a timestamp.
 */
export function timeOf(value: unknown): number {
  if (typeof value !== 'string') return NaN
  const m = PG_TIME.exec(value.trim())
  if (!m) return Date.parse(value)
  const [, date, clock, fraction = '', zone = 'Z'] = m
  let offset = zone.toUpperCase()
  if (offset !== 'Z') {
    const digits = offset.slice(1).replace(':', '')
    offset = `${offset[0]}${digits.slice(0, 2)}:${(digits.slice(2) || '00').padEnd(2, '0')}`
  }
  const base = Date.parse(`${date}T${clock.length === 5 ? `${clock}:00` : clock}${offset}`)
  return fraction ? base + Number(`0.${fraction}`) * 1000 : base
}

/** A timestamp as a sort key: rows without a time sort as the oldest. */
function sortKey(value: unknown): number {
  const t = timeOf(value)
  return Number.isNaN(t) ? -Infinity : t
}

function byId(a: { id: string }, b: { id: string }): number {
  return a.id < b.id ? -1 : a.id > b.id ? 1 : 0
}

/** Newest first by `time`, then by id — a stable order for rows written at the same moment. */
export function newestFirst<T extends { id: string }>(time: (row: T) => unknown): (a: T, b: T) => number {
  return (a, b) => {
    const ta = sortKey(time(a))
    const tb = sortKey(time(b))
    return ta !== tb ? (ta < tb ? 1 : -1) : byId(a, b)
  }
}

/** Oldest first by `time`, then by id. */
export function oldestFirst<T extends { id: string }>(time: (row: T) => unknown): (a: T, b: T) => number {
  return (a, b) => {
    const ta = sortKey(time(a))
    const tb = sortKey(time(b))
    return ta !== tb ? (ta < tb ? -1 : 1) : byId(a, b)
  }
}

/** A timestamp in ISO form (for `<time dateTime>`), or undefined. */
export function isoOf(value: unknown): string | undefined {
  const t = timeOf(value)
  return Number.isNaN(t) ? undefined : new Date(Math.floor(t)).toISOString()
}

const dateTime = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' })
const clockTime = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit', second: '2-digit' })

/** "31 Jan 2025, 12:00" (or "—" for no time). */
export function formatDateTime(value: unknown): string {
  const t = timeOf(value)
  return Number.isNaN(t) ? '—' : dateTime.format(t)
}

const sameYear = new Intl.DateTimeFormat(undefined, { month: 'short', day: 'numeric', hour: 'numeric', minute: '2-digit' })
const todayTime = new Intl.DateTimeFormat(undefined, { hour: 'numeric', minute: '2-digit', second: '2-digit' })

/** Compact, for tables: "13:08:05" today, "26 Nov, 13:08" this year, else the full date. */
export function formatShort(value: unknown, now = Date.now()): string {
  const t = timeOf(value)
  if (Number.isNaN(t)) return '—'
  const d = new Date(t)
  const n = new Date(now)
  if (d.toDateString() === n.toDateString()) return todayTime.format(t)
  if (d.getFullYear() === n.getFullYear()) return sameYear.format(t)
  return dateTime.format(t)
}

/** "12:00:03" — for events, which come seconds apart. */
export function formatClock(value: unknown): string {
  const t = timeOf(value)
  return Number.isNaN(t) ? '—' : clockTime.format(t)
}

const UNITS: [Intl.RelativeTimeFormatUnit, number][] = [
  ['year', 365 * 86_400_000],
  ['month', 30 * 86_400_000],
  ['day', 86_400_000],
  ['hour', 3_600_000],
  ['minute', 60_000],
]
const relative = new Intl.RelativeTimeFormat('en', { numeric: 'auto' })

/** "3 hours ago", "in 5 days", "just now". */
export function formatRelative(value: unknown, now = Date.now()): string {
  const t = timeOf(value)
  if (Number.isNaN(t)) return '—'
  const diff = t - now
  for (const [unit, ms] of UNITS) {
    if (Math.abs(diff) >= ms) return relative.format(Math.round(diff / ms), unit)
  }
  return 'just now'
}

/** "4 s", "2 min 5 s", "1 h 3 min" between two times; undefined when either is missing. */
export function formatDuration(from: unknown, to: unknown): string | undefined {
  const a = timeOf(from)
  const b = timeOf(to)
  if (Number.isNaN(a) || Number.isNaN(b)) return undefined
  const s = Math.max(0, Math.round((b - a) / 1000))
  if (s < 60) return `${s} s`
  const m = Math.floor(s / 60)
  if (m < 60) return `${m} min${s % 60 ? ` ${s % 60} s` : ''}`
  const h = Math.floor(m / 60)
  return `${h} h${m % 60 ? ` ${m % 60} min` : ''}`
}

/** Byte counts: shared with the other example apps. */
export { formatBytes } from '../../shared/format.js'

/** A column value in a sentence: text as it is, nothing as "empty", the rest as JSON. */
export function formatValue(v: unknown): string {
  if (v === null || v === undefined) return 'empty'
  if (typeof v === 'string') return v
  if (typeof v === 'bigint') return v.toString()
  return JSON.stringify(v)
}

/** "Is active" for `is_active`. */
export function columnLabel(column: string): string {
  const words = column.replace(/_id$/, '').replace(/_/g, ' ')
  return words.charAt(0).toUpperCase() + words.slice(1)
}

/** The initials of a name, for an avatar: "AL" for Ada Lovelace. */
export function initials(name: string): string {
  const parts = name.trim().split(/\s+/).filter(Boolean)
  return ((parts[0]?.[0] ?? '?') + (parts.length > 1 ? (parts[parts.length - 1]?.[0] ?? '') : '')).toUpperCase()
}
