//! The changeset file payload, format versions 1 and 2: site ids are written
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
//!             [v2] meta:option<str>
//! column    = 0 unset | 1 + kind tag, the kind's fields, value included
//!             (the layout of `column`)
//! ```
//!
//! Version 2 is version 1 with the row's write metadata at the end of each
//! row (marked `[v2]`; at most `WriteMetadata::MAX_BYTES` bytes).

use super::bin::{capped, Dec, Enc};
use super::{column, DecodeError};
use crate::changeset::{Changeset, Cover, RowChange, TableChanges};
use crate::clock::{Hlc, SiteId};
use crate::crdt::{RowClock, StateSink};
use crate::merge::RowState;
use crate::resolve::WriteMetadata;
use crate::value::Value;
use std::collections::HashMap;
use std::convert::Infallible;

const NO_SITE: SiteId = SiteId(uuid::Uuid::nil());

/// The payload of a changeset in frame format `version` (1 leaves the
/// rows' write metadata out).
pub(super) fn encode(cs: &Changeset, version: u16) -> Vec<u8> {
    let mut sites = SiteTable::default();
    let mut tables = Enc::new();
    tables.len(cs.tables.len());
    for t in &cs.tables {
        tables.str(&t.table);
        tables.seq(&t.columns, |e, c| e.str(c));
        tables.len(t.rows.len());
        for row in &t.rows {
            sites.register(row);
            encode_row(&mut tables, row, &mut sites, version);
        }
    }
    let mut e = Enc::new();
    e.site(cs.origin);
    e.seq(&sites.sites, |e, s| e.site(*s));
    e.bytes.extend_from_slice(&tables.into_bytes());
    e.into_bytes()
}

/// Reads a payload written by [`encode`] in `version`.
pub(super) fn decode(bytes: &[u8], version: u16) -> Result<Changeset, DecodeError> {
    let mut d = Dec::new(bytes, "changeset");
    let origin = d.site()?;
    let sites = d.seq(Dec::site)?;
    let tables = d.seq(|d| {
        Ok(TableChanges {
            table: d.string()?,
            columns: d.seq(Dec::string)?,
            rows: d.seq(|d| decode_row(d, &sites, version))?,
        })
    })?;
    d.finish()?;
    Ok(Changeset { origin, tables })
}

/// Site ids in order of first appearance; a row's are met in the order
/// clock, columns, writer, covers.
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

    fn register(&mut self, row: &RowChange) {
        let state = &row.state;
        for &(site, _) in state.clock.entries() {
            self.of(site);
        }
        for col in state.columns.iter().flatten() {
            col.encode(&mut Collect(self));
        }
        if state.writer != NO_SITE {
            self.of(state.writer);
        }
        for c in &row.covers {
            self.of(c.site);
        }
    }
}

/// A sink that only registers the sites a state names.
struct Collect<'t>(&'t mut SiteTable);

impl StateSink for Collect<'_> {
    fn len(&mut self, _: usize) {}
    fn uint(&mut self, _: u64) {}
    fn site(&mut self, site: SiteId) {
        self.0.of(site);
    }
    fn text(&mut self, _: &str) {}
    fn stamp(&mut self, _: Hlc) {}
    fn column_value(&mut self, _: &Value) {}
}

fn encode_row(e: &mut Enc, row: &RowChange, sites: &mut SiteTable, version: u16) {
    let state = &row.state;
    e.values(&row.key);
    e.uint(state.cl);
    e.len(state.clock.entries().len());
    for &(site, seq) in state.clock.entries() {
        e.uint(sites.of(site).into());
        e.uint(seq);
    }
    e.uint(state.hlc.0);
    let writer = (state.writer != NO_SITE).then(|| sites.of(state.writer));
    e.option(writer, |e, w| e.uint(w.into()));
    e.len(state.columns.len());
    for col in &state.columns {
        let mut site_ix = |s| Ok::<u32, Infallible>(sites.of(s));
        if let Err(never) = column::encode(e, col.as_ref(), state.hlc.0, true, &mut site_ix) {
            match never {}
        }
    }
    e.len(row.covers.len());
    for c in &row.covers {
        e.uint(sites.of(c.site).into());
        e.uint(c.first);
        e.uint(c.last);
    }
    if version >= 2 {
        e.option(state.meta.as_ref(), |e, m| e.str(m.as_str()));
    }
}

fn decode_row(d: &mut Dec<'_>, sites: &[SiteId], version: u16) -> Result<RowChange, DecodeError> {
    let site = |idx: u32| sites.get(idx as usize).copied();
    let resolve = |d: &Dec<'_>, idx: u32| {
        site(idx).ok_or_else(|| {
            d.malformed(format!(
                "site index {idx} is outside the table of {} sites",
                sites.len()
            ))
        })
    };
    let key = d.values()?;
    let cl = d.uint()?;
    let n = d.count()?;
    let mut clock = capped(n);
    for _ in 0..n {
        let idx = d.u32()?;
        clock.push((resolve(d, idx)?, d.uint()?));
    }
    let hlc = d.uint()?;
    let writer = match d.option(Dec::u32)? {
        Some(idx) => resolve(d, idx)?,
        None => NO_SITE,
    };
    let columns = d.seq(|d| column::decode(d, hlc, &site, None))?;
    let n = d.count()?;
    let mut covers = capped(n);
    for _ in 0..n {
        let idx = d.u32()?;
        covers.push(Cover {
            site: resolve(d, idx)?,
            first: d.uint()?,
            last: d.uint()?,
        });
    }
    let meta = if version >= 2 {
        match d.option(Dec::string)? {
            Some(text) => Some(WriteMetadata::new(text).map_err(|e| d.malformed(e.to_string()))?),
            None => None,
        }
    } else {
        None
    };
    Ok(RowChange {
        key,
        state: RowState {
            cl,
            clock: RowClock::from_entries(clock),
            hlc: Hlc(hlc),
            writer,
            columns,
            meta,
        },
        covers,
    })
}
