//! The SQLite side: each shape's rows in a local table of the same columns, and the shape's
//! position (handle, offset, cursor) in `_ferrite_shapes`, always written in the same SQLite
//! transaction as the rows it describes — so after a crash the file holds a consistent prefix of
//! the shape's log and syncing resumes exactly where that prefix ends.

use crate::shape::ShapeDef;
use crate::ClientError;
use ferrite_protocol::digest::ColumnKind;
use rusqlite::{params, Connection, OptionalExtension, ToSql};
use serde_json::{Map, Value};

/// SQLite storage class of a Postgres type, and how its text form is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Affinity {
    /// `int2`, `int4`, `int8`, `oid`: stored as SQLite integers.
    Integer,
    /// `float4`, `float8`: stored as SQLite reals.
    Real,
    /// `bool`: stored as 0/1.
    Boolean,
    /// Everything else (text, uuid, numeric — kept exact —, json, timestamps, arrays): Postgres
    /// text.
    Text,
}

impl Affinity {
    fn of(pg_type: &str, dims: u64) -> Affinity {
        if dims > 0 {
            return Affinity::Text;
        }
        match pg_type {
            "int2" | "int4" | "int8" | "oid" => Affinity::Integer,
            "float4" | "float8" => Affinity::Real,
            "bool" => Affinity::Boolean,
            _ => Affinity::Text,
        }
    }

    fn sql(self) -> &'static str {
        match self {
            Affinity::Integer | Affinity::Boolean => "INTEGER",
            Affinity::Real => "REAL",
            Affinity::Text => "TEXT",
        }
    }

    /// [`Affinity::value`] to bind, borrowing the text instead of copying it (a snapshot binds
    /// millions of values).
    pub(crate) fn bind(self, v: Option<&str>) -> rusqlite::types::ToSqlOutput<'_> {
        use rusqlite::types::{ToSqlOutput as Out, Value as V, ValueRef};
        let Some(text) = v else { return Out::Owned(V::Null) };
        let borrowed = Out::Borrowed(ValueRef::Text(text.as_bytes()));
        match self {
            Affinity::Integer => text.parse::<i64>().map_or(borrowed, |i| Out::Owned(V::Integer(i))),
            Affinity::Real => match text.parse::<f64>() {
                Ok(f) if !f.is_nan() => Out::Owned(V::Real(f)),
                _ => borrowed,
            },
            Affinity::Boolean => match text {
                "t" | "true" => Out::Owned(V::Integer(1)),
                "f" | "false" => Out::Owned(V::Integer(0)),
                _ => borrowed,
            },
            Affinity::Text => borrowed,
        }
    }

    /// The SQLite value for a Postgres text value (as the shape API sends it; `None` = NULL).
    pub(crate) fn value(self, v: Option<&str>) -> rusqlite::types::Value {
        use rusqlite::types::Value as V;
        let Some(text) = v else { return V::Null };
        match self {
            Affinity::Integer => text.parse::<i64>().map(V::Integer).unwrap_or_else(|_| V::Text(text.into())),
            // SQLite turns a NaN real into NULL: NaN stays text.
            Affinity::Real => match text.parse::<f64>() {
                Ok(f) if !f.is_nan() => V::Real(f),
                _ => V::Text(text.into()),
            },
            Affinity::Boolean => match text {
                "t" | "true" => V::Integer(1),
                "f" | "false" => V::Integer(0),
                other => V::Text(other.into()),
            },
            Affinity::Text => V::Text(text.into()),
        }
    }
}

/// One column of a shape, from the `electric-schema` header.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalColumn {
    /// Column name.
    pub name: String,
    /// How it is stored.
    pub affinity: Affinity,
    /// How its values enter the convergence digest ([`crate::checksum`]).
    pub kind: ColumnKind,
    /// Position in the primary key.
    pub pk_index: Option<u64>,
}

/// Parses an `electric-schema` header (a JSON object of column → type info, in column order).
pub fn parse_schema(header: &str) -> Result<Vec<LocalColumn>, ClientError> {
    let v: Map<String, Value> =
        serde_json::from_str(header).map_err(|e| ClientError::Protocol(format!("bad electric-schema header: {e}")))?;
    Ok(v.iter()
        .map(|(name, info)| LocalColumn {
            name: name.clone(),
            affinity: Affinity::of(info["type"].as_str().unwrap_or("text"), info["dims"].as_u64().unwrap_or(0)),
            kind: ColumnKind::of(info["type"].as_str().unwrap_or("text"), info["dims"].as_u64().unwrap_or(0)),
            pk_index: info["pk_index"].as_u64(),
        })
        .collect())
}

/// `"name"` with embedded quotes doubled.
pub fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Where a shape's sync stands, as stored.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ShapePosition {
    /// Server handle (`None` before the first response).
    pub handle: Option<String>,
    /// Offset to request next (`-1` to start over).
    pub offset: String,
    /// Live cursor from the last live response.
    pub cursor: Option<String>,
    /// `electric-schema` header the local table was created from.
    pub schema: Option<String>,
    /// Whether the last response ended up to date.
    pub up_to_date: bool,
}

/// Creates the bookkeeping table if needed.
pub fn init(db: &Connection) -> Result<(), ClientError> {
    db.execute_batch(
        "PRAGMA journal_mode = WAL;
         -- Synced rows can be fetched again: no flush per commit (local writes flush their own;
         -- see Client::write).
         PRAGMA synchronous = NORMAL;
         CREATE TABLE IF NOT EXISTS _ferrite_shapes (
             local_table TEXT PRIMARY KEY,
             definition TEXT NOT NULL,
             handle TEXT,
             offset TEXT NOT NULL DEFAULT '-1',
             cursor TEXT,
             schema TEXT,
             up_to_date INTEGER NOT NULL DEFAULT 0,
             last_sync_ms INTEGER,
             retain_ms INTEGER,
             -- The log position (LSN) this shape is known to be complete up to.
             last_lsn INTEGER);
         -- Relational shapes: why each row is in its shape (ferrite_protocol::tags::RowTags as
         -- JSON) and its key columns' values (to remove it when it moves out), by the server's
         -- row key; and the rows by tag slot, what a move event names.
         CREATE TABLE IF NOT EXISTS _ferrite_row_tags (
             local_table TEXT NOT NULL,
             row_key TEXT NOT NULL,
             key_values TEXT NOT NULL,
             tags TEXT NOT NULL,
             PRIMARY KEY (local_table, row_key));
         CREATE TABLE IF NOT EXISTS _ferrite_tag_slots (
             local_table TEXT NOT NULL,
             pos INTEGER NOT NULL,
             value TEXT NOT NULL,
             row_key TEXT NOT NULL,
             PRIMARY KEY (local_table, pos, value, row_key));
         -- A row's slots are replaced whenever its tags are recorded: found by row, not by a
         -- scan of the table's slots (which made a relational shape's sync quadratic).
         CREATE INDEX IF NOT EXISTS _ferrite_tag_slots_by_row ON _ferrite_tag_slots (local_table, row_key);",
    )?;
    if !has_column(db, "_ferrite_shapes", "last_lsn")? {
        db.execute_batch("ALTER TABLE _ferrite_shapes ADD COLUMN last_lsn INTEGER")?;
    }
    // The server's convergence digest after the last change applied (crate::checksum).
    if !has_column(db, "_ferrite_shapes", "digest")? {
        db.execute_batch("ALTER TABLE _ferrite_shapes ADD COLUMN digest TEXT")?;
    }
    Ok(())
}

/// The stored position of a shape; registers the shape on first use. A local table already used
/// by a different definition is an error (one shape per local table).
pub fn position(db: &Connection, def: &ShapeDef) -> Result<ShapePosition, ClientError> {
    let local = def.local_table();
    let canonical = def.canonical();
    let row: Option<(String, ShapePosition)> = db
        .query_row(
            "SELECT definition, handle, offset, cursor, schema, up_to_date FROM _ferrite_shapes WHERE local_table = ?1",
            [&local],
            |r| {
                let position = ShapePosition {
                    handle: r.get(1)?,
                    offset: r.get(2)?,
                    cursor: r.get(3)?,
                    schema: r.get(4)?,
                    up_to_date: r.get(5)?,
                };
                Ok((r.get(0)?, position))
            },
        )
        .optional()?;
    let retain_ms = def.retain.map(|d| d.as_millis() as i64);
    match row {
        Some((d, _)) if d != canonical => Err(ClientError::TableInUse { local_table: local, definition: d }),
        Some((_, position)) => {
            db.execute("UPDATE _ferrite_shapes SET retain_ms = ?2 WHERE local_table = ?1", params![local, retain_ms])?;
            Ok(position)
        }
        None => {
            db.execute(
                "INSERT INTO _ferrite_shapes (local_table, definition, retain_ms) VALUES (?1, ?2, ?3)",
                params![local, canonical, retain_ms],
            )?;
            Ok(ShapePosition { offset: "-1".into(), ..Default::default() })
        }
    }
}

/// One response's worth of changes to apply atomically.
pub struct Batch<'a> {
    /// The response body: a JSON array of messages (parsed here, borrowing from it).
    pub body: &'a [u8],
    /// The position after them.
    pub next: &'a ShapePosition,
    /// When it arrived (Unix ms, from the client's clock): the shape's last sync, which its
    /// retention counts from.
    pub received_ms: i64,
}

pub use ferrite_protocol::messages::Row;
use ferrite_protocol::messages::{ShapeMessage, Text};

/// A row as a JSON object (for the rare rows with pending local writes).
fn row_json(row: &Row<'_>) -> Map<String, Value> {
    row.iter()
        .map(|(k, v)| (k.to_string(), v.as_ref().map(|s| Value::String(s.to_string())).unwrap_or(Value::Null)))
        .collect()
}

/// `col = ?1 AND …` over the key columns, numbered from 1.
pub(crate) fn key_filter(keys: &[&LocalColumn]) -> String {
    keys.iter().enumerate().map(|(i, c)| format!("{} = ?{}", quote(&c.name), i + 1)).collect::<Vec<_>>().join(" AND ")
}

/// Whether `table` has `column` (replicas made by an older version lack some).
pub(crate) fn has_column(db: &Connection, table: &str, column: &str) -> Result<bool, ClientError> {
    Ok(db.query_row("SELECT count(*) FROM pragma_table_info(?1) WHERE name = ?2", [table, column], |r| {
        r.get::<_, i64>(0)
    })? > 0)
}

/// The primary-key columns, in key order.
pub(crate) fn key_columns(columns: &[LocalColumn]) -> Vec<&LocalColumn> {
    let mut pk: Vec<&LocalColumn> = columns.iter().filter(|c| c.pk_index.is_some()).collect();
    pk.sort_by_key(|c| c.pk_index);
    pk
}

/// (Re)creates the local table for a schema, dropping rows of an older shape incarnation.
fn ensure_table(tx: &rusqlite::Transaction<'_>, local: &str, columns: &[LocalColumn]) -> Result<(), ClientError> {
    let pk = key_columns(columns);
    let cols: Vec<String> = columns.iter().map(|c| format!("{} {}", quote(&c.name), c.affinity.sql())).collect();
    let key = if pk.is_empty() {
        String::new()
    } else {
        format!(", PRIMARY KEY ({})", pk.iter().map(|c| quote(&c.name)).collect::<Vec<_>>().join(", "))
    };
    tx.execute_batch(&format!(
        "DROP TABLE IF EXISTS {t}; CREATE TABLE {t} ({}{key});",
        cols.join(", "),
        t = quote(local)
    ))?;
    crate::tags::forget_table(tx, local)?;
    Ok(())
}

/// Applies a response's messages and stores the new position, in one SQLite transaction.
/// `schema` is the response's `electric-schema` (present on non-live responses): when it differs
/// from the stored one (first response, or a new shape after a 409) the local table is rebuilt.
pub fn apply(
    db: &mut Connection,
    def: &ShapeDef,
    schema: Option<&str>,
    batch: Batch<'_>,
) -> Result<usize, ClientError> {
    let tx = db.transaction()?;
    let applied = apply_in(&tx, def, schema, batch)?;
    tx.commit()?;
    Ok(applied)
}

/// [`apply`] inside the caller's SQLite transaction: several shapes' responses applied together
/// (an include tree, [`crate::tree`]) commit or fail as one.
pub fn apply_in(
    tx: &rusqlite::Transaction<'_>,
    def: &ShapeDef,
    schema: Option<&str>,
    batch: Batch<'_>,
) -> Result<usize, ClientError> {
    let local = def.local_table();
    let bad_body = |e: serde_json::Error| ClientError::Protocol(format!("response body: {e}"));
    // The body's messages as texts: plain row inserts are read in place ([`crate::fast_rows`]),
    // the rest parsed one by one.
    let body = std::str::from_utf8(batch.body).map_err(|e| ClientError::Protocol(format!("response body: {e}")))?;
    let items: Vec<&str> = if body.is_empty() {
        vec![]
    } else {
        match crate::fast_rows::split_array(body) {
            Some(items) => items,
            // Not an array: the parser says what is wrong.
            None => {
                let why = serde_json::from_str::<Vec<ShapeMessage<'_>>>(body)
                    .err()
                    .unwrap_or_else(|| serde_json::Error::io(std::io::Error::other("not a JSON array of messages")));
                return Err(bad_body(why));
            }
        }
    };
    let stored: Option<String> = tx
        .query_row("SELECT schema FROM _ferrite_shapes WHERE local_table = ?1", [&local], |r| r.get(0))
        .optional()?
        .flatten();
    let schema_text = match (schema, &stored) {
        (Some(s), Some(old)) if s == old => old.clone(),
        (Some(s), _) => {
            ensure_table(tx, &local, &parse_schema(s)?)?;
            // A new table for a new shape: rows with pending local writes start from them alone
            // (their server versions come back with the snapshot).
            tx.execute(
                "UPDATE _ferrite_shapes SET schema = ?2, digest = NULL WHERE local_table = ?1",
                params![local, s],
            )?;
            crate::outbox::restart_table(tx, &local)?;
            s.to_string()
        }
        (None, Some(old)) => old.clone(),
        (None, None)
            if items
                .iter()
                .all(|t| serde_json::from_str::<ShapeMessage<'_>>(t).is_ok_and(|m| m.headers.operation.is_none())) =>
        {
            String::new()
        }
        (None, None) => return Err(ClientError::Protocol("changes arrived before the shape's schema".into())),
    };
    let columns = if schema_text.is_empty() { vec![] } else { parse_schema(&schema_text)? };
    let mut applied = 0;
    let mut txids = vec![];
    // Rows with pending local writes exist rarely; look them up per row only then.
    let any_shadow: bool =
        tx.query_row("SELECT EXISTS (SELECT 1 FROM _ferrite_shadow WHERE local_table = ?1)", [&local], |r| r.get(0))?;
    let mut sql_cache = SqlCache::default();
    let num = |v: &Option<std::borrow::Cow<'_, str>>| v.as_deref().and_then(|x| x.parse::<i64>().ok());
    let mut last_lsn: Option<i64> = None;
    // The server's digest after the last message that carries one (a transaction's last, or
    // `snapshot-end`).
    let mut digest: Option<String> = None;
    for item in items {
        if !any_shadow {
            if let Some(insert) = crate::fast_rows::plain_insert(item) {
                insert_row(tx, &local, &columns, &insert.pairs, &mut sql_cache)?;
                applied += 1;
                continue;
            }
        }
        let m: ShapeMessage<'_> = serde_json::from_str(item).map_err(bad_body)?;
        let m = &m;
        if let Some(d) = m.headers.ferrite_digest.as_deref() {
            digest = Some(d.to_string());
        }
        if m.headers.control.as_deref() == Some("up-to-date") {
            last_lsn = last_lsn.max(num(&m.headers.global_last_seen_lsn));
        }
        if m.headers.control.as_deref() == Some("snapshot-end") {
            // Pushed transactions the snapshot already contains will not come back as changes.
            if let Some(snapshot) = m.headers.snapshot() {
                crate::outbox::cover_visible(tx, &local, &snapshot)?;
            }
        }
        if let (Some(event), Some(patterns)) = (m.headers.event.as_deref(), m.headers.patterns.as_ref()) {
            // A subquery's value left (or entered) its result: the rows it names lose (or
            // regain) that condition; those left with no alternative that holds leave.
            for key in crate::tags::apply_event(tx, &local, event == "move-in", patterns)? {
                let value: Row<'_> =
                    key.iter().map(|(k, v)| (Text(k.clone().into()), v.clone().map(|v| Text(v.into())))).collect();
                let shadow = if any_shadow {
                    let json = row_json(&value);
                    crate::outbox::server_key(&columns, &json).map(|key| (key, json))
                } else {
                    None
                };
                match shadow {
                    Some((key, json)) if crate::outbox::shadowed(tx, &local, &key)? => {
                        crate::outbox::apply_to_shadow(tx, &local, &key, "delete", &json)?
                    }
                    _ => apply_change(tx, &local, &columns, "delete", &value, &mut sql_cache)?,
                }
                applied += 1;
            }
            continue;
        }
        let (Some(op), Some(value)) = (m.headers.operation.as_deref(), m.value.as_ref()) else {
            continue;
        };
        if let Some(row_key) = m.key.as_deref() {
            if op == "delete" {
                crate::tags::forget_row(tx, &local, row_key)?;
            } else if let Some(tags) = &m.headers.tags {
                let state = ferrite_protocol::tags::RowTags {
                    tags: tags.clone(),
                    active: m.headers.active_conditions.clone().unwrap_or_default(),
                };
                crate::tags::remember_row(tx, &local, row_key, &columns, value, &state)?;
            }
        }
        // A row with pending local writes: the change goes to its server version, and the row
        // is rebuilt with the pending writes on top.
        let shadow = if any_shadow {
            let json = row_json(value);
            crate::outbox::server_key(&columns, &json).map(|key| (key, json))
        } else {
            None
        };
        match shadow {
            Some((key, json)) if crate::outbox::shadowed(tx, &local, &key)? => {
                crate::outbox::apply_to_shadow(tx, &local, &key, op, &json)?
            }
            _ => apply_change(tx, &local, &columns, op, value, &mut sql_cache)?,
        }
        let lsn = num(&m.headers.lsn);
        last_lsn = last_lsn.max(lsn);
        if let Some(ids) = &m.headers.txids {
            txids.extend(ids.iter().map(|t| (t.as_str().map(String::from).unwrap_or_else(|| t.to_string()), lsn)));
        }
        applied += 1;
    }
    txids.sort();
    txids.dedup();
    crate::outbox::txids_seen(tx, &local, &txids)?;
    if last_lsn.is_some() {
        tx.execute(
            "UPDATE _ferrite_shapes SET last_lsn = max(coalesce(last_lsn, 0), ?2) WHERE local_table = ?1",
            params![local, last_lsn],
        )?;
    }
    crate::outbox::retire_covered(tx)?;
    if digest.is_some() {
        crate::checksum::store_server_digest(tx, &local, digest.as_deref())?;
    }
    tx.execute(
        "UPDATE _ferrite_shapes SET handle = ?2, offset = ?3, cursor = ?4, schema = ?5, up_to_date = ?6, last_sync_ms = ?7
         WHERE local_table = ?1",
        params![
            local,
            batch.next.handle,
            batch.next.offset,
            batch.next.cursor,
            (!schema_text.is_empty()).then_some(schema_text),
            batch.next.up_to_date,
            batch.received_ms
        ],
    )?;
    Ok(applied)
}

/// The insert statement for the last column list seen, prepared: a snapshot's rows (all with
/// the same columns) build and look up their SQL once, and bind their values one by one.
#[derive(Default)]
struct SqlCache<'t> {
    names: Vec<String>,
    affinities: Vec<Affinity>,
    insert: Option<rusqlite::CachedStatement<'t>>,
}

/// Inserts (or replaces) a row given as (column, text) pairs through the cached statement.
fn insert_row<'t, K: AsRef<str>, V: AsRef<str>>(
    tx: &'t rusqlite::Transaction<'_>,
    local: &str,
    columns: &[LocalColumn],
    pairs: &[(K, Option<V>)],
    cache: &mut SqlCache<'t>,
) -> Result<(), ClientError> {
    if cache.insert.is_none() || !pairs.iter().map(|(k, _)| k.as_ref()).eq(cache.names.iter().map(String::as_str)) {
        let affinity =
            |name: &str| columns.iter().find(|c| c.name == name).map(|c| c.affinity).unwrap_or(Affinity::Text);
        cache.insert = None;
        cache.names = pairs.iter().map(|(k, _)| k.as_ref().to_string()).collect();
        cache.affinities = cache.names.iter().map(|n| affinity(n)).collect();
        cache.insert = Some(tx.prepare_cached(&format!(
            "INSERT OR REPLACE INTO {} ({}) VALUES ({})",
            quote(local),
            cache.names.iter().map(|n| quote(n)).collect::<Vec<_>>().join(", "),
            (1..=cache.names.len()).map(|i| format!("?{i}")).collect::<Vec<_>>().join(", ")
        ))?);
    }
    let insert = cache.insert.as_mut().expect("prepared above");
    for (i, ((_, v), a)) in pairs.iter().zip(&cache.affinities).enumerate() {
        insert.raw_bind_parameter(i + 1, a.bind(v.as_ref().map(AsRef::as_ref)))?;
    }
    insert.raw_execute()?;
    Ok(())
}

fn apply_change<'t>(
    tx: &'t rusqlite::Transaction<'_>,
    local: &str,
    columns: &[LocalColumn],
    op: &str,
    value: &Row<'_>,
    cache: &mut SqlCache<'t>,
) -> Result<(), ClientError> {
    let affinity = |name: &str| columns.iter().find(|c| c.name == name).map(|c| c.affinity).unwrap_or(Affinity::Text);
    // Inserts (every row of a snapshot) come first and cheap: the statement and the columns'
    // affinities are worked out once per column list.
    if op == "insert" {
        let pairs: Vec<(&str, Option<&str>)> = value.iter().map(|(k, v)| (k.as_ref(), v.as_deref())).collect();
        return insert_row(tx, local, columns, &pairs, cache);
    }
    let pk = key_columns(columns);
    let key_values = || -> Vec<rusqlite::types::Value> {
        pk.iter().map(|c| c.affinity.value(value.get(c.name.as_str()).and_then(|v| v.as_deref()))).collect()
    };
    let t = quote(local);
    match op {
        "update" => {
            let set: Vec<(&str, rusqlite::types::Value)> = value
                .iter()
                .filter(|(k, _)| !pk.iter().any(|c| c.name == k.as_ref()))
                .map(|(k, v)| (k.as_ref(), affinity(k).value(v.as_deref())))
                .collect();
            if set.is_empty() || pk.is_empty() {
                return Ok(());
            }
            let assignments: Vec<String> =
                set.iter().enumerate().map(|(i, (k, _))| format!("{} = ?{}", quote(k), pk.len() + i + 1)).collect();
            let sql = format!("UPDATE {t} SET {} WHERE {}", assignments.join(", "), key_filter(&pk));
            let keys = key_values();
            let mut all: Vec<&dyn ToSql> = keys.iter().map(|v| v as &dyn ToSql).collect();
            all.extend(set.iter().map(|(_, v)| v as &dyn ToSql));
            tx.prepare_cached(&sql)?.execute(all.as_slice())?;
        }
        "delete" if !pk.is_empty() => {
            let sql = format!("DELETE FROM {t} WHERE {}", key_filter(&pk));
            let keys = key_values();
            let refs: Vec<&dyn ToSql> = keys.iter().map(|v| v as &dyn ToSql).collect();
            tx.prepare_cached(&sql)?.execute(refs.as_slice())?;
        }
        _ => {}
    }
    Ok(())
}

/// Drops the shapes not synced for longer than their retention (`ShapeDef::retain_for`): their
/// local table and position go, unless local writes to the table are still pending. Returns the
/// local tables dropped.
pub fn drop_expired(db: &mut Connection, now_ms: i64) -> Result<Vec<String>, ClientError> {
    let tx = db.transaction()?;
    let expired: Vec<String> = tx
        .prepare(
            "SELECT local_table FROM _ferrite_shapes
             WHERE retain_ms IS NOT NULL AND coalesce(last_sync_ms, 0) + retain_ms < ?1
               AND NOT EXISTS (SELECT 1 FROM _ferrite_shadow s WHERE s.local_table = _ferrite_shapes.local_table)",
        )?
        .query_map([now_ms], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    for local in &expired {
        tx.execute_batch(&format!("DROP TABLE IF EXISTS {}", quote(local)))?;
        crate::tags::forget_table(&tx, local)?;
        tx.execute("DELETE FROM _ferrite_shapes WHERE local_table = ?1", [local])?;
    }
    tx.commit()?;
    Ok(expired)
}

/// Starts a shape over after a 409 (the server's shape was replaced): the next sync reads
/// `new_handle` from offset -1. The old rows stay readable until the new shape's first response
/// replaces the table (its schema differs from none).
pub fn reset(db: &mut Connection, def: &ShapeDef, new_handle: Option<&str>) -> Result<(), ClientError> {
    let local = def.local_table();
    let tx = db.transaction()?;
    tx.execute(
        "UPDATE _ferrite_shapes SET handle = ?2, offset = '-1', cursor = NULL, schema = NULL, up_to_date = 0, last_lsn = NULL, digest = NULL
         WHERE local_table = ?1",
        params![local, new_handle],
    )?;
    tx.commit()?;
    Ok(())
}
