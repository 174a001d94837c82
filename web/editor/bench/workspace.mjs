// Opening a pipeline workspace in Chromium from empty (a new browser profile: no IndexedDB, no
// service worker), against a running `ferrite dev`: the time from navigation to the first complete
// render (every step drawn, every connection drawn), and the requests the page made until then.
// Run by `ferrite-bench workspace`, which starts `ferrite dev`, seeds the pipeline and passes
// EDITOR_URL, PIPELINE_ID, USER (JSON of the signed-in user), STEPS, CONNECTIONS and RUNS.
// Prints one JSON line per run: {"ms": …, "requests": …, "by_path": {…}}.
import { chromium } from 'playwright-core'

const url = process.env.EDITOR_URL.replace(/\/$/, '')
const pipeline = process.env.PIPELINE_ID
const user = process.env.USER_JSON
const steps = Number(process.env.STEPS)
const connections = Number(process.env.CONNECTIONS)
const runs = Number(process.env.RUNS ?? '3')

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu'],
})
try {
  for (let run = 0; run < runs; run++) {
    const context = await browser.newContext({ viewport: { width: 1360, height: 820 } })
    // Signed in already (the dev sign-in stores who in localStorage); the replica is empty.
    await context.addInitScript((u) => localStorage.setItem('pipeline-editor:user', u), user)
    const page = await context.newPage()
    const byPath = {}
    let requests = 0
    let counting = true
    page.on('request', (r) => {
      if (!counting) return
      requests++
      const path = new URL(r.url()).pathname
      byPath[path] = (byPath[path] ?? 0) + 1
    })
    await page.goto(`${url}/#/p/${pipeline}`)
    const ms = await page.evaluate(
      ([steps, connections]) =>
        new Promise((resolve) => {
          const done = () =>
            document.querySelectorAll('[data-testid=step]').length >= steps &&
            document.querySelectorAll('[data-testid=connection]').length >= connections
          const check = () => {
            if (done()) resolve(performance.now())
            else requestAnimationFrame(check)
          }
          check()
        }),
      [steps, connections],
    )
    counting = false
    console.log(JSON.stringify({ ms: Math.round(ms), requests, by_path: byPath }))
    await context.close()
  }
} finally {
  await browser.close()
}
