//! The relay: an always-on replica that many clients sync through.
//!
//! [`Relay::bind`] listens on TCP; each connection runs a responder
//! [`Session`] in live mode over the replica of its namespace, so a batch
//! one client sends is applied (one transaction, `synchronous = FULL` for
//! file stores opened with the default durability) *before* it is
//! acknowledged, and then pushed to every other client connected to that
//! replica. Clients present a token in their `Hello`; without a valid one
//! the connection is refused before anything else it sent is read (the
//! first frame is also capped at
//! [`MAX_HELLO_PAYLOAD`](super::transport::MAX_HELLO_PAYLOAD)). A
//! read-only token receives changes, and a batch it sends anyway ends its
//! session with nothing applied.
//!
//! Limits (see [`super::limits`] for the accounting, [`RelayConfig`] for
//! the defaults): a connection holds a *pending* slot until its `Hello` is
//! authorized (a cap on unauthenticated connections, and one per source
//! address) and only then a *client* slot (`max_connections`, and
//! `max_connections_per_token` of them for one token), so sockets without
//! a token never lock clients out and one token never locks out the
//! others; one over a cap gets a `Busy` notice. Telling it so is bounded
//! work: at most [`REFUSALS_IN_FLIGHT`] refusals are delivered at once
//! (each within the handshake and write deadlines, whichever is
//! shorter), and a connection over a cap past those is closed at once,
//! with no TLS or WebSocket handshake (counted as `dropped_over_cap`).
//! Every connection has its own deadlines, measured from its own frames
//! and never re-armed by other clients' traffic: the hello within the
//! handshake deadline counted from accept (the TLS and WebSocket
//! handshakes included, so a slow one leaves the hello less time), a
//! frame within the idle timeout while a request
//! is outstanding, any frame within the quiet timeout while live and
//! caught up; a peer that does not read what it is sent within the write
//! timeout is dropped, and a live one that acknowledges slowly gets its
//! changes coalesced (then, past a bound, a notice; see
//! [`SessionConfig::max_lag_batches`]). Writes are checked before they are
//! applied against the token's write rate and the namespace's storage
//! quota; a refusal is a notice to that connection, with nothing written.
//! Message size is capped per frame. Shutdown (the watch turning true)
//! stops accepting, sends every client a `Shutdown` notice and waits for
//! the sessions to end.
//!
//! Tokens can change while the relay runs ([`Relay::reloader`]): each
//! hello is checked against the tokens of that moment, and a session the
//! new tokens no longer authorize is closed (see [`super::reload`]).
//!
//! A relay is a listener, a replica provider and a config (the shape of
//! mini-redis's `server::run(listener, shutdown)`): each authorized
//! connection syncs the replica the [`ReplicaProvider`] returns for the
//! namespace its token grants. Until its `Hello` is authorized, and when
//! its token is refused, a connection is served by the default namespace's
//! replica (see [`super::provider`]).
//!
//! Embedding: the relay takes a ready provider, most simply a
//! [`SharedStore`] (one replica for every namespace), so an application
//! can open the store itself (and register whatever it registers on a
//! store) before serving it. `meldb serve` is the same server without
//! tokens, for one replica to accept a direct peer.

use super::driver::{drive, DriveOptions, Rebind};
use super::error::SyncError;
use super::limits::{
    Admission, ClientSlot, LimitExceeded, Pending, WriteGate, WriteRate, WriteRates,
};
use super::listener::{Listener, Peer};
use super::message::{Hello, Message, Notice, NoticeCode};
use super::metrics::{AuthFailure, Refusal, RelayMetrics};
use super::provider::{Namespace, ReplicaProvider};
use super::reload::{Held, Reloader, TokensCell};
use super::session::{Authorize, Grant, Session, SessionConfig};
use super::shared::{blocking, joined, SharedStore};
use super::tokens::Tokens;
use super::transport::Connection;
use super::wire::MAX_MESSAGE_PAYLOAD;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

/// Relay settings. The defaults suit a relay for a few thousand devices
/// (raise the process's open-file limit above `max_connections +
/// max_unauthenticated`).
#[must_use]
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Who may connect; `None` lets everyone read and write (`meldb serve`
    /// on a trusted network).
    pub tokens: Option<Arc<Tokens>>,
    /// Authorized connections at once (at most; default 4096).
    pub max_connections: usize,
    /// Authorized connections of one token at once (at most; default 64),
    /// so one token cannot take every slot. Without tokens (`meldb
    /// serve`) only `max_connections` applies.
    pub max_connections_per_token: usize,
    /// Connections that have not completed their hello, at once (at most;
    /// default 256). They never take the slots of authorized ones.
    pub max_unauthenticated: usize,
    /// Of those, from one IP address (at most; default 16); an IPv6 /64
    /// counts as one address.
    pub max_unauthenticated_per_address: usize,
    /// A connection's hello must be authorized this long after it was
    /// accepted (default 10 s).
    pub handshake_timeout: Duration,
    /// The largest message payload accepted from a client, in bytes.
    pub max_message: usize,
    /// Silence after which a session is probed, and after twice which an
    /// unfinished one is dropped (default 30 s).
    pub idle: Duration,
    /// A live session that is caught up and hears nothing from its client
    /// this long is closed, freeing the slot of a device that vanished;
    /// the client reconnects (default 30 min; `None`: never).
    pub quiet_timeout: Option<Duration>,
    /// A client that does not read what it is sent for this long is
    /// dropped (default 30 s).
    pub write_timeout: Duration,
    /// Rows (or mutations) each token may write per second, and in a
    /// burst; `None`: no limit (default 1,000 per second, bursts of
    /// 50,000). Without tokens, each source address has its own.
    pub write_rate: Option<WriteRate>,
    /// The size a namespace's database may grow to, in bytes; a batch
    /// that would take it past is refused (default 8 GiB; `None`: no
    /// quota).
    pub namespace_quota: Option<u64>,
    /// Batch sizes, window and lag bound of the sessions.
    pub session: SessionConfig,
    /// Where the relay counts what it does (`None`: nowhere).
    pub metrics: Option<Arc<RelayMetrics>>,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            tokens: None,
            max_connections: 4096,
            max_connections_per_token: 64,
            max_unauthenticated: 256,
            max_unauthenticated_per_address: 16,
            handshake_timeout: Duration::from_secs(10),
            max_message: 16 << 20,
            idle: Duration::from_secs(30),
            quiet_timeout: Some(Duration::from_secs(30 * 60)),
            write_timeout: Duration::from_secs(30),
            write_rate: Some(WriteRate {
                per_second: 1_000,
                burst: 50_000,
            }),
            namespace_quota: Some(8 << 30),
            session: SessionConfig::default(),
            metrics: None,
        }
    }
}

impl RelayConfig {
    /// Require these tokens.
    pub fn tokens(mut self, tokens: Tokens) -> Self {
        self.tokens = Some(Arc::new(tokens));
        self
    }

    /// Authorized connection limit (at least 1).
    pub fn max_connections(mut self, n: usize) -> Self {
        self.max_connections = n.max(1);
        self
    }

    /// Authorized connections one token may hold at once (at least 1).
    pub fn max_connections_per_token(mut self, n: usize) -> Self {
        self.max_connections_per_token = n.max(1);
        self
    }

    /// Limits on connections that have not completed their hello: in all
    /// and per source address (each at least 1).
    pub fn max_unauthenticated(mut self, total: usize, per_address: usize) -> Self {
        self.max_unauthenticated = total.max(1);
        self.max_unauthenticated_per_address = per_address.max(1);
        self
    }

    /// The handshake deadline.
    pub fn handshake_timeout(mut self, limit: Duration) -> Self {
        self.handshake_timeout = limit;
        self
    }

    /// Message size limit in bytes (capped at 64 MiB).
    pub fn max_message(mut self, bytes: usize) -> Self {
        self.max_message = bytes.clamp(1024, MAX_MESSAGE_PAYLOAD);
        self
    }

    /// The idle timeout.
    pub fn idle(mut self, limit: Duration) -> Self {
        self.idle = limit;
        self
    }

    /// The quiet timeout of live sessions (`None`: never).
    pub fn quiet_timeout(mut self, limit: Option<Duration>) -> Self {
        self.quiet_timeout = limit;
        self
    }

    /// The write timeout.
    pub fn write_timeout(mut self, limit: Duration) -> Self {
        self.write_timeout = limit;
        self
    }

    /// Each token's write rate (`None`: no limit).
    pub fn write_rate(mut self, rate: Option<WriteRate>) -> Self {
        self.write_rate = rate;
        self
    }

    /// Each namespace's storage quota in bytes (`None`: no quota).
    pub fn namespace_quota(mut self, bytes: Option<u64>) -> Self {
        self.namespace_quota = bytes;
        self
    }

    /// The sessions' settings (live mode is the relay's to set).
    pub fn session(mut self, session: SessionConfig) -> Self {
        self.session = session;
        self
    }

    /// Count connections, refusals, batches and the rest in `metrics`
    /// (serve them with an [`AdminServer`](super::AdminServer)).
    pub fn metrics(mut self, metrics: Arc<RelayMetrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    fn drive_options(&self) -> DriveOptions {
        DriveOptions {
            until_caught_up: false,
            idle: self.idle,
            handshake: Some(self.handshake_timeout),
            quiet: self.quiet_timeout,
            write_timeout: self.write_timeout,
            metrics: self.metrics.clone(),
            handshake_from: None,
        }
    }
}

/// Refusals (TLS or WebSocket handshake, then a `Busy` notice) a relay
/// delivers at once; a connection over a cap beyond them is closed with
/// no handshake.
pub const REFUSALS_IN_FLIGHT: usize = 64;

/// A relay over a [`Listener`] (TCP unless said otherwise), serving the
/// replicas of a [`ReplicaProvider`] (one [`SharedStore`] unless said
/// otherwise).
#[derive(Debug)]
pub struct Relay<L: Listener = TcpListener, P: ReplicaProvider = SharedStore> {
    provider: Arc<P>,
    listener: L,
    config: RelayConfig,
    /// The tokens it checks now (see [`Relay::reloader`]).
    tokens: TokensCell,
}

impl<P: ReplicaProvider> Relay<TcpListener, P> {
    /// Listens on TCP `addr` (e.g. `127.0.0.1:0` for any free port).
    pub async fn bind(
        provider: P,
        addr: &str,
        config: RelayConfig,
    ) -> Result<Relay<TcpListener, P>, SyncError> {
        let listener = TcpListener::bind(addr).await?;
        Ok(Relay::new(provider, listener, config))
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> Result<SocketAddr, SyncError> {
        Ok(self.listener.local_addr()?)
    }
}

impl<L: Listener, P: ReplicaProvider> Relay<L, P> {
    /// A relay serving `provider`'s replicas (a [`SharedStore`]: that one
    /// store) to the connections `listener` accepts.
    pub fn new(provider: P, listener: L, config: RelayConfig) -> Relay<L, P> {
        Relay {
            provider: Arc::new(provider),
            listener,
            tokens: Arc::new(watch::Sender::new(config.tokens.clone())),
            config,
        }
    }

    /// The counters this relay adds to, if its config has them.
    pub fn metrics(&self) -> Option<&Arc<RelayMetrics>> {
        self.config.metrics.as_ref()
    }

    /// A handle that changes this relay's tokens while it runs (on
    /// SIGHUP, say): new connections are checked against the new tokens,
    /// and live sessions they no longer authorize are closed (see
    /// [`Reloader`]). TLS certificates are swapped on the listener's
    /// [`ServerTls`](super::ServerTls) (`ServerTls::replace`).
    pub fn reloader(&self) -> Reloader {
        Reloader {
            tokens: Arc::clone(&self.tokens),
        }
    }

    /// Serves until `shutdown` turns true, then ends every session with a
    /// notice and returns once they are closed.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) -> Result<(), SyncError> {
        let config = Arc::new(self.config);
        let admission = Admission::new(
            config.max_connections,
            config.max_unauthenticated,
            config.max_unauthenticated_per_address,
        )
        .per_token(config.max_connections_per_token)
        .observed(config.metrics.clone());
        let courtesy = Arc::new(Semaphore::new(REFUSALS_IN_FLIGHT));
        // Upgrade and notice together, within the shorter deadline.
        let courtesy_deadline = config.handshake_timeout.min(config.write_timeout);
        let common = Arc::new(Common {
            tokens: self.tokens,
            rates: Arc::new(WriteRates::new(config.write_rate)),
            options: config.drive_options(),
            config: Arc::clone(&config),
        });
        let mut sessions = JoinSet::new();
        tracing::info!(addr = %self.listener.describe(), "relay listening");
        let mut listener = self.listener;
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = shutdown.wait_for(|stop| *stop) => break,
                Some(_) = sessions.join_next(), if !sessions.is_empty() => continue,
            };
            let accepted_at = Instant::now();
            let (stream, peer) = match accepted {
                Ok(pair) => {
                    if let Some(metrics) = &config.metrics {
                        metrics.accepted();
                    }
                    pair
                }
                Err(e) => {
                    // Out of file descriptors, say: pause rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_PAUSE).await;
                    continue;
                }
            };
            // TLS and WebSocket handshakes run in the connection's own task,
            // under a pending slot and the handshake deadline: accepting
            // never waits for a client.
            let upgrade = listener.upgrade(stream, &peer);
            let pending = match admission.admit(&peer) {
                Ok(pending) => pending,
                Err(limit) => {
                    let metrics = config.metrics.as_ref();
                    // A flood is not owed a handshake each: past the bound,
                    // dropping `upgrade` closes the socket unread.
                    let Ok(permit) = Arc::clone(&courtesy).try_acquire_owned() else {
                        tracing::debug!(%peer, reason = %limit, "connection dropped: over a cap");
                        if let Some(metrics) = metrics {
                            metrics.refused(Refusal::DroppedOverCap);
                        }
                        continue;
                    };
                    tracing::warn!(%peer, reason = %limit, "connection refused");
                    let gauge = metrics.map(|m| {
                        m.limited(&limit);
                        m.hold_courtesy()
                    });
                    let max_message = config.max_message;
                    sessions.spawn(async move {
                        let _held = (permit, gauge);
                        // Counted as refused already: not again if this fails.
                        let _ = tokio::time::timeout(courtesy_deadline, async {
                            let conn =
                                upgraded(upgrade, &peer, max_message, courtesy_deadline, None);
                            if let Some(conn) = conn.await {
                                refuse(conn, limit, courtesy_deadline).await;
                            }
                        })
                        .await;
                    });
                    continue;
                }
            };
            let provider = Arc::clone(&self.provider);
            let common = Arc::clone(&common);
            let mut shutdown = shutdown.clone();
            sessions.spawn(async move {
                let (max_message, deadline) =
                    (common.config.max_message, common.config.handshake_timeout);
                let metrics = common.config.metrics.as_ref();
                if let Some(conn) = upgraded(upgrade, &peer, max_message, deadline, metrics).await {
                    // The hello deadline runs from accept, not from here.
                    let options = DriveOptions {
                        handshake_from: Some(accepted_at),
                        ..common.options.clone()
                    };
                    serve_one(
                        provider,
                        conn,
                        peer,
                        &common,
                        &options,
                        pending,
                        &mut shutdown,
                    )
                    .await;
                }
            });
        }
        tracing::info!(sessions = sessions.len(), "relay shutting down");
        if let Some(metrics) = &config.metrics {
            metrics.begin_shutdown();
        }
        while sessions.join_next().await.is_some() {}
        Ok(())
    }
}

/// How long the relay waits after a failed accept.
const ACCEPT_PAUSE: Duration = Duration::from_millis(50);

/// What every session of a relay shares.
struct Common {
    config: Arc<RelayConfig>,
    /// The tokens, as the last reload left them.
    tokens: TokensCell,
    rates: Arc<WriteRates>,
    options: DriveOptions,
}

/// Awaits an accepted stream's upgrade ([`Listener::upgrade`]) within
/// `deadline` and frames it; a failed or slow handshake is logged (and
/// counted in `metrics`) and ends that connection only.
async fn upgraded<S, F>(
    upgrade: F,
    peer: &Peer,
    max_message: usize,
    deadline: Duration,
    metrics: Option<&Arc<RelayMetrics>>,
) -> Option<Connection>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
    F: std::future::Future<Output = Result<S, SyncError>>,
{
    match tokio::time::timeout(deadline, upgrade).await {
        Ok(Ok(stream)) => {
            let conn = Connection::counted(stream, max_message, metrics.map(|m| m.bytes()));
            conn.set_accepting();
            Some(conn)
        }
        Ok(Err(e)) => {
            tracing::warn!(%peer, error = %e, "connection refused: handshake failed");
            if let Some(metrics) = metrics {
                metrics.refused(Refusal::HandshakeFailed);
            }
            None
        }
        Err(_) => {
            tracing::warn!(%peer, seconds = deadline.as_secs_f64(), "connection dropped: no handshake in time");
            if let Some(metrics) = metrics {
                metrics.refused(Refusal::HandshakeTimeout);
            }
            None
        }
    }
}

async fn refuse(mut conn: Connection, limit: LimitExceeded, write_timeout: Duration) {
    let notice = Message::Notice(Notice {
        code: limit.notice_code().unwrap_or(NoticeCode::Busy),
        message: limit.to_string(),
    });
    let _ = tokio::time::timeout(write_timeout, async {
        conn.send(&notice).await.ok();
        conn.shutdown().await.ok();
    })
    .await;
}

async fn serve_one<P: ReplicaProvider>(
    provider: Arc<P>,
    mut conn: Connection,
    peer: Peer,
    common: &Common,
    options: &DriveOptions,
    pending: Pending,
    shutdown: &mut watch::Receiver<bool>,
) {
    let config = &common.config;
    let session_config = config.session.clone().live(true);
    let greeter = match provide(&provider, Namespace::default()).await {
        Ok(replica) => replica,
        Err(e) => {
            tracing::warn!(%peer, error = %e, "connection refused: no replica to greet it");
            refuse_with(conn, &e, config.write_timeout).await;
            return;
        }
    };
    // Never shown a Hello: ByGrant replaces it before the first arrives.
    let greeting = session_config.clone();
    let session = match blocking(&greeter, "session start", move |r| {
        Session::responder(&*r, greeting, Arc::new(|_| None))
    })
    .await
    {
        Ok(session) => session,
        Err(e) => {
            tracing::warn!(%peer, error = %e, "connection refused: the greeter failed");
            refuse_with(conn, &e, config.write_timeout).await;
            return;
        }
    };
    let mut rebind = ByGrant {
        provider,
        tokens: common.tokens.subscribe(),
        held: None,
        peer: peer.clone(),
        config: session_config,
        greeter: Some(greeter.clone()),
        slot: Slot::Pending(pending),
        rates: Arc::clone(&common.rates),
        quota: config.namespace_quota,
        gate: None,
        metrics: config.metrics.clone(),
    };
    let counts = conn.counts();
    match drive(greeter, session, &mut conn, options, shutdown, &mut rebind).await {
        Ok(report) => {
            let s = &report.stats;
            tracing::info!(
                %peer,
                rows_sent = s.rows_sent,
                rows_received = s.rows_received,
                rows_applied = s.rows_applied,
                batches_sent = s.batches_sent,
                batches_received = s.batches_received,
                mutations_processed = s.mutations_processed,
                bytes_in = counts.received(),
                bytes_out = counts.sent(),
                "session closed"
            )
        }
        Err(e) => {
            if let Some(metrics) = &config.metrics {
                metrics.session_ended(&e);
            }
            // The reason and where from; never the secret (no error says it).
            if let Some(reason) = AuthFailure::of(&e) {
                tracing::warn!(source = %peer, reason = reason.name(), error = %e, "authentication failed");
            }
            tracing::info!(%peer, error = %e, bytes_in = counts.received(), bytes_out = counts.sent(), "session ended")
        }
    }
}

/// The slot a connection holds (see [`super::limits`]).
enum Slot {
    Pending(Pending),
    Client { _slot: ClientSlot },
    None,
}

/// Authorizes a connection's first `Hello` and serves it the replica of
/// the namespace its grant names; a refused one stays with the greeter,
/// whose session refuses it as any session would (the token first, so a
/// peer without one learns nothing of the replica, not even its schema). An authorized one trades its pending
/// slot for a client slot, or is told the relay is busy.
struct ByGrant<P: ReplicaProvider> {
    provider: Arc<P>,
    /// The relay's tokens, changed by reloads.
    tokens: watch::Receiver<Option<Arc<Tokens>>>,
    /// What the authorized session was given, to tell a revocation.
    held: Option<Held>,
    peer: Peer,
    config: SessionConfig,
    /// The default namespace's replica, until the first `Hello`.
    greeter: Option<P::Replica>,
    slot: Slot,
    rates: Arc<WriteRates>,
    quota: Option<u64>,
    /// What the authorized session's writes are checked against.
    gate: Option<WriteGate>,
    metrics: Option<Arc<RelayMetrics>>,
}

impl<P: ReplicaProvider> ByGrant<P> {
    /// Whose write-rate bucket a token's writes take from: its name, or
    /// without tokens the peer's IP address.
    fn client_name(&self, tokens: Option<&Tokens>, token: Option<&str>) -> Option<String> {
        match tokens {
            Some(tokens) => tokens.check(token).map(|(name, _)| name.to_string()),
            None => Some(
                self.peer
                    .addr
                    .parse::<std::net::SocketAddr>()
                    .map_or_else(|_| self.peer.addr.clone(), |a| a.ip().to_string()),
            ),
        }
    }
}

impl<P: ReplicaProvider> Rebind<P::Replica> for ByGrant<P> {
    async fn on_hello(
        &mut self,
        hello: &Hello,
    ) -> Result<Option<(P::Replica, Session)>, SyncError> {
        // A second Hello is the session's to refuse.
        let Some(greeter) = self.greeter.take() else {
            return Ok(None);
        };
        let peer = &self.peer;
        // One look at the tokens decides this hello; a reload after it
        // is the revocation check's.
        let tokens = self.tokens.borrow_and_update().clone();
        let grant = match &tokens {
            Some(tokens) => tokens.authorize(hello.token.as_deref()),
            None => Some(Grant::read_write()),
        };
        let name = self.client_name(tokens.as_deref(), hello.token.as_deref());
        let replica = match &grant {
            Some(g) => {
                let requested = hello.namespace.as_deref();
                let Some(namespace) = g.namespace_for(requested) else {
                    return Err(SyncError::NamespaceRefused {
                        requested: requested.unwrap_or_default().to_owned(),
                    });
                };
                self.held = Some(Held::new(
                    hello.token.as_deref(),
                    tokens.clone(),
                    g.clone(),
                    hello.site,
                    namespace.clone(),
                ));
                tracing::info!(%peer, client = name.as_deref().unwrap_or("-"), access = ?g.access, %namespace, "client accepted");
                if let Slot::Pending(pending) = std::mem::replace(&mut self.slot, Slot::None) {
                    // By the token's name; without tokens, no cap of its own.
                    let token = tokens.as_ref().and(name.as_deref());
                    let client = pending.authenticate(token).inspect_err(|limit| {
                        tracing::warn!(%peer, reason = %limit, "client refused");
                    })?;
                    self.slot = Slot::Client { _slot: client };
                }
                self.gate = Some(WriteGate {
                    rates: Arc::clone(&self.rates),
                    client: name.unwrap_or_else(|| "-".into()),
                    namespace: namespace.clone(),
                    quota: self.quota,
                });
                provide(&self.provider, namespace).await?
            }
            // The greeter's session refuses it; serve_one logs why.
            None => greeter,
        };
        // The token was judged once, here; the session is told the verdict.
        let decided: Authorize = Arc::new(move |_| grant.clone());
        let config = self.config.clone();
        let metrics = self.metrics.clone();
        let session = blocking(&replica, "session start", move |r| {
            Session::responder(&*r, config, decided).observed(metrics)
        })
        .await?;
        Ok(Some((replica, session)))
    }

    fn write_gate(&self) -> Option<WriteGate> {
        self.gate.clone()
    }

    fn reauthorized(&mut self) -> impl std::future::Future<Output = ()> + Send {
        let watching = self.held.is_some();
        let tokens = &mut self.tokens;
        async move {
            if !watching || tokens.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    fn revoked(&mut self) -> Option<SyncError> {
        let current = self.tokens.borrow().clone();
        let revoked = self.held.as_mut()?.revoked_by(&current)?;
        tracing::warn!(peer = %self.peer, error = %revoked, "session closed: token revoked");
        Some(revoked)
    }
}

/// Asks `provider` for `namespace`'s replica on the blocking pool.
async fn provide<P: ReplicaProvider>(
    provider: &Arc<P>,
    namespace: Namespace,
) -> Result<P::Replica, SyncError> {
    let provider = Arc::clone(provider);
    let asked = namespace.clone();
    let found = joined(
        "replica lookup",
        tokio::task::spawn_blocking(move || provider.replica(&namespace)).await,
    )
    .and_then(|found| found);
    found.map_err(|e| match e {
        // Refusals by name say only what the peer asked.
        e @ (SyncError::UnknownNamespace(_) | SyncError::NamespaceRefused { .. }) => e,
        // Anything else may name the relay's files: the log has it, the
        // peer is told the namespace is unavailable.
        e => {
            tracing::error!(namespace = %asked, error = %e, "namespace unavailable");
            SyncError::Unavailable {
                namespace: asked,
                source: Box::new(e),
            }
        }
    })
}

/// Ends a connection no session was started for, with the notice `error`
/// calls for.
async fn refuse_with(mut conn: Connection, error: &SyncError, write_timeout: Duration) {
    let _ = tokio::time::timeout(write_timeout, async {
        if let Some(code) = error.notice_code() {
            let notice = Message::Notice(Notice {
                code,
                message: error.to_string(),
            });
            conn.send(&notice).await.ok();
        }
        conn.shutdown().await.ok();
    })
    .await;
}
