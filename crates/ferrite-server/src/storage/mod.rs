//! Shape log storage: one directory per shape under the server's data directory.

pub mod record;
pub mod shape_log;

pub use shape_log::{LiveSpan, LogSlice, ReadOutcome, ShapeLog};

#[cfg(test)]
mod tests;
