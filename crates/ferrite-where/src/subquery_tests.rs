//! Unit tests of subqueries: what compiles (and what is refused, with which message), how they
//! print for Postgres, and their three-valued evaluation against given results. Agreement with
//! Postgres on real data is checked by `crates/ferrite-pg/tests/subqueries.rs`.

use super::*;
use ferrite_protocol::relation::QualifiedName;
use ferrite_protocol::schema::{Column, TableSchema, TypeKind};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// A test column: `id` is the primary key, `mood` an enum (shared by the where crate's tests).
pub(crate) fn col(name: &str, ty: &str) -> Column {
    Column {
        name: name.into(),
        type_oid: 0,
        type_name: ty.into(),
        base_type_name: ty.into(),
        dims: 0,
        kind: if ty == "mood" { TypeKind::Enum } else { TypeKind::Base },
        typmod: -1,
        pk_index: if name == "id" { Some(0) } else { None },
        not_null: false,
    }
}

fn table(name: &str, cols: &[(&str, &str)]) -> Arc<TableSchema> {
    Arc::new(TableSchema {
        oid: 1,
        name: QualifiedName::new("public", name),
        columns: cols.iter().map(|(n, t)| col(n, t)).collect(),
    })
}

/// `steps(id, pipeline_id, team_id uuid, name, kind mood)`, `pipelines(id, team_id uuid)`,
/// `team_members(team_id uuid, user_id, role)`, `tags(step_id int8, tag)`, `moods(kind mood)`.
struct Tables(HashMap<QualifiedName, Arc<TableSchema>>);

impl Tables {
    fn new() -> Tables {
        let all = [
            table(
                "steps",
                &[("id", "int4"), ("pipeline_id", "int4"), ("team_id", "uuid"), ("name", "text"), ("kind", "mood")],
            ),
            table("pipelines", &[("id", "int4"), ("team_id", "uuid")]),
            table("team_members", &[("team_id", "uuid"), ("user_id", "text"), ("role", "text")]),
            table("tags", &[("step_id", "int8"), ("tag", "varchar")]),
            table("moods", &[("kind", "mood")]),
        ];
        Tables(all.into_iter().map(|t| (t.name.clone(), t)).collect())
    }

    fn steps(&self) -> Arc<TableSchema> {
        self.0[&QualifiedName::new("public", "steps")].clone()
    }

    /// The same tables with every column declared NOT NULL.
    fn not_null() -> Tables {
        let mut t = Tables::new();
        for table in t.0.values_mut() {
            for c in &mut Arc::make_mut(table).columns {
                c.not_null = true;
            }
        }
        t
    }
}

impl Catalog for Tables {
    fn table(&self, name: &QualifiedName) -> Option<Arc<TableSchema>> {
        self.0.get(name).cloned()
    }
}

fn compile(sql: &str) -> WhereClause {
    let t = Tables::new();
    WhereClause::compile_with(sql, &BTreeMap::new(), &t.steps(), &t).unwrap_or_else(|e| panic!("{sql}: {e}"))
}

fn refused(sql: &str) -> String {
    let t = Tables::new();
    match WhereClause::compile_with(sql, &BTreeMap::new(), &t.steps(), &t) {
        Ok(_) => panic!("{sql} should be refused"),
        Err(e) => e.to_string(),
    }
}

/// Given results: per subquery, its rows (texts of the projected columns, `None` = NULL).
struct Given(Vec<Vec<Vec<Option<&'static str>>>>);

impl SubquerySets for Given {
    fn lookup(&self, index: usize, key: &[&str]) -> Membership {
        Membership::of_rows(&self.0[index], Some(key))
    }

    fn nulls(&self, index: usize) -> Membership {
        Membership::of_rows(&self.0[index], None)
    }
}

/// A steps row: `(id, pipeline_id, team_id, name, kind)`.
fn step(pipeline: Option<&str>, team: Option<&str>) -> Vec<Option<String>> {
    vec![Some("1".into()), pipeline.map(String::from), team.map(String::from), Some("s".into()), Some("happy".into())]
}

const T1: &str = "00000000-0000-0000-0000-000000000001";
const T2: &str = "00000000-0000-0000-0000-000000000002";

#[test]
fn in_subquery_compiles_prints_and_evaluates() {
    let w = compile("team_id IN (SELECT team_id FROM team_members WHERE user_id = 'ann' AND role <> 'viewer')");
    assert_eq!(w.subqueries().len(), 1);
    let q = &w.subqueries()[0];
    assert_eq!(q.table.name, QualifiedName::new("public", "team_members"));
    assert_eq!(q.columns, vec![0]);
    let (sql, params) = w.to_sql(1);
    assert_eq!(
        sql,
        r#"(("team_id") IN (SELECT "team_id" FROM "public"."team_members" WHERE (("user_id" = ($1::text)::text) AND ("role" <> ($2::text)::text))))"#
    );
    assert_eq!(params, vec![Some("ann".to_string()), Some("viewer".to_string())]);
    let sets = Given(vec![vec![vec![Some(T1)]]]);
    assert!(w.matches_with(&step(Some("1"), Some(T1)), &sets).unwrap());
    assert!(!w.matches_with(&step(Some("1"), Some(T2)), &sets).unwrap());
    assert!(!w.matches_with(&step(Some("1"), None), &sets).unwrap());
    // Without the results it cannot be evaluated, rather than guessed.
    assert!(w.matches(&step(Some("1"), Some(T1))).is_err());
}

#[test]
fn not_in_follows_three_valued_logic() {
    let w = compile("team_id NOT IN (SELECT team_id FROM team_members)");
    let (sql, _) = w.to_sql(1);
    assert_eq!(sql, r#"(NOT (("team_id") IN (SELECT "team_id" FROM "public"."team_members")))"#);
    let has = |rows: Vec<Option<&'static str>>| Given(vec![rows.into_iter().map(|v| vec![v]).collect()]);
    // Not in a set without NULLs: true.
    assert!(w.matches_with(&step(None, Some(T2)), &has(vec![Some(T1)])).unwrap());
    // In the set: false.
    assert!(!w.matches_with(&step(None, Some(T1)), &has(vec![Some(T1)])).unwrap());
    // Not in a set that holds a NULL: NULL, so not matched.
    assert!(!w.matches_with(&step(None, Some(T2)), &has(vec![Some(T1), None])).unwrap());
    // A NULL against a non-empty set: NULL; against an empty set: NOT IN is true.
    assert!(!w.matches_with(&step(None, None), &has(vec![Some(T1)])).unwrap());
    assert!(w.matches_with(&step(None, None), &has(vec![])).unwrap());
    // `<> ALL` is the same thing.
    let all = compile("team_id <> ALL (SELECT team_id FROM team_members)");
    assert_eq!(all.to_sql(1).0, sql);
}

#[test]
fn exists_correlated_by_equality_is_in_held_to_true() {
    let w = compile("EXISTS (SELECT 1 FROM team_members m WHERE m.team_id = steps.team_id AND m.user_id = 'ann')");
    let q = &w.subqueries()[0];
    assert_eq!(q.columns, vec![0], "the correlated inner column is the compared one");
    let (sql, _) = w.to_sql(1);
    assert_eq!(
        sql,
        r#"((("team_id") IN (SELECT "team_id" FROM "public"."team_members" WHERE ("user_id" = ($1::text)::text))) IS TRUE)"#
    );
    let not = compile("NOT EXISTS (SELECT 1 FROM team_members WHERE team_members.team_id = steps.team_id)");
    let with_null = Given(vec![vec![vec![Some(T1)], vec![None]]]);
    // EXISTS is never NULL: a NULL outer value finds no row, so NOT EXISTS holds …
    assert!(not.matches_with(&step(None, None), &with_null).unwrap());
    // … and a NULL inside the set does not make it unknown.
    assert!(not.matches_with(&step(None, Some(T2)), &with_null).unwrap());
    assert!(!not.matches_with(&step(None, Some(T1)), &with_null).unwrap());
}

#[test]
fn tuples_nesting_and_combinations() {
    let t = Tables::new();
    let with_param = WhereClause::compile_with(
        "(pipeline_id, team_id) IN (SELECT id, team_id FROM pipelines WHERE team_id IN (SELECT team_id FROM team_members WHERE user_id = $1)) OR name = 'x'",
        &[("1".to_string(), "ann".to_string())].into_iter().collect(),
        &t.steps(),
        &t,
    )
    .unwrap();
    let outer = &with_param.subqueries()[0];
    assert_eq!(outer.columns, vec![0, 1]);
    let inner = outer.filter.as_ref().unwrap();
    assert_eq!(inner.subqueries().len(), 1, "the nested subquery belongs to the inner clause");
    let (sql, params) = with_param.to_sql(1);
    assert!(sql.contains(r#"(("pipeline_id", "team_id") IN (SELECT "id", "team_id" FROM "public"."pipelines" WHERE (("team_id") IN (SELECT "team_id" FROM "public"."team_members" WHERE ("user_id" = ($1::text)::text)))))"#), "{sql}");
    assert_eq!(params, vec![Some("ann".into()), Some("x".into())]);
    let sets = Given(vec![vec![vec![Some("7"), Some(T1)]]]);
    assert!(with_param.matches_with(&step(Some("7"), Some(T1)), &sets).unwrap());
    assert!(!with_param.matches_with(&step(Some("7"), Some(T2)), &sets).unwrap());
    // The subquery of a nested clause has the same key however it is reached.
    let again = compile("team_id IN (SELECT team_id FROM team_members WHERE user_id = 'ann')");
    assert_eq!(again.subqueries()[0].key(), inner.subqueries()[0].key());
}

#[test]
fn and_keeps_both_clauses_subqueries_apart() {
    let a = compile("team_id IN (SELECT team_id FROM team_members WHERE user_id = 'ann')");
    let b = compile("pipeline_id IN (SELECT id FROM pipelines)");
    let both = a.and(b);
    assert_eq!(both.subqueries().len(), 2);
    // Subquery 0: ann's teams; subquery 1: pipelines.
    let sets = Given(vec![vec![vec![Some(T1)]], vec![vec![Some("7")]]]);
    assert!(both.matches_with(&step(Some("7"), Some(T1)), &sets).unwrap());
    assert!(!both.matches_with(&step(Some("8"), Some(T1)), &sets).unwrap());
    assert!(!both.matches_with(&step(Some("7"), Some(T2)), &sets).unwrap());
}

#[test]
fn rules_bind_claims_inside_subqueries() {
    let t = Tables::new();
    let rule = BoundRule {
        sql: "team_id IN (SELECT team_id FROM team_members WHERE user_id = claims.sub)".into(),
        claims: vec![ClaimValue { path: vec!["sub".into()], value: Some("ann') OR (true".into()) }],
    };
    let w = WhereClause::compile_rule_with(&rule, &t.steps(), &t).unwrap();
    let (sql, params) = w.to_sql(1);
    assert!(!sql.contains("OR (true"), "the claim is a bound value: {sql}");
    assert_eq!(params, vec![Some("ann') OR (true".to_string())]);
    // Without a catalog, a rule's subquery is refused as before.
    assert!(WhereClause::compile_rule(&rule, &t.steps()).is_err());
}

#[test]
fn tables_read_lists_every_level() {
    let tables = tables_read(
        "x IN (SELECT a FROM s.one WHERE b IN (SELECT c FROM two)) AND EXISTS (SELECT 1 FROM one o WHERE o.a = x) OR y = 1",
    )
    .unwrap();
    assert_eq!(
        tables,
        vec![QualifiedName::new("s", "one"), QualifiedName::new("public", "two"), QualifiedName::new("public", "one")]
    );
    assert!(tables_read("x = 1").unwrap().is_empty());
}

#[test]
fn unsupported_forms_are_named() {
    let cases = [
        ("team_id IN (SELECT team_id FROM nowhere)", r#"relation "public"."nowhere" does not exist"#),
        ("team_id IN (SELECT DISTINCT team_id FROM team_members)", "no DISTINCT"),
        ("team_id IN (SELECT team_id FROM team_members ORDER BY 1)", "no DISTINCT"),
        ("team_id IN (SELECT team_id FROM team_members LIMIT 1)", "no DISTINCT"),
        ("team_id IN (SELECT m.team_id FROM team_members m, pipelines p)", "exactly one table"),
        ("team_id IN (SELECT team_id, user_id FROM team_members)", "too many columns"),
        ("(team_id, name) IN (SELECT team_id FROM team_members)", "too few columns"),
        ("team_id IN (SELECT lower(user_id) FROM team_members)", "plain columns"),
        ("lower(name) IN (SELECT user_id FROM team_members)", "must be a column"),
        ("name IN (SELECT team_id FROM team_members)", "comparison of text with uuid"),
        ("pipeline_id IN (SELECT team_id FROM pipelines)", "comparison of integer with uuid"),
        ("name > ANY (SELECT user_id FROM team_members)", "only IN (SELECT"),
        ("name = (SELECT user_id FROM team_members)", "only IN (SELECT"),
        ("team_id IN (SELECT team_id FROM team_members WHERE team_members.user_id = steps.name)", "correlated subqueries are only supported as EXISTS"),
        ("EXISTS (SELECT 1 FROM team_members WHERE user_id = 'ann')", "must be correlated"),
        ("NOT (pipeline_id, team_id) IN (SELECT id, team_id FROM pipelines)", "only be used positively"),
        ("((pipeline_id, team_id) IN (SELECT id, team_id FROM pipelines)) IS NOT TRUE", "only be used positively"),
        (
            "team_id IN (SELECT team_id FROM pipelines WHERE team_id IN (SELECT team_id FROM pipelines WHERE team_id IN (SELECT team_id FROM pipelines WHERE team_id IN (SELECT team_id FROM pipelines WHERE team_id IN (SELECT team_id FROM pipelines)))))",
            "nested too deeply",
        ),
    ];
    for (sql, says) in cases {
        let message = refused(sql);
        assert!(message.contains(says), "{sql}: {message}");
    }
    let many: Vec<String> = (0..17).map(|_| "team_id IN (SELECT team_id FROM team_members)".to_string()).collect();
    assert!(refused(&many.join(" OR ")).contains("too many subqueries"));
    // Without a catalog (a plain compile), subqueries are refused as before.
    let t = Tables::new();
    let plain = WhereClause::compile("team_id IN (SELECT team_id FROM team_members)", &BTreeMap::new(), &t.steps());
    assert!(plain.unwrap_err().to_string().contains("subqueries are not supported"));
}

#[test]
fn comparable_families_include_widening_integers_varchar_and_same_enums() {
    let w = compile("id IN (SELECT step_id FROM tags WHERE tag = 'x') AND name IN (SELECT tag FROM tags) AND kind IN (SELECT kind FROM moods)");
    assert_eq!(w.subqueries().len(), 3);
}

#[test]
fn checks_inside_a_write_lock_what_their_subqueries_read() {
    let w = compile(
        "team_id IN (SELECT team_id FROM team_members WHERE role IN (SELECT user_id FROM team_members)) OR EXISTS (SELECT 1 FROM pipelines p WHERE p.id = steps.pipeline_id)",
    );
    let (locking, params) = w.to_sql_locking(1);
    assert_eq!(locking.matches(" FOR SHARE").count(), 3, "every subquery, nested ones too: {locking}");
    assert!(locking.contains(r#"FROM "public"."pipelines" FOR SHARE)) IS TRUE)"#), "{locking}");
    let (plain, plain_params) = w.to_sql(1);
    assert!(!plain.contains("FOR SHARE"));
    assert_eq!(params, plain_params);
}

#[test]
fn the_current_time_is_found_before_compiling_and_read_when_evaluating() {
    for (sql, reads) in [
        ("name = 'x'", false),
        ("now() > '2020-01-01'", true),
        ("team_id IN (SELECT team_id FROM team_members WHERE role = 'x' AND CURRENT_DATE > '2020-01-01')", true),
        ("lower(name) = 'x' OR pg_catalog.now() IS NULL", true),
    ] {
        assert_eq!(reads_current_time(sql).unwrap(), reads, "{sql}");
    }
    // Compiled with a catalog (write rules), the clause reads the time given to it.
    let w = compile("now() - interval '1 day' > '2026-01-01 00:00:00+00' AND CURRENT_DATE = '2026-06-01'");
    assert!(w.reads_time());
    let row = step(None, None);
    let at = |s: &str| {
        let secs = match s {
            "2026-06-01" => 1_780_272_000,
            _ => 1_780_358_400, // 2026-06-02
        };
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs + 3_600)
    };
    assert!(w.matches_at(&row, &subquery::NoSets, at("2026-06-01")).unwrap());
    assert!(!w.matches_at(&row, &subquery::NoSets, at("2026-06-02")).unwrap());
    assert!(w.matches_with(&row, &subquery::NoSets).is_err(), "no time given: an error, not a guess");
    assert_eq!(
        w.to_sql(1).0,
        "(((now() - ($1::text)::interval) > ($2::text)::timestamptz) AND (CURRENT_DATE = ($3::text)::date))"
    );
}

/// Every row, under every combination of results, is in the shape by its conditions exactly when
/// the clause holds for it: the rewrite into disjunctive normal form keeps three-valued logic.
#[test]
fn conditions_agree_with_the_clause() {
    let clauses = [
        "team_id IN (SELECT team_id FROM team_members WHERE user_id = 'ann')",
        "(team_id IN (SELECT team_id FROM team_members) AND name = 's') OR pipeline_id IN (SELECT id FROM pipelines)",
        "NOT (team_id IN (SELECT team_id FROM team_members) OR name <> 's')",
        "NOT (NOT (pipeline_id IN (SELECT id FROM pipelines)) AND (name IS NULL OR team_id IN (SELECT team_id FROM team_members)))",
        "EXISTS (SELECT 1 FROM pipelines p WHERE p.id = steps.pipeline_id) AND NOT EXISTS (SELECT 1 FROM team_members m WHERE m.team_id = steps.team_id)",
        "(pipeline_id, team_id) IN (SELECT id, team_id FROM pipelines) OR name = 'x'",
    ];
    let results: Vec<Vec<Option<&'static str>>> =
        vec![vec![], vec![Some(T1)], vec![Some(T2), Some("1")], vec![Some(T1), Some(T2), Some("1"), Some("2")]];
    let rows = [
        step(Some("1"), Some(T1)),
        step(Some("2"), Some(T2)),
        step(None, Some(T1)),
        step(Some("1"), None),
        vec![Some("3".into()), Some("2".into()), Some(T1.into()), None, None],
        vec![Some("4".into()), Some("1".into()), Some(T2.into()), Some("x".into()), None],
    ];
    // Declared NOT NULL so that NOT IN is accepted; the rows below hold NULLs all the same, to
    // check the rewrite's logic on them.
    let t = Tables::not_null();
    for sql in clauses {
        let w = WhereClause::compile_with(sql, &BTreeMap::new(), &t.steps(), &t).unwrap();
        let conditions = w.conditions(&t.steps()).unwrap().expect("has subqueries");
        for a in &results {
            for b in &results {
                // Each subquery reads the values of its own kind: uuids for teams, ids for pipelines.
                let sets = Given(
                    w.subqueries()
                        .iter()
                        .map(|q| {
                            let pick = if q.table.name.name == "team_members" { a } else { b };
                            let width = q.columns.len();
                            pick.iter()
                                .map(|v| (0..width).map(|i| if i == 0 { *v } else { Some(T1) }).collect())
                                .collect()
                        })
                        .collect(),
                );
                for row in &rows {
                    let active = conditions.active(row, &sets);
                    assert_eq!(
                        conditions.holds(&active),
                        w.matches_with(row, &sets).unwrap(),
                        "{sql} on {row:?} with {:?}",
                        sets.0
                    );
                }
            }
        }
    }
}

#[test]
fn conditions_have_one_position_per_test_and_one_tag_per_disjunct() {
    let t = Tables::new();
    let w = compile(
        "(team_id IN (SELECT team_id FROM team_members) AND name = 'a') OR pipeline_id IN (SELECT id FROM pipelines)",
    );
    let c = w.conditions(&t.steps()).unwrap().unwrap();
    assert_eq!(c.positions().len(), 3);
    assert_eq!(c.disjuncts(), &[vec![0, 1], vec![2]]);
    assert!(matches!(c.positions()[0], Position::Subquery { sub: 0, negated: false, .. }));
    assert!(matches!(c.positions()[1], Position::Plain(_)));
    assert_eq!(c.position_of(1), Some(2));
    // AND over OR distributes; a position shared by two disjuncts stays one position.
    let w = compile(
        "name = 'a' AND (team_id IN (SELECT team_id FROM team_members) OR pipeline_id IN (SELECT id FROM pipelines))",
    );
    let c = w.conditions(&t.steps()).unwrap().unwrap();
    assert_eq!(c.disjuncts(), &[vec![0, 1], vec![0, 2]]);
    // No subqueries: nothing to follow.
    assert!(compile("name = 'a'").conditions(&t.steps()).unwrap().is_none());
}

#[test]
fn conditions_refuse_what_cannot_be_followed_value_by_value() {
    let t = Tables::new();
    let refuse = |sql: &str| compile(sql).conditions(&t.steps()).unwrap_err().to_string();
    assert!(refuse("team_id NOT IN (SELECT team_id FROM team_members)").contains("NOT EXISTS"));
    assert!(refuse("(team_id IN (SELECT team_id FROM team_members)) IS NOT TRUE").contains("condition of its own"));
    assert!(refuse("(team_id IN (SELECT team_id FROM team_members)) = (name = 'a')").contains("condition of its own"));
    let many = (0..5)
        .map(|i| format!("(name = '{i}' OR team_id IN (SELECT team_id FROM team_members WHERE role = '{i}'))"))
        .collect::<Vec<_>>()
        .join(" AND ");
    assert!(refuse(&many).contains("too many alternatives"));
    // NOT EXISTS is never unknown: accepted over nullable columns.
    compile("NOT EXISTS (SELECT 1 FROM team_members m WHERE m.team_id = steps.team_id)")
        .conditions(&t.steps())
        .unwrap();
}

/// A catalog that holds every subquery on `team_members` to a read rule.
struct Ruled(Tables);

impl Catalog for Ruled {
    fn table(&self, name: &QualifiedName) -> Option<Arc<TableSchema>> {
        self.0.table(name)
    }

    fn read_rule(&self, table: &TableSchema) -> Result<Option<WhereClause>, WhereError> {
        if table.name.name != "team_members" {
            return Ok(None);
        }
        WhereClause::compile("user_id = 'ann'", &BTreeMap::new(), table).map(Some)
    }
}

#[test]
fn subqueries_are_held_to_the_read_rule_of_the_table_they_read() {
    let t = Ruled(Tables::new());
    let w = WhereClause::compile_with(
        "team_id IN (SELECT team_id FROM team_members WHERE role = 'owner')",
        &BTreeMap::new(),
        &t.0.steps(),
        &t,
    )
    .unwrap();
    let (sql, params) = w.to_sql(1);
    assert!(sql.contains(r#"("role" = ($1::text)::text) AND ("user_id" = ($2::text)::text)"#), "{sql}");
    assert_eq!(params, vec![Some("owner".to_string()), Some("ann".to_string())]);
    // Without a where of its own, the rule is the subquery's whole filter.
    let w =
        WhereClause::compile_with("team_id IN (SELECT team_id FROM team_members)", &BTreeMap::new(), &t.0.steps(), &t)
            .unwrap();
    assert!(w.to_sql(1).0.contains(r#"WHERE ("user_id" = ($1::text)::text)"#), "{}", w.to_sql(1).0);
}

#[test]
fn a_rule_its_claims_make_false_never_holds() {
    let t = Tables::new();
    let bound = |sql: &str, role: Option<&str>| {
        let rule = BoundRule {
            sql: sql.into(),
            claims: vec![ClaimValue { path: vec!["role".into()], value: role.map(String::from) }],
        };
        WhereClause::compile_rule_with(&rule, &t.steps(), &t).unwrap().never_holds()
    };
    let staff_only = "claims.role = 'staff' AND team_id = '00000000-0000-0000-0000-000000000001'";
    assert!(bound(staff_only, Some("visitor")));
    assert!(!bound(staff_only, Some("staff")));
    assert!(!bound(staff_only, None), "a missing claim (NULL) matches nothing but is not a refusal");
    assert!(!bound("claims.role = 'staff' OR team_id IS NULL", Some("visitor")), "the other side may hold");
    assert!(bound("claims.role = 'staff' OR claims.role = 'admin'", Some("visitor")));
}
