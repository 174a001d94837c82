/**
 * `@ferrite/client`: a browser client for Ferrite.
 *
 * ```ts
 * import { FerriteClient } from '@ferrite/client'
 *
 * const client = await FerriteClient.open({
 *   url: location.origin,
 *   database: `my-app:${userId}`,
 *   token: async () => (await fetch('/my/token')).text(),
 *   shapes: { todos: { table: 'todos' }, users: { table: 'users', live: false } },
 * })
 * client.on('change', () => render(client.rows('todos')))
 * client.on('status', (s) => showIndicator(s))
 * client.on('rejected', (r) => toast(r.message))
 * await client.transaction((tx) => tx.update('todos', { id }, { done: true }))
 * ```
 *
 * See {@link FerriteClient} for what is synced, stored and retried, and how.
 */

export { FerriteClient, NoRowError, QueueFullError, DEFAULT_CHECKSUM_INTERVAL_MS } from './client.js'
export type { ChecksumStats, ClientEvents, FerriteClientOptions, LostChange, Merge, Rejection, SyncStatus, TransactionWriter } from './client.js'
export type { ChecksumOutcome, ShapeOptions } from './shape.js'
export { digestOf, formatDigest, parseDigest, murmur3 } from './digest.js'
export type { Digest } from './digest.js'
export type { LocalStore, Loaded, ShapeRecord, StoreFactory, WriteBatch } from './storage.js'
export { pgliteStore, encodeStored, decodeStored } from './pglite-store.js'
export type { PGliteLike, PGliteStoreOptions, PGliteTx } from './pglite-store.js'
export type { PendingTransaction, Mutation } from './outbox.js'
export { LiveRows } from './live-rows.js'
export type { LiveRowsHost, LiveRowsListener } from './live-rows.js'
export { PresenceRoom } from './presence.js'
export type { PresenceMember } from './presence.js'
export { Transport, jwtClaims, jwtExpiry } from './transport.js'
export { Watcher, nextQuery } from './watch.js'
export type { ConnectionState, IssuedToken, TokenSource, TransportError } from './transport.js'
export { DevSignInError, devToken, devTokenSource, devUsers } from './dev-sign-in.js'
export { BACKOFF_SCHEDULE_MS, backoffDelay, parseRetryAfter } from './backoff.js'
/** The wire types of the write protocol and `/v1/config`, generated from the server's Rust definitions. */
export type * as protocol from './protocol.js'
export { compareHlc, formatHlc, nextHlc, parseHlc } from './hlc.js'
export { overlay, isCovered, visibleInSnapshot, applyMutation } from './outbox.js'
export { keyOf, keyValues, rowToText, toPgText } from './values.js'
export { TagIndex, tagSlots, tagsHold } from './tags.js'
export { TreeSync, compileTree, linkWhere, parseTable, shiftParams, topRows } from './tree.js'
export type { ForeignKey, IncludeOptions, MemberOptions, TopRows, TreeHost, TreeOptions } from './tree.js'
export type { TagState } from './tags.js'
export type { Row, TextValues, Value } from './values.js'
