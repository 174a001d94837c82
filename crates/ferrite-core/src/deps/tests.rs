//! Dependency nodes against a model: after any sequence of transactions, the node's values are
//! exactly those of the rows a plain recomputation puts in the result, and each transaction's
//! delta is the difference between the value sets before and after it.

use super::*;
use ferrite_protocol::relation::QualifiedName;
use ferrite_protocol::schema::{Column, TableSchema, TypeKind};
use ferrite_where::subquery::NoSets;
use ferrite_where::{Catalog, WhereClause};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// A catalog of one table.
struct One(Arc<TableSchema>);

impl Catalog for One {
    fn table(&self, name: &QualifiedName) -> Option<Arc<TableSchema>> {
        (*name == self.0.name).then(|| self.0.clone())
    }
}

/// `members(id int4 pk, team int4, role text)` and a clause over `items(id, team)` whose
/// subquery selects the teams of members that are not viewers.
fn query() -> Subquery {
    let column = |name: &str, ty: &str, pk: Option<usize>| Column {
        name: name.into(),
        type_oid: 0,
        type_name: ty.into(),
        base_type_name: ty.into(),
        dims: 0,
        kind: TypeKind::Base,
        typmod: -1,
        pk_index: pk,
        not_null: pk.is_some(),
    };
    let members = Arc::new(TableSchema {
        oid: 1,
        name: QualifiedName::new("public", "members"),
        columns: vec![column("id", "int4", Some(0)), column("team", "int4", None), column("role", "text", None)],
    });
    let items = TableSchema {
        oid: 2,
        name: QualifiedName::new("public", "items"),
        columns: vec![column("id", "int4", Some(0)), column("team", "int4", None)],
    };
    let clause = WhereClause::compile_with(
        "team IN (SELECT team FROM members WHERE role <> 'viewer')",
        &BTreeMap::new(),
        &items,
        &One(members),
    )
    .unwrap();
    clause.subqueries()[0].clone()
}

fn member(team: Option<i32>, role: &str) -> Vec<Option<String>> {
    vec![Some("0".into()), team.map(|t| t.to_string()), Some(role.into())]
}

fn value(team: i32) -> Projected {
    vec![Some(team.to_string())]
}

#[test]
fn a_transaction_reports_values_that_entered_and_left() {
    let q = query();
    let mut node = DependencyNode::new();
    node.seed("m1".into(), value(1));
    assert_eq!(node.finish_transaction(), NodeDelta::default(), "seeding is not a change");

    // A second member of team 1 moves nothing; a first member of team 2 moves team 2 in.
    node.apply(&q, RowChange::Upsert { key: "m2", row: &member(Some(1), "owner") }, &NoSets).unwrap();
    node.apply(&q, RowChange::Upsert { key: "m3", row: &member(Some(2), "editor") }, &NoSets).unwrap();
    assert_eq!(node.finish_transaction(), NodeDelta { entered: vec![value(2)], left: vec![] });
    assert!(node.lookup(&["2"]).contains && node.lookup(&["1"]).contains && !node.lookup(&["3"]).contains);

    // Becoming a viewer takes the row out of the result; team 2 has no one left.
    node.apply(&q, RowChange::Upsert { key: "m3", row: &member(Some(2), "viewer") }, &NoSets).unwrap();
    node.apply(&q, RowChange::Delete { key: "m1" }, &NoSets).unwrap();
    assert_eq!(node.finish_transaction(), NodeDelta { entered: vec![], left: vec![value(2)] }, "m2 keeps team 1");

    // Joined and left inside one transaction: nothing moved.
    node.apply(&q, RowChange::Upsert { key: "m4", row: &member(Some(5), "owner") }, &NoSets).unwrap();
    node.apply(&q, RowChange::Delete { key: "m4" }, &NoSets).unwrap();
    assert!(node.finish_transaction().is_empty());

    // A NULL team is a NULL in the result; a truncate empties it.
    node.apply(&q, RowChange::Upsert { key: "m5", row: &member(None, "owner") }, &NoSets).unwrap();
    node.finish_transaction();
    assert!(node.nulls().has_null);
    node.clear();
    let d = node.finish_transaction();
    assert_eq!(d.left, vec![vec![None], value(1)]);
    assert!(node.is_empty() && node.nulls().empty && !node.nulls().has_null);
}

#[test]
fn node_sets_answer_a_clause_with_subqueries() {
    let q = query();
    let items =
        TableSchema { oid: 2, name: QualifiedName::new("public", "items"), columns: q.table.columns[..2].to_vec() };
    let clause = WhereClause::compile_with(
        "team NOT IN (SELECT team FROM members)",
        &BTreeMap::new(),
        &items,
        &One(q.table.clone()),
    )
    .unwrap();
    let mut node = DependencyNode::new();
    let item = |team: &str| vec![Some("9".to_string()), Some(team.to_string())];
    assert!(clause.matches_with(&item("1"), &NodeSets(vec![&node])).unwrap(), "NOT IN an empty result");
    node.seed("m1".into(), value(1));
    assert!(!clause.matches_with(&item("1"), &NodeSets(vec![&node])).unwrap());
    assert!(clause.matches_with(&item("2"), &NodeSets(vec![&node])).unwrap());
    node.seed("m2".into(), vec![None]);
    assert!(!clause.matches_with(&item("2"), &NodeSets(vec![&node])).unwrap(), "a NULL in the result");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Transactions of steps: (member key, Some((team or NULL, viewer?)) to upsert, or None to
    /// delete).
    #[test]
    fn deltas_and_values_match_a_recomputation(
        transactions in prop::collection::vec(
            prop::collection::vec((0u8..6, prop::option::of((prop::option::of(0i32..4), any::<bool>()))), 0..8),
            0..12,
        )
    ) {
        let q = query();
        let mut node = DependencyNode::new();
        let mut model: BTreeMap<u8, (Option<i32>, bool)> = BTreeMap::new();
        let values = |m: &BTreeMap<u8, (Option<i32>, bool)>| -> BTreeSet<Projected> {
            m.values().filter(|(_, viewer)| !viewer).map(|(t, _)| vec![t.map(|t| t.to_string())]).collect()
        };
        for txn in transactions {
            let before = values(&model);
            for (key, change) in &txn {
                let k = format!("m{key}");
                match change {
                    Some((team, viewer)) => {
                        let row = member(*team, if *viewer { "viewer" } else { "owner" });
                        node.apply(&q, RowChange::Upsert { key: &k, row: &row }, &NoSets).unwrap();
                        model.insert(*key, (*team, *viewer));
                    }
                    None => {
                        node.apply(&q, RowChange::Delete { key: &k }, &NoSets).unwrap();
                        model.remove(key);
                    }
                }
            }
            let after = values(&model);
            let delta = node.finish_transaction();
            let entered: Vec<Projected> = after.difference(&before).cloned().collect();
            let left: Vec<Projected> = before.difference(&after).cloned().collect();
            prop_assert_eq!(&delta.entered, &entered);
            prop_assert_eq!(&delta.left, &left);
            for team in 0..4 {
                let t = team.to_string();
                prop_assert_eq!(node.lookup(&[&t]).contains, after.contains(&value(team)));
            }
            prop_assert_eq!(node.nulls().has_null, after.contains(&vec![None]));
            prop_assert_eq!(node.len(), model.values().filter(|(_, viewer)| !viewer).count());
        }
    }
}
