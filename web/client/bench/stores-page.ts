// The page `stores.mjs` loads in Chromium: syncs one shape into a new replica on the store it is
// asked for — IndexedDB (the default) or PGlite (in IndexedDB, on the page's thread) — and times
// the initial sync until every row is stored, then a reopen of that replica from the device.
import { PGlite } from '@electric-sql/pglite'
import { FerriteClient, pgliteStore, type StoreFactory } from '../src/index.js'

/** What one run measured, in milliseconds. */
interface Figures {
  /** Starting PGlite (0 for IndexedDB): creating a new database, Postgres's initdb included. */
  start_ms: number
  /** `FerriteClient.open` → every row in memory and the client `synced`. */
  synced_ms: number
  /** `FerriteClient.open` → every row in the store (read back from it). */
  stored_ms: number
  /** Closing and opening the replica again (what a reload does): until its rows are shown. */
  reopen_ms: number
}

async function compile(url: string): Promise<WebAssembly.Module> {
  return WebAssembly.compileStreaming(fetch(url))
}

let files: Promise<[WebAssembly.Module, WebAssembly.Module, Blob]> | undefined
const pgliteFiles = () =>
  (files ??= Promise.all([compile('/pglite/pglite.wasm'), compile('/pglite/initdb.wasm'), fetch('/pglite/pglite.data').then((r) => r.blob())]))

async function startPGlite(name: string): Promise<PGlite> {
  const [pgliteWasmModule, initdbWasmModule, fsBundle] = await pgliteFiles()
  return PGlite.create({ dataDir: `idb://${name}`, pgliteWasmModule, initdbWasmModule, fsBundle })
}

/** Rows of `shape` the IndexedDB store holds (read through a connection of its own). */
async function idbCount(database: string): Promise<number> {
  const db = await new Promise<IDBDatabase>((resolve, reject) => {
    const r = indexedDB.open(database)
    r.onsuccess = () => resolve(r.result)
    r.onerror = () => reject(r.error)
  })
  try {
    return await new Promise<number>((resolve, reject) => {
      const r = db.transaction('rows').objectStore('rows').count()
      r.onsuccess = () => resolve(r.result)
      r.onerror = () => reject(r.error)
    })
  } finally {
    db.close()
  }
}

async function until(what: string, done: () => boolean | Promise<boolean>, timeoutMs = 300_000): Promise<void> {
  const start = performance.now()
  while (!(await done())) {
    if (performance.now() - start > timeoutMs) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 10))
  }
}

async function run(url: string, table: string, rows: number, store: 'indexeddb' | 'pglite', name: string): Promise<Figures> {
  const shapes = { items: { table } }
  let pg: PGlite | undefined
  const t0 = performance.now()
  if (store === 'pglite') pg = await startPGlite(name)
  const start_ms = performance.now() - t0
  const factory: StoreFactory | undefined = pg ? () => pgliteStore(pg!) : undefined
  const t1 = performance.now()
  const client = await FerriteClient.open({ url, database: name, shapes, store: factory })
  await until('the initial sync', () => client.status.state === 'synced' && client.rows('items').length === rows)
  const synced_ms = performance.now() - t1
  await until('the rows stored', async () =>
    pg ? (await pg.query<{ n: number }>('SELECT count(*)::int AS n FROM ferrite.rows')).rows[0]!.n === rows : (await idbCount(name)) === rows,
  )
  const stored_ms = performance.now() - t1
  client.close()
  // A reload: the same replica opened again (offline would show the same; the shape resumes).
  const t2 = performance.now()
  const again = await FerriteClient.open({ url, database: name, shapes, store: factory })
  await until('the stored rows shown', () => again.rows('items').length === rows)
  const reopen_ms = performance.now() - t2
  again.close()
  await pg?.close()
  return { start_ms, synced_ms, stored_ms, reopen_ms }
}

;(globalThis as unknown as { runStoresBench: typeof run }).runStoresBench = run
