//! meldb's store: one replica's state in an SQLite database.
//!
//! The layout and its DDL, the database format and its upgrades, row I/O,
//! local writes, apply and delta sync, the digest, policies and resolvers
//! with the conflict log, mutators and rebase ([`store`]), with the types
//! they speak ([`resolve`], [`mutator`], [`error`]). It builds on
//! `meldb-core` (re-exported at the same paths, so `crate::value` and the
//! like read as they always did), whose `engine` decides what happens to an
//! incoming row; the store carries that out. It knows nothing of the
//! network or of an async runtime. Applications use the `meldb` crate,
//! which re-exports it.

#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used)]

pub use meldb_core::{changeset, clock, codec, crdt, merge, schema, value, version};

pub mod error;
pub mod mutator;
mod report;
pub mod resolve;
pub mod store;
pub mod typed;

pub use changeset::Changeset;
pub use error::{Error, Result};
pub use store::{ApplyReport, Store};
