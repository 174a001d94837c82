//! The wire messages of `POST /v1/transactions` (see `docs/write-protocol.md`), shared by the
//! server that applies them and the clients that send them.
//!
//! Parsing is strict about what the contract fixes (client id grammar, increasing ids, the
//! operation's required fields) and tolerant of unknown extra fields, so newer clients can add
//! optional ones.

use crate::hlc::Hlc;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use ts_rs::TS;

/// Column values as they travel: Postgres text format, or `None` for SQL NULL.
pub type Values = BTreeMap<String, Option<String>>;

/// A request body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, TS)]
pub struct TransactionsRequest {
    /// Stable id of one client install.
    pub client_id: String,
    /// Transactions in the order the client made them.
    pub transactions: Vec<ClientTransaction>,
}

/// One client transaction: applied all or nothing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, TS)]
pub struct ClientTransaction {
    /// Per-client, strictly increasing, at most `i64::MAX`; at or below the last seen id it is a
    /// retry.
    pub id: u64,
    /// The client's clock when it made the transaction (`"<unix_ms>-<counter>"` on the wire).
    #[ts(type = "string")]
    pub hlc: Hlc,
    /// The changes, in order.
    pub mutations: Vec<Mutation>,
}

/// One row change, tagged by `op` on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, TS)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Mutation {
    /// A new row.
    Insert {
        /// `name` (schema `public`) or `schema.name`, as in `?table=`.
        table: String,
        /// Its values, the primary key included.
        value: Values,
    },
    /// Some columns of an existing row.
    Update {
        /// The table, as for inserts.
        table: String,
        /// Primary-key columns → values.
        key: Values,
        /// The changed columns → new values.
        value: Values,
        /// The values the client last saw for those columns (required by server-wins).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        base: Option<Values>,
    },
    /// Removal of a row.
    Delete {
        /// The table, as for inserts.
        table: String,
        /// Primary-key columns → values.
        key: Values,
        /// The row as the client last saw it (required by server-wins).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        base: Option<Values>,
    },
}

impl Mutation {
    /// The table the mutation writes.
    pub fn table(&self) -> &str {
        match self {
            Mutation::Insert { table, .. } | Mutation::Update { table, .. } | Mutation::Delete { table, .. } => table,
        }
    }

    /// Where the row's primary key is read from: the inserted values, or `key`.
    pub fn key_source(&self) -> &Values {
        match self {
            Mutation::Insert { value, .. } => value,
            Mutation::Update { key, .. } | Mutation::Delete { key, .. } => key,
        }
    }

    /// The values it writes: the whole row of an insert, the changed columns of an update.
    pub fn written(&self) -> Option<&Values> {
        match self {
            Mutation::Insert { value, .. } | Mutation::Update { value, .. } => Some(value),
            Mutation::Delete { .. } => None,
        }
    }

    /// What the client says it last saw of the row.
    pub fn base(&self) -> Option<&Values> {
        match self {
            Mutation::Insert { .. } => None,
            Mutation::Update { base, .. } | Mutation::Delete { base, .. } => base.as_ref(),
        }
    }

    /// Every column it names (key, values, base), possibly more than once.
    pub fn columns(&self) -> impl Iterator<Item = &String> {
        let key = match self {
            Mutation::Insert { .. } => None,
            Mutation::Update { key, .. } | Mutation::Delete { key, .. } => Some(key),
        };
        key.into_iter().chain(self.written()).chain(self.base()).flat_map(|v| v.keys())
    }
}

/// The answer to a request: one result per transaction, in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, TS)]
pub struct TransactionsResponse {
    /// The results.
    pub results: Vec<TransactionResult>,
}

/// What happened to one client transaction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, TS)]
pub struct TransactionResult {
    /// The client transaction's id.
    pub id: u64,
    /// `applied`, `merged` or `rejected`.
    pub status: Status,
    /// Postgres xid (as a decimal string) of the transaction that committed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub txid: Option<String>,
    /// For `merged`: where the conflict policy kept other values.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub overridden: Vec<Overridden>,
    /// For `rejected`: why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Rejection>,
    /// `true` when it committed but changed no row (every change lost to the policy, or hit a
    /// row already gone): its txid will not come back through any shape. Sent only when true
    /// (an extension of the contract: absent means rows changed).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unchanged: bool,
}

/// Outcome of a client transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Every mutation took effect.
    Applied,
    /// Committed, but the conflict policy kept newer values for some columns.
    Merged,
    /// Nothing of it was applied; final.
    Rejected,
}

/// Columns of one row whose incoming values lost to the conflict policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, TS)]
pub struct Overridden {
    /// Table as the client named it.
    pub table: String,
    /// The row's primary key.
    pub key: Values,
    /// Columns that kept other values.
    pub columns: Vec<String>,
}

/// Why a transaction was rejected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, TS)]
pub struct Rejection {
    /// Machine-readable reason.
    pub code: RejectionCode,
    /// Human-readable reason (Postgres's own message for constraint violations).
    pub message: String,
    /// The table of the offending mutation, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    /// The key of the offending row, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<Values>,
    /// For `conflict`: the row as the server has it (`null` when it is gone), when the caller's
    /// read rule admits it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[ts(type = "Record<string, string | null> | null")]
    pub current: Option<Value>,
}

/// The rejection codes of the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "snake_case")]
pub enum RejectionCode {
    /// An auth rule forbids it.
    Forbidden,
    /// A Postgres constraint (FK, CHECK, UNIQUE, NOT NULL) refused it.
    Constraint,
    /// The server-wins policy found the row changed since the client's `base`.
    Conflict,
    /// Unknown table or column, a value that does not parse as its column's type, a missing key.
    Invalid,
    /// The transaction's clock is too far ahead of the server's.
    ClockSkew,
}

impl RejectionCode {
    /// The code as the wire spells it (`forbidden`, `clock_skew`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            RejectionCode::Forbidden => "forbidden",
            RejectionCode::Constraint => "constraint",
            RejectionCode::Conflict => "conflict",
            RejectionCode::Invalid => "invalid",
            RejectionCode::ClockSkew => "clock_skew",
        }
    }
}

/// Why a whole request is refused (answered 400, nothing applied).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct RequestError {
    /// JSON path of the bad field, e.g. `transactions[2].mutations[0].op`.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl RequestError {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        RequestError { field: field.into(), message: message.into() }
    }
}

/// True if `id` is a valid client id: 1–128 characters of `[A-Za-z0-9._-]`.
pub fn valid_client_id(id: &str) -> bool {
    (1..=128).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Parses and checks a request body: JSON shape, client id, increasing ids, required fields per
/// operation, at most `max_transactions` transactions. Per-table checks (columns, types, keys)
/// need the schema and happen when the transaction is applied.
pub fn parse_request(body: &[u8], max_transactions: usize) -> Result<TransactionsRequest, RequestError> {
    let raw: Value =
        serde_json::from_slice(body).map_err(|e| RequestError::new("body", format!("invalid JSON: {e}")))?;
    let Value::Object(obj) = raw else {
        return Err(RequestError::new("body", "expected a JSON object"));
    };
    let client_id = match obj.get("client_id") {
        Some(Value::String(s)) if valid_client_id(s) => s.clone(),
        Some(Value::String(_)) => {
            return Err(RequestError::new("client_id", "must be 1-128 characters of A-Z a-z 0-9 . _ -"))
        }
        Some(_) => return Err(RequestError::new("client_id", "must be a string")),
        None => return Err(RequestError::new("client_id", "is required")),
    };
    let Some(Value::Array(txns)) = obj.get("transactions") else {
        return Err(RequestError::new("transactions", "must be an array"));
    };
    if txns.len() > max_transactions {
        return Err(RequestError::new(
            "transactions",
            format!("at most {max_transactions} transactions per request (got {})", txns.len()),
        ));
    }
    let mut transactions = Vec::with_capacity(txns.len());
    let mut previous: Option<u64> = None;
    for (i, t) in txns.iter().enumerate() {
        let at = format!("transactions[{i}]");
        let txn = parse_transaction(t, &at)?;
        if previous.is_some_and(|p| txn.id <= p) {
            return Err(RequestError::new(format!("{at}.id"), "ids must increase within a request"));
        }
        previous = Some(txn.id);
        transactions.push(txn);
    }
    Ok(TransactionsRequest { client_id, transactions })
}

fn parse_transaction(v: &Value, at: &str) -> Result<ClientTransaction, RequestError> {
    let Value::Object(obj) = v else {
        return Err(RequestError::new(at, "expected an object"));
    };
    // Ids are kept as Postgres bigint: larger ones would collapse into one.
    let id =
        obj.get("id").and_then(Value::as_u64).filter(|id| i64::try_from(*id).is_ok()).ok_or_else(|| {
            RequestError::new(format!("{at}.id"), format!("must be an integer from 0 to {}", i64::MAX))
        })?;
    let hlc = match obj.get("hlc") {
        Some(Value::String(s)) => {
            s.parse::<Hlc>().map_err(|e| RequestError::new(format!("{at}.hlc"), e.to_string()))?
        }
        _ => return Err(RequestError::new(format!("{at}.hlc"), "must be a string \"<unix_ms>-<counter>\"")),
    };
    let Some(Value::Array(muts)) = obj.get("mutations") else {
        return Err(RequestError::new(format!("{at}.mutations"), "must be an array"));
    };
    if muts.is_empty() {
        return Err(RequestError::new(format!("{at}.mutations"), "must not be empty"));
    }
    let mutations = muts
        .iter()
        .enumerate()
        .map(|(j, m)| parse_mutation(m, &format!("{at}.mutations[{j}]")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ClientTransaction { id, hlc, mutations })
}

fn parse_mutation(v: &Value, at: &str) -> Result<Mutation, RequestError> {
    let Value::Object(obj) = v else {
        return Err(RequestError::new(at, "expected an object"));
    };
    let table = match obj.get("table") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        _ => return Err(RequestError::new(format!("{at}.table"), "must be a table name")),
    };
    let required = |name: &str, what: &str| -> Result<Values, RequestError> {
        match values_field(obj, name, at)? {
            Some(v) if !v.is_empty() => Ok(v),
            _ => Err(RequestError::new(format!("{at}.{name}"), what)),
        }
    };
    match obj.get("op").and_then(Value::as_str) {
        Some("insert") => Ok(Mutation::Insert { table, value: required("value", "an insert needs the row's values")? }),
        Some("update") => Ok(Mutation::Update {
            table,
            key: required("key", "an update or delete needs the row's key")?,
            value: required("value", "an update needs the changed columns")?,
            base: values_field(obj, "base", at)?,
        }),
        Some("delete") => Ok(Mutation::Delete {
            table,
            key: required("key", "an update or delete needs the row's key")?,
            base: values_field(obj, "base", at)?,
        }),
        _ => Err(RequestError::new(format!("{at}.op"), "must be \"insert\", \"update\" or \"delete\"")),
    }
}

/// A `{column: "text" | null}` object.
fn values_field(obj: &Map<String, Value>, name: &str, at: &str) -> Result<Option<Values>, RequestError> {
    let Some(v) = obj.get(name) else { return Ok(None) };
    if v.is_null() {
        return Ok(None);
    }
    let Value::Object(map) = v else {
        return Err(RequestError::new(format!("{at}.{name}"), "must be an object of column values"));
    };
    let mut out = Values::new();
    for (col, val) in map {
        let text = match val {
            Value::String(s) => Some(s.clone()),
            Value::Null => None,
            // Numbers and booleans are accepted as their JSON text, which is also their
            // Postgres text for int/numeric/float/bool columns.
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => {
                return Err(RequestError::new(
                    format!("{at}.{name}.{col}"),
                    "values travel as Postgres text (a JSON string) or null",
                ))
            }
        };
        out.insert(col.clone(), text);
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_contract_example() {
        let body = br#"{"client_id":"9b2f1c64-x","transactions":[{"id":42,"hlc":"1795012345678-0","mutations":[
            {"op":"insert","table":"steps","value":{"id":"a","name":"Build","position":1}},
            {"op":"update","table":"steps","key":{"id":"a"},"value":{"name":"Build & test"},"base":{"name":"Build"}},
            {"op":"delete","table":"connections","key":{"id":"c"}}]}]}"#;
        let r = parse_request(body, 100).unwrap();
        assert_eq!(r.client_id, "9b2f1c64-x");
        let t = &r.transactions[0];
        assert_eq!(t.id, 42);
        assert_eq!(t.hlc, "1795012345678-0".parse().unwrap());
        assert_eq!(t.mutations[0].written().unwrap()["position"].as_deref(), Some("1"));
        assert_eq!(t.mutations[1].base().unwrap()["name"].as_deref(), Some("Build"));
        assert!(matches!(&t.mutations[2], Mutation::Delete { table, .. } if table == "connections"));
        // The typed request serializes back to the same contract (what clients send).
        let again = serde_json::to_value(&r).unwrap();
        assert_eq!(again["transactions"][0]["hlc"], "1795012345678-0");
        assert_eq!(
            again["transactions"][0]["mutations"][2],
            serde_json::json!({"op": "delete", "table": "connections", "key": {"id": "c"}})
        );
        assert_eq!(serde_json::from_value::<TransactionsRequest>(again).unwrap(), r);
    }

    #[test]
    fn every_bad_field_is_named() {
        let cases: &[(&str, &str)] = &[
            ("[]", "body"),
            ("{", "body"),
            (r#"{"transactions":[]}"#, "client_id"),
            (r#"{"client_id":"a b","transactions":[]}"#, "client_id"),
            (r#"{"client_id":"a"}"#, "transactions"),
            (r#"{"client_id":"a","transactions":[{"id":-1,"hlc":"1-0","mutations":[]}]}"#, "transactions[0].id"),
            (r#"{"client_id":"a","transactions":[{"id":1,"mutations":[]}]}"#, "transactions[0].hlc"),
            (r#"{"client_id":"a","transactions":[{"id":1,"hlc":"soon","mutations":[]}]}"#, "transactions[0].hlc"),
            (r#"{"client_id":"a","transactions":[{"id":1,"hlc":"1-0","mutations":[]}]}"#, "transactions[0].mutations"),
            (
                r#"{"client_id":"a","transactions":[{"id":1,"hlc":"1-0","mutations":[{"op":"upsert","table":"t"}]}]}"#,
                "transactions[0].mutations[0].op",
            ),
            (
                r#"{"client_id":"a","transactions":[{"id":1,"hlc":"1-0","mutations":[{"op":"update","table":"t","value":{"a":"1"}}]}]}"#,
                "transactions[0].mutations[0].key",
            ),
            (
                r#"{"client_id":"a","transactions":[{"id":1,"hlc":"1-0","mutations":[{"op":"insert","table":"t","value":{"a":[1]}}]}]}"#,
                "transactions[0].mutations[0].value.a",
            ),
            (
                r#"{"client_id":"a","transactions":[{"id":2,"hlc":"1-0","mutations":[{"op":"delete","table":"t","key":{"a":"1"}}]},{"id":2,"hlc":"1-0","mutations":[{"op":"delete","table":"t","key":{"a":"1"}}]}]}"#,
                "transactions[1].id",
            ),
        ];
        for (body, field) in cases {
            let e = parse_request(body.as_bytes(), 100).unwrap_err();
            assert_eq!(e.field, *field, "{body}: {e}");
        }
        let many = format!(
            r#"{{"client_id":"a","transactions":[{}]}}"#,
            (1..=3)
                .map(|i| format!(
                    r#"{{"id":{i},"hlc":"1-0","mutations":[{{"op":"delete","table":"t","key":{{"a":"1"}}}}]}}"#
                ))
                .collect::<Vec<_>>()
                .join(",")
        );
        assert_eq!(parse_request(many.as_bytes(), 2).unwrap_err().field, "transactions");
    }

    #[test]
    fn results_serialize_as_the_contract_shows() {
        let r = TransactionResult {
            id: 44,
            status: Status::Rejected,
            txid: None,
            overridden: vec![],
            unchanged: false,
            error: Some(Rejection {
                code: RejectionCode::ClockSkew,
                message: "m".into(),
                table: None,
                key: None,
                current: None,
            }),
        };
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"id":44,"status":"rejected","error":{"code":"clock_skew","message":"m"}}"#
        );
        for code in [
            RejectionCode::Forbidden,
            RejectionCode::Constraint,
            RejectionCode::Conflict,
            RejectionCode::Invalid,
            RejectionCode::ClockSkew,
        ] {
            assert_eq!(serde_json::to_value(code).unwrap(), code.as_str());
        }
    }
}
