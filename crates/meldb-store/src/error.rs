//! The crate's errors: one enum per layer, joined in [`Error`](enum@Error).
//!
//! [`OpenError`]: a database that cannot be opened (not meldb's, a format
//! this build does not read, a failed upgrade, a schema that does not
//! fit). [`WriteError`]: a local write the schema does not allow (nothing was
//! changed). [`ApplyError`]: a changeset that cannot be merged (nothing of it
//! was applied). [`StorageError`]: SQLite failed, or the database's own
//! metadata is corrupt. [`ResolveError`]: a resolver failed or decided
//! something that cannot be carried out (the apply changed nothing).
//! [`BackupError`]: a backup that was not made (nothing under its name).
//! Schema and decoding errors live with their modules.

use crate::clock::SiteId;
use crate::schema::{Kind, SchemaError, SqlType};
use crate::value::Key;
use meldb_core::codec::DecodeError;
use thiserror::Error;

/// Any meldb error.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// A database that could not be opened (boxed: its payload is the
    /// largest, and every `Result` would carry its size).
    #[error(transparent)]
    Open(Box<OpenError>),
    /// A schema file or schema upgrade problem.
    #[error(transparent)]
    Schema(#[from] SchemaError),
    /// A local write that the schema does not allow.
    #[error(transparent)]
    Write(#[from] WriteError),
    /// A changeset that cannot be applied.
    #[error(transparent)]
    Apply(#[from] ApplyError),
    /// Bytes that are not a valid frame.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// SQLite or the stored metadata failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A resolver failed, or its decision cannot be carried out.
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    /// A mutator could not run, or failed.
    #[error(transparent)]
    Mutation(#[from] MutationError),
    /// A backup that was not made (boxed, as `Open`).
    #[error(transparent)]
    Backup(Box<BackupError>),
    /// A row read as a type it does not fit (`get_as`, `query_as`).
    #[error(transparent)]
    Typed(#[from] crate::typed::TypedError),
}

/// A mutation that did not happen; nothing of it was written or queued.
#[derive(Debug, Error, PartialEq)]
#[non_exhaustive]
pub enum MutationError {
    /// No mutator is registered under this name.
    #[error("no mutator named {name:?} is registered")]
    UnknownMutator {
        /// The name called.
        name: String,
    },
    /// The arguments could not be encoded as JSON.
    #[error("mutator {name:?}: arguments cannot be encoded: {problem}")]
    BadArguments {
        /// The mutator.
        name: String,
        /// What serde said.
        problem: String,
    },
    /// The mutator returned an error (or panicked).
    #[error("mutator {name:?} failed: {error}")]
    Failed {
        /// The mutator.
        name: String,
        /// Its error.
        error: String,
    },
}

/// A conflict that could not be resolved; the apply (or the call) changed
/// nothing.
#[derive(Debug, Error, PartialEq)]
#[non_exhaustive]
pub enum ResolveError {
    /// A resolver panicked.
    #[error("resolver {resolver:?} panicked on table {table:?}, key {key}: {message}")]
    Panicked {
        /// The resolver.
        resolver: String,
        /// The table.
        table: String,
        /// The row's key.
        key: Key,
        /// The panic message.
        message: String,
    },
    /// A resolver (or a deferred decision) gave a row the table cannot hold.
    #[error("{resolver} gave an invalid row for table {table:?}, key {key}: {problem}")]
    InvalidRow {
        /// The resolver, or "resolve_deferred".
        resolver: String,
        /// The table.
        table: String,
        /// The row's key.
        key: Key,
        /// What is wrong.
        problem: String,
    },
    /// A leaderless resolver tried to keep one side or reject, which only an
    /// authority may do: replicas would disagree on which side is local.
    #[error(
        "resolver {resolver:?} answered {answer} for table {table:?}, key {key}, but the table \
         has no authority; without one every replica must reach the same row, so use Merge \
         with a deterministic row, or declare the table with `authority = true`"
    )]
    NeedsAuthority {
        /// The resolver.
        resolver: String,
        /// The table.
        table: String,
        /// The row's key.
        key: Key,
        /// What it answered.
        answer: &'static str,
    },
    /// A leaderless resolution would change a counter: every replica would
    /// apply its own correction and they would add up.
    #[error("table {table:?}, key {key}: {problem}")]
    NotConvergent {
        /// The table.
        table: String,
        /// The row's key.
        key: Key,
        /// What would diverge.
        problem: String,
    },
    /// A resolver's query could write.
    #[error("a resolver of table {table:?} ran a statement that could write: {sql}")]
    NotReadOnly {
        /// The table whose resolver ran it.
        table: String,
        /// The statement.
        sql: String,
    },
    /// A row-level rule could not read what it needs at the authority
    /// (the other rows of a unique set).
    #[error("table {table:?}, key {key}: {rule} could not read the table: {message}")]
    RuleRead {
        /// The table.
        table: String,
        /// The row's key.
        key: Key,
        /// The rule (`rule unique (user, day)`).
        rule: String,
        /// What the read failed with.
        message: String,
    },
    /// A stamp (see `Store::add_stamp`) set a column the authority does
    /// not own, or panicked.
    #[error("stamp {stamp:?} on table {table:?}: {problem}")]
    Stamp {
        /// The stamp's name.
        stamp: String,
        /// The table.
        table: String,
        /// What went wrong, with the row's key when one was being stamped.
        problem: String,
    },
    /// No conflict-log entry has this id.
    #[error("no conflict with id {id} in the conflict log")]
    UnknownConflict {
        /// The id asked for.
        id: i64,
    },
    /// The conflict is not waiting for a decision.
    #[error("conflict {id} is not waiting for a decision (its outcome is {outcome})")]
    NotDeferred {
        /// The id asked for.
        id: i64,
        /// Its outcome.
        outcome: String,
    },
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        Error::Storage(StorageError::Sqlite(e))
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A local write rejected before anything changed.
#[derive(Debug, Error, PartialEq)]
#[non_exhaustive]
pub enum WriteError {
    /// The column's policy forbids this write.
    #[error("table {table:?}, column {column:?}: cannot write {value}: {problem}")]
    Policy {
        /// The table.
        table: String,
        /// The column.
        column: String,
        /// The value refused.
        value: String,
        /// Why.
        problem: String,
    },
    /// The row is frozen: its state column holds a final state
    /// (`frozen_when_final`), so no column changes and it is not deleted.
    #[error("table {table:?}, key {key}: the row is frozen: column {column:?} is {state}, a final state")]
    Frozen {
        /// The table.
        table: String,
        /// The row's key.
        key: Key,
        /// The state column.
        column: String,
        /// Its final state.
        state: String,
    },
    /// The table's rows may not be deleted (`delete = "never"`), or only by
    /// a writer with a role this replica's writer lacks (`delete_roles`;
    /// see `Store::set_writer`).
    #[error("table {table:?}, key {key}: cannot delete: {problem}")]
    DeleteRefused {
        /// The table.
        table: String,
        /// The row's key.
        key: Key,
        /// Which rule, and the roles that may.
        problem: String,
    },
    /// A state move that is not a declared transition.
    #[error("table {table:?}, key {key}, column {column:?}: {problem}")]
    Transition {
        /// The table.
        table: String,
        /// The row's key.
        key: Key,
        /// The state column.
        column: String,
        /// The move refused and the moves allowed from its state
        /// ("cannot move from \"pending\" to \"shipped\" ...").
        problem: String,
    },
    /// A client wrote a column only the authority writes
    /// (`owner = "authority"`).
    #[error("table {table:?}, column {column:?} is written by the authority only; leave it out (the authority stamps it)")]
    AuthorityOwned {
        /// The table.
        table: String,
        /// The column.
        column: String,
    },
    /// No such table in the schema.
    #[error("unknown table {table:?}")]
    UnknownTable {
        /// The table named.
        table: String,
    },
    /// No such column in the table.
    #[error("table {table:?} has no column {column:?}")]
    UnknownColumn {
        /// The table.
        table: String,
        /// The column named.
        column: String,
    },
    /// A value of the wrong type.
    #[error("table {table:?}, column {column:?}: expected {expected} value, got {found}")]
    TypeMismatch {
        /// The table.
        table: String,
        /// The column.
        column: String,
        /// The column's type.
        expected: SqlType,
        /// The value's type.
        found: &'static str,
    },
    /// NULL in a column that does not allow it.
    #[error("table {table:?}, column {column:?}: NULL is not allowed")]
    NullNotAllowed {
        /// The table.
        table: String,
        /// The column.
        column: String,
    },
    /// A NaN real (SQLite would store it as NULL).
    #[error("table {table:?}, column {column:?}: NaN is not a storable value")]
    NotANumber {
        /// The table.
        table: String,
        /// The column.
        column: String,
    },
    /// An insert without a value for a NOT NULL column that has no default.
    #[error(
        "table {table:?}: insert needs a value for NOT NULL column {column:?} (it has no default)"
    )]
    MissingValue {
        /// The table.
        table: String,
        /// The column.
        column: String,
    },
    /// A key with the wrong number of parts.
    #[error("table {table:?}: key {key} has {found} parts, the primary key has {expected}")]
    KeyArity {
        /// The table.
        table: String,
        /// The key given.
        key: Key,
        /// Key columns.
        expected: usize,
        /// Parts given.
        found: usize,
    },
    /// A column given twice in one write.
    #[error("table {table:?}: column {column:?} is given twice")]
    DuplicateColumn {
        /// The table.
        table: String,
        /// The column.
        column: String,
    },
    /// Insert of a key that exists.
    #[error("table {table:?}: a row with key {key} already exists")]
    RowExists {
        /// The table.
        table: String,
        /// The key.
        key: Key,
    },
    /// Update or delete of a key that does not exist (or was deleted).
    #[error("table {table:?}: no row with key {key}")]
    RowNotFound {
        /// The table.
        table: String,
        /// The key.
        key: Key,
    },
    /// Write metadata over its bound (`WriteMetadata::MAX_BYTES`): nothing
    /// was written.
    #[error(
        "write metadata of {len} bytes exceeds the limit of {limit} bytes; nothing was written"
    )]
    MetadataTooLarge {
        /// Its size in bytes.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// An attempt to change a primary-key column.
    #[error("table {table:?}: column {column:?} is part of the primary key and cannot change")]
    KeyUpdate {
        /// The table.
        table: String,
        /// The column.
        column: String,
    },
    /// An operation that does not fit the column's kind.
    #[error("table {table:?}, column {column:?} is {kind}: {hint}")]
    WrongKind {
        /// The table.
        table: String,
        /// The column.
        column: String,
        /// Its kind.
        kind: Kind,
        /// What to do instead.
        hint: &'static str,
    },
    /// A negative increment of a grow-only counter.
    #[error("table {table:?}, column {column:?}: a g_counter only grows; cannot add {amount}")]
    NegativeIncrement {
        /// The table.
        table: String,
        /// The column.
        column: String,
        /// The amount given.
        amount: i64,
    },
    /// A counter total that would overflow 64 bits.
    #[error("table {table:?}, column {column:?}: counter would overflow")]
    CounterOverflow {
        /// The table.
        table: String,
        /// The column.
        column: String,
    },
    /// An OR-set value that is not a JSON array of strings.
    #[error("table {table:?}, column {column:?}: an or_set value must be a JSON array of strings ({problem})")]
    BadSetValue {
        /// The table.
        table: String,
        /// The column.
        column: String,
        /// What is wrong.
        problem: String,
    },
}

/// A changeset that cannot be applied; nothing of it was.
#[derive(Debug, Error, PartialEq)]
#[non_exhaustive]
pub enum ApplyError {
    /// The changeset names a table this schema lacks.
    #[error("changeset from {origin} names unknown table {table:?}")]
    UnknownTable {
        /// The sending site.
        origin: SiteId,
        /// The table.
        table: String,
    },
    /// The changeset names a column this schema lacks.
    #[error("changeset from {origin}: table {table:?} has no column {column:?} here (is this replica's schema older?)")]
    UnknownColumn {
        /// The sending site.
        origin: SiteId,
        /// The table.
        table: String,
        /// The column.
        column: String,
    },
    /// A peer has seen writes of this replica's site that this replica does
    /// not have: its database was restored from a backup or copied.
    #[error("a peer has seen write {seen} of this replica (site {site}), but this replica's history ends at write {last}: the database was restored from a backup or copied to another device. Call Store::rotate_site_id (meldb rotate-site-id) to continue under a new site id, then send each peer a full export once")]
    LostHistory {
        /// This replica's site id.
        site: SiteId,
        /// The last write this replica has.
        last: u64,
        /// The write of this site the peer has seen.
        seen: u64,
    },
    /// The changeset lists one of a table's columns twice.
    #[error("changeset from {origin}: table {table:?} lists column {column:?} twice")]
    DuplicateColumn {
        /// The sending site.
        origin: SiteId,
        /// The table.
        table: String,
        /// The column.
        column: String,
    },
    /// A row that breaks the schema or the CRDT invariants.
    #[error("changeset from {origin}: table {table:?}, key {key}: {problem}")]
    InvalidRow {
        /// The sending site.
        origin: SiteId,
        /// The table.
        table: String,
        /// The row's key.
        key: Key,
        /// What is wrong.
        problem: String,
    },
}

/// SQLite failed, or stored metadata is not what meldb wrote.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StorageError {
    /// An SQLite error.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// Stored metadata that does not decode or does not fit the schema.
    #[error("corrupt database: {what}: {problem}")]
    Corrupt {
        /// Which table or record.
        what: String,
        /// What is wrong.
        problem: String,
    },
    /// A write failed part-way through a transaction, which was therefore
    /// rolled back instead of committed.
    #[error("a write failed part-way ({reason}); the transaction was rolled back, nothing of it was committed")]
    Aborted {
        /// The failed write's error.
        reason: String,
    },
    /// Another connection upgraded the database's schema while this store
    /// was open; its cached layout no longer matches.
    #[error("{path}: another connection changed the schema; reopen the store")]
    SchemaChanged {
        /// The database file.
        path: String,
    },
}

/// Why [`Store::open`](crate::store::Store::open) (or
/// [`StoreOptions::open`](crate::store::StoreOptions::open)) could not open a
/// database. Nothing in the file was changed: an upgrade that failed was
/// rolled back. Each variant asks something different of the app: another
/// file, a newer or an older meldb, a copy from the backup, a schema that
/// fits, or a look at the disk.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The file is not a meldb database.
    #[error("{path}: {problem}")]
    NotMeldb {
        /// The database file.
        path: String,
        /// What is wrong.
        problem: String,
    },
    /// The database was written by a newer meldb, in a format this build
    /// cannot read. Its contents were not touched.
    #[error("{path}: database format {found} is newer than this meldb reads (up to format {newest}); open it with a meldb that reads format {found}")]
    FormatTooNew {
        /// The database file.
        path: String,
        /// Its format.
        found: i64,
        /// The newest format this build reads.
        newest: i64,
    },
    /// The database's format is older than this build can upgrade. Its
    /// contents were not touched.
    #[error("{path}: database format {found} is older than this meldb reads (formats {oldest} and up); open it once with a meldb that reads format {found} and writes a newer one, then with this one")]
    FormatTooOld {
        /// The database file.
        path: String,
        /// Its format.
        found: i64,
        /// The oldest format this build reads.
        oldest: i64,
    },
    /// Upgrading an older database format failed; the upgrade was rolled
    /// back, so the file is as it was, and a copy taken before it began is
    /// at `backup`.
    #[error("{path}: upgrading the database from format {from} to {to} failed, nothing was changed (a copy taken before is at {backup}): {problem}")]
    UpgradeFailed {
        /// The database file.
        path: String,
        /// The step's starting format.
        from: i64,
        /// The format it was upgrading to.
        to: i64,
        /// Where the copy taken before the upgrade is.
        backup: String,
        /// What went wrong.
        problem: String,
    },
    /// A key was given, and it does not decrypt the file (or the file is
    /// not an SQLite database at all: the two look alike). Nothing was
    /// changed.
    #[error("{path}: the encryption key does not open this database (a wrong key, or the file is not a database)")]
    WrongKey {
        /// The database file.
        path: String,
    },
    /// A key was given for a plain, unencrypted database: it is refused
    /// rather than opened unencrypted. Nothing was changed.
    #[error("{path}: the database is not encrypted, but an encryption key was given; open it without a key")]
    NotEncrypted {
        /// The database file.
        path: String,
    },
    /// No key was given, and the file is not a plain SQLite database: it
    /// is encrypted (or not a database at all). Nothing was changed.
    #[error("{path}: the file is not a plain SQLite database: it is encrypted (open it with its key) or not a database")]
    Encrypted {
        /// The database file.
        path: String,
    },
    /// A key was given where it cannot be used: a build without the
    /// `encryption` feature, or an in-memory store.
    #[error("{path}: an encryption key cannot be used: {reason}")]
    EncryptionUnavailable {
        /// The database file (`:memory:` for an in-memory store).
        path: String,
        /// Why.
        reason: &'static str,
    },
    /// The schema does not fit the database: an upgrade it cannot make
    /// (a changed column type, a removed table), or a schema that is
    /// itself invalid.
    #[error(transparent)]
    Schema(#[from] SchemaError),
    /// SQLite failed, or the database's own metadata is corrupt.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// A backup that was not made ([`Store::backup_to`](crate::Store::backup_to),
/// [`Store::backup_file`](crate::Store::backup_file)): nothing is left
/// under the destination's name, and the source is unchanged.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum BackupError {
    /// The destination exists: a backup never replaces a file.
    #[error("{path} already exists: a backup never overwrites a file; choose a new name or remove it first")]
    Exists {
        /// The destination.
        path: String,
    },
    /// The source is missing or not a meldb database.
    #[error("{path} is not a meldb database: {problem}")]
    NotMeldb {
        /// The source.
        path: String,
        /// What is wrong.
        problem: String,
    },
    /// The source is encrypted and no key was given, or the key given
    /// does not decrypt it ([`Store::backup_file_with_key`](crate::Store::backup_file_with_key)).
    #[error("{path}: {problem}")]
    Key {
        /// The source.
        path: String,
        /// What is wrong.
        problem: &'static str,
    },
    /// The source database could not be opened.
    #[error("cannot open {path}: {source}")]
    Source {
        /// The source.
        path: String,
        /// What SQLite said.
        source: rusqlite::Error,
    },
    /// A file beside the destination could not be created, synced or
    /// moved into place.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// What the system said.
        source: std::io::Error,
    },
    /// SQLite's backup failed.
    #[error("copying {from} to {to} failed: {source}")]
    Copy {
        /// The source.
        from: String,
        /// The destination.
        to: String,
        /// What SQLite said.
        source: rusqlite::Error,
    },
    /// The source stayed locked (an exclusive transaction, a truncating
    /// checkpoint) for longer than the backup waits.
    #[error("{from} stayed locked for {seconds} s; no backup was made, try again")]
    Busy {
        /// The source.
        from: String,
        /// How long the backup waited.
        seconds: u64,
    },
    /// The copy failed its check (integrity, meldb's metadata, the format).
    #[error("the copy of {from} failed its check, so nothing was written to {to}: {problem}")]
    Check {
        /// The source.
        from: String,
        /// The destination.
        to: String,
        /// What the check found.
        problem: String,
    },
}

impl From<BackupError> for Error {
    fn from(e: BackupError) -> Self {
        Error::Backup(Box::new(e))
    }
}

impl From<OpenError> for Error {
    fn from(e: OpenError) -> Self {
        Error::Open(Box::new(e))
    }
}

impl From<rusqlite::Error> for OpenError {
    fn from(e: rusqlite::Error) -> Self {
        OpenError::Storage(StorageError::Sqlite(e))
    }
}

impl OpenError {
    /// The open path's internal error, as what the open reports. Only the
    /// schema, storage and open errors arise while opening; any other is
    /// reported as the database being unusable, with its message.
    pub(crate) fn from_error(path: &str, error: Error) -> OpenError {
        match error {
            Error::Open(e) => *e,
            Error::Schema(e) => OpenError::Schema(e),
            Error::Storage(e) => OpenError::Storage(e),
            other => {
                debug_assert!(false, "open failed with a non-open error: {other}");
                OpenError::Storage(StorageError::Corrupt {
                    what: path.to_owned(),
                    problem: other.to_string(),
                })
            }
        }
    }
}
