//! Resolvers: what an application registers, what it is shown, and what it
//! may answer.
//!
//! A resolver reads the replica only through [`ReadView`], which the store
//! implements; the view's error type `E` is the store's error, so
//! [`Conflict::get`] and [`Conflict::query`] return what the store returns
//! (the store names `Resolver<its Error>` and `Conflict<'_, its Error>`
//! `Resolver` and `Conflict`).

use super::{Row, WriteMetadata};
use crate::clock::{Hlc, SiteId};
use crate::value::{Key, Value};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

/// Who wrote a change, as the application describes its users. Attached by
/// whoever delivers the change (the store's `apply_from`): the relay attaches
/// what a client's token says, so a client cannot claim roles it lacks.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Writer {
    /// The application's user id.
    pub user: Option<String>,
    /// The user's roles ("admin", ...).
    pub roles: Vec<String>,
    /// The device the change came from.
    pub device: Option<String>,
    /// The app version that wrote it.
    pub app_version: Option<String>,
    /// Anything else the application attaches.
    pub extra: BTreeMap<String, String>,
}

impl Writer {
    /// A writer known only by user id.
    pub fn user(user: &str) -> Writer {
        Writer {
            user: Some(user.to_owned()),
            ..Writer::default()
        }
    }

    /// This writer with one more role.
    #[must_use]
    pub fn with_role(mut self, role: &str) -> Writer {
        self.roles.push(role.to_owned());
        self
    }

    /// Whether the writer has `role`.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }
}

/// Who decides a table's conflicts on this replica.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Mode {
    /// The table has an authority and this replica is it: resolvers run and
    /// their decisions are final.
    Authority,
    /// The table has an authority elsewhere: this replica only merges, and
    /// converges to what the authority decides.
    Client,
    /// No authority (peer-to-peer): every replica runs the resolvers, which
    /// must be deterministic functions of the versions to converge.
    Leaderless,
}

/// One side of a conflict.
#[derive(Clone, Debug, PartialEq)]
pub struct Version {
    /// The row, or `None` if this side deleted it (or never had it).
    pub row: Option<Row>,
    /// The latest timestamp written into this side's row.
    pub hlc: Hlc,
    /// The site that wrote it.
    pub site: SiteId,
    /// The metadata that write carried, as its client asserted it
    /// (never identity: see [`WriteMetadata`]).
    pub metadata: Option<WriteMetadata>,
}

/// What a resolver decides.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Resolution {
    /// Keep the row the CRDT merge produced.
    Accept,
    /// Replace the merged row with this one. Columns it leaves out keep
    /// their merged values; key columns, if given, must not change.
    Merge(Row),
    /// Keep the local row (authority only).
    KeepLocal,
    /// Refuse the incoming change, with a reason its writer is told
    /// (authority only).
    Reject(String),
    /// Keep the merged row for now and ask a person: both versions wait in
    /// the conflict log until the store's `resolve_deferred`.
    Defer(String),
    /// No opinion: the next resolver decides (the merge stands if none does).
    Pass,
}

/// When a resolver runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Trigger {
    /// Only on real conflicts: the incoming change is concurrent with the
    /// local row (the default).
    Conflicts,
    /// On every incoming change that is not a duplicate, fast-forwards too:
    /// for rules (permissions, frozen rows) that must hold whatever the
    /// writer had seen. Fast-forwards are logged only when the resolver
    /// does more than accept.
    EveryChange,
}

type ResolveFn<E> = dyn Fn(&Conflict<'_, E>) -> Resolution + Send + Sync;

/// A named `resolve_conflict` closure with a priority; `E` is the error of
/// the [`ReadView`] it reads through.
pub struct Resolver<E> {
    pub(crate) name: Arc<str>,
    pub(crate) priority: i32,
    pub(crate) trigger: Trigger,
    pub(crate) f: Arc<ResolveFn<E>>,
}

// By hand: a derive would ask `E: Clone`, which the shared closure does not need.
impl<E> Clone for Resolver<E> {
    fn clone(&self) -> Self {
        Resolver {
            name: self.name.clone(),
            priority: self.priority,
            trigger: self.trigger,
            f: self.f.clone(),
        }
    }
}

impl<E> Resolver<E> {
    /// A resolver called `name` (shown in the conflict log), priority 0,
    /// run on conflicts only.
    pub fn new(
        name: &str,
        f: impl Fn(&Conflict<'_, E>) -> Resolution + Send + Sync + 'static,
    ) -> Resolver<E> {
        Resolver {
            name: name.into(),
            priority: 0,
            trigger: Trigger::Conflicts,
            f: Arc::new(f),
        }
    }

    /// Resolvers with a higher priority run first (ties: registration order).
    #[must_use]
    pub fn priority(mut self, priority: i32) -> Resolver<E> {
        self.priority = priority;
        self
    }

    /// Runs this resolver on every incoming change, not only conflicts.
    #[must_use]
    pub fn on_every_change(mut self) -> Resolver<E> {
        self.trigger = Trigger::EveryChange;
        self
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl<E> fmt::Debug for Resolver<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resolver")
            .field("name", &self.name)
            .field("priority", &self.priority)
            .field("trigger", &self.trigger)
            .finish_non_exhaustive()
    }
}

/// What a resolver is shown: the conflict, and read access to the store.
pub struct Conflict<'a, E> {
    pub(crate) table: &'a str,
    pub(crate) key: &'a [Value],
    pub(crate) local: Version,
    pub(crate) incoming: Version,
    pub(crate) merged: Option<Row>,
    pub(crate) concurrent: bool,
    pub(crate) mode: Mode,
    pub(crate) writer: &'a Writer,
    pub(crate) mutation: Option<&'a str>,
    pub(crate) view: &'a dyn ReadView<Error = E>,
}

/// What a resolver may read besides the conflict itself: rows and
/// read-only queries, as the state stands in the deciding transaction.
/// The store implements it; resolvers see it only through [`Conflict`], so
/// deciding never depends on how the state is kept, and the core never
/// runs the queries itself.
pub trait ReadView {
    /// What a read fails with (the store's `Error`).
    type Error;

    /// A live row's columns in schema order, `None` if there is none.
    fn get_row(&self, table: &str, key: &Key) -> Result<Option<Row>, Self::Error>;

    /// Runs one statement that cannot write (the store refuses any other
    /// with `ResolveError::NotReadOnly`, naming `table`, the table being
    /// decided) and returns its rows.
    fn query_rows(
        &self,
        table: &str,
        sql: &str,
        params: &[Value],
    ) -> Result<Vec<Vec<Value>>, Self::Error>;
}

impl<E> Conflict<'_, E> {
    /// The table.
    pub fn table(&self) -> &str {
        self.table
    }

    /// The row's primary key.
    pub fn key(&self) -> Key {
        Key(self.key.to_vec())
    }

    /// The local row (`None`: deleted here, or new here for
    /// [`Trigger::EveryChange`] resolvers).
    pub fn local(&self) -> Option<&Row> {
        self.local.row.as_ref()
    }

    /// The incoming row (`None`: the change deletes it).
    pub fn incoming(&self) -> Option<&Row> {
        self.incoming.row.as_ref()
    }

    /// The row the CRDT merge produced (after the schema's column policies),
    /// `None` if the merge deletes it.
    pub fn merged(&self) -> Option<&Row> {
        self.merged.as_ref()
    }

    /// The local side with its timestamp and site.
    pub fn local_version(&self) -> &Version {
        &self.local
    }

    /// The incoming side with its timestamp and site.
    pub fn incoming_version(&self) -> &Version {
        &self.incoming
    }

    /// Both versions in a canonical order (by timestamp, then site) that
    /// does not depend on which side is local: what a leaderless resolver
    /// should decide from.
    pub fn versions(&self) -> [&Version; 2] {
        if (self.local.hlc, self.local.site) <= (self.incoming.hlc, self.incoming.site) {
            [&self.local, &self.incoming]
        } else {
            [&self.incoming, &self.local]
        }
    }

    /// Whether the two sides are concurrent (a real conflict); `false` for a
    /// fast-forward shown to a [`Trigger::EveryChange`] resolver.
    pub fn is_concurrent(&self) -> bool {
        self.concurrent
    }

    /// Who decides here.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Who wrote the incoming change, as its deliverer described them.
    pub fn writer(&self) -> &Writer {
        self.writer
    }

    /// The mutator whose effect this is, when the incoming row is what a
    /// pushed mutation produced at the authority (`local` is the row before
    /// it ran, `incoming` the row it left). Every resolver of the table
    /// sees mutation effects, whatever its [`Trigger`], and
    /// [`Conflict::is_concurrent`] is `false` for them: the mutation ran on
    /// the current state.
    pub fn mutation(&self) -> Option<&str> {
        self.mutation
    }

    /// The client-asserted metadata of the incoming write (`None` if it
    /// carried none). Context for rules, never identity: it cannot change
    /// [`Conflict::writer`]'s user or roles, which its deliverer vouches
    /// for; the local side's is in [`Conflict::local_version`].
    pub fn metadata(&self) -> Option<&WriteMetadata> {
        self.incoming.metadata.as_ref()
    }

    /// Reads another row as it stands in this transaction.
    pub fn get(&self, table: &str, key: impl Into<Key>) -> Result<Option<Row>, E> {
        self.view.get_row(table, &key.into())
    }

    /// Runs one read-only SQL statement (`SELECT sum(...)`) against the
    /// state as it stands in this transaction, for cross-row rules, and
    /// returns its rows. A statement that could write is refused (the
    /// store's `ResolveError::NotReadOnly`): resolvers decide, they do not
    /// write.
    pub fn query(&self, sql: &str, params: &[Value]) -> Result<Vec<Vec<Value>>, E> {
        self.view.query_rows(self.table, sql, params)
    }
}
