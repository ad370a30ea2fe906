//! `resolve_conflict`: the application's say after `merge_crdt_columns`,
//! as the engine runs it.
//!
//! CRDT columns converge, but converging is not the same as being right: a
//! second booking of a seat must be refused, a shipped order must not
//! change. An application registers [`Resolver`]s per table (the store's
//! `add_resolver`); on every *concurrent* incoming change (never on
//! fast-forwards or duplicates, unless the resolver asks with
//! [`Trigger::EveryChange`]) the engine merges the row, applies the
//! schema's column policies, and then runs the table's resolvers in
//! priority order until one decides ([`Resolution`]); how a conflict ended
//! is an [`Outcome`].
//!
//! These are the types the decisions speak ([`crate::engine`] runs them);
//! resolvers read the replica only through [`ReadView`], which the store
//! implements, so nothing here runs SQL. The store re-exports them at
//! `meldb_store::resolve` (and `meldb::resolve`), with the store's error
//! filled in for `E`, beside the conflict log's own records.

mod metadata;
mod outcome;
mod resolver;
mod row;

pub use metadata::{MetadataTooLarge, WriteMetadata};
pub use outcome::Outcome;
pub use resolver::{Conflict, Mode, ReadView, Resolution, Resolver, Trigger, Version, Writer};
pub use row::{value_from_json, value_to_json, values_to_json_text, Row};
