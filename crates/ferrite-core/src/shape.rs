//! Shape definitions and how one row change becomes shape-log messages.
//!
//! A shape is a table + optional where clause + optional column projection + replica mode. The
//! conversion here is Electric's `convert_change`: updates that move a row into or out of the
//! where clause become inserts or deletes, primary-key changes become a delete + insert pair, and
//! `replica=default` sends only the primary key and changed columns of an update.

use ferrite_protocol::digest::{ColumnKind, Digest, DigestDelta, RowHasher};
use ferrite_protocol::key::row_key;
use ferrite_protocol::relation::{split_identifiers, QualifiedName};
use ferrite_protocol::schema::TableSchema;
use ferrite_where::{BoundRule, TimeTerm, WhereClause, WhereError};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

/// `replica` parameter: how much of a row updates and deletes carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Replica {
    /// Updates carry PK + changed columns, deletes carry the PK.
    #[default]
    Default,
    /// Updates carry the full new row + `old_value`, deletes the full old row.
    Full,
}

/// `log` parameter: whether the shape starts with a snapshot of the existing rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogMode {
    /// Initial snapshot, then changes.
    #[default]
    Full,
    /// Only changes after the shape was created.
    ChangesOnly,
}

/// What identifies a shape: two requests with equal definitions share a shape and its log.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct ShapeDefinition {
    /// Root table.
    pub table: QualifiedName,
    /// Where clause as the client wrote it.
    pub where_sql: Option<String>,
    /// `params[n]` values for `$n` in the where clause.
    pub params: BTreeMap<String, String>,
    /// Projection as exact column names, or all columns.
    pub columns: Option<Vec<String>>,
    /// Replica mode.
    pub replica: Replica,
    /// Log mode.
    pub log: LogMode,
    /// The table's read rule bound to the caller (JWT mode), ANDed with `where_sql` as a
    /// separately compiled tree. Absent in shapes stored before rules were kept apart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<BoundRule>,
    /// The read rules, bound to the caller, of the tables the client's subqueries read (by
    /// qualified name): each subquery on such a table is held to its rule, so a where clause
    /// cannot learn through a subquery what its caller could not read directly. Part of the
    /// definition, so callers with different claims never share a shape.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub inner_rules: BTreeMap<String, BoundRule>,
}

impl ShapeDefinition {
    /// A shape of `table`'s rows that match `where_sql` (all rows when `None`): every column, the
    /// default replica and log modes, no parameters and no rule. What a plain request asks for.
    pub fn of_table(table: QualifiedName, where_sql: Option<&str>) -> ShapeDefinition {
        ShapeDefinition {
            table,
            where_sql: where_sql.map(String::from),
            params: BTreeMap::new(),
            columns: None,
            replica: Replica::default(),
            log: LogMode::default(),
            rule: None,
            inner_rules: BTreeMap::new(),
        }
    }
}

/// Why a definition could not be compiled against its table; `field` names the request parameter,
/// or is [`ShapeError::RULE`] when the server's read rule cannot be applied to the caller.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct ShapeError {
    /// Request field at fault (`where`, `params`, `columns`).
    pub field: &'static str,
    /// Message for the client.
    pub message: String,
}

impl ShapeError {
    /// `field` of an error in the read rule rather than in anything the client sent.
    pub const RULE: &'static str = "rule";
}

impl From<WhereError> for ShapeError {
    fn from(e: WhereError) -> Self {
        ShapeError { field: e.field(), message: e.to_string() }
    }
}

/// Parses the `columns` parameter (comma list, quoted identifiers allowed).
pub fn parse_columns_param(raw: &str) -> Result<Vec<String>, String> {
    split_identifiers(raw, ',').map_err(|e| match e {
        ferrite_protocol::relation::RelationNameError::Malformed(m) => m,
        other => other.to_string(),
    })
}

/// A definition compiled against the table schema: what the router evaluates per change.
#[derive(Debug)]
pub struct ShapeFilter {
    /// Table schema the shape was compiled against.
    pub table: Arc<TableSchema>,
    /// Compiled where clause.
    pub where_clause: Option<WhereClause>,
    /// Selected column indexes in table order (always includes the key columns).
    pub selected: Vec<usize>,
    /// Replica mode.
    pub replica: Replica,
    /// The where clause as positions and disjuncts, when it has subqueries: the shape is then
    /// *relational* — rows move in and out as the subqueries' results change, and its messages
    /// carry tags ([`crate::tags`]). A clause that reads the current time but has no subqueries
    /// is followed the same way, as one plain position (its messages carry no tags).
    pub conditions: Option<ferrite_where::Conditions>,
    /// The where clause's comparisons with the current time: the shape's rows then change as the
    /// clock advances ([`ferrite_where::window`]).
    pub time_terms: Vec<TimeTerm>,
    pub(crate) key_columns: Vec<usize>,
    relation_json: String,
    /// Hashes the selected columns of a row for the shape's convergence digest, kept change by
    /// change ([`ferrite_protocol::digest`]); `None` for a relational shape, whose rows also
    /// leave through move-out events that name no row (its digest is computed on demand, see
    /// [`ShapeFilter::replay`]).
    digest: Option<RowHasher>,
}

/// The tables a shape's subqueries read, as the server found them in Postgres, with the read
/// rules its client's subqueries are held to (from [`ShapeDefinition::inner_rules`]).
#[derive(Debug, Clone, Default)]
pub struct ShapeTables {
    /// Inner tables by name.
    pub tables: std::collections::HashMap<QualifiedName, Arc<TableSchema>>,
    rules: BTreeMap<String, BoundRule>,
}

impl ShapeTables {
    /// The tables `tables`, holding subqueries to the rules of `def`.
    pub fn new(tables: impl IntoIterator<Item = Arc<TableSchema>>, def: &ShapeDefinition) -> ShapeTables {
        ShapeTables {
            tables: tables.into_iter().map(|t| (t.name.clone(), t)).collect(),
            rules: def.inner_rules.clone(),
        }
    }

    /// The same tables without rules: what a table's own read rule reads through.
    fn unruled(&self) -> ShapeTables {
        ShapeTables { tables: self.tables.clone(), rules: BTreeMap::new() }
    }
}

impl ferrite_where::Catalog for ShapeTables {
    fn table(&self, name: &QualifiedName) -> Option<Arc<TableSchema>> {
        self.tables.get(name).cloned()
    }

    fn read_rule(&self, table: &TableSchema) -> Result<Option<WhereClause>, WhereError> {
        match self.rules.get(&table.name.to_string()) {
            None => Ok(None),
            // The rule's own subqueries (a membership) read their tables as they are.
            Some(rule) => WhereClause::compile_rule_with(rule, table, &self.unruled()).map(Some).map_err(|e| {
                WhereError::Unsupported(format!(
                    "the read rule of table {} cannot be applied inside a subquery: {e}",
                    table.name.quoted()
                ))
            }),
        }
    }
}

/// One row change as the replication stream delivers it (values aligned with the table columns).
#[derive(Debug, Clone, Copy)]
pub enum RowChange<'a> {
    /// A new row.
    Insert {
        /// The row's values.
        new: &'a [Option<String>],
    },
    /// A changed row with its full old version (REPLICA IDENTITY FULL), so a shape can tell a
    /// row that moved out of its where clause from one that was never in it.
    Update {
        /// The values before the change.
        old: &'a [Option<String>],
        /// The values after it.
        new: &'a [Option<String>],
    },
    /// A removed row.
    Delete {
        /// The values it had (the shape needs them to know whether it held the row).
        old: &'a [Option<String>],
    },
}

/// Where a row stands towards a shape ([`ShapeFilter::convert_judged`]): in it or not, and — for
/// a relational shape — its tags and which of the where clause's conditions hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Standing {
    pub(crate) holds: bool,
    pub(crate) tags: Vec<String>,
    pub(crate) active: Vec<bool>,
}

/// A converted message whose transaction position is known but not yet whether it is the
/// transaction's last one for this shape. [`PendingMessage::finish`] renders the final JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingMessage {
    /// `op` part of the log offset (2 × change index, +1 for the insert half of a key change).
    pub op: u64,
    /// What the change does to the shape's convergence digest (zero for a relational shape).
    pub digest: DigestDelta,
    /// `insert`, `update` or `delete`.
    operation: &'static str,
    head: String,
    tail: String,
}

impl PendingMessage {
    /// Final JSON text; `last` marks the transaction's last message for this shape.
    pub fn finish(&self, last: bool) -> String {
        self.finish_with(last, None)
    }

    /// [`PendingMessage::finish`], with the shape's digest after the transaction in the last
    /// message's `ferrite_digest` header.
    pub fn finish_with(&self, last: bool, digest: Option<&Digest>) -> String {
        let mut s = String::with_capacity(self.head.len() + self.tail.len() + 64);
        s.push_str(&self.head);
        s.push_str(&self.tail);
        if last {
            s.push_str(",\"last\":true");
            if let Some(d) = digest {
                let _ = write!(s, ",\"ferrite_digest\":\"{d}\"");
            }
        }
        s.push_str("}}");
        s
    }
}

impl ShapeFilter {
    /// Compiles `def` against `table`: resolves the projection and the where clause, which may
    /// not have subqueries (see [`ShapeFilter::compile_with`]).
    pub fn compile(def: &ShapeDefinition, table: Arc<TableSchema>) -> Result<ShapeFilter, ShapeError> {
        Self::compile_from(def, table, None)
    }

    /// Like [`ShapeFilter::compile`], with subqueries over `tables` in the client's where clause
    /// and in the read rule.
    pub fn compile_with(
        def: &ShapeDefinition,
        table: Arc<TableSchema>,
        tables: &ShapeTables,
    ) -> Result<ShapeFilter, ShapeError> {
        Self::compile_from(def, table, Some(tables))
    }

    fn compile_from(
        def: &ShapeDefinition,
        table: Arc<TableSchema>,
        tables: Option<&ShapeTables>,
    ) -> Result<ShapeFilter, ShapeError> {
        let key_columns = table.key_columns();
        let selected = match &def.columns {
            None => (0..table.columns.len()).collect(),
            Some(names) => {
                let mut idx = Vec::with_capacity(names.len());
                for n in names {
                    match table.column_index(n) {
                        Some(i) => idx.push(i),
                        None => {
                            return Err(ShapeError {
                                field: "columns",
                                message: format!("The following columns could not be found: {n}"),
                            })
                        }
                    }
                }
                if table.has_primary_key() {
                    let missing: Vec<&str> = key_columns
                        .iter()
                        .filter(|k| !idx.contains(k))
                        .map(|k| table.columns[*k].name.as_str())
                        .collect();
                    if !missing.is_empty() {
                        return Err(ShapeError {
                            field: "columns",
                            message: format!(
                                "The list of columns must include all primary key columns, missing: {}",
                                missing.join(", ")
                            ),
                        });
                    }
                }
                idx.sort_unstable();
                idx.dedup();
                idx
            }
        };
        let client = match (&def.where_sql, tables) {
            (Some(sql), _) if sql.trim().is_empty() => None,
            (Some(sql), None) => Some(WhereClause::compile(sql, &def.params, &table)?),
            (Some(sql), Some(tables)) => Some(WhereClause::compile_with(sql, &def.params, &table, tables)?),
            (None, _) => None,
        };
        let rule = match &def.rule {
            Some(rule) => Some(compile_rule(rule, &table, tables).map_err(|e| ShapeError {
                field: ShapeError::RULE,
                message: format!("the read rule of table {} cannot be applied to this token: {e}", table.name.quoted()),
            })?),
            None => None,
        };
        // A rule its claims alone make false (a visitor's token on a staff-only table) refuses
        // the token outright rather than serving it an empty shape.
        if rule.as_ref().is_some_and(WhereClause::never_holds) {
            return Err(ShapeError {
                field: ShapeError::RULE,
                message: format!(
                    "the read rule of table {} admits no row for this token (its claims make it false)",
                    table.name.quoted()
                ),
            });
        }
        let where_clause = match (client, rule) {
            (Some(c), Some(r)) => Some(c.and(r)),
            (c, r) => c.or(r),
        };
        let (conditions, time_terms) = match &where_clause {
            Some(w) => relational_conditions(w, &table)?,
            None => (None, Vec::new()),
        };
        let relation_json = format!("[{},{}]", json_str(&table.name.schema), json_str(&table.name.name));
        let digest = conditions.is_none().then(|| row_hasher(&table, &selected));
        Ok(ShapeFilter {
            digest,
            table,
            where_clause,
            selected,
            replica: def.replica,
            conditions,
            time_terms,
            key_columns,
            relation_json,
        })
    }

    /// Whether the shape's where clause has subqueries or reads the current time (see
    /// [`ShapeFilter::conditions`]): its rows are judged by more than themselves.
    pub fn is_relational(&self) -> bool {
        self.conditions.is_some()
    }

    /// Whether the shape's rows change as the clock advances ([`ShapeFilter::time_terms`]).
    pub fn reads_time(&self) -> bool {
        !self.time_terms.is_empty()
    }

    /// The subqueries the shape's where clause asks about, in the order of its positions'
    /// `sub` numbers (empty for a plain shape).
    pub fn subqueries(&self) -> &[ferrite_where::Subquery] {
        self.where_clause.as_ref().map_or(&[], |w| w.subqueries())
    }

    /// Every table the shape's subqueries read, nested ones included, each once.
    pub fn tables_read(&self) -> Vec<Arc<TableSchema>> {
        subquery_tables(self.subqueries())
    }

    /// `["schema","table"]` as JSON, for message headers.
    pub fn relation_json(&self) -> &str {
        &self.relation_json
    }

    /// True if the row satisfies the where clause. Rows the evaluator cannot judge (a value it
    /// cannot parse) do not match; the caller logs it.
    pub fn row_matches(&self, row: &[Option<String>]) -> bool {
        match &self.where_clause {
            None => true,
            Some(w) => w.matches(row).unwrap_or(false),
        }
    }

    /// Converts change number `index` of a transaction into 0, 1 or 2 messages for this shape.
    pub fn convert(&self, change: RowChange<'_>, index: usize, lsn: u64, xid: u32) -> Vec<PendingMessage> {
        let judge = |row: &[Option<String>]| Standing { holds: self.row_matches(row), ..Standing::default() };
        let mut messages = self.convert_judged(change, index, lsn, xid, judge, |_, _| String::new());
        // What the change does to the digest, on its first message: the messages say whether
        // the row entered (insert), left (delete), or changed in place or key (update, or a
        // delete and an insert).
        if let (Some(hasher), Some(first)) = (&self.digest, messages.first()) {
            let hash =
                |row: &[Option<String>]| hasher.hash_texts(|i| row.get(self.selected[i]).and_then(|v| v.as_deref()));
            let mut delta = DigestDelta::default();
            match change {
                RowChange::Insert { new } => delta.add(hash(new)),
                RowChange::Delete { old } => delta.remove(hash(old)),
                RowChange::Update { old, new } => {
                    if messages.len() == 2 || first.operation == "update" {
                        delta.remove(hash(old));
                        delta.add(hash(new));
                    } else if first.operation == "delete" {
                        delta.remove(hash(old));
                    } else {
                        delta.add(hash(new));
                    }
                }
            }
            messages[0].digest = delta;
        }
        messages
    }

    /// [`ShapeFilter::convert`], with whether a row is in the shape (and why) decided by `judge`,
    /// and `headers(standing, removed tags)` added to each message's headers: a plain shape
    /// judges by its where clause alone, a relational one by its conditions and tags
    /// ([`crate::tags`]). An update whose row stays in the shape is sent when a column the shape
    /// sends changed, or when why the row is in the shape did.
    pub(crate) fn convert_judged(
        &self,
        change: RowChange<'_>,
        index: usize,
        lsn: u64,
        xid: u32,
        judge: impl Fn(&[Option<String>]) -> Standing,
        headers: impl Fn(&Standing, &[String]) -> String,
    ) -> Vec<PendingMessage> {
        let op = 2 * index as u64;
        let insert = |op, row, standing: &Standing, key_change| {
            self.message("insert", op, lsn, xid, row, &self.selected, None, key_change, &headers(standing, &[]))
        };
        let delete = |op, row, standing: &Standing, key_change| {
            self.message("delete", op, lsn, xid, row, self.delete_columns(), None, key_change, &headers(standing, &[]))
        };
        match change {
            RowChange::Insert { new } => {
                let is = judge(new);
                if is.holds {
                    vec![insert(op, new, &is, None)]
                } else {
                    vec![]
                }
            }
            RowChange::Delete { old } => {
                let was = judge(old);
                if was.holds {
                    vec![delete(op, old, &was, None)]
                } else {
                    vec![]
                }
            }
            RowChange::Update { old, new } => {
                let (was, is) = (judge(old), judge(new));
                match (was.holds, is.holds) {
                    (false, false) => vec![],
                    (true, false) => vec![delete(op, old, &was, None)],
                    (false, true) => vec![insert(op, new, &is, None)],
                    (true, true) => {
                        let old_key = row_key(&self.table, old);
                        let new_key = row_key(&self.table, new);
                        if old_key != new_key {
                            let del = delete(op, old, &was, Some(("key_change_to", new_key.as_str())));
                            let ins = insert(op + 1, new, &is, Some(("key_change_from", old_key.as_str())));
                            return vec![del, ins];
                        }
                        let changed: Vec<usize> =
                            self.selected.iter().copied().filter(|&i| old.get(i) != new.get(i)).collect();
                        if changed.is_empty() && was == is {
                            return vec![];
                        }
                        let removed: Vec<String> = was.tags.iter().filter(|t| !is.tags.contains(t)).cloned().collect();
                        let extra = headers(&is, &removed);
                        match self.replica {
                            Replica::Full => {
                                vec![self.message(
                                    "update",
                                    op,
                                    lsn,
                                    xid,
                                    new,
                                    &self.selected,
                                    Some((old, &changed)),
                                    None,
                                    &extra,
                                )]
                            }
                            Replica::Default => {
                                let cols: Vec<usize> = self
                                    .selected
                                    .iter()
                                    .copied()
                                    .filter(|i| self.key_columns.contains(i) || changed.contains(i))
                                    .collect();
                                vec![self.message("update", op, lsn, xid, new, &cols, None, None, &extra)]
                            }
                        }
                    }
                }
            }
        }
    }

    pub(crate) fn delete_columns(&self) -> &[usize] {
        match self.replica {
            Replica::Full => &self.selected,
            Replica::Default => &self.key_columns,
        }
    }

    /// A change message; `extra_headers` (`,"name":value` pairs) go at the end of its headers.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn message(
        &self,
        operation: &'static str,
        op: u64,
        lsn: u64,
        xid: u32,
        row: &[Option<String>],
        columns: &[usize],
        old_value: Option<(&[Option<String>], &[usize])>,
        key_change: Option<(&str, &str)>,
        extra_headers: &str,
    ) -> PendingMessage {
        let mut head = String::with_capacity(128);
        head.push_str("{\"key\":");
        head.push_str(&json_str(&row_key(&self.table, row)));
        head.push_str(",\"value\":");
        self.push_values(&mut head, row, columns);
        if let Some((old, changed)) = old_value {
            head.push_str(",\"old_value\":");
            self.push_values(&mut head, old, changed);
        }
        let _ = write!(
            head,
            ",\"headers\":{{\"operation\":\"{operation}\",\"relation\":{},\"txids\":[{xid}],\"lsn\":\"{lsn}\",\"op_position\":{op}",
            self.relation_json
        );
        let mut tail = String::new();
        if let Some((name, key)) = key_change {
            let _ = write!(tail, ",\"{name}\":{}", json_str(key));
        }
        tail.push_str(extra_headers);
        PendingMessage { op, digest: DigestDelta::default(), operation, head, tail }
    }

    /// An insert message without a transaction (`lsn`, `txids`): a snapshot row or a row of a
    /// move-in; `extra_headers` as for [`ShapeFilter::message`].
    pub(crate) fn row_message(&self, row: &[Option<String>], extra_headers: &str) -> String {
        self.untimed_message("insert", row, &self.selected, extra_headers)
    }

    /// A message without a transaction (`lsn`, `txids`): a row read from Postgres, or one the
    /// clock moved in or out of the shape; `columns` of `row` as its value.
    pub(crate) fn untimed_message(
        &self,
        operation: &str,
        row: &[Option<String>],
        columns: &[usize],
        extra_headers: &str,
    ) -> String {
        let mut s = String::with_capacity(128);
        s.push_str("{\"key\":");
        s.push_str(&json_str(&row_key(&self.table, row)));
        s.push_str(",\"value\":");
        self.push_values(&mut s, row, columns);
        let _ = write!(
            s,
            ",\"headers\":{{\"operation\":\"{operation}\",\"relation\":{}{extra_headers}}}}}",
            self.relation_json
        );
        s
    }

    fn push_values(&self, out: &mut String, row: &[Option<String>], columns: &[usize]) {
        out.push('{');
        for (n, &i) in columns.iter().enumerate() {
            if n > 0 {
                out.push(',');
            }
            out.push_str(&json_str(&self.table.columns[i].name));
            out.push(':');
            match row.get(i).and_then(|v| v.as_deref()) {
                Some(v) => out.push_str(&json_str(v)),
                None => out.push_str("null"),
            }
        }
        out.push('}');
    }
}

/// A read rule compiled against its table, reading other tables (without their rules) when it
/// has subqueries.
fn compile_rule(
    rule: &BoundRule,
    table: &TableSchema,
    tables: Option<&ShapeTables>,
) -> Result<WhereClause, WhereError> {
    match tables {
        Some(tables) => WhereClause::compile_rule_with(rule, table, &tables.unruled()),
        None => WhereClause::compile_rule(rule, table),
    }
}

/// The conditions of a where clause with subqueries or the current time, checked for what live
/// shapes follow: subqueries nested to any depth (on the shape's own table too), the outermost
/// ones on tables with primary keys, and the time only in time terms
/// ([`ferrite_where::window`]); with those time terms.
fn relational_conditions(
    w: &WhereClause,
    table: &TableSchema,
) -> Result<(Option<ferrite_where::Conditions>, Vec<TimeTerm>), ShapeError> {
    let refuse = |message: String| ShapeError { field: "where", message };
    let terms = w.time_terms()?;
    if w.subqueries().is_empty() {
        // A clause that reads the clock is followed like a relational one, with one position.
        let conditions = (!terms.is_empty()).then(|| ferrite_where::Conditions::plain(w.clone()));
        return Ok((conditions, terms));
    }
    for q in w.subqueries() {
        if !q.table.has_primary_key() {
            return Err(refuse(format!(
                "table {} has no primary key: a shape's subquery can only read tables with one",
                q.table.name.quoted()
            )));
        }
    }
    Ok((w.conditions(table)?, terms))
}

/// The tables `subqueries` read, nested ones included, each once (in order of appearance).
pub fn subquery_tables(subqueries: &[ferrite_where::Subquery]) -> Vec<Arc<TableSchema>> {
    let mut out: Vec<Arc<TableSchema>> = Vec::new();
    let mut stack: Vec<&ferrite_where::Subquery> = subqueries.iter().rev().collect();
    while let Some(q) = stack.pop() {
        if !out.iter().any(|t| t.oid == q.table.oid) {
            out.push(q.table.clone());
        }
        if let Some(f) = &q.filter {
            stack.extend(f.subqueries().iter().rev());
        }
    }
    out
}

/// JSON string literal for `s`.
pub fn json_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// Marks the last message of a transaction and renders all of them.
pub fn finish_transaction(messages: &[PendingMessage]) -> Vec<(u64, String)> {
    finish_transaction_with(messages, None)
}

/// [`finish_transaction`], with `digest` (the shape's digest after the transaction) on the last
/// message.
pub fn finish_transaction_with(messages: &[PendingMessage], digest: Option<&Digest>) -> Vec<(u64, String)> {
    let n = messages.len();
    messages.iter().enumerate().map(|(i, m)| (m.op, m.finish_with(i + 1 == n, digest))).collect()
}

/// The `n` values of a row message's `value` object, in order, read without building the
/// message (`None` when it is not laid out as `{"key":"…","value":{"name":"text"|null,…}…`).
fn ordered_values(json: &str, n: usize) -> Option<Vec<Option<std::borrow::Cow<'_, str>>>> {
    let b = json.as_bytes();
    let mut i = b"{\"key\":".len();
    if !json.starts_with("{\"key\":") {
        return None;
    }
    i = json_string(json, i)?.1;
    let opening = b",\"value\":{";
    if !b[i..].starts_with(opening) {
        return None;
    }
    i += opening.len();
    let mut values = Vec::with_capacity(n);
    for k in 0..n {
        if k > 0 {
            (b.get(i) == Some(&b',')).then_some(())?;
            i += 1;
        }
        i = json_string(json, i)?.1;
        (b.get(i) == Some(&b':')).then_some(())?;
        i += 1;
        if b[i..].starts_with(b"null") {
            values.push(None);
            i += 4;
        } else {
            let (v, next) = json_string(json, i)?;
            values.push(Some(v));
            i = next;
        }
    }
    (b.get(i) == Some(&b'}')).then_some(values)
}

/// The JSON string starting at byte `i` (its opening quote), unescaped, and the byte after it.
fn json_string(json: &str, i: usize) -> Option<(std::borrow::Cow<'_, str>, usize)> {
    let b = json.as_bytes();
    (b.get(i) == Some(&b'"')).then_some(())?;
    let start = i + 1;
    let mut j = start;
    while j < b.len() {
        match b[j] {
            b'"' => return Some((json[start..j].into(), j + 1)),
            b'\\' => break,
            _ => j += 1,
        }
    }
    // Escapes: decoded by the JSON parser (rare in row values).
    let mut end = j;
    while end < b.len() {
        match b[end] {
            b'\\' => end += 2,
            b'"' => break,
            _ => end += 1,
        }
    }
    let text: String = serde_json::from_str(json.get(i..=end)?).ok()?;
    Some((text.into(), end + 1))
}

/// Hashes rows of the `selected` columns of `table`, in that order, for convergence digests.
fn row_hasher(table: &TableSchema, selected: &[usize]) -> RowHasher {
    RowHasher::new(selected.iter().map(|&i| {
        let c = &table.columns[i];
        (c.name.as_str(), ColumnKind::of(&c.type_name, c.dims as u64))
    }))
}

impl ShapeFilter {
    /// Whether the shape keeps a convergence digest (a plain shape: no subqueries, no time).
    pub fn has_digest(&self) -> bool {
        self.digest.is_some()
    }

    /// An empty replica of the shape and the hasher of its rows, to compute the digest of a
    /// shape that keeps none as it goes (a relational shape's rows also leave through move-out
    /// events) by replaying its log ([`ferrite_protocol::replay`]).
    pub fn replay(&self) -> (ferrite_protocol::replay::Replay, RowHasher) {
        let names = self.selected.iter().map(|&i| self.table.columns[i].name.clone()).collect();
        (ferrite_protocol::replay::Replay::new(names), row_hasher(&self.table, &self.selected))
    }

    /// The digest hash of a snapshot row message as Postgres renders it for this shape
    /// (`{"key":…,"value":{<selected columns in order>},…}`, see `ferrite_pg::row_query`);
    /// `None` for a shape without a digest. The values are read in place — the common case, with
    /// a parse of the whole message only for a message not laid out that way.
    pub fn snapshot_row_hash(&self, json: &str) -> Option<ferrite_protocol::digest::RowHash> {
        let hasher = self.digest.as_ref()?;
        if let Some(values) = ordered_values(json, self.selected.len()) {
            return Some(hasher.hash_texts(|i| values[i].as_deref()));
        }
        let message: ferrite_protocol::messages::ShapeMessage<'_> = serde_json::from_str(json).ok()?;
        let value = message.value?;
        Some(hasher.hash_named(|name| value.get(name).and_then(|v| v.as_deref())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrite_protocol::schema::{Column, TypeKind};

    fn table() -> Arc<TableSchema> {
        let col = |name: &str, ty: &str, pk: Option<usize>| Column {
            name: name.into(),
            type_oid: 25,
            type_name: ty.into(),
            base_type_name: ty.into(),
            dims: 0,
            kind: TypeKind::Base,
            typmod: -1,
            pk_index: pk,
            not_null: pk.is_some(),
        };
        Arc::new(TableSchema {
            oid: 1,
            name: QualifiedName::new("public", "items"),
            columns: vec![col("id", "int4", Some(0)), col("title", "text", None), col("n", "int4", None)],
        })
    }

    fn def(replica: Replica, columns: Option<Vec<&str>>) -> ShapeDefinition {
        ShapeDefinition {
            table: QualifiedName::new("public", "items"),
            where_sql: None,
            rule: None,
            inner_rules: BTreeMap::new(),
            params: BTreeMap::new(),
            columns: columns.map(|c| c.into_iter().map(String::from).collect()),
            replica,
            log: LogMode::Full,
        }
    }

    fn row(v: &[Option<&str>]) -> Vec<Option<String>> {
        v.iter().map(|x| x.map(String::from)).collect()
    }

    fn json(m: &PendingMessage, last: bool) -> serde_json::Value {
        serde_json::from_str(&m.finish(last)).unwrap()
    }

    /// The snapshot's digest reads values in place; the result must equal reading the parsed
    /// message, for escapes, NULLs and text beyond ASCII, and a message laid out otherwise
    /// still hashes (through the parser).
    #[test]
    fn snapshot_rows_hash_like_their_parsed_values() {
        let f = ShapeFilter::compile(&def(Replica::Default, None), table()).unwrap();
        let parsed = |json: &str| {
            let m: ferrite_protocol::messages::ShapeMessage<'_> = serde_json::from_str(json).unwrap();
            let v = m.value.unwrap();
            f.digest.as_ref().unwrap().hash_named(|n| v.get(n).and_then(|x| x.as_deref()))
        };
        for json in [
            r#"{"key":"\"public\".\"items\"/\"1\"","value":{"id":"1","title":"plain","n":"5"},"headers":{"operation":"insert"}}"#,
            r#"{"key":"\"public\".\"items\"/\"2\"","value":{"id":"2","title":"q\"uote \\ back\nline \u00e9 ☃","n":null},"headers":{}}"#,
            r#"{"key":"k","value":{"id":"3","title":null,"n":"-7"},"headers":{}}"#,
        ] {
            assert!(ordered_values(json, 3).is_some(), "{json}");
            assert_eq!(f.snapshot_row_hash(json), Some(parsed(json)), "{json}");
        }
        let spaced = r#"{"value": {"n": "5", "id": "1", "title": "plain"}, "key": "k", "headers": {}}"#;
        assert!(ordered_values(spaced, 3).is_none());
        assert_eq!(f.snapshot_row_hash(spaced), Some(parsed(spaced)));
        assert_eq!(
            f.snapshot_row_hash(spaced),
            f.snapshot_row_hash(r#"{"key":"k","value":{"id":"1","title":"plain","n":"5"},"headers":{}}"#)
        );
        assert_eq!(f.snapshot_row_hash("not json"), None);
    }

    #[test]
    fn converts_each_operation() {
        let f = ShapeFilter::compile(&def(Replica::Default, None), table()).unwrap();
        let new = row(&[Some("1"), Some("a/b"), None]);
        let ins = f.convert(RowChange::Insert { new: &new }, 3, 100, 7);
        assert_eq!(ins.len(), 1);
        assert_eq!(ins[0].op, 6);
        let v = json(&ins[0], true);
        assert_eq!(v["key"], "\"public\".\"items\"/\"1\"");
        assert_eq!(v["value"], serde_json::json!({"id": "1", "title": "a/b", "n": null}));
        assert_eq!(
            v["headers"],
            serde_json::json!({"operation": "insert", "relation": ["public", "items"], "txids": [7], "lsn": "100", "op_position": 6, "last": true})
        );
        let changed = row(&[Some("1"), Some("c"), None]);
        let upd = f.convert(RowChange::Update { old: &new, new: &changed }, 0, 100, 7);
        assert_eq!(json(&upd[0], false)["value"], serde_json::json!({"id": "1", "title": "c"}));
        assert!(json(&upd[0], false)["headers"].get("last").is_none());
        assert!(
            f.convert(RowChange::Update { old: &new, new: &new }, 0, 100, 7).is_empty(),
            "no-op updates are dropped"
        );
        let del = f.convert(RowChange::Delete { old: &new }, 0, 100, 7);
        assert_eq!(json(&del[0], true)["value"], serde_json::json!({"id": "1"}));
    }

    #[test]
    fn replica_full_and_key_changes() {
        let f = ShapeFilter::compile(&def(Replica::Full, Some(vec!["id", "title"])), table()).unwrap();
        let old = row(&[Some("1"), Some("a"), Some("5")]);
        let new = row(&[Some("1"), Some("b"), Some("6")]);
        let upd = f.convert(RowChange::Update { old: &old, new: &new }, 1, 9, 3);
        let v = json(&upd[0], true);
        assert_eq!(v["value"], serde_json::json!({"id": "1", "title": "b"}));
        assert_eq!(v["old_value"], serde_json::json!({"title": "a"}));
        let moved = row(&[Some("2"), Some("b"), Some("6")]);
        let kc = f.convert(RowChange::Update { old: &old, new: &moved }, 1, 9, 3);
        assert_eq!(kc.len(), 2);
        assert_eq!((kc[0].op, kc[1].op), (2, 3));
        assert_eq!(json(&kc[0], false)["headers"]["key_change_to"], "\"public\".\"items\"/\"2\"");
        assert_eq!(json(&kc[1], true)["headers"]["key_change_from"], "\"public\".\"items\"/\"1\"");
        let del = f.convert(RowChange::Delete { old: &old }, 0, 9, 3);
        assert_eq!(json(&del[0], true)["value"], serde_json::json!({"id": "1", "title": "a"}));
        // Only the unselected column changed: nothing to send.
        let only_n = row(&[Some("1"), Some("a"), Some("7")]);
        assert!(f.convert(RowChange::Update { old: &old, new: &only_n }, 0, 9, 3).is_empty());
    }

    #[test]
    fn projection_must_keep_the_primary_key() {
        let e = ShapeFilter::compile(&def(Replica::Default, Some(vec!["title"])), table()).unwrap_err();
        assert_eq!(e.field, "columns");
        assert!(e.message.contains("missing: id"));
        let e = ShapeFilter::compile(&def(Replica::Default, Some(vec!["id", "nope"])), table()).unwrap_err();
        assert!(e.message.contains("nope"));
        let last = finish_transaction(&ShapeFilter::compile(&def(Replica::Default, None), table()).unwrap().convert(
            RowChange::Insert { new: &row(&[Some("1"), None, None]) },
            0,
            1,
            1,
        ));
        assert!(last[0].1.ends_with(",\"last\":true}}"));
    }
}
