//! Evaluation of a typed expression against one row, with Postgres' three-valued logic
//! (`Value::Null` is SQL NULL / unknown) and Postgres' errors for overflow and division by zero.

use super::datetime;
use super::expr::{ArithOp, ArrayOp as AOp, BoolTest as BT, CmpOp, Expr, ExprKind, Func};
use super::like::{escape_char, like};
use super::types::Ty;
use super::value::{self, bpchar_trim, check_int, compare, Value};
use super::EvalError;
use std::cmp::Ordering;

/// What an expression is evaluated against: the row's text values, the column names (for
/// error messages) and the current results of the clause's subqueries.
pub(crate) struct Row<'a> {
    pub values: &'a [Option<String>],
    pub names: &'a [String],
    pub sets: &'a dyn super::subquery::SubquerySets,
    /// The current time, in microseconds since 2000-01-01 00:00 UTC, for `now()` and
    /// `CURRENT_DATE`; `None` when the caller evaluates a clause that must not read it.
    pub now: Option<i64>,
}

/// Evaluates `e` against `row`.
pub(crate) fn eval(e: &Expr, row: &Row<'_>) -> Result<Value, EvalError> {
    use ExprKind::*;
    Ok(match &e.kind {
        Column(i) => {
            let name = || row.names.get(*i).cloned().unwrap_or_else(|| format!("#{i}"));
            match row.values.get(*i) {
                None => return Err(EvalError::MissingColumn(name())),
                Some(None) => Value::Null,
                Some(Some(text)) => value::input(&e.ty, text)
                    .map_err(|err| EvalError::BadColumnValue { column: name(), message: err.to_string() })?,
            }
        }
        Const(v) => v.clone(),
        Now => {
            let now = row.now.ok_or_else(|| {
                EvalError::Unsupported("this clause reads the current time: evaluate it with one".into())
            })?;
            match e.ty {
                Ty::Date => Value::Date(now.div_euclid(86_400_000_000)),
                _ => Value::Timestamp(now),
            }
        }
        InSubquery { columns, sub, exists } => {
            let mut values = Vec::with_capacity(columns.len());
            for i in columns {
                match row.values.get(*i) {
                    None => {
                        return Err(EvalError::MissingColumn(
                            row.names.get(*i).cloned().unwrap_or_else(|| format!("#{i}")),
                        ))
                    }
                    Some(v) => values.push(v.as_deref()),
                }
            }
            match super::subquery::membership(row.sets, *sub, &values, *exists) {
                Some(b) => Value::Bool(b),
                None => Value::Null,
            }
        }
        Unknown { text, .. } => match text {
            Some(t) if e.ty != Ty::Unknown => value::input(&e.ty, t)?,
            Some(t) => Value::Text(t.clone()),
            None => Value::Null,
        },
        Cast { arg, typmod, .. } => value::cast(&arg.ty, &e.ty, *typmod, eval(arg, row)?)?,
        Not(arg) => match eval(arg, row)? {
            Value::Bool(b) => Value::Bool(!b),
            _ => Value::Null,
        },
        // Postgres may evaluate the arguments of AND/OR in any order (the planner sorts them by
        // cost and folds constants), so a decisive argument (false for AND, true for OR) wins
        // even when another argument fails to evaluate.
        And(args) => connective(args, row, false)?,
        Or(args) => connective(args, row, true)?,
        Cmp { op, left, right } => {
            let l = eval(left, row)?;
            let r = eval(right, row)?;
            if l.is_null() || r.is_null() {
                Value::Null
            } else {
                Value::Bool(op.holds(compare(&left.ty, &l, &r)))
            }
        }
        Distinct { negated, left, right } => {
            let l = eval(left, row)?;
            let r = eval(right, row)?;
            let distinct = match (l.is_null(), r.is_null()) {
                (true, true) => false,
                (true, false) | (false, true) => true,
                _ => compare(&left.ty, &l, &r) != Ordering::Equal,
            };
            Value::Bool(distinct != *negated)
        }
        Arith { op, left, right } => {
            let l = eval(left, row)?;
            let r = eval(right, row)?;
            if l.is_null() || r.is_null() {
                Value::Null
            } else {
                arith(*op, &e.ty, l, r)?
            }
        }
        Neg(arg) => match eval(arg, row)? {
            Value::Null => Value::Null,
            Value::Int(i) => Value::Int(check_int(&e.ty, -(i as i128))?),
            Value::Float(f) => Value::Float(-f),
            Value::Num(n) => Value::Num(n.neg()),
            Value::Interval(iv) => Value::Interval(iv.neg()?),
            _ => return Err(type_confusion("unary minus")),
        },
        Concat { left, right } => match (eval(left, row)?, eval(right, row)?) {
            (Value::Text(mut a), Value::Text(b)) => {
                a.push_str(&b);
                Value::Text(a)
            }
            _ => Value::Null,
        },
        ArrayConcat { left, right } => array_concat(&left.ty, &right.ty, eval(left, row)?, eval(right, row)?),
        Like { arg, pattern, escape, case_insensitive, negated } => {
            let v = eval(arg, row)?;
            let p = eval(pattern, row)?;
            let esc = match escape {
                Some(x) => match eval(x, row)? {
                    Value::Text(s) => escape_char(&s)?,
                    _ => return Ok(Value::Null),
                },
                None => Some('\\'),
            };
            match (v, p) {
                (Value::Text(s), Value::Text(p)) => Value::Bool(like(&s, &p, esc, *case_insensitive)? != *negated),
                _ => Value::Null,
            }
        }
        IsNull { arg, negated } => Value::Bool(eval(arg, row)?.is_null() != *negated),
        BoolTest { arg, test } => {
            let v = eval(arg, row)?;
            let b = match v {
                Value::Bool(b) => Some(b),
                _ => None,
            };
            Value::Bool(match test {
                BT::IsTrue => b == Some(true),
                BT::IsNotTrue => b != Some(true),
                BT::IsFalse => b == Some(false),
                BT::IsNotFalse => b != Some(false),
                BT::IsUnknown => b.is_none(),
                BT::IsNotUnknown => b.is_some(),
            })
        }
        AnyAll { op, all, left, array } => {
            let l = eval(left, row)?;
            let items = match eval(array, row)? {
                Value::Array(items) => items,
                _ => return Ok(Value::Null),
            };
            any_all(*op, *all, &left.ty, &l, &items)
        }
        ArrayOp { op, left, right } => match (eval(left, row)?, eval(right, row)?) {
            (Value::Array(a), Value::Array(b)) => {
                let elem = left.ty.elem().cloned().unwrap_or(Ty::Text);
                Value::Bool(match op {
                    AOp::Contains => contains(&elem, &a, &b),
                    AOp::ContainedBy => contains(&elem, &b, &a),
                    AOp::Overlaps => overlaps(&elem, &a, &b),
                })
            }
            _ => Value::Null,
        },
        Func { func, args } => call(*func, args, row)?,
        Coalesce(args) => {
            for a in args {
                let v = eval(a, row)?;
                if !v.is_null() {
                    return Ok(v);
                }
            }
            Value::Null
        }
        MinMax { greatest, args } => {
            let mut best: Option<Value> = None;
            for a in args {
                let v = eval(a, row)?;
                if v.is_null() {
                    continue;
                }
                best = Some(match best {
                    None => v,
                    Some(b) => {
                        let o = compare(&e.ty, &v, &b);
                        if (*greatest && o == Ordering::Greater) || (!*greatest && o == Ordering::Less) {
                            v
                        } else {
                            b
                        }
                    }
                });
            }
            best.unwrap_or(Value::Null)
        }
        NullIf { value, cmp } => {
            if eval(cmp, row)? == Value::Bool(true) {
                Value::Null
            } else {
                eval(value, row)?
            }
        }
        ArrayCtor(items) => {
            let mut out = Vec::with_capacity(items.len());
            for it in items {
                out.push(eval(it, row)?);
            }
            Value::Array(out)
        }
    })
}

/// AND (`decisive` = false) or OR (`decisive` = true) with three-valued logic; an error only
/// surfaces when no argument decides the result.
fn connective(args: &[Expr], row: &Row<'_>, decisive: bool) -> Result<Value, EvalError> {
    let mut saw_null = false;
    let mut error = None;
    for a in args {
        match eval(a, row) {
            Ok(Value::Bool(b)) if b == decisive => return Ok(Value::Bool(decisive)),
            Ok(Value::Bool(_)) => {}
            Ok(_) => saw_null = true,
            Err(e) => {
                if error.is_none() {
                    error = Some(e);
                }
            }
        }
    }
    match error {
        Some(e) => Err(e),
        None if saw_null => Ok(Value::Null),
        None => Ok(Value::Bool(!decisive)),
    }
}

fn type_confusion(what: &str) -> EvalError {
    EvalError::Unsupported(format!("internal type error evaluating {what}"))
}

/// Three-valued `op ANY/ALL`.
fn any_all(op: CmpOp, all: bool, ty: &Ty, l: &Value, items: &[Value]) -> Value {
    let mut saw_null = false;
    for it in items {
        if l.is_null() || it.is_null() {
            saw_null = true;
            continue;
        }
        let holds = op.holds(compare(ty, l, it));
        if all && !holds {
            return Value::Bool(false);
        }
        if !all && holds {
            return Value::Bool(true);
        }
    }
    if saw_null {
        Value::Null
    } else {
        Value::Bool(all)
    }
}

/// The non-NULL elements of `a`, sorted, so that membership is a binary search: containment
/// and overlap then cost O((|a| + |b|) log |a|) instead of comparing every pair (a row's array
/// may be long).
fn sorted_elements<'a>(elem: &Ty, a: &'a [Value]) -> Vec<&'a Value> {
    let mut sorted: Vec<&Value> = a.iter().filter(|v| !v.is_null()).collect();
    sorted.sort_unstable_by(|x, y| compare(elem, x, y));
    sorted
}

fn member(elem: &Ty, sorted: &[&Value], x: &Value) -> bool {
    !x.is_null() && sorted.binary_search_by(|y| compare(elem, y, x)).is_ok()
}

/// `a @> b`: every element of `b` is non-NULL and equals some element of `a`.
fn contains(elem: &Ty, a: &[Value], b: &[Value]) -> bool {
    let sorted = sorted_elements(elem, a);
    b.iter().all(|x| member(elem, &sorted, x))
}

/// `a && b`: some non-NULL element is in both.
fn overlaps(elem: &Ty, a: &[Value], b: &[Value]) -> bool {
    let sorted = sorted_elements(elem, a);
    b.iter().any(|x| member(elem, &sorted, x))
}

fn array_concat(lt: &Ty, rt: &Ty, l: Value, r: Value) -> Value {
    match (lt, rt) {
        (Ty::Array(_), Ty::Array(_)) => match (l, r) {
            (Value::Array(mut a), Value::Array(b)) => {
                a.extend(b);
                Value::Array(a)
            }
            (Value::Null, x) | (x, Value::Null) => x,
            _ => Value::Null,
        },
        (Ty::Array(_), _) => match l {
            Value::Array(mut a) => {
                a.push(r);
                Value::Array(a)
            }
            _ => Value::Array(vec![r]),
        },
        _ => match r {
            Value::Array(mut a) => {
                a.insert(0, l);
                Value::Array(a)
            }
            _ => Value::Array(vec![l]),
        },
    }
}

fn call(func: Func, args: &[Expr], row: &Row<'_>) -> Result<Value, EvalError> {
    if func == Func::Concat {
        let mut out = String::new();
        for a in args {
            let v = eval(a, row)?;
            if let Some(s) = value::output(&a.ty, &v) {
                out.push_str(&s);
            }
        }
        return Ok(Value::Text(out));
    }
    let arg = match args.first() {
        Some(a) => eval(a, row)?,
        None => return Err(type_confusion(func.sql())),
    };
    let Value::Text(s) = arg else {
        return Ok(Value::Null);
    };
    Ok(match func {
        Func::Lower => Value::Text(s.to_ascii_lowercase()),
        Func::Upper => Value::Text(s.to_ascii_uppercase()),
        Func::Length => Value::Int(s.chars().count() as i64),
        Func::BpcharLength => Value::Int(bpchar_trim(&s).chars().count() as i64),
        Func::Concat => Value::Null,
    })
}

fn float_result(single: bool, l: f64, r: f64, result: f64, op: ArithOp) -> Result<Value, EvalError> {
    let result = if single { result as f32 as f64 } else { result };
    if result.is_infinite() && !l.is_infinite() && !r.is_infinite() {
        return Err(EvalError::OutOfRange("value out of range: overflow".into()));
    }
    let underflow = match op {
        ArithOp::Mul => result == 0.0 && l != 0.0 && r != 0.0,
        ArithOp::Div => result == 0.0 && l != 0.0 && !r.is_infinite(),
        _ => false,
    };
    if underflow {
        return Err(EvalError::OutOfRange("value out of range: underflow".into()));
    }
    Ok(Value::Float(result))
}

/// Binary arithmetic on non-NULL operands whose types the compiler has fixed.
fn arith(op: ArithOp, result_ty: &Ty, l: Value, r: Value) -> Result<Value, EvalError> {
    Ok(match (l, r) {
        (Value::Int(a), Value::Int(b)) => {
            let (a, b) = (a as i128, b as i128);
            let v = match op {
                ArithOp::Add => a + b,
                ArithOp::Sub => a - b,
                ArithOp::Mul => a * b,
                ArithOp::Div => {
                    if b == 0 {
                        return Err(EvalError::DivisionByZero);
                    }
                    a / b
                }
                ArithOp::Mod => {
                    if b == 0 {
                        return Err(EvalError::DivisionByZero);
                    }
                    a % b
                }
            };
            Value::Int(check_int(result_ty, v)?)
        }
        (Value::Float(a), Value::Float(b)) => {
            let single = *result_ty == Ty::Float4;
            let (x, y) = if single { (a as f32 as f64, b as f32 as f64) } else { (a, b) };
            let raw = match op {
                ArithOp::Add => {
                    if single {
                        (x as f32 + y as f32) as f64
                    } else {
                        x + y
                    }
                }
                ArithOp::Sub => {
                    if single {
                        (x as f32 - y as f32) as f64
                    } else {
                        x - y
                    }
                }
                ArithOp::Mul => {
                    if single {
                        (x as f32 * y as f32) as f64
                    } else {
                        x * y
                    }
                }
                ArithOp::Div => {
                    if y == 0.0 && !x.is_nan() {
                        return Err(EvalError::DivisionByZero);
                    }
                    if single {
                        (x as f32 / y as f32) as f64
                    } else {
                        x / y
                    }
                }
                ArithOp::Mod => return Err(type_confusion("float %")),
            };
            float_result(single, x, y, raw, op)?
        }
        (Value::Num(a), Value::Num(b)) => Value::Num(match op {
            ArithOp::Add => a.add(&b)?,
            ArithOp::Sub => a.sub(&b)?,
            ArithOp::Mul => a.mul(&b)?,
            ArithOp::Div => a.div(&b)?,
            ArithOp::Mod => a.rem(&b)?,
        }),
        (Value::Date(d), Value::Int(n)) => match op {
            ArithOp::Add => Value::Date(datetime::date_add_days(d, n)?),
            ArithOp::Sub => Value::Date(datetime::date_add_days(d, -n)?),
            _ => return Err(type_confusion("date arithmetic")),
        },
        (Value::Int(n), Value::Date(d)) => Value::Date(datetime::date_add_days(d, n)?),
        (Value::Date(a), Value::Date(b)) => Value::Int(check_int(&Ty::Int4, datetime::date_diff(a, b)? as i128)?),
        (Value::Timestamp(t), Value::Interval(iv)) => match op {
            ArithOp::Add => Value::Timestamp(datetime::timestamp_add_interval(t, iv)?),
            ArithOp::Sub => Value::Timestamp(datetime::timestamp_add_interval(t, iv.neg()?)?),
            _ => return Err(type_confusion("timestamp arithmetic")),
        },
        (Value::Interval(iv), Value::Timestamp(t)) => Value::Timestamp(datetime::timestamp_add_interval(t, iv)?),
        (Value::Timestamp(a), Value::Timestamp(b)) => Value::Interval(datetime::timestamp_diff(a, b)?),
        (Value::Interval(a), Value::Interval(b)) => Value::Interval(match op {
            ArithOp::Add => a.add(&b)?,
            ArithOp::Sub => a.add(&b.neg()?)?,
            _ => return Err(type_confusion("interval arithmetic")),
        }),
        _ => return Err(type_confusion("arithmetic")),
    })
}
