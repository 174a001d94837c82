// Unit tests of the client's pure logic (run after `tsc`, against dist/). The browser-facing
// parts — IndexedDB, the shape streams, the outbox against a real server — are exercised in
// Chromium by web/editor/tests.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { backoffDelay, parseRetryAfter, BACKOFF_SCHEDULE_MS } from '../dist/backoff.js'
import { nextHlc, parseHlc, formatHlc, compareHlc } from '../dist/hlc.js'
import { overlay, isCovered, visibleInSnapshot, applyMutation } from '../dist/outbox.js'
import { toPgText, keyOf, rowToText } from '../dist/values.js'
import { jwtExpiry, jwtClaims } from '../dist/transport.js'

test('backoff follows 1/2/5/10/30 s with ±20 % jitter and honours Retry-After', () => {
  assert.deepEqual(BACKOFF_SCHEDULE_MS, [1000, 2000, 5000, 10000, 30000])
  assert.equal(backoffDelay(0, 0, 0.5), 1000)
  assert.equal(backoffDelay(0, 0, 0), 800)
  assert.equal(backoffDelay(0, 0, 0.999999), 1200)
  assert.equal(backoffDelay(2, 0, 0.5), 5000)
  assert.equal(backoffDelay(4, 0, 0.5), 30000)
  assert.equal(backoffDelay(99, 0, 0.5), 30000, 'the last step repeats')
  assert.equal(backoffDelay(0, 7000, 0.5), 7000, 'never sooner than Retry-After')
  assert.equal(parseRetryAfter('5'), 5000)
  assert.equal(parseRetryAfter(null), 0)
  assert.equal(parseRetryAfter('soon'), 0)
  assert.equal(parseRetryAfter(new Date(10_000).toUTCString(), 4_000), 6000)
})

test('HLC stamps never go backwards', () => {
  const a = nextHlc(undefined, 1000)
  assert.equal(formatHlc(a), '1000-0')
  const b = nextHlc(a, 1000)
  assert.equal(formatHlc(b), '1000-1')
  const c = nextHlc(b, 900) // the wall clock went back
  assert.equal(formatHlc(c), '1000-2')
  assert.equal(formatHlc(nextHlc(c, 2000)), '2000-0')
  assert.equal(compareHlc(parseHlc('5-1'), parseHlc('5-0')), 1)
  assert.equal(parseHlc('12'), undefined)
})

test('values travel as Postgres text', () => {
  assert.equal(toPgText('x'), 'x')
  assert.equal(toPgText(1.5), '1.5')
  assert.equal(toPgText(10n), '10')
  assert.equal(toPgText(true), 't')
  assert.equal(toPgText(null), null)
  assert.equal(toPgText({ a: [1, 'b'] }), '{"a":[1,"b"]}')
  assert.deepEqual(rowToText({ id: 'u', n: 3, c: { run: 'x' } }), { id: 'u', n: '3', c: '{"run":"x"}' })
  assert.equal(keyOf({ id: 7, other: 1 }, ['id']), '["7"]')
  assert.throws(() => keyOf({ other: 1 }, ['id']), /primary key column "id"/)
})

const row = (id, name, x = 0) => ({ id, name, x })
const txn = (mutations, extra = {}) => ({ hlc: '1-0', mutations, createdAt: 0, state: 'queued', covered: [], ...extra })

test('the overlay replays pending writes over server rows, and rebases under server changes', () => {
  const server = new Map([['["a"]', row('a', 'A')], ['["b"]', row('b', 'B')]])
  const pending = [
    txn([{ op: 'update', shape: 'steps', key: '["a"]', keyValues: { id: 'a' }, value: { name: 'A2' } }]),
    txn([{ op: 'insert', shape: 'steps', key: '["c"]', value: row('c', 'C') }]),
    txn([{ op: 'delete', shape: 'steps', key: '["b"]', keyValues: { id: 'b' } }]),
    txn([{ op: 'insert', shape: 'comments', key: '["z"]', value: { id: 'z' } }]),
  ]
  const v = overlay(server, pending, 'steps')
  assert.deepEqual([...v.keys()].sort(), ['["a"]', '["c"]'])
  assert.equal(v.get('["a"]').name, 'A2')
  // A server change to another column of a row with a pending write shows under it.
  server.set('["a"]', row('a', 'A-server', 50))
  const v2 = overlay(server, pending, 'steps')
  assert.deepEqual(v2.get('["a"]'), { id: 'a', name: 'A2', x: 50 })
  // No pending write touches the shape: the server rows themselves.
  assert.equal(overlay(server, [], 'steps'), server)
  // An update of a row that is gone changes nothing.
  assert.equal(applyMutation(undefined, pending[0].mutations[0]), undefined)
})

test('an answered write retires once every shape it touched has shown it', () => {
  const t = txn(
    [
      { op: 'delete', shape: 'steps', key: '["a"]', keyValues: { id: 'a' } },
      { op: 'insert', shape: 'comments', key: '["z"]', value: { id: 'z' } },
      { op: 'insert', shape: 'audit', key: '["q"]', value: { id: 'q' } },
    ],
    { state: 'answered', txid: '900' },
  )
  const synced = (s) => s !== 'audit'
  const lsn = { steps: '100', comments: '90' }
  assert.equal(isCovered(t, synced, (s) => lsn[s]), false)
  t.covered.push('steps')
  t.seenLsn = '95'
  assert.equal(isCovered(t, synced, (s) => lsn[s]), false, 'comments is not past 95 yet')
  lsn.comments = '95'
  assert.equal(isCovered(t, synced, (s) => lsn[s]), true, 'comments is up to date past it: it had nothing of it')
  assert.equal(isCovered({ ...t, state: 'queued' }, synced, (s) => lsn[s]), false, 'not before the server answered')
})

test('snapshot visibility follows Postgres, with 32-bit wraparound', () => {
  assert.equal(visibleInSnapshot(99, 100n, 110n, []), true)
  assert.equal(visibleInSnapshot(105, 100n, 110n, []), true)
  assert.equal(visibleInSnapshot(105, 100n, 110n, [105n]), false)
  assert.equal(visibleInSnapshot(110, 100n, 110n, []), false)
  const epoch = 1n << 32n
  assert.equal(visibleInSnapshot(0xffffffff, epoch + 5n, epoch + 10n, []), true)
  assert.equal(visibleInSnapshot(7, epoch + 5n, epoch + 10n, []), true)
  assert.equal(visibleInSnapshot(12, epoch + 5n, epoch + 10n, []), false)
})

test('JWT claims and expiry are read without verifying', () => {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url')
  const token = `${b64({ alg: 'HS256' })}.${b64({ sub: 'u1', exp: 1700000000, name: 'Zoë' })}.sig`
  assert.equal(jwtExpiry(token), 1700000000 * 1000)
  assert.equal(jwtClaims(token).name, 'Zoë')
  assert.equal(jwtExpiry('garbage'), undefined)
})

test('relational shapes: a move-out drops the rows no alternative keeps, a move-in restores conditions', async () => {
  const { TagIndex, tagsHold, tagSlots } = await import('../dist/tags.js')
  // (x IN S AND plain) OR y IN T: positions 0, 1, 2; alternatives {0, 1} and {2}.
  const both = { tags: ['a/1/', '//b'], active: [true, true, true] }
  assert.ok(tagsHold(both))
  assert.deepEqual(tagSlots(both), [[0, 'a'], [1, '1'], [2, 'b']])
  const index = new TagIndex([
    ['r1', both],
    ['r2', { tags: ['a/1/'], active: [true, true, false] }],
    ['r3', { tags: ['c/1/'], active: [true, true, false] }],
  ])
  let moved = index.move(0, 'a', false)
  assert.deepEqual(moved, { left: ['r2'], changed: ['r1'] }, 'r1 stays through its second alternative')
  assert.equal(index.states.has('r2'), false)
  assert.deepEqual(index.states.get('r1').active, [false, true, true])
  moved = index.move(0, 'a', true)
  assert.deepEqual(moved, { left: [], changed: ['r1'] })
  assert.deepEqual(index.states.get('r1').active, [true, true, true])
  assert.deepEqual(index.move(0, 'zzz', false), { left: [], changed: [] }, 'a value no row has')
  index.delete('r3')
  assert.deepEqual(index.move(0, 'c', false), { left: [], changed: [] }, 'forgotten rows are not indexed')
})

test('include trees: params renumbered outside literals, links through foreign keys', async () => {
  const { shiftParams, linkWhere, parseTable } = await import('../dist/tree.js')
  assert.equal(shiftParams("a = $1 AND b = '$1' AND \"$2\" = $2 -- $1\n/* $3 */ $tag$ $1 $tag$", 2),
    "a = $3 AND b = '$1' AND \"$2\" = $4 -- $1\n/* $3 */ $tag$ $1 $tag$")
  assert.equal(shiftParams('a$1 = $10', 1), 'a$1 = $11')
  assert.deepEqual(parseTable('steps'), ['public', 'steps'])
  assert.deepEqual(parseTable('app."Odd.Name"'), ['app', 'Odd.Name'])
  const fk = (name, table, columns, references, referenced) => ({ name, table: ['public', table], columns, references: ['public', references], referenced_columns: referenced })
  const parent = { table: ['public', 'steps'], where: 'pipeline_id = $1', params: ['7'] }
  const keys = [fk('from', 'connections', ['from_step_id'], 'steps', ['id']), fk('to', 'connections', ['to_step_id'], 'steps', ['id'])]
  assert.equal(linkWhere(parent, ['public', 'connections'], keys, undefined, 'c'),
    '("from_step_id" IN (SELECT "id" FROM "public"."steps" WHERE pipeline_id = $1)) OR ("to_step_id" IN (SELECT "id" FROM "public"."steps" WHERE pipeline_id = $1))')
  assert.equal(linkWhere(parent, ['public', 'connections'], keys, 'to', 'c'),
    '"to_step_id" IN (SELECT "id" FROM "public"."steps" WHERE pipeline_id = $1)')
  const comments = { table: ['public', 'comments'], params: [] }
  assert.equal(linkWhere(comments, ['public', 'users'], [fk('author', 'comments', ['user_id'], 'users', ['id'])], undefined, 'u'),
    '"id" IN (SELECT "user_id" FROM "public"."comments")')
  assert.throws(() => linkWhere(comments, ['public', 'teams'], [], undefined, 'teams'), /no foreign key links/)
})

test('include trees: shown only where every member is complete, a rebuilt snapshot included', async () => {
  const { commonPoint } = await import('../dist/tree.js')
  const at = (end, complete, snapshotAt) => ({ end, complete, snapshotAt })
  assert.equal(commonPoint([at(95n, 100n), at(90n, 120n)]), 100n)
  // A member rebuilt from a snapshot ended by an up-to-date at 200 may hold a card whose board
  // came at 150: not shown beside a member complete only up to 100.
  assert.equal(commonPoint([at(95n, 100n), at(0n, 200n, 200n)]), undefined)
  assert.equal(commonPoint([at(160n, 200n), at(0n, 200n, 200n)]), 200n)
  assert.equal(commonPoint([at(95n, 100n), at(150n, 200n)]), undefined)
  assert.equal(commonPoint([at(95n, 100n), at(0n, undefined)]), undefined)
  assert.equal(commonPoint([]), undefined)
})

test('include trees: the top rows per parent, NULLs last', async () => {
  const { topRows } = await import('../dist/tree.js')
  const rows = new Map([
    ['a', { id: 1, p: 1, n: 5 }], ['b', { id: 2, p: 1, n: 9 }], ['c', { id: 3, p: 1, n: null }],
    ['d', { id: 4, p: 2, n: 1 }], ['e', { id: 5, p: 1, n: 7 }],
  ])
  const top = topRows(rows, { partition: ['p'], orderBy: [{ column: 'n', desc: true }], limit: 2 })
  assert.deepEqual([...top.keys()].sort(), ['b', 'd', 'e'])
  const asc = topRows(rows, { partition: ['p'], orderBy: [{ column: 'n' }], limit: 4 })
  assert.deepEqual([...asc.keys()], ['a', 'e', 'b', 'c', 'd'], 'ascending, the NULL last')
})

test("a watch entry is the shape's next request: its definition, handle and offset, nothing else", async () => {
  const { nextQuery } = await import('../dist/watch.js')
  const url = 'http://s/v1/shape?table=steps&where=pipeline_id+%3D+%241&params%5B1%5D=7&columns=id%2Cname&offset=0_0&handle=old&live=true&cursor=12&log=full'
  const q = new URLSearchParams(nextQuery(url, 'h-2', '26959872_3'))
  assert.deepEqual([...q.keys()].sort(), ['columns', 'handle', 'log', 'offset', 'params[1]', 'table', 'where'])
  assert.equal(q.get('where'), 'pipeline_id = $1')
  assert.equal(q.get('params[1]'), '7')
  assert.equal(q.get('handle'), 'h-2')
  assert.equal(q.get('offset'), '26959872_3')
})
