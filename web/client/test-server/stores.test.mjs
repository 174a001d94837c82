// The client's behaviour is the same whichever store keeps its replica: the same scenario runs
// against IndexedDB (fake-indexeddb, in memory) and PGlite (in memory) — initial sync, offline
// writes shown at once and queued, a reopen while offline that finds rows and queue, the queue
// sent once when the network is back and retired when the shapes show it, a refused write
// rolled back, bigints kept exactly. With PGlite the app's SQL sees the same: synced rows in its
// table, the pending overlay in `<table>_pending`, both together in the view `<table>_local`
// (an aggregate, and a live query joining it with a local table, follow the pending writes).
// Needs FERRITE_URL and DATABASE_URL (set by crates/ferrite/tests/e2e/web_editor.rs).
import 'fake-indexeddb/auto'
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import pg from 'pg'
import { PGlite } from '@electric-sql/pglite'
import { live } from '@electric-sql/pglite/live'

const dist = new URL(`${process.env.CLIENT_DIST ?? '../dist'}/`, import.meta.url)
const { FerriteClient, pgliteStore } = await import(new URL('index.js', dist))

const BASE = process.env.FERRITE_URL
let db

before(async () => {
  assert.ok(BASE, 'FERRITE_URL must be set')
  db = new pg.Client({ connectionString: process.env.DATABASE_URL })
  await db.connect()
})
after(async () => { await db?.end() })

async function until(what, fn, timeoutMs = 20_000) {
  const start = Date.now()
  let last
  while (Date.now() - start < timeoutMs) {
    try {
      last = await fn()
      if (last === true) return
    } catch (e) {
      last = e
    }
    await new Promise((r) => setTimeout(r, 20))
  }
  throw new Error(`timed out waiting for ${what}; last: ${last instanceof Error ? last.stack : JSON.stringify(last, (_k, v) => (typeof v === 'bigint' ? `${v}n` : v))}`)
}

/** The real fetch, failing (as an outage does) while `down` is set. */
function network() {
  const net = { down: false }
  net.fetch = async (input, init) => {
    if (net.down) throw new TypeError('fetch failed')
    return fetch(input, init)
  }
  return net
}

const BIG = 9007199254740993n // 2^53 + 1: not a safe JS number

/** The stores, each opening the same replica again on a second call (a reload). */
const STORES = {
  indexeddb: () => ({ store: undefined, sql: undefined }),
  pglite: (() => {
    let pglite
    return async (table) => {
      if (!pglite) {
        pglite = await PGlite.create({ extensions: { live } })
        // The app's own table for the shape (its columns and key, typed by Postgres), and one
        // of its local tables to join with.
        await pglite.exec(`CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL, qty bigint, tags text[], meta jsonb);
          CREATE TABLE favourites (item_id int PRIMARY KEY); INSERT INTO favourites VALUES (1), (10)`)
      }
      return { store: () => pgliteStore(pglite, { tables: { items: 'items' } }), sql: pglite, table }
    }
  })(),
}

const rowText = (r) => `${r.id}|${r.name}|${r.qty}|${JSON.stringify(r.tags)}|${JSON.stringify(r.meta)}`
const shown = (client) => client.rows('items').map(rowText).sort()
const pgRows = async (table) => (await db.query(`SELECT id, name, qty, tags, meta FROM ${table}`)).rows.map((r) => rowText({ ...r, qty: r.qty === null ? null : BigInt(r.qty) })).sort()
const sqlRows = async (sql, relation) => (await sql.query(`SELECT id, name, qty, tags, meta FROM ${relation}`)).rows.map(rowText).sort()

for (const [kind, make] of Object.entries(STORES)) {
  test(`${kind}: offline writes, a reopen offline, exactly-once sync, rollback of a refused write`, async () => {
    const table = `store_${kind}_items`
    await db.query(`CREATE TABLE ${table} (id int PRIMARY KEY, name text NOT NULL CHECK (name <> 'forbidden'), qty bigint, tags text[], meta jsonb);
      INSERT INTO ${table} VALUES (1, 'one', 1, '{a,b}', '{"x": 1}'), (2, 'two', ${BIG}, NULL, NULL), (3, 'three', NULL, '{}', '[1, 2]')`)
    const { store, sql } = await make(table)
    const net = network()
    const options = { url: BASE, database: `stores-${kind}-${process.pid}`, shapes: { items: { table } }, fetch: net.fetch, store }
    let client = await FerriteClient.open(options)
    await until('the initial sync', async () => client.isLoaded('items') && JSON.stringify(shown(client)) === JSON.stringify(await pgRows(table)))
    assert.equal(client.get('items', { id: 2 }).qty, BIG, 'an int8 beyond 2^53 arrives exact')
    if (sql) assert.deepEqual(await sqlRows(sql, 'items'), await pgRows(table), 'the app table holds the synced rows')

    // A live query over synced and pending rows, joined with a local table.
    let liveRows
    const watching = sql && (await sql.live.query(`SELECT i.name FROM items_local i JOIN favourites f ON f.item_id = i.id ORDER BY i.name`, [], (r) => { liveRows = r.rows.map((x) => x.name) }))
    if (sql) await until('the live query', () => JSON.stringify(liveRows) === '["one"]')

    // Offline: three writes, shown at once and queued.
    net.down = true
    client.retryNow()
    await until('offline', () => client.status.state === 'offline')
    // (Array columns are written as Postgres array literals: left out here.)
    await client.transaction((tx) => tx.insert('items', { id: 10, name: 'ten', qty: BIG + 1n, tags: null, meta: { from: 'offline' } }))
    await client.transaction((tx) => tx.update('items', { id: 1 }, { name: 'uno' }))
    await client.transaction((tx) => tx.delete('items', { id: 3 }))
    const expected = ['1|uno|1|["a","b"]|{"x":1}', `10|ten|${BIG + 1n}|null|{"from":"offline"}`, `2|two|${BIG}|null|null`].sort()
    assert.deepEqual(shown(client), expected)
    assert.equal(client.pending, 3)
    if (sql) {
      assert.deepEqual(await sqlRows(sql, 'items_local'), expected, 'the view shows synced rows with pending writes on top')
      assert.equal((await sql.query(`SELECT count(*)::int AS n FROM items_pending`)).rows[0].n, 3)
      assert.equal((await sql.query(`SELECT count(*)::int AS n FROM items_pending WHERE ferrite_deleted`)).rows[0].n, 1)
      assert.deepEqual(await sqlRows(sql, 'items'), await pgRows(table), 'the synced rows are untouched')
      // SQL across synced and pending rows: an aggregate.
      const { rows } = await sql.query(`SELECT count(*)::int AS n, sum(qty)::text AS total FROM items_local`)
      assert.deepEqual(rows[0], { n: 3, total: String(1n + BIG + BIG + 1n) })
      await until('the live query to follow the pending writes', () => JSON.stringify(liveRows) === '["ten","uno"]')
    }

    // A reopen while offline (a reload): the rows and the queue are there.
    client.close()
    client = await FerriteClient.open(options)
    assert.deepEqual(shown(client), expected)
    assert.equal(client.pending, 3)
    assert.equal(client.get('items', { id: 10 }).qty, BIG + 1n, 'kept exactly by the store')

    // Back online: sent once, retired when the shapes show it.
    net.down = false
    client.retryNow()
    await until('synced', () => client.status.state === 'synced' && client.pending === 0)
    assert.deepEqual(await pgRows(table), expected, 'Postgres has the writes')
    assert.deepEqual(shown(client), expected)
    assert.equal((await db.query(`SELECT count(*)::int AS n FROM ${table} WHERE id = 10`)).rows[0].n, 1)
    if (sql) {
      await until('the pending table to empty', async () => (await sql.query(`SELECT count(*)::int AS n FROM items_pending`)).rows[0].n === 0)
      assert.deepEqual(await sqlRows(sql, 'items'), expected)
      assert.deepEqual(await sqlRows(sql, 'items_local'), expected)
    }

    // A write the server refuses (the CHECK): rolled back, with the reason.
    const rejected = new Promise((resolve) => client.on('rejected', resolve))
    await client.transaction((tx) => tx.update('items', { id: 2 }, { name: 'forbidden' }))
    assert.equal(client.get('items', { id: 2 }).name, 'forbidden', 'shown at once')
    const r = await rejected
    assert.match(r.message, /check constraint/i)
    await until('the rollback', () => client.get('items', { id: 2 }).name === 'two' && client.pending === 0)
    if (sql) await until('the rollback in SQL', async () => (await sql.query(`SELECT name FROM items_local WHERE id = 2`)).rows[0].name === 'two')
    if (sql) assert.deepEqual(liveRows, ['ten', 'uno'])
    await watching?.unsubscribe()
    client.close()
  })
}

test('pglite: a shape whose table is missing or keyless is refused with the reason', async () => {
  const pglite = await PGlite.create()
  await assert.rejects(pgliteStore(pglite, { tables: { items: 'nope' } }), /the table "nope" does not exist/)
  await pglite.exec(`CREATE TABLE keyless (id int)`)
  await assert.rejects(pgliteStore(pglite, { tables: { items: 'keyless' } }), /has no primary key/)
  await pglite.exec(`CREATE TABLE "we""ird" (id int PRIMARY KEY, "na me" text)`)
  await pgliteStore(pglite, { tables: { items: 'we"ird' } })
  assert.equal((await pglite.query(`SELECT count(*)::int AS n FROM "we""ird_local"`)).rows[0].n, 0, 'quoted names work')
  await pglite.close()
})

test('a write-only shape: no request reads it, and a write leaves the queue once the server has answered', async () => {
  await db.query(`CREATE TABLE store_inbox (id int PRIMARY KEY, body text NOT NULL CHECK (body <> 'bad'))`)
  const asked = []
  const fetchCounting = (input, init) => {
    asked.push(String(input instanceof Request ? input.url : input))
    return fetch(input, init)
  }
  const client = await FerriteClient.open({
    url: BASE,
    database: `write-only-${process.pid}`,
    shapes: { inbox: { table: 'store_inbox', writeOnly: true } },
    fetch: fetchCounting,
  })
  assert.ok(client.isLoaded('inbox'))
  await client.transaction((tx) => tx.insert('inbox', { id: 1, body: 'hello' }))
  await until('the write to be answered and retired', () => client.pending === 0 && client.status.state === 'synced')
  assert.equal((await db.query('SELECT count(*)::int AS n FROM store_inbox')).rows[0].n, 1)
  const rejected = new Promise((resolve) => client.on('rejected', resolve))
  await client.transaction((tx) => tx.insert('inbox', { id: 2, body: 'bad' }))
  assert.equal((await rejected).code, 'constraint')
  await until('the refused write to be rolled back', () => client.pending === 0)
  assert.equal(asked.filter((u) => u.includes('/v1/shape')).length, 0, `no shape request: ${asked}`)

  // Closed while its push loop is between two sends (here: by the app, on an answer): the loop
  // stops there — its store is closed — rather than failing on it.
  const failures = []
  const consoleError = console.error
  console.error = (...args) => failures.push(args.map(String).join(' '))
  try {
    client.on('rejected', () => client.close())
    await client.transaction((tx) => tx.insert('inbox', { id: 3, body: 'bad' }))
    await until('the client to be closed by the answer', () => asked.filter((u) => u.includes('/v1/transactions')).length === 3)
    await new Promise((r) => setTimeout(r, 300))
  } finally {
    console.error = consoleError
  }
  assert.deepEqual(failures, [], 'nothing runs on a closed client')
})

test('a row written into a tree member never disappears while the shapes confirm it', async () => {
  await db.query(`CREATE TABLE flick_boards (id int PRIMARY KEY, name text NOT NULL);
    CREATE TABLE flick_cards (id int PRIMARY KEY, board_id int NOT NULL REFERENCES flick_boards (id), title text NOT NULL);
    INSERT INTO flick_boards VALUES (1, 'board'); INSERT INTO flick_cards VALUES (1, 1, 'first')`)
  const client = await FerriteClient.open({
    url: BASE,
    database: `tree-confirm-${process.pid}`,
    shapes: {},
    trees: { flick_boards: { table: 'flick_boards', include: { flick_cards: {} } } },
  })
  await until('the tree to load', () => client.rows('flick_cards').length === 1)
  // At every change the app is told of, every card written so far is there: pending, then
  // synced, never neither (an editor loses its selection when a row blinks out).
  const written = new Set()
  const blinks = []
  client.on('change', () => {
    const ids = new Set(client.rows('flick_cards').map((r) => r.id))
    for (const id of written) if (!ids.has(id)) blinks.push(`card ${id} missing with ${client.pending} pending`)
  })
  for (let id = 2; id <= 11; id++) {
    await client.transaction((tx) => tx.insert('flick_cards', { id, board_id: 1, title: `card ${id}` }))
    written.add(id)
    await until(`card ${id} confirmed`, () => client.pending === 0)
  }
  assert.equal((await db.query('SELECT count(*)::int AS n FROM flick_cards')).rows[0].n, 11)
  assert.deepEqual(client.rows('flick_cards').map((r) => r.id).sort((a, b) => a - b), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11])
  assert.deepEqual(blinks, [])
  client.close()
})
