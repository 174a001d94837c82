// Shared helpers of the browser tests: Chromium via playwright-core, signed-in pages, Postgres.
// Needs EDITOR_URL (the URL `ferrite dev` printed) and DATABASE_URL (its Postgres); the Rust
// test crates/ferrite/tests/e2e/web_editor.rs starts `ferrite dev` and sets both. ARTIFACTS names
// the directory screenshots go to. The agents console's tests (web/agents-console/tests) use
// launch, database, eventually and screenshot too, with EDITOR_URL naming the console.
import { chromium } from 'playwright-core'
import pg from 'pg'
import { mkdirSync } from 'node:fs'
import { join } from 'node:path'
import assert from 'node:assert/strict'

export const EDITOR_URL = (process.env.EDITOR_URL ?? '').replace(/\/$/, '')
export const ARTIFACTS = process.env.ARTIFACTS ?? join(process.cwd(), 'test-artifacts')

export const USERS = {
  ada: '00000000-0000-4000-8000-0000000000a1',
  grace: '00000000-0000-4000-8000-0000000000a2',
  linus: '00000000-0000-4000-8000-0000000000a3',
}
export const TEAMS = { platform: '00000000-0000-4000-8000-000000000001', data: '00000000-0000-4000-8000-000000000002' }
export const PIPELINES = { build: '00000000-0000-4000-8000-0000000000b1', etl: '00000000-0000-4000-8000-0000000000b2', docs: '00000000-0000-4000-8000-0000000000b3' }

const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium'

/** Launches headless Chromium (Debian's, not a downloaded build). */
export async function launch() {
  assert.ok(EDITOR_URL, 'EDITOR_URL must be set (the Rust test web_editor.rs does)')
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-dev-shm-usage'],
  })
}

/** Opens a Postgres connection to the database `ferrite dev` serves. */
export async function database() {
  const db = new pg.Client({ connectionString: process.env.DATABASE_URL })
  await db.connect()
  return db
}

/**
 * A new browser context (its own storage: a separate "device") with `user` signed in through
 * the dev sign-in UI, on the pipeline list. Console errors and page errors are collected in
 * `page.errors` (tests assert there are none that matter).
 */
export async function signedIn(browser, user, { viewport = { width: 1360, height: 820 } } = {}) {
  const context = await browser.newContext({ viewport })
  const page = await context.newPage()
  page.errors = []
  page.on('pageerror', (e) => page.errors.push(`pageerror: ${e.stack ?? e.message}`))
  page.on('console', (m) => {
    if (m.type() === 'error') page.errors.push(`console: ${m.text()}`)
  })
  await page.goto(`${EDITOR_URL}/`)
  await page.locator(`[data-testid=user-option][data-user-id="${user}"]`).click()
  await page.locator('[data-testid=me]').waitFor()
  await page.waitForFunction(() => document.documentElement.dataset.sw === 'ready')
  return { context, page }
}

/** Opens a pipeline in the editor and waits for its steps. */
export async function openPipeline(page, id) {
  await page.locator(`[data-testid=pipeline-link][data-pipeline-id="${id}"]`).click()
  await page.locator('[data-testid=step]').first().waitFor()
}

export const step = (page, id) => page.locator(`[data-testid=step][data-step-id="${id}"]`)
export const stepNamed = (page, name) => page.locator('[data-testid=step]').filter({ has: page.locator('.step-name', { hasText: new RegExp(`^${escape(name)}$`) }) })
const escape = (s) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')

/** The sync indicator's state and text. */
export async function syncStatus(page) {
  const el = page.locator('[data-testid=sync-status]')
  return { state: await el.getAttribute('data-state'), text: (await el.innerText()).replace(/\s+/g, ' ').trim() }
}

/** Waits until the sync indicator shows `state` (and `text`, if given). */
export async function waitForSync(page, state, text) {
  await page.waitForFunction(
    ([state, text]) => {
      const el = document.querySelector('[data-testid=sync-status]')
      return el?.dataset.state === state && (!text || el.innerText.replace(/\s+/g, ' ').includes(text))
    },
    [state, text],
    { timeout: 20_000 },
  )
}

/** The steps the page shows: id → {name, x, y}. */
export async function shownSteps(page) {
  return page.$$eval('[data-testid=step]', (els) =>
    Object.fromEntries(els.map((e) => [e.dataset.stepId, { name: e.querySelector('.step-name').textContent, x: parseFloat(e.style.left), y: parseFloat(e.style.top) }])),
  )
}

/** The connections the page shows, as sorted "from>to" pairs. */
export async function shownConnections(page) {
  const pairs = await page.$$eval('[data-testid=connection]', (els) => els.map((e) => `${e.dataset.from}>${e.dataset.to}`))
  return pairs.sort()
}

/** Drags a step by (dx, dy) with the mouse. */
export async function dragStep(page, id, dx, dy) {
  await step(page, id).scrollIntoViewIfNeeded()
  const box = await step(page, id).boundingBox()
  const x = box.x + 60
  const y = box.y + 20
  await page.mouse.move(x, y)
  await page.mouse.down()
  await page.mouse.move(x + dx / 2, y + dy / 2, { steps: 4 })
  await page.mouse.move(x + dx, y + dy, { steps: 4 })
  await page.mouse.up()
}

/** Polls `fn` until it returns true (or fails with the last value after `timeoutMs`). */
export async function eventually(what, fn, timeoutMs = 20_000) {
  const start = Date.now()
  let last
  while (Date.now() - start < timeoutMs) {
    try {
      last = await fn()
      if (last === true) return
    } catch (e) {
      last = e
    }
    await new Promise((r) => setTimeout(r, 100))
  }
  throw new Error(`timed out waiting for ${what}; last: ${last instanceof Error ? last.stack : JSON.stringify(last)}`)
}

/** Saves a screenshot into the artifacts directory. */
export async function screenshot(page, name) {
  mkdirSync(ARTIFACTS, { recursive: true })
  const path = join(ARTIFACTS, `${name}.png`)
  await page.screenshot({ path })
  return path
}
