//! Shared pieces of Ferrite's fuzz targets: fixed table schemas to compile where clauses against,
//! the checks run on every compiled clause, and a grammar-ish generator of plausible where clauses
//! and row values (so the fuzzer spends its time past libpg_query's parser, in Ferrite's typing and
//! evaluation).
//!
//! Every check here is an invariant a client cannot break from outside: a panic, an allocation
//! beyond libFuzzer's `-malloc_limit_mb`, or a run beyond `-timeout` is a finding.

pub mod gen;

/// `ferrite-server`'s `/v1/shape` parameter parser (`ferrite_server::http::params`), compiled from
/// its own source file. The fuzz crate does not depend on `ferrite-server`: building it (axum,
/// hyper, jsonwebtoken, ...) with coverage instrumentation would add minutes to every CI run for
/// one module that only uses `ferrite-core` and `serde_json`. Should that module ever use other
/// items of its crate, this stops compiling, and the dependency has to come back.
#[path = "../../crates/ferrite-server/src/http/params.rs"]
pub mod params;

use ferrite_protocol::relation::QualifiedName;
use ferrite_protocol::schema::{Column, TableSchema, TypeKind};
use ferrite_where::WhereClause;
use std::collections::BTreeMap;
use std::sync::OnceLock;

/// Stack of the threads the server compiles and evaluates where clauses on (tokio's default for
/// worker and blocking threads). libFuzzer calls targets on the main thread (8 MiB), which would
/// hide a recursion that overflows in production, so where clauses are exercised on a thread of
/// this size.
pub const SERVER_STACK: usize = 2 * 1024 * 1024;

/// `typmod` of `varchar(n)` / `char(n)`.
const fn char_typmod(n: i32) -> i32 {
    n + 4
}

/// `typmod` of `numeric(p, s)`.
const fn numeric_typmod(p: i32, s: i32) -> i32 {
    ((p << 16) | s) + 4
}

fn col(name: &str, ty: &str, kind: TypeKind, dims: u32, typmod: i32, pk: Option<usize>) -> Column {
    Column {
        name: name.into(),
        type_oid: 0,
        type_name: ty.into(),
        base_type_name: if kind == TypeKind::Domain { "int4".into() } else { ty.into() },
        dims,
        kind,
        typmod,
        pk_index: pk,
        not_null: pk.is_some(),
    }
}

fn build_tables() -> Vec<TableSchema> {
    use TypeKind::*;
    vec![
        // Every type the evaluator knows, as in `crates/ferrite-where/src/tests.rs`.
        TableSchema {
            oid: 1,
            name: QualifiedName::new("public", "wt"),
            columns: vec![
                col("id", "int4", Base, 0, -1, Some(0)),
                col("i2", "int2", Base, 0, -1, None),
                col("i4", "int4", Base, 0, -1, None),
                col("i8", "int8", Base, 0, -1, None),
                col("f4", "float4", Base, 0, -1, None),
                col("f8", "float8", Base, 0, -1, None),
                col("n", "numeric", Base, 0, -1, None),
                col("b", "bool", Base, 0, -1, None),
                col("t", "text", Base, 0, -1, None),
                col("v", "varchar", Base, 0, -1, None),
                col("c", "bpchar", Base, 0, char_typmod(5), None),
                col("nm", "name", Base, 0, -1, None),
                col("u", "uuid", Base, 0, -1, None),
                col("d", "date", Base, 0, -1, None),
                col("tm", "time", Base, 0, -1, None),
                col("ts", "timestamp", Base, 0, -1, None),
                col("tz", "timestamptz", Base, 0, -1, None),
                col("iv", "interval", Base, 0, -1, None),
                col("e", "mood", Enum, 0, -1, None),
                col("ia", "int4", Base, 1, -1, None),
                col("ta", "text", Base, 1, -1, None),
                col("j", "jsonb", Base, 0, -1, None),
                col("dm", "posint", Domain, 0, -1, None),
                col("va", "varchar", Base, 1, -1, None),
            ],
        },
        // Names that need quoting, type modifiers, a composite key, a 2-D array.
        TableSchema {
            oid: 2,
            name: QualifiedName::new("my schema", "Odd Names"),
            columns: vec![
                col("User Id", "int8", Base, 0, -1, Some(1)),
                col("select", "text", Base, 0, -1, None),
                col("ÜnïCödé", "varchar", Base, 0, char_typmod(10), None),
                col("amount", "numeric", Base, 0, numeric_typmod(10, 2), None),
                col("at", "timestamptz", Base, 0, 3, None),
                col("tags", "text", Base, 1, -1, None),
                col("grid", "int8", Base, 2, -1, None),
                col("flag", "bool", Base, 0, -1, None),
                col("MixedCase", "float8", Base, 0, -1, None),
                col("org", "uuid", Base, 0, -1, Some(0)),
                col("a\"b", "text", Base, 0, -1, None),
            ],
        },
        // No primary key (every column is the key), a second enum, date/time types with typmods.
        TableSchema {
            oid: 3,
            name: QualifiedName::new("public", "log"),
            columns: vec![
                col("msg", "text", Base, 0, -1, None),
                col("level", "severity", Enum, 0, -1, None),
                col("day", "date", Base, 0, -1, None),
                col("dur", "interval", Base, 0, -1, None),
                col("ts", "timestamp", Base, 0, 0, None),
                col("code", "bpchar", Base, 0, char_typmod(1), None),
                col("ratio", "float4", Base, 0, -1, None),
                col("days", "date", Base, 1, -1, None),
                col("nums", "numeric", Base, 1, -1, None),
                col("small", "int2", Base, 0, -1, None),
            ],
        },
    ]
}

/// The fixed tables where clauses are compiled against.
pub fn tables() -> &'static [TableSchema] {
    static TABLES: OnceLock<Vec<TableSchema>> = OnceLock::new();
    TABLES.get_or_init(build_tables)
}

/// Runs `f` on a thread with the server's stack size, re-raising its panic here (so libFuzzer
/// reports it as a crash of this input).
pub fn on_server_stack<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    std::thread::scope(|s| {
        let handle = std::thread::Builder::new()
            .stack_size(SERVER_STACK)
            .spawn_scoped(s, f)
            .expect("spawning the evaluation thread");
        match handle.join() {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// Compiles `sql` against `table` with `params` and, when it compiles, exercises everything the
/// server does with a clause, checking the invariants callers rely on:
///
/// - `to_sql` prints SQL that libpg_query accepts as one expression (it becomes the snapshot query);
/// - a row that matches has, for the router's equality term, one of the term's texts (otherwise
///   the router would drop a change the shape should get);
/// - the client's clause ANDed with a rule that admits nothing — as trees, the way the server
///   restricts a client to its read rule — never matches (else a client could escape its rule).
pub fn exercise_where(table: &TableSchema, sql: &str, params: &BTreeMap<String, String>, rows: &[Vec<Option<String>>]) {
    exercise_subqueries(table, sql, params, rows);
    let compiled = WhereClause::compile(sql, params, table);
    if let Ok(w) = &compiled {
        let (printed, values) = w.to_sql(1);
        if let Err(e) = pg_query::parse(&format!("SELECT 1 WHERE {printed}"), 0) {
            // Printing adds parentheses and casts: a clause near the nesting limit may pass it.
            if !matches!(e, pg_query::Error::Decode(_)) {
                panic!("to_sql printed SQL that does not parse: {printed:?} ({e}) params {values:?}");
            }
        }
        let _ = w.referenced_columns();
        let term = w.equality_index_term();
        for row in rows {
            let matched = w.matches(row);
            let Some((col, texts)) = &term else { continue };
            let value = row.get(*col).cloned().flatten();
            // The term lists Postgres' own spellings; rows from replication only have those.
            let canonical = value.as_deref().is_none_or(|v| is_canonical(&table.columns[*col], v));
            if canonical && matched == Ok(true) {
                assert!(
                    value.as_ref().is_some_and(|v| texts.contains(v)),
                    "row matches but its value {value:?} of column {col} is not in the index term {texts:?}"
                );
            }
        }
        let nothing = WhereClause::compile("false", &BTreeMap::new(), table).expect("false compiles");
        let restricted = w.clone().and(nothing);
        for row in rows {
            assert_ne!(restricted.matches(row), Ok(true), "{sql:?} AND false matched a row");
        }
    }
}

/// Every fuzz table, by name: the catalog subqueries may read.
struct FuzzCatalog;

impl ferrite_where::Catalog for FuzzCatalog {
    fn table(&self, name: &ferrite_protocol::relation::QualifiedName) -> Option<std::sync::Arc<TableSchema>> {
        tables().iter().find(|t| t.name == *name).map(|t| std::sync::Arc::new(t.clone()))
    }
}

/// Subquery results that answer from the key's bytes: arbitrary but repeatable.
struct ParitySets;

impl ferrite_where::SubquerySets for ParitySets {
    fn lookup(&self, index: usize, key: &[&str]) -> ferrite_where::Membership {
        let bits: usize = key.iter().map(|k| k.len()).sum::<usize>() + index;
        ferrite_where::Membership { contains: bits % 2 == 0, has_null: bits % 3 == 0, empty: false }
    }

    fn nulls(&self, index: usize) -> ferrite_where::Membership {
        ferrite_where::Membership { contains: false, has_null: index % 2 == 0, empty: index % 3 == 0 }
    }
}

/// The clause compiled with subqueries allowed: listing its tables, printing and evaluating
/// it must not fail on anything that compiles.
fn exercise_subqueries(table: &TableSchema, sql: &str, params: &BTreeMap<String, String>, rows: &[Vec<Option<String>>]) {
    let Ok(w) = WhereClause::compile_with(sql, params, table, &FuzzCatalog) else { return };
    let read = ferrite_where::tables_read(sql).expect("a clause that compiles has readable tables");
    for q in w.subqueries() {
        assert!(read.contains(&q.table.name), "{sql:?}: subquery table {} not listed in {read:?}", q.table.name);
        let _ = q.key();
    }
    let (printed, values) = w.to_sql(1);
    if let Err(e) = pg_query::parse(&format!("SELECT 1 WHERE {printed}"), 0) {
        if !matches!(e, pg_query::Error::Decode(_)) {
            panic!("to_sql printed SQL that does not parse: {printed:?} ({e}) params {values:?}");
        }
    }
    for row in rows {
        let _ = w.matches_with(row, &ParitySets);
    }
}

/// True when `v` is how Postgres itself prints a value of `column` (what logical replication
/// sends), for the types the router's equality index covers; other types are never indexed.
fn is_canonical(column: &Column, v: &str) -> bool {
    if column.dims > 0 {
        return false;
    }
    match column.base_type_name.as_str() {
        "int2" | "int4" | "int8" => v.parse::<i64>().is_ok_and(|i| i.to_string() == v),
        "bool" => v == "t" || v == "f",
        "uuid" => {
            v.len() == 36
                && v.bytes().enumerate().all(|(i, b)| {
                    if matches!(i, 8 | 13 | 18 | 23) {
                        b == b'-'
                    } else {
                        b.is_ascii_digit() || (b'a'..=b'f').contains(&b)
                    }
                })
        }
        "text" | "varchar" | "name" => true,
        _ => column.kind == TypeKind::Enum,
    }
}

/// Aligns `values` with `table`'s columns: missing values are NULL, extra ones dropped, as rows
/// from replication always have exactly one value per column.
pub fn full_row(table: &TableSchema, mut values: Vec<Option<String>>) -> Vec<Option<String>> {
    values.resize(table.columns.len(), None);
    values
}
