/** Small formatting helpers: timestamps as Postgres sends them, sizes, counts in words. */

/**
 * A timestamp as Unix ms: Postgres text (`2025-01-31 12:00:00.123456+00`) or ISO. NaN when it
 * cannot be read.
 */
export function parseTimestamp(v: unknown): number {
  if (typeof v !== 'string' || v === '') return NaN
  let s = v.trim().replace(' ', 'T')
  // `+00` / `-05` → `+00:00`; `+0530` → `+05:30`.
  s = s.replace(/([+-]\d\d)$/, '$1:00').replace(/([+-]\d\d)(\d\d)$/, '$1:$2')
  // More than milliseconds: JavaScript reads only three digits.
  s = s.replace(/(\.\d{3})\d+/, '$1')
  return Date.parse(s)
}

const dateTime = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' })

/** "31 Jan 2025, 12:00" (the reader's locale), or "" for an unreadable time. */
export function formatTime(v: unknown): string {
  const t = typeof v === 'number' ? v : parseTimestamp(v)
  return Number.isFinite(t) ? dateTime.format(t) : ''
}

/** Byte counts: shared with the other example apps. */
export { formatBytes } from '../../shared/format.js'

/** "1 message", "3 messages" */
export function count(n: number, one: string, many = `${one}s`): string {
  return `${n} ${n === 1 ? one : many}`
}

/** The current time as the app writes timestamps. */
export function nowIso(): string {
  return new Date().toISOString()
}
