//! Routing of a table's changes to the relational shapes they concern, by value: a shape whose
//! every alternative needs some `col IN (subquery)` to hold can only hold a row whose value of
//! `col` is in that subquery's result as the shape knows it (`loaded`) or is owed rows for
//! (`pending`). Those values are indexed, so a change costs in proportion to the shapes that
//! hold or may hold its row, not to every shape on the table. While its initial snapshot is read
//! (its values not known yet) a shape gets every change of the table.

use super::shape::ShapeRef;
use ferrite_core::deps::Projected;
use parking_lot::Mutex;
use std::collections::{BTreeSet, HashMap};

/// One value entering or leaving a shape's index: the outer columns compared, the value, and
/// whether it is now indexed.
pub type IndexChange = (Vec<usize>, Projected, bool);

#[derive(Default)]
struct TableIndex {
    /// Shapes reading their initial snapshot: candidates for every change.
    loading: BTreeSet<ShapeRef>,
    /// Outer columns → value → shapes.
    by_value: HashMap<Vec<usize>, HashMap<Projected, BTreeSet<ShapeRef>>>,
}

/// The value index of every table (see the module documentation).
#[derive(Default)]
pub struct ValueIndex(Mutex<HashMap<u32, TableIndex>>);

impl ValueIndex {
    /// Makes `shape` (on table `oid`) a candidate for every change until [`ValueIndex::loaded`].
    pub fn add_loading(&self, oid: u32, shape: &ShapeRef) {
        self.0.lock().entry(oid).or_default().loading.insert(shape.clone());
    }

    /// The shape's values are indexed: it stops getting every change.
    pub fn loaded(&self, oid: u32, shape: &ShapeRef) {
        if let Some(t) = self.0.lock().get_mut(&oid) {
            t.loading.remove(shape);
        }
    }

    /// Applies a shape's index changes.
    pub fn apply(&self, oid: u32, shape: &ShapeRef, changes: Vec<IndexChange>) {
        if changes.is_empty() {
            return;
        }
        let mut tables = self.0.lock();
        let t = tables.entry(oid).or_default();
        for (columns, value, indexed) in changes {
            let by_value = t.by_value.entry(columns.clone()).or_default();
            if indexed {
                by_value.entry(value).or_default().insert(shape.clone());
            } else if let Some(shapes) = by_value.get_mut(&value) {
                shapes.remove(shape);
                if shapes.is_empty() {
                    by_value.remove(&value);
                }
            }
        }
    }

    /// Forgets a shape (removed).
    pub fn remove(&self, oid: u32, shape: &ShapeRef) {
        let mut tables = self.0.lock();
        let Some(t) = tables.get_mut(&oid) else { return };
        t.loading.remove(shape);
        for by_value in t.by_value.values_mut() {
            by_value.retain(|_, shapes| {
                shapes.remove(shape);
                !shapes.is_empty()
            });
        }
        t.by_value.retain(|_, m| !m.is_empty());
        if t.loading.is_empty() && t.by_value.is_empty() {
            tables.remove(&oid);
        }
    }

    /// Adds to `out` the shapes a change of table `oid` with these row versions may concern.
    pub fn candidates(&self, oid: u32, rows: &[&[Option<String>]], out: &mut Vec<ShapeRef>) {
        let tables = self.0.lock();
        let Some(t) = tables.get(&oid) else { return };
        out.extend(t.loading.iter().cloned());
        for (columns, by_value) in &t.by_value {
            for row in rows {
                let value: Projected = columns.iter().map(|&c| row.get(c).cloned().flatten()).collect();
                if value.iter().any(Option::is_none) {
                    continue;
                }
                if let Some(shapes) = by_value.get(&value) {
                    out.extend(shapes.iter().cloned());
                }
            }
        }
    }
}
