/**
 * The PGlite worker: each tab of a site starts one, and the tabs of one database elect a leader
 * (PGlite's `worker()`: a Web Lock per database) whose worker runs the database — Postgres in
 * WebAssembly, kept in IndexedDB — while the others send it their queries. When the leader's tab
 * closes, another tab's worker takes over from what IndexedDB holds.
 *
 * PGlite's files come from the server's `/pglite/` (cached by the service worker for offline
 * use), given to PGlite as compiled modules and a bundle, so the worker's own URL does not matter.
 */

import { PGlite } from '@electric-sql/pglite'
import { worker } from '@electric-sql/pglite/worker'

/** Fetches and compiles a WebAssembly module (streaming when the server says `application/wasm`). */
async function compile(url: string): Promise<WebAssembly.Module> {
  const r = await fetch(url)
  if (!r.ok) throw new Error(`${url}: the server answered ${r.status}`)
  if ((r.headers.get('content-type') ?? '').includes('application/wasm')) return WebAssembly.compileStreaming(r)
  return WebAssembly.compile(await r.arrayBuffer())
}

async function bundle(url: string): Promise<Blob> {
  const r = await fetch(url)
  if (!r.ok) throw new Error(`${url}: the server answered ${r.status}`)
  return r.blob()
}

/**
 * The leader answers each tab over a channel of that tab's, which PGlite closes when the tab lets
 * go of the database; a query of the tab still under way then has nowhere to send its answer, and
 * PGlite's worker reports that as an error (and an unhandled rejection). Nothing is lost — the tab
 * is gone — so it is not reported.
 */
const answerToGoneTab = (e: unknown) => e instanceof DOMException && e.name === 'InvalidStateError' && /channel is closed/i.test(e.message)
const reportError = console.error.bind(console)
console.error = (...args: unknown[]) => {
  if (args.length === 1 && answerToGoneTab(args[0])) return
  reportError(...args)
}
addEventListener('unhandledrejection', (e) => {
  if (answerToGoneTab(e.reason)) e.preventDefault()
})

void worker({
  async init(options) {
    try {
      const [pgliteWasmModule, initdbWasmModule, fsBundle] = await Promise.all([
        compile('/pglite/pglite.wasm'),
        compile('/pglite/initdb.wasm'),
        bundle('/pglite/pglite.data'),
      ])
      return await PGlite.create({ dataDir: options.dataDir, pgliteWasmModule, initdbWasmModule, fsBundle })
    } catch (e) {
      // The tab waits for the database: tell it why it will not come.
      postMessage({ type: 'lead-forms:error', message: e instanceof Error ? e.message : String(e) })
      throw e
    }
  },
})
