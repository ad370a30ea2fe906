//! May an incoming row be applied now?
//!
//! Invariant: a row reaches the merge only if it fits the local schema
//! ([`localize`]: its key, its column states, its covers), this replica has
//! all of its own history the row has seen (else [`LostHistory`]: the
//! database was restored or copied and must rotate its site id), and its
//! timestamp is within the clock's drift bound (else it is held, never
//! moving the local clock: [`Admission::Hold`]). Checks run in that order,
//! and none of them changes anything.

use crate::changeset::{Changeset, Cover, RowChange, TableChanges};
use crate::clock::{Clock, ClockAhead, SiteId};
use crate::crdt::ColumnState;
use crate::merge::{check_shape, RowState};
use crate::schema::Kind;
use crate::value::Value;

use super::TableShape;

/// Why a changeset's column list does not fit the local table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MappingError {
    /// The local table has no value column of this name.
    Unknown(String),
    /// The column is listed twice.
    Twice(String),
}

/// For each column position in a changeset's table, the local value column.
pub fn column_mapping(
    table: TableShape<'_>,
    columns: &[String],
) -> Result<Vec<usize>, MappingError> {
    let mut mapping = Vec::with_capacity(columns.len());
    for name in columns {
        let j = table
            .value_index(name)
            .ok_or_else(|| MappingError::Unknown(name.clone()))?;
        if mapping.contains(&j) {
            return Err(MappingError::Twice(name.clone()));
        }
        mapping.push(j);
    }
    Ok(mapping)
}

/// Validates an incoming row and lays its columns out in local order
/// (`mapping` from [`column_mapping`]); the error says what is wrong.
pub fn localize(
    shape: TableShape<'_>,
    mapping: &[usize],
    row: &RowChange,
) -> Result<RowState, String> {
    let table = shape.table;
    if row.key.len() != table.primary_key.len() {
        return Err(format!(
            "key has {} parts, the primary key has {}",
            row.key.len(),
            table.primary_key.len()
        ));
    }
    for (value, &i) in row.key.iter().zip(&table.primary_key) {
        let col = &table.columns[i];
        if matches!(value, Value::Real(r) if r.is_nan()) || !col.sql_type.admits(value) {
            return Err(format!(
                "key column {:?} expects {}, got {}",
                col.name,
                col.sql_type,
                value.type_name()
            ));
        }
    }
    let incoming = &row.state;
    if incoming.columns.len() != mapping.len() {
        return Err(format!(
            "{} column states for {} listed columns",
            incoming.columns.len(),
            mapping.len()
        ));
    }
    let mut columns = vec![None; shape.value_cols.len()];
    for (col, &j) in incoming.columns.iter().zip(mapping) {
        columns[j] = col.clone();
    }
    let state = RowState {
        cl: incoming.cl,
        clock: incoming.clock.clone(),
        hlc: incoming.hlc,
        writer: incoming.writer,
        columns,
        meta: incoming.meta.clone(),
    };
    check_shape(&state, shape.kinds)?;
    // Far beyond any real history (2^62 deletes, writes or milliseconds), and
    // far enough below 2^63 that nothing derived from them overflows when
    // stored as an SQLite integer.
    let too_big = |n: u64| n >= 1 << 62;
    if too_big(state.cl)
        || state.clock.entries().iter().any(|&(_, seq)| too_big(seq))
        || too_big(state.hlc.0)
    {
        return Err("a causal length, sequence number or timestamp is 2^62 or more".into());
    }
    for cover in &row.covers {
        if cover.first == 0 || cover.first > cover.last || too_big(cover.last) {
            return Err(format!(
                "invalid cover {}..={} for site {}",
                cover.first, cover.last, cover.site
            ));
        }
    }
    for (j, col) in state.columns.iter().enumerate() {
        let schema_col = &table.columns[shape.value_cols[j]];
        let required =
            schema_col.kind == Kind::Lww && !schema_col.nullable && schema_col.default.is_none();
        if state.is_live() && required && col.is_none() {
            return Err(format!(
                "no value for NOT NULL column {:?}",
                schema_col.name
            ));
        }
        if let Some(ColumnState::Lww(lww)) = col {
            let ok = match &lww.value {
                Value::Null => schema_col.nullable,
                Value::Real(r) if r.is_nan() => false,
                v => schema_col.sql_type.admits(v),
            };
            if !ok {
                return Err(format!(
                    "column {:?} ({}{}) cannot hold {}",
                    schema_col.name,
                    schema_col.sql_type,
                    if schema_col.nullable {
                        ""
                    } else {
                        ", NOT NULL"
                    },
                    lww.value.type_name()
                ));
            }
            if lww.hlc > state.hlc {
                return Err(format!(
                    "column {:?} is newer than the row's timestamp",
                    schema_col.name
                ));
            }
        }
    }
    Ok(state)
}

/// What to do with a localized row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Merge it now.
    Apply,
    /// Its timestamp is too far ahead of the local clock: keep it aside
    /// (see [`held_changeset`]) and retry once the clock has caught up.
    Hold(ClockAhead),
}

/// A row that has seen writes of this replica's site that this replica
/// does not have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LostHistory {
    /// The last write this replica has of its own.
    pub last: u64,
    /// The write of this site the row's sender has seen.
    pub seen: u64,
}

/// Whether `state` (with its delivery's `covers`) may be applied by the
/// replica `local`, whose own writes end at `last_seq` and whose clock is
/// `clock` (read, not moved).
pub fn admit(
    state: &RowState,
    covers: &[Cover],
    local: SiteId,
    last_seq: u64,
    clock: &Clock,
) -> Result<Admission, LostHistory> {
    let seen = covers
        .iter()
        .filter(|c| c.site == local)
        .map(|c| c.last)
        .chain([state.clock.get(&local)])
        .max()
        .unwrap_or(0);
    if seen > last_seq {
        return Err(LostHistory {
            last: last_seq,
            seen,
        });
    }
    Ok(match clock.check(state.hlc) {
        Ok(()) => Admission::Apply,
        Err(ahead) => Admission::Hold(ahead),
    })
}

/// What is kept of a held row: a one-row changeset in the local column
/// layout, so two deliveries of the same row from the same sender are the
/// same bytes (the store keeps one copy).
pub fn held_changeset(
    origin: SiteId,
    shape: TableShape<'_>,
    row: &RowChange,
    state: &RowState,
) -> Changeset {
    Changeset {
        origin,
        tables: vec![TableChanges {
            table: shape.table.name.clone(),
            columns: shape
                .value_cols
                .iter()
                .map(|&i| shape.table.columns[i].name.clone())
                .collect(),
            rows: vec![RowChange {
                key: row.key.clone(),
                state: state.clone(),
                covers: row.covers.clone(),
            }],
        }],
    }
}

/// The site a held row is reported under: its writer, or the changeset's
/// origin for a row that names none.
pub fn held_site(origin: SiteId, state: &RowState) -> SiteId {
    if state.writer.0.is_nil() {
        origin
    } else {
        state.writer
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Hlc, ManualTime};
    use crate::crdt::strategies::site;
    use crate::engine::tests::{lww, parts, state, PLAIN};
    use std::sync::Arc;
    use std::time::Duration;

    const NOW_MS: u64 = 1_000_000;

    fn clock() -> Clock {
        Clock::new(
            Hlc(0),
            Duration::from_secs(1),
            Arc::new(ManualTime::new(NOW_MS)),
        )
    }

    fn at_ms(ms: u64) -> u64 {
        Hlc::from_physical_ms(ms).0
    }

    fn change(key: &str, state: RowState, covers: Vec<Cover>) -> RowChange {
        RowChange {
            key: vec![key.into()],
            state,
            covers,
        }
    }

    #[test]
    fn a_column_list_maps_to_local_positions_once_each() {
        let parts = parts(PLAIN);
        let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            column_mapping(parts.shape(), &names(&["note", "Title"])),
            Ok(vec![2, 0])
        );
        assert_eq!(
            column_mapping(parts.shape(), &names(&["colour"])),
            Err(MappingError::Unknown("colour".into()))
        );
        assert_eq!(
            column_mapping(parts.shape(), &names(&["note", "NOTE"])),
            Err(MappingError::Twice("NOTE".into()))
        );
    }

    #[test]
    fn localize_lays_columns_out_in_local_order() -> Result<(), String> {
        let parts = parts(PLAIN);
        let incoming = state(&[(1, 1)], 5, 1, vec![lww("n", 5, 1), lww("t", 5, 1)]);
        let local = localize(parts.shape(), &[2, 0], &change("d", incoming, vec![]))?;
        assert_eq!(local.columns, vec![lww("t", 5, 1), None, lww("n", 5, 1)]);
        Ok(())
    }

    #[test]
    fn localize_refuses_rows_that_break_the_schema() {
        let parts = parts(PLAIN);
        let good = state(&[(1, 1)], 5, 1, vec![lww("t", 5, 1)]);
        let problem = |row: RowChange| localize(parts.shape(), &[0], &row).err();
        let mut two_part_key = change("d", good.clone(), vec![]);
        two_part_key.key.push("e".into());
        assert!(problem(two_part_key).is_some_and(|p| p.contains("key has 2 parts")));
        let newer_column = state(&[(1, 1)], 5, 1, vec![lww("t", 6, 1)]);
        assert!(problem(change("d", newer_column, vec![]))
            .is_some_and(|p| p.contains("newer than the row's timestamp")));
        let empty_cover = Cover {
            site: site(1),
            first: 2,
            last: 1,
        };
        assert!(problem(change("d", good.clone(), vec![empty_cover]))
            .is_some_and(|p| p.contains("invalid cover")));
        assert_eq!(problem(change("d", good, vec![])), None);
    }

    #[test]
    fn a_row_within_the_drift_bound_is_applied() {
        let row = state(&[(1, 3)], at_ms(NOW_MS + 900), 1, vec![None, None, None]);
        assert_eq!(admit(&row, &[], site(9), 0, &clock()), Ok(Admission::Apply));
    }

    #[test]
    fn a_row_ahead_of_the_clock_is_held_with_its_offset() {
        let row = state(&[(1, 3)], at_ms(NOW_MS + 5_000), 1, vec![None, None, None]);
        assert_eq!(
            admit(&row, &[], site(9), 0, &clock()),
            Ok(Admission::Hold(ClockAhead { offset_ms: 5_000 }))
        );
    }

    #[test]
    fn a_row_that_saw_more_of_this_site_than_it_has_shows_lost_history() {
        let local = site(9);
        // Through the row clock...
        let row = state(&[(1, 3), (9, 5)], at_ms(NOW_MS), 1, vec![None, None, None]);
        assert_eq!(
            admit(&row, &[], local, 3, &clock()),
            Err(LostHistory { last: 3, seen: 5 })
        );
        assert_eq!(admit(&row, &[], local, 5, &clock()), Ok(Admission::Apply));
        // ...or through a cover of this site's writes.
        let covers = [Cover {
            site: local,
            first: 1,
            last: 7,
        }];
        assert_eq!(
            admit(&row, &covers, local, 5, &clock()),
            Err(LostHistory { last: 5, seen: 7 })
        );
        // Lost history is reported before the clock is looked at.
        let ahead = state(&[(9, 5)], at_ms(NOW_MS + 5_000), 1, vec![None, None, None]);
        assert_eq!(
            admit(&ahead, &[], local, 3, &clock()),
            Err(LostHistory { last: 3, seen: 5 })
        );
    }

    #[test]
    fn a_held_row_is_kept_in_local_column_order_under_its_writer() {
        let parts = parts(PLAIN);
        let row = change("d", state(&[(1, 1)], 5, 1, vec![lww("t", 5, 1)]), vec![]);
        let local = localize(parts.shape(), &[0], &row).unwrap_or_else(|p| panic!("{p}"));
        let held = held_changeset(site(7), parts.shape(), &row, &local);
        assert_eq!(held.origin, site(7));
        assert_eq!(held.tables[0].columns, ["title", "serial", "note"]);
        assert_eq!(held.tables[0].rows[0].state, local);
        assert_eq!(held_site(site(7), &local), site(1));
        let mut anonymous = local;
        anonymous.writer = SiteId(uuid::Uuid::nil());
        assert_eq!(held_site(site(7), &anonymous), site(7));
    }
}
