// Initial sync into each of @ferrite/client's stores in Chromium, against a running server:
// IndexedDB and PGlite (in IndexedDB), alternating, each run in a new browser profile. Run by
// `ferrite-bench web-stores`, which starts Postgres and the server, fills the table and passes
// FERRITE_URL, TABLE, ROWS and RUNS. Prints one JSON line per run:
// {"store": …, "start_ms": …, "synced_ms": …, "stored_ms": …, "reopen_ms": …}.
//
// The page (stores-page.ts) is bundled here with esbuild and served, with PGlite's files, from a
// small static server of its own on loopback (the API is cross-origin: Ferrite sends CORS headers).
import * as esbuild from 'esbuild'
import { createServer } from 'node:http'
import { readFile } from 'node:fs/promises'
import { fileURLToPath } from 'node:url'
import { chromium } from 'playwright-core'

const api = process.env.FERRITE_URL.replace(/\/$/, '')
const table = process.env.TABLE
const rows = Number(process.env.ROWS)
const runs = Number(process.env.RUNS ?? '3')

const built = await esbuild.build({
  entryPoints: [fileURLToPath(new URL('stores-page.ts', import.meta.url))],
  bundle: true,
  format: 'esm',
  target: 'es2022',
  minify: true,
  write: false,
  logLevel: 'warning',
})
const page = built.outputFiles[0].contents
const pglite = new URL('../../node_modules/@electric-sql/pglite/dist/', import.meta.url)
const FILES = {
  '/': ['text/html', Buffer.from('<!doctype html><meta charset="utf-8"><title>stores bench</title><script type="module" src="/page.js"></script>')],
  '/page.js': ['text/javascript', page],
}
const PGLITE = { '/pglite/pglite.wasm': 'application/wasm', '/pglite/initdb.wasm': 'application/wasm', '/pglite/pglite.data': 'application/octet-stream' }

const server = createServer(async (req, res) => {
  const path = new URL(req.url, 'http://x').pathname
  try {
    let file = FILES[path]
    if (!file && PGLITE[path]) file = [PGLITE[path], await readFile(new URL(path.slice('/pglite/'.length), pglite))]
    if (!file) {
      res.writeHead(404).end()
      return
    }
    res.writeHead(200, { 'content-type': file[0] }).end(file[1])
  } catch (e) {
    res.writeHead(500).end(String(e))
  }
})
await new Promise((r) => server.listen(0, '127.0.0.1', r))
const origin = `http://127.0.0.1:${server.address().port}`

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu'],
})
try {
  for (let run = 0; run < runs; run++) {
    for (const store of run % 2 === 0 ? ['indexeddb', 'pglite'] : ['pglite', 'indexeddb']) {
      const context = await browser.newContext()
      const tab = await context.newPage()
      tab.on('pageerror', (e) => console.error(`page error: ${e.message}`))
      await tab.goto(`${origin}/`)
      await tab.waitForFunction(() => typeof globalThis.runStoresBench === 'function')
      const figures = await tab.evaluate(([api, table, rows, store, name]) => globalThis.runStoresBench(api, table, rows, store, name), [
        api,
        table,
        rows,
        store,
        `bench-${store}-${run}`,
      ])
      console.log(JSON.stringify({ store, ...Object.fromEntries(Object.entries(figures).map(([k, v]) => [k, Math.round(v)])) }))
      await context.close()
    }
  }
} finally {
  await browser.close()
  server.close()
}
