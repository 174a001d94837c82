//! Ferrite's pure logic: deterministic and free of I/O so it can be unit- and property-tested in
//! isolation — what a shape is and how one row change becomes its messages ([`shape`]), how
//! concurrent writes to a row are resolved ([`merge`]), and the live results of subqueries that
//! relational shapes depend on ([`deps`]) and the tagged messages those shapes send ([`tags`]).

#![warn(missing_docs)]

pub mod deps;
pub mod merge;
pub mod shape;
pub mod tags;
