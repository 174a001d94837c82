//! Subqueries in where clauses and rules: `col IN (SELECT c FROM t WHERE …)`, the tuple form
//! `(a, b) IN (SELECT x, y FROM t WHERE …)`, `NOT IN`, and `EXISTS (SELECT … FROM t WHERE t.c =
//! outer.k AND …)` correlated by equalities only (which is the IN form held to true).
//!
//! A subquery is compiled against its own table, read from a [`Catalog`] the caller fills
//! beforehand ([`tables_read`] lists what it needs), and may itself contain subqueries. It is
//! evaluated against a [`SubquerySets`]: the current contents of each subquery's result, which
//! the server keeps up to date from the replication stream (one shared node per distinct inner
//! query). Only the membership of the outer row's values is asked, so comparisons must be ones
//! where equal values have equal text: both sides integers, both text (`text`/`varchar`), both
//! `uuid`, both `boolean`, or both the same enum — anything else is refused, never guessed.
//!
//! `x IN S` follows SQL's three-valued logic exactly for a single column (NULL when `x` is NULL
//! and `S` is not empty, or when `x` is not in `S` and `S` holds a NULL), so `NOT IN` is exact.
//! For a tuple, what decides NULL is which inner rows are NULL in which columns; rather than keep
//! that, a tuple `IN` may only be used where NULL and false mean the same (under AND and OR, up
//! to the root of the clause): `NOT (a, b) IN (…)` is refused. (An `EXISTS` correlated on
//! several columns is never NULL, so it may be used anywhere.)

use super::expr::{Expr, ExprKind};
use super::types::Ty;
use super::WhereError;
use ferrite_protocol::relation::QualifiedName;
use ferrite_protocol::schema::TableSchema;
use std::sync::Arc;

/// The tables a clause's subqueries may read, by name: what the server looked up in Postgres
/// before compiling. A table missing here is reported as not existing.
pub trait Catalog {
    /// The schema of `name`, or `None` when there is no such table (or the caller may not read it).
    fn table(&self, name: &QualifiedName) -> Option<Arc<TableSchema>>;

    /// The read rule every subquery on `table` is held to (ANDed into its where clause as a
    /// separately compiled tree), so that a client's where clause cannot learn through a
    /// subquery what it could not read directly. `None`: the subquery reads the table as is
    /// (rules' own subqueries, insecure mode, public tables). An error refuses the clause.
    fn read_rule(&self, table: &TableSchema) -> Result<Option<super::WhereClause>, WhereError> {
        let _ = table;
        Ok(None)
    }
}

/// No tables at all: what a clause compiled without a catalog sees (its subqueries are refused).
pub struct NoCatalog;

impl Catalog for NoCatalog {
    fn table(&self, _: &QualifiedName) -> Option<Arc<TableSchema>> {
        None
    }
}

/// What one subquery's result holds now, as far as one outer row's values are concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Membership {
    /// A result row equals the outer values (all of them non-NULL).
    pub contains: bool,
    /// Some result row has a NULL (in the single compared column).
    pub has_null: bool,
    /// The result has no rows at all.
    pub empty: bool,
}

impl Membership {
    /// How a result held as plain rows (each the texts of its projected columns, `None` = NULL)
    /// relates to `key`, the outer values (`None`: the outer value is NULL, and only NULLs and
    /// emptiness matter): the meaning every [`SubquerySets`] gives, spelled out without an
    /// index — what tests check indexed results against.
    pub fn of_rows<V: AsRef<str>>(rows: &[Vec<Option<V>>], key: Option<&[&str]>) -> Membership {
        let contains = key.is_some_and(|key| {
            rows.iter().any(|r| {
                r.len() == key.len() && r.iter().zip(key).all(|(v, k)| v.as_ref().is_some_and(|v| v.as_ref() == *k))
            })
        });
        Membership { contains, has_null: rows.iter().any(|r| r.iter().any(Option::is_none)), empty: rows.is_empty() }
    }
}

/// The current results of a clause's subqueries, asked during evaluation.
pub trait SubquerySets {
    /// How subquery `index` (of [`super::WhereClause::subqueries`]) relates to `key`, the outer
    /// row's text values of the compared columns (none of them NULL).
    fn lookup(&self, index: usize, key: &[&str]) -> Membership;

    /// Whether subquery `index`'s result is empty and whether it holds a NULL — what `x IN S`
    /// depends on when `x` is NULL.
    fn nulls(&self, index: usize) -> Membership;

    /// The instant the clause is evaluated at ([`crate::window::pg_micros`]), for `now()` and
    /// `CURRENT_DATE`; `None` (the default) when it must not read the time. The state of the
    /// world beside the row, like the results above.
    fn now(&self) -> Option<i64> {
        None
    }
}

/// No subqueries to answer for: the sets of a clause that has none.
pub struct NoSets;

impl SubquerySets for NoSets {
    fn lookup(&self, _: usize, _: &[&str]) -> Membership {
        Membership { empty: true, ..Membership::default() }
    }

    fn nulls(&self, _: usize) -> Membership {
        Membership { empty: true, ..Membership::default() }
    }
}

/// One subquery: the rows of `table` that satisfy `filter`, projected to `columns`.
#[derive(Debug, Clone)]
pub struct Subquery {
    /// The inner table.
    pub table: Arc<TableSchema>,
    /// The projected columns, by index in the inner table (as many as the outer side compares).
    pub columns: Vec<usize>,
    /// The inner where clause, compiled against the inner table; `None` selects every row.
    pub filter: Option<super::WhereClause>,
}

impl Subquery {
    /// A text that is equal for two subqueries exactly when they select the same values: the
    /// table, the projected columns and the filter as printed SQL with its bound values. Shapes
    /// whose subqueries have equal keys can share one dependency node.
    pub fn key(&self) -> String {
        let cols: Vec<&str> = self.columns.iter().map(|&i| self.table.columns[i].name.as_str()).collect();
        let (filter, params) = match &self.filter {
            Some(f) => f.to_sql(1),
            None => (String::new(), vec![]),
        };
        serde_json::json!([self.table.name.to_string(), cols, filter, params]).to_string()
    }
}

/// The comparison families in which equal values have equal text output.
#[derive(Debug, PartialEq, Eq)]
enum Family<'a> {
    Integer,
    Text,
    Uuid,
    Bool,
    Enum(&'a str),
}

fn family(t: &Ty) -> Option<Family<'_>> {
    Some(match t {
        Ty::Int2 | Ty::Int4 | Ty::Int8 => Family::Integer,
        Ty::Text | Ty::Varchar => Family::Text,
        Ty::Uuid => Family::Uuid,
        Ty::Bool => Family::Bool,
        Ty::Enum(name) => Family::Enum(name),
        _ => return None,
    })
}

/// Checks that an outer column may be compared with an inner one by membership of its text.
pub(crate) fn check_comparable(outer: &Ty, inner: &Ty) -> Result<(), WhereError> {
    match (family(outer), family(inner)) {
        (Some(a), Some(b)) if a == b => Ok(()),
        _ => Err(WhereError::Unsupported(format!(
            "subquery comparison of {} with {} is not supported: both sides must be integers, text, uuid, boolean or the same enum",
            outer.display(),
            inner.display()
        ))),
    }
}

/// Refuses a tuple `IN (subquery)` anywhere but under AND/OR from the root (see the module doc).
pub(crate) fn check_tuples_positive(root: &Expr) -> Result<(), WhereError> {
    fn walk(e: &Expr, positive: bool) -> Result<(), WhereError> {
        if let ExprKind::InSubquery { columns, exists, .. } = &e.kind {
            // EXISTS is never NULL: its tuples are exact anywhere.
            if columns.len() > 1 && !exists && !positive {
                return Err(WhereError::Unsupported(
                    "a row of columns IN (subquery) can only be used positively (not under NOT or in another expression): its NULL cases are not evaluated"
                        .into(),
                ));
            }
        }
        let keeps = matches!(e.kind, ExprKind::And(_) | ExprKind::Or(_));
        for c in e.children() {
            walk(c, positive && keeps)?;
        }
        Ok(())
    }
    walk(root, true)
}

/// The value of `columns IN subquery` for one row (`values`: the row's texts), with SQL's
/// three-valued logic for one column; `exists` (the EXISTS form) turns NULL into false.
pub(crate) fn membership(sets: &dyn SubquerySets, index: usize, values: &[Option<&str>], exists: bool) -> Option<bool> {
    let key: Option<Vec<&str>> = values.iter().copied().collect();
    let answer = match key {
        Some(key) => {
            let m = sets.lookup(index, &key);
            if m.contains {
                Some(true)
            } else if m.has_null && values.len() == 1 {
                None
            } else {
                Some(false)
            }
        }
        // A NULL compared with any row is NULL; with no rows, IN is false.
        None => {
            let m = sets.nulls(index);
            if m.empty {
                Some(false)
            } else {
                None
            }
        }
    };
    match (answer, exists) {
        (None, true) => Some(false),
        (a, _) => a,
    }
}

/// The tables the subqueries of `sql` read, nested ones included, in order of appearance and
/// without duplicates (unqualified names are in `public`). What to look up before compiling.
pub fn tables_read(sql: &str) -> Result<Vec<QualifiedName>, WhereError> {
    use pg_query::protobuf::node::Node as N;
    let mut out = Vec::new();
    super::syntax::visit(&super::syntax::parse_where(sql)?, 0, &mut |n, depth| {
        if depth > super::limits::MAX_SUBQUERY_DEPTH {
            return Err(too_deep());
        }
        if let N::RangeVar(r) = n {
            let name = range_var_name(r);
            if !out.contains(&name) {
                out.push(name);
            }
        }
        Ok(())
    })?;
    Ok(out)
}

/// Whether the where clause `sql` reads the current time anywhere (`now()`,
/// `CURRENT_TIMESTAMP`, `CURRENT_DATE`, … — in subqueries too): what tells, before compiling, a
/// rule that must be evaluated at a point in time from one that reads only rows.
pub fn reads_current_time(sql: &str) -> Result<bool, WhereError> {
    use pg_query::protobuf::node::Node as N;
    let mut reads = false;
    super::syntax::visit(&super::syntax::parse_where(sql)?, 0, &mut |n, _| {
        reads |= match n {
            N::SqlvalueFunction(_) => true,
            N::FuncCall(f) => matches!(
                f.funcname
                    .last()
                    .and_then(|n| match &n.node {
                        Some(N::String(s)) => Some(s.sval.to_ascii_lowercase()),
                        _ => None,
                    })
                    .as_deref(),
                Some("now" | "transaction_timestamp" | "statement_timestamp" | "clock_timestamp" | "timeofday")
            ),
            _ => false,
        };
        Ok::<_, WhereError>(())
    })?;
    Ok(reads)
}

/// A `FROM` table's name as written (unqualified: `public`).
pub(crate) fn range_var_name(r: &pg_query::protobuf::RangeVar) -> QualifiedName {
    let schema = if r.schemaname.is_empty() { "public" } else { &r.schemaname };
    QualifiedName::new(schema, &r.relname)
}

pub(crate) fn too_deep() -> WhereError {
    WhereError::Limit(format!(
        "subqueries nested too deeply (the limit is {} levels)",
        super::limits::MAX_SUBQUERY_DEPTH
    ))
}
