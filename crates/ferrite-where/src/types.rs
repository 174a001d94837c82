//! The SQL types a where clause is typed with, and the parts of Postgres' type resolution we mirror:
//! which column types we understand, how `x::type` names map to types, and how a common type is
//! chosen for `COALESCE`, `IN`, `ARRAY[...]` (`select_common_type` in Postgres).
//!
//! `varchar` uses `text`'s operators (it has none of its own in Postgres), domains are typed as
//! their base type, and enums are compared as their labels.

use super::WhereError;
use ferrite_protocol::schema::{Column, TypeKind};

/// A type as the evaluator sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Ty {
    Int2,
    Int4,
    Int8,
    Float4,
    Float8,
    Numeric,
    Bool,
    Text,
    /// `varchar`: behaves as `text` except when it meets `char(n)` and in array types.
    Varchar,
    /// `char(n)`: trailing spaces are insignificant in comparisons.
    Bpchar,
    /// `name`: 63-byte identifiers, always compared bytewise.
    Name,
    Uuid,
    Date,
    Time,
    Timestamp,
    Timestamptz,
    Interval,
    /// An enum type, by type name; only `=`/`<>` against labels are supported.
    Enum(String),
    /// A type we can only test for NULL (json, jsonb, bytea, ranges, ...), by display name.
    Opaque(String),
    /// One-dimensional array of a scalar type.
    Array(Box<Ty>),
    /// A string literal, `NULL` or `$n` whose type comes from its context (Postgres' `unknown`).
    Unknown,
}

/// Postgres' type categories, used to decide which types can meet in one operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Category {
    Numeric,
    String,
    Bool,
    DateTime,
    Timespan,
    Uuid,
    Enum,
    Array,
    Unknown,
    Opaque,
}

/// A type modifier from a cast such as `::varchar(10)` or `::numeric(10,2)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Typmod {
    None,
    /// `varchar(n)`: explicit casts truncate to `n` characters.
    Varchar(usize),
    /// `char(n)`: explicit casts truncate or pad to `n` characters.
    Bpchar(usize),
    /// `numeric(precision, scale)`.
    Numeric(u32, u32),
}

impl Ty {
    /// The type a column is evaluated as.
    pub(crate) fn of_column(col: &Column) -> Ty {
        let opaque = || {
            let mut n = col.type_name.clone();
            if col.dims > 0 {
                n.push_str("[]");
            }
            Ty::Opaque(n)
        };
        let scalar = match col.kind {
            TypeKind::Enum => Ty::Enum(col.type_name.clone()),
            TypeKind::Base => match Ty::from_name(&col.type_name) {
                Some(t) => t,
                None => return opaque(),
            },
            // Arrays of domains would need their own array type in SQL; only scalar domains.
            TypeKind::Domain if col.dims > 0 => return opaque(),
            TypeKind::Domain => match Ty::from_name(&col.base_type_name) {
                Some(t) => t,
                None => return opaque(),
            },
            TypeKind::Composite | TypeKind::Other => return opaque(),
        };
        match (col.dims, scalar) {
            (0, t) => t,
            (1, Ty::Enum(_)) | (1, Ty::Opaque(_)) => opaque(),
            (1, t) => Ty::Array(Box::new(t)),
            _ => opaque(),
        }
    }

    /// Maps a catalog type name (`pg_type.typname`; the parser also reduces SQL spellings such as
    /// `integer` or `character varying` to these) to a supported type.
    pub(crate) fn from_name(name: &str) -> Option<Ty> {
        Some(match name {
            "int2" => Ty::Int2,
            "int4" => Ty::Int4,
            "int8" => Ty::Int8,
            "float4" => Ty::Float4,
            "float8" => Ty::Float8,
            "numeric" => Ty::Numeric,
            "bool" => Ty::Bool,
            "text" => Ty::Text,
            "varchar" => Ty::Varchar,
            "bpchar" => Ty::Bpchar,
            "name" => Ty::Name,
            "uuid" => Ty::Uuid,
            "date" => Ty::Date,
            "time" => Ty::Time,
            "timestamp" => Ty::Timestamp,
            "timestamptz" => Ty::Timestamptz,
            "interval" => Ty::Interval,
            _ => return None,
        })
    }

    /// The name Postgres uses in messages (`format_type`), e.g. `integer`, `text[]`.
    pub(crate) fn display(&self) -> String {
        match self {
            Ty::Array(e) => format!("{}[]", e.display()),
            Ty::Enum(n) | Ty::Opaque(n) => n.clone(),
            other => other.scalar_display().to_string(),
        }
    }

    fn scalar_display(&self) -> &'static str {
        match self {
            Ty::Int2 => "smallint",
            Ty::Int4 => "integer",
            Ty::Int8 => "bigint",
            Ty::Float4 => "real",
            Ty::Float8 => "double precision",
            Ty::Numeric => "numeric",
            Ty::Bool => "boolean",
            Ty::Text => "text",
            Ty::Varchar => "character varying",
            Ty::Bpchar => "character",
            Ty::Name => "name",
            Ty::Uuid => "uuid",
            Ty::Date => "date",
            Ty::Time => "time without time zone",
            Ty::Timestamp => "timestamp without time zone",
            Ty::Timestamptz => "timestamp with time zone",
            Ty::Interval => "interval",
            Ty::Unknown => "unknown",
            Ty::Enum(_) | Ty::Opaque(_) | Ty::Array(_) => "?",
        }
    }

    /// The spelling used in casts of the SQL we send to Postgres (`int4`, `text[]`). Enums are
    /// sent as `text` (they are compared as labels, and their schema is not known here).
    pub(crate) fn sql_name(&self) -> String {
        match self {
            Ty::Array(e) => format!("{}[]", e.sql_name()),
            Ty::Int2 => "int2".into(),
            Ty::Int4 => "int4".into(),
            Ty::Int8 => "int8".into(),
            Ty::Float4 => "float4".into(),
            Ty::Float8 => "float8".into(),
            Ty::Numeric => "numeric".into(),
            Ty::Bool => "bool".into(),
            Ty::Text | Ty::Enum(_) | Ty::Unknown | Ty::Opaque(_) => "text".into(),
            Ty::Varchar => "varchar".into(),
            Ty::Bpchar => "bpchar".into(),
            Ty::Name => "name".into(),
            Ty::Uuid => "uuid".into(),
            Ty::Date => "date".into(),
            Ty::Time => "time".into(),
            Ty::Timestamp => "timestamp".into(),
            Ty::Timestamptz => "timestamptz".into(),
            Ty::Interval => "interval".into(),
        }
    }

    /// Postgres' type category, which decides which types can meet implicitly.
    pub(crate) fn category(&self) -> Category {
        match self {
            Ty::Int2 | Ty::Int4 | Ty::Int8 | Ty::Float4 | Ty::Float8 | Ty::Numeric => Category::Numeric,
            Ty::Text | Ty::Varchar | Ty::Bpchar | Ty::Name => Category::String,
            Ty::Bool => Category::Bool,
            Ty::Date | Ty::Time | Ty::Timestamp | Ty::Timestamptz => Category::DateTime,
            Ty::Interval => Category::Timespan,
            Ty::Uuid => Category::Uuid,
            Ty::Enum(_) => Category::Enum,
            Ty::Array(_) => Category::Array,
            Ty::Unknown => Category::Unknown,
            Ty::Opaque(_) => Category::Opaque,
        }
    }

    /// float4 or float8.
    pub(crate) fn is_float(&self) -> bool {
        matches!(self, Ty::Float4 | Ty::Float8)
    }

    /// text, varchar, char(n) or name.
    pub(crate) fn is_string(&self) -> bool {
        self.category() == Category::String
    }

    /// Types whose ordering depends on a collation (we always use `C`).
    pub(crate) fn is_collatable(&self) -> bool {
        match self {
            Ty::Text | Ty::Varchar | Ty::Bpchar | Ty::Name => true,
            Ty::Array(e) => e.is_collatable(),
            _ => false,
        }
    }

    /// Element type of an array type.
    pub(crate) fn elem(&self) -> Option<&Ty> {
        match self {
            Ty::Array(e) => Some(e),
            _ => None,
        }
    }

    /// Rank in the chain of implicit numeric casts int2 → int4 → int8 → numeric → float4 → float8.
    fn numeric_rank(&self) -> u8 {
        match self {
            Ty::Int2 => 0,
            Ty::Int4 => 1,
            Ty::Int8 => 2,
            Ty::Numeric => 3,
            Ty::Float4 => 4,
            _ => 5,
        }
    }

    /// Rank in the implicit casts date → timestamp → timestamptz (time stands apart).
    fn datetime_rank(&self) -> Option<u8> {
        match self {
            Ty::Date => Some(0),
            Ty::Timestamp => Some(1),
            Ty::Timestamptz => Some(2),
            _ => None,
        }
    }
}

/// Postgres' `select_common_type` for the types we support: the first known type wins unless a
/// later one is reachable from it by an implicit cast and not the other way round (numeric and
/// date/time chains); all unknown → text. `context` names the construct for the error message.
pub(crate) fn common_type(types: &[&Ty], context: &str) -> Result<Ty, WhereError> {
    let mut cand: Option<Ty> = None;
    for t in types.iter().copied() {
        if *t == Ty::Unknown {
            continue;
        }
        let Some(c) = &cand else {
            cand = Some(t.clone());
            continue;
        };
        if c == t {
            continue;
        }
        let mismatch =
            || WhereError::Type(format!("{context} types {} and {} cannot be matched", c.display(), t.display()));
        if c.category() != t.category() {
            return Err(mismatch());
        }
        let next = match c.category() {
            Category::Numeric => {
                if t.numeric_rank() > c.numeric_rank() {
                    t.clone()
                } else {
                    c.clone()
                }
            }
            Category::String => c.clone(),
            Category::DateTime => match (c.datetime_rank(), t.datetime_rank()) {
                (Some(a), Some(b)) => {
                    if b > a {
                        t.clone()
                    } else {
                        c.clone()
                    }
                }
                _ => return Err(mismatch()),
            },
            _ => return Err(mismatch()),
        };
        cand = Some(next);
    }
    Ok(cand.unwrap_or(Ty::Text))
}

/// The type both operands of a comparison operator (`=`, `<`, ...) are brought to, following
/// Postgres' operator resolution for the built-in operator families. `op` is for messages.
pub(crate) fn comparison_type(op: &str, l: &Ty, r: &Ty) -> Result<Ty, WhereError> {
    let no_op = || WhereError::NoOperator(format!("{} {op} {}", l.display(), r.display()));
    if let Ty::Opaque(n) = l {
        return Err(WhereError::Unsupported(format!("operator \"{op}\" is not supported for type {n}")));
    }
    if let Ty::Opaque(n) = r {
        return Err(WhereError::Unsupported(format!("operator \"{op}\" is not supported for type {n}")));
    }
    match (l, r) {
        (Ty::Unknown, Ty::Unknown) => return Ok(Ty::Text),
        (Ty::Unknown, Ty::Varchar) | (Ty::Varchar, Ty::Unknown) => return Ok(Ty::Text),
        (Ty::Unknown, t) | (t, Ty::Unknown) => return Ok(t.clone()),
        _ => {}
    }
    if l == r {
        return Ok(if *l == Ty::Varchar { Ty::Text } else { l.clone() });
    }
    match (l.category(), r.category()) {
        (Category::Numeric, Category::Numeric) => Ok(numeric_operator_type(l, r)),
        // bpchar meets varchar as bpchar (both sides trimmed); bpchar meets text or name as text
        // (only the bpchar side trimmed); everything else uses text's operators.
        (Category::String, Category::String) => Ok(match (l, r) {
            (Ty::Bpchar, Ty::Varchar) | (Ty::Varchar, Ty::Bpchar) => Ty::Bpchar,
            _ => Ty::Text,
        }),
        (Category::DateTime, Category::DateTime) => match (l.datetime_rank(), r.datetime_rank()) {
            (Some(a), Some(b)) => Ok(if a > b { l.clone() } else { r.clone() }),
            _ => Err(no_op()),
        },
        _ => Err(no_op()),
    }
}

/// Operand type of an arithmetic or comparison operator between two numeric types: float4 only
/// with float4, any other float → float8, then numeric, then the wider integer.
pub(crate) fn numeric_operator_type(l: &Ty, r: &Ty) -> Ty {
    if l == r {
        return l.clone();
    }
    if l.is_float() || r.is_float() {
        return Ty::Float8;
    }
    if *l == Ty::Numeric || *r == Ty::Numeric {
        return Ty::Numeric;
    }
    if l.numeric_rank() > r.numeric_rank() {
        l.clone()
    } else {
        r.clone()
    }
}
