//! Row states and `merge_crdt_columns`: how two versions of one row join.
//!
//! A row's state is its *causal length* (`cl`: odd while the row exists,
//! even once deleted; a delete or a re-insert adds one), its row clock (what
//! it has seen), the greatest timestamp written to it, and one CRDT state per
//! non-key column.
//!
//! Merging is lexicographic: the state with the greater causal length wins
//! whole, because a delete or re-insert that one side has seen supersedes
//! everything written before it; at equal causal length every column merges
//! by its own rule. The row clocks always join. Consequences, stated in the
//! README: a delete wins over updates concurrent with it; a row deleted and
//! then re-inserted (by anyone who saw the delete) comes back with the
//! re-insert's values and fresh counters and sets; two concurrent inserts of
//! the same key merge column by column.

use crate::clock::{Hlc, SiteId};
use crate::crdt::{merge_optional, Causality, ColumnState, RegisterRule, RowClock};
use crate::resolve::WriteMetadata;

/// The complete CRDT state of one row.
#[derive(Clone, Debug, PartialEq)]
pub struct RowState {
    /// Causal length: odd while the row exists, even once deleted.
    pub cl: u64,
    /// What this state has seen of the row.
    pub clock: RowClock,
    /// The greatest timestamp of any write folded into this state.
    pub hlc: Hlc,
    /// The site that wrote at `hlc` (ties broken by the greater site).
    pub writer: SiteId,
    /// One state per non-key column, in table order; `None` where the column
    /// was never written in the row's current life.
    pub columns: Vec<Option<ColumnState>>,
    /// The client-asserted metadata of the write at `hlc` (it travels with
    /// the row's latest write, like `writer`); `None` when that write
    /// carried none.
    pub meta: Option<WriteMetadata>,
}

impl RowState {
    /// Whether the row exists (odd causal length).
    pub fn is_live(&self) -> bool {
        self.cl % 2 == 1
    }
}

/// Joins two states of the same row. Commutative, associative and
/// idempotent; `local` and `remote` are named only for readability.
/// `rules` says how each register column picks (by value-column position;
/// missing entries and non-register columns use the default).
pub fn merge_crdt_columns(local: &RowState, remote: &RowState, rules: &[RegisterRule]) -> RowState {
    let columns = match local.cl.cmp(&remote.cl) {
        std::cmp::Ordering::Greater => local.columns.clone(),
        std::cmp::Ordering::Less => remote.columns.clone(),
        std::cmp::Ordering::Equal => {
            let width = local.columns.len().max(remote.columns.len());
            (0..width)
                .map(|i| {
                    merge_optional(
                        local.columns.get(i).and_then(Option::as_ref),
                        &local.clock,
                        remote.columns.get(i).and_then(Option::as_ref),
                        &remote.clock,
                        rules.get(i).unwrap_or(&RegisterRule::Latest),
                    )
                })
                .collect()
        }
    };
    // The metadata goes with the latest write; one write has one metadata,
    // and the comparison includes it so that even a forged tie converges.
    let (hlc, writer, meta) =
        (local.hlc, local.writer, &local.meta).max((remote.hlc, remote.writer, &remote.meta));
    RowState {
        cl: local.cl.max(remote.cl),
        clock: local.clock.join(&remote.clock),
        hlc,
        writer,
        columns,
        meta: meta.clone(),
    }
}

/// Classifies an incoming row state against the local one (none: the row is
/// new here, a fast-forward) and merges it.
pub fn merge_row(
    local: Option<&RowState>,
    remote: &RowState,
    rules: &[RegisterRule],
) -> (Causality, RowState) {
    match local {
        None => (Causality::FastForward, remote.clone()),
        Some(local) => match local.clock.classify(&remote.clock) {
            Causality::Duplicate => (Causality::Duplicate, local.clone()),
            causality => (causality, merge_crdt_columns(local, remote, rules)),
        },
    }
}

/// Whether `state` is a possible merge input for a table whose value columns
/// have these kinds: right width, right kinds, canonical encodings, and no
/// column state on a deleted row.
pub fn check_shape(state: &RowState, kinds: &[crate::schema::Kind]) -> Result<(), String> {
    if state.columns.len() != kinds.len() {
        return Err(format!(
            "{} column states for {} columns",
            state.columns.len(),
            kinds.len()
        ));
    }
    if !state.clock.is_canonical() || state.clock.entries().is_empty() {
        return Err("row clock is empty or not canonical".into());
    }
    if state.cl == 0 {
        return Err("causal length 0 (a row that was never written)".into());
    }
    for (i, (col, kind)) in state.columns.iter().zip(kinds).enumerate() {
        let Some(col) = col else { continue };
        if !state.is_live() {
            return Err(format!("deleted row carries a state for column {i}"));
        }
        if col.kind() != *kind {
            return Err(format!(
                "column {i} is {kind} but the change carries {}",
                col.kind()
            ));
        }
        let canonical = col.is_canonical(&state.clock);
        if !canonical {
            return Err(format!("column {i} state is not canonical"));
        }
    }
    Ok(())
}

/// A fresh state for a row's first life or a re-insert after `previous`.
pub fn fresh_state(previous: Option<&RowState>, width: usize) -> RowState {
    match previous {
        None => RowState {
            cl: 1,
            clock: RowClock::new(),
            hlc: Hlc(0),
            writer: SiteId(uuid::Uuid::nil()),
            columns: vec![None; width],
            meta: None,
        },
        Some(prev) => RowState {
            cl: prev.cl + 1,
            clock: prev.clock.clone(),
            hlc: prev.hlc,
            writer: prev.writer,
            columns: vec![None; width],
            meta: prev.meta.clone(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crdt::strategies::site;
    use crate::crdt::{Dot, GCounter, Lww};

    fn counter_row(cl: u64, entries: &[(u8, u64)], title: &str, hlc: u64) -> RowState {
        let clock = RowClock::from_entries(entries.iter().map(|&(s, n)| (site(s), n)));
        RowState {
            cl,
            clock,
            hlc: Hlc(hlc),
            writer: site(0),
            columns: vec![
                Some(ColumnState::GCounter(GCounter::from_entries(
                    entries.iter().map(|&(s, n)| (site(s), n)),
                ))),
                Some(ColumnState::Lww(Lww {
                    hlc: Hlc(hlc),
                    site: site(0),
                    value: title.into(),
                })),
            ],
            meta: None,
        }
    }

    #[test]
    fn higher_causal_length_wins_whole() {
        let live = counter_row(1, &[(0, 5), (1, 2)], "live", 9);
        let mut deleted = counter_row(2, &[(0, 3)], "x", 4);
        deleted.columns = vec![None, None];
        let merged = merge_crdt_columns(&live, &deleted, &[]);
        assert_eq!(merged.cl, 2);
        assert_eq!(merged.columns, vec![None, None]);
        assert_eq!(merged.clock.get(&site(0)), 5);
        assert_eq!(merged, merge_crdt_columns(&deleted, &live, &[]));
    }

    #[test]
    fn classification_and_merge_agree() {
        let a = counter_row(1, &[(0, 2)], "a", 1);
        let b = counter_row(1, &[(0, 2), (1, 1)], "b", 2);
        assert_eq!(merge_row(Some(&a), &b, &[]).0, Causality::FastForward);
        assert_eq!(merge_row(Some(&b), &a, &[]).0, Causality::Duplicate);
        let c = counter_row(1, &[(1, 1), (2, 1)], "c", 3);
        let (kind, merged) = merge_row(Some(&a), &c, &[]);
        assert_eq!(kind, Causality::Concurrent);
        assert!(merged.clock.contains(Dot {
            site: site(2),
            seq: 1
        }));
    }

    proptest::proptest! {
        #[test]
        fn row_merge_laws_hold_for_reachable_states(rows in crate::crdt::strategies::row_replicas()) {
            let [a, b, c] = &rows;
            let ab = merge_crdt_columns(a, b, &[]);
            proptest::prop_assert_eq!(&ab, &merge_crdt_columns(b, a, &[]));
            proptest::prop_assert_eq!(
                merge_crdt_columns(&ab, c, &[]),
                merge_crdt_columns(a, &merge_crdt_columns(b, c, &[]), &[])
            );
            proptest::prop_assert_eq!(&merge_crdt_columns(a, a, &[]), a);
            // Merging is monotone: the result has seen everything either side had.
            proptest::prop_assert!(a.clock.le(&ab.clock) && b.clock.le(&ab.clock));
            // A duplicate changes nothing.
            proptest::prop_assert_eq!(merge_row(Some(&ab), a, &[]).0, Causality::Duplicate);
        }
    }

    #[test]
    fn shape_check_rejects_wrong_kinds_and_deleted_rows_with_values() {
        use crate::schema::Kind;
        let row = counter_row(1, &[(0, 1)], "t", 1);
        assert!(check_shape(&row, &[Kind::GCounter, Kind::Lww]).is_ok());
        assert!(check_shape(&row, &[Kind::Lww, Kind::Lww]).is_err());
        assert!(check_shape(&row, &[Kind::GCounter]).is_err());
        let mut dead = row.clone();
        dead.cl = 2;
        assert!(check_shape(&dead, &[Kind::GCounter, Kind::Lww]).is_err());
    }
}
