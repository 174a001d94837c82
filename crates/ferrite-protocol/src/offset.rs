//! Log offsets: the positions clients read shape logs from.
//!
//! Rendered as `<tx>_<op>` exactly as the Electric v1 protocol does. `tx = 0` is reserved for
//! the initial snapshot (`0_<chunk>`), `0_inf` marks the end of the snapshot, and real changes
//! use the commit LSN of their transaction as `tx` with `op` stepping by 2 inside it.

use std::fmt;
use std::str::FromStr;

/// `op` value that renders as `inf`: the largest possible op inside a transaction.
pub const OP_INF: u64 = u64::MAX;

/// A position in a shape log. Ordered by `(tx, op)`; `inf` is larger than any op.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct LogOffset {
    /// Commit LSN of the transaction (0 for the initial snapshot).
    pub tx: u64,
    /// Position inside the transaction (or the snapshot chunk index).
    pub op: u64,
}

impl LogOffset {
    /// The position just after the whole initial snapshot: `0_inf`.
    pub const SNAPSHOT_END: LogOffset = LogOffset { tx: 0, op: OP_INF };

    /// Offset of snapshot chunk `k`: `0_k`.
    pub fn snapshot_chunk(k: u64) -> Self {
        LogOffset { tx: 0, op: k }
    }

    /// Offset of operation `op` in the transaction that committed at `lsn`.
    pub fn new(tx: u64, op: u64) -> Self {
        LogOffset { tx, op }
    }

    /// The end of the transaction this offset is in (`<tx>_inf`); snapshot offsets are unchanged.
    /// SSE clients resume at `<lsn>_0` after an `up-to-date`, which only follows whole
    /// transactions: reading after this gives them no replay of the rest of that transaction.
    pub fn whole_transaction(self) -> Self {
        if self.tx > 0 {
            LogOffset { tx: self.tx, op: OP_INF }
        } else {
            self
        }
    }

    /// True for offsets inside the initial snapshot (`0_k`, `0_inf`).
    pub fn is_snapshot(&self) -> bool {
        self.tx == 0
    }
}

impl fmt::Display for LogOffset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.op == OP_INF {
            write!(f, "{}_inf", self.tx)
        } else {
            write!(f, "{}_{}", self.tx, self.op)
        }
    }
}

/// Why an offset string was refused; the HTTP layer reports it as `has invalid format`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("has invalid format")]
pub struct InvalidOffset;

impl FromStr for LogOffset {
    type Err = InvalidOffset;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (tx, op) = s.split_once('_').ok_or(InvalidOffset)?;
        let tx = parse_digits(tx)?;
        let op = if op == "inf" { OP_INF } else { parse_digits(op)? };
        Ok(LogOffset { tx, op })
    }
}

fn parse_digits(s: &str) -> Result<u64, InvalidOffset> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(InvalidOffset);
    }
    s.parse().map_err(|_| InvalidOffset)
}

/// The `offset` query parameter: before everything, "now", or a concrete position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestOffset {
    /// `-1`: the whole log from the start (initial snapshot first).
    BeforeAll,
    /// `now`: skip history, answer at once with the latest offset.
    Now,
    /// A position previously returned in `electric-offset`.
    At(LogOffset),
}

impl FromStr for RequestOffset {
    type Err = InvalidOffset;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "-1" => Ok(RequestOffset::BeforeAll),
            "now" => Ok(RequestOffset::Now),
            other => other.parse().map(RequestOffset::At),
        }
    }
}

impl fmt::Display for RequestOffset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestOffset::BeforeAll => f.write_str("-1"),
            RequestOffset::Now => f.write_str("now"),
            RequestOffset::At(o) => o.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_renders() {
        assert_eq!("0_02".parse::<LogOffset>().unwrap(), LogOffset::new(0, 2));
        assert_eq!("0_inf".parse::<LogOffset>().unwrap(), LogOffset::SNAPSHOT_END);
        assert_eq!(LogOffset::SNAPSHOT_END.to_string(), "0_inf");
        assert_eq!(LogOffset::new(2840236536, 4).to_string(), "2840236536_4");
        for bad in ["", "1", "1_", "_1", "1_2_3", "a_1", "1.5_2", " 1_2", "-1_2", "1_-2", "1_infx"] {
            assert!(bad.parse::<LogOffset>().is_err(), "{bad:?} should be refused");
        }
        assert_eq!("-1".parse::<RequestOffset>().unwrap(), RequestOffset::BeforeAll);
        assert_eq!("now".parse::<RequestOffset>().unwrap(), RequestOffset::Now);
    }

    #[test]
    fn orders_inf_after_every_op() {
        assert!(LogOffset::new(0, 5) < LogOffset::SNAPSHOT_END);
        assert!(LogOffset::SNAPSHOT_END < LogOffset::new(1, 0));
    }
}
