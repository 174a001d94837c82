// PGlite with the official `@electric-sql/pglite-sync` plugin, syncing from Ferrite unchanged:
// the initial sync into a local table, live inserts, updates and deletes, and a resume after the
// database is closed and reopened from its directory (the plugin keeps the handle and offset in
// its own metadata table: the stream continues where it stopped, no refetch). Needs FERRITE_URL
// and DATABASE_URL; run by `crates/ferrite/tests/e2e/electric_client.rs`, which starts both.

import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { PGlite } from '@electric-sql/pglite'
import { electricSync } from '@electric-sql/pglite-sync'
import pg from 'pg'
import { waitFor } from './wait.mjs'

const SHAPE_URL = `${process.env.FERRITE_URL}/v1/shape`
let db
let dir

before(async () => {
  assert.ok(process.env.FERRITE_URL, 'FERRITE_URL must be set')
  db = new pg.Client({ connectionString: process.env.DATABASE_URL })
  await db.connect()
  await db.query(`
    CREATE TABLE pgl_leads (id int PRIMARY KEY, tenant text NOT NULL, name text NOT NULL, score numeric, seen boolean NOT NULL DEFAULT false, meta jsonb);
    INSERT INTO pgl_leads SELECT g, CASE WHEN g % 2 = 0 THEN 'acme' ELSE 'globex' END, 'lead ' || g, g * 1.5, false, jsonb_build_object('n', g)
      FROM generate_series(1, 200) g;`)
  dir = mkdtempSync(join(tmpdir(), 'ferrite-pglite-'))
})

after(async () => {
  await db?.end()
  if (dir) rmSync(dir, { recursive: true, force: true })
})

/** Opens the local database in `dir` with the sync plugin and the local table. */
async function open() {
  const local = await PGlite.create(dir, { extensions: { sync: electricSync() } })
  await local.exec(`CREATE TABLE IF NOT EXISTS leads (id int PRIMARY KEY, tenant text NOT NULL, name text NOT NULL, score numeric, seen boolean NOT NULL, meta jsonb)`)
  return local
}

/** Counts the shape requests `fetch` makes, and how many of them start from scratch. */
function countingFetch() {
  const seen = { requests: 0, fromScratch: 0 }
  const fetchClient = (input, init) => {
    const url = new URL(input instanceof Request ? input.url : String(input))
    seen.requests++
    if (url.searchParams.get('offset') === '-1') seen.fromScratch++
    return fetch(input, init)
  }
  return { seen, fetchClient }
}

/** Starts syncing acme's leads into `local` under a fixed key (so it can resume). */
function sync(local, fetchClient) {
  return local.sync.syncShapeToTable({
    shape: { url: SHAPE_URL, params: { table: 'pgl_leads', where: `tenant = 'acme'` }, fetchClient },
    table: 'leads',
    primaryKey: ['id'],
    shapeKey: 'acme-leads',
  })
}

const rowsOf = (rows) => rows.map((r) => `${r.id}|${r.name}|${Number(r.score)}|${r.seen}|${JSON.stringify(r.meta)}`).join('\n')

async function postgresRows() {
  return rowsOf((await db.query(`SELECT id, name, score, seen, meta FROM pgl_leads WHERE tenant = 'acme' ORDER BY id`)).rows)
}

async function localRows(local) {
  return rowsOf((await local.query(`SELECT id, name, score, seen, meta FROM leads ORDER BY id`)).rows)
}

test('pglite-sync: initial sync, live changes, and a resume from the stored offset after reopening', async () => {
  let local = await open()
  let counting = countingFetch()
  let subscription = await sync(local, counting.fetchClient)
  await waitFor('the initial sync', async () => subscription.isUpToDate && (await localRows(local)) === (await postgresRows()))
  assert.equal((await local.query('SELECT count(*)::int AS n FROM leads')).rows[0].n, 100)
  assert.equal(counting.seen.fromScratch, 1)

  // Live: an insert, an update (types: numeric, boolean, jsonb), a delete, a row leaving the where.
  await db.query(`INSERT INTO pgl_leads VALUES (1000, 'acme', 'new lead', 9.25, true, '{"source": "form"}')`)
  await db.query(`UPDATE pgl_leads SET name = 'renamed', score = 0.5, seen = true WHERE id = 2`)
  await db.query(`DELETE FROM pgl_leads WHERE id = 4`)
  await db.query(`UPDATE pgl_leads SET tenant = 'globex' WHERE id = 6`)
  await waitFor('the live changes', async () => (await localRows(local)) === (await postgresRows()))
  assert.equal((await local.query('SELECT count(*)::int AS n FROM leads WHERE id IN (4, 6)')).rows[0].n, 0)

  // Closed; Postgres changes meanwhile; reopened from the same directory: it resumes.
  subscription.unsubscribe()
  await local.close()
  await db.query(`UPDATE pgl_leads SET name = 'while closed' WHERE id = 8; INSERT INTO pgl_leads VALUES (1001, 'acme', 'later', 1, false, null)`)
  local = await open()
  assert.equal((await local.query('SELECT count(*)::int AS n FROM leads')).rows[0].n, 99, 'the rows stayed in the local database')
  counting = countingFetch()
  subscription = await sync(local, counting.fetchClient)
  await waitFor('the resumed sync', async () => subscription.isUpToDate && (await localRows(local)) === (await postgresRows()))
  assert.equal(counting.seen.fromScratch, 0, 'resumed from the stored handle and offset, not refetched')
  assert.ok(counting.seen.requests >= 1)
  subscription.unsubscribe()
  await local.close()
})
