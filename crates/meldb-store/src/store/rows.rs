//! Reading and writing one row: the packed metadata blob, the materialized
//! values users read, and the row's entries in the dot index.
//!
//! Site ids are stored as small integers (`meldb_sites`), so a row clock
//! entry or counter slot costs a few bytes instead of sixteen. Register
//! values live only in their column; the blob holds their timestamps.

use super::layout::TableLayout;
use crate::clock::{Hlc, SiteId};
use crate::crdt::{ColumnState, Dot, GCounter, Lww, OrSet, PnCounter, RowClock};
use crate::error::StorageError;
use crate::merge::RowState;
use crate::schema::Column;
use crate::value::Value;
use meldb_core::codec::stored::{StoredColumn, StoredMeta};
use rusqlite::{params, Connection, OptionalExtension, ToSql};
use std::collections::HashMap;

/// The mapping between site UUIDs and the small integers stored in rows.
/// Indexes start at 1 (the site that created the database); 0 means "no
/// site".
#[derive(Debug, Clone, Default)]
pub struct Sites {
    ids: Vec<SiteId>,
    index: HashMap<SiteId, u32>,
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
        Ok(sites)
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
    let meta =
        StoredMeta::decode(blob).map_err(|e| corrupt("row metadata".to_owned(), e.to_string()))?;
    Ok(meta.clock)
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
    let meta = StoredMeta::decode(blob).map_err(|e| corrupt(what(), e.to_string()))?;
    let site = |idx: u32| {
        sites
            .get(idx)
            .ok_or_else(|| corrupt(what(), format!("unknown site index {idx}")))
    };
    let dot = |(idx, seq): (u32, u64)| -> Result<Dot, StorageError> {
        Ok(Dot {
            site: site(idx)?,
            seq,
        })
    };
    let mut clock = RowClock::new();
    for &entry in &meta.clock {
        clock.observe(dot(entry)?);
    }
    let writer = if meta.writer == 0 {
        SiteId(uuid::Uuid::nil())
    } else {
        site(meta.writer)?
    };
    let mut columns = Vec::with_capacity(layout.value_cols.len());
    let mut stored = meta.columns.into_iter();
    for (value, kind) in values.into_iter().zip(&layout.kinds) {
        // Columns added by a schema upgrade are missing from older blobs.
        let col = match stored.next().unwrap_or(StoredColumn::Unset) {
            StoredColumn::Unset => None,
            StoredColumn::Lww { age, site: idx, .. } => Some(ColumnState::Lww(Lww {
                hlc: Hlc(meta.hlc.checked_sub(age).ok_or_else(|| {
                    corrupt(what(), format!("register older than time zero (age {age})"))
                })?),
                site: site(idx)?,
                value,
            })),
            StoredColumn::GCounter(entries) => Some(ColumnState::GCounter(GCounter::from_entries(
                entries
                    .into_iter()
                    .map(|(idx, n)| Ok((site(idx)?, n)))
                    .collect::<Result<Vec<_>, StorageError>>()?,
            ))),
            StoredColumn::PnCounter(entries) => {
                Some(ColumnState::PnCounter(PnCounter::from_entries(
                    entries
                        .into_iter()
                        .map(|(idx, p, n)| Ok((site(idx)?, p, n)))
                        .collect::<Result<Vec<_>, StorageError>>()?,
                )))
            }
            StoredColumn::OrSet(entries) => {
                let mut out = Vec::with_capacity(entries.len());
                for (elem, tags) in entries {
                    let mut tags = tags.into_iter().map(dot).collect::<Result<Vec<_>, _>>()?;
                    tags.sort_unstable();
                    out.push((elem, tags));
                }
                Some(ColumnState::OrSet(OrSet::from_entries(out)))
            }
        };
        if let Some(c) = &col {
            if c.kind() != *kind {
                return Err(corrupt(
                    what(),
                    format!("stored {} state for a {kind} column", c.kind()),
                ));
            }
        }
        columns.push(col);
    }
    Ok(RowState {
        cl: u64::try_from(cl)
            .map_err(|_| corrupt(what(), format!("negative causal length {cl}")))?,
        clock,
        hlc: Hlc(meta.hlc),
        writer,
        columns,
    })
}

/// The value users read for a column in a given state.
pub fn materialize(column: &Column, state: Option<&ColumnState>) -> Value {
    let clamp = |v: i128| Value::Integer(v.clamp(i64::MIN.into(), i64::MAX.into()) as i64);
    match state {
        Some(ColumnState::Lww(l)) => l.value.clone(),
        Some(ColumnState::GCounter(c)) => clamp(c.value()),
        Some(ColumnState::PnCounter(c)) => clamp(c.value()),
        Some(ColumnState::OrSet(s)) => Value::Text(s.to_json()),
        None => match column.kind {
            crate::schema::Kind::Lww => column.default.clone().unwrap_or(Value::Null),
            crate::schema::Kind::GCounter | crate::schema::Kind::PnCounter => Value::Integer(0),
            crate::schema::Kind::OrSet => Value::Text("[]".into()),
        },
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
    let mut idx = |site: SiteId| sites.index(conn, site);
    let clock = state
        .clock
        .entries()
        .iter()
        .map(|&(s, n)| Ok((idx(s)?, n)))
        .collect::<rusqlite::Result<_>>()?;
    let writer = if state.writer.0.is_nil() {
        0
    } else {
        idx(state.writer)?
    };
    let live = state.is_live();
    let mut columns = Vec::with_capacity(state.columns.len());
    let mut values = Vec::with_capacity(state.columns.len());
    for (j, col) in state.columns.iter().enumerate() {
        let schema_col = &layout.table.columns[layout.value_cols[j]];
        values.push(if live {
            materialize(schema_col, col.as_ref())
        } else {
            Value::Null
        });
        columns.push(match col {
            None => StoredColumn::Unset,
            Some(ColumnState::Lww(l)) => StoredColumn::Lww {
                age: state.hlc.0.saturating_sub(l.hlc.0),
                site: idx(l.site)?,
                value: (),
            },
            Some(ColumnState::GCounter(c)) => StoredColumn::GCounter(
                c.entries()
                    .iter()
                    .map(|&(s, n)| Ok((idx(s)?, n)))
                    .collect::<rusqlite::Result<_>>()?,
            ),
            Some(ColumnState::PnCounter(c)) => StoredColumn::PnCounter(
                c.entries()
                    .iter()
                    .map(|&(s, p, n)| Ok((idx(s)?, p, n)))
                    .collect::<rusqlite::Result<_>>()?,
            ),
            Some(ColumnState::OrSet(set)) => StoredColumn::OrSet(
                set.entries()
                    .iter()
                    .map(|(e, tags)| {
                        Ok((
                            e.clone(),
                            tags.iter()
                                .map(|d| Ok((idx(d.site)?, d.seq)))
                                .collect::<rusqlite::Result<_>>()?,
                        ))
                    })
                    .collect::<rusqlite::Result<_>>()?,
            ),
        });
    }
    let meta = StoredMeta {
        clock,
        hlc: state.hlc.0,
        writer,
        columns,
    };
    Ok((meta.encode(), values))
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
            Ok(_) => {}
            Err(e) if is_constraint(&e) => return Err(RowWriteError::DotTaken(site, seq)),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(rid)
}
