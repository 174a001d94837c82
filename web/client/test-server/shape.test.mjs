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
