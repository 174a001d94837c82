//! Catalog introspection against a real server, for a table with many kinds of columns.

mod common;

use ferrite_pg::connect::connect;
use ferrite_pg::introspect::{load_table, load_table_by_oid};
use ferrite_protocol::relation::QualifiedName;
use ferrite_protocol::schema::{Column, TypeKind};

const SCHEMA: &str = r#"
CREATE SCHEMA app;
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN posint AS int4 CHECK (VALUE > 0);
CREATE DOMAIN small_posint AS posint CHECK (VALUE < 100);
CREATE DOMAIN int_list AS int4[];
CREATE TYPE pair AS (a int, b text);
CREATE TABLE app."Items" (
    a int2,
    b int4 NOT NULL,
    c int8,
    price numeric(8,5),
    code varchar(10),
    flag char(3),
    tags text[],
    grid int4[][],
    id uuid,
    doc jsonb,
    feeling mood,
    qty posint,
    tiny small_posint,
    qtys posint[],
    list int_list,
    at timestamptz(3),
    span interval,
    short_span interval minute to second(2),
    pr pair,
    gone int,
    doubled int4 GENERATED ALWAYS AS (b * 2) STORED,
    "Weird ""Name""" text,
    PRIMARY KEY (c, a)
);
ALTER TABLE app."Items" DROP COLUMN gone;
CREATE VIEW app.items_view AS SELECT * FROM app."Items";
CREATE TABLE measurements (id int8, at date, v float8, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
CREATE TABLE measurements_2024 PARTITION OF measurements FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE TABLE no_pk (x text, y int);
"#;

async fn type_oid(c: &tokio_postgres::Client, name: &str) -> u32 {
    c.query_one(&format!("SELECT '{name}'::regtype::oid"), &[]).await.unwrap().get(0)
}

#[allow(clippy::too_many_arguments)]
fn col(
    name: &str,
    type_oid: u32,
    type_name: &str,
    base: &str,
    dims: u32,
    kind: TypeKind,
    typmod: i32,
    pk_index: Option<usize>,
    not_null: bool,
) -> Column {
    Column {
        name: name.into(),
        type_oid,
        type_name: type_name.into(),
        base_type_name: base.into(),
        dims,
        kind,
        typmod,
        pk_index,
        not_null,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn introspects_many_column_kinds() {
    let (_cluster, url) = common::cluster_with_db("introspect");
    let c = connect(&url).await.unwrap();
    c.batch_execute(SCHEMA).await.unwrap();

    let name = QualifiedName::new("app", "Items");
    let t = load_table(&c, &name).await.unwrap().expect("table exists");
    assert_eq!(t.name, name);
    let rel_oid: u32 = c.query_one("SELECT 'app.\"Items\"'::regclass::oid", &[]).await.unwrap().get(0);
    assert_eq!(t.oid, rel_oid);

    use TypeKind::*;
    let expected = vec![
        col("a", type_oid(&c, "int2").await, "int2", "int2", 0, Base, -1, Some(1), true),
        col("b", type_oid(&c, "int4").await, "int4", "int4", 0, Base, -1, None, true),
        col("c", type_oid(&c, "int8").await, "int8", "int8", 0, Base, -1, Some(0), true),
        col("price", type_oid(&c, "numeric").await, "numeric", "numeric", 0, Base, (8 << 16 | 5) + 4, None, false),
        col("code", type_oid(&c, "varchar").await, "varchar", "varchar", 0, Base, 14, None, false),
        col("flag", type_oid(&c, "bpchar").await, "bpchar", "bpchar", 0, Base, 7, None, false),
        col("tags", type_oid(&c, "text[]").await, "text", "text", 1, Base, -1, None, false),
        col("grid", type_oid(&c, "int4[]").await, "int4", "int4", 2, Base, -1, None, false),
        col("id", type_oid(&c, "uuid").await, "uuid", "uuid", 0, Base, -1, None, false),
        col("doc", type_oid(&c, "jsonb").await, "jsonb", "jsonb", 0, Base, -1, None, false),
        col("feeling", type_oid(&c, "mood").await, "mood", "mood", 0, Enum, -1, None, false),
        col("qty", type_oid(&c, "posint").await, "posint", "int4", 0, Domain, -1, None, false),
        col("tiny", type_oid(&c, "small_posint").await, "small_posint", "int4", 0, Domain, -1, None, false),
        col("qtys", type_oid(&c, "posint[]").await, "posint", "int4", 1, Domain, -1, None, false),
        col("list", type_oid(&c, "int_list").await, "int_list", "int4", 1, Domain, -1, None, false),
        col("at", type_oid(&c, "timestamptz").await, "timestamptz", "timestamptz", 0, Base, 3, None, false),
        col("span", type_oid(&c, "interval").await, "interval", "interval", 0, Base, -1, None, false),
        col(
            "short_span",
            type_oid(&c, "interval").await,
            "interval",
            "interval",
            0,
            Base,
            ((1 << 11 | 1 << 12) << 16) | 2,
            None,
            false,
        ),
        col("pr", type_oid(&c, "pair").await, "pair", "pair", 0, Composite, -1, None, false),
        // `gone` (dropped) and `doubled` (generated; never in pgoutput tuples) are left out.
        col("Weird \"Name\"", type_oid(&c, "text").await, "text", "text", 0, Base, -1, None, false),
    ];
    assert_eq!(t.columns.len(), expected.len(), "{:#?}", t.columns);
    for (got, want) in t.columns.iter().zip(&expected) {
        assert_eq!(got, want);
    }
    assert_eq!(t.key_columns(), vec![2, 0]);

    // The electric-schema modifiers derived from the typmods.
    let schema = |i: usize| t.columns[i].electric_schema().to_string();
    assert_eq!(schema(3), r#"{"type":"numeric","precision":8,"scale":5}"#);
    assert_eq!(schema(4), r#"{"type":"varchar","max_length":10}"#);
    assert_eq!(schema(5), r#"{"type":"bpchar","length":3}"#);
    assert_eq!(schema(7), r#"{"type":"int4","dims":2}"#);
    assert_eq!(schema(15), r#"{"type":"timestamptz","precision":3}"#);
    assert_eq!(schema(17), r#"{"type":"interval","precision":2,"fields":"MINUTE TO SECOND"}"#);

    // By oid: the same schema.
    assert_eq!(load_table_by_oid(&c, t.oid).await.unwrap().as_ref(), Some(&t));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_tables_views_and_other_kinds() {
    let (_cluster, url) = common::cluster_with_db("introspect2");
    let c = connect(&url).await.unwrap();
    c.batch_execute(SCHEMA).await.unwrap();

    assert_eq!(load_table(&c, &QualifiedName::new("public", "nope")).await.unwrap(), None);
    assert_eq!(load_table(&c, &QualifiedName::new("app", "items")).await.unwrap(), None, "names are exact");
    assert_eq!(load_table(&c, &QualifiedName::new("app", "items_view")).await.unwrap(), None, "views are not tables");
    assert_eq!(load_table_by_oid(&c, 1).await.unwrap(), None);

    let parted = load_table(&c, &QualifiedName::new("public", "measurements")).await.unwrap().expect("partitioned");
    let names: Vec<_> = parted.columns.iter().map(|c| (c.name.as_str(), c.pk_index)).collect();
    assert_eq!(names, vec![("id", Some(0)), ("at", Some(1)), ("v", None)]);

    let no_pk = load_table(&c, &QualifiedName::new("public", "no_pk")).await.unwrap().unwrap();
    assert!(!no_pk.has_primary_key());
    assert!(no_pk.columns.iter().all(|c| !c.not_null));
}
