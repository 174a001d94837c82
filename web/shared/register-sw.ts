/**
 * Registers the app's service worker (`/sw.js`, which keeps the app shell for offline use) and
 * marks `<html data-sw="ready">` once it controls the page — the browser tests wait for that
 * before going offline. Without service workers the app still runs, just not offline.
 */
export async function registerServiceWorker(): Promise<void> {
  if (!('serviceWorker' in navigator)) return
  try {
    await navigator.serviceWorker.register('/sw.js')
    await navigator.serviceWorker.ready
    document.documentElement.dataset.sw = 'ready'
  } catch (e) {
    console.warn('service worker not registered: the app will not load offline', e)
  }
}
