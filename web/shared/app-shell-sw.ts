/**
 * The service worker of the example apps (the pipeline editor, the agents console): keeps the app
 * shell (page, script, styles, icon) and the avatars in a cache so that the app loads — and shows
 * the signed-in user's local data — without a network. Online, every request goes to the server
 * first (so a new build is picked up at once) and refreshes the cache; only when the network
 * fails is the cache used. Sync traffic (`/v1/*`) and the sign-in (`/dev/*`) are never cached:
 * the client library keeps its own data. Each app's `src/sw.ts` calls {@link serveAppShell}.
 */

const sw = globalThis as unknown as ServiceWorkerGlobalScope
const SHELL = ['/', '/app.js', '/app.css', '/icon.svg']

/**
 * Installs the handlers. `prefix` names the app's caches (`<prefix><version>`; older versions
 * are deleted on activation), `version` is the build's hash of the shell files.
 */
export function serveAppShell(prefix: string, version: string): void {
  const cacheName = `${prefix}${version}`

  sw.addEventListener('install', (event) => {
    event.waitUntil(
      caches
        .open(cacheName)
        .then((c) => c.addAll(SHELL))
        .then(() => sw.skipWaiting()),
    )
  })

  sw.addEventListener('activate', (event) => {
    event.waitUntil(
      caches
        .keys()
        .then((keys) => Promise.all(keys.filter((k) => k.startsWith(prefix) && k !== cacheName).map((k) => caches.delete(k))))
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
    // Navigations are all the same page (the apps' routes live in the #hash).
    const key = req.mode === 'navigate' ? '/' : url.pathname
    event.respondWith(networkFirst(req, cacheName, key))
  })
}

/**
 * The server's answer to `req`, kept in cache `cacheName` under `key`; the kept one when the
 * network fails.
 */
export async function networkFirst(req: Request, cacheName: string, key: string): Promise<Response> {
  const cache = await caches.open(cacheName)
  try {
    const fresh = await fetch(req)
    if (fresh.ok) await cache.put(key, fresh.clone())
    return fresh
  } catch (e) {
    const cached = await cache.match(key)
    if (cached) return cached
    throw e
  }
}
