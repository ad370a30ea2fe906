//! The byte streams the URL transports hand to a [`Connection`]
//! ([`NetStream`]), their errors ([`TransportError`]), and the answer a
//! TLS or WebSocket listener gives a plain meldb client.
//!
//! A [`NetStream`] is either a TCP stream just accepted, whose TLS or
//! WebSocket handshake has not run yet (see [`super::UrlListener`]: the
//! handshake runs in the connection's own task, never in the accept loop),
//! or a ready stream: TCP, TLS, WebSocket, or anything an app supplies.
//!
//! [`Connection`]: super::Connection

use super::message::{Message, Notice, NoticeCode};
use super::url::UrlError;
use super::wire::{self, ProtocolVersion};
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

/// Why a connection could not be carried: a URL, a certificate, a
/// handshake. Each names the URL or file it is about.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The peer URL does not parse.
    #[error(transparent)]
    Url(#[from] UrlError),
    /// A transport this build was compiled without.
    #[error("{url}: this meldb was built without {scheme} support (the `{feature}` feature)")]
    Unsupported {
        /// The URL.
        url: String,
        /// Its scheme.
        scheme: &'static str,
        /// The Cargo feature that adds it.
        feature: &'static str,
    },
    /// The TCP connection could not be made.
    #[error("cannot connect to {url}: {source}")]
    Connect {
        /// The URL.
        url: String,
        /// What the system said.
        source: io::Error,
    },
    /// A listening socket could not be bound.
    #[error("cannot listen on {url}: {source}")]
    Bind {
        /// The URL.
        url: String,
        /// What the system said.
        source: io::Error,
    },
    /// Connecting, or a TLS or WebSocket handshake, took too long.
    #[error("{url}: {stage} did not finish within {seconds} s")]
    Timeout {
        /// The URL (or peer address).
        url: String,
        /// What was under way ("the TLS handshake").
        stage: &'static str,
        /// The limit.
        seconds: u64,
    },
    /// The TLS handshake failed.
    #[error("TLS with {url}: {problem}")]
    Tls {
        /// The URL (or peer address).
        url: String,
        /// Why, and what to do about it.
        problem: String,
    },
    /// The WebSocket handshake failed.
    #[error("WebSocket with {url}: {problem}")]
    WebSocket {
        /// The URL (or peer address).
        url: String,
        /// Why.
        problem: String,
    },
    /// A meldb client sent plain frames to a TLS or WebSocket listener (it
    /// was told which URL to use).
    #[error("{peer}: a plain tcp:// client on a {scheme}:// listener (told to connect with {scheme}://)")]
    PlainClient {
        /// The client's address.
        peer: String,
        /// The listener's scheme.
        scheme: &'static str,
    },
    /// A certificate, key or CA file that cannot be used.
    #[error("{what} file {}: {problem}", path.display())]
    Pem {
        /// "TLS certificate", "TLS private key", "CA certificate".
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// TLS settings that do not fit together (a key that is not the
    /// certificate's, no trusted roots).
    #[error("TLS setup: {problem}")]
    TlsSetup {
        /// What is wrong.
        problem: String,
    },
    /// A `tls://` or `wss://` listener without a certificate and key.
    #[error("{url}: a TLS listener needs a certificate and key (--tls-cert FILE --tls-key FILE)")]
    NoServerCertificate {
        /// The listen URL.
        url: String,
    },
}

/// Something that carries bytes both ways, boxed.
pub(crate) trait Io: AsyncRead + AsyncWrite + Send {}
impl<T: AsyncRead + AsyncWrite + Send> Io for T {}

/// A connection's byte stream on any of the URL transports (or one an app
/// supplies, [`NetStream::new`]).
pub struct NetStream {
    pub(crate) inner: Inner,
}

pub(crate) enum Inner {
    /// Accepted, not upgraded yet: raw TCP bytes, and what the listener
    /// must still do with them.
    Accepted(TcpStream, std::sync::Arc<super::listen::Endpoint>),
    /// Ready for frames.
    Ready(Pin<Box<dyn Io>>),
}

impl std::fmt::Debug for NetStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.inner {
            Inner::Accepted(..) => "NetStream(accepted)",
            Inner::Ready(_) => "NetStream(ready)",
        })
    }
}

impl NetStream {
    /// Wraps any byte stream (an app's own transport).
    pub fn new<S>(stream: S) -> NetStream
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        NetStream {
            inner: Inner::Ready(Box::pin(stream)),
        }
    }

    fn io(&mut self) -> Pin<&mut dyn Io> {
        match &mut self.inner {
            Inner::Accepted(tcp, _) => {
                let tcp: Pin<&mut TcpStream> = Pin::new(tcp);
                tcp
            }
            Inner::Ready(io) => io.as_mut(),
        }
    }
}

impl AsyncRead for NetStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.get_mut().io().poll_read(cx, buf)
    }
}

impl AsyncWrite for NetStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().io().poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().io().poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().io().poll_shutdown(cx)
    }
}

/// Whether the first byte a client sent opens a meldb frame (`MLDP`): a
/// TLS client opens with a handshake record (`0x16`), a WebSocket client
/// with `GET`. Waits for that byte (the caller bounds the wait).
pub(crate) async fn sends_plain_frames(tcp: &TcpStream) -> io::Result<bool> {
    let mut first = [0u8; 1];
    let n = tcp.peek(&mut first).await?;
    Ok(n == 1 && first[0] == wire::MESSAGE_MAGIC[0])
}

/// Tells a plain meldb client, in a notice it can read, which URL this
/// listener wants; then closes, after reading what it sent (closing with
/// unread bytes would reset the connection and lose the notice).
pub(crate) async fn answer_plain_client(mut tcp: TcpStream, scheme: &str, port: u16) {
    let notice = Message::Notice(Notice {
        code: NoticeCode::Protocol,
        message: format!(
            "this port speaks {scheme}://, not plain TCP: connect with {scheme}://HOST:{port}"
        ),
    });
    let bytes = wire::encode_message_as(&notice, ProtocolVersion::OLDEST);
    if tcp.write_all(&bytes).await.is_ok() {
        let _ = tcp.shutdown().await;
        let mut sink = [0u8; 4096];
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            let mut left = 64usize << 10;
            while left > 0 {
                match tcp.read(&mut sink).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => left = left.saturating_sub(n),
                }
            }
        })
        .await;
    }
}

impl From<UrlError> for super::SyncError {
    fn from(e: UrlError) -> Self {
        super::SyncError::Transport(e.into())
    }
}
