//! Property test of relational shapes against Postgres: a membership schema (teams, members,
//! tags, items; items and members cascade from their team; team keys integers or text by seed),
//! random data, shapes with every
//! supported form of subquery (IN with params, tuples, NOT IN, EXISTS and NOT EXISTS, several
//! subqueries combined with AND/OR/NOT and plain predicates, nested subqueries), and random
//! batches of changes:
//! memberships toggled (also 0 → 1 → 0 inside one transaction), roles and primary keys changed,
//! rows re-parented, NULLs, a team deleted with its memberships and items in one cascade, an
//! inner table truncated. After every batch each shape, materialised by a tag-tracking reader
//! (move-out/move-in events applied as `@tanstack/electric-db-collection` does), equals `SELECT
//! … WHERE …` on Postgres. Some shapes are created in the middle of the churn.
//!
//! Seeded and replayable: `FERRITE_RELATIONAL_SEED=<n>` replays a run,
//! `FERRITE_RELATIONAL_CASES=<n>` runs more seeds (default 3), `FERRITE_RELATIONAL_BATCHES=<n>`
//! more batches per seed (default 12).

use crate::common::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::time::Duration;

/// The schema; a team's key is `{key}`, `int` or `text` by seed (team `i` is `i` or `'t<i>'`), so
/// results and moves are exercised over numbers and over strings.
const SCHEMA: &str = "
    CREATE TABLE teams (id {key} PRIMARY KEY, public boolean NOT NULL, kind text);
    CREATE TABLE members (team_id {key} NOT NULL REFERENCES teams ON DELETE CASCADE, user_id text NOT NULL,
                          role text, PRIMARY KEY (team_id, user_id));
    CREATE TABLE tags (id int PRIMARY KEY, item_id int NOT NULL, tag text);
    CREATE TABLE items (id int PRIMARY KEY, team_id {key} NOT NULL REFERENCES teams ON DELETE CASCADE,
                        owner text, name text, n int);";

/// How team keys are written: as integers or as text.
#[derive(Clone, Copy)]
struct Keys {
    text: bool,
}

impl Keys {
    fn sql_type(self) -> &'static str {
        if self.text {
            "text"
        } else {
            "int"
        }
    }

    /// Team `i` as a literal.
    fn team(self, i: i64) -> String {
        if self.text {
            format!("'t{i}'")
        } else {
            i.to_string()
        }
    }

    /// Team number `expr` (SQL) as a key expression.
    fn team_expr(self, expr: &str) -> String {
        if self.text {
            format!("('t' || ({expr}))")
        } else {
            format!("({expr})")
        }
    }
}

/// Shapes on `items`: the where clause and the same clause with its params written in, for the
/// oracle.
const SHAPES: &[(&str, Option<&str>)] = &[
    ("team_id IN (SELECT team_id FROM members WHERE user_id = $1)", Some("u1")),
    ("team_id IN (SELECT team_id FROM members WHERE user_id = 'u2' AND role <> 'viewer') AND n > 2", None),
    ("NOT EXISTS (SELECT 1 FROM members m WHERE m.team_id = items.team_id AND m.role = 'owner')", None),
    ("(team_id, owner) IN (SELECT team_id, user_id FROM members)", None),
    ("owner IN (SELECT user_id FROM members WHERE team_id = {T1}) OR team_id IN (SELECT id FROM teams WHERE public)", None),
    (
        "NOT (team_id IN (SELECT id FROM teams WHERE kind = 'a')) AND (name LIKE 'x%' OR id IN (SELECT item_id FROM tags WHERE tag = 't1'))",
        None,
    ),
    ("EXISTS (SELECT 1 FROM tags t WHERE t.item_id = items.id AND t.tag IS NULL) OR n IS NULL", None),
    ("team_id NOT IN (SELECT team_id FROM members WHERE user_id = 'u3') AND owner IS NOT NULL", None),
    // Nested: through a second table, correlated inside, and negated.
    ("team_id IN (SELECT id FROM teams WHERE public AND id IN (SELECT team_id FROM members WHERE user_id = $1))", Some("u2")),
    ("id IN (SELECT item_id FROM tags WHERE EXISTS (SELECT 1 FROM members m WHERE m.user_id = tags.tag)) OR n = 1", None),
    (
        "NOT (team_id IN (SELECT id FROM teams WHERE kind = 'a' AND id IN (SELECT team_id FROM members WHERE role = 'owner')))",
        None,
    ),
    // On the shape's own table: the items of teams where u1 owns an item.
    ("team_id IN (SELECT team_id FROM items WHERE owner = 'u1')", None),
];

const USERS: &[&str] = &["u1", "u2", "u3", "u4"];

fn user(rng: &mut StdRng) -> String {
    USERS[rng.gen_range(0..USERS.len())].to_string()
}

fn opt_user(rng: &mut StdRng) -> String {
    if rng.gen_bool(0.2) {
        "NULL".into()
    } else {
        format!("'{}'", user(rng))
    }
}

fn role(rng: &mut StdRng) -> &'static str {
    ["'owner'", "'editor'", "'viewer'", "NULL"][rng.gen_range(0..4)]
}

/// One random statement.
fn statement(rng: &mut StdRng, next_id: &mut i32, keys: Keys) -> String {
    let team = keys.team(rng.gen_range(1..=6));
    let item = rng.gen_range(1..=*next_id);
    match rng.gen_range(0..17) {
        0 | 1 => format!(
            "INSERT INTO members SELECT {team}, '{}', {} WHERE EXISTS (SELECT 1 FROM teams WHERE id = {team}) ON CONFLICT DO NOTHING",
            user(rng),
            role(rng)
        ),
        2 | 3 => format!("DELETE FROM members WHERE team_id = {team} AND user_id = '{}'", user(rng)),
        4 => {
            let u = user(rng);
            format!(
                "INSERT INTO members SELECT {team}, '{u}', 'editor' WHERE EXISTS (SELECT 1 FROM teams WHERE id = {team}) ON CONFLICT DO NOTHING; \
                 DELETE FROM members WHERE team_id = {team} AND user_id = '{u}'"
            )
        }
        5 => format!("UPDATE members SET role = {} WHERE team_id = {team}", role(rng)),
        6 => format!(
            "UPDATE members SET user_id = '{}' WHERE team_id = {team} AND user_id = '{}' \
             AND NOT EXISTS (SELECT 1 FROM members WHERE team_id = {team} AND user_id = 'u4')",
            "u4",
            user(rng)
        ),
        7 | 8 => {
            *next_id += 1;
            format!(
                "INSERT INTO items SELECT {}, {team}, {}, '{}', {} WHERE EXISTS (SELECT 1 FROM teams WHERE id = {team})",
                *next_id,
                opt_user(rng),
                ["x1", "y", "x2", "z"][rng.gen_range(0..4)],
                if rng.gen_bool(0.2) { "NULL".into() } else { rng.gen_range(0..6).to_string() }
            )
        }
        9 => format!(
            "UPDATE items SET team_id = {team} WHERE id = {item} AND EXISTS (SELECT 1 FROM teams WHERE id = {team})"
        ),
        10 => format!("UPDATE items SET owner = {}, n = {} WHERE id = {item}", opt_user(rng), rng.gen_range(0..6)),
        11 => format!("DELETE FROM items WHERE id = {item}"),
        12 => {
            *next_id += 1;
            format!("UPDATE items SET id = {} WHERE id = {item}", *next_id)
        }
        13 => format!(
            "UPDATE teams SET public = NOT public, kind = {} WHERE id = {team}",
            ["'a'", "'b'", "NULL"][rng.gen_range(0..3)]
        ),
        14 => {
            if rng.gen_bool(0.5) {
                format!("DELETE FROM teams WHERE id = {team}")
            } else {
                format!("INSERT INTO teams VALUES ({team}, {}, 'a') ON CONFLICT DO NOTHING", rng.gen_bool(0.5))
            }
        }
        15 => {
            *next_id += 1;
            format!(
                "INSERT INTO tags VALUES ({}, {item}, {}); UPDATE tags SET tag = {} WHERE item_id = {}",
                *next_id,
                ["'t1'", "'t2'", "NULL", "'u1'", "'u3'"][rng.gen_range(0..5)],
                ["'t1'", "NULL", "'u2'"][rng.gen_range(0..3)],
                rng.gen_range(1..=*next_id)
            )
        }
        _ => {
            if rng.gen_bool(0.15) {
                ["TRUNCATE members", "TRUNCATE tags"][rng.gen_range(0..2)].to_string()
            } else {
                format!("DELETE FROM tags WHERE item_id = {item}")
            }
        }
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relational_shapes_equal_postgres_after_every_batch() {
    let seeds: Vec<u64> = match std::env::var("FERRITE_RELATIONAL_SEED").ok().and_then(|v| v.parse().ok()) {
        Some(seed) => vec![seed],
        None => (0..env_u64("FERRITE_RELATIONAL_CASES", 3)).map(|i| 1000 + i).collect(),
    };
    let batches = env_u64("FERRITE_RELATIONAL_BATCHES", 12);
    let (mut ins, mut outs) = (0, 0);
    for seed in seeds {
        let (i, o) = run(seed, batches).await;
        ins += i;
        outs += o;
    }
    // Not vacuous: rows moved both ways through events, not only through inserts and deletes.
    assert!(ins > 0 && outs > 0, "{ins} move-ins, {outs} move-outs");
}

/// One seed; returns how many move-in and move-out events its shapes received.
async fn run(seed: u64, batches: u64) -> (usize, usize) {
    let mut rng = StdRng::seed_from_u64(seed);
    let keys = Keys { text: seed % 2 == 1 };
    let db = TestDb::new().await;
    let c = db.client().await;
    c.batch_execute(&SCHEMA.replace("{key}", keys.sql_type())).await.unwrap();
    let mut next_id = 30;
    let mut setup = vec![format!(
        "INSERT INTO teams SELECT {}, i % 2 = 0, CASE WHEN i % 3 = 0 THEN 'a' ELSE 'b' END FROM generate_series(1, 6) i",
        keys.team_expr("i")
    )];
    for _ in 0..12 {
        setup.push(statement(&mut rng, &mut next_id, keys));
    }
    setup.push(format!(
        "INSERT INTO items SELECT i, {team}, CASE WHEN i % 5 = 0 THEN NULL ELSE 'u' || (1 + i % 4) END, \
         CASE WHEN i % 3 = 0 THEN 'x' || i ELSE 'y' END, CASE WHEN i % 7 = 0 THEN NULL ELSE i % 6 END \
         FROM generate_series(1, {next_id}) i WHERE EXISTS (SELECT 1 FROM teams WHERE id = {team}) \
         ON CONFLICT DO NOTHING",
        team = keys.team_expr("1 + i % 6")
    ));
    setup.push("INSERT INTO tags SELECT i, i, CASE WHEN i % 2 = 0 THEN 't1' END FROM generate_series(1, 10) i ON CONFLICT DO NOTHING".into());
    for sql in &setup {
        c.batch_execute(sql).await.unwrap_or_else(|e| panic!("seed {seed}: {sql}: {e:?}"));
    }
    let s = TestServer::start(&db).await;
    let shapes: Vec<(String, Option<&str>)> =
        SHAPES.iter().map(|(c, p)| (c.replace("{T1}", &keys.team(1)), *p)).collect();
    let reader = |i: usize| {
        let (clause, param) = (shapes[i].0.as_str(), shapes[i].1);
        let mut params = vec![("table", "items"), ("where", clause)];
        if let Some(p) = param {
            params.push(("params[1]", p));
        }
        (i, ShapeReader::new(&s.base, &params))
    };
    // Half the shapes from the start, the rest created during the churn.
    let mut readers: Vec<(usize, ShapeReader)> = (0..SHAPES.len()).filter(|i| i % 2 == 0).map(reader).collect();
    for batch in 0..batches {
        if batch == batches / 3 {
            readers.extend((0..SHAPES.len()).filter(|i| i % 2 == 1).map(reader));
        }
        let n = rng.gen_range(1..=5);
        let statements: Vec<String> = (0..n).map(|_| statement(&mut rng, &mut next_id, keys)).collect();
        let sql = if rng.gen_bool(0.5) {
            format!("BEGIN; {}; COMMIT;", statements.join("; "))
        } else {
            statements.join("; ")
        };
        c.batch_execute(&sql).await.unwrap_or_else(|e| panic!("seed {seed}: {sql}: {e:?}"));
        for (i, r) in readers.iter_mut() {
            let (clause, param) = (shapes[*i].0.as_str(), shapes[*i].1);
            let oracle_clause = match param {
                Some(p) => clause.replace("$1", &format!("'{p}'")),
                None => clause.to_string(),
            };
            let expected = oracle(&c, "items", &["id", "team_id", "owner", "name", "n"], &oracle_clause).await;
            r.live_until(Duration::from_secs(30), |r| r.sorted_rows() == expected).await;
            assert_same_rows(
                &r.sorted_rows(),
                &expected,
                &format!("seed {seed}, batch {batch}, shape {clause}: {sql}"),
            );
        }
    }
    let count = |kind: &str| readers.iter().flat_map(|(_, r)| &r.log).filter(|m| m["headers"]["event"] == kind).count();
    let (ins, outs) = (count("move-in"), count("move-out"));
    eprintln!("seed {seed}: {batches} batches, {ins} move-in and {outs} move-out events");
    (ins, outs)
}
