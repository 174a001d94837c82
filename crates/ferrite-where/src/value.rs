//! Typed values: reading Postgres text (row values, literals, params) into them, writing them back
//! in Postgres' canonical text, comparing them, and the casts between supported types.

use super::array::{format_array_literal, split_array_literal};
use super::datetime::{self, Interval};
use super::float::{cmp_float, format_float, parse_float};
use super::numeric::Num;
use super::types::{Ty, Typmod};
use super::EvalError;
use std::cmp::Ordering;

/// A value of some [`Ty`]; which variant goes with which type is fixed by the type checker.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    Null,
    Bool(bool),
    /// int2 / int4 / int8 (the static type bounds the range).
    Int(i64),
    /// float4 (holding an exactly representable f32) / float8.
    Float(f64),
    Num(Num),
    /// text, varchar, bpchar (with its padding), name, enum labels, opaque values.
    Text(String),
    Uuid(u128),
    /// Days since 2000-01-01.
    Date(i64),
    /// Microseconds since midnight.
    Time(i64),
    /// Microseconds since 2000-01-01 00:00 UTC (timestamp and timestamptz).
    Timestamp(i64),
    Interval(Interval),
    Array(Vec<Value>),
}

/// Longest `name` in bytes (NAMEDATALEN - 1).
const NAME_MAX_BYTES: usize = 63;

impl Value {
    /// Whether this is SQL NULL.
    pub(crate) fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }
}

fn int_range(ty: &Ty) -> (i64, i64, &'static str) {
    match ty {
        Ty::Int2 => (i16::MIN as i64, i16::MAX as i64, "smallint"),
        Ty::Int4 => (i32::MIN as i64, i32::MAX as i64, "integer"),
        _ => (i64::MIN, i64::MAX, "bigint"),
    }
}

/// Checks an integer result against the range of `ty` (`smallint out of range`, ...).
pub(crate) fn check_int(ty: &Ty, v: i128) -> Result<i64, EvalError> {
    let (lo, hi, name) = int_range(ty);
    if v < lo as i128 || v > hi as i128 {
        return Err(EvalError::OutOfRange(format!("{name} out of range")));
    }
    Ok(v as i64)
}

fn parse_int(ty: &Ty, input: &str) -> Result<i64, EvalError> {
    let (_, _, name) = int_range(ty);
    let s = input.trim_matches(|c: char| c.is_ascii_whitespace());
    let body = s.strip_prefix(['+', '-']).unwrap_or(s);
    if body.is_empty() || !body.bytes().all(|b| b.is_ascii_digit()) {
        return Err(EvalError::InvalidInput(format!("invalid input syntax for type {name}: \"{input}\"")));
    }
    let v: i128 = match s.parse() {
        Ok(v) => v,
        Err(_) => return Err(EvalError::OutOfRange(format!("value \"{input}\" is out of range for type {name}"))),
    };
    check_int(ty, v).map_err(|_| EvalError::OutOfRange(format!("value \"{input}\" is out of range for type {name}")))
}

/// Postgres' `boolin`: t/true/yes/y/on/1 and f/false/no/n/off/0, any case, unique prefixes.
pub(crate) fn parse_bool(input: &str) -> Result<bool, EvalError> {
    let s = input.trim_matches(|c: char| c.is_ascii_whitespace()).to_ascii_lowercase();
    let ok = match s.as_str() {
        "1" => Some(true),
        "0" => Some(false),
        "o" | "" => None,
        _ if s.starts_with("on") && "on".starts_with(s.as_str()) => Some(true),
        _ if s.len() >= 2 && "off".starts_with(s.as_str()) => Some(false),
        _ if "true".starts_with(s.as_str()) => Some(true),
        _ if "false".starts_with(s.as_str()) => Some(false),
        _ if "yes".starts_with(s.as_str()) => Some(true),
        _ if "no".starts_with(s.as_str()) => Some(false),
        _ => None,
    };
    ok.ok_or_else(|| EvalError::InvalidInput(format!("invalid input syntax for type boolean: \"{input}\"")))
}

/// Postgres' `uuid_in`: 32 hex digits, optional `{}` and a hyphen after any group of four.
fn parse_uuid(input: &str) -> Result<u128, EvalError> {
    let bad = || EvalError::InvalidInput(format!("invalid input syntax for type uuid: \"{input}\""));
    let b = input.as_bytes();
    let mut i = 0;
    let braces = b.first() == Some(&b'{');
    if braces {
        i += 1;
    }
    let mut v: u128 = 0;
    for byte in 0..16 {
        let hi = b.get(i).and_then(|c| (*c as char).to_digit(16)).ok_or_else(bad)?;
        let lo = b.get(i + 1).and_then(|c| (*c as char).to_digit(16)).ok_or_else(bad)?;
        v = (v << 8) | (hi * 16 + lo) as u128;
        i += 2;
        if b.get(i) == Some(&b'-') && byte % 2 == 1 && byte < 15 {
            i += 1;
        }
    }
    if braces {
        if b.get(i) != Some(&b'}') {
            return Err(bad());
        }
        i += 1;
    }
    if i != b.len() {
        return Err(bad());
    }
    Ok(v)
}

fn format_uuid(v: u128) -> String {
    let h = format!("{v:032x}");
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

/// Truncates to at most `max` bytes on a character boundary.
fn truncate_bytes(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// `bpchar` without its trailing spaces (what comparisons and `::text` see).
pub(crate) fn bpchar_trim(s: &str) -> &str {
    s.trim_end_matches(' ')
}

/// The type's input function: Postgres text → value. Errors carry Postgres' message.
pub(crate) fn input(ty: &Ty, text: &str) -> Result<Value, EvalError> {
    Ok(match ty {
        Ty::Int2 | Ty::Int4 | Ty::Int8 => Value::Int(parse_int(ty, text)?),
        Ty::Float4 => Value::Float(parse_float(text, true)?),
        Ty::Float8 => Value::Float(parse_float(text, false)?),
        Ty::Numeric => Value::Num(Num::parse(text)?),
        Ty::Bool => Value::Bool(parse_bool(text)?),
        Ty::Text | Ty::Varchar | Ty::Bpchar | Ty::Enum(_) | Ty::Opaque(_) | Ty::Unknown => {
            Value::Text(text.to_string())
        }
        Ty::Name => Value::Text(truncate_bytes(text, NAME_MAX_BYTES)),
        Ty::Uuid => Value::Uuid(parse_uuid(text)?),
        Ty::Date => Value::Date(datetime::parse_date(text)?),
        Ty::Time => Value::Time(datetime::parse_time(text)?),
        Ty::Timestamp => Value::Timestamp(datetime::parse_timestamp(text, false)?),
        Ty::Timestamptz => Value::Timestamp(datetime::parse_timestamp(text, true)?),
        Ty::Interval => Value::Interval(Interval::parse(text)?),
        Ty::Array(elem) => {
            let parts = split_array_literal(text, &ty.display())?;
            let mut out = Vec::with_capacity(parts.len());
            for p in parts {
                out.push(match p {
                    None => Value::Null,
                    Some(s) => input(elem, &s)?,
                });
            }
            Value::Array(out)
        }
    })
}

/// The type's output function: value → Postgres' canonical text (`None` for NULL).
pub(crate) fn output(ty: &Ty, v: &Value) -> Option<String> {
    Some(match (ty, v) {
        (_, Value::Null) => return None,
        (_, Value::Bool(b)) => if *b { "t" } else { "f" }.to_string(),
        (_, Value::Int(i)) => i.to_string(),
        (Ty::Float4, Value::Float(f)) => format_float(*f, true),
        (_, Value::Float(f)) => format_float(*f, false),
        (_, Value::Num(n)) => n.to_string(),
        (_, Value::Text(s)) => s.clone(),
        (_, Value::Uuid(u)) => format_uuid(*u),
        (_, Value::Date(d)) => datetime::format_date(*d),
        (_, Value::Time(t)) => datetime::format_time(*t),
        (Ty::Timestamptz, Value::Timestamp(t)) => datetime::format_timestamp(*t, true),
        (_, Value::Timestamp(t)) => datetime::format_timestamp(*t, false),
        (_, Value::Interval(i)) => i.format(),
        (_, Value::Array(items)) => {
            let elem = ty.elem().cloned().unwrap_or(Ty::Text);
            let texts: Vec<Option<String>> = items.iter().map(|x| output(&elem, x)).collect();
            format_array_literal(&texts)
        }
    })
}

/// The `::text` cast, which differs from the output function for bool (`true`/`false`) and
/// bpchar (trailing spaces removed).
pub(crate) fn to_text(ty: &Ty, v: &Value) -> Option<String> {
    match (ty, v) {
        (_, Value::Null) => None,
        (Ty::Bool, Value::Bool(b)) => Some(if *b { "true" } else { "false" }.to_string()),
        (Ty::Bpchar, Value::Text(s)) => Some(bpchar_trim(s).to_string()),
        _ => output(ty, v),
    }
}

/// Compares two non-NULL values of type `ty` with Postgres' btree ordering (C collation for
/// strings, NaN last for floats and numeric, NULL elements last inside arrays).
pub(crate) fn compare(ty: &Ty, a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::Null, Value::Null) => Ordering::Equal,
        (Value::Null, _) => Ordering::Greater,
        (_, Value::Null) => Ordering::Less,
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        (Value::Int(x), Value::Int(y)) => x.cmp(y),
        (Value::Float(x), Value::Float(y)) => cmp_float(*x, *y),
        (Value::Num(x), Value::Num(y)) => x.cmp(y),
        (Value::Text(x), Value::Text(y)) => {
            if *ty == Ty::Bpchar {
                bpchar_trim(x).as_bytes().cmp(bpchar_trim(y).as_bytes())
            } else {
                x.as_bytes().cmp(y.as_bytes())
            }
        }
        (Value::Uuid(x), Value::Uuid(y)) => x.cmp(y),
        (Value::Date(x), Value::Date(y)) => x.cmp(y),
        (Value::Time(x), Value::Time(y)) => x.cmp(y),
        (Value::Timestamp(x), Value::Timestamp(y)) => x.cmp(y),
        (Value::Interval(x), Value::Interval(y)) => x.cmp(y),
        (Value::Array(x), Value::Array(y)) => {
            let elem = ty.elem().cloned().unwrap_or(Ty::Text);
            for (p, q) in x.iter().zip(y.iter()) {
                let o = compare(&elem, p, q);
                if o != Ordering::Equal {
                    return o;
                }
            }
            x.len().cmp(&y.len())
        }
        // Mismatched variants cannot happen for a well-typed expression; order them stably.
        _ => Ordering::Equal,
    }
}

fn cast_error(from: &Ty, to: &Ty) -> EvalError {
    EvalError::Unsupported(format!("cannot cast type {} to {}", from.display(), to.display()))
}

/// Whether an explicit cast `from::to` is one we implement (checked when compiling).
pub(crate) fn can_cast(from: &Ty, to: &Ty) -> bool {
    use Ty::*;
    if from == to || *from == Unknown {
        return !matches!(to, Opaque(_) | Unknown);
    }
    if matches!(from, Opaque(_)) || matches!(to, Opaque(_) | Unknown) {
        return false;
    }
    // Everything converts to and from the string types through its text form.
    if to.is_string() || from.is_string() {
        return true;
    }
    match (from, to) {
        (a, b)
            if a.category() == super::types::Category::Numeric && b.category() == super::types::Category::Numeric =>
        {
            true
        }
        (Int4, Bool) | (Bool, Int4) => true,
        (Date, Timestamp | Timestamptz) => true,
        (Timestamp, Date | Timestamptz | Time) | (Timestamptz, Date | Timestamp | Time) => true,
        (Array(a), Array(b)) => can_cast(a, b),
        _ => false,
    }
}

fn float_to_int(ty: &Ty, f: f64) -> Result<i64, EvalError> {
    let (lo, hi, name) = int_range(ty);
    let r = f.round_ties_even();
    // Postgres checks the rounded value against the range with exclusive float bounds.
    let _ = hi;
    if r.is_nan() || r < lo as f64 || r >= -(lo as f64) {
        return Err(EvalError::OutOfRange(format!("{name} out of range")));
    }
    Ok(r as i64)
}

/// float8 → float4 with Postgres' overflow/underflow checks.
pub(crate) fn to_float4(f: f64) -> Result<f64, EvalError> {
    let r = f as f32;
    if r.is_infinite() && !f.is_infinite() {
        return Err(EvalError::OutOfRange("value out of range: overflow".into()));
    }
    if r == 0.0 && f != 0.0 {
        return Err(EvalError::OutOfRange("value out of range: underflow".into()));
    }
    Ok(r as f64)
}

/// Casts `v` from `from` to `to` (implicit or explicit), applying `typmod`.
pub(crate) fn cast(from: &Ty, to: &Ty, typmod: Typmod, v: Value) -> Result<Value, EvalError> {
    if v.is_null() {
        return Ok(Value::Null);
    }
    let out = cast_inner(from, to, v)?;
    apply_typmod(to, typmod, out)
}

fn cast_inner(from: &Ty, to: &Ty, v: Value) -> Result<Value, EvalError> {
    use Ty::*;
    if from == to {
        return Ok(v);
    }
    if to.is_string() {
        let text = match (from, &v) {
            (Unknown, Value::Text(s)) => s.clone(),
            _ => to_text(from, &v).unwrap_or_default(),
        };
        return Ok(Value::Text(if *to == Name { truncate_bytes(&text, NAME_MAX_BYTES) } else { text }));
    }
    if from.is_string() || *from == Unknown {
        let text = match &v {
            Value::Text(s) if *from == Bpchar => bpchar_trim(s).to_string(),
            Value::Text(s) => s.clone(),
            _ => return Err(cast_error(from, to)),
        };
        return input(to, &text);
    }
    Ok(match (from, to, v) {
        (_, Int2 | Int4 | Int8, Value::Int(i)) => Value::Int(check_int(to, i as i128)?),
        (_, Int2 | Int4 | Int8, Value::Float(f)) => Value::Int(float_to_int(to, f)?),
        (_, Int2 | Int4 | Int8, Value::Num(n)) => Value::Int(check_int(to, n.to_i128()?)?),
        (_, Int4, Value::Bool(b)) => Value::Int(b as i64),
        (_, Bool, Value::Int(i)) => Value::Bool(i != 0),
        (_, Float8, Value::Int(i)) => Value::Float(i as f64),
        (_, Float4, Value::Int(i)) => Value::Float(i as f32 as f64),
        (_, Float8, Value::Float(f)) => Value::Float(f),
        (_, Float4, Value::Float(f)) => Value::Float(to_float4(f)?),
        (_, Float8, Value::Num(n)) => Value::Float(n.to_f64()),
        (_, Float4, Value::Num(n)) => {
            let f = n.to_f32();
            if f.is_infinite() && !matches!(n, Num::PosInf | Num::NegInf) {
                return Err(EvalError::OutOfRange(format!("\"{n}\" is out of range for type real")));
            }
            Value::Float(f as f64)
        }
        (_, Numeric, Value::Int(i)) => Value::Num(Num::from_i64(i)),
        (Float4, Numeric, Value::Float(f)) => Value::Num(Num::from_float(f, 6)?),
        (_, Numeric, Value::Float(f)) => Value::Num(Num::from_float(f, 15)?),
        (Date, Timestamp | Timestamptz, Value::Date(d)) => Value::Timestamp(datetime::date_to_timestamp(d)?),
        (Timestamp | Timestamptz, Timestamp | Timestamptz, Value::Timestamp(t)) => Value::Timestamp(t),
        (_, Date, Value::Timestamp(t)) => Value::Date(datetime::timestamp_to_date(t)),
        (_, Time, Value::Timestamp(t)) => match datetime::timestamp_to_time(t) {
            Some(us) => Value::Time(us),
            None => Value::Null,
        },
        (Array(fe), Array(te), Value::Array(items)) => {
            let mut out = Vec::with_capacity(items.len());
            for it in items {
                out.push(cast(fe, te, Typmod::None, it)?);
            }
            Value::Array(out)
        }
        _ => return Err(cast_error(from, to)),
    })
}

fn apply_typmod(to: &Ty, typmod: Typmod, v: Value) -> Result<Value, EvalError> {
    Ok(match (typmod, v) {
        (Typmod::None, v) => v,
        (Typmod::Varchar(n), Value::Text(s)) => Value::Text(s.chars().take(n).collect()),
        (Typmod::Bpchar(n), Value::Text(s)) => {
            let mut t: String = s.chars().take(n).collect();
            let len = t.chars().count();
            t.extend(std::iter::repeat_n(' ', n - len));
            Value::Text(t)
        }
        (Typmod::Numeric(p, s), Value::Num(n)) => Value::Num(n.apply_typmod(p, s)?),
        (_, v) => {
            let _ = to;
            v
        }
    })
}
