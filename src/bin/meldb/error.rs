//! The command line's errors. Each prints as one line after `error: ` and
//! exits with status 1; meldb's own errors pass through unchanged, since they
//! already name the table, column, key or file.

use meldb::SchemaError;
use std::{
    io,
    path::{Path, PathBuf},
};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum CliError {
    // Boxed: meldb's errors are large, and every Result here carries them.
    #[error(transparent)]
    Meldb(Box<meldb::Error>),

    #[error(transparent)]
    Schema(Box<SchemaError>),

    /// A network sync, relay or server failure.
    #[error(transparent)]
    Sync(Box<meldb::sync::SyncError>),

    #[error("sqlite: {0}")]
    Sql(#[from] rusqlite::Error),

    /// A file that could not be read or written.
    #[error("{}: {source}", path.display())]
    File { path: PathBuf, source: io::Error },

    /// Writing to standard output failed (a closed pipe is not reported).
    #[error("cannot write output: {0}")]
    Output(#[from] io::Error),

    /// A meldb error while handling a given file (import).
    #[error("{}: {source}", path.display())]
    InFile {
        path: PathBuf,
        source: Box<meldb::Error>,
    },

    #[error("--token-env {var}: the variable is {problem}")]
    TokenEnv { var: String, problem: String },

    #[error("{origin} holds no token (it is empty)")]
    EmptyToken { origin: String },

    #[error("no schema file: give --schema SCHEMA.toml or set MELDB_SCHEMA")]
    NoSchema,

    /// The admin address could not be listened on.
    #[error("--admin {addr}: {error}")]
    Admin {
        addr: String,
        error: Box<meldb::sync::SyncError>,
    },

    #[error("the tokens file grants namespaces {names}, but --db serves one database for all of them; use --data-dir DIR to keep each namespace apart")]
    NamespacesNeedDataDir { names: String },

    #[error("{}: no token named {name:?} (nothing was changed)", file.display())]
    NoSuchToken {
        name: String,
        file: std::path::PathBuf,
    },

    #[error("--namespace {name:?}: a namespace is 1 to 64 lowercase letters, digits, '_' and '-', starting with a letter or digit")]
    BadNamespace { name: String },

    #[error("unknown outcome {name:?} (expected one of: {expected})")]
    BadOutcome { name: String, expected: String },

    #[error("namespace {name:?} has no database in {} ({} does not exist)", dir.display(), path.display())]
    NoNamespace {
        name: String,
        dir: PathBuf,
        path: PathBuf,
    },

    #[error(transparent)]
    Backup(Box<meldb::BackupError>),

    /// `meldb bench-relay` could not run, or its replicas did not converge.
    #[error("bench-relay: {0}")]
    Bench(String),

    #[error("no database at {} (create it with `meldb init`)", path.display())]
    NoDatabase { path: PathBuf },

    #[error("{}: already exists with site {existing}; --site-id only applies to a new database", path.display())]
    SiteIdMismatch { path: PathBuf, existing: String },

    #[error("expected COLUMN=VALUE, got {arg:?}")]
    NotAnAssignment { arg: String },

    #[error("table {table:?}, column {column:?}: cannot read {value:?} as {expected} ({hint})")]
    BadValue {
        table: String,
        column: String,
        value: String,
        expected: &'static str,
        hint: &'static str,
    },

    #[error("{}: not a version vector (write one with `meldb vv`): {source}", path.display())]
    BadVersionVector {
        path: PathBuf,
        source: serde_json::Error,
    },

    #[error("query runs reads only (SELECT, WITH, VALUES, EXPLAIN, read-only PRAGMA); write with insert, upsert, update, increment, set-add, set-remove or delete")]
    NotReadOnly,

    #[error("the replicas did not converge: {detail}")]
    NotConverged { detail: String },

    #[error("{}: demo databases exist already ({}); remove them or pick another --dir", dir.display(), file.display())]
    DemoDirInUse { dir: PathBuf, file: PathBuf },
}

impl From<meldb::Error> for CliError {
    fn from(e: meldb::Error) -> Self {
        CliError::Meldb(Box::new(e))
    }
}

impl From<meldb::OpenError> for CliError {
    fn from(e: meldb::OpenError) -> Self {
        CliError::Meldb(Box::new(e.into()))
    }
}

impl From<meldb::BackupError> for CliError {
    fn from(e: meldb::BackupError) -> Self {
        CliError::Backup(Box::new(e))
    }
}

impl From<meldb::sync::SyncError> for CliError {
    fn from(e: meldb::sync::SyncError) -> Self {
        CliError::Sync(Box::new(e))
    }
}

impl From<SchemaError> for CliError {
    fn from(e: SchemaError) -> Self {
        CliError::Schema(Box::new(e))
    }
}

/// Attaches a path to a meldb error.
pub fn in_file<E: Into<meldb::Error>>(path: &Path) -> impl FnOnce(E) -> CliError + '_ {
    move |source| CliError::InFile {
        path: path.to_owned(),
        source: Box::new(source.into()),
    }
}

pub type Result<T, E = CliError> = std::result::Result<T, E>;

/// Attaches a path to an I/O error.
pub fn file_error(path: &Path) -> impl FnOnce(io::Error) -> CliError + '_ {
    move |source| CliError::File {
        path: path.to_owned(),
        source,
    }
}

impl CliError {
    /// Whether the error is standard output closing early (`meldb ... | head`):
    /// not worth reporting, nothing went wrong with the data.
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, CliError::Output(e) if e.kind() == io::ErrorKind::BrokenPipe)
    }
}
