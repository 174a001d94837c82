//! A where clause with subqueries as *conditions in disjunctive normal form*: what a live shape
//! needs to follow rows moving in and out as the subqueries' results change.
//!
//! The clause is rewritten, above its subqueries, into an OR of ANDs of *positions*. A position
//! is either one subquery test (`x IN (SELECT …)`, possibly negated) or one *plain* condition: a
//! part of the clause that reads only the row. `(x IN S AND s = 'a') OR y IN T` has three
//! positions — `x IN S`, `s = 'a'`, `y IN T` — and two disjuncts, `{0, 1}` and `{2}`. A row is in
//! the shape exactly when some disjunct has all its positions true; this is the clause's own
//! meaning, three-valued logic included, because NOT is pushed down with De Morgan's laws and
//! AND distributed over OR, both of which hold in SQL's logic, and a position counts only when it
//! is *true* (a negated position when its test is *false*, never when it is NULL).
//!
//! Clients are told, per row, which positions hold (`active_conditions`) and, per disjunct, the
//! values that tie the row to each position (its tags); when a value leaves a subquery's result
//! the server names the position and value once instead of sending a delete per row.
//!
//! Only what can be followed value by value is accepted: a subquery must be a condition joined
//! to the rest by AND, OR and NOT (not an operand of `=`, `IS NULL`, `COALESCE`, …), and a
//! negated `IN` (not `EXISTS`) must compare columns that cannot be NULL on either side — a NULL
//! there makes `NOT IN` unknown for every row at once, which no per-value event can express.

use super::expr::{Expr, ExprKind};
use super::subquery::{membership, SubquerySets};
use super::types::Ty;
use super::{WhereClause, WhereError};
use ferrite_protocol::schema::TableSchema;

/// Most disjuncts a clause may expand to (each costs a tag in every message of the shape).
pub const MAX_DISJUNCTS: usize = 16;
/// Most positions a clause may have.
pub const MAX_POSITIONS: usize = 32;

/// One position of [`Conditions`].
#[derive(Debug, Clone)]
pub enum Position {
    /// A condition on the row alone (negation already applied).
    Plain(WhereClause),
    /// `columns IN (subquery number sub)` of the clause, true when the row's values are in its
    /// result — or, `negated`, when they are not.
    Subquery {
        /// Index in [`WhereClause::subqueries`].
        sub: usize,
        /// The outer row's compared columns.
        columns: Vec<usize>,
        /// Whether the test is negated (`NOT IN`, `NOT EXISTS`).
        negated: bool,
        /// The EXISTS form (a NULL comparison is false rather than unknown).
        exists: bool,
    },
}

/// A clause with subqueries as positions and disjuncts (see the module documentation).
#[derive(Debug, Clone)]
pub struct Conditions {
    positions: Vec<Position>,
    disjuncts: Vec<Vec<usize>>,
}

impl Conditions {
    /// A clause without subqueries as one plain position: what a shape that reads the current
    /// time (and so is followed like a relational one) judges its rows by.
    pub fn plain(clause: WhereClause) -> Conditions {
        Conditions { positions: vec![Position::Plain(clause)], disjuncts: vec![vec![0]] }
    }

    /// Whether some position tests a subquery (otherwise messages carry no tags).
    pub fn has_subqueries(&self) -> bool {
        self.positions.iter().any(|p| matches!(p, Position::Subquery { .. }))
    }

    /// The positions, in the order clients index them.
    pub fn positions(&self) -> &[Position] {
        &self.positions
    }

    /// The disjuncts, each the positions it needs, ascending.
    pub fn disjuncts(&self) -> &[Vec<usize>] {
        &self.disjuncts
    }

    /// The position that tests subquery `sub`, if the clause tests it.
    pub fn position_of(&self, sub: usize) -> Option<usize> {
        self.positions.iter().position(|p| matches!(p, Position::Subquery { sub: s, .. } if *s == sub))
    }

    /// Whether each position is true for `row` while the subqueries' results are `sets`. A plain
    /// condition that cannot be evaluated (a value Postgres would refuse) is not true.
    pub fn active(&self, row: &[Option<String>], sets: &dyn SubquerySets) -> Vec<bool> {
        self.positions
            .iter()
            .map(|p| match p {
                Position::Plain(clause) => clause.matches_with(row, sets).unwrap_or(false),
                Position::Subquery { sub, columns, negated, exists } => {
                    let values: Vec<Option<&str>> =
                        columns.iter().map(|&c| row.get(c).and_then(|v| v.as_deref())).collect();
                    membership(sets, *sub, &values, *exists) == Some(!negated)
                }
            })
            .collect()
    }

    /// Whether a row whose positions are `active` is in the shape: some disjunct holds whole.
    pub fn holds(&self, active: &[bool]) -> bool {
        self.disjuncts.iter().any(|d| d.iter().all(|&p| active.get(p).copied().unwrap_or(false)))
    }
}

impl WhereClause {
    /// The clause as [`Conditions`], or `None` when it has no subqueries (a plain clause needs
    /// none of this). `table` is the clause's own table. Refuses what cannot be followed value
    /// by value (see the module documentation) and clauses that expand beyond
    /// [`MAX_DISJUNCTS`] / [`MAX_POSITIONS`].
    pub fn conditions(&self, table: &TableSchema) -> Result<Option<Conditions>, WhereError> {
        if self.subqueries.is_empty() {
            return Ok(None);
        }
        let mut positions = Vec::new();
        let disjuncts = self.expand(&self.expr, false, &mut positions)?;
        for p in &positions {
            let Position::Subquery { sub, columns, negated: true, exists: false } = p else { continue };
            let inner = &self.subqueries[*sub];
            let nullable = columns.iter().any(|&c| !table.columns[c].not_null)
                || inner.columns.iter().any(|&c| !inner.table.columns[c].not_null);
            if nullable {
                return Err(WhereError::Unsupported(
                    "NOT IN (subquery) over a column that may be NULL is not supported in a shape: one NULL makes it unknown for every row at once. Use NOT EXISTS (…), or columns declared NOT NULL"
                        .into(),
                ));
            }
        }
        Ok(Some(Conditions { positions, disjuncts }))
    }

    /// The disjuncts of `e` (negated when `negated`), adding its positions to `positions`.
    fn expand(&self, e: &Expr, negated: bool, positions: &mut Vec<Position>) -> Result<Vec<Vec<usize>>, WhereError> {
        if !has_subquery(e) {
            let kind = if negated { ExprKind::Not(Box::new(e.clone())) } else { e.kind.clone() };
            let clause = WhereClause {
                expr: Expr::new(kind, Ty::Bool),
                column_names: self.column_names.clone(),
                column_types: self.column_types.clone(),
                subqueries: vec![],
            };
            return Ok(vec![vec![push(positions, Position::Plain(clause))?]]);
        }
        match &e.kind {
            ExprKind::Not(inner) => self.expand(inner, !negated, positions),
            ExprKind::InSubquery { columns, sub, exists } => {
                let p = Position::Subquery { sub: *sub, columns: columns.clone(), negated, exists: *exists };
                Ok(vec![vec![push(positions, p)?]])
            }
            ExprKind::And(args) | ExprKind::Or(args) => {
                let conjunction = matches!(e.kind, ExprKind::And(_)) != negated;
                let mut parts = Vec::with_capacity(args.len());
                for a in args {
                    parts.push(self.expand(a, negated, positions)?);
                }
                if conjunction {
                    let mut product: Vec<Vec<usize>> = vec![vec![]];
                    for part in parts {
                        let mut next = Vec::with_capacity(product.len() * part.len());
                        for left in &product {
                            for right in &part {
                                let mut d = left.clone();
                                d.extend(right);
                                d.sort_unstable();
                                d.dedup();
                                next.push(d);
                            }
                        }
                        if next.len() > MAX_DISJUNCTS {
                            return Err(too_many_disjuncts());
                        }
                        product = next;
                    }
                    Ok(product)
                } else {
                    let all: Vec<Vec<usize>> = parts.into_iter().flatten().collect();
                    if all.len() > MAX_DISJUNCTS {
                        return Err(too_many_disjuncts());
                    }
                    Ok(all)
                }
            }
            _ => Err(WhereError::Unsupported(
                "a subquery in a shape's where clause must be a condition of its own, joined to the rest by AND, OR and NOT (not compared, tested with IS, or passed to a function)"
                    .into(),
            )),
        }
    }
}

fn push(positions: &mut Vec<Position>, p: Position) -> Result<usize, WhereError> {
    if positions.len() == MAX_POSITIONS {
        return Err(WhereError::Limit(format!(
            "the where clause has too many conditions around its subqueries (the limit is {MAX_POSITIONS})"
        )));
    }
    positions.push(p);
    Ok(positions.len() - 1)
}

fn too_many_disjuncts() -> WhereError {
    WhereError::Limit(format!(
        "the where clause expands to too many alternatives around its subqueries (the limit is {MAX_DISJUNCTS}); write it as fewer ORs of ANDs"
    ))
}

fn has_subquery(e: &Expr) -> bool {
    matches!(e.kind, ExprKind::InSubquery { .. }) || e.children().into_iter().any(has_subquery)
}
