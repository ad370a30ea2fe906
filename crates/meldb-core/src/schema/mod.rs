//! App schemas: which tables exist, their primary keys, and how each column
//! merges.
//!
//! Schemas are written as TOML files in `schema/` ([`Schema::load`],
//! [`Schema::from_toml_str`]); every mistake is a [`SchemaError`] that names
//! the file, the table and the column. [`Schema::fingerprint`] identifies a
//! schema; [`Schema::check_upgrade`] decides whether a database created with
//! one schema may be opened with another (tables, and columns that are
//! nullable, defaulted, counters or sets, may be added; nothing may be
//! removed or changed, except row-level rules, which judge new writes
//! only). Tables with an authority may declare row-level rules
//! ([`RowRules`], [`ColumnRules`]: frozen rows, delete rules, transitions,
//! authority-owned columns, uniqueness), which the engine enforces.

mod error;
mod parse;
mod rules;
mod upgrade;

pub use error::SchemaError;
pub use rules::{ColumnRules, DeleteRule, RowRules};
pub use upgrade::Upgrade;

pub use crate::crdt::Kind;
use crate::crdt::{RegisterRule, StateOrder};
pub use crate::value::SqlType;
use crate::value::Value;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// What an `lww` column adds to last-writer-wins (schema `policy = ...`).
/// Each is enforced on local writes, in the merge and, on conflicts, by the
/// same mechanism as application resolvers (see `meldb::resolve`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Policy {
    /// Plain last-writer-wins.
    #[default]
    LastWriteWins,
    /// The first non-NULL value written stays: later local writes are
    /// refused, and of concurrent first writes the earliest wins.
    FirstWriteWins,
    /// Once non-NULL the value never changes: local writes are refused, an
    /// authority rejects incoming changes to it, and without an authority
    /// concurrent first writes resolve as first-write-wins.
    Immutable,
    /// On a conflict, the authority's current value stays (needs a table
    /// with an authority).
    AuthorityWins,
    /// A write is rejected by the authority when the row changed since the
    /// version its writer saw (HTTP's 409; needs a table with an authority).
    /// The refusal covers the writer's whole change to the row: every
    /// column keeps the authority's value.
    Conditional,
    /// As [`Policy::Conditional`], but the refusal covers this column only:
    /// the writer's other columns still merge.
    ConditionalColumn,
    /// A state column: values are declared states that move only forward
    /// and never leave absorbing states; merges keep the later state.
    Forward(StateOrder),
}

impl Policy {
    /// The name used in schema files.
    pub fn name(&self) -> &'static str {
        match self {
            Policy::LastWriteWins => "last_write_wins",
            Policy::FirstWriteWins => "first_write_wins",
            Policy::Immutable => "immutable",
            Policy::AuthorityWins => "authority_wins",
            Policy::Conditional => "conditional",
            Policy::ConditionalColumn => "conditional_column",
            Policy::Forward(_) => "forward",
        }
    }

    /// How the register merges under this policy.
    pub fn register_rule(&self) -> RegisterRule {
        match self {
            Policy::FirstWriteWins | Policy::Immutable => RegisterRule::Earliest,
            Policy::Forward(order) => RegisterRule::Ranked(Arc::new(order.clone())),
            _ => RegisterRule::Latest,
        }
    }

    /// Whether a local write may replace `from` with `to`; if not, why.
    pub fn check_write(&self, from: &Value, to: &Value) -> Result<(), String> {
        match self {
            Policy::FirstWriteWins | Policy::Immutable if *from != Value::Null && from != to => {
                Err(format!("it already holds {from} and is {}", self.name()))
            }
            Policy::Forward(order) => order.check_move(from, to),
            _ => Ok(()),
        }
    }
}

/// Which row a table shows while one of its conflicts waits for a person
/// (a resolver answered `Defer`): schema `deferred_shows = "local"`,
/// `"incoming"` or `"merged"` on the table. See [`Table::shown_while_deferred`].
///
/// Only `Merged` converges without an authority: replicas that each found
/// the conflict would each show their own side and correct each other,
/// so schema validation refuses the other two on a table without one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeferredShows {
    /// The row as it stood on the deciding replica before the conflicting
    /// change arrived (nothing unreviewed becomes visible).
    Local,
    /// The incoming change's row, as its writer sent it.
    Incoming,
    /// What the merge (after the column policies) made of both.
    Merged,
}

impl DeferredShows {
    /// Every choice, in the order schema errors list them.
    pub const ALL: [DeferredShows; 3] = [
        DeferredShows::Local,
        DeferredShows::Incoming,
        DeferredShows::Merged,
    ];

    /// The name used in schema files (and by `meldb conflicts resolve --keep`).
    pub fn name(self) -> &'static str {
        match self {
            DeferredShows::Local => "local",
            DeferredShows::Incoming => "incoming",
            DeferredShows::Merged => "merged",
        }
    }

    /// The choice named `name` (case-insensitive).
    pub fn from_name(name: &str) -> Option<DeferredShows> {
        DeferredShows::ALL
            .into_iter()
            .find(|d| d.name().eq_ignore_ascii_case(name))
    }
}

impl std::fmt::Display for DeferredShows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One column.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Column {
    /// Its SQL name.
    pub name: String,
    /// Its SQL type.
    pub sql_type: SqlType,
    /// How it merges.
    pub kind: Kind,
    /// Whether NULL is allowed (always false for counters, sets and keys).
    pub nullable: bool,
    /// The value a row gets when an insert leaves the column out.
    pub default: Option<Value>,
    /// What the column adds to its kind's merge.
    #[serde(default)]
    pub policy: Policy,
    /// Row-level rules on this column (`transitions`, `owner`); empty for
    /// most columns, and then not stored.
    #[serde(default, skip_serializing_if = "ColumnRules::is_empty")]
    pub rules: ColumnRules,
}

/// One table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Table {
    /// Its SQL name (the name users query).
    pub name: String,
    /// All columns in declaration order, primary-key columns included.
    pub columns: Vec<Column>,
    /// Indexes into `columns` of the primary-key columns, in key order.
    pub primary_key: Vec<usize>,
    /// Whether one replica (the authority) decides conflicts for this
    /// table; see `meldb::resolve`.
    #[serde(default)]
    pub authority: bool,
    /// What the table shows while a conflict waits for a person, if the
    /// schema says (`deferred_shows = ...`); `None`: the default of
    /// [`Table::shown_while_deferred`]. Not serialized when `None`, so the
    /// stored schema of a table that does not say stays as it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deferred_shows: Option<DeferredShows>,
    /// Row-level rules (`frozen_when_final`, `delete`, `[[table.unique]]`);
    /// empty for most tables, and then not stored.
    #[serde(default, skip_serializing_if = "RowRules::is_empty")]
    pub rules: RowRules,
}

impl Table {
    /// Which row stays visible while one of this table's conflicts is
    /// deferred: what the schema says, else the local row on a table with
    /// an authority (nothing unreviewed is shown) and the merged row
    /// without one (the only choice replicas agree on).
    pub fn shown_while_deferred(&self) -> DeferredShows {
        self.deferred_shows.unwrap_or(if self.authority {
            DeferredShows::Local
        } else {
            DeferredShows::Merged
        })
    }

    /// The column named `name`, with its index.
    pub fn column(&self, name: &str) -> Option<(usize, &Column)> {
        self.columns
            .iter()
            .enumerate()
            .find(|(_, c)| c.name.eq_ignore_ascii_case(name))
    }

    /// Whether column `index` is part of the primary key.
    pub fn is_key(&self, index: usize) -> bool {
        self.primary_key.contains(&index)
    }

    /// Whether the table declares any row-level rule (its own or a
    /// column's): an authority then judges every change to it.
    pub fn has_row_rules(&self) -> bool {
        !self.rules.is_empty() || self.columns.iter().any(|c| !c.rules.is_empty())
    }

    /// Indexes of the columns that are not part of the primary key, in
    /// declaration order: the columns a row's CRDT state covers.
    pub fn value_columns(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.columns.len()).filter(|i| !self.is_key(*i))
    }
}

/// A whole app schema.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Schema {
    /// The schema's name (`name = "..."` in the file).
    pub name: String,
    /// The schema's version (`version = N` in the file).
    pub version: u32,
    /// Tables in declaration order.
    pub tables: Vec<Table>,
}

impl Schema {
    /// The table named `name`.
    pub fn table(&self, name: &str) -> Option<&Table> {
        self.tables
            .iter()
            .find(|t| t.name.eq_ignore_ascii_case(name))
    }

    /// A blake3 hash of the schema's canonical form: equal for schemas that
    /// declare the same tables and columns the same way.
    pub fn fingerprint(&self) -> [u8; 32] {
        let mut hasher = blake3::Hasher::new();
        hasher.update(self.name.as_bytes());
        hasher.update(&[0]);
        hasher.update(&self.version.to_le_bytes());
        for table in &self.tables {
            hasher.update(b"T");
            hasher.update(table.name.as_bytes());
            hasher.update(&[0]);
            for c in &table.columns {
                hasher.update(b"C");
                hasher.update(c.name.as_bytes());
                hasher.update(&[0]);
                hasher.update(c.sql_type.sql().as_bytes());
                hasher.update(c.kind.name().as_bytes());
                hasher.update(&[u8::from(c.nullable)]);
                hasher.update(format!("{:?}", c.default).as_bytes());
                if c.policy != Policy::LastWriteWins {
                    hasher.update(format!("P{:?}", c.policy).as_bytes());
                }
                // Hashed only when set, so schemas without rules keep
                // their fingerprints.
                if !c.rules.is_empty() {
                    hasher.update(format!("R{:?}", c.rules).as_bytes());
                }
            }
            if !table.rules.is_empty() {
                hasher.update(format!("RR{:?}", table.rules).as_bytes());
            }
            if table.authority {
                hasher.update(b"A");
            }
            // Hashed only when said, so schemas written before the key
            // existed keep their fingerprint.
            if let Some(shows) = table.deferred_shows {
                hasher.update(b"D");
                hasher.update(shows.name().as_bytes());
                hasher.update(&[0]);
            }
            for &k in &table.primary_key {
                hasher.update(&(k as u64).to_le_bytes());
            }
        }
        *hasher.finalize().as_bytes()
    }
}
