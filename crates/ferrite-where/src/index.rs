//! Equality terms for the router's index: `col = const` / `col IN (consts)` conjuncts whose
//! constants can be rendered exactly as the column's text in the replication stream, so the router
//! can look shapes up by a row's value instead of evaluating every shape.

use super::expr::{CmpOp, Expr, ExprKind};
use super::numeric::Num;
use super::types::Ty;
use super::value::Value;

/// The column behind `e` if `e` is a column read through casts that keep equality exact
/// (integer widening, integer → numeric, varchar/name → text).
fn column_of(e: &Expr) -> Option<usize> {
    match &e.kind {
        ExprKind::Column(i) => Some(*i),
        ExprKind::Cast { arg, typmod: super::types::Typmod::None, .. } => {
            let exact = matches!(
                (&arg.ty, &e.ty),
                (Ty::Int2, Ty::Int4 | Ty::Int8 | Ty::Numeric)
                    | (Ty::Int4, Ty::Int8 | Ty::Numeric)
                    | (Ty::Int8, Ty::Numeric)
                    | (Ty::Varchar | Ty::Name, Ty::Text)
            );
            if exact {
                column_of(arg)
            } else {
                None
            }
        }
        _ => None,
    }
}

/// `(column, constant values, comparison type)` of one conjunct, if it is an indexable equality
/// (`col = const`, `col = ANY(const array)`, `col IN (consts)`, a bare boolean column or its NOT).
fn term_values(e: &Expr) -> Option<(usize, Vec<Value>, Ty)> {
    match &e.kind {
        ExprKind::Cmp { op: CmpOp::Eq, left, right } => match (&left.kind, &right.kind) {
            (_, ExprKind::Const(v)) => Some((column_of(left)?, vec![v.clone()], left.ty.clone())),
            (ExprKind::Const(v), _) => Some((column_of(right)?, vec![v.clone()], right.ty.clone())),
            _ => None,
        },
        ExprKind::AnyAll { op: CmpOp::Eq, all: false, left, array } => match &array.kind {
            ExprKind::Const(Value::Array(items)) => Some((column_of(left)?, items.clone(), left.ty.clone())),
            ExprKind::Const(Value::Null) => Some((column_of(left)?, vec![], left.ty.clone())),
            _ => None,
        },
        ExprKind::Column(i) if e.ty == Ty::Bool => Some((*i, vec![Value::Bool(true)], Ty::Bool)),
        ExprKind::Not(arg) => match arg.kind {
            ExprKind::Column(i) if arg.ty == Ty::Bool => Some((i, vec![Value::Bool(false)], Ty::Bool)),
            _ => None,
        },
        _ => None,
    }
}

/// The exact text(s) a column of type `col` has when it equals `v`. `Some(vec![])` when no value
/// of the column can equal `v`; `None` when we cannot say.
fn render(col: &Ty, v: &Value) -> Option<Vec<String>> {
    let range = |lo: i128, hi: i128, x: i128| {
        if x >= lo && x <= hi {
            vec![x.to_string()]
        } else {
            vec![]
        }
    };
    let int_bounds = match col {
        Ty::Int2 => Some((i16::MIN as i128, i16::MAX as i128)),
        Ty::Int4 => Some((i32::MIN as i128, i32::MAX as i128)),
        Ty::Int8 => Some((i64::MIN as i128, i64::MAX as i128)),
        _ => None,
    };
    match (col, v) {
        (_, Value::Null) => Some(vec![]),
        (Ty::Int2 | Ty::Int4 | Ty::Int8, Value::Int(i)) => {
            let (lo, hi) = int_bounds?;
            Some(range(lo, hi, *i as i128))
        }
        (Ty::Int2 | Ty::Int4 | Ty::Int8, Value::Num(n)) => {
            let (lo, hi) = int_bounds?;
            match n {
                Num::Fin(d) => {
                    let i = d.round_to_i128();
                    if Num::Fin(super::numeric::Dec::new(i, 0).ok()?) == *n {
                        Some(range(lo, hi, i))
                    } else {
                        Some(vec![])
                    }
                }
                _ => Some(vec![]),
            }
        }
        (Ty::Text | Ty::Varchar | Ty::Name | Ty::Enum(_), Value::Text(s)) => Some(vec![s.clone()]),
        (Ty::Uuid, Value::Uuid(_)) => Some(vec![super::value::output(col, v)?]),
        (Ty::Bool, Value::Bool(true)) => Some(vec!["t".into(), "true".into()]),
        (Ty::Bool, Value::Bool(false)) => Some(vec!["f".into(), "false".into()]),
        _ => None,
    }
}

/// See [`super::WhereClause::equality_index_term`].
pub(crate) fn equality_term(root: &Expr, column_types: &[Ty]) -> Option<(usize, Vec<String>)> {
    let mut conjuncts = Vec::new();
    flatten_and(root, &mut conjuncts);
    let mut best: Option<(usize, Vec<String>)> = None;
    for c in conjuncts {
        let Some((col, values, cmp_ty)) = term_values(c) else {
            continue;
        };
        let Some(col_ty) = column_types.get(col) else {
            continue;
        };
        // The comparison must be in a type where equality is the column's own text equality.
        let mut rendered = Vec::new();
        let mut ok = true;
        for v in &values {
            match render(col_ty, v) {
                Some(texts) => rendered.extend(texts),
                None => {
                    ok = false;
                    break;
                }
            }
        }
        if !ok || !comparison_is_exact(&cmp_ty, col_ty) {
            continue;
        }
        rendered.sort();
        rendered.dedup();
        if best.as_ref().is_none_or(|(_, b)| rendered.len() < b.len()) {
            best = Some((col, rendered));
        }
    }
    best
}

/// Whether equality in the comparison type coincides with equality of the column's text:
/// integers compared as integers or numeric, strings as text (name also as name), and uuid, bool,
/// enums as themselves.
fn comparison_is_exact(cmp_ty: &Ty, col: &Ty) -> bool {
    match col {
        Ty::Int2 | Ty::Int4 | Ty::Int8 => {
            matches!(cmp_ty, Ty::Int2 | Ty::Int4 | Ty::Int8 | Ty::Numeric)
        }
        Ty::Text | Ty::Varchar => *cmp_ty == Ty::Text,
        Ty::Name => matches!(cmp_ty, Ty::Text | Ty::Name),
        Ty::Uuid | Ty::Bool | Ty::Enum(_) => cmp_ty == col,
        _ => false,
    }
}

fn flatten_and<'e>(e: &'e Expr, out: &mut Vec<&'e Expr>) {
    match &e.kind {
        ExprKind::And(args) => {
            for a in args {
                flatten_and(a, out);
            }
        }
        _ => out.push(e),
    }
}
