//! Regression tests for the holes a security review found (issue 10), each against a real server
//! and Postgres: what an attacker or an unlucky user did, and what must happen instead.

mod common;
use common::*;
use serde_json::{json, Value};
use std::collections::BTreeSet;

const SECRET: &str = "security-test-secret-0123456789abcdef";

fn token(claims: Value) -> String {
    hs256_token(SECRET, claims)
}

/// A client HLC of now (later than the rows' own direct writes).
fn hlc(counter: u32) -> String {
    let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis();
    format!("{ms}-{counter}")
}

/// Item 1: a read rule is compiled apart from the client's where clause and ANDed as a tree, and
/// claims are bound values: no comment, quote, newline or parenthesis in the where, the rule or a
/// claim lets a caller see rows outside its rule (or write them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_cannot_be_commented_out_closed_or_reopened() {
    // Tenants whose names are attacks on text splicing; each owns exactly one row.
    let weird = ["t1\n) OR (true) --", "t1' OR 'a'='a", "t1\") OR true --", "*/ OR true /*", "t2' --", "t1\r\n--"];
    let db = TestDb::new().await;
    let c = db.client().await;
    for table in ["notes_multiline", "notes_commented", "notes_block"] {
        c.batch_execute(&format!(
            "CREATE TABLE {table} (id int PRIMARY KEY, tenant_id text NOT NULL, body text);
             INSERT INTO {table} SELECT i, CASE WHEN i % 2 = 0 THEN 't1' ELSE 't2' END, 'note ' || i FROM generate_series(1, 20) i;"
        ))
        .await
        .unwrap();
        for (i, t) in weird.iter().enumerate() {
            c.execute(&format!("INSERT INTO {table} VALUES ($1, $2, 'weird')"), &[&(100 + i as i32), t]).await.unwrap();
        }
    }
    // Rules as an operator writes them in TOML: over several lines, with comments.
    let rules = [
        ("notes_multiline", "tenant_id = claims.tenant_id\nAND id > 0\n"),
        ("notes_commented", "id > 0 -- any id\nAND tenant_id = claims.tenant_id -- own rows only"),
        ("notes_block", "/* own rows */ tenant_id = /* the token's tenant */ claims.tenant_id"),
    ];
    let s = TestServer::start_with(&db, |cfg| {
        cfg.auth.mode = "jwt".into();
        cfg.auth.secret = Some(SECRET.into());
        for (table, rule) in rules {
            cfg.tables.insert(
                table.into(),
                ferrite_server::config::TableConfig { read: Some(rule.into()), write: Some(rule.into()), ..Default::default() },
            );
        }
    })
    .await;

    let wheres = [
        None,
        Some("true --"),
        Some("true /*"),
        Some("true /* */ OR true --\n"),
        Some("true) OR (true --"),
        Some("tenant_id = 't2' --"),
        Some("true\n--"),
        Some("id > 0 OR tenant_id = $$t2$$"),
        Some("tenant_id = 't1' OR tenant_id <> 't1' -- '"),
    ];
    let mut tenants = vec!["t1"];
    tenants.extend(weird);
    let mut leaked = vec![];
    for (table, _) in rules {
        for tenant in &tenants {
            let own: BTreeSet<String> = c
                .query(&format!("SELECT id::text FROM {table} WHERE tenant_id = $1"), &[tenant])
                .await
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect();
            assert!(!own.is_empty());
            let t = token(json!({"tenant_id": tenant}));
            for w in wheres {
                let mut params = vec![("table", table)];
                if let Some(w) = w {
                    params.push(("where", w));
                }
                match read_shape(&s.base, Some(&t), &params).await {
                    Ok(rows) => {
                        let ids: BTreeSet<String> = rows.iter().map(|r| r["id"].as_str().unwrap().to_string()).collect();
                        if !ids.is_subset(&own) {
                            leaked.push(format!("{table} tenant {tenant:?} where {w:?}: {:?}", ids.difference(&own).collect::<Vec<_>>()));
                        }
                        if w.is_none() {
                            assert_eq!(ids, own, "{table}: tenant {tenant:?} sees exactly its own rows");
                        }
                    }
                    Err((status, body)) => assert_eq!(status, 400, "{table} {tenant:?} where {w:?}: {body}"),
                }
            }
        }
    }
    assert!(leaked.is_empty(), "rows outside the rule were served:\n{}", leaked.join("\n"));

    // The same claims cannot widen the write rule: another tenant's row stays untouched, the
    // caller's own row can be written.
    for (table, _) in rules {
        for (i, tenant) in weird.iter().enumerate() {
            let t = token(json!({"sub": format!("writer-{i}"), "tenant_id": tenant}));
            let r = post_tx(
                &s.base,
                Some(&t),
                json!({"client_id": format!("w{i}"), "transactions": [
                    {"id": 1, "hlc": hlc(0), "mutations": [{"op": "update", "table": table, "key": {"id": "1"}, "value": {"body": "stolen"}}]},
                    {"id": 2, "hlc": hlc(1), "mutations": [{"op": "update", "table": table, "key": {"id": (100 + i).to_string()}, "value": {"body": "mine"}}]}
                ]}),
            )
            .await;
            assert_eq!(r.status, 200, "{}", r.text);
            assert_eq!(r.body["results"][0]["error"]["code"], "forbidden", "{table} {tenant:?}: {}", r.text);
            assert_eq!(r.body["results"][1]["status"], "applied", "{table} {tenant:?}: {}", r.text);
        }
        let body: String = c.query_one(&format!("SELECT body FROM {table} WHERE id = 1"), &[]).await.unwrap().get(0);
        assert_eq!(body, "note 1");
    }
}
