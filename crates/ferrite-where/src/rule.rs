//! Table rules bound to one caller: a where clause from the server's configuration that names the
//! caller's token claims as `claims.<name>` (or `claims.<a>.<b>`), e.g. `tenant_id =
//! claims.tenant_id` or `team_id = ANY(claims.teams)`.
//!
//! A rule is parsed on its own, never pasted next to another clause as text: a client's where
//! clause and a rule are compiled into separate trees and ANDed as trees
//! ([`super::WhereClause::and`]), so a comment, a quote or a newline in either cannot change the
//! other's meaning. Claim values are bound into the tree as untyped literals (read as the type of
//! whatever they are compared with, exactly like a `$n` parameter); they are never parsed as SQL.

use super::syntax::parse_where;
use super::WhereError;
use pg_query::protobuf::node::Node as N;
use pg_query::protobuf::Node;

/// One token claim a rule names and its value for one caller, as Postgres text (`None` = NULL:
/// a missing claim, an object, or JSON null — which matches nothing).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct ClaimValue {
    /// `claims.app.org` → `["app", "org"]`.
    pub path: Vec<String>,
    /// The value as text: scalars as written, arrays as a Postgres array literal (`{"a","b"}`).
    pub value: Option<String>,
}

/// A rule bound to one caller: its text plus the values of exactly the claims it names. Part of
/// a shape's identity, so callers whose relevant claims are equal share the shape (other claims,
/// such as `exp`, do not split it).
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct BoundRule {
    /// The rule as configured.
    pub sql: String,
    /// Values of the claims the rule names, sorted by path.
    pub claims: Vec<ClaimValue>,
}

/// Checks that `sql` is one boolean expression usable as a rule (no `$n` parameters) and returns
/// the claim paths it names, sorted and without duplicates.
pub fn rule_claim_paths(sql: &str) -> Result<Vec<Vec<String>>, WhereError> {
    let node = parse_where(sql)?;
    let mut paths = Vec::new();
    collect(&node, &mut paths)?;
    paths.sort();
    paths.dedup();
    Ok(paths)
}

/// The claim path of a column reference `claims.<a>[.<b>…]`, if it is one.
pub(crate) fn claim_path(parts: &[String]) -> Option<&[String]> {
    match parts {
        [first, rest @ ..] if first == "claims" && !rest.is_empty() => Some(rest),
        _ => None,
    }
}

/// The claim references among `node` and everything below it (subqueries included).
fn collect(node: &Node, out: &mut Vec<Vec<String>>) -> Result<(), WhereError> {
    super::syntax::visit(node, 0, &mut |n, _| match n {
        N::ColumnRef(c) => {
            let parts: Option<Vec<String>> = c
                .fields
                .iter()
                .map(|f| match &f.node {
                    Some(N::String(s)) => Some(s.sval.clone()),
                    _ => None,
                })
                .collect();
            if let Some(path) = parts.as_deref().and_then(claim_path) {
                out.push(path.to_vec());
            }
            Ok(())
        }
        N::ParamRef(_) => {
            Err(WhereError::Unsupported("a rule cannot use $n parameters: name token claims as claims.<name>".into()))
        }
        _ => Ok(()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn finds_every_claim_a_rule_names() {
        let paths = rule_claim_paths(
            "tenant_id = claims.tenant_id AND (team_id = ANY(claims.teams) OR coalesce(claims.app.org, 'x') IN \
             (claims.a, lower(claims.b))) AND NOT claims.admin IS NULL AND t.claims = 1 AND claims.tenant_id <> ''",
        )
        .unwrap();
        assert_eq!(
            paths,
            vec![p(&["a"]), p(&["admin"]), p(&["app", "org"]), p(&["b"]), p(&["teams"]), p(&["tenant_id"])]
        );
        // Quoted text and other qualified names are not claims.
        assert!(rule_claim_paths("note <> 'claims.x' AND \"claims.y\" = 1 AND myclaims.z = 2").unwrap().is_empty());
    }

    #[test]
    fn a_rule_is_one_expression_without_params() {
        assert!(rule_claim_paths("tenant_id = claims.t) OR (true").is_err());
        assert!(rule_claim_paths("true; DROP TABLE x").is_err());
        assert!(rule_claim_paths("tenant_id = ").is_err());
        assert!(rule_claim_paths("tenant_id = $1").is_err());
    }
}
