//! Routes each row change to the shapes it may concern.
//!
//! Shapes whose where clause pins a column to constants (`col = c`, `col IN (…)`) are found
//! through a hash index on that column's text value, so the cost of routing a change does not grow
//! with the number of such shapes. Other shapes on the table are candidates for every change; the
//! shape's own filter then decides.

use std::collections::HashMap;
use std::hash::Hash;

/// The shapes of one table, indexed.
#[derive(Debug)]
pub struct TableRoutes<S> {
    /// Shapes that are candidates for every change of the table.
    unindexed: Vec<S>,
    /// column index → column text value → shapes.
    index: HashMap<usize, HashMap<String, Vec<S>>>,
    /// Shapes on the table that are routed elsewhere (relational shapes, by the values of
    /// their subqueries: [`crate::shapes::value_index`]); listed for schema checks only.
    passive: Vec<S>,
    count: usize,
}

impl<S> Default for TableRoutes<S> {
    fn default() -> Self {
        TableRoutes { unindexed: vec![], index: HashMap::new(), passive: vec![], count: 0 }
    }
}

impl<S: Clone + Eq + Hash + Ord> TableRoutes<S> {
    /// Adds a shape, indexed under `term` (column, values) when it has one.
    pub fn add(&mut self, shape: S, term: Option<(usize, Vec<String>)>) {
        self.count += 1;
        match term {
            Some((col, values)) => {
                let by_value = self.index.entry(col).or_default();
                for v in values {
                    by_value.entry(v).or_default().push(shape.clone());
                }
            }
            None => self.unindexed.push(shape),
        }
    }

    /// Adds a shape that is never a candidate here (it is routed elsewhere) but counts as one of
    /// the table's shapes ([`TableRoutes::shapes`]).
    pub fn add_passive(&mut self, shape: S) {
        self.count += 1;
        self.passive.push(shape);
    }

    /// Removes a shape wherever it is.
    pub fn remove(&mut self, shape: &S) {
        let before = self.unindexed.len() + self.passive.len();
        self.unindexed.retain(|s| s != shape);
        self.passive.retain(|s| s != shape);
        let mut removed = before != self.unindexed.len() + self.passive.len();
        for by_value in self.index.values_mut() {
            by_value.retain(|_, shapes| {
                let n = shapes.len();
                shapes.retain(|s| s != shape);
                removed |= n != shapes.len();
                !shapes.is_empty()
            });
        }
        self.index.retain(|_, m| !m.is_empty());
        if removed {
            self.count -= 1;
        }
    }

    /// Number of shapes on the table.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.count
    }

    /// True when no shape is left.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Every shape on the table (each once).
    pub fn shapes(&self) -> impl Iterator<Item = &S> {
        let mut seen = std::collections::HashSet::new();
        self.unindexed
            .iter()
            .chain(self.passive.iter())
            .chain(self.index.values().flat_map(|m| m.values().flatten()))
            .filter(move |s| seen.insert((*s).clone()))
    }

    /// The shapes a change with these row versions may match (each at most once, sorted).
    pub fn candidates(&self, rows: &[&[Option<String>]], out: &mut Vec<S>) {
        out.clear();
        out.extend(self.unindexed.iter().cloned());
        for (col, by_value) in &self.index {
            for row in rows {
                if let Some(Some(v)) = row.get(*col) {
                    if let Some(shapes) = by_value.get(v.as_str()) {
                        out.extend(shapes.iter().cloned());
                    }
                }
            }
        }
        if out.len() > 1 {
            out.sort_unstable();
            out.dedup();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(vals: &[Option<&str>]) -> Vec<Option<String>> {
        vals.iter().map(|v| v.map(String::from)).collect()
    }

    #[test]
    fn finds_indexed_and_unindexed_candidates() {
        let mut t = TableRoutes::default();
        t.add(1u32, Some((0, vec!["a".into()])));
        t.add(2, Some((0, vec!["b".into(), "c".into()])));
        t.add(3, None);
        t.add(4, Some((1, vec!["x".into()])));
        let mut out = vec![];
        let r = row(&[Some("c"), Some("x")]);
        t.candidates(&[&r], &mut out);
        assert_eq!(out, vec![2, 3, 4]);
        let old = row(&[Some("a"), None]);
        t.candidates(&[&old, &r], &mut out);
        assert_eq!(out, vec![1, 2, 3, 4]);
        t.remove(&2);
        t.candidates(&[&r], &mut out);
        assert_eq!(out, vec![3, 4]);
        assert_eq!(t.len(), 3);
        t.remove(&2);
        assert_eq!(t.len(), 3);
    }
}
