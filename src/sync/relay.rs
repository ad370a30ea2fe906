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
//! Limits: concurrent connections (one over the limit gets a `Busy`
//! notice), message size, and an idle timeout. Shutdown (the watch turning
//! true) stops accepting, sends every client a `Shutdown` notice and waits
//! for the sessions to end.
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
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

/// Relay settings.
#[must_use]
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Who may connect; `None` lets everyone read and write (`meldb serve`
    /// on a trusted network).
    pub tokens: Option<Arc<Tokens>>,
    /// Concurrent connections (at most).
    pub max_connections: usize,
    /// The largest message payload accepted from a client, in bytes.
    pub max_message: usize,
    /// Silence after which a session is probed, and after twice which an
    /// unfinished one is dropped.
    pub idle: Duration,
    /// Batch sizes and window of the sessions.
    pub session: SessionConfig,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            tokens: None,
            max_connections: 256,
            max_message: 16 << 20,
            idle: Duration::from_secs(30),
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

    /// Concurrent connection limit.
    pub fn max_connections(mut self, n: usize) -> Self {
        self.max_connections = n.max(1);
        self
    }

    /// Message size limit in bytes (capped at 64 MiB).
    pub fn max_message(mut self, bytes: usize) -> Self {
        self.max_message = bytes.clamp(1024, MAX_MESSAGE_PAYLOAD);
        self
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
        let slots = Arc::new(Semaphore::new(self.config.max_connections));
        let authorize: Authorize = match &self.config.tokens {
            Some(tokens) => tokens.authorizer(),
            None => Arc::new(|_| Some(Grant::read_write())),
        };
        let mut sessions = JoinSet::new();
        let config = Arc::new(self.config);
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
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            };
            // TLS and WebSocket handshakes run in the connection's task.
            let upgrade = listener.upgrade(stream, &peer);
            let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
                tracing::warn!(%peer, "connection refused: too many connections");
                let (limit, max_message) = (config.max_connections, config.max_message);
                sessions.spawn(async move {
                    if let Some(conn) = upgraded(upgrade, &peer, max_message).await {
                        refuse(conn, limit).await;
                    }
                });
                continue;
            };
            let provider = Arc::clone(&self.provider);
            let config = Arc::clone(&config);
            let authorize = Arc::clone(&authorize);
            let mut shutdown = shutdown.clone();
            sessions.spawn(async move {
                if let Some(conn) = upgraded(upgrade, &peer, config.max_message).await {
                    serve_one(provider, conn, peer, &config, authorize, &mut shutdown).await;
                }
                drop(permit);
            });
        }
        tracing::info!(sessions = sessions.len(), "relay shutting down");
        while sessions.join_next().await.is_some() {}
        Ok(())
    }
}

/// Awaits an accepted stream's upgrade ([`Listener::upgrade`]) and frames
/// it; a failed handshake is logged and ends that connection only.
async fn upgraded<S, F>(upgrade: F, peer: &Peer, max_message: usize) -> Option<Connection>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
    F: std::future::Future<Output = Result<S, SyncError>>,
{
    match upgrade.await {
        Ok(stream) => {
            let conn = Connection::new(stream, max_message);
            conn.set_accepting();
            Some(conn)
        }
        Err(e) => {
            tracing::warn!(%peer, error = %e, "connection refused: handshake failed");
            None
        }
    }
}

async fn refuse(mut conn: Connection, limit: usize) {
    let notice = Message::Notice(Notice {
        code: NoticeCode::Busy,
        message: format!("the relay serves at most {limit} connections; try again later"),
    });
    conn.send(&notice).await.ok();
    conn.shutdown().await.ok();
}

async fn serve_one<P: ReplicaProvider>(
    provider: Arc<P>,
    mut conn: Connection,
    peer: Peer,
    config: &RelayConfig,
    authorize: Authorize,
    shutdown: &mut watch::Receiver<bool>,
) {
    let tokens = config.tokens.clone();
    let who = peer.clone();
    let named: Authorize = Arc::new(move |token| {
        let peer = &who;
        let grant = authorize(token);
        let name = tokens
            .as_ref()
            .and_then(|t| t.check(token).map(|(n, _)| n.to_string()));
        match &grant {
            Some(g) => {
                tracing::info!(%peer, client = name.as_deref().unwrap_or("-"), access = ?g.access, namespace = %g.namespace, "client accepted")
            }
            None => tracing::warn!(%peer, presented = token.is_some(), "client refused: bad token"),
        }
        grant
    });
    let session_config = config.session.clone().live(true);
    let greeter = match provide(&provider, Namespace::default()).await {
        Ok(replica) => replica,
        Err(e) => {
            tracing::warn!(%peer, error = %e, "connection refused: no replica to greet it");
            refuse_with(conn, &e).await;
            return;
        }
    };
    // Never shown a Hello: ByGrant replaces it before the first arrives.
    let session = greeter
        .with_replica(|r| Session::responder(&*r, session_config.clone(), Arc::new(|_| None)));
    let mut rebind = ByGrant {
        provider,
        authorize: named,
        config: session_config,
        greeter: Some(greeter.clone()),
    };
    let options = DriveOptions {
        until_caught_up: false,
        idle: config.idle,
    };
    let counts = conn.counts();
    match drive(greeter, session, &mut conn, &options, shutdown, &mut rebind).await {
        Ok(stats) => {
            tracing::info!(%peer, ?stats, bytes_in = counts.received(), bytes_out = counts.sent(), "session closed")
        }
        Err(e) => {
            tracing::info!(%peer, error = %e, bytes_in = counts.received(), bytes_out = counts.sent(), "session ended")
        }
    }
}

/// Authorizes a connection's first `Hello` and serves it the replica of
/// the namespace its grant names; a refused one stays with the greeter,
/// whose session refuses it as any session would (schema and site are
/// checked first, then the token).
struct ByGrant<P: ReplicaProvider> {
    provider: Arc<P>,
    authorize: Authorize,
    config: SessionConfig,
    /// The default namespace's replica, until the first `Hello`.
    greeter: Option<P::Replica>,
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
        let grant = (self.authorize)(hello.token.as_deref());
        let replica = match &grant {
            Some(grant) => provide(&self.provider, grant.namespace.clone()).await?,
            None => greeter,
        };
        // The token was judged once, here; the session is told the verdict.
        let decided: Authorize = Arc::new(move |_| grant.clone());
        let config = self.config.clone();
        let session = replica.with_replica(|r| Session::responder(&*r, config, decided));
        Ok(Some((replica, session)))
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
async fn refuse_with(mut conn: Connection, error: &SyncError) {
    if let Some(code) = error.notice_code() {
        let notice = Message::Notice(Notice {
            code,
            message: error.to_string(),
        });
        conn.send(&notice).await.ok();
    }
    conn.shutdown().await.ok();
}
