//! Reading a response body without building every message: the body split into its messages'
//! texts, and plain row inserts (every row of an initial snapshot) read in place — their column
//! names and values borrowed from the body — so applying a snapshot costs little more than
//! SQLite's own inserts. Anything else (changes from the log, control messages, rows of
//! relational shapes with their tags) is parsed whole by the caller.
//!
//! The server lays snapshot rows out one way (`{"key":…,"value":{…},"headers":{"operation":
//! "insert","relation":[…]}}`, no spaces); a message laid out differently is simply not taken
//! by the fast path.

use std::borrow::Cow;

/// The texts of the elements of a JSON array (`None` when `body` is not one).
pub fn split_array(body: &str) -> Option<Vec<&str>> {
    let b = body.as_bytes();
    let mut i = skip_ws(b, 0);
    (b.get(i) == Some(&b'[')).then_some(())?;
    i = skip_ws(b, i + 1);
    let mut items = Vec::new();
    if b.get(i) == Some(&b']') {
        return (skip_ws(b, i + 1) == b.len()).then_some(items);
    }
    loop {
        let end = skip_value(b, i)?;
        items.push(&body[i..end]);
        i = skip_ws(b, end);
        match b.get(i)? {
            b',' => i = skip_ws(b, i + 1),
            b']' => return (skip_ws(b, i + 1) == b.len()).then_some(items),
            _ => return None,
        }
    }
}

/// A plain insert's column names and values (`None` = NULL), in the message's order.
pub struct Insert<'a> {
    /// (column, value) pairs.
    pub pairs: Vec<(Cow<'a, str>, Option<Cow<'a, str>>)>,
}

/// The message as a plain insert, if it is one laid out as the server writes snapshot rows.
pub fn plain_insert(message: &str) -> Option<Insert<'_>> {
    let b = message.as_bytes();
    let mut i = expect(b, 0, b"{\"key\":")?;
    // (The key is not needed: the table's primary key says where the row goes.)
    (b.get(i) == Some(&b'"')).then_some(())?;
    i = skip_string(b, i)?;
    i = expect(b, i, b",\"value\":{")?;
    let mut pairs = Vec::with_capacity(8);
    if b.get(i) != Some(&b'}') {
        loop {
            let (name, next) = string(message, i)?;
            i = expect(b, next, b":")?;
            let value = if b[i..].starts_with(b"null") {
                i += 4;
                None
            } else {
                let (v, next) = string(message, i)?;
                i = next;
                Some(v)
            };
            pairs.push((name, value));
            match b.get(i)? {
                b',' => i += 1,
                b'}' => break,
                _ => return None,
            }
        }
    }
    i = expect(b, i + 1, b",\"headers\":{\"operation\":\"insert\",\"relation\":[\"")?;
    i = skip_string(b, i - 1)?;
    i = expect(b, i, b",\"")?;
    i = skip_string(b, i - 1)?;
    i = expect(b, i, b"]}}")?;
    (i == b.len()).then_some(Insert { pairs })
}

fn expect(b: &[u8], i: usize, literal: &[u8]) -> Option<usize> {
    b.get(i..)?.starts_with(literal).then_some(i + literal.len())
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while matches!(b.get(i), Some(b' ' | b'\n' | b'\r' | b'\t')) {
        i += 1;
    }
    i
}

/// The end of the JSON value starting at `i`, by its structure alone (strings and nesting):
/// what it holds is checked by whoever parses it.
fn skip_value(b: &[u8], i: usize) -> Option<usize> {
    match *b.get(i)? {
        b'"' => skip_string(b, i),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut j = i;
            loop {
                match *b.get(j)? {
                    b'"' => {
                        j = skip_string(b, j)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth = depth.checked_sub(1)?;
                        if depth == 0 {
                            return Some(j + 1);
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
        }
        _ => {
            let mut j = i;
            while b.get(j).is_some_and(|c| !matches!(c, b',' | b']' | b'}' | b' ' | b'\n' | b'\r' | b'\t')) {
                j += 1;
            }
            (j > i).then_some(j)
        }
    }
}

/// The byte after the JSON string starting at `i`.
fn skip_string(b: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    loop {
        match *b.get(j)? {
            b'\\' => j += 2,
            b'"' => return Some(j + 1),
            _ => j += 1,
        }
    }
}

/// The JSON string starting at `i`, unescaped (borrowed when it has no escapes), and the byte
/// after it.
fn string(text: &str, i: usize) -> Option<(Cow<'_, str>, usize)> {
    let b = text.as_bytes();
    (b.get(i) == Some(&b'"')).then_some(())?;
    let end = skip_string(b, i)?;
    let inner = &text[i + 1..end - 1];
    if !inner.as_bytes().contains(&b'\\') {
        return Some((Cow::Borrowed(inner), end));
    }
    let decoded: String = serde_json::from_str(&text[i..end]).ok()?;
    Some((Cow::Owned(decoded), end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_split_into_their_messages() {
        let body = r#"[{"a":"x,]}"},{"b":[1,{"c":"\"}"}]}, {"headers":{"control":"up-to-date"}}]"#;
        let items = split_array(body).unwrap();
        assert_eq!(
            items,
            vec![r#"{"a":"x,]}"}"#, r#"{"b":[1,{"c":"\"}"}]}"#, r#"{"headers":{"control":"up-to-date"}}"#]
        );
        for item in &items {
            serde_json::from_str::<serde_json::Value>(item).unwrap();
        }
        assert_eq!(split_array("[]").unwrap(), Vec::<&str>::new());
        assert_eq!(split_array(" [ 1 , \"two\" ,null] ").unwrap(), vec!["1", "\"two\"", "null"]);
        for bad in ["", "{}", "[", "[1,", "[1 2]", "[1]x", r#"["open]"#] {
            assert!(split_array(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn snapshot_rows_are_read_in_place_and_anything_else_is_left_to_the_parser() {
        let row = r#"{"key":"\"public\".\"t\"/\"1\"","value":{"id":"1","name":"a \"q\" é","note":null},"headers":{"operation":"insert","relation":["public","t"]}}"#;
        let ins = plain_insert(row).unwrap();
        let got: Vec<(String, Option<String>)> =
            ins.pairs.iter().map(|(k, v)| (k.to_string(), v.as_ref().map(|v| v.to_string()))).collect();
        assert_eq!(
            got,
            vec![("id".into(), Some("1".into())), ("name".into(), Some("a \"q\" é".into())), ("note".into(), None)]
        );
        assert!(matches!(ins.pairs[0].1, Some(Cow::Borrowed(_))), "plain values are borrowed");
        for other in [
            // From the log (lsn, txids), relational (tags), other operations, other layouts.
            r#"{"key":"k","value":{"id":"1"},"headers":{"operation":"insert","relation":["public","t"],"txids":[5],"lsn":"9"}}"#,
            r#"{"key":"k","value":{"id":"1"},"headers":{"operation":"insert","relation":["public","t"],"tags":["x"]}}"#,
            r#"{"key":"k","value":{"id":"1"},"headers":{"operation":"update","relation":["public","t"]}}"#,
            r#"{"key": "k", "value": {"id": "1"}, "headers": {"operation": "insert", "relation": ["public", "t"]}}"#,
            r#"{"headers":{"control":"snapshot-end","xmin":"1","xmax":"2","xip_list":[]}}"#,
        ] {
            assert!(plain_insert(other).is_none(), "{other}");
        }
    }
}
