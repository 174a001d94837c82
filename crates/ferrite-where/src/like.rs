//! `LIKE` / `ILIKE` matching: `%` any run, `_` one character, an escape character (default `\`)
//! makes the next pattern character literal. `ILIKE` folds ASCII letters only, as Postgres does
//! under the `C` collation we evaluate with.
//!
//! Matching runs on the replication path for every candidate row, so its cost must not depend on
//! the product of the text and pattern lengths (a backtracking matcher is quadratic: a 20,000
//! character pattern against a 400 KB value took seconds). The pattern is split at `%` into
//! segments of fixed length; the first is anchored at the start, the last at the end, and each
//! one in between is matched at its leftmost place after the previous one — which is correct
//! because a segment consumes a fixed number of characters and `%` absorbs any gap. A segment
//! of literals is found with the standard library's two-way substring search (linear); one with
//! `_` by bit-parallel (shift-and) matching, linear in the text times the segment's length in
//! 64-bit words. Patterns are constants of at most [`super::limits::MAX_LIKE_PATTERN_CHARS`]
//! characters, so every match is linear in the text.

use super::EvalError;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Tok {
    Lit(char),
    One,
}

/// A pattern split at its `%`s: `segments[0]` must start the text unless `open_start`, the last
/// segment must end it unless `open_end`, the others may sit anywhere in between, in order.
#[derive(Debug)]
struct Pattern {
    segments: Vec<Vec<Tok>>,
    open_start: bool,
    open_end: bool,
}

fn compile(pattern: &str, escape: Option<char>, fold: bool) -> Result<Pattern, EvalError> {
    let mut segments = vec![Vec::new()];
    let mut open_start = false;
    let mut open_end = false;
    let mut chars = pattern.chars();
    let lit = |c: char| Tok::Lit(if fold { c.to_ascii_lowercase() } else { c });
    while let Some(c) = chars.next() {
        let tok = if Some(c) == escape {
            match chars.next() {
                Some(n) => lit(n),
                None => return Err(EvalError::InvalidInput("LIKE pattern must not end with escape character".into())),
            }
        } else if c == '%' {
            if segments.len() == 1 && segments[0].is_empty() {
                open_start = true;
            }
            if !segments.last().is_some_and(Vec::is_empty) {
                segments.push(Vec::new());
            }
            open_end = true;
            continue;
        } else if c == '_' {
            Tok::One
        } else {
            lit(c)
        };
        open_end = false;
        if let Some(s) = segments.last_mut() {
            s.push(tok);
        }
    }
    if open_end && segments.len() > 1 && segments.last().is_some_and(Vec::is_empty) {
        segments.pop();
    }
    Ok(Pattern { segments, open_start, open_end })
}

/// Whether `text` matches `pattern`.
pub(crate) fn like(text: &str, pattern: &str, escape: Option<char>, case_insensitive: bool) -> Result<bool, EvalError> {
    let p = compile(pattern, escape, case_insensitive)?;
    let folded;
    let text = if case_insensitive {
        folded = text.to_ascii_lowercase();
        folded.as_str()
    } else {
        text
    };
    Ok(matches(text, &p, &mut 0))
}

fn tok_matches(t: Tok, c: char) -> bool {
    match t {
        Tok::Lit(l) => l == c,
        Tok::One => true,
    }
}

/// The byte length of `segment` matched at the start of `text`, if it matches there.
fn match_prefix(text: &str, segment: &[Tok], steps: &mut u64) -> Option<usize> {
    let mut chars = text.char_indices();
    for &t in segment {
        *steps += 1;
        let (_, c) = chars.next()?;
        if !tok_matches(t, c) {
            return None;
        }
    }
    Some(chars.next().map_or(text.len(), |(i, _)| i))
}

/// The byte position where `segment` starts when matched at the end of `text`, if it does.
fn match_suffix(text: &str, segment: &[Tok], steps: &mut u64) -> Option<usize> {
    let mut chars = text.char_indices().rev();
    let mut start = text.len();
    for &t in segment.iter().rev() {
        *steps += 1;
        let (i, c) = chars.next()?;
        if !tok_matches(t, c) {
            return None;
        }
        start = i;
    }
    Some(start)
}

/// The byte position just past the leftmost occurrence of `segment` in `text`.
fn find_segment(text: &str, segment: &[Tok], steps: &mut u64) -> Option<usize> {
    let literal: Option<String> = segment.iter().map(|t| if let Tok::Lit(c) = t { Some(*c) } else { None }).collect();
    if let Some(needle) = literal {
        *steps += (text.len() + needle.len()) as u64;
        return text.find(&needle).map(|i| i + needle.len());
    }
    // Shift-and: bit i of `state` says the segment's first i + 1 tokens end at the current char.
    let m = segment.len();
    let words = m.div_ceil(64);
    let mut wild = vec![0u64; words];
    let mut by_char: Vec<(char, Vec<u64>)> = Vec::new();
    for (i, t) in segment.iter().enumerate() {
        match t {
            Tok::One => wild[i / 64] |= 1 << (i % 64),
            Tok::Lit(c) => {
                let at = match by_char.iter().position(|(k, _)| k == c) {
                    Some(at) => at,
                    None => {
                        by_char.push((*c, vec![0u64; words]));
                        by_char.len() - 1
                    }
                };
                by_char[at].1[i / 64] |= 1 << (i % 64);
            }
        }
    }
    by_char.sort_unstable_by_key(|(c, _)| *c);
    let last = ((m - 1) / 64, 1u64 << ((m - 1) % 64));
    let mut state = vec![0u64; words];
    for (i, c) in text.char_indices() {
        *steps += words as u64;
        let mask = by_char.binary_search_by_key(&c, |(k, _)| *k).ok().map(|at| &by_char[at].1);
        let mut carry = 1u64; // a match may start at this char
        for w in 0..words {
            let next_carry = state[w] >> 63;
            let allowed = wild[w] | mask.map_or(0, |m| m[w]);
            state[w] = ((state[w] << 1) | carry) & allowed;
            carry = next_carry;
        }
        if state[last.0] & last.1 != 0 {
            return Some(i + c.len_utf8());
        }
    }
    None
}

/// Matches a compiled pattern, counting the elementary steps taken in `steps` (tests check that
/// they grow linearly with the text).
fn matches(text: &str, p: &Pattern, steps: &mut u64) -> bool {
    let segs = &p.segments;
    if segs.len() == 1 && !p.open_start && !p.open_end {
        return match_prefix(text, &segs[0], steps) == Some(text.len());
    }
    let mut first = 0;
    let mut pos = 0;
    if !p.open_start {
        match match_prefix(text, &segs[0], steps) {
            Some(end) => pos = end,
            None => return false,
        }
        first = 1;
    }
    let mut end = text.len();
    let mut last = segs.len();
    if !p.open_end && last > first {
        match match_suffix(&text[pos..], &segs[last - 1], steps) {
            Some(start) => end = pos + start,
            None => return false,
        }
        last -= 1;
    }
    for seg in &segs[first..last] {
        if seg.is_empty() {
            continue;
        }
        match find_segment(&text[pos..end], seg, steps) {
            Some(after) => pos += after,
            None => return false,
        }
    }
    true
}

/// The escape character of `LIKE ... ESCAPE e`: one character, or none for `''`.
pub(crate) fn escape_char(e: &str) -> Result<Option<char>, EvalError> {
    let mut it = e.chars();
    match (it.next(), it.next()) {
        (None, _) => Ok(None),
        (Some(c), None) => Ok(Some(c)),
        _ => Err(EvalError::InvalidInput("invalid escape string: escape string must be empty or one character".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A plain backtracking matcher over characters, as a reference.
    fn reference(text: &[char], pat: &[char]) -> bool {
        match pat.split_first() {
            None => text.is_empty(),
            Some(('%', rest)) => (0..=text.len()).any(|i| reference(&text[i..], rest)),
            Some(('_', rest)) => !text.is_empty() && reference(&text[1..], rest),
            Some((c, rest)) => text.first() == Some(c) && reference(&text[1..], rest),
        }
    }

    #[test]
    fn agrees_with_a_reference_matcher_on_every_small_case() {
        let alphabet = ['a', 'b', 'é'];
        let pat_alphabet = ['a', 'b', 'é', '%', '_'];
        let mut texts = vec![String::new()];
        for len in 1..=5 {
            let mut next = vec![];
            for t in texts.iter().filter(|t| t.chars().count() == len - 1) {
                for c in alphabet {
                    next.push(format!("{t}{c}"));
                }
            }
            texts.extend(next);
        }
        let mut pats = vec![String::new()];
        for len in 1..=5 {
            let mut next = vec![];
            for p in pats.iter().filter(|p| p.chars().count() == len - 1) {
                for c in pat_alphabet {
                    next.push(format!("{p}{c}"));
                }
            }
            pats.extend(next);
        }
        for t in &texts {
            let tc: Vec<char> = t.chars().collect();
            for p in &pats {
                let pc: Vec<char> = p.chars().collect();
                assert_eq!(like(t, p, None, false).unwrap(), reference(&tc, &pc), "{t:?} LIKE {p:?}");
            }
        }
    }

    #[test]
    fn long_segments_span_several_words() {
        let seg: String = (0..150).map(|i| if i % 7 == 0 { '_' } else { 'a' }).collect();
        let text = format!("{}{}{}", "a".repeat(1000), "b", "a".repeat(200));
        assert!(like(&text, &format!("%b{seg}%"), None, false).unwrap());
        assert!(!like(&text, &format!("%b{seg}b%"), None, false).unwrap());
        assert!(like(&text, &format!("%{seg}b%{seg}"), None, false).unwrap());
    }

    /// The backtracking worst case: work grows linearly with the text, whatever the pattern.
    #[test]
    fn matching_is_linear_in_the_text() {
        let pattern = format!("%{}b%", "a".repeat(999));
        let wild = format!("%{}b%", "a_".repeat(499));
        for p in [&pattern, &wild] {
            let compiled = compile(p, Some('\\'), false).unwrap();
            let mut per_char = vec![];
            for n in [10_000usize, 40_000, 160_000] {
                let text = "a".repeat(n);
                let mut steps = 0;
                assert!(!matches(&text, &compiled, &mut steps));
                per_char.push(steps as f64 / n as f64);
            }
            assert!(per_char[2] <= per_char[0] * 1.1 + 1.0, "steps per character grew: {per_char:?}");
            assert!(per_char[2] <= 20.0, "{per_char:?}");
        }
    }
}
