//! A store shared between the app and its sync tasks.
//!
//! [`SharedStore`] is a clonable, thread-safe handle on one replica: one
//! writer (the [`Store`], behind a mutex) and a pool of read-only
//! connections on the same database file ([`ReadPool`], up to
//! [`DEFAULT_READERS`]). Writes through the handle
//! ([`SharedStore::write`], [`SharedStore::apply`]) and every batch a sync
//! session applies wake the live sessions (the change signal), so they push
//! what their peers lack. Reads through the handle ([`SharedStore::read`],
//! [`SharedStore::get`], [`SharedStore::get_as`], [`SharedStore::query_as`],
//! [`SharedStore::digest`]) each see one committed
//! snapshot and do not wait for the writer: a read while a sync applies a
//! batch sees the state before that batch, never a part of it. In-memory
//! stores have no pool: their reads go through the writer and wait for it.
//!
//! Invariant: no store call made from async code in `sync` runs on a tokio
//! worker. The driver, the relay and the status tracker reach the store
//! through `blocking` (or `spawn_blocking` directly), which runs it on
//! tokio's blocking pool and reports a panic there as
//! [`SyncError::Panicked`], not as an I/O error.
//!
//! What the driver and the relay need of such a handle, whatever replica
//! it holds, is the [`SharedReplica`] trait; `SharedStore` implements it.

use super::error::SyncError;
use super::replica::Replica;
use crate::changeset::Changeset;
use crate::error::Result;
use crate::store::{ApplyReport, ReadPool, Reader, Store, Transaction};
use crate::value::{Key, Value};
use serde::de::DeserializeOwned;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::watch;

/// How many read-only connections [`SharedStore::new`] may open.
pub const DEFAULT_READERS: usize = 4;

/// A [`Store`] behind a mutex, readers beside it, and a change signal.
/// Clones share all three.
#[derive(Debug, Clone)]
pub struct SharedStore {
    store: Arc<Mutex<Store>>,
    readers: Option<Arc<ReadPool>>,
    changed: Arc<watch::Sender<u64>>,
    /// Live queries' updates waiting to be called back (`live`).
    pub(super) live: Arc<super::live::Callbacks>,
}

impl SharedStore {
    /// Shares `store`, with up to [`DEFAULT_READERS`] read-only
    /// connections (none for an in-memory store).
    pub fn new(store: Store) -> SharedStore {
        SharedStore::with_readers(store, DEFAULT_READERS)
    }

    /// Shares `store` with up to `readers` read-only connections, opened
    /// when first needed; 0 serves every read through the writer.
    pub fn with_readers(store: Store, readers: usize) -> SharedStore {
        SharedStore {
            readers: store.read_pool(readers).map(Arc::new),
            store: Arc::new(Mutex::new(store)),
            changed: Arc::new(watch::channel(0).0),
            live: Arc::default(),
        }
    }

    /// Locks the store. A panic in another holder does not poison it for
    /// good: every store operation is one transaction, rolled back if it
    /// did not finish.
    pub fn lock(&self) -> MutexGuard<'_, Store> {
        self.store
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Runs a write transaction (see [`Store::write`]) and wakes the live
    /// sync sessions.
    pub fn write<T>(&self, f: impl FnOnce(&mut Transaction<'_>) -> Result<T>) -> Result<T> {
        let out = self.lock().write(f)?;
        self.notify_changed();
        Ok(out)
    }

    /// Applies a changeset (see [`Store::apply`]) and wakes the live sync
    /// sessions.
    pub fn apply(&self, changes: &Changeset) -> Result<ApplyReport> {
        let report = self.lock().apply(changes)?;
        self.notify_changed();
        Ok(report)
    }

    /// Runs `f` over one committed snapshot, on a read-only connection: it
    /// does not wait for a write or an apply in progress, and sees none of
    /// it. (An in-memory store reads through the writer, after it.)
    ///
    /// # Errors
    ///
    /// What `f` returned, or [`Error::Storage`](crate::Error::Storage).
    pub fn read<T>(&self, f: impl FnOnce(&Reader<'_>) -> Result<T>) -> Result<T> {
        match &self.readers {
            Some(pool) => pool.read(f),
            None => f(&self.lock().reader()),
        }
    }

    /// A live row's columns, as [`Store::get`] reads them, from a snapshot
    /// (see [`SharedStore::read`]).
    pub fn get(&self, table: &str, key: impl Into<Key>) -> Result<Option<Vec<(String, Value)>>> {
        let key = key.into();
        self.read(|r| r.get(table, key))
    }

    /// A live row read as a `T`, as [`Store::get_as`] reads it, from a
    /// snapshot (see [`SharedStore::read`]): through a reader connection
    /// when the handle has them, without waiting for the writer.
    ///
    /// # Errors
    ///
    /// As [`Store::get_as`].
    pub fn get_as<T: DeserializeOwned>(
        &self,
        table: &str,
        key: impl Into<Key>,
    ) -> Result<Option<T>> {
        let key = key.into();
        self.read(|r| r.get_as(table, key))
    }

    /// A read-only query's rows read as `T`s, as [`Store::query_as`]
    /// reads them, from a snapshot (see [`SharedStore::read`]).
    ///
    /// # Errors
    ///
    /// As [`Store::query_as`].
    pub fn query_as<T: DeserializeOwned>(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
    ) -> Result<Vec<T>> {
        self.read(|r| r.query_as(sql, params))
    }

    /// The digest ([`Store::digest`]) of a snapshot (see
    /// [`SharedStore::read`]).
    pub fn digest(&self) -> Result<[u8; 32]> {
        self.read(|r| r.digest())
    }

    /// Whether reads have connections of their own (a file store), rather
    /// than going through the writer (an in-memory one, or no readers).
    pub fn has_readers(&self) -> bool {
        self.readers.is_some()
    }

    /// Wakes the live sync sessions and runs the live queries' callbacks
    /// ([`SharedStore::watch`]): call after changing the store some other
    /// way than [`SharedStore::write`], with the lock released.
    pub fn notify_changed(&self) {
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
        self.live.drain();
    }

    /// A receiver that sees every [`SharedStore::notify_changed`].
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Runs `f` with the store on tokio's blocking pool.
    ///
    /// # Errors
    ///
    /// [`SyncError::Panicked`] if `f` panicked.
    pub async fn run<T, F>(&self, f: F) -> std::result::Result<T, SyncError>
    where
        F: FnOnce(&mut Store) -> T + Send + 'static,
        T: Send + 'static,
    {
        blocking(self, "store call", f).await
    }
}

/// Runs `f` with `store`'s replica locked on tokio's blocking pool, off the
/// async workers. `task` names the work in [`SyncError::Panicked`].
pub(crate) async fn blocking<H, T, F>(
    store: &H,
    task: &'static str,
    f: F,
) -> std::result::Result<T, SyncError>
where
    H: SharedReplica,
    F: FnOnce(&mut H::Replica) -> T + Send + 'static,
    T: Send + 'static,
{
    let store = store.clone();
    joined(
        task,
        tokio::task::spawn_blocking(move || store.with_replica(f)).await,
    )
}

/// A blocking task's result: a panic as [`SyncError::Panicked`] with its
/// message, a task cancelled by a runtime shutting down as an I/O error.
pub(crate) fn joined<T>(
    task: &'static str,
    result: std::result::Result<T, tokio::task::JoinError>,
) -> std::result::Result<T, SyncError> {
    result.map_err(|e| {
        if e.is_panic() {
            let payload = e.into_panic();
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".to_owned());
            SyncError::Panicked { task, message }
        } else {
            SyncError::Io(std::io::Error::other(e))
        }
    })
}

/// A replica shared by sync tasks: lockable, with a change signal. Clones
/// share both. What the driver runs a session against, and what a
/// [`ReplicaProvider`](super::provider::ReplicaProvider) hands out.
pub trait SharedReplica: Clone + Send + Sync + 'static {
    /// The replica it holds.
    type Replica: Replica + ?Sized;

    /// Runs `f` with the replica locked. It blocks: async code calls it on
    /// tokio's blocking pool (the driver does).
    fn with_replica<T>(&self, f: impl FnOnce(&mut Self::Replica) -> T) -> T;

    /// A receiver that sees every [`SharedReplica::notify_changed`].
    fn subscribe(&self) -> watch::Receiver<u64>;

    /// Wakes the live sessions of this replica.
    fn notify_changed(&self);
}

impl SharedReplica for SharedStore {
    type Replica = Store;

    fn with_replica<T>(&self, f: impl FnOnce(&mut Store) -> T) -> T {
        let out = f(&mut self.lock());
        // The lock is released: live queries' callbacks may use the handle.
        self.live.drain();
        out
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        SharedStore::subscribe(self)
    }

    fn notify_changed(&self) {
        SharedStore::notify_changed(self);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::Schema;
    use serde::{Deserialize, Serialize};

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Note {
        id: String,
        body: String,
        pinned: bool,
    }

    fn note_schema() -> std::result::Result<Schema, Box<dyn std::error::Error>> {
        Ok(Schema::from_toml_str(
            "name = \"n\"\nversion = 1\n[[table]]\nname = \"note\"\nprimary_key = [\"id\"]\n\
             [[table.column]]\nname = \"id\"\ntype = \"text\"\n\
             [[table.column]]\nname = \"body\"\ntype = \"text\"\n\
             [[table.column]]\nname = \"pinned\"\ntype = \"integer\"\n",
            "n.toml",
        )?)
    }

    #[test]
    fn typed_reads_go_through_the_readers_without_waiting_for_the_writer(
    ) -> std::result::Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let store = Store::open(dir.path().join("notes.db"), &note_schema()?)?;
        let shared = SharedStore::new(store);
        assert!(shared.has_readers());
        let note = Note {
            id: "n1".into(),
            body: "first".into(),
            pinned: true,
        };
        shared.write(|tx| tx.insert_row("note", &note))?;
        assert_eq!(shared.get_as::<Note>("note", "n1")?.as_ref(), Some(&note));
        // The writer is held in a transaction that has changed the row but
        // not committed: a typed read on another thread answers from the
        // committed snapshot rather than waiting (or seeing the change).
        let mut guard = shared.lock();
        let mut tx = guard.transaction()?;
        tx.set("note", "n1", "body", "uncommitted")?;
        let reader = shared.clone();
        let (sent, answer) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let got = reader
                .get_as::<Note>("note", "n1")
                .map_err(|e| e.to_string());
            let rows = reader
                .query_as::<(String, bool)>("SELECT body, pinned FROM note", [])
                .map_err(|e| e.to_string());
            let _ = sent.send((got, rows));
        });
        let (got, rows) = answer
            .recv_timeout(std::time::Duration::from_secs(20))
            .map_err(|_| "the typed reads waited for the writer")?;
        tx.rollback();
        drop(guard);
        assert_eq!(got?.map(|n| n.body), Some("first".to_string()));
        assert_eq!(rows?, [("first".to_string(), true)]);
        Ok(())
    }

    #[test]
    fn an_in_memory_shared_store_reads_typed_rows_through_the_writer(
    ) -> std::result::Result<(), Box<dyn std::error::Error>> {
        let shared = SharedStore::new(Store::open_in_memory(&note_schema()?)?);
        assert!(!shared.has_readers());
        shared.write(|tx| {
            tx.insert_row(
                "note",
                &Note {
                    id: "m".into(),
                    body: "mem".into(),
                    pinned: false,
                },
            )
        })?;
        let notes: Vec<Note> = shared.query_as("SELECT * FROM note WHERE pinned = ?1", [false])?;
        assert_eq!(notes.len(), 1);
        assert_eq!(notes[0].body, "mem");
        assert_eq!(shared.get_as::<Note>("note", "absent")?, None);
        Ok(())
    }

    #[test]
    fn a_panic_in_store_work_is_reported_as_a_panic_with_its_message() {
        let schema = Schema::from_toml_str(
            "name = \"p\"\nversion = 1\n[[table]]\nname = \"t\"\nprimary_key = [\"id\"]\n\
             [[table.column]]\nname = \"id\"\ntype = \"text\"\n",
            "p.toml",
        )
        .expect("schema");
        let shared = SharedStore::new(Store::open_in_memory(&schema).expect("open"));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let out: std::result::Result<(), SyncError> =
            runtime.block_on(blocking(&shared, "probe", |_| panic!("boom in the store")));
        match out {
            Err(SyncError::Panicked { task, message }) => {
                assert_eq!(task, "probe");
                assert_eq!(message, "boom in the store");
            }
            other => panic!("expected Panicked, got {other:?}"),
        }
        // The store is still usable after the panic (the lock is not
        // poisoned for good).
        let digest = runtime.block_on(blocking(&shared, "after", |s| s.digest()));
        assert!(matches!(digest, Ok(Ok(_))));
    }
}
