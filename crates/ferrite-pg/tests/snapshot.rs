//! Reading a shape's rows in a snapshot, against a real server: the messages Postgres renders
//! carry the same keys the replication path computes ([`row_key`]), names with quotes and
//! slashes survive (they are bound, not pasted), subsets order, page and count, and a committed
//! snapshot leaves the connection as it found it.

mod common;

use ferrite_core::shape::{ShapeDefinition, ShapeFilter};
use ferrite_pg::connect::connect;
use ferrite_pg::introspect::load_table;
use ferrite_pg::row_query::{OrderBy, RowQuery, SubsetQuery};
use ferrite_pg::snapshot::{RowCount, Snapshot};
use ferrite_protocol::key::row_key;
use ferrite_protocol::relation::QualifiedName;
use ferrite_where::WhereClause;
use serde_json::{json, Value};
use std::sync::Arc;

const SCHEMA: &str = r#"
CREATE SCHEMA "a.b";
CREATE TABLE "a.b"."it's ""odd""/t" (id text PRIMARY KEY, "na'me""" text, n int);
INSERT INTO "a.b"."it's ""odd""/t" VALUES ('k/1', 'o''neil', 1), ('k2', NULL, 2), ('k3', 'x\y', 3);
"#;

fn filter(table: &ferrite_protocol::schema::TableSchema, where_sql: Option<&str>) -> ShapeFilter {
    let def = ShapeDefinition::of_table(table.name.clone(), where_sql);
    ShapeFilter::compile(&def, Arc::new(table.clone())).unwrap()
}

async fn all(snapshot: &Snapshot<'_>, query: &RowQuery) -> Vec<Value> {
    let mut rows = snapshot.rows(query).await.unwrap();
    let mut out = vec![];
    while let Some(json) = rows.next().await.unwrap() {
        out.push(serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {json}")));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shape_and_subset_rows_in_one_snapshot() {
    let (_cluster, url) = common::cluster_with_db("snap");
    let client = connect(&url).await.unwrap();
    client.batch_execute(SCHEMA).await.unwrap();
    let name = QualifiedName::new("a.b", "it's \"odd\"/t");
    let table = load_table(&client, &name).await.unwrap().expect("the table");
    let shape = filter(&table, Some("n < 10"));

    let snapshot = Snapshot::begin(&client, None).await.unwrap();
    let info = snapshot.info().clone();
    assert!(info.xmin <= info.xmax && info.wal_lsn > 0, "{info:?}");
    let mut rows = all(&snapshot, &RowQuery::shape(&shape)).await;
    rows.sort_by_key(|m| m["value"]["n"].as_str().unwrap().to_string());
    assert_eq!(rows.len(), 3);
    for m in &rows {
        let v = &m["value"];
        let values: Vec<Option<String>> =
            ["id", "na'me\"", "n"].iter().map(|c| v[c].as_str().map(String::from)).collect();
        assert_eq!(m["key"].as_str().unwrap(), row_key(&table, &values), "{m}");
        assert_eq!(m["headers"], json!({"operation": "insert", "relation": ["a.b", "it's \"odd\"/t"]}));
    }
    assert_eq!(rows[0]["key"], "\"a..b\".\"it's \"odd\"//t\"/\"k//1\"");
    assert_eq!(rows[0]["value"], json!({"id": "k/1", "na'me\"": "o'neil", "n": "1"}));
    assert_eq!(rows[1]["value"], json!({"id": "k2", "na'me\"": null, "n": "2"}));
    assert_eq!(rows[2]["value"]["na'me\""], "x\\y");

    // A subset in the same snapshot: the shape's clause and its own, ordered and paged, marked.
    let subset = SubsetQuery {
        where_clause: Some(WhereClause::compile("n > 1", &Default::default(), &table).unwrap()),
        order_by: vec![OrderBy { column: 2, descending: true, nulls_first: None }],
        limit: Some(5),
        offset: Some(1),
    };
    let query = RowQuery::subset(&shape, &subset, 42);
    let got = all(&snapshot, &query).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["value"]["id"], "k2", "n = 3 skipped by the offset");
    assert_eq!(got[0]["headers"]["snapshot_mark"], 42);
    assert_eq!(
        snapshot.count(&query, 100).await.unwrap(),
        RowCount { rows: 1, bytes: serde_json::to_string(&got[0]).unwrap().len() as u64 }
    );
    // The count stops one row past the bound it is given.
    let everything = RowQuery::subset(&shape, &SubsetQuery::default(), 1);
    assert_eq!(snapshot.count(&everything, 1).await.unwrap().rows, 2);

    // Rows committed after the snapshot began are not in it.
    let other = connect(&url).await.unwrap();
    other.batch_execute(r#"INSERT INTO "a.b"."it's ""odd""/t" VALUES ('k4', 'late', 4)"#).await.unwrap();
    assert_eq!(all(&snapshot, &RowQuery::shape(&shape)).await.len(), 3);
    snapshot.commit().await.unwrap();
    let isolation: String =
        client.query_one("SELECT current_setting('transaction_isolation')", &[]).await.unwrap().get(0);
    assert_eq!(isolation, "read committed", "the snapshot's transaction is over");
}
