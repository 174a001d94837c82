//! What a client's replica of a shape holds after applying the shape's messages in order — the
//! rules both clients follow, in memory — so the server can compute the convergence digest
//! ([`crate::digest`]) of a shape whose rows also leave through `move-out` events (relational
//! shapes, include-tree members) or the clock (time windows), where it keeps no digest as it
//! goes: it replays the shape's log up to a client's offset and digests the result.
//!
//! The rules, as `ferrite-client` (SQLite) and `@ferrite/client` (IndexedDB) apply them:
//!
//! - `insert` replaces the row of its key with the message's values (an insert of a row already
//!   held, e.g. a move-in's, is an update);
//! - `update` merges the message's values into the row held; it changes nothing when no row of
//!   that key is held;
//! - `delete` removes the row;
//! - a change carrying `tags` records them and its `active_conditions` for the row
//!   ([`RowTags`]); a `move-out` or `move-in` event sets a position of the rows whose tags hold
//!   the pattern's value there, and a move-out removes the rows none of whose alternatives still
//!   holds;
//! - control messages change no row.
//!
//! Rows are identified by the message's `key` (the server's rendering of the primary key, which
//! is what the clients' own keys are made of).

use crate::digest::{Digest, RowHasher};
use crate::messages::ShapeMessage;
use crate::tags::RowTags;
use std::collections::{HashMap, HashSet};

/// A replica of one shape, rebuilt from its messages (see the module documentation).
#[derive(Debug, Default)]
pub struct Replay {
    /// The shape's columns, in the order rows store their values.
    columns: Vec<String>,
    rows: HashMap<Box<str>, Held>,
    /// Rows by tag slot `(position, value)`: what a move event names.
    slots: HashMap<(usize, Box<str>), HashSet<Box<str>>>,
}

#[derive(Debug)]
struct Held {
    /// One per column of [`Replay::columns`] (`None`: NULL).
    values: Box<[Option<Box<str>>]>,
    tags: Option<RowTags>,
}

/// A message the replay cannot apply: the log is not what a shape's log holds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a shape message cannot be replayed: {0}")]
pub struct ReplayError(String);

impl Replay {
    /// An empty replica of a shape whose messages carry `columns`.
    pub fn new(columns: Vec<String>) -> Replay {
        Replay { columns, ..Replay::default() }
    }

    /// Rows held.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether no row is held.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Applies one message (see the module documentation for the rules).
    pub fn apply(&mut self, m: &ShapeMessage<'_>) -> Result<(), ReplayError> {
        let h = &m.headers;
        if let (Some(event), Some(patterns)) = (h.event.as_deref(), h.patterns.as_ref()) {
            let move_in = match event {
                "move-in" => true,
                "move-out" => false,
                other => return Err(ReplayError(format!("unknown event {other:?}"))),
            };
            for p in patterns {
                self.apply_move(p.pos, &p.value, move_in);
            }
            return Ok(());
        }
        let Some(op) = h.operation.as_deref() else { return Ok(()) };
        let key = m.key.as_deref().ok_or_else(|| ReplayError(format!("an {op} without a key")))?;
        let value = m.value.as_ref();
        match op {
            "insert" => {
                let value = value.ok_or_else(|| ReplayError("an insert without a value".into()))?;
                let values =
                    self.columns.iter().map(|c| value.get(c.as_str()).cloned().flatten().map(|v| v.0.into())).collect();
                let old = self.rows.insert(key.into(), Held { values, tags: None });
                if let Some(old) = old {
                    self.unindex(key, old.tags.as_ref());
                }
            }
            "update" => {
                let Some(held) = self.rows.get_mut(key) else { return Ok(()) };
                for (i, c) in self.columns.iter().enumerate() {
                    if let Some(v) = value.and_then(|v| v.get(c.as_str())) {
                        held.values[i] = v.as_ref().map(|v| v.0.as_ref().into());
                    }
                }
            }
            "delete" => {
                if let Some(old) = self.rows.remove(key) {
                    self.unindex(key, old.tags.as_ref());
                }
                return Ok(());
            }
            other => return Err(ReplayError(format!("unknown operation {other:?}"))),
        }
        if let Some(tags) = &h.tags {
            let state = RowTags { tags: tags.clone(), active: h.active_conditions.clone().unwrap_or_default() };
            let old = self.rows.get_mut(key).and_then(|held| held.tags.replace(state.clone()));
            self.unindex(key, old.as_ref());
            if self.rows.contains_key(key) {
                for (pos, value) in state.slots() {
                    self.slots.entry((pos, value.into())).or_default().insert(key.into());
                }
            }
        }
        Ok(())
    }

    /// The digest of the rows held, hashed by `hasher` (built over [`Replay::new`]'s columns in
    /// the same order).
    pub fn digest(&self, hasher: &RowHasher) -> Digest {
        let mut digest = Digest::default();
        for held in self.rows.values() {
            digest.add(hasher.hash_texts(|i| held.values.get(i).and_then(|v| v.as_deref())));
        }
        digest
    }

    fn apply_move(&mut self, pos: usize, value: &str, move_in: bool) {
        let Some(keys) = self.slots.get(&(pos, Box::from(value))) else { return };
        let mut leaving = Vec::new();
        for key in keys {
            let Some(held) = self.rows.get_mut(key) else { continue };
            let Some(tags) = held.tags.as_mut() else { continue };
            if tags.apply_move(pos, value, move_in) && !move_in && !tags.holds() {
                leaving.push(key.clone());
            }
        }
        for key in leaving {
            if let Some(old) = self.rows.remove(&key) {
                self.unindex(&key, old.tags.as_ref());
            }
        }
    }

    fn unindex(&mut self, key: &str, tags: Option<&RowTags>) {
        for (pos, value) in tags.map(RowTags::slots).unwrap_or_default() {
            let slot = (pos, Box::from(value.as_str()));
            if let Some(keys) = self.slots.get_mut(&slot) {
                keys.remove(key);
                if keys.is_empty() {
                    self.slots.remove(&slot);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::{ColumnKind, ValueKind};

    fn kinds() -> RowHasher {
        let k = |value| ColumnKind { value, array: false };
        RowHasher::new([("id", k(ValueKind::Number)), ("team", k(ValueKind::Text)), ("title", k(ValueKind::Text))])
    }

    fn replay(messages: &[&str]) -> Replay {
        let mut r = Replay::new(vec!["id".into(), "team".into(), "title".into()]);
        for m in messages {
            r.apply(&serde_json::from_str(m).unwrap()).unwrap();
        }
        r
    }

    /// The digest of exactly these rows (id, team, title), as a client holding them computes it.
    fn digest_of(rows: &[(&str, &str, Option<&str>)]) -> Digest {
        let hasher = kinds();
        let mut d = Digest::default();
        for (id, team, title) in rows {
            let values = [Some(*id), Some(*team), *title];
            d.add(hasher.hash_texts(|i| values[i]));
        }
        d
    }

    fn insert(id: u32, team: &str, title: &str, slot: &str, active: bool) -> String {
        format!(
            r#"{{"key":"\"public\".\"t\"/\"{id}\"","value":{{"id":"{id}","team":"{team}","title":"{title}"}},"headers":{{"operation":"insert","tags":["{slot}/1"],"active_conditions":[{active},true]}}}}"#
        )
    }

    #[test]
    fn updates_merge_into_held_rows_and_deletes_remove_them() {
        let r = replay(&[
            &insert(1, "a", "one", "ha", true),
            &insert(2, "a", "two", "ha", true),
            r#"{"key":"\"public\".\"t\"/\"1\"","value":{"id":"1","title":null},"headers":{"operation":"update"}}"#,
            r#"{"key":"\"public\".\"t\"/\"2\"","value":{"id":"2"},"headers":{"operation":"delete"}}"#,
            // An update of a row not held changes nothing.
            r#"{"key":"\"public\".\"t\"/\"3\"","value":{"id":"3","title":"x"},"headers":{"operation":"update"}}"#,
            r#"{"headers":{"control":"up-to-date","global_last_seen_lsn":"9"}}"#,
        ]);
        assert_eq!(r.len(), 1);
        assert_eq!(r.digest(&kinds()), digest_of(&[("1", "a", None)]));
    }

    #[test]
    fn a_move_out_removes_the_rows_it_leaves_without_an_alternative_and_a_move_in_restores_conditions() {
        let out = r#"{"headers":{"event":"move-out","patterns":[{"pos":0,"value":"ha"}]}}"#;
        let back = r#"{"headers":{"event":"move-in","patterns":[{"pos":0,"value":"hb"}]}}"#;
        let r = replay(&[
            &insert(1, "a", "one", "ha", true),
            &insert(2, "b", "two", "hb", true),
            // Row 3 is in through a second alternative that does not use position 0.
            r#"{"key":"\"public\".\"t\"/\"3\"","value":{"id":"3","team":"a","title":"three"},"headers":{"operation":"insert","tags":["ha/1","/1"],"active_conditions":[true,true]}}"#,
            out,
            r#"{"headers":{"event":"move-out","patterns":[{"pos":0,"value":"hb"}]}}"#,
            back,
        ]);
        assert_eq!(r.digest(&kinds()), digest_of(&[("3", "a", Some("three"))]), "rows 1 and 2 left, 3 stays");
        // A row whose tags changed (team a → b) is named by its new slot only.
        let r = replay(&[
            &insert(1, "a", "one", "ha", true),
            r#"{"key":"\"public\".\"t\"/\"1\"","value":{"id":"1","team":"b"},"headers":{"operation":"update","tags":["hb/1"],"removed_tags":["ha/1"],"active_conditions":[true,true]}}"#,
            out,
        ]);
        assert_eq!(r.digest(&kinds()), digest_of(&[("1", "b", Some("one"))]));
        // A move-in re-inserting a held row replaces it (and its tags).
        let r = replay(&[&insert(1, "a", "one", "ha", true), &insert(1, "a", "uno", "hc", true), out]);
        assert_eq!(r.digest(&kinds()), digest_of(&[("1", "a", Some("uno"))]));
    }

    #[test]
    fn messages_that_are_not_a_shape_log_are_refused() {
        let mut r = Replay::new(vec!["id".into()]);
        for bad in [
            r#"{"value":{"id":"1"},"headers":{"operation":"insert"}}"#,
            r#"{"key":"k","headers":{"operation":"insert"}}"#,
            r#"{"key":"k","value":{"id":"1"},"headers":{"operation":"upsert"}}"#,
            r#"{"headers":{"event":"move-sideways","patterns":[]}}"#,
        ] {
            assert!(r.apply(&serde_json::from_str(bad).unwrap()).is_err(), "{bad}");
        }
        assert!(r.is_empty());
    }
}
