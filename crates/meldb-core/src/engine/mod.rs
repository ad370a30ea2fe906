//! The engine's decisions, as pure functions: what happens to one incoming
//! row, given its state, the local state, the schema and the resolvers'
//! answers.
//!
//! Invariant: nothing here runs SQL, touches a file or a socket, or keeps
//! state between calls. The store does everything with side effects (it
//! reads and writes rows, logs conflicts, writes corrections) and asks
//! these functions what to do, in this order:
//!
//! 1. [`admit`]: lay an incoming row out in local column order and check it
//!    against the schema ([`localize`]), then decide whether it may be
//!    applied now, must be held for clock skew, or shows that this replica
//!    lost history ([`admit()`]).
//! 2. The store writes the row or merges it with the local one
//!    (`merge::merge_row` classifies and merges).
//! 3. [`decide`]: whether the deciders see the row at all
//!    ([`decide::shows_deciders`]), then the schema's column policies
//!    ([`policy`]) and the application's resolvers in priority order
//!    ([`decide()`]), and what follows: whether the conflict is logged and
//!    whether a correcting write is due ([`decide::Decision`]).
//!
//! The functions take the table as a [`TableShape`] (its schema, value
//! columns and their kinds), never the store's layout.

pub mod admit;
pub mod decide;
pub mod policy;

pub use admit::{admit, column_mapping, localize, Admission, LostHistory, MappingError};
pub use decide::{decide, mode, Case, DecideError, Decision, Resolvers, Target};
pub use policy::{apply_policies, fresh_registers, PolicyNote};

use crate::schema::{Kind, Table};

/// A table as the decisions see it: the schema table in the store's column
/// order, and which of its columns a row state covers. The store's layout
/// lends one out; nothing here needs its SQL.
#[derive(Clone, Copy, Debug)]
pub struct TableShape<'a> {
    /// The table, columns in physical order.
    pub table: &'a Table,
    /// Indexes into `table.columns` of the value (non-key) columns: a row
    /// state's column `j` is column `value_cols[j]`.
    pub value_cols: &'a [usize],
    /// The kind of each value column.
    pub kinds: &'a [Kind],
}

impl TableShape<'_> {
    /// The table's name.
    pub fn name(&self) -> &str {
        &self.table.name
    }

    /// The value-column position (`j`) of the column named `name`.
    pub fn value_index(&self, name: &str) -> Option<usize> {
        self.value_cols
            .iter()
            .position(|&i| self.table.columns[i].name.eq_ignore_ascii_case(name))
    }
}

/// The message of a caught panic from application code (a resolver or a
/// mutator).
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}
