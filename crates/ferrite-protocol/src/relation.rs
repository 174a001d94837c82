//! Qualified table names as clients write them in `?table=` and in write mutations.

use std::fmt;

/// A table identified by schema and name, both already case-folded/unquoted.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct QualifiedName {
    /// Schema, `public` when the client gave none.
    pub schema: String,
    /// Table name.
    pub name: String,
}

/// Why a `table` value could not be read as a relation name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RelationNameError {
    /// More than one unquoted `.`.
    #[error("Invalid relation identifier, too many delimiters")]
    TooManyDelimiters,
    /// An unterminated quote or an empty identifier.
    #[error("Invalid relation identifier: {0}")]
    Malformed(String),
}

impl QualifiedName {
    /// Builds a name from parts that are already exact identifiers.
    pub fn new(schema: impl Into<String>, name: impl Into<String>) -> Self {
        QualifiedName { schema: schema.into(), name: name.into() }
    }

    /// Parses `foo`, `sch.foo`, `"Foo.bar"."baz"`: unquoted parts are downcased, quoted parts kept
    /// exactly (with `""` meaning one `"`).
    pub fn parse(input: &str) -> Result<Self, RelationNameError> {
        let parts = split_identifiers(input, '.')?;
        match parts.as_slice() {
            [name] => Ok(QualifiedName::new("public", name.clone())),
            [schema, name] => Ok(QualifiedName::new(schema.clone(), name.clone())),
            _ => Err(RelationNameError::TooManyDelimiters),
        }
    }

    /// Whether the table lives in a schema no client may read or write through Ferrite:
    /// Ferrite's own bookkeeping (`ferrite`: recorded results, row clocks) and Postgres's
    /// catalogs (`pg_catalog`, `information_schema`, `pg_toast`, `pg_temp_*` and any `pg_*`).
    pub fn is_reserved(&self) -> bool {
        let s = self.schema.as_str();
        s == "ferrite" || s == "information_schema" || s.starts_with("pg_")
    }

    /// Whether this is `ferrite.audit`, the audit trail of client transactions: the one table of
    /// Ferrite's own schema clients may read as a shape (under its read rule in jwt mode; not in
    /// a subquery, and no client may write it).
    pub fn is_audit_trail(&self) -> bool {
        self.schema == "ferrite" && self.name == "audit"
    }

    /// The SQL spelling with both parts quoted: `"public"."items"`.
    pub fn quoted(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.name))
    }
}

impl fmt::Display for QualifiedName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.quoted())
    }
}

/// Quotes an identifier for SQL: `a"b` → `"a""b"`.
pub fn quote_ident(ident: &str) -> String {
    let mut out = String::with_capacity(ident.len() + 2);
    out.push('"');
    for c in ident.chars() {
        if c == '"' {
            out.push('"');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// Reads the rest of a double-quoted identifier whose opening quote was just consumed, up to and
/// including its closing quote (`""` inside stands for one `"`). `None` when the input ends first.
/// One reading of quoted identifiers for every list a request may carry (tables, columns, order).
pub fn read_quoted_identifier(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Option<String> {
    let mut ident = String::new();
    loop {
        match chars.next()? {
            '"' if chars.peek() == Some(&'"') => {
                chars.next();
                ident.push('"');
            }
            '"' => return Some(ident),
            c => ident.push(c),
        }
    }
}

/// Splits a list of possibly quoted identifiers on `sep` (outside quotes). Unquoted identifiers are
/// trimmed and downcased; an empty identifier is an error.
pub fn split_identifiers(input: &str, sep: char) -> Result<Vec<String>, RelationNameError> {
    let mut out = Vec::new();
    let mut chars = input.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut ident = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            ident = read_quoted_identifier(&mut chars)
                .ok_or_else(|| RelationNameError::Malformed(format!("unterminated quoted identifier in {input:?}")))?;
            while chars.peek().is_some_and(|c| c.is_whitespace()) {
                chars.next();
            }
            if ident.is_empty() {
                return Err(RelationNameError::Malformed("Invalid zero-length delimited identifier".into()));
            }
            match chars.next() {
                None => {
                    out.push(ident);
                    return Ok(out);
                }
                Some(c) if c == sep => out.push(ident),
                Some(c) => {
                    return Err(RelationNameError::Malformed(format!(
                        "unexpected character {c:?} after quoted identifier in {input:?}"
                    )))
                }
            }
        } else {
            let mut ended = true;
            for c in chars.by_ref() {
                if c == sep {
                    ended = false;
                    break;
                }
                ident.push(c);
            }
            let ident = ident.trim().to_lowercase();
            if ident.is_empty() {
                return Err(RelationNameError::Malformed("Invalid zero-length delimited identifier".into()));
            }
            if ident.contains('"') {
                return Err(RelationNameError::Malformed(format!("misplaced quote in {input:?}")));
            }
            out.push(ident);
            if ended {
                return Ok(out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_schemas() {
        for t in ["ferrite.clients", "pg_catalog.pg_authid", "information_schema.tables", "pg_temp_3.x", "pg_toast.t"] {
            assert!(QualifiedName::parse(t).unwrap().is_reserved(), "{t}");
        }
        for t in ["items", "public.ferrite", "\"Ferrite\".x", "app.pg"] {
            assert!(!QualifiedName::parse(t).unwrap().is_reserved(), "{t}");
        }
        assert!(QualifiedName::parse("ferrite.audit").unwrap().is_audit_trail());
        assert!(!QualifiedName::parse("public.audit").unwrap().is_audit_trail());
        assert!(!QualifiedName::parse("ferrite.row_clocks").unwrap().is_audit_trail());
    }

    #[test]
    fn parses_names() {
        assert_eq!(QualifiedName::parse("Foo").unwrap(), QualifiedName::new("public", "foo"));
        assert_eq!(QualifiedName::parse("sch.foo").unwrap(), QualifiedName::new("sch", "foo"));
        assert_eq!(QualifiedName::parse("\"foo.woah\".\"bar\"").unwrap(), QualifiedName::new("foo.woah", "bar"));
        assert_eq!(
            QualifiedName::parse("electric_test.\"issues for x\"").unwrap(),
            QualifiedName::new("electric_test", "issues for x")
        );
        assert_eq!(QualifiedName::parse("a.b.c"), Err(RelationNameError::TooManyDelimiters));
        assert!(QualifiedName::parse("\"abc").is_err());
        assert!(QualifiedName::parse("").is_err());
    }

    #[test]
    fn splits_column_lists() {
        assert_eq!(
            split_identifiers("id,\"Status-Check\",\"has,comma\",\"has\"\"quote\",PoTaTo", ',').unwrap(),
            vec!["id", "Status-Check", "has,comma", "has\"quote", "potato"]
        );
        assert!(split_identifiers("id,,x", ',').is_err());
    }
}
