/**
 * The service worker: the app shell (see web/shared/app-shell-sw.ts — every page, `/t/<slug>/`
 * and `/t/<slug>/inbox` included, is the one cached `/` page offline), plus what the local
 * database needs to start without a network: the PGlite worker (`/worker.js`) and PGlite's own
 * files (`/pglite/…`). All of them are fetched at install, so a site visited once opens offline.
 *
 * `/worker.js` is network-first like the shell (a new build is picked up at once). PGlite's
 * files are large (about 17 MB) and change only with the PGlite version: they are served from
 * the cache once there, in a cache named after that version.
 */

import { networkFirst, serveAppShell } from '../../shared/app-shell-sw.js'

/** Set by the build: a hash of the shell files, so each build gets its own cache. */
declare const BUILD_VERSION: string

const sw = globalThis as unknown as ServiceWorkerGlobalScope

/** Set by the build: the PGlite version the worker is built with (see build.mjs). */
declare const PGLITE_VERSION: string
const PGLITE_FILES = ['/pglite/pglite.wasm', '/pglite/pglite.data', '/pglite/initdb.wasm']
const PGLITE_CACHE = `lead-forms-pglite-${PGLITE_VERSION}`
const WORKER_CACHE = `lead-forms-worker-${BUILD_VERSION}`

serveAppShell('lead-forms-shell-', BUILD_VERSION)

sw.addEventListener('install', (event) => {
  event.waitUntil(
    (async () => {
      await (await caches.open(WORKER_CACHE)).add('/worker.js')
      const pglite = await caches.open(PGLITE_CACHE)
      const missing = []
      for (const f of PGLITE_FILES) if (!(await pglite.match(f))) missing.push(f)
      await pglite.addAll(missing)
    })(),
  )
})

sw.addEventListener('activate', (event) => {
  event.waitUntil(
    caches
      .keys()
      .then((keys) =>
        Promise.all(
          keys
            .filter((k) => (k.startsWith('lead-forms-pglite-') && k !== PGLITE_CACHE) || (k.startsWith('lead-forms-worker-') && k !== WORKER_CACHE))
            .map((k) => caches.delete(k)),
        ),
      ),
  )
})

sw.addEventListener('fetch', (event) => {
  const req = event.request
  const url = new URL(req.url)
  if (req.method !== 'GET' || url.origin !== sw.location.origin) return
  if (url.pathname === '/worker.js') {
    event.respondWith(networkFirst(req, WORKER_CACHE, '/worker.js'))
  } else if (PGLITE_FILES.includes(url.pathname)) {
    event.respondWith(cacheFirst(req, PGLITE_CACHE, url.pathname))
  }
})

async function cacheFirst(req: Request, cacheName: string, key: string): Promise<Response> {
  const cache = await caches.open(cacheName)
  const cached = await cache.match(key)
  if (cached) return cached
  const fresh = await fetch(req)
  if (fresh.ok) await cache.put(key, fresh.clone())
  return fresh
}
