/**
 * Rows, keys and the text format values travel in.
 *
 * Rows are read through the official Electric client, which parses Postgres text into
 * JavaScript values (numbers, booleans, JSON for json/jsonb, strings for everything else).
 * Writes go the other way: the write protocol carries every value as Postgres text (or null),
 * so {@link toPgText} encodes what the app wrote.
 */

/** A JSON-compatible value as the Electric client parses it. */
export type Value = string | number | boolean | bigint | null | Value[] | { [key: string]: Value }

/** One row: column name → value. */
export type Row = Record<string, Value>

/** Column values as the write protocol carries them: Postgres text, or null for SQL NULL. */
export type TextValues = Record<string, string | null>

/**
 * The Postgres text form of a value: strings as they are, numbers and bigints in decimal,
 * booleans as `t`/`f`, arrays and objects as JSON text (for json/jsonb columns), null as null.
 *
 * Array columns (e.g. `text[]`) need Postgres array literals; pass those as strings.
 */
export function toPgText(v: Value | undefined): string | null {
  if (v === null || v === undefined) return null
  switch (typeof v) {
    case 'string':
      return v
    case 'number':
      if (!Number.isFinite(v)) return Number.isNaN(v) ? 'NaN' : v > 0 ? 'Infinity' : '-Infinity'
      return String(v)
    case 'bigint':
      return v.toString()
    case 'boolean':
      return v ? 't' : 'f'
    default:
      return JSON.stringify(v, (_k, x) => (typeof x === 'bigint' ? x.toString() : x))
  }
}

/** Every value of a row as Postgres text. */
export function rowToText(row: Row): TextValues {
  const out: TextValues = {}
  for (const [k, v] of Object.entries(row)) out[k] = toPgText(v)
  return out
}

/**
 * The local identity of a row: the JSON array of its primary-key values as text, in key order.
 * Throws when a key column is missing, naming it.
 */
export function keyOf(row: Row, keyColumns: readonly string[]): string {
  return JSON.stringify(
    keyColumns.map((c) => {
      if (!(c in row) || row[c] === null || row[c] === undefined) {
        throw new Error(`the row has no value for its primary key column ${JSON.stringify(c)}`)
      }
      return toPgText(row[c])
    }),
  )
}

/** The primary-key columns of a row, as text (the write protocol's `key`). */
export function keyValues(row: Row, keyColumns: readonly string[]): TextValues {
  const out: TextValues = {}
  for (const c of keyColumns) out[c] = toPgText(row[c])
  return out
}
