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
    /// The columns the policies put back to the local value: a resolver's
    /// row may not set them otherwise (outcome precedence, see
    /// `decide`).
    pub columns: Vec<String>,
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
    let mut whole_row = false;
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
                Policy::Conditional | Policy::ConditionalColumn => {
                    fresh.get(j).copied().unwrap_or(false)
                }
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
            Policy::Conditional | Policy::ConditionalColumn if concurrent => {
                whole_row |= col.policy == Policy::Conditional;
                Some((
                    Outcome::Rejected,
                    format!(
                        "{:?} was changed by someone else since the version you saw",
                        col.name
                    ),
                ))
            }
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
                Some(mut n) => {
                    n.columns.push(col.name.clone());
                    Some(PolicyNote {
                        outcome: n.outcome.max(outcome),
                        policy: n.policy,
                        reason: format!("{}; {reason}", n.reason),
                        columns: n.columns,
                    })
                }
                None => Some(PolicyNote {
                    outcome,
                    policy,
                    reason,
                    columns: vec![col.name.clone()],
                }),
            };
        }
    }
    if let (true, Some(note)) = (whole_row, note.as_mut()) {
        // A `conditional` refusal refuses the writer's whole change to the
        // row: every value column keeps the local value.
        for &i in shape.value_cols {
            let name = &shape.table.columns[i].name;
            if let Some(lv) = local.get(name) {
                target.set_value(name, lv.clone());
            }
            if !note.columns.contains(name) {
                note.columns.push(name.clone());
            }
        }
    }
    (Some(target), note)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::tests::{lww, parts, row, state, GUARDED, PLAIN};

    /// The local row of the guarded table: every column set.
    fn local() -> Row {
        row(&[
            ("id", "d"),
            ("title", "mine"),
            ("serial", "S1"),
            ("note", "old"),
        ])
    }

    fn run(
        toml: &str,
        mode: Mode,
        concurrent: bool,
        incoming: &Row,
        fresh: &[bool],
        merged: Row,
    ) -> (Option<Row>, Option<PolicyNote>) {
        let parts = parts(toml);
        apply_policies(
            parts.shape(),
            mode,
            concurrent,
            Some(&local()),
            Some(incoming),
            fresh,
            Some(merged),
        )
    }

    #[test]
    fn a_register_is_fresh_when_the_local_row_lacks_the_write_that_set_it() {
        // Site 1's write 2 set the title at 7; the note is older.
        let incoming = state(&[(1, 2)], 7, 1, vec![lww("t", 7, 1), None, lww("n", 3, 1)]);
        let behind = state(&[(1, 1)], 3, 1, vec![lww("t", 3, 1), None, lww("n", 3, 1)]);
        assert_eq!(
            fresh_registers(Some(&behind), &incoming),
            [true, false, false]
        );
        assert_eq!(fresh_registers(None, &incoming), [true, false, false]);
        assert_eq!(
            fresh_registers(Some(&incoming), &incoming),
            [false, false, false]
        );
    }

    #[test]
    fn only_an_authority_runs_policies() {
        let incoming = row(&[("id", "d"), ("title", "theirs"), ("serial", "S2")]);
        let merged = incoming.clone();
        for mode in [Mode::Leaderless, Mode::Client] {
            let (target, note) = run(GUARDED, mode, true, &incoming, &[], merged.clone());
            assert_eq!((target, note), (Some(merged.clone()), None));
        }
    }

    #[test]
    fn nothing_acts_without_both_rows() {
        let parts = parts(GUARDED);
        let merged = Some(row(&[("id", "d"), ("title", "theirs")]));
        let (target, note) = apply_policies(
            parts.shape(),
            Mode::Authority,
            true,
            None,
            merged.as_ref(),
            &[],
            merged.clone(),
        );
        assert_eq!((target, note), (merged, None));
        let (target, note) = apply_policies(
            parts.shape(),
            Mode::Authority,
            true,
            Some(&local()),
            None,
            &[],
            None,
        );
        assert_eq!((target, note), (None, None));
    }

    #[test]
    fn authority_wins_keeps_the_local_value_on_a_conflict() {
        let incoming = local().with("title", "theirs");
        let (target, note) = run(
            GUARDED,
            Mode::Authority,
            true,
            &incoming,
            &[],
            incoming.clone(),
        );
        assert_eq!(target, Some(local()));
        assert_eq!(
            note,
            Some(PolicyNote {
                outcome: Outcome::KeptLocal,
                policy: "policy authority_wins (title)".into(),
                reason: "column \"title\" keeps the authority's value".into(),
                columns: vec!["title".into()],
            })
        );
        // A fast-forward is the authority's own history: it stands.
        let (target, note) = run(
            GUARDED,
            Mode::Authority,
            false,
            &incoming,
            &[],
            incoming.clone(),
        );
        assert_eq!((target, note), (Some(incoming), None));
    }

    #[test]
    fn immutable_rejects_a_change_even_when_the_merge_dropped_it() {
        let incoming = local().with("serial", "S2");
        // First-write-wins already kept S1 in the merge.
        let (target, note) = run(GUARDED, Mode::Authority, false, &incoming, &[], local());
        assert_eq!(target, Some(local()));
        let note = note.unwrap_or_else(|| panic!("no note"));
        assert_eq!(note.outcome, Outcome::Rejected);
        assert_eq!(note.policy, "policy immutable (serial)");
        assert!(
            note.reason.contains("already set to \"S1\""),
            "{}",
            note.reason
        );
    }

    #[test]
    fn conditional_rejects_only_a_fresh_concurrent_write() {
        let incoming = local().with("note", "new");
        let fresh = [false, false, true];
        let (target, note) = run(
            GUARDED,
            Mode::Authority,
            true,
            &incoming,
            &fresh,
            incoming.clone(),
        );
        assert_eq!(target, Some(local()));
        assert_eq!(note.map(|n| n.outcome), Some(Outcome::Rejected));
        // Not a write against an older version (not fresh) and the merge
        // kept the local value: nothing to judge.
        let (_, note) = run(
            GUARDED,
            Mode::Authority,
            true,
            &incoming,
            &[false; 3],
            local(),
        );
        assert_eq!(note, None);
    }

    #[test]
    fn conditional_refuses_the_whole_row_and_conditional_column_only_itself() {
        // The title without a policy: only the note's refusal acts.
        let whole = GUARDED.replace("policy = \"authority_wins\"\n", "");
        let column = whole.replace("\"conditional\"", "\"conditional_column\"");
        let incoming = local().with("title", "theirs").with("note", "new");
        let fresh = [true, false, true];
        let (target, note) = run(
            &whole,
            Mode::Authority,
            true,
            &incoming,
            &fresh,
            incoming.clone(),
        );
        assert_eq!(target, Some(local()), "the writer's title goes too");
        let note = note.unwrap_or_else(|| panic!("no note"));
        assert_eq!(note.outcome, Outcome::Rejected);
        assert!(
            note.columns.contains(&"title".to_owned()),
            "{:?}",
            note.columns
        );
        let (target, note) = run(
            &column,
            Mode::Authority,
            true,
            &incoming,
            &fresh,
            incoming.clone(),
        );
        assert_eq!(target, Some(local().with("title", "theirs")));
        assert_eq!(note.map(|n| n.columns), Some(vec!["note".to_owned()]));
    }

    #[test]
    fn a_rejection_outranks_keeping_a_column_and_reasons_add_up() {
        let incoming = local().with("title", "theirs").with("note", "new");
        let fresh = [true, false, true];
        let (target, note) = run(
            GUARDED,
            Mode::Authority,
            true,
            &incoming,
            &fresh,
            incoming.clone(),
        );
        assert_eq!(target, Some(local()));
        let note = note.unwrap_or_else(|| panic!("no note"));
        assert_eq!(note.outcome, Outcome::Rejected);
        assert_eq!(note.policy, "policy authority_wins (title)");
        assert_eq!(note.reason.matches("; ").count(), 1, "{}", note.reason);
    }

    #[test]
    fn columns_without_a_deciding_policy_keep_the_merge() {
        let incoming = local().with("title", "theirs").with("serial", "S2");
        let (target, note) = run(
            PLAIN,
            Mode::Authority,
            true,
            &incoming,
            &[true; 3],
            incoming.clone(),
        );
        assert_eq!((target, note), (Some(incoming), None));
    }

    #[test]
    fn guarded_columns_make_an_authority_judge_fast_forwards() {
        let guarded = parts(GUARDED).table;
        let plain = parts(PLAIN).table;
        assert!(guards_fast_forwards(&guarded, Mode::Authority));
        assert!(!guards_fast_forwards(&guarded, Mode::Leaderless));
        assert!(!guards_fast_forwards(&plain, Mode::Authority));
    }
}
