//! Conflict resolution: what one incoming mutation does to a row, given the row's current state
//! (values, per-column stamps, tombstone) and the table's policy. Pure code — the server loads the
//! state inside the client's Postgres transaction, calls [`decide`], runs the resulting SQL and
//! stores [`apply`]'s new state.
//!
//! The policies (see `docs/write-protocol.md`):
//!
//! - [`RowPolicy::Lww`]: each column keeps the value with the highest [`Stamp`]. A column may
//!   instead be [`ConflictPolicy::ServerWins`]: its change applies only if the client's `base`
//!   for it still matches. Updates merge per column, so the final row does not depend on the
//!   order mutations arrive in (property-tested below).
//! - [`RowPolicy::ServerWins`]: an update or delete applies only if every `base` value still
//!   matches, otherwise it is a conflict reporting the current row; inserting an existing row
//!   is a conflict too.
//! - [`RowPolicy::Resolve`]: whole versions compete — the row as the mutation would leave it
//!   against the row as it is — on the first rule that tells them apart; a final `lww` is
//!   implied, so there is always a winner.
//!
//! Existence, decided in stamp order (a deleted row keeps a tombstone: its last values, their
//! stamps and the delete's stamp):
//!
//! - [`Existence::AddWins`]: a row exists if its newest write is newer than its newest delete. A
//!   delete loses to writes stamped after it; an update stamped after a delete revives the row
//!   with the tombstone's values under it (observed-remove: the deleter had not seen it).
//! - [`Existence::DeleteWins`]: a delete holds against every update, earlier or later; only an
//!   insert stamped after the delete creates the row again.
//!
//! Writes that lose still leave their values in the tombstone, so whichever order the server
//! sees a set of mutations in, it ends in the same state.

mod rule;
#[cfg(test)]
mod tests;

pub use ferrite_where::ColumnOrder;
pub use rule::Rule;

use ferrite_protocol::hlc::Stamp;
use ferrite_protocol::write_protocol::Values;
use std::cmp::Ordering;
use std::collections::BTreeMap;

/// A table's conflict policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TablePolicy {
    /// How competing versions of a live row are resolved.
    pub row: RowPolicy,
    /// Per-column overrides of an `lww` table.
    pub columns: BTreeMap<String, ConflictPolicy>,
    /// Whether deletes or concurrent writes win.
    pub existence: Existence,
}

impl Default for TablePolicy {
    fn default() -> Self {
        TablePolicy { row: RowPolicy::Lww, columns: BTreeMap::new(), existence: Existence::DeleteWins }
    }
}

/// How competing versions of a live row are resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowPolicy {
    /// Field-level last-writer-wins by stamp.
    Lww,
    /// Changes apply only on top of the version the client saw (`base`).
    ServerWins,
    /// Ordered rules between whole versions; `lww` is implied last.
    Resolve(Vec<Rule>),
}

/// How a conflicting change is settled: the `conflict` setting of a table (and the
/// server's `default_conflict`), or the policy of one column of an `lww` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConflictPolicy {
    #[default]
    /// The newest stamp wins.
    Lww,
    /// The change applies only if the client's `base` for the column still matches.
    ServerWins,
}

/// What wins between a delete and other writes to the same row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Existence {
    /// Writes stamped after a delete bring the row back; a delete loses to newer writes.
    AddWins,
    /// A delete holds; only a newer insert recreates the row.
    #[default]
    DeleteWins,
}

/// A row version with its bookkeeping.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StoredRow {
    /// Column → value (text form, `None` for NULL).
    pub values: Values,
    /// Column → stamp of the write that set it; a missing column is older than every stamp.
    pub clocks: BTreeMap<String, Stamp>,
    /// Stamp of the insert that created this incarnation of the row, when known.
    pub born: Option<Stamp>,
}

impl StoredRow {
    fn clock(&self, col: &str) -> Option<&Stamp> {
        self.clocks.get(col)
    }

    /// The newest stamp anywhere on the row.
    fn newest(&self) -> Option<&Stamp> {
        self.clocks.values().chain(self.born.as_ref()).max()
    }
}

/// A row's state before a mutation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Current {
    /// The row exists.
    Live(StoredRow),
    /// The row was deleted through Ferrite; its tombstone remains.
    Deleted {
        /// The last values and their stamps.
        tombstone: StoredRow,
        /// The newest delete's stamp.
        deleted: Stamp,
    },
    /// No row and no tombstone (never existed, or deleted directly in Postgres).
    Absent,
}

/// The change a client asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// A new row (all its values).
    Insert {
        /// Column → value.
        values: Values,
    },
    /// Some columns of a row.
    Update {
        /// Column → new value.
        set: Values,
        /// Column → value the client last saw.
        base: Option<Values>,
    },
    /// Removal of a row.
    Delete {
        /// Column → value the client last saw.
        base: Option<Values>,
    },
}

/// An incoming change with the stamp of its client transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mutation {
    /// The change.
    pub op: Incoming,
    /// Clock and client of the transaction.
    pub stamp: Stamp,
}

/// What the server does with a mutation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The change to the row.
    pub action: Action,
    /// Columns whose incoming values lost (the result is `merged`).
    pub overridden: Vec<String>,
}

/// A change to a row and its bookkeeping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Leave the row as it is.
    Nothing,
    /// Create the row (it is absent or deleted) with these values and stamps.
    Insert {
        /// Every value to insert.
        values: Values,
        /// Their stamps.
        clocks: BTreeMap<String, Stamp>,
        /// Stamp of the insert that created this incarnation, if any.
        born: Option<Stamp>,
    },
    /// Set some columns of the live row (possibly none, when only `born` moves).
    Update {
        /// Column → new value.
        set: Values,
        /// New stamps of those columns.
        clocks: BTreeMap<String, Stamp>,
        /// A newer birth stamp (an insert over an existing row).
        born: Option<Stamp>,
    },
    /// Delete the live row, keeping this tombstone.
    Delete {
        /// The row's last version.
        tombstone: StoredRow,
        /// The delete's stamp.
        stamp: Stamp,
    },
    /// The row stays deleted; its tombstone changes (a losing write merged in, a newer delete).
    KeepDeleted {
        /// The new tombstone.
        tombstone: StoredRow,
        /// The newest delete's stamp.
        deleted: Stamp,
    },
    /// Refuse the client transaction (server-wins): the row is not what the client based its
    /// change on. Carries the current values (`None` when the row is gone).
    Conflict {
        /// The row as the server has it.
        current: Option<Values>,
    },
}

fn decision(action: Action, overridden: Vec<String>) -> Decision {
    Decision { action, overridden }
}

fn keys(v: &Values) -> Vec<String> {
    v.keys().cloned().collect()
}

/// Whether every `base` value matches the row. Values compare by their column's type ([`ColumnOrder`]), so a
/// client that re-encodes what it read (`2.50` as `2.5`, JSON with other spacing, `t` for `true`)
/// still matches. (Without a base the mutation was refused by [`missing_base`] already.)
fn base_matches(base: Option<&Values>, values: &Values, order: &dyn Fn(&str) -> ColumnOrder) -> bool {
    base.is_none_or(|b| {
        b.iter().all(|(c, seen)| match (values.get(c), seen) {
            (Some(None), None) => true,
            (Some(Some(cur)), Some(seen)) => order(c).equal(cur, seen),
            _ => false,
        })
    })
}

/// Why `op` cannot be decided under `policy`, if it cannot: a change that applies only on top of
/// what the client saw must say what that was. Under row-level `server-wins`, an update needs a
/// `base` for every column it sets and a delete a non-empty `base`; a `server-wins` column of an
/// `lww` table needs a `base` for itself. (Applying such a change unconditionally would silently
/// overwrite what the policy exists to protect.)
pub fn missing_base(policy: &TablePolicy, op: &Incoming) -> Option<String> {
    let in_base = |base: &Option<Values>, col: &str| base.as_ref().is_some_and(|b| b.contains_key(col));
    match (&policy.row, op) {
        (RowPolicy::ServerWins, Incoming::Update { set, base }) => set.keys().find(|c| !in_base(base, c)).map(|c| {
            format!("the table is server-wins: the update must carry base.{c} (the value the client last saw)")
        }),
        (RowPolicy::ServerWins, Incoming::Delete { base }) if base.as_ref().is_none_or(|b| b.is_empty()) => {
            Some("the table is server-wins: the delete must carry base (the row as the client last saw it)".into())
        }
        (RowPolicy::Lww, Incoming::Update { set, base }) => set
            .keys()
            .find(|c| policy.columns.get(*c) == Some(&ConflictPolicy::ServerWins) && !in_base(base, c))
            .map(|c| {
                format!("column {c} is server-wins: the update must carry base.{c} (the value the client last saw)")
            }),
        _ => None,
    }
}

/// Decides what `m` does to a row in state `current` under `policy`. `order` gives how a
/// column's values compare (for `resolve` rules and `base` checks).
pub fn decide(policy: &TablePolicy, order: &dyn Fn(&str) -> ColumnOrder, current: &Current, m: &Mutation) -> Decision {
    let stamp = &m.stamp;
    let server_wins = policy.row == RowPolicy::ServerWins;
    match (&m.op, current) {
        (Incoming::Insert { values }, Current::Absent) => decision(fresh_insert(values, stamp), vec![]),
        (Incoming::Insert { values }, Current::Deleted { tombstone, deleted }) => {
            if server_wins || stamp > deleted {
                decision(fresh_insert(values, stamp), vec![])
            } else {
                // An insert from before the delete: it leaves its values in the tombstone.
                let (tombstone, _) = merge_into(policy, order, tombstone, values, None, stamp);
                decision(Action::KeepDeleted { tombstone, deleted: deleted.clone() }, keys(values))
            }
        }
        (Incoming::Insert { values }, Current::Live(row)) => {
            if server_wins {
                return decision(Action::Conflict { current: Some(row.values.clone()) }, vec![]);
            }
            // Another client created the same row: merge as an update, and remember the newer birth.
            let (set, clocks, lost) = winners(policy, order, row, values, None, stamp);
            let born = (row.born.as_ref() < Some(stamp)).then(|| stamp.clone());
            if set.is_empty() && born.is_none() {
                return decision(Action::Nothing, lost);
            }
            decision(Action::Update { set, clocks, born }, lost)
        }
        (Incoming::Update { set, base }, Current::Live(row)) => {
            if server_wins {
                if !base_matches(base.as_ref(), &row.values, order) {
                    return decision(Action::Conflict { current: Some(row.values.clone()) }, vec![]);
                }
                let clocks = set.keys().map(|c| (c.clone(), stamp.clone())).collect();
                return decision(Action::Update { set: set.clone(), clocks, born: None }, vec![]);
            }
            let (set, clocks, lost) = winners(policy, order, row, set, base.as_ref(), stamp);
            if set.is_empty() {
                return decision(Action::Nothing, lost);
            }
            decision(Action::Update { set, clocks, born: None }, lost)
        }
        (Incoming::Update { set, base }, Current::Deleted { tombstone, deleted }) => {
            if server_wins {
                return decision(Action::Conflict { current: None }, vec![]);
            }
            let (merged, lost) = merge_into(policy, order, tombstone, set, base.as_ref(), stamp);
            if policy.existence == Existence::AddWins && stamp > deleted {
                // Revived: the tombstone's values with the update on top.
                let StoredRow { values, clocks, born } = merged;
                return decision(Action::Insert { values, clocks, born }, lost);
            }
            decision(Action::KeepDeleted { tombstone: merged, deleted: deleted.clone() }, keys(set))
        }
        (Incoming::Update { set, .. }, Current::Absent) => {
            if server_wins {
                return decision(Action::Conflict { current: None }, vec![]);
            }
            // Gone without a trace (deleted directly in Postgres): nothing to update.
            decision(Action::Nothing, keys(set))
        }
        (Incoming::Delete { base }, Current::Live(row)) => {
            let delete = || Action::Delete { tombstone: row.clone(), stamp: stamp.clone() };
            if server_wins {
                if !base_matches(base.as_ref(), &row.values, order) {
                    return decision(Action::Conflict { current: Some(row.values.clone()) }, vec![]);
                }
                return decision(delete(), vec![]);
            }
            let newer: Vec<String> = match policy.existence {
                // Writes the deleter cannot have seen keep the row.
                Existence::AddWins => row.clocks.iter().filter(|(_, s)| *s > stamp).map(|(c, _)| c.clone()).collect(),
                Existence::DeleteWins => vec![],
            };
            let reborn = row.born.as_ref().is_some_and(|b| b > stamp);
            if reborn || !newer.is_empty() {
                let lost = if newer.is_empty() { keys(&row.values) } else { newer };
                return decision(Action::Nothing, lost);
            }
            decision(delete(), vec![])
        }
        (Incoming::Delete { .. }, Current::Deleted { tombstone, deleted }) => {
            if stamp > deleted {
                decision(Action::KeepDeleted { tombstone: tombstone.clone(), deleted: stamp.clone() }, vec![])
            } else {
                decision(Action::Nothing, vec![])
            }
        }
        (Incoming::Delete { .. }, Current::Absent) => decision(Action::Nothing, vec![]),
    }
}

fn fresh_insert(values: &Values, stamp: &Stamp) -> Action {
    Action::Insert {
        values: values.clone(),
        clocks: values.keys().map(|c| (c.clone(), stamp.clone())).collect(),
        born: Some(stamp.clone()),
    }
}

/// The incoming columns that win against `row` under an `lww` or `resolve` policy: (values,
/// their new stamps, columns that lost).
fn winners(
    policy: &TablePolicy,
    order: &dyn Fn(&str) -> ColumnOrder,
    row: &StoredRow,
    set: &Values,
    base: Option<&Values>,
    stamp: &Stamp,
) -> (Values, BTreeMap<String, Stamp>, Vec<String>) {
    let mut won = Values::new();
    let mut lost = vec![];
    match &policy.row {
        RowPolicy::Resolve(rules) => {
            let mut candidate = row.values.clone();
            candidate.extend(set.iter().map(|(c, v)| (c.clone(), v.clone())));
            let theirs = row.newest();
            if incoming_wins(rules, order, &candidate, stamp, &row.values, theirs) {
                won = set.clone();
            } else {
                lost = keys(set);
            }
        }
        RowPolicy::Lww | RowPolicy::ServerWins => {
            for (col, v) in set {
                let wins = match policy.columns.get(col).copied().unwrap_or(ConflictPolicy::Lww) {
                    ConflictPolicy::Lww => row.clock(col).is_none_or(|s| stamp >= s),
                    ConflictPolicy::ServerWins => base.and_then(|b| b.get_key_value(col)).is_none_or(|(c, seen)| {
                        base_matches(Some(&[(c.clone(), seen.clone())].into()), &row.values, order)
                    }),
                };
                if wins {
                    won.insert(col.clone(), v.clone());
                } else {
                    lost.push(col.clone());
                }
            }
        }
    }
    let clocks = won.keys().map(|c| (c.clone(), stamp.clone())).collect();
    (won, clocks, lost)
}

/// `row` with the winning part of `set` merged in, and the columns that lost.
fn merge_into(
    policy: &TablePolicy,
    order: &dyn Fn(&str) -> ColumnOrder,
    row: &StoredRow,
    set: &Values,
    base: Option<&Values>,
    stamp: &Stamp,
) -> (StoredRow, Vec<String>) {
    let (won, clocks, lost) = winners(policy, order, row, set, base, stamp);
    let mut merged = row.clone();
    merged.values.extend(won);
    merged.clocks.extend(clocks);
    (merged, lost)
}

/// Whether the incoming version beats the stored one under `rules` (then `lww`).
fn incoming_wins(
    rules: &[Rule],
    order: &dyn Fn(&str) -> ColumnOrder,
    ours: &Values,
    our_stamp: &Stamp,
    theirs: &Values,
    their_stamp: Option<&Stamp>,
) -> bool {
    for rule in rules {
        let order = match rule {
            Rule::Max(col) => compare_present(&order(col), ours.get(col), theirs.get(col), false),
            Rule::Min(col) => compare_present(&order(col), ours.get(col), theirs.get(col), true),
            Rule::Lww => break,
        };
        match order {
            Ordering::Greater => return true,
            Ordering::Less => return false,
            Ordering::Equal => {}
        }
    }
    their_stamp.is_none_or(|s| our_stamp >= s)
}

/// How `a` ranks against `b` under `max` (or `min` when `smaller_wins`): a missing or NULL value
/// loses to any value either way; values Postgres cannot order (or that do not read as their
/// type) tie, so the next rule decides.
fn compare_present(
    order: &ColumnOrder,
    a: Option<&Option<String>>,
    b: Option<&Option<String>>,
    smaller_wins: bool,
) -> Ordering {
    match (a.and_then(|v| v.as_deref()), b.and_then(|v| v.as_deref())) {
        (Some(a), Some(b)) => {
            let o = order.compare(a, b).unwrap_or(Ordering::Equal);
            if smaller_wins {
                o.reverse()
            } else {
                o
            }
        }
        (Some(_), None) => Ordering::Greater,
        (None, Some(_)) => Ordering::Less,
        (None, None) => Ordering::Equal,
    }
}

/// The row's state after `action` (what the server stores as the row's bookkeeping).
pub fn apply(current: &Current, action: &Action) -> Current {
    match action {
        Action::Nothing | Action::Conflict { .. } => current.clone(),
        Action::Insert { values, clocks, born } => {
            Current::Live(StoredRow { values: values.clone(), clocks: clocks.clone(), born: born.clone() })
        }
        Action::Update { set, clocks, born } => {
            let mut row = match current {
                Current::Live(row) => row.clone(),
                _ => StoredRow::default(),
            };
            row.values.extend(set.iter().map(|(c, v)| (c.clone(), v.clone())));
            row.clocks.extend(clocks.iter().map(|(c, s)| (c.clone(), s.clone())));
            if born.is_some() && born > &row.born {
                row.born = born.clone();
            }
            Current::Live(row)
        }
        Action::Delete { tombstone, stamp } => {
            Current::Deleted { tombstone: tombstone.clone(), deleted: stamp.clone() }
        }
        Action::KeepDeleted { tombstone, deleted } => {
            Current::Deleted { tombstone: tombstone.clone(), deleted: deleted.clone() }
        }
    }
}
