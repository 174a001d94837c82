// The web client's shape sync against a real Ferrite server, run against the compiled client in
// CLIENT_DIST (default dist/). Needs FERRITE_URL and DATABASE_URL; the Rust test
// crates/ferrite/tests/e2e/web_editor.rs compiles the client, starts a server with a small chunk
// size and sets all three.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import pg from 'pg'

const dist = new URL(`${process.env.CLIENT_DIST ?? '../dist'}/`, import.meta.url)
const { ShapeSync } = await import(new URL('shape.js', dist))
const { Transport } = await import(new URL('transport.js', dist))

const BASE = process.env.FERRITE_URL
let db

before(async () => {
  assert.ok(BASE, 'FERRITE_URL must be set')
  db = new pg.Client({ connectionString: process.env.DATABASE_URL })
  await db.connect()
})
after(async () => { await db?.end() })

async function waitFor(what, fn, timeoutMs = 20000) {
  const start = Date.now()
  while (!fn()) {
    if (Date.now() - start > timeoutMs) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 20))
  }
}

test('a transaction that spans several responses reaches the shape whole', async () => {
  await db.query('CREATE TABLE split_items (id int PRIMARY KEY, payload text NOT NULL)')
  // Every shape response, as the server sent it (to show the transaction really was split).
  const responses = []
  const transport = new Transport({
    fetch: async (input, init) => {
      const r = await globalThis.fetch(input, init)
      if (r.ok && String(input).includes('/v1/shape')) responses.push(await r.clone().json())
      return r
    },
  })
  const batches = []
  const host = {
    url: BASE,
    transport,
    applyBatch: async (batch) => { batches.push(batch) },
    shapeError: (_shape, reason) => { if (reason) throw new Error(reason) },
    pollIntervalMs: 1000,
  }
  const shape = new ShapeSync('items', { table: 'split_items', key: ['id'] }, undefined, undefined, host)
  shape.start()
  try {
    await waitFor('the empty shape to be up to date', () => shape.upToDate)
    const before = batches.length
    const rows = 60
    await db.query(
      "INSERT INTO split_items SELECT i, repeat('x', 200) || i FROM generate_series(1, $1) AS i",
      [rows],
    )
    await waitFor('all rows', () => shape.rows.size === rows)
    const pieces = responses.filter((body) =>
      body.some((m) => m.headers?.relation?.[1] === 'split_items' && m.headers.lsn !== undefined),
    )
    assert.ok(pieces.length >= 3, `the server sent the transaction in ${pieces.length} responses`)
    assert.ok(
      pieces.slice(0, -1).every((body) => !body.some((m) => m.headers?.last === true)),
      'only the final piece ends the transaction',
    )
    const applied = batches.slice(before).map((b) => b.upserts.size).filter((n) => n > 0)
    assert.deepEqual(applied, [rows], 'the rows were applied in one batch, never part of them')
    const stored = batches.at(-1).position
    assert.ok(stored && stored.offset !== '-1', 'the stored position is after the whole transaction')
  } finally {
    shape.stop()
  }
})

test('a relational shape follows move-outs and move-ins, also from stored tags', async () => {
  await db.query(`CREATE TABLE rel_members (team int NOT NULL, user_id text NOT NULL, PRIMARY KEY (team, user_id));
                  CREATE TABLE rel_steps (id int PRIMARY KEY, team int NOT NULL, name text);
                  INSERT INTO rel_members VALUES (1, 'ann'), (2, 'ann');
                  INSERT INTO rel_steps SELECT i, 1 + i % 3, 'step ' || i FROM generate_series(1, 30) i;`)
  const where = "team IN (SELECT team FROM rel_members WHERE user_id = 'ann') OR id = 3"
  const oracle = async () =>
    (await db.query(`SELECT id::text FROM rel_steps WHERE ${where} ORDER BY id`)).rows.map((r) => `["${r.id}"]`).sort()
  const transport = new Transport({})
  const stored = { rows: new Map(), tags: new Map(), record: undefined }
  const host = {
    url: BASE,
    transport,
    applyBatch: async (b) => {
      // What the client's IndexedDB would keep: rows with their tags, and the position.
      if (b.replaced) {
        stored.rows = new Map(b.replaced)
        stored.tags = new Map(b.tags)
      } else {
        for (const [k, row] of b.upserts) stored.rows.set(k, row)
        for (const [k, t] of b.tags) stored.tags.set(k, t)
        for (const k of b.deletes) (stored.rows.delete(k), stored.tags.delete(k))
      }
      if (b.position) stored.record = b.position
    },
    shapeError: (_shape, reason) => { if (reason) throw new Error(reason) },
    pollIntervalMs: 1000,
  }
  const keys = (shape) => [...shape.rows.keys()].sort()
  const opts = { table: 'rel_steps', where, key: ['id'] }
  let shape = new ShapeSync('rel', opts, undefined, undefined, host)
  shape.start()
  try {
    await waitFor('the initial rows', () => shape.upToDate)
    assert.deepEqual(keys(shape), await oracle())
    await db.query("DELETE FROM rel_members WHERE team = 1 AND user_id = 'ann'")
    let expected = await oracle()
    await waitFor('team 1 to move out', () => JSON.stringify(keys(shape)) === JSON.stringify(expected))
    assert.ok(shape.rows.has('["3"]'), 'step 3 stays through `id = 3`')
  } finally {
    shape.stop()
  }
  // Reopened from what was stored: team 2's rows leave by their stored tags, team 3's arrive.
  shape = new ShapeSync('rel', opts, stored.record, new Map(stored.rows), host, new Map(stored.tags))
  shape.start()
  try {
    await db.query("DELETE FROM rel_members WHERE team = 2 AND user_id = 'ann'; INSERT INTO rel_members VALUES (3, 'ann')")
    const expected = await oracle()
    await waitFor('team 2 out and team 3 in', () => JSON.stringify(keys(shape)) === JSON.stringify(expected))
    assert.deepEqual([...stored.rows.keys()].sort(), expected, 'and the stored rows follow')
  } finally {
    shape.stop()
  }
})
