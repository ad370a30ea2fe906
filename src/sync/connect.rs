//! Connecting to a peer by URL ([`Connector`]) and the sync calls that
//! take one ([`sync_once_url`], [`sync_continuously_url`]).
//!
//! A connection is TCP, then TLS for `tls://` and `wss://` (the
//! certificate checked against the URL's host), then the WebSocket
//! handshake for `ws://` and `wss://`; all of it within the connector's
//! timeout. The result is an ordinary [`Connection`]: the session above
//! cannot tell the transports apart.

use super::continuous::ContinuousSync;
use super::driver::{sync_once, Backoff, SyncReport};
use super::error::SyncError;
use super::listen::check_supported;
use super::net::{NetStream, TransportError};
use super::session::SessionConfig;
use super::shared::SharedReplica;
use super::transport::Connection;
use super::url::{PeerUrl, Scheme};
use super::wire::MAX_MESSAGE_PAYLOAD;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::watch;

/// Opens connections to peer URLs.
///
/// ```no_run
/// # async fn example(store: meldb::sync::SharedStore) -> Result<(), Box<dyn std::error::Error>> {
/// use meldb::sync::{sync_once_url, ClientTls, Connector, SessionConfig};
/// let connector = Connector::new().tls(ClientTls::with_ca_file("ca.pem".as_ref())?);
/// let url = "wss://relay.example:8443/sync".parse()?;
/// let config = SessionConfig::default().token(Some("s3cret-till-1".into()));
/// sync_once_url(&store, &url, config, &connector).await?;
/// # Ok(()) }
/// ```
#[must_use]
#[derive(Clone, Debug)]
pub struct Connector {
    #[cfg(feature = "tls")]
    tls: Option<super::tls::ClientTls>,
    timeout: Duration,
    max_message: usize,
}

impl Default for Connector {
    fn default() -> Self {
        Connector {
            #[cfg(feature = "tls")]
            tls: None,
            timeout: Duration::from_secs(30),
            max_message: MAX_MESSAGE_PAYLOAD,
        }
    }
}

impl Connector {
    /// Trusts the system's roots for TLS, gives up on a connection after
    /// 30 s, accepts messages up to the protocol's limit.
    pub fn new() -> Connector {
        Connector::default()
    }

    /// What TLS trusts (instead of the system's roots).
    #[cfg(feature = "tls")]
    pub fn tls(mut self, tls: super::tls::ClientTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// How long connecting and the handshakes may take (at least 1 ms).
    pub fn timeout(mut self, limit: Duration) -> Self {
        self.timeout = limit.max(Duration::from_millis(1));
        self
    }

    /// The largest message payload accepted from the peer.
    pub fn max_message(mut self, bytes: usize) -> Self {
        self.max_message = bytes.min(MAX_MESSAGE_PAYLOAD);
        self
    }

    /// Connects to `url` and frames the stream.
    ///
    /// # Errors
    ///
    /// [`SyncError::Transport`]: the connection, the TLS handshake (an
    /// untrusted or wrong certificate, a peer that is not TLS) or the
    /// WebSocket handshake failed, or took longer than the timeout.
    pub async fn connect(&self, url: &PeerUrl) -> Result<Connection, SyncError> {
        let stream = self.connect_stream(url).await?;
        Ok(Connection::new(stream, self.max_message))
    }

    /// Connects to `url` and runs its handshakes: the byte stream, for
    /// [`Connection::new`].
    pub async fn connect_stream(&self, url: &PeerUrl) -> Result<NetStream, SyncError> {
        check_supported(url)?;
        let stage = match url.scheme() {
            Scheme::Tcp => "connecting",
            Scheme::Tls => "connecting and the TLS handshake",
            Scheme::Ws => "connecting and the WebSocket handshake",
            Scheme::Wss => "connecting and the TLS and WebSocket handshakes",
        };
        match tokio::time::timeout(self.timeout, self.open(url)).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(TransportError::Timeout {
                url: url.to_string(),
                stage,
                seconds: self.timeout.as_secs(),
            }
            .into()),
        }
    }

    async fn open(&self, url: &PeerUrl) -> Result<NetStream, TransportError> {
        let shown = url.to_string();
        let tcp = TcpStream::connect(url.authority())
            .await
            .map_err(|source| TransportError::Connect {
                url: shown.clone(),
                source,
            })?;
        // Nagle off: batches are whole frames, and small acknowledgements
        // must not wait.
        tcp.set_nodelay(true).ok();
        match url.scheme() {
            Scheme::Tcp => Ok(NetStream::new(tcp)),
            #[cfg(feature = "tls")]
            Scheme::Tls => Ok(NetStream::new(self.tls_over(tcp, url, &shown).await?)),
            #[cfg(feature = "websocket")]
            Scheme::Ws => Ok(NetStream::new(
                super::websocket::connect(tcp, &shown).await?,
            )),
            #[cfg(all(feature = "tls", feature = "websocket"))]
            Scheme::Wss => {
                let tls = self.tls_over(tcp, url, &shown).await?;
                Ok(NetStream::new(
                    super::websocket::connect(tls, &shown).await?,
                ))
            }
            #[allow(unreachable_patterns, reason = "check_supported refused these")]
            _ => Err(TransportError::Unsupported {
                url: shown,
                scheme: url.scheme().as_str(),
                feature: "tls",
            }),
        }
    }

    #[cfg(feature = "tls")]
    async fn tls_over(
        &self,
        tcp: TcpStream,
        url: &PeerUrl,
        shown: &str,
    ) -> Result<tokio_rustls::client::TlsStream<TcpStream>, TransportError> {
        let system;
        let tls = match &self.tls {
            Some(tls) => tls,
            None => {
                system = super::tls::ClientTls::system_roots()?;
                &system
            }
        };
        tls.connect(tcp, url.host(), shown).await
    }
}

/// Connects to `url` and syncs once (see [`sync_once`]).
///
/// # Errors
///
/// As [`Connector::connect`], then as [`sync_once`].
pub async fn sync_once_url<H: SharedReplica>(
    store: &H,
    url: &PeerUrl,
    config: SessionConfig,
    connector: &Connector,
) -> Result<SyncReport, SyncError> {
    let mut conn = connector.connect(url).await?;
    sync_once(store, &mut conn, config).await
}

/// Stays connected to `url` and syncs continuously, as
/// [`sync_continuously`](super::sync_continuously) does for a TCP address.
/// For its status as it goes, use [`ContinuousSync`](super::ContinuousSync).
pub async fn sync_continuously_url<H: SharedReplica>(
    store: H,
    url: PeerUrl,
    connector: Connector,
    config: SessionConfig,
    backoff: Backoff,
    shutdown: watch::Receiver<bool>,
) -> Vec<SyncReport> {
    ContinuousSync::new(store, url)
        .connector(connector)
        .config(config)
        .backoff(backoff)
        .run(shutdown)
        .await
}
