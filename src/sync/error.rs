//! The sync layer's errors: what ended a session, on which side.

use super::identity::IdentityRefusal;
use super::limits::LimitExceeded;
use super::message::NoticeCode;
use super::namespace::Namespace;
use crate::changeset::ChangeCursor;
use crate::clock::SiteId;
use meldb_core::codec::DecodeError;
use thiserror::Error;

/// Why a sync session failed. The database is never left half-changed:
/// every batch that was applied was applied whole.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum SyncError {
    /// The peer sent bytes that are not a valid message (truncated,
    /// corrupt, too large, a newer protocol version).
    #[error("bad message from the peer: {0}")]
    Decode(#[from] DecodeError),
    /// The connection failed.
    #[error("connection error: {0}")]
    Io(#[from] std::io::Error),
    /// The connection closed before the sync was complete.
    #[error("the peer closed the connection {during}")]
    Closed {
        /// What the session was doing.
        during: &'static str,
    },
    /// The local store failed (or refused the peer's changes).
    #[error("local store: {0}")]
    Store(#[from] crate::Error),
    /// The peer refused the session or ended it, with its reason.
    #[error("refused by the peer ({code}): {message}")]
    Refused {
        /// The kind of refusal.
        code: NoticeCode,
        /// The peer's explanation.
        message: String,
    },
    /// The peer's token is missing or unknown.
    #[error("{}", if *.presented { "unknown token" } else { "no token presented" })]
    Unauthorized {
        /// Whether a token was presented at all.
        presented: bool,
    },
    /// The peer's token is read-only and it sent changes or mutations.
    #[error("the token is read-only, and it sent {sent}: nothing was applied")]
    ReadOnly {
        /// What was sent ("a batch of 5 rows", "2 mutations").
        sent: String,
    },
    /// A message that does not fit the session's state.
    #[error("unexpected {got} message {during}")]
    Unexpected {
        /// The message received.
        got: &'static str,
        /// What the session was doing.
        during: &'static str,
    },
    /// The replicas' schemas have different names.
    #[error("schema mismatch: this replica has schema {local:?}, the peer {peer:?}")]
    SchemaMismatch {
        /// The local schema name.
        local: String,
        /// The peer's schema name.
        peer: String,
    },
    /// The peer has this replica's own site id (a copied database file, or a
    /// connection to itself).
    #[error("the peer has this replica's site id {0}; see Store::rotate_site_id")]
    SameSite(SiteId),
    /// An acknowledgement for a batch that was never sent.
    #[error("acknowledgement for batch {seq}, which is not awaiting one")]
    UnknownAck {
        /// The batch number.
        seq: u64,
    },
    /// A tokens file that cannot be used.
    #[error("tokens file {origin}: {message}")]
    Tokens {
        /// The file.
        origin: String,
        /// What is wrong.
        message: String,
    },
    /// The replica's paged read of changes handed back a cursor that does
    /// not move past the one it was given.
    #[error("the replica's change pages do not advance: cursor {cursor:?} came back")]
    StalledPages {
        /// The cursor it returned.
        cursor: ChangeCursor,
    },
    /// A relay's provider serves no replica for the namespace a token
    /// granted.
    #[error("this relay serves no namespace {0:?}")]
    UnknownNamespace(Namespace),
    /// A relay's provider failed to serve the namespace's replica (its
    /// database would not open, its setup failed). The peer is told only
    /// that the namespace is unavailable, as a `Busy` notice (try again
    /// later); the relay's log has `source`, which may name files.
    #[error("namespace \"{namespace}\" is unavailable on this relay; try again later")]
    Unavailable {
        /// The namespace asked for.
        namespace: Namespace,
        /// What failed, for the relay's log only.
        #[source]
        source: Box<SyncError>,
    },
    /// The peer's hello named a namespace its token does not cover
    /// (whether or not the relay has it: the answer is the same).
    #[error("the token may not sync namespace {}", shown(requested))]
    NamespaceRefused {
        /// The name the hello gave.
        requested: String,
    },
    /// The relay's tokens were changed (reloaded) and no longer authorize
    /// this session: it is closed, nothing more it sends is applied.
    #[error("token revoked: {reason} (client {client:?})")]
    Revoked {
        /// The client's name in the tokens it connected with.
        client: String,
        /// What changed.
        reason: &'static str,
    },
    /// A relay limit: a connection cap, a deadline, a write rate or a
    /// storage quota (nothing of a refused write was written).
    #[error("{0}")]
    Limit(#[from] LimitExceeded),
    /// The peer's token may not write as a site it claimed (see
    /// [`Identity`](super::Identity)): nothing it sent with the claim was
    /// applied.
    #[error("{0}")]
    Identity(IdentityRefusal),
    /// The transport failed: a peer URL, a certificate, a TLS or WebSocket
    /// handshake.
    #[error(transparent)]
    Transport(#[from] super::net::TransportError),
    /// Work on the blocking pool (a store call, a replica's method, a
    /// sync task) panicked. Nothing of a store call that panicked is kept:
    /// each is one transaction, rolled back.
    #[error("{task} panicked: {message}")]
    Panicked {
        /// What was running ("sync", "session start", "replica lookup").
        task: &'static str,
        /// The panic's message.
        message: String,
    },
    /// No message arrived within the configured idle time.
    #[error("no message from the peer for {seconds} s")]
    Timeout {
        /// The idle limit.
        seconds: u64,
    },
}

impl From<IdentityRefusal> for SyncError {
    fn from(refusal: IdentityRefusal) -> SyncError {
        SyncError::Identity(refusal)
    }
}

impl SyncError {
    /// The notice to send the peer before closing, if it should get one.
    pub(crate) fn notice_code(&self) -> Option<NoticeCode> {
        Some(match self {
            SyncError::Limit(limit) => return limit.notice_code(),
            SyncError::Decode(_) | SyncError::Unexpected { .. } | SyncError::UnknownAck { .. } => {
                NoticeCode::Protocol
            }
            SyncError::Unauthorized { .. }
            | SyncError::UnknownNamespace(_)
            | SyncError::NamespaceRefused { .. }
            | SyncError::Identity(_)
            | SyncError::Revoked { .. } => NoticeCode::Unauthorized,
            SyncError::ReadOnly { .. } => NoticeCode::ReadOnly,
            SyncError::Unavailable { .. } => NoticeCode::Busy,
            SyncError::SchemaMismatch { .. } | SyncError::SameSite(_) => NoticeCode::Incompatible,
            SyncError::Store(_) => NoticeCode::Apply,
            SyncError::Io(_)
            | SyncError::Closed { .. }
            | SyncError::Refused { .. }
            | SyncError::Tokens { .. }
            | SyncError::StalledPages { .. }
            | SyncError::Timeout { .. }
            | SyncError::Panicked { .. }
            | SyncError::Transport(_) => return None,
        })
    }
}

/// A name a peer sent, quoted, cut to 64 characters: a refusal repeats
/// what it refused without echoing a hello's worth of bytes.
fn shown(name: &str) -> String {
    const SHOWN: usize = 64;
    match name.char_indices().nth(SHOWN) {
        None => format!("{name:?}"),
        Some((end, _)) => format!("{:?}…", &name[..end]),
    }
}
