//! `ferrite client …`: try the Rust client from a shell — sync shapes into a local SQLite file,
//! query it, write offline and push later, see where each shape stands.

use anyhow::{anyhow, Context, Result};
use clap::Subcommand;
use ferrite_client::{Change, Client, ShapeDef, TokenSource};
use std::path::{Path, PathBuf};

/// The `client` subcommands.
#[derive(Subcommand)]
pub enum ClientCommand {
    /// Catch a shape up into the local file (resuming where the last sync stopped); with
    /// `--follow`, keep it live until Ctrl-C.
    Sync {
        #[command(flatten)]
        replica: Replica,
        /// Table to sync (`name` or `schema.name`).
        #[arg(long)]
        table: String,
        /// Where clause.
        #[arg(long = "where")]
        where_sql: Option<String>,
        /// Columns to sync, comma-separated (must include the primary key).
        #[arg(long)]
        columns: Option<String>,
        /// Local table name (default: the table's name).
        #[arg(long)]
        into: Option<String>,
        /// Keep syncing live until interrupted.
        #[arg(long)]
        follow: bool,
        /// Rows related through foreign keys, synced with it as one include tree (applied only
        /// at a common point of the server's log): a JSON object of name → {"table", "where",
        /// "params", "columns", "via", "into", "limit", "order_by", "include"}, every key
        /// optional ("limit" needs "order_by": the top rows per parent), e.g.
        /// '{"steps": {"include": {"connections": {}}}, "comments": {"include": {"authors":
        /// {"table": "users"}}}}'. The name is the table and the local table unless "table" /
        /// "into" say otherwise.
        #[arg(long)]
        include: Option<String>,
    },
    /// Write one change locally (visible at once, queued for `push`); works offline. Values are
    /// JSON objects of column → Postgres text (or null). An update or delete needs the row in the
    /// replica.
    Write {
        /// The SQLite file.
        #[arg(long, default_value = "ferrite-replica.db")]
        db: PathBuf,
        /// Local table (synced before).
        #[arg(long)]
        table: String,
        /// Insert this row, e.g. '{"id":"7","name":"Build"}'.
        #[arg(long, conflicts_with_all = ["update", "delete"])]
        insert: Option<String>,
        /// Update the row with this key, e.g. '{"id":"7"}' (with --set).
        #[arg(long, requires = "set", conflicts_with = "delete")]
        update: Option<String>,
        /// The columns to set, e.g. '{"name":"Deploy"}'.
        #[arg(long)]
        set: Option<String>,
        /// Delete the row with this key, e.g. '{"id":"7"}'.
        #[arg(long)]
        delete: Option<String>,
    },
    /// Send the queued local writes to the server and report what it answered; exits non-zero
    /// when the server rejected any (they are rolled back locally).
    Push {
        #[command(flatten)]
        replica: Replica,
    },
    /// Run SQL against the local file and print the rows as JSON arrays, one per line.
    Query {
        /// The SQLite file.
        #[arg(long, default_value = "ferrite-replica.db")]
        db: PathBuf,
        /// The query.
        sql: String,
    },
    /// Show each synced shape (local table, handle, offset, whether it was up to date) and the
    /// local writes not yet pushed or not yet confirmed.
    Status {
        /// The SQLite file.
        #[arg(long, default_value = "ferrite-replica.db")]
        db: PathBuf,
    },
}

/// Where the replica lives and which server it follows.
#[derive(clap::Args)]
pub struct Replica {
    /// The SQLite file.
    #[arg(long, default_value = "ferrite-replica.db")]
    db: PathBuf,
    /// Ferrite server URL, or set FERRITE_URL (`ferrite dev` prints the line to paste).
    #[arg(long, env = "FERRITE_URL", default_value = "http://127.0.0.1:3000")]
    server: String,
    /// Bearer token (JWT mode), or set FERRITE_TOKEN.
    #[arg(long, env = "FERRITE_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

/// The replica file of a command that reads or changes an existing replica: only `sync`
/// creates one (a misspelt `--db` must not quietly start an empty replica).
fn existing(db: &Path) -> Result<&Path> {
    if db.is_file() {
        Ok(db)
    } else if db.exists() {
        Err(anyhow!("{} is not a file", db.display()))
    } else {
        Err(anyhow!(
            "{} does not exist: `ferrite client sync --db {} --table …` creates the replica",
            db.display(),
            db.display()
        ))
    }
}

/// Runs a `client` subcommand.
pub async fn run(cmd: ClientCommand) -> Result<()> {
    match cmd {
        ClientCommand::Sync { replica, table, where_sql, columns, into, follow, include } => {
            let token = replica.token.map(TokenSource::Static).unwrap_or_default();
            let client = Client::open(&replica.db, &replica.server, token)
                .with_context(|| format!("opening {}", replica.db.display()))?;
            let mut def = ShapeDef::table(&table);
            def.where_sql = where_sql;
            def.columns = columns.map(|c| c.split(',').map(|s| s.trim().to_string()).collect());
            def.local_table = into;
            if let Some(spec) = include {
                let spec: serde_json::Value =
                    serde_json::from_str(&spec).context("--include must be a JSON object of name → include")?;
                let tree = ferrite_client::Tree { root: def, include: includes(&spec, "--include")? };
                return sync_tree(&client, tree, follow, &replica.db).await;
            }
            let report = client.sync(&def).await.map_err(|e| anyhow!("{e}"))?;
            println!(
                "{}: up to date ({} changes in {} requests{}) → table {} in {}",
                table,
                report.changes,
                report.requests,
                if report.refetches > 0 { format!(", {} refetches", report.refetches) } else { String::new() },
                def.local_table(),
                replica.db.display()
            );
            if follow {
                return follow_until_interrupted(client.subscribe(def)).await;
            }
            Ok(())
        }
        ClientCommand::Write { db, table, insert, update, set, delete } => {
            let client = Client::open(existing(&db)?, "http://unused", TokenSource::None)?;
            let values = |flag: &str, json: &str| -> Result<ferrite_client::Values> {
                serde_json::from_str(json)
                    .with_context(|| format!("--{flag} must be a JSON object of column → text or null"))
            };
            let change = match (insert, update, set, delete) {
                (Some(v), None, None, None) => Change::Insert { table, values: values("insert", &v)? },
                (None, Some(k), Some(s), None) => {
                    Change::Update { table, key: values("update", &k)?, set: values("set", &s)? }
                }
                (None, None, None, Some(k)) => Change::Delete { table, key: values("delete", &k)? },
                _ => return Err(anyhow!("give one of --insert, --update with --set, or --delete")),
            };
            let id = client.write(&[change]).map_err(|e| anyhow!("{e}"))?;
            println!(
                "written locally as transaction {id}; {} waiting to be pushed",
                client.pending().map_err(|e| anyhow!("{e}"))?
            );
            Ok(())
        }
        ClientCommand::Push { replica } => {
            let token = replica.token.map(TokenSource::Static).unwrap_or_default();
            let client = Client::open(existing(&replica.db)?, &replica.server, token)?;
            let report = client.push().await.map_err(|e| anyhow!("{e}"))?;
            println!(
                "pushed {} transactions: {} accepted, {} rejected",
                report.sent,
                report.accepted,
                report.rejected.len()
            );
            for r in &report.rejected {
                let (code, message) =
                    r.error.as_ref().map(|e| (e.code.as_str(), e.message.as_str())).unwrap_or(("", ""));
                println!("  rejected {}: {code} {message}", r.id);
            }
            if !report.rejected.is_empty() {
                return Err(anyhow!(
                    "the server rejected {} of {} transactions (rolled back locally; see above)",
                    report.rejected.len(),
                    report.sent
                ));
            }
            Ok(())
        }
        ClientCommand::Query { db, sql } => {
            let client = Client::open(existing(&db)?, "http://unused", TokenSource::None)?;
            for row in client.query(&sql, &[]).map_err(|e| anyhow!("{e}"))? {
                println!("{}", serde_json::Value::Array(row));
            }
            Ok(())
        }
        ClientCommand::Status { db } => {
            let client = Client::open(existing(&db)?, "http://unused", TokenSource::None)?;
            let rows = client
                .query("SELECT local_table, definition, handle, offset, up_to_date, last_sync_ms FROM _ferrite_shapes ORDER BY local_table", &[])
                .map_err(|e| anyhow!("{e}"))?;
            if rows.is_empty() {
                println!("no shapes synced into {} yet", db.display());
            }
            for r in rows {
                println!(
                    "{}: {} handle {} offset {} {}",
                    r[0].as_str().unwrap_or(""),
                    r[1].as_str().unwrap_or(""),
                    r[2].as_str().unwrap_or("-"),
                    r[3].as_str().unwrap_or("-"),
                    if r[4] == 1 { "up to date" } else { "catching up" }
                );
            }
            let queued = client.queued().map_err(|e| anyhow!("{e}"))?;
            let (accepted, waiting): (Vec<_>, Vec<_>) = queued.iter().partition(|t| t.accepted);
            let describe = |t: &ferrite_client::QueuedTransaction| {
                format!(
                    "  transaction {}: {} change{} to {}{}",
                    t.id,
                    t.changes,
                    if t.changes == 1 { "" } else { "s" },
                    t.tables.join(", "),
                    if t.sent && !t.accepted { " (sent, no answer yet: pushed again on the next push)" } else { "" }
                )
            };
            if waiting.is_empty() {
                println!("no local writes waiting to be pushed");
            } else {
                let n = waiting.len();
                println!("{n} local transaction{} waiting to be pushed:", if n == 1 { "" } else { "s" });
                waiting.iter().for_each(|t| println!("{}", describe(t)));
            }
            if !accepted.is_empty() {
                println!(
                    "{} pushed and accepted, waiting for {} changes to come back through the shapes (sync):",
                    accepted.len(),
                    if accepted.len() == 1 { "its" } else { "their" }
                );
                accepted.iter().for_each(|t| println!("{}", describe(t)));
            }
            Ok(())
        }
    }
}

/// Syncs an include tree (once, or live with `follow`), printing what it did.
async fn sync_tree(client: &Client, tree: ferrite_client::Tree, follow: bool, db: &std::path::Path) -> Result<()> {
    let shapes = client.tree_shapes(&tree).await.map_err(|e| anyhow!("{e}"))?;
    let report = client.sync_tree(&tree).await.map_err(|e| anyhow!("{e}"))?;
    let tables: Vec<String> = shapes.iter().map(|d| d.local_table()).collect();
    println!(
        "tree of {} shapes: up to date at {} ({} changes in {} requests, {} rounds) → tables {} in {}",
        shapes.len(),
        report.lsn,
        report.changes,
        report.requests,
        report.rounds,
        tables.join(", "),
        db.display()
    );
    if follow {
        return follow_until_interrupted(client.subscribe_tree(tree)).await;
    }
    Ok(())
}

/// Prints a live subscription's status as it changes, until Ctrl-C.
async fn follow_until_interrupted(sub: ferrite_client::Subscription) -> Result<()> {
    let mut status = sub.status();
    let stop = crate::StopSignals::catch().wait();
    tokio::pin!(stop);
    println!("following; Ctrl-C to stop");
    loop {
        tokio::select! {
            _ = &mut stop => return Ok(()),
            changed = status.changed() => {
                if changed.is_err() { return Ok(()); }
                println!("status: {:?}", *status.borrow_and_update());
            }
        }
    }
}

/// The includes of an `--include` object (`at` names where it is, for errors).
fn includes(spec: &serde_json::Value, at: &str) -> Result<std::collections::BTreeMap<String, ferrite_client::Include>> {
    let object = spec.as_object().ok_or_else(|| anyhow!("{at} must be a JSON object of name → include"))?;
    let mut out = std::collections::BTreeMap::new();
    for (name, body) in object {
        let here = format!("{at}.{name}");
        let fields = body.as_object().ok_or_else(|| anyhow!("{here} must be an object (use {{}} for the defaults)"))?;
        let text = |key: &str| -> Result<Option<String>> {
            match fields.get(key) {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(anyhow!("{here}.{key} must be a string")),
            }
        };
        let mut include = ferrite_client::Include {
            table: text("table")?,
            where_sql: text("where")?,
            via: text("via")?,
            local_table: text("into")?,
            order_by: text("order_by")?,
            ..Default::default()
        };
        for (key, value) in fields {
            match key.as_str() {
                "table" | "where" | "via" | "into" | "order_by" => {}
                "limit" => {
                    include.limit =
                        Some(value.as_u64().ok_or_else(|| anyhow!("{here}.limit must be a whole number"))?);
                }
                "params" => {
                    let params = value
                        .as_object()
                        .ok_or_else(|| anyhow!("{here}.params must be an object like {{\"1\": \"…\"}}"))?;
                    for (k, v) in params {
                        let v = v.as_str().ok_or_else(|| anyhow!("{here}.params.{k} must be a string"))?;
                        include.params.insert(k.clone(), v.to_string());
                    }
                }
                "columns" => {
                    let cols = value.as_array().ok_or_else(|| anyhow!("{here}.columns must be an array of names"))?;
                    let mut names = Vec::with_capacity(cols.len());
                    for c in cols {
                        names.push(c.as_str().ok_or_else(|| anyhow!("{here}.columns must hold names"))?.to_string());
                    }
                    include.columns = Some(names);
                }
                "include" => include.include = includes(value, &format!("{here}.include"))?,
                other => {
                    return Err(anyhow!(
                        "{here}: unknown key {other:?} (expected table, where, params, columns, via, into, limit, order_by, include)"
                    ))
                }
            }
        }
        out.insert(name.clone(), include);
    }
    Ok(out)
}
