//! Messages of relational shapes (where clauses with subqueries), in the format Electric 1.7
//! clients understand: every change carries `tags` and `active_conditions`, and a value leaving
//! or entering a subquery's result is announced once, as a `move-out` or `move-in` event, rather
//! than as a delete or insert per row.
//!
//! The shape's where clause is a set of positions and disjuncts ([`Conditions`]). A row's tags
//! are one per disjunct: `/`-joined slots, one per position — empty where the position is not in
//! that disjunct, `1` for a plain condition, and for a subquery test an opaque hash of the row's
//! compared values. `active_conditions` says which positions are true for the row now. A client
//! indexes its rows by (position, slot); a `move-out` event `{pos, value}` marks that position
//! false on the rows it names and drops the rows none of whose disjuncts still holds, and a
//! `move-in` event marks it true again before the newly matching rows arrive (`is_move_in`
//! inserts). An update whose tags change lists the old ones in `removed_tags`.
//!
//! Slots are hashed with a secret salt kept with the shape, so a tag tells nothing about values
//! the shape does not send (a column left out of `columns` stays unknown) and stays the same for
//! as long as the shape's handle lives.

use crate::shape::{json_str, PendingMessage, RowChange, ShapeFilter, Standing};
use ferrite_where::{Conditions, Position, SubquerySets};
use sha2::{Digest, Sha256};
use std::fmt::Write as _;

/// Renders a relational shape's messages (see the module documentation).
pub struct Tagger<'a> {
    filter: &'a ShapeFilter,
    conditions: &'a Conditions,
    salt: &'a str,
}

/// A move event's pattern: a position and the slot of the value that moved.
pub type Pattern = (usize, String);

impl<'a> Tagger<'a> {
    /// The tagger of `filter`, whose slots are hashed with `salt`; `None` for a plain shape.
    pub fn new(filter: &'a ShapeFilter, salt: &'a str) -> Option<Tagger<'a>> {
        Some(Tagger { conditions: filter.conditions.as_ref()?, filter, salt })
    }

    /// The conditions tags are made of.
    pub fn conditions(&self) -> &Conditions {
        self.conditions
    }

    /// The slot of compared values `values` (`None`: NULL): a hex hash, never containing `/`.
    pub fn slot(&self, values: &[Option<&str>]) -> String {
        let mut h = Sha256::new();
        h.update(self.salt.as_bytes());
        for v in values {
            match v {
                None => h.update([0u8]),
                Some(v) => {
                    h.update([1u8]);
                    h.update((v.len() as u64).to_le_bytes());
                    h.update(v.as_bytes());
                }
            }
        }
        let digest = h.finalize();
        let mut out = String::with_capacity(32);
        for b in &digest[..16] {
            let _ = write!(out, "{b:02x}");
        }
        out
    }

    /// The row's tags: one per disjunct, in order.
    pub fn tags(&self, row: &[Option<String>]) -> Vec<String> {
        let slots: Vec<String> = self
            .conditions
            .positions()
            .iter()
            .map(|p| match p {
                Position::Plain(_) => "1".to_string(),
                Position::Subquery { columns, .. } => {
                    let values: Vec<Option<&str>> =
                        columns.iter().map(|&c| row.get(c).and_then(|v| v.as_deref())).collect();
                    self.slot(&values)
                }
            })
            .collect();
        self.conditions
            .disjuncts()
            .iter()
            .map(|d| {
                let parts: Vec<&str> =
                    (0..slots.len()).map(|p| if d.contains(&p) { slots[p].as_str() } else { "" }).collect();
                parts.join("/")
            })
            .collect()
    }

    /// `,"tags":[…],"active_conditions":[…]` (and `removed_tags` when given) for a row.
    /// Nothing for a shape without subqueries (one that reads the clock): no tags to track.
    fn headers(&self, tags: &[String], active: &[bool], removed: &[String], move_in: bool) -> String {
        if !self.conditions.has_subqueries() {
            return String::new();
        }
        let mut s = String::with_capacity(64 + tags.len() * 40);
        if move_in {
            s.push_str(",\"is_move_in\":true");
        }
        s.push_str(",\"tags\":");
        push_strings(&mut s, tags);
        if !removed.is_empty() {
            s.push_str(",\"removed_tags\":");
            push_strings(&mut s, removed);
        }
        s.push_str(",\"active_conditions\":[");
        for (i, a) in active.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            s.push_str(if *a { "true" } else { "false" });
        }
        s.push(']');
        s
    }

    /// An insert message for a row read from Postgres rather than the stream: a row of the
    /// initial snapshot, or (`move_in`) of a move-in.
    pub fn row(&self, row: &[Option<String>], sets: &dyn SubquerySets, move_in: bool) -> String {
        let active = self.conditions.active(row, sets);
        self.filter.row_message(row, &self.headers(&self.tags(row), &active, &[], move_in))
    }

    /// What the clock did to `row` (unchanged itself) between two instants whose worlds are
    /// `before` and `after` ([`SubquerySets::now`]): a delete when it left the shape, an
    /// insert when it entered, an update (key columns and the new `active_conditions`) when it
    /// stays for other reasons; `None` when nothing a client holds changed.
    pub fn clock_change(
        &self,
        row: &[Option<String>],
        before: &dyn SubquerySets,
        after: &dyn SubquerySets,
    ) -> Option<String> {
        let was = self.conditions.active(row, before);
        let is = self.conditions.active(row, after);
        let tags = self.tags(row);
        let f = self.filter;
        match (self.conditions.holds(&was), self.conditions.holds(&is)) {
            (true, false) => {
                Some(f.untimed_message("delete", row, f.delete_columns(), &self.headers(&tags, &was, &[], false)))
            }
            (false, true) => Some(f.untimed_message("insert", row, &f.selected, &self.headers(&tags, &is, &[], false))),
            (true, true) if was != is => {
                Some(f.untimed_message("update", row, &f.key_columns, &self.headers(&tags, &is, &[], false)))
            }
            _ => None,
        }
    }

    /// Converts change number `index` of a transaction into 0, 1 or 2 messages, judging whether
    /// the row was and is in the shape while the subqueries' results are `sets` (the results as
    /// the shape's clients know them).
    pub fn convert(
        &self,
        change: RowChange<'_>,
        index: usize,
        lsn: u64,
        xid: u32,
        sets: &dyn SubquerySets,
    ) -> Vec<PendingMessage> {
        let judge = |row: &[Option<String>]| {
            let active = self.conditions.active(row, sets);
            Standing { holds: self.conditions.holds(&active), tags: self.tags(row), active }
        };
        let headers = |s: &Standing, removed: &[String]| self.headers(&s.tags, &s.active, removed, false);
        self.filter.convert_judged(change, index, lsn, xid, judge, headers)
    }
}

/// A `move-out` or `move-in` event: `{"headers":{"event":…,"patterns":[{"pos":…,"value":…}]}}`,
/// with the transaction that caused it (`txid`) when there is one.
pub fn move_event(kind: MoveKind, patterns: &[Pattern], txid: Option<u32>) -> String {
    let mut s = String::with_capacity(48 + patterns.len() * 48);
    let _ = write!(s, "{{\"headers\":{{\"event\":\"{}\",\"patterns\":[", kind.name());
    for (i, (pos, value)) in patterns.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        let _ = write!(s, "{{\"pos\":{pos},\"value\":{}}}", json_str(value));
    }
    s.push(']');
    if let Some(x) = txid {
        let _ = write!(s, ",\"txids\":[{x}]");
    }
    s.push_str("}}");
    s
}

/// Which way rows move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MoveKind {
    /// A position became false for the rows with these values.
    Out,
    /// A position became true for them; the rows follow.
    In,
}

impl MoveKind {
    fn name(self) -> &'static str {
        match self {
            MoveKind::Out => "move-out",
            MoveKind::In => "move-in",
        }
    }
}

fn push_strings(out: &mut String, items: &[String]) {
    out.push('[');
    for (i, t) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&json_str(t));
    }
    out.push(']');
}

#[cfg(test)]
mod tests;
