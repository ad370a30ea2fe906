//! The bytes `Store::digest` hashes for each row, version 1.
//!
//! Two replicas with equal states must produce equal bytes, so only the
//! canonical state goes in (no site indices, no rowids) and columns are
//! ordered by name by the caller:
//!
//! ```text
//! row    = key:seq<value>  cl:uint  clock:seq<(site, seq:uint)>  hlc:uint
//!          writer:site  columns:seq<(name:str, option<state>)>
//! state  = 0 lww  hlc:uint site value
//!        | 1 g_counter  seq<(site, total:uint)>
//!        | 2 pn_counter seq<(site, p:uint, n:uint)>
//!        | 3 or_set     seq<(element:str, tags:seq<(site, seq:uint)>)>
//! ```
//!
//! Changing this layout changes every digest: it is versioned with the
//! database format, and a change needs a new format version.

use super::bin::Enc;
use crate::crdt::ColumnState;
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
    match state {
        ColumnState::Lww(l) => {
            e.u8(0);
            e.uint(l.hlc.0);
            e.site(l.site);
            e.value(&l.value);
        }
        ColumnState::GCounter(c) => {
            e.u8(1);
            e.seq(c.entries(), |e, &(site, n)| {
                e.site(site);
                e.uint(n);
            });
        }
        ColumnState::PnCounter(c) => {
            e.u8(2);
            e.seq(c.entries(), |e, &(site, p, n)| {
                e.site(site);
                e.uint(p);
                e.uint(n);
            });
        }
        ColumnState::OrSet(set) => {
            e.u8(3);
            e.seq(set.entries(), |e, (elem, tags)| {
                e.str(elem);
                e.seq(tags, |e, dot| {
                    e.site(dot.site);
                    e.uint(dot.seq);
                });
            });
        }
    }
}
