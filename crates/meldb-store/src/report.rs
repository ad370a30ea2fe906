//! What applying a changeset did: rows fast-forwarded, merged as
//! concurrent, already seen, held for a clock ahead of ours, released or
//! discarded, and the outcomes of the conflicts logged. Plain data, below
//! both the store that fills it in and the mutator reports that carry it.

use crate::clock::SiteId;
use crate::resolve::Outcome;
use crate::value::Key;
use std::collections::BTreeMap;

/// What an apply did.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct ApplyReport {
    /// Rows that descended from the local row (or were new here).
    pub fast_forward: usize,
    /// Rows concurrent with the local row: real conflicts, merged.
    pub concurrent: usize,
    /// Rows whose every write was already here.
    pub already_seen: usize,
    /// Rows held back because their clock is too far ahead.
    pub held: Vec<HeldChange>,
    /// Rows held by an earlier apply and applied now.
    pub released: usize,
    /// Held rows that could no longer be applied when their time came, and
    /// were dropped: why, naming the table and key.
    pub discarded: Vec<String>,
    /// Conflicts logged, by outcome (see [`crate::resolve`]).
    pub outcomes: BTreeMap<Outcome, usize>,
    /// The same conflicts by table (a table of the schema) and outcome.
    pub table_outcomes: BTreeMap<String, BTreeMap<Outcome, usize>>,
}

impl ApplyReport {
    /// Rows that changed the local state.
    pub fn applied(&self) -> usize {
        self.fast_forward + self.concurrent
    }

    pub(crate) fn add(&mut self, other: ApplyReport) {
        self.fast_forward += other.fast_forward;
        self.concurrent += other.concurrent;
        self.already_seen += other.already_seen;
        self.held.extend(other.held);
        self.released += other.released;
        self.discarded.extend(other.discarded);
        for (outcome, n) in other.outcomes {
            *self.outcomes.entry(outcome).or_default() += n;
        }
        for (table, outcomes) in other.table_outcomes {
            let mine = self.table_outcomes.entry(table).or_default();
            for (outcome, n) in outcomes {
                *mine.entry(outcome).or_default() += n;
            }
        }
    }
}

/// A row held back because its writer's clock is ahead of ours.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct HeldChange {
    /// The table.
    pub table: String,
    /// The row's key.
    pub key: Key,
    /// The site that wrote the row's latest timestamp.
    pub site: SiteId,
    /// How far ahead of the local wall clock that timestamp is.
    pub offset_ms: u64,
}
