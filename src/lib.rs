//! meldb: an embedded, SQLite-backed database for local-first apps whose
//! columns declare how concurrent edits merge.
pub mod changeset;
pub mod clock;
pub mod codec;
pub mod crdt;
pub mod error;
pub mod merge;
pub mod schema;
pub mod store;
pub mod testing;
pub mod value;
pub mod version;

pub use changeset::Changeset;
pub use clock::SiteId;
pub use error::{Error, Result};
pub use schema::{Kind, Schema};
pub use store::{ApplyReport, Store, StoreOptions, Transaction};
pub use value::{Key, Value};
pub use version::VersionVector;
