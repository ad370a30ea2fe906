//! meldb: an embedded, SQLite-backed database for local-first apps whose
//! tables declare, per column, how concurrent edits merge.
//!
//! ```
//! use meldb::{Schema, Store};
//!
//! # fn main() -> meldb::Result<()> {
//! let schema = Schema::from_toml_str(r#"
//!     name = "shop"
//!     version = 1
//!     [[table]]
//!     name = "item"
//!     primary_key = ["sku"]
//!     [[table.column]]
//!     name = "sku"
//!     type = "text"
//!     [[table.column]]
//!     name = "stock"
//!     type = "integer"
//!     kind = "pn_counter"
//! "#, "shop.toml")?;
//!
//! // Two replicas (two devices), each with its own SQLite database.
//! let mut a = Store::open_in_memory(&schema)?;
//! let mut b = Store::open_in_memory(&schema)?;
//! a.write(|tx| tx.insert("item", &[("sku", "A1".into()), ("stock", 10.into())]))?;
//! b.apply(&a.changes_since(&b.version_vector())?)?;
//!
//! // Both sell one unit while offline...
//! a.write(|tx| tx.increment("item", "A1", "stock", -1))?;
//! b.write(|tx| tx.increment("item", "A1", "stock", -1))?;
//!
//! // ...and exchange what the other lacks.
//! b.apply(&a.changes_since(&b.version_vector())?)?;
//! a.apply(&b.changes_since(&a.version_vector())?)?;
//!
//! // Both sales count; the replicas are equal; apps read with plain SQL.
//! let stock: i64 = a.conn().query_row("SELECT stock FROM item", [], |r| r.get(0))?;
//! assert_eq!(stock, 8);
//! assert_eq!(a.digest()?, b.digest()?);
//! # Ok(())
//! # }
//! ```
//!
//! Each column is a CRDT: `lww` (last writer wins, the default),
//! `g_counter`, `pn_counter` or `or_set` ([`schema::Kind`]). Local writes go
//! through a [`Transaction`]; [`Store::changes_since`] returns exactly what
//! another replica lacks and [`Store::apply`] merges it
//! ([`merge::merge_crdt_columns`]), in any order, with duplicates, in
//! partial batches: replicas that have exchanged everything have equal
//! [`Store::digest`]s.
//!
//! Replicas sync over the network with `meldb::sync` (one protocol for
//! peer-to-peer and the relay server), or by moving changeset bytes
//! themselves ([`codec`]).
//!
//! Cargo features:
//!
//! - `sync` (default): `meldb::sync`, the protocol, the driver and the
//!   relay, on tokio; and the protocol's bytes in [`codec`].
//! - `cli` (default): the `meldb` command-line tool's own dependencies
//!   (clap, log output, ctrl-c); the binary requires it.
//!
//! An app that only wants the store depends on meldb with
//! `default-features = false`: SQLite and the engine, no async runtime,
//! no argument parser.
//!
//! What it is not (yet): an optimistic-mutation layer. Apps must not write
//! to the tables through SQL directly: such writes are not replicated.

#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used)]

// The pure core, re-exported at the paths it always had.
pub use meldb_core::{changeset, clock, crdt, merge, schema, value, version};

// The SQLite store and the types it speaks, re-exported likewise.
pub use meldb_store::{error, mutator, resolve, store};

pub mod codec;
#[cfg(feature = "sync")]
pub mod sync;

/// The SQLite binding meldb is built on: [`Store::conn`] hands out its
/// connection, for reads (writes through it are not replicated).
pub use rusqlite;
// The reference model, harness and fuzz checks; for tests/ and fuzz/ only
// (the `testkit` feature, which meldb's own dev-dependency turns on).
#[cfg(any(test, feature = "testkit"))]
#[doc(hidden)]
pub mod testing;

pub use changeset::Changeset;
pub use clock::SiteId;
pub use error::{Error, Result};
pub use resolve::{Conflict, Outcome, Rejection, Resolution, Resolver, Row, Writer};
pub use schema::{Kind, Schema};
pub use store::{ApplyReport, Durability, Store, StoreOptions, Transaction};
pub use value::{Key, Value};
pub use version::VersionVector;

/// The README's Rust examples, compiled and run as doc tests so they stay
/// true to the API.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
