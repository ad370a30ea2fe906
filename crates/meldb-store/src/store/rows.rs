//! Reading and writing one row: the packed metadata blob, the materialized
//! values users read, and the row's entries in the dot index.
//!
//! Site ids are stored as small integers (`meldb_sites`), so a row clock
//! entry or counter slot costs a few bytes instead of sixteen. Register
//! values live only in their column; the blob holds their timestamps.

use super::layout::TableLayout;
use crate::clock::SiteId;
use crate::crdt::{ColumnState, RowClock};
use crate::error::StorageError;
use crate::merge::RowState;
use crate::schema::Column;
use crate::value::Value;
use meldb_core::codec::stored;
use rusqlite::{params, Connection, OptionalExtension, ToSql};
use std::collections::HashMap;

/// The mapping between site UUIDs and the small integers stored in rows.
/// Indexes start at 1 (the site that created the database); 0 means "no
/// site".
///
/// It also holds, per site, a bound on the sequence numbers of its
/// `meldb_dots` entries: every entry this connection has seen or written
/// has a `seq` at most the bound (loaded at open, raised by
/// [`write_row`], never lowered: a rolled-back or deleted entry leaves it
/// high, which only makes it less tight).
#[derive(Debug, Clone, Default)]
pub struct Sites {
    ids: Vec<SiteId>,
    index: HashMap<SiteId, u32>,
    /// By index - 1: the bound on the site's dot entries.
    max_dots: Vec<u64>,
}

impl Sites {
    /// Loads the table.
    pub fn load(conn: &Connection) -> Result<Sites, StorageError> {
        let mut sites = Sites::default();
        let mut stmt = conn.prepare("SELECT idx, site FROM meldb_sites ORDER BY idx")?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let idx: i64 = row.get(0)?;
            let bytes: Vec<u8> = row.get(1)?;
            let site = <[u8; 16]>::try_from(bytes.as_slice())
                .map(SiteId::from_bytes)
                .map_err(|_| corrupt("meldb_sites", format!("site {idx} is not 16 bytes")))?;
            if idx != sites.ids.len() as i64 + 1 {
                return Err(corrupt(
                    "meldb_sites",
                    format!("index {idx} out of sequence"),
                ));
            }
            sites.index.insert(site, idx as u32);
            sites.ids.push(site);
        }
        let mut max = conn.prepare("SELECT max(seq) FROM meldb_dots WHERE site = ?1")?;
        for idx in 1..=sites.ids.len() as i64 {
            let seq: Option<i64> = max.query_row([idx], |r| r.get(0))?;
            sites.max_dots.push(seq.unwrap_or(0).max(0) as u64);
        }
        Ok(sites)
    }

    /// At least the greatest `seq` of site `idx`'s `meldb_dots` entries
    /// (0 for an unknown site): see the type's docs.
    pub fn max_dot(&self, idx: u32) -> u64 {
        idx.checked_sub(1)
            .and_then(|i| self.max_dots.get(i as usize))
            .copied()
            .unwrap_or(0)
    }

    /// Raises site `idx`'s bound to `seq`: an entry was written.
    fn note_dot(&mut self, idx: u32, seq: u64) {
        if let Some(max) = idx
            .checked_sub(1)
            .and_then(|i| self.max_dots.get_mut(i as usize))
        {
            *max = (*max).max(seq);
        }
    }

    /// How many sites are known.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Forgets sites registered after the first `len` (transaction rollback).
    pub fn truncate(&mut self, len: usize) {
        for site in self.ids.drain(len..) {
            self.index.remove(&site);
        }
        self.max_dots.truncate(len);
    }

    /// The site stored as `idx`.
    pub fn get(&self, idx: u32) -> Option<SiteId> {
        idx.checked_sub(1)
            .and_then(|i| self.ids.get(i as usize))
            .copied()
    }

    /// The stored index of `site`, if known.
    pub fn find(&self, site: &SiteId) -> Option<u32> {
        self.index.get(site).copied()
    }

    /// The stored index of `site`, registering it if new.
    pub fn index(&mut self, conn: &Connection, site: SiteId) -> rusqlite::Result<u32> {
        if let Some(idx) = self.index.get(&site) {
            return Ok(*idx);
        }
        let idx = self.ids.len() as u32 + 1;
        conn.prepare_cached("INSERT INTO meldb_sites (idx, site) VALUES (?1, ?2)")?
            .execute(params![idx, site.as_bytes().as_slice()])?;
        self.ids.push(site);
        self.index.insert(site, idx);
        self.max_dots.push(0);
        Ok(idx)
    }

    /// Every known site, in index order.
    pub fn iter(&self) -> impl Iterator<Item = (u32, SiteId)> + '_ {
        self.ids.iter().enumerate().map(|(i, s)| (i as u32 + 1, *s))
    }
}

pub(crate) fn corrupt(what: impl Into<String>, problem: impl Into<String>) -> StorageError {
    StorageError::Corrupt {
        what: what.into(),
        problem: problem.into(),
    }
}

/// A row as loaded: its rowid and full state.
#[derive(Debug, Clone)]
pub struct LoadedRow {
    /// `_meldb_rid`.
    pub rid: i64,
    /// The CRDT state (register values joined in from their columns).
    pub state: RowState,
}

/// The dot-index keys `(site index, seq)` of a row, from its packed
/// metadata: one per site in the row's clock.
pub fn stored_dots(blob: &[u8]) -> Result<Vec<(u32, u64)>, StorageError> {
    stored::decode_clock(blob).map_err(|e| corrupt("row metadata".to_owned(), e.to_string()))
}

/// Unpacks a row's metadata and joins in its register values.
pub fn decode_state(
    layout: &TableLayout,
    sites: &Sites,
    cl: i64,
    blob: &[u8],
    values: Vec<Value>,
) -> Result<RowState, StorageError> {
    let what = || format!("table {:?}", layout.name());
    let width = values.len();
    let meta = stored::decode_meta(blob, |idx| sites.get(idx), values)
        .map_err(|e| corrupt(what(), e.to_string()))?;
    if meta.columns.len() > width {
        return Err(corrupt(
            what(),
            format!(
                "row metadata holds {} columns, the table {width}",
                meta.columns.len()
            ),
        ));
    }
    let mut clock = RowClock::new();
    for &dot in &meta.clock {
        clock.observe(dot);
    }
    for (col, kind) in meta.columns.iter().zip(&layout.kinds) {
        if let Some(c) = col {
            if c.kind() != *kind {
                return Err(corrupt(
                    what(),
                    format!("stored {} state for a {kind} column", c.kind()),
                ));
            }
            // Every write and merge stores the canonical form; anything
            // else would merge and digest differently from its peers.
            if !c.is_canonical(&clock) {
                return Err(corrupt(what(), format!("a {kind} state is not canonical")));
            }
        }
    }
    Ok(RowState {
        cl: u64::try_from(cl)
            .map_err(|_| corrupt(what(), format!("negative causal length {cl}")))?,
        clock,
        hlc: meta.hlc,
        writer: meta.writer,
        columns: meta.columns,
        meta: meta.meta,
    })
}

/// The value users read for a column in a given state.
pub fn materialize(column: &Column, state: Option<&ColumnState>) -> Value {
    match state {
        Some(state) => state.read(),
        None => column.kind.unset(column.default.as_ref()),
    }
}

/// Packs a state for storage (registering unseen sites) and returns the
/// blob and the values to store in the value columns.
fn encode_state(
    conn: &Connection,
    layout: &TableLayout,
    sites: &mut Sites,
    state: &RowState,
) -> rusqlite::Result<(Vec<u8>, Vec<Value>)> {
    let blob = stored::encode_meta(state, |site| sites.index(conn, site))?;
    let values = if state.is_live() {
        state
            .columns
            .iter()
            .enumerate()
            .map(|(j, col)| materialize(&layout.table.columns[layout.value_cols[j]], col.as_ref()))
            .collect()
    } else {
        vec![Value::Null; state.columns.len()]
    };
    Ok((blob, values))
}

/// Loads the row with `key`, live or deleted.
pub fn load_by_key(
    conn: &Connection,
    layout: &TableLayout,
    sites: &Sites,
    key: &[Value],
) -> Result<Option<LoadedRow>, StorageError> {
    let mut stmt = conn.prepare_cached(&layout.sql.select_by_key)?;
    let found = stmt
        .query_row(rusqlite::params_from_iter(key), |row| {
            let rid: i64 = row.get(0)?;
            let cl: i64 = row.get(1)?;
            let blob: Vec<u8> = row.get(2)?;
            let values = (0..layout.value_cols.len())
                .map(|j| row.get_ref(3 + j).map(Value::from))
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok((rid, cl, blob, values))
        })
        .optional()?;
    found
        .map(|(rid, cl, blob, values)| {
            Ok(LoadedRow {
                rid,
                state: decode_state(layout, sites, cl, &blob, values)?,
            })
        })
        .transpose()
}

/// Reads rows selected by `sql` whose columns are: keys, cl, state, values.
pub fn read_rows(
    conn: &Connection,
    layout: &TableLayout,
    sites: &Sites,
    sql: &str,
    params: impl rusqlite::Params,
    mut each: impl FnMut(Vec<Value>, RowState) -> Result<(), crate::Error>,
) -> Result<(), crate::Error> {
    let mut stmt = conn.prepare_cached(sql)?;
    let mut rows = stmt.query(params)?;
    let nkeys = layout.table.primary_key.len();
    while let Some(row) = rows.next()? {
        let key = (0..nkeys)
            .map(|i| row.get_ref(i).map(Value::from))
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let cl: i64 = row.get(nkeys)?;
        let blob = row
            .get_ref(nkeys + 1)?
            .as_blob()
            .map_err(rusqlite::Error::from)?
            .to_vec();
        let values = (0..layout.value_cols.len())
            .map(|j| row.get_ref(nkeys + 2 + j).map(Value::from))
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let state = decode_state(layout, sites, cl, &blob, values)?;
        each(key, state)?;
    }
    Ok(())
}

/// Why a row write failed.
#[derive(Debug)]
pub enum RowWriteError {
    /// An insert hit an existing key.
    KeyExists,
    /// A dot in the row's clock already belongs to another row (only
    /// hostile input can cause this).
    DotTaken(SiteId, u64),
    /// SQLite failed.
    Sqlite(rusqlite::Error),
}

impl From<rusqlite::Error> for RowWriteError {
    fn from(e: rusqlite::Error) -> Self {
        RowWriteError::Sqlite(e)
    }
}

fn is_constraint(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ConstraintViolation)
}

/// Writes `state` for `key`: inserts a new row when `existing` is `None`,
/// otherwise updates it; then moves the row's dot-index entries from
/// `existing`'s clock to the new one. Returns the rowid.
pub fn write_row(
    conn: &Connection,
    layout: &TableLayout,
    sites: &mut Sites,
    key: &[Value],
    existing: Option<(i64, &RowClock)>,
    state: &RowState,
) -> Result<i64, RowWriteError> {
    let (blob, values) = encode_state(conn, layout, sites, state)?;
    let cl = state.cl as i64;
    let rid = match existing {
        Some((rid, _)) => {
            let mut stmt = conn.prepare_cached(&layout.sql.update)?;
            let params =
                values
                    .iter()
                    .map(|v| v as &dyn ToSql)
                    .chain([&cl as &dyn ToSql, &blob, &rid]);
            stmt.execute(rusqlite::params_from_iter(params))?;
            rid
        }
        None => {
            let mut stmt = conn.prepare_cached(&layout.sql.insert)?;
            let params = key
                .iter()
                .chain(&values)
                .map(|v| v as &dyn ToSql)
                .chain([&cl as &dyn ToSql, &blob]);
            match stmt.execute(rusqlite::params_from_iter(params)) {
                Ok(_) => conn.last_insert_rowid(),
                Err(e) if is_constraint(&e) => return Err(RowWriteError::KeyExists),
                Err(e) => return Err(e.into()),
            }
        }
    };
    let old_clock = existing.map(|(_, c)| c);
    for &(site, seq) in state.clock.entries() {
        let old = old_clock.map_or(0, |c| c.get(&site));
        if old == seq {
            continue;
        }
        let idx = sites.index(conn, site)?;
        if old > 0 {
            conn.prepare_cached("DELETE FROM meldb_dots WHERE site = ?1 AND seq = ?2")?
                .execute(params![idx, old as i64])?;
        }
        let inserted = conn
            .prepare_cached("INSERT INTO meldb_dots (site, seq, tbl, rid) VALUES (?1, ?2, ?3, ?4)")?
            .execute(params![idx, seq as i64, layout.id, rid]);
        match inserted {
            Ok(_) => sites.note_dot(idx, seq),
            Err(e) if is_constraint(&e) => return Err(RowWriteError::DotTaken(site, seq)),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(rid)
}
