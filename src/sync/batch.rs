//! Cutting a changeset, or the pages of a paged read, into bounded
//! batches.
//!
//! A batch holds at most `max_rows` rows and, by an estimate of their
//! encoded size, about `max_bytes` bytes (at least one row, so a single row
//! larger than that still travels alone and the receiver's message limit
//! decides). Rows keep their covers, so batches can be applied in any
//! order and a lost one is simply asked for again.

use crate::changeset::{Changeset, RowChange, TableChanges};
use crate::clock::SiteId;
use crate::crdt::ColumnState;
use crate::value::Value;
use crate::version::VersionVector;

/// Splits `changes` into batches of at most `max_rows` rows and roughly at
/// most `max_bytes` encoded bytes each.
pub(crate) fn batches(changes: Changeset, max_rows: usize, max_bytes: usize) -> Vec<Changeset> {
    let mut cut = Batcher::new(changes.origin, max_rows, max_bytes);
    for table in changes.tables {
        cut.push_table(table);
    }
    cut.finish()
}

/// Cuts rows into batches as they come: whole tables
/// ([`Batcher::push_table`]) or the pages of a paged read
/// ([`Batcher::push_page`]). A batch may hold the end of one table and the
/// start of the next; where batches end depends only on the rows, not on
/// how they arrived.
pub(crate) struct Batcher {
    max_rows: usize,
    max_bytes: usize,
    origin: SiteId,
    /// The table the last page ended in: more of its rows may follow.
    open: Option<TableChanges>,
    current: Changeset,
    rows: usize,
    bytes: usize,
    out: Vec<Changeset>,
}

impl Batcher {
    pub(crate) fn new(origin: SiteId, max_rows: usize, max_bytes: usize) -> Batcher {
        Batcher {
            max_rows: max_rows.max(1),
            max_bytes,
            origin,
            open: None,
            current: Changeset::new(origin),
            rows: 0,
            bytes: 0,
            out: Vec::new(),
        }
    }

    /// Takes the next page of a paged read (every column listed). A table
    /// is cut once the next one starts, or at [`Batcher::finish`], when
    /// the columns none of its rows uses are known and dropped: the
    /// batches are those of the joined answer.
    pub(crate) fn push_page(&mut self, page: Changeset) {
        for table in page.tables {
            match &mut self.open {
                Some(open) if open.table == table.table => open.rows.extend(table.rows),
                _ => {
                    if let Some(done) = self.open.replace(table) {
                        self.push_complete(done);
                    }
                }
            }
        }
    }

    /// Takes a whole table, its columns as they are to be sent.
    pub(crate) fn push_table(&mut self, table: TableChanges) {
        if let Some(done) = self.open.take() {
            self.push_complete(done);
        }
        self.cut(table);
    }

    /// The batches, the last one included.
    pub(crate) fn finish(mut self) -> Vec<Changeset> {
        if let Some(done) = self.open.take() {
            self.push_complete(done);
        }
        if self.rows > 0 {
            self.out.push(self.current);
        }
        self.out
    }

    /// Takes the next page of a streamed read and hands back the batches
    /// it completed; the rows of a batch not yet full stay
    /// ([`Batcher::held_rows`]) until more pages or
    /// [`Batcher::finish_streamed`]. Unlike [`Batcher::push_page`], no
    /// table is held open to its end: each batch drops the columns none of
    /// its own rows uses, so what is held is at most one batch.
    pub(crate) fn push_page_streamed(&mut self, page: Changeset) -> Vec<Changeset> {
        debug_assert!(
            self.open.is_none(),
            "a streamed batcher holds no table open"
        );
        for table in page.tables {
            self.cut(table);
        }
        let mut done = std::mem::take(&mut self.out);
        done.iter_mut().for_each(drop_unused);
        done
    }

    /// The last batch of a streamed read, if it has rows.
    pub(crate) fn finish_streamed(self) -> Option<Changeset> {
        let mut last = self.finish().pop()?;
        drop_unused(&mut last);
        Some(last)
    }

    /// Rows cut but not yet handed out in a batch.
    pub(crate) fn held_rows(&self) -> usize {
        self.rows + self.open.as_ref().map_or(0, |t| t.rows.len())
    }

    fn push_complete(&mut self, mut table: TableChanges) {
        table.drop_unused_columns();
        self.cut(table);
    }

    fn cut(&mut self, table: TableChanges) {
        for row in table.rows {
            let size = approx_row_bytes(&row);
            if self.rows > 0 && (self.rows == self.max_rows || self.bytes + size > self.max_bytes) {
                let full = std::mem::replace(&mut self.current, Changeset::new(self.origin));
                self.out.push(full);
                self.rows = 0;
                self.bytes = 0;
            }
            match self.current.tables.last_mut() {
                Some(t) if t.table == table.table => t.rows.push(row),
                _ => self.current.tables.push(TableChanges {
                    table: table.table.clone(),
                    columns: table.columns.clone(),
                    rows: vec![row],
                }),
            }
            self.rows += 1;
            self.bytes += size;
        }
    }
}

fn drop_unused(batch: &mut Changeset) {
    batch
        .tables
        .iter_mut()
        .for_each(TableChanges::drop_unused_columns);
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

/// An upper-ish estimate of a changeset's encoded size (the sum of its
/// rows' estimates).
pub(crate) fn approx_changeset_bytes(changes: &Changeset) -> usize {
    changes
        .tables
        .iter()
        .flat_map(|t| &t.rows)
        .map(approx_row_bytes)
        .sum()
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
    use crate::crdt::RowState;
    use crate::crdt::{Lww, RowClock};

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
                            meta: None,
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

    #[test]
    fn pages_cut_into_the_batches_of_the_joined_answer() {
        // Table "a" lists a second column no row sets: dropped only once
        // the whole table is in, as the joined answer drops it.
        let mut all = changes(9, 10);
        let unused = Some(ColumnState::Lww(Lww {
            hlc: Hlc(1),
            site: all.origin,
            value: Value::Null,
        }));
        all.tables[0].columns.push("w".into());
        for row in &mut all.tables[0].rows {
            row.state.columns.push(None);
        }
        all.tables[1].columns.push("w".into());
        all.tables[1].rows[4].state.columns.push(unused);
        for (i, row) in all.tables[1].rows.iter_mut().enumerate() {
            if i != 4 {
                row.state.columns.push(None);
            }
        }
        let mut joined = all.clone();
        for table in &mut joined.tables {
            table.drop_unused_columns();
        }
        assert_eq!(joined.tables[0].columns, ["v"]);
        assert_eq!(joined.tables[1].columns, ["v", "w"]);
        let whole = batches(joined, 4, 150);
        for page_rows in [1, 2, 5, 100] {
            let mut cut = Batcher::new(all.origin, 4, 150);
            for page in all.split(page_rows) {
                cut.push_page(page);
            }
            assert_eq!(cut.finish(), whole, "pages of {page_rows}");
        }
    }
}
