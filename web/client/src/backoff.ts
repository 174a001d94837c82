/**
 * How long to wait before trying the server again: 1, 2, 5, 10, then every 30 seconds, each
 * jittered (±20 %) so that clients cut off together do not return together, and never sooner
 * than a `Retry-After` the server asked for.
 */

/** The schedule, in milliseconds, by attempt (the last one repeats). */
export const BACKOFF_SCHEDULE_MS: readonly number[] = [1_000, 2_000, 5_000, 10_000, 30_000]

/** Jitter applied to each delay: the delay is scaled by a factor in [1 − JITTER, 1 + JITTER]. */
export const JITTER = 0.2

/**
 * The delay before retry number `attempt` (0 = the first retry).
 * @param retryAfterMs what the server asked for (`Retry-After`), if anything
 * @param random a number in [0, 1) (injectable for tests)
 */
export function backoffDelay(attempt: number, retryAfterMs = 0, random: number = Math.random()): number {
  const base = BACKOFF_SCHEDULE_MS[Math.min(Math.max(attempt, 0), BACKOFF_SCHEDULE_MS.length - 1)]!
  const jittered = Math.round(base * (1 - JITTER + 2 * JITTER * random))
  return Math.max(jittered, retryAfterMs)
}

/** `Retry-After` in milliseconds: delta-seconds or an HTTP date; 0 when absent or unreadable. */
export function parseRetryAfter(header: string | null | undefined, nowMs: number = Date.now()): number {
  if (!header) return 0
  const secs = Number(header)
  if (Number.isFinite(secs)) return Math.max(0, secs * 1000)
  const at = Date.parse(header)
  return Number.isFinite(at) ? Math.max(0, at - nowMs) : 0
}
