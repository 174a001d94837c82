//! Ferrite behind an HTTP cache: Debian's nginx running the configurations of `deploy/nginx`
//! in front of a real server. Live long-polls of one shape collapse into one origin request per
//! write, every client gets the same bytes; in jwt mode callers share cached responses only
//! within their cache scope, and a cache set up without the scope check stores nothing.

use crate::common::*;
use ferrite_harness::nginx::LocalNginx;
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::time::Duration;

const JWT_SECRET: &str = "cdn-test-secret-0123456789-0123456789";

/// `host:port` of a test server, for nginx's upstream line.
fn upstream(s: &TestServer) -> String {
    s.base.trim_start_matches("http://").to_string()
}

/// One shape response as a client sees it.
#[derive(Clone)]
struct Got {
    status: u16,
    body: String,
    offset: String,
    cursor: Option<String>,
    cache: String,
    cache_control: String,
}

async fn fetch(http: &reqwest::Client, url: &str, token: Option<&str>) -> Got {
    let mut req = http.get(url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.expect("request through nginx");
    let h = |n: &str| r.headers().get(n).and_then(|v| v.to_str().ok()).map(String::from);
    let (offset, cursor, cache, cache_control) =
        (h("electric-offset"), h("electric-cursor"), h("x-cache-status"), h("cache-control"));
    let status = r.status().as_u16();
    Got {
        status,
        body: r.text().await.unwrap(),
        offset: offset.unwrap_or_default(),
        cursor,
        cache: cache.unwrap_or_default(),
        cache_control: cache_control.unwrap_or_default(),
    }
}

fn live_url(base: &str, query: &str, handle: &str, offset: &str, cursor: Option<&str>) -> String {
    let cursor = cursor.map(|c| format!("&cursor={c}")).unwrap_or_default();
    format!("{base}/v1/shape?{query}&handle={handle}&offset={offset}&live=true{cursor}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_long_polls_of_one_shape_collapse_into_one_origin_request_per_write() {
    // Over 1,024: nginx counts an entry's uses in 10 bits, which deploy/nginx has to work around
    // (`proxy_cache_min_uses 0`); with fewer clients that would go unnoticed.
    const CLIENTS: usize = 1100;
    raise_fd_limit();
    let db = TestDb::new().await;
    // Long-polls that outlast each round, so every origin request is one a write answered.
    let s = TestServer::start_with(&db, |c| c.long_poll_timeout_ms = 15_000).await;
    let nginx = LocalNginx::start("nginx.conf", &[upstream(&s)]).expect("nginx starts");
    collapse_rounds(&db, &s, Cache::Nginx(&nginx), CLIENTS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_long_polls_collapse_through_varnish_too() {
    const CLIENTS: usize = 300;
    let db = TestDb::new().await;
    let s = TestServer::start_with(&db, |c| c.long_poll_timeout_ms = 15_000).await;
    let varnish = ferrite_harness::varnish::LocalVarnish::start(&upstream(&s)).expect("varnishd starts");
    collapse_rounds(&db, &s, Cache::Varnish(&varnish), CLIENTS).await;
}

/// A cache in front of the test's server.
enum Cache<'a> {
    Nginx(&'a LocalNginx),
    Varnish(&'a ferrite_harness::varnish::LocalVarnish),
}

impl Cache<'_> {
    fn url(&self) -> String {
        match self {
            Cache::Nginx(n) => n.url(),
            Cache::Varnish(v) => v.url(),
        }
    }

    /// Whether `clients` requests have reached the cache since it had received `before`
    /// (nginx: its request count, less its own status page's; Varnish, whose request counters
    /// are summed lazily: the clients' connections, which they keep between rounds — so past
    /// the first round a client may ask a little after the write, and gets the cached answer,
    /// the same bytes, instead of waiting for it).
    fn reached(&self, before: u64, clients: usize) -> bool {
        match self {
            Cache::Nginx(n) => n.status().unwrap().requests > before + clients as u64,
            Cache::Varnish(v) => v.connections() >= clients,
        }
    }

    /// nginx's request count now (0 for Varnish).
    fn requests(&self) -> u64 {
        match self {
            Cache::Nginx(n) => n.status().unwrap().requests,
            Cache::Varnish(_) => 0,
        }
    }
}

/// Writes a row `WRITES` times while `clients` long-polls of one shape wait at `cache`; each
/// time every client must get the same bytes (the write's row) and Ferrite must have answered
/// one live request.
async fn collapse_rounds(db: &TestDb, s: &TestServer, cache: Cache<'_>, clients: usize) {
    const WRITES: usize = 3;
    let pg = db.client().await;
    pg.batch_execute("CREATE TABLE items (id int PRIMARY KEY, n int NOT NULL)").await.unwrap();
    let http = reqwest::Client::new();
    let base = &cache.url();
    let (handle, mut offset, rows) = read_to_head(&http, base, "table=items", None).await;
    assert!(rows.is_empty());
    let mut cursor: Option<String> = None;
    let observer = s.server.observer();
    let live = &observer.metrics().requests_live;
    for n in 0..WRITES {
        let url = live_url(base, "table=items", &handle, &offset, cursor.as_deref());
        let before = live.load(Ordering::Relaxed);
        let before_requests = cache.requests();
        let polls: Vec<_> = (0..clients)
            .map(|_| {
                let (http, url) = (http.clone(), url.clone());
                tokio::spawn(async move { fetch(&http, &url, None).await })
            })
            .collect();
        // (Each status read of nginx counts one more request of its own.)
        let mut reads = 0;
        wait_until("every long-poll at the cache", Duration::from_secs(20), || {
            reads += 1;
            let reached = cache.reached(before_requests + reads - 1, clients);
            async move { reached }
        })
        .await;
        // The one request the cache let through is held by Ferrite.
        s.wait_live_waiting(1).await;
        pg.execute("INSERT INTO items VALUES ($1, $1)", &[&(n as i32)]).await.unwrap();
        let mut got = Vec::new();
        for p in polls {
            got.push(p.await.unwrap());
        }
        let first = got[0].clone();
        assert_eq!(first.status, 200, "{}", first.body);
        let messages: Vec<Value> = serde_json::from_str(&first.body).unwrap();
        assert_eq!(messages[0]["value"], json!({"id": n.to_string(), "n": n.to_string()}), "{}", first.body);
        for g in &got {
            assert_eq!((g.status, &g.body, &g.offset, &g.cursor), (200, &first.body, &first.offset, &first.cursor));
            assert!(g.cache == "MISS" || g.cache == "HIT", "x-cache-status {}", g.cache);
        }
        let origin = live.load(Ordering::Relaxed) - before;
        let misses = got.iter().filter(|g| g.cache == "MISS").count();
        // The bound is 2; both caches as configured in deploy/ do 1.
        assert!(
            origin == 1 && misses == 1,
            "write {n}: {origin} origin requests, {misses} misses for {clients} clients"
        );
        offset = first.offset;
        cursor = first.cursor;
    }
}

/// Lets this process hold the clients' connections (the soft limit is often 1,024).
fn raise_fd_limit() {
    // SAFETY: getrlimit/setrlimit only touch the struct passed.
    unsafe {
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

fn token(tenant: &str, sub: &str) -> String {
    hs256_token(JWT_SECRET, json!({"sub": sub, "tenant": tenant}))
}

async fn jwt_server(db: &TestDb) -> TestServer {
    TestServer::start_with(db, |c| {
        c.long_poll_timeout_ms = 15_000;
        c.auth.mode = ferrite_server::config::AuthMode::Jwt;
        c.auth.secret = Some(JWT_SECRET.into());
        c.auth.shared_cache = true;
        c.tables.insert(
            "items".into(),
            ferrite_server::config::TableConfig { read: Some("tenant = claims.tenant".into()), ..Default::default() },
        );
    })
    .await
}

fn tenants_of(body: &str) -> Vec<String> {
    let messages: Vec<Value> = serde_json::from_str(body).unwrap();
    messages.iter().filter_map(|m| m["value"]["tenant"].as_str().map(String::from)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_mode_shares_cached_responses_within_a_scope_only() {
    let db = TestDb::new().await;
    let pg = db.client().await;
    pg.batch_execute(
        "CREATE TABLE items (id int PRIMARY KEY, tenant text NOT NULL);
         INSERT INTO items VALUES (1, 'a'), (2, 'a'), (3, 'b');",
    )
    .await
    .unwrap();
    let s = jwt_server(&db).await;
    let nginx = LocalNginx::start("nginx-jwt.conf", &[upstream(&s)]).expect("nginx starts");
    let http = reqwest::Client::new();
    let (a1, a2, b1) = (token("a", "u1"), token("a", "u2"), token("b", "u3"));
    let initial = format!("{}/v1/shape?table=items&offset=-1", nginx.url());

    let first = fetch(&http, &initial, Some(&a1)).await;
    assert_eq!((first.status, first.cache.as_str()), (200, "MISS"), "{}", first.body);
    assert!(first.cache_control.starts_with("public"), "{}", first.cache_control);
    assert_eq!(tenants_of(&first.body), ["a", "a"]);
    // Another user of the same tenant: the same scope, served from the cache.
    let same_scope = fetch(&http, &initial, Some(&a2)).await;
    assert_eq!((same_scope.cache.as_str(), &same_scope.body), ("HIT", &first.body));
    // The same URL for another tenant is another cache entry: its own rows, never a's.
    let other = fetch(&http, &initial, Some(&b1)).await;
    assert_eq!((other.status, other.cache.as_str()), (200, "MISS"));
    assert_eq!(tenants_of(&other.body), ["b"]);
    // No token, a forged one: refused at the edge, cached entries or not.
    assert_eq!(fetch(&http, &initial, None).await.status, 401);
    assert_eq!(
        fetch(&http, &initial, Some(&hs256_token("wrong-secret-0123456789-0123456789-xx", json!({"tenant": "a"}))))
            .await
            .status,
        401
    );

    // Live: the two users of tenant a collapse into one origin request; tenant b waits apart.
    let (ha, oa, _) = read_to_head(&http, &nginx.url(), "table=items", Some(&a1)).await;
    let (hb, ob, _) = read_to_head(&http, &nginx.url(), "table=items", Some(&b1)).await;
    let observer = s.server.observer();
    let live = &observer.metrics().requests_live;
    let before = live.load(Ordering::Relaxed);
    let poll = |url: String, t: String| {
        let http = http.clone();
        tokio::spawn(async move { fetch(&http, &url, Some(&t)).await })
    };
    let url_a = live_url(&nginx.url(), "table=items", &ha, &oa, None);
    let (p1, p2) = (poll(url_a.clone(), a1.clone()), poll(url_a, a2.clone()));
    let pb = poll(live_url(&nginx.url(), "table=items", &hb, &ob, None), b1.clone());
    wait_until("three long-polls at nginx", Duration::from_secs(20), || async { nginx.status().unwrap().busy > 3 })
        .await;
    s.wait_live_waiting(2).await;
    pg.execute("INSERT INTO items VALUES (4, 'a')", &[]).await.unwrap();
    let (g1, g2) = (p1.await.unwrap(), p2.await.unwrap());
    assert_eq!((g1.status, &g1.body), (200, &g2.body));
    assert_eq!(tenants_of(&g1.body), ["a"]);
    assert_eq!(live.load(Ordering::Relaxed) - before, 2, "one origin request per scope");
    assert!(!pb.is_finished(), "tenant b's long-poll is not answered by tenant a's write");
    pg.execute("INSERT INTO items VALUES (5, 'b')", &[]).await.unwrap();
    let gb = pb.await.unwrap();
    assert_eq!(tenants_of(&gb.body), ["b"], "{}", gb.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_responses_are_private_unless_the_request_names_the_callers_own_scope() {
    let db = TestDb::new().await;
    let pg = db.client().await;
    pg.batch_execute(
        "CREATE TABLE items (id int PRIMARY KEY, tenant text NOT NULL); INSERT INTO items VALUES (1, 'a'), (2, 'b');",
    )
    .await
    .unwrap();
    let s = jwt_server(&db).await;
    let http = reqwest::Client::new();
    let (a1, b1) = (token("a", "u1"), token("b", "u2"));
    let scope_of = |t: String| {
        let (http, url) = (http.clone(), format!("{}/v1/auth/scope", s.base));
        async move {
            let r = http.get(url).bearer_auth(t).send().await.unwrap();
            assert_eq!(r.status(), 204);
            r.headers()["ferrite-cache-scope"].to_str().unwrap().to_string()
        }
    };
    let (scope_a, scope_b) = (scope_of(a1.clone()).await, scope_of(b1.clone()).await);
    assert_ne!(scope_a, scope_b);
    assert_eq!(scope_a, scope_of(token("a", "someone-else")).await, "the subject is not part of a scope");
    let r = http.get(format!("{}/v1/auth/scope", s.base)).send().await.unwrap();
    assert_eq!(r.status(), 401, "the edge check refuses a missing token");

    let url = format!("{}/v1/shape?table=items&offset=-1", s.base);
    let read = |t: &str, scope: Option<&str>| {
        let mut req = http.get(&url).bearer_auth(t);
        if let Some(sc) = scope {
            req = req.header("ferrite-cache-scope", sc);
        }
        async move {
            let r = req.send().await.unwrap();
            assert_eq!(r.status(), 200);
            let h = |n: &str| {
                r.headers().get_all(n).iter().map(|v| v.to_str().unwrap().to_string()).collect::<Vec<_>>().join(",")
            };
            (h("cache-control"), h("vary"))
        }
    };
    // Its own scope: public, and not split per token.
    let (cc, vary) = read(&b1, Some(&scope_b)).await;
    assert!(cc.starts_with("public"), "{cc}");
    assert!(!vary.contains("authorization"), "{vary}");
    // Another caller's scope, a made-up one, none: private, as without a shared cache.
    for scope in [Some(scope_a.as_str()), Some("public"), Some(""), None] {
        let (cc, vary) = read(&b1, scope).await;
        assert!(cc.starts_with("private"), "scope {scope:?}: {cc}");
        assert!(vary.contains("authorization"), "{vary}");
    }

    // An nginx set up without the scope check (the plain config) in front of a jwt server
    // stores nothing: each tenant gets its own rows, every time from Ferrite.
    let nginx = LocalNginx::start("nginx.conf", &[upstream(&s)]).expect("nginx starts");
    let through = format!("{}/v1/shape?table=items&offset=-1", nginx.url());
    for (t, tenant) in [(&a1, "a"), (&b1, "b"), (&a1, "a")] {
        let g = fetch(&http, &through, Some(t)).await;
        assert_eq!(tenants_of(&g.body), [tenant]);
        assert_eq!(g.cache, "MISS", "a private response is never stored");
    }
}
