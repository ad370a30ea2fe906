//! What the conflict log records, and the rejection notices writers
//! receive: records the store fills from its tables (`meldb_conflicts`,
//! `meldb_rejections`), not decisions, so they stay beside the log rather
//! than in the core.

use super::{Outcome, Row, WriteMetadata, Writer};
use crate::clock::SiteId;
use crate::value::Key;

/// One entry of the conflict log (`meldb_conflicts`).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct ConflictRecord {
    /// Its id, for [`crate::Store::resolve_deferred`].
    pub id: i64,
    /// When (wall-clock milliseconds on this replica).
    pub at_ms: u64,
    /// The table.
    pub table: String,
    /// The row's key.
    pub key: Key,
    /// The local row before (`None`: absent or deleted).
    pub local: Option<Row>,
    /// The incoming row (`None`: a delete).
    pub incoming: Option<Row>,
    /// What the CRDT merge produced.
    pub merged: Option<Row>,
    /// What the row became.
    pub result: Option<Row>,
    /// How it ended.
    pub outcome: Outcome,
    /// The resolver or policy that decided, if any.
    pub resolver: Option<String>,
    /// Why, if the decider said.
    pub reason: Option<String>,
    /// Who wrote the incoming change.
    pub writer: Writer,
    /// The site that wrote it.
    pub writer_site: SiteId,
    /// For a deferred conflict: whether it is still waiting.
    pub open: bool,
    /// The client-asserted metadata of the local version's latest write.
    pub local_metadata: Option<WriteMetadata>,
    /// The client-asserted metadata of the incoming write (what
    /// `Conflict::metadata` showed the resolvers). Never identity: `writer`
    /// is what the deliverer vouched for.
    pub incoming_metadata: Option<WriteMetadata>,
}

/// Conflicts of one outcome in one table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConflictCount {
    /// The table.
    pub table: String,
    /// The outcome.
    pub outcome: Outcome,
    /// How many.
    pub count: u64,
}

/// What a notice tells its writer about its change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum NoticeKind {
    /// The authority refused the change (a `Reject`, a policy's refusal):
    /// every notice of protocol versions 1 and 2, and of databases before
    /// format 3, is one.
    Rejected,
    /// The authority kept its own row, or merged away part of the change
    /// (`KeepLocal`, a `Merge` that drops some of it).
    Overruled,
    /// The change waits for review (`Defer`).
    Deferred,
}

impl NoticeKind {
    /// Every kind, in wire order.
    pub const ALL: [NoticeKind; 3] = [
        NoticeKind::Rejected,
        NoticeKind::Overruled,
        NoticeKind::Deferred,
    ];

    /// The name stored in `meldb_rejections.kind`.
    pub fn name(self) -> &'static str {
        match self {
            NoticeKind::Rejected => "rejected",
            NoticeKind::Overruled => "overruled",
            NoticeKind::Deferred => "deferred",
        }
    }

    /// The kind of a stored name.
    pub fn from_name(name: &str) -> Option<NoticeKind> {
        NoticeKind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// The kind a notice of a conflict with `outcome` has (at the
    /// authority, from the conflict log): kept local or merged is
    /// overruled, deferred is deferred, anything else rejected.
    pub fn of_outcome(outcome: Outcome) -> NoticeKind {
        match outcome {
            Outcome::KeptLocal | Outcome::Merged => NoticeKind::Overruled,
            Outcome::Deferred => NoticeKind::Deferred,
            _ => NoticeKind::Rejected,
        }
    }
}

/// A change of this replica's that an authority refused, overruled or set
/// aside for review ([`Rejection::kind`]), and why. Reaches the writer with
/// the authority's correction, on its next sync.
#[derive(Clone, Debug, PartialEq)]
pub struct Rejection {
    /// The authority that refused it.
    pub authority: SiteId,
    /// The sequence number of the authority's correcting write (with
    /// `authority`, identifies the notice).
    pub seq: u64,
    /// The site whose change was refused.
    pub writer: SiteId,
    /// The table.
    pub table: String,
    /// The row's key.
    pub key: Key,
    /// The reason, for the user ("Seat A1 already booked by alice").
    pub reason: String,
    /// The refused row as the writer sent it, as a JSON object (`null` for
    /// a delete); [`Rejection::rejected_row`] reads it.
    pub rejected: String,
    /// When the authority refused it (its wall-clock milliseconds).
    pub at_ms: u64,
    /// What happened to the change. Protocol versions before 3 carry no
    /// kind: a notice read from one is [`NoticeKind::Rejected`].
    pub kind: NoticeKind,
}

impl Rejection {
    /// The refused row (`None` for a refused delete).
    pub fn rejected_row(&self) -> Option<Row> {
        serde_json::from_str(&self.rejected)
            .ok()
            .and_then(|json| Row::from_json(&json))
    }
}
