//! Turning `[tables.<name>]` settings into the merge policies of `ferrite_core::merge`.

use crate::config::TableConfig;
use ferrite_core::merge::{ConflictPolicy, RowPolicy, TablePolicy};

/// The policy for a table's settings (`default_conflict` when it sets no policy of its own);
/// the error names the setting that cannot stand.
pub fn table_policy(cfg: &TableConfig, default_conflict: ConflictPolicy) -> Result<TablePolicy, String> {
    let row = match (cfg.conflict, cfg.resolve.is_empty()) {
        (Some(_), false) => return Err("set either `conflict` or `resolve`, not both".into()),
        (None, false) => RowPolicy::Resolve(cfg.resolve.clone()),
        (conflict, true) => match conflict.unwrap_or(default_conflict) {
            ConflictPolicy::Lww => RowPolicy::Lww,
            ConflictPolicy::ServerWins => RowPolicy::ServerWins,
        },
    };
    if !cfg.columns.is_empty() && !matches!(row, RowPolicy::Lww) {
        return Err("per-column policies apply to lww tables only".into());
    }
    Ok(TablePolicy { row, columns: cfg.columns.clone(), existence: cfg.existence })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrite_core::merge::{Existence, Rule};

    #[test]
    fn settings_map_to_policies_and_bad_ones_are_named() {
        let lww = ConflictPolicy::Lww;
        let p = table_policy(&TableConfig::default(), lww).unwrap();
        assert!(matches!(p.row, RowPolicy::Lww));
        assert!(matches!(p.existence, Existence::DeleteWins));
        let cfg = TableConfig { existence: Existence::AddWins, ..Default::default() };
        assert!(matches!(table_policy(&cfg, lww).unwrap().existence, Existence::AddWins));
        let default_server_wins = table_policy(&TableConfig::default(), ConflictPolicy::ServerWins).unwrap();
        assert!(matches!(default_server_wins.row, RowPolicy::ServerWins));
        let cfg = TableConfig { resolve: vec![Rule::Max("importance".into()), Rule::Lww], ..Default::default() };
        assert!(matches!(table_policy(&cfg, ConflictPolicy::ServerWins).unwrap().row, RowPolicy::Resolve(_)));
        let both = TableConfig { conflict: Some(lww), resolve: vec![Rule::Lww], ..Default::default() };
        assert!(table_policy(&both, lww).unwrap_err().contains("either"));
        let columns = [("status".to_string(), ConflictPolicy::ServerWins)].into();
        let columns_outside_lww =
            TableConfig { conflict: Some(ConflictPolicy::ServerWins), columns, ..Default::default() };
        assert!(table_policy(&columns_outside_lww, lww).unwrap_err().contains("lww tables only"));
    }
}
