//! WebSocket as a byte stream for meldb frames (feature `websocket`).
//!
//! Each write of the [`Connection`](super::Connection) (one whole frame)
//! goes out as one binary message; reads hand over the bytes of binary
//! messages in order, so the frame reader above sees the same byte stream
//! as over TCP and frames may even span messages. Pings are answered by
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

/// The tungstenite limits for frames of at most `max_payload` bytes (plus
/// the frame header): a bigger message is refused before it is buffered
/// whole. Writes go straight to the stream.
pub(crate) fn config(max_payload: usize) -> WebSocketConfig {
    let most = max_payload.saturating_add(1024);
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
        Pin::new(&mut this.ws)
            .start_send(Message::Binary(Bytes::copy_from_slice(buf)))
            .map_err(to_io)?;
        Poll::Ready(Ok(buf.len()))
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
pub(crate) async fn connect<S>(
    stream: S,
    url: &str,
    max_payload: usize,
) -> Result<WsBytes<S>, TransportError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match tokio_tungstenite::client_async_with_config(url, stream, Some(config(max_payload))).await
    {
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
    max_payload: usize,
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
    tokio_tungstenite::accept_hdr_async_with_config(stream, check, Some(config(max_payload)))
        .await
        .map(WsBytes::new)
        .map_err(|e| TransportError::WebSocket {
            url: peer.to_string(),
            problem: format!("handshake failed: {e}"),
        })
}
