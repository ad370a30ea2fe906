//! A relay's listeners by URL ([`UrlListener`]): one or more of
//! `tcp://`, `tls://`, `ws://` and `wss://` on their own ports, served by
//! one relay.
//!
//! Invariant: [`Listener::accept`] only accepts the TCP connection and
//! returns at once. The TLS and WebSocket handshakes (and the answer to a
//! plain meldb client on such a port) run in [`Listener::upgrade`], which
//! the relay awaits in the connection's own task, each bounded by
//! [`ListenOptions::handshake_timeout`]; a slow or silent client holds up
//! no one else.

use super::error::SyncError;
use super::listener::{Listener, Peer};
use super::net::{self, Inner, NetStream, TransportError};
use super::url::{PeerUrl, Scheme};
use std::future::{poll_fn, Future};
use std::io;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};

/// How a [`UrlListener`] serves its ports.
#[must_use]
#[derive(Clone, Debug)]
pub struct ListenOptions {
    #[cfg(feature = "tls")]
    tls: Option<super::tls::ServerTls>,
    handshake_timeout: Duration,
}

impl Default for ListenOptions {
    fn default() -> Self {
        ListenOptions {
            #[cfg(feature = "tls")]
            tls: None,
            handshake_timeout: Duration::from_secs(10),
        }
    }
}

impl ListenOptions {
    /// Defaults: no TLS identity, handshakes within 10 s, messages up to
    /// the protocol's limit.
    pub fn new() -> ListenOptions {
        ListenOptions::default()
    }

    /// The certificate and key `tls://` and `wss://` listeners serve.
    #[cfg(feature = "tls")]
    pub fn tls(mut self, tls: super::tls::ServerTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// How long a client may take over the TLS and WebSocket handshakes
    /// (at least 1 ms).
    pub fn handshake_timeout(mut self, limit: Duration) -> Self {
        self.handshake_timeout = limit.max(Duration::from_millis(1));
        self
    }
}

/// What one port does with a connection it accepted.
pub(crate) struct Endpoint {
    /// The URL it listens on, with the port it got.
    url: PeerUrl,
    /// Its identity, read at each handshake (a reload may swap it).
    #[cfg(feature = "tls")]
    tls: Option<super::tls::ServerTls>,
    handshake_timeout: Duration,
}

/// Listens on one or more URLs; each connection's transport is the
/// scheme of the port it came in on.
///
/// ```no_run
/// # async fn example(store: meldb::sync::SharedStore, tls: meldb::sync::ServerTls) -> Result<(), meldb::sync::SyncError> {
/// use meldb::sync::{ListenOptions, Relay, RelayConfig, UrlListener};
/// let urls = ["tls://0.0.0.0:7443".parse()?, "wss://0.0.0.0:8443/sync".parse()?];
/// let listener = UrlListener::bind(&urls, &ListenOptions::new().tls(tls)).await?;
/// let (_stop, shutdown) = tokio::sync::watch::channel(false);
/// Relay::new(store, listener, RelayConfig::default()).run(shutdown).await?;
/// # Ok(()) }
/// ```
pub struct UrlListener {
    ports: Vec<(TcpListener, Arc<Endpoint>)>,
    /// Where the next accept starts looking, so no port starves another.
    next: usize,
}

impl std::fmt::Debug for UrlListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UrlListener")
            .field("urls", &self.local_urls())
            .finish_non_exhaustive()
    }
}

impl UrlListener {
    /// Whether [`Self::bind`] would take these URLs and options, short of
    /// binding: at least one URL, each of a scheme this build has, and a
    /// certificate for every `tls://` and `wss://` one.
    ///
    /// # Errors
    ///
    /// What `bind` would refuse before it binds, the same error.
    pub fn check(urls: &[PeerUrl], options: &ListenOptions) -> Result<(), SyncError> {
        if urls.is_empty() {
            return Err(SyncError::Io(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a relay needs at least one address to listen on",
            )));
        }
        for url in urls {
            check_supported(url)?;
            #[cfg(feature = "tls")]
            if url.scheme().is_tls() && options.tls.is_none() {
                return Err(TransportError::NoServerCertificate {
                    url: url.to_string(),
                }
                .into());
            }
            #[cfg(not(feature = "tls"))]
            let _ = options;
        }
        Ok(())
    }

    /// Binds every URL (port 0: any free port; see [`Self::local_urls`]).
    ///
    /// # Errors
    ///
    /// No URLs; a `tls://` or `wss://` URL without `ListenOptions::tls`;
    /// a scheme this build lacks; a port that cannot be bound (named).
    pub async fn bind(urls: &[PeerUrl], options: &ListenOptions) -> Result<UrlListener, SyncError> {
        Self::check(urls, options)?;
        let mut ports = Vec::with_capacity(urls.len());
        for url in urls {
            check_supported(url)?;
            #[cfg(feature = "tls")]
            let tls = match (&options.tls, url.scheme().is_tls()) {
                (Some(tls), true) => Some(tls.clone()),
                (None, true) => {
                    return Err(TransportError::NoServerCertificate {
                        url: url.to_string(),
                    }
                    .into())
                }
                (_, false) => None,
            };
            let bind = |source| TransportError::Bind {
                url: url.to_string(),
                source,
            };
            let listener = TcpListener::bind(url.authority()).await.map_err(bind)?;
            let port = listener.local_addr().map_err(bind)?.port();
            ports.push((
                listener,
                Arc::new(Endpoint {
                    url: url.with_port(port),
                    #[cfg(feature = "tls")]
                    tls,
                    handshake_timeout: options.handshake_timeout,
                }),
            ));
        }
        Ok(UrlListener { ports, next: 0 })
    }

    /// The URLs it listens on, with the ports they got.
    pub fn local_urls(&self) -> Vec<PeerUrl> {
        self.ports.iter().map(|(_, e)| e.url.clone()).collect()
    }
}

/// Refuses, at bind or connect time, a scheme this build cannot serve.
pub(crate) fn check_supported(url: &PeerUrl) -> Result<(), TransportError> {
    let missing = match url.scheme() {
        Scheme::Tls | Scheme::Wss if cfg!(not(feature = "tls")) => Some("tls"),
        Scheme::Ws | Scheme::Wss if cfg!(not(feature = "websocket")) => Some("websocket"),
        _ => None,
    };
    match missing {
        Some(feature) => Err(TransportError::Unsupported {
            url: url.to_string(),
            scheme: url.scheme().as_str(),
            feature,
        }),
        None => Ok(()),
    }
}

impl Listener for UrlListener {
    type Stream = NetStream;

    async fn accept(&mut self) -> io::Result<(NetStream, Peer)> {
        let (tcp, addr, endpoint) = poll_fn(|cx| {
            let count = self.ports.len();
            for i in 0..count {
                let at = (self.next + i) % count;
                let (listener, endpoint) = &self.ports[at];
                if let Poll::Ready(result) = listener.poll_accept(cx) {
                    self.next = (at + 1) % count;
                    return Poll::Ready(
                        result.map(|(tcp, addr)| (tcp, addr, Arc::clone(endpoint))),
                    );
                }
            }
            Poll::Pending
        })
        .await?;
        // Nagle off: batches are whole frames, and small acknowledgements
        // must not wait.
        tcp.set_nodelay(true).ok();
        Ok((
            NetStream {
                inner: Inner::Accepted(tcp, endpoint),
            },
            Peer::at(addr),
        ))
    }

    fn describe(&self) -> String {
        self.local_urls()
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn upgrade(
        &self,
        stream: NetStream,
        peer: &Peer,
    ) -> impl Future<Output = Result<NetStream, SyncError>> + Send + 'static {
        upgrade(stream, peer.to_string())
    }
}

/// Runs the handshakes of an accepted stream (a ready stream passes
/// through).
async fn upgrade(stream: NetStream, peer: String) -> Result<NetStream, SyncError> {
    let (tcp, endpoint) = match stream.inner {
        Inner::Accepted(tcp, endpoint) => (tcp, endpoint),
        ready @ Inner::Ready(_) => return Ok(NetStream { inner: ready }),
    };
    let scheme = endpoint.url.scheme();
    if scheme == Scheme::Tcp {
        return Ok(NetStream::new(tcp));
    }
    let limit = endpoint.handshake_timeout;
    let stage = if scheme.is_tls() {
        "the TLS handshake"
    } else {
        "the WebSocket handshake"
    };
    match tokio::time::timeout(limit, handshake(tcp, &endpoint, &peer)).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(TransportError::Timeout {
            url: peer,
            stage,
            seconds: limit.as_secs(),
        }
        .into()),
    }
}

async fn handshake(
    tcp: TcpStream,
    endpoint: &Endpoint,
    peer: &str,
) -> Result<NetStream, TransportError> {
    let scheme = endpoint.url.scheme();
    if net::sends_plain_frames(&tcp).await.unwrap_or(false) {
        net::answer_plain_client(tcp, scheme.as_str(), endpoint.url.port()).await;
        return Err(TransportError::PlainClient {
            peer: peer.to_string(),
            scheme: scheme.as_str(),
        });
    }
    match scheme {
        Scheme::Tcp => Ok(NetStream::new(tcp)),
        #[cfg(feature = "tls")]
        Scheme::Tls => Ok(NetStream::new(accept_tls(tcp, endpoint, peer).await?)),
        #[cfg(feature = "websocket")]
        Scheme::Ws => Ok(NetStream::new(
            super::websocket::accept(tcp, endpoint.url.path(), peer).await?,
        )),
        #[cfg(all(feature = "tls", feature = "websocket"))]
        Scheme::Wss => {
            let tls = accept_tls(tcp, endpoint, peer).await?;
            Ok(NetStream::new(
                super::websocket::accept(tls, endpoint.url.path(), peer).await?,
            ))
        }
        #[allow(
            unreachable_patterns,
            reason = "schemes compiled out are refused at bind"
        )]
        _ => Err(TransportError::Unsupported {
            url: endpoint.url.to_string(),
            scheme: scheme.as_str(),
            feature: "tls",
        }),
    }
}

#[cfg(feature = "tls")]
async fn accept_tls(
    tcp: TcpStream,
    endpoint: &Endpoint,
    peer: &str,
) -> Result<tokio_rustls::server::TlsStream<TcpStream>, TransportError> {
    let acceptor = endpoint
        .tls
        .as_ref()
        .ok_or_else(|| TransportError::NoServerCertificate {
            url: endpoint.url.to_string(),
        })?;
    acceptor
        .acceptor()
        .accept(tcp)
        .await
        .map_err(|e| TransportError::Tls {
            url: peer.to_string(),
            problem: super::tls::explain_accept(&e),
        })
}
