//! Pure merge rules, one module per column kind. Nothing here touches SQLite,
//! the network or the clock: every function is a deterministic function of
//! its arguments, so the laws (commutative, associative, idempotent) can be
//! tested exhaustively with proptest.
//!
//! Every merge is a *join*: merging a state with anything it already
//! contains changes nothing, and the order of merges never matters.

mod counter;
mod kind;
mod lww;
mod or_set;
mod row_clock;
mod state_order;

#[cfg(test)]
pub(crate) mod strategies;

pub use counter::{GCounter, PnCounter};
pub use kind::Kind;
pub use lww::{Lww, RegisterRule};
pub use or_set::OrSet;
pub use row_clock::{Causality, Dot, RowClock};
pub use state_order::StateOrder;

/// The CRDT state of one column of one row.
#[derive(Clone, Debug, PartialEq)]
pub enum ColumnState {
    /// A last-writer-wins register.
    Lww(Lww),
    /// A grow-only counter.
    GCounter(GCounter),
    /// An increment/decrement counter.
    PnCounter(PnCounter),
    /// An observed-remove, add-wins set of strings.
    OrSet(OrSet),
}

impl ColumnState {
    /// The column kind this state belongs to.
    pub fn kind(&self) -> Kind {
        match self {
            ColumnState::Lww(_) => Kind::Lww,
            ColumnState::GCounter(_) => Kind::GCounter,
            ColumnState::PnCounter(_) => Kind::PnCounter,
            ColumnState::OrSet(_) => Kind::OrSet,
        }
    }

    /// Joins two states of the same column. `a_seen` / `b_seen` are the row
    /// clocks of the rows the states come from (the OR-set needs them to tell
    /// a removed element from one not yet seen). States of different kinds
    /// cannot be merged; callers validate kinds against the schema first, and
    /// the left state is kept if they did not.
    pub fn merge(&self, a_seen: &RowClock, other: &ColumnState, b_seen: &RowClock) -> ColumnState {
        self.merge_by(a_seen, other, b_seen, &RegisterRule::Latest)
    }

    /// [`ColumnState::merge`], with registers picking by `rule`.
    pub fn merge_by(
        &self,
        a_seen: &RowClock,
        other: &ColumnState,
        b_seen: &RowClock,
        rule: &RegisterRule,
    ) -> ColumnState {
        match (self, other) {
            (ColumnState::Lww(a), ColumnState::Lww(b)) => ColumnState::Lww(a.merge_by(b, rule)),
            (ColumnState::GCounter(a), ColumnState::GCounter(b)) => {
                ColumnState::GCounter(a.merge(b))
            }
            (ColumnState::PnCounter(a), ColumnState::PnCounter(b)) => {
                ColumnState::PnCounter(a.merge(b))
            }
            (ColumnState::OrSet(a), ColumnState::OrSet(b)) => {
                ColumnState::OrSet(a.merge(a_seen, b, b_seen))
            }
            _ => self.clone(),
        }
    }
}

/// Merges two optional column states; `None` (never written in this row's
/// life) is the identity.
pub fn merge_optional(
    a: Option<&ColumnState>,
    a_seen: &RowClock,
    b: Option<&ColumnState>,
    b_seen: &RowClock,
    rule: &RegisterRule,
) -> Option<ColumnState> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.merge_by(a_seen, b, b_seen, rule)),
        (Some(a), None) => Some(a.clone()),
        (None, Some(b)) => Some(b.clone()),
        (None, None) => None,
    }
}
