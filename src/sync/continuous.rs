//! A continuous sync an app can watch: [`ContinuousSync`] (what to sync
//! with, and how) and [`SyncHandle`] (its status and its stop).
//!
//! Invariant: one status channel per sync, created with the builder, so
//! a receiver taken before the sync starts sees every state from its
//! first `Connecting` on (the latest one at any moment, see
//! [`super::status`]); stopping ends the current session with a notice to
//! the peer and leaves the status at `Stopped`.

use super::connect::Connector;
use super::driver::{reconnecting, Backoff, Reconnect, SyncReport};
use super::error::SyncError;
use super::session::SessionConfig;
use super::shared::SharedReplica;
use super::status::SyncStatus;
use super::url::PeerUrl;
use std::sync::Arc;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A live sync with one peer that reconnects by itself and reports its
/// [`SyncStatus`] as it goes.
///
/// ```no_run
/// # async fn example(store: meldb::sync::SharedStore) -> Result<(), Box<dyn std::error::Error>> {
/// use meldb::sync::{ContinuousSync, SessionConfig, SyncState};
/// let sync = ContinuousSync::new(store, "tls://relay.example:7420".parse()?)
///     .config(SessionConfig::default().token(Some("s3cret-till-1".into())))
///     .spawn();
/// let mut status = sync.status();
/// // Show it: here, until the first catch-up.
/// loop {
///     let now = status.borrow_and_update().clone();
///     println!("sync: {now}");
///     if matches!(now.state, SyncState::Idle) {
///         break;
///     }
///     if let Some(failure) = now.state.error() {
///         eprintln!("last error ({:?}): {}", failure.notice(), failure.error());
///     }
///     status.changed().await?;
/// }
/// let reports = sync.stop().await?;
/// # Ok(()) }
/// ```
#[must_use]
pub struct ContinuousSync<H: SharedReplica> {
    store: H,
    url: PeerUrl,
    connector: Connector,
    config: SessionConfig,
    backoff: Backoff,
    seed: Option<u64>,
    status: Arc<watch::Sender<SyncStatus>>,
}

impl<H: SharedReplica> ContinuousSync<H> {
    /// Syncs `store` with the peer at `url`, with the default connector,
    /// session settings (no token) and backoff.
    pub fn new(store: H, url: PeerUrl) -> ContinuousSync<H> {
        ContinuousSync {
            store,
            url,
            connector: Connector::new(),
            config: SessionConfig::default(),
            backoff: Backoff::default(),
            seed: None,
            status: Arc::new(watch::channel(SyncStatus::starting()).0),
        }
    }

    /// How connections are opened (TLS trust, timeouts).
    pub fn connector(mut self, connector: Connector) -> Self {
        self.connector = connector;
        self
    }

    /// The session settings (the token, batch sizes); live mode is always
    /// on.
    pub fn config(mut self, config: SessionConfig) -> Self {
        self.config = config;
        self
    }

    /// The reconnect delays.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// The seed of the reconnect jitter (by default, from the site id and
    /// the clock): tests fix it for repeatable delays.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// A receiver of the status (starts at `Connecting`).
    pub fn status(&self) -> watch::Receiver<SyncStatus> {
        self.status.subscribe()
    }

    /// Runs until `shutdown` turns true; returns the report of every
    /// session that ended cleanly. Take [`ContinuousSync::status`] first.
    pub async fn run(self, shutdown: watch::Receiver<bool>) -> Vec<SyncReport> {
        let shown = self.url.to_string();
        let (connector, url) = (self.connector, self.url);
        let connect = || {
            let (connector, url) = (connector.clone(), url.clone());
            async move { connector.connect(&url).await }
        };
        let reconnect = Reconnect {
            backoff: self.backoff,
            seed: self.seed,
            status: self.status,
        };
        reconnecting(
            self.store,
            &shown,
            connect,
            self.config,
            reconnect,
            shutdown,
        )
        .await
    }

    /// Runs on a task of its own (on the current tokio runtime).
    pub fn spawn(self) -> SyncHandle {
        let status = self.status();
        let (stop, shutdown) = watch::channel(false);
        let task = tokio::spawn(self.run(shutdown));
        SyncHandle { status, stop, task }
    }
}

/// A running [`ContinuousSync`]. Dropping it stops nothing: call
/// [`SyncHandle::stop`].
#[derive(Debug)]
pub struct SyncHandle {
    status: watch::Receiver<SyncStatus>,
    stop: watch::Sender<bool>,
    task: JoinHandle<Vec<SyncReport>>,
}

impl SyncHandle {
    /// A receiver of the status.
    pub fn status(&self) -> watch::Receiver<SyncStatus> {
        self.status.clone()
    }

    /// Ends the sync (the peer gets a notice) and returns the report of
    /// every session that ended cleanly.
    ///
    /// # Errors
    ///
    /// [`SyncError::Panicked`] if the sync's task panicked.
    pub async fn stop(self) -> Result<Vec<SyncReport>, SyncError> {
        let _ = self.stop.send(true);
        super::shared::joined("continuous sync", self.task.await)
    }
}
