//! Resolvers written in the foreign language: a function that gets a
//! conflict as data and returns a decision.
//!
//! Invariant: a resolver runs while its database applies changes (its lock
//! held), so it cannot call into that database ([`crate::guard`] refuses);
//! an exception it throws fails the apply, which then writes nothing, as
//! a Rust resolver's panic does.

use crate::database::Database;
use crate::error::{CallbackError, MeldbError};
use crate::guard;
use crate::value::{self, DbRow, DbValue};
use meldb::{Conflict, Mode, NoticeKind, Resolution, Resolver, Row};
use std::sync::Arc;

/// A conflict, as a resolver sees it.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct ConflictInfo {
    /// The table.
    pub table: String,
    /// The row's key, one value per key column.
    pub key: Vec<DbValue>,
    /// The row here before the change (`None`: absent or deleted).
    pub local: Option<DbRow>,
    /// The row as the incoming change has it (`None`: a delete).
    pub incoming: Option<DbRow>,
    /// What the CRDT merge produced (`None`: deleted).
    pub merged: Option<DbRow>,
    /// Whether the change is concurrent with the local row (a real
    /// conflict) rather than a fast-forward.
    pub concurrent: bool,
    /// "authority", "client" or "leaderless": where the decision is made.
    pub mode: String,
    /// The writer's user id, as its token or the app vouches.
    pub writer_user: Option<String>,
    /// The writer's roles.
    pub writer_roles: Vec<String>,
    /// The mutator whose effect this is, at the authority.
    pub mutation: Option<String>,
    /// The write's app metadata (JSON, usually).
    pub metadata: Option<String>,
}

/// What a resolver decides.
#[derive(Debug, Clone, PartialEq, uniffi::Enum)]
pub enum Decision {
    /// Keep the merged row.
    Accept,
    /// Replace the merged row's given columns with these values.
    Merge { values: DbRow },
    /// Keep the local row (authority only).
    KeepLocal,
    /// Refuse the change, telling its writer why (authority only).
    Reject { reason: String },
    /// Keep the merged row and ask a person (the conflict log).
    Defer { reason: String },
    /// No opinion: the next resolver decides.
    Pass,
}

/// The foreign side of a resolver.
#[uniffi::export(callback_interface)]
pub trait ConflictResolver: Send + Sync {
    /// Decides one conflict.
    fn resolve(&self, conflict: ConflictInfo) -> Result<Decision, CallbackError>;
}

fn mode_name(mode: Mode) -> String {
    match mode {
        Mode::Authority => "authority",
        Mode::Client => "client",
        _ => "leaderless",
    }
    .to_owned()
}

fn conflict_info(schema: &meldb::Schema, c: &Conflict<'_>) -> ConflictInfo {
    let table = c.table().to_owned();
    let row = |r: Option<&Row>| r.map(|r| value::table_row(schema, &table, r.columns().to_vec()));
    ConflictInfo {
        key: c.key().0.into_iter().map(DbValue::from_value).collect(),
        local: row(c.local()),
        incoming: row(c.incoming()),
        merged: row(c.merged()),
        concurrent: c.is_concurrent(),
        mode: mode_name(c.mode()),
        writer_user: c.writer().user.clone(),
        writer_roles: c.writer().roles.clone(),
        mutation: c.mutation().map(str::to_owned),
        metadata: c.metadata().map(|m| m.as_str().to_owned()),
        table,
    }
}

fn resolution(decision: Decision) -> Result<Resolution, MeldbError> {
    Ok(match decision {
        Decision::Accept => Resolution::Accept,
        Decision::Merge { values } => Resolution::Merge(Row::new(value::columns(values)?)),
        Decision::KeepLocal => Resolution::KeepLocal,
        Decision::Reject { reason } => Resolution::Reject(reason),
        Decision::Defer { reason } => Resolution::Defer(reason),
        Decision::Pass => Resolution::Pass,
    })
}

#[uniffi::export]
impl Database {
    /// Registers `resolver` as `name` on `table` (a resolver of that name
    /// there is replaced): it runs on real conflicts, or on every incoming
    /// change with `every_change` (rules that must hold whatever the
    /// writer had seen). Higher `priority` runs first.
    #[uniffi::method(default(priority = 0, every_change = false))]
    pub fn add_resolver(
        &self,
        table: String,
        name: String,
        resolver: Box<dyn ConflictResolver>,
        priority: i32,
        every_change: bool,
    ) -> Result<(), MeldbError> {
        let resolver: Arc<dyn ConflictResolver> = Arc::from(resolver);
        let schema = self.schema.clone();
        let id = self.id;
        let label = name.clone();
        let mut rust = Resolver::new(&name, move |c| {
            let info = conflict_info(&schema, c);
            let decided = {
                let _inside = guard::enter(id, "resolver");
                resolver.resolve(info)
            };
            match decided.map_err(MeldbError::from).and_then(resolution) {
                Ok(resolution) => resolution,
                // Fails the apply, which writes nothing: the store catches
                // this unwind as a resolver's panic, with this message.
                Err(e) => {
                    std::panic::resume_unwind(Box::new(format!("resolver {label:?} failed: {e}")))
                }
            }
        })
        .priority(priority);
        if every_change {
            rust = rust.on_every_change();
        }
        self.with_store(
            "add_resolver",
            |store| Ok(store.add_resolver(&table, rust)?),
        )
    }

    /// Unregisters the resolver `name` of `table`; whether there was one.
    pub fn remove_resolver(&self, table: String, name: String) -> Result<bool, MeldbError> {
        self.with_store("remove_resolver", |store| {
            Ok(store.remove_resolver(&table, &name)?)
        })
    }
}

/// A change of this replica's that an authority refused, overruled or set
/// aside, as its writer hears of it on the next sync.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct RejectionRecord {
    /// The table.
    pub table: String,
    /// The row's key.
    pub key: Vec<DbValue>,
    /// The authority's reason.
    pub reason: String,
    /// "rejected", "overruled" or "deferred".
    pub kind: String,
    /// The refused row as the writer sent it (JSON; `null` for a delete).
    pub rejected_json: String,
    /// The site whose change it was.
    pub writer: String,
}

#[uniffi::export]
impl Database {
    /// The changes of this replica an authority refused, overruled or
    /// deferred (and, at the authority, what it told its writers).
    pub fn rejections(&self) -> Result<Vec<RejectionRecord>, MeldbError> {
        let list = self.with_store("rejections", |store| Ok(store.rejections()?))?;
        Ok(list
            .into_iter()
            .map(|r| RejectionRecord {
                table: r.table,
                key: r.key.0.into_iter().map(DbValue::from_value).collect(),
                reason: r.reason,
                kind: match r.kind {
                    NoticeKind::Rejected => "rejected",
                    NoticeKind::Overruled => "overruled",
                    _ => "deferred",
                }
                .to_owned(),
                rejected_json: r.rejected,
                writer: r.writer.to_string(),
            })
            .collect())
    }
}

impl From<CallbackError> for MeldbError {
    fn from(e: CallbackError) -> MeldbError {
        MeldbError::Apply {
            message: e.to_string(),
        }
    }
}
