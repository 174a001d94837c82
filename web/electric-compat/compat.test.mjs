// Drives the official @electric-sql/client against a running Ferrite server.
// Needs FERRITE_URL (http://host:port) and DATABASE_URL (the database Ferrite follows).
// Run by the Rust test `crates/ferrite/tests/e2e/electric_client.rs`, which starts both.

import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { ShapeStream, Shape, FetchError } from '@electric-sql/client'
import pg from 'pg'
import { waitFor } from './wait.mjs'

const BASE = process.env.FERRITE_URL
const SHAPE_URL = `${BASE}/v1/shape`
let db

before(async () => {
  assert.ok(BASE, 'FERRITE_URL must be set')
  db = new pg.Client({ connectionString: process.env.DATABASE_URL })
  await db.connect()
})
after(async () => { await db?.end() })


function sortById(rows) { return [...rows].sort((a, b) => Number(a.id) - Number(b.id)) }

async function sqlRows(sql, params = []) {
  const r = await db.query(sql, params)
  return r.rows
}

function closeAll(...streams) {
  for (const s of streams) s.unsubscribeAll?.()
}

test('initial sync and live updates over long-poll', async () => {
  await db.query(`CREATE TABLE lp_items (id int PRIMARY KEY, title text, n int4)`)
  await db.query(`INSERT INTO lp_items SELECT g, 'item ' || g, g FROM generate_series(1, 25) g`)
  const controller = new AbortController()
  const stream = new ShapeStream({ url: SHAPE_URL, params: { table: 'lp_items' }, signal: controller.signal })
  const shape = new Shape(stream)
  const rows = await shape.rows
  assert.equal(rows.length, 25)
  assert.deepEqual(sortById(rows)[0], { id: 1, title: 'item 1', n: 1 })
  assert.ok(stream.shapeHandle, 'handle known')

  await db.query(`INSERT INTO lp_items VALUES (100, 'new', 7)`)
  await db.query(`UPDATE lp_items SET title = 'changed' WHERE id = 1`)
  await db.query(`DELETE FROM lp_items WHERE id = 2`)
  await waitFor('live changes', () => {
    const cur = shape.currentRows
    return cur.length === 25 && cur.some((r) => r.id === 100) &&
      cur.find((r) => r.id === 1)?.title === 'changed' && !cur.some((r) => r.id === 2)
  })
  assert.ok(!String(stream.lastOffset).startsWith('0_'), `live offsets are real log offsets, got ${stream.lastOffset}`)
  controller.abort()
})

test('live updates over SSE', async () => {
  await db.query(`CREATE TABLE sse_items (id int PRIMARY KEY, title text)`)
  await db.query(`INSERT INTO sse_items VALUES (1, 'a'), (2, 'b')`)
  const controller = new AbortController()
  const stream = new ShapeStream({ url: SHAPE_URL, params: { table: 'sse_items' }, liveSse: true, signal: controller.signal })
  const shape = new Shape(stream)
  assert.equal((await shape.rows).length, 2)
  for (let i = 3; i <= 6; i++) await db.query(`INSERT INTO sse_items VALUES ($1, 'x')`, [i])
  await db.query(`UPDATE sse_items SET title = 'z' WHERE id = 1`)
  await waitFor('SSE changes', () => shape.currentRows.length === 6 && shape.currentRows.find((r) => r.id === 1).title === 'z')
  // A second burst after the first up-to-date (the client resumes from global_last_seen_lsn).
  await db.query(`INSERT INTO sse_items VALUES (7, 'y')`)
  await db.query(`DELETE FROM sse_items WHERE id = 2`)
  await waitFor('second SSE burst', () => shape.currentRows.length === 6 && shape.currentRows.some((r) => r.id === 7))
  controller.abort()
})

test('a transaction bigger than a chunk comes in (gzipped) pieces, up-to-date only at its end', async () => {
  // The test server's chunk_bytes is 10 000: this transaction (~35 kB of messages) is served in
  // several responses. (Like with Electric, a Shape that is up to date shows the first piece of
  // a new batch at once; up-to-date, and so a settled Shape, only ever follows a whole transaction.)
  await db.query(`CREATE TABLE big_items (id int PRIMARY KEY, payload text)`)
  await db.query(`INSERT INTO big_items VALUES (1, 'first')`)
  const controller = new AbortController()
  const watch = async (liveSse) => {
    // Node's fetch asks for gzip: note what each response came as.
    const seen = { inserted: 0, pieces: 0, last: 0, atUpToDate: [], encodings: [] }
    const fetchClient = async (...args) => {
      const r = await fetch(...args)
      seen.encodings.push(`${r.headers.get('content-type')?.split(';')[0]} ${r.headers.get('content-encoding')}`)
      return r
    }
    const stream = new ShapeStream({ url: SHAPE_URL, params: { table: 'big_items' }, liveSse, signal: controller.signal, fetchClient })
    const shape = new Shape(stream)
    assert.equal((await shape.rows).length, 1)
    stream.subscribe((messages) => {
      let piece = false
      for (const m of messages) {
        if (m.headers.operation === 'insert' && m.value.id >= 1000) { seen.inserted++; piece = true }
        if (m.headers.last) seen.last++
        if (m.headers.control === 'up-to-date') seen.atUpToDate.push(seen.inserted)
      }
      if (piece) seen.pieces++
    })
    return { shape, seen }
  }
  const [longPoll, sse] = [await watch(false), await watch(true)]
  await db.query(`INSERT INTO big_items SELECT g, repeat('p', 200) FROM generate_series(1000, 1099) g`)
  for (const { shape, seen } of [longPoll, sse]) {
    await waitFor('the big transaction', () => shape.currentRows.length === 101 && shape.isUpToDate)
    assert.ok(seen.atUpToDate.every((n) => n === 0 || n === 100), `up-to-date inside the transaction: ${seen.atUpToDate}`)
    assert.equal(seen.last, 1, 'one message ends the transaction')
  }
  assert.ok(longPoll.seen.pieces >= 3, `long-poll responses carrying the transaction: ${longPoll.seen.pieces}`)
  // The pieces came gzipped (decoded by fetch), the SSE stream too.
  assert.ok(longPoll.seen.encodings.includes('application/json gzip'), longPoll.seen.encodings.join('; '))
  assert.ok(sse.seen.encodings.includes('text/event-stream gzip'), sse.seen.encodings.join('; '))
  // A new reader catches up through the pieces.
  const fresh = new Shape(new ShapeStream({ url: SHAPE_URL, params: { table: 'big_items' }, signal: controller.signal }))
  assert.equal((await fresh.rows).length, 101)
  controller.abort()
})

test('where clause with params, and column selection', async () => {
  await db.query(`CREATE TABLE wp_items (id int PRIMARY KEY, status text, priority int, secret text)`)
  await db.query(`INSERT INTO wp_items SELECT g, CASE WHEN g % 2 = 0 THEN 'open' ELSE 'done' END, g % 5, 's' FROM generate_series(1, 40) g`)
  const controller = new AbortController()
  const stream = new ShapeStream({
    url: SHAPE_URL,
    params: { table: 'wp_items', where: 'status = $1 AND priority >= $2', params: ['open', '3'], columns: ['id', 'status', 'priority'] },
    signal: controller.signal,
  })
  const shape = new Shape(stream)
  const expected = await sqlRows(`SELECT id, status, priority FROM wp_items WHERE status = 'open' AND priority >= 3 ORDER BY id`)
  assert.deepEqual(sortById(await shape.rows), expected)
  assert.ok(!('secret' in (await shape.rows)[0]), 'unselected column is not synced')
  // Move a row in and another out of the where clause.
  await db.query(`UPDATE wp_items SET priority = 4 WHERE id = 2`)   // moves in
  await db.query(`UPDATE wp_items SET status = 'done' WHERE id = 4`) // moves out
  await waitFor('move in/out', async () => {
    const want = await sqlRows(`SELECT id, status, priority FROM wp_items WHERE status = 'open' AND priority >= 3 ORDER BY id`)
    return JSON.stringify(sortById(shape.currentRows)) === JSON.stringify(want)
  })
  controller.abort()
})

test('replica full sends whole rows and old values', async () => {
  await db.query(`CREATE TABLE rf_items (id int PRIMARY KEY, a text, b text)`)
  await db.query(`INSERT INTO rf_items VALUES (1, 'a1', 'b1')`)
  const controller = new AbortController()
  const stream = new ShapeStream({ url: SHAPE_URL, params: { table: 'rf_items', replica: 'full' }, signal: controller.signal })
  const updates = []
  let upToDate = false
  stream.subscribe((msgs) => {
    for (const m of msgs) {
      if (m.headers?.operation === 'update') updates.push(m)
      if (m.headers?.control === 'up-to-date') upToDate = true
    }
  })
  await waitFor('first up-to-date', () => upToDate)
  await db.query(`UPDATE rf_items SET a = 'a2' WHERE id = 1`)
  await waitFor('update', () => updates.length === 1)
  assert.deepEqual(updates[0].value, { id: 1, a: 'a2', b: 'b1' })
  assert.deepEqual(updates[0].old_value, { a: 'a1' })
  controller.abort()
})

test("offset 'now' skips history", async () => {
  await db.query(`CREATE TABLE now_items (id int PRIMARY KEY)`)
  await db.query(`INSERT INTO now_items SELECT generate_series(1, 10)`)
  // Make sure the shape exists (and its snapshot is done) before asking for 'now'.
  const warm = new AbortController()
  await new Shape(new ShapeStream({ url: SHAPE_URL, params: { table: 'now_items' }, signal: warm.signal })).rows
  warm.abort()
  const controller = new AbortController()
  const stream = new ShapeStream({ url: SHAPE_URL, params: { table: 'now_items' }, offset: 'now', signal: controller.signal })
  const seen = []
  stream.subscribe((msgs) => { for (const m of msgs) if (m.headers?.operation) seen.push(m.value.id) })
  await waitFor('up to date', () => stream.isUpToDate)
  await db.query(`INSERT INTO now_items VALUES (11)`)
  await waitFor('the new row only', () => seen.includes(11))
  assert.deepEqual(seen, [11])
  controller.abort()
})

test("log 'changes_only' with requestSnapshot", async () => {
  await db.query(`CREATE TABLE co_items (id int PRIMARY KEY, grp text)`)
  await db.query(`INSERT INTO co_items SELECT g, CASE WHEN g <= 5 THEN 'a' ELSE 'b' END FROM generate_series(1, 10) g`)
  const controller = new AbortController()
  const stream = new ShapeStream({ url: SHAPE_URL, params: { table: 'co_items' }, log: 'changes_only', signal: controller.signal })
  const shape = new Shape(stream)
  await waitFor('up to date', () => stream.isUpToDate)
  assert.equal(shape.currentRows.length, 0, 'no initial snapshot in changes_only mode')
  const { data } = await stream.requestSnapshot({ where: `grp = 'a'`, orderBy: 'id DESC', limit: 3 })
  assert.deepEqual(data.map((m) => m.value.id), [5, 4, 3])
  await waitFor('snapshot rows in shape', () => shape.currentRows.length === 3)
  await db.query(`INSERT INTO co_items VALUES (50, 'a')`)
  await waitFor('live change after snapshot', () => shape.currentRows.some((r) => r.id === 50))
  controller.abort()
})

test('resume from a saved handle and offset', async () => {
  await db.query(`CREATE TABLE rs_items (id int PRIMARY KEY)`)
  await db.query(`INSERT INTO rs_items SELECT generate_series(1, 5)`)
  const c1 = new AbortController()
  const s1 = new ShapeStream({ url: SHAPE_URL, params: { table: 'rs_items' }, signal: c1.signal })
  await new Shape(s1).rows
  const handle = s1.shapeHandle
  const offset = s1.lastOffset
  c1.abort()
  await db.query(`INSERT INTO rs_items VALUES (6), (7)`)
  const c2 = new AbortController()
  const s2 = new ShapeStream({ url: SHAPE_URL, params: { table: 'rs_items' }, handle, offset, signal: c2.signal })
  const seen = []
  s2.subscribe((msgs) => { for (const m of msgs) if (m.headers?.operation) seen.push(m.value.id) })
  await waitFor('resumed changes', () => seen.length >= 2 && s2.isUpToDate)
  assert.deepEqual(seen.sort(), [6, 7], 'only the rows written after the saved offset')
  assert.equal(s2.shapeHandle, handle, 'same shape, no refetch')
  c2.abort()
})

test('shape DELETE rotates the handle: 409 then a full resync', async () => {
  await db.query(`CREATE TABLE del_items (id int PRIMARY KEY, v text)`)
  await db.query(`INSERT INTO del_items VALUES (1, 'a'), (2, 'b')`)
  const controller = new AbortController()
  const stream = new ShapeStream({ url: SHAPE_URL, params: { table: 'del_items' }, signal: controller.signal })
  const shape = new Shape(stream)
  assert.equal((await shape.rows).length, 2)
  const oldHandle = stream.shapeHandle
  const res = await fetch(`${SHAPE_URL}?table=del_items&handle=${oldHandle}`, { method: 'DELETE' })
  assert.equal(res.status, 202)
  await db.query(`INSERT INTO del_items VALUES (3, 'c')`)
  await waitFor('resync under a new handle', () =>
    stream.shapeHandle && stream.shapeHandle !== oldHandle && shape.currentRows.length === 3)
  controller.abort()
})

test('multi-type table parsing', async () => {
  await db.query(`CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy')`)
  await db.query(`CREATE TABLE mt_items (
    id int8 PRIMARY KEY, small int2, num numeric(8,3), f float8, flag bool, tags text[], grid int4[],
    meta jsonb, doc json, m mood, at timestamptz, d date, u uuid, note text)`)
  await db.query(`INSERT INTO mt_items VALUES (9007199254740993, 3, 12.5, 1.25, true, '{a,"b c",NULL}', '{1,2,3}',
    '{"k": [1, 2]}', '{"x": "y"}', 'happy', '2024-01-02 03:04:05+00', '2024-02-29', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', NULL)`)
  const controller = new AbortController()
  const stream = new ShapeStream({ url: SHAPE_URL, params: { table: 'mt_items' }, signal: controller.signal })
  const shape = new Shape(stream)
  const [row] = await shape.rows
  assert.equal(row.id, 9007199254740993n, 'int8 → BigInt')
  assert.equal(row.small, 3)
  assert.equal(row.num, '12.500', 'numeric stays a string')
  assert.equal(row.f, 1.25)
  assert.equal(row.flag, true)
  assert.deepEqual(row.tags, ['a', 'b c', null])
  assert.deepEqual(row.grid, [1, 2, 3])
  assert.deepEqual(row.meta, { k: [1, 2] })
  assert.deepEqual(row.doc, { x: 'y' })
  assert.equal(row.m, 'happy')
  assert.equal(row.at, '2024-01-02 03:04:05+00')
  assert.equal(row.d, '2024-02-29')
  assert.equal(row.u, 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11')
  assert.equal(row.note, null)
  await db.query(`UPDATE mt_items SET flag = false, tags = '{}' WHERE id = 9007199254740993`)
  await waitFor('live typed update', () => shape.currentRows[0]?.flag === false && shape.currentRows[0]?.tags.length === 0)
  controller.abort()
})

test('bad requests get Electric-style 400s', async () => {
  const cases = [
    ['table=no_such_table&offset=-1', 'table'],
    ['table=lp_items&offset=abc', 'offset'],
    ['table=lp_items&offset=-1&where=id%20%3D%3D%3D%201', 'where'],
    ['table=lp_items&offset=-1&columns=title', 'columns'],
  ]
  for (const [q, field] of cases) {
    const res = await fetch(`${SHAPE_URL}?${q}`)
    assert.equal(res.status, 400, q)
    const body = await res.json()
    assert.equal(body.message, 'Invalid request')
    assert.ok(body.errors[field], `${q}: errors.${field} in ${JSON.stringify(body)}`)
  }
  // The stream only starts once something subscribes; a 400 is not retried and reaches onError.
  let seen
  const stream = new ShapeStream({ url: SHAPE_URL, params: { table: 'no_such_table' }, onError: (e) => { seen = e } })
  stream.subscribe(() => {}, () => {})
  await waitFor('client surfaces the 400', () => seen instanceof FetchError && seen.status === 400 && stream.error === seen)
  assert.match(JSON.stringify(seen.json), /does not exist/)
})
