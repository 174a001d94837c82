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

/** `GET /v1/foreign-keys` for a `[schema, name]`, as a tree compiles with it. */
function foreignKeysOf(transport) {
  return async ([schema, name]) => {
    const r = await transport.fetch(`${BASE}/v1/foreign-keys?table=${encodeURIComponent(`${schema}.${name}`)}`)
    assert.equal(r.status, 200)
    return (await r.json()).foreign_keys
  }
}

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

// Both ways a shape waits for changes: its own long-poll, or the client's one watch request.
for (const mode of ['long-poll', 'watch']) test(`an include tree is shown only at common points of the log (${mode})`, async () => {
  const { Watcher } = await import(new URL('watch.js', dist))
  const p = mode === 'watch' ? 'trw_' : 'tr_'
  const { TreeSync, compileTree } = await import(new URL('tree.js', dist))
  await db.query(`
    CREATE TABLE ${p}users (id int PRIMARY KEY, name text NOT NULL);
    CREATE TABLE ${p}pipelines (id int PRIMARY KEY, name text NOT NULL);
    CREATE TABLE ${p}steps (id int PRIMARY KEY, pipeline_id int NOT NULL REFERENCES ${p}pipelines (id) ON DELETE CASCADE, name text);
    CREATE TABLE ${p}connections (id int PRIMARY KEY,
      from_step_id int NOT NULL REFERENCES ${p}steps (id) ON DELETE CASCADE,
      to_step_id int NOT NULL REFERENCES ${p}steps (id) ON DELETE CASCADE);
    CREATE TABLE ${p}comments (id int PRIMARY KEY, pipeline_id int NOT NULL REFERENCES ${p}pipelines (id), user_id int NOT NULL REFERENCES ${p}users (id), body text);
    INSERT INTO ${p}users SELECT i, 'user ' || i FROM generate_series(1, 6) i;
    INSERT INTO ${p}pipelines VALUES (1, 'build'), (2, 'deploy');
    INSERT INTO ${p}steps SELECT i, 1 + i % 2, 'step ' || i FROM generate_series(1, 20) i;
    INSERT INTO ${p}connections SELECT i, i, i + 2 FROM generate_series(1, 18) i;
    INSERT INTO ${p}comments SELECT i, 1 + i % 2, 1 + i % 5, 'c' || i FROM generate_series(1, 10) i;`)
  // Held requests, by kind: shape long-polls and watches.
  const held = { live: 0, watch: 0 }
  const transport = new Transport({
    fetch: (input, init) => {
      if (String(input).includes('live=true')) held.live++
      if (String(input).includes('/v1/watch')) held.watch++
      return globalThis.fetch(input, init)
    },
  })
  const foreignKeys = foreignKeysOf(transport)
  const members = await compileTree('workspace', {
    table: `${p}pipelines`, where: 'id = $1', params: ['1'],
    include: {
      steps: { table: `${p}steps`, include: { connections: { table: `${p}connections` } } },
      comments: { table: `${p}comments`, include: { authors: { table: `${p}users` } } },
    },
  }, foreignKeys)
  assert.deepEqual(members.map(([n]) => n).sort(), ['authors', 'comments', 'connections', 'steps', 'workspace'])
  assert.match(members.find(([n]) => n === 'connections')[1].where, / OR /)
  const applied = []
  const closed = new AbortController()
  const host = {
    url: BASE, transport, pollIntervalMs: 1000,
    watcher: mode === 'watch' ? new Watcher(BASE, transport, closed.signal) : undefined,
    applyBatches: async (batches, makeVisible) => { applied.push(batches.length); makeVisible() },
    shapeError: (_shape, reason) => { if (reason) throw new Error(reason) },
  }
  const tree = new TreeSync('workspace', members, { records: new Map(), rows: new Map(), tags: new Map() }, host)
  const ids = (m) => [...tree.visible.get(m).values()].map((r) => Number(r.id)).sort((a, b) => a - b)
  const whole = (when) => {
    const steps = new Set(ids('steps'))
    for (const c of tree.visible.get('connections').values()) {
      assert.ok(steps.has(Number(c.from_step_id)) || steps.has(Number(c.to_step_id)), `${when}: a connection without its steps`)
    }
    const authors = new Set(ids('authors'))
    for (const c of tree.visible.get('comments').values()) {
      assert.ok(authors.has(Number(c.user_id)), `${when}: a comment without its author (${c.user_id})`)
    }
  }
  let checks = 0
  tree.onApplied = () => { whole(`step ${++checks}`) }
  const oracle = async () => {
    const q = async (sql) => (await db.query(sql)).rows.map((r) => Number(r.id)).sort((a, b) => a - b)
    return {
      steps: await q(`SELECT id FROM ${p}steps WHERE pipeline_id = 1`),
      connections: await q(`SELECT id FROM ${p}connections WHERE from_step_id IN (SELECT id FROM ${p}steps WHERE pipeline_id = 1) OR to_step_id IN (SELECT id FROM ${p}steps WHERE pipeline_id = 1)`),
      comments: await q(`SELECT id FROM ${p}comments WHERE pipeline_id = 1`),
      authors: await q(`SELECT id FROM ${p}users WHERE id IN (SELECT user_id FROM ${p}comments WHERE pipeline_id = 1)`),
    }
  }
  const shown = () => ({ steps: ids('steps'), connections: ids('connections'), comments: ids('comments'), authors: ids('authors') })
  tree.start()
  try {
    await waitFor('the tree', () => tree.upToDate)
    assert.deepEqual(shown(), await oracle())
    // A writer changes the tree while it syncs: every point shown is whole.
    for (let i = 100; i < 160; i++) {
      const sql = [
        `BEGIN; INSERT INTO ${p}steps VALUES (${i}, 1, 'new'); INSERT INTO ${p}connections SELECT ${i}, min(id), ${i} FROM ${p}steps WHERE pipeline_id = 1 AND id <> ${i} HAVING min(id) IS NOT NULL; COMMIT;`,
        `DELETE FROM ${p}steps WHERE id = (SELECT min(id) FROM ${p}steps WHERE pipeline_id = 1)`,
        `UPDATE ${p}steps SET pipeline_id = 3 - pipeline_id WHERE id = (SELECT max(id) FROM ${p}steps)`,
        `INSERT INTO ${p}comments VALUES (${i}, 1, 1 + ${i} % 6, 'c')`,
      ][i % 4]
      await db.query(sql)
      await new Promise((r) => setTimeout(r, 10))
    }
    const expected = await oracle()
    await waitFor('the tree to catch up', () => JSON.stringify(shown()) === JSON.stringify(expected))
    whole('at rest')
    assert.ok(checks > 1, `the tree moved on ${checks} times`)
    if (mode === 'watch') assert.ok(held.live === 0 && held.watch > 0, `only watches are held: ${JSON.stringify(held)}`)
    else assert.ok(held.live > 0 && held.watch === 0, JSON.stringify(held))
  } finally {
    tree.stop()
    closed.abort()
  }
})

// A member rebuilt from a snapshot (here: found to differ from the server's digest) is held until
// the others reach a common point; what is then shown of it is its rows as of that point, not
// rows that reached it while the tree waited.
test("a rebuilt tree member is shown as of the tree's common point", async () => {
  const { TreeSync, compileTree } = await import(new URL('tree.js', dist))
  await db.query(`
    CREATE TABLE rb_boards (id int PRIMARY KEY, name text NOT NULL);
    CREATE TABLE rb_cards (id int PRIMARY KEY, board_id int NOT NULL REFERENCES rb_boards (id), title text);
    INSERT INTO rb_boards VALUES (1, 'one');
    INSERT INTO rb_cards SELECT i, 1, 'card ' || i FROM generate_series(1, 10) i;`)
  const transport = new Transport({})
  const members = await compileTree('board', { table: 'rb_boards', where: 'id = $1', params: ['1'], include: { cards: { table: 'rb_cards' } } }, foreignKeysOf(transport))
  // The apply that shows the rebuilt member waits at this gate until the test opens it.
  let open
  const gate = new Promise((r) => { open = r })
  let gated = false
  const outcomes = []
  const host = {
    url: BASE, transport, pollIntervalMs: 1000, checksumIntervalMs: 0,
    checked: (shape, outcome) => outcomes.push({ shape, ...outcome }),
    applyBatches: async (batches, makeVisible) => {
      if (batches.some((b) => b.replaced && b.shape === 'cards') && outcomes.some((o) => !o.ok)) {
        gated = true
        await gate
      }
      makeVisible()
    },
    shapeError: (_shape, reason) => { if (reason) throw new Error(reason) },
  }
  const tree = new TreeSync('board', members, { records: new Map(), rows: new Map(), tags: new Map() }, host)
  const cards = () => [...tree.visible.get('cards').values()].map((r) => Number(r.id)).sort((a, b) => a - b)
  let firstAfterRepair
  tree.onApplied = () => { if (gated && firstAfterRepair === undefined) firstAfterRepair = cards() }
  tree.start()
  try {
    await waitFor('the tree', () => tree.upToDate && cards().length === 10)
    // The member's rows damaged in memory: its next check finds it and fetches it afresh.
    const member = tree.members.get('cards')
    member.rows.delete([...member.rows.keys()][0])
    await db.query(`INSERT INTO rb_cards VALUES (11, 1, 'eleven')`)
    await waitFor('the rebuilt member to wait at the gate', () => gated)
    // Reaches the member while the tree waits: after the common point being shown.
    await db.query(`INSERT INTO rb_cards VALUES (12, 1, 'twelve')`)
    await waitFor('the member to hold card 12', () => [...member.rows.values()].some((r) => Number(r.id) === 12))
    open()
    await waitFor('the repaired tree to show card 12', () => cards().includes(12))
    assert.ok(!firstAfterRepair.includes(12), `the point shown after the repair holds a later card: ${firstAfterRepair}`)
    for (let i = 1; i <= 10; i++) assert.ok(firstAfterRepair.includes(i), `card ${i} repaired: ${firstAfterRepair}`)
    assert.ok(outcomes.some((o) => o.shape === 'cards' && o.action === 'refetch'), JSON.stringify(outcomes))
  } finally {
    tree.stop()
  }
})

test('a tree include with a limit shows the top rows per parent, exactly', async () => {
  const { TreeSync, compileTree } = await import(new URL('tree.js', dist))
  await db.query(`
    CREATE TABLE top_docs (id int PRIMARY KEY, name text NOT NULL);
    CREATE TABLE top_versions (id int PRIMARY KEY, doc_id int NOT NULL REFERENCES top_docs (id), n int NOT NULL);
    INSERT INTO top_docs VALUES (1, 'a'), (2, 'b');
    INSERT INTO top_versions SELECT i, 1 + i % 2, i FROM generate_series(1, 12) i;`)
  const transport = new Transport({})
  const foreignKeys = foreignKeysOf(transport)
  await assert.rejects(
    compileTree('d', { table: 'top_docs', include: { versions: { table: 'top_versions', limit: 3 } } }, foreignKeys),
    /a limit needs an orderBy/,
  )
  const members = await compileTree('docs', {
    table: 'top_docs',
    include: { versions: { table: 'top_versions', limit: 3, orderBy: [{ column: 'n', desc: true }] } },
  }, foreignKeys)
  const host = {
    url: BASE, transport, pollIntervalMs: 1000,
    applyBatches: async (_batches, makeVisible) => { makeVisible() },
    shapeError: (_shape, reason) => { if (reason) throw new Error(reason) },
  }
  const tree = new TreeSync('docs', members, { records: new Map(), rows: new Map(), tags: new Map() }, host)
  const shown = () => [...tree.visible.get('versions').values()].map((v) => Number(v.n)).sort((a, b) => b - a)
  tree.start()
  try {
    await waitFor('the tree', () => tree.upToDate && tree.visible.get('versions').size > 0)
    assert.deepEqual(shown(), [12, 11, 10, 9, 8, 7])
    await db.query('DELETE FROM top_versions WHERE n IN (12, 9)')
    await waitFor('the next ones to take their places', () => JSON.stringify(shown()) === JSON.stringify([11, 10, 8, 7, 6, 5]))
  } finally {
    tree.stop()
  }
})

/** A seeded pseudo-random generator (mulberry32): `next(n)` is an integer in [0, n). */
function random(seed) {
  let a = seed >>> 0
  return (n) => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return Math.floor((((t ^ (t >>> 14)) >>> 0) / 4294967296) * n)
  }
}

// The tree against Postgres after every batch of random changes, as the Rust client's property
// test does: the root is the pipelines Ann has access to (a membership subquery), and the batches
// grant and revoke access, add steps with connections, delete and re-parent steps, re-point
// connections, add, move and delete comments. Each point the tree shows is whole, and after each
// batch it equals the SQL join. FERRITE_TREE_SEED replays a run, FERRITE_TREE_BATCHES runs longer.
test('a tree with random membership changes and re-parenting equals Postgres after every batch', async () => {
  const { TreeSync, compileTree } = await import(new URL('tree.js', dist))
  const { Watcher } = await import(new URL('watch.js', dist))
  const seeds = process.env.FERRITE_TREE_SEED ? [Number(process.env.FERRITE_TREE_SEED)] : [1, 5]
  const batches = Number(process.env.FERRITE_TREE_BATCHES ?? 20)
  for (const seed of seeds) {
    const p = `tp${seed}_`
    await db.query(`
      CREATE TABLE ${p}users (id int PRIMARY KEY, name text NOT NULL);
      CREATE TABLE ${p}pipelines (id int PRIMARY KEY, name text NOT NULL);
      CREATE TABLE ${p}access (pipeline_id int REFERENCES ${p}pipelines (id) ON DELETE CASCADE, user_id text, PRIMARY KEY (pipeline_id, user_id));
      CREATE TABLE ${p}steps (id int PRIMARY KEY, pipeline_id int NOT NULL REFERENCES ${p}pipelines (id) ON DELETE CASCADE, name text);
      CREATE TABLE ${p}connections (id int PRIMARY KEY,
        from_step_id int NOT NULL REFERENCES ${p}steps (id) ON DELETE CASCADE,
        to_step_id int NOT NULL REFERENCES ${p}steps (id) ON DELETE CASCADE);
      CREATE TABLE ${p}comments (id int PRIMARY KEY, pipeline_id int NOT NULL REFERENCES ${p}pipelines (id) ON DELETE CASCADE, user_id int NOT NULL REFERENCES ${p}users (id), body text);
      INSERT INTO ${p}users SELECT i, 'user ' || i FROM generate_series(1, 6) i;
      INSERT INTO ${p}pipelines VALUES (1, 'build'), (2, 'deploy'), (3, 'docs');
      INSERT INTO ${p}access VALUES (1, 'ann'), (2, 'bob');
      INSERT INTO ${p}steps SELECT i, 1 + i % 3, 'step ' || i FROM generate_series(1, 20) i;
      INSERT INTO ${p}connections SELECT i, i, i + 2 FROM generate_series(1, 18) i;
      INSERT INTO ${p}comments SELECT i, 1 + i % 3, 1 + i % 5, 'c' || i FROM generate_series(1, 10) i;`)
    const anns = `SELECT pipeline_id FROM ${p}access WHERE user_id = 'ann'`
    const transport = new Transport({})
    const members = await compileTree('pipelines', {
      table: `${p}pipelines`, where: `id IN (${anns})`,
      include: {
        steps: { table: `${p}steps`, include: { connections: { table: `${p}connections` } } },
        comments: { table: `${p}comments`, include: { authors: { table: `${p}users` } } },
      },
    }, foreignKeysOf(transport))
    const closed = new AbortController()
    const host = {
      url: BASE, transport, pollIntervalMs: 1000,
      watcher: new Watcher(BASE, transport, closed.signal),
      applyBatches: async (_batches, makeVisible) => { makeVisible() },
      shapeError: (_shape, reason) => { if (reason) throw new Error(reason) },
    }
    const tree = new TreeSync('pipelines', members, { records: new Map(), rows: new Map(), tags: new Map() }, host)
    const ids = (m) => [...tree.visible.get(m).values()].map((r) => Number(r.id)).sort((a, b) => a - b)
    const shown = () => ({ pipelines: ids('pipelines'), steps: ids('steps'), connections: ids('connections'), comments: ids('comments'), authors: ids('authors') })
    tree.onApplied = () => {
      const pipelines = new Set(ids('pipelines'))
      const steps = new Set(ids('steps'))
      const authors = new Set(ids('authors'))
      for (const s of tree.visible.get('steps').values()) assert.ok(pipelines.has(Number(s.pipeline_id)), `seed ${seed}: a step without its pipeline`)
      for (const c of tree.visible.get('connections').values()) assert.ok(steps.has(Number(c.from_step_id)) || steps.has(Number(c.to_step_id)), `seed ${seed}: a connection without its steps`)
      for (const c of tree.visible.get('comments').values()) assert.ok(authors.has(Number(c.user_id)), `seed ${seed}: a comment without its author`)
    }
    const oracle = async () => {
      const q = async (sql) => (await db.query(sql)).rows.map((r) => Number(r.id)).sort((a, b) => a - b)
      const steps = `SELECT id FROM ${p}steps WHERE pipeline_id IN (${anns})`
      return {
        pipelines: await q(`SELECT id FROM ${p}pipelines WHERE id IN (${anns})`),
        steps: await q(steps),
        connections: await q(`SELECT id FROM ${p}connections WHERE from_step_id IN (${steps}) OR to_step_id IN (${steps})`),
        comments: await q(`SELECT id FROM ${p}comments WHERE pipeline_id IN (${anns})`),
        authors: await q(`SELECT id FROM ${p}users WHERE id IN (SELECT user_id FROM ${p}comments WHERE pipeline_id IN (${anns}))`),
      }
    }
    const next = random(seed)
    let id = 1000
    tree.start()
    try {
      await waitFor('the tree', () => tree.upToDate)
      for (let batch = 0; batch < batches; batch++) {
        for (let t = 0; t < 1 + next(4); t++) {
          const statements = []
          for (let k = 0; k < 1 + next(4); k++) {
            id++
            const [a, u] = [1 + next(3), 1 + next(6)]
            const pick = (table) => `(SELECT id FROM ${p}${table} ORDER BY md5(id::text || '${id}') LIMIT 1)`
            statements.push([
              `INSERT INTO ${p}steps VALUES (${id}, ${a}, 's'); INSERT INTO ${p}connections SELECT ${id}, min(id), ${id} FROM ${p}steps WHERE id <> ${id} HAVING min(id) IS NOT NULL`,
              `DELETE FROM ${p}steps WHERE id = ${pick('steps')}`,
              `UPDATE ${p}steps SET pipeline_id = ${a} WHERE id = ${pick('steps')}`,
              `UPDATE ${p}connections SET to_step_id = ${pick('steps')} WHERE id = ${pick('connections')} AND EXISTS (SELECT 1 FROM ${p}steps)`,
              `INSERT INTO ${p}comments VALUES (${id}, ${a}, ${u}, 'c')`,
              `DELETE FROM ${p}comments WHERE id = ${pick('comments')}`,
              `UPDATE ${p}comments SET user_id = ${u}, pipeline_id = ${a} WHERE id = (SELECT min(id) FROM ${p}comments)`,
              `INSERT INTO ${p}access VALUES (${a}, 'ann') ON CONFLICT DO NOTHING`,
              `DELETE FROM ${p}access WHERE pipeline_id = ${a} AND user_id = 'ann'`,
            ][next(9)])
          }
          await db.query(`BEGIN; ${statements.join('; ')}; COMMIT;`)
        }
        const want = await oracle()
        await waitFor(`seed ${seed}, batch ${batch}: the tree to equal Postgres`, () => JSON.stringify(shown()) === JSON.stringify(want), 10_000)
          .catch(async (e) => {
            // What each member and the server say, to tell a stuck server from a wrong client.
            const states = []
            for (const [name, m] of tree.members) {
              const q = new URLSearchParams({ table: m.options.table, where: m.options.where ?? '', offset: m.record.offset, handle: m.record.handle ?? '' })
              const r = await fetch(`${BASE}/v1/shape?${q}`)
              const body = await r.text()
              states.push(`${name}: upToDate ${m.upToDate} offset ${m.record.offset} -> ${r.status} offset ${r.headers.get('electric-offset')} complete ${r.headers.get('ferrite-complete-lsn')} utd ${r.headers.get('electric-up-to-date')} body ${body.slice(0, 300)}`)
            }
            states.push(`health ${await (await fetch(`${BASE}/v1/health`)).text()}`)
            throw new Error(`${e.message}\nwant ${JSON.stringify(want)}\ngot  ${JSON.stringify(shown())}\nheld ${tree.held}\n${states.join('\n')}`)
          })
      }
    } finally {
      tree.stop()
      closed.abort()
    }
  }
})
