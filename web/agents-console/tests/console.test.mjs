// The agents console in headless Chromium against a real `ferrite dev --example agents-console`
// (its Postgres, its dev sign-in, its agent runner): field-level merge of tasks, server-owned
// runs, importance-based memory, admin-only workflows, live events, local retention, the status
// components through an outage, and a reload while offline. Two browser contexts signed in as
// the same person are two devices with their own local databases; the tests share one server
// and run in order.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { launch, database, eventually, screenshot, EDITOR_URL as CONSOLE_URL } from '../../editor/tests/harness.mjs'

const ADA = '00000000-0000-4000-8000-0000000000a1' // admin
const GRACE = '00000000-0000-4000-8000-0000000000a2' // member
const RECENT_RUN = '00000000-0000-4000-8000-000000000d01'
const OLD_RUN = '00000000-0000-4000-8000-000000000d02'
const RELEASE = '00000000-0000-4000-8000-000000000101'
/** Page errors that are no fault of the page (requests that failed, on purpose or offline). */
const expectedErrors = /Failed to load resource|ERR_INTERNET_DISCONNECTED/

let browser, db
/** Ada on two devices, Grace on one. */
let laptop, phone, grace

/** A new device (browser context) with `user` signed in through the console's sign-in. */
async function signedIn(user) {
  const context = await browser.newContext({ viewport: { width: 1360, height: 860 } })
  const page = await context.newPage()
  page.errors = []
  page.on('pageerror', (e) => page.errors.push(`pageerror: ${e.stack ?? e.message}`))
  page.on('console', (m) => {
    if (m.type() === 'error') page.errors.push(`console: ${m.text()}`)
  })
  await page.goto(`${CONSOLE_URL}/`)
  await page.locator(`[data-testid=signin-user][data-user-id="${user}"]`).click()
  await page.waitForFunction(() => document.documentElement.dataset.ready === 'true', null, { timeout: 20_000 })
  await page.waitForFunction(() => document.documentElement.dataset.sw === 'ready')
  return { context, page }
}

before(async () => {
  browser = await launch()
  db = await database()
  laptop = await signedIn(ADA)
  phone = await signedIn(ADA)
  grace = await signedIn(GRACE)
})

after(async () => {
  for (const who of [laptop, phone, grace]) if (who) assert.deepEqual(who.page.errors.filter((e) => !expectedErrors.test(e)), [], 'no errors in the page')
  await browser?.close()
  await db?.end()
})

const tab = (page, name) => page.locator(`[data-tab=${name}]`).click()
const row = (page, kind, id) => page.locator(`[data-testid=${kind}][data-id="${id}"]`)
const notices = (page, kind, table) => page.locator(`[data-testid=notice][data-kind=${kind}][data-table=${table}]`)

/** The sync button's state (the @ferrite/react SyncButton: synced / syncing / offline / error). */
const syncState = (page) => page.locator('.ferrite-sync').getAttribute('data-state')

async function goOffline(who) {
  await who.context.setOffline(true)
  await eventually('the console to say it is offline', async () => (await syncState(who.page)) === 'offline')
}

async function goOnline(who) {
  await who.context.setOffline(false)
  // Retry now rather than after the backoff.
  await who.page.locator('.ferrite-sync').click()
  await eventually('the console to be synced', async () => (await syncState(who.page)) === 'synced')
}

/** Types into an input that commits on Enter (or blur). */
async function edit(locator, value) {
  await locator.fill(String(value))
  await locator.press('Enter')
}

async function pg(sql, params = []) {
  return (await db.query(sql, params)).rows
}

test('two devices edit one task offline: field-level merge, the later edit of a field wins, the loser is told', async () => {
  const id = randomUUID()
  await pg(`INSERT INTO tasks (id, owner_id, title, status, priority) VALUES ($1, $2, 'Write the quarterly report', 'failed', 2)`, [id, ADA])
  for (const d of [laptop, phone]) {
    await tab(d.page, 'tasks')
    await row(d.page, 'task', id).waitFor()
  }
  await goOffline(laptop)
  await goOffline(phone)
  // The phone first: priority 7, and it completes the task.
  await edit(row(phone.page, 'task', id).locator('[data-field=priority]'), 7)
  await row(phone.page, 'task', id).locator('[data-action=complete]').click()
  // Later, the laptop: a new title and priority 4.
  await edit(row(laptop.page, 'task', id).locator('[data-field=title]'), 'Quarterly report (draft)')
  await edit(row(laptop.page, 'task', id).locator('[data-field=priority]'), 4)
  await eventually('both edits to be pending', async () => (await laptop.page.locator('.ferrite-offline').getAttribute('data-pending')) === '2')
  // The laptop's edits reach the server first, the phone's (older) after.
  await goOnline(laptop)
  await goOnline(phone)
  const want = { title: 'Quarterly report (draft)', status: 'done', priority: 4 }
  await eventually('Postgres to hold the merge', async () => {
    const [t] = await pg('SELECT title, status, priority FROM tasks WHERE id = $1', [id])
    return JSON.stringify(t) === JSON.stringify(want) || t
  })
  for (const d of [laptop, phone]) {
    await eventually('every device to show the merge', async () => {
      const r = row(d.page, 'task', id)
      const shown = {
        title: await r.locator('[data-field=title]').inputValue(),
        status: await r.getAttribute('data-status'),
        priority: Number(await r.locator('[data-field=priority]').inputValue()),
      }
      return JSON.stringify(shown) === JSON.stringify(want) || shown
    })
  }
  // The phone's priority lost to the laptop's later one: the phone says so, the laptop does not.
  await notices(phone.page, 'merged', 'tasks').filter({ hasText: /priority/i }).first().waitFor()
  assert.equal(await notices(laptop.page, 'merged', 'tasks').count(), 0)
  await screenshot(phone.page, 'agents-console-tasks')
})

test('one active environment per user: activating one on a device deactivates the other everywhere', async () => {
  const [local, staging] = ['00000000-0000-4000-8000-0000000000e1', '00000000-0000-4000-8000-0000000000e2']
  for (const d of [laptop, phone]) await tab(d.page, 'environments')
  assert.equal(await row(phone.page, 'environment', local).getAttribute('data-active'), 'true')
  await row(laptop.page, 'environment', staging).locator('[data-action=activate]').click()
  await eventually('Postgres to have Staging alone active', async () => {
    const active = (await pg('SELECT id FROM environments WHERE owner_id = $1 AND is_active', [ADA])).map((r) => r.id)
    return JSON.stringify(active) === JSON.stringify([staging]) || active
  })
  await eventually('the other device to follow', async () =>
    (await row(phone.page, 'environment', staging).getAttribute('data-active')) === 'true' &&
    (await row(phone.page, 'environment', local).getAttribute('data-active')) === 'false')
  // A new environment: added, not active (one already is).
  await laptop.page.locator('[data-testid=new-environment-name]').fill('GPU box')
  await laptop.page.locator('[data-testid=add-environment]').click()
  await eventually('the new environment to reach Postgres, inactive', async () =>
    (await pg(`SELECT is_active FROM environments WHERE owner_id = $1 AND name = 'GPU box'`, [ADA]))[0]?.is_active === false)
})

test('a task runs: its events stream live; cancelling a run the runner has finished leaves the server’s status, and the console says why', async () => {
  const page = laptop.page
  await tab(page, 'tasks')
  await page.locator('[data-testid=new-task-title]').fill('Summarise the design review')
  await page.locator('[data-testid=add-task]').click()
  let taskId
  await eventually('the task to reach Postgres', async () => {
    const rows = await pg(`SELECT id FROM tasks WHERE owner_id = $1 AND title = 'Summarise the design review'`, [ADA])
    taskId = rows[0]?.id
    return rows.length === 1 || rows.length
  })
  // The runner picks it up: an execution, running, whose events arrive one by one.
  let runId
  await eventually('the runner to start it', async () => {
    runId = (await pg('SELECT id FROM agent_executions WHERE task_id = $1', [taskId]))[0]?.id
    return Boolean(runId)
  })
  await tab(page, 'executions')
  await row(page, 'execution', runId).click()
  const detail = page.locator(`[data-testid=execution-detail][data-id="${runId}"]`)
  await detail.waitFor()
  const seen = new Set()
  await eventually('the run to finish', async () => {
    const [{ status }] = await pg('SELECT status FROM agent_executions WHERE id = $1', [runId])
    const shown = await detail.locator('[data-testid=event]').count()
    if (status === 'running') seen.add(shown)
    return status === 'succeeded'
  })
  assert.ok(seen.size >= 3, `the event list grew while the task ran (counts seen: ${[...seen]})`)
  await eventually('every event and the final status to show', async () => {
    const [{ n }] = await pg('SELECT count(*)::int AS n FROM observability_events WHERE execution_id = $1', [runId])
    return (await detail.locator('[data-testid=event]').count()) === n && (await row(page, 'execution', runId).getAttribute('data-status')) === 'succeeded'
  })
  await screenshot(page, 'agents-console-execution')

  // Another run, watched while it runs; the laptop goes offline, the runner finishes it, and
  // the laptop — still showing it running — cancels it.
  await tab(page, 'tasks')
  await page.locator('[data-testid=new-task-title]').fill('Draft the migration plan')
  await page.locator('[data-testid=add-task]').click()
  await tab(page, 'executions')
  let run2
  await eventually('the second run to show as running', async () => {
    run2 = (await pg(`SELECT e.id FROM agent_executions e JOIN tasks t ON t.id = e.task_id WHERE t.title = 'Draft the migration plan'`))[0]?.id
    return Boolean(run2) && (await row(page, 'execution', run2).getAttribute('data-status')) === 'running'
  })
  await goOffline(laptop)
  await eventually('the runner to finish it', async () => (await pg('SELECT status FROM agent_executions WHERE id = $1', [run2]))[0].status === 'succeeded')
  assert.equal(await row(page, 'execution', run2).getAttribute('data-status'), 'running', 'offline, the laptop still shows it running')
  await row(page, 'execution', run2).locator('[data-action=cancel]').click()
  assert.equal(await row(page, 'execution', run2).getAttribute('data-status'), 'cancelled', 'the cancel shows at once')
  await goOnline(laptop)
  await eventually('the server’s status to show again', async () => (await row(page, 'execution', run2).getAttribute('data-status')) === 'succeeded')
  const why = notices(page, 'rejected', 'agent_executions').first()
  await why.waitFor()
  assert.match(await why.innerText(), /succeeded/, 'the notice names the status the server kept')
  assert.equal((await pg('SELECT status FROM agent_executions WHERE id = $1', [run2]))[0].status, 'succeeded')
})

test('two devices raise a memory’s importance offline: the higher importance wins, even when it reached the server first', async () => {
  const [{ id }] = await pg(`SELECT id FROM agent_memory WHERE owner_id = $1 AND content LIKE 'The staging cluster%'`, [ADA])
  for (const d of [laptop, phone]) {
    await tab(d.page, 'memory')
    await row(d.page, 'memory', id).waitFor()
  }
  await goOffline(laptop)
  await goOffline(phone)
  await edit(row(phone.page, 'memory', id).locator('[data-field=importance]'), 9)
  await edit(row(laptop.page, 'memory', id).locator('[data-field=importance]'), 6)
  // The phone's 9 first, the laptop's (later) 6 after: 9 stays.
  await goOnline(phone)
  await goOnline(laptop)
  await eventually('both devices to show 9', async () => {
    for (const d of [laptop, phone]) if ((await row(d.page, 'memory', id).locator('[data-field=importance]').inputValue()) !== '9') return false
    return true
  })
  assert.equal((await pg('SELECT importance FROM agent_memory WHERE id = $1', [id]))[0].importance, 9)
  await notices(laptop.page, 'merged', 'agent_memory').first().waitFor()
})

test('workflows: a member cannot change one (no controls, and the server refuses a forced write); an admin can; runs create tasks', async () => {
  await tab(grace.page, 'workflows')
  await tab(laptop.page, 'workflows')
  await row(grace.page, 'workflow', RELEASE).waitFor()
  await grace.page.locator('[data-testid=admin-only]').waitFor()
  assert.equal(await grace.page.locator('[data-testid=workflow] [data-field=name]').count(), 0, 'no edit controls for a member')
  const before = (await pg('SELECT name FROM workflows WHERE id = $1', [RELEASE]))[0].name
  await grace.page.evaluate((id) => window.agentsConsole.client.transaction((tx) => tx.update('workflows', { id }, { name: 'Grace was here' })), RELEASE)
  await notices(grace.page, 'rejected', 'workflows').first().waitFor()
  assert.equal((await pg('SELECT name FROM workflows WHERE id = $1', [RELEASE]))[0].name, before, 'Postgres unchanged')
  await eventually('the rejected rename to be rolled back on the page', async () => !(await row(grace.page, 'workflow', RELEASE).innerText()).includes('Grace was here'))

  // The admin renames it: Postgres and the member see the new name.
  await edit(row(laptop.page, 'workflow', RELEASE).locator('[data-field=name]'), 'Release checklist v2')
  await eventually('Postgres to have the new name', async () => (await pg('SELECT name FROM workflows WHERE id = $1', [RELEASE]))[0].name === 'Release checklist v2')
  await eventually('the member to see it', async () => (await row(grace.page, 'workflow', RELEASE).innerText()).includes('Release checklist v2'))

  // The member runs it: the runner records the run and creates its tasks for her.
  await row(grace.page, 'workflow', RELEASE).locator('[data-action=run]').click()
  await eventually('the run to succeed on the page', async () => (await row(grace.page, 'workflow', RELEASE).locator('[data-testid=workflow-run][data-status=succeeded]').count()) === 1)
  const steps = await pg(`SELECT jsonb_array_length(definition->'steps') AS n FROM workflows WHERE id = $1`, [RELEASE])
  await tab(grace.page, 'tasks')
  await eventually('the workflow’s tasks to show in her list', async () => (await grace.page.locator('[data-testid=task]').filter({ hasText: /./ }).count()) >= steps[0].n + 1)
  await grace.page.locator('[data-testid=task] [data-field=title]').first().waitFor()
  const titles = await grace.page.locator('[data-testid=task] [data-field=title]').evaluateAll((els) => els.map((e) => e.value))
  assert.ok(titles.includes('Draft the release notes'), titles.join(', '))
})

test('local retention: old runs and events stay in Postgres but not on the device; rows leave the device as they age out', async () => {
  const page = laptop.page
  await tab(page, 'device')
  const count = (shape) => page.locator(`[data-testid=retention][data-shape=${shape}] [data-count]`).getAttribute('data-count').then(Number)
  // The 45-day-old run is in Postgres, not here; the device has exactly the last 30 days'.
  assert.equal((await pg('SELECT count(*)::int AS n FROM agent_executions WHERE id = $1', [OLD_RUN]))[0].n, 1)
  await eventually('the device to hold the last 30 days of runs', async () => {
    const [{ n }] = await pg(`SELECT count(*)::int AS n FROM agent_executions WHERE owner_id = $1 AND created_at > now() - interval '30 days'`, [ADA])
    return (await count('executions')) === n || { device: await count('executions'), postgres: n }
  })
  await eventually('the device to hold the last 7 days of events', async () => {
    const [{ n }] = await pg(`SELECT count(*)::int AS n FROM observability_events WHERE owner_id = $1 AND at > now() - interval '7 days'`, [ADA])
    return (await count('events')) === n || { device: await count('events'), postgres: n }
  })
  await page.locator('[data-testid=storage-usage]').waitFor()
  await page.locator('[data-testid=batch-size]').filter({ hasText: '100' }).waitFor()
  await screenshot(page, 'agents-console-device')

  // An event 4 s short of a week old and a memory expiring in 4 s: on the device, then gone.
  const events = await count('events')
  const memory = await count('memory')
  const [{ id: eventId }] = await pg(
    `INSERT INTO observability_events (owner_id, execution_id, message, at) VALUES ($1, $2, 'about to age out', now() - interval '7 days' + interval '4 seconds') RETURNING id`,
    [ADA, RECENT_RUN],
  )
  const [{ id: memoryId }] = await pg(
    `INSERT INTO agent_memory (owner_id, agent, content, expires_at) VALUES ($1, 'planner', 'a short-lived note', now() + interval '4 seconds') RETURNING id`,
    [ADA],
  )
  await eventually('both to arrive', async () => (await count('events')) === events + 1 && (await count('memory')) === memory + 1)
  await eventually('both to leave the device', async () => (await count('events')) === events && (await count('memory')) === memory, 15_000)
  assert.equal((await pg('SELECT count(*)::int AS n FROM observability_events WHERE id = $1', [eventId]))[0].n, 1, 'the event is still in Postgres')
  assert.equal((await pg('SELECT count(*)::int AS n FROM agent_memory WHERE id = $1', [memoryId]))[0].n, 1, 'the memory is still in Postgres')
  await tab(page, 'executions')
  assert.equal(await row(page, 'execution', OLD_RUN).count(), 0)
})

test('through an outage: connection status, offline indicator and sync button; a reload offline shows the data and the queued edit, sent once when back', async () => {
  const { page } = phone
  await tab(page, 'tasks')
  assert.equal(await page.locator('.ferrite-connection').getAttribute('data-state'), 'connected')
  assert.equal(await page.locator('.ferrite-offline').count(), 0)
  await goOffline(phone)
  await eventually('the connection status to say disconnected', async () => (await page.locator('.ferrite-connection').getAttribute('data-state')) === 'disconnected')
  await page.locator('.ferrite-offline').waitFor()
  await page.locator('[data-testid=new-task-title]').fill('Written on the train')
  await page.locator('[data-testid=add-task]').click()
  await eventually('one change waiting', async () => (await page.locator('.ferrite-offline').getAttribute('data-pending')) === '1')
  assert.match(await page.locator('.ferrite-sync').innerText(), /1 pending/)

  // A reload without network: the app shell from the service worker, the rows from IndexedDB.
  await page.reload()
  await page.waitForFunction(() => document.documentElement.dataset.ready === 'true', null, { timeout: 20_000 })
  await page.locator('[data-testid=task]').filter({ has: page.locator('[data-field=title]') }).first().waitFor()
  const titles = await page.locator('[data-testid=task] [data-field=title]').evaluateAll((els) => els.map((e) => e.value))
  assert.ok(titles.includes('Written on the train') && titles.includes('Quarterly report (draft)'), titles.join(', '))
  await eventually('the queued change to survive the reload', async () => (await page.locator('.ferrite-offline').getAttribute('data-pending')) === '1')

  await goOnline(phone)
  assert.equal(await page.locator('.ferrite-offline').count(), 0)
  assert.equal(await page.locator('.ferrite-connection').getAttribute('data-state'), 'connected')
  await eventually('the task to reach Postgres once', async () => (await pg(`SELECT count(*)::int AS n FROM tasks WHERE title = 'Written on the train'`))[0].n === 1)
})
