//! Shape log storage: one directory per shape under the server's data directory.

pub mod journal;
pub mod record;
pub mod replica;
pub mod shape_log;

pub use journal::Journal;
pub use shape_log::{JournalEntry, LiveSpan, LogSlice, ReadOutcome, ShapeLog};

#[cfg(test)]
mod tests;
