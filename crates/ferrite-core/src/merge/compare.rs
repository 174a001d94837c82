//! Typed comparison of Postgres text values, for the `max(col)` / `min(col)` rules of a
//! `resolve` policy: `"10" > "9"` for integers, timestamps compare as instants whatever their
//! offset, and so on.

use rust_decimal::Decimal;
use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

/// How to compare a column's values, from its Postgres type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    /// `int2`, `int4`, `int8`.
    Integer,
    /// `numeric`.
    Decimal,
    /// `float4`, `float8`.
    Float,
    /// `bool` (`false < true`).
    Boolean,
    /// `timestamp`, `timestamptz`, `date`: compared as instants.
    Timestamp,
    /// `json`, `jsonb`: equal when they parse to the same JSON value (key order and spacing
    /// aside); otherwise ordered by their compact text.
    Json,
    /// Everything else: byte order of the text form.
    Other,
}

impl ValueKind {
    /// The kind for a base type name as `pg_type.typname` spells it.
    pub fn from_type_name(name: &str) -> ValueKind {
        match name {
            "int2" | "int4" | "int8" | "oid" => ValueKind::Integer,
            "numeric" => ValueKind::Decimal,
            "float4" | "float8" => ValueKind::Float,
            "bool" => ValueKind::Boolean,
            "timestamp" | "timestamptz" | "date" => ValueKind::Timestamp,
            "json" | "jsonb" => ValueKind::Json,
            _ => ValueKind::Other,
        }
    }

    /// Compares two non-null values of this kind; equal values (`2.5` and `2.50`) compare
    /// `Equal` so a rule falls through to the next. Values that do not parse as the kind sort
    /// after those that do, among themselves by text, so the order stays deterministic.
    pub fn compare(self, a: &str, b: &str) -> Ordering {
        let parsed = |v: &str| -> Option<Key> {
            let v = v.trim();
            match self {
                ValueKind::Integer => v.parse::<i128>().ok().map(Key::Int),
                ValueKind::Decimal => match Decimal::from_str(v) {
                    Ok(d) => Some(Key::Dec(d)),
                    Err(_) => float(v).map(Key::Float),
                },
                ValueKind::Float => float(v).map(Key::Float),
                ValueKind::Boolean => match v {
                    "t" | "true" | "TRUE" | "True" | "1" | "yes" | "on" => Some(Key::Bool(true)),
                    "f" | "false" | "FALSE" | "False" | "0" | "no" | "off" => Some(Key::Bool(false)),
                    _ => None,
                },
                ValueKind::Timestamp => instant_micros(v).map(Key::Int),
                ValueKind::Json => serde_json::from_str::<serde_json::Value>(v).ok().map(Key::Json),
                ValueKind::Other => None,
            }
        };
        match (parsed(a), parsed(b)) {
            (Some(x), Some(y)) => x.cmp(&y),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => a.as_bytes().cmp(b.as_bytes()),
        }
    }
}

#[derive(PartialEq)]
enum Key {
    Int(i128),
    Dec(Decimal),
    Float(f64),
    Bool(bool),
    Json(serde_json::Value),
}

impl Eq for Key {}

impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Key {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (Key::Int(a), Key::Int(b)) => a.cmp(b),
            (Key::Dec(a), Key::Dec(b)) => a.cmp(b),
            (Key::Float(a), Key::Float(b)) => a.total_cmp(b),
            (Key::Dec(a), Key::Float(b)) => f64::try_from(*a).unwrap_or(0.0).total_cmp(b),
            (Key::Float(a), Key::Dec(b)) => a.total_cmp(&f64::try_from(*b).unwrap_or(0.0)),
            (Key::Bool(a), Key::Bool(b)) => a.cmp(b),
            (Key::Json(a), Key::Json(b)) if a == b => Ordering::Equal,
            (Key::Json(a), Key::Json(b)) => a.to_string().cmp(&b.to_string()),
            _ => Ordering::Equal,
        }
    }
}

fn float(v: &str) -> Option<f64> {
    v.parse::<f64>().ok()
}

/// A timestamp, timestamptz or date in Postgres or ISO 8601 text form as Unix microseconds
/// (values without an offset are taken as UTC).
fn instant_micros(v: &str) -> Option<i128> {
    use chrono::{DateTime, NaiveDate, NaiveDateTime};
    let v = v.replacen('T', " ", 1);
    let v = v.strip_suffix('Z').map(|s| format!("{s}+00")).unwrap_or(v);
    if let Ok(t) = DateTime::parse_from_str(&v, "%Y-%m-%d %H:%M:%S%.f%#z") {
        return Some(t.timestamp_micros() as i128);
    }
    if let Ok(t) = NaiveDateTime::parse_from_str(&v, "%Y-%m-%d %H:%M:%S%.f") {
        return Some(t.and_utc().timestamp_micros() as i128);
    }
    if let Ok(d) = NaiveDate::parse_from_str(&v, "%Y-%m-%d") {
        return Some(d.and_hms_opt(0, 0, 0)?.and_utc().timestamp_micros() as i128);
    }
    None
}

/// One step of a `resolve` policy: which of two versions of a row wins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    /// The version with the larger value of the column wins (`max(col)`); NULL loses to any value.
    Max(String),
    /// The version with the smaller value wins (`min(col)`); NULL loses to any value.
    Min(String),
    /// The more recently stamped version wins (`lww`); never a tie.
    Lww,
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rule::Max(c) => write!(f, "max({c})"),
            Rule::Min(c) => write!(f, "min({c})"),
            Rule::Lww => write!(f, "lww"),
        }
    }
}

impl FromStr for Rule {
    type Err = String;
    /// Parses `max(col)`, `min(col)` (the column may be double-quoted) or `lww`.
    fn from_str(s: &str) -> Result<Rule, String> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("lww") {
            return Ok(Rule::Lww);
        }
        let bad = || format!("{s:?} is not a rule: use \"max(column)\", \"min(column)\" or \"lww\"");
        let (func, rest) = s.split_once('(').ok_or_else(bad)?;
        let col = rest.strip_suffix(')').ok_or_else(bad)?.trim();
        let col = match col.strip_prefix('"').and_then(|c| c.strip_suffix('"')) {
            Some(quoted) => quoted.replace("\"\"", "\""),
            None => col.to_string(),
        };
        if col.is_empty() {
            return Err(bad());
        }
        match func.trim().to_ascii_lowercase().as_str() {
            "max" => Ok(Rule::Max(col)),
            "min" => Ok(Rule::Min(col)),
            _ => Err(bad()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_compare_by_their_type() {
        use Ordering::*;
        assert_eq!(ValueKind::Integer.compare("10", "9"), Greater);
        assert_eq!(ValueKind::Other.compare("10", "9"), Less);
        assert_eq!(ValueKind::Decimal.compare("2.50", "2.5"), Equal);
        assert_eq!(ValueKind::Decimal.compare("10.01", "9.99"), Greater);
        assert_eq!(ValueKind::Float.compare("-Infinity", "-1e300"), Less);
        assert_eq!(ValueKind::Boolean.compare("t", "f"), Greater);
        assert_eq!(ValueKind::Timestamp.compare("2026-01-01 10:00:00+02", "2026-01-01 09:00:00+00"), Less);
        assert_eq!(ValueKind::Timestamp.compare("2026-01-01T09:00:00.5Z", "2026-01-01 09:00:00+00"), Greater);
        assert_eq!(ValueKind::Timestamp.compare("2026-01-02", "2026-01-01 23:59:59"), Greater);
        // Unparseable values sort after parseable ones, deterministically.
        assert_eq!(ValueKind::Integer.compare("abc", "5"), Greater);
        assert_eq!(ValueKind::Integer.compare("abc", "abd"), Less);
        assert_eq!(ValueKind::from_type_name("int8"), ValueKind::Integer);
        assert_eq!(ValueKind::from_type_name("timestamptz"), ValueKind::Timestamp);
        assert_eq!(ValueKind::from_type_name("uuid"), ValueKind::Other);
    }

    #[test]
    fn rules_parse_and_bad_ones_are_explained() {
        assert_eq!("max(importance)".parse::<Rule>(), Ok(Rule::Max("importance".into())));
        assert_eq!(" MIN( \"Due At\" ) ".parse::<Rule>(), Ok(Rule::Min("Due At".into())));
        assert_eq!("lww".parse::<Rule>(), Ok(Rule::Lww));
        for bad in ["max", "max()", "biggest(x)", "max(x", ""] {
            let e = bad.parse::<Rule>().unwrap_err();
            assert!(e.contains("not a rule"), "{e}");
        }
        assert_eq!(Rule::Max("a".into()).to_string(), "max(a)");
    }
}
