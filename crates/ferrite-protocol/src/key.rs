//! Record keys: the stable identity of a row inside a shape log, as the Electric protocol spells it.
//!
//! `"<schema>"."<table>"/"<pk1>"/"<pk2>"`, with `/` inside a value doubled and NULL as `_`.
//! Snapshots compute the same keys inside Postgres (the SQL twin of [`row_key`] is in
//! `ferrite-pg`'s `row_query`); both must produce identical strings.

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
