// The web client (@ferrite/client) on its own in Chromium, against the `ferrite dev` server the
// editor tests use: its sources bundled here with esbuild and loaded into a page of the server's
// origin (IndexedDB and the dev sign-in need one), driven through page.evaluate.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { build } from 'esbuild'
import { fileURLToPath } from 'node:url'
import { launch, database, EDITOR_URL, USERS, PIPELINES } from './harness.mjs'

let browser
let bundle

before(async () => {
  browser = await launch()
  const entry = fileURLToPath(new URL('../../client/src/index.ts', import.meta.url))
  const out = await build({ entryPoints: [entry], bundle: true, format: 'iife', globalName: 'FerriteWeb', write: false, target: 'es2022' })
  bundle = out.outputFiles[0].text
})
after(async () => { await browser?.close() })

/** A page of the server's origin with the client loaded as `window.FerriteWeb`. */
async function clientPage() {
  const context = await browser.newContext()
  const page = await context.newPage()
  await page.goto(`${EDITOR_URL}/v1/health`)
  await page.addScriptTag({ content: bundle })
  return { context, page }
}

test('an update or delete of a row the app cannot see is refused, and nothing is queued', async () => {
  const { context, page } = await clientPage()
  try {
    const result = await page.evaluate(async (userId) => {
      const { FerriteClient } = window.FerriteWeb
      const token = async () => {
        const r = await fetch('/dev/token', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ user_id: userId }) })
        return (await r.json()).token
      }
      const client = await FerriteClient.open({ url: location.origin, database: `client-test:${userId}`, shapes: { steps: { table: 'steps' } }, token })
      const deadline = Date.now() + 20000
      while (!client.isLoaded('steps') || client.rows('steps').length === 0) {
        if (Date.now() > deadline) throw new Error('steps never loaded')
        await new Promise((r) => setTimeout(r, 20))
      }
      const seen = client.rows('steps')[0]
      const attempt = async (build) => {
        try {
          await client.transaction(build)
          return 'accepted'
        } catch (e) {
          return `${e.name}: ${e.message}`
        }
      }
      const missing = '00000000-0000-4000-8000-00000000ffff'
      const outcomes = {
        updateMissing: await attempt((tx) => tx.update('steps', { id: missing }, { name: 'ghost' })),
        deleteMissing: await attempt((tx) => tx.delete('steps', { id: missing })),
        updateAfterDelete: await attempt((tx) => {
          tx.delete('steps', { id: seen.id })
          tx.update('steps', { id: seen.id }, { name: 'revived?' })
        }),
        pending: client.pending,
        stillThere: client.get('steps', { id: seen.id })?.name === seen.name,
      }
      client.close()
      return outcomes
    }, USERS.ada)
    for (const what of ['updateMissing', 'deleteMissing', 'updateAfterDelete']) {
      assert.match(result[what], /^NoRowError: steps has no row/, what)
    }
    assert.equal(result.pending, 0, 'nothing was queued')
    assert.ok(result.stillThere, 'the refused transaction changed nothing the app reads')
  } finally {
    await context.close()
  }
})


test('an include tree: a pipeline with its steps, their connections, its comments and their authors', async () => {
  const db = await database()
  const { context, page } = await clientPage()
  try {
    const shown = await page.evaluate(async ({ userId, pipeline }) => {
      const { FerriteClient } = window.FerriteWeb
      const token = async () => {
        const r = await fetch('/dev/token', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ user_id: userId }) })
        return (await r.json()).token
      }
      const client = await FerriteClient.open({
        url: location.origin,
        database: `tree-test:${userId}`,
        shapes: {},
        token,
        trees: {
          workspace: {
            table: 'pipelines',
            where: `id = '${pipeline}'`,
            include: {
              steps: { include: { connections: {} } },
              comments: { include: { authors: { table: 'users' } } },
            },
          },
        },
      })
      const deadline = Date.now() + 20000
      while (client.treeStatus('workspace').state !== 'synced' || !client.isLoaded('steps')) {
        if (Date.now() > deadline) throw new Error(`the tree never synced: ${JSON.stringify(client.treeStatus('workspace'))}`)
        await new Promise((r) => setTimeout(r, 20))
      }
      const rows = (name) => client.rows(name)
      const result = {
        root: rows('workspace').map((r) => r.id),
        steps: rows('steps').map((s) => s.id).sort(),
        stepPipelines: [...new Set(rows('steps').map((s) => s.pipeline_id))],
        connections: rows('connections').map((c) => c.id).sort(),
        comments: rows('comments').map((c) => c.id).sort(),
        authors: rows('authors').map((a) => a.id).sort(),
      }
      client.close()
      return result
    }, { userId: USERS.ada, pipeline: PIPELINES.build })
    const ids = async (sql) => (await db.query(sql, [PIPELINES.build])).rows.map((r) => r.id).sort()
    assert.deepEqual(shown.root, [PIPELINES.build])
    assert.deepEqual(shown.stepPipelines, [PIPELINES.build])
    assert.deepEqual(shown.steps, await ids('SELECT id::text FROM steps WHERE pipeline_id = $1'))
    assert.ok(shown.steps.length > 0)
    assert.deepEqual(shown.connections, await ids('SELECT id::text FROM connections WHERE pipeline_id = $1'))
    assert.deepEqual(shown.comments, await ids('SELECT id::text FROM comments WHERE pipeline_id = $1'))
    assert.deepEqual(shown.authors, await ids('SELECT DISTINCT user_id::text AS id FROM comments WHERE pipeline_id = $1'))
  } finally {
    await context.close()
    await db.end()
  }
})
