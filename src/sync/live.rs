//! Live queries on a [`SharedStore`]: the store's watches, with their
//! callbacks run after the store's mutex is released.
//!
//! A watch registered here is a [`Store::watch`](crate::store::Store::watch) whose store-side callback
//! only queues the update (rows already read and diffed under the lock,
//! right after the commit). The queue is drained by whichever thread
//! released the lock after a change: [`SharedStore::write`],
//! [`SharedStore::apply`], every sync batch (the driver's
//! `SharedReplica::with_replica`) and [`SharedStore::notify_changed`].
//! Invariants: no callback runs while the store is locked, so a callback
//! may read or write through the same `SharedStore` without deadlock;
//! callbacks run one at a time, in commit order (one drainer at a time; a
//! write inside a callback queues its updates for the drainer already
//! running, which runs them when the callback returns).
//!
//! A write through [`SharedStore::lock`]'s guard queues its updates too;
//! they run at the next drain (call `notify_changed` after such a write).

use super::shared::SharedStore;
use crate::error::Result;
use crate::store::{Change, Update, WatchHandle};
use crate::value::Value;
use serde::de::DeserializeOwned;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

type Job = Box<dyn FnOnce() + Send>;

/// Updates waiting for their callbacks, and who is running them.
#[derive(Default)]
pub(super) struct Callbacks {
    queue: Mutex<VecDeque<Job>>,
    running: Mutex<()>,
}

impl std::fmt::Debug for Callbacks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let queued = self
            .queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        f.debug_struct("Callbacks")
            .field("queued", &queued)
            .finish()
    }
}

impl Callbacks {
    fn push(&self, job: Job) {
        self.queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push_back(job);
    }

    fn is_empty(&self) -> bool {
        self.queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty()
    }

    /// Runs the queued callbacks unless another drainer is at it (on this
    /// thread, when a callback wrote: it runs them after that callback).
    pub(super) fn drain(&self) {
        loop {
            {
                let _running = match self.running.try_lock() {
                    Ok(running) => running,
                    Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
                    Err(std::sync::TryLockError::WouldBlock) => return,
                };
                loop {
                    let job = self
                        .queue
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .pop_front();
                    match job {
                        // The app's callback: a panic is caught, so the
                        // write that drains returns what it did (its
                        // commit is done) and later callbacks still run.
                        Some(job) => {
                            if let Err(message) = meldb_core::app_panic::catch(job) {
                                tracing::warn!(%message, "a live query's callback panicked");
                            }
                        }
                        None => break,
                    }
                }
            }
            // A job queued after the last pop and before the release saw
            // the drainer busy and left it here: take it.
            if self.is_empty() {
                return;
            }
        }
    }
}

impl SharedStore {
    /// A live query ([`Store::watch`](crate::store::Store::watch)) whose callback gets each update,
    /// run after the store's lock is released (see [`crate::sync`]'s
    /// `live` rules): it may read or write through this `SharedStore`.
    /// Dropping the handle ends it.
    ///
    /// # Errors
    ///
    /// As [`Store::watch`](crate::store::Store::watch).
    pub fn watch(
        &self,
        sql: &str,
        params: &[Value],
        callback: impl FnMut(Update<Vec<Value>>) + Send + 'static,
    ) -> Result<WatchHandle> {
        let callback = Arc::new(Mutex::new(callback));
        let callbacks = self.live.clone();
        let handle = self.lock().watch(sql, params, move |_, update| {
            let callback = callback.clone();
            callbacks.push(Box::new(move || {
                (callback.lock().unwrap_or_else(PoisonError::into_inner))(update)
            }));
        });
        self.live.drain();
        handle
    }

    /// [`SharedStore::watch`] with rows read as `T` ([`Store::watch_as`](crate::store::Store::watch_as)).
    ///
    /// # Errors
    ///
    /// As [`Store::watch_as`](crate::store::Store::watch_as).
    pub fn watch_as<T: DeserializeOwned + Send + 'static>(
        &self,
        sql: &str,
        params: &[Value],
        callback: impl FnMut(Update<T>) + Send + 'static,
    ) -> Result<WatchHandle> {
        let callback = Arc::new(Mutex::new(callback));
        let callbacks = self.live.clone();
        let handle = self.lock().watch_as::<T>(sql, params, move |_, update| {
            let callback = callback.clone();
            callbacks.push(Box::new(move || {
                (callback.lock().unwrap_or_else(PoisonError::into_inner))(update)
            }));
        });
        self.live.drain();
        handle
    }

    /// A receiver of the store's changes feed ([`Store::changes`](crate::store::Store::changes)).
    pub fn changes(&self) -> std::sync::mpsc::Receiver<Change> {
        self.lock().changes()
    }

    /// The changes feed for async code: a tokio receiver (`recv().await`)
    /// of the same [`Change`]s as [`SharedStore::changes`]. Dropping it
    /// ends the subscription at the next commit. Unbounded, like the
    /// plain feed: a receiver that is never read keeps what it was sent.
    pub fn changes_async(&self) -> tokio::sync::mpsc::UnboundedReceiver<Change> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        self.lock().changes_to(move |c| tx.send(c.clone()).is_ok());
        rx
    }
}
