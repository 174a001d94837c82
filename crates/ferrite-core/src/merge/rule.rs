//! The rules of a `resolve` policy (`["max(importance)", "lww"]`): which of two versions of a row
//! wins. Values are compared by [`ferrite_where::ColumnOrder`], as Postgres compares them.

use std::fmt;
use std::str::FromStr;

/// One step of a `resolve` policy: which of two versions of a row wins. In configuration it is
/// written as text (`"max(importance)"`), so it (de)serializes as that text.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Rule {
    /// The version with the larger value of the column wins (`max(col)`); NULL loses to any value.
    Max(String),
    /// The version with the smaller value wins (`min(col)`); NULL loses to any value.
    Min(String),
    /// The more recently stamped version wins (`lww`); never a tie.
    Lww,
}

impl fmt::Display for Rule {
    /// The text [`Rule::from_str`] reads back: a column that is not a plain lower-case name is
    /// double-quoted.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let column = |c: &str| {
            let plain = c.starts_with(|ch: char| ch.is_ascii_lowercase() || ch == '_')
                && c.chars().all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '_');
            if plain {
                c.to_string()
            } else {
                format!("\"{}\"", c.replace('"', "\"\""))
            }
        };
        match self {
            Rule::Max(c) => write!(f, "max({})", column(c)),
            Rule::Min(c) => write!(f, "min({})", column(c)),
            Rule::Lww => write!(f, "lww"),
        }
    }
}

impl TryFrom<String> for Rule {
    type Error = String;
    fn try_from(s: String) -> Result<Rule, String> {
        s.parse()
    }
}

impl From<Rule> for String {
    fn from(rule: Rule) -> String {
        rule.to_string()
    }
}

impl FromStr for Rule {
    type Err = String;
    /// Parses `max(col)`, `min(col)` or `lww`. The column is read as Postgres reads an
    /// identifier: folded to lower case unless double-quoted.
    fn from_str(s: &str) -> Result<Rule, String> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("lww") {
            return Ok(Rule::Lww);
        }
        let bad = || format!("{s:?} is not a rule: use \"max(column)\", \"min(column)\" or \"lww\"");
        let (func, rest) = s.split_once('(').ok_or_else(bad)?;
        let col = rest.strip_suffix(')').ok_or_else(bad)?.trim();
        let col = match col.strip_prefix('"').and_then(|c| c.strip_suffix('"')) {
            Some(quoted) => quoted.replace("\"\"", "\""),
            None => col.to_ascii_lowercase(),
        };
        if col.is_empty() {
            return Err(bad());
        }
        match func.trim().to_ascii_lowercase().as_str() {
            "max" => Ok(Rule::Max(col)),
            "min" => Ok(Rule::Min(col)),
            _ => Err(bad()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_parse_and_bad_ones_are_explained() {
        assert_eq!("max(importance)".parse::<Rule>(), Ok(Rule::Max("importance".into())));
        assert_eq!(" MIN( \"Due At\" ) ".parse::<Rule>(), Ok(Rule::Min("Due At".into())));
        assert_eq!("lww".parse::<Rule>(), Ok(Rule::Lww));
        for bad in ["max", "max()", "biggest(x)", "max(x", ""] {
            let e = bad.parse::<Rule>().unwrap_err();
            assert!(e.contains("not a rule"), "{e}");
        }
        assert_eq!(Rule::Max("a".into()).to_string(), "max(a)");
        assert_eq!("max(Importance)".parse::<Rule>(), Ok(Rule::Max("importance".into())), "folded like Postgres");
    }

    #[test]
    fn rules_read_back_what_they_print() {
        for rule in [
            Rule::Lww,
            Rule::Max("importance".into()),
            Rule::Min("Due At".into()),
            Rule::Max("a\"b)c".into()),
            Rule::Min("9lives".into()),
        ] {
            assert_eq!(rule.to_string().parse::<Rule>(), Ok(rule.clone()), "{rule}");
            let json = serde_json::to_string(&rule).unwrap();
            assert_eq!(serde_json::from_str::<Rule>(&json).unwrap(), rule);
        }
        let e = serde_json::from_str::<Rule>("\"biggest(x)\"").unwrap_err().to_string();
        assert!(e.contains("not a rule"), "{e}");
    }
}
