//! The changeset payload as it travels: site ids are written once, in a
//! table at the front of the payload, and referred to by position; register
//! timestamps are written as their age relative to the row's timestamp (0,
//! one byte, for registers the row's latest write set). Converting back
//! checks every site reference and the timestamp arithmetic, so a hostile
//! payload becomes a [`DecodeError`], never a panic.

use super::DecodeError;
use crate::changeset::{Changeset, Cover, RowChange, TableChanges};
use crate::clock::{Hlc, SiteId};
use crate::crdt::{ColumnState, Dot, GCounter, Lww, OrSet, PnCounter, RowClock};
use crate::merge::RowState;
use crate::value::Value;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

#[derive(Serialize, Deserialize)]
pub(super) struct WireChangeset {
    origin: SiteId,
    sites: Vec<SiteId>,
    tables: Vec<WireTable>,
}

#[derive(Serialize, Deserialize)]
struct WireTable {
    table: String,
    columns: Vec<String>,
    rows: Vec<WireRow>,
}

#[derive(Serialize, Deserialize)]
struct WireRow {
    key: Vec<Value>,
    cl: u64,
    clock: Vec<(u32, u64)>,
    hlc: u64,
    writer: Option<u32>,
    columns: Vec<WireColumn>,
    covers: Vec<(u32, u64, u64)>,
}

#[derive(Serialize, Deserialize)]
enum WireColumn {
    Unset,
    Lww { age: u64, site: u32, value: Value },
    GCounter(Vec<(u32, u64)>),
    PnCounter(Vec<(u32, u64, u64)>),
    OrSet(Vec<(String, Vec<(u32, u64)>)>),
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
