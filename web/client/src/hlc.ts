/**
 * The hybrid logical clock that stamps client transactions (`"<unix_ms>-<counter>"`, see the
 * write protocol): the wall clock when it moves forward, otherwise the last stamp's counter + 1,
 * so stamps from one client never go backwards — also across reloads, because the last stamp is
 * stored with the transaction that used it.
 */

/** A parsed stamp. */
export interface Stamp {
  ms: number
  counter: number
}

/** Parses `"<unix_ms>-<counter>"`; undefined for anything else. */
export function parseHlc(text: string | undefined | null): Stamp | undefined {
  if (!text) return undefined
  const m = /^(\d+)-(\d+)$/.exec(text)
  if (!m) return undefined
  return { ms: Number(m[1]), counter: Number(m[2]) }
}

/** Formats a stamp. */
export function formatHlc(s: Stamp): string {
  return `${s.ms}-${s.counter}`
}

/** Orders two stamps (-1, 0, 1). */
export function compareHlc(a: Stamp, b: Stamp): number {
  if (a.ms !== b.ms) return a.ms < b.ms ? -1 : 1
  if (a.counter !== b.counter) return a.counter < b.counter ? -1 : 1
  return 0
}

/** The stamp after `last` at wall-clock time `nowMs`. */
export function nextHlc(last: Stamp | undefined, nowMs: number): Stamp {
  const now = Math.floor(nowMs)
  if (!last || now > last.ms) return { ms: now, counter: 0 }
  return { ms: last.ms, counter: last.counter + 1 }
}
