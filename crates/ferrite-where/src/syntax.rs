//! Running libpg_query on `SELECT 1 WHERE <where>` and turning its errors into Electric's
//! `At location N: <message>` form.
//!
//! The `pg_query` crate drops the error position, so on a parse error we ask libpg_query (linked
//! by that crate) once more through its C API, which reports `cursorpos`.

use super::WhereError;
use pg_query::protobuf::node::Node as N;
use pg_query::protobuf::{Node, SetOperation};
use std::ffi::{CStr, CString};
use std::os::raw::{c_char, c_int};

/// The text the where clause is embedded in; error positions are reported relative to the end
/// of it, as Electric does.
pub(crate) const PREFIX: &str = "SELECT 1 WHERE ";

/// `PgQueryError` from libpg_query's `pg_query.h`.
#[repr(C)]
struct PgQueryError {
    message: *mut c_char,
    funcname: *mut c_char,
    filename: *mut c_char,
    lineno: c_int,
    cursorpos: c_int,
    context: *mut c_char,
}

/// `PgQueryParseResult` from libpg_query's `pg_query.h`.
#[repr(C)]
struct PgQueryParseResult {
    parse_tree: *mut c_char,
    stderr_buffer: *mut c_char,
    error: *mut PgQueryError,
}

extern "C" {
    fn pg_query_parse(input: *const c_char) -> PgQueryParseResult;
    fn pg_query_free_parse_result(result: PgQueryParseResult);
}

/// Parses `query` with libpg_query's C API only to learn the error message and its 1-based
/// character position; `None` if it parses.
fn parse_error_position(query: &str) -> Option<(String, i32)> {
    let c = CString::new(query).ok()?;
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call; the result is read
    // only through the pointers libpg_query documents (checked for NULL) and freed exactly once
    // with the matching free function.
    unsafe {
        let result = pg_query_parse(c.as_ptr());
        let out = if result.error.is_null() {
            None
        } else {
            let err = &*result.error;
            let message = if err.message.is_null() {
                String::from("syntax error")
            } else {
                CStr::from_ptr(err.message).to_string_lossy().into_owned()
            };
            Some((message, err.cursorpos))
        };
        pg_query_free_parse_result(result);
        out
    }
}

/// Whether `sel` is a bare `SELECT … [FROM …] [WHERE …]`: no DISTINCT, INTO, GROUP BY, HAVING,
/// WINDOW, VALUES, ORDER BY, LIMIT/OFFSET, locking, WITH or set operation.
pub(crate) fn is_plain_select(sel: &pg_query::protobuf::SelectStmt) -> bool {
    sel.distinct_clause.is_empty()
        && sel.into_clause.is_none()
        && sel.group_clause.is_empty()
        && sel.having_clause.is_none()
        && sel.window_clause.is_empty()
        && sel.values_lists.is_empty()
        && sel.sort_clause.is_empty()
        && sel.limit_offset.is_none()
        && sel.limit_count.is_none()
        && sel.locking_clause.is_empty()
        && sel.with_clause.is_none()
        && sel.op == SetOperation::SetopNone as i32
}

/// Parses the where clause and returns its expression node.
pub(crate) fn parse_where(sql: &str) -> Result<Node, WhereError> {
    super::limits::check_text(sql)?;
    if sql.contains('\0') {
        return Err(WhereError::Syntax("invalid where clause: it contains a NUL character".into()));
    }
    let full = format!("{PREFIX}{sql}");
    let parsed = match pg_query::parse(&full, 0) {
        Ok(p) => p,
        Err(pg_query::Error::Parse(message)) => {
            let (message, cursor) = parse_error_position(&full).unwrap_or((message, 0));
            // Like Electric, the location counts characters of the whole
            // `SELECT 1 WHERE <where>` statement that was parsed, from 0 (libpg_query's
            // cursor position counts from 1).
            return Err(WhereError::Syntax(if cursor > 0 {
                format!("At location {}: {message}", cursor - 1)
            } else {
                message
            }));
        }
        // The parse tree crosses from C as protobuf, whose decoder limits nesting depth.
        Err(pg_query::Error::Decode(_)) => {
            return Err(WhereError::Unsupported(
                "unsupported where clause: expressions nested this deeply are not supported".into(),
            ))
        }
        Err(other) => return Err(WhereError::Syntax(other.to_string())),
    };
    let single = || WhereError::Unsupported("unsupported where clause: it must be a single boolean expression".into());
    let stmts = &parsed.protobuf.stmts;
    if stmts.len() != 1 {
        return Err(single());
    }
    let Some(N::SelectStmt(sel)) = stmts[0].stmt.as_ref().and_then(|s| s.node.as_ref()) else {
        return Err(single());
    };
    if !(is_plain_select(sel) && sel.target_list.len() == 1 && sel.from_clause.is_empty()) {
        return Err(single());
    }
    match &sel.where_clause {
        Some(w) => Ok((**w).clone()),
        None => Err(single()),
    }
}

/// Calls `f` on `node` and on every node below it that a where clause can hold — the operands
/// of its expressions and, for a subquery, its select list, `FROM` items and `WHERE` — in
/// pre-order, with how deeply each sits in subqueries (0: outside any). The one walk over an
/// uncompiled clause, for what must be known before compiling it (the claims a rule names, the
/// tables its subqueries read, whether it reads the clock); stops at `f`'s first error.
pub(crate) fn visit<E>(node: &Node, depth: usize, f: &mut impl FnMut(&N, usize) -> Result<(), E>) -> Result<(), E> {
    let Some(n) = node.node.as_ref() else { return Ok(()) };
    f(n, depth)?;
    fn boxed(b: &Option<Box<Node>>) -> Vec<&Node> {
        b.as_deref().into_iter().collect()
    }
    let (children, inner): (Vec<&Node>, Vec<&Node>) = match n {
        N::BoolExpr(b) => (b.args.iter().collect(), vec![]),
        N::AExpr(a) => (boxed(&a.lexpr).into_iter().chain(boxed(&a.rexpr)).collect(), vec![]),
        N::NullTest(t) => (boxed(&t.arg), vec![]),
        N::BooleanTest(t) => (boxed(&t.arg), vec![]),
        N::List(l) => (l.items.iter().collect(), vec![]),
        N::RowExpr(r) => (r.args.iter().collect(), vec![]),
        N::TypeCast(t) => (boxed(&t.arg), vec![]),
        N::FuncCall(f) => (f.args.iter().collect(), vec![]),
        N::CoalesceExpr(c) => (c.args.iter().collect(), vec![]),
        N::MinMaxExpr(m) => (m.args.iter().collect(), vec![]),
        N::AArrayExpr(a) => (a.elements.iter().collect(), vec![]),
        N::SubLink(s) => {
            let inner = match s.subselect.as_ref().and_then(|n| n.node.as_ref()) {
                Some(N::SelectStmt(sel)) => {
                    sel.target_list.iter().chain(&sel.from_clause).chain(sel.where_clause.as_deref()).collect()
                }
                _ => vec![],
            };
            (boxed(&s.testexpr), inner)
        }
        _ => (vec![], vec![]),
    };
    for c in children {
        visit(c, depth, f)?;
    }
    for c in inner {
        visit(c, depth + 1, f)?;
    }
    Ok(())
}
