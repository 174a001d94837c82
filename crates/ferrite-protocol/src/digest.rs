//! Convergence digests: a checksum of a shape's rows that the server and every client compute
//! alike, so a replica that drifted from the server (a corrupted file, a bug, a hand edit) is
//! noticed and repaired instead of silently showing wrong data.
//!
//! A [`Digest`] is the number of rows and two 32-bit lane sums (mod 2^32) of their
//! [`RowHash`]es: adding and removing rows in any order gives the same digest, so the server
//! keeps it up to date change by change (`+hash(new)`, `-hash(old)`), and a client recomputes
//! it from its stored rows in one pass. It travels as `"<count>:<hi:08x><lo:08x>"` in the
//! `ferrite_digest` header of a transaction's last message (the digest after the transaction)
//! and of `snapshot-end` (the digest of the snapshot).
//!
//! A row hash covers the row's columns as the clients hold them, which is not always Postgres'
//! text: the web client keeps what the Electric client parses (numbers, big integers, booleans,
//! JSON values, arrays), the Rust client SQLite integers, reals and text. So each value is first
//! put in a canonical form that all of them can produce — by the column's type (as the
//! `electric-schema` header names it, [`ValueKind::of`]) from text, or by the value's own type
//! in JavaScript — and that form is hashed:
//!
//! | value | canonical bytes |
//! |---|---|
//! | SQL NULL, JSON null | `n` |
//! | `bool` | `t` / `f` |
//! | `int2`, `int4`, `float4`, `float8`, JSON numbers | `d` + the f64's bits, u64 little-endian (NaN as `0x7ff8000000000000`, -0 as 0) |
//! | `int8` | `i` + u32 LE length + the decimal digits |
//! | anything else (text, uuid, numeric, timestamps, …), JSON strings | `s` + u32 LE length + UTF-8 |
//! | arrays (`dims > 0`, JSON arrays) | `a` + u32 LE count + the elements |
//! | JSON objects | `o` + u32 LE count + (key as a string, value) sorted by key (code points) |
//!
//! A row is its columns sorted by name (code points), each as (name as a string, value). The
//! row hash is two MurmurHash3 (x86, 32-bit) hashes of those bytes with different seeds.

use std::fmt;

/// Seeds of the two 32-bit hashes a [`RowHash`] is made of.
const SEEDS: (u32, u32) = (0x9747_b28c, 0x5bd1_e995);

/// How a column's values are put in canonical form (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    /// `int2`, `int4`, `float4`, `float8`: numbers (JavaScript parses them to `number`).
    Number,
    /// `int8`: exact decimal (JavaScript parses it to `bigint`).
    BigInt,
    /// `bool`.
    Bool,
    /// `json`, `jsonb`: the parsed JSON value.
    Json,
    /// Everything else: the text as it is.
    Text,
}

impl ValueKind {
    /// The kind of an `electric-schema` type name (`dims` > 0: an array of it, see
    /// [`ColumnKind`]).
    pub fn of(type_name: &str) -> ValueKind {
        match type_name {
            "int2" | "int4" | "float4" | "float8" => ValueKind::Number,
            "int8" => ValueKind::BigInt,
            "bool" => ValueKind::Bool,
            "json" | "jsonb" => ValueKind::Json,
            _ => ValueKind::Text,
        }
    }
}

/// A column's kind: its element kind and whether it is an array.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ColumnKind {
    /// Kind of the value (of each element, for an array).
    pub value: ValueKind,
    /// The column is an array (`dims` > 0 in `electric-schema`).
    pub array: bool,
}

impl ColumnKind {
    /// The kind of a column as `electric-schema` describes it.
    pub fn of(type_name: &str, dims: u64) -> ColumnKind {
        ColumnKind { value: ValueKind::of(type_name), array: dims > 0 }
    }
}

/// One row's hash: two independent 32-bit hashes of its canonical bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RowHash {
    /// Hash with the first seed.
    pub hi: u32,
    /// Hash with the second seed.
    pub lo: u32,
}

/// A change to a [`Digest`]: rows added minus rows removed, and the lane sums of their hashes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DigestDelta {
    /// Rows added minus rows removed.
    pub count: i64,
    /// Sum of the first lanes (added minus removed, mod 2^32).
    pub hi: u32,
    /// Sum of the second lanes.
    pub lo: u32,
}

impl DigestDelta {
    /// The row `h` enters.
    pub fn add(&mut self, h: RowHash) {
        self.count += 1;
        self.hi = self.hi.wrapping_add(h.hi);
        self.lo = self.lo.wrapping_add(h.lo);
    }

    /// The row `h` leaves.
    pub fn remove(&mut self, h: RowHash) {
        self.count -= 1;
        self.hi = self.hi.wrapping_sub(h.hi);
        self.lo = self.lo.wrapping_sub(h.lo);
    }

    /// Both changes together.
    pub fn merge(&mut self, other: DigestDelta) {
        self.count += other.count;
        self.hi = self.hi.wrapping_add(other.hi);
        self.lo = self.lo.wrapping_add(other.lo);
    }
}

/// The digest of a set of rows (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Digest {
    /// Number of rows.
    pub count: u64,
    /// Sum of the rows' first hashes, mod 2^32.
    pub hi: u32,
    /// Sum of the rows' second hashes, mod 2^32.
    pub lo: u32,
}

impl Digest {
    /// Adds a row.
    pub fn add(&mut self, h: RowHash) {
        let mut d = DigestDelta::default();
        d.add(h);
        self.apply(d);
    }

    /// Applies a change (the count never goes below zero: a digest that would is wrong anyway,
    /// and a mismatch shows it).
    pub fn apply(&mut self, d: DigestDelta) {
        self.count = self.count.saturating_add_signed(d.count);
        self.hi = self.hi.wrapping_add(d.hi);
        self.lo = self.lo.wrapping_add(d.lo);
    }

    /// Parses the `ferrite_digest` header form, `"<count>:<16 hex digits>"`.
    pub fn parse(s: &str) -> Option<Digest> {
        let (count, sums) = s.split_once(':')?;
        if sums.len() != 16 || !sums.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        Some(Digest {
            count: count.parse().ok()?,
            hi: u32::from_str_radix(&sums[..8], 16).ok()?,
            lo: u32::from_str_radix(&sums[8..], 16).ok()?,
        })
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // By hand: written once per transaction per shape on the replication path.
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut sums = [0u8; 16];
        for (i, b) in sums.iter_mut().enumerate() {
            let word = if i < 8 { self.hi } else { self.lo };
            *b = HEX[((word >> (28 - 4 * (i % 8))) & 0xf) as usize];
        }
        let mut count = [0u8; 20];
        let mut n = self.count;
        let mut at = count.len();
        loop {
            at -= 1;
            count[at] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        f.write_str(std::str::from_utf8(&count[at..]).map_err(|_| fmt::Error)?)?;
        f.write_str(":")?;
        f.write_str(std::str::from_utf8(&sums).map_err(|_| fmt::Error)?)
    }
}

/// A canonical value (see the module docs), built from a column's text or a client's stored
/// value.
#[derive(Debug, Clone, PartialEq)]
pub enum Canonical<'a> {
    /// SQL NULL or JSON null.
    Null,
    /// A boolean.
    Bool(bool),
    /// A number (f64).
    Number(f64),
    /// An `int8`, as decimal digits.
    BigInt(std::borrow::Cow<'a, str>),
    /// Text.
    Text(std::borrow::Cow<'a, str>),
    /// An array or a JSON array.
    Array(Vec<Canonical<'a>>),
    /// A JSON object (any key order: encoding sorts it).
    Object(Vec<(String, Canonical<'a>)>),
}

impl<'a> Canonical<'a> {
    /// The canonical form of a column's text (as the shape API sends it; `None` = NULL).
    pub fn from_text(kind: ColumnKind, text: Option<&'a str>) -> Canonical<'a> {
        let Some(text) = text else { return Canonical::Null };
        if kind.array {
            return parse_array(text, kind.value).unwrap_or(Canonical::Text(text.into()));
        }
        Canonical::scalar(kind.value, text)
    }

    /// The canonical form of one scalar text of `kind` (an array element, or a column).
    pub fn scalar(kind: ValueKind, text: &'a str) -> Canonical<'a> {
        match kind {
            ValueKind::Number => match parse_number(text) {
                Some(n) => Canonical::Number(n),
                None => Canonical::Text(text.into()),
            },
            ValueKind::BigInt => Canonical::BigInt(text.into()),
            ValueKind::Bool => match text {
                "t" | "true" => Canonical::Bool(true),
                "f" | "false" => Canonical::Bool(false),
                other => Canonical::Text(other.into()),
            },
            ValueKind::Json => match serde_json::from_str::<serde_json::Value>(text) {
                Ok(v) => Canonical::from_json(&v),
                Err(_) => Canonical::Text(text.into()),
            },
            ValueKind::Text => Canonical::Text(text.into()),
        }
    }

    /// The canonical form of a parsed JSON value.
    pub fn from_json(v: &serde_json::Value) -> Canonical<'static> {
        use serde_json::Value as J;
        match v {
            J::Null => Canonical::Null,
            J::Bool(b) => Canonical::Bool(*b),
            J::Number(n) => Canonical::Number(n.as_f64().unwrap_or(f64::NAN)),
            J::String(s) => Canonical::Text(s.clone().into()),
            J::Array(items) => Canonical::Array(items.iter().map(Canonical::from_json).collect()),
            J::Object(m) => Canonical::Object(m.iter().map(|(k, v)| (k.clone(), Canonical::from_json(v))).collect()),
        }
    }

    /// Appends the canonical bytes.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Canonical::Null => out.push(b'n'),
            Canonical::Bool(b) => out.push(if *b { b't' } else { b'f' }),
            Canonical::Number(n) => {
                out.push(b'd');
                let bits = if n.is_nan() {
                    0x7ff8_0000_0000_0000u64
                } else if *n == 0.0 {
                    0
                } else {
                    n.to_bits()
                };
                out.extend_from_slice(&bits.to_le_bytes());
            }
            Canonical::BigInt(s) => encode_str(out, b'i', s),
            Canonical::Text(s) => encode_str(out, b's', s),
            Canonical::Array(items) => {
                out.push(b'a');
                out.extend_from_slice(&(items.len() as u32).to_le_bytes());
                for item in items {
                    item.encode(out);
                }
            }
            Canonical::Object(entries) => {
                // Later duplicates win (as JSON.parse keeps the last), then key order.
                let mut sorted: Vec<&(String, Canonical<'_>)> = Vec::with_capacity(entries.len());
                for e in entries.iter().rev() {
                    if !sorted.iter().any(|s| s.0 == e.0) {
                        sorted.push(e);
                    }
                }
                sorted.sort_by(|a, b| a.0.cmp(&b.0));
                out.push(b'o');
                out.extend_from_slice(&(sorted.len() as u32).to_le_bytes());
                for (k, v) in sorted {
                    encode_str(out, b's', k);
                    v.encode(out);
                }
            }
        }
    }
}

fn encode_str(out: &mut Vec<u8>, tag: u8, s: &str) {
    out.push(tag);
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// A float as Postgres and JavaScript's `parseFloat` read it (`Infinity`, `-Infinity`, `NaN`).
fn parse_number(text: &str) -> Option<f64> {
    match text {
        "Infinity" => Some(f64::INFINITY),
        "-Infinity" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        t => t.parse().ok(),
    }
}

/// Parses a Postgres array literal (`{1,NULL,"a b",{2,3}}`) into canonical elements of `kind`;
/// `None` when it is not one (the text is then hashed as it is, by every side alike).
fn parse_array(text: &str, kind: ValueKind) -> Option<Canonical<'_>> {
    // A literal with explicit bounds (`[0:1]={…}`) starts at its brace.
    let start = text.find('{')?;
    let bytes = text.as_bytes();
    let (value, end) = parse_array_at(text, bytes, start, kind, 1)?;
    (text[end..].trim().is_empty()).then_some(value)
}

/// Postgres arrays have at most this many dimensions (`MAXDIM`); deeper text (a damaged replica)
/// is not an array literal, and the recursion stays shallow whatever the text.
const MAX_ARRAY_DEPTH: usize = 6;

fn parse_array_at<'a>(
    text: &'a str,
    b: &[u8],
    mut i: usize,
    kind: ValueKind,
    depth: usize,
) -> Option<(Canonical<'a>, usize)> {
    if b.get(i) != Some(&b'{') || depth > MAX_ARRAY_DEPTH {
        return None;
    }
    i += 1;
    let mut items = Vec::new();
    if b.get(i) == Some(&b'}') {
        return Some((Canonical::Array(items), i + 1));
    }
    loop {
        match b.get(i)? {
            b'{' => {
                let (inner, next) = parse_array_at(text, b, i, kind, depth + 1)?;
                items.push(inner);
                i = next;
            }
            b'"' => {
                let mut s = String::new();
                i += 1;
                loop {
                    match b.get(i)? {
                        b'\\' => {
                            let c = text[i + 1..].chars().next()?;
                            s.push(c);
                            i += 1 + c.len_utf8();
                        }
                        b'"' => {
                            i += 1;
                            break;
                        }
                        _ => {
                            let c = text[i..].chars().next()?;
                            s.push(c);
                            i += c.len_utf8();
                        }
                    }
                }
                items.push(owned_scalar(kind, s));
            }
            _ => {
                let start = i;
                while !matches!(b.get(i)?, b',' | b'}') {
                    i += 1;
                }
                let raw = text[start..i].trim();
                items.push(if raw == "NULL" { Canonical::Null } else { Canonical::scalar(kind, raw) });
            }
        }
        match b.get(i)? {
            b',' => i += 1,
            b'}' => return Some((Canonical::Array(items), i + 1)),
            _ => return None,
        }
    }
}

fn owned_scalar(kind: ValueKind, s: String) -> Canonical<'static> {
    match Canonical::scalar(kind, &s) {
        Canonical::Text(_) => Canonical::Text(s.into()),
        Canonical::BigInt(_) => Canonical::BigInt(s.into()),
        Canonical::Null => Canonical::Null,
        Canonical::Bool(b) => Canonical::Bool(b),
        Canonical::Number(n) => Canonical::Number(n),
        Canonical::Array(_) | Canonical::Object(_) => {
            // JSON elements: parsed again into owned values.
            match serde_json::from_str::<serde_json::Value>(&s) {
                Ok(v) => Canonical::from_json(&v),
                Err(_) => Canonical::Text(s.into()),
            }
        }
    }
}

/// Hashes a row given as (column name, canonical value) pairs, in any order.
pub fn row_hash<'a>(columns: impl IntoIterator<Item = (&'a str, Canonical<'a>)>) -> RowHash {
    let mut cols: Vec<(&str, Canonical<'_>)> = columns.into_iter().collect();
    cols.sort_by(|a, b| a.0.cmp(b.0));
    let mut bytes = Vec::with_capacity(128);
    for (name, value) in &cols {
        encode_str(&mut bytes, b's', name);
        value.encode(&mut bytes);
    }
    RowHash { hi: murmur3_32(&bytes, SEEDS.0), lo: murmur3_32(&bytes, SEEDS.1) }
}

/// A row's columns put in hashing order once, for hashing many rows of the same columns.
#[derive(Debug, Clone)]
pub struct RowHasher {
    /// (index in the row, name, kind), sorted by name.
    columns: Vec<(usize, String, ColumnKind)>,
}

impl RowHasher {
    /// A hasher for rows whose value `i` is column `columns[i]` = (name, kind).
    pub fn new<'a>(columns: impl IntoIterator<Item = (&'a str, ColumnKind)>) -> RowHasher {
        let mut columns: Vec<(usize, String, ColumnKind)> =
            columns.into_iter().enumerate().map(|(i, (n, k))| (i, n.to_string(), k)).collect();
        columns.sort_by(|a, b| a.1.cmp(&b.1));
        RowHasher { columns }
    }

    /// Hashes a row of texts (`None` = NULL) through `value(i)`, the text of column `i`.
    pub fn hash_texts<'a>(&self, value: impl Fn(usize) -> Option<&'a str>) -> RowHash {
        with_buffer(|bytes| {
            for (i, name, kind) in &self.columns {
                encode_str(bytes, b's', name);
                Canonical::from_text(*kind, value(*i)).encode(bytes);
            }
        })
    }

    /// Hashes a row of texts found by column name (`None` = NULL or absent).
    pub fn hash_named<'a>(&self, value: impl Fn(&str) -> Option<&'a str>) -> RowHash {
        with_buffer(|bytes| {
            for (_, name, kind) in &self.columns {
                encode_str(bytes, b's', name);
                Canonical::from_text(*kind, value(name)).encode(bytes);
            }
        })
    }

    /// Hashes a row of canonical values through `value(i)`.
    pub fn hash_canonical<'a>(&self, value: impl Fn(usize, ColumnKind) -> Canonical<'a>) -> RowHash {
        with_buffer(|bytes| {
            for (i, name, kind) in &self.columns {
                encode_str(bytes, b's', name);
                value(*i, *kind).encode(bytes);
            }
        })
    }
}

/// Encodes a row with `encode` into a buffer reused by the thread (rows are hashed one per
/// change on the replication path: no allocation each), and hashes the bytes.
fn with_buffer(encode: impl FnOnce(&mut Vec<u8>)) -> RowHash {
    thread_local! {
        static BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    BUFFER.with(|cell| match cell.try_borrow_mut() {
        Ok(mut bytes) => {
            bytes.clear();
            encode(&mut bytes);
            RowHash { hi: murmur3_32(&bytes, SEEDS.0), lo: murmur3_32(&bytes, SEEDS.1) }
        }
        // (Only if `encode` hashed a row itself.)
        Err(_) => {
            let mut bytes = Vec::with_capacity(128);
            encode(&mut bytes);
            RowHash { hi: murmur3_32(&bytes, SEEDS.0), lo: murmur3_32(&bytes, SEEDS.1) }
        }
    })
}

/// MurmurHash3, x86 32-bit variant (public domain algorithm by Austin Appleby): small, fast and
/// easy to reproduce exactly in JavaScript with `Math.imul`.
pub fn murmur3_32(data: &[u8], seed: u32) -> u32 {
    const C1: u32 = 0xcc9e_2d51;
    const C2: u32 = 0x1b87_3593;
    let mut h = seed;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2);
        h ^= k;
        h = h.rotate_left(13).wrapping_mul(5).wrapping_add(0xe654_6b64);
    }
    let tail = chunks.remainder();
    if !tail.is_empty() {
        let mut k = 0u32;
        for (i, b) in tail.iter().enumerate() {
            k |= (*b as u32) << (8 * i);
        }
        h ^= k.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2);
    }
    h ^= data.len() as u32;
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^= h >> 16;
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur_matches_published_vectors() {
        assert_eq!(murmur3_32(b"", 0), 0);
        assert_eq!(murmur3_32(b"", 1), 0x514e_28b7);
        assert_eq!(murmur3_32(b"test", 0), 0xba6b_d213);
        assert_eq!(murmur3_32(b"Hello, world!", 0x9747_b28c), 0x2488_4cba);
        assert_eq!(murmur3_32(b"The quick brown fox jumps over the lazy dog", 0x9747_b28c), 0x2fa8_26cd);
    }

    #[test]
    fn digest_is_order_independent_and_round_trips() {
        let h = |s: &str| row_hash([("id", Canonical::Text(s.into()))]);
        let mut a = Digest::default();
        let mut b = Digest::default();
        for s in ["1", "2", "3"] {
            a.add(h(s));
        }
        for s in ["3", "1", "2"] {
            b.add(h(s));
        }
        assert_eq!(a, b);
        let mut d = DigestDelta::default();
        d.remove(h("2"));
        a.apply(d);
        let mut c = Digest::default();
        c.add(h("1"));
        c.add(h("3"));
        assert_eq!(a, c);
        assert_eq!(Digest::parse(&a.to_string()), Some(a));
        assert_eq!(Digest { count: 1_234_567, hi: 0xdead_beef, lo: 1 }.to_string(), "1234567:deadbeef00000001");
        assert_eq!(Digest { count: 0, hi: 0, lo: u32::MAX }.to_string(), "0:00000000ffffffff");
        assert_eq!(Digest::parse("1:xyz"), None);
        assert_eq!(Digest::parse("x:0000000000000000"), None);
    }

    #[test]
    fn values_hash_as_the_clients_hold_them() {
        let num = ColumnKind::of("int4", 0);
        // A number read from text hashes like the same number held as a float.
        assert_eq!(Canonical::from_text(num, Some("5")), Canonical::Number(5.0));
        assert_eq!(Canonical::from_text(ColumnKind::of("float8", 0), Some("1e+20")), Canonical::Number(1e20));
        assert_eq!(Canonical::from_text(ColumnKind::of("bool", 0), Some("t")), Canonical::Bool(true));
        // JSON: key order and spacing do not matter.
        let json = ColumnKind::of("jsonb", 0);
        let enc = |c: Canonical<'_>| {
            let mut v = vec![];
            c.encode(&mut v);
            v
        };
        assert_eq!(
            enc(Canonical::from_text(json, Some(r#"{"b": 1, "a": [true, null, "x"]}"#))),
            enc(Canonical::from_text(json, Some(r#"{"a":[true,null,"x"],"b":1.0}"#)))
        );
        // Arrays: quoting, NULL, nesting.
        let arr = ColumnKind::of("text", 1);
        assert_eq!(
            Canonical::from_text(arr, Some(r#"{a,"b c",NULL,"NULL","q\"x"}"#)),
            Canonical::Array(vec![
                Canonical::Text("a".into()),
                Canonical::Text("b c".into()),
                Canonical::Null,
                Canonical::Text("NULL".into()),
                Canonical::Text("q\"x".into()),
            ])
        );
        assert_eq!(
            Canonical::from_text(ColumnKind::of("int4", 2), Some("{{1,2},{3,NULL}}")),
            Canonical::Array(vec![
                Canonical::Array(vec![Canonical::Number(1.0), Canonical::Number(2.0)]),
                Canonical::Array(vec![Canonical::Number(3.0), Canonical::Null]),
            ])
        );
        // Not an array literal: hashed as text. Nor is one nested deeper than Postgres allows
        // (a damaged replica's text must not recurse without bound).
        assert_eq!(Canonical::from_text(arr, Some("{a,b")), Canonical::Text("{a,b".into()));
        let deep = format!("{}{}", "{".repeat(100_000), "}".repeat(100_000));
        assert_eq!(Canonical::from_text(arr, Some(&deep)), Canonical::Text(deep.as_str().into()));
        assert_eq!(enc(Canonical::Number(-0.0)), enc(Canonical::Number(0.0)));
    }

    /// The row hash the web client's test checks it reproduces (web/client/test/digest.test.mjs).
    #[test]
    fn a_known_row_hash() {
        let hasher = RowHasher::new([
            ("id", ColumnKind::of("int8", 0)),
            ("title", ColumnKind::of("text", 0)),
            ("n", ColumnKind::of("float8", 0)),
            ("done", ColumnKind::of("bool", 0)),
            ("meta", ColumnKind::of("jsonb", 0)),
            ("tags", ColumnKind::of("text", 1)),
            ("gone", ColumnKind::of("text", 0)),
        ]);
        let row = [
            Some("42"),
            Some("héllo"),
            Some("1.5"),
            Some("t"),
            Some(r#"{"z": [1, 2.5, "x"], "a": {"k": null}}"#),
            Some(r#"{one,"two words",NULL}"#),
            None,
        ];
        let h = hasher.hash_texts(|i| row[i]);
        let mut d = Digest::default();
        d.add(h);
        assert_eq!(d.to_string(), KNOWN_ROW_DIGEST);
    }

    /// See [`a_known_row_hash`].
    const KNOWN_ROW_DIGEST: &str = "1:9aa4a95cb278f2a1";
}
