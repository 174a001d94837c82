//! Tags, active conditions and move events of relational shapes.

use super::*;
use crate::shape::{ShapeDefinition, ShapeTables};
use ferrite_protocol::relation::QualifiedName;
use ferrite_protocol::schema::{Column, TableSchema, TypeKind};
use ferrite_where::Membership;
use std::sync::Arc;

fn table(oid: u32, name: &str, cols: &[&str]) -> Arc<TableSchema> {
    Arc::new(TableSchema {
        oid,
        name: QualifiedName::new("public", name),
        columns: cols
            .iter()
            .enumerate()
            .map(|(i, c)| Column {
                name: c.to_string(),
                type_oid: 25,
                type_name: if i == 0 || c.ends_with("_id") { "int4" } else { "text" }.into(),
                base_type_name: if i == 0 || c.ends_with("_id") { "int4" } else { "text" }.into(),
                dims: 0,
                kind: TypeKind::Base,
                typmod: -1,
                pk_index: (i == 0).then_some(0),
                not_null: i == 0,
            })
            .collect(),
    })
}

/// `steps(id, pipeline_id, title)` shaped by `where_sql` over `pipelines(id, team)`.
fn filter(where_sql: &str) -> ShapeFilter {
    let steps = table(1, "steps", &["id", "pipeline_id", "title"]);
    let pipelines = table(2, "pipelines", &["id", "team"]);
    let def = ShapeDefinition::of_table(steps.name.clone(), Some(where_sql));
    let tables = ShapeTables::new([pipelines], &def);
    ShapeFilter::compile_with(&def, steps, &tables).unwrap()
}

/// The one subquery's result: these pipeline ids.
struct Pipelines(Vec<&'static str>);

impl SubquerySets for Pipelines {
    fn lookup(&self, _: usize, key: &[&str]) -> Membership {
        let rows: Vec<Vec<Option<&str>>> = self.0.iter().map(|v| vec![Some(*v)]).collect();
        Membership::of_rows(&rows, Some(key))
    }

    fn nulls(&self, _: usize) -> Membership {
        let rows: Vec<Vec<Option<&str>>> = self.0.iter().map(|v| vec![Some(*v)]).collect();
        Membership::of_rows(&rows, None)
    }
}

fn row(id: &str, pipeline: &str, title: &str) -> Vec<Option<String>> {
    vec![Some(id.into()), Some(pipeline.into()), Some(title.into())]
}

fn json(m: &PendingMessage) -> serde_json::Value {
    serde_json::from_str(&m.finish(true)).unwrap()
}

const CLAUSE: &str = "pipeline_id IN (SELECT id FROM pipelines WHERE team = 'a') OR title = 'x'";

#[test]
fn tags_have_a_slot_per_position_and_one_tag_per_disjunct() {
    let f = filter(CLAUSE);
    let t = Tagger::new(&f, "salt").unwrap();
    let h7 = t.slot(&[Some("7")]);
    assert_eq!(h7.len(), 32);
    assert_ne!(h7, t.slot(&[Some("8")]));
    assert_ne!(h7, t.slot(&[None]));
    assert_ne!(h7, Tagger::new(&f, "other salt").unwrap().slot(&[Some("7")]), "the salt keeps values opaque");
    assert_eq!(t.tags(&row("1", "7", "y")), vec![format!("{h7}/"), "/1".to_string()]);
    let v: serde_json::Value = serde_json::from_str(&t.row(&row("1", "7", "y"), &Pipelines(vec!["7"]), true)).unwrap();
    assert_eq!(v["headers"]["is_move_in"], true);
    assert_eq!(v["headers"]["active_conditions"], serde_json::json!([true, false]));
    assert!(v["headers"].get("lsn").is_none() && v["headers"].get("txids").is_none());
    // A plain shape has no tagger.
    assert!(Tagger::new(&filter("title = 'x'"), "salt").is_none());
}

#[test]
fn changes_say_why_the_row_is_in_the_shape() {
    let f = filter(CLAUSE);
    let t = Tagger::new(&f, "salt").unwrap();
    let sets = Pipelines(vec!["7"]);
    // Not in the shape: nothing.
    assert!(t.convert(RowChange::Insert { new: &row("1", "8", "y") }, 0, 10, 5, &sets).is_empty());
    let ins = json(&t.convert(RowChange::Insert { new: &row("1", "7", "x") }, 0, 10, 5, &sets)[0]);
    assert_eq!(ins["headers"]["operation"], "insert");
    assert_eq!(ins["headers"]["active_conditions"], serde_json::json!([true, true]));
    // Only the title changes, and with it one reason for the row to be here: an update that
    // carries the new conditions.
    let (old, new) = (row("1", "7", "x"), row("1", "7", "y"));
    let upd = json(&t.convert(RowChange::Update { old: &old, new: &new }, 1, 10, 5, &sets)[0]);
    assert_eq!(upd["headers"]["operation"], "update");
    assert_eq!(upd["headers"]["active_conditions"], serde_json::json!([true, false]));
    assert!(upd["headers"].get("removed_tags").is_none());
    // Re-parented to another pipeline while still matching by title: the old tag is removed.
    let (old, new) = (row("1", "7", "x"), row("1", "9", "x"));
    let upd = json(&t.convert(RowChange::Update { old: &old, new: &new }, 1, 10, 5, &sets)[0]);
    assert_eq!(upd["headers"]["removed_tags"], serde_json::json!([format!("{}/", t.slot(&[Some("7")]))]));
    assert_eq!(upd["headers"]["tags"][0], format!("{}/", t.slot(&[Some("9")])));
    // Out of the shape: a delete with the tags it had.
    let (old, new) = (row("1", "7", "y"), row("1", "8", "y"));
    let del = json(&t.convert(RowChange::Update { old: &old, new: &new }, 1, 10, 5, &sets)[0]);
    assert_eq!(del["headers"]["operation"], "delete");
    // Nothing the shape knows changed: nothing sent.
    let (old, new) = (row("1", "7", "y"), row("1", "7", "y"));
    assert!(t.convert(RowChange::Update { old: &old, new: &new }, 1, 10, 5, &sets).is_empty());
}

#[test]
fn move_events_name_positions_and_values() {
    let e: serde_json::Value =
        serde_json::from_str(&move_event(MoveKind::Out, &[(0, "ab".into()), (2, "cd".into())], Some(812))).unwrap();
    assert_eq!(
        e,
        serde_json::json!({"headers": {"event": "move-out", "patterns": [{"pos": 0, "value": "ab"}, {"pos": 2, "value": "cd"}], "txids": [812]}})
    );
    let e: serde_json::Value = serde_json::from_str(&move_event(MoveKind::In, &[(1, "x".into())], None)).unwrap();
    assert_eq!(e, serde_json::json!({"headers": {"event": "move-in", "patterns": [{"pos": 1, "value": "x"}]}}));
}
