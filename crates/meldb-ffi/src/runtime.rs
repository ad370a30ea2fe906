//! The tokio runtime a database's syncs and servers run on.
//!
//! Invariant: dropping it never blocks and never panics, whichever thread
//! drops the last reference (a foreign garbage collector may do so on any
//! thread, one of the runtime's own included): it shuts down in the
//! background.

use crate::error::MeldbError;
use std::future::Future;

/// A multi-threaded runtime of two workers, shut down in the background.
pub(crate) struct Runtime(Option<tokio::runtime::Runtime>);

impl Runtime {
    pub(crate) fn new() -> Result<Runtime, MeldbError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("meldb-sync")
            .enable_all()
            .build()
            .map_err(|e| MeldbError::Sync {
                message: format!("could not start the sync runtime: {e}"),
            })?;
        Ok(Runtime(Some(rt)))
    }

    fn rt(&self) -> &tokio::runtime::Runtime {
        // Only `drop` takes it.
        self.0.as_ref().expect("the runtime lives until dropped")
    }

    /// Runs `future` to its end on the runtime, blocking the calling
    /// (foreign) thread.
    pub(crate) fn block_on<F: Future>(&self, future: F) -> F::Output {
        self.rt().block_on(future)
    }

    /// The runtime's handle, for spawning.
    pub(crate) fn handle(&self) -> &tokio::runtime::Handle {
        self.rt().handle()
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}
