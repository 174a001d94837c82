//! Record keys: the stable identity of a row inside a shape log, as the Electric protocol spells it.
//!
//! `"<schema>"."<table>"/"<pk1>"/"<pk2>"`, with `/` inside a value doubled and NULL as `_`.
//! The SQL twin used by snapshots lives in [`key_sql`]; both must produce identical strings.

use crate::relation::QualifiedName;
use crate::schema::TableSchema;

/// Builds the key of a row (values aligned with `table.columns`).
pub fn row_key(table: &TableSchema, row: &[Option<String>]) -> String {
    let mut key = relation_prefix(&table.name);
    for i in table.key_columns() {
        push_key_part(&mut key, row.get(i).and_then(|v| v.as_deref()));
    }
    key
}

/// `"schema"."table"` with `/` doubled and `.` doubled inside the parts, as Electric does.
pub fn relation_prefix(name: &QualifiedName) -> String {
    let esc = |s: &str| s.replace('/', "//").replace('.', "..");
    format!("\"{}\".\"{}\"", esc(&name.schema), esc(&name.name))
}

fn push_key_part(key: &mut String, value: Option<&str>) {
    match value {
        None => key.push_str("/_"),
        Some(v) => {
            key.push_str("/\"");
            key.push_str(&v.replace('/', "//"));
            key.push('"');
        }
    }
}

/// A SQL expression computing the same key as [`row_key`] from a row of `table`.
/// `text_of(col)` must be the SQL giving the column's text output (see the snapshot builder).
pub fn key_sql(table: &TableSchema, text_of: impl Fn(usize) -> String) -> String {
    let prefix = relation_prefix(&table.name).replace('\'', "''");
    let mut parts = vec![format!("'{prefix}'")];
    for i in table.key_columns() {
        parts.push(format!(
            "(CASE WHEN {v} IS NULL THEN '/_' ELSE '/\"' || replace({v}, '/', '//') || '\"' END)",
            v = text_of(i)
        ));
    }
    parts.join(" || ")
}
