//! The changeset file payload, format version 1: site ids are written
//! once, in a table at the front of the payload, and referred to by
//! position; register timestamps are written as their age relative to the
//! row's timestamp (0, one byte, for registers the row's latest write set).
//! Converting back checks every site reference and the timestamp
//! arithmetic, so a hostile payload becomes a [`DecodeError`], never a
//! panic.
//!
//! The layout, in the primitives of [`super::bin`], field by field:
//!
//! ```text
//! changeset = origin:site  sites:seq<site>  tables:seq<table>
//! table     = name:str  columns:seq<str>  rows:seq<row>
//! row       = key:seq<value>  cl:uint  clock:seq<(site_ix:uint, seq:uint)>
//!             hlc:uint  writer:option<site_ix>  columns:seq<column>
//!             covers:seq<(site_ix, first:uint, last:uint)>
//! column    = 0 unset
//!           | 1 lww  age:uint site_ix value
//!           | 2 g_counter  seq<(site_ix, total:uint)>
//!           | 3 pn_counter seq<(site_ix, p:uint, n:uint)>
//!           | 4 or_set     seq<(element:str, tags:seq<(site_ix, seq:uint)>)>
//! ```

use super::bin::{Dec, Enc};
use super::stored::IndexedColumn;
use super::DecodeError;
use crate::changeset::{Changeset, Cover, RowChange, TableChanges};
use crate::clock::{Hlc, SiteId};
use crate::crdt::{ColumnState, Dot, GCounter, Lww, OrSet, PnCounter, RowClock};
use crate::merge::RowState;
use crate::value::Value;
use std::collections::HashMap;

pub(super) struct WireChangeset {
    origin: SiteId,
    sites: Vec<SiteId>,
    tables: Vec<WireTable>,
}

struct WireTable {
    table: String,
    columns: Vec<String>,
    rows: Vec<WireRow>,
}

struct WireRow {
    key: Vec<Value>,
    cl: u64,
    clock: Vec<(u32, u64)>,
    hlc: u64,
    writer: Option<u32>,
    columns: Vec<WireColumn>,
    covers: Vec<(u32, u64, u64)>,
}

/// A column as the changeset payload carries it: registers with values.
type WireColumn = IndexedColumn<Value>;

impl WireRow {
    fn encode(e: &mut Enc, row: &WireRow) {
        e.values(&row.key);
        e.uint(row.cl);
        e.pairs(&row.clock);
        e.uint(row.hlc);
        e.option(row.writer, |e, w| e.uint(w.into()));
        e.seq(&row.columns, |e, c| c.encode(e, Enc::value));
        e.triples(&row.covers);
    }

    fn decode(d: &mut Dec<'_>) -> Result<WireRow, DecodeError> {
        Ok(WireRow {
            key: d.values()?,
            cl: d.uint()?,
            clock: d.pairs()?,
            hlc: d.uint()?,
            writer: d.option(Dec::u32)?,
            columns: d.seq(|d| WireColumn::decode(d, Dec::value))?,
            covers: d.triples()?,
        })
    }
}

#[derive(Default)]
struct SiteTable {
    sites: Vec<SiteId>,
    index: HashMap<SiteId, u32>,
}

impl SiteTable {
    fn of(&mut self, site: SiteId) -> u32 {
        *self.index.entry(site).or_insert_with(|| {
            self.sites.push(site);
            self.sites.len() as u32 - 1
        })
    }
}

impl WireChangeset {
    pub(super) fn encode(&self) -> Vec<u8> {
        let mut e = Enc::new();
        e.site(self.origin);
        e.seq(&self.sites, |e, s| e.site(*s));
        e.seq(&self.tables, |e, t| {
            e.str(&t.table);
            e.seq(&t.columns, |e, c| e.str(c));
            e.seq(&t.rows, WireRow::encode);
        });
        e.into_bytes()
    }

    pub(super) fn decode(bytes: &[u8]) -> Result<WireChangeset, DecodeError> {
        let mut d = Dec::new(bytes, "changeset");
        let origin = d.site()?;
        let sites = d.seq(Dec::site)?;
        let tables = d.seq(|d| {
            Ok(WireTable {
                table: d.string()?,
                columns: d.seq(Dec::string)?,
                rows: d.seq(WireRow::decode)?,
            })
        })?;
        d.finish()?;
        Ok(WireChangeset {
            origin,
            sites,
            tables,
        })
    }

    pub(super) fn from_changeset(cs: &Changeset) -> Self {
        let mut sites = SiteTable::default();
        let tables = cs
            .tables
            .iter()
            .map(|t| WireTable {
                table: t.table.clone(),
                columns: t.columns.clone(),
                rows: t.rows.iter().map(|r| wire_row(r, &mut sites)).collect(),
            })
            .collect();
        WireChangeset {
            origin: cs.origin,
            sites: sites.sites,
            tables,
        }
    }

    pub(super) fn into_changeset(self) -> Result<Changeset, DecodeError> {
        let sites = &self.sites;
        let tables = self
            .tables
            .into_iter()
            .map(|t| {
                Ok(TableChanges {
                    table: t.table,
                    columns: t.columns,
                    rows: t
                        .rows
                        .into_iter()
                        .map(|r| row_change(r, sites))
                        .collect::<Result<_, _>>()?,
                })
            })
            .collect::<Result<_, DecodeError>>()?;
        Ok(Changeset {
            origin: self.origin,
            tables,
        })
    }
}

fn wire_row(row: &RowChange, sites: &mut SiteTable) -> WireRow {
    let state = &row.state;
    let mut dots = |entries: &[(SiteId, u64)]| -> Vec<(u32, u64)> {
        entries.iter().map(|&(s, n)| (sites.of(s), n)).collect()
    };
    let clock = dots(state.clock.entries());
    let columns = state
        .columns
        .iter()
        .map(|c| match c {
            None => WireColumn::Unset,
            Some(ColumnState::Lww(l)) => WireColumn::Lww {
                age: state.hlc.0.saturating_sub(l.hlc.0),
                site: sites.of(l.site),
                value: l.value.clone(),
            },
            Some(ColumnState::GCounter(g)) => {
                WireColumn::GCounter(g.entries().iter().map(|&(s, n)| (sites.of(s), n)).collect())
            }
            Some(ColumnState::PnCounter(p)) => WireColumn::PnCounter(
                p.entries()
                    .iter()
                    .map(|&(s, a, b)| (sites.of(s), a, b))
                    .collect(),
            ),
            Some(ColumnState::OrSet(set)) => WireColumn::OrSet(
                set.entries()
                    .iter()
                    .map(|(e, tags)| {
                        (
                            e.clone(),
                            tags.iter().map(|d| (sites.of(d.site), d.seq)).collect(),
                        )
                    })
                    .collect(),
            ),
        })
        .collect();
    WireRow {
        key: row.key.clone(),
        cl: state.cl,
        clock,
        hlc: state.hlc.0,
        writer: (!state.writer.0.is_nil()).then(|| sites.of(state.writer)),
        columns,
        covers: row
            .covers
            .iter()
            .map(|c| (sites.of(c.site), c.first, c.last))
            .collect(),
    }
}

fn row_change(row: WireRow, sites: &[SiteId]) -> Result<RowChange, DecodeError> {
    let site = |idx: u32| {
        sites
            .get(idx as usize)
            .copied()
            .ok_or_else(|| DecodeError::Malformed {
                what: "changeset",
                message: format!(
                    "site index {idx} is outside the table of {} sites",
                    sites.len()
                ),
            })
    };
    let dot = |(idx, seq): (u32, u64)| {
        Ok::<_, DecodeError>(Dot {
            site: site(idx)?,
            seq,
        })
    };
    let mut clock = Vec::with_capacity(row.clock.len());
    for entry in row.clock {
        let d = dot(entry)?;
        clock.push((d.site, d.seq));
    }
    let columns =
        row.columns
            .into_iter()
            .map(|c| {
                Ok(match c {
                    WireColumn::Unset => None,
                    WireColumn::Lww {
                        age,
                        site: idx,
                        value,
                    } => Some(ColumnState::Lww(Lww {
                        hlc: Hlc(row.hlc.checked_sub(age).ok_or_else(|| {
                            DecodeError::Malformed {
                                what: "changeset",
                                message: format!(
                                    "register age {age} exceeds the row timestamp {}",
                                    row.hlc
                                ),
                            }
                        })?),
                        site: site(idx)?,
                        value,
                    })),
                    WireColumn::GCounter(entries) => {
                        Some(ColumnState::GCounter(GCounter::from_entries(
                            entries
                                .into_iter()
                                .map(|(i, n)| Ok((site(i)?, n)))
                                .collect::<Result<Vec<_>, DecodeError>>()?,
                        )))
                    }
                    WireColumn::PnCounter(entries) => {
                        Some(ColumnState::PnCounter(PnCounter::from_entries(
                            entries
                                .into_iter()
                                .map(|(i, a, b)| Ok((site(i)?, a, b)))
                                .collect::<Result<Vec<_>, DecodeError>>()?,
                        )))
                    }
                    WireColumn::OrSet(entries) => Some(ColumnState::OrSet(OrSet::from_entries(
                        entries
                            .into_iter()
                            .map(|(e, tags)| {
                                Ok((e, tags.into_iter().map(dot).collect::<Result<Vec<_>, _>>()?))
                            })
                            .collect::<Result<Vec<_>, DecodeError>>()?,
                    ))),
                })
            })
            .collect::<Result<Vec<_>, DecodeError>>()?;
    let covers = row
        .covers
        .into_iter()
        .map(|(i, first, last)| {
            Ok(Cover {
                site: site(i)?,
                first,
                last,
            })
        })
        .collect::<Result<Vec<_>, DecodeError>>()?;
    Ok(RowChange {
        key: row.key,
        state: RowState {
            cl: row.cl,
            clock: RowClock::from_entries(clock),
            hlc: Hlc(row.hlc),
            writer: match row.writer {
                Some(i) => site(i)?,
                None => SiteId(uuid::Uuid::nil()),
            },
            columns,
        },
        covers,
    })
}
