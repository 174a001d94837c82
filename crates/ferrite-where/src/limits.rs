//! Bounds on what one where clause may cost. Shape filters are evaluated on the replication path
//! for every candidate row change, so a clause a client sends must not be able to stall it: each
//! compiled clause is checked against these limits, and one over a limit is refused with a
//! message naming it ([`WhereError::Limit`], a 400 for HTTP clients).
//!
//! Within them, evaluating a clause against a row costs at most about
//! `MAX_COLUMN_REFS × row size + MAX_NODES + MAX_LIST_ITEMS × log(row array length)`:
//! every operation is linear in its operands (LIKE included, see [`super::like`]), array
//! containment sorts instead of comparing every pair, and intermediate values are built only
//! from column values and constants.

use super::expr::{Expr, ExprKind};
use super::value::Value;
use super::WhereError;

/// Largest where clause text, in bytes (parsing is linear in it).
pub const MAX_WHERE_BYTES: usize = 64 * 1024;
/// Most nodes in a compiled clause (after constant folding).
pub const MAX_NODES: usize = 1_000;
/// Most column references in a compiled clause: each one reads a row value, which may be large.
pub const MAX_COLUMN_REFS: usize = 64;
/// Most values in one `IN (…)` list or array constant (including `$n` and claim arrays).
pub const MAX_LIST_ITEMS: usize = 10_000;
/// Longest `LIKE`/`ILIKE` pattern, in characters. Patterns must be constants.
pub const MAX_LIKE_PATTERN_CHARS: usize = 1_024;
/// Deepest nesting of subqueries (a subquery in a subquery's where clause is level 2).
pub const MAX_SUBQUERY_DEPTH: usize = 4;
/// Most subqueries in one clause, nested ones included: each is a dependency the server keeps
/// up to date.
pub const MAX_SUBQUERIES: usize = 16;
/// Longest `char(n)` a value may be cast to (the cast pads every value to `n` characters).
pub const MAX_BPCHAR_CAST: usize = 10_000;

/// Refuses text beyond [`MAX_WHERE_BYTES`] before it is parsed.
pub(crate) fn check_text(sql: &str) -> Result<(), WhereError> {
    if sql.len() > MAX_WHERE_BYTES {
        return Err(WhereError::Limit(format!(
            "where clause too long: {} bytes (the limit is {MAX_WHERE_BYTES})",
            sql.len()
        )));
    }
    Ok(())
}

#[derive(Default)]
struct Cost {
    nodes: usize,
    column_refs: usize,
}

/// Checks a compiled clause against the node, column-reference, list and pattern limits.
pub(crate) fn check(e: &Expr) -> Result<(), WhereError> {
    let mut cost = Cost::default();
    walk(e, &mut cost)?;
    if cost.nodes > MAX_NODES {
        return Err(WhereError::Limit(format!(
            "where clause too complex: {} expression nodes (the limit is {MAX_NODES})",
            cost.nodes
        )));
    }
    if cost.column_refs > MAX_COLUMN_REFS {
        return Err(WhereError::Limit(format!(
            "where clause too complex: {} column references (the limit is {MAX_COLUMN_REFS})",
            cost.column_refs
        )));
    }
    Ok(())
}

fn walk(e: &Expr, cost: &mut Cost) -> Result<(), WhereError> {
    cost.nodes += 1;
    match &e.kind {
        ExprKind::Column(_) => cost.column_refs += 1,
        ExprKind::InSubquery { columns, .. } => cost.column_refs += columns.len(),
        ExprKind::Const(Value::Array(items)) if items.len() > MAX_LIST_ITEMS => {
            return Err(too_many_items(items.len()))
        }
        ExprKind::ArrayCtor(items) if items.len() > MAX_LIST_ITEMS => return Err(too_many_items(items.len())),
        ExprKind::Like { pattern, escape, .. } => {
            for part in std::iter::once(pattern).chain(escape) {
                match &part.kind {
                    ExprKind::Const(Value::Text(p)) => {
                        let n = p.chars().count();
                        if n > MAX_LIKE_PATTERN_CHARS {
                            return Err(WhereError::Limit(format!(
                                "LIKE pattern too long: {n} characters (the limit is {MAX_LIKE_PATTERN_CHARS})"
                            )));
                        }
                    }
                    ExprKind::Const(_) => {}
                    _ => {
                        return Err(WhereError::Unsupported(
                            "LIKE and ILIKE patterns (and ESCAPE) must be constants, not computed from columns".into(),
                        ))
                    }
                }
            }
        }
        _ => {}
    }
    for c in e.children() {
        walk(c, cost)?;
    }
    Ok(())
}

fn too_many_items(n: usize) -> WhereError {
    WhereError::Limit(format!("list too long: {n} values (the limit is {MAX_LIST_ITEMS})"))
}
