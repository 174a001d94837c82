//! Shape log storage: one directory per shape under the server's data directory.

pub mod journal;
pub mod record;
pub mod replica;
pub mod shape_log;

pub use journal::Journal;
pub use shape_log::{JournalEntry, LiveSpan, LogSlice, ReadOutcome, ShapeLog, Tail};

#[cfg(test)]
mod tests;

/// Whether a write failed for lack of space (`ENOSPC`, or `EDQUOT` when a quota is full): the
/// server then pauses replication without confirming and says so in the
/// `ferrite_storage_full` metric, rather than treating it as a fault of Postgres or the network.
pub fn is_out_of_space(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT)) || e.kind() == std::io::ErrorKind::StorageFull
}
