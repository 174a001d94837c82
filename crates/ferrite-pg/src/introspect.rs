//! Reads a table's schema from the Postgres catalog.
//!
//! Shapes need the column order (to align pgoutput tuples and snapshot rows), the types (for the
//! `electric-schema` header and for evaluating where clauses), the primary key (for row keys) and
//! `NOT NULL` flags. All of that comes from `pg_class`, `pg_attribute`, `pg_type` and `pg_index`.
//!
//! Column order matches what logical replication sends: attribute order, without dropped columns
//! and without generated columns (pgoutput before Postgres 18 never publishes generated columns,
//! so including them would misalign every replicated row).

use crate::error::PgError;
use ferrite_protocol::relation::QualifiedName;
use ferrite_protocol::schema::{Column, TableSchema, TypeKind};
use tokio_postgres::Client;

/// How deep we follow domains-over-domains before giving up (Postgres itself allows any depth,
/// real schemas use one or two levels).
const MAX_DOMAIN_DEPTH: usize = 32;

/// Loads the schema of the ordinary or partitioned table `name` (exact, already case-folded
/// identifiers). Returns `None` when there is no such table — views, foreign tables and other
/// relation kinds count as missing, since they cannot be replicated.
pub async fn load_table(client: &Client, name: &QualifiedName) -> Result<Option<TableSchema>, PgError> {
    let row = client
        .query_opt(
            "SELECT c.oid FROM pg_catalog.pg_class c \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')",
            &[&name.schema, &name.name],
        )
        .await?;
    match row {
        Some(row) => {
            let oid: u32 = row.try_get(0)?;
            load_table_by_oid(client, oid).await
        }
        None => Ok(None),
    }
}

/// Loads the schema of the table with `pg_class.oid = oid` — the id pgoutput `Relation` messages
/// carry, so the replication path can re-read a table whose relation changed. `None` when the oid
/// is not an ordinary or partitioned table (e.g. it was dropped).
pub async fn load_table_by_oid(client: &Client, oid: u32) -> Result<Option<TableSchema>, PgError> {
    let Some(rel) = client
        .query_opt(
            "SELECT n.nspname::text, c.relname::text FROM pg_catalog.pg_class c \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.oid = $1 AND c.relkind IN ('r', 'p')",
            &[&oid],
        )
        .await?
    else {
        return Ok(None);
    };
    let name = QualifiedName::new(rel.try_get::<_, String>(0)?, rel.try_get::<_, String>(1)?);

    let pk: Vec<i16> = match client
        .query_opt(
            "SELECT i.indkey::int2[] FROM pg_catalog.pg_index i WHERE i.indrelid = $1 AND i.indisprimary",
            &[&oid],
        )
        .await?
    {
        Some(row) => row.try_get(0)?,
        None => vec![],
    };

    // `et` is the element type when the column's type is a true array (the element's `typarray`
    // points back at it; this excludes int2vector/oidvector-like types).
    let rows = client
        .query(
            "SELECT a.attnum, a.attname::text, a.atttypid, a.atttypmod, a.attndims::int4, a.attnotnull, \
                    t.typname::text, t.typtype::text, t.typbasetype, \
                    et.typname::text, et.typtype::text, et.typbasetype \
             FROM pg_catalog.pg_attribute a \
             JOIN pg_catalog.pg_type t ON t.oid = a.atttypid \
             LEFT JOIN pg_catalog.pg_type et ON et.oid = t.typelem AND et.typarray = t.oid \
             WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '' \
             ORDER BY a.attnum",
            &[&oid],
        )
        .await?;

    let mut columns = Vec::with_capacity(rows.len());
    for row in rows {
        let attnum: i16 = row.try_get(0)?;
        let col_name: String = row.try_get(1)?;
        let type_oid: u32 = row.try_get(2)?;
        let typmod: i32 = row.try_get(3)?;
        let attndims: i32 = row.try_get(4)?;
        let not_null: bool = row.try_get(5)?;
        let typname: String = row.try_get(6)?;
        let typtype: String = row.try_get(7)?;
        let typbasetype: u32 = row.try_get(8)?;
        let elem_name: Option<String> = row.try_get(9)?;
        let elem_type: Option<String> = row.try_get(10)?;
        let elem_basetype: Option<u32> = row.try_get(11)?;

        let (type_name, kind_char, domain_base, mut dims) = match (elem_name, elem_type) {
            (Some(en), Some(et)) => {
                let dims = if attndims > 0 { attndims as u32 } else { 1 };
                (en, et, elem_basetype.unwrap_or(0), dims)
            }
            _ => (typname, typtype, typbasetype, 0),
        };
        let kind = type_kind(&kind_char);
        let base_type_name = if kind == TypeKind::Domain {
            let (base, base_is_array) = resolve_domain_base(client, domain_base).await?;
            // A domain over an array type (`CREATE DOMAIN d AS int[]`) holds array values.
            if base_is_array && dims == 0 {
                dims = 1;
            }
            base
        } else {
            type_name.clone()
        };
        let pk_index = pk.iter().position(|k| *k == attnum);
        columns.push(Column {
            name: col_name,
            type_oid,
            type_name,
            base_type_name,
            dims,
            kind,
            typmod,
            pk_index,
            not_null,
        });
    }
    Ok(Some(TableSchema { oid, name, columns }))
}

fn type_kind(typtype: &str) -> TypeKind {
    match typtype {
        "b" => TypeKind::Base,
        "e" => TypeKind::Enum,
        "d" => TypeKind::Domain,
        "c" => TypeKind::Composite,
        _ => TypeKind::Other,
    }
}

/// Follows a domain's `typbasetype` chain to a non-domain type. Returns its typname (the element's
/// typname when the base is an array, then also `true`).
async fn resolve_domain_base(client: &Client, mut oid: u32) -> Result<(String, bool), PgError> {
    let mut is_array = false;
    for _ in 0..MAX_DOMAIN_DEPTH {
        let row = client
            .query_opt(
                "SELECT t.typname::text, t.typtype::text, t.typbasetype, et.oid \
                 FROM pg_catalog.pg_type t \
                 LEFT JOIN pg_catalog.pg_type et ON et.oid = t.typelem AND et.typarray = t.oid \
                 WHERE t.oid = $1",
                &[&oid],
            )
            .await?
            .ok_or_else(|| PgError::Protocol(format!("type {oid} referenced by a domain does not exist")))?;
        let typname: String = row.try_get(0)?;
        let typtype: String = row.try_get(1)?;
        let base: u32 = row.try_get(2)?;
        let elem: Option<u32> = row.try_get(3)?;
        if typtype == "d" {
            oid = base;
        } else if let (Some(elem), false) = (elem, is_array) {
            is_array = true;
            oid = elem;
        } else {
            return Ok((typname, is_array));
        }
    }
    Err(PgError::Protocol(format!("domain nesting deeper than {MAX_DOMAIN_DEPTH} levels")))
}

/// A foreign key between two tables: `table (columns) REFERENCES references (referenced_columns)`,
/// columns in the constraint's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignKey {
    /// The constraint's name.
    pub name: String,
    /// The referencing table.
    pub table: QualifiedName,
    /// Its columns.
    pub columns: Vec<String>,
    /// The referenced table.
    pub references: QualifiedName,
    /// Its columns, aligned with `columns`.
    pub referenced_columns: Vec<String>,
}

/// The foreign keys from and to table `name` (each once; a self-reference is both), by
/// constraint name; `None` when there is no such table.
pub async fn foreign_keys(client: &Client, name: &QualifiedName) -> Result<Option<Vec<ForeignKey>>, PgError> {
    let Some(row) = client
        .query_opt(
            "SELECT c.oid FROM pg_catalog.pg_class c \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')",
            &[&name.schema, &name.name],
        )
        .await?
    else {
        return Ok(None);
    };
    let oid: u32 = row.try_get(0)?;
    let columns = |side: &str, rel: &str| {
        format!(
            "ARRAY(SELECT a.attname::text FROM unnest(c.{side}) WITH ORDINALITY k(n, i) \
             JOIN pg_catalog.pg_attribute a ON a.attrelid = c.{rel} AND a.attnum = k.n ORDER BY k.i)"
        )
    };
    let sql = format!(
        "SELECT c.conname::text, n1.nspname::text, t1.relname::text, {}, n2.nspname::text, t2.relname::text, {} \
         FROM pg_catalog.pg_constraint c \
         JOIN pg_catalog.pg_class t1 ON t1.oid = c.conrelid JOIN pg_catalog.pg_namespace n1 ON n1.oid = t1.relnamespace \
         JOIN pg_catalog.pg_class t2 ON t2.oid = c.confrelid JOIN pg_catalog.pg_namespace n2 ON n2.oid = t2.relnamespace \
         WHERE c.contype = 'f' AND (c.conrelid = $1 OR c.confrelid = $1) ORDER BY c.conname, c.oid",
        columns("conkey", "conrelid"),
        columns("confkey", "confrelid")
    );
    let mut out = Vec::new();
    for r in client.query(&sql, &[&oid]).await? {
        out.push(ForeignKey {
            name: r.try_get(0)?,
            table: QualifiedName::new(r.try_get::<_, String>(1)?, r.try_get::<_, String>(2)?),
            columns: r.try_get(3)?,
            references: QualifiedName::new(r.try_get::<_, String>(4)?, r.try_get::<_, String>(5)?),
            referenced_columns: r.try_get(6)?,
        });
    }
    Ok(Some(out))
}
