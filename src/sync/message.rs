//! The protocol's messages: what one side of a sync says to the other.
//!
//! A session opens with a [`Hello`] from the side that connected, answered
//! by the other side's `Hello` once it has accepted the token. Then each
//! side that wants the other's changes sends a [`Want`] with its version
//! vector; the other answers with [`Message::Changes`] batches and a
//! [`Sent`] naming the batches of that answer. Each batch is applied in one
//! transaction and acknowledged with an [`Ack`] after it committed. When a
//! side has every batch of an answer it says [`Message::Caught`]; if a
//! batch went missing it sends a new `Want` with its current version
//! vector instead, and gets only what it still lacks. In live mode,
//! batches also flow unasked whenever the sender has something new.
//!
//! Mutations: a client of an authority sends its pending mutations in a
//! [`Message::Push`] just before its `Want`; the authority runs them
//! (answering [`Message::PushAck`]) and then answers the `Want`, whose
//! [`Sent`] says which mutations the batches include the effects of
//! ([`Processed`]). The client drops those from its queue (and records the
//! refused ones) once every batch of the answer is applied, in one
//! transaction, and replays the rest on top.
//!
//! An answer starts with the [`Message::Rejections`] an authority has for
//! the asker (its changes that were refused, and why). They go *before*
//! the batches carrying the corrections: if the connection drops between
//! the two, the asker's version vector still lacks the corrections, so the
//! next answer carries the notices again (receiving one twice is
//! harmless). Sent after, a cut right after the last batch would lose them
//! for good.
//!
//! [`Message::Notice`] ends a session with a reason (bad token, read-only
//! access, a protocol violation, a busy server).
//!
//! The byte layout is [`crate::codec::encode_message`]'s business; new
//! variants go at the end so older frames keep their meaning.

use crate::changeset::Changeset;
use crate::clock::SiteId;
use crate::mutator::{MutationRejection, Push, PushResult};
use crate::resolve::Rejection;
use crate::version::VersionVector;
use std::fmt;

/// One protocol message.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Message {
    /// Opens a session (first message each way).
    Hello(Hello),
    /// Asks for everything the sender lacks.
    Want(Want),
    /// One batch of changes, applied atomically by the receiver.
    Changes(Batch),
    /// A batch was applied and committed.
    Ack(Ack),
    /// The last batch of the answer to a `Want` has been sent.
    Sent(Sent),
    /// Every batch of the answer to this `Want` id arrived.
    Caught(u64),
    /// The session ends, and why.
    Notice(Notice),
    /// Authority rejections of the receiver's changes (see
    /// [`crate::resolve::Rejection`]), sent ahead of the batches that carry
    /// their corrections.
    Rejections(Vec<Rejection>),
    /// A client's pending mutations, for the authority to run
    /// ([`crate::Store::process_push`]).
    Push(Push),
    /// What the authority did with a `Push`.
    PushAck(PushResult),
}

impl Message {
    /// The message's name, for errors and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Message::Hello(_) => "Hello",
            Message::Want(_) => "Want",
            Message::Changes(_) => "Changes",
            Message::Ack(_) => "Ack",
            Message::Sent(_) => "Sent",
            Message::Caught(_) => "Caught",
            Message::Notice(_) => "Notice",
            Message::Rejections(_) => "Rejections",
            Message::Push(_) => "Push",
            Message::PushAck(_) => "PushAck",
        }
    }
}

/// Who is talking and what they may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// The sender's site id.
    pub site: SiteId,
    /// The sender's schema name; sessions between schemas of different
    /// names are refused.
    pub schema: String,
    /// The sender's schema version (informational: older schemas get
    /// what they can apply).
    pub schema_version: u32,
    /// The access token (sent by the side that connected).
    pub token: Option<String>,
    /// Whether the sender will accept and apply the other side's changes
    /// (a relay answers `false` to a read-only token).
    pub accepts_changes: bool,
    /// Whether the sender stays connected after catching up and sends new
    /// changes as they happen.
    pub live: bool,
    /// Whether the sender is the authority (it runs pushed mutations).
    pub authority: bool,
    /// The namespace the side that connected asks to sync, when a relay
    /// serves several and its token may use more than one; `None`: the
    /// one its token names first. Protocol version 2 and later (a
    /// version-1 hello has no namespace: see [`crate::codec::ProtocolVersion`]).
    pub namespace: Option<String>,
    /// The codecs the sender decodes in bodies of `Changes` and `Push`
    /// (a session's own hello offers [`crate::codec::Compression::ACCEPTED`]);
    /// a body is compressed only with a codec its receiver offered.
    /// Protocol version 4 and later (empty before).
    pub compression: Vec<crate::codec::Compression>,
}

/// "Send me everything I lack."
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Want {
    /// Names this request; a later `Want` supersedes it.
    pub id: u64,
    /// The dots the sender has.
    pub have: VersionVector,
    /// The sender's oldest pending mutation, when it queues mutations for
    /// an authority: the answer's `Sent` then says which the authority has
    /// processed and which it refused.
    pub first_pending: Option<u64>,
}

/// One batch of changes.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// The batch's number: per session and direction, increasing from 1.
    pub seq: u64,
    /// The rows; each carries the dots its delivery covers.
    pub changes: Changeset,
}

/// A batch applied and committed by the receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    /// The batch's number.
    pub seq: u64,
    /// Rows that changed the receiver's state.
    pub applied: u64,
}

/// The answer to a `Want` is complete: batches `first..=last` (none when
/// `first > last`).
#[derive(Debug, Clone, PartialEq)]
pub struct Sent {
    /// The `Want` answered.
    pub want: u64,
    /// Its first batch number.
    pub first: u64,
    /// Its last batch number.
    pub last: u64,
    /// For a `Want` with `first_pending`: the asker's mutations whose
    /// effects the answer's batches include.
    pub mutations: Option<Processed>,
}

/// The authority's word on a client's mutations, as of an answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Processed {
    /// The last of the client's mutations the authority has processed.
    pub last_processed: u64,
    /// Those it refused, from the client's oldest pending one.
    pub rejected: Vec<MutationRejection>,
}

/// Why a session ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// What kind of refusal.
    pub code: NoticeCode,
    /// Details for the other side's log.
    pub message: String,
}

/// The kinds of [`Notice`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum NoticeCode {
    /// The token is missing or unknown.
    Unauthorized,
    /// The token is read-only and changes were sent.
    ReadOnly,
    /// A message that does not fit the protocol (or a bad frame).
    Protocol,
    /// The replicas' schemas cannot sync.
    Incompatible,
    /// Received changes could not be applied.
    Apply,
    /// The server has too many connections.
    Busy,
    /// The server is shutting down.
    Shutdown,
}

impl fmt::Display for NoticeCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NoticeCode::Unauthorized => "unauthorized",
            NoticeCode::ReadOnly => "read-only",
            NoticeCode::Protocol => "protocol error",
            NoticeCode::Incompatible => "incompatible",
            NoticeCode::Apply => "apply failed",
            NoticeCode::Busy => "busy",
            NoticeCode::Shutdown => "shutting down",
        })
    }
}
