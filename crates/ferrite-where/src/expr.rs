//! The compiled, typed expression tree. Every node carries its result type; implicit conversions
//! Postgres would insert are explicit [`ExprKind::Cast`] nodes, so evaluation and SQL printing
//! never need to re-resolve types.

use super::types::{Ty, Typmod};
use super::value::Value;

/// A typed expression.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Expr {
    pub kind: ExprKind,
    pub ty: Ty,
}

/// Comparison operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl CmpOp {
    /// The operator for a SQL operator name (`!=` is `<>`).
    pub(crate) fn from_sql(op: &str) -> Option<CmpOp> {
        Some(match op {
            "=" => CmpOp::Eq,
            "<>" | "!=" => CmpOp::Ne,
            "<" => CmpOp::Lt,
            "<=" => CmpOp::Le,
            ">" => CmpOp::Gt,
            ">=" => CmpOp::Ge,
            _ => return None,
        })
    }

    /// The SQL spelling, for printing.
    pub(crate) fn sql(self) -> &'static str {
        match self {
            CmpOp::Eq => "=",
            CmpOp::Ne => "<>",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
        }
    }

    /// Whether the operator orders (and so depends on collation), as opposed to testing equality.
    pub(crate) fn is_ordering(self) -> bool {
        !matches!(self, CmpOp::Eq | CmpOp::Ne)
    }

    /// Whether `a op b` holds given `a.cmp(b)`.
    pub(crate) fn holds(self, ord: std::cmp::Ordering) -> bool {
        use std::cmp::Ordering::*;
        match self {
            CmpOp::Eq => ord == Equal,
            CmpOp::Ne => ord != Equal,
            CmpOp::Lt => ord == Less,
            CmpOp::Le => ord != Greater,
            CmpOp::Gt => ord == Greater,
            CmpOp::Ge => ord != Less,
        }
    }
}

/// Arithmetic operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ArithOp {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
}

impl ArithOp {
    /// The operator for a SQL operator name.
    pub(crate) fn from_sql(op: &str) -> Option<ArithOp> {
        Some(match op {
            "+" => ArithOp::Add,
            "-" => ArithOp::Sub,
            "*" => ArithOp::Mul,
            "/" => ArithOp::Div,
            "%" => ArithOp::Mod,
            _ => return None,
        })
    }

    /// The SQL spelling, for printing.
    pub(crate) fn sql(self) -> &'static str {
        match self {
            ArithOp::Add => "+",
            ArithOp::Sub => "-",
            ArithOp::Mul => "*",
            ArithOp::Div => "/",
            ArithOp::Mod => "%",
        }
    }
}

/// Array containment operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ArrayOp {
    /// `@>`
    Contains,
    /// `<@`
    ContainedBy,
    /// `&&`
    Overlaps,
}

impl ArrayOp {
    /// The SQL spelling, for printing.
    pub(crate) fn sql(self) -> &'static str {
        match self {
            ArrayOp::Contains => "@>",
            ArrayOp::ContainedBy => "<@",
            ArrayOp::Overlaps => "&&",
        }
    }
}

/// `IS [NOT] TRUE/FALSE/UNKNOWN` (variants named after the SQL).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(clippy::enum_variant_names)]
pub(crate) enum BoolTest {
    IsTrue,
    IsNotTrue,
    IsFalse,
    IsNotFalse,
    IsUnknown,
    IsNotUnknown,
}

impl BoolTest {
    /// The SQL spelling, for printing.
    pub(crate) fn sql(self) -> &'static str {
        match self {
            BoolTest::IsTrue => "IS TRUE",
            BoolTest::IsNotTrue => "IS NOT TRUE",
            BoolTest::IsFalse => "IS FALSE",
            BoolTest::IsNotFalse => "IS NOT FALSE",
            BoolTest::IsUnknown => "IS UNKNOWN",
            BoolTest::IsNotUnknown => "IS NOT UNKNOWN",
        }
    }
}

/// Built-in functions with fixed argument types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Func {
    /// `lower(text)`
    Lower,
    /// `upper(text)`
    Upper,
    /// `length(text)` / `char_length(text)`: characters.
    Length,
    /// `length(bpchar)`: characters without trailing spaces.
    BpcharLength,
    /// `concat(any, ...)`: output texts of the non-NULL arguments.
    Concat,
}

impl Func {
    /// The SQL spelling, for printing.
    pub(crate) fn sql(self) -> &'static str {
        match self {
            Func::Lower => "lower",
            Func::Upper => "upper",
            Func::Length | Func::BpcharLength => "length",
            Func::Concat => "concat",
        }
    }
}

/// Expression nodes; children of operators are already converted to the operand types.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ExprKind {
    /// A column of the row, by index in the table.
    Column(usize),
    /// A constant (literal, param or folded subexpression) of the node's type.
    Const(Value),
    /// A string literal, NULL or `$n` whose type is not decided yet (only during compilation).
    Unknown {
        text: Option<String>,
        param: Option<u32>,
    },
    /// Conversion from the argument's type to the node's type.
    Cast {
        arg: Box<Expr>,
        typmod: Typmod,
        explicit: bool,
    },
    Not(Box<Expr>),
    And(Vec<Expr>),
    Or(Vec<Expr>),
    Cmp {
        op: CmpOp,
        left: Box<Expr>,
        right: Box<Expr>,
    },
    /// `IS [NOT] DISTINCT FROM`
    Distinct {
        negated: bool,
        left: Box<Expr>,
        right: Box<Expr>,
    },
    Arith {
        op: ArithOp,
        left: Box<Expr>,
        right: Box<Expr>,
    },
    Neg(Box<Expr>),
    /// `text || text`
    Concat {
        left: Box<Expr>,
        right: Box<Expr>,
    },
    /// `array || array`, `array || element`, `element || array`.
    ArrayConcat {
        left: Box<Expr>,
        right: Box<Expr>,
    },
    Like {
        arg: Box<Expr>,
        pattern: Box<Expr>,
        escape: Option<Box<Expr>>,
        case_insensitive: bool,
        negated: bool,
    },
    IsNull {
        arg: Box<Expr>,
        negated: bool,
    },
    BoolTest {
        arg: Box<Expr>,
        test: BoolTest,
    },
    /// `left op ANY/ALL (array)`; `left` has the array's element type.
    AnyAll {
        op: CmpOp,
        all: bool,
        left: Box<Expr>,
        array: Box<Expr>,
    },
    ArrayOp {
        op: ArrayOp,
        left: Box<Expr>,
        right: Box<Expr>,
    },
    Func {
        func: Func,
        args: Vec<Expr>,
    },
    Coalesce(Vec<Expr>),
    MinMax {
        greatest: bool,
        args: Vec<Expr>,
    },
    /// `NULLIF(a, b)`: `value` unless `cmp` (`a = b`) is true.
    NullIf {
        value: Box<Expr>,
        cmp: Box<Expr>,
    },
    ArrayCtor(Vec<Expr>),
    /// The current time, read when the clause is evaluated: `now()` / `CURRENT_TIMESTAMP`
    /// (timestamptz), `LOCALTIMESTAMP` (timestamp, UTC) or `CURRENT_DATE` (date, UTC), by the
    /// node's type.
    Now,
    /// `(columns) IN (subquery)`: whether the row's values of `columns` are in the result of the
    /// clause's subquery `sub`; `exists` (the EXISTS form) reads NULL as false.
    InSubquery {
        columns: Vec<usize>,
        sub: usize,
        exists: bool,
    },
}

impl Expr {
    /// A node of type `ty`.
    pub(crate) fn new(kind: ExprKind, ty: Ty) -> Expr {
        Expr { kind, ty }
    }

    /// Direct children, in evaluation order.
    pub(crate) fn children(&self) -> Vec<&Expr> {
        use ExprKind::*;
        match &self.kind {
            Column(_) | Const(_) | Unknown { .. } | InSubquery { .. } | Now => vec![],
            Cast { arg, .. } | Not(arg) | Neg(arg) | IsNull { arg, .. } | BoolTest { arg, .. } => {
                vec![arg]
            }
            And(v) | Or(v) | Coalesce(v) | ArrayCtor(v) | Func { args: v, .. } | MinMax { args: v, .. } => {
                v.iter().collect()
            }
            Cmp { left, right, .. }
            | Distinct { left, right, .. }
            | Arith { left, right, .. }
            | Concat { left, right }
            | ArrayConcat { left, right }
            | ArrayOp { left, right, .. } => vec![left, right],
            AnyAll { left, array, .. } => vec![left, array],
            Like { arg, pattern, escape, .. } => {
                let mut v: Vec<&Expr> = vec![arg, pattern];
                if let Some(e) = escape {
                    v.push(e);
                }
                v
            }
            NullIf { value, cmp } => vec![value, cmp],
        }
    }

    /// Mutable access to the direct children.
    pub(crate) fn children_mut(&mut self) -> Vec<&mut Expr> {
        use ExprKind::*;
        match &mut self.kind {
            Column(_) | Const(_) | Unknown { .. } | InSubquery { .. } | Now => vec![],
            Cast { arg, .. } | Not(arg) | Neg(arg) | IsNull { arg, .. } | BoolTest { arg, .. } => {
                vec![arg]
            }
            And(v) | Or(v) | Coalesce(v) | ArrayCtor(v) | Func { args: v, .. } | MinMax { args: v, .. } => {
                v.iter_mut().collect()
            }
            Cmp { left, right, .. }
            | Distinct { left, right, .. }
            | Arith { left, right, .. }
            | Concat { left, right }
            | ArrayConcat { left, right }
            | ArrayOp { left, right, .. } => vec![left, right],
            AnyAll { left, array, .. } => vec![left, array],
            Like { arg, pattern, escape, .. } => {
                let mut v: Vec<&mut Expr> = vec![arg, pattern];
                if let Some(e) = escape {
                    v.push(e);
                }
                v
            }
            NullIf { value, cmp } => vec![value, cmp],
        }
    }

    /// Number of nodes in this subtree.
    pub(crate) fn size(&self) -> usize {
        1 + self.children().iter().map(|c| c.size()).sum::<usize>()
    }

    /// Whether any column, subquery result or the clock is read in this subtree: if not, it is
    /// a constant.
    pub(crate) fn reads_columns(&self) -> bool {
        matches!(self.kind, ExprKind::Column(_) | ExprKind::InSubquery { .. } | ExprKind::Now)
            || self.children().iter().any(|c| c.reads_columns())
    }

    /// Whether the current time is read in this subtree.
    pub(crate) fn reads_time(&self) -> bool {
        matches!(self.kind, ExprKind::Now) || self.children().iter().any(|c| c.reads_time())
    }

    /// Collects the column indexes read in this subtree.
    pub(crate) fn collect_columns(&self, out: &mut Vec<usize>) {
        match &self.kind {
            ExprKind::Column(i) => out.push(*i),
            ExprKind::InSubquery { columns, .. } => out.extend(columns),
            _ => {}
        }
        for c in self.children() {
            c.collect_columns(out);
        }
    }

    /// Adds `by` to the subquery index of every `InSubquery` node: the tree's subqueries are
    /// appended after `by` others (see `WhereClause::and`).
    pub(crate) fn shift_subqueries(&mut self, by: usize) {
        if let ExprKind::InSubquery { sub, .. } = &mut self.kind {
            *sub += by;
        }
        for c in self.children_mut() {
            c.shift_subqueries(by);
        }
    }
}
