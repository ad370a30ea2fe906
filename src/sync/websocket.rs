//! WebSocket as a byte stream for meldb frames (feature `websocket`).
//!
//! Each write of the [`Connection`](super::Connection) goes out as binary
//! messages of at most [`MESSAGE_BYTES`]; reads hand over the bytes of
//! binary messages in order, so the frame reader above sees the same byte
//! stream as over TCP, and a frame bigger than one message spans several.
//! So what tungstenite buffers for a connection is bounded by one
//! message, whatever the largest frame: a peer cannot make a relay hold
//! megabytes before its hello's length (64 KiB at most) is checked. Pings are answered by
//! tungstenite (the pong goes out with the next read or write); a close
//! message is the end of the stream; a text message is a protocol error
//! (`InvalidData`), which the session reports to the peer as a bad frame.
//!
//! The WebSocket runs over a stream this crate set up (TCP, or TLS from
//! [`super::tls`]), so there is one TLS stack and no tungstenite TLS
//! feature.

use super::net::TransportError;
use futures_util::{Sink, Stream};
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Bytes, Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

/// The most bytes of meldb frames one WebSocket message carries.
pub(crate) const MESSAGE_BYTES: usize = 64 << 10;

/// The tungstenite limits: a message (or WebSocket frame) bigger than
/// [`MESSAGE_BYTES`] (plus slack for headers) is refused before it is
/// buffered whole; the meldb frame limit is the frame reader's, above.
/// Writes go straight to the stream.
pub(crate) fn config() -> WebSocketConfig {
    let most = MESSAGE_BYTES + 1024;
    WebSocketConfig::default()
        .max_message_size(Some(most))
        .max_frame_size(Some(most))
        .write_buffer_size(0)
}

/// A WebSocket as an `AsyncRead + AsyncWrite` byte stream.
pub(crate) struct WsBytes<S> {
    ws: WebSocketStream<S>,
    /// The unread rest of the last binary message.
    pending: Bytes,
    /// A close message or the end of the stream was seen.
    ended: bool,
}

impl<S> WsBytes<S> {
    pub(crate) fn new(ws: WebSocketStream<S>) -> WsBytes<S> {
        WsBytes {
            ws,
            pending: Bytes::new(),
            ended: false,
        }
    }
}

fn to_io(e: WsError) -> io::Error {
    match e {
        WsError::Io(e) => e,
        WsError::ConnectionClosed | WsError::AlreadyClosed => {
            io::Error::new(io::ErrorKind::BrokenPipe, "the WebSocket is closed")
        }
        other => io::Error::new(io::ErrorKind::InvalidData, format!("WebSocket: {other}")),
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WsBytes<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.pending.is_empty() {
                let n = buf.remaining().min(this.pending.len());
                buf.put_slice(&this.pending.split_to(n));
                return Poll::Ready(Ok(()));
            }
            if this.ended {
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut this.ws).poll_next(cx)) {
                Some(Ok(Message::Binary(bytes))) => this.pending = bytes,
                Some(Ok(Message::Text(_))) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "a WebSocket text message: meldb frames travel as binary messages only",
                    )))
                }
                Some(Ok(Message::Close(_))) | None => this.ended = true,
                Some(Ok(Message::Ping(_))) => {
                    // Send the queued pong now, not with the next write.
                    let _ = Pin::new(&mut this.ws).poll_flush(cx);
                }
                Some(Ok(Message::Pong(_) | Message::Frame(_))) => {}
                Some(Err(WsError::ConnectionClosed | WsError::AlreadyClosed)) => this.ended = true,
                Some(Err(e)) => return Poll::Ready(Err(to_io(e))),
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WsBytes<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(Pin::new(&mut this.ws).poll_ready(cx)).map_err(to_io)?;
        // The caller writes the rest in the next messages (`write_all`).
        let n = buf.len().min(MESSAGE_BYTES);
        Pin::new(&mut this.ws)
            .start_send(Message::Binary(Bytes::copy_from_slice(&buf[..n])))
            .map_err(to_io)?;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().ws)
            .poll_flush(cx)
            .map_err(to_io)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match ready!(Pin::new(&mut self.get_mut().ws).poll_close(cx)) {
            Ok(()) | Err(WsError::ConnectionClosed | WsError::AlreadyClosed) => Poll::Ready(Ok(())),
            Err(e) => Poll::Ready(Err(to_io(e))),
        }
    }
}

/// The client side of the handshake: `url` is `ws://` or `wss://`, its
/// host goes in the `Host` header and its path in the request line.
pub(crate) async fn connect<S>(stream: S, url: &str) -> Result<WsBytes<S>, TransportError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match tokio_tungstenite::client_async_with_config(url, stream, Some(config())).await {
        Ok((ws, _response)) => Ok(WsBytes::new(ws)),
        Err(WsError::Http(response)) => {
            let body = response
                .body()
                .as_deref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            Err(TransportError::WebSocket {
                url: url.to_string(),
                problem: format!(
                    "the server answered HTTP {}: {}",
                    response.status(),
                    body.trim()
                ),
            })
        }
        Err(WsError::Io(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
            Err(TransportError::WebSocket {
                url: url.to_string(),
                problem: "the peer closed the connection during the handshake".into(),
            })
        }
        Err(e @ (WsError::HttpFormat(_) | WsError::Protocol(_) | WsError::Io(_))) => {
            Err(TransportError::WebSocket {
                url: url.to_string(),
                problem: format!(
                    "no WebSocket answer to the handshake ({e}): is it a tcp:// or tls:// listener?"
                ),
            })
        }
        Err(e) => Err(TransportError::WebSocket {
            url: url.to_string(),
            problem: e.to_string(),
        }),
    }
}

/// The server side of the handshake. A listener whose path is `/` takes
/// any path; any other path must match, or the client gets HTTP 404.
pub(crate) async fn accept<S>(
    stream: S,
    path: &str,
    peer: &str,
) -> Result<WsBytes<S>, TransportError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let wanted = path.to_string();
    // The callback's type is tungstenite's.
    #[allow(clippy::result_large_err, reason = "tungstenite's callback signature")]
    let check = move |request: &Request, response: Response| -> Result<Response, ErrorResponse> {
        let asked = request.uri().path();
        if wanted == "/" || asked == wanted {
            return Ok(response);
        }
        let mut refusal = ErrorResponse::new(Some(format!(
            "no meldb relay at {asked}; it is at {wanted}"
        )));
        *refusal.status_mut() = tokio_tungstenite::tungstenite::http::StatusCode::NOT_FOUND;
        Err(refusal)
    };
    tokio_tungstenite::accept_hdr_async_with_config(stream, check, Some(config()))
        .await
        .map(WsBytes::new)
        .map_err(|e| TransportError::WebSocket {
            url: peer.to_string(),
            problem: format!("handshake failed: {e}"),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::SinkExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    type Res = Result<(), Box<dyn std::error::Error>>;

    /// A big write goes out as messages of at most `MESSAGE_BYTES` and
    /// reads back whole; a peer's message over the cap (a client that
    /// sends megabytes before its hello, say) is refused before it is
    /// buffered, whatever frame limit the connection has.
    #[tokio::test]
    async fn writes_are_cut_into_bounded_messages_and_a_bigger_one_is_refused() -> Res {
        let (client_end, server_end) = tokio::io::duplex(1 << 16);
        let server = tokio::spawn(accept(server_end, "/", "test-peer"));
        let mut client = connect(client_end, "ws://relay.test/").await?;
        let mut server = server.await??;
        let big: Vec<u8> = (0..(3 * MESSAGE_BYTES + 17)).map(|i| i as u8).collect();
        let reader = tokio::spawn(async move {
            let mut got = vec![0u8; 3 * MESSAGE_BYTES + 17];
            server.read_exact(&mut got).await.map(|_| (server, got))
        });
        client.write_all(&big).await?;
        client.flush().await?;
        let (server, got) = reader.await??;
        assert!(got == big, "the bytes came back changed");

        // A raw WebSocket peer sending one message over the cap (the
        // server reads meanwhile: the pipe holds less than the message).
        let reading = tokio::spawn(async move {
            let mut server = server;
            let mut buf = [0u8; 16];
            server.read(&mut buf).await
        });
        let oversized = vec![7u8; MESSAGE_BYTES + 4096];
        // The server may close mid-message: the send's outcome is not the test.
        let _ = client
            .ws
            .send(Message::Binary(Bytes::from(oversized)))
            .await;
        let read = tokio::time::timeout(std::time::Duration::from_secs(30), reading).await??;
        assert!(
            matches!(&read, Err(e) if e.kind() == io::ErrorKind::InvalidData),
            "{read:?}"
        );
        Ok(())
    }
}
