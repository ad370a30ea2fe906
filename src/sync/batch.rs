//! Cutting a changeset into bounded batches.
//!
//! A batch holds at most `max_rows` rows and, by an estimate of their
//! encoded size, about `max_bytes` bytes (at least one row, so a single row
//! larger than that still travels alone and the receiver's message limit
//! decides). Rows keep their covers, so batches can be applied in any
//! order and a lost one is simply asked for again.

use crate::changeset::{Changeset, RowChange, TableChanges};
use crate::crdt::ColumnState;
use crate::value::Value;
use crate::version::VersionVector;

/// Splits `changes` into batches of at most `max_rows` rows and roughly at
/// most `max_bytes` encoded bytes each.
pub(crate) fn batches(changes: Changeset, max_rows: usize, max_bytes: usize) -> Vec<Changeset> {
    let max_rows = max_rows.max(1);
    let origin = changes.origin;
    let mut out = Vec::new();
    let mut current = Changeset::new(origin);
    let (mut rows, mut bytes) = (0usize, 0usize);
    for table in changes.tables {
        for row in table.rows {
            let size = approx_row_bytes(&row);
            if rows > 0 && (rows == max_rows || bytes + size > max_bytes) {
                out.push(std::mem::replace(&mut current, Changeset::new(origin)));
                rows = 0;
                bytes = 0;
            }
            match current.tables.last_mut() {
                Some(t) if t.table == table.table => t.rows.push(row),
                _ => current.tables.push(TableChanges {
                    table: table.table.clone(),
                    columns: table.columns.clone(),
                    rows: vec![row],
                }),
            }
            rows += 1;
            bytes += size;
        }
    }
    if rows > 0 {
        out.push(current);
    }
    out
}

/// Adds every dot range the rows of `changes` cover to `vv`.
pub(crate) fn add_covers(vv: &mut VersionVector, changes: &Changeset) {
    for table in &changes.tables {
        for row in &table.rows {
            for c in &row.covers {
                vv.insert(c.site, c.first, c.last);
            }
        }
    }
}

/// An upper-ish estimate of a row's encoded size: values at their length,
/// metadata at a fixed allowance per entry.
fn approx_row_bytes(row: &RowChange) -> usize {
    let key: usize = row.key.iter().map(Value::size_hint).sum();
    let columns: usize = row
        .state
        .columns
        .iter()
        .map(|c| c.as_ref().map_or(1, ColumnState::size_hint))
        .sum();
    32 + key + columns + 12 * (row.state.clock.entries().len() + row.covers.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Hlc, SiteId};
    use crate::crdt::{Lww, RowClock};
    use crate::merge::RowState;

    fn changes(rows: usize, value_len: usize) -> Changeset {
        let site = SiteId::from_bytes([1; 16]);
        let mut cs = Changeset::new(site);
        for (t, name) in ["a", "b"].iter().enumerate() {
            cs.tables.push(TableChanges {
                table: (*name).into(),
                columns: vec!["v".into()],
                rows: (0..rows)
                    .map(|i| RowChange {
                        key: vec![Value::Integer(i as i64)],
                        state: RowState {
                            cl: 1,
                            clock: RowClock::from_entries(vec![(site, (t * rows + i + 1) as u64)]),
                            hlc: Hlc(1),
                            writer: site,
                            columns: vec![Some(ColumnState::Lww(Lww {
                                hlc: Hlc(1),
                                site,
                                value: Value::Text("x".repeat(value_len)),
                            }))],
                        },
                        covers: vec![],
                    })
                    .collect(),
            });
        }
        cs
    }

    #[test]
    fn batches_respect_both_bounds_and_keep_every_row_in_order() {
        let all = changes(50, 10);
        let by_rows = batches(all.clone(), 7, usize::MAX);
        assert!(by_rows.iter().all(|b| b.len() <= 7));
        let rejoined: Vec<_> = by_rows
            .iter()
            .flat_map(|b| b.tables.iter())
            .flat_map(|t| t.rows.iter().map(move |r| (t.table.clone(), r.key.clone())))
            .collect();
        let original: Vec<_> = all
            .tables
            .iter()
            .flat_map(|t| t.rows.iter().map(move |r| (t.table.clone(), r.key.clone())))
            .collect();
        assert_eq!(rejoined, original);

        let by_bytes = batches(changes(50, 1000), 1000, 10_000);
        assert!(by_bytes.len() >= 10, "{} batches", by_bytes.len());
        assert!(by_bytes.iter().all(|b| (1..=10).contains(&b.len())));
        let huge = batches(changes(2, 100_000), 1000, 10_000);
        assert!(huge.iter().all(|b| b.len() == 1));
        assert!(batches(Changeset::new(all.origin), 10, 10).is_empty());
    }
}
