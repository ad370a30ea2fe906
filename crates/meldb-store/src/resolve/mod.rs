//! `resolve_conflict`: the application's say after `merge_crdt_columns`.
//!
//! CRDT columns converge, but converging is not the same as being right: a
//! second booking of a seat must be refused, a shipped order must not
//! change. An application registers [`Resolver`]s per table
//! ([`crate::Store::add_resolver`]); on every *concurrent* incoming change
//! (never on fast-forwards or duplicates, unless the resolver asks with
//! [`Trigger::EveryChange`]) meldb merges the row, applies the schema's
//! column policies, and then runs the table's resolvers in priority order
//! until one decides ([`Resolution`]). Every conflict lands in the conflict
//! log with its outcome ([`ConflictRecord`], [`Outcome`]).
//!
//! A decision that changes the merged row is written as a new local change
//! on top of it, so it supersedes both versions everywhere: registers are
//! re-stamped, counters compensated, set elements added or removed; when a
//! column cannot move that way (a smaller `g_counter`, a state column moving
//! back, a first-write column changing) the row is re-issued as a new life.
//!
//! Who decides depends on the table ([`Mode`]). With `authority = true`,
//! the replica opened as authority decides; its rejections reach the writer
//! ([`Rejection`]) with the correction. Without an authority, every replica
//! runs the resolvers, which must be deterministic functions of the two
//! versions' values (see the README's contract) and may not keep one side,
//! reject, or change counters.
//!
//! The resolver types and the decisions are the core's
//! (`meldb_core::resolve`, `meldb_core::engine`); this module names them
//! with the store's [`Error`](crate::Error) as what a [`ReadView`] read
//! fails with, and holds the records the conflict log keeps.

mod record;

pub(crate) use meldb_core::resolve::{value_from_json, values_to_json_text};
pub use meldb_core::resolve::{
    MetadataTooLarge, Mode, Outcome, ReadView, Resolution, Row, Trigger, Version, WriteMetadata,
    Writer,
};
pub use record::{ConflictCount, ConflictRecord, NoticeKind, Rejection};

/// A named `resolve_conflict` closure with a priority
/// ([`meldb_core::resolve::Resolver`], reading the store).
pub type Resolver = meldb_core::resolve::Resolver<crate::Error>;

/// What a resolver is shown: the conflict, and read access to the store
/// ([`meldb_core::resolve::Conflict`]; its reads fail with [`crate::Error`]).
pub type Conflict<'a> = meldb_core::resolve::Conflict<'a, crate::Error>;
