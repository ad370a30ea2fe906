//! The column kinds' states and their merge rules, for code that works on
//! CRDT states themselves: a custom codec, a test of the laws, a tool that
//! reads a [`Changeset`](crate::Changeset)'s rows. Applications that only
//! read and write rows need none of it.
//!
//! Every state here merges commutatively, associatively and idempotently;
//! [`merge_crdt_columns`] joins two states of one row column by column.

pub use meldb_core::crdt::{
    merge_optional, Causality, ColumnKind, ColumnState, Dot, GCounter, Kind, Lww, Op, OpError,
    OrSet, PnCounter, RegisterRule, RowClock, Stamp, StateOrder, StateSink, StateSource,
};
pub use meldb_core::merge::{merge_crdt_columns, merge_row, RowState};
