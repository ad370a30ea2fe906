//! Sync with a relay (or a peer): once, or continuously with a status
//! listener; and serving this database to others as a relay.
//!
//! Invariant: no foreign callback runs on the runtime's threads or inside
//! its `block_on`. A sync's status goes from the runtime to a plain thread
//! of its own through a channel, and the listener runs there: it may call
//! any method of the database, a sync's `stop` included, without stalling
//! the runtime or nesting it.

use crate::database::Database;
use crate::error::{CallbackError, MeldbError};
use crate::runtime::Runtime;
use meldb::sync::{
    sync_once_url, Connector, ContinuousSync, PeerUrl, Relay, RelayConfig, SessionConfig,
    SyncHandle, SyncReport, SyncStatus, Tokens,
};
use std::sync::{Arc, Mutex, PoisonError};

/// What one or more sync sessions did.
#[derive(Debug, Clone, Default, PartialEq, Eq, uniffi::Record)]
pub struct SyncSummary {
    /// Sessions that ran.
    pub sessions: u64,
    /// Rows sent to the peer.
    pub rows_sent: u64,
    /// Rows received from the peer.
    pub rows_received: u64,
    /// Rows received that changed something here.
    pub rows_applied: u64,
    /// Mutations pushed to the authority.
    pub mutations_pushed: u64,
}

impl SyncSummary {
    fn add(&mut self, report: &SyncReport) {
        self.sessions += 1;
        self.rows_sent += report.stats.rows_sent;
        self.rows_received += report.stats.rows_received;
        self.rows_applied += report.stats.rows_applied;
        self.mutations_pushed += report.stats.mutations_pushed;
    }
}

/// Where a continuous sync is.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct SyncStatusInfo {
    /// "connecting", "connected", "syncing", "idle", "offline" or "stopped".
    pub state: String,
    /// The status in words, as the library says it.
    pub description: String,
    /// Why it is offline, if a failure took it there.
    pub error: Option<String>,
    /// Local changes the peer has not acknowledged (`None` until it said).
    pub pending_changes: Option<u64>,
    /// Mutations the authority has not settled.
    pub pending_mutations: u64,
}

impl From<&SyncStatus> for SyncStatusInfo {
    fn from(s: &SyncStatus) -> SyncStatusInfo {
        SyncStatusInfo {
            state: s.state.name().to_owned(),
            description: s.to_string(),
            error: s.state.error().map(|f| f.error().to_string()),
            pending_changes: s.pending_changes,
            pending_mutations: s.pending_mutations,
        }
    }
}

/// The foreign side of a continuous sync's status.
#[uniffi::export(callback_interface)]
pub trait SyncListener: Send + Sync {
    /// Called with the status at the start and each time it moves.
    fn on_status(&self, status: SyncStatusInfo) -> Result<(), CallbackError>;
}

fn parse_url(url: &str) -> Result<PeerUrl, MeldbError> {
    url.parse()
        .map_err(|e| MeldbError::invalid(format!("sync URL {url:?}: {e}")))
}

/// A continuous sync; `stop` ends it (so do the database's close and
/// dropping the session).
#[derive(uniffi::Object)]
pub struct SyncSession {
    inner: Arc<SessionInner>,
}

struct SessionInner {
    /// Its database's number, for the re-entrancy guard.
    db: u64,
    runtime: Arc<Runtime>,
    handle: Mutex<Option<SyncHandle>>,
    last: Mutex<SyncSummary>,
}

impl SessionInner {
    fn stop(&self) -> Result<SyncSummary, MeldbError> {
        let handle = self
            .handle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(handle) = handle {
            let reports = self.runtime.block_on(handle.stop())?;
            let mut summary = SyncSummary::default();
            for report in &reports {
                summary.add(report);
            }
            *self.last.lock().unwrap_or_else(PoisonError::into_inner) = summary;
        }
        Ok(self
            .last
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone())
    }
}

#[uniffi::export]
impl SyncSession {
    /// The status now.
    pub fn status(&self) -> SyncStatusInfo {
        match &*self
            .inner
            .handle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
        {
            Some(handle) => SyncStatusInfo::from(&*handle.status().borrow()),
            None => SyncStatusInfo {
                state: "stopped".into(),
                description: "stopped".into(),
                error: None,
                pending_changes: None,
                pending_mutations: 0,
            },
        }
    }

    /// Stops the sync cleanly and says what its sessions did; what the
    /// peer has not acknowledged stays for the next sync. A second stop
    /// returns the same summary. From inside a resolver or mutator of its
    /// database it is refused (`Reentrant`): the sync may be waiting for
    /// the lock that callback holds.
    pub fn stop(&self) -> Result<SyncSummary, MeldbError> {
        crate::guard::check(self.inner.db, "SyncSession.stop")?;
        self.inner.stop()
    }
}

/// Dropping a session (the foreign object collected, or released) stops
/// it in the background: a sync nobody can stop or watch does not go on.
impl Drop for SyncSession {
    fn drop(&mut self) {
        let handle = self
            .inner
            .handle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(handle) = handle {
            self.inner.runtime.handle().spawn(async move {
                // What it did is no one's to hear now; what the peer has not
                // acknowledged stays for the next sync.
                let _ = handle.stop().await;
            });
        }
    }
}

/// A relay serving this database to other replicas.
#[derive(uniffi::Object)]
pub struct Server {
    url: String,
    inner: Arc<ServerInner>,
}

struct ServerInner {
    /// Its database's number, for the re-entrancy guard.
    db: u64,
    runtime: Arc<Runtime>,
    shutdown: tokio::sync::watch::Sender<bool>,
    task: Mutex<Option<tokio::task::JoinHandle<Result<(), meldb::sync::SyncError>>>>,
}

impl ServerInner {
    fn stop(&self) -> Result<(), MeldbError> {
        let _ = self.shutdown.send(true);
        let task = self
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        match task {
            Some(task) => match self.runtime.block_on(task) {
                Ok(result) => Ok(result?),
                Err(e) => Err(MeldbError::Sync {
                    message: format!("the relay's task failed: {e}"),
                }),
            },
            None => Ok(()),
        }
    }
}

#[uniffi::export]
impl Server {
    /// The URL clients sync with (`tcp://127.0.0.1:PORT`).
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// Stops serving; sessions in progress end. A no-op the second time.
    /// From inside a resolver or mutator of its database it is refused
    /// (`Reentrant`): a session may be waiting for the lock that callback
    /// holds.
    pub fn stop(&self) -> Result<(), MeldbError> {
        crate::guard::check(self.inner.db, "Server.stop")?;
        self.inner.stop()
    }
}

#[uniffi::export]
impl Database {
    /// Syncs once with the relay or peer at `url` (`tcp://`, `tls://`,
    /// `ws://`, `wss://`): sends what it lacks, takes what this replica
    /// lacks, until both are caught up.
    #[uniffi::method(default(token = None))]
    pub fn sync_once(&self, url: String, token: Option<String>) -> Result<SyncSummary, MeldbError> {
        let url = parse_url(&url)?;
        let shared = self.shared("sync_once")?;
        let runtime = self.runtime()?;
        let report = runtime.block_on(sync_once_url(
            &shared,
            &url,
            SessionConfig::default().token(token),
            &Connector::new(),
        ))?;
        let mut summary = SyncSummary::default();
        summary.add(&report);
        Ok(summary)
    }

    /// Starts syncing with `url` in the background, reconnecting with
    /// backoff when the connection drops; `listener` (if any) hears each
    /// status on a thread of its own.
    #[uniffi::method(default(token = None, listener = None))]
    pub fn start_sync(
        &self,
        url: String,
        token: Option<String>,
        listener: Option<Box<dyn SyncListener>>,
    ) -> Result<Arc<SyncSession>, MeldbError> {
        let url = parse_url(&url)?;
        let shared = self.shared("start_sync")?;
        let runtime = self.runtime()?;
        let handle = {
            let _entered = runtime.handle().enter();
            ContinuousSync::new(shared, url)
                .config(SessionConfig::default().token(token))
                .spawn()
        };
        if let Some(listener) = listener {
            let mut status = handle.status();
            let (send, receive) = std::sync::mpsc::channel::<SyncStatusInfo>();
            // On the runtime: only moves each status to the channel.
            runtime.handle().spawn(async move {
                loop {
                    let now = SyncStatusInfo::from(&*status.borrow_and_update());
                    if send.send(now).is_err() || status.changed().await.is_err() {
                        break;
                    }
                }
            });
            // The listener's own thread; it ends with the sync.
            std::thread::Builder::new()
                .name("meldb-sync-status".into())
                .spawn(move || {
                    for status in receive {
                        let _ = listener.on_status(status);
                    }
                })
                .map_err(|e| MeldbError::Sync {
                    message: format!("could not start the status thread: {e}"),
                })?;
        }
        let inner = Arc::new(SessionInner {
            db: self.id,
            runtime,
            handle: Mutex::new(Some(handle)),
            last: Mutex::default(),
        });
        let on_close = inner.clone();
        self.on_close(Box::new(move || {
            let _ = on_close.stop();
        }));
        Ok(Arc::new(SyncSession { inner }))
    }

    /// Serves this database as a relay on `listen` (`127.0.0.1:0` for a
    /// free port): other replicas sync with it, and if it is the authority
    /// its resolvers and mutators decide for them. With `tokens_toml`
    /// (the relay's tokens file, as text) only its tokens get in.
    #[uniffi::method(default(tokens_toml = None))]
    pub fn serve(
        &self,
        listen: String,
        tokens_toml: Option<String>,
    ) -> Result<Arc<Server>, MeldbError> {
        let shared = self.shared("serve")?;
        let mut config = RelayConfig::default();
        if let Some(text) = tokens_toml {
            config = config.tokens(Tokens::from_toml_str(&text, "tokens text")?);
        }
        let runtime = self.runtime()?;
        let relay = runtime.block_on(Relay::bind(shared, &listen, config))?;
        let url = format!("tcp://{}", relay.local_addr()?);
        let (shutdown, stopped) = tokio::sync::watch::channel(false);
        let task = runtime.handle().spawn(relay.run(stopped));
        let inner = Arc::new(ServerInner {
            db: self.id,
            runtime,
            shutdown,
            task: Mutex::new(Some(task)),
        });
        let on_close = inner.clone();
        self.on_close(Box::new(move || {
            let _ = on_close.stop();
        }));
        Ok(Arc::new(Server { url, inner }))
    }
}
