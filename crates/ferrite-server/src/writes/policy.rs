//! Turning `[tables.<name>]` settings into the merge policies of `ferrite_core::merge`.

use crate::config::TableConfig;
use ferrite_core::merge::{ColumnPolicy, Existence, RowPolicy, Rule, TablePolicy};
use std::collections::BTreeMap;

/// The policy for a table's settings (`default_conflict` when it sets no policy of its own);
/// the error names the bad value.
pub fn table_policy(cfg: &TableConfig, default_conflict: &str) -> Result<TablePolicy, String> {
    let conflict = cfg.conflict.as_deref().or(cfg.resolve.is_empty().then_some(default_conflict));
    let row = match (conflict, cfg.resolve.is_empty()) {
        (Some(_), false) => return Err("set either `conflict` or `resolve`, not both".into()),
        (None, false) => RowPolicy::Resolve(
            cfg.resolve
                .iter()
                .map(|r| r.parse::<Rule>().map_err(|e| format!("resolve: {e}")))
                .collect::<Result<_, _>>()?,
        ),
        (None | Some("lww"), true) => RowPolicy::Lww,
        (Some("server-wins"), true) => RowPolicy::ServerWins,
        (Some(other), true) => return Err(format!("conflict must be \"lww\" or \"server-wins\" (got {other:?})")),
    };
    let existence = match cfg.existence.as_deref() {
        None | Some("delete-wins") => Existence::DeleteWins,
        Some("add-wins") => Existence::AddWins,
        Some(other) => return Err(format!("existence must be \"add-wins\" or \"delete-wins\" (got {other:?})")),
    };
    let mut columns = BTreeMap::new();
    for (col, p) in &cfg.columns {
        let policy = match p.as_str() {
            "lww" => ColumnPolicy::Lww,
            "server-wins" => ColumnPolicy::ServerWins,
            other => return Err(format!("columns.{col} must be \"lww\" or \"server-wins\" (got {other:?})")),
        };
        columns.insert(col.clone(), policy);
    }
    if !columns.is_empty() && !matches!(row, RowPolicy::Lww) {
        return Err("per-column policies apply to lww tables only".into());
    }
    Ok(TablePolicy { row, columns, existence })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_map_to_policies_and_bad_ones_are_named() {
        let p = table_policy(&TableConfig::default(), "lww").unwrap();
        assert!(matches!(p.row, RowPolicy::Lww));
        assert!(matches!(p.existence, Existence::DeleteWins));
        let cfg = TableConfig { existence: Some("add-wins".into()), ..Default::default() };
        assert!(matches!(table_policy(&cfg, "lww").unwrap().existence, Existence::AddWins));
        assert!(matches!(table_policy(&TableConfig::default(), "server-wins").unwrap().row, RowPolicy::ServerWins));
        let cfg = TableConfig { resolve: vec!["max(importance)".into(), "lww".into()], ..Default::default() };
        assert!(matches!(table_policy(&cfg, "server-wins").unwrap().row, RowPolicy::Resolve(_)));
        for (cfg, needle) in [
            (TableConfig { conflict: Some("first-wins".into()), ..Default::default() }, "first-wins"),
            (TableConfig { existence: Some("maybe".into()), ..Default::default() }, "maybe"),
            (TableConfig { resolve: vec!["biggest(x)".into()], ..Default::default() }, "resolve"),
            (TableConfig { conflict: Some("lww".into()), resolve: vec!["lww".into()], ..Default::default() }, "either"),
        ] {
            let e = table_policy(&cfg, "lww").unwrap_err();
            assert!(e.contains(needle), "{e}");
        }
    }
}
