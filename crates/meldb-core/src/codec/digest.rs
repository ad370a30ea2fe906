//! The bytes `Store::digest` hashes for each row, version 1.
//!
//! Two replicas with equal states must produce equal bytes, so only the
//! canonical state goes in (no site indices, no rowids) and columns are
//! ordered by name by the caller:
//!
//! ```text
//! row    = key:seq<value>  cl:uint  clock:seq<(site, seq:uint)>  hlc:uint
//!          writer:site  columns:seq<(name:str, option<state>)>
//! state  = kind tag, then the kind's fields as `column` lists them, with
//!          sites whole and a register's timestamp whole:
//!          0 lww  hlc:uint site value
//!        | 1 g_counter  seq<(site, total:uint)>
//!        | 2 pn_counter seq<(site, p:uint, n:uint)>
//!        | 3 or_set     seq<(element:str, tags:seq<(site, seq:uint)>)>
//! ```
//!
//! Changing this layout changes every digest: it is versioned with the
//! database format, and a change needs a new format version.

use super::bin::Enc;
use crate::clock::{Hlc, SiteId};
use crate::crdt::{ColumnState, StateSink};
use crate::merge::RowState;
use crate::value::Value;

/// The digest input of one row; `columns` are `(name, state)` in name order.
pub fn digest_row<'a>(
    key: &[Value],
    state: &RowState,
    columns: &[(&'a str, Option<&'a ColumnState>)],
) -> Vec<u8> {
    let mut e = Enc::new();
    e.values(key);
    e.uint(state.cl);
    e.seq(state.clock.entries(), |e, &(site, seq)| {
        e.site(site);
        e.uint(seq);
    });
    e.uint(state.hlc.0);
    e.site(state.writer);
    e.seq(columns, |e, &(name, column)| {
        e.str(name);
        e.option(column, column_state);
    });
    e.into_bytes()
}

fn column_state(e: &mut Enc, state: &ColumnState) {
    e.u8(state.kind().tag());
    state.encode(&mut Canonical(e));
}

/// A state's fields with nothing replica-local in them: sites as their 16
/// bytes, a register's timestamp whole.
struct Canonical<'e>(&'e mut Enc);

impl StateSink for Canonical<'_> {
    fn len(&mut self, n: usize) {
        self.0.len(n);
    }

    fn uint(&mut self, n: u64) {
        self.0.uint(n);
    }

    fn site(&mut self, site: SiteId) {
        self.0.site(site);
    }

    fn text(&mut self, s: &str) {
        self.0.str(s);
    }

    fn stamp(&mut self, hlc: Hlc) {
        self.0.uint(hlc.0);
    }

    fn column_value(&mut self, value: &Value) {
        self.0.value(value);
    }
}
