//! How Postgres orders and equates two values of one column, for decisions taken outside a where
//! clause: conflict rules (`resolve = ["max(col)"]`) and server-wins `base` checks. They read and
//! compare values with the same code as the where evaluator, so `max(col)` and `where col > x`
//! can never disagree — on NaN, infinities, BC dates, time zones or numeric scale.

use super::types::Ty;
use super::value;
use ferrite_protocol::schema::Column;
use std::cmp::Ordering;

/// The comparison of one column's values (Postgres text form).
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnOrder {
    ty: Ty,
}

impl ColumnOrder {
    /// The order of `column`'s type.
    pub fn of(column: &Column) -> ColumnOrder {
        ColumnOrder { ty: Ty::of_column(column) }
    }

    /// The order of a scalar built-in type by its catalog name (`int4`, `timestamptz`, …);
    /// types Ferrite does not evaluate have no order.
    pub fn of_type_name(name: &str) -> ColumnOrder {
        ColumnOrder { ty: Ty::from_name(name).unwrap_or_else(|| Ty::Opaque(name.to_string())) }
    }

    /// `a` against `b` as Postgres orders them; `None` when Postgres has no order Ferrite can
    /// reproduce for the type (enums order by the catalog; json has none) or a value does not
    /// read as the type.
    pub fn compare(&self, a: &str, b: &str) -> Option<Ordering> {
        match &self.ty {
            Ty::Enum(_) | Ty::Opaque(_) | Ty::Unknown => None,
            ty => {
                let x = value::input(ty, a).ok()?;
                let y = value::input(ty, b).ok()?;
                Some(value::compare(ty, &x, &y))
            }
        }
    }

    /// Whether `a` and `b` are the same value: as Postgres's `=` says for the types Ferrite
    /// evaluates (`2.5` = `2.50`, `t` = `true`, one instant in two time zones), as `jsonb`
    /// equality for json and jsonb (key order and spacing aside), and by text otherwise.
    pub fn equal(&self, a: &str, b: &str) -> bool {
        if a == b {
            return true;
        }
        match &self.ty {
            Ty::Opaque(name) if name == "json" || name == "jsonb" => {
                let parse = |v: &str| serde_json::from_str::<serde_json::Value>(v).ok();
                matches!((parse(a), parse(b)), (Some(x), Some(y)) if x == y)
            }
            _ => self.compare(a, b) == Some(Ordering::Equal),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Ordering::*;

    fn cmp(ty: &str, a: &str, b: &str) -> Option<Ordering> {
        ColumnOrder::of_type_name(ty).compare(a, b)
    }

    #[test]
    fn values_compare_as_postgres_does() {
        assert_eq!(cmp("int4", "10", "9"), Some(Greater));
        assert_eq!(cmp("text", "10", "9"), Some(Less));
        assert_eq!(cmp("numeric", "2.50", "2.5"), Some(Equal));
        assert_eq!(cmp("numeric", "10.01", "9.99"), Some(Greater));
        assert_eq!(cmp("numeric", "NaN", "1e10"), Some(Greater), "NaN sorts above every number");
        assert_eq!(cmp("float8", "-Infinity", "-1e300"), Some(Less));
        assert_eq!(cmp("float8", "NaN", "Infinity"), Some(Greater));
        assert_eq!(cmp("float8", "NaN", "NaN"), Some(Equal));
        assert_eq!(cmp("bool", "t", "false"), Some(Greater));
        assert_eq!(cmp("timestamptz", "2026-01-01 10:00:00+02", "2026-01-01 09:00:00+00"), Some(Less));
        assert_eq!(cmp("timestamptz", "infinity", "2026-01-01 09:00:00+00"), Some(Greater));
        assert_eq!(cmp("date", "0044-03-15 BC", "0001-01-01"), Some(Less), "BC dates come first");
        assert_eq!(cmp("int4", "abc", "5"), None, "a value that does not read as the type has no order");
        assert_eq!(cmp("jsonb", "{}", "[]"), None);
        assert_eq!(cmp("mood", "happy", "sad"), None);
    }

    #[test]
    fn equality_follows_the_type() {
        let eq = |ty: &str, a: &str, b: &str| ColumnOrder::of_type_name(ty).equal(a, b);
        assert!(eq("numeric", "2.50", "2.5"));
        assert!(eq("bool", "t", "true"));
        assert!(eq("timestamptz", "2026-01-01 10:00:00+02", "2026-01-01 08:00:00+00"));
        assert!(eq("jsonb", r#"{"a": 1, "b": [1, 2]}"#, r#"{"b":[1,2],"a":1}"#));
        assert!(!eq("text", "a ", "a"));
        assert!(!eq("int4", "1", "2"));
        assert!(eq("uuid", "7F3C0000-0000-4000-8000-000000000001", "7f3c0000-0000-4000-8000-000000000001"));
    }
}
