//! Dependency nodes: the live result of one subquery of a where clause or rule.
//!
//! A shape whose where clause says `team_id IN (SELECT team_id FROM team_members WHERE user_id =
//! 'ann')` depends on the result of that inner query, which changes as rows of `team_members`
//! change. A [`DependencyNode`] holds that result for one distinct inner query (shared by every
//! shape that asks the same: see [`ferrite_where::Subquery::key`]): which rows of the inner table
//! are in it, by row key, with the values they project, and how many rows give each value. It is
//! fed the inner table's row changes one transaction at a time and says, per transaction, which
//! values entered the result (count 0 → more) and which left it (count → 0) — net over the
//! transaction, so a membership added and removed inside one transaction moves nothing. Those
//! values are what moves outer rows into and out of the shapes that depend on the node.
//!
//! A node decides whether a changed row is in the result itself (the inner where clause,
//! evaluated with the results of its own nested subqueries), and it knows which rows were in it
//! before, so a change needs only the row's key and new values — not the old values, which
//! Postgres' logical replication does not send by default.

use ferrite_where::{EvalError, Membership, Subquery, SubquerySets};
use std::collections::HashMap;

/// The texts a result row projects, one per selected column (`None`: NULL).
pub type Projected = Vec<Option<String>>;

/// One change of an inner-table row, as the replication stream gives it.
#[derive(Debug, Clone, PartialEq)]
pub enum RowChange<'a> {
    /// The row with this key now has these values (an insert or an update; an update that
    /// changed the key comes as a delete of the old key and an upsert of the new one).
    Upsert {
        /// The row's key.
        key: &'a str,
        /// Its values, aligned with the inner table's columns.
        row: &'a [Option<String>],
    },
    /// The row with this key is gone.
    Delete {
        /// The row's key.
        key: &'a str,
    },
}

/// What one transaction did to a node's result.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeDelta {
    /// Values that were not in the result before the transaction and are after it.
    pub entered: Vec<Projected>,
    /// Values that were in the result before the transaction and are not after it.
    pub left: Vec<Projected>,
}

impl NodeDelta {
    /// Whether the transaction left the set of values as it was.
    pub fn is_empty(&self) -> bool {
        self.entered.is_empty() && self.left.is_empty()
    }
}

/// The live result of one inner query (see the module documentation).
#[derive(Debug, Default)]
pub struct DependencyNode {
    /// Rows in the result: row key → projected values.
    rows: HashMap<String, Projected>,
    /// How many rows of the result project each value.
    counts: HashMap<Projected, usize>,
    /// Rows of the result with a NULL among their projected values.
    with_null: usize,
    /// Values whose count changed in the transaction being applied, with their count before it.
    touched: HashMap<Projected, usize>,
}

impl DependencyNode {
    /// An empty result (before its snapshot is loaded).
    pub fn new() -> DependencyNode {
        DependencyNode::default()
    }

    /// Loads one row of the initial result (from a snapshot of the inner query); counted as
    /// part of the state before any transaction, so it is reported by no delta.
    pub fn seed(&mut self, key: String, value: Projected) {
        self.set(key, Some(value));
        self.touched.clear();
    }

    /// Applies one change of the inner table's rows to the result of `query`: the row is in the
    /// result when the query's where clause holds for it, evaluated with `nested` (the results
    /// of the query's own subqueries). Call [`DependencyNode::finish_transaction`] after the
    /// transaction's last change.
    pub fn apply(
        &mut self,
        query: &Subquery,
        change: RowChange<'_>,
        nested: &dyn SubquerySets,
    ) -> Result<(), EvalError> {
        match change {
            RowChange::Delete { key } => self.set(key.to_string(), None),
            RowChange::Upsert { key, row } => {
                let included = match &query.filter {
                    Some(filter) => filter.matches_with(row, nested)?,
                    None => true,
                };
                let value = included.then(|| query.columns.iter().map(|&i| row.get(i).cloned().flatten()).collect());
                self.set(key.to_string(), value);
            }
        }
        Ok(())
    }

    /// Empties the result (the inner table was truncated); the values it held are reported
    /// left by the next [`DependencyNode::finish_transaction`].
    pub fn clear(&mut self) {
        let keys: Vec<String> = self.rows.keys().cloned().collect();
        for key in keys {
            self.set(key, None);
        }
    }

    /// The values that entered and left the result since the previous call: the net effect of
    /// one transaction.
    pub fn finish_transaction(&mut self) -> NodeDelta {
        let mut delta = NodeDelta::default();
        for (value, before) in self.touched.drain() {
            let after = self.counts.get(&value).copied().unwrap_or(0);
            match (before > 0, after > 0) {
                (false, true) => delta.entered.push(value),
                (true, false) => delta.left.push(value),
                _ => {}
            }
        }
        delta.entered.sort();
        delta.left.sort();
        delta
    }

    /// The rows in the result: key and projected values (what [`DependencyNode::seed`] rebuilds
    /// the node from, e.g. after a restart).
    pub fn rows(&self) -> impl Iterator<Item = (&String, &Projected)> {
        self.rows.iter()
    }

    /// Rows in the result.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether the result has no rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Whether `key` (outer values, none NULL) is among the result's values, and what `IN`
    /// needs besides (NULLs in the result, emptiness).
    pub fn lookup(&self, key: &[&str]) -> Membership {
        let value: Projected = key.iter().map(|k| Some(k.to_string())).collect();
        Membership { contains: self.counts.contains_key(&value), ..self.nulls() }
    }

    /// Whether the result holds a NULL and whether it is empty.
    pub fn nulls(&self) -> Membership {
        Membership { contains: false, has_null: self.with_null > 0, empty: self.rows.is_empty() }
    }

    /// Puts `key`'s row in the result with `value`, or takes it out (`None`).
    fn set(&mut self, key: String, value: Option<Projected>) {
        let old = match &value {
            Some(v) => self.rows.insert(key, v.clone()),
            None => self.rows.remove(&key),
        };
        if old == value {
            return;
        }
        if let Some(old) = old {
            self.count(old, false);
        }
        if let Some(new) = value {
            self.count(new, true);
        }
    }

    fn count(&mut self, value: Projected, add: bool) {
        let current = self.counts.get(&value).copied().unwrap_or(0);
        self.touched.entry(value.clone()).or_insert(current);
        if value.iter().any(Option::is_none) {
            if add {
                self.with_null += 1;
            } else {
                self.with_null -= 1;
            }
        }
        let next = if add { current + 1 } else { current - 1 };
        if next == 0 {
            self.counts.remove(&value);
        } else {
            self.counts.insert(value, next);
        }
    }
}

/// The results of a clause's subqueries as dependency nodes, in the clause's order: what its
/// evaluation asks ([`ferrite_where::WhereClause::matches_with`]).
pub struct NodeSets<'a>(pub Vec<&'a DependencyNode>);

impl SubquerySets for NodeSets<'_> {
    fn lookup(&self, index: usize, key: &[&str]) -> Membership {
        match self.0.get(index) {
            Some(node) => node.lookup(key),
            None => Membership { empty: true, ..Membership::default() },
        }
    }

    fn nulls(&self, index: usize) -> Membership {
        match self.0.get(index) {
            Some(node) => node.nulls(),
            None => Membership { empty: true, ..Membership::default() },
        }
    }
}

#[cfg(test)]
mod tests;
