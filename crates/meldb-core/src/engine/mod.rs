//! The engine's decisions, as pure functions: what happens to one incoming
//! row, given its state, the local state, the schema and the resolvers'
//! answers.
//!
//! Invariant: nothing here runs SQL, touches a file or a socket, or keeps
//! state between calls. The store does everything with side effects (it
//! reads and writes rows, logs conflicts, writes corrections) and asks
//! these functions what to do, in this order:
//!
//! 1. [`admit`](mod@admit): lay an incoming row out in local column order and check it
//!    against the schema ([`localize`]), then decide whether it may be
//!    applied now, must be held for clock skew, or shows that this replica
//!    lost history ([`admit()`]).
//! 2. The store writes the row or merges it with the local one
//!    (`merge::merge_row` classifies and merges).
//! 3. [`decide`](mod@decide): whether the deciders see the row at all
//!    ([`decide::shows_deciders`]), then the schema's column policies
//!    ([`policy`]), the row-level rules ([`rules`]) and the application's
//!    resolvers in priority order
//!    ([`decide()`]), and what follows: whether the conflict is logged and
//!    whether a correcting write is due ([`decide::Decision`]); a deferred
//!    decision shows the row the table's `deferred_shows` names
//!    ([`defer`]).
//!
//! The functions take the table as a [`TableShape`] (its schema, value
//! columns and their kinds), never the store's layout.

pub mod admit;
pub mod decide;
pub mod defer;
pub mod policy;
pub mod rules;

pub use admit::{admit, column_mapping, localize, Admission, LostHistory, MappingError};
pub use decide::{decide, mode, Case, DecideError, Decision, Resolvers, Target};
pub use policy::{apply_policies, fresh_registers, PolicyNote};
pub use rules::{apply_rules, check_local_write, Violation};

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

/// Helpers the engine's tests share: a schema table with its shape, row
/// states and rows.
#[cfg(test)]
pub(crate) mod tests {
    use super::TableShape;
    use crate::clock::Hlc;
    use crate::crdt::strategies::site;
    use crate::crdt::{ColumnState, Lww, RowClock};
    use crate::merge::RowState;
    use crate::resolve::Row;
    use crate::schema::{Kind, Schema, Table};
    use crate::value::Value;

    /// A table with `authority = true`: `id` (key), then `title`
    /// (`authority_wins`), `serial` (`immutable`), `note` (`conditional`).
    pub const GUARDED: &str = r#"
name = "t"
version = 1
[[table]]
name = "doc"
primary_key = ["id"]
authority = true
[[table.column]]
name = "id"
type = "text"
[[table.column]]
name = "title"
type = "text"
policy = "authority_wins"
[[table.column]]
name = "serial"
type = "text"
policy = "immutable"
[[table.column]]
name = "note"
type = "text"
policy = "conditional"
"#;

    /// The same columns without policies or an authority.
    pub const PLAIN: &str = r#"
name = "t"
version = 1
[[table]]
name = "doc"
primary_key = ["id"]
[[table.column]]
name = "id"
type = "text"
[[table.column]]
name = "title"
type = "text"
[[table.column]]
name = "serial"
type = "text"
[[table.column]]
name = "note"
type = "text"
"#;

    /// A schema table and what a [`TableShape`] borrows of it.
    pub struct Parts {
        pub table: Table,
        pub value_cols: Vec<usize>,
        pub kinds: Vec<Kind>,
    }

    impl Parts {
        pub fn shape(&self) -> TableShape<'_> {
            TableShape {
                table: &self.table,
                value_cols: &self.value_cols,
                kinds: &self.kinds,
            }
        }
    }

    /// The first table of a schema file's text.
    pub fn parts(toml: &str) -> Parts {
        let schema = match Schema::from_toml_str(toml, "test.toml") {
            Ok(schema) => schema,
            Err(e) => panic!("test schema: {e}"),
        };
        let Some(table) = schema.tables.into_iter().next() else {
            panic!("test schema has no table");
        };
        let value_cols: Vec<usize> = table.value_columns().collect();
        let kinds = value_cols.iter().map(|&i| table.columns[i].kind).collect();
        Parts {
            table,
            value_cols,
            kinds,
        }
    }

    /// A register written by `writer` at `hlc`.
    pub fn lww(value: &str, hlc: u64, writer: u8) -> Option<ColumnState> {
        Some(ColumnState::Lww(Lww {
            hlc: Hlc(hlc),
            site: site(writer),
            value: value.into(),
        }))
    }

    /// A live state that has seen `clock`, last written by `writer` at `hlc`.
    pub fn state(
        clock: &[(u8, u64)],
        hlc: u64,
        writer: u8,
        columns: Vec<Option<ColumnState>>,
    ) -> RowState {
        RowState {
            cl: 1,
            clock: RowClock::from_entries(clock.iter().map(|&(s, n)| (site(s), n))),
            hlc: Hlc(hlc),
            writer: site(writer),
            columns,
            meta: None,
        }
    }

    /// A row from `(column, text)` pairs.
    pub fn row(columns: &[(&str, &str)]) -> Row {
        Row::new(
            columns
                .iter()
                .map(|&(c, v)| (c.to_owned(), Value::from(v)))
                .collect(),
        )
    }

    #[test]
    fn a_shape_finds_value_columns_by_name_in_any_case() {
        let parts = parts(PLAIN);
        let shape = parts.shape();
        assert_eq!(shape.name(), "doc");
        assert_eq!(shape.value_index("NOTE"), Some(2));
        assert_eq!(shape.value_index("id"), None);
    }

    #[test]
    fn panic_messages_are_read_from_str_and_string_payloads() {
        let message = |f: fn()| match std::panic::catch_unwind(f) {
            Ok(()) => panic!("no panic"),
            Err(payload) => super::panic_message(payload.as_ref()),
        };
        assert_eq!(message(|| panic!("plain")), "plain");
        assert_eq!(message(|| panic!("formatted {}", 1)), "formatted 1");
        assert_eq!(
            message(|| std::panic::panic_any(7)),
            "a panic without a message"
        );
    }
}
