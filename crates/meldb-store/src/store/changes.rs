//! Delta sync: the changes another replica lacks.
//!
//! `meldb_dots` holds, for every row and every site in the row's clock, that
//! site's latest dot on the row. Walking one site's entries in sequence
//! order, an entry `seq` whose predecessor entry is `prev` stands for all of
//! that site's dots in `prev+1..=seq`: each is either this row's, or was
//! superseded by a later write of the same site to the row it touched (whose
//! own entry comes later). So a row is sent when the asker lacks any dot of
//! a range it stands for (even if it has the row's own dot: otherwise a
//! superseded dot below it would never be covered and the asker's version
//! vector would keep a hole), and it carries those ranges (intersected with
//! what this replica itself has) as its covers.

use super::rows;
use super::Store;
use crate::changeset::{Changeset, Cover, RowChange, TableChanges};
use crate::error::Result;
use crate::version::{SeqRanges, VersionVector};
use rusqlite::OptionalExtension;
use std::collections::BTreeMap;

impl Store {
    /// Everything this replica has that a replica with version vector `vv`
    /// lacks, as one changeset. `Changeset::split` cuts it into batches that
    /// can be applied independently.
    pub fn changes_since(&self, vv: &VersionVector) -> Result<Changeset> {
        // Pending mutations' speculative effects are never sent.
        let _canonical = self.canonical_view()?;
        let mut wanted: BTreeMap<(i64, i64), Vec<Cover>> = BTreeMap::new();
        let local_ranges = {
            let mut r = SeqRanges::default();
            r.insert(1, self.replica.last_seq);
            r
        };
        let empty = SeqRanges::default();
        for (idx, site) in self.sites.iter() {
            let asker = vv.site(&site).unwrap_or(&empty);
            let mine = if site == self.local {
                &local_ranges
            } else {
                self.replica.coverage.site(&site).unwrap_or(&empty)
            };
            let start = asker.first_missing();
            let mut prev: u64 = self
                .conn
                .prepare_cached("SELECT max(seq) FROM meldb_dots WHERE site = ?1 AND seq < ?2")?
                .query_row(rusqlite::params![idx, start as i64], |r| {
                    r.get::<_, Option<i64>>(0)
                })
                .optional()?
                .flatten()
                .unwrap_or(0) as u64;
            let mut stmt = self.conn.prepare_cached(
                "SELECT seq, tbl, rid FROM meldb_dots WHERE site = ?1 AND seq >= ?2 ORDER BY seq",
            )?;
            let mut entries = stmt.query(rusqlite::params![idx, start as i64])?;
            while let Some(entry) = entries.next()? {
                let seq = entry.get::<_, i64>(0)? as u64;
                // Sent when the asker lacks this row's dot, or a superseded
                // dot of the range the row stands for.
                if !asker.contains_all(prev + 1, seq) {
                    let covers = wanted.entry((entry.get(1)?, entry.get(2)?)).or_default();
                    for (first, last) in mine.intersect(prev + 1, seq) {
                        covers.push(Cover { site, first, last });
                    }
                }
                prev = seq;
            }
        }

        let mut changeset = Changeset::new(self.local);
        let mut wanted = wanted.into_iter().peekable();
        while let Some(((tbl, first), covers)) = wanted.next() {
            let layout = self
                .tables
                .get(tbl as usize)
                .ok_or_else(|| rows::corrupt("meldb_dots", format!("unknown table id {tbl}")))?;
            // Rows of consecutive rids are read with one range scan: a full
            // catch-up reads whole tables in rid order, not row by row.
            let mut run = vec![covers];
            let mut last = first;
            while let Some(covers) = wanted.next_if(|((t, rid), _)| *t == tbl && *rid == last + 1) {
                run.push(covers.1);
                last += 1;
            }
            let mut run = run.into_iter();
            let mut read = Vec::with_capacity(run.len());
            rows::read_rows(
                &self.conn,
                layout,
                &self.sites,
                &layout.sql.select_rid_range,
                [first, last],
                |key, state| {
                    read.push((key, state));
                    Ok(())
                },
            )?;
            if read.len() as i64 != last - first + 1 {
                return Err(rows::corrupt(
                    "meldb_dots",
                    format!(
                        "rows {first}..={last} of table {:?}: {} of them are missing",
                        layout.name(),
                        last - first + 1 - read.len() as i64
                    ),
                )
                .into());
            }
            let rows = read
                .into_iter()
                .zip(run.by_ref())
                .map(|((key, state), covers)| RowChange { key, state, covers });
            match changeset.tables.last_mut() {
                Some(t) if t.table == layout.table.name => t.rows.extend(rows),
                _ => changeset.tables.push(TableChanges {
                    table: layout.table.name.clone(),
                    columns: layout
                        .value_cols
                        .iter()
                        .map(|&i| layout.table.columns[i].name.clone())
                        .collect(),
                    rows: rows.collect(),
                }),
            }
        }
        for table in &mut changeset.tables {
            drop_unused_columns(table);
        }
        Ok(changeset)
    }
}

/// Lists only the columns some row of the changeset has a state for, so a
/// replica whose schema lacks a newer, never-set column can still apply it.
fn drop_unused_columns(table: &mut TableChanges) {
    let used: Vec<bool> = (0..table.columns.len())
        .map(|j| {
            table
                .rows
                .iter()
                .any(|r| r.state.columns.get(j).is_some_and(Option::is_some))
        })
        .collect();
    if used.iter().all(|&u| u) {
        return;
    }
    keep_used(&mut table.columns, &used);
    for row in &mut table.rows {
        keep_used(&mut row.state.columns, &used);
    }
}

fn keep_used<T>(items: &mut Vec<T>, used: &[bool]) {
    let mut j = 0;
    items.retain(|_| {
        j += 1;
        used.get(j - 1).copied().unwrap_or(false)
    });
}
