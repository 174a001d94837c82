//! Unit tests for each policy and property tests for the promises the module docs make.

use super::*;
use ferrite_protocol::hlc::{Hlc, Stamp, DIRECT_WRITER};
use proptest::prelude::*;

fn st(ms: u64, client: &str) -> Stamp {
    Stamp { hlc: Hlc { ms, counter: 0 }, client_id: client.into() }
}

fn vals(pairs: &[(&str, Option<&str>)]) -> Values {
    pairs.iter().map(|(c, v)| (c.to_string(), v.map(String::from))).collect()
}

fn live(pairs: &[(&str, Option<&str>)], ms: u64) -> Current {
    let values = vals(pairs);
    let clocks = values.keys().map(|c| (c.clone(), st(ms, "init"))).collect();
    Current::Live(StoredRow { values, clocks, born: Some(st(ms, "init")) })
}

fn text_kind(_: &str) -> ColumnOrder {
    ColumnOrder::of_type_name("text")
}

fn int_kind(c: &str) -> ColumnOrder {
    ColumnOrder::of_type_name(if c == "importance" { "int4" } else { "text" })
}

fn update(set: &[(&str, Option<&str>)], ms: u64, client: &str) -> Mutation {
    Mutation { op: Incoming::Update { set: vals(set), base: None }, stamp: st(ms, client) }
}

fn delete(ms: u64, client: &str) -> Mutation {
    Mutation { op: Incoming::Delete { base: None }, stamp: st(ms, client) }
}

fn insert(values: &[(&str, Option<&str>)], ms: u64, client: &str) -> Mutation {
    Mutation { op: Incoming::Insert { values: vals(values) }, stamp: st(ms, client) }
}

fn run(policy: &TablePolicy, kind: &dyn Fn(&str) -> ColumnOrder, start: &Current, ops: &[Mutation]) -> Current {
    ops.iter().fold(start.clone(), |cur, m| apply(&cur, &decide(policy, kind, &cur, m).action))
}

fn values_of(c: &Current) -> Option<&Values> {
    match c {
        Current::Live(r) => Some(&r.values),
        _ => None,
    }
}

fn policy(row: RowPolicy, existence: Existence) -> TablePolicy {
    TablePolicy { row, columns: BTreeMap::new(), existence }
}

#[test]
fn lww_keeps_the_newest_value_of_each_column_and_reports_the_losers() {
    let p = TablePolicy::default();
    let start = live(&[("id", Some("1")), ("name", Some("a")), ("x", Some("0"))], 10);
    let newer = update(&[("name", Some("new"))], 30, "c1");
    let older = update(&[("name", Some("old")), ("x", Some("5"))], 20, "c2");
    let d = decide(&p, &text_kind, &apply(&start, &decide(&p, &text_kind, &start, &newer).action), &older);
    assert_eq!(d.overridden, vec!["name".to_string()]);
    match d.action {
        Action::Update { set, .. } => assert_eq!(set, vals(&[("x", Some("5"))])),
        other => panic!("{other:?}"),
    }
    // Same clock, different clients: the larger client id wins, in either order.
    let a = update(&[("name", Some("from a"))], 40, "a");
    let b = update(&[("name", Some("from b"))], 40, "b");
    for order in [[a.clone(), b.clone()], [b, a]] {
        let end = run(&p, &text_kind, &start, &order);
        assert_eq!(values_of(&end).unwrap()["name"].as_deref(), Some("from b"));
    }
}

#[test]
fn a_direct_postgres_write_beats_an_older_offline_edit() {
    let p = TablePolicy::default();
    let mut row = StoredRow { values: vals(&[("name", Some("typed in psql"))]), ..Default::default() };
    row.clocks.insert("name".into(), Stamp::direct(50_000_000)); // committed at 50 000 ms
    let d = decide(&p, &text_kind, &Current::Live(row), &update(&[("name", Some("offline"))], 49_999, "c1"));
    assert_eq!(d.action, Action::Nothing);
    assert_eq!(d.overridden, vec!["name".to_string()]);
    assert_eq!(Stamp::direct(50_000_000).client_id, DIRECT_WRITER);
}

#[test]
fn server_wins_applies_only_on_top_of_the_seen_version() {
    let p = policy(RowPolicy::ServerWins, Existence::DeleteWins);
    let start = live(&[("id", Some("1")), ("status", Some("running"))], 10);
    let stale = Mutation {
        op: Incoming::Update {
            set: vals(&[("status", Some("done"))]),
            base: Some(vals(&[("status", Some("queued"))])),
        },
        stamp: st(99, "c1"),
    };
    assert_eq!(
        decide(&p, &text_kind, &start, &stale).action,
        Action::Conflict { current: Some(vals(&[("id", Some("1")), ("status", Some("running"))])) }
    );
    let fresh = Mutation {
        op: Incoming::Update {
            set: vals(&[("status", Some("done"))]),
            base: Some(vals(&[("status", Some("running"))])),
        },
        stamp: st(5, "c1"), // older clock, still applies: server-wins ignores clocks
    };
    assert!(matches!(decide(&p, &text_kind, &start, &fresh).action, Action::Update { .. }));
    let stale_delete =
        Mutation { op: Incoming::Delete { base: Some(vals(&[("status", Some("queued"))])) }, stamp: st(99, "c1") };
    assert!(matches!(decide(&p, &text_kind, &start, &stale_delete).action, Action::Conflict { .. }));
    assert!(matches!(
        decide(&p, &text_kind, &start, &insert(&[("id", Some("1"))], 99, "c1")).action,
        Action::Conflict { .. }
    ));
    let gone = Current::Deleted { tombstone: StoredRow::default(), deleted: st(20, "c2") };
    assert_eq!(
        decide(&p, &text_kind, &gone, &update(&[("status", Some("x"))], 99, "c1")).action,
        Action::Conflict { current: None }
    );
}

#[test]
fn server_wins_columns_in_an_lww_table() {
    let mut p = TablePolicy::default();
    p.columns.insert("status".into(), ConflictPolicy::ServerWins);
    let start = live(&[("status", Some("running")), ("note", Some("n"))], 10);
    let m = Mutation {
        op: Incoming::Update {
            set: vals(&[("status", Some("done")), ("note", Some("m"))]),
            base: Some(vals(&[("status", Some("queued"))])),
        },
        stamp: st(20, "c1"),
    };
    let d = decide(&p, &text_kind, &start, &m);
    assert_eq!(d.overridden, vec!["status".to_string()]);
    assert!(matches!(d.action, Action::Update { ref set, .. } if set == &vals(&[("note", Some("m"))])));
}

#[test]
fn resolve_rules_compare_whole_versions_and_fall_through_on_ties() {
    let rules = vec![Rule::Max("importance".into()), Rule::Max("last_accessed_at".into()), Rule::Lww];
    let p = policy(RowPolicy::Resolve(rules), Existence::DeleteWins);
    let start = live(&[("importance", Some("9")), ("last_accessed_at", Some("2026-01-01 00:00:00+00"))], 10);
    // Lower importance loses even though it is newer ("9" vs "10" compares as integers).
    let lower = update(&[("importance", Some("8"))], 20, "c1");
    assert_eq!(decide(&p, &int_kind, &start, &lower).action, Action::Nothing);
    assert!(matches!(
        decide(&p, &int_kind, &start, &update(&[("importance", Some("10"))], 5, "c1")).action,
        Action::Update { .. }
    ));
    // Same importance: the later access time wins, whatever the clocks say.
    let later = update(&[("last_accessed_at", Some("2026-01-02 00:00:00+00"))], 5, "c1");
    assert!(matches!(decide(&p, &int_kind, &start, &later).action, Action::Update { .. }));
    // Everything equal: the newer stamp wins.
    let same = update(&[("importance", Some("9"))], 11, "c1");
    assert!(matches!(decide(&p, &int_kind, &start, &same).action, Action::Update { .. }));
    let same_older = update(&[("importance", Some("9"))], 9, "c1");
    assert_eq!(decide(&p, &int_kind, &start, &same_older).action, Action::Nothing);
}

/// NULL loses under `min` as under `max`: found by the docs review (an older write setting the
/// column to NULL beat a stored 5 under `min`).
#[test]
fn null_loses_under_min_and_max() {
    for rule in [Rule::Min("importance".into()), Rule::Max("importance".into())] {
        let p = policy(RowPolicy::Resolve(vec![rule.clone()]), Existence::DeleteWins);
        let start = live(&[("importance", Some("5"))], 10);
        let null = update(&[("importance", None)], 20, "c1");
        assert_eq!(decide(&p, &int_kind, &start, &null).action, Action::Nothing, "{rule}: NULL won");
        let from_null = live(&[("importance", None)], 10);
        let value = update(&[("importance", Some("5"))], 5, "c1");
        assert!(matches!(decide(&p, &int_kind, &from_null, &value).action, Action::Update { .. }), "{rule}");
    }
    let p = policy(RowPolicy::Resolve(vec![Rule::Min("importance".into())]), Existence::DeleteWins);
    let start = live(&[("importance", Some("5"))], 10);
    assert!(matches!(
        decide(&p, &int_kind, &start, &update(&[("importance", Some("3"))], 5, "c1")).action,
        Action::Update { .. }
    ));
    assert_eq!(decide(&p, &int_kind, &start, &update(&[("importance", Some("7"))], 20, "c1")).action, Action::Nothing);
}

#[test]
fn delete_wins_holds_against_updates_but_not_newer_inserts() {
    let p = TablePolicy::default();
    let start = live(&[("id", Some("1")), ("name", Some("a"))], 10);
    let deleted = run(&p, &text_kind, &start, &[update(&[("name", Some("b"))], 30, "c1"), delete(20, "c2")]);
    assert!(matches!(deleted, Current::Deleted { .. }));
    assert!(matches!(
        run(&p, &text_kind, &deleted, &[update(&[("name", Some("c"))], 40, "c1")]),
        Current::Deleted { .. }
    ));
    let back = run(&p, &text_kind, &deleted, &[insert(&[("id", Some("1")), ("name", Some("again"))], 40, "c1")]);
    assert_eq!(values_of(&back), Some(&vals(&[("id", Some("1")), ("name", Some("again"))])));
    // An insert from before the delete does not bring the row back.
    assert!(matches!(
        run(&p, &text_kind, &deleted, &[insert(&[("id", Some("1"))], 15, "c1")]),
        Current::Deleted { .. }
    ));
    // A delete from before a re-insert does not remove the new incarnation.
    let reborn =
        run(&p, &text_kind, &start, &[insert(&[("id", Some("1")), ("name", Some("n"))], 40, "c1"), delete(30, "c2")]);
    assert!(matches!(reborn, Current::Live(_)));
}

#[test]
fn add_wins_revives_on_newer_updates_with_the_tombstone_underneath() {
    let p = policy(RowPolicy::Lww, Existence::AddWins);
    let start = live(&[("id", Some("1")), ("from", Some("a")), ("to", Some("b"))], 10);
    let deleted = run(&p, &text_kind, &start, &[delete(20, "c2")]);
    let revived = run(&p, &text_kind, &deleted, &[update(&[("to", Some("c"))], 30, "c1")]);
    assert_eq!(values_of(&revived), Some(&vals(&[("id", Some("1")), ("from", Some("a")), ("to", Some("c"))])));
    // A delete older than a write it cannot have seen loses.
    let d = decide(&p, &text_kind, &revived, &delete(25, "c3"));
    assert_eq!(d.action, Action::Nothing);
    assert_eq!(d.overridden, vec!["to".to_string()]);
}

#[test]
fn writes_to_rows_that_are_gone_are_reported_not_applied() {
    let p = TablePolicy::default();
    let d = decide(&p, &text_kind, &Current::Absent, &update(&[("name", Some("x"))], 10, "c1"));
    assert_eq!((d.action, d.overridden), (Action::Nothing, vec!["name".to_string()]));
    assert_eq!(decide(&p, &text_kind, &Current::Absent, &delete(10, "c1")).action, Action::Nothing);
}

const COLS: [&str; 3] = ["a", "b", "c"];

/// Updates of random columns with distinct clocks (`ms` values are unique per op).
fn updates(max: usize) -> impl Strategy<Value = Vec<Mutation>> {
    proptest::collection::vec(
        (
            proptest::sample::subsequence(COLS.to_vec(), 1..=3),
            proptest::sample::select(vec!["p", "q", "r"]),
            0u8..4,
            0u64..3,
        ),
        1..max,
    )
    .prop_map(|ops| {
        ops.into_iter()
            .enumerate()
            .map(|(i, (cols, client, v, jitter))| {
                let set: Values = cols.iter().map(|c| (c.to_string(), Some(format!("{client}{v}")))).collect();
                // Distinct clocks, sometimes equal ms with different clients.
                let ms = 100 + (i as u64) * 3 + jitter;
                Mutation { op: Incoming::Update { set, base: None }, stamp: st(ms, client) }
            })
            .collect::<Vec<_>>()
    })
}

fn start_row() -> Current {
    live(&[("a", Some("a0")), ("b", Some("b0")), ("c", None)], 1)
}

proptest! {
    /// LWW: the final row does not depend on the order updates arrive in, and applying an update
    /// twice is the same as once.
    #[test]
    fn lww_updates_commute_and_are_idempotent((ops, shuffled) in updates(12).prop_flat_map(|o| (Just(o.clone()), Just(o).prop_shuffle()))) {
        let p = TablePolicy::default();
        let in_order = run(&p, &text_kind, &start_row(), &ops);
        prop_assert_eq!(&in_order, &run(&p, &text_kind, &start_row(), &shuffled));
        let twice: Vec<Mutation> = shuffled.iter().flat_map(|m| [m.clone(), m.clone()]).collect();
        prop_assert_eq!(&in_order, &run(&p, &text_kind, &start_row(), &twice));
        // Each column holds the value of its newest writer.
        let values = values_of(&in_order).unwrap();
        for col in COLS {
            let newest = ops.iter().filter_map(|m| match &m.op {
                Incoming::Update { set, .. } => set.get(col).map(|v| (&m.stamp, v)),
                _ => None,
            }).max_by(|x, y| x.0.cmp(y.0));
            if let Some((_, v)) = newest {
                prop_assert_eq!(&values[col], v);
            }
        }
    }

    /// Existence with one delete among updates, any order: delete-wins always ends deleted;
    /// add-wins ends live exactly when some update is newer than the delete. Either way the
    /// final state (values, clocks, tombstone) is the same for every order.
    #[test]
    fn existence_does_not_depend_on_arrival_order(
        (ops, shuffled, add_wins) in (updates(8), 90u64..130, any::<bool>()).prop_flat_map(|(mut o, del_ms, add)| {
            o.push(delete(del_ms, "d"));
            (Just(o.clone()), Just(o).prop_shuffle(), Just(add))
        })
    ) {
        let p = policy(RowPolicy::Lww, if add_wins { Existence::AddWins } else { Existence::DeleteWins });
        let a = run(&p, &text_kind, &start_row(), &ops);
        let b = run(&p, &text_kind, &start_row(), &shuffled);
        prop_assert_eq!(&a, &b);
        let del = ops.iter().find(|m| matches!(m.op, Incoming::Delete { .. })).unwrap().stamp.clone();
        let newest_update = ops.iter().filter(|m| matches!(m.op, Incoming::Update { .. })).map(|m| &m.stamp).max().unwrap();
        let live_expected = add_wins && *newest_update > del;
        prop_assert_eq!(matches!(a, Current::Live(_)), live_expected);
    }

    /// Resolve with whole-row versions: the winner is the version that is largest by the rules
    /// (then by stamp), whatever the arrival order.
    #[test]
    fn resolve_picks_the_same_winner_in_any_order(
        (ops, shuffled) in proptest::collection::vec((0u8..5, 0u8..3), 1..10).prop_map(|vs| {
            vs.into_iter().enumerate().map(|(i, (imp, note))| {
                update(&[("importance", Some(&(imp as u32 * 5).to_string())), ("note", Some(&format!("n{note}")))], 100 + i as u64, "c")
            }).collect::<Vec<_>>()
        }).prop_flat_map(|o| (Just(o.clone()), Just(o).prop_shuffle()))
    ) {
        let p = policy(RowPolicy::Resolve(vec![Rule::Max("importance".into())]), Existence::DeleteWins);
        let start = live(&[("importance", Some("0")), ("note", Some("start"))], 1);
        let a = run(&p, &int_kind, &start, &ops);
        let b = run(&p, &int_kind, &start, &shuffled);
        prop_assert_eq!(values_of(&a), values_of(&b));
        let best = ops.iter().max_by_key(|m| match &m.op {
            Incoming::Update { set, .. } => (set["importance"].as_deref().unwrap().parse::<u32>().unwrap(), m.stamp.clone()),
            _ => unreachable!(),
        }).unwrap();
        if let Incoming::Update { set, .. } = &best.op {
            prop_assert_eq!(values_of(&a).unwrap()["importance"].as_ref(), set["importance"].as_ref());
            prop_assert_eq!(values_of(&a).unwrap()["note"].as_ref(), set["note"].as_ref());
        }
    }
}
