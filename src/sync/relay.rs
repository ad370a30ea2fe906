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
//! address) and only then a *client* slot (`max_connections`), so sockets
//! without a token never lock clients out; one over a cap gets a `Busy`
//! notice. Every connection has its own deadlines, measured from its own
//! frames and never re-armed by other clients' traffic: the hello within
//! the handshake deadline, a frame within the idle timeout while a request
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
use super::provider::{Namespace, ReplicaProvider};
use super::session::{Authorize, Grant, Session, SessionConfig};
use super::shared::{SharedReplica, SharedStore};
use super::tokens::Tokens;
use super::transport::Connection;
use super::wire::MAX_MESSAGE_PAYLOAD;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
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
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            tokens: None,
            max_connections: 4096,
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

    fn drive_options(&self) -> DriveOptions {
        DriveOptions {
            until_caught_up: false,
            idle: self.idle,
            handshake: Some(self.handshake_timeout),
            quiet: self.quiet_timeout,
            write_timeout: self.write_timeout,
        }
    }
}

/// A relay over a [`Listener`] (TCP unless said otherwise), serving the
/// replicas of a [`ReplicaProvider`] (one [`SharedStore`] unless said
/// otherwise).
#[derive(Debug)]
pub struct Relay<L: Listener = TcpListener, P: ReplicaProvider = SharedStore> {
    provider: Arc<P>,
    listener: L,
    config: RelayConfig,
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
            config,
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
        );
        let common = Arc::new(Common {
            authorize: match &config.tokens {
                Some(tokens) => tokens.authorizer(),
                None => Arc::new(|_| Some(Grant::read_write())),
            },
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
            let (stream, peer) = match accepted {
                Ok(pair) => pair,
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
                    tracing::warn!(%peer, reason = %limit, "connection refused");
                    let (max_message, deadline) = (config.max_message, config.write_timeout);
                    sessions.spawn(async move {
                        if let Some(conn) = upgraded(upgrade, &peer, max_message, deadline).await {
                            refuse(conn, limit, deadline).await;
                        }
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
                if let Some(conn) = upgraded(upgrade, &peer, max_message, deadline).await {
                    serve_one(provider, conn, peer, &common, pending, &mut shutdown).await;
                }
            });
        }
        tracing::info!(sessions = sessions.len(), "relay shutting down");
        while sessions.join_next().await.is_some() {}
        Ok(())
    }
}

/// How long the relay waits after a failed accept.
const ACCEPT_PAUSE: Duration = Duration::from_millis(50);

/// What every session of a relay shares.
struct Common {
    config: Arc<RelayConfig>,
    authorize: Authorize,
    rates: Arc<WriteRates>,
    options: DriveOptions,
}

/// Awaits an accepted stream's upgrade ([`Listener::upgrade`]) within
/// `deadline` and frames it; a failed or slow handshake is logged and ends
/// that connection only.
async fn upgraded<S, F>(
    upgrade: F,
    peer: &Peer,
    max_message: usize,
    deadline: Duration,
) -> Option<Connection>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
    F: std::future::Future<Output = Result<S, SyncError>>,
{
    match tokio::time::timeout(deadline, upgrade).await {
        Ok(Ok(stream)) => {
            let conn = Connection::new(stream, max_message);
            conn.set_accepting();
            Some(conn)
        }
        Ok(Err(e)) => {
            tracing::warn!(%peer, error = %e, "connection refused: handshake failed");
            None
        }
        Err(_) => {
            tracing::warn!(%peer, seconds = deadline.as_secs_f64(), "connection dropped: no handshake in time");
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
    let session = greeter
        .with_replica(|r| Session::responder(&*r, session_config.clone(), Arc::new(|_| None)));
    let mut rebind = ByGrant {
        provider,
        authorize: Arc::clone(&common.authorize),
        tokens: config.tokens.clone(),
        peer: peer.clone(),
        config: session_config,
        greeter: Some(greeter.clone()),
        slot: Slot::Pending(pending),
        rates: Arc::clone(&common.rates),
        quota: config.namespace_quota,
        gate: None,
    };
    let counts = conn.counts();
    match drive(
        greeter,
        session,
        &mut conn,
        &common.options,
        shutdown,
        &mut rebind,
    )
    .await
    {
        Ok(stats) => {
            tracing::info!(%peer, ?stats, bytes_in = counts.received(), bytes_out = counts.sent(), "session closed")
        }
        Err(e) => {
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
/// whose session refuses it as any session would (schema and site are
/// checked first, then the token). An authorized one trades its pending
/// slot for a client slot, or is told the relay is busy.
struct ByGrant<P: ReplicaProvider> {
    provider: Arc<P>,
    authorize: Authorize,
    tokens: Option<Arc<Tokens>>,
    peer: Peer,
    config: SessionConfig,
    /// The default namespace's replica, until the first `Hello`.
    greeter: Option<P::Replica>,
    slot: Slot,
    rates: Arc<WriteRates>,
    quota: Option<u64>,
    /// What the authorized session's writes are checked against.
    gate: Option<WriteGate>,
}

impl<P: ReplicaProvider> ByGrant<P> {
    /// Whose write-rate bucket a token's writes take from: its name, or
    /// without tokens the peer's IP address.
    fn client_name(&self, token: Option<&str>) -> Option<String> {
        match &self.tokens {
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
        let grant = (self.authorize)(hello.token.as_deref());
        let name = self.client_name(hello.token.as_deref());
        let replica = match &grant {
            Some(g) => {
                let requested = hello.namespace.as_deref();
                let Some(namespace) = g.namespace_for(requested) else {
                    tracing::warn!(%peer, client = name.as_deref().unwrap_or("-"), reason = "namespace refused", "client refused");
                    return Err(SyncError::NamespaceRefused {
                        requested: requested.unwrap_or_default().to_owned(),
                    });
                };
                tracing::info!(%peer, client = name.as_deref().unwrap_or("-"), access = ?g.access, %namespace, "client accepted");
                if let Slot::Pending(pending) = std::mem::replace(&mut self.slot, Slot::None) {
                    let client = pending.authenticate().inspect_err(|limit| {
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
            None => {
                tracing::warn!(%peer, presented = hello.token.is_some(), "client refused: bad token");
                greeter
            }
        };
        // The token was judged once, here; the session is told the verdict.
        let decided: Authorize = Arc::new(move |_| grant.clone());
        let config = self.config.clone();
        let session = replica.with_replica(|r| Session::responder(&*r, config, decided));
        Ok(Some((replica, session)))
    }

    fn write_gate(&self) -> Option<WriteGate> {
        self.gate.clone()
    }
}

/// Asks `provider` for `namespace`'s replica on the blocking pool.
async fn provide<P: ReplicaProvider>(
    provider: &Arc<P>,
    namespace: Namespace,
) -> Result<P::Replica, SyncError> {
    let provider = Arc::clone(provider);
    tokio::task::spawn_blocking(move || provider.replica(&namespace))
        .await
        .map_err(|e| SyncError::Io(std::io::Error::other(e)))?
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
