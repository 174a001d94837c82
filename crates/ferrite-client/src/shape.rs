//! Shape definitions as the client subscribes to them.

use std::collections::BTreeMap;

/// A shape: a table, optionally filtered and projected, synced into a local table.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ShapeDef {
    /// `name` or `schema.name`, as in `?table=`.
    pub table: String,
    /// Where clause (`$1`… bound from `params`).
    pub where_sql: Option<String>,
    /// `params[n]` values.
    pub params: BTreeMap<String, String>,
    /// Columns to sync (must include the primary key); all when `None`.
    pub columns: Option<Vec<String>>,
    /// Local table name; the table's own name (without schema) when `None`.
    pub local_table: Option<String>,
    /// Drop the local rows when the shape has not been synced for this long
    /// ([`crate::Client::drop_expired`]); kept for ever when `None`.
    pub retain: Option<std::time::Duration>,
}

impl ShapeDef {
    /// All rows of `table`.
    pub fn table(table: &str) -> ShapeDef {
        ShapeDef { table: table.to_string(), ..Default::default() }
    }

    /// The same shape restricted by `where_sql`.
    pub fn filter(mut self, where_sql: &str) -> ShapeDef {
        self.where_sql = Some(where_sql.to_string());
        self
    }

    /// The same shape with only these columns.
    pub fn columns(mut self, columns: &[&str]) -> ShapeDef {
        self.columns = Some(columns.iter().map(|c| c.to_string()).collect());
        self
    }

    /// The same shape stored under another local table name.
    pub fn into_table(mut self, local: &str) -> ShapeDef {
        self.local_table = Some(local.to_string());
        self
    }

    /// The same shape, dropped locally after `ttl` without a sync.
    pub fn retain_for(mut self, ttl: std::time::Duration) -> ShapeDef {
        self.retain = Some(ttl);
        self
    }

    /// Where its rows live locally.
    pub fn local_table(&self) -> String {
        self.local_table.clone().unwrap_or_else(|| {
            let name = self.table.rsplit('.').next().unwrap_or(&self.table);
            name.trim_matches('"').to_string()
        })
    }

    /// A stable text of the definition, stored with the shape to notice a changed definition.
    pub fn canonical(&self) -> String {
        serde_json::json!({"table": self.table, "where": self.where_sql, "params": self.params, "columns": self.columns}).to_string()
    }

    /// The definition's query parameters.
    pub fn query(&self) -> Vec<(String, String)> {
        let mut q = vec![("table".to_string(), self.table.clone())];
        if let Some(w) = &self.where_sql {
            q.push(("where".into(), w.clone()));
        }
        for (k, v) in &self.params {
            q.push((format!("params[{k}]"), v.clone()));
        }
        if let Some(c) = &self.columns {
            q.push(("columns".into(), c.join(",")));
        }
        q
    }
}
