//! Include trees: a shape and the rows related to it through foreign keys, synced together —
//! a pipeline, its steps, the steps' connections, its comments and their authors — and applied
//! only when every shape of the tree stands at one common point of the server's log, so the app
//! never sees a connection without its steps or a step without its pipeline.
//!
//! A tree compiles to one ordinary shape per node ([`Client::tree_shapes`]): a child's where
//! clause is a subquery on its parent's rows, through the foreign keys Postgres declares between
//! the two tables (read from `GET /v1/foreign-keys`). A child that references its parent
//! (`steps.pipeline_id → pipelines.id`) gets `pipeline_id IN (SELECT id FROM pipelines WHERE
//! <the parent's where>)`; a child its parent references (`comments.user_id → users.id`) gets
//! `id IN (SELECT user_id FROM comments WHERE …)`; composite keys compare tuples; several keys
//! between the two tables (`connections.from_step_id`, `to_step_id`) are alternatives (OR) unless
//! [`Include::via`] picks one. The server keeps each shape live as the subqueries' results change
//! (relational shapes), with the caller's read rules applied to every level.
//!
//! [`Client::sync_tree`] fetches every shape's new responses without applying them, until they
//! stand at a common point of the server's log — every shape complete up to a position `L`
//! (its up-to-date `global_last_seen_lsn`, or the earlier `ferrite-complete-lsn` of a relational
//! shape whose move-in is still to come) and none holding anything after `L` — then applies them
//! all in one SQLite transaction.
//!
//! Cost: one shape per node (each its own requests and, on the server, its own log); a child's
//! rows are read through every level above it, and a change of a parent table re-reads the
//! nested subqueries of the levels below (see the server's documentation of relational shapes).
//! Subqueries nest at most four levels on the server: a tree deeper than that is refused.

use crate::shape::ShapeDef;
use crate::store::{self, Batch, ShapePosition};
use crate::sync::{blocking, Data, Fetched};
use crate::{Client, ClientError};
use ferrite_protocol::relation::{quote_ident, QualifiedName};
use rusqlite::OptionalExtension;
use std::collections::{BTreeMap, HashMap};

/// A subscription of related rows: a root shape and what it includes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tree {
    /// The root shape (its table, where clause, params, columns, local table).
    pub root: ShapeDef,
    /// Related rows, by name (the table's name unless [`Include::table`] says otherwise; also
    /// the local table's name unless [`Include::local_table`] does).
    pub include: BTreeMap<String, Include>,
}

/// Rows of another table linked by a foreign key to the rows of their parent node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Include {
    /// The table (`name` or `schema.name`); the include's name when `None`.
    pub table: Option<String>,
    /// A where clause the included rows must also satisfy (`$1`… from `params`).
    pub where_sql: Option<String>,
    /// Values of `$1`… in `where_sql`.
    pub params: BTreeMap<String, String>,
    /// Columns to sync (must include the primary key); all when `None`.
    pub columns: Option<Vec<String>>,
    /// The foreign key to follow (its constraint name) when several link the two tables; all
    /// of them, as alternatives, when `None`.
    pub via: Option<String>,
    /// Local table; the include's name when `None`. With [`Include::limit`], a view of the top
    /// rows per parent, over a table of all of them named `<local table>_all`.
    pub local_table: Option<String>,
    /// Top N per parent: only this many rows of each parent row, in [`Include::order_by`]'s
    /// order, are in the local view (exact: when one of them goes, the next one appears, since
    /// every matching row is synced into `<local table>_all`; bound what that holds with
    /// `where_sql`, e.g. a time window). Only for a child that references its parent through one
    /// foreign key, and without includes of its own.
    pub limit: Option<u64>,
    /// The order of [`Include::limit`]: an SQLite `ORDER BY` list over the include's columns,
    /// e.g. `created_at DESC` (the app's own SQL, run only in its local database).
    pub order_by: Option<String>,
    /// What this node includes in turn.
    pub include: BTreeMap<String, Include>,
}

impl Tree {
    /// A tree rooted at `root`, including nothing yet.
    pub fn new(root: ShapeDef) -> Tree {
        Tree { root, include: BTreeMap::new() }
    }

    /// The same tree including `name`.
    pub fn with(mut self, name: &str, include: Include) -> Tree {
        self.include.insert(name.to_string(), include);
        self
    }
}

impl Include {
    /// The rows of table `name` linked to the parent's (every foreign key between them).
    pub fn rows() -> Include {
        Include::default()
    }

    /// The same include of another table than its name.
    pub fn of_table(mut self, table: &str) -> Include {
        self.table = Some(table.to_string());
        self
    }

    /// The same include, restricted by `where_sql`.
    pub fn filter(mut self, where_sql: &str) -> Include {
        self.where_sql = Some(where_sql.to_string());
        self
    }

    /// The same include, following only foreign key `constraint`.
    pub fn via(mut self, constraint: &str) -> Include {
        self.via = Some(constraint.to_string());
        self
    }

    /// The same include, keeping only the first `n` rows per parent in `order_by`'s order (see
    /// [`Include::limit`]).
    pub fn top(mut self, n: u64, order_by: &str) -> Include {
        self.limit = Some(n);
        self.order_by = Some(order_by.to_string());
        self
    }

    /// The same include, including `name` in turn.
    pub fn with(mut self, name: &str, include: Include) -> Include {
        self.include.insert(name.to_string(), include);
        self
    }
}

/// What one [`Client::sync_tree`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TreeReport {
    /// HTTP requests made (foreign-key lookups included).
    pub requests: usize,
    /// Row changes applied.
    pub changes: usize,
    /// Rounds of catching up needed before the shapes stood at one common point.
    pub rounds: usize,
    /// The common log position the tree was applied at.
    pub lsn: u64,
    /// Members found to differ from the server's rows and fetched afresh
    /// ([`Client::set_checksum_interval`]).
    pub repaired: usize,
}

/// How long [`Client::sync_tree`] keeps catching up before giving up: the tree's tables kept
/// changing between the shapes' answers, or a shape's move-in took that long.
pub const TREE_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// A foreign key as `GET /v1/foreign-keys` lists it.
#[derive(Debug, Clone, serde::Deserialize)]
struct ForeignKey {
    name: String,
    table: (String, String),
    columns: Vec<String>,
    references: (String, String),
    referenced_columns: Vec<String>,
}

#[derive(serde::Deserialize)]
struct ForeignKeys {
    foreign_keys: Vec<ForeignKey>,
}

/// A local view of the first rows per parent of an include with a limit.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TopRows {
    /// The view's name (the include's local table).
    view: String,
    /// The local table holding every row.
    all: String,
    /// The columns naming the parent.
    partition: Vec<String>,
    order_by: String,
    limit: u64,
}

impl TopRows {
    /// (Re)creates the view; fails when a table of its name is in the way.
    fn create(&self, tx: &rusqlite::Transaction<'_>) -> Result<(), ClientError> {
        let kind: Option<String> =
            tx.query_row("SELECT type FROM sqlite_master WHERE name = ?1", [&self.view], |r| r.get(0)).optional()?;
        if kind.as_deref() == Some("table") {
            return Err(ClientError::Invalid(format!(
                "local table {} exists: an include with a limit needs its name for the view of the top rows (drop the table, or choose another local table)",
                self.view
            )));
        }
        let quote = crate::store::quote;
        let partition: Vec<String> = self.partition.iter().map(|c| quote(c)).collect();
        tx.execute_batch(&format!("DROP VIEW IF EXISTS {}", quote(&self.view)))?;
        // One statement: the order is the app's SQL, in its own database.
        tx.execute(
            &format!(
                "CREATE VIEW {} AS SELECT * FROM (SELECT *, row_number() OVER (PARTITION BY {} ORDER BY {}) AS _ferrite_rank FROM {}) WHERE _ferrite_rank <= {}",
                quote(&self.view),
                partition.join(", "),
                self.order_by,
                quote(&self.all),
                self.limit
            ),
            [],
        )?;
        Ok(())
    }
}

/// A node being compiled: its table and its where clause with params.
struct Node {
    table: QualifiedName,
    where_sql: Option<String>,
    params: Vec<String>,
}

impl Client {
    /// The shapes a tree compiles to, root first (see the module documentation). Asks the server
    /// for the foreign keys of each included table.
    pub async fn tree_shapes(&self, tree: &Tree) -> Result<Vec<ShapeDef>, ClientError> {
        let mut cache = HashMap::new();
        let mut requests = 0;
        Ok(self.compile(tree, &mut cache, &mut requests).await?.0)
    }

    async fn compile(
        &self,
        tree: &Tree,
        cache: &mut HashMap<QualifiedName, Vec<ForeignKey>>,
        requests: &mut usize,
    ) -> Result<(Vec<ShapeDef>, Vec<TopRows>), ClientError> {
        let mut views = Vec::new();
        let root_table = parse_table(&tree.root.table)?;
        let params = ordered_params(&tree.root.params)?;
        let root = Node { table: root_table, where_sql: tree.root.where_sql.clone(), params };
        let mut out = vec![tree.root.clone()];
        let mut stack: Vec<(Node, &BTreeMap<String, Include>)> = vec![(root, &tree.include)];
        while let Some((parent, includes)) = stack.pop() {
            for (name, inc) in includes {
                let table = parse_table(inc.table.as_deref().unwrap_or(name))?;
                if !cache.contains_key(&table) {
                    *requests += 1;
                    let keys = self.foreign_keys(&table).await?;
                    cache.insert(table.clone(), keys);
                }
                let link = link(&parent, &table, &cache[&table], inc.via.as_deref(), name)?;
                let own = ordered_params(&inc.params)?;
                let mut params = parent.params.clone();
                let where_sql = match &inc.where_sql {
                    Some(w) if !w.trim().is_empty() => {
                        let shifted = shift_params(w, params.len());
                        params.extend(own);
                        format!("({link}) AND ({shifted})")
                    }
                    _ => link,
                };
                let mut local = inc.local_table.clone().unwrap_or_else(|| name.clone());
                if let Some(limit) = inc.limit {
                    let order_by =
                        inc.order_by.clone().filter(|o| !o.trim().is_empty()).ok_or_else(|| {
                            ClientError::Invalid(format!("include {name:?}: a limit needs an order_by"))
                        })?;
                    if !inc.include.is_empty() {
                        return Err(ClientError::Invalid(format!(
                            "include {name:?}: an include with a limit cannot include further"
                        )));
                    }
                    let partition = parent_columns(&parent, &table, &cache[&table], inc.via.as_deref(), name)?;
                    let all = format!("{local}_all");
                    views.push(TopRows { view: local.clone(), all: all.clone(), partition, order_by, limit });
                    local = all;
                }
                out.push(ShapeDef {
                    table: table.quoted(),
                    where_sql: Some(where_sql.clone()),
                    params: params.iter().enumerate().map(|(i, v)| ((i + 1).to_string(), v.clone())).collect(),
                    columns: inc.columns.clone(),
                    local_table: Some(local),
                    retain: tree.root.retain,
                });
                stack.push((Node { table, where_sql: Some(where_sql), params }, &inc.include));
            }
        }
        Ok((out, views))
    }

    /// `GET /v1/foreign-keys?table=…`.
    async fn foreign_keys(&self, table: &QualifiedName) -> Result<Vec<ForeignKey>, ClientError> {
        let query: String =
            form_urlencoded::Serializer::new(String::new()).append_pair("table", &table.quoted()).finish();
        let r = self.send(self.inner.http.get(format!("{}/v1/foreign-keys?{query}", self.inner.base))).await?;
        let status = r.status().as_u16();
        let body = r.text().await.map_err(|e| ClientError::Unreachable(e.to_string()))?;
        if status != 200 {
            let message = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["message"].as_str().map(String::from))
                .unwrap_or(body);
            return Err(ClientError::Refused { status, message, retry_after: None });
        }
        let keys: ForeignKeys =
            serde_json::from_str(&body).map_err(|e| ClientError::Protocol(format!("foreign keys: {e}")))?;
        Ok(keys.foreign_keys)
    }

    /// Catches every shape of `tree` up and applies them together, at one common log position
    /// (see the module documentation); gives up after [`TREE_WAIT`] without applying anything.
    pub async fn sync_tree(&self, tree: &Tree) -> Result<TreeReport, ClientError> {
        self.sync_tree_within(tree, TREE_WAIT).await
    }

    /// [`Client::sync_tree`], giving up after `max_wait`.
    pub async fn sync_tree_within(
        &self,
        tree: &Tree,
        max_wait: std::time::Duration,
    ) -> Result<TreeReport, ClientError> {
        let mut report = TreeReport::default();
        let mut cache = HashMap::new();
        let (defs, views) = self.compile(tree, &mut cache, &mut report.requests).await?;
        let mut positions: Vec<ShapePosition> = defs.iter().map(|d| self.position(d)).collect::<Result<_, _>>()?;
        let mut buffers: Vec<Vec<Data>> = defs.iter().map(|_| Vec::new()).collect();
        let mut standing: Vec<Standing> =
            positions.iter().map(|p| Standing { end: offset_tx(&p.offset), ..Standing::default() }).collect();
        let deadline = std::time::Instant::now() + max_wait;
        let mut pause = std::time::Duration::from_millis(1);
        for round in 1.. {
            report.rounds = round;
            if round > 2 {
                // Another round at once rarely helps: give the writer (or a move-in) a moment.
                if std::time::Instant::now() + pause > deadline {
                    break;
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(std::time::Duration::from_millis(200));
            }
            let fetches = defs.iter().zip(&positions).map(|(def, pos)| self.catch_up(def, pos.clone()));
            for (i, caught) in futures_util::future::join_all(fetches).await.into_iter().enumerate() {
                let caught = caught?;
                report.requests += caught.requests;
                if caught.restarted {
                    // The server replaced the shape: what was fetched of the old one is void.
                    buffers[i].clear();
                }
                let s = &mut standing[i];
                if caught.restarted || positions[i].offset == "-1" {
                    // A snapshot was fetched: its rows are as of some point up to where the shape
                    // was complete when it ended, which its offsets (`0_*`) do not tell.
                    s.snapshot_at = caught.complete.unwrap_or(0);
                }
                s.end = offset_tx(&caught.position.offset);
                s.complete = caught.complete;
                positions[i] = caught.position;
                buffers[i].extend(caught.data);
            }
            if let Some(lsn) = common_point(&standing) {
                report.lsn = lsn;
                report.changes += self.apply_tree(&defs, std::mem::take(&mut buffers), views.clone()).await?;
                // Members due a convergence check are compared with the server's digest; one that
                // differs starts over, and the tree goes on until it too stands at a common point
                // (its old rows stay until then).
                let mut repaired = Vec::new();
                for (i, def) in defs.iter().enumerate() {
                    if self.check_convergence(def).await? {
                        repaired.push(i);
                    }
                }
                if repaired.is_empty() {
                    return Ok(report);
                }
                report.repaired += repaired.len();
                for i in repaired {
                    positions[i] = self.position(&defs[i])?;
                    standing[i] = Standing { end: offset_tx(&positions[i].offset), ..Standing::default() };
                }
                buffers = defs.iter().map(|_| Vec::new()).collect();
            }
        }
        Err(ClientError::Protocol(format!(
            "the tree's shapes did not stand at one common point of the server's log within {:?} (its tables kept changing, or a move-in took that long); nothing was applied, try again",
            max_wait
        )))
    }

    /// Fetches `def` from `pos` until up to date, without applying anything.
    async fn catch_up(&self, def: &ShapeDef, mut pos: ShapePosition) -> Result<CaughtUp, ClientError> {
        let mut caught = CaughtUp { position: pos.clone(), ..Default::default() };
        loop {
            caught.requests += 1;
            match self.fetch(def, &pos, false).await? {
                Fetched::Refetch(new_handle) => {
                    self.reset(def, new_handle).await?;
                    pos = self.position(def)?;
                    caught.data.clear();
                    caught.restarted = true;
                }
                Fetched::Data(data) => {
                    pos = data.next.clone();
                    if let Some(lsn) = up_to_date_lsn(&data.body) {
                        caught.complete = Some(data.complete_lsn.map_or(lsn, |c| c.min(lsn)));
                    }
                    let done = pos.up_to_date;
                    caught.data.push(data);
                    if done {
                        caught.position = pos;
                        return Ok(caught);
                    }
                }
            }
        }
    }

    /// Applies every shape's fetched responses in one SQLite transaction.
    async fn apply_tree(
        &self,
        defs: &[ShapeDef],
        buffers: Vec<Vec<Data>>,
        views: Vec<TopRows>,
    ) -> Result<usize, ClientError> {
        let inner = self.inner.clone();
        let defs = defs.to_vec();
        blocking(move || {
            let mut db = inner.db.lock().unwrap_or_else(|p| p.into_inner());
            let received_ms = inner.clock.wall_ms() as i64;
            let tx = db.transaction()?;
            let mut applied = 0;
            for (def, responses) in defs.iter().zip(&buffers) {
                for data in responses {
                    let batch = Batch { body: &data.body, next: &data.next, received_ms };
                    applied += store::apply_in(&tx, def, data.schema.as_deref(), batch)?;
                }
            }
            for view in &views {
                view.create(&tx)?;
            }
            tx.commit()?;
            Ok(applied)
        })
        .await
    }
}

/// What [`Client::catch_up`] fetched.
#[derive(Default)]
struct CaughtUp {
    requests: usize,
    data: Vec<Data>,
    position: ShapePosition,
    /// The position it is complete up to, from its up-to-date.
    complete: Option<u64>,
    /// The shape started over (409).
    restarted: bool,
}

fn parse_table(text: &str) -> Result<QualifiedName, ClientError> {
    QualifiedName::parse(text).map_err(|e| ClientError::Invalid(format!("table {text:?}: {e}")))
}

/// Params `"1"`, `"2"`, … as a list; anything else is a mistake.
fn ordered_params(params: &BTreeMap<String, String>) -> Result<Vec<String>, ClientError> {
    let mut out = Vec::with_capacity(params.len());
    for i in 1..=params.len() {
        match params.get(&i.to_string()) {
            Some(v) => out.push(v.clone()),
            None => {
                return Err(ClientError::Invalid(format!(
                    "params must be numbered 1 to {} (found {:?})",
                    params.len(),
                    params.keys().collect::<Vec<_>>()
                )))
            }
        }
    }
    Ok(out)
}

/// The where clause linking `table`'s rows to `parent`'s: one alternative per foreign key
/// between the two (or the one `via` names).
fn link(
    parent: &Node,
    table: &QualifiedName,
    keys: &[ForeignKey],
    via: Option<&str>,
    name: &str,
) -> Result<String, ClientError> {
    let tuple = |cols: &[String]| {
        let quoted: Vec<String> = cols.iter().map(|c| quote_ident(c)).collect();
        if quoted.len() == 1 {
            quoted[0].clone()
        } else {
            format!("({})", quoted.join(", "))
        }
    };
    let from = |cols: &[String]| {
        let select: Vec<String> = cols.iter().map(|c| quote_ident(c)).collect();
        let mut s = format!("SELECT {} FROM {}", select.join(", "), parent.table.quoted());
        if let Some(w) = parent.where_sql.as_deref().filter(|w| !w.trim().is_empty()) {
            s.push_str(&format!(" WHERE {w}"));
        }
        s
    };
    let same = |t: &(String, String), q: &QualifiedName| t.0 == q.schema && t.1 == q.name;
    let mut alternatives = Vec::new();
    for k in keys.iter().filter(|k| via.is_none_or(|v| v == k.name)) {
        if same(&k.table, table) && same(&k.references, &parent.table) {
            // The child references its parent.
            alternatives.push(format!("{} IN ({})", tuple(&k.columns), from(&k.referenced_columns)));
        } else if same(&k.table, &parent.table) && same(&k.references, table) {
            // The parent references the child.
            alternatives.push(format!("{} IN ({})", tuple(&k.referenced_columns), from(&k.columns)));
        }
    }
    match alternatives.len() {
        0 => Err(ClientError::Invalid(format!(
            "include {name:?}: no foreign key{} links {} and {} (that the caller may read)",
            via.map(|v| format!(" named {v:?}")).unwrap_or_default(),
            table.quoted(),
            parent.table.quoted()
        ))),
        1 => Ok(alternatives.remove(0)),
        _ => Ok(alternatives.iter().map(|a| format!("({a})")).collect::<Vec<_>>().join(" OR ")),
    }
}

/// The columns of `table` that name its parent's row, for an include with a limit: those of its
/// one foreign key to the parent (or the one `via` names).
fn parent_columns(
    parent: &Node,
    table: &QualifiedName,
    keys: &[ForeignKey],
    via: Option<&str>,
    name: &str,
) -> Result<Vec<String>, ClientError> {
    let same = |t: &(String, String), q: &QualifiedName| t.0 == q.schema && t.1 == q.name;
    let to_parent: Vec<&ForeignKey> = keys
        .iter()
        .filter(|k| via.is_none_or(|v| v == k.name) && same(&k.table, table) && same(&k.references, &parent.table))
        .collect();
    match to_parent.as_slice() {
        [one] => Ok(one.columns.clone()),
        [] => Err(ClientError::Invalid(format!(
            "include {name:?}: a limit is per parent row, so {} must reference {} through a foreign key",
            table.quoted(),
            parent.table.quoted()
        ))),
        _ => Err(ClientError::Invalid(format!(
            "include {name:?}: several foreign keys link it to its parent; name the one to rank by with via"
        ))),
    }
}

/// `sql` with every parameter `$n` renumbered `$(n + by)`, leaving string literals, quoted
/// identifiers, comments and dollar-quoted strings as they are.
pub fn shift_params(sql: &str, by: usize) -> String {
    if by == 0 {
        return sql.to_string();
    }
    let b = sql.as_bytes();
    let mut out = String::with_capacity(sql.len() + 8);
    let mut i = 0;
    let copy_until = |out: &mut String, from: usize, to: usize| out.push_str(&sql[from..to]);
    while i < b.len() {
        match b[i] {
            b'\'' | b'"' => {
                let quote = b[i];
                let start = i;
                i += 1;
                // `E'…'` strings escape with backslashes.
                let escapes = quote == b'\'' && start > 0 && (b[start - 1] == b'E' || b[start - 1] == b'e');
                while i < b.len() {
                    if escapes && b[i] == b'\\' {
                        i += 2;
                        continue;
                    }
                    if b[i] == quote {
                        if i + 1 < b.len() && b[i + 1] == quote {
                            i += 2;
                            continue;
                        }
                        i += 1;
                        break;
                    }
                    i += 1;
                }
                copy_until(&mut out, start, i.min(b.len()));
            }
            b'-' if b.get(i + 1) == Some(&b'-') => {
                let start = i;
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
                copy_until(&mut out, start, i);
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let start = i;
                i += 2;
                while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                    i += 1;
                }
                i = (i + 2).min(b.len());
                copy_until(&mut out, start, i);
            }
            b'$' => {
                let start = i;
                let mut j = i + 1;
                while j < b.len() && b[j].is_ascii_digit() {
                    j += 1;
                }
                let after_ident = start > 0 && (b[start - 1].is_ascii_alphanumeric() || b[start - 1] == b'_');
                if j > i + 1 && !after_ident {
                    let n: usize = sql[i + 1..j].parse().unwrap_or(0);
                    out.push_str(&format!("${}", n + by));
                    i = j;
                    continue;
                }
                // A dollar-quoted string: `$tag$ … $tag$`.
                while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_') {
                    j += 1;
                }
                if !after_ident && j < b.len() && b[j] == b'$' {
                    let tag = &sql[start..=j];
                    let body = j + 1;
                    let end = sql[body..].find(tag).map_or(b.len(), |e| body + e + tag.len());
                    copy_until(&mut out, start, end);
                    i = end;
                    continue;
                }
                out.push('$');
                i += 1;
            }
            _ => {
                let start = i;
                i += 1;
                while i < b.len() && !matches!(b[i], b'\'' | b'"' | b'-' | b'/' | b'$') {
                    i += 1;
                }
                copy_until(&mut out, start, i);
            }
        }
    }
    out
}

/// The transaction part of an offset (`<tx>_<op>`; 0 for `-1` and the snapshot's).
/// Where one shape of a tree stands in the server's log, by what was fetched of it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Standing {
    /// The position its last entry is at (`0` for a snapshot's rows).
    end: u64,
    /// The position it is complete up to (its up-to-date, or an earlier `ferrite-complete-lsn`).
    complete: Option<u64>,
    /// When a snapshot of it was fetched since the tree was last applied: the position it was
    /// complete up to when the snapshot ended (its rows are no newer).
    snapshot_at: u64,
}

/// The common point the shapes of a tree can be applied at: `L`, the least position they are
/// all complete up to, when none holds anything after it — no entry, and no snapshot that may
/// be newer. (Move-ins and clock changes sit at `lsn + 1` of the transaction before them; no
/// commit is one byte after another, so `+ 1` cannot admit a later transaction.)
fn common_point(shapes: &[Standing]) -> Option<u64> {
    let least = shapes.iter().map(|s| s.complete).collect::<Option<Vec<u64>>>()?.into_iter().min()?;
    shapes.iter().all(|s| s.end.max(s.snapshot_at) <= least + 1).then_some(least)
}

fn offset_tx(offset: &str) -> u64 {
    offset.split('_').next().and_then(|t| t.parse().ok()).unwrap_or(0)
}

/// The `global_last_seen_lsn` of a response's up-to-date message, if it has one.
fn up_to_date_lsn(body: &[u8]) -> Option<u64> {
    let messages: Vec<ferrite_protocol::messages::ShapeMessage<'_>> = serde_json::from_slice(body).ok()?;
    messages
        .iter()
        .filter(|m| m.headers.control.as_deref() == Some("up-to-date"))
        .filter_map(|m| m.headers.global_last_seen_lsn.as_deref()?.parse().ok())
        .max()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tree_waits_for_every_shape_to_reach_a_snapshot_fetched_later() {
        let at = |end, complete, snapshot_at| Standing { end, complete: Some(complete), snapshot_at };
        // Steps complete up to 100, connections' entries end at 90: applied at 100.
        assert_eq!(common_point(&[at(95, 100, 0), at(90, 120, 0)]), Some(100));
        // Connections fetched afresh (its snapshot ended by an up-to-date at 200) while steps
        // stood at 100: a connection whose step was added at 150 could be in that snapshot, so
        // not applied until steps is complete up to 200 too.
        assert_eq!(common_point(&[at(95, 100, 0), at(0, 200, 200)]), None);
        assert_eq!(common_point(&[at(160, 200, 0), at(0, 200, 200)]), Some(200));
        // An entry after the least complete position, or a shape not complete: not yet.
        assert_eq!(common_point(&[at(95, 100, 0), at(150, 200, 0)]), None);
        assert_eq!(common_point(&[at(95, 100, 0), Standing { end: 0, complete: None, snapshot_at: 0 }]), None);
    }

    #[test]
    fn params_are_renumbered_outside_literals_identifiers_and_comments() {
        assert_eq!(shift_params("a = $1 AND b > $2", 3), "a = $4 AND b > $5");
        assert_eq!(shift_params("name = '$1' AND \"$2\" = $1", 1), "name = '$1' AND \"$2\" = $2");
        assert_eq!(shift_params("x = 'it''s $1' OR y = $10", 2), "x = 'it''s $1' OR y = $12");
        assert_eq!(shift_params("x = E'\\'$1' OR y = $1", 1), "x = E'\\'$1' OR y = $2");
        assert_eq!(shift_params("-- $1\nx = $1 /* $2 */", 1), "-- $1\nx = $2 /* $2 */");
        assert_eq!(shift_params("x = $tag$ $1 $tag$ OR y = $1", 5), "x = $tag$ $1 $tag$ OR y = $6");
        assert_eq!(shift_params("a$1 = $1", 1), "a$1 = $2", "part of an identifier");
        assert_eq!(shift_params("a = $1", 0), "a = $1");
    }

    fn fk(name: &str, table: &str, columns: &[&str], references: &str, referenced: &[&str]) -> ForeignKey {
        let q = |t: &str| ("public".to_string(), t.to_string());
        ForeignKey {
            name: name.into(),
            table: q(table),
            columns: columns.iter().map(|c| c.to_string()).collect(),
            references: q(references),
            referenced_columns: referenced.iter().map(|c| c.to_string()).collect(),
        }
    }

    #[test]
    fn links_follow_foreign_keys_both_ways_composite_and_several() {
        let pipelines = Node {
            table: QualifiedName::new("public", "pipelines"),
            where_sql: Some("id = $1".into()),
            params: vec!["7".into()],
        };
        let steps = QualifiedName::new("public", "steps");
        let keys = vec![fk("steps_pipeline", "steps", &["pipeline_id", "team_id"], "pipelines", &["id", "team_id"])];
        assert_eq!(
            link(&pipelines, &steps, &keys, None, "steps").unwrap(),
            "(\"pipeline_id\", \"team_id\") IN (SELECT \"id\", \"team_id\" FROM \"public\".\"pipelines\" WHERE id = $1)"
        );
        let step_node = Node { table: steps.clone(), where_sql: Some("x".into()), params: vec![] };
        let connections = QualifiedName::new("public", "connections");
        let keys = vec![
            fk("from_step", "connections", &["from_step_id"], "steps", &["id"]),
            fk("to_step", "connections", &["to_step_id"], "steps", &["id"]),
        ];
        let both = link(&step_node, &connections, &keys, None, "connections").unwrap();
        assert!(both.contains("(\"from_step_id\" IN") && both.contains(" OR (\"to_step_id\" IN"), "{both}");
        let one = link(&step_node, &connections, &keys, Some("to_step"), "connections").unwrap();
        assert!(one.starts_with("\"to_step_id\" IN"), "{one}");
        // A parent that references the child: comments → their authors.
        let comments = Node { table: QualifiedName::new("public", "comments"), where_sql: None, params: vec![] };
        let users = QualifiedName::new("public", "users");
        let keys = vec![fk("author", "comments", &["user_id"], "users", &["id"])];
        assert_eq!(
            link(&comments, &users, &keys, None, "users").unwrap(),
            "\"id\" IN (SELECT \"user_id\" FROM \"public\".\"comments\")"
        );
        let err = link(&comments, &users, &keys, Some("nope"), "users").unwrap_err().to_string();
        assert!(err.contains("no foreign key named \"nope\""), "{err}");
    }
}
