//! meldb for Python, Kotlin and Swift: an FFI-shaped API over the library,
//! exported through UniFFI (proc macros; no UDL file).
//!
//! What crosses the boundary is owned data and shared objects, never a
//! borrow or a Rust closure: a [`Database`] (thread-safe, shared), rows as
//! maps of [`DbValue`]s (and JSON, for each language's own typed layer),
//! writes as [`WriteOp`]s committed at once or collected in a
//! [`WriteTransaction`] (or as JSON text: `Database::write_json`), and
//! the foreign language's functions as callback interfaces:
//! [`QueryListener`], [`ConflictResolver`], [`Mutator`],
//! [`SyncListener`]. Every call returns [`MeldbError`], whose variants
//! carry the library's messages.
//!
//! Invariants: no panic crosses the boundary (UniFFI catches one at every
//! call and reports it; this crate returns errors for everything from
//! outside the process); no lock is held between calls; a callback that
//! runs while its database is locked (resolvers, mutators) cannot call
//! back into it and wait for itself (the `guard` module); a callback's exception is
//! an error of the call that ran it.

#![deny(clippy::unwrap_used)]

mod database;
mod error;
mod guard;
mod json_ops;
mod live;
mod mutator;
mod resolver;
mod runtime;
mod sync;
mod transaction;
mod value;

pub use database::{Database, DatabaseOptions, DbSchema};
pub use error::{CallbackError, MeldbError};
pub use live::{ChangedRow, LiveQuery, QueryListener, QueryUpdate};
pub use mutator::{MutationRecord, MutationTx, Mutator};
pub use resolver::{ConflictInfo, ConflictResolver, Decision, RejectionRecord};
pub use sync::{Server, SyncListener, SyncSession, SyncStatusInfo, SyncSummary};
pub use transaction::{WriteOp, WriteTransaction};
pub use value::{DbRow, DbValue};

uniffi::setup_scaffolding!("meldb");
