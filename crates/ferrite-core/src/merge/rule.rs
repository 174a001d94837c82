//! The rules of a `resolve` policy (`["max(importance)", "lww"]`): which of two versions of a row
//! wins. Values are compared by [`ferrite_where::ColumnOrder`], as Postgres compares them.

use std::fmt;
use std::str::FromStr;

/// One step of a `resolve` policy: which of two versions of a row wins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    /// The version with the larger value of the column wins (`max(col)`); NULL loses to any value.
    Max(String),
    /// The version with the smaller value wins (`min(col)`); NULL loses to any value.
    Min(String),
    /// The more recently stamped version wins (`lww`); never a tie.
    Lww,
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rule::Max(c) => write!(f, "max({c})"),
            Rule::Min(c) => write!(f, "min({c})"),
            Rule::Lww => write!(f, "lww"),
        }
    }
}

impl FromStr for Rule {
    type Err = String;
    /// Parses `max(col)`, `min(col)` (the column may be double-quoted) or `lww`.
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
            None => col.to_string(),
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
    }
}
