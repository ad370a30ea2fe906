//! Optimistic mutators: named functions that run at once on a client,
//! wait in a durable queue, are re-run by the authority, and are replayed
//! on top of the canonical state after every pull.
//!
//! A client ([`crate::Store::mutate`]) runs the mutator against its local
//! state and queues the call (name, JSON arguments, order) in the same
//! SQLite transaction, so a crash loses none. Its effects are *speculative*:
//! meldb keeps the canonical before-image of every row they touch, never
//! sends them as changes, and takes them off before every pull. The
//! authority runs the same mutators on its canonical state
//! ([`crate::Store::process_push`]): merge and resolvers apply as usual; a
//! mutator that fails is rejected with its error and dropped, and the ones
//! after it still run. It remembers per client the last mutation it
//! processed, so a mutation pushed twice runs once. Every pull
//! ([`crate::Store::apply_pull`]) is one SQLite transaction: take the
//! speculative effects off, apply the canonical changes (merge, then
//! resolvers), drop the mutations the authority processed (reporting the
//! rejected ones with their error), replay the rest on top.
//!
//! Without an authority (no table declares `authority = true`, or on the
//! authority itself) a mutator's effects are ordinary changes: `mutate`
//! runs it in a transaction and nothing is queued.

use crate::clock::SiteId;
use crate::resolve::Rejection;
use crate::value::Key;
use crate::Changeset;
use std::fmt;

/// Why a mutator did not complete.
#[derive(Debug)]
#[non_exhaustive]
pub enum MutatorError {
    /// The mutation fails: the application's own error ("slot 9:00 is
    /// taken"), or a write the schema refused. An authority rejects it and
    /// goes on with the next.
    Failed(String),
    /// SQLite failed under the mutator: nothing is decided about the
    /// mutation, and the call that ran it fails with this error.
    Storage(crate::error::StorageError),
}

impl MutatorError {
    /// An application error with this message.
    pub fn app(message: impl Into<String>) -> MutatorError {
        MutatorError::Failed(message.into())
    }
}

impl fmt::Display for MutatorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MutatorError::Failed(message) => f.write_str(message),
            MutatorError::Storage(e) => e.fmt(f),
        }
    }
}

impl From<crate::Error> for MutatorError {
    fn from(e: crate::Error) -> MutatorError {
        match e {
            // A disk error is not a verdict on the mutation.
            crate::Error::Storage(e) => MutatorError::Storage(e),
            other => MutatorError::Failed(other.to_string()),
        }
    }
}

/// A call waiting in a client's queue.
#[derive(Clone, Debug, PartialEq)]
pub struct PendingMutation {
    /// Its id: increasing per client, never reused.
    pub id: u64,
    /// The mutator's name.
    pub name: String,
    /// The arguments, as JSON.
    pub args: String,
    /// The client-asserted app metadata it was queued with
    /// ([`crate::Store::mutate_with`]); while it runs, at the client and at
    /// the authority, its writes carry it and `Transaction::metadata`
    /// returns it. Never identity: the authority's `Writer` comes from the
    /// token. Carried by protocol version 3 on (older peers drop it).
    pub meta: Option<crate::resolve::WriteMetadata>,
}

/// What a client sends upstream: its pending mutations, in order.
#[derive(Clone, Debug, PartialEq)]
pub struct Push {
    /// The client (its site id).
    pub client: SiteId,
    /// The mutations, in the order they were made.
    pub mutations: Vec<PendingMutation>,
}

/// A mutation the authority refused.
#[derive(Clone, Debug, PartialEq)]
pub struct MutationRejection {
    /// The mutation's id.
    pub id: u64,
    /// The mutator's name.
    pub name: String,
    /// Its error at the authority.
    pub error: String,
}

/// What the authority did with a push.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PushResult {
    /// The last mutation of this client it has processed.
    pub last_processed: u64,
    /// Mutations of this push that ran and were committed.
    pub applied: Vec<u64>,
    /// Mutations of this push that failed.
    pub rejected: Vec<MutationRejection>,
    /// Mutations skipped because they had been processed before.
    pub duplicates: usize,
}

/// What a client pulls from the authority.
#[derive(Clone, Debug, PartialEq)]
pub struct PullResponse {
    /// The canonical changes the client lacks.
    pub changes: Changeset,
    /// The last of the client's mutations whose effects `changes` include.
    pub last_processed: u64,
    /// The client's mutations the authority refused, from its oldest pending.
    pub rejected: Vec<MutationRejection>,
    /// Resolver rejections of the client's plain changes.
    pub notices: Vec<Rejection>,
}

/// What a pull did on the client.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct PullReport {
    /// How the canonical changes applied.
    pub apply: crate::report::ApplyReport,
    /// Mutations the authority processed, now dropped from the queue.
    pub acknowledged: usize,
    /// Mutations the authority refused, with its error.
    pub rejected: Vec<MutationRejection>,
    /// Mutations still pending, replayed on top.
    pub replayed: usize,
    /// Pending mutations that failed when replayed here (still pending:
    /// the authority decides).
    pub failed_replays: Vec<MutationRejection>,
    /// Rows whose visible values changed, by table (only tables someone
    /// subscribed to).
    pub changed: Vec<(String, Key)>,
}
