//! Convergence checks: the replica's own digest of a shape's synced rows, compared with the
//! server's digest of the same rows ([`ferrite_protocol::digest`]).
//!
//! For a plain shape the server sends its digest with every transaction; it is stored with the
//! shape's position (`_ferrite_shapes.digest`) in the SQLite transaction that applies the rows it
//! describes. A relational shape (and so every include-tree member) or one with a time window
//! carries none — its rows also leave through move-out events that name no row — so the client
//! asks the server for the digest at the offset its replica stands at (`GET /v1/shape/digest`,
//! which replays the shape's log), only when a check is due. The local digest is computed from
//! what SQLite holds: the shape's table, except rows with pending local writes, whose server
//! version (`_ferrite_shadow`) counts instead — so a pending write never looks like drift. A
//! mismatch means the replica no longer holds what the server sent (a damaged file, an edit
//! behind the client's back, a bug): the caller starts the shape over, fetching it afresh
//! ([`crate::Client`] does it in `sync`, `sync_tree` and in subscriptions, see
//! [`Client::verify`]).

use crate::store::{self, parse_schema, quote, LocalColumn};
use crate::{Client, ClientError, ShapeDef};
use ferrite_protocol::digest::{Canonical, ColumnKind, Digest, RowHasher, ValueKind};
use rusqlite::types::Value as Sql;
use rusqlite::{params, Connection, OptionalExtension};
use serde_json::{Map, Value};
use std::collections::HashSet;

/// The result of comparing a shape's replica with the server's digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verification {
    /// The replica holds exactly what the server sent.
    Match(Digest),
    /// The replica differs from what the server sent.
    Mismatch {
        /// The digest of the replica's rows.
        local: Digest,
        /// The digest the server sent.
        server: Digest,
    },
    /// Nothing to compare with: the shape has not synced yet, the server keeps no digest for it
    /// (a changes-only log, one too large to replay), or could not be asked now.
    Unknown,
}

/// Stores the digest of the last message that carried one (inside the apply transaction).
pub(crate) fn store_server_digest(tx: &Connection, local: &str, digest: Option<&str>) -> Result<(), ClientError> {
    tx.execute("UPDATE _ferrite_shapes SET digest = ?2 WHERE local_table = ?1", params![local, digest])?;
    Ok(())
}

/// A replica's digest, with what it is to be compared to.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ReplicaDigest {
    /// The digest of the replica's synced rows.
    local: Digest,
    /// The server's digest sent with the last change applied (plain shapes).
    server: Option<Digest>,
    /// The handle and offset the replica stands at, to ask the server when it sent none.
    position: Option<(String, String)>,
}

/// The digest of `def`'s replica; `None` before its first response.
fn replica_digest(db: &Connection, def: &ShapeDef) -> Result<Option<ReplicaDigest>, ClientError> {
    let local = def.local_table();
    type Stored = (Option<String>, Option<String>, Option<String>, String);
    let stored: Option<Stored> = db
        .query_row("SELECT digest, schema, handle, offset FROM _ferrite_shapes WHERE local_table = ?1", [&local], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })
        .optional()?;
    let Some((server, Some(schema), handle, offset)) = stored else { return Ok(None) };
    let columns = parse_schema(&schema)?;
    Ok(Some(ReplicaDigest {
        local: local_digest(db, &local, &columns)?,
        server: server.as_deref().and_then(Digest::parse),
        position: handle.filter(|_| offset != "-1").map(|h| (h, offset)),
    }))
}

fn compare(local: Digest, server: Digest) -> Verification {
    if local == server {
        Verification::Match(server)
    } else {
        Verification::Mismatch { local, server }
    }
}

/// The digest of the synced rows of `local`: its table, with rows that have pending writes
/// counted as the server last sent them.
fn local_digest(db: &Connection, local: &str, columns: &[LocalColumn]) -> Result<Digest, ClientError> {
    let hasher = RowHasher::new(columns.iter().map(|c| (c.name.as_str(), c.kind)));
    let mut digest = Digest::default();
    let mut shadows = db.prepare("SELECT key, row FROM _ferrite_shadow WHERE local_table = ?1")?;
    let shadowed: Vec<(String, Option<String>)> =
        shadows.query_map([local], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<_, _>>()?;
    let shadowed_keys: HashSet<&str> = shadowed.iter().map(|(k, _)| k.as_str()).collect();
    let names: Vec<String> = columns.iter().map(|c| quote(&c.name)).collect();
    let mut rows = db.prepare(&format!("SELECT {} FROM {}", names.join(", "), quote(local)))?;
    let mut cursor = rows.query([])?;
    while let Some(row) = cursor.next()? {
        let values: Vec<Sql> = (0..columns.len()).map(|i| row.get::<_, Sql>(i)).collect::<Result<_, _>>()?;
        if !shadowed_keys.is_empty() {
            let key_values: Map<String, Value> = store::key_columns(columns)
                .into_iter()
                .map(|c| {
                    let i = columns.iter().position(|x| x.name == c.name).unwrap_or(0);
                    (c.name.clone(), text_of(&values[i]).map_or(Value::Null, Value::String))
                })
                .collect();
            if crate::outbox::server_key(columns, &key_values).is_some_and(|k| shadowed_keys.contains(k.as_str())) {
                continue;
            }
        }
        digest.add(hasher.hash_canonical(|i, kind| canonical(kind, &values[i])));
    }
    for (_, row) in shadowed {
        let Some(row) = row else { continue };
        let Ok(value) = serde_json::from_str::<Map<String, Value>>(&row) else { continue };
        digest.add(hasher.hash_named(|name| value.get(name).and_then(Value::as_str)));
    }
    Ok(digest)
}

/// The Postgres text of a stored value (for key lookups).
fn text_of(v: &Sql) -> Option<String> {
    match v {
        Sql::Null => None,
        Sql::Integer(i) => Some(i.to_string()),
        Sql::Real(f) => Some(f.to_string()),
        Sql::Text(s) => Some(s.clone()),
        Sql::Blob(b) => Some(String::from_utf8_lossy(b).into_owned()),
    }
}

/// The canonical form of a stored value of a column of `kind` (see [`crate::store::Affinity`]
/// for how each was stored).
fn canonical(kind: ColumnKind, v: &Sql) -> Canonical<'_> {
    match v {
        Sql::Null => Canonical::Null,
        Sql::Integer(i) if !kind.array => match kind.value {
            ValueKind::Number => Canonical::Number(*i as f64),
            ValueKind::BigInt => Canonical::BigInt(i.to_string().into()),
            ValueKind::Bool => Canonical::Bool(*i != 0),
            _ => Canonical::Text(i.to_string().into()),
        },
        Sql::Real(f) if !kind.array && kind.value == ValueKind::Number => Canonical::Number(*f),
        Sql::Real(f) => Canonical::Text(f.to_string().into()),
        Sql::Integer(i) => Canonical::Text(i.to_string().into()),
        Sql::Text(s) => Canonical::from_text(kind, Some(s)),
        Sql::Blob(b) => Canonical::Text(String::from_utf8_lossy(b).into_owned().into()),
    }
}

impl Client {
    /// Compares the replica of `def` with the server's digest of the same rows — sent with the
    /// last change applied, or asked for (see [`crate::checksum`]); counted in
    /// [`crate::Metrics`]. Subscriptions, [`Client::sync`] and [`Client::sync_tree`] call it
    /// themselves every [`Client::set_checksum_interval`] and start a shape that differs over.
    pub async fn verify(&self, def: &ShapeDef) -> Result<Verification, ClientError> {
        use std::sync::atomic::Ordering::Relaxed;
        let (inner, d) = (self.inner.clone(), def.clone());
        let replica = crate::sync::blocking(move || {
            let db = inner.db.lock().unwrap_or_else(|p| p.into_inner());
            replica_digest(&db, &d)
        })
        .await?;
        let result = match replica {
            None => Verification::Unknown,
            Some(ReplicaDigest { local, server: Some(server), .. }) => compare(local, server),
            Some(ReplicaDigest { local, server: None, position: Some((handle, offset)) }) => {
                match self.server_digest(def, &handle, &offset).await {
                    Some(server) => compare(local, server),
                    None => Verification::Unknown,
                }
            }
            Some(ReplicaDigest { position: None, .. }) => Verification::Unknown,
        };
        let c = &self.inner.counters;
        match result {
            Verification::Match(_) => {
                c.checksums_verified.fetch_add(1, Relaxed);
            }
            Verification::Mismatch { local, server } => {
                c.checksums_verified.fetch_add(1, Relaxed);
                c.checksum_mismatches.fetch_add(1, Relaxed);
                tracing::warn!(table = %def.table, %local, %server, "the replica differs from the server's rows");
            }
            Verification::Unknown => {}
        }
        Ok(result)
    }

    /// Asks the server for the digest of `def`'s rows at `offset` of `handle`
    /// (`GET /v1/shape/digest`). `None` when it cannot tell (a changes-only log, one too large
    /// to replay), the handle is not the shape's any more (the next read gets the 409), or it
    /// cannot be asked now (unreachable, busy): the check waits for the next one.
    async fn server_digest(&self, def: &ShapeDef, handle: &str, offset: &str) -> Option<Digest> {
        let mut q = def.query();
        q.push(("handle".into(), handle.to_string()));
        q.push(("offset".into(), offset.to_string()));
        let query: String = form_urlencoded::Serializer::new(String::new()).extend_pairs(&q).finish();
        let asked = self.send(self.inner.http.get(format!("{}/v1/shape/digest?{query}", self.inner.base))).await;
        let body = match asked {
            Ok(r) if r.status().is_success() => r.json::<Value>().await.ok(),
            Ok(r) => {
                tracing::debug!(table = %def.table, status = r.status().as_u16(), "the server gave no digest");
                None
            }
            Err(e) => {
                tracing::debug!(table = %def.table, error = %e, "the server could not be asked for a digest");
                None
            }
        }?;
        match body.get("digest").and_then(Value::as_str) {
            Some(d) => Digest::parse(d),
            None => {
                tracing::debug!(table = %def.table, reason = %body["reason"], "the server keeps no digest for the shape");
                None
            }
        }
    }

    /// When `def` is due a check (see [`Client::set_checksum_interval`]), verifies it; on a
    /// mismatch starts it over and returns true (the caller fetches it afresh). A shape that
    /// still differs right after being fetched afresh is not started over again (that would
    /// loop): it is logged and counted in [`crate::Metrics::checksum_unrepaired`].
    pub(crate) async fn check_convergence(&self, def: &ShapeDef) -> Result<bool, ClientError> {
        use std::sync::atomic::Ordering::Relaxed;
        let local = def.local_table();
        let now = std::time::Instant::now();
        {
            let interval = *self.inner.checksum_interval.lock().unwrap_or_else(|p| p.into_inner());
            let mut checks = self.inner.checks.lock().unwrap_or_else(|p| p.into_inner());
            let state = checks.entry(local.clone()).or_insert(crate::CheckState::fresh(now));
            let Some(interval) = interval else { return Ok(false) };
            if !state.repairing && state.last.is_some_and(|last| now.duration_since(last) < interval) {
                return Ok(false);
            }
            state.last = Some(now);
        }
        let result = self.verify(def).await?;
        let repair = {
            let mut checks = self.inner.checks.lock().unwrap_or_else(|p| p.into_inner());
            let state = checks.get_mut(&local).expect("inserted above");
            match result {
                Verification::Mismatch { local: l, server } if state.repairing || state.gave_up => {
                    if !state.gave_up {
                        self.inner.counters.checksum_unrepaired.fetch_add(1, Relaxed);
                        tracing::error!(table = %def.table, local = %l, %server,
                            "the replica still differs from the server after fetching the shape afresh; not retrying");
                    }
                    state.repairing = false;
                    state.gave_up = true;
                    false
                }
                Verification::Mismatch { .. } => {
                    state.repairing = true;
                    true
                }
                Verification::Match(_) | Verification::Unknown => {
                    state.repairing = false;
                    false
                }
            }
        };
        if repair {
            self.inner.counters.checksum_repairs.fetch_add(1, Relaxed);
            self.reset(def, None).await?;
        }
        Ok(repair)
    }
}
