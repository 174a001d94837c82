//! The SQL that reads a shape's rows as protocol messages: the initial snapshot's query, a
//! subset's (an extra where clause, order, limit and offset on a shape), and the bounded count a
//! subset is checked with before any row is sent.
//!
//! Rows are rendered to insert messages inside Postgres (one text column per row), so the server
//! only copies bytes. Values use each type's output function (`concat(col)`): the same text the
//! replication stream carries, under the session settings [`crate::connect`] applies. Nothing is
//! pasted into the text as it came: identifiers go through [`quote_ident`] /
//! [`QualifiedName::quoted`](ferrite_protocol::relation::QualifiedName::quoted), the where clause
//! reaches Postgres only as its re-printed tree, and every value — the clause's constants and the
//! JSON around each row (key prefix, column names, relation) — is a bound parameter.

use ferrite_core::shape::{json_str, ShapeFilter};
use ferrite_protocol::key::relation_prefix;
use ferrite_protocol::relation::quote_ident;
use ferrite_protocol::schema::TableSchema;
use ferrite_where::{TimeTerm, WhereClause};

/// A query returning one message (JSON text) per row, with its parameters; run it in a
/// [`crate::snapshot::Snapshot`].
#[derive(Debug, Clone)]
pub struct RowQuery {
    sql: String,
    params: Vec<Option<String>>,
}

/// A subset request (progressive loading): what it adds to its shape's query.
#[derive(Debug, Clone, Default)]
pub struct SubsetQuery {
    /// Compiled subset where clause, ANDed with the shape's.
    pub where_clause: Option<WhereClause>,
    /// `ORDER BY` items, in order.
    pub order_by: Vec<OrderBy>,
    /// `LIMIT`.
    pub limit: Option<u64>,
    /// `OFFSET`.
    pub offset: Option<u64>,
}

/// One `ORDER BY` item of a subset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OrderBy {
    /// Index of the column in the table's schema.
    pub column: usize,
    /// `DESC` (else `ASC`).
    pub descending: bool,
    /// `NULLS FIRST` (`Some(true)`), `NULLS LAST` (`Some(false)`) or Postgres's default.
    pub nulls_first: Option<bool>,
}

impl RowQuery {
    /// Every row of the shape (`filter`: its table, where clause and columns), as the insert
    /// messages of its initial snapshot.
    pub fn shape(filter: &ShapeFilter) -> RowQuery {
        let mut p = Params::default();
        let where_sql = filter.where_clause.as_ref().map(|w| p.condition(w));
        let message = row_message_sql(filter, "", &mut p);
        let mut sql = format!("SELECT {message} FROM {}", filter.table.name.quoted());
        if let Some(w) = where_sql {
            sql.push_str(" WHERE ");
            sql.push_str(&w);
        }
        RowQuery { sql, params: p.0 }
    }

    /// The rows of the shape that also match `subset`, ordered and paged as it asks; each
    /// message's headers carry `"snapshot_mark":mark`.
    pub fn subset(filter: &ShapeFilter, subset: &SubsetQuery, mark: u32) -> RowQuery {
        let mut p = Params::default();
        let conds: Vec<String> = [filter.where_clause.as_ref(), subset.where_clause.as_ref()]
            .into_iter()
            .flatten()
            .map(|w| format!("({})", p.condition(w)))
            .collect();
        let message = row_message_sql(filter, &format!(",\"snapshot_mark\":{mark}"), &mut p);
        let mut sql = format!("SELECT {message} AS row FROM {}", filter.table.name.quoted());
        if !conds.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&conds.join(" AND "));
        }
        if !subset.order_by.is_empty() {
            let items: Vec<String> = subset.order_by.iter().map(|o| order_item(&filter.table, o)).collect();
            sql.push_str(" ORDER BY ");
            sql.push_str(&items.join(", "));
        }
        if let Some(l) = subset.limit {
            sql.push_str(&format!(" LIMIT {l}"));
        }
        if let Some(o) = subset.offset {
            sql.push_str(&format!(" OFFSET {o}"));
        }
        RowQuery { sql, params: p.0 }
    }

    /// The rows of `table` for which `condition` holds (every row when `None`), each as the
    /// texts of all its columns (one `text[]` per row, read with [`crate::snapshot::Rows::values`]):
    /// rows the server renders itself — those of shapes with subqueries, whose messages say why
    /// each row is in the shape — and the rows of subqueries' results. `among` restricts them
    /// further to rows whose values of some columns are among some values (any of the pairs):
    /// the rows a move-in brings. A condition that reads the current time reads it as instant
    /// `now` ([`ferrite_where::pg_micros`]), the time of the shape it is read for.
    pub fn values(table: &TableSchema, condition: Option<&WhereClause>, now: Option<i64>, among: &[Among]) -> RowQuery {
        let mut p = Params::default();
        let mut sql = format!("SELECT {} FROM {}", all_texts(table), table.name.quoted());
        let mut conds = Vec::new();
        if let Some(w) = condition {
            let (cond, params) = match now {
                Some(now) => w.to_sql_at(p.0.len() + 1, now),
                None => w.to_sql(p.0.len() + 1),
            };
            p.0.extend(params);
            conds.push(format!("({cond})"));
        }
        if !among.is_empty() {
            let alternatives: Vec<String> = among.iter().map(|a| a.sql(table, &mut p)).collect();
            conds.push(format!("({})", alternatives.join(" OR ")));
        }
        if !conds.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&conds.join(" AND "));
        }
        RowQuery { sql, params: p.0 }
    }

    /// The rows of `table` whose standing towards `clause` (with time terms `terms`) may differ
    /// between instants `from` and `to`, as [`RowQuery::values`] reads them: what a shape that
    /// reads the clock reads again to move from one to the other.
    pub fn changing(table: &TableSchema, clause: &WhereClause, terms: &[TimeTerm], from: i64, to: i64) -> RowQuery {
        let (cond, params) = clause.changing_sql(terms, 1, from, to);
        RowQuery { sql: format!("SELECT {} FROM {} WHERE {cond}", all_texts(table), table.name.quoted()), params }
    }

    /// One row of one text (NULL when no row qualifies): the smallest value of time term
    /// `term`'s row side among the rows that may still cross it after instant `after` (see
    /// [`WhereClause::next_change_query`]); `None` when the term's time is out of range then.
    pub fn next_change(
        table: &TableSchema,
        clause: &WhereClause,
        terms: &[TimeTerm],
        term: usize,
        after: i64,
    ) -> Option<RowQuery> {
        let (value, cond, params) = clause.next_change_query(terms, term, 1, after)?;
        let sql = format!("SELECT ARRAY[(min({value}))::text]::text[] FROM {} WHERE {cond}", table.name.quoted());
        Some(RowQuery { sql, params })
    }

    /// The number of rows this query returns and the bytes of their messages, counting no further
    /// than `at_most + 1` rows (enough to tell that there are more than `at_most`).
    pub(crate) fn bounded_count(&self, at_most: u64) -> RowQuery {
        let sql = format!(
            "SELECT count(*), coalesce(sum(octet_length(s.row)), 0)::bigint FROM (SELECT q.row FROM ({}) q LIMIT {}) s",
            self.sql,
            at_most.saturating_add(1)
        );
        RowQuery { sql, params: self.params.clone() }
    }

    /// The statement text (for logs and tests; run it through a snapshot).
    pub fn sql(&self) -> &str {
        &self.sql
    }

    /// The bound parameters, `$1` first (text, or NULL).
    pub fn params(&self) -> &[Option<String>] {
        &self.params
    }
}

/// Rows whose values of `columns` (as text) are one of `values` (see [`RowQuery::values`]).
#[derive(Debug, Clone)]
pub struct Among {
    /// Column indexes in the table.
    pub columns: Vec<usize>,
    /// Tuples of texts, as many as there are columns each.
    pub values: Vec<Vec<String>>,
}

impl Among {
    /// `(text(a), text(b)) IN (SELECT * FROM unnest($1::text::text[], …))`: compares each
    /// column's text output, which is exact for the types subqueries may compare (integers,
    /// text, uuid, boolean, enums: equal values have equal text). A NULL never matches.
    fn sql(&self, table: &TableSchema, p: &mut Params) -> String {
        let lhs: Vec<String> = self.columns.iter().map(|&c| text_of(table, c)).collect();
        let arrays: Vec<String> = (0..self.columns.len())
            .map(|i| {
                let column: Vec<Option<String>> = self.values.iter().map(|v| v.get(i).cloned()).collect();
                p.0.push(Some(array_literal(&column)));
                format!("${}::text::text[]", p.0.len())
            })
            .collect();
        format!("({}) IN (SELECT * FROM unnest({}))", lhs.join(", "), arrays.join(", "))
    }
}

/// A Postgres array literal of texts: every element double-quoted with `"` and `\` escaped.
fn array_literal(items: &[Option<String>]) -> String {
    let mut s = String::from("{");
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        match item {
            None => s.push_str("NULL"),
            Some(v) => {
                s.push('"');
                for ch in v.chars() {
                    if ch == '"' || ch == '\\' {
                        s.push('\\');
                    }
                    s.push(ch);
                }
                s.push('"');
            }
        }
    }
    s.push('}');
    s
}

/// Collects bound parameters while a statement is built.
#[derive(Default)]
struct Params(Vec<Option<String>>);

impl Params {
    /// Binds `value` as text; returns its placeholder.
    fn text(&mut self, value: String) -> String {
        self.0.push(Some(value));
        format!("${}::text", self.0.len())
    }

    /// The clause re-printed with its constants bound after the parameters so far.
    fn condition(&mut self, w: &WhereClause) -> String {
        let (sql, params) = w.to_sql(self.0.len() + 1);
        self.0.extend(params);
        sql
    }
}

/// `ARRAY[…]::text[]` of every column's text: a row as [`crate::snapshot::Rows::values`] reads it.
fn all_texts(table: &TableSchema) -> String {
    let texts: Vec<String> = (0..table.columns.len()).map(|i| text_of(table, i)).collect();
    format!("ARRAY[{}]::text[]", texts.join(", "))
}

/// The SQL giving column `i`'s text output (NULL for NULL).
fn text_of(table: &TableSchema, i: usize) -> String {
    let c = quote_ident(&table.columns[i].name);
    format!("(CASE WHEN {c} IS NULL THEN NULL ELSE concat({c}) END)")
}

/// The SQL twin of [`ferrite_protocol::key::row_key`]: the row's key from its key columns' text,
/// so that snapshot rows and replicated changes carry identical keys.
fn key_sql(table: &TableSchema, p: &mut Params) -> String {
    let mut parts = vec![p.text(relation_prefix(&table.name))];
    for i in table.key_columns() {
        parts.push(format!(
            "(CASE WHEN {v} IS NULL THEN '/_' ELSE '/\"' || replace({v}, '/', '//') || '\"' END)",
            v = text_of(table, i)
        ));
    }
    parts.join(" || ")
}

/// SQL rendering one row of the shape's table as an insert message. `extra_headers` is appended
/// inside `headers` verbatim (e.g. `,"snapshot_mark":7`).
fn row_message_sql(filter: &ShapeFilter, extra_headers: &str, p: &mut Params) -> String {
    let table = &filter.table;
    let mut parts = vec![p.text("{\"key\":".into()), format!("to_json({})::text", key_sql(table, p))];
    let mut opening = ",\"value\":{".to_string();
    for (n, &i) in filter.selected.iter().enumerate() {
        let name = format!("{}{}:", if n > 0 { "," } else { "" }, json_str(&table.columns[i].name));
        parts.push(p.text(std::mem::take(&mut opening) + &name));
        parts.push(format!(
            "(CASE WHEN {c} IS NULL THEN 'null' ELSE to_json({t})::text END)",
            c = quote_ident(&table.columns[i].name),
            t = text_of(table, i)
        ));
    }
    let tail = format!(
        "{opening}}},\"headers\":{{\"operation\":\"insert\",\"relation\":{}{extra_headers}}}}}",
        filter.relation_json()
    );
    parts.push(p.text(tail));
    parts.join(" || ")
}

fn order_item(table: &TableSchema, o: &OrderBy) -> String {
    let mut s = quote_ident(&table.columns[o.column].name);
    if o.descending {
        s.push_str(" DESC");
    }
    match o.nulls_first {
        Some(true) => s.push_str(" NULLS FIRST"),
        Some(false) => s.push_str(" NULLS LAST"),
        None => {}
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrite_core::shape::ShapeDefinition;
    use ferrite_protocol::relation::QualifiedName;
    use ferrite_protocol::schema::{Column, TypeKind};
    use std::sync::Arc;

    fn column(name: &str, pk_index: Option<usize>) -> Column {
        Column {
            name: name.into(),
            type_oid: 25,
            type_name: "text".into(),
            base_type_name: "text".into(),
            dims: 0,
            kind: TypeKind::Base,
            typmod: -1,
            pk_index,
            not_null: pk_index.is_some(),
        }
    }

    fn filter(where_sql: Option<&str>) -> ShapeFilter {
        let table = TableSchema {
            oid: 1,
            name: QualifiedName::new("public", "it's"),
            columns: vec![column("id", Some(0)), column("na'me\"", None)],
        };
        let def = ShapeDefinition::of_table(table.name.clone(), where_sql);
        ShapeFilter::compile(&def, Arc::new(table)).unwrap()
    }

    #[test]
    fn names_and_constants_are_bound_never_pasted() {
        let f = filter(Some("\"na'me\"\"\" = 'x''y'"));
        let q = RowQuery::shape(&f);
        // The where clause's constant is $1; the message's JSON pieces follow as parameters.
        assert!(q.sql().ends_with(" FROM \"public\".\"it's\" WHERE (\"na'me\"\"\" = ($1::text)::text)"), "{}", q.sql());
        assert_eq!(q.params()[0].as_deref(), Some("x'y"));
        assert_eq!(q.params()[2].as_deref(), Some("\"public\".\"it's\""), "the key prefix");
        assert_eq!(q.params()[4].as_deref(), Some(",\"na'me\\\"\":"), "a column name, as JSON");
        // No quote from a name or a value reaches the text outside a quoted identifier.
        let outside_identifiers = q.sql().replace("\"na'me\"\"\"", "").replace("\"it's\"", "");
        assert!(!outside_identifiers.contains("x'y") && !outside_identifiers.contains("it's"), "{}", q.sql());
        assert!(!outside_identifiers.contains("na'me"), "{}", q.sql());
    }

    #[test]
    fn a_subset_adds_its_clause_order_and_paging() {
        let f = filter(Some("id <> 'a'"));
        let subset = SubsetQuery {
            where_clause: Some(WhereClause::compile("id <> 'b'", &Default::default(), &f.table).unwrap()),
            order_by: vec![OrderBy { column: 1, descending: true, nulls_first: Some(false) }],
            limit: Some(10),
            offset: Some(5),
        };
        let q = RowQuery::subset(&f, &subset, 7);
        assert!(q.sql().contains(" AS row FROM \"public\".\"it's\" WHERE ("), "{}", q.sql());
        assert!(q.sql().ends_with(" ORDER BY \"na'me\"\"\" DESC NULLS LAST LIMIT 10 OFFSET 5"), "{}", q.sql());
        assert_eq!(&q.params()[..2], &[Some("a".to_string()), Some("b".to_string())]);
        assert!(q.params().last().unwrap().as_deref().unwrap().ends_with(",\"snapshot_mark\":7}}"));
        let count = q.bounded_count(100);
        assert!(count.sql().ends_with(" q LIMIT 101) s"), "{}", count.sql());
        assert_eq!(count.params(), q.params());
    }
}
