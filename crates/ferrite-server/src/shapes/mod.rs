//! Shapes: the registry, each shape's state, and how a new shape gets its initial snapshot.

pub mod nodes;
pub mod registry;
pub mod relational;
pub mod replayed_digest;
pub mod shape;
pub mod snapshot;
pub mod spill;
pub mod value_index;

pub use registry::Registry;
pub use shape::{Removal, Shape};
