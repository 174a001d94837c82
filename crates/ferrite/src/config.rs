//! Loading `ferrite.toml` with `FERRITE_*` environment overrides.
//!
//! Keys are the fields of [`ServerConfig`]; `FERRITE_<KEY>` (upper case) overrides a key. Nested
//! keys use `__` between levels: `FERRITE_AUTH__MODE=jwt`,
//! `FERRITE_TABLES__LEADS__READ="tenant_id = claims.tenant_id"`,
//! `FERRITE_TABLES__AGENT_MEMORY__RESOLVE='["max(importance)", "lww"]'` (a TOML array).
//! A value is read as a TOML number, boolean or array when the key takes one, and as text
//! otherwise, so `FERRITE_SECRET=123` is the text "123" and `FERRITE_PORT=abc` an error that
//! names the variable. Unknown keys, in the file or the environment, are errors that name them.

use anyhow::{anyhow, Context, Result};
use ferrite_server::ServerConfig;
use std::path::Path;

/// The configuration a TOML table describes; the error gives the dotted path of the bad key
/// (`auth.mode: unknown variant ...`).
fn parse(table: &toml::Table) -> Result<ServerConfig, String> {
    serde_path_to_error::deserialize(toml::Value::Table(table.clone())).map_err(|e| {
        let path = e.path().to_string();
        let message = e.into_inner().message().to_string();
        if path == "." {
            message
        } else {
            format!("{path}: {message}")
        }
    })
}

/// The readings of an environment variable's value to try, in order: as a TOML number,
/// boolean or array when it is one, then as text. (A TOML string literal is not a reading of
/// its own: `FERRITE_SECRET='"x"'` is the text with its quotes.)
fn readings(value: &str) -> Vec<toml::Value> {
    let typed = format!("v = {value}").parse::<toml::Table>().ok().and_then(|mut t| t.remove("v"));
    let typed = typed.filter(|v| {
        matches!(v, toml::Value::Integer(_) | toml::Value::Float(_) | toml::Value::Boolean(_) | toml::Value::Array(_))
    });
    typed.into_iter().chain(std::iter::once(toml::Value::String(value.to_string()))).collect()
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
    let path = path.or_else(|| Some(Path::new("ferrite.toml")).filter(|p| p.exists()));
    let mut table = match path {
        Some(p) => read_table(p)?,
        None => toml::Table::new(),
    };
    // The file on its own must be well-formed, so its mistakes are reported as the file's.
    let origin = path.map_or_else(|| "configuration".to_string(), |p| p.display().to_string());
    parse(&table).map_err(|e| anyhow!("{origin}: {e}"))?;
    let known: Vec<String> = match toml::Value::try_from(ServerConfig::default())? {
        toml::Value::Table(t) => t.keys().cloned().chain(std::iter::once("secret".to_string())).collect(),
        _ => vec![],
    };
    let mut overrides: Vec<(String, String)> = env.filter(|(k, _)| k.starts_with("FERRITE_")).collect();
    overrides.sort();
    for (var, value) in overrides {
        let key = var["FERRITE_".len()..].to_ascii_lowercase();
        let path: Vec<String> = key.split("__").map(String::from).collect();
        // Other FERRITE_* variables (FERRITE_LOG, test failpoints) are not configuration keys.
        if !known.contains(&path[0]) {
            continue;
        }
        let mut refusal = String::new();
        let mut accepted = None;
        for reading in readings(&value) {
            let mut candidate = table.clone();
            set_path(&mut candidate, &path, reading, &var)?;
            match parse(&candidate) {
                Ok(_) => {
                    accepted = Some(candidate);
                    break;
                }
                Err(e) => refusal = e,
            }
        }
        table = accepted.ok_or_else(|| anyhow!("environment variable {var}={value:?}: {refusal}"))?;
    }
    let cfg = parse(&table).map_err(|e| anyhow!("configuration: {e}"))?;
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
    use ferrite_server::config::{AuthMode, ConflictPolicy, Existence, Rule};

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
    fn values_are_read_by_the_type_their_key_takes() {
        let env = [
            ("FERRITE_SECRET", "true"),
            ("FERRITE_AUTH__ISSUER", "\"quoted\""),
            ("FERRITE_DEFAULT_CONFLICT", "server-wins"),
            ("FERRITE_LISTEN", "0.0.0.0"),
            ("FERRITE_ALLOW_SHAPE_DELETION", "true"),
            ("FERRITE_TABLES__NOTES__EXISTENCE", "add-wins"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        let cfg = load(None, env.into_iter()).unwrap();
        assert_eq!(cfg.secret.as_deref(), Some("true"), "text, though it reads as a boolean");
        assert_eq!(cfg.auth.issuer.as_deref(), Some("\"quoted\""), "the quotes are part of the text");
        assert_eq!(cfg.default_conflict, ConflictPolicy::ServerWins);
        assert_eq!(cfg.listen, "0.0.0.0");
        assert!(cfg.allow_shape_deletion);
        assert_eq!(cfg.tables["notes"].existence, Existence::AddWins);
    }

    #[test]
    fn mistakes_name_their_key_and_where_it_came_from() {
        let dir = tempfile_dir();
        let p = dir.join("mistakes.toml");
        for (file, needles) in [
            ("[tables.leads]\nconflict = \"first-wins\"\n", ["tables.leads.conflict", "first-wins"]),
            ("[tables.memory]\nresolve = [\"biggest(x)\"]\n", ["tables.memory.resolve", "not a rule"]),
            ("[auth]\nmode = \"maybe\"\n", ["auth.mode", "maybe"]),
            ("default_conflict = \"lww\"\nport = \"eighty\"\n", ["port", "eighty"]),
        ] {
            std::fs::write(&p, file).unwrap();
            let err = load(Some(&p), std::iter::empty()).unwrap_err().to_string();
            assert!(err.contains("mistakes.toml"), "{err}");
            for needle in needles {
                assert!(err.contains(needle), "{needle} in {err}");
            }
        }
        let env = [("FERRITE_TABLES__LEADS__COLUMNS__STATUS".to_string(), "first-wins".to_string())];
        let err = load(None, env.into_iter()).unwrap_err().to_string();
        assert!(err.contains("FERRITE_TABLES__LEADS__COLUMNS__STATUS"), "{err}");
        assert!(err.contains("tables.leads.columns.status"), "{err}");
        assert!(err.contains("server-wins"), "the choices are listed: {err}");
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
        assert_eq!(cfg.auth.mode, AuthMode::Jwt);
        assert_eq!(cfg.auth.leeway_secs, 5);
        assert_eq!(cfg.tables["leads"].conflict, Some(ConflictPolicy::Lww), "file values stay");
        assert_eq!(cfg.tables["leads"].read.as_deref(), Some("tenant_id = claims.tenant_id"));
        assert_eq!(cfg.tables["memory"].resolve, vec![Rule::Max("importance".into()), Rule::Lww]);
        assert_eq!(cfg.tables["tasks"].columns["status"], ConflictPolicy::ServerWins);
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
