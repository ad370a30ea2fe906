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
//! What meldb is: the database of one app on one device (an embedded
//! SQLite file that apps read with plain SQL), kept in step with the same
//! app's other devices without losing a write. What it is not: a server
//! database, a query engine of its own, or a place to write through SQL
//! directly (such writes are not replicated; write through a
//! [`Transaction`]).
//!
//! **Column kinds.** Each column is a CRDT: `lww` (last writer wins, the
//! default), `g_counter`, `pn_counter` or `or_set` ([`Kind`],
//! [`crdt::ColumnKind`]). [`Store::changes_since`] returns exactly what
//! another replica lacks and [`Store::apply`] merges it column by column
//! ([`crdt::merge_crdt_columns`]), in any order, with duplicates, in
//! partial batches: replicas that have exchanged everything have equal
//! [`Store::digest`]s.
//!
//! **Policies and resolvers.** A register column can say more than "last
//! writer wins" in the schema: first write wins, immutable, authority
//! wins, conditional, or a forward-only state order ([`Policy`]).
//! Application rules run as [`Resolver`]s on real conflicts
//! ([`Store::add_resolver`]): accept, reject, merge, keep the local row or
//! defer to a person ([`Resolution`]); every decision is logged
//! ([`Store::conflicts`]).
//!
//! **The authority.** One replica (a relay, usually) can be the authority
//! ([`Store::set_authority`]): rejections and policies that need a single
//! decider are decided there, and the writers are told
//! ([`Store::rejections`]).
//!
//! **Mutators and rebase.** Business operations (book a seat, check out a
//! cart) run as named mutators ([`Store::register_mutator`],
//! [`Store::mutate`]): at once and speculatively on a client, queued
//! durably, run again for real at the authority, and the client's pending
//! ones replayed on top of each canonical state it pulls
//! ([`Store::apply_pull`]; failures in [`Store::mutation_failures`]).
//!
//! **Sync and the relay.** Replicas sync over the network with
//! `meldb::sync` (the `sync` feature): one protocol for peer-to-peer and
//! the relay server, over any byte stream, with tokens. Or they move
//! changeset bytes themselves ([`codec`]). Every format is versioned and
//! pinned (README, "Formats and versions").
//!
//! The layers (`ARCHITECTURE.md`): `meldb-core` (values, clocks, kinds,
//! schemas, the engine's decisions and every byte layout; no SQLite),
//! `meldb-store` (SQLite), and this crate (sync, the command line),
//! re-exported by the list at the bottom of this file: applications name
//! items at the crate root, never a layer's path.
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

#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used)]

// The layers' modules, for this crate's own code (sync, codec, the test
// kit). Applications use the re-export list below, not these paths.
pub(crate) use meldb_core::{changeset, clock, schema, value, version};
pub(crate) use meldb_store::{error, mutator, resolve, store};

pub mod codec;
pub mod crdt;
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

// The public API, one list. Everything an application names is here or in
// `codec`, `crdt` and `sync`; the modules above it are private, so a type
// moving between layers changes no application's imports.

// Opening a database and writing to it.
pub use store::{
    Durability, EncryptionKey, ReadPool, Reader, Store, StoreOptions, Transaction,
    DEFAULT_CACHE_KIB,
};

// Rows read as the app's own types (`Store::get_as`, `Store::query_as`) and
// written from them (`Transaction::insert_row`, `upsert_row`, `update_row`).
pub use meldb_store::typed::{from_row, TypedError};

// Live queries and the changes feed (`Store::watch`, `Store::changes`).
pub use store::{Change, Origin, RowDiff, Update, WatchHandle};

// Schemas.
pub use schema::{
    Column, ColumnRules, DeferredShows, DeleteRule, Kind, Policy, RowRules, Schema, SchemaError,
    SqlType, Table, Upgrade,
};

// Values, keys and replicas' identities.
pub use clock::{Hlc, ManualTime, SiteId, SystemTimeSource, TimeSource};
pub use value::{Key, Value};

// Exchanging changes.
pub use changeset::{ChangeCursor, ChangePage, Changeset, Cover, RowChange, TableChanges};
pub use store::{ApplyReport, HeldChange, SiteBinding};

// Row-level rules the store carries out: the authority's stamps and rows
// an upgrade's new rule finds broken.
pub use store::{RuleViolation, StampContext};

// Backups of a live database.
pub use store::BackupReport;
pub use version::{SeqRanges, VersionVector};

// Conflicts: resolvers, their decisions and the conflict log.
pub use resolve::{
    Conflict, ConflictCount, ConflictRecord, MetadataTooLarge, Mode, NoticeKind, Outcome, ReadView,
    Rejection, Resolution, Resolver, Row, Trigger, Version, WriteMetadata, Writer,
};
pub use store::ConflictRetention;

// Mutators and rebase.
pub use mutator::{
    MutationRejection, MutatorError, PendingMutation, PullReport, PullResponse, Push, PushResult,
};

// Errors: one per layer, all convertible into `Error`.
pub use codec::DecodeError;
pub use error::{
    ApplyError, BackupError, Error, MutationError, OpenError, ResolveError, Result, StorageError,
    WriteError,
};

/// The README's Rust examples, compiled and run as doc tests so they stay
/// true to the API.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
