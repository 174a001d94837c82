//! Why a row is in a relational shape, as a client tracks it (Electric 1.7's tags).
//!
//! A relational shape's where clause is an OR of alternatives over *positions* (conditions). Each
//! change carries the row's `tags` — one per alternative, `/`-joined *slots*, one per position:
//! empty when the position is not part of that alternative, otherwise a value naming why it holds
//! (an opaque hash of the row's compared values for a subquery test, `1` for a plain condition) —
//! and its `active_conditions`, which positions hold now. A `move-out` event `{pos, value}` makes
//! position `pos` false on the rows one of whose tags holds `value` there; a row none of whose
//! alternatives then has every position true leaves the shape. A `move-in` event makes it true
//! again on the rows it names (the rows newly in the shape follow as inserts).
//!
//! The server needs none of this (it renders the messages, `ferrite-core::tags`); the Rust client
//! keeps a [`RowTags`] per row, and the web client the same in TypeScript.

/// A row's tags and active conditions.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct RowTags {
    /// One per alternative of the where clause.
    pub tags: Vec<String>,
    /// One per position.
    pub active: Vec<bool>,
}

impl RowTags {
    /// The distinct `(position, value)` slots of the row's tags that are part of an alternative.
    pub fn slots(&self) -> Vec<(usize, String)> {
        let mut out: Vec<(usize, String)> = Vec::new();
        for tag in &self.tags {
            for (pos, slot) in tag.split('/').enumerate() {
                if !slot.is_empty() && !out.iter().any(|(p, v)| *p == pos && v == slot) {
                    out.push((pos, slot.to_string()));
                }
            }
        }
        out
    }

    /// Whether the row is in the shape: one of its alternatives has every position true.
    pub fn holds(&self) -> bool {
        self.tags.iter().any(|tag| {
            tag.split('/')
                .enumerate()
                .all(|(pos, slot)| slot.is_empty() || self.active.get(pos).copied().unwrap_or(false))
        })
    }

    /// Whether one of the row's tags holds `value` at position `pos`.
    pub fn has(&self, pos: usize, value: &str) -> bool {
        self.tags.iter().any(|tag| tag.split('/').nth(pos) == Some(value))
    }

    /// Sets position `pos` (true: a `move-in`, false: a `move-out`) when one of the row's tags
    /// holds `value` there; returns whether it did.
    pub fn apply_move(&mut self, pos: usize, value: &str, active: bool) -> bool {
        if !self.has(pos, value) {
            return false;
        }
        if self.active.len() <= pos {
            self.active.resize(pos + 1, false);
        }
        self.active[pos] = active;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(tags: &[&str], active: &[bool]) -> RowTags {
        RowTags { tags: tags.iter().map(|t| t.to_string()).collect(), active: active.to_vec() }
    }

    #[test]
    fn a_row_stays_while_one_alternative_holds_whole() {
        // (x IN S AND plain) OR y IN T: positions 0, 1, 2; alternatives {0, 1} and {2}.
        let mut r = row(&["a/1/", "//b"], &[true, true, true]);
        assert!(r.holds());
        assert_eq!(r.slots(), vec![(0, "a".to_string()), (1, "1".to_string()), (2, "b".to_string())]);
        assert!(r.apply_move(0, "a", false));
        assert!(r.holds(), "the second alternative still holds");
        assert!(!r.apply_move(2, "c", false), "another value: not this row");
        assert!(r.apply_move(2, "b", false));
        assert!(!r.holds());
        assert!(r.apply_move(0, "a", true));
        assert!(r.holds());
    }

    #[test]
    fn a_flat_shape_row_without_tags_never_holds_by_tags() {
        assert!(!RowTags::default().holds());
    }
}
