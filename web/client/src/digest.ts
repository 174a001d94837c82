/**
 * Convergence digests, as the server and the Rust client compute them (Rust:
 * `ferrite_protocol::digest`, whose docs define the format): the number of rows and two 32-bit
 * lane sums of their hashes, so the order rows arrive in does not matter.
 *
 * Rows here hold what the Electric client parsed, so a value's canonical form follows its
 * JavaScript type: `number` → `d` + the float's bits; `bigint` (int8) → `i` + its digits;
 * `boolean` → `t`/`f`; `string` → `s` + UTF-8; arrays → `a` + elements; objects (JSON) → `o` +
 * entries sorted by key (code points); `null` → `n`. A row is its columns sorted by name, each
 * as (name, value), hashed twice with MurmurHash3 (x86, 32-bit) under two seeds.
 */

import type { Row, Value } from './values.js'

const SEED_HI = 0x9747b28c
const SEED_LO = 0x5bd1e995

/** A digest: row count and the two lane sums (unsigned 32-bit). */
export interface Digest {
  count: number
  hi: number
  lo: number
}

/** The header form, `"<count>:<hi:08x><lo:08x>"`. */
export function formatDigest(d: Digest): string {
  return `${d.count}:${d.hi.toString(16).padStart(8, '0')}${d.lo.toString(16).padStart(8, '0')}`
}

/** Parses the header form; undefined when it is not one. */
export function parseDigest(text: string): Digest | undefined {
  const m = /^(\d+):([0-9a-f]{8})([0-9a-f]{8})$/i.exec(text)
  if (!m) return undefined
  return { count: Number(m[1]), hi: parseInt(m[2], 16) >>> 0, lo: parseInt(m[3], 16) >>> 0 }
}

/** The digest of a set of rows. */
export function digestOf(rows: Iterable<Row>): Digest {
  const d: Digest = { count: 0, hi: 0, lo: 0 }
  const buf = new Bytes()
  for (const row of rows) {
    buf.reset()
    encodeRow(buf, row)
    const bytes = buf.view()
    d.count++
    d.hi = (d.hi + murmur3(bytes, SEED_HI)) >>> 0
    d.lo = (d.lo + murmur3(bytes, SEED_LO)) >>> 0
  }
  return d
}

/** Rows hashed between two yields of {@link digestInSlices}: a few milliseconds of work. */
const SLICE_ROWS = 1000

/**
 * {@link digestOf} in slices, yielding to the event loop between them, so a large shape's check
 * never holds the page for long. `rows` must not change meanwhile (pass a copy of the list: the
 * rows themselves are replaced, not changed, when they change). Rejects when `signal` aborts.
 */
export async function digestInSlices(rows: readonly Row[], signal?: AbortSignal): Promise<Digest> {
  const d: Digest = { count: 0, hi: 0, lo: 0 }
  for (let start = 0; start < rows.length; start += SLICE_ROWS) {
    if (start > 0) await new Promise((r) => setTimeout(r, 0))
    signal?.throwIfAborted()
    const part = digestOf(rows.slice(start, start + SLICE_ROWS))
    d.count += part.count
    d.hi = (d.hi + part.hi) >>> 0
    d.lo = (d.lo + part.lo) >>> 0
  }
  return d
}

/** Code-point order (what Rust's byte order of UTF-8 is), not UTF-16 unit order. */
function byCodePoint(a: string, b: string): number {
  const ia = a[Symbol.iterator]()
  const ib = b[Symbol.iterator]()
  for (;;) {
    const x = ia.next()
    const y = ib.next()
    if (x.done || y.done) return x.done && y.done ? 0 : x.done ? -1 : 1
    const cx = x.value.codePointAt(0)!
    const cy = y.value.codePointAt(0)!
    if (cx !== cy) return cx - cy
  }
}

function encodeRow(out: Bytes, row: Row): void {
  const names = Object.keys(row).sort(byCodePoint)
  for (const name of names) {
    out.str(0x73, name)
    encodeValue(out, row[name])
  }
}

function encodeValue(out: Bytes, v: Value | undefined): void {
  if (v === null || v === undefined) return out.byte(0x6e)
  switch (typeof v) {
    case 'boolean':
      return out.byte(v ? 0x74 : 0x66)
    case 'number':
      return out.float(v)
    case 'bigint':
      return out.str(0x69, v.toString())
    case 'string':
      return out.str(0x73, v)
  }
  if (Array.isArray(v)) {
    out.byte(0x61)
    out.u32(v.length)
    for (const item of v) encodeValue(out, item)
    return
  }
  const entries = Object.entries(v as Record<string, Value>).sort((a, b) => byCodePoint(a[0], b[0]))
  out.byte(0x6f)
  out.u32(entries.length)
  for (const [k, item] of entries) {
    out.str(0x73, k)
    encodeValue(out, item)
  }
}

/** A growable byte buffer for one row's canonical bytes. */
class Bytes {
  #buf = new Uint8Array(256)
  #view = new DataView(this.#buf.buffer)
  #len = 0
  static #encoder = new TextEncoder()

  reset(): void {
    this.#len = 0
  }

  view(): Uint8Array {
    return this.#buf.subarray(0, this.#len)
  }

  #room(n: number): void {
    if (this.#len + n <= this.#buf.length) return
    let size = this.#buf.length * 2
    while (size < this.#len + n) size *= 2
    const next = new Uint8Array(size)
    next.set(this.#buf.subarray(0, this.#len))
    this.#buf = next
    this.#view = new DataView(next.buffer)
  }

  byte(b: number): void {
    this.#room(1)
    this.#buf[this.#len++] = b
  }

  u32(n: number): void {
    this.#room(4)
    this.#view.setUint32(this.#len, n >>> 0, true)
    this.#len += 4
  }

  float(n: number): void {
    this.#room(9)
    this.#buf[this.#len++] = 0x64
    if (Number.isNaN(n)) {
      this.#view.setUint32(this.#len, 0, true)
      this.#view.setUint32(this.#len + 4, 0x7ff80000, true)
    } else {
      this.#view.setFloat64(this.#len, n === 0 ? 0 : n, true)
    }
    this.#len += 8
  }

  str(tag: number, s: string): void {
    // UTF-8 takes at most 3 bytes per UTF-16 unit.
    this.#room(5 + s.length * 3)
    this.#buf[this.#len] = tag
    const { written } = Bytes.#encoder.encodeInto(s, this.#buf.subarray(this.#len + 5))
    this.#view.setUint32(this.#len + 1, written, true)
    this.#len += 5 + written
  }
}

/** MurmurHash3, x86 32-bit (the same as the Rust side's). */
export function murmur3(data: Uint8Array, seed: number): number {
  const c1 = 0xcc9e2d51
  const c2 = 0x1b873593
  let h = seed >>> 0
  const n = data.length
  const blocks = n & ~3
  for (let i = 0; i < blocks; i += 4) {
    let k = data[i] | (data[i + 1] << 8) | (data[i + 2] << 16) | (data[i + 3] << 24)
    k = Math.imul(k, c1)
    k = (k << 15) | (k >>> 17)
    k = Math.imul(k, c2)
    h ^= k
    h = (h << 13) | (h >>> 19)
    h = (Math.imul(h, 5) + 0xe6546b64) | 0
  }
  let k = 0
  switch (n & 3) {
    case 3:
      k ^= data[blocks + 2] << 16
    // falls through
    case 2:
      k ^= data[blocks + 1] << 8
    // falls through
    case 1:
      k ^= data[blocks]
      k = Math.imul(k, c1)
      k = (k << 15) | (k >>> 17)
      k = Math.imul(k, c2)
      h ^= k
  }
  h ^= n
  h ^= h >>> 16
  h = Math.imul(h, 0x85ebca6b)
  h ^= h >>> 13
  h = Math.imul(h, 0xc2b2ae35)
  h ^= h >>> 16
  return h >>> 0
}
