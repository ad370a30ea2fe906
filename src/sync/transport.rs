//! Moving messages over a byte stream: TCP or an in-memory pipe.
//!
//! Each message is one frame (see [`crate::codec::encode_message`]); the
//! frame header carries the payload length, so the stream needs no other
//! framing. A reader task reads frames (header first: a declared length
//! over the connection's limit is refused before anything is allocated) and
//! hands decoded messages over a channel, so the session driver can wait
//! for a message, a local change and a timer at once. The first frame has a
//! small limit of its own: nothing big is read from a peer that has not
//! presented a token yet.
//!
//! The protocol version is the connection's business too
//! ([`codec::ProtocolVersion`]): a connection writes its newest version
//! until the peer's first frame arrives, then the version of that frame,
//! and refuses any later frame in another version.

use super::error::SyncError;
use super::message::Message;
use crate::codec::{self, HEADER_LEN};
use codec::ProtocolVersion;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio::net::{TcpStream, ToSocketAddrs};
use tokio::sync::mpsc;

/// The largest first message (a `Hello`) read from a peer: 64 KiB.
pub const MAX_HELLO_PAYLOAD: usize = 64 << 10;

/// Bytes moved by a connection, shared with whoever wants to watch.
#[derive(Debug, Default)]
pub struct ByteCounts {
    sent: AtomicU64,
    received: AtomicU64,
}

impl ByteCounts {
    /// Bytes written, frame headers included.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Bytes read, frame headers included.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }
}

/// The protocol version a connection speaks, shared by its writer and its
/// reader task. 0: not known yet.
#[derive(Debug, Default)]
struct Speaking {
    /// The version of the first frame this side sent.
    opened: AtomicU16,
    /// The version agreed when the peer's first frame arrived.
    agreed: AtomicU16,
}

impl Speaking {
    /// The version to write the next frame in.
    fn version(&self) -> ProtocolVersion {
        let agreed = self.agreed.load(Ordering::Acquire);
        ProtocolVersion::new(agreed).unwrap_or(ProtocolVersion::NEWEST)
    }

    /// Checks the version of a frame from the peer: the first fixes the
    /// session's version, the rest must be in it.
    fn receive(&self, found: ProtocolVersion) -> Result<(), codec::DecodeError> {
        let agreed = self.agreed.load(Ordering::Acquire);
        if agreed == 0 {
            let opened = ProtocolVersion::new(self.opened.load(Ordering::Acquire)).ok();
            let version = ProtocolVersion::agree(found.number(), opened)?;
            self.agreed.store(version.number(), Ordering::Release);
            Ok(())
        } else if agreed == found.number() {
            Ok(())
        } else {
            Err(codec::DecodeError::Malformed {
                what: "message",
                message: format!(
                    "a frame in protocol version {} in a session agreed on version {agreed}",
                    found.number()
                ),
            })
        }
    }
}

/// A message connection over any byte stream.
pub struct Connection {
    writer: Box<dyn AsyncWrite + Send + Unpin>,
    incoming: mpsc::Receiver<Result<Message, SyncError>>,
    counts: Arc<ByteCounts>,
    speaking: Arc<Speaking>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("counts", &self.counts)
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// Wraps a stream; messages from the peer may be at most `limit`
    /// payload bytes. Must be called inside a tokio runtime (it spawns the
    /// reader task, which ends with the stream or when the connection is
    /// dropped).
    pub fn new<S>(stream: S, limit: usize) -> Connection
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (reader, writer) = tokio::io::split(stream);
        let counts = Arc::new(ByteCounts::default());
        let speaking = Arc::new(Speaking::default());
        let (tx, incoming) = mpsc::channel(8);
        tokio::spawn(read_frames(
            reader,
            limit,
            tx,
            Arc::clone(&counts),
            Arc::clone(&speaking),
        ));
        Connection {
            writer: Box::new(writer),
            incoming,
            counts,
            speaking,
        }
    }

    /// Connects over TCP (Nagle off: batches are whole frames, and small
    /// acknowledgements must not wait).
    pub async fn tcp(addr: impl ToSocketAddrs, limit: usize) -> Result<Connection, SyncError> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Connection::new(stream, limit))
    }

    /// Two connected ends in memory, for tests and in-process replicas.
    pub fn pair(limit: usize) -> (Connection, Connection) {
        let (a, b): (DuplexStream, DuplexStream) = tokio::io::duplex(1 << 16);
        (Connection::new(a, limit), Connection::new(b, limit))
    }

    /// Sends one message, in the session's protocol version.
    pub async fn send(&mut self, message: &Message) -> Result<(), SyncError> {
        let version = self.speaking.version();
        let _ = self.speaking.opened.compare_exchange(
            0,
            version.number(),
            Ordering::AcqRel,
            Ordering::Acquire,
        );
        let bytes = codec::encode_message_as(message, version);
        self.writer.write_all(&bytes).await?;
        self.counts
            .sent
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Sends raw bytes, valid frames or not: for tests of what a hostile
    /// peer can do.
    pub async fn send_raw(&mut self, bytes: &[u8]) -> Result<(), SyncError> {
        self.writer.write_all(bytes).await?;
        Ok(())
    }

    /// Flushes and closes the sending side.
    pub async fn shutdown(&mut self) -> Result<(), SyncError> {
        self.writer.flush().await?;
        self.writer.shutdown().await?;
        Ok(())
    }

    /// The next message; `None` when the peer closed the stream between
    /// messages. Cancel-safe.
    pub async fn recv(&mut self) -> Option<Result<Message, SyncError>> {
        self.incoming.recv().await
    }

    /// The byte counters of this connection.
    pub fn counts(&self) -> Arc<ByteCounts> {
        Arc::clone(&self.counts)
    }

    /// The protocol version the session speaks: agreed from the peer's
    /// first frame, or this build's newest before that.
    pub fn protocol_version(&self) -> ProtocolVersion {
        self.speaking.version()
    }
}

async fn read_frames<R: AsyncRead + Unpin>(
    mut reader: R,
    limit: usize,
    tx: mpsc::Sender<Result<Message, SyncError>>,
    counts: Arc<ByteCounts>,
    speaking: Arc<Speaking>,
) {
    let mut first = true;
    loop {
        let frame_limit = if first {
            limit.min(MAX_HELLO_PAYLOAD)
        } else {
            limit
        };
        first = false;
        let result = tokio::select! {
            result = read_frame(&mut reader, frame_limit, &counts, &speaking) => result,
            () = tx.closed() => break,
        };
        let item = match result {
            Ok(Some(message)) => Ok(message),
            Ok(None) => return,
            Err(e) => Err(e),
        };
        let failed = item.is_err();
        if tx.send(item).await.is_err() || failed {
            break;
        }
    }
    drain(reader).await;
}

/// Reads and discards what the peer still sends, for a moment, before the
/// socket closes: closing with unread bytes makes TCP reset the connection,
/// and the peer could lose the notice that says why it was closed.
async fn drain<R: AsyncRead + Unpin>(reader: R) {
    let mut limited = reader.take(DRAIN_BYTES);
    let _ = tokio::time::timeout(
        DRAIN_TIME,
        tokio::io::copy(&mut limited, &mut tokio::io::sink()),
    )
    .await;
}

/// How much and how long a closing connection drains.
const DRAIN_BYTES: u64 = 1 << 20;
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(1);

/// Reads one frame: `Ok(None)` at a clean end of stream.
async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    limit: usize,
    counts: &ByteCounts,
    speaking: &Speaking,
) -> Result<Option<Message>, SyncError> {
    let mut header = [0u8; HEADER_LEN];
    let mut filled = 0;
    while filled < HEADER_LEN {
        let n = reader.read(&mut header[filled..]).await?;
        if n == 0 {
            return if filled == 0 {
                Ok(None)
            } else {
                Err(codec::DecodeError::Truncated {
                    needed: HEADER_LEN,
                    available: filled,
                }
                .into())
            };
        }
        filled += n;
    }
    let (version, len) = codec::message_header(&header, limit)?;
    speaking.receive(version)?;
    let mut frame = Vec::with_capacity(HEADER_LEN + len);
    frame.extend_from_slice(&header);
    let read = (&mut *reader)
        .take(len as u64)
        .read_to_end(&mut frame)
        .await?;
    if read < len {
        return Err(codec::DecodeError::Truncated {
            needed: HEADER_LEN + len,
            available: HEADER_LEN + read,
        }
        .into());
    }
    counts
        .received
        .fetch_add(frame.len() as u64, Ordering::Relaxed);
    Ok(Some(codec::decode_message(&frame, limit)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_frame_fixes_the_version_and_a_switch_is_refused() {
        let speaking = Speaking::default();
        assert_eq!(speaking.version(), ProtocolVersion::NEWEST);
        assert!(speaking.receive(ProtocolVersion::OLDEST).is_ok());
        assert_eq!(speaking.version(), ProtocolVersion::OLDEST);
        assert!(speaking.receive(ProtocolVersion::OLDEST).is_ok());
        // A session agreed on another version (one this build may not
        // speak, as with a build one version apart) refuses frames in any
        // version but that one.
        speaking
            .agreed
            .store(PROTOCOL_VERSION_FOR_TEST, Ordering::Release);
        let err = speaking
            .receive(ProtocolVersion::NEWEST)
            .expect_err("switched versions");
        assert!(err.to_string().contains("agreed on version"), "{err}");
    }

    const PROTOCOL_VERSION_FOR_TEST: u16 = codec::PROTOCOL_VERSION + 1;
}
