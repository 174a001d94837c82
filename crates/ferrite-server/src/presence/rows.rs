//! Whether a caller may be in a room named after a row (`<table>:<key>`): the row exists and the
//! caller's read rule admits it (a rule that reads other tables — a team membership — evaluated
//! by Postgres at the time of the check). Checked over presence's own small connection pool, so heartbeats
//! of many members can never hold up the write path (or the other way round).

use crate::pool::Pool;
use crate::writes::apply::Writer;
use ferrite_pg::prepared::PreparedClient;
use ferrite_protocol::relation::QualifiedName;
use ferrite_protocol::write_protocol::Values;
use ferrite_where::BoundRule;

/// Whether the row of single-column-key `table` whose key is `key_text` exists and matches
/// `rule`. The table's definition comes from the writer's cache.
pub async fn row_matches(
    pool: &Pool<PreparedClient>,
    writer: &Writer,
    table: &QualifiedName,
    key_text: &str,
    rule: &BoundRule,
) -> Result<bool, String> {
    let conn = pool.get().await.map_err(|e| e.to_string())?;
    let client = conn.client();
    let Some(t) = writer.table(client, table, false).await.map_err(|e| e.to_string())? else {
        conn.release();
        return Ok(false);
    };
    let [pk] = t.schema.key_columns()[..] else {
        conn.release();
        return Ok(false);
    };
    let key: Values = [(t.schema.columns[pk].name.clone(), Some(key_text.to_string()))].into();
    let row = match t.select(client, &key).await {
        Ok(Some((values, _))) => Some(values),
        Ok(None) => None,
        Err(e) if e.db().is_some() => None, // e.g. not a valid key for the type
        Err(e) => return Err(e.to_string()),
    };
    let Some(row) = row else {
        conn.release();
        return Ok(false);
    };
    // A rule that reads other tables (team membership) is evaluated by Postgres, now.
    let rule = match writer.compile_write_rule(client, rule, &t.schema).await.map_err(|e| e.to_string())? {
        Ok(rule) => rule,
        Err(e) => {
            conn.release();
            return Err(e.to_string());
        }
    };
    let holds = crate::writes::apply::rule_holds(client, &t, &rule, &row).await.map_err(|e| e.to_string());
    conn.release();
    holds
}
