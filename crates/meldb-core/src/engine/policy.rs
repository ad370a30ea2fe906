//! The schema's column policies that need a decider: `authority_wins`,
//! `conditional`, `immutable` and the absorbing states of `forward`.
//!
//! Invariant: policies act only on the authority, and only on a row that
//! exists on both sides after the merge; each one that acts puts the local
//! value back in the target row and says so ([`PolicyNote`]), and a
//! rejection outranks keeping a column. Without an authority the merge
//! itself enforces what it can (first-write-wins registers, forward-only
//! states), so nothing here runs.

use crate::crdt::ColumnState;
use crate::merge::RowState;
use crate::resolve::{Mode, Outcome, Row};
use crate::schema::{Policy, Table};
use crate::value::Value;

use super::TableShape;

/// What the policies decided, when one acted: the outcome, which policy
/// (`policy immutable (seat)`), and why (reasons of several columns joined
/// with `; `).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyNote {
    /// `KeptLocal` or `Rejected`, the greater of the columns'.
    pub outcome: Outcome,
    /// The first policy that acted, as the conflict log names it.
    pub policy: String,
    /// Every acting column's reason.
    pub reason: String,
}

/// Whether, on a replica in `mode`, fast-forward changes to `table` must
/// be judged by its policies too: on the authority, a guarded column
/// (immutable, or a state column with absorbing states) refuses changes
/// whatever the writer had seen.
pub fn guards_fast_forwards(table: &Table, mode: Mode) -> bool {
    mode == Mode::Authority
        && table.columns.iter().any(|c| {
            matches!(c.policy, Policy::Immutable)
                || matches!(&c.policy, Policy::Forward(o) if !o.absorbing().is_empty())
        })
}

/// For each value column, whether the incoming row's register was written
/// by a write the local row has not seen: the incoming row's latest write
/// set it (same timestamp and site), and the local row lacks that write.
/// Such a write was made against an older version, so a policy that guards
/// the column must judge it even when the register merge drops it. (A
/// register written by an earlier unseen write of the same site is not
/// recognised: registers keep the timestamp and site of their write, not
/// its dot.)
pub fn fresh_registers(local: Option<&RowState>, incoming: &RowState) -> Vec<bool> {
    let unseen =
        local.is_none_or(|l| l.clock.get(&incoming.writer) < incoming.clock.get(&incoming.writer));
    incoming
        .columns
        .iter()
        .map(|col| {
            unseen
                && matches!(col, Some(ColumnState::Lww(w))
                    if (w.hlc, w.site) == (incoming.hlc, incoming.writer))
        })
        .collect()
}

/// Runs the policies of `shape`'s columns on the merged row (`merged`,
/// `None`: the merge deletes it) against the `local` and `incoming` rows
/// (`None`: absent or deleted), with `fresh` from [`fresh_registers`].
/// Returns the row the policies leave (the merged row with every guarded
/// column put back) and what they decided, if any acted.
#[allow(clippy::too_many_arguments)]
pub fn apply_policies(
    shape: TableShape<'_>,
    mode: Mode,
    concurrent: bool,
    local: Option<&Row>,
    incoming: Option<&Row>,
    fresh: &[bool],
    merged: Option<Row>,
) -> (Option<Row>, Option<PolicyNote>) {
    let Some(local) = local else {
        return (merged, None);
    };
    let Some(mut target) = merged else {
        return (None, None);
    };
    if mode != Mode::Authority {
        return (Some(target), None);
    }
    let mut note: Option<PolicyNote> = None;
    for (j, &i) in shape.value_cols.iter().enumerate() {
        let col = &shape.table.columns[i];
        let (Some(lv), Some(tv)) = (local.get(&col.name), target.get(&col.name)) else {
            continue;
        };
        // An incoming value the merge may already have dropped, but that
        // was still written against the local one, so its writer must be
        // told: any value for an immutable column that is set here, and a
        // new write (one the local row has not seen) of a conditional
        // column. (A state column's merge keeping the later state is the
        // designed outcome, not a refusal.)
        let incoming_value = incoming.and_then(|r| r.get(&col.name));
        let attempted = incoming_value.is_some_and(|iv| iv != lv)
            && match col.policy {
                Policy::Immutable => incoming_value != Some(&Value::Null),
                Policy::Conditional => fresh.get(j).copied().unwrap_or(false),
                _ => false,
            };
        if lv == tv && !attempted {
            continue;
        }
        let verdict = match &col.policy {
            Policy::AuthorityWins if concurrent => Some((
                Outcome::KeptLocal,
                format!("column {:?} keeps the authority's value", col.name),
            )),
            Policy::Conditional if concurrent => Some((
                Outcome::Rejected,
                format!(
                    "{:?} was changed by someone else since the version you saw",
                    col.name
                ),
            )),
            Policy::Immutable if *lv != Value::Null => Some((
                Outcome::Rejected,
                format!("{:?} is already set to {lv} and cannot change", col.name),
            )),
            Policy::Forward(order) if order.is_absorbing(lv) => Some((
                Outcome::Rejected,
                format!("{:?} is {lv}, a final state", col.name),
            )),
            _ => None,
        };
        if let Some((outcome, reason)) = verdict {
            let lv = lv.clone();
            target.set_value(&col.name, lv);
            let policy = format!("policy {} ({})", col.policy.name(), col.name);
            note = match note {
                // A rejection outranks keeping a column; reasons add up.
                Some(n) => Some(PolicyNote {
                    outcome: n.outcome.max(outcome),
                    policy: n.policy,
                    reason: format!("{}; {reason}", n.reason),
                }),
                None => Some(PolicyNote {
                    outcome,
                    policy,
                    reason,
                }),
            };
        }
    }
    (Some(target), note)
}
