//! What the conflict log records, and the rejection notices writers
//! receive: records the store fills from its tables (`meldb_conflicts`,
//! `meldb_rejections`), not decisions, so they stay beside the log rather
//! than in the core.

use super::{Outcome, Row, Writer};
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

/// A change of this replica's that an authority refused, and why. Reaches
/// the writer with the authority's correction, on its next sync.
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
}

impl Rejection {
    /// The refused row (`None` for a refused delete).
    pub fn rejected_row(&self) -> Option<Row> {
        serde_json::from_str(&self.rejected)
            .ok()
            .and_then(|json| Row::from_json(&json))
    }
}
