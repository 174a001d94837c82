//! Row-level SQL for applying client mutations to a user table.
//!
//! Values arrive as Postgres text; every one is bound as a `text` parameter and cast to its
//! column's type (`$n::text::<type>`), so Postgres's own input functions parse them and a bad
//! value is Postgres's error (SQLSTATE class 22), never SQL injected into the statement.
//! Identifiers are quoted; type names come from `format_type` in the catalog. Statements are
//! prepared once per connection ([`PreparedClient`]). An insert or update saves the row's
//! clocks in the same statement (a data-modifying `WITH`), taking the values Ferrite will
//! remember from the row as stored, and returns that row: one round trip per written row.

use crate::prepared::{Param, PreparedClient};
use crate::write_store::{save_clocks_sql, StoredClocks};
use crate::PgError;
use ferrite_protocol::relation::{quote_ident, QualifiedName};
use ferrite_protocol::schema::TableSchema;
use serde_json::Value;
use std::collections::BTreeMap;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, Row};

/// Column values by name: Postgres text, `None` for NULL.
pub type Values = BTreeMap<String, Option<String>>;

/// A table as the write path needs it: its schema plus each column's SQL type name.
#[derive(Debug, Clone)]
pub struct WriteTable {
    /// Schema from introspection (columns in attribute order, primary key).
    pub schema: TableSchema,
    /// `format_type(atttypid, atttypmod)` per column, aligned with `schema.columns`.
    pub sql_types: Vec<String>,
}

impl WriteTable {
    /// Whether `rule` holds for `row` (values aligned with the columns) as a row of this table,
    /// evaluated by Postgres on `c` — for rules with subqueries (a membership, a role), inside
    /// the caller's transaction: the subqueries read what the transaction sees and lock the rows
    /// they read `FOR SHARE` until it ends, so a membership cannot be revoked between the check
    /// and the commit. The row is bound as one JSON parameter read by the table's own row type;
    /// a NULL result does not hold, as in a WHERE clause.
    pub async fn rule_holds(
        &self,
        c: &PreparedClient,
        rule: &ferrite_where::WhereClause,
        row: &[Option<String>],
    ) -> Result<bool, PgError> {
        let (condition, mut params) = rule.to_sql_locking(1);
        let record: serde_json::Map<String, Value> = self
            .schema
            .columns
            .iter()
            .zip(row)
            .map(|(col, v)| (col.name.clone(), v.as_ref().map_or(Value::Null, |t| Value::String(t.clone()))))
            .collect();
        params.push(Some(Value::Object(record).to_string()));
        let sql = format!(
            "SELECT COALESCE(({condition}), false) FROM pg_catalog.jsonb_populate_record(NULL::{}, ${}::text::jsonb) AS \"row\"",
            self.schema.name.quoted(),
            params.len()
        );
        let bound: Vec<Param<'_>> = params.iter().map(|p| (p as &(dyn ToSql + Sync), Type::TEXT)).collect();
        Ok(c.query_one(&sql, &bound).await?.get::<_, bool>(0))
    }
}

/// Loads a table for writing; `None` if there is no such table.
pub async fn load_write_table(client: &Client, name: &QualifiedName) -> Result<Option<WriteTable>, PgError> {
    let Some(schema) = crate::introspect::load_table(client, name).await? else { return Ok(None) };
    let rows = client
        .query(
            "SELECT attname::text, format_type(atttypid, atttypmod) FROM pg_catalog.pg_attribute
             WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped",
            &[&schema.oid],
        )
        .await?;
    let types: BTreeMap<String, String> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    let sql_types =
        schema.columns.iter().map(|c| types.get(&c.name).cloned().unwrap_or_else(|| "text".into())).collect();
    Ok(Some(WriteTable { schema, sql_types }))
}

impl WriteTable {
    fn cast(&self, param: usize, column: usize) -> String {
        format!("${param}::text::{}", self.sql_types[column])
    }

    fn key_filter(&self, first_param: usize) -> String {
        self.schema
            .key_columns()
            .iter()
            .enumerate()
            .map(|(n, &i)| format!("{} = {}", quote_ident(&self.schema.columns[i].name), self.cast(first_param + n, i)))
            .collect::<Vec<_>>()
            .join(" AND ")
    }

    fn key_params<'a>(&self, key: &'a Values) -> Vec<&'a Option<String>> {
        self.schema.key_columns().iter().map(|&i| key.get(&self.schema.columns[i].name).unwrap_or(&None)).collect()
    }

    /// Every column as text, then xmin: what reads select.
    fn row_columns(&self) -> String {
        let mut cols: Vec<String> =
            self.schema.columns.iter().map(|c| format!("{}::text", quote_ident(&c.name))).collect();
        cols.push("xmin::text".into());
        cols.join(", ")
    }

    /// Every column as text under a positional name (`c0`, `c1`, …), for `RETURNING` and the
    /// locked read.
    fn returning(&self) -> String {
        self.schema
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{}::text AS c{i}", quote_ident(&c.name)))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// `jsonb_build_object('<name>', w.c0, …)`: the written row as Ferrite remembers it.
    fn known_from_written(&self) -> String {
        let pairs: Vec<String> = self
            .schema
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| format!("'{}', w.c{i}", c.name.replace('\'', "''")))
            .collect();
        format!("jsonb_build_object({})", pairs.join(", "))
    }

    fn decode(&self, r: &Row) -> Vec<Option<String>> {
        (0..self.schema.columns.len()).map(|i| r.get::<_, Option<String>>(i)).collect()
    }

    /// Reads and locks (`FOR UPDATE`) the row with this key — all columns as text, aligned with
    /// `schema.columns`, plus the row version's xmin — together with its stored clocks, in one
    /// statement. Call it after the row key's lock is held, so its snapshot (taken when the
    /// statement starts) includes what the lock's previous holder wrote.
    pub async fn select_for_update_with_clocks(
        &self,
        c: &PreparedClient,
        key: &Values,
        table_text: &str,
        key_text: &str,
    ) -> Result<(Option<(Vec<Option<String>>, u32)>, Option<StoredClocks>), PgError> {
        let n = self.schema.columns.len();
        let outer: Vec<String> = (0..n).map(|i| format!("r.c{i}")).collect();
        let k = self.schema.key_columns().len();
        let sql = format!(
            "SELECT {}, r.xmin, r.present, rc.clocks, rc.known, rc.deleted, rc.born
             FROM (SELECT 1) AS one
             LEFT JOIN LATERAL (SELECT {}, xmin::text AS xmin, true AS present FROM {} WHERE {} FOR UPDATE) AS r ON true
             LEFT JOIN ferrite.row_clocks AS rc ON rc.tbl = ${}::text AND rc.key = ${}::text",
            outer.join(", "),
            self.returning(),
            self.schema.name.quoted(),
            self.key_filter(1),
            k + 1,
            k + 2
        );
        let mut params = typed(&self.key_params(key));
        params.push((&table_text, Type::TEXT));
        params.push((&key_text, Type::TEXT));
        let r = c.query_one(&sql, &params).await?;
        let row = r.get::<_, Option<bool>>(n + 1).map(|_| {
            let xmin: String = r.get(n);
            (self.decode(&r), xmin.parse().unwrap_or(0))
        });
        let clocks = StoredClocks::from_columns(r.get(n + 2), r.get(n + 3), r.get(n + 4), r.get(n + 5));
        Ok((row, clocks))
    }

    /// Reads the row with this key without locking it (all columns as text, and xmin).
    pub async fn select(
        &self,
        c: &PreparedClient,
        key: &Values,
    ) -> Result<Option<(Vec<Option<String>>, u32)>, PgError> {
        self.select_row(c, key, "").await
    }

    async fn select_row(
        &self,
        c: &PreparedClient,
        key: &Values,
        lock: &str,
    ) -> Result<Option<(Vec<Option<String>>, u32)>, PgError> {
        let sql = format!(
            "SELECT {} FROM {} WHERE {}{lock}",
            self.row_columns(),
            self.schema.name.quoted(),
            self.key_filter(1)
        );
        let row = c.query_opt(&sql, &typed(&self.key_params(key))).await?;
        Ok(row.map(|r| {
            let xmin: String = r.get(self.schema.columns.len());
            (self.decode(&r), xmin.parse().unwrap_or(0))
        }))
    }

    /// Runs `write` (an INSERT or UPDATE … `RETURNING` [`Self::returning`]) and saves the
    /// row's clocks in the same statement; returns the row as stored (`None` if `write` matched
    /// no row).
    async fn write_with_clocks(
        &self,
        c: &PreparedClient,
        write: &str,
        mut params: Vec<Param<'_>>,
        save: &ClockSave<'_>,
    ) -> Result<Option<Vec<Option<String>>>, PgError> {
        let n = params.len();
        let record = match &save.record {
            Some(_) => format!(
                ", recorded AS (INSERT INTO ferrite.client_results (client_id, id, result) VALUES (${}::text, ${}::bigint, ${}::jsonb))",
                n + 6,
                n + 7,
                n + 8
            ),
            None => String::new(),
        };
        let sql = format!(
            "WITH w AS ({write}), saved AS ({}){record} SELECT * FROM w",
            save_clocks_sql(n + 1, &self.known_from_written(), "FROM w")
        );
        params.push((&save.table, Type::TEXT));
        params.push((&save.key, Type::TEXT));
        params.push((save.clocks, Type::JSONB));
        params.push((&save.deleted, Type::TEXT));
        params.push((&save.born, Type::TEXT));
        if let Some(r) = &save.record {
            params.push((&r.client_id, Type::TEXT));
            params.push((&r.id, Type::INT8));
            params.push((r.result, Type::JSONB));
        }
        Ok(c.query_opt(&sql, &params).await?.map(|r| self.decode(&r)))
    }

    /// Inserts a row from the given columns (others take their defaults) and saves its clocks;
    /// returns it as stored.
    pub async fn insert(
        &self,
        c: &PreparedClient,
        values: &Values,
        save: &ClockSave<'_>,
    ) -> Result<Vec<Option<String>>, PgError> {
        let mut cols = vec![];
        let mut exprs = vec![];
        let mut params: Vec<&Option<String>> = vec![];
        for (i, col) in self.schema.columns.iter().enumerate() {
            if let Some(v) = values.get(&col.name) {
                cols.push(quote_ident(&col.name));
                params.push(v);
                exprs.push(self.cast(params.len(), i));
            }
        }
        let write = format!(
            "INSERT INTO {} ({}) VALUES ({}) RETURNING {}",
            self.schema.name.quoted(),
            cols.join(", "),
            exprs.join(", "),
            self.returning()
        );
        let row = self.write_with_clocks(c, &write, typed(&params), save).await?;
        row.ok_or_else(|| PgError::Protocol("INSERT … RETURNING returned no row".into()))
    }

    /// Sets the given columns of the row with this key and saves its clocks; returns the row as
    /// stored (`None` when there is no such row). With no columns to set, only reads the row.
    pub async fn update(
        &self,
        c: &PreparedClient,
        key: &Values,
        set: &Values,
        save: &ClockSave<'_>,
    ) -> Result<Option<Vec<Option<String>>>, PgError> {
        let mut params: Vec<&Option<String>> = vec![];
        let mut assignments = vec![];
        for (i, col) in self.schema.columns.iter().enumerate() {
            if let Some(v) = set.get(&col.name) {
                params.push(v);
                assignments.push(format!("{} = {}", quote_ident(&col.name), self.cast(params.len(), i)));
            }
        }
        if assignments.is_empty() {
            return Ok(self.select_row(c, key, "").await?.map(|r| r.0));
        }
        let filter = self.key_filter(params.len() + 1);
        params.extend(self.key_params(key));
        let write = format!(
            "UPDATE {} SET {} WHERE {filter} RETURNING {}",
            self.schema.name.quoted(),
            assignments.join(", "),
            self.returning()
        );
        self.write_with_clocks(c, &write, typed(&params), save).await
    }

    /// Deletes the row with this key.
    pub async fn delete(&self, c: &PreparedClient, key: &Values) -> Result<(), PgError> {
        let sql = format!("DELETE FROM {} WHERE {}", self.schema.name.quoted(), self.key_filter(1));
        c.execute(&sql, &typed(&self.key_params(key))).await?;
        Ok(())
    }
}

/// The clocks saved with a row write (see [`crate::write_store::StoredClocks`]); the values
/// Ferrite remembers are taken from the written row.
#[derive(Debug, Clone)]
pub struct ClockSave<'a> {
    /// Quoted table name, as the bookkeeping keys rows.
    pub table: &'a str,
    /// The row's key text.
    pub key: &'a str,
    /// Column → stamp text, as a JSON object.
    pub clocks: &'a Value,
    /// Delete stamp (always `None` for a live row).
    pub deleted: Option<String>,
    /// Birth stamp.
    pub born: Option<String>,
    /// The client transaction's result, recorded by the same statement (the transaction's
    /// last write, just before COMMIT).
    pub record: Option<RecordResult<'a>>,
}

/// A client transaction's result to record with a row write (see
/// [`crate::write_store::record_result`]).
#[derive(Debug, Clone)]
pub struct RecordResult<'a> {
    /// The client.
    pub client_id: &'a str,
    /// The client transaction's id.
    pub id: i64,
    /// The result as JSON.
    pub result: &'a Value,
}

/// Text parameters with their type spelled out (see the module docs).
fn typed<'a>(params: &[&'a Option<String>]) -> Vec<Param<'a>> {
    params.iter().map(|p| (*p as &(dyn ToSql + Sync), Type::TEXT)).collect()
}

/// Commit time (unix microseconds) of a transaction, when Postgres tracks commit timestamps
/// (`track_commit_timestamp = on`); `None` otherwise or when too old to know. Runs in a
/// savepoint: asking about a transaction from before tracking was enabled is an error, which
/// must not abort the surrounding transaction.
pub async fn commit_time_micros(c: &PreparedClient, xid: u32) -> Result<Option<i64>, PgError> {
    let xid = xid.to_string();
    let params: [Param<'_>; 1] = [(&xid, Type::TEXT)];
    let (_, row) = tokio::join!(
        biased;
        c.client().batch_execute("SAVEPOINT ferrite_commit_time"),
        c.query_one(
            "SELECT CASE WHEN current_setting('track_commit_timestamp')::bool
                    THEN (extract(epoch FROM pg_xact_commit_timestamp($1::text::xid)) * 1000000)::bigint END",
            &params,
        )
    );
    match row {
        Ok(r) => {
            c.client().batch_execute("RELEASE SAVEPOINT ferrite_commit_time").await?;
            Ok(r.get(0))
        }
        Err(e) if e.db().is_some() => {
            c.client().batch_execute("ROLLBACK TO SAVEPOINT ferrite_commit_time").await?;
            Ok(None)
        }
        Err(e) => Err(e),
    }
}
