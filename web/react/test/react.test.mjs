// @ferrite/react against a real Ferrite server, in Node with jsdom (the DOM React renders into)
// and fake-indexeddb (an in-memory IndexedDB, where the client keeps its replica) — or PGlite,
// with FERRITE_STORE=pglite. Run by
// crates/ferrite/tests/e2e/web_react.rs, which builds the client and the bindings aside and sets
// REACT_DIST, CLIENT_DIST, FERRITE_URL and DATABASE_URL.
import 'fake-indexeddb/auto'
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { JSDOM } from 'jsdom'
import pg from 'pg'

// Visible, as a page in use is (a hidden document pauses the shape streams).
const dom = new JSDOM('<!doctype html><html><body></body></html>', { url: 'http://localhost/', pretendToBeVisual: true })
globalThis.window = dom.window
globalThis.document = dom.window.document
// (Newer Node versions have a navigator of their own, as a getter.)
Object.defineProperty(globalThis, 'navigator', { value: dom.window.navigator, configurable: true, writable: true })
globalThis.IS_REACT_ACT_ENVIRONMENT = true

const React = await import('react')
const { createRoot } = await import('react-dom/client')
const { act, createElement: h, StrictMode } = React
const reactDist = new URL(`${process.env.REACT_DIST ?? '../dist'}/`, import.meta.url)
const clientDist = new URL(`${process.env.CLIENT_DIST ?? '../../client/dist'}/`, import.meta.url)
const { FerriteProvider, useShape, useLiveQuery, useMutation, useSyncStatus, useOfflineState, ConnectionStatus, SyncButton, OfflineIndicator } = await import(new URL('index.js', reactDist))
const { FerriteClient, pgliteStore } = await import(new URL('index.js', clientDist))

/**
 * Where the clients keep their replicas: IndexedDB by default, PGlite (in memory) with
 * FERRITE_STORE=pglite — the same tests run against both stores.
 */
const PGLITE = process.env.FERRITE_STORE === 'pglite' ? await (await import('@electric-sql/pglite')).PGlite.create() : undefined
/** One PGlite database for the file, each replica in a schema named after its database. */
const STORE = PGLITE ? async (name) => pgliteStore(PGLITE, { schema: name }) : undefined

const BASE = process.env.FERRITE_URL
let db
let n = 0
/** A database name of its own per test (the replicas are in one in-memory IndexedDB). */
const database = () => `react-test-${process.pid}-${++n}`

before(async () => {
  assert.ok(BASE, 'FERRITE_URL must be set')
  db = new pg.Client({ connectionString: process.env.DATABASE_URL })
  await db.connect()
})
after(async () => { await db?.end() })

/**
 * The real `fetch`, counting the requests by path and the watches in flight, and failing while
 * `down` is set as a network outage does (a TypeError, no response).
 */
function network() {
  const net = { down: false, requests: [], watching: 0, maxWatching: 0 }
  net.fetch = async (input, init) => {
    const url = String(input instanceof Request ? input.url : input)
    net.requests.push(url)
    if (net.down) throw new TypeError('fetch failed')
    const watch = url.includes('/v1/watch')
    if (watch) net.maxWatching = Math.max(net.maxWatching, ++net.watching)
    try {
      return await fetch(input, init)
    } finally {
      if (watch) net.watching--
    }
  }
  return net
}

/** Renders `element` into a fresh container; returns it with its root. */
async function render(element) {
  const container = document.createElement('div')
  document.body.append(container)
  const root = createRoot(container)
  await act(async () => root.render(element))
  return { container, root }
}

/** Waits (letting React and the client run) until `fn()` holds. */
async function until(what, fn, timeoutMs = 15_000) {
  const start = Date.now()
  for (;;) {
    let last
    try {
      last = await fn()
      if (last === true) return
    } catch (e) {
      last = e
    }
    if (Date.now() - start > timeoutMs) {
      throw new Error(`timed out waiting for ${what}; last: ${last instanceof Error ? last.stack : JSON.stringify(last)}; the page: ${document.body.innerHTML.slice(-500)}`)
    }
    await act(async () => { await new Promise((r) => setTimeout(r, 20)) })
  }
}

const text = (container, id) => container.querySelector(`[data-testid="${id}"]`)?.textContent

function Items({ id }) {
  const { rows, loaded } = useShape('items')
  const names = rows.map((r) => r.name).sort().join(',')
  return h('p', { 'data-testid': id }, loaded ? `${rows.length}:${names}` : 'loading')
}

test('a provider opens the client; components read a shape live, several of them on one stream', async () => {
  await db.query("CREATE TABLE r_items (id int PRIMARY KEY, name text NOT NULL); INSERT INTO r_items VALUES (1, 'a'), (2, 'b')")
  const net = network()
  const options = { url: BASE, database: database(), store: STORE, shapes: { items: { table: 'r_items' } }, fetch: net.fetch }
  const { container, root } = await render(
    h(FerriteProvider, { options, fallback: h('p', { 'data-testid': 'fallback' }, 'opening') },
      h(Items, { id: 'one' }), h(Items, { id: 'two' }), h(Items, { id: 'three' })),
  )
  await until('the rows', () => text(container, 'one') === '2:a,b' && text(container, 'three') === '2:a,b')
  await db.query("INSERT INTO r_items VALUES (3, 'c')")
  await until('the insert, live, in every component', () => ['one', 'two', 'three'].every((id) => text(container, id) === '3:a,b,c'))
  const initial = net.requests.filter((u) => u.includes('/v1/shape') && u.includes('offset=-1'))
  assert.equal(initial.length, 1, `one stream for three components: ${initial.join(' ')}`)
  await act(async () => root.unmount())
})

test('in strict mode (effects run twice) one client syncs, and unmounting stops it', async () => {
  await db.query("CREATE TABLE r_strict (id int PRIMARY KEY, name text NOT NULL); INSERT INTO r_strict VALUES (1, 'x')")
  const net = network()
  const options = { url: BASE, database: database(), store: STORE, shapes: { items: { table: 'r_strict' } }, fetch: net.fetch }
  const { container, root } = await render(h(StrictMode, null, h(FerriteProvider, { options }, h(Items, { id: 'rows' }))))
  await until('the rows', () => text(container, 'rows') === '1:x')
  await db.query("INSERT INTO r_strict VALUES (2, 'y')")
  await until('a live change', () => text(container, 'rows') === '2:x,y')
  assert.ok(net.maxWatching <= 1, `one client waiting for changes, not two: ${net.maxWatching} watches at once`)
  await act(async () => root.unmount())
  const made = net.requests.length
  await db.query("INSERT INTO r_strict VALUES (3, 'z')")
  await act(async () => { await new Promise((r) => setTimeout(r, 500)) })
  assert.equal(net.requests.length, made, 'nothing is requested once unmounted')
})

test('unmounting while the client is still opening leaves nothing running', async () => {
  await db.query("CREATE TABLE r_early (id int PRIMARY KEY, name text NOT NULL)")
  const net = network()
  const options = { url: BASE, database: database(), store: STORE, shapes: { items: { table: 'r_early' } }, fetch: net.fetch }
  const { root } = await render(h(FerriteProvider, { options }, h(Items, { id: 'rows' })))
  await act(async () => root.unmount())
  await act(async () => { await new Promise((r) => setTimeout(r, 500)) })
  const made = net.requests.length
  await act(async () => { await new Promise((r) => setTimeout(r, 500)) })
  assert.equal(net.requests.length, made, 'the client opened after the unmount was closed at once')
})

function Editor() {
  const { data: names } = useLiveQuery('items', (rows) => rows.map((r) => r.name).sort().join(','))
  const m = useMutation()
  return h('div', null,
    h('p', { 'data-testid': 'names' }, names),
    h('p', { 'data-testid': 'rejection' }, m.rejection ? `${m.rejection.code}: ${m.rejection.message}` : ''),
    h('button', { 'data-testid': 'add-ok', onClick: () => void m.insert('items', { id: 10, name: 'ten' }) }, 'add'),
    h('button', { 'data-testid': 'add-bad', onClick: () => void m.insert('items', { id: 11, name: '' }) }, 'add bad'),
  )
}

test('useMutation: a write shows at once and stays; a refused one is rolled back with the reason', async () => {
  await db.query("CREATE TABLE r_writes (id int PRIMARY KEY, name text NOT NULL CHECK (name <> '')); INSERT INTO r_writes VALUES (1, 'one')")
  // Writes reach the server only when the test lets them: what shows before the answer is
  // then seen for certain, however fast the server answers.
  const gate = { held: true, waiting: [] }
  const release = () => {
    gate.held = false
    for (const go of gate.waiting.splice(0)) go()
  }
  const fetchGated = async (input, init) => {
    const url = String(input instanceof Request ? input.url : input)
    if (gate.held && url.includes('/v1/transactions')) await new Promise((go) => gate.waiting.push(go))
    return fetch(input, init)
  }
  const options = { url: BASE, database: database(), store: STORE, fetch: fetchGated, shapes: { items: { table: 'r_writes' } } }
  const { container, root } = await render(h(FerriteProvider, { options }, h(Editor)))
  await until('the rows', () => text(container, 'names') === 'one')
  await act(async () => container.querySelector('[data-testid=add-ok]').click())
  await until('optimistic: visible before the server answered', () => text(container, 'names') === 'one,ten')
  release()
  await until('the write in Postgres', async () => (await db.query('SELECT count(*)::int AS n FROM r_writes WHERE id = 10')).rows[0].n === 1)
  gate.held = true
  await act(async () => container.querySelector('[data-testid=add-bad]').click())
  await until('the refused row shows until the server answers', () => text(container, 'names') === ',one,ten')
  assert.equal(text(container, 'rejection'), '', 'not answered yet')
  release()
  await until('the rejection', () => text(container, 'rejection').startsWith('constraint:'))
  await until('the roll-back', () => text(container, 'names') === 'one,ten')
  await act(async () => root.unmount())
})

function Status() {
  const s = useSyncStatus()
  const o = useOfflineState()
  const m = useMutation()
  return h('div', null,
    h('p', { 'data-testid': 'state' }, `${s.state}/${o.isOffline}/${o.pendingChanges}`),
    h(ConnectionStatus), h(SyncButton), h(OfflineIndicator),
    h('button', { 'data-testid': 'write', onClick: () => void m.insert('items', { id: 5, name: 'offline' }) }, 'write'),
  )
}

test('status hooks and components through an outage: offline with the pending count, then synced', async () => {
  await db.query("CREATE TABLE r_status (id int PRIMARY KEY, name text NOT NULL)")
  const net = network()
  const options = { url: BASE, database: database(), store: STORE, shapes: { items: { table: 'r_status' } }, fetch: net.fetch }
  const { container, root } = await render(h(FerriteProvider, { options }, h(Status)))
  await until('synced', () => text(container, 'state') === 'synced/false/0')
  assert.equal(container.querySelector('.ferrite-connection').dataset.state, 'connected')
  assert.equal(container.querySelector('.ferrite-offline'), null, 'no offline indicator while online')
  net.down = true
  await act(async () => container.querySelector('[data-testid=write]').click())
  await until('offline with one change waiting', () => text(container, 'state') === 'offline/true/1')
  assert.match(container.querySelector('.ferrite-offline').textContent, /Working offline — 1 change waiting/)
  assert.equal(container.querySelector('.ferrite-connection').dataset.state, 'disconnected')
  assert.match(container.querySelector('.ferrite-sync').textContent, /Offline \(1 pending\)/)
  net.down = false
  // "Sync now" skips the backoff.
  await act(async () => container.querySelector('.ferrite-sync').click())
  await until('synced again', () => text(container, 'state') === 'synced/false/0', 10_000)
  const { rows } = await db.query('SELECT name FROM r_status WHERE id = 5')
  assert.deepEqual(rows, [{ name: 'offline' }])
  assert.equal(container.querySelector('.ferrite-offline'), null)
  await act(async () => root.unmount())
})

test('a provider given an app-opened client leaves it open', async () => {
  await db.query("CREATE TABLE r_given (id int PRIMARY KEY, name text NOT NULL); INSERT INTO r_given VALUES (1, 'kept')")
  const client = await FerriteClient.open({ url: BASE, database: database(), store: STORE, shapes: { items: { table: 'r_given' } } })
  const { container, root } = await render(h(FerriteProvider, { client }, h(Items, { id: 'rows' })))
  await until('the rows', () => text(container, 'rows') === '1:kept')
  await act(async () => root.unmount())
  await db.query("INSERT INTO r_given VALUES (2, 'still synced')")
  await until('the app\'s client still syncing', () => client.rows('items').length === 2)
  client.close()
})
