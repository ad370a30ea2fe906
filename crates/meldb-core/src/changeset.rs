//! Changesets: what one replica sends another.
//!
//! A changeset holds row states grouped by table. Each row carries the
//! ranges of dots its delivery covers ([`Cover`]): applying the row lets the
//! receiver add them to its version vector. Covers ride on rows, not on the
//! changeset, so a changeset may be split, reordered, duplicated or partly
//! lost in transit and every piece that arrives is still sound on its own.
//! Column states are listed in the order of the table's `columns` names,
//! so replicas whose schemas added columns in a different order still agree.
//!
//! The types here are plain data with public fields, on purpose: a
//! changeset is input from another device, so `Store::apply` checks every
//! part of it (tables, columns, keys, each state's shape and canonical
//! form, covers) exactly as it checks decoded bytes, and no invariant of
//! the receiving store depends on who built the value. A changeset built
//! by hand that breaks a rule is refused as a whole, like bytes from the
//! network.
//!
//! A replica may hand out what another lacks in pages ([`ChangePage`]):
//! rows in the replica's own order (table, then row), each page ending with
//! the [`ChangeCursor`] to continue after. A page lists every value column
//! of its tables; which columns an answer can leave out
//! ([`TableChanges::drop_unused_columns`]) is known only once a table's
//! last page is in, so whoever joins the pages drops them.

use crate::clock::SiteId;
use crate::merge::RowState;
use crate::value::Value;

/// Dots `first..=last` of `site`, had by whoever applies the row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cover {
    /// The writing site.
    pub site: SiteId,
    /// First sequence number covered.
    pub first: u64,
    /// Last sequence number covered.
    pub last: u64,
}

/// One row's state and what its delivery covers.
#[derive(Clone, Debug, PartialEq)]
pub struct RowChange {
    /// Primary-key values in key order.
    pub key: Vec<Value>,
    /// The sender's full state of the row.
    pub state: RowState,
    /// The dot ranges this row's delivery covers.
    pub covers: Vec<Cover>,
}

/// The changes of one table.
#[derive(Clone, Debug, PartialEq)]
pub struct TableChanges {
    /// The table name.
    pub table: String,
    /// Names of the value (non-key) columns the row states list, in order.
    pub columns: Vec<String>,
    /// The rows.
    pub rows: Vec<RowChange>,
}

/// Changes from one replica, for another.
#[derive(Clone, Debug, PartialEq)]
pub struct Changeset {
    /// The replica that produced it.
    pub origin: SiteId,
    /// Per-table changes.
    pub tables: Vec<TableChanges>,
}

impl TableChanges {
    /// Lists only the columns some row has a state for, so a replica whose
    /// schema lacks a newer, never-set column can still apply the rows.
    pub fn drop_unused_columns(&mut self) {
        let used: Vec<bool> = (0..self.columns.len())
            .map(|j| {
                self.rows
                    .iter()
                    .any(|r| r.state.columns.get(j).is_some_and(Option::is_some))
            })
            .collect();
        if used.iter().all(|&u| u) {
            return;
        }
        keep_used(&mut self.columns, &used);
        for row in &mut self.rows {
            keep_used(&mut row.state.columns, &used);
        }
    }
}

fn keep_used<T>(items: &mut Vec<T>, used: &[bool]) {
    let mut j = 0;
    items.retain(|_| {
        j += 1;
        used.get(j - 1).copied().unwrap_or(false)
    });
}

/// Where a paged read of changes stopped: after row `row` of table
/// `table`, both positions in the order of the replica that issued it (the
/// store's: table id, then row id). Only that replica interprets them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ChangeCursor {
    table: i64,
    row: i64,
}

impl ChangeCursor {
    /// The position right after `row` of `table`.
    pub fn after(table: i64, row: i64) -> ChangeCursor {
        ChangeCursor { table, row }
    }

    /// The table position.
    pub fn table(&self) -> i64 {
        self.table
    }

    /// The row position within the table.
    pub fn row(&self) -> i64 {
        self.row
    }
}

/// One page of what a replica lacks: up to the asked number of rows, and
/// where the next page starts (`None`: this was the last).
#[derive(Clone, Debug, PartialEq)]
pub struct ChangePage {
    /// The rows, every value column of their tables listed.
    pub changes: Changeset,
    /// The cursor to continue after these rows, if any remain.
    pub next: Option<ChangeCursor>,
}

impl Changeset {
    /// An empty changeset from `origin`.
    pub fn new(origin: SiteId) -> Self {
        Changeset {
            origin,
            tables: Vec::new(),
        }
    }

    /// The number of rows.
    pub fn len(&self) -> usize {
        self.tables.iter().map(|t| t.rows.len()).sum()
    }

    /// Whether it carries no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds `page`'s tables after this changeset's; a table continued from
    /// the last one (the same name) is joined to it, so pages in order
    /// append to the changeset they were cut from. Both list the same
    /// columns for a table they share (pages list every column).
    pub fn append(&mut self, page: Changeset) {
        for table in page.tables {
            match self.tables.last_mut() {
                Some(last) if last.table == table.table => last.rows.extend(table.rows),
                _ => self.tables.push(table),
            }
        }
    }

    /// Splits into changesets of at most `max_rows` rows each (at least one
    /// row per piece). Each piece can be applied on its own, in any order.
    pub fn split(&self, max_rows: usize) -> Vec<Changeset> {
        let max_rows = max_rows.max(1);
        let mut pieces = Vec::new();
        let mut current = Changeset::new(self.origin);
        let mut count = 0;
        for table in &self.tables {
            for chunk in table.rows.chunks(max_rows) {
                for row in chunk {
                    if count == max_rows {
                        pieces.push(std::mem::replace(&mut current, Changeset::new(self.origin)));
                        count = 0;
                    }
                    match current.tables.last_mut() {
                        Some(t) if t.table == table.table => t.rows.push(row.clone()),
                        _ => current.tables.push(TableChanges {
                            table: table.table.clone(),
                            columns: table.columns.clone(),
                            rows: vec![row.clone()],
                        }),
                    }
                    count += 1;
                }
            }
        }
        if count > 0 {
            pieces.push(current);
        }
        pieces
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Hlc;
    use crate::crdt::RowClock;

    fn row(key: i64) -> RowChange {
        RowChange {
            key: vec![Value::Integer(key)],
            state: RowState {
                cl: 1,
                clock: RowClock::new(),
                hlc: Hlc(0),
                writer: SiteId::from_bytes([0; 16]),
                columns: vec![],
                meta: None,
            },
            covers: vec![],
        }
    }

    #[test]
    fn split_keeps_every_row_once_in_order() {
        let site = SiteId::from_bytes([1; 16]);
        let mut cs = Changeset::new(site);
        for name in ["a", "b"] {
            cs.tables.push(TableChanges {
                table: name.into(),
                columns: vec!["x".into()],
                rows: (0..5).map(row).collect(),
            });
        }
        let pieces = cs.split(3);
        assert_eq!(
            pieces.iter().map(Changeset::len).collect::<Vec<_>>(),
            [3, 3, 3, 1]
        );
        let rejoined: Vec<(String, Vec<Value>)> = pieces
            .iter()
            .flat_map(|p| p.tables.iter())
            .flat_map(|t| t.rows.iter().map(|r| (t.table.clone(), r.key.clone())))
            .collect();
        let original: Vec<(String, Vec<Value>)> = cs
            .tables
            .iter()
            .flat_map(|t| t.rows.iter().map(|r| (t.table.clone(), r.key.clone())))
            .collect();
        assert_eq!(rejoined, original);
        assert!(Changeset::new(site).split(3).is_empty());
    }
}
