// The convergence digest computed here must equal the server's and the Rust client's
// (`ferrite_protocol::digest`): the same vectors as its unit tests.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { murmur3, digestOf, formatDigest, parseDigest } from '../dist/digest.js'

const bytes = (s) => new TextEncoder().encode(s)

test('MurmurHash3 x86_32 matches the published vectors', () => {
  assert.equal(murmur3(bytes(''), 0), 0)
  assert.equal(murmur3(bytes(''), 1), 0x514e28b7)
  assert.equal(murmur3(bytes('test'), 0), 0xba6bd213)
  assert.equal(murmur3(bytes('Hello, world!'), 0x9747b28c), 0x24884cba)
  assert.equal(murmur3(bytes('The quick brown fox jumps over the lazy dog'), 0x9747b28c), 0x2fa826cd)
})

test('a row as the Electric client parses it hashes as the Rust side hashes its text', () => {
  // Rust: digest::tests::a_known_row_hash, the same row as Postgres text.
  const row = {
    id: 42n,
    title: 'héllo',
    n: 1.5,
    done: true,
    meta: { z: [1, 2.5, 'x'], a: { k: null } },
    tags: ['one', 'two words', null],
    gone: null,
  }
  assert.equal(formatDigest(digestOf([row])), '1:9aa4a95cb278f2a1')
  // Column order and key order do not matter; NaN and -0 have one form each.
  const reordered = { gone: null, tags: ['one', 'two words', null], meta: { a: { k: null }, z: [1, 2.5, 'x'] }, done: true, n: 1.5, title: 'héllo', id: 42n }
  assert.equal(formatDigest(digestOf([reordered])), '1:9aa4a95cb278f2a1')
  assert.deepEqual(digestOf([{ x: -0 }]), digestOf([{ x: 0 }]))
  assert.deepEqual(digestOf([{ x: NaN }]), digestOf([{ x: Number.NaN }]))
})

test('digests are order-independent sums and parse back', () => {
  const rows = [{ id: 1, t: 'a' }, { id: 2, t: 'b' }, { id: 3, t: 'c' }]
  const d = digestOf(rows)
  assert.deepEqual(digestOf([rows[2], rows[0], rows[1]]), d)
  assert.equal(d.count, 3)
  assert.deepEqual(parseDigest(formatDigest(d)), d)
  assert.equal(parseDigest('3:xyz'), undefined)
  assert.notDeepEqual(digestOf([{ id: 1, t: 'a' }]), digestOf([{ id: 1, t: 'b' }]))
  // Astral characters sort by code point, as UTF-8 bytes do in Rust.
  assert.notDeepEqual(digestOf([{ '\u{1F600}': 1, '\uFFFF': 2 }]), digestOf([{ a: 1 }]))
})

test('a digest taken in slices, yielding between them, is the digest of the rows', async () => {
  const { digestOf, digestInSlices } = await import('../dist/digest.js')
  const rows = Array.from({ length: 2500 }, (_, i) => ({ id: i, title: `row ${i}`, big: BigInt(i) * 1000000007n, done: i % 3 === 0, meta: { i } }))
  assert.deepEqual(await digestInSlices(rows), digestOf(rows))
  assert.deepEqual(await digestInSlices([]), { count: 0, hi: 0, lo: 0 })
  const stop = new AbortController()
  const taking = digestInSlices(rows, stop.signal)
  stop.abort()
  await assert.rejects(taking)
})
