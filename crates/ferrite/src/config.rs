//! Loading `ferrite.toml` with `FERRITE_*` environment overrides.
//!
//! Keys are the fields of [`ServerConfig`]; `FERRITE_<KEY>` (upper case) overrides a key, typed
//! like the key's default. Nested keys use `__` between levels: `FERRITE_AUTH__MODE=jwt`,
//! `FERRITE_TABLES__LEADS__READ="tenant_id = claims.tenant_id"`,
//! `FERRITE_TABLES__AGENT_MEMORY__RESOLVE='["max(importance)", "lww"]'` (a TOML array).
//! Unknown keys in the file are an error that names them.

use anyhow::{anyhow, Context, Result};
use ferrite_server::ServerConfig;
use std::path::Path;

/// Keys whose values are strings even when they look like numbers.
const STRING_KEYS: [&str; 7] =
    ["database_url", "listen", "data_dir", "slot_name", "publication", "secret", "default_conflict"];
/// Nested keys (last level) whose values are strings.
const NESTED_STRING_KEYS: [&str; 10] =
    ["mode", "secret", "public_key_file", "jwks_file", "issuer", "audience", "conflict", "existence", "read", "write"];

/// The TOML value of an environment variable for the key at `path`.
fn env_value(var: &str, path: &[String], v: String) -> Result<toml::Value> {
    let path: Vec<&str> = path.iter().map(String::as_str).collect();
    let string_key = match path.as_slice() {
        [key] => STRING_KEYS.contains(key),
        [.., "columns", _] => true,
        [.., last] => NESTED_STRING_KEYS.contains(last),
        [] => false,
    };
    if v.trim_start().starts_with('[') {
        let parsed: toml::Table = format!("v = {v}")
            .parse()
            .map_err(|e: toml::de::Error| anyhow!("environment variable {var}: {}", e.message()))?;
        return Ok(parsed["v"].clone());
    }
    if string_key {
        Ok(toml::Value::String(v))
    } else if let Ok(i) = v.parse::<i64>() {
        Ok(toml::Value::Integer(i))
    } else if let Ok(b) = v.parse::<bool>() {
        Ok(toml::Value::Boolean(b))
    } else {
        Err(anyhow!("environment variable {var}={v:?}: expected a number or true/false"))
    }
}

/// Sets `path` in `table`, creating intermediate tables.
fn set_path(table: &mut toml::Table, path: &[String], value: toml::Value, var: &str) -> Result<()> {
    let (last, parents) = path.split_last().ok_or_else(|| anyhow!("environment variable {var}: empty key"))?;
    let mut t = table;
    for p in parents {
        let entry = t.entry(p.clone()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        t = entry.as_table_mut().ok_or_else(|| anyhow!("environment variable {var}: {p} is not a table"))?;
    }
    t.insert(last.clone(), value);
    Ok(())
}

/// Reads the config file (if given or present as ./ferrite.toml) and applies the environment.
pub fn load(path: Option<&Path>, env: impl Iterator<Item = (String, String)>) -> Result<ServerConfig> {
    let mut table = match path {
        Some(p) => read_table(p)?,
        None if Path::new("ferrite.toml").exists() => read_table(Path::new("ferrite.toml"))?,
        None => toml::Table::new(),
    };
    let known: Vec<String> = match toml::Value::try_from(ServerConfig::default())? {
        toml::Value::Table(t) => t.keys().cloned().chain(std::iter::once("secret".to_string())).collect(),
        _ => vec![],
    };
    for (k, v) in env {
        let Some(key) = k.strip_prefix("FERRITE_").map(|s| s.to_ascii_lowercase()) else { continue };
        let path: Vec<String> = key.split("__").map(String::from).collect();
        // Other FERRITE_* variables (FERRITE_LOG, test failpoints) are not configuration keys.
        if !known.contains(&path[0]) {
            continue;
        }
        let value = env_value(&k, &path, v)?;
        set_path(&mut table, &path, value, &k)?;
    }
    let cfg: ServerConfig =
        toml::Value::Table(table).try_into().map_err(|e: toml::de::Error| anyhow!("configuration: {}", e.message()))?;
    cfg.validate().map_err(|e| anyhow!("configuration: {e}"))?;
    Ok(cfg)
}

fn read_table(path: &Path) -> Result<toml::Table> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.parse::<toml::Table>().map_err(|e| anyhow!("{}: {}", path.display(), e.message()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_overrides_file_and_unknown_keys_fail() {
        let dir = tempfile_dir();
        let p = dir.join("ferrite.toml");
        std::fs::write(&p, "port = 4000\nchunk_bytes = 20000\n").unwrap();
        let env = vec![("FERRITE_PORT".to_string(), "5000".to_string()), ("FERRITE_SECRET".into(), "123".into())];
        let cfg = load(Some(&p), env.into_iter()).unwrap();
        assert_eq!(cfg.port, 5000);
        assert_eq!(cfg.chunk_bytes, 20000);
        assert_eq!(cfg.secret.as_deref(), Some("123"));
        std::fs::write(&p, "prot = 4000\n").unwrap();
        let err = load(Some(&p), std::iter::empty()).unwrap_err().to_string();
        assert!(err.contains("prot"), "{err}");
        let err = load(None, vec![("FERRITE_PORT".to_string(), "abc".to_string())].into_iter()).unwrap_err();
        assert!(err.to_string().contains("FERRITE_PORT"));
    }

    #[test]
    fn nested_keys_are_overridable_too() {
        let dir = tempfile_dir();
        let p = dir.join("nested.toml");
        std::fs::write(&p, "[tables.leads]\nconflict = \"lww\"\n").unwrap();
        let env = [
            ("FERRITE_AUTH__MODE", "jwt"),
            ("FERRITE_AUTH__SECRET", "0123456789abcdef0123456789abcdef"),
            ("FERRITE_AUTH__LEEWAY_SECS", "5"),
            ("FERRITE_TABLES__LEADS__READ", "tenant_id = claims.tenant_id"),
            ("FERRITE_TABLES__LEADS__PUBLIC", "false"),
            ("FERRITE_TABLES__MEMORY__RESOLVE", r#"["max(importance)", "lww"]"#),
            ("FERRITE_TABLES__TASKS__COLUMNS__STATUS", "server-wins"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        let cfg = load(Some(&p), env.into_iter()).unwrap();
        assert_eq!(cfg.auth.mode, "jwt");
        assert_eq!(cfg.auth.leeway_secs, 5);
        assert_eq!(cfg.tables["leads"].conflict.as_deref(), Some("lww"), "file values stay");
        assert_eq!(cfg.tables["leads"].read.as_deref(), Some("tenant_id = claims.tenant_id"));
        assert_eq!(cfg.tables["memory"].resolve, vec!["max(importance)".to_string(), "lww".into()]);
        assert_eq!(cfg.tables["tasks"].columns["status"], "server-wins");
        let bad = [("FERRITE_AUTH__MODE".to_string(), "maybe".to_string())];
        let err = load(Some(&p), bad.into_iter()).unwrap_err().to_string();
        assert!(err.contains("auth.mode"), "{err}");
        let bad = [("FERRITE_TABLES__LEADS__COLOUR".to_string(), "red".to_string())];
        let err = load(Some(&p), bad.into_iter()).unwrap_err().to_string();
        assert!(err.to_lowercase().contains("colour"), "{err}");
    }

    #[test]
    fn every_example_config_is_valid() {
        let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
        let mut checked = 0;
        for entry in std::fs::read_dir(&examples).unwrap() {
            let p = entry.unwrap().path().join("ferrite.toml");
            if p.exists() {
                let env = [("FERRITE_AUTH__SECRET".to_string(), "an-example-secret-of-at-least-32-bytes".to_string())];
                let cfg = load(Some(&p), env.into_iter()).unwrap_or_else(|e| panic!("{}: {e:#}", p.display()));
                assert!(!cfg.tables.is_empty(), "{}", p.display());
                checked += 1;
            }
        }
        assert_eq!(checked, 3, "pipeline-editor, agents-console, lead-forms");
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("ferrite-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
