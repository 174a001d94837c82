//! Who may read and write what (`[auth]` and the `read`/`write`/`public` keys of
//! `[tables.<name>]` in `ferrite.toml`).
//!
//! - `auth.mode = "insecure"` (default): no tokens; every table is readable and writable.
//! - `auth.mode = "jwt"`: every shape, transaction and presence request carries
//!   `Authorization: Bearer <JWT>` ([`jwt`]). A table is readable only if it has a `read` rule
//!   (ANDed into every shape on it as a separately compiled tree, so a client's own `where` can
//!   only narrow it) or is marked
//!   `public`; it is writable only if it has a `write` rule, which must hold for the row before
//!   and after each mutation, narrowed per kind of write by optional `insert`, `update` and
//!   `delete` rules ([`WriteKind`]). Rules name token claims as `claims.<name>` ([`rules`]).
//!
//! In jwt mode a caller learns about a table only what the configuration exposes to it: a name
//! without a read rule (or `public`) is refused alike whether or not such a table exists, and so
//! is a write to a name without a write rule (checked before the table is looked up), so a token
//! cannot probe which tables the database holds. A configured table that is missing from the
//! database is reported as missing.

pub mod jwt;
pub mod rules;

use crate::config::{AuthMode, ServerConfig};
use ferrite_protocol::relation::QualifiedName;
use ferrite_where::BoundRule;
pub use jwt::Identity;
use rules::RuleTemplate;
use std::collections::HashMap;

/// Access rules of one table.
#[derive(Debug, Clone, Default)]
struct TableRules {
    read: Option<RuleTemplate>,
    write: Option<RuleTemplate>,
    /// Further conditions per kind of write ([`WriteKind`]), ANDed with `write`.
    /// Indexed by [`WriteKind::index`].
    kinds: [Option<RuleTemplate>; 3],
    public: bool,
}

/// What a write does to its row, judged on the row as it is when the write runs (not on the
/// mutation's name: an insert of a key that exists changes that row).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteKind {
    /// Creates the row (none exists, or it was deleted).
    Insert,
    /// Changes a row that exists.
    Update,
    /// Deletes a row that exists.
    Delete,
}

impl WriteKind {
    /// Every kind, in [`WriteKind::index`] order.
    pub const ALL: [WriteKind; 3] = [WriteKind::Insert, WriteKind::Update, WriteKind::Delete];

    /// Its position in [`WriteKind::ALL`] (for per-kind arrays).
    pub fn index(self) -> usize {
        self as usize
    }

    /// Its name: the `[tables.<name>]` key of its rule, and the word in messages.
    pub fn name(self) -> &'static str {
        match self {
            WriteKind::Insert => "insert",
            WriteKind::Update => "update",
            WriteKind::Delete => "delete",
        }
    }
}

/// The server's access policy.
pub struct Auth {
    verifier: Option<jwt::Verifier>,
    tables: HashMap<QualifiedName, TableRules>,
}

/// Why a request is refused as a whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No usable token (401).
    #[error("{0}")]
    Unauthenticated(String),
    /// A valid token without the right to this table or room (403).
    #[error("{0}")]
    Forbidden(String),
}

impl Auth {
    /// The policy of a configuration; the error names the bad setting.
    pub fn from_config(cfg: &ServerConfig) -> Result<Auth, String> {
        let verifier = match cfg.auth.mode {
            AuthMode::Insecure => None,
            AuthMode::Jwt => Some(jwt::Verifier::from_config(&cfg.auth)?),
        };
        let mut tables = HashMap::new();
        for (name, t) in &cfg.tables {
            let q = QualifiedName::parse(name).map_err(|e| format!("tables.{name}: {e}"))?;
            let rule = |key: &str, text: &Option<String>| {
                text.as_deref()
                    .map(|r| RuleTemplate::parse(r).map_err(|e| format!("tables.{name}.{key}: {e}")))
                    .transpose()
            };
            let read = rule("read", &t.read)?;
            let write = rule("write", &t.write)?;
            let kinds = [
                rule(WriteKind::Insert.name(), &t.insert)?,
                rule(WriteKind::Update.name(), &t.update)?,
                rule(WriteKind::Delete.name(), &t.delete)?,
            ];
            if write.is_none() && kinds.iter().any(Option::is_some) {
                return Err(format!(
                    "tables.{name}: insert, update and delete rules narrow the write rule; give the table a write rule too"
                ));
            }
            tables.insert(q, TableRules { read, write, kinds, public: t.public });
        }
        Ok(Auth { verifier, tables })
    }

    /// Whether tokens are required.
    pub fn enabled(&self) -> bool {
        self.verifier.is_some()
    }

    /// The caller of a request from its `Authorization` header value: `None` when auth is off.
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<Option<Identity>, AuthError> {
        let Some(verifier) = &self.verifier else { return Ok(None) };
        let Some(value) = authorization else {
            return Err(AuthError::Unauthenticated("missing Authorization: Bearer <token> header".into()));
        };
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .ok_or_else(|| AuthError::Unauthenticated("the Authorization header must be \"Bearer <token>\"".into()))?;
        verifier.verify(token.trim()).map(Some).map_err(AuthError::Unauthenticated)
    }

    /// The rule every shape on `table` is restricted to for this caller (`None`: no
    /// restriction), or why the caller may not read the table at all.
    pub fn read_filter(&self, table: &QualifiedName, who: Option<&Identity>) -> Result<Option<BoundRule>, AuthError> {
        let Some(who) = who else { return Ok(None) };
        match self.tables.get(table) {
            Some(TableRules { read: Some(rule), .. }) => Ok(Some(rule.bind(&who.claims))),
            Some(TableRules { public: true, .. }) => Ok(None),
            _ => Err(AuthError::Forbidden(format!(
                "table {} is not readable: the server's configuration gives it no read rule and does not make it public, \
                 or there is no such table (jwt mode does not say which)",
                table.quoted()
            ))),
        }
    }

    /// The rule a row of `table` must satisfy before and after this caller's mutation
    /// (`None`: no check), or why the caller may not write the table at all.
    pub fn write_filter(&self, table: &QualifiedName, who: Option<&Identity>) -> Result<Option<BoundRule>, AuthError> {
        let Some(who) = who else { return Ok(None) };
        match self.tables.get(table) {
            Some(TableRules { write: Some(rule), .. }) => Ok(Some(rule.bind(&who.claims))),
            _ => Err(AuthError::Forbidden(format!(
                "table {} is not writable: the server's configuration gives it no write rule, or there is no such \
                 table (jwt mode does not say which)",
                table.quoted()
            ))),
        }
    }
}

impl Auth {
    /// The key a shared cache must keep this caller's shape responses under: a digest of
    /// everything about the caller that shape responses depend on — the values of the claims
    /// named by the read rules (the rules bound for this caller decide every shape it may read,
    /// its subqueries included, and which tables it may not read at all). Two callers with the
    /// same scope send the same URL for the same rows, so they may share a cached response;
    /// callers with different scopes never do. `public` when auth is off.
    pub fn cache_scope(&self, who: Option<&Identity>) -> String {
        use sha2::{Digest, Sha256};
        let Some(who) = who else { return "public".to_string() };
        let mut tables: Vec<(&QualifiedName, &TableRules)> = self.tables.iter().collect();
        tables.sort_by(|a, b| a.0.cmp(b.0));
        let mut h = Sha256::new();
        h.update(b"ferrite-cache-scope-v1");
        // Every part is length-prefixed, so no two different sequences hash the same input.
        let mut part = |bytes: &[u8]| {
            h.update((bytes.len() as u64).to_le_bytes());
            h.update(bytes);
        };
        for (name, rules) in tables {
            let Some(read) = &rules.read else { continue };
            part(name.quoted().as_bytes());
            for claim in read.bind(&who.claims).claims {
                part(claim.path.join(".").as_bytes());
                match &claim.value {
                    Some(v) => part(format!("={v}").as_bytes()),
                    None => part(b"null"),
                }
            }
        }
        let digest = h.finalize();
        digest.iter().take(16).map(|b| format!("{b:02x}")).collect()
    }

    /// The further condition this caller's write of kind `kind` on `table` must meet (with the
    /// write rule), if the table has one.
    pub fn kind_filter(&self, table: &QualifiedName, who: Option<&Identity>, kind: WriteKind) -> Option<BoundRule> {
        let who = who?;
        self.tables.get(table)?.kinds[kind.index()].as_ref().map(|r| r.bind(&who.claims))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TableConfig;

    fn with_rules(read: Option<&str>, write: Option<&str>) -> ServerConfig {
        let mut cfg = ServerConfig::default();
        cfg.auth.mode = AuthMode::Jwt;
        cfg.auth.secret = Some("a-secret-that-is-long-enough-0123456789".into());
        cfg.tables.insert(
            "steps".into(),
            TableConfig { read: read.map(String::from), write: write.map(String::from), ..Default::default() },
        );
        cfg
    }

    #[test]
    fn kind_rules_narrow_a_write_rule_and_need_one() {
        let mut cfg = with_rules(None, None);
        cfg.tables.get_mut("steps").unwrap().update = Some("claims.role = 'staff'".into());
        let err = Auth::from_config(&cfg).err().expect("refused");
        assert!(err.contains("tables.steps") && err.contains("write rule"), "{err}");
        cfg.tables.get_mut("steps").unwrap().write = Some("true".into());
        let auth = Auth::from_config(&cfg).unwrap();
        let who = Identity {
            subject: "v".into(),
            claims: serde_json::json!({"sub": "v", "role": "visitor"}).as_object().unwrap().clone(),
        };
        let steps = QualifiedName::parse("steps").unwrap();
        assert!(auth.kind_filter(&steps, Some(&who), WriteKind::Update).is_some());
        assert!(auth.kind_filter(&steps, Some(&who), WriteKind::Insert).is_none());
        assert!(auth.kind_filter(&steps, None, WriteKind::Update).is_none(), "auth off: no check");
    }

    #[test]
    fn cache_scopes_follow_the_claims_read_rules_name() {
        let mut cfg = with_rules(Some("tenant = claims.tenant AND claims.role <> 'banned'"), None);
        cfg.tables.insert("notes".into(), TableConfig { public: true, ..Default::default() });
        let auth = Auth::from_config(&cfg).unwrap();
        let who =
            |claims: serde_json::Value| Identity { subject: "s".into(), claims: claims.as_object().unwrap().clone() };
        let scope = |c: serde_json::Value| auth.cache_scope(Some(&who(c)));
        let a = scope(serde_json::json!({"sub": "u1", "tenant": "a", "role": "staff", "name": "Ann"}));
        // Claims no read rule names (the subject, a display name) do not split the cache...
        assert_eq!(a, scope(serde_json::json!({"sub": "u2", "tenant": "a", "role": "staff", "name": "Bo"})));
        // ...every claim a rule names does, and a missing claim is not an empty one.
        assert_ne!(a, scope(serde_json::json!({"sub": "u1", "tenant": "b", "role": "staff"})));
        assert_ne!(a, scope(serde_json::json!({"sub": "u1", "tenant": "a", "role": "banned"})));
        assert_ne!(scope(serde_json::json!({"tenant": ""})), scope(serde_json::json!({})));
        // Values cannot be shifted between claims to forge another caller's scope.
        assert_ne!(
            scope(serde_json::json!({"tenant": "a", "role": "bstaff"})),
            scope(serde_json::json!({"tenant": "ab", "role": "staff"}))
        );
        assert_eq!(a.len(), 32);
        assert_eq!(auth.cache_scope(None), "public");
    }

    const MEMBERS: &str = "team_id IN (SELECT team_id FROM team_members WHERE user_id = claims.sub)";

    #[test]
    fn rules_may_read_other_tables_and_the_time() {
        assert!(Auth::from_config(&with_rules(Some(MEMBERS), Some(MEMBERS))).is_ok());
        let window = "created_at > now() - interval '30 days'";
        assert!(Auth::from_config(&with_rules(None, Some(window))).is_ok());
        assert!(Auth::from_config(&with_rules(Some(window), None)).is_ok());
    }
}
