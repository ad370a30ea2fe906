//! Where a relay's connections come from. A [`Listener`] hands over each
//! accepted byte stream with what the transport knows of the other end
//! ([`Peer`]); the relay frames, authenticates and serves it, and never
//! binds a socket itself. TCP is one listener; TLS and WebSocket come
//! with [`UrlListener`](super::UrlListener), Unix sockets would be another
//! implementation of this one trait.
//!
//! Accepting is two steps so that one slow client cannot stall the others:
//! [`Listener::accept`] returns as soon as the transport has a connection
//! (for TCP: the socket), and [`Listener::upgrade`] (TLS and WebSocket
//! handshakes, by default nothing) runs in the connection's own task,
//! where the relay awaits it before any frame is read.

use super::error::SyncError;
use std::fmt;
use std::future::Future;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};

/// A source of accepted connections.
pub trait Listener: Send + 'static {
    /// The byte stream of one accepted connection.
    type Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static;

    /// Waits for the next connection. An error is about that one attempt
    /// (the relay logs it and keeps accepting).
    fn accept(&mut self) -> impl Future<Output = std::io::Result<(Self::Stream, Peer)>> + Send;

    /// Where it listens, for logs.
    fn describe(&self) -> String;

    /// Makes an accepted stream ready for frames (a TLS or WebSocket
    /// handshake), in the connection's own task: it must hold nothing of
    /// the listener, and should bound its own wait. By default the stream
    /// is ready as accepted. An error ends that connection only.
    fn upgrade(
        &self,
        stream: Self::Stream,
        peer: &Peer,
    ) -> impl Future<Output = Result<Self::Stream, SyncError>> + Send + 'static {
        let _ = peer;
        std::future::ready(Ok(stream))
    }
}

/// The other end of a connection, as its transport knows it: an address
/// for the logs today; a verified TLS identity joins it with TLS.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Peer {
    /// The peer's address (`127.0.0.1:52114`), or what stands for it.
    pub addr: String,
}

impl Peer {
    /// A peer known by its address.
    pub fn at(addr: impl fmt::Display) -> Peer {
        Peer {
            addr: addr.to_string(),
        }
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.addr)
    }
}

impl Listener for TcpListener {
    type Stream = TcpStream;

    async fn accept(&mut self) -> std::io::Result<(TcpStream, Peer)> {
        let (stream, addr) = TcpListener::accept(self).await?;
        // Nagle off: batches are whole frames, and small acknowledgements
        // must not wait.
        stream.set_nodelay(true).ok();
        Ok((stream, Peer::at(addr)))
    }

    fn describe(&self) -> String {
        self.local_addr()
            .map_or_else(|e| format!("tcp (address unknown: {e})"), |a| a.to_string())
    }
}
