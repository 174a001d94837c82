// Convergence checksums in the web client against a real server: the digest the client computes
// over its rows (as the Electric client parses them) equals the one the server sends, for every
// column type and every kind of change; a replica damaged in IndexedDB behind the client's back
// is noticed when it is read back, fetched afresh, and counted.
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
  const raw = await idb(indexedDB.open('checksums-web'))
  const tx = raw.transaction('rows', 'readwrite')
  const store = tx.objectStore('rows')
  const damaged = await idb(store.get(['items', '["50"]']))
  damaged.row.title = 'tampered'
  store.put(damaged)
  store.delete(['items', '["51"]'])
  await new Promise((resolve, reject) => { tx.oncomplete = resolve; tx.onerror = () => reject(tx.error) })
  raw.close()

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
