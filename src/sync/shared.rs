//! A store shared between the app and its sync tasks.
//!
//! [`Store`] is used from one thread at a time; sync runs as tokio tasks
//! that each need it now and then. [`SharedStore`] holds it behind a mutex
//! and carries a change signal: every write through
//! [`SharedStore::write`], and every batch a sync session applies, wakes
//! the live sessions so they push what their peers lack. Store calls from
//! async code run on tokio's blocking pool, never on the async workers.
//!
//! What the driver and the relay need of such a handle, whatever replica
//! it holds, is the [`SharedReplica`] trait; `SharedStore` implements it.

use super::replica::Replica;
use crate::error::Result;
use crate::store::{Store, Transaction};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::watch;

/// A [`Store`] behind a mutex, with a change signal. Clones share both.
#[derive(Debug, Clone)]
pub struct SharedStore {
    store: Arc<Mutex<Store>>,
    changed: Arc<watch::Sender<u64>>,
}

impl SharedStore {
    /// Shares `store`.
    pub fn new(store: Store) -> SharedStore {
        SharedStore {
            store: Arc::new(Mutex::new(store)),
            changed: Arc::new(watch::channel(0).0),
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

    /// Wakes the live sync sessions: call after changing the store some
    /// other way than [`SharedStore::write`].
    pub fn notify_changed(&self) {
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A receiver that sees every [`SharedStore::notify_changed`].
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Runs `f` with the store on tokio's blocking pool.
    pub async fn run<T, F>(&self, f: F) -> std::result::Result<T, tokio::task::JoinError>
    where
        F: FnOnce(&mut Store) -> T + Send + 'static,
        T: Send + 'static,
    {
        let shared = self.clone();
        tokio::task::spawn_blocking(move || f(&mut shared.lock())).await
    }
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
        f(&mut self.lock())
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        SharedStore::subscribe(self)
    }

    fn notify_changed(&self) {
        SharedStore::notify_changed(self);
    }
}
