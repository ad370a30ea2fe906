//! App schemas: which tables exist, their primary keys, and how each column
//! merges.
//!
//! Schemas are written as TOML files in `schema/` ([`Schema::load`],
//! [`Schema::from_toml_str`]); every mistake is a [`SchemaError`] that names
//! the file, the table and the column. [`Schema::fingerprint`] identifies a
//! schema; [`Schema::check_upgrade`] decides whether a database created with
//! one schema may be opened with another (tables, and columns that are
//! nullable, defaulted, counters or sets, may be added; nothing may be
//! removed or changed).

mod error;
mod parse;
mod upgrade;

pub use error::SchemaError;
pub use upgrade::Upgrade;

use crate::value::Value;
use serde::{Deserialize, Serialize};
use std::fmt;

/// How a column merges concurrent writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Kind {
    /// Last writer wins (the default).
    Lww,
    /// Grow-only counter: increments only.
    GCounter,
    /// Counter with increments and decrements.
    PnCounter,
    /// Observed-remove set of strings, add wins.
    OrSet,
}

impl Kind {
    /// The name used in schema files.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Lww => "lww",
            Kind::GCounter => "g_counter",
            Kind::PnCounter => "pn_counter",
            Kind::OrSet => "or_set",
        }
    }

    /// Parses a schema-file name.
    pub fn from_name(name: &str) -> Option<Kind> {
        [Kind::Lww, Kind::GCounter, Kind::PnCounter, Kind::OrSet]
            .into_iter()
            .find(|k| k.name() == name)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A column's SQL type (SQLite STRICT types).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SqlType {
    /// 64-bit signed integer.
    Integer,
    /// 64-bit float.
    Real,
    /// UTF-8 text.
    Text,
    /// Bytes.
    Blob,
}

impl SqlType {
    /// The SQL spelling.
    pub fn sql(self) -> &'static str {
        match self {
            SqlType::Integer => "INTEGER",
            SqlType::Real => "REAL",
            SqlType::Text => "TEXT",
            SqlType::Blob => "BLOB",
        }
    }

    /// Parses a schema-file name (case-insensitive).
    pub fn from_name(name: &str) -> Option<SqlType> {
        match name.to_ascii_lowercase().as_str() {
            "integer" | "int" => Some(SqlType::Integer),
            "real" | "float" => Some(SqlType::Real),
            "text" => Some(SqlType::Text),
            "blob" => Some(SqlType::Blob),
            _ => None,
        }
    }

    /// Whether a non-NULL value belongs to this type.
    pub fn admits(self, value: &Value) -> bool {
        matches!(
            (self, value),
            (SqlType::Integer, Value::Integer(_))
                | (SqlType::Real, Value::Real(_))
                | (SqlType::Text, Value::Text(_))
                | (SqlType::Blob, Value::Blob(_))
        )
    }
}

impl fmt::Display for SqlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.sql().to_ascii_lowercase())
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
}

impl Table {
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
            }
            for &k in &table.primary_key {
                hasher.update(&(k as u64).to_le_bytes());
            }
        }
        *hasher.finalize().as_bytes()
    }
}
