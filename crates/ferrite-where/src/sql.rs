//! Printing a compiled expression back as SQL for Postgres (snapshot and subset queries).
//!
//! The output is fully parenthesised, every constant is a bound parameter `($n::text)::type`
//! (never pasted text), and the implicit casts the compiler inserted are spelled out, so Postgres
//! evaluates exactly what [`super::eval`] evaluates. Orderings and case folding of strings get
//! `COLLATE "C"`, the collation the evaluator implements, so the result does not depend on the
//! database's default collation.

use super::expr::{Expr, ExprKind, Func as F};
use super::types::{Ty, Typmod};
use super::value::{output, Value};
use ferrite_protocol::relation::quote_ident;

/// Accumulates SQL text and the parameter values it references.
pub(crate) struct Printer<'a> {
    names: &'a [String],
    subqueries: &'a [super::subquery::Subquery],
    /// Printed after each subquery's WHERE (e.g. ` FOR SHARE`), nested ones too.
    lock: Option<&'static str>,
    first_param: usize,
    /// The instant `now()` and `CURRENT_DATE` stand for, bound as a parameter
    /// ([`super::window::pg_micros`]); `None` prints them as Postgres's own clock.
    now: Option<i64>,
    pub params: Vec<Option<String>>,
    pub out: String,
}

const COLLATE_C: &str = " COLLATE \"C\"";

fn typmod_suffix(t: Typmod) -> String {
    match t {
        Typmod::None => String::new(),
        Typmod::Varchar(n) | Typmod::Bpchar(n) => format!("({n})"),
        Typmod::Numeric(p, s) => format!("({p},{s})"),
    }
}

/// Implicit casts Postgres performs by itself with the same result (so printing them would only
/// hide indexable columns from the planner): integer widening and varchar → text.
fn transparent_cast(from: &Ty, to: &Ty) -> bool {
    match (from, to) {
        (Ty::Int2, Ty::Int4 | Ty::Int8) | (Ty::Int4, Ty::Int8) | (Ty::Varchar, Ty::Text) => true,
        // `int8 = ANY(int4[])` resolves to the cross-type operator, like the scalar case.
        (Ty::Array(a), Ty::Array(b)) => matches!((&**a, &**b), (Ty::Int2, Ty::Int4 | Ty::Int8) | (Ty::Int4, Ty::Int8)),
        _ => false,
    }
}

impl<'a> Printer<'a> {
    /// A printer for a clause over columns `names` with `subqueries`, numbering parameters
    /// from `$first_param`.
    pub(crate) fn new(
        names: &'a [String],
        subqueries: &'a [super::subquery::Subquery],
        lock: Option<&'static str>,
        first_param: usize,
    ) -> Printer<'a> {
        Printer { names, subqueries, lock, first_param, now: None, params: Vec::new(), out: String::new() }
    }

    /// This printer, printing the current time as instant `now` rather than Postgres's clock.
    pub(crate) fn at(mut self, now: i64) -> Printer<'a> {
        self.now = Some(now);
        self
    }

    /// `(a, b) IN (SELECT x, y FROM t WHERE …)`, the inner where printed by a printer of its
    /// own that continues this one's parameter numbering; the EXISTS form is held to true.
    fn in_subquery(&mut self, columns: &[usize], sub: usize, exists: bool) {
        let Some(q) = self.subqueries.get(sub) else {
            self.push("NULL");
            return;
        };
        let name = |names: &[String], i: usize| names.get(i).map(|n| quote_ident(n)).unwrap_or_else(|| "NULL".into());
        let outer: Vec<String> = columns.iter().map(|&i| name(self.names, i)).collect();
        let inner: Vec<String> = q.columns.iter().map(|&i| quote_ident(&q.table.columns[i].name)).collect();
        self.push(if exists { "(((" } else { "((" });
        self.push(&outer.join(", "));
        self.push(&format!(") IN (SELECT {} FROM {}", inner.join(", "), q.table.name.quoted()));
        if let Some(filter) = &q.filter {
            let (sql, params) = filter.print(self.first_param + self.params.len(), self.lock);
            self.push(" WHERE ");
            self.push(&sql);
            self.params.extend(params);
        }
        if let Some(lock) = self.lock {
            self.push(lock);
        }
        self.push(if exists { ")) IS TRUE)" } else { "))" });
    }

    pub(crate) fn push(&mut self, s: &str) {
        self.out.push_str(s);
    }

    pub(crate) fn param(&mut self, ty: &Ty, text: Option<String>) {
        let n = self.first_param + self.params.len();
        self.params.push(text);
        self.out.push_str(&format!("(${n}::text)::{}", ty.sql_name()));
    }

    /// Prints `e`; `collate` asks for `COLLATE "C"` when `e` is collatable.
    fn operand(&mut self, e: &Expr, collate: bool) {
        if collate && e.ty.is_collatable() {
            self.push("(");
            self.expr(e);
            self.push(COLLATE_C);
            self.push(")");
        } else {
            self.expr(e);
        }
    }

    fn list(&mut self, items: &[Expr], sep: &str, collate: bool) {
        for (i, it) in items.iter().enumerate() {
            if i > 0 {
                self.push(sep);
            }
            self.operand(it, collate);
        }
    }

    /// Appends `e` as SQL, collecting its parameter values.
    pub(crate) fn expr(&mut self, e: &Expr) {
        use ExprKind::*;
        match &e.kind {
            Column(i) => {
                let name = self.names.get(*i).map(|n| quote_ident(n)).unwrap_or_else(|| "NULL".into());
                if let Ty::Enum(_) = e.ty {
                    // Enums are compared as their labels.
                    self.push(&format!("({name})::text"));
                } else {
                    self.push(&name);
                }
            }
            Const(v) => {
                let text = output(&e.ty, v);
                self.param(&e.ty, text);
            }
            Unknown { text, .. } => self.param(&Ty::Text, text.clone()),
            InSubquery { columns, sub, exists } => self.in_subquery(columns, *sub, *exists),
            Now if self.now.is_some() => {
                let now = self.now.unwrap_or_default();
                let value = match e.ty {
                    Ty::Date => Value::Date(now.div_euclid(86_400_000_000)),
                    _ => Value::Timestamp(now),
                };
                self.param(&e.ty, output(&e.ty, &value));
            }
            Now => self.push(match e.ty {
                Ty::Date => "CURRENT_DATE",
                Ty::Timestamp => "LOCALTIMESTAMP",
                _ => "now()",
            }),
            Cast { arg, typmod, explicit } => {
                if !explicit && *typmod == Typmod::None && transparent_cast(&arg.ty, &e.ty) {
                    self.expr(arg);
                } else if let Ty::Enum(_) = e.ty {
                    // Casting to an enum yields its label: keep it as text.
                    self.push("(");
                    self.expr(arg);
                    self.push(")::text");
                } else {
                    self.push("(");
                    self.expr(arg);
                    self.push(&format!(")::{}{}", e.ty.sql_name(), typmod_suffix(*typmod)));
                }
            }
            Not(a) => {
                self.push("(NOT ");
                self.expr(a);
                self.push(")");
            }
            And(args) | Or(args) => {
                let sep = if matches!(e.kind, And(_)) { " AND " } else { " OR " };
                self.push("(");
                self.list(args, sep, false);
                self.push(")");
            }
            Cmp { op, left, right } => {
                self.push("(");
                self.operand(left, op.is_ordering());
                self.push(&format!(" {} ", op.sql()));
                self.expr(right);
                self.push(")");
            }
            Distinct { negated, left, right } => {
                self.push("(");
                self.expr(left);
                self.push(if *negated { " IS NOT DISTINCT FROM " } else { " IS DISTINCT FROM " });
                self.expr(right);
                self.push(")");
            }
            Arith { op, left, right } => {
                self.push("(");
                self.expr(left);
                self.push(&format!(" {} ", op.sql()));
                self.expr(right);
                self.push(")");
            }
            Neg(a) => {
                self.push("(- ");
                self.expr(a);
                self.push(")");
            }
            Concat { left, right } | ArrayConcat { left, right } => {
                self.push("(");
                self.expr(left);
                self.push(" || ");
                self.expr(right);
                self.push(")");
            }
            Like { arg, pattern, escape, case_insensitive, negated } => {
                self.push("(");
                self.operand(arg, *case_insensitive);
                let kw = match (*negated, *case_insensitive) {
                    (false, false) => " LIKE ",
                    (true, false) => " NOT LIKE ",
                    (false, true) => " ILIKE ",
                    (true, true) => " NOT ILIKE ",
                };
                self.push(kw);
                self.expr(pattern);
                if let Some(esc) = escape {
                    self.push(" ESCAPE ");
                    self.expr(esc);
                }
                self.push(")");
            }
            IsNull { arg, negated } => {
                self.push("(");
                self.expr(arg);
                self.push(if *negated { " IS NOT NULL)" } else { " IS NULL)" });
            }
            BoolTest { arg, test } => {
                self.push("(");
                self.expr(arg);
                self.push(&format!(" {})", test.sql()));
            }
            AnyAll { op, all, left, array } => {
                self.push("(");
                self.operand(left, op.is_ordering());
                self.push(&format!(" {} {} (", op.sql(), if *all { "ALL" } else { "ANY" }));
                self.expr(array);
                self.push("))");
            }
            ArrayOp { op, left, right } => {
                self.push("(");
                self.expr(left);
                self.push(&format!(" {} ", op.sql()));
                self.expr(right);
                self.push(")");
            }
            Func { func, args } => {
                self.push(func.sql());
                self.push("(");
                let collate = matches!(func, F::Lower | F::Upper);
                self.list(args, ", ", collate);
                self.push(")");
            }
            Coalesce(args) => {
                self.push("COALESCE(");
                self.list(args, ", ", false);
                self.push(")");
            }
            MinMax { greatest, args } => {
                self.push(if *greatest { "GREATEST(" } else { "LEAST(" });
                // One explicit collation decides for all arguments.
                if let Some((first, rest)) = args.split_first() {
                    self.operand(first, true);
                    for a in rest {
                        self.push(", ");
                        self.expr(a);
                    }
                }
                self.push(")");
            }
            NullIf { value, cmp } => {
                self.push("(CASE WHEN ");
                self.expr(cmp);
                self.push(" THEN NULL ELSE ");
                self.expr(value);
                self.push(" END)");
            }
            ArrayCtor(items) => {
                self.push("ARRAY[");
                self.list(items, ", ", false);
                self.push("]");
            }
        }
    }
}
