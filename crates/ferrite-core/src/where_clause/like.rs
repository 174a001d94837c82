//! `LIKE` / `ILIKE` matching: `%` any run, `_` one character, an escape character (default `\`)
//! makes the next pattern character literal. `ILIKE` folds ASCII letters only, as Postgres does
//! under the `C` collation we evaluate with.

use super::EvalError;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Tok {
    Lit(char),
    One,
    Any,
}

fn compile(pattern: &str, escape: Option<char>, fold: bool) -> Result<Vec<Tok>, EvalError> {
    let mut toks = Vec::new();
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        if Some(c) == escape {
            match chars.next() {
                Some(n) => toks.push(Tok::Lit(if fold { n.to_ascii_lowercase() } else { n })),
                None => {
                    return Err(EvalError::InvalidInput(
                        "LIKE pattern must not end with escape character".into(),
                    ))
                }
            }
        } else if c == '%' {
            if toks.last() != Some(&Tok::Any) {
                toks.push(Tok::Any);
            }
        } else if c == '_' {
            toks.push(Tok::One);
        } else {
            toks.push(Tok::Lit(if fold { c.to_ascii_lowercase() } else { c }));
        }
    }
    Ok(toks)
}

/// Whether `text` matches `pattern`.
pub(crate) fn like(
    text: &str,
    pattern: &str,
    escape: Option<char>,
    case_insensitive: bool,
) -> Result<bool, EvalError> {
    let toks = compile(pattern, escape, case_insensitive)?;
    let text: Vec<char> = if case_insensitive {
        text.chars().map(|c| c.to_ascii_lowercase()).collect()
    } else {
        text.chars().collect()
    };
    // Classic wildcard matching with backtracking to the last `%`.
    let (mut t, mut p) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match toks.get(p) {
            Some(Tok::Lit(c)) if *c == text[t] => {
                t += 1;
                p += 1;
            }
            Some(Tok::One) => {
                t += 1;
                p += 1;
            }
            Some(Tok::Any) => {
                star = Some((p, t));
                p += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return Ok(false),
            },
        }
    }
    while toks.get(p) == Some(&Tok::Any) {
        p += 1;
    }
    Ok(p == toks.len())
}

/// The escape character of `LIKE ... ESCAPE e`: one character, or none for `''`.
pub(crate) fn escape_char(e: &str) -> Result<Option<char>, EvalError> {
    let mut it = e.chars();
    match (it.next(), it.next()) {
        (None, _) => Ok(None),
        (Some(c), None) => Ok(Some(c)),
        _ => Err(EvalError::InvalidInput(
            "invalid escape string: escape string must be empty or one character".into(),
        )),
    }
}
