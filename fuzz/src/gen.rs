//! A generator of plausible where clauses, params and rows, driven by `arbitrary`.
//!
//! Random bytes rarely get past libpg_query, and random valid SQL rarely type-checks, so this
//! builds expressions from the constructs the compiler supports (operators, casts, IN, LIKE,
//! BETWEEN, ANY/ALL, array operators, the supported functions), over the table's real column names,
//! with literals and row values drawn from lists of edge cases per type. Anything can still be
//! replaced by an arbitrary string, so the compiler's error paths are reached too. Row values can
//! be repeated many times (`Text::Repeat`), which turns an evaluator that is super-linear in its
//! input into a `-timeout` finding.

use arbitrary::{Arbitrary, Unstructured};
use ferrite_protocol::schema::TableSchema;
use std::collections::BTreeMap;
use std::fmt::Write;

/// Interesting literal texts, valid or almost valid for some type.
#[rustfmt::skip]
const TEXTS: &[&str] = &[
    "0", "1", "-1", "2", "32767", "-32768", "32768", "2147483647", "-2147483648", "2147483648",
    "9223372036854775807", "-9223372036854775808", "9223372036854775808", "1.5", "-0", "-0.0", "0.1", "1e308",
    "1e-308", "3.4e38", "1e39", "NaN", "nan", "Infinity", "-Infinity", "inf",
    "99999999999999999999999999999999999999", "0.000000000000000000000000000000000000001",
    "123456789012345678901234567890.123456789", "1e1000", " 7 ", "+3", "0x1F", "1_000", "t", "f", "true",
    "FALSE", "yes", "off", "on", "1 ", "", " ", "a", "A", "abc", "héllo", "日本", "\\", "'", "\"", "%", "_", "a%",
    "%a%", "a_c", "\\%", "%%%%", "x\\", "NULL", "null", "5b7c3e9a-1f2d-4c8e-9a6b-0d1e2f3a4b5c",
    "{5b7c3e9a-1f2d-4c8e-9a6b-0d1e2f3a4b5c}", "5B7C3E9A1F2D4C8E9A6B0D1E2F3A4B5C",
    "00000000-0000-0000-0000-00000000000g", "2024-02-29", "2023-02-29", "0001-01-01", "4713-01-01 BC",
    "5874897-12-31", "294276-12-31", "infinity", "-infinity", "epoch", "today", "2024-01-01 12:34:56.789",
    "2024-01-01T12:34:56Z", "2024-01-01 12:34:56+05:30", "2024-01-01 24:00:00", "1999-12-31 23:59:60", "12:00",
    "24:00:00", "23:59:59.999999", "1 day", "1 year 2 mons 3 days 04:05:06.5", "-1 day +2 hours",
    "P1Y2M3DT4H5M6S", "PT0.000001S", "178956970 years", "@ 1 minute ago", "{}", "{1,2,3}", "{1,NULL,3}",
    "{{1,2},{3,4}}", "{a,\"b c\",NULL,\"NULL\"}", "[0:1]={1,2}", "{\"\\\"\"}", "{{1},{2,3}}", "{", "happy",
    "sad", "ok", "debug", "error", "{\"a\": 1}", "[1, 2]",
];

/// Column types and what to cast to. `char(10485760)`, the longest Postgres allows, is left out for
/// now: its blank padding lets a clause of a few KiB allocate gigabytes when it is compiled (an
/// open issue of the where compiler); add it back once lengths are capped.
#[rustfmt::skip]
const TYPES: &[&str] = &[
    "int2", "int4", "int8", "smallint", "integer", "bigint", "numeric", "numeric(10,2)", "numeric(3)",
    "decimal(1000,1000)", "float4", "float8", "real", "double precision", "text", "varchar", "varchar(3)",
    "character varying(1)", "char", "char(5)", "bpchar", "name", "bool", "boolean", "uuid", "date", "time",
    "timestamp", "timestamptz", "timestamp(3)", "interval", "jsonb", "int4[]", "text[]", "int8[][]",
    "numeric[]", "date[]", "varchar(2)[]", "mood", "severity", "pg_catalog.int4", "money", "regclass",
];

const CMP: &[&str] = &["=", "<>", "!=", "<", "<=", ">", ">="];
const ARITH: &[&str] = &["+", "-", "*", "/", "%", "^"];
const ARRAY_OPS: &[&str] = &["@>", "<@", "&&"];
const LIKE: &[&str] = &["LIKE", "NOT LIKE", "ILIKE", "NOT ILIKE", "~~", "!~~", "~~*", "!~~*"];
#[rustfmt::skip]
const FUNCS: &[&str] = &[
    "lower", "upper", "length", "char_length", "character_length", "concat", "coalesce", "greatest", "least",
    "nullif", "abs", "now", "count", "pg_catalog.lower", "mod",
];
#[rustfmt::skip]
const BOOL_TESTS: &[&str] = &[
    "IS TRUE", "IS NOT TRUE", "IS FALSE", "IS NOT FALSE", "IS UNKNOWN", "IS NOT UNKNOWN", "IS NULL",
    "IS NOT NULL", "ISNULL", "NOTNULL",
];

fn pick<'a>(list: &[&'a str], i: u8) -> &'a str {
    list[i as usize % list.len()]
}

/// A piece of text: an edge case, arbitrary text, or one of these repeated (up to 64 Ki times).
#[derive(Debug, Arbitrary)]
pub enum Text {
    /// An entry of [`TEXTS`].
    Known(u8),
    /// Anything.
    Any(String),
    /// `s` repeated `n` times.
    Repeat(Box<Text>, u16),
    /// Two texts concatenated.
    Join(Box<Text>, Box<Text>),
}

impl Text {
    /// The text, at most about `max` bytes (repetition is cut there).
    pub fn render(&self, max: usize) -> String {
        match self {
            Text::Known(i) => pick(TEXTS, *i).to_string(),
            Text::Any(s) => s.clone(),
            Text::Repeat(t, n) => {
                let s = t.render(max);
                if s.is_empty() {
                    return s;
                }
                let n = (*n as usize).min(max / s.len());
                s.repeat(n)
            }
            Text::Join(a, b) => {
                let mut s = a.render(max);
                if s.len() < max {
                    s.push_str(&b.render(max - s.len()));
                }
                s
            }
        }
    }
}

/// A literal as it appears in SQL.
#[derive(Debug, Arbitrary)]
pub enum Lit {
    /// An integer.
    Int(i64),
    /// A float, printed with Rust's `Display` (may be `NaN`/`inf`, which are column names then).
    Float(f64),
    /// A quoted string (`'` doubled).
    Str(Text),
    /// `E'...'` with backslash escapes.
    EStr(Text),
    /// `TRUE`, `FALSE` or `NULL`.
    Keyword(u8),
    /// A typed literal: `date '2024-01-01'`.
    Typed(u8, Text),
    /// Dollar quoting: `$$...$$`.
    Dollar(Text),
}

/// An expression of the supported grammar (plus a few unsupported constructs, to reach their
/// errors).
#[derive(Debug, Arbitrary)]
pub enum Expr {
    /// A column by index into the table (modulo its width).
    Col(u8),
    /// A literal.
    Lit(Lit),
    /// `$n`, `n` in 1..=4.
    Param(u8),
    /// `e::type` or `CAST(e AS type)`.
    Cast(Box<Expr>, u8, bool),
    /// `NOT e`.
    Not(Box<Expr>),
    /// `a AND b` / `a OR b`.
    Bool(Box<Expr>, bool, Box<Expr>),
    /// A comparison.
    Cmp(Box<Expr>, u8, Box<Expr>),
    /// An arithmetic operator.
    Arith(Box<Expr>, u8, Box<Expr>),
    /// Prefix `-` / `+`.
    Prefix(bool, Box<Expr>),
    /// `a || b`.
    Concat(Box<Expr>, Box<Expr>),
    /// `e IS ...`.
    Test(Box<Expr>, u8),
    /// `a IS [NOT] DISTINCT FROM b`.
    Distinct(Box<Expr>, bool, Box<Expr>),
    /// `e [NOT] IN (...)`.
    In(Box<Expr>, bool, Vec<Expr>),
    /// `e [NOT] BETWEEN [SYMMETRIC] lo AND hi`.
    Between(Box<Expr>, bool, bool, Box<Expr>, Box<Expr>),
    /// `e LIKE p [ESCAPE x]` and friends.
    Like(Box<Expr>, u8, Box<Expr>, Option<Box<Expr>>),
    /// `e op ANY|ALL (array)`.
    AnyAll(Box<Expr>, u8, bool, Box<Expr>),
    /// `@>`, `<@`, `&&`.
    ArrayOp(Box<Expr>, u8, Box<Expr>),
    /// `ARRAY[...]`.
    Array(Vec<Expr>),
    /// A function call.
    Func(u8, Vec<Expr>),
    /// Parentheses.
    Paren(Box<Expr>),
    /// Arbitrary SQL text spliced in.
    Raw(String),
}

/// Input of the structured where target: table choice, clause, params, rows.
#[derive(Debug, Arbitrary)]
pub struct WhereInput {
    /// Index into [`crate::tables`] (modulo).
    pub table: u8,
    /// The clause.
    pub expr: Expr,
    /// `$1`.. values (`None` leaves the param missing).
    pub params: Vec<Option<Text>>,
    /// Rows: per column, `None` for NULL.
    pub rows: Vec<Vec<Option<Text>>>,
}

/// Longest row value the generator makes: large enough that quadratic work on one value takes
/// seconds, small enough that linear work stays far below libFuzzer's per-input timeout.
pub const MAX_VALUE: usize = 256 * 1024;

/// Longest clause rendered (a row value may be long, SQL text is kept to what a URL carries).
pub const MAX_SQL: usize = 16 * 1024;

struct Render<'a> {
    table: &'a TableSchema,
    out: String,
}

fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

impl Render<'_> {
    fn lit(&mut self, l: &Lit) {
        match l {
            Lit::Int(i) => {
                let _ = write!(self.out, "{i}");
            }
            Lit::Float(f) => {
                let _ = write!(self.out, "{f:?}");
            }
            Lit::Str(t) => {
                let s = t.render(MAX_SQL);
                let _ = write!(self.out, "'{}'", s.replace('\'', "''"));
            }
            Lit::EStr(t) => {
                let s = t.render(MAX_SQL);
                let _ = write!(self.out, "E'{}'", s.replace('\'', "\\'"));
            }
            Lit::Keyword(k) => self.out.push_str(pick(&["TRUE", "FALSE", "NULL"], *k)),
            Lit::Typed(ty, t) => {
                let s = t.render(MAX_SQL);
                let ty =
                    pick(&["date", "timestamp", "timestamptz", "interval", "time", "int4", "numeric", "text"], *ty);
                let _ = write!(self.out, "{ty} '{}'", s.replace('\'', "''"));
            }
            Lit::Dollar(t) => {
                let s = t.render(MAX_SQL).replace('$', "");
                let _ = write!(self.out, "$${s}$$");
            }
        }
    }

    fn list(&mut self, items: &[Expr]) {
        for (i, e) in items.iter().enumerate() {
            if i > 0 {
                self.out.push_str(", ");
            }
            self.expr(e);
        }
    }

    fn expr(&mut self, e: &Expr) {
        if self.out.len() > MAX_SQL {
            self.out.push_str("NULL");
            return;
        }
        match e {
            Expr::Col(i) => {
                let cols = &self.table.columns;
                let c = &cols[*i as usize % cols.len()];
                let plain = c.name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_' || b.is_ascii_digit())
                    && c.name != "select";
                if plain && i % 2 == 0 {
                    self.out.push_str(&c.name);
                } else {
                    self.out.push_str(&quote_ident(&c.name));
                }
            }
            Expr::Lit(l) => self.lit(l),
            Expr::Param(n) => {
                let _ = write!(self.out, "${}", n % 4 + 1);
            }
            Expr::Cast(e, ty, long) => {
                let ty = pick(TYPES, *ty);
                if *long {
                    self.out.push_str("CAST(");
                    self.expr(e);
                    let _ = write!(self.out, " AS {ty})");
                } else {
                    self.out.push('(');
                    self.expr(e);
                    let _ = write!(self.out, ")::{ty}");
                }
            }
            Expr::Not(e) => {
                self.out.push_str("NOT (");
                self.expr(e);
                self.out.push(')');
            }
            Expr::Bool(a, and, b) => self.binary(a, if *and { "AND" } else { "OR" }, b),
            Expr::Cmp(a, op, b) => self.binary(a, pick(CMP, *op), b),
            Expr::Arith(a, op, b) => self.binary(a, pick(ARITH, *op), b),
            Expr::Prefix(minus, e) => {
                self.out.push_str(if *minus { "- " } else { "+ " });
                self.expr(e);
            }
            Expr::Concat(a, b) => self.binary(a, "||", b),
            Expr::Test(e, t) => {
                self.out.push('(');
                self.expr(e);
                let _ = write!(self.out, ") {}", pick(BOOL_TESTS, *t));
            }
            Expr::Distinct(a, not, b) => {
                self.binary(a, if *not { "IS NOT DISTINCT FROM" } else { "IS DISTINCT FROM" }, b)
            }
            Expr::In(e, not, items) => {
                self.out.push('(');
                self.expr(e);
                self.out.push_str(if *not { ") NOT IN (" } else { ") IN (" });
                self.list(items);
                self.out.push(')');
            }
            Expr::Between(e, not, sym, lo, hi) => {
                self.out.push('(');
                self.expr(e);
                self.out.push_str(if *not { ") NOT BETWEEN " } else { ") BETWEEN " });
                if *sym {
                    self.out.push_str("SYMMETRIC ");
                }
                self.out.push('(');
                self.expr(lo);
                self.out.push_str(") AND (");
                self.expr(hi);
                self.out.push(')');
            }
            Expr::Like(e, op, p, esc) => {
                self.binary(e, pick(LIKE, *op), p);
                if let Some(x) = esc {
                    if pick(LIKE, *op).contains("LIKE") {
                        self.out.push_str(" ESCAPE (");
                        self.expr(x);
                        self.out.push(')');
                    }
                }
            }
            Expr::AnyAll(e, op, all, arr) => {
                self.out.push('(');
                self.expr(e);
                let _ = write!(self.out, ") {} {}(", pick(CMP, *op), if *all { "ALL" } else { "ANY" });
                self.expr(arr);
                self.out.push(')');
            }
            Expr::ArrayOp(a, op, b) => self.binary(a, pick(ARRAY_OPS, *op), b),
            Expr::Array(items) => {
                self.out.push_str("ARRAY[");
                self.list(items);
                self.out.push(']');
            }
            Expr::Func(f, args) => {
                let _ = write!(self.out, "{}(", pick(FUNCS, *f));
                self.list(args);
                self.out.push(')');
            }
            Expr::Paren(e) => {
                self.out.push('(');
                self.expr(e);
                self.out.push(')');
            }
            Expr::Raw(s) => self.out.push_str(s),
        }
    }

    fn binary(&mut self, a: &Expr, op: &str, b: &Expr) {
        self.out.push('(');
        self.expr(a);
        let _ = write!(self.out, ") {op} (");
        self.expr(b);
        self.out.push(')');
    }
}

/// A rendered [`WhereInput`].
#[derive(Debug)]
pub struct WhereCase {
    /// Index into [`crate::tables`].
    pub table: usize,
    /// Clause text.
    pub sql: String,
    /// `"1"` → value, ...
    pub params: BTreeMap<String, String>,
    /// Rows aligned with the table.
    pub rows: Vec<Vec<Option<String>>>,
}

impl WhereInput {
    /// Renders the clause and values as the server would receive them.
    pub fn render(&self) -> WhereCase {
        let tables = crate::tables();
        let index = self.table as usize % tables.len();
        let table = &tables[index];
        let mut r = Render { table, out: String::new() };
        r.expr(&self.expr);
        let params = self
            .params
            .iter()
            .take(4)
            .enumerate()
            .filter_map(|(i, p)| p.as_ref().map(|t| ((i + 1).to_string(), t.render(MAX_SQL))))
            .collect();
        let rows = self
            .rows
            .iter()
            .take(4)
            .map(|row| {
                let values = row.iter().map(|v| v.as_ref().map(|t| t.render(MAX_VALUE))).collect();
                crate::full_row(table, values)
            })
            .collect();
        WhereCase { table: index, sql: r.out, params, rows }
    }
}

/// Builds a [`WhereInput`] from fuzzer bytes (for targets that want more than one structure).
pub fn where_input(data: &[u8]) -> arbitrary::Result<WhereInput> {
    WhereInput::arbitrary_take_rest(Unstructured::new(data))
}
