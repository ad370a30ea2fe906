//! meldb (work in progress).
pub mod clock;
pub mod crdt;
pub mod schema;
pub mod value;
