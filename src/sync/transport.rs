//! Moving messages over a byte stream: TCP, TLS, WebSocket (see
//! [`super::Connector`]) or an in-memory pipe. Every message sent is
//! flushed, so buffering streams (TLS, WebSocket) never hold a frame back.
//!
//! Each message is one frame (see [`crate::codec::encode_message`]); the
//! frame header carries the payload length, so the stream needs no other
//! framing. A reader task reads frames (header first: a declared length
//! over the connection's limit is refused before anything is allocated) and
//! hands decoded messages over a channel, so the session driver can wait
//! for a message, a local change and a timer at once. The first frame has a
//! small limit of its own: nothing big is read from a peer that has not
//! presented a token yet. What a connection holds of its peer's messages is
//! bounded: at most two decoded ones waiting for the owner and one being
//! read, each within the limit, so about three times the limit at worst.
//!
//! The protocol version is the connection's business too
//! ([`ProtocolVersion`]): a connection writes its newest version
//! until the peer's first frame arrives, then the version of that frame,
//! and refuses any later frame in another version. So is what protocol 4
//! keeps per connection: the writer compresses bodies once the peer's
//! `Hello` offered a codec (the reader task saw it), and each side keeps
//! the last `Want` it sent or received, for the next one's diff
//! ([`wire::Outgoing`], [`wire::Incoming`]).

use super::error::SyncError;
use super::message::Message;
use super::wire;
use meldb_core::codec::Versions;
use meldb_core::codec::{DecodeError, HEADER_LEN};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio::net::{TcpStream, ToSocketAddrs};
use tokio::sync::mpsc;
use wire::ProtocolVersion;

/// Decoded messages a connection holds for its owner before it stops
/// reading the stream (TCP then slows the peer down).
const INCOMING_QUEUE: usize = 2;

/// The largest first message (a `Hello`) read from a peer: 64 KiB.
pub const MAX_HELLO_PAYLOAD: usize = 64 << 10;

/// Bytes moved by a connection, shared with whoever wants to watch.
#[derive(Debug, Default)]
pub struct ByteCounts {
    sent: AtomicU64,
    received: AtomicU64,
    /// Counts that add up every connection's too (a relay's metrics).
    total: Option<Arc<ByteCounts>>,
}

impl ByteCounts {
    fn add_sent(&self, n: usize) {
        self.sent.fetch_add(n as u64, Ordering::Relaxed);
        if let Some(total) = &self.total {
            total.add_sent(n);
        }
    }

    fn add_received(&self, n: usize) {
        self.received.fetch_add(n as u64, Ordering::Relaxed);
        if let Some(total) = &self.total {
            total.add_received(n);
        }
    }

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
/// reader task.
#[derive(Debug)]
struct Speaking {
    /// The versions this side speaks.
    versions: Versions,
    /// Whether this side accepted the connection (it then writes its oldest
    /// version until it knows the peer's, so a peer one version behind can
    /// read even a notice sent before its hello).
    accepting: AtomicBool,
    /// The version of the peer's first frame, once it arrived (0 before).
    agreed: AtomicU16,
    /// Whether the peer's hello offered a codec this side compresses with.
    peer_decompresses: AtomicBool,
}

impl Speaking {
    fn new(versions: Versions) -> Speaking {
        Speaking {
            versions,
            accepting: AtomicBool::new(false),
            agreed: AtomicU16::new(0),
            peer_decompresses: AtomicBool::new(false),
        }
    }

    /// The version to write the next frame in: the agreed one, or before
    /// agreement the newest (to open with) or, on the accepting side, the
    /// oldest.
    fn version(&self) -> u16 {
        match self.agreed.load(Ordering::Acquire) {
            0 if self.accepting.load(Ordering::Acquire) => self.versions.oldest,
            0 => self.versions.newest,
            agreed => agreed,
        }
    }

    /// Checks the version of a frame from the peer: the first fixes the
    /// session's version (the highest both speak: the opener's newest, if
    /// this side speaks it), the rest must be in it.
    fn receive(&self, found: u16) -> Result<(), DecodeError> {
        let found = self.versions.check(found)?;
        match self.agreed.load(Ordering::Acquire) {
            0 => {
                self.agreed.store(found, Ordering::Release);
                Ok(())
            }
            agreed if agreed == found => Ok(()),
            agreed => Err(DecodeError::Malformed {
                what: "message",
                message: format!(
                    "a frame in protocol version {found} in a session agreed on version {agreed}"
                ),
            }),
        }
    }
}

/// A message connection over any byte stream.
pub struct Connection {
    writer: Box<dyn AsyncWrite + Send + Unpin>,
    incoming: mpsc::Receiver<Result<Message, SyncError>>,
    counts: Arc<ByteCounts>,
    speaking: Arc<Speaking>,
    outgoing: wire::Outgoing,
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
        Connection::counted(stream, limit, None)
    }

    /// [`Connection::new`], whose bytes also add to `total`.
    pub(crate) fn counted<S>(stream: S, limit: usize, total: Option<Arc<ByteCounts>>) -> Connection
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (reader, writer) = tokio::io::split(stream);
        let counts = Arc::new(ByteCounts {
            total,
            ..ByteCounts::default()
        });
        let speaking = Arc::new(Speaking::new(ProtocolVersion::VERSIONS));
        let (tx, incoming) = mpsc::channel(INCOMING_QUEUE);
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
            outgoing: wire::Outgoing::default(),
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
    /// Must be called inside a tokio runtime, like [`Connection::new`].
    pub fn pair(limit: usize) -> (Connection, Connection) {
        let (a, b): (DuplexStream, DuplexStream) = tokio::io::duplex(1 << 16);
        (Connection::new(a, limit), Connection::new(b, limit))
    }

    /// Sends one message, in the session's protocol version.
    pub async fn send(&mut self, message: &Message) -> Result<(), SyncError> {
        self.outgoing
            .set_compress(self.speaking.peer_decompresses.load(Ordering::Acquire));
        let bytes = wire::encode_message_on(message, self.protocol_version(), &mut self.outgoing);
        self.writer.write_all(&bytes).await?;
        // TLS and WebSocket streams buffer: a frame must leave now, since
        // the peer may answer nothing until it has it.
        self.writer.flush().await?;
        self.counts.add_sent(bytes.len());
        Ok(())
    }

    /// Sends raw bytes, valid frames or not: for tests of what a hostile
    /// peer can do.
    pub async fn send_raw(&mut self, bytes: &[u8]) -> Result<(), SyncError> {
        self.writer.write_all(bytes).await?;
        self.writer.flush().await?;
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
        ProtocolVersion::new(self.speaking.version()).unwrap_or(ProtocolVersion::NEWEST)
    }

    /// Marks this end as the one that accepted the connection: until the
    /// peer's first frame says its version, it writes its oldest (see
    /// [`ProtocolVersion`]). The relay and [`super::accept_once`]
    /// call it.
    pub fn set_accepting(&self) {
        self.speaking.accepting.store(true, Ordering::Release);
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
    let mut incoming = wire::Incoming::default();
    loop {
        let frame_limit = if first {
            limit.min(MAX_HELLO_PAYLOAD)
        } else {
            limit
        };
        first = false;
        let result = tokio::select! {
            result = read_frame(&mut reader, frame_limit, &counts, &speaking, &mut incoming) => result,
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
    incoming: &mut wire::Incoming,
) -> Result<Option<Message>, SyncError> {
    let mut header = [0u8; HEADER_LEN];
    let mut filled = 0;
    while filled < HEADER_LEN {
        let n = reader.read(&mut header[filled..]).await?;
        if n == 0 {
            return if filled == 0 {
                Ok(None)
            } else {
                Err(DecodeError::Truncated {
                    needed: HEADER_LEN,
                    available: filled,
                }
                .into())
            };
        }
        filled += n;
    }
    let (version, len) = wire::message_header(&header, limit)?;
    speaking.receive(version.number())?;
    let mut frame = Vec::with_capacity(HEADER_LEN + len);
    frame.extend_from_slice(&header);
    let read = (&mut *reader)
        .take(len as u64)
        .read_to_end(&mut frame)
        .await?;
    if read < len {
        return Err(DecodeError::Truncated {
            needed: HEADER_LEN + len,
            available: HEADER_LEN + read,
        }
        .into());
    }
    counts.add_received(frame.len());
    let (_, message) = wire::decode_message_on(&frame, limit, incoming)?;
    if let Message::Hello(hello) = &message {
        if hello.compression.contains(&wire::Compression::Zstd) {
            speaking.peer_decompresses.store(true, Ordering::Release);
        }
    }
    Ok(Some(message))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A build that speaks versions 1 and 2.
    fn two_versions() -> Speaking {
        Speaking::new(Versions {
            format: "sync protocol",
            oldest: 1,
            newest: 2,
        })
    }

    #[test]
    fn the_opener_writes_its_newest_and_follows_the_answer() {
        let s = two_versions();
        assert_eq!(s.version(), 2, "a hello goes out in the newest");
        // An older relay answered in 1: the session speaks 1 from now on.
        assert!(s.receive(1).is_ok());
        assert_eq!(s.version(), 1);
        assert!(s.receive(1).is_ok());
        let err = s.receive(2).expect_err("a switch mid-session");
        assert!(err.to_string().contains("agreed on version 1"), "{err}");
    }

    #[test]
    fn the_acceptor_answers_in_the_peers_version_and_writes_its_oldest_before() {
        let s = two_versions();
        s.accepting.store(true, Ordering::Release);
        assert_eq!(s.version(), 1, "a busy notice before any hello: the oldest");
        assert!(s.receive(2).is_ok(), "a hello in 2");
        assert_eq!(s.version(), 2, "answered in the peer's version");

        let older_peer = two_versions();
        older_peer.accepting.store(true, Ordering::Release);
        assert!(older_peer.receive(1).is_ok());
        assert_eq!(older_peer.version(), 1);
    }

    #[test]
    fn versions_outside_the_range_are_refused_with_the_version_needed() {
        let s = two_versions();
        let newer = s.receive(3).expect_err("newer");
        assert!(newer.to_string().contains("reads version 3"), "{newer}");
        let older = Speaking::new(Versions {
            format: "sync protocol",
            oldest: 2,
            newest: 3,
        })
        .receive(1)
        .expect_err("older");
        assert!(older.to_string().contains("version 2 or newer"), "{older}");
        assert_eq!(s.version(), 2, "a refused frame agrees nothing");
    }
}
