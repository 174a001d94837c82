//! Table rules: where clauses that may refer to the caller's token claims as `claims.<name>`
//! (or a nested `claims.<a>.<b>`), e.g. `tenant_id = claims.tenant_id` or
//! `team_id = ANY(claims.teams)`.
//!
//! A rule becomes an ordinary where clause per caller by replacing each claim reference with a
//! quoted SQL literal of the claim's value — untyped, so Postgres (and the shape evaluator) read
//! it as the type of whatever it is compared with. Strings, numbers and booleans become `'…'`,
//! arrays become array literals `'{"a","b"}'`, and a missing claim (or an object) becomes `NULL`,
//! which matches nothing: a token without the claim sees no rows.

use serde_json::{Map, Value};

/// A rule as configured, checked once at startup.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleTemplate {
    text: String,
}

impl RuleTemplate {
    /// Checks that the rule is one boolean expression (with every claim as NULL).
    pub fn parse(text: &str) -> Result<RuleTemplate, String> {
        let t = RuleTemplate { text: text.to_string() };
        ferrite_core::where_clause::check_syntax(&t.render(&Map::new())).map_err(|e| e.to_string())?;
        Ok(t)
    }

    /// The rule for one caller: claim references replaced by literals of their values.
    pub fn render(&self, claims: &Map<String, Value>) -> String {
        let src = self.text.as_str();
        let bytes = src.as_bytes();
        let mut out = String::with_capacity(src.len() + 16);
        let mut i = 0;
        while i < bytes.len() {
            let c = bytes[i];
            // Copy quoted strings and identifiers verbatim.
            if c == b'\'' || c == b'"' {
                let end = closing_quote(bytes, i);
                out.push_str(&src[i..end]);
                i = end;
                continue;
            }
            let at_word_start = i == 0 || !is_ident_byte(bytes[i - 1]) && bytes[i - 1] != b'.';
            if at_word_start && src[i..].starts_with("claims.") {
                let mut j = i + "claims.".len();
                let mut path = vec![];
                loop {
                    let start = j;
                    while j < bytes.len() && is_ident_byte(bytes[j]) {
                        j += 1;
                    }
                    if start == j {
                        break;
                    }
                    path.push(&src[start..j]);
                    if j + 1 < bytes.len() && bytes[j] == b'.' && is_ident_byte(bytes[j + 1]) {
                        j += 1;
                    } else {
                        break;
                    }
                }
                if !path.is_empty() {
                    out.push_str(&literal(lookup(claims, &path)));
                    i = j;
                    continue;
                }
            }
            let ch = src[i..].chars().next().unwrap_or(' ');
            out.push(ch);
            i += ch.len_utf8();
        }
        out
    }
}

fn is_ident_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b >= 0x80
}

/// Index just past the quote that closes the one at `start` (a doubled quote is an escape).
fn closing_quote(bytes: &[u8], start: usize) -> usize {
    let q = bytes[start];
    let mut i = start + 1;
    while i < bytes.len() {
        if bytes[i] == q {
            if bytes.get(i + 1) == Some(&q) {
                i += 2;
                continue;
            }
            return i + 1;
        }
        i += 1;
    }
    bytes.len()
}

fn lookup<'a>(claims: &'a Map<String, Value>, path: &[&str]) -> Option<&'a Value> {
    let mut v = claims.get(path[0])?;
    for p in &path[1..] {
        v = v.as_object()?.get(*p)?;
    }
    Some(v)
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The SQL literal for a claim value.
fn literal(v: Option<&Value>) -> String {
    match v {
        Some(Value::Array(items)) => {
            let elems: Vec<String> = items
                .iter()
                .map(|item| match scalar_text(item) {
                    Some(t) => format!("\"{}\"", t.replace('\\', "\\\\").replace('"', "\\\"")),
                    None => "NULL".to_string(),
                })
                .collect();
            quote(&format!("{{{}}}", elems.join(",")))
        }
        Some(v) => scalar_text(v).map(|t| quote(&t)).unwrap_or_else(|| "NULL".into()),
        None => "NULL".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn claims_become_quoted_literals() {
        let r = RuleTemplate::parse("tenant_id = claims.tenant_id AND team_id = ANY(claims.teams)").unwrap();
        let c = claims(json!({"tenant_id": "o'brien", "teams": ["a", "b\"c", 7]}));
        assert_eq!(r.render(&c), "tenant_id = 'o''brien' AND team_id = ANY('{\"a\",\"b\\\"c\",\"7\"}')");
        // Missing claims and objects match nothing.
        assert_eq!(r.render(&claims(json!({"teams": {"x": 1}}))), "tenant_id = NULL AND team_id = ANY(NULL)");
        // Nested claims, numbers, booleans.
        let r = RuleTemplate::parse("org = claims.app.org AND level <= claims.level AND claims.admin").unwrap();
        assert_eq!(
            r.render(&claims(json!({"app": {"org": 5}, "level": 3, "admin": true}))),
            "org = '5' AND level <= '3' AND 'true'"
        );
    }

    #[test]
    fn quoted_text_and_other_names_are_left_alone() {
        let r = RuleTemplate::parse("note <> 'claims.x' AND \"claims.y\" = 1 AND myclaims.z = 2 AND t.claims.q = 3").unwrap();
        assert_eq!(r.render(&claims(json!({"x": "X", "y": "Y", "z": "Z", "q": "Q"}))), r.text);
    }

    #[test]
    fn a_rule_must_be_one_expression() {
        assert!(RuleTemplate::parse("tenant_id = claims.t) OR (true").is_err());
        assert!(RuleTemplate::parse("true; DROP TABLE x").is_err());
        assert!(RuleTemplate::parse("tenant_id = ").is_err());
    }
}
