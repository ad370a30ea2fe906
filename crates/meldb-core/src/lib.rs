//! meldb's core: everything the engine knows that needs no SQLite and no
//! async runtime.
//!
//! Values and keys ([`value`]), site ids and the hybrid logical clock
//! ([`clock`]), version vectors ([`version`]), what replicas exchange
//! ([`changeset`]), the column kinds and their merge rules ([`crdt`],
//! [`merge`]), schemas ([`schema`]), every byte layout meldb writes
//! ([`codec`]), the types resolvers speak ([`resolve`]) and the engine's
//! decisions on incoming rows ([`engine`]: admission, policies, resolvers,
//! corrections), and calling application code with its panics caught
//! quietly ([`app_panic`]). The only I/O is `Schema::load` (it reads a file), the
//! system `TimeSource` (the wall clock) and `SiteId::random` (the OS random
//! source); the merge rules, decoders and schema checks are deterministic
//! functions of their arguments, so their laws are property-tested in
//! isolation.
//!
//! Applications use the `meldb` crate, which re-exports this one; the
//! store (SQLite) and sync (network) layers build on it, and nothing here
//! imports them.

#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used)]

pub mod app_panic;
pub mod changeset;
pub mod clock;
pub mod codec;
pub mod crdt;
pub mod engine;
pub mod merge;
pub mod resolve;
pub mod schema;
pub mod value;
pub mod version;
