//! Loading `ferrite.toml` with `FERRITE_*` environment overrides.
//!
//! Keys are the fields of [`ServerConfig`]; `FERRITE_<KEY>` (upper case) overrides a key, typed
//! like the key's default. Unknown keys in the file are an error that names them.

use anyhow::{anyhow, Context, Result};
use ferrite_server::ServerConfig;
use std::path::Path;

/// Keys whose values are strings even when they look like numbers.
const STRING_KEYS: [&str; 6] = ["database_url", "listen", "data_dir", "slot_name", "publication", "secret"];

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
        if !known.contains(&key) {
            continue;
        }
        let value = if STRING_KEYS.contains(&key.as_str()) {
            toml::Value::String(v)
        } else if let Ok(i) = v.parse::<i64>() {
            toml::Value::Integer(i)
        } else if let Ok(b) = v.parse::<bool>() {
            toml::Value::Boolean(b)
        } else {
            return Err(anyhow!("environment variable {k}={v:?}: expected a number or true/false"));
        };
        table.insert(key, value);
    }
    let cfg: ServerConfig = toml::Value::Table(table)
        .try_into()
        .map_err(|e: toml::de::Error| anyhow!("configuration: {}", e.message()))?;
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

    fn tempfile_dir() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("ferrite-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
