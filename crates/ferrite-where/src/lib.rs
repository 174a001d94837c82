//! Shape where clauses: parsed with libpg_query exactly as Electric does (`SELECT 1 WHERE <sql>`),
//! typed against the table with Postgres' rules, evaluated in Rust on replicated rows, and printed
//! back as parameterised SQL for snapshot queries.
//!
//! The evaluator must agree with Postgres on every row, because a shape's initial snapshot is
//! computed by Postgres (from [`WhereClause::to_sql`]) and its changes by [`WhereClause::matches`].
//! So anything that cannot be evaluated exactly like Postgres is refused when compiling
//! ([`WhereError`]), and values that cannot be handled at run time give an [`EvalError`], never a
//! guess. Strings are compared with the `C` collation; `to_sql` says so explicitly. Where Postgres
//! leaves evaluation order open (the planner reorders AND/OR arguments and folds strict operators
//! applied to a NULL constant), we take the outcome that avoids an error: a decisive AND/OR argument
//! wins over a failing one.
//!
//! Layout: [`syntax`] runs the parser, [`parse`] types the tree into [`expr`] nodes using
//! [`types`], [`value`] (with [`numeric`], [`float`], [`datetime`], [`array`]) reads and writes
//! Postgres text, [`eval`] (with [`like`]) evaluates, [`sql`] prints, [`index`] extracts the
//! router's equality terms.

#![warn(missing_docs)]

mod array;
pub mod conditions;
mod datetime;
mod eval;
mod expr;
mod float;
mod index;
mod like;
pub mod limits;
mod numeric;
pub mod order;
mod parse;
mod rule;
mod sql;
pub mod subquery;
mod syntax;
mod types;
mod value;
pub mod window;

#[cfg(test)]
mod subquery_tests;
#[cfg(test)]
mod tests;

use ferrite_protocol::schema::TableSchema;
use std::collections::BTreeMap;

pub use conditions::{Conditions, Position};
pub use order::ColumnOrder;
pub use rule::{rule_claim_paths, BoundRule, ClaimValue};
pub use subquery::{reads_current_time, tables_read, Catalog, Membership, Subquery, SubquerySets};
pub use window::{pg_micros, TimeTerm};

/// Why a where clause (or its params) was rejected. `Display` is the message for the HTTP client;
/// [`WhereError::field`] says which request field it belongs to.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WhereError {
    /// libpg_query could not parse it: `At location N: syntax error at or near "x"`.
    #[error("{0}")]
    Syntax(String),
    /// A column name that is not in the table.
    #[error("Unknown reference \"{0}\"")]
    UnknownColumn(String),
    /// A subquery reads a table that does not exist (or that the caller may not read).
    #[error("relation {0} does not exist")]
    UnknownTable(String),
    /// A construct, function, operator or type we do not evaluate (subqueries, `now()`, jsonb...).
    #[error("{0}")]
    Unsupported(String),
    /// No operator for these operand types, as Postgres would say.
    #[error("operator does not exist: {0}")]
    NoOperator(String),
    /// Over one of the cost bounds of [`limits`]; the message names the limit.
    #[error("{0}")]
    Limit(String),
    /// Other typing errors (non-boolean WHERE, unmatched types, unknown function signature).
    #[error("{0}")]
    Type(String),
    /// A literal that does not read as the type its context gives it.
    #[error("{0}")]
    InvalidLiteral(String),
    /// A constant part of the expression fails to evaluate (e.g. `1/0`).
    #[error("{0}")]
    Eval(String),
    /// `$n` is used but `params` has no value for it.
    #[error("Parameter ${0} was not provided")]
    MissingParam(i32),
    /// A param value does not read as the type its context gives it.
    #[error("Parameter ${param}: {message}")]
    InvalidParam {
        /// The param number.
        param: u32,
        /// Why it does not parse.
        message: String,
    },
}

impl WhereError {
    /// The request field at fault: `"params"` for missing or malformed param values, else `"where"`.
    pub fn field(&self) -> &'static str {
        match self {
            WhereError::MissingParam(_) | WhereError::InvalidParam { .. } => "params",
            _ => "where",
        }
    }
}

/// Why a row could not be evaluated. Postgres would raise an error for the same row, so callers
/// treat the row as not matching (and may log it).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EvalError {
    /// A column value is not valid text for its type.
    #[error("column \"{column}\": {message}")]
    BadColumnValue {
        /// Column name.
        column: String,
        /// Why the value does not parse.
        message: String,
    },
    /// The row has fewer values than the table has columns.
    #[error("row has no value for column \"{0}\"")]
    MissingColumn(String),
    /// Text that does not parse as the type it is cast to.
    #[error("{0}")]
    InvalidInput(String),
    /// Integer/float/date overflow and similar range errors.
    #[error("{0}")]
    OutOfRange(String),
    /// Division or modulo by zero.
    #[error("division by zero")]
    DivisionByZero,
    /// A value outside what this evaluator represents exactly (e.g. numeric beyond 38 digits).
    #[error("{0}")]
    Unsupported(String),
}

/// A compiled where clause: a typed expression over the columns of one table, and the
/// subqueries it asks about.
#[derive(Debug, Clone)]
pub struct WhereClause {
    expr: expr::Expr,
    column_names: Vec<String>,
    column_types: Vec<types::Ty>,
    subqueries: Vec<Subquery>,
}

impl WhereClause {
    /// Parses `sql` with libpg_query (as `SELECT 1 WHERE <sql>`), resolves columns against
    /// `table`, type-checks with Postgres' rules and binds `params` (`"1"` → `$1`, ...) as typed
    /// values (never as SQL text). Constant subexpressions are evaluated here, so their errors
    /// surface now.
    /// The clause may read only the row: subqueries and the current time are refused (see
    /// [`WhereClause::compile_with`]).
    pub fn compile(
        sql: &str,
        params: &BTreeMap<String, String>,
        table: &TableSchema,
    ) -> Result<WhereClause, WhereError> {
        Self::compile_from(sql, params, None, table, None)
    }

    /// Like [`WhereClause::compile`], with subqueries over the tables of `catalog` (see
    /// [`subquery`]; [`tables_read`] lists the tables to put in it) and the current time
    /// (`now()`, `CURRENT_TIMESTAMP`, `LOCALTIMESTAMP`, `CURRENT_DATE`).
    pub fn compile_with(
        sql: &str,
        params: &BTreeMap<String, String>,
        table: &TableSchema,
        catalog: &dyn Catalog,
    ) -> Result<WhereClause, WhereError> {
        Self::compile_from(sql, params, None, table, Some(catalog))
    }

    /// Compiles a table rule bound to one caller ([`BoundRule`]): `claims.<name>` references
    /// take the caller's claim values as untyped literals (never as SQL text); the rule takes no
    /// `$n` parameters.
    pub fn compile_rule(rule: &BoundRule, table: &TableSchema) -> Result<WhereClause, WhereError> {
        Self::compile_from(&rule.sql, &BTreeMap::new(), Some(&rule.claims), table, None)
    }

    /// Like [`WhereClause::compile_rule`], with subqueries over the tables of `catalog` (the
    /// claims are bound inside them too).
    pub fn compile_rule_with(
        rule: &BoundRule,
        table: &TableSchema,
        catalog: &dyn Catalog,
    ) -> Result<WhereClause, WhereError> {
        Self::compile_from(&rule.sql, &BTreeMap::new(), Some(&rule.claims), table, Some(catalog))
    }

    fn compile_from(
        sql: &str,
        params: &BTreeMap<String, String>,
        claims: Option<&[ClaimValue]>,
        table: &TableSchema,
        catalog: Option<&dyn Catalog>,
    ) -> Result<WhereClause, WhereError> {
        let node = syntax::parse_where(sql)?;
        let budget = std::cell::Cell::new(0);
        let compiler = parse::Compiler::new(table, params, claims, catalog, &budget);
        let expr = compiler.compile(&node)?;
        subquery::check_tuples_positive(&expr)?;
        Self::over(expr, table, compiler.finish())
    }

    /// A compiled expression over `table` with its subqueries, within the cost [`limits`].
    pub(crate) fn over(
        expr: expr::Expr,
        table: &TableSchema,
        subqueries: Vec<Subquery>,
    ) -> Result<WhereClause, WhereError> {
        limits::check(&expr)?;
        Ok(WhereClause {
            expr,
            column_names: table.columns.iter().map(|c| c.name.clone()).collect(),
            column_types: table.columns.iter().map(types::Ty::of_column).collect(),
            subqueries,
        })
    }

    /// The subqueries the clause asks about; [`SubquerySets::lookup`] is asked by index in
    /// this list.
    pub fn subqueries(&self) -> &[Subquery] {
        &self.subqueries
    }

    /// True when the clause is false whatever the row — constant-folded to `false`, an `AND`
    /// with such a part, an `OR` of such parts — e.g. a rule `claims.role = 'staff' AND …` bound
    /// to a visitor's token. (A NULL, as from a missing claim, is not counted: it matches no row
    /// too, but says nothing about the token being the wrong kind.)
    pub fn never_holds(&self) -> bool {
        fn never(e: &expr::Expr) -> bool {
            match &e.kind {
                expr::ExprKind::Const(value::Value::Bool(false)) => true,
                expr::ExprKind::And(parts) => parts.iter().any(never),
                expr::ExprKind::Or(parts) => parts.iter().all(never),
                _ => false,
            }
        }
        never(&self.expr)
    }

    /// Both clauses (of the same table) at once: their compiled trees joined by AND, so neither
    /// can change the other's meaning. Top-level conjuncts are flattened, so the router's
    /// equality index sees those of both.
    pub fn and(self, other: WhereClause) -> WhereClause {
        let mut args = Vec::new();
        let mut subqueries = self.subqueries;
        let mut second = other.expr;
        second.shift_subqueries(subqueries.len());
        subqueries.extend(other.subqueries);
        for e in [self.expr, second] {
            match e.kind {
                expr::ExprKind::And(inner) => args.extend(inner),
                kind => args.push(expr::Expr::new(kind, e.ty)),
            }
        }
        WhereClause {
            expr: expr::Expr::new(expr::ExprKind::And(args), types::Ty::Bool),
            subqueries,
            column_names: self.column_names,
            column_types: self.column_types,
        }
    }

    /// Whether `row` (Postgres text values aligned with the table's columns) satisfies the clause.
    /// A NULL (unknown) result does not match, as in a SQL `WHERE`.
    /// A clause with subqueries cannot be evaluated without their results: see
    /// [`WhereClause::matches_with`].
    pub fn matches(&self, row: &[Option<String>]) -> Result<bool, EvalError> {
        if !self.subqueries.is_empty() {
            return Err(EvalError::Unsupported(
                "this where clause has subqueries: evaluate it with their results".into(),
            ));
        }
        self.matches_with(row, &subquery::NoSets)
    }

    /// Whether `row` satisfies the clause while its subqueries' results are `sets`, at the
    /// instant `sets` stands at ([`SubquerySets::now`]) when the clause reads the current time.
    pub fn matches_with(&self, row: &[Option<String>], sets: &dyn SubquerySets) -> Result<bool, EvalError> {
        self.eval(row, sets, sets.now())
    }

    /// Whether `row` satisfies the clause at time `now` (for `now()`, `CURRENT_DATE`, … as
    /// Postgres reads them in a session whose time zone is UTC).
    pub fn matches_at(
        &self,
        row: &[Option<String>],
        sets: &dyn SubquerySets,
        now: std::time::SystemTime,
    ) -> Result<bool, EvalError> {
        let micros = pg_micros(now).ok_or_else(|| EvalError::OutOfRange("the current time is out of range".into()))?;
        self.eval(row, sets, Some(micros))
    }

    fn eval(&self, row: &[Option<String>], sets: &dyn SubquerySets, now: Option<i64>) -> Result<bool, EvalError> {
        let r = eval::Row { values: row, names: &self.column_names, sets, now };
        Ok(eval::eval(&self.expr, &r)? == value::Value::Bool(true))
    }

    /// Whether the clause reads the current time (`now()`, `CURRENT_DATE`, …).
    pub fn reads_time(&self) -> bool {
        self.expr.reads_time() || self.subqueries.iter().any(|q| q.filter.as_ref().is_some_and(|f| f.reads_time()))
    }

    /// The clause as SQL for Postgres, with every constant as a bound parameter
    /// `($<first_param + i>::text)::<type>`, e.g. `("status" = ($3::text)::text)`. Returns the
    /// SQL and the parameter values as text (`None` = NULL), in order.
    pub fn to_sql(&self, first_param: usize) -> (String, Vec<Option<String>>) {
        self.print(first_param, None)
    }

    /// As [`WhereClause::to_sql`], with the rows every subquery reads locked `FOR SHARE`: for a
    /// check inside a write's transaction, so that a concurrent change or delete of a row the
    /// check relied on (a membership, a role) waits until the write has committed or rolled back.
    pub fn to_sql_locking(&self, first_param: usize) -> (String, Vec<Option<String>>) {
        self.print(first_param, Some(" FOR SHARE"))
    }

    fn print(&self, first_param: usize, lock: Option<&'static str>) -> (String, Vec<Option<String>>) {
        let mut p = sql::Printer::new(&self.column_names, &self.subqueries, lock, first_param);
        p.expr(&self.expr);
        (p.out, p.params)
    }

    /// Indexes of the columns the clause reads, ascending, without duplicates.
    pub fn referenced_columns(&self) -> Vec<usize> {
        let mut cols = Vec::new();
        self.expr.collect_columns(&mut cols);
        cols.sort_unstable();
        cols.dedup();
        cols
    }

    /// For the router's equality index: among the top-level AND conjuncts (or the whole clause)
    /// of the form `col = const` (either side), `col IN (consts)` or `col = ANY(const array)`,
    /// on a column whose text form is exactly computable (int2/int4/int8, text/varchar/name,
    /// uuid, bool, enum), the one with the fewest values, as `(column index, texts)`. A row can
    /// only match if its text value for that column is one of the texts (bool gives both `t`/
    /// `true` spellings). An empty list means no row can match.
    pub fn equality_index_term(&self) -> Option<(usize, Vec<String>)> {
        index::equality_term(&self.expr, &self.column_types)
    }
}
