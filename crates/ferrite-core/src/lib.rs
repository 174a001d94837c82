//! Ferrite's pure logic: deterministic and free of I/O so it can be unit- and property-tested in
//! isolation — what a shape is and how one row change becomes its messages ([`shape`]), and how
//! concurrent writes to a row are resolved ([`merge`]).

#![warn(missing_docs)]

pub mod merge;
pub mod shape;
