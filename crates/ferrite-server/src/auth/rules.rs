//! Table rules: where clauses that may refer to the caller's token claims as `claims.<name>`
//! (or a nested `claims.<a>.<b>`), e.g. `tenant_id = claims.tenant_id` or
//! `team_id = ANY(claims.teams)`.
//!
//! A rule is parsed once at startup ([`RuleTemplate::parse`]), which also finds the claims it
//! names. Per caller it is *bound* ([`RuleTemplate::bind`]): the values of those claims become
//! Postgres text — strings, numbers and booleans as written, arrays as array literals
//! (`{"a","b"}`), a missing claim or an object as NULL, which matches nothing — and are compiled
//! into the rule's tree as untyped values ([`WhereClause::compile_rule`]), never as SQL text. The
//! rule is never joined with a client's where clause as text either: the two are compiled apart
//! and ANDed as trees, so nothing in a where clause, a rule or a claim can comment out, close or
//! reopen the other.
//!
//! [`WhereClause::compile_rule`]: ferrite_where::WhereClause::compile_rule

use ferrite_where::{rule_claim_paths, BoundRule, ClaimValue};
use serde_json::{Map, Value};

/// A rule as configured, checked once at startup.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleTemplate {
    text: String,
    claim_paths: Vec<Vec<String>>,
}

impl RuleTemplate {
    /// Checks that the rule is one boolean expression without `$n` parameters and finds the
    /// claims it names.
    pub fn parse(text: &str) -> Result<RuleTemplate, String> {
        let claim_paths = rule_claim_paths(text).map_err(|e| e.to_string())?;
        ferrite_where::tables_read(text).map_err(|e| e.to_string())?;
        Ok(RuleTemplate { text: text.to_string(), claim_paths })
    }

    /// The rule for one caller: its text and the caller's values of the claims it names.
    pub fn bind(&self, claims: &Map<String, Value>) -> BoundRule {
        let claims = self
            .claim_paths
            .iter()
            .map(|path| ClaimValue { path: path.clone(), value: claim_text(lookup(claims, path)) })
            .collect();
        BoundRule { sql: self.text.clone(), claims }
    }
}

fn lookup<'a>(claims: &'a Map<String, Value>, path: &[String]) -> Option<&'a Value> {
    let (first, rest) = path.split_first()?;
    let mut v = claims.get(first)?;
    for p in rest {
        v = v.as_object()?.get(p)?;
    }
    Some(v)
}

fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A claim value as Postgres text: scalars as written, arrays as an array literal whose elements
/// are double-quoted with `"` and `\` escaped (non-scalar elements become NULL), anything else
/// NULL.
fn claim_text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::Array(items) => {
            let elems: Vec<String> = items
                .iter()
                .map(|item| match scalar_text(item) {
                    Some(t) => format!("\"{}\"", t.replace('\\', "\\\\").replace('"', "\\\"")),
                    None => "NULL".to_string(),
                })
                .collect();
            Some(format!("{{{}}}", elems.join(",")))
        }
        v => scalar_text(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    fn values(r: &BoundRule) -> Vec<(String, Option<String>)> {
        r.claims.iter().map(|c| (c.path.join("."), c.value.clone())).collect()
    }

    #[test]
    fn claims_are_bound_as_text_values() {
        let r = RuleTemplate::parse("tenant_id = claims.tenant_id AND team_id = ANY(claims.teams)").unwrap();
        let c =
            claims(json!({"tenant_id": "o'brien\n) OR (true) --", "teams": ["a", "b\"c\\", 7, {"x": 1}], "exp": 1}));
        let bound = r.bind(&c);
        assert_eq!(bound.sql, "tenant_id = claims.tenant_id AND team_id = ANY(claims.teams)");
        assert_eq!(
            values(&bound),
            vec![
                ("teams".to_string(), Some(r#"{"a","b\"c\\","7",NULL}"#.to_string())),
                ("tenant_id".to_string(), Some("o'brien\n) OR (true) --".to_string())),
            ]
        );
        // Missing claims and objects are NULL, which matches nothing.
        assert_eq!(
            values(&r.bind(&claims(json!({"teams": {"x": 1}})))),
            vec![("teams".into(), None), ("tenant_id".into(), None)]
        );
        // Nested claims, numbers, booleans; claims the rule does not name are left out.
        let r = RuleTemplate::parse("org = claims.app.org AND level <= claims.level AND claims.admin").unwrap();
        assert_eq!(
            values(&r.bind(&claims(json!({"app": {"org": 5}, "level": 3, "admin": true, "iat": 9})))),
            vec![
                ("admin".into(), Some("true".into())),
                ("app.org".into(), Some("5".into())),
                ("level".into(), Some("3".into()))
            ]
        );
    }

    #[test]
    fn a_rule_must_be_one_expression() {
        assert!(RuleTemplate::parse("tenant_id = claims.t) OR (true").is_err());
        assert!(RuleTemplate::parse("true; DROP TABLE x").is_err());
        assert!(RuleTemplate::parse("tenant_id = ").is_err());
        assert!(RuleTemplate::parse("tenant_id = $1").is_err());
    }
}
