//! Row-level SQL for applying client mutations to a user table.
//!
//! Values arrive as Postgres text; every one is bound as a `text` parameter and cast to its
//! column's type (`$n::text::<type>`), so Postgres's own input functions parse them and a bad
//! value is Postgres's error (SQLSTATE class 22), never SQL injected into the statement.
//! Identifiers are quoted; type names come from `format_type` in the catalog. Statements go out
//! typed (`*_typed`: one round trip, no separate prepare), and inserts and updates return the
//! row as stored, so no second read is needed.

use crate::PgError;
use ferrite_core::relation::{quote_ident, QualifiedName};
use ferrite_core::schema::TableSchema;
use std::collections::BTreeMap;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, GenericClient, Row};

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
    let sql_types = schema
        .columns
        .iter()
        .map(|c| types.get(&c.name).cloned().unwrap_or_else(|| "text".into()))
        .collect();
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
        self.schema
            .key_columns()
            .iter()
            .map(|&i| key.get(&self.schema.columns[i].name).unwrap_or(&None))
            .collect()
    }

    /// Every column as text, then xmin: what reads and `RETURNING` clauses select.
    fn row_columns(&self) -> String {
        let mut cols: Vec<String> = self.schema.columns.iter().map(|c| format!("{}::text", quote_ident(&c.name))).collect();
        cols.push("xmin::text".into());
        cols.join(", ")
    }

    fn decode(&self, r: &Row) -> (Vec<Option<String>>, u32) {
        let n = self.schema.columns.len();
        let values = (0..n).map(|i| r.get::<_, Option<String>>(i)).collect();
        let xmin: String = r.get(n);
        (values, xmin.parse().unwrap_or(0))
    }

    /// Reads and locks (`FOR UPDATE`) the row with this key: all columns as text, aligned with
    /// `schema.columns`, plus the row version's xmin.
    pub async fn select_for_update(&self, tx: &impl GenericClient, key: &Values) -> Result<Option<(Vec<Option<String>>, u32)>, PgError> {
        self.select_row(tx, key, " FOR UPDATE").await
    }

    /// Reads the row with this key without locking it (all columns as text, and xmin).
    pub async fn select(&self, c: &impl GenericClient, key: &Values) -> Result<Option<(Vec<Option<String>>, u32)>, PgError> {
        self.select_row(c, key, "").await
    }

    async fn select_row(&self, c: &impl GenericClient, key: &Values, lock: &str) -> Result<Option<(Vec<Option<String>>, u32)>, PgError> {
        let sql = format!(
            "SELECT {} FROM {} WHERE {}{lock}",
            self.row_columns(),
            self.schema.name.quoted(),
            self.key_filter(1)
        );
        let row = c.query_typed_opt(sql.as_str(), &typed(&self.key_params(key))).await?;
        Ok(row.map(|r| self.decode(&r)))
    }

    /// Inserts a row from the given columns (others take their defaults); returns it as stored.
    pub async fn insert(&self, tx: &impl GenericClient, values: &Values) -> Result<Vec<Option<String>>, PgError> {
        let mut cols = vec![];
        let mut exprs = vec![];
        let mut params: Vec<&Option<String>> = vec![];
        for (i, c) in self.schema.columns.iter().enumerate() {
            if let Some(v) = values.get(&c.name) {
                cols.push(quote_ident(&c.name));
                params.push(v);
                exprs.push(self.cast(params.len(), i));
            }
        }
        let sql = format!(
            "INSERT INTO {} ({}) VALUES ({}) RETURNING {}",
            self.schema.name.quoted(),
            cols.join(", "),
            exprs.join(", "),
            self.row_columns()
        );
        let row = tx.query_typed_one(sql.as_str(), &typed(&params)).await?;
        Ok(self.decode(&row).0)
    }

    /// Sets the given columns of the row with this key; returns the row as stored (`None` when
    /// there is no such row).
    pub async fn update(&self, tx: &impl GenericClient, key: &Values, set: &Values) -> Result<Option<Vec<Option<String>>>, PgError> {
        let mut params: Vec<&Option<String>> = vec![];
        let mut assignments = vec![];
        for (i, c) in self.schema.columns.iter().enumerate() {
            if let Some(v) = set.get(&c.name) {
                params.push(v);
                assignments.push(format!("{} = {}", quote_ident(&c.name), self.cast(params.len(), i)));
            }
        }
        if assignments.is_empty() {
            return Ok(self.select_row(tx, key, "").await?.map(|r| r.0));
        }
        let filter = self.key_filter(params.len() + 1);
        params.extend(self.key_params(key));
        let sql = format!(
            "UPDATE {} SET {} WHERE {filter} RETURNING {}",
            self.schema.name.quoted(),
            assignments.join(", "),
            self.row_columns()
        );
        let row = tx.query_typed_opt(sql.as_str(), &typed(&params)).await?;
        Ok(row.map(|r| self.decode(&r).0))
    }

    /// Deletes the row with this key.
    pub async fn delete(&self, tx: &impl GenericClient, key: &Values) -> Result<(), PgError> {
        let sql = format!("DELETE FROM {} WHERE {}", self.schema.name.quoted(), self.key_filter(1));
        tx.execute_typed(sql.as_str(), &typed(&self.key_params(key))).await?;
        Ok(())
    }
}

/// Text parameters with their type spelled out (see the module docs).
fn typed<'a>(params: &[&'a Option<String>]) -> Vec<(&'a (dyn ToSql + Sync), Type)> {
    params.iter().map(|p| (*p as &(dyn ToSql + Sync), Type::TEXT)).collect()
}

/// Commit time (unix microseconds) of a transaction, when Postgres tracks commit timestamps
/// (`track_commit_timestamp = on`); `None` otherwise or when too old to know.
pub async fn commit_time_micros(tx: &impl GenericClient, xid: u32) -> Result<Option<i64>, PgError> {
    let row = tx
        .query_typed_one(
            "SELECT CASE WHEN current_setting('track_commit_timestamp')::bool
                    THEN (extract(epoch FROM pg_xact_commit_timestamp($1::text::xid)) * 1000000)::bigint END",
            &[(&xid.to_string(), Type::TEXT)],
        )
        .await;
    match row {
        Ok(r) => Ok(r.get(0)),
        // Commit timestamps of transactions from before tracking was enabled are an error.
        Err(e) if e.as_db_error().is_some() => Ok(None),
        Err(e) => Err(e.into()),
    }
}
