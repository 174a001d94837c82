// The lead forms in headless Chromium against a real `ferrite dev --example lead-forms` (its
// Postgres, site tokens and staff sign-in): offline submissions that survive a reload and are sent
// exactly once, two tabs at once, per-tenant local data, a device out of storage, the server's
// validation, and staff inboxes that each see only their tenant's leads, live, with field-level
// merge. The tests share one server and run in order.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { launch, database, eventually, screenshot, EDITOR_URL as SITES_URL } from '../../editor/tests/harness.mjs'

const ACME = '00000000-0000-4000-8000-0000000000a1'
const GLOBEX = '00000000-0000-4000-8000-0000000000b2'
const ANN = '00000000-0000-4000-8000-0000000000c1' // Acme staff
const CARLA = '00000000-0000-4000-8000-0000000000c2' // Acme staff
const BOB = '00000000-0000-4000-8000-0000000000c3' // Globex staff
const expectedErrors = /Failed to load resource|ERR_INTERNET_DISCONNECTED|net::ERR_FAILED/

let browser, db
const pages = []

before(async () => {
  browser = await launch()
  db = await database()
})

after(async () => {
  for (const page of pages) assert.deepEqual(page.errors.filter((e) => !expectedErrors.test(e)), [], 'no errors in the page')
  await browser?.close()
  await db?.end()
})

/** A page in `context` (a new device unless given), collecting its errors. */
async function open(path, context) {
  context ??= await browser.newContext({ viewport: { width: 1280, height: 860 } })
  const page = await context.newPage()
  page.errors = []
  page.on('pageerror', (e) => page.errors.push(`pageerror: ${e.stack ?? e.message}`))
  page.on('console', (m) => {
    if (m.type() === 'error') page.errors.push(`console: ${m.text()}`)
  })
  pages.push(page)
  await page.goto(`${SITES_URL}${path}`)
  await ready(page)
  return { context, page }
}

async function ready(page) {
  await page.waitForFunction(() => document.documentElement.dataset.ready === 'true', null, { timeout: 30_000 })
}

async function swReady(page) {
  await page.waitForFunction(() => document.documentElement.dataset.sw === 'ready', null, { timeout: 30_000 })
}

/** Fills the lead form and submits it. */
async function submit(page, lead) {
  await page.locator('[data-testid=lead-name]').fill(lead.name)
  await page.locator('[data-testid=lead-email]').fill(lead.email)
  await page.locator('[data-testid=lead-phone]').fill(lead.phone ?? '')
  await page.locator('[data-testid=lead-message]').fill(lead.message)
  await page.locator('[data-testid=lead-submit]').click()
}

const indicator = (page) => page.locator('[data-testid=sync-indicator]')
const leadsIn = async (email) => (await db.query('SELECT tenant_id::text, name, message FROM leads WHERE email = $1', [email])).rows

const lead = (tag) => ({ name: `Visitor ${tag}`, email: `${tag}-${randomUUID().slice(0, 8)}@example.com`, message: `Please send me an offer (${tag}).` })

test('a lead submitted offline is kept through a reload and sent exactly once when back online', async () => {
  const { context, page } = await open('/t/acme/')
  await swReady(page)
  await context.setOffline(true)
  await eventually('the indicator to say offline', async () => (await indicator(page).getAttribute('data-state')) === 'offline')
  const l = lead('offline')
  await submit(page, l)
  await page.locator('[data-testid=lead-confirmation][data-state=saved]').waitFor()
  await eventually('one lead queued', async () => (await indicator(page).getAttribute('data-pending')) === '1')
  await screenshot(page, 'lead-forms-offline')
  await page.reload()
  await ready(page)
  await eventually('the queued lead to survive the reload', async () => (await page.locator('[data-testid=queued-lead]').count()) === 1)
  await context.setOffline(false)
  await eventually('the lead to reach Postgres', async () => (await leadsIn(l.email)).length === 1)
  await eventually('the indicator to say synced', async () => (await indicator(page).getAttribute('data-state')) === 'synced')
  const [row] = await leadsIn(l.email)
  assert.deepEqual(row, { tenant_id: ACME, name: l.name, message: l.message })
  // And it stays one (no resend after the confirmation).
  await page.reload()
  await ready(page)
  assert.equal((await leadsIn(l.email)).length, 1)
})

test('a tab closed while its lead is being sent: the next visit sends it again and it arrives once', async () => {
  const { context, page } = await open('/t/acme/')
  const l = lead('mid-send')
  // The lead's upload reaches the server, but the tab is closed before the answer comes back.
  let reached
  const uploaded = new Promise((resolve) => (reached = resolve))
  await page.route('**/v1/transactions', async (route) => {
    const response = await route.fetch()
    reached(response.status())
    // (never fulfilled: the page goes first)
  })
  await submit(page, l)
  assert.equal(await uploaded, 200)
  await eventually('the server to have the lead', async () => (await leadsIn(l.email)).length === 1)
  await page.close()
  // The next visit on this device finds the lead still queued (no answer was seen) and sends it
  // again: the server answers from its record, and Postgres keeps one.
  const next = await open('/t/acme/', context)
  await eventually('the resent lead to be answered', async () => (await indicator(next.page).getAttribute('data-state')) === 'synced' && (await indicator(next.page).getAttribute('data-pending')) === '0')
  assert.equal((await leadsIn(l.email)).length, 1)
})

test('two tabs of one site submitting offline at once: both leads arrive, once each', async () => {
  const first = await open('/t/acme/')
  const second = await open('/t/acme/', first.context)
  await first.context.setOffline(true)
  const [a, b] = [lead('tab-a'), lead('tab-b')]
  await Promise.all([submit(first.page, a), submit(second.page, b)])
  await first.page.locator('[data-testid=lead-confirmation][data-state=saved]').waitFor()
  await second.page.locator('[data-testid=lead-confirmation][data-state=saved]').waitFor()
  await first.context.setOffline(false)
  await eventually('both leads in Postgres', async () => (await leadsIn(a.email)).length === 1 && (await leadsIn(b.email)).length === 1)
  await eventually('both tabs synced', async () =>
    (await indicator(first.page).getAttribute('data-state')) === 'synced' && (await indicator(second.page).getAttribute('data-state')) === 'synced')
  assert.equal((await leadsIn(a.email)).length + (await leadsIn(b.email)).length, 2)
})

test('one tenant’s page cannot see another tenant’s leads queued on the same device', async () => {
  const globex = await open('/t/globex/')
  await globex.context.setOffline(true)
  const secret = lead('globex-only')
  await submit(globex.page, secret)
  await globex.page.locator('[data-testid=lead-confirmation][data-state=saved]').waitFor()
  const acme = await open('/t/acme/', globex.context)
  const seen = await acme.page.evaluate(() => JSON.stringify(window.leadForms.client.pendingTransactions))
  assert.ok(!seen.includes(secret.email), 'Acme’s local database holds nothing of Globex’s')
  assert.ok(!(await acme.page.content()).includes(secret.email))
  await globex.context.setOffline(false)
  await eventually('the Globex lead to arrive at Globex', async () => JSON.stringify(await leadsIn(secret.email)) === JSON.stringify([{ tenant_id: GLOBEX, name: secret.name, message: secret.message }]))
})

test('a device out of storage refuses a new lead with a message and keeps the queued one', async () => {
  const { context, page } = await open('/t/acme/')
  await context.setOffline(true)
  const kept = lead('kept')
  await submit(page, kept)
  await page.locator('[data-testid=lead-confirmation][data-state=saved]').waitFor()
  // Listed as waiting only once the outbox holds it on disk: the quota shrinks after that, not
  // while the first lead is still being written (the confirmation alone can come first).
  await page.locator('[data-testid=queued-lead]').waitFor()
  const cdp = await context.newCDPSession(page)
  const origin = new URL(SITES_URL).origin
  await cdp.send('Storage.overrideQuotaForOrigin', { origin, quotaSize: 1024 })
  const refused = lead('refused')
  await submit(page, refused)
  await page.locator('[data-testid=quota-refused]').waitFor()
  assert.match(await page.locator('[data-testid=quota-refused]').innerText(), /out of storage/i)
  assert.equal(await page.locator('[data-testid=queued-lead]').count(), 1, 'the earlier lead is still queued')
  await cdp.send('Storage.overrideQuotaForOrigin', { origin })
  await context.setOffline(false)
  await eventually('the kept lead to arrive', async () => (await leadsIn(kept.email)).length === 1)
  assert.equal((await leadsIn(refused.email)).length, 0)
})

test('a lead the server refuses shows the reason and is not lost', async () => {
  const { page } = await open('/t/acme/?novalidate=1')
  const bad = { ...lead('short'), message: 'short' }
  await submit(page, bad)
  const why = page.locator('[data-testid=lead-rejected]').first()
  await why.waitFor({ timeout: 20_000 })
  const text = await why.innerText()
  assert.match(text, /at least 10 characters/, text)
  assert.ok(text.includes(bad.message), 'the lead’s content is still shown')
  assert.equal((await leadsIn(bad.email)).length, 0)
  // Without ?novalidate, the form says it before anything is queued.
  const checked = await open('/t/acme/')
  await submit(checked.page, { ...lead('checked'), email: 'not an email' })
  await checked.page.locator('[data-testid=error-email]').waitFor()
  assert.equal(await checked.page.locator('[data-testid=queued-lead]').count(), 0)
})


test('staff of two tenants each see only their own leads, live; two staff edit one lead with field-level merge', async () => {
  const context = await browser.newContext({ viewport: { width: 1280, height: 860 } })
  const signIn = async (slug, id, ctx) => {
    const page = await ctx.newPage()
    page.errors = []
    page.on('pageerror', (e) => page.errors.push(`pageerror: ${e.stack ?? e.message}`))
    pages.push(page)
    await page.goto(`${SITES_URL}/t/${slug}/inbox`)
    await page.locator(`[data-testid=staff-user][data-user-id="${id}"]`).click()
    await ready(page)
    return page
  }
  const ann = await signIn('acme', ANN, context)
  const bob = await signIn('globex', BOB, await browser.newContext())
  const shown = async (page) => page.locator('[data-testid=lead-row]').evaluateAll((els) => els.map((e) => e.dataset.id))
  const idsOf = async (tenant) => (await db.query('SELECT id::text FROM leads WHERE tenant_id = $1', [tenant])).rows.map((r) => r.id).sort()
  await eventually('each inbox to hold exactly its tenant’s leads', async () =>
    JSON.stringify((await shown(ann)).sort()) === JSON.stringify(await idsOf(ACME)) && JSON.stringify((await shown(bob)).sort()) === JSON.stringify(await idsOf(GLOBEX)))
  // A new lead for each tenant (from their sites) appears live in the right inbox only.
  const [forAcme, forGlobex] = [lead('live-acme'), lead('live-globex')]
  await submit((await open('/t/acme/')).page, forAcme)
  await submit((await open('/t/globex/')).page, forGlobex)
  await eventually('the new leads to appear in their inboxes', async () => {
    const [a, b] = [await ann.content(), await bob.content()]
    return a.includes(forAcme.email) && b.includes(forGlobex.email) && !a.includes(forGlobex.email) && !b.includes(forAcme.email)
  })
  await screenshot(ann, 'lead-forms-inbox')

  // Ann (offline) sets the status, Carla the notes: both kept.
  const carla = await signIn('acme', CARLA, await browser.newContext())
  const [{ id }] = (await db.query('SELECT id::text FROM leads WHERE email = $1', [forAcme.email])).rows
  await context.setOffline(true)
  await ann.locator(`[data-testid=lead-row][data-id="${id}"] [data-field=status]`).selectOption('contacted')
  const notes = carla.locator(`[data-testid=lead-row][data-id="${id}"] [data-field=notes]`)
  await notes.fill('Called back, wants a visit on Friday')
  await notes.press('Enter')
  await eventually('Carla’s notes in Postgres', async () => (await db.query('SELECT notes FROM leads WHERE id = $1', [id])).rows[0].notes.startsWith('Called back'))
  await context.setOffline(false)
  await eventually('both edits in Postgres', async () => {
    const [row] = (await db.query('SELECT status, notes FROM leads WHERE id = $1', [id])).rows
    return row.status === 'contacted' && row.notes === 'Called back, wants a visit on Friday'
  })
  for (const page of [ann, carla]) {
    await eventually('both inboxes to show both edits', async () =>
      (await page.locator(`[data-testid=lead-row][data-id="${id}"] [data-field=status]`).inputValue()) === 'contacted' &&
      (await page.locator(`[data-testid=lead-row][data-id="${id}"] [data-field=notes]`).inputValue()) === 'Called back, wants a visit on Friday')
  }

  // Signing out clears the staff data from the device.
  await carla.locator('[data-testid=sign-out]').click()
  await carla.locator('[data-testid=staff-user]').first().waitFor()
  const left = await carla.evaluate(async () => ({
    databases: (await indexedDB.databases()).map((d) => d.name).filter((n) => n && n.includes('staff')),
    stored: JSON.stringify({ ...localStorage }),
  }))
  assert.deepEqual(left.databases, [], `no staff database left: ${left.databases}`)
  assert.ok(!left.stored.includes('@example.com'), 'no lead data in localStorage')
})
