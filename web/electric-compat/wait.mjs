// Waiting on a condition (never a fixed sleep), shared by the compatibility suites.

/** Polls `fn` every 50 ms until it returns true; throws after `timeoutMs` with its last result. */
export async function waitFor(what, fn, timeoutMs = 15000) {
  const start = Date.now()
  let last
  while (Date.now() - start < timeoutMs) {
    try {
      last = await fn()
      if (last === true) return
    } catch (e) { last = e }
    await new Promise((r) => setTimeout(r, 50))
  }
  throw new Error(`timed out waiting for ${what}; last: ${last instanceof Error ? last.stack : JSON.stringify(last)}`)
}
