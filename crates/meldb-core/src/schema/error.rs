//! Errors in schema files and schema upgrades. Every variant names the file
//! (or the database, for upgrades), and the table and column where it applies.

use thiserror::Error;

/// A mistake in a schema file, or a schema that cannot replace the one a
/// database was created with.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum SchemaError {
    /// A column's `policy` (or its `order` / `absorbing`) is invalid.
    #[error("{file}: table {table:?}, column {column:?}: {problem}")]
    BadPolicy {
        /// The schema file.
        file: String,
        /// The table.
        table: String,
        /// The column.
        column: String,
        /// What is wrong.
        problem: String,
    },
    /// A table's `deferred_shows` is unknown, or needs an authority the
    /// table does not have.
    #[error("{file}: table {table:?}: deferred_shows: {problem}")]
    BadDeferredShows {
        /// The schema file.
        file: String,
        /// The table.
        table: String,
        /// What is wrong.
        problem: String,
    },
    /// A row-level rule (`frozen_when_final`, `delete`, `delete_roles`,
    /// `[[table.unique]]`, `transitions`, `owner`) is invalid.
    #[error("{file}: {place}: {problem}")]
    BadRule {
        /// The schema file.
        file: String,
        /// `table "t"` or `table "t", column "c"`.
        place: String,
        /// What is wrong.
        problem: String,
    },
    /// The file could not be read.
    #[error("{file}: cannot read schema file: {source}")]
    Io {
        /// The schema file.
        file: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has an unexpected shape.
    #[error("{file}: {message}")]
    Syntax {
        /// The schema file.
        file: String,
        /// What the TOML parser said, with line and column.
        message: String,
    },
    /// The schema's version is not an integer from 1 to 2^32 - 1.
    #[error("{file}: version {version} is invalid (use an integer from 1 to 4294967295)")]
    InvalidVersion {
        /// The schema file.
        file: String,
        /// The version as written.
        version: i64,
    },
    /// The schema declares no table.
    #[error("{file}: the schema declares no table")]
    NoTables {
        /// The schema file.
        file: String,
    },
    /// A table or column name is not a plain identifier.
    #[error("{file}: {place}: invalid name {name:?} (use letters, digits and '_', not starting with a digit, at most 64 characters)")]
    InvalidName {
        /// The schema file.
        file: String,
        /// `table "t"` or `table "t", column "c"`.
        place: String,
        /// The offending name.
        name: String,
    },
    /// A name meldb keeps for itself.
    #[error("{file}: {place}: the name {name:?} is reserved ({why})")]
    ReservedName {
        /// The schema file.
        file: String,
        /// `table "t"` or `table "t", column "c"`.
        place: String,
        /// The offending name.
        name: String,
        /// Why it is reserved.
        why: &'static str,
    },
    /// Two tables share a name.
    #[error("{file}: table {table:?} is declared twice")]
    DuplicateTable {
        /// The schema file.
        file: String,
        /// The table.
        table: String,
    },
    /// Two columns of one table share a name.
    #[error("{file}: table {table:?}, column {column:?} is declared twice")]
    DuplicateColumn {
        /// The schema file.
        file: String,
        /// The table.
        table: String,
        /// The column.
        column: String,
    },
    /// A table without a primary key.
    #[error("{file}: table {table:?} has no primary key (add primary_key = [\"column\", ...])")]
    MissingPrimaryKey {
        /// The schema file.
        file: String,
        /// The table.
        table: String,
    },
    /// The primary key names a column the table does not declare.
    #[error("{file}: table {table:?}: primary key column {column:?} is not declared")]
    UnknownKeyColumn {
        /// The schema file.
        file: String,
        /// The table.
        table: String,
        /// The column.
        column: String,
    },
    /// A primary-key column that cannot be one.
    #[error("{file}: table {table:?}, column {column:?}: a primary-key column {problem}")]
    BadKeyColumn {
        /// The schema file.
        file: String,
        /// The table.
        table: String,
        /// The column.
        column: String,
        /// What is wrong.
        problem: String,
    },
    /// An unknown column kind.
    #[error("{file}: table {table:?}, column {column:?}: unknown kind {kind:?} (expected lww, g_counter, pn_counter or or_set)")]
    UnknownKind {
        /// The schema file.
        file: String,
        /// The table.
        table: String,
        /// The column.
        column: String,
        /// What the file said.
        kind: String,
    },
    /// An unknown SQL type.
    #[error("{file}: table {table:?}, column {column:?}: unknown type {sql_type:?} (expected integer, real, text or blob)")]
    UnknownType {
        /// The schema file.
        file: String,
        /// The table.
        table: String,
        /// The column.
        column: String,
        /// What the file said.
        sql_type: String,
    },
    /// A kind declared with a type it cannot have (a counter as TEXT, a set
    /// as INTEGER), or with an option it does not take.
    #[error("{file}: table {table:?}, column {column:?}: {problem}")]
    KindMismatch {
        /// The schema file.
        file: String,
        /// The table.
        table: String,
        /// The column.
        column: String,
        /// What is wrong, e.g. "a g_counter must be integer, not text".
        problem: String,
    },
    /// A default value of the wrong type.
    #[error(
        "{file}: table {table:?}, column {column:?}: default {value} is not a {sql_type} value"
    )]
    BadDefault {
        /// The schema file.
        file: String,
        /// The table.
        table: String,
        /// The column.
        column: String,
        /// The default as written.
        value: String,
        /// The column's type.
        sql_type: String,
    },
    /// The schema cannot replace the one the database was created with.
    #[error("{database}: schema {new_schema:?} is incompatible with the stored schema {stored_schema:?}: {reason}")]
    Incompatible {
        /// The database file (or ":memory:").
        database: String,
        /// The stored schema's name and version.
        stored_schema: String,
        /// The new schema's name and version.
        new_schema: String,
        /// What changed, naming the table and column.
        reason: String,
    },
}
