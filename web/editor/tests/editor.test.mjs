// The pipeline editor in headless Chromium against a real `ferrite dev` (its Postgres, its
// dev sign-in): collaboration, offline work, conflicts, rejections. The tests share one server
// and run in order; each leaves the seeded pipelines in a state the next one expects.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import {
  launch, database, signedIn, openPipeline, step, stepNamed, syncStatus, waitForSync, shownSteps, shownConnections,
  dragStep, eventually, screenshot, USERS, TEAMS, PIPELINES, EDITOR_URL,
} from './harness.mjs'

const B = PIPELINES.build
const STEP = { checkout: '00000000-0000-4000-8000-0000000000c1', build: '00000000-0000-4000-8000-0000000000c2', test: '00000000-0000-4000-8000-0000000000c3', deploy: '00000000-0000-4000-8000-0000000000c4' }
const EXTRACT = '00000000-0000-4000-8000-0000000000c5'
/** Page errors that are no fault of the page (requests that failed, on purpose or offline). */
const expectedErrors = /Failed to load resource|ERR_INTERNET_DISCONNECTED/

let browser, db, ada, grace

before(async () => {
  browser = await launch()
  db = await database()
  ada = await signedIn(browser, USERS.ada)
  grace = await signedIn(browser, USERS.grace)
  await openPipeline(ada.page, B)
  await openPipeline(grace.page, B)
})

after(async () => {
  for (const who of [ada, grace]) if (who) assert.deepEqual(who.page.errors.filter((e) => !expectedErrors.test(e)), [], 'no errors in the page')
  await browser?.close()
  await db?.end()
})

/** The pipeline as Postgres has it, in the shape shownSteps/shownConnections return. */
async function inPostgres(pipeline) {
  const steps = await db.query('SELECT id::text, name, x, y FROM steps WHERE pipeline_id = $1', [pipeline])
  const conns = await db.query('SELECT from_step_id::text AS f, to_step_id::text AS t FROM connections WHERE pipeline_id = $1', [pipeline])
  return {
    steps: Object.fromEntries(steps.rows.map((r) => [r.id, { name: r.name, x: r.x, y: r.y }])),
    connections: conns.rows.map((r) => `${r.f}>${r.t}`).sort(),
  }
}

/** Waits until every page shows exactly what Postgres holds for the pipeline. */
async function allAgree(pipeline, pages) {
  await eventually('the pages and Postgres to agree', async () => {
    const want = await inPostgres(pipeline)
    for (const page of pages) {
      const got = { steps: await shownSteps(page), connections: await shownConnections(page) }
      if (JSON.stringify(sortKeys(got)) !== JSON.stringify(sortKeys(want))) return { want, got }
    }
    return true
  })
  return inPostgres(pipeline)
}
const sortKeys = (o) => ({ steps: Object.fromEntries(Object.entries(o.steps).sort()), connections: o.connections })

async function goOffline(who) {
  await who.context.setOffline(true)
  await waitForSync(who.page, 'offline', 'Working offline')
}

async function goOnline(who) {
  await who.context.setOffline(false)
  await waitForSync(who.page, 'synced', 'All changes saved')
}

async function select(page, id) {
  await step(page, id).click()
  // (A viewer's inspector shows the step without inputs.)
  await page.locator('[data-testid=step-name-input], [data-testid=step-readonly]').first().waitFor()
}

/** Clicks "add step"; the new step's id. (It is selected once stored: wait for a selection that
 *  was not there before, not whatever was selected when the button was clicked.) */
async function addStep(page) {
  const known = new Set(Object.keys(await shownSteps(page)))
  await page.locator('[data-testid=add-step]').click()
  let id
  await eventually('the new step to be selected', async () => {
    id = await page.locator('[data-testid=step].selected').getAttribute('data-step-id', { timeout: 1000 }).catch(() => null)
    return Boolean(id) && !known.has(id)
  })
  return id
}

async function rename(page, id, name) {
  await select(page, id)
  const input = page.locator('[data-testid=step-name-input]')
  await input.fill(name)
  await input.press('Enter')
}

/**
 * Whether step `id` is wholly in the canvas's view: inside the canvas's visible box (so not
 * under the side panel, nor scrolled off), and what is drawn at its middle and corners is the step.
 */
async function inView(page, id) {
  return page.evaluate((id) => {
    const node = document.querySelector(`[data-testid=step][data-step-id="${id}"]`)
    const canvas = document.querySelector('[data-testid=canvas]')
    const side = document.querySelector('aside.side')
    if (!node || !canvas || !side) return `missing: ${[!node && 'step', !canvas && 'canvas', !side && 'panel'].filter(Boolean)}`
    const n = node.getBoundingClientRect()
    const c = canvas.getBoundingClientRect()
    const view = { left: c.left + canvas.clientLeft, top: c.top + canvas.clientTop, right: c.left + canvas.clientLeft + canvas.clientWidth, bottom: c.top + canvas.clientTop + canvas.clientHeight }
    const panel = side.getBoundingClientRect().left
    if (n.left < view.left || n.top < view.top || n.right > Math.min(view.right, panel) || n.bottom > view.bottom) {
      return { step: [n.left, n.top, n.right, n.bottom], view: [view.left, view.top, view.right, view.bottom], panel }
    }
    // (Inside the rounded corners.)
    for (const [x, y] of [[(n.left + n.right) / 2, (n.top + n.bottom) / 2], [n.left + 8, n.top + 8], [n.right - 8, n.top + 8], [n.left + 8, n.bottom - 8], [n.right - 8, n.bottom - 8]]) {
      if (!document.elementFromPoint(x, y)?.closest(`[data-step-id="${id}"]`)) return `covered at (${x}, ${y}) by ${document.elementFromPoint(x, y)?.className}`
    }
    return true
  }, id)
}

test('at 1280×800 every step can be seen, none under the side panel, and a new step shows where the canvas is scrolled', async () => {
  const small = await signedIn(browser, USERS.ada, { viewport: { width: 1280, height: 800 } })
  const page = small.page
  try {
    await openPipeline(page, B)
    const seeded = Object.values(STEP)
    await eventually('the seeded steps', async () => (await page.locator('[data-testid=step]').count()) === seeded.length)
    // On opening, the pipeline is fitted into the view: all four steps at once, at a readable zoom.
    for (const id of seeded) await eventually(`step ${id} in view`, () => inView(page, id), 5_000)
    const zoom = parseInt(await page.locator('[data-testid=zoom-level]').innerText(), 10)
    assert.ok(zoom >= 60 && zoom <= 100, `zoom ${zoom}%`)
    await screenshot(page, 'canvas-1280-fitted')

    // At 100% the canvas scrolls over the steps' extent (and not much further), and each step can be scrolled to.
    await page.locator('[data-testid=zoom-level]').click()
    assert.equal(await page.locator('[data-testid=zoom-level]').innerText(), '100%')
    const { scrollWidth, clientWidth } = await page.locator('[data-testid=canvas]').evaluate((c) => ({ scrollWidth: c.scrollWidth, clientWidth: c.clientWidth }))
    const right = Math.max(...Object.values(await shownSteps(page)).map((s) => s.x + 168))
    assert.ok(clientWidth < right && scrollWidth >= right && scrollWidth <= right + 240, `scrolls over ${scrollWidth} px for steps up to ${right} px in a view of ${clientWidth} px`)
    for (const id of seeded) {
      await step(page, id).scrollIntoViewIfNeeded()
      await eventually(`step ${id} scrolled into view`, () => inView(page, id), 5_000)
    }

    // Scrolled to the far right, a new step is placed in view (clear of the others).
    await page.locator('[data-testid=canvas]').evaluate((c) => {
      c.scrollLeft = c.scrollWidth
      c.scrollTop = c.scrollHeight
    })
    const added = await addStep(page)
    await eventually('the new step in view', () => inView(page, added), 5_000)
    const shown = await shownSteps(page)
    for (const id of seeded) {
      const [a, b] = [shown[added], shown[id]]
      assert.ok(a.x + 168 <= b.x || b.x + 168 <= a.x || a.y + 64 <= b.y || b.y + 64 <= a.y, `the new step is clear of ${id}`)
    }
    await screenshot(page, 'canvas-1280-added')
    // "Fit" shows all five.
    await page.locator('[data-testid=zoom-fit]').click()
    for (const id of [...seeded, added]) await eventually(`step ${id} in view after Fit`, () => inView(page, id), 5_000)

    // The pipeline as the next tests expect it: without the new step.
    await select(page, added)
    await page.locator('[data-testid=delete-step]').click()
    await eventually('the new step gone from Postgres', async () => !(added in (await inPostgres(B)).steps))
    await eventually('the new step gone from the other pages', async () => (await step(ada.page, added).count()) === 0 && (await step(grace.page, added).count()) === 0)
    assert.deepEqual(page.errors.filter((e) => !expectedErrors.test(e)), [], 'no errors in the page')
  } finally {
    await small.context.close()
  }
})

test('a sign-in the server refuses shows its message as words (not its JSON), with a retry', async () => {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } })
  const page = await context.newPage()
  try {
    const refuse = (status, message) => (route) =>
      route.fulfill({ status, contentType: 'application/json', headers: { 'retry-after': '5' }, body: JSON.stringify({ code: 'database_unreachable', message }) })
    const error = page.locator('main.sign-in .error')
    const retry = page.getByRole('button', { name: 'Try again' })
    const noJson = async () => assert.doesNotMatch(await page.locator('main').innerText(), /[{}"]|database_unreachable/)

    // The users cannot be listed.
    await page.route('**/dev/users', refuse(503, 'Database is unreachable, please retry'))
    await page.goto(`${EDITOR_URL}/`)
    assert.equal(await error.innerText(), 'Could not list the users: Database is unreachable, please retry')
    await noJson()
    await page.unroute('**/dev/users')
    await retry.click()
    await page.locator(`[data-testid=user-option][data-user-id="${USERS.ada}"]`).waitFor()
    assert.equal(await error.count(), 0)

    // No token is issued for the person picked: the sign-in stays, with the reason.
    await page.route('**/dev/token', refuse(503, 'Database is unreachable, please retry'))
    await page.locator(`[data-testid=user-option][data-user-id="${USERS.ada}"]`).click()
    assert.equal(await error.innerText(), 'Could not sign in as Ada Lovelace: Database is unreachable, please retry')
    await noJson()
    await page.unroute('**/dev/token')
    await page.route('**/dev/token', refuse(404, `no user with id ${USERS.ada}`))
    await retry.click()
    assert.equal(await error.innerText(), `Could not sign in as Ada Lovelace: no user with id ${USERS.ada}`)
    await noJson()
    assert.equal(await page.locator('[data-testid=me]').count(), 0, 'not signed in')
    await screenshot(page, 'sign-in-refused')
    await page.unroute('**/dev/token')
    await retry.click()
    await page.locator(`[data-testid=me][data-user-id="${USERS.ada}"]`).waitFor()
  } finally {
    await context.close()
  }
})

/** Linus and a second device of Grace's (her first is in another pipeline) in the Nightly ETL,
 *  Grace with its first step selected; `check` gets Grace's page and Linus's view of her. */
async function graceAndLinusInEtl(check) {
  const linus = await signedIn(browser, USERS.linus)
  const other = await signedIn(browser, USERS.grace)
  try {
    await openPipeline(linus.page, PIPELINES.etl)
    await openPipeline(other.page, PIPELINES.etl)
    const avatar = linus.page.locator(`[data-testid=presence-avatar][data-user-id="${USERS.grace}"]`)
    const outline = () => step(linus.page, EXTRACT).getAttribute('data-selected-by')
    await select(other.page, EXTRACT)
    await avatar.waitFor()
    await eventually('Grace\'s selection to show', async () => (await outline()).split(',').includes(USERS.grace))
    await check(other.page, avatar, outline)
    assert.deepEqual(linus.page.errors.filter((e) => !expectedErrors.test(e)), [], 'no errors in the page')
  } finally {
    await linus.context.close()
    await other.context.close()
  }
}

test('a closed tab leaves the pipeline at once: the others stop showing it well within the presence TTL', async () => {
  await graceAndLinusInEtl(async (grace, avatar, outline) => {
    // Gone for Linus at once, not after the server's 30 s TTL: avatar and outline.
    const closed = Date.now()
    await grace.close()
    await avatar.waitFor({ state: 'detached', timeout: 5_000 })
    await eventually('Grace\'s outline to go', async () => (await outline()) === '', 5_000)
    assert.ok(Date.now() - closed < 5_000, `left after ${Date.now() - closed} ms`)
  })
})

test('a page put in the back/forward cache leaves the pipeline, and joins again when it is shown', async () => {
  await graceAndLinusInEtl(async (grace, avatar, outline) => {
    // (Playwright's Chromium runs without that cache: its events are dispatched here.)
    await grace.evaluate(() => window.dispatchEvent(new PageTransitionEvent('pagehide', { persisted: true })))
    await avatar.waitFor({ state: 'detached', timeout: 5_000 })
    assert.equal(await outline(), '')
    await grace.evaluate(() => window.dispatchEvent(new PageTransitionEvent('pageshow', { persisted: true })))
    await avatar.waitFor({ timeout: 5_000 })
    await eventually('Grace\'s selection to show again', async () => (await outline()).split(',').includes(USERS.grace), 5_000)
  })
})

test('two users on one pipeline see each other\'s edits, cursors and selections live', async () => {
  await waitForSync(ada.page, 'synced', 'All changes saved')
  const added = await addStep(ada.page)
  await step(grace.page, added).waitFor()
  await rename(grace.page, added, 'Lint')
  await eventually('Ada to see the rename', async () => (await step(ada.page, added).locator('.step-name').innerText()) === 'Lint')

  // Grace hovers over the canvas: Ada sees her cursor where it is, and which step she has selected.
  const canvas = await grace.page.locator('[data-testid=canvas]').boundingBox()
  await grace.page.mouse.move(canvas.x + 420, canvas.y + 360, { steps: 5 })
  const cursor = ada.page.locator(`[data-testid=remote-cursor][data-user-id="${USERS.grace}"]`)
  await cursor.waitFor()
  await eventually('the cursor to land', async () => Math.abs(parseFloat(await cursor.evaluate((e) => e.style.left)) - 420) <= 2)
  await eventually('Grace\'s selection to show', async () => (await step(ada.page, added).getAttribute('data-selected-by')) === USERS.grace)
  assert.equal(await ada.page.locator(`[data-testid=presence-avatar][data-user-id="${USERS.grace}"]`).count(), 1)
  // And the other way round.
  const adaCanvas = await ada.page.locator('[data-testid=canvas]').boundingBox()
  await ada.page.mouse.move(adaCanvas.x + 700, adaCanvas.y + 420, { steps: 5 })
  await grace.page.locator(`[data-testid=remote-cursor][data-user-id="${USERS.ada}"]`).waitFor()
  await screenshot(ada.page, 'online-ada-sees-grace')
  await screenshot(grace.page, 'cursors-grace-sees-ada')

  // Moving, connecting by dragging a port, commenting on a step: all live on the other side.
  const movedFrom = (await shownSteps(ada.page))[added]
  await dragStep(ada.page, added, 0, 120)
  // (The move settles first — stored, sent and back — so the canvas holds still for the drag.)
  await eventually('the move in Postgres', async () => (await inPostgres(B)).steps[added]?.y > movedFrom.y)
  await waitForSync(ada.page, 'synced', 'All changes saved')
  await step(ada.page, STEP.test).scrollIntoViewIfNeeded()
  const portBox = await step(ada.page, STEP.test).locator('[data-testid=step-port]').boundingBox()
  const targetBox = await step(ada.page, added).boundingBox()
  await ada.page.mouse.move(portBox.x + 7, portBox.y + 7)
  await ada.page.mouse.down()
  await ada.page.mouse.move(targetBox.x + 80, targetBox.y + 30, { steps: 6 })
  await ada.page.mouse.up()
  await select(ada.page, added)
  await ada.page.locator('[data-testid=comment-input]').fill('Lint before we build?')
  await ada.page.locator('[data-testid=comment-submit]').click()
  await select(grace.page, added)
  await grace.page.locator('[data-testid=comment-body]', { hasText: 'Lint before we build?' }).waitFor()
  assert.equal(await grace.page.locator('[data-testid=comment-author]').first().innerText(), 'Ada Lovelace')
  const pgState = await allAgree(B, [ada.page, grace.page])
  assert.ok(pgState.connections.includes(`${STEP.test}>${added}`), 'the dragged connection reached Postgres')
  await waitForSync(ada.page, 'synced', 'All changes saved')
})

test('offline: steps added, moved, connected and commented stay through a reload, then sync', async () => {
  const before = await inPostgres(B)
  await goOffline(grace)
  const add = () => addStep(grace.page)
  const first = await add()
  await rename(grace.page, first, 'Package')
  const second = await add()
  await dragStep(grace.page, STEP.checkout, 40, 60)
  await select(grace.page, first)
  await grace.page.locator('[data-testid=connect-target]').selectOption(second)
  await grace.page.locator('[data-testid=connect-button]').click()
  await grace.page.locator('[data-testid=canvas] .surface').click({ position: { x: 20, y: 20 } })
  await grace.page.locator('[data-testid=comment-input]').fill('Written on a plane')
  await grace.page.locator('[data-testid=comment-submit]').click()
  // add, rename, add, move, connect, comment: six transactions waiting.
  await waitForSync(grace.page, 'offline', '6 pending')
  assert.deepEqual(await syncStatus(grace.page), { state: 'offline', text: '☁ Working offline 6 pending' })
  await screenshot(grace.page, 'offline-with-pending')
  assert.equal(JSON.stringify(await inPostgres(B)), JSON.stringify(before), 'nothing reached Postgres')
  assert.equal(await step(ada.page, first).count(), 0, 'Ada does not see it yet')

  // A reload while still offline: the app shell comes from the service worker, the rows and the
  // queued writes from IndexedDB.
  const shownBefore = await shownSteps(grace.page)
  await grace.page.reload()
  await step(grace.page, first).waitFor()
  await waitForSync(grace.page, 'offline', '6 pending')
  assert.deepEqual(await shownSteps(grace.page), shownBefore)
  assert.ok((await shownConnections(grace.page)).includes(`${first}>${second}`))
  await grace.page.locator('[data-testid=comment-body]', { hasText: 'Written on a plane' }).waitFor()

  await goOnline(grace)
  const after = await allAgree(B, [ada.page, grace.page])
  assert.equal(after.steps[first].name, 'Package')
  assert.equal(after.steps[STEP.checkout].x, before.steps[STEP.checkout].x + 40)
  assert.ok(after.connections.includes(`${first}>${second}`))
  // A pipeline comment: Ada sees it with no step selected.
  await ada.page.locator('[data-testid=canvas] .surface').click({ position: { x: 20, y: 20 } })
  await ada.page.locator('[data-testid=comment-body]', { hasText: 'Written on a plane' }).waitFor()
  const { rows } = await db.query("SELECT u.name FROM comments c JOIN users u ON u.id = c.user_id WHERE body = 'Written on a plane'")
  assert.deepEqual(rows, [{ name: 'Grace Hopper' }])
})

test('the same step renamed on both sides, one offline: the later edit wins everywhere', async () => {
  // Grace (offline) renames first, Ada later: Ada's name wins although Grace's arrives last.
  await goOffline(grace)
  await rename(grace.page, STEP.build, 'Build (Grace, offline)')
  await new Promise((r) => setTimeout(r, 20))
  await rename(ada.page, STEP.build, 'Build (Ada, later)')
  await eventually('Ada\'s rename in Postgres', async () => (await inPostgres(B)).steps[STEP.build].name === 'Build (Ada, later)')
  await goOnline(grace)
  let state = await allAgree(B, [ada.page, grace.page])
  assert.equal(state.steps[STEP.build].name, 'Build (Ada, later)')

  // Now Ada renames first and Grace, offline, later: Grace's name wins when it arrives.
  await goOffline(grace)
  await rename(ada.page, STEP.build, 'Build (Ada, earlier)')
  await eventually('Ada\'s rename in Postgres', async () => (await inPostgres(B)).steps[STEP.build].name === 'Build (Ada, earlier)')
  await rename(grace.page, STEP.build, 'Build (Grace, later)')
  await goOnline(grace)
  state = await allAgree(B, [ada.page, grace.page])
  assert.equal(state.steps[STEP.build].name, 'Build (Grace, later)')
})

test('a step deleted by one user while the other (offline) moves it stays deleted (delete-wins)', async () => {
  await goOffline(grace)
  // Ada deletes first; Grace's move is stamped later, and still does not bring the step back.
  await select(ada.page, STEP.deploy)
  await ada.page.locator('[data-testid=delete-step]').click()
  await eventually('the delete in Postgres', async () => !(STEP.deploy in (await inPostgres(B)).steps))
  await dragStep(grace.page, STEP.deploy, 60, 80)
  await waitForSync(grace.page, 'offline', '1 pending')
  await goOnline(grace)
  const state = await allAgree(B, [ada.page, grace.page])
  assert.ok(!(STEP.deploy in state.steps))
  assert.ok(!state.connections.some((c) => c.includes(STEP.deploy)), 'its connections went with it')
  // Grace is told, in words, and offered nothing to re-apply (the delete wins).
  const notice = grace.page.locator('[data-testid=conflict]').filter({ hasText: 'deleted' })
  await notice.waitFor({ timeout: 10_000 })
  assert.match(await notice.innerText(), /The step you edited offline was deleted by someone else meanwhile; your move of this step was not kept/)
  assert.equal(await notice.locator('[data-testid=use-mine]').isVisible(), false)
})

test('invalid step config is refused with a message; a valid one is saved', async () => {
  await select(ada.page, STEP.test)
  const config = ada.page.locator('[data-testid=step-config-input]')
  await config.fill('{"run": "cargo test", }')
  await ada.page.locator('[data-testid=save-config]').click()
  assert.match(await ada.page.locator('[data-testid=config-error]').innerText(), /Config is not valid JSON/)
  await config.fill('["not", "an", "object"]')
  await ada.page.locator('[data-testid=save-config]').click()
  assert.match(await ada.page.locator('[data-testid=config-error]').innerText(), /must be a JSON object/)
  await config.fill('{"run": "cargo nextest run", "shards": 4}')
  await ada.page.locator('[data-testid=save-config]').click()
  assert.equal(await ada.page.locator('[data-testid=config-error]').count(), 1)
  assert.equal(await ada.page.locator('[data-testid=config-error]').innerText(), '')
  await eventually('the config in Postgres', async () => {
    const { rows } = await db.query('SELECT config FROM steps WHERE id = $1', [STEP.test])
    return rows[0].config.shards === 4 && rows[0].config.run === 'cargo nextest run'
  })
  await select(grace.page, STEP.test)
  await eventually('Grace to see the config', async () => JSON.parse(await grace.page.locator('[data-testid=step-config-input]').inputValue()).shards === 4)
})

test('versions: save the pipeline as the next version, restore an earlier one everywhere', async () => {
  await ada.page.locator('[data-testid=save-version]').click()
  await grace.page.locator('[data-testid=version][data-version="2"]').waitFor()
  const saved = await inPostgres(B)
  const { rows } = await db.query('SELECT snapshot FROM pipeline_versions WHERE pipeline_id = $1 AND version_number = 2', [B])
  assert.equal(rows[0].snapshot.steps.length, Object.keys(saved.steps).length)
  // Restore version 1 (Checkout → Build → Test, as seeded).
  await grace.page.locator('[data-testid=version][data-version="1"] [data-testid=restore-version]').click()
  const state = await allAgree(B, [ada.page, grace.page])
  assert.deepEqual(Object.keys(state.steps).sort(), [STEP.checkout, STEP.build, STEP.test].sort())
  assert.deepEqual(state.connections, [`${STEP.checkout}>${STEP.build}`, `${STEP.build}>${STEP.test}`].sort())
  assert.equal(state.steps[STEP.build].name, 'Build')
  // And back to version 2: the steps deleted by the restore come back.
  await ada.page.locator('[data-testid=version][data-version="2"] [data-testid=restore-version]').click()
  const back = await allAgree(B, [ada.page, grace.page])
  assert.deepEqual(Object.keys(back.steps).sort(), Object.keys(saved.steps).sort())
})

test('a server error shows "Sync error" with Retry, which sends at once', async () => {
  // The server fails the write path (as when Postgres is unreachable), asking for 30 s.
  let failing = true
  await ada.page.route('**/v1/transactions', (route) =>
    failing
      ? route.fulfill({ status: 503, headers: { 'retry-after': '30', 'content-type': 'application/json' }, body: '{"code":"database_unreachable","message":"Database is unreachable, please retry"}' })
      : route.continue(),
  )
  await rename(ada.page, STEP.checkout, 'Checkout (retry)')
  await waitForSync(ada.page, 'error', 'Sync error')
  assert.match((await syncStatus(ada.page)).text, /Sync error 1 pending retrying in \d+ s Retry/)
  failing = false
  const clicked = Date.now()
  await ada.page.locator('[data-testid=sync-retry]').click()
  await waitForSync(ada.page, 'synced', 'All changes saved')
  assert.ok(Date.now() - clicked < 10_000, 'Retry did not wait for the 30 s')
  await ada.page.unroute('**/v1/transactions')
  await eventually('the rename in Postgres', async () => (await inPostgres(B)).steps[STEP.checkout].name === 'Checkout (retry)')
})

test('the list holds the pipelines of the user\'s teams; a type change and a removed connection reach everyone', async () => {
  const DOCS = PIPELINES.docs
  const RENDER = '00000000-0000-4000-8000-0000000000c7'
  const PUBLISH = '00000000-0000-4000-8000-0000000000c8'
  // Ada is in Platform; Grace in Platform and (as a viewer) in Data.
  for (const [who, want] of [[ada, [PIPELINES.build, DOCS]], [grace, [PIPELINES.build, PIPELINES.etl, DOCS]]]) {
    await who.page.locator('[data-testid=back]').click()
    await who.page.locator('[data-testid=pipeline-link]').first().waitFor()
    const shown = await who.page.$$eval('[data-testid=pipeline-link]', (els) => els.map((e) => e.dataset.pipelineId).sort())
    assert.deepEqual(shown, [...want].sort())
    await openPipeline(who.page, DOCS)
  }
  await select(ada.page, RENDER)
  const type = ada.page.locator('[data-testid=step-type-input]')
  await type.fill('python')
  await type.press('Tab')
  await ada.page.locator('[data-testid=step-connection]').first().waitFor()
  await ada.page.locator('[data-testid=remove-connection]').first().click()
  await eventually('the type and the removed connection in Postgres', async () => {
    const { rows } = await db.query('SELECT type FROM steps WHERE id = $1', [RENDER])
    const conns = (await inPostgres(DOCS)).connections
    return rows[0].type === 'python' && !conns.includes(`${RENDER}>${PUBLISH}`)
  })
  await eventually('Grace to see both', async () =>
    (await step(grace.page, RENDER).innerText()).includes('python') && !(await shownConnections(grace.page)).includes(`${RENDER}>${PUBLISH}`))
  await allAgree(DOCS, [ada.page, grace.page])
  for (const who of [ada, grace]) {
    await who.page.locator('[data-testid=back]').click()
    await openPipeline(who.page, B)
  }
})

test('a write the server rejects (the user left the team while offline) rolls back with a message', async () => {
  await goOffline(grace)
  const doomed = await addStep(grace.page)
  await waitForSync(grace.page, 'offline', '1 pending')
  // Meanwhile Grace is removed from the team (her token stays valid: the rules read team_members).
  await db.query('DELETE FROM team_members WHERE team_id = $1 AND user_id = $2', [TEAMS.platform, USERS.grace])
  try {
    await grace.context.setOffline(false)
    const toast = grace.page.locator('[data-testid=toast]')
    await toast.waitFor({ timeout: 20_000 })
    assert.match(await toast.innerText(), /not saved: you no longer have access to this pipeline/)
    await eventually('the step to be rolled back', async () => (await step(grace.page, doomed).count()) === 0)
    const { rows } = await db.query('SELECT count(*)::int AS n FROM steps WHERE id = $1', [doomed])
    assert.equal(rows[0].n, 0)
    // The pipeline itself is no longer hers to see.
    await grace.page.locator('[data-testid=pipeline-missing]').waitFor({ timeout: 20_000 })
    await waitForSync(grace.page, 'synced', 'All changes saved')
  } finally {
    await db.query("INSERT INTO team_members (team_id, user_id, role) VALUES ($1, $2, 'editor') ON CONFLICT DO NOTHING", [TEAMS.platform, USERS.grace])
  }
})

/**
 * A write sent straight to the server with `userId`'s token, as a crafted request would be
 * (not through the editor, whose controls a viewer does not have). Its result.
 */
async function craftedWrite(page, userId, mutations) {
  return page.evaluate(async ({ userId, mutations }) => {
    const { token } = await (await fetch('/dev/token', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ user_id: userId }) })).json()
    const r = await fetch('/v1/transactions', {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
      body: JSON.stringify({ client_id: `crafted-${crypto.randomUUID()}`, transactions: [{ id: 1, hlc: `${Date.now() + 1000}-0`, mutations }] }),
    })
    return (await r.json()).results[0]
  }, { userId, mutations })
}

const member = (page, userId) => page.locator(`[data-testid=member][data-user-id="${userId}"]`)

test('the owner removes an editor who has the pipeline open: it goes with a message, her attempts change nothing, and added back she sees it again', async () => {
  // (The previous test removed and re-added Grace: her editor shows the pipeline again.)
  await step(grace.page, STEP.checkout).waitFor({ timeout: 20_000 })
  await waitForSync(grace.page, 'synced', 'All changes saved')
  // Only the owner has the controls.
  assert.equal(await grace.page.locator('[data-testid=remove-member]').count(), 0, 'an editor does not manage members')
  await member(ada.page, USERS.grace).locator('[data-testid=remove-member]').click()
  const gone = grace.page.locator('[data-testid=pipeline-missing][data-reason=removed]')
  await gone.waitFor({ timeout: 10_000 })
  assert.match(await gone.innerText(), /no longer have access to “Build & deploy”/)
  assert.equal(await step(grace.page, STEP.checkout).count(), 0, 'nothing of it stays on her screen')
  const before = await inPostgres(B)
  const r = await craftedWrite(grace.page, USERS.grace, [{ op: 'update', table: 'steps', key: { id: STEP.checkout }, value: { name: 'hijacked' } }])
  assert.equal(r.status, 'rejected')
  assert.equal(r.error.code, 'forbidden')
  assert.deepEqual(await inPostgres(B), before, 'Postgres unchanged by her attempts')
  // Added back from the members panel: the pipeline appears in her open editor.
  await ada.page.locator('[data-testid=add-member-user]').selectOption(USERS.grace)
  await ada.page.locator('[data-testid=add-member-role]').selectOption('editor')
  await ada.page.locator('[data-testid=add-member]').click()
  await step(grace.page, STEP.checkout).waitFor({ timeout: 10_000 })
  await member(grace.page, USERS.grace).waitFor()
  assert.equal(await member(grace.page, USERS.grace).getAttribute('data-role'), 'editor')
})

test('a viewer sees the pipeline read-only and a crafted write is refused; made an editor again, she edits', async () => {
  await member(ada.page, USERS.grace).locator('[data-testid=member-role]').selectOption('viewer')
  await grace.page.locator('[data-testid=read-only]').waitFor({ state: 'visible', timeout: 10_000 })
  assert.equal(await grace.page.locator('[data-testid=add-step]').isVisible(), false, 'no add-step button')
  await select(grace.page, STEP.build)
  assert.equal(await grace.page.locator('[data-testid=step-name-input]').count(), 0, 'no inputs in the inspector')
  assert.equal(await grace.page.locator('[data-testid=comment-input]').isVisible(), false, 'no comment box')
  assert.equal(await grace.page.locator('[data-testid=save-version]').isVisible(), false)
  assert.equal(await grace.page.locator('[data-testid=restore-version]').count(), 0)
  assert.equal(await grace.page.locator('[data-testid=step-port]').first().isVisible(), false, 'no ports to connect')
  // Dragging does not move the step.
  const at = (await shownSteps(grace.page))[STEP.build]
  await dragStep(grace.page, STEP.build, 120, 60)
  assert.deepEqual((await shownSteps(grace.page))[STEP.build], at)
  const before = await inPostgres(B)
  const r = await craftedWrite(grace.page, USERS.grace, [{ op: 'update', table: 'steps', key: { id: STEP.build }, value: { name: 'viewer edit' } }])
  assert.equal(r.error?.code, 'forbidden', JSON.stringify(r))
  assert.deepEqual(await inPostgres(B), before)

  await member(ada.page, USERS.grace).locator('[data-testid=member-role]').selectOption('editor')
  await grace.page.locator('[data-testid=read-only]').waitFor({ state: 'hidden', timeout: 10_000 })
  await rename(grace.page, STEP.build, 'Build (editor again)')
  await eventually('her rename in Postgres', async () => (await inPostgres(B)).steps[STEP.build].name === 'Build (editor again)')
})

test('the versions panel shows the last 10 of the last 30 days, newest first; the 11th appears when one is deleted', async () => {
  await db.query(`INSERT INTO pipeline_versions (pipeline_id, version_number, snapshot, created_by, created_at)
    SELECT $1, 200 + i, '{"steps": [], "connections": []}', $2, now() - make_interval(hours => i) FROM generate_series(1, 12) i`, [B, USERS.ada])
  await db.query(`INSERT INTO pipeline_versions (pipeline_id, version_number, snapshot, created_by, created_at)
    VALUES ($1, 199, '{"steps": [], "connections": []}', $2, now() - interval '40 days')`, [B, USERS.ada])
  const expected = async () => (await db.query(`SELECT version_number FROM pipeline_versions WHERE pipeline_id = $1
    AND created_at > now() - interval '30 days' ORDER BY created_at DESC LIMIT 10`, [B])).rows.map((r) => String(r.version_number))
  const shown = (page) => page.$$eval('[data-testid=version]', (els) => els.map((e) => e.dataset.version))
  let want = await expected()
  assert.equal(want.length, 10)
  await eventually('the last 10 versions', async () => JSON.stringify(await shown(grace.page)) === JSON.stringify(want) || { shown: await shown(grace.page), want })
  assert.ok(!want.includes('199'), 'older than 30 days: not listed')
  await db.query('DELETE FROM pipeline_versions WHERE pipeline_id = $1 AND version_number = $2', [B, Number(want[0])])
  want = await expected()
  assert.equal(want.length, 10, 'the 11th moves up')
  for (const page of [grace.page, ada.page]) {
    await eventually('the 11th to appear', async () => JSON.stringify(await shown(page)) === JSON.stringify(want) || { shown: await shown(page), want })
  }
  await db.query('DELETE FROM pipeline_versions WHERE pipeline_id = $1 AND version_number >= 199', [B])
})

test('an offline rename that loses shows the conflict in words, and "Use mine" makes it win everywhere', async () => {
  // (Deploy went with the restore of version 1 above: Checkout is still there.)
  await goOffline(grace)
  await rename(grace.page, STEP.checkout, 'Ship it')
  await waitForSync(grace.page, 'offline', '1 pending')
  // Ada renames it after Grace did (her edit is the newer one).
  await rename(ada.page, STEP.checkout, 'Release')
  await eventually('Ada\'s rename in Postgres', async () => (await inPostgres(B)).steps[STEP.checkout].name === 'Release')
  await goOnline(grace)
  // (Earlier tests' losing edits left notices of their own: this one names her value.)
  const notice = grace.page.locator('[data-testid=conflict]').filter({ hasText: 'Ship it' })
  await notice.waitFor({ timeout: 20_000 })
  await eventually('the notice to name both values', async () => {
    const text = await notice.locator('[data-testid=conflict-text]').innerText()
    return (/“Release”/.test(text) && /“Ship it”/.test(text) && /not kept/.test(text)) || text
  })
  await eventually('Grace to see the winner', async () => (await step(grace.page, STEP.checkout).locator('.step-name').innerText()) === 'Release')
  await notice.locator('[data-testid=use-mine]').click()
  await eventually('hers to win in Postgres', async () => (await inPostgres(B)).steps[STEP.checkout].name === 'Ship it')
  for (const page of [ada.page, grace.page]) {
    await eventually('everyone to see hers', async () => (await step(page, STEP.checkout).locator('.step-name').innerText()) === 'Ship it')
  }
  assert.equal(await notice.count(), 0, 'the notice is gone')
})

test('two tabs and the pipeline list stay live at once, and a write is confirmed in under a second', async () => {
  // A second and third tab of Grace's browser (same device: same connection budget of six).
  const tab2 = await grace.context.newPage()
  const list = await grace.context.newPage()
  try {
    await tab2.goto(`${EDITOR_URL}/#/p/${PIPELINES.docs}`)
    await tab2.locator('[data-testid=step]').first().waitFor()
    await list.goto(`${EDITOR_URL}/#/`)
    await list.locator('[data-testid=pipeline-link]').first().waitFor()
    // Everything live in all three: changes made in Postgres show up in each.
    await db.query("UPDATE steps SET name = 'Checkout (live)' WHERE id = $1", [STEP.checkout])
    await db.query("UPDATE steps SET name = 'Render (live)' WHERE id = '00000000-0000-4000-8000-0000000000c7'")
    await db.query("UPDATE pipelines SET name = 'Docs site (live)' WHERE id = $1", [PIPELINES.docs])
    await eventually('tab 1 live', async () => (await step(grace.page, STEP.checkout).locator('.step-name').innerText()) === 'Checkout (live)', 10_000)
    await eventually('tab 2 live', async () => (await tab2.locator('[data-testid=step][data-step-id="00000000-0000-4000-8000-0000000000c7"] .step-name').innerText()) === 'Render (live)', 10_000)
    await eventually('the list live', async () => (await list.locator(`[data-testid=pipeline-link][data-pipeline-id="${PIPELINES.docs}"]`).innerText()).includes('Docs site (live)'), 10_000)
    // A write from the first tab, with all of them holding their live requests. Timed in the
    // page, from the local write to "All changes saved" (the server applied it and the shapes
    // brought it back); the test's own polling would add its interval.
    await grace.page.bringToFront()
    await waitForSync(grace.page, 'synced', 'All changes saved')
    await select(grace.page, STEP.test)
    const confirmed = grace.page.evaluate(() => new Promise((resolve) => {
      let wrote
      const client = window.editor.client
      const offChange = client.on('status', (s) => {
        if (s.pending > 0 && wrote === undefined) wrote = performance.now()
        if (s.state === 'synced' && wrote !== undefined) {
          offChange()
          resolve(performance.now() - wrote)
        }
      })
    }))
    const input = grace.page.locator('[data-testid=step-name-input]')
    await input.fill('Test (fast)')
    await input.press('Enter')
    const ms = await confirmed
    assert.equal((await inPostgres(B)).steps[STEP.test].name, 'Test (fast)')
    assert.ok(ms < 1000, `confirmed after ${Math.round(ms)} ms`)
  } finally {
    await db.query("UPDATE pipelines SET name = 'Docs site' WHERE id = $1", [PIPELINES.docs])
    await tab2.close()
    await list.close()
  }
})

test('a step\'s history shows who changed what, old → new and the outcome, live — to a team owner (admin) only', async () => {
  // Ada owns the Platform team, so her dev token says `role: "admin"`: the audit trail's read
  // rule lets her read it. The test before renamed Test as Grace.
  await select(ada.page, STEP.test)
  const history = ada.page.locator('[data-testid=history]')
  await history.locator('[data-testid=history-button]').click()
  const entries = history.locator('[data-testid=history-entry]')
  await eventually('Grace\'s rename in the history', async () => {
    const texts = await entries.allInnerTexts()
    return texts.some((t) => t.includes('Grace Hopper') && t.includes('changed it') && /name: “[^”]*” → “Test \(fast\)”/.test(t)) || texts
  })
  // Ada renames it: her change comes first, live, with the old and new name, applied.
  await rename(ada.page, STEP.test, 'Test (audited)')
  await eventually('Ada\'s rename at the top of the history', async () => {
    const first = await entries.first().innerText()
    return (first.includes('Ada Lovelace') && first.includes('name: “Test (fast)” → “Test (audited)”') && first.includes('applied')) || first
  })
  assert.equal(await entries.first().getAttribute('data-outcome'), 'applied')
  await screenshot(ada.page, 'step-history')
  // Grace edits the team's pipelines but owns no team: the server refuses her the trail, in words.
  await select(grace.page, STEP.test)
  await grace.page.locator('[data-testid=history-button]').click()
  await eventually('the refusal', async () => {
    const text = await grace.page.locator('[data-testid=history-status]').innerText()
    return text.includes('Only administrators') || text
  })
  assert.equal(await grace.page.locator('[data-testid=history-entry]').count(), 0)
})
