//! The store: one SQLite database holding one replica.
//!
//! [`Store::open`] creates or opens a database for a schema;
//! [`Store::transaction`] starts a write transaction ([`Transaction`]);
//! [`Store::changes_since`] and [`Store::apply`] exchange changes with other
//! replicas; [`Store::digest`] hashes the canonical state. Apps read with
//! plain SQL through [`Store::conn`], or beside the writer through a
//! [`ReadPool`] of read-only connections ([`Store::read_pool`]).
//!
//! Durability: file databases run in WAL mode with `synchronous = FULL` by
//! default, so a transaction that [`Transaction::commit`] returned from
//! survives a crash or power loss; every multi-step operation (a write
//! transaction, an apply, an open that upgrades the schema) is one SQLite
//! transaction, so a crash leaves the old state or the new one.

mod apply;
mod backup;
mod bindings;
mod changes;
mod cipher;
mod conflicts;
mod correct;
mod digest;
mod feed;
mod format;
#[doc(hidden)]
pub mod layout;
mod meta;
mod mutate;
mod page_memo;
mod read;
mod resolve;
mod rows;
mod speculate;
mod stamp;
mod watch;
mod write;

pub use apply::{ApplyReport, HeldChange};
pub use backup::BackupReport;
pub use bindings::SiteBinding;
pub use cipher::EncryptionKey;
pub use conflicts::ConflictRetention;
pub use feed::{Change, Origin};
pub use read::{ReadPool, Reader};
pub use stamp::{RuleViolation, StampContext};
pub use watch::{RowDiff, Update, WatchHandle};
pub use write::Transaction;

use crate::clock::{Clock, Hlc, SiteId, SystemTimeSource, TimeSource};
use crate::error::{OpenError, Result};
use crate::schema::Schema;
use crate::version::VersionVector;
use layout::TableLayout;
use meldb_core::engine::Resolvers;
use rows::Sites;
use rusqlite::Connection;
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// The default page cache: 32 MiB (SQLite's own default is 2 MiB).
pub const DEFAULT_CACHE_KIB: u32 = 32 * 1024;

/// How `synchronous` is set for file databases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Durability {
    /// `synchronous = FULL`: a committed transaction survives power loss.
    Full,
    /// `synchronous = NORMAL`: faster; in WAL mode the last transactions
    /// before a power loss (not a process crash) may be lost.
    Normal,
}

/// Options for opening a store.
#[must_use]
#[derive(Debug, Clone)]
pub struct StoreOptions {
    max_drift: Duration,
    durability: Durability,
    time: Arc<dyn TimeSource>,
    site_id: Option<SiteId>,
    cache_kib: u32,
    authority: bool,
    /// The database's key (its `Debug` is redacted).
    key: Option<EncryptionKey>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            max_drift: Duration::from_secs(300),
            durability: Durability::Full,
            time: Arc::new(SystemTimeSource),
            site_id: None,
            cache_kib: DEFAULT_CACHE_KIB,
            authority: false,
            key: None,
        }
    }
}

impl StoreOptions {
    /// Default options: 5 minutes of clock drift, full durability, the
    /// system clock, a random site id for new databases, a 32 MiB cache.
    pub fn new() -> Self {
        StoreOptions::default()
    }

    /// How far ahead of the local clock a remote timestamp may be before
    /// its change is held back.
    pub fn max_drift(mut self, drift: Duration) -> Self {
        self.max_drift = drift;
        self
    }

    /// The `synchronous` setting for file databases.
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// Where physical time comes from (tests use [`crate::clock::ManualTime`]).
    pub fn time_source(mut self, time: Arc<dyn TimeSource>) -> Self {
        self.time = time;
        self
    }

    /// The site id for a *new* database (ignored when opening an existing
    /// one). For deterministic tests; real replicas use a random id.
    pub fn site_id(mut self, site: SiteId) -> Self {
        self.site_id = Some(site);
        self
    }

    /// SQLite's page cache size in KiB (`PRAGMA cache_size = -N`). Large
    /// transactions spill to disk mid-way when it is too small.
    pub fn cache_kib(mut self, kib: u32) -> Self {
        self.cache_kib = kib;
        self
    }

    /// Opens the store as the authority for tables declared with
    /// `authority = true` (see [`Store::set_authority`]).
    pub fn authority(mut self, authority: bool) -> Self {
        self.authority = authority;
        self
    }

    /// Encrypts the database at rest with `key` (SQLCipher; needs the
    /// `encryption` feature). A new file is created encrypted; an existing
    /// one must have been created with this key. Every connection the
    /// store opens (the writer, its [`ReadPool`]'s readers, a backup's
    /// copy) is keyed, and a backup is encrypted with the same key.
    ///
    /// Opening with a key fails with [`OpenError::WrongKey`] when the key
    /// does not decrypt the file, [`OpenError::NotEncrypted`] for a plain
    /// database (it is never opened unencrypted), and
    /// [`OpenError::EncryptionUnavailable`] in a build without the
    /// feature or for [`StoreOptions::open_in_memory`] (an in-memory store
    /// has nothing at rest). Opening an encrypted file without a key is
    /// [`OpenError::Encrypted`].
    pub fn encryption_key(mut self, key: EncryptionKey) -> Self {
        self.key = Some(key);
        self
    }

    /// The key set by [`StoreOptions::encryption_key`], for code that
    /// opens other connections with these options (a relay's backups).
    pub fn key(&self) -> Option<&EncryptionKey> {
        self.key.as_ref()
    }

    /// Opens (or creates) a file database.
    ///
    /// ```
    /// use meldb_store::schema::Schema;
    /// use meldb_store::store::{Durability, StoreOptions};
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// # let path = dir.path().join("notes.db");
    /// let schema = Schema::from_toml_str(r#"
    ///     name = "notes"
    ///     version = 1
    ///     [[table]]
    ///     name = "note"
    ///     primary_key = ["id"]
    ///     [[table.column]]
    ///     name = "id"
    ///     type = "text"
    ///     [[table.column]]
    ///     name = "body"
    ///     type = "text"
    /// "#, "notes.toml")?;
    /// let store = StoreOptions::new()
    ///     .durability(Durability::Full)
    ///     .open(&path, &schema)?;
    /// assert_eq!(store.schema().name, "notes");
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`OpenError`]: the file is not meldb's, its format is newer or
    /// older than this build reads, an upgrade failed (nothing changed; the
    /// error names the copy taken before), the schema does not fit the
    /// stored one, the encryption key does not fit the file (see
    /// [`StoreOptions::encryption_key`]), or SQLite failed.
    pub fn open(self, path: impl AsRef<Path>, schema: &Schema) -> Result<Store, OpenError> {
        let path = path.as_ref();
        let shown = path.display().to_string();
        self.open_file(path, schema)
            .map_err(|e| OpenError::from_error(&shown, e))
    }

    fn open_file(self, path: &Path, schema: &Schema) -> Result<Store> {
        let shown = path.display().to_string();
        cipher::check_file(path, &shown, self.key.as_ref())?;
        let conn = Connection::open(path)?;
        if let Some(key) = &self.key {
            cipher::key_connection(&conn, key)?;
            cipher::verify(&conn, &shown)?;
        }
        let sync = match self.durability {
            Durability::Full => "FULL",
            Durability::Normal => "NORMAL",
        };
        conn.execute_batch(&format!(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = {sync}; PRAGMA busy_timeout = 5000; \
             PRAGMA cache_size = -{};",
            self.cache_kib
        ))?;
        Store::init(conn, path.display().to_string(), schema, self)
    }

    /// Creates an in-memory database.
    pub fn open_in_memory(self, schema: &Schema) -> Result<Store, OpenError> {
        let open = || -> Result<Store> {
            if self.key.is_some() {
                return Err(OpenError::EncryptionUnavailable {
                    path: ":memory:".into(),
                    reason: "an in-memory store has nothing at rest to encrypt",
                }
                .into());
            }
            let conn = Connection::open_in_memory()?;
            conn.execute_batch(&format!("PRAGMA cache_size = -{};", self.cache_kib))?;
            Store::init(conn, ":memory:".into(), schema, self)
        };
        open().map_err(|e| OpenError::from_error(":memory:", e))
    }
}

/// Fixes each statement's query plan when it is prepared (SQLite's query
/// planner stability guarantee, `SQLITE_DBCONFIG_ENABLE_QPSG`). Every
/// connection a store opens, writer or reader, goes through it.
///
/// Without it, SQLite (3.54) marks a statement whose plan could depend on
/// a bound integer (a range bound such as `seq >= ?2`) to be compiled again
/// whenever that parameter changes, and rusqlite's statement cache clears
/// the bindings each time a statement goes back to it: every cached
/// statement of that shape was parsed and planned again on every use. That
/// was 57% of the CPU of the clients in `meldb bench-relay`. meldb's
/// queries have one good plan (they look rows up by key), so a plan that
/// does not follow the values loses nothing.
pub(crate) fn fix_plans(conn: &Connection) -> Result<()> {
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )?;
    Ok(())
}

/// In-memory replica state that a rolled-back transaction must restore.
#[derive(Debug, Clone)]
struct Replica {
    /// The greatest sequence number this site has used.
    last_seq: u64,
    /// The version vector of remote sites (the local site's is `1..=last_seq`).
    coverage: VersionVector,
    /// The sites whose ranges in `coverage` changed since they were last
    /// saved: a commit writes those sites' rows only, not every site's.
    coverage_dirty: BTreeSet<SiteId>,
}

/// One replica's database.
#[derive(Debug)]
pub struct Store {
    conn: Connection,
    path: String,
    schema: Schema,
    tables: Vec<TableLayout>,
    sites: Sites,
    local: SiteId,
    clock: Clock,
    saved_hlc: Hlc,
    replica: Replica,
    /// `PRAGMA data_version` when this handle last knew the database: it
    /// changes when another connection commits.
    data_version: i64,
    /// The last change pages read, for askers that ask the same again
    /// before anything changes (`page_memo`).
    page_memo: std::cell::RefCell<page_memo::PageMemo>,
    /// Whether this replica decides conflicts of tables with an authority.
    authority: bool,
    /// `resolve_conflict` closures by table, highest priority first.
    resolvers: Resolvers<crate::Error>,
    /// Registered mutators by name.
    mutators: Vec<mutate::Mutator>,
    /// Change subscriptions: a table, and what to call after a pull.
    subscribers: Vec<(String, mutate::Subscriber)>,
    /// What the current transaction wrote, and the changes feed's
    /// receivers ([`Store::changes`]).
    feed: feed::ChangeLog,
    /// Live queries ([`Store::watch`]).
    watches: Vec<watch::Watch>,
    /// Who writes through this handle, as the application says
    /// ([`Store::set_writer`]).
    writer: crate::resolve::Writer,
    /// The authority's stamps on accepted changes, by table, in
    /// registration order (`Store::add_stamp`).
    stamps: Vec<(String, stamp::Stamp)>,
    /// How long the conflict log keeps closed records.
    conflict_retention: conflicts::ConflictRetention,
    /// The database's key, for every other connection opened on it
    /// (readers, backups).
    key: Option<EncryptionKey>,
}

/// In-memory state a rolled-back transaction or savepoint restores.
#[derive(Debug, Clone)]
pub(crate) struct Snapshot {
    local: SiteId,
    replica: Replica,
    sites: usize,
    clock: Hlc,
    /// Where the changes feed's record stood.
    changes: (usize, feed::Origin),
}

impl Store {
    /// Opens (or creates) a file database with default options
    /// ([`StoreOptions::open`] to choose them). An older database format
    /// is upgraded on the way, after a copy of the file is taken; what
    /// cannot be opened is an [`OpenError`] that says why.
    pub fn open(path: impl AsRef<Path>, schema: &Schema) -> Result<Store, OpenError> {
        StoreOptions::new().open(path, schema)
    }

    /// Creates an in-memory database with default options.
    pub fn open_in_memory(schema: &Schema) -> Result<Store, OpenError> {
        StoreOptions::new().open_in_memory(schema)
    }

    /// This replica's site id.
    pub fn site_id(&self) -> SiteId {
        self.local
    }

    /// The database file's path (`:memory:` for in-memory stores).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The schema the store was opened with.
    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// The underlying connection, for reading with plain SQL. Writing
    /// through it bypasses meldb: such writes are not replicated and may be
    /// overwritten.
    pub fn conn(&self) -> &Connection {
        &self.conn
    }

    /// The greatest timestamp this replica has issued or accepted.
    pub fn clock(&self) -> Hlc {
        self.clock.last()
    }

    /// Which dots this replica has.
    pub fn version_vector(&self) -> VersionVector {
        let mut vv = self.replica.coverage.clone();
        vv.insert(self.local, 1, self.replica.last_seq);
        vv
    }

    /// Starts a write transaction. It rolls back unless committed.
    pub fn transaction(&mut self) -> Result<Transaction<'_>> {
        Transaction::begin(self)
    }

    /// Runs `f` in a transaction and commits if it returns `Ok`; if it
    /// returns an error (a write the schema refuses, say), nothing of it
    /// is kept.
    ///
    /// ```
    /// use meldb_store::error::{Error, WriteError};
    /// use meldb_store::store::Store;
    /// # fn main() -> Result<(), Error> {
    /// # let schema = meldb_store::schema::Schema::from_toml_str(r#"
    /// #     name = "todo"
    /// #     version = 1
    /// #     [[table]]
    /// #     name = "task"
    /// #     primary_key = ["id"]
    /// #     [[table.column]]
    /// #     name = "id"
    /// #     type = "text"
    /// #     [[table.column]]
    /// #     name = "title"
    /// #     type = "text"
    /// #     [[table.column]]
    /// #     name = "tags"
    /// #     type = "text"
    /// #     kind = "or_set"
    /// # "#, "todo.toml")?;
    /// let mut store = Store::open_in_memory(&schema)?;
    /// store.write(|tx| {
    ///     tx.insert("task", &[("id", "t1".into()), ("title", "Buy milk".into())])?;
    ///     tx.add_to_set("task", "t1", "tags", "shopping")
    /// })?;
    ///
    /// // A write the schema refuses rolls back the whole closure.
    /// let err = store
    ///     .write(|tx| {
    ///         tx.update("task", "t1", &[("title", "Buy oat milk".into())])?;
    ///         tx.update("task", "t1", &[("colour", "red".into())])
    ///     })
    ///     .unwrap_err();
    /// assert!(matches!(err, Error::Write(WriteError::UnknownColumn { .. })));
    /// let title: String =
    ///     store.conn().query_row("SELECT title FROM task", [], |r| r.get(0))?;
    /// assert_eq!(title, "Buy milk");
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// What `f` returned, or [`Error::Write`](crate::Error::Write) for a
    /// write the schema refuses, or [`Error::Storage`](crate::Error::Storage)
    /// when SQLite failed (the transaction is rolled back either way).
    pub fn write<T>(&mut self, f: impl FnOnce(&mut Transaction<'_>) -> Result<T>) -> Result<T> {
        let mut tx = self.transaction()?;
        let out = f(&mut tx)?;
        tx.commit()?;
        Ok(out)
    }

    /// [`Store::write`] with every write carrying `meta`
    /// ([`Transaction::set_metadata`]: client-asserted app metadata, at most
    /// 1 KiB). Metadata over the bound is
    /// [`WriteError::MetadataTooLarge`](crate::error::WriteError) and
    /// nothing is written.
    pub fn write_with<T>(
        &mut self,
        meta: impl Into<String>,
        f: impl FnOnce(&mut Transaction<'_>) -> Result<T>,
    ) -> Result<T> {
        let mut tx = self.transaction()?;
        tx.set_metadata(meta)?;
        let out = f(&mut tx)?;
        tx.commit()?;
        Ok(out)
    }

    fn table(&self, name: &str) -> Option<&TableLayout> {
        // SQL names are case-insensitive; the schema forbids names that
        // differ only in case.
        self.tables
            .iter()
            .find(|t| t.table.name.eq_ignore_ascii_case(name))
    }

    /// Saves the clock and the version vector; part of every commit.
    fn save_replica_state(&mut self) -> Result<()> {
        let hlc = self.clock.last();
        if hlc != self.saved_hlc {
            meta::save_hlc(&self.conn, hlc)?;
        }
        if !self.replica.coverage_dirty.is_empty() {
            meta::save_coverage(
                &self.conn,
                &mut self.sites,
                &self.replica.coverage,
                &self.replica.coverage_dirty,
            )?;
        }
        Ok(())
    }

    pub(crate) fn snapshot(&self) -> Snapshot {
        Snapshot {
            local: self.local,
            replica: self.replica.clone(),
            sites: self.sites.len(),
            clock: self.clock.last(),
            changes: self.feed.mark(),
        }
    }

    pub(crate) fn restore(&mut self, snapshot: Snapshot) {
        self.local = snapshot.local;
        self.replica = snapshot.replica;
        self.sites.truncate(snapshot.sites);
        self.clock.reset(snapshot.clock);
        self.feed.rewind(snapshot.changes);
    }

    /// Whether the changes feed records writes (someone listens).
    pub(crate) fn feed_listening(&self) -> bool {
        self.feed.is_listening()
    }

    /// After a successful commit.
    fn committed(&mut self) {
        self.saved_hlc = self.clock.last();
        self.replica.coverage_dirty.clear();
    }
}

#[cfg(test)]
mod deferred_tests;
#[cfg(test)]
pub(crate) mod tests;
