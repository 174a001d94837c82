/**
 * The service worker: keeps the app shell (page, script, styles, icon) and the avatars in a
 * cache so that the console loads — and shows the signed-in user's local data — without a
 * network. Online, every request goes to the server first (a new build is picked up at once)
 * and refreshes the cache; only when the network fails is the cache used. Sync traffic
 * (`/v1/*`) and the sign-in (`/dev/*`) are never cached: the client library keeps its own data.
 */

const sw = globalThis as unknown as ServiceWorkerGlobalScope
/** Set by the build: a hash of the shell files, so each build gets its own cache. */
declare const BUILD_VERSION: string

const PREFIX = 'agents-console-'
const CACHE = `${PREFIX}${BUILD_VERSION}`
const SHELL = ['/', '/app.js', '/app.css', '/icon.svg']

sw.addEventListener('install', (event) => {
  event.waitUntil(
    caches
      .open(CACHE)
      .then((c) => c.addAll(SHELL))
      .then(() => sw.skipWaiting()),
  )
})

sw.addEventListener('activate', (event) => {
  event.waitUntil(
    caches
      .keys()
      .then((keys) => Promise.all(keys.filter((k) => k.startsWith(PREFIX) && k !== CACHE).map((k) => caches.delete(k))))
      .then(() => sw.clients.claim()),
  )
})

sw.addEventListener('fetch', (event) => {
  const req = event.request
  const url = new URL(req.url)
  if (req.method !== 'GET' || url.origin !== sw.location.origin) return
  if (url.pathname.startsWith('/v1/') || url.pathname.startsWith('/dev/')) return
  const shell = req.mode === 'navigate' || SHELL.includes(url.pathname) || url.pathname.startsWith('/avatars/')
  if (!shell) return
  // Navigations are all the same page (the tab lives in the #hash).
  const key = req.mode === 'navigate' ? '/' : url.pathname
  event.respondWith(
    (async () => {
      const cache = await caches.open(CACHE)
      try {
        const fresh = await fetch(req)
        if (fresh.ok) await cache.put(key, fresh.clone())
        return fresh
      } catch (e) {
        const cached = await cache.match(key)
        if (cached) return cached
        throw e
      }
    })(),
  )
})
