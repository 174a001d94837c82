// Relational shapes (where clauses with subqueries) from Ferrite in the clients that track tags:
// TanStack DB's electric collection drops rows on `move-out` events and takes `move-in` rows, and
// the official ShapeStream passes the events through. Needs FERRITE_URL and DATABASE_URL; run by
// `crates/ferrite/tests/e2e/electric_client.rs`, which starts both.

import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { ShapeStream } from '@electric-sql/client'
import { createCollection } from '@tanstack/db'
import { electricCollectionOptions } from '@tanstack/electric-db-collection'
import pg from 'pg'
import { waitFor } from './wait.mjs'

const BASE = process.env.FERRITE_URL
const SHAPE_URL = `${BASE}/v1/shape`
let db

before(async () => {
  assert.ok(BASE, 'FERRITE_URL must be set')
  db = new pg.Client({ connectionString: process.env.DATABASE_URL })
  await db.connect()
  await db.query(`
    CREATE TABLE rs_members (team_id int NOT NULL, user_id text NOT NULL, PRIMARY KEY (team_id, user_id));
    CREATE TABLE rs_steps (id int PRIMARY KEY, team_id int NOT NULL, name text);
    INSERT INTO rs_members VALUES (1, 'ann'), (2, 'bob');
    INSERT INTO rs_steps SELECT g, 1 + g % 3, 'step ' || g FROM generate_series(1, 30) g;`)
})
after(async () => { await db?.end() })


const WHERE = `team_id IN (SELECT team_id FROM rs_members WHERE user_id = 'ann')`

/** What Postgres answers, as `id:name` strings sorted. */
async function expected() {
  const r = await db.query(`SELECT id, name FROM rs_steps WHERE ${WHERE} ORDER BY id`)
  return r.rows.map((row) => `${row.id}:${row.name}`)
}

function held(collection) {
  return [...collection.state.values()].sort((a, b) => a.id - b.id).map((row) => `${row.id}:${row.name}`)
}

test('TanStack DB collection follows membership: rows move in and out', async () => {
  const collection = createCollection(electricCollectionOptions({
    id: 'ann-steps',
    shapeOptions: { url: SHAPE_URL, params: { table: 'rs_steps', where: WHERE } },
    getKey: (row) => row.id,
  }))
  await collection.preload()
  assert.deepEqual(held(collection), await expected())
  assert.equal(collection.size, 10)

  await db.query(`INSERT INTO rs_members VALUES (2, 'ann')`)
  await waitFor('team 2 moved in', async () => JSON.stringify(held(collection)) === JSON.stringify(await expected()))
  assert.equal(collection.size, 20)

  await db.query(`UPDATE rs_steps SET name = 'renamed' WHERE id = 2; INSERT INTO rs_steps VALUES (100, 2, 'new')`)
  await waitFor('changes in her teams', async () => JSON.stringify(held(collection)) === JSON.stringify(await expected()))

  // Leaving team 1 is one move-out event; the collection drops its rows.
  await db.query(`DELETE FROM rs_members WHERE team_id = 1 AND user_id = 'ann'`)
  await waitFor('team 1 moved out', async () => JSON.stringify(held(collection)) === JSON.stringify(await expected()))
  assert.equal(collection.size, 11)
  await collection.cleanup()
})

test('the official ShapeStream receives tags and move events', async () => {
  const controller = new AbortController()
  const stream = new ShapeStream({
    url: SHAPE_URL,
    params: { table: 'rs_steps', where: `team_id IN (SELECT team_id FROM rs_members WHERE user_id = 'bob')` },
    signal: controller.signal,
  })
  const seen = []
  stream.subscribe((messages) => { seen.push(...messages) })
  await waitFor('initial rows', () => seen.some((m) => m.headers.control === 'up-to-date'))
  const insert = seen.find((m) => m.headers.operation === 'insert')
  assert.equal(insert.headers.tags.length, 1)
  assert.deepEqual(insert.headers.active_conditions, [true])
  await db.query(`INSERT INTO rs_members VALUES (3, 'bob')`)
  await waitFor('move-in', () => seen.some((m) => m.headers.event === 'move-in') && seen.some((m) => m.headers.is_move_in))
  await db.query(`DELETE FROM rs_members WHERE user_id = 'bob'`)
  await waitFor('move-out', () => seen.some((m) => m.headers.event === 'move-out'))
  const out = seen.find((m) => m.headers.event === 'move-out')
  assert.equal(out.headers.patterns.length, 2, 'teams 2 and 3 left in one transaction')
  controller.abort()
})
