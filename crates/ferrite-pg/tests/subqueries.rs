//! Where clauses with subqueries agree with Postgres: for random data (NULLs included) in three
//! tables, each clause's rows — evaluated in Rust from the subqueries' results, as the server
//! will from its dependency nodes — equal what Postgres returns for the clause as printed by
//! `WhereClause::to_sql`. Covers IN, NOT IN, `= ANY`, `<> ALL`, tuples, EXISTS and NOT EXISTS,
//! nesting, OR/NOT/IS UNKNOWN around them, params, and the current time (`now()`,
//! `CURRENT_DATE`, `LOCALTIMESTAMP` with interval arithmetic) read as Postgres's `now()`. `FERRITE_SUBQUERY_ROUNDS` sets how
//! many random data sets are tried (default 12).

mod common;

use ferrite_pg::connect::connect;
use ferrite_pg::introspect::load_table;
use ferrite_protocol::relation::QualifiedName;
use ferrite_protocol::schema::TableSchema;
use ferrite_where::{Catalog, Membership, SubquerySets, WhereClause};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

const SCHEMA: &str = "
CREATE TABLE outer_t (id int PRIMARY KEY, a int, b text, u uuid, ts timestamptz, d date);
CREATE TABLE inner_t (id int PRIMARY KEY, a int8, b varchar, g int, u uuid);
CREATE TABLE deep (id int PRIMARY KEY, g int, flag bool);
";

/// Clauses over `outer_t`, with their params.
const CLAUSES: &[(&str, &[&str])] = &[
    ("a IN (SELECT a FROM inner_t)", &[]),
    ("a NOT IN (SELECT a FROM inner_t WHERE g > 2)", &[]),
    ("a NOT IN (SELECT a FROM inner_t WHERE a IS NOT NULL)", &[]),
    ("(a, b) IN (SELECT a, b FROM inner_t WHERE g <> 1)", &[]),
    ("EXISTS (SELECT 1 FROM inner_t i WHERE i.a = outer_t.a AND i.g = 2)", &[]),
    ("NOT EXISTS (SELECT 1 FROM inner_t WHERE inner_t.b = outer_t.b)", &[]),
    ("EXISTS (SELECT 1 FROM inner_t WHERE outer_t.a = inner_t.a AND inner_t.b = outer_t.b)", &[]),
    ("NOT EXISTS (SELECT 1 FROM inner_t i WHERE i.a = outer_t.a AND i.b = outer_t.b AND i.g <> 3) OR b IS NULL", &[]),
    ("a IN (SELECT a FROM inner_t WHERE g IN (SELECT g FROM deep WHERE flag)) OR b = 'b1'", &[]),
    ("NOT (a IN (SELECT a FROM inner_t WHERE g NOT IN (SELECT g FROM deep))) AND u IS NOT NULL", &[]),
    ("u IN (SELECT u FROM inner_t WHERE b IN (SELECT b FROM outer_t WHERE a > 1))", &[]),
    ("a = ANY (SELECT a FROM inner_t WHERE b LIKE 'b%')", &[]),
    ("a <> ALL (SELECT a FROM inner_t)", &[]),
    ("(a IN (SELECT a FROM inner_t)) IS UNKNOWN", &[]),
    ("b IN (SELECT b FROM inner_t WHERE g = $1) AND a NOT IN (SELECT g FROM deep WHERE flag = $2)", &["2", "true"]),
    ("(a IN (SELECT g FROM deep) OR u NOT IN (SELECT u FROM inner_t)) AND NOT (b NOT IN (SELECT b FROM inner_t))", &[]),
    ("ts > now() - interval '2 days'", &[]),
    ("d = CURRENT_DATE OR d IS NULL", &[]),
    ("ts >= CURRENT_TIMESTAMP - interval '36 hours' AND a IN (SELECT a FROM inner_t WHERE g IS NOT NULL)", &[]),
    ("d < CURRENT_DATE - 1 AND NOT (ts < transaction_timestamp() - $1::interval)", &["3 days"]),
    ("LOCALTIMESTAMP - interval '1 day' < ts", &[]),
];

/// The tables as loaded from Postgres.
struct Tables(HashMap<QualifiedName, Arc<TableSchema>>);

impl Catalog for Tables {
    fn table(&self, name: &QualifiedName) -> Option<Arc<TableSchema>> {
        self.0.get(name).cloned()
    }
}

/// Every table's rows as Postgres text, by table name.
type Data = HashMap<String, Vec<Vec<Option<String>>>>;

/// The results of a clause's subqueries, computed from `Data` (each subquery's own filter
/// evaluated with the results of its nested subqueries).
struct Results(Vec<Vec<Vec<Option<String>>>>);

impl Results {
    fn of(clause: &WhereClause, data: &Data) -> Results {
        Results(
            clause
                .subqueries()
                .iter()
                .map(|q| {
                    let nested = q.filter.as_ref().map(|f| Results::of(f, data));
                    data[&q.table.name.name]
                        .iter()
                        .filter(|row| match (&q.filter, &nested) {
                            (Some(f), Some(n)) => f.matches_with(row, n).expect("evaluates"),
                            _ => true,
                        })
                        .map(|row| q.columns.iter().map(|&i| row[i].clone()).collect())
                        .collect()
                })
                .collect(),
        )
    }
}

impl SubquerySets for Results {
    fn lookup(&self, index: usize, key: &[&str]) -> Membership {
        Membership::of_rows(&self.0[index], Some(key))
    }

    fn nulls(&self, index: usize) -> Membership {
        Membership::of_rows(&self.0[index], None)
    }
}

/// `value`, or (one time in five) NULL.
fn maybe<T>(rng: &mut StdRng, value: impl FnOnce(&mut StdRng) -> T) -> Option<T> {
    let v = value(rng);
    (rng.gen_range(0..5) > 0).then_some(v)
}

/// Fresh random rows in every table (small domains, so values meet; about one in five NULL).
async fn fill(client: &tokio_postgres::Client, rng: &mut StdRng) {
    client.batch_execute("TRUNCATE outer_t, inner_t, deep").await.unwrap();
    let uuid = |n: u8| format!("00000000-0000-0000-0000-00000000000{n}");
    for id in 0..30 {
        let a: Option<i32> = maybe(rng, |rng| rng.gen_range(0..6));
        let b = maybe(rng, |rng| format!("b{}", rng.gen_range(0..4)));
        let u = maybe(rng, |rng| uuid(rng.gen_range(0..4)));
        let hours: Option<i32> = maybe(rng, |rng| rng.gen_range(-48..120));
        let days: Option<i32> = maybe(rng, |rng| rng.gen_range(-2..5));
        client
            .execute(
                "INSERT INTO outer_t VALUES ($1, $2, $3, $4::text::uuid, now() - make_interval(hours => $5), current_date - $6::int)",
                &[&id, &a, &b, &u, &hours, &days],
            )
            .await
            .unwrap();
    }
    for id in 0..rng.gen_range(0..15) {
        let a: Option<i64> = maybe(rng, |rng| rng.gen_range(0..6));
        let b = maybe(rng, |rng| format!("b{}", rng.gen_range(0..4)));
        let g = maybe(rng, |rng| rng.gen_range(0..4));
        let u = maybe(rng, |rng| uuid(rng.gen_range(0..4)));
        client
            .execute("INSERT INTO inner_t VALUES ($1, $2, $3, $4, $5::text::uuid)", &[&id, &a, &b, &g, &u])
            .await
            .unwrap();
    }
    for id in 0..rng.gen_range(0..6) {
        let g = maybe(rng, |rng| rng.gen_range(0..4));
        let flag = maybe(rng, |rng| rng.gen_bool(0.5));
        client.execute("INSERT INTO deep VALUES ($1, $2, $3)", &[&id, &g, &flag]).await.unwrap();
    }
}

/// Every table's rows, each value as Postgres prints it.
async fn load(client: &tokio_postgres::Client, tables: &Tables) -> Data {
    let mut data = Data::new();
    for t in tables.0.values() {
        let cols: Vec<String> = t.columns.iter().map(|c| format!("\"{}\"::text", c.name)).collect();
        let rows = client.query(&format!("SELECT {} FROM {}", cols.join(", "), t.name.quoted()), &[]).await.unwrap();
        let rows = rows.iter().map(|r| (0..t.columns.len()).map(|i| r.get::<_, Option<String>>(i)).collect()).collect();
        data.insert(t.name.name.clone(), rows);
    }
    data
}

/// Creates [`SCHEMA`]; its tables as Postgres has them, and `outer_t`.
async fn schema(client: &tokio_postgres::Client) -> (Tables, Arc<TableSchema>) {
    client.batch_execute(SCHEMA).await.unwrap();
    let mut tables = Tables(HashMap::new());
    for name in ["outer_t", "inner_t", "deep"] {
        let name = QualifiedName::new("public", name);
        let t = load_table(client, &name).await.unwrap().expect("the table");
        tables.0.insert(name, Arc::new(t));
    }
    let outer = tables.0[&QualifiedName::new("public", "outer_t")].clone();
    (tables, outer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subquery_clauses_agree_with_postgres() {
    let (_cluster, url) = common::cluster_with_db("subqueries");
    let client = connect(&url).await.unwrap();
    let (tables, outer) = schema(&client).await;
    let clauses: Vec<WhereClause> = CLAUSES
        .iter()
        .map(|(sql, params)| {
            let params: BTreeMap<String, String> =
                params.iter().enumerate().map(|(i, v)| ((i + 1).to_string(), v.to_string())).collect();
            WhereClause::compile_with(sql, &params, &outer, &tables).unwrap_or_else(|e| panic!("{sql}: {e}"))
        })
        .collect();
    let rounds: u64 = std::env::var("FERRITE_SUBQUERY_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(12);
    let mut matched = 0;
    for seed in 0..rounds {
        let mut rng = StdRng::seed_from_u64(seed);
        fill(&client, &mut rng).await;
        let data = load(&client, &tables).await;
        // One transaction per data set: Postgres's now() stands still in it, and the clauses
        // are evaluated here at that same time.
        client.batch_execute("BEGIN").await.unwrap();
        let now_micros: i64 =
            client.query_one("SELECT (extract(epoch FROM now()) * 1000000)::int8", &[]).await.unwrap().get(0);
        let now = std::time::UNIX_EPOCH + std::time::Duration::from_micros(now_micros as u64);
        for ((sql, _), clause) in CLAUSES.iter().zip(&clauses) {
            let results = Results::of(clause, &data);
            let ours: BTreeSet<String> = data["outer_t"]
                .iter()
                .filter(|row| clause.matches_at(row, &results, now).expect("evaluates"))
                .map(|row| row[0].clone().unwrap())
                .collect();
            let (printed, params) = clause.to_sql(1);
            let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
                params.iter().map(|p| p as &(dyn tokio_postgres::types::ToSql + Sync)).collect();
            let theirs: BTreeSet<String> = client
                .query(&format!("SELECT id::text FROM outer_t WHERE {printed}"), &params)
                .await
                .unwrap_or_else(|e| panic!("{sql} printed as {printed}: {e}"))
                .iter()
                .map(|r| r.get(0))
                .collect();
            assert_eq!(ours, theirs, "seed {seed}: {sql}\nprinted: {printed}");
            matched += ours.len();
        }
        client.batch_execute("COMMIT").await.unwrap();
    }
    assert!(matched > 0, "the clauses matched some rows");
}

/// Time windows as a shape follows them: for the clauses above that read the clock, at random
/// instants (not Postgres's `now()`), the rows Postgres selects with the instant bound as a
/// parameter (`to_sql_at`) equal the rows the clause matches in Rust at that instant; the rows
/// read to move from one instant to a later one (`changing_sql`) include every row whose verdict
/// differs between them; and no row changes its verdict before the next boundary Postgres and
/// the clause find together (`next_change_query`, `next_change_of_text`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_windows_agree_with_postgres() {
    let (_cluster, url) = common::cluster_with_db("windows");
    let client = connect(&url).await.unwrap();
    let (tables, outer) = schema(&client).await;
    let clauses: Vec<(&str, WhereClause)> = CLAUSES
        .iter()
        .filter_map(|(sql, params)| {
            let params: BTreeMap<String, String> =
                params.iter().enumerate().map(|(i, v)| ((i + 1).to_string(), v.to_string())).collect();
            let w = WhereClause::compile_with(sql, &params, &outer, &tables).unwrap();
            (w.reads_time() && w.time_terms().is_ok()).then_some((*sql, w))
        })
        .collect();
    assert!(clauses.len() >= 4, "the time clauses are time windows");
    let query = |sql: String, params: Vec<Option<String>>| {
        let client = &client;
        async move {
            let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
                params.iter().map(|p| p as &(dyn tokio_postgres::types::ToSql + Sync)).collect();
            client.query(&sql, &refs).await.unwrap_or_else(|e| panic!("{sql}: {e}"))
        }
    };
    let rounds: u64 = std::env::var("FERRITE_SUBQUERY_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(12);
    let hour = 3_600_000_000i64;
    let mut changed = 0;
    for seed in 0..rounds {
        let mut rng = StdRng::seed_from_u64(1000 + seed);
        fill(&client, &mut rng).await;
        let data = load(&client, &tables).await;
        let base = ferrite_where::pg_micros(std::time::SystemTime::now()).unwrap();
        for (sql, clause) in &clauses {
            let terms = clause.time_terms().unwrap();
            let results = Results::of(clause, &data);
            let at = |t: i64| ferrite_where::window::system_time(t);
            let verdicts = |t: i64| -> BTreeSet<String> {
                data["outer_t"]
                    .iter()
                    .filter(|row| clause.matches_at(row, &results, at(t)).expect("evaluates"))
                    .map(|row| row[0].clone().unwrap())
                    .collect()
            };
            let from = base + rng.gen_range(-72 * hour..72 * hour) + rng.gen_range(0..hour);
            let to = from + rng.gen_range(0..48 * hour);
            // 1. The snapshot at an instant.
            let (printed, params) = clause.to_sql_at(1, from);
            let theirs: BTreeSet<String> = query(format!("SELECT id::text FROM outer_t WHERE {printed}"), params)
                .await
                .iter()
                .map(|r| r.get(0))
                .collect();
            assert_eq!(verdicts(from), theirs, "seed {seed}: {sql} at {from}");
            // 2. The rows read to move from `from` to `to`.
            let (printed, params) = clause.changing_sql(&terms, 1, from, to);
            let read: BTreeSet<String> = query(format!("SELECT id::text FROM outer_t WHERE {printed}"), params)
                .await
                .iter()
                .map(|r| r.get(0))
                .collect();
            let (a, b) = (verdicts(from), verdicts(to));
            let differ: BTreeSet<String> = a.symmetric_difference(&b).cloned().collect();
            assert!(differ.is_subset(&read), "seed {seed}: {sql} from {from} to {to}: {differ:?} not in {read:?}");
            changed += differ.len();
            // 3. The next boundary.
            let mut due: Option<i64> = None;
            for (i, term) in terms.iter().enumerate() {
                let (value, cond, params) = clause.next_change_query(&terms, i, 1, from).unwrap();
                let rows = query(format!("SELECT (min({value}))::text FROM outer_t WHERE {cond}"), params).await;
                let next = rows[0].get::<_, Option<String>>(0).and_then(|v| term.next_change_of_text(&v, from));
                due = match (due, next) {
                    (Some(x), Some(y)) => Some(x.min(y)),
                    (x, y) => x.or(y),
                };
            }
            match due {
                Some(due) => {
                    assert!(due > from);
                    assert_eq!(verdicts(due - 1), a, "seed {seed}: {sql}: a row changed before the boundary {due}");
                }
                None => {
                    assert_eq!(verdicts(from + 200 * 24 * hour), a, "seed {seed}: {sql}: no boundary, yet a change")
                }
            }
        }
    }
    assert!(changed > 0, "some rows changed between instants");
}
