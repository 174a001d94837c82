// The wire types of Ferrite's write protocol and client settings, generated from the Rust
// definitions in crates/ferrite-protocol (run `FERRITE_WRITE_TS=1 cargo test -p ferrite-protocol
// --test typescript`). Do not edit by hand.

/** Column values as they travel: Postgres text, or null for SQL NULL. */
export type Values = Record<string, string | null>;

export type TransactionsRequest = { 
/**
 * Stable id of one client install.
 */
client_id: string, 
/**
 * Transactions in the order the client made them.
 */
transactions: Array<ClientTransaction>, };

export type ClientTransaction = { 
/**
 * Per-client, strictly increasing, at most `i64::MAX`; at or below the last seen id it is a
 * retry.
 */
id: number, 
/**
 * The client's clock when it made the transaction (`"<unix_ms>-<counter>"` on the wire).
 */
hlc: string, 
/**
 * The changes, in order.
 */
mutations: Array<Mutation>, };

export type Mutation = { "op": "insert", 
/**
 * `name` (schema `public`) or `schema.name`, as in `?table=`.
 */
table: string, 
/**
 * Its values, the primary key included.
 */
value: Values, } | { "op": "update", 
/**
 * The table, as for inserts.
 */
table: string, 
/**
 * Primary-key columns → values.
 */
key: Values, 
/**
 * The changed columns → new values.
 */
value: Values, 
/**
 * The values the client last saw for those columns (required by server-wins).
 */
base?: Values | null, } | { "op": "delete", 
/**
 * The table, as for inserts.
 */
table: string, 
/**
 * Primary-key columns → values.
 */
key: Values, 
/**
 * The row as the client last saw it (required by server-wins).
 */
base?: Values | null, };

export type TransactionsResponse = { 
/**
 * The results.
 */
results: Array<TransactionResult>, };

export type TransactionResult = { 
/**
 * The client transaction's id.
 */
id: number, 
/**
 * `applied`, `merged` or `rejected`.
 */
status: Status, 
/**
 * Postgres xid (as a decimal string) of the transaction that committed it.
 */
txid?: string | null, 
/**
 * For `merged`: where the conflict policy kept other values.
 */
overridden?: Array<Overridden>, 
/**
 * For `rejected`: why.
 */
error?: Rejection | null, 
/**
 * `true` when it committed but changed no row (every change lost to the policy, or hit a
 * row already gone): its txid will not come back through any shape. Sent only when true
 * (an extension of the contract: absent means rows changed).
 */
unchanged?: boolean, };

export type Status = "applied" | "merged" | "rejected";

export type Overridden = { 
/**
 * Table as the client named it.
 */
table: string, 
/**
 * The row's primary key.
 */
key: Values, 
/**
 * Columns that kept other values.
 */
columns: Array<string>, };

export type Rejection = { 
/**
 * Machine-readable reason.
 */
code: RejectionCode, 
/**
 * Human-readable reason (Postgres's own message for constraint violations).
 */
message: string, 
/**
 * The table of the offending mutation, when there is one.
 */
table?: string | null, 
/**
 * The key of the offending row, when known.
 */
key?: Values | null, 
/**
 * For `conflict`: the row as the server has it (`null` when it is gone), when the caller's
 * read rule admits it.
 */
current?: Record<string, string | null> | null, };

export type RejectionCode = "forbidden" | "constraint" | "conflict" | "invalid" | "clock_skew";

export type ClientConfig = { 
/**
 * Most transactions in one `POST /v1/transactions`.
 */
sync_batch_size: number, 
/**
 * Most changes in one transaction (a bigger one is rejected).
 */
max_mutations_per_transaction?: number, 
/**
 * Most changes in one request of several transactions.
 */
max_mutations_per_request?: number, 
/**
 * How many unsent transactions a client keeps before refusing new ones.
 */
max_offline_queue: number, 
/**
 * How far (ms) a client's clock may run ahead of the server's.
 */
max_clock_skew_ms: number, 
/**
 * Seconds a presence member stays without a heartbeat.
 */
presence_ttl_secs: number, 
/**
 * Whether requests need a token.
 */
auth_mode: AuthMode, };

export type AuthMode = "insecure" | "jwt";
