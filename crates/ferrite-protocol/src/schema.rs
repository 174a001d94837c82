//! Table schemas as Ferrite needs them: column order, types, primary key, modifiers.
//!
//! Column order is Postgres attribute order (dropped columns removed), which is also the order of
//! values in pgoutput tuples, so a row is simply a `Vec<Option<String>>` aligned with `columns`.

use crate::relation::QualifiedName;
use serde_json::{Map, Value};

/// Broad kind of a column's type, from `pg_type.typtype` (of the element type for arrays).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum TypeKind {
    /// Built-in or extension base type.
    Base,
    /// `CREATE TYPE … AS ENUM`.
    Enum,
    /// A domain over another type.
    Domain,
    /// A composite (row) type.
    Composite,
    /// Range, multirange, pseudo types.
    Other,
}

/// One column of a table.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Column {
    /// Exact column name.
    pub name: String,
    /// OID of the column's type (the array type for array columns).
    pub type_oid: u32,
    /// `pg_type.typname`; for arrays the element's typname (as `electric-schema` reports it).
    pub type_name: String,
    /// For domains: the typname of the base type, used for evaluation. Equal to `type_name` otherwise.
    pub base_type_name: String,
    /// Number of array dimensions (0 for scalars).
    pub dims: u32,
    /// Kind of the (element) type.
    pub kind: TypeKind,
    /// `atttypmod` (-1 when none).
    pub typmod: i32,
    /// Position in the primary key (0-based), if part of it.
    pub pk_index: Option<usize>,
    /// Declared `NOT NULL`.
    pub not_null: bool,
}

/// A table as introspected from the catalog.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TableSchema {
    /// `pg_class.oid`; pgoutput relation ids are the same oid.
    pub oid: u32,
    /// Schema and name.
    pub name: QualifiedName,
    /// Columns in attribute order.
    pub columns: Vec<Column>,
}

impl TableSchema {
    /// Index of a column by exact name.
    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }

    /// Indexes of the primary key columns in key order. Tables without a primary key use all
    /// columns sorted by name (as Electric does), so every row still gets a key.
    pub fn key_columns(&self) -> Vec<usize> {
        let mut pk: Vec<(usize, usize)> =
            self.columns.iter().enumerate().filter_map(|(i, c)| c.pk_index.map(|p| (p, i))).collect();
        if pk.is_empty() {
            let mut all: Vec<usize> = (0..self.columns.len()).collect();
            all.sort_by(|a, b| self.columns[*a].name.cmp(&self.columns[*b].name));
            return all;
        }
        pk.sort();
        pk.into_iter().map(|(_, i)| i).collect()
    }

    /// True when the table has a declared primary key.
    pub fn has_primary_key(&self) -> bool {
        self.columns.iter().any(|c| c.pk_index.is_some())
    }

    /// A fingerprint of what shapes depend on (names, types, key); a change rotates shapes.
    pub fn fingerprint(&self) -> String {
        let mut s = String::new();
        for c in &self.columns {
            s.push_str(&format!("{}:{}:{}:{}:{:?};", c.name, c.type_oid, c.typmod, c.dims, c.pk_index));
        }
        s
    }
}

impl Column {
    /// The `electric-schema` entry for this column: `{type, dims?, pk_index?, not_null?, modifiers}`.
    pub fn electric_schema(&self) -> Value {
        let mut m = Map::new();
        m.insert("type".into(), Value::String(self.type_name.clone()));
        if self.dims > 0 {
            m.insert("dims".into(), Value::from(self.dims));
        }
        if let Some(p) = self.pk_index {
            m.insert("pk_index".into(), Value::from(p));
        }
        if self.not_null {
            m.insert("not_null".into(), Value::Bool(true));
        }
        if self.typmod >= 0 {
            let tm = self.typmod;
            match self.type_name.as_str() {
                "varchar" => {
                    m.insert("max_length".into(), Value::from(tm - 4));
                }
                "bpchar" => {
                    m.insert("length".into(), Value::from(tm - 4));
                }
                "bit" | "varbit" => {
                    m.insert("length".into(), Value::from(tm));
                }
                "time" | "timetz" | "timestamp" | "timestamptz" => {
                    m.insert("precision".into(), Value::from(tm));
                }
                "interval" => {
                    let precision = tm & 0xFFFF;
                    if precision != 0xFFFF {
                        m.insert("precision".into(), Value::from(precision));
                    }
                    if let Some(fields) = interval_fields((tm >> 16) & 0x7FFF) {
                        m.insert("fields".into(), Value::String(fields.into()));
                    }
                }
                "numeric" => {
                    let v = tm - 4;
                    m.insert("precision".into(), Value::from((v >> 16) & 0xFFFF));
                    let scale = ((v & 0x7FF) ^ 1024) - 1024;
                    m.insert("scale".into(), Value::from(scale));
                }
                _ => {
                    m.insert("type_mod".into(), Value::from(tm));
                }
            }
        }
        Value::Object(m)
    }
}

/// Postgres `INTERVAL_MASK` bits → the field phrase Electric reports.
fn interval_fields(mask: i32) -> Option<&'static str> {
    const MONTH: i32 = 1 << 1;
    const YEAR: i32 = 1 << 2;
    const DAY: i32 = 1 << 3;
    const HOUR: i32 = 1 << 10;
    const MINUTE: i32 = 1 << 11;
    const SECOND: i32 = 1 << 12;
    const FULL: i32 = 0x7FFF;
    Some(match mask {
        m if m == FULL => return None,
        m if m == YEAR => "YEAR",
        m if m == MONTH => "MONTH",
        m if m == DAY => "DAY",
        m if m == HOUR => "HOUR",
        m if m == MINUTE => "MINUTE",
        m if m == SECOND => "SECOND",
        m if m == YEAR | MONTH => "YEAR TO MONTH",
        m if m == DAY | HOUR => "DAY TO HOUR",
        m if m == DAY | HOUR | MINUTE => "DAY TO MINUTE",
        m if m == DAY | HOUR | MINUTE | SECOND => "DAY TO SECOND",
        m if m == HOUR | MINUTE => "HOUR TO MINUTE",
        m if m == HOUR | MINUTE | SECOND => "HOUR TO SECOND",
        m if m == MINUTE | SECOND => "MINUTE TO SECOND",
        _ => return None,
    })
}

/// The full `electric-schema` header value for the selected columns (in table order).
pub fn electric_schema_header(table: &TableSchema, selected: &[usize]) -> String {
    let mut m = Map::new();
    for &i in selected {
        let c = &table.columns[i];
        m.insert(c.name.clone(), c.electric_schema());
    }
    Value::Object(m).to_string()
}
