// Convergence checksums in the web client against a real server: the digest the client computes
// over its rows (as the Electric client parses them) equals the one the server sends, for every
// column type and every kind of change; a replica damaged in IndexedDB behind the client's back
// is noticed when it is read back, fetched afresh, and counted. Shapes without a digest of their
// own (subqueries, include trees' members) are compared with the one `GET /v1/shape/digest`
// replays, the same way.
// Needs FERRITE_URL and DATABASE_URL (set by crates/ferrite/tests/e2e/web_editor.rs).
import 'fake-indexeddb/auto'
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import pg from 'pg'

const dist = new URL(`${process.env.CLIENT_DIST ?? '../dist'}/`, import.meta.url)
const { FerriteClient } = await import(new URL('index.js', dist))

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
    last = await fn()
    if (last === true) return
    await new Promise((r) => setTimeout(r, 20))
  }
  throw new Error(`timed out waiting for ${what}; last: ${JSON.stringify(last)}`)
}

const idb = (req) => new Promise((resolve, reject) => { req.onsuccess = () => resolve(req.result); req.onerror = () => reject(req.error) })

/** Changes the stored rows of a closed client's database behind its back. */
async function tamper(database, change) {
  const raw = await idb(indexedDB.open(database))
  const tx = raw.transaction('rows', 'readwrite')
  await change(tx.objectStore('rows'))
  await new Promise((resolve, reject) => { tx.oncomplete = resolve; tx.onerror = () => reject(tx.error) })
  raw.close()
}

/** The rows as sorted `a|b|…` lines of `columns` (the client's and Postgres's compare alike). */
const lines = (rows, columns) => rows.map((r) => columns.map((c) => r[c]).join('|')).sort()

/**
 * Whether `shape` shows what `sql` selects in Postgres and its latest comparison was good, of
 * that many rows on the server's side; else what stands instead.
 */
function converged(client, outcomes, shape, columns, sql, params = []) {
  return async () => {
    const want = lines((await db.query(sql, params)).rows, columns)
    const have = lines(client.rows(shape), columns)
    const last = outcomes.filter((o) => o.shape === shape).at(-1)
    const same = JSON.stringify(have) === JSON.stringify(want)
    return same && last?.ok === true && last.server.startsWith(`${want.length}:`) ? true : { shape, have: have.length, want: want.length, same, last }
  }
}

test('the client digests its rows as the server does, and repairs a replica damaged in storage', async () => {
  await db.query(`
    CREATE TABLE cs_items (
      id int8 PRIMARY KEY, title text, n int4, x float8, f float4, done bool, meta jsonb, doc json,
      tags text[], grid int4[][], amount numeric, at timestamptz, u uuid);
    INSERT INTO cs_items SELECT i, 'item ' || i || ' é☃ 😀', i % 7, i / 3.0, i * 0.1, i % 2 = 0,
      jsonb_build_object('k', i, 'big', 12345678901234567890, 'nested', jsonb_build_object('z', 1.5, 'a', ARRAY['x', 'y'])),
      json_build_object('b', i, 'a', 'text'),
      ARRAY['a b', 'q"x', NULL, 'NULL'], ARRAY[[i, 2], [3, NULL]], i * 1.10, '2026-01-01'::timestamptz + i * interval '1 hour',
      md5(i::text)::uuid
    FROM generate_series(1, 120) i;
    UPDATE cs_items SET x = 'Infinity', f = 'NaN', title = NULL, meta = NULL WHERE id = 5;
    UPDATE cs_items SET x = 1e300, f = -0.0, id = 9007199254740993 WHERE id = 6;`)
  const options = { url: BASE, database: 'checksums-web', shapes: { items: { table: 'cs_items' } }, checksumIntervalMs: 0 }
  let client = await FerriteClient.open(options)
  const outcomes = []
  client.on('checksum', (e) => outcomes.push(e))
  const rows = async () => Number((await db.query('SELECT count(*) FROM cs_items')).rows[0].count)
  const settled = async () => {
    const n = await rows()
    const last = outcomes[outcomes.length - 1]
    return client.rows('items').length === n && last !== undefined && last.server.startsWith(`${n}:`) ? true : { shown: client.rows('items').length, n, last }
  }
  await until('the snapshot to be compared', settled)
  assert.ok(outcomes.every((o) => o.ok), JSON.stringify(outcomes))

  await db.query(`
    INSERT INTO cs_items (id, title, n, meta, tags) VALUES (1000, 'new', 3, '{"b": [1, {"c": null}]}', '{}');
    UPDATE cs_items SET title = 'renamed', x = 2.5 WHERE id IN (1, 2, 3);
    UPDATE cs_items SET id = 2000 WHERE id = 17;
    UPDATE cs_items SET meta = '{"k": 1}', grid = NULL WHERE id = 24;
    DELETE FROM cs_items WHERE id IN (31, 38);`)
  await until('the changes to arrive and be compared', settled)
  assert.ok(outcomes.every((o) => o.ok), JSON.stringify(outcomes.filter((o) => !o.ok)))
  assert.deepEqual(client.checksums.mismatches, 0)
  client.close()

  // Damage behind the client's back: one row's value changed, another row removed.
  await tamper('checksums-web', async (store) => {
    const damaged = await idb(store.get(['items', '["50"]']))
    damaged.row.title = 'tampered'
    store.put(damaged)
    store.delete(['items', '["51"]'])
  })

  client = await FerriteClient.open(options)
  outcomes.length = 0
  client.on('checksum', (e) => outcomes.push(e))
  const title = async (id) => (await db.query('SELECT title FROM cs_items WHERE id = $1', [id])).rows[0].title
  await until('the damage to be noticed and repaired', async () =>
    outcomes.some((o) => !o.ok && o.action === 'refetch') && outcomes[outcomes.length - 1]?.ok === true &&
    client.get('items', { id: 50n })?.title === (await title(50)) && client.get('items', { id: 51n }) !== undefined
      ? true
      : outcomes)
  assert.deepEqual(client.checksums, { verified: client.checksums.verified, mismatches: 1, repairs: 1, unrepaired: 0 })
  assert.equal(client.rows('items').length, await rows())
  client.close()
})

test('a relational shape is compared with the digest the server replays, and repaired when damaged', async () => {
  await db.query(`
    CREATE TABLE csr_members (team_id int NOT NULL, user_id text NOT NULL, PRIMARY KEY (team_id, user_id));
    CREATE TABLE csr_items (id int PRIMARY KEY, team_id int NOT NULL, title text, n int);
    INSERT INTO csr_members VALUES (1, 'ann'), (2, 'ann'), (3, 'bob');
    INSERT INTO csr_items SELECT i, 1 + i % 4, 'item ' || i, i FROM generate_series(1, 60) i;`)
  // A parameter and a column list: the digest must be asked of the very shape the stream reads.
  const where = 'team_id IN (SELECT team_id FROM csr_members WHERE user_id = $1)'
  const columns = ['id', 'team_id', 'title']
  const database = `checksums-relational-${process.pid}`
  const options = { url: BASE, database, shapes: { items: { table: 'csr_items', where, params: ['ann'], columns } }, checksumIntervalMs: 0 }
  const sql = `SELECT id, team_id, title FROM csr_items WHERE ${where}`
  let client = await FerriteClient.open(options)
  const outcomes = []
  client.on('checksum', (e) => outcomes.push(e))
  const settled = converged(client, outcomes, 'items', columns, sql, ['ann'])
  await until('the snapshot to be compared', settled)

  // Each step changes the number of rows, so its comparison is told from the one before.
  await db.query(`
    INSERT INTO csr_items VALUES (101, 1, 'new one', 0), (102, 2, 'new two', 0), (103, 3, 'not ann''s', 0);
    UPDATE csr_items SET title = 'renamed' WHERE id IN (1, 2, 5);
    UPDATE csr_items SET team_id = 1 WHERE id = 6;
    DELETE FROM csr_items WHERE id = 4;`)
  await until('inserts, updates and deletes to be compared', settled)
  await db.query(`INSERT INTO csr_members VALUES (4, 'ann')`)
  await until('a move-in to be compared', settled)
  await db.query(`DELETE FROM csr_members WHERE team_id = 1 AND user_id = 'ann'`)
  await until('a move-out to be compared', settled)
  assert.ok(outcomes.length >= 4 && outcomes.every((o) => o.ok && o.shape === 'items' && o.action === 'none'), JSON.stringify(outcomes))
  assert.deepEqual(client.checksums, { verified: outcomes.length, mismatches: 0, repairs: 0, unrepaired: 0 })
  const [changed, removed] = client.rows('items').map((r) => r.id).sort((a, b) => a - b)
  client.close()

  // Damage: a value changed, a row removed, a row added that the shape does not hold.
  await tamper(database, async (store) => {
    const row = await idb(store.get(['items', `["${changed}"]`]))
    row.row.title = 'tampered'
    store.put(row)
    store.delete(['items', `["${removed}"]`])
    store.put({ shape: 'items', key: '["9999"]', row: { id: 9999, team_id: 2, title: 'ghost' } })
  })
  client = await FerriteClient.open(options)
  outcomes.length = 0
  client.on('checksum', (e) => outcomes.push(e))
  await until('the damage to be noticed and repaired', async () => {
    const done = await converged(client, outcomes, 'items', columns, sql, ['ann'])()
    return done === true && outcomes.some((o) => !o.ok && o.action === 'refetch') ? true : { done, outcomes }
  })
  assert.deepEqual(client.checksums, { verified: client.checksums.verified, mismatches: 1, repairs: 1, unrepaired: 0 })
  assert.equal(client.get('items', { id: 9999 }), undefined)
  client.close()
})

test("an include tree's members are compared, and a damaged member is repaired", async () => {
  await db.query(`
    CREATE TABLE cst_boards (id int PRIMARY KEY, name text NOT NULL);
    CREATE TABLE cst_cards (id int PRIMARY KEY, board_id int NOT NULL REFERENCES cst_boards (id), title text NOT NULL);
    INSERT INTO cst_boards VALUES (1, 'one'), (2, 'two');
    INSERT INTO cst_cards SELECT i, 1 + i % 2, 'card ' || i FROM generate_series(1, 40) i;`)
  const database = `checksums-tree-${process.pid}`
  const options = {
    url: BASE,
    database,
    shapes: {},
    // The root is a plain shape (the server's digest travels with it), the include a subquery.
    trees: { board: { table: 'cst_boards', where: 'id = $1', params: ['1'], include: { cards: { table: 'cst_cards' } } } },
    checksumIntervalMs: 0,
  }
  const cardColumns = ['id', 'board_id', 'title']
  const cardsSql = 'SELECT id, board_id, title FROM cst_cards WHERE board_id = 1'
  let client = await FerriteClient.open(options)
  const outcomes = []
  client.on('checksum', (e) => outcomes.push(e))
  const settled = async () => {
    const board = await converged(client, outcomes, 'board', ['id', 'name'], 'SELECT id, name FROM cst_boards WHERE id = 1')()
    const cards = await converged(client, outcomes, 'cards', cardColumns, cardsSql)()
    return board === true && cards === true ? true : { board, cards }
  }
  await until('both members to be compared', settled)
  await db.query(`
    INSERT INTO cst_cards VALUES (100, 1, 'new');
    UPDATE cst_cards SET board_id = 1 WHERE id = 1;
    UPDATE cst_cards SET title = 'renamed' WHERE id = 2;`)
  await until('the changes to be compared', settled)
  assert.ok(outcomes.length > 0 && outcomes.every((o) => o.ok), JSON.stringify(outcomes))
  client.close()

  await tamper(database, async (store) => {
    const row = await idb(store.get(['cards', '["2"]']))
    row.row.title = 'tampered'
    store.put(row)
    store.delete(['cards', '["4"]'])
  })
  client = await FerriteClient.open(options)
  outcomes.length = 0
  client.on('checksum', (e) => outcomes.push(e))
  await until('the damaged member to be noticed and repaired', async () => {
    const done = await settled()
    return done === true && outcomes.some((o) => o.shape === 'cards' && !o.ok && o.action === 'refetch') ? true : { done, outcomes }
  })
  assert.deepEqual(client.checksums, { verified: client.checksums.verified, mismatches: 1, repairs: 1, unrepaired: 0 })
  const root = outcomes.filter((o) => o.shape === 'board')
  assert.ok(root.length > 0 && root.every((o) => o.ok), `the root was not damaged: ${JSON.stringify(root)}`)
  assert.equal(client.get('cards', { id: 2 })?.title, 'renamed')
  client.close()
})
