//! One column's state in the two layouts that refer to sites by position
//! in a table: the changeset payload (`wire`) and the stored row metadata
//! (`stored`), in the primitives of [`super::bin`].
//!
//! ```text
//! column = 0 unset | 1 + kind tag, then the kind's fields:
//!   lww        age:uint site_ix [value]     (1)
//!   g_counter  seq<(site_ix, total:uint)>   (2)
//!   pn_counter seq<(site_ix, p:uint, n:uint)>  (3)
//!   or_set     seq<(element:str, tags:seq<(site_ix, seq:uint)>)>  (4)
//! ```
//!
//! Each kind lists its fields once (`ColumnKind::encode` / `decode`); this
//! module spells them: counts and integers as varints, sites as indices, a
//! register's timestamp as its age (the row's timestamp minus its own: 0,
//! one byte, for every register the row's latest write set). The stored
//! layout leaves out the value users read, which lives in the column's own
//! SQL value; the payload carries it.

use super::bin::{Dec, Enc};
use super::DecodeError;
use crate::clock::{Hlc, SiteId};
use crate::crdt::{ColumnState, Kind, StateSink, StateSource};
use crate::value::Value;

/// Writes `column`; `site_ix` gives each site's index (and may fail, as
/// registering a new site in a database can), `values` whether the value
/// users read is written.
pub fn encode<E>(
    e: &mut Enc,
    column: Option<&ColumnState>,
    row_hlc: u64,
    values: bool,
    site_ix: &mut impl FnMut(SiteId) -> Result<u32, E>,
) -> Result<(), E> {
    let Some(state) = column else {
        e.u8(0);
        return Ok(());
    };
    e.u8(state.kind().tag() + 1);
    let mut sink = Sink {
        e,
        row_hlc,
        values,
        site_ix,
        failed: None,
    };
    state.encode(&mut sink);
    match sink.failed {
        Some(err) => Err(err),
        None => Ok(()),
    }
}

/// Reads a column written by [`encode`]. `site` resolves an index;
/// `value` gives the value users read when the layout leaves it out
/// (`None`: the layout carries it).
pub fn decode(
    d: &mut Dec<'_>,
    row_hlc: u64,
    site: &impl Fn(u32) -> Option<SiteId>,
    value: Option<Value>,
) -> Result<Option<ColumnState>, DecodeError> {
    let tag = d.variant(1 + Kind::ALL.len() as u32, "column")?;
    let Some(kind) = tag.checked_sub(1).and_then(|t| Kind::from_tag(t as u8)) else {
        return Ok(None);
    };
    let mut source = Source {
        d,
        row_hlc,
        site,
        value,
    };
    kind.decode(&mut source).map(Some)
}

struct Sink<'e, 'f, F, E> {
    e: &'e mut Enc,
    row_hlc: u64,
    values: bool,
    site_ix: &'f mut F,
    failed: Option<E>,
}

impl<F: FnMut(SiteId) -> Result<u32, E>, E> StateSink for Sink<'_, '_, F, E> {
    fn len(&mut self, n: usize) {
        self.e.len(n);
    }

    fn uint(&mut self, n: u64) {
        self.e.uint(n);
    }

    fn site(&mut self, site: SiteId) {
        let idx = match (self.site_ix)(site) {
            Ok(idx) => idx,
            Err(err) => {
                self.failed.get_or_insert(err);
                0
            }
        };
        self.e.uint(idx.into());
    }

    fn text(&mut self, s: &str) {
        self.e.str(s);
    }

    fn stamp(&mut self, hlc: Hlc) {
        self.e.uint(self.row_hlc.saturating_sub(hlc.0));
    }

    fn column_value(&mut self, value: &Value) {
        if self.values {
            self.e.value(value);
        }
    }
}

struct Source<'d, 'a, 's, F> {
    d: &'d mut Dec<'a>,
    row_hlc: u64,
    site: &'s F,
    value: Option<Value>,
}

impl<F: Fn(u32) -> Option<SiteId>> StateSource for Source<'_, '_, '_, F> {
    type Error = DecodeError;

    fn len(&mut self, _: usize, _: &'static str) -> Result<usize, DecodeError> {
        self.d.count()
    }

    fn uint(&mut self) -> Result<u64, DecodeError> {
        self.d.uint()
    }

    fn site(&mut self) -> Result<SiteId, DecodeError> {
        let idx = self.d.u32()?;
        (self.site)(idx).ok_or_else(|| self.d.malformed(format!("unknown site index {idx}")))
    }

    fn text(&mut self) -> Result<String, DecodeError> {
        self.d.string()
    }

    fn stamp(&mut self) -> Result<Hlc, DecodeError> {
        let age = self.d.uint()?;
        match self.row_hlc.checked_sub(age) {
            Some(hlc) => Ok(Hlc(hlc)),
            None => Err(self.d.malformed(format!(
                "register age {age} exceeds the row timestamp {}",
                self.row_hlc
            ))),
        }
    }

    fn column_value(&mut self) -> Result<Value, DecodeError> {
        match self.value.take() {
            Some(value) => Ok(value),
            None => self.d.value(),
        }
    }
}
