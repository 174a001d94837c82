//! Postgres array literals (`{1,2,NULL}`, `{"a b",c}`) for one-dimensional arrays: the element
//! texts as `array_in` splits them, and `array_out`'s quoting.

use super::EvalError;

/// Splits an array literal into element texts (`None` = NULL). Multi-dimensional arrays and
/// explicit bounds (`[0:1]={...}`) are refused.
pub(crate) fn split_array_literal(input: &str, type_name: &str) -> Result<Vec<Option<String>>, EvalError> {
    let bad = |detail: &str| {
        EvalError::InvalidInput(format!("malformed array literal: \"{input}\" ({detail}) for type {type_name}"))
    };
    let s = input.trim_matches(|c: char| c.is_ascii_whitespace());
    if s.starts_with('[') {
        return Err(EvalError::Unsupported(format!(
            "array literal \"{input}\": explicit array bounds are not supported"
        )));
    }
    let inner = s
        .strip_prefix('{')
        .and_then(|r| r.strip_suffix('}'))
        .ok_or_else(|| bad("Array value must start with \"{\" or dimension information"))?;
    let mut out = Vec::new();
    if inner.trim_matches(|c: char| c.is_ascii_whitespace()).is_empty() {
        return Ok(out);
    }
    let mut chars = inner.chars().peekable();
    loop {
        // Skip leading whitespace.
        while chars.peek().is_some_and(|c| c.is_ascii_whitespace()) {
            chars.next();
        }
        let mut text = String::new();
        let mut quoted = false;
        let mut any_escape = false;
        match chars.peek() {
            Some('{') => {
                return Err(EvalError::Unsupported(format!(
                    "array literal \"{input}\": multidimensional arrays are not supported"
                )))
            }
            Some('"') => {
                quoted = true;
                chars.next();
                loop {
                    match chars.next() {
                        Some('\\') => match chars.next() {
                            Some(c) => text.push(c),
                            None => return Err(bad("Unexpected end of input")),
                        },
                        Some('"') => break,
                        Some(c) => text.push(c),
                        None => return Err(bad("Unexpected end of input")),
                    }
                }
                while chars.peek().is_some_and(|c| c.is_ascii_whitespace()) {
                    chars.next();
                }
            }
            _ => {
                // Unquoted: up to the next comma; backslashes escape; trailing whitespace that
                // was not escaped is dropped.
                let mut keep = 0usize;
                loop {
                    match chars.peek() {
                        None | Some(',') => break,
                        Some('"') => return Err(bad("Unexpected array element")),
                        Some('{') | Some('}') => return Err(bad("Unexpected array element")),
                        Some('\\') => {
                            chars.next();
                            match chars.next() {
                                Some(c) => {
                                    text.push(c);
                                    keep = text.len();
                                    any_escape = true;
                                }
                                None => return Err(bad("Unexpected end of input")),
                            }
                        }
                        Some(&c) => {
                            chars.next();
                            text.push(c);
                            if !c.is_ascii_whitespace() {
                                keep = text.len();
                            }
                        }
                    }
                }
                text.truncate(keep);
                if text.is_empty() && !any_escape {
                    return Err(bad("Unexpected \",\" character"));
                }
            }
        }
        if !quoted && !any_escape && text.eq_ignore_ascii_case("null") {
            out.push(None);
        } else {
            out.push(Some(text));
        }
        match chars.next() {
            None => break,
            Some(',') => continue,
            Some(_) => return Err(bad("Unexpected array element")),
        }
    }
    Ok(out)
}

/// `array_out`: elements joined with commas, quoted when needed.
pub(crate) fn format_array_literal(elems: &[Option<String>]) -> String {
    let mut out = String::from("{");
    for (i, e) in elems.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        match e {
            None => out.push_str("NULL"),
            Some(s) => {
                let needs_quotes = s.is_empty()
                    || s.eq_ignore_ascii_case("null")
                    || s.chars().any(|c| matches!(c, '{' | '}' | ',' | '"' | '\\') || is_pg_space(c));
                if needs_quotes {
                    out.push('"');
                    for c in s.chars() {
                        if c == '"' || c == '\\' {
                            out.push('\\');
                        }
                        out.push(c);
                    }
                    out.push('"');
                } else {
                    out.push_str(s);
                }
            }
        }
    }
    out.push('}');
    out
}

/// `array_isspace`: space, tab, newline, carriage return, vertical tab, form feed.
fn is_pg_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0b' | '\x0c')
}
