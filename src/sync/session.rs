//! The protocol core: one sync session as a state machine, with no I/O.
//!
//! Feed it what the peer sent ([`Session::receive`]) and send what it
//! produces ([`Session::poll_message`]). It reads and writes the
//! [`Replica`] it is handed with each call (a [`crate::Store`], or any
//! other implementation) and owns no socket and no clock, so tests drive
//! it through any simulated network, and every transport runs the same
//! logic.
//!
//! The exchange (see [`super::message`]): the side that connected sends
//! [`Hello`] with its token; the other side checks it (a refused token ends
//! the session before anything else is read) and answers with its own.
//! Each side that accepts changes from the other sends a [`Want`] with its
//! version vector; the answer is `changes_since(that vector)` cut into
//! bounded batches, at most `window` of them unacknowledged at a time, then
//! [`Sent`].
//!
//! An answer is streamed, not held: it is read from the replica a page
//! (`batch_rows` rows) at a time, against the `Want`'s version vector,
//! only while fewer than `window` of its batches wait to be sent; each
//! acknowledgement ([`Session::receive`]) reads on. So a session never
//! holds more than about `(window + 1) × batch_rows` rows of an answer
//! (reported as [`SyncStats::max_rows_held`]), whatever the peer lacks.
//! Pages are read from the replica's state at the time: a write ahead of
//! the cursor is in a later page; one behind it is read by the live read
//! put off until the answer is out (below), or, outside live mode, asked
//! for by the peer's next `Want`. (The authority's answer to a `Want`
//! with pending mutations, [`Replica::pull_for`], is still read in one
//! step and held whole.) Each batch is applied in one transaction and acknowledged only
//! after it committed, so an acknowledged batch is durable. A side with
//! every batch of its answer says [`Message::Caught`]; one that misses a
//! batch (a lossy network) asks again with its current version vector.
//! Sessions are resumable for free: a new session's `Want` carries the
//! version vector, so only what is still missing travels.
//!
//! A replica that queues mutations for an authority pushes them right
//! before each `Want` ([`Message::Push`]); the authority runs them and the
//! answer's `Sent` says which it processed, so the client drops those once
//! every batch is in (see [`super::message`]). On such a client every batch
//! is applied under the pending mutations' speculative effects
//! ([`crate::Store::apply_pull`]), never merged into them.
//!
//! On the side that accepted, a token's [`Grant::identity`] decides which
//! sites the peer may write as (see [`super::identity`]): its hello's site
//! is bound to the token before the session opens, a batch with another
//! site's new writes and a push for another site are refused before
//! anything is applied, and mutation state is kept under the token.
//!
//! In live mode the session stays open after catching up: the owner calls
//! [`Session::local_changed`] when the store changes and the session pushes
//! what the peer does not have yet (it tracks what the peer has: its `Want`
//! plus everything sent or received since). Only a peer that is itself
//! live (its hello's `live`) is pushed to; one that said it is not gets
//! nothing it did not ask for. A session is *caught up with the live
//! stream* while no answer is being streamed to it and no batch waits for
//! its window: only then is a change read for it. Otherwise the read is
//! put off and made once, from what the peer is known to have, when the
//! answer or the waiting batches are out; a read of more than the lag
//! bound ([`SessionConfig::max_lag_batches`]) closes the session with a
//! `Busy` notice, and the peer's next session resyncs from its version
//! vector, streamed as above.

use super::batch::{add_covers, approx_changeset_bytes, batches, Batcher};
use super::error::SyncError;
use super::identity::{Identity, IdentityRefusal};
use super::limits::LimitExceeded;
use super::message::{Ack, Batch, Hello, Message, Notice, NoticeCode, Processed, Sent, Want};
use super::metrics::RelayMetrics;
use super::provider::Namespace;
use super::replica::Replica;
use crate::changeset::{ChangeCursor, Changeset};
use crate::clock::SiteId;
use crate::mutator::{PullResponse, Push};
use crate::resolve::{Rejection, Writer};
use crate::version::VersionVector;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::sync::Arc;

/// What a peer may do, decided from its token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Access {
    /// Receive changes and send its own.
    ReadWrite,
    /// Receive changes only; a batch it sends ends the session.
    ReadOnly,
}

/// What a token grants: read or read-write, who the changes that arrive
/// through it are written by (resolvers see this [`Writer`], never
/// anything the client claims about itself), which namespace's replica
/// a relay serves it, and which sites it may write as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// Read-only or read-write.
    pub access: Access,
    /// The writer attached to the peer's changes ([`crate::Store::apply_from`]).
    pub writer: Writer,
    /// The namespace whose replica the session syncs when the peer's
    /// hello names none, or names this one (a relay asks its
    /// [`ReplicaProvider`](super::provider::ReplicaProvider) for it).
    pub namespace: Namespace,
    /// The other namespaces the peer may name in its hello instead (a
    /// token for several teams' documents, say); any other is refused.
    pub other_namespaces: BTreeSet<Namespace>,
    /// The token's identity: the sites it may write as, and the name its
    /// mutation state is kept under (see [`Identity`](super::Identity)). `None`
    /// trusts the peer's word on its site (a trusted network, no tokens);
    /// every token of a [`Tokens`](super::tokens::Tokens) has one.
    pub identity: Option<Identity>,
}

impl Grant {
    /// Read-write, as an anonymous writer, in the default namespace.
    pub fn read_write() -> Grant {
        Grant {
            access: Access::ReadWrite,
            writer: Writer::default(),
            namespace: Namespace::default(),
            other_namespaces: BTreeSet::new(),
            identity: None,
        }
    }

    /// Read-only, in the default namespace.
    pub fn read_only() -> Grant {
        Grant {
            access: Access::ReadOnly,
            writer: Writer::default(),
            namespace: Namespace::default(),
            other_namespaces: BTreeSet::new(),
            identity: None,
        }
    }

    /// The same grant with `identity`.
    pub fn with_identity(mut self, identity: Identity) -> Grant {
        self.identity = Some(identity);
        self
    }

    /// The same grant in `namespace`.
    pub fn in_namespace(mut self, namespace: Namespace) -> Grant {
        self.other_namespaces.remove(&namespace);
        self.namespace = namespace;
        self
    }

    /// The same grant, also allowing the peer to name `namespace`.
    pub fn also_in(mut self, namespace: Namespace) -> Grant {
        if namespace != self.namespace {
            self.other_namespaces.insert(namespace);
        }
        self
    }

    /// The namespace a hello naming `requested` syncs: [`Grant::namespace`]
    /// when it names none, else the one named if the grant allows it.
    /// `None`: this grant does not cover it (whether or not it exists).
    pub fn namespace_for(&self, requested: Option<&str>) -> Option<Namespace> {
        match requested {
            None => Some(self.namespace.clone()),
            Some(name) if name == self.namespace.as_str() => Some(self.namespace.clone()),
            Some(name) => self
                .other_namespaces
                .iter()
                .find(|n| n.as_str() == name)
                .cloned(),
        }
    }
}

/// Decides what a connecting peer's token grants (`None`: refused).
pub type Authorize = Arc<dyn Fn(Option<&str>) -> Option<Grant> + Send + Sync>;

/// Session settings.
#[must_use]
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Rows per batch (at most).
    pub batch_rows: usize,
    /// Estimated encoded bytes per batch (at most, but at least one row).
    pub batch_bytes: usize,
    /// Batches sent and not yet acknowledged (at most).
    pub window: usize,
    /// Stay open after catching up and push new changes.
    pub live: bool,
    /// The token presented when connecting.
    pub token: Option<String>,
    /// The namespace asked for when connecting to a relay that serves
    /// several (`None`: the one the token names first).
    pub namespace: Option<String>,
    /// Live batches waiting to be sent to the peer (at most): one that
    /// acknowledges so slowly that more would wait is told it fell behind
    /// and disconnected; its next session resyncs. Bounds what a slow
    /// reader makes its side hold.
    pub max_lag_batches: usize,
    /// The same bound in estimated bytes.
    pub max_lag_bytes: usize,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            batch_rows: 10_000,
            batch_bytes: 4 << 20,
            window: 4,
            live: false,
            token: None,
            namespace: None,
            max_lag_batches: 64,
            max_lag_bytes: 64 << 20,
        }
    }
}

impl SessionConfig {
    /// Live mode: stay connected and push new changes.
    pub fn live(mut self, live: bool) -> Self {
        self.live = live;
        self
    }

    /// The token to present.
    pub fn token(mut self, token: Option<String>) -> Self {
        self.token = token;
        self
    }

    /// The namespace to ask a relay for (a plain name: see
    /// [`Namespace`]); `None`: the one the token names first.
    pub fn namespace(mut self, namespace: Option<String>) -> Self {
        self.namespace = namespace;
        self
    }

    /// Rows per batch.
    pub fn batch_rows(mut self, rows: usize) -> Self {
        self.batch_rows = rows.max(1);
        self
    }

    /// Unacknowledged batches in flight.
    pub fn window(mut self, window: usize) -> Self {
        self.window = window.max(1);
        self
    }

    /// The bound on live batches waiting for a slow peer: `batches` and
    /// estimated `bytes` (each at least 1).
    pub fn max_lag(mut self, batches: usize, bytes: usize) -> Self {
        self.max_lag_batches = batches.max(1);
        self.max_lag_bytes = bytes.max(1);
        self
    }
}

/// Counters of what a session moved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SyncStats {
    /// Batches sent.
    pub batches_sent: u64,
    /// Rows sent.
    pub rows_sent: u64,
    /// Rows the peer acknowledged (committed).
    pub rows_acked: u64,
    /// Batches received and applied.
    pub batches_received: u64,
    /// Rows received.
    pub rows_received: u64,
    /// Received rows that changed the local state.
    pub rows_applied: u64,
    /// Rejection notices sent to the peer.
    pub rejections_sent: u64,
    /// Rejection notices from the peer that were new here.
    pub rejections_received: u64,
    /// Pending mutations pushed to the authority.
    pub mutations_pushed: u64,
    /// Pushed mutations the authority ran (as the authority: mutations run
    /// for the peer, refused ones included).
    pub mutations_processed: u64,
    /// The most rows of outgoing batches this session held at once
    /// (queued to send, or cut and not yet queued): what an answer to a
    /// `Want` costs in memory. A streamed answer holds at most about
    /// `(window + 1) × batch_rows` (see [`Session`]'s module docs); live
    /// batches for a slow peer add up to the lag bound.
    pub max_rows_held: u64,
    /// Mutations dropped from the local queue because the authority
    /// processed them (their effects arrived as canonical changes).
    pub mutations_acknowledged: u64,
    /// Of those, the ones the authority refused.
    pub mutations_rejected: u64,
}

/// The peer, once its `Hello` arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PeerInfo {
    /// Its site id.
    pub site: SiteId,
    /// Its schema version.
    pub schema_version: u32,
    /// Whether it applies our changes.
    pub accepts_changes: bool,
    /// Whether it stays connected.
    pub live: bool,
    /// Whether it is the authority (runs pushed mutations).
    pub authority: bool,
}

enum Role {
    Initiator,
    Responder(Authorize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Greeting,
    Open,
    Closed,
}

enum Outgoing {
    Rejections(Vec<Rejection>),
    Batch {
        changes: Changeset,
        want: Option<u64>,
    },
    Sent {
        want: u64,
        mutations: Option<Processed>,
    },
}

/// An answer to a `Want` still being read from the replica, a page at a
/// time, as the window makes room (see [`Session::read_answer`]).
struct Answer {
    want: u64,
    /// What the asker said it has: every page is read against it.
    have: VersionVector,
    /// Where the next page starts; `None` before the first.
    next: Option<ChangeCursor>,
    cut: Batcher,
}

struct InFlight {
    rows: u64,
    covers: VersionVector,
}

/// One side of a sync session. See the module docs for the protocol.
pub struct Session {
    role: Role,
    config: SessionConfig,
    phase: Phase,
    site: SiteId,
    schema: String,
    schema_version: u32,
    authority: bool,
    peer: Option<PeerInfo>,
    access: Access,
    writer: Writer,
    /// The peer's token's identity (responders with tokens), and the
    /// sites found to be its so far.
    identity: Option<Identity>,
    own_sites: BTreeSet<SiteId>,
    out: VecDeque<Message>,
    // Sending: what the peer lacks.
    queue: VecDeque<Outgoing>,
    next_seq: u64,
    in_flight: BTreeMap<u64, InFlight>,
    peer_has: Option<VersionVector>,
    /// What the peer's latest `Want` said it has.
    peer_had: Option<VersionVector>,
    answering: Option<(u64, Option<u64>)>,
    /// The answer being streamed, if its last page is not read yet.
    answer: Option<Answer>,
    peer_caught: bool,
    acknowledged: VersionVector,
    // Receiving: what we lack.
    want_id: u64,
    want_open: bool,
    received: BTreeSet<u64>,
    caught: bool,
    // Mutations: the last pushed, and whether its acknowledgement is due.
    pushed_through: u64,
    push_open: bool,
    // Local changes not read yet because batches still wait to be sent:
    // read once they are out (coalesced, and nothing piles up for a peer
    // that does not acknowledge).
    deferred: bool,
    stats: SyncStats,
    /// A relay's counters, which this session's batches and mutations add to.
    metrics: Option<Arc<RelayMetrics>>,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("site", &self.site)
            .field("phase", &self.phase)
            .field("peer", &self.peer)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// The side that connected: its `Hello` (with the token) is the first
    /// message out.
    pub fn initiator(store: &(impl Replica + ?Sized), config: SessionConfig) -> Session {
        let mut session = Session::new(store, config, Role::Initiator);
        let hello = session.hello(true);
        session.out.push_back(Message::Hello(hello));
        session
    }

    /// The side that accepted the connection: it waits for the peer's
    /// `Hello` and asks `authorize` what the token allows.
    pub fn responder(
        store: &(impl Replica + ?Sized),
        config: SessionConfig,
        authorize: Authorize,
    ) -> Session {
        Session::new(store, config, Role::Responder(authorize))
    }

    fn new(store: &(impl Replica + ?Sized), config: SessionConfig, role: Role) -> Session {
        let (schema, schema_version) = store.schema_name_and_version();
        Session {
            role,
            config,
            phase: Phase::Greeting,
            site: store.site_id(),
            schema,
            schema_version,
            authority: store.is_authority(),
            peer: None,
            access: Access::ReadWrite,
            writer: Writer::default(),
            identity: None,
            own_sites: BTreeSet::new(),
            out: VecDeque::new(),
            queue: VecDeque::new(),
            next_seq: 1,
            in_flight: BTreeMap::new(),
            peer_has: None,
            peer_had: None,
            answering: None,
            answer: None,
            peer_caught: false,
            acknowledged: VersionVector::new(),
            want_id: 0,
            want_open: false,
            received: BTreeSet::new(),
            caught: false,
            pushed_through: 0,
            push_open: false,
            deferred: false,
            stats: SyncStats::default(),
            metrics: None,
        }
    }

    /// The same session, counting what it moves in `metrics` too.
    pub(crate) fn observed(mut self, metrics: Option<Arc<RelayMetrics>>) -> Session {
        self.metrics = metrics;
        self
    }

    fn hello(&self, initiator: bool) -> Hello {
        Hello {
            site: self.site,
            schema: self.schema.clone(),
            schema_version: self.schema_version,
            token: if initiator {
                self.config.token.clone()
            } else {
                None
            },
            accepts_changes: self.access == Access::ReadWrite,
            live: self.config.live,
            authority: self.authority,
            namespace: if initiator {
                self.config.namespace.clone()
            } else {
                None
            },
            compression: super::wire::Compression::ACCEPTED.to_vec(),
        }
    }

    /// The peer, once it said hello.
    pub fn peer(&self) -> Option<&PeerInfo> {
        self.peer.as_ref()
    }

    /// What the peer's token allows (always read-write on the side that
    /// connected).
    pub fn access(&self) -> Access {
        self.access
    }

    /// What moved so far.
    pub fn stats(&self) -> SyncStats {
        self.stats
    }

    /// The dots the peer acknowledged having committed in this session.
    pub fn acknowledged(&self) -> &VersionVector {
        &self.acknowledged
    }

    /// What the peer is known to have committed: the version vector of
    /// its latest `Want` and every batch it acknowledged since. `None`
    /// before a `Want` arrived (a peer that takes no changes sends none).
    /// This replica's writes beyond it are still to be delivered.
    pub fn peer_acknowledged(&self) -> Option<VersionVector> {
        let mut vv = self.peer_had.clone()?;
        vv.merge(&self.acknowledged);
        Some(vv)
    }

    /// Whether the session ended (a refusal, an error, a notice).
    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    /// Whether both sides have everything the other had when it answered,
    /// every batch is acknowledged and nothing is waiting to be sent.
    pub fn is_caught_up(&self) -> bool {
        self.phase == Phase::Open
            && (!self.we_want() || self.caught)
            && (!self.peer_wants() || self.peer_caught)
            && self.queue.is_empty()
            && self.answer.is_none()
            && self.in_flight.is_empty()
            && self.out.is_empty()
            && !self.push_open
            && !self.deferred
    }

    /// Whether local changes were put off while batches waited to be
    /// sent, and none waits now: the owner calls
    /// [`Session::local_changed`] again.
    pub fn has_deferred_changes(&self) -> bool {
        self.deferred && self.phase == Phase::Open && !self.batch_waiting() && self.answer.is_none()
    }

    fn batch_waiting(&self) -> bool {
        self.queue
            .iter()
            .any(|queued| matches!(queued, Outgoing::Batch { .. }))
    }

    fn we_want(&self) -> bool {
        match self.role {
            Role::Initiator => true,
            Role::Responder(_) => self.access == Access::ReadWrite,
        }
    }

    fn peer_wants(&self) -> bool {
        match self.role {
            Role::Initiator => self.peer.as_ref().is_some_and(|p| p.accepts_changes),
            Role::Responder(_) => true,
        }
    }

    /// The next message to send, if any. Batches beyond the window wait
    /// for acknowledgements.
    pub fn poll_message(&mut self) -> Option<Message> {
        if let Some(m) = self.out.pop_front() {
            return Some(m);
        }
        if self.phase != Phase::Open {
            return None;
        }
        match self.queue.front()? {
            Outgoing::Batch { .. } if self.in_flight.len() >= self.config.window => None,
            Outgoing::Batch { .. } => {
                let Some(Outgoing::Batch { changes, want }) = self.queue.pop_front() else {
                    return None;
                };
                let seq = self.next_seq;
                self.next_seq += 1;
                if let Some((id, first @ None)) = &mut self.answering {
                    if want == Some(*id) {
                        *first = Some(seq);
                    }
                }
                let mut covers = VersionVector::new();
                add_covers(&mut covers, &changes);
                let rows = changes.len() as u64;
                self.in_flight.insert(seq, InFlight { rows, covers });
                self.stats.batches_sent += 1;
                self.stats.rows_sent += rows;
                if let Some(metrics) = &self.metrics {
                    metrics.batch_sent(rows);
                }
                Some(Message::Changes(Batch { seq, changes }))
            }
            Outgoing::Rejections(_) => match self.queue.pop_front() {
                Some(Outgoing::Rejections(list)) => Some(Message::Rejections(list)),
                _ => None,
            },
            Outgoing::Sent { .. } => {
                let Some(Outgoing::Sent { want, mutations }) = self.queue.pop_front() else {
                    return None;
                };
                let first = match self.answering {
                    Some((id, Some(first))) if id == want => first,
                    _ => self.next_seq,
                };
                Some(Message::Sent(Sent {
                    want,
                    first,
                    last: self.next_seq - 1,
                    mutations,
                }))
            }
        }
    }

    /// Handles one message from the peer. An error closes the session; a
    /// notice for the peer saying why is then the last message out.
    pub fn receive(
        &mut self,
        store: &mut (impl Replica + ?Sized),
        message: Message,
    ) -> Result<(), SyncError> {
        if self.phase == Phase::Closed {
            return Ok(());
        }
        let mut result = self.handle(store, message);
        // An acknowledgement makes room in the window: the answer being
        // streamed reads on.
        if result.is_ok() && self.answer.is_some() {
            result = self.read_answer(store);
        }
        if let Err(e) = &result {
            self.fail(e);
        }
        result
    }

    /// Ends the session with a notice to the peer (e.g. on shutdown).
    pub fn close(&mut self, code: NoticeCode, message: impl Into<String>) {
        if self.phase != Phase::Closed {
            self.queue.clear();
            self.answer = None;
            self.out.push_back(Message::Notice(Notice {
                code,
                message: message.into(),
            }));
            self.phase = Phase::Closed;
        }
    }

    fn fail(&mut self, error: &SyncError) {
        if let Some(code) = error.notice_code() {
            self.close(code, error.to_string());
        } else {
            self.queue.clear();
            self.answer = None;
            self.phase = Phase::Closed;
        }
    }

    fn handle(
        &mut self,
        store: &mut (impl Replica + ?Sized),
        message: Message,
    ) -> Result<(), SyncError> {
        match (self.phase, message) {
            (_, Message::Notice(n)) => {
                self.phase = Phase::Closed;
                Err(SyncError::Refused {
                    code: n.code,
                    message: n.message,
                })
            }
            (Phase::Greeting, Message::Hello(hello)) => self.on_hello(store, hello),
            (Phase::Greeting, m) => Err(SyncError::Unexpected {
                got: m.name(),
                during: "before Hello",
            }),
            (_, Message::Hello(_)) => Err(SyncError::Unexpected {
                got: "Hello",
                during: "after the session opened",
            }),
            (_, Message::Want(want)) => self.on_want(store, want),
            (_, Message::Changes(batch)) => self.on_batch(store, batch),
            (_, Message::Ack(ack)) => self.on_ack(ack),
            (_, Message::Sent(sent)) => self.on_sent(store, sent),
            (_, Message::Push(push)) => self.on_push(store, push),
            (_, Message::PushAck(result)) => {
                self.push_open = false;
                self.stats.mutations_processed +=
                    (result.applied.len() + result.rejected.len()) as u64;
                Ok(())
            }
            (_, Message::Rejections(list)) => {
                if self.access == Access::ReadOnly {
                    return Err(SyncError::Unexpected {
                        got: "Rejections",
                        during: "from a read-only peer",
                    });
                }
                self.stats.rejections_received += store.receive_rejections(&list)? as u64;
                Ok(())
            }
            (_, Message::Caught(id)) => {
                if self.answering.is_some_and(|(want, _)| want == id) {
                    self.peer_caught = true;
                }
                Ok(())
            }
        }
    }

    fn on_hello(
        &mut self,
        store: &mut (impl Replica + ?Sized),
        hello: Hello,
    ) -> Result<(), SyncError> {
        // The token first: a peer without a valid one learns nothing of
        // this replica, not even its schema's name or its site id.
        let grant = match &self.role {
            Role::Responder(authorize) => Some(authorize(hello.token.as_deref()).ok_or(
                SyncError::Unauthorized {
                    presented: hello.token.is_some(),
                },
            )?),
            Role::Initiator => None,
        };
        if hello.schema != self.schema {
            return Err(SyncError::SchemaMismatch {
                local: self.schema.clone(),
                peer: hello.schema,
            });
        }
        if hello.site == self.site {
            return Err(SyncError::SameSite(self.site));
        }
        if let Some(grant) = grant {
            self.access = grant.access;
            self.writer = grant.writer;
            self.identity = grant.identity;
            // A writer's site is bound to its token before anything else it
            // sent is read; a reader writes nothing, so binds nothing.
            if let (Some(identity), Access::ReadWrite) = (&self.identity, self.access) {
                identity.bind_hello(store, hello.site)?;
                self.own_sites.insert(hello.site);
            }
            let reply = self.hello(false);
            self.out.push_back(Message::Hello(reply));
        }
        self.peer = Some(PeerInfo {
            site: hello.site,
            schema_version: hello.schema_version,
            accepts_changes: hello.accepts_changes,
            live: hello.live,
            authority: hello.authority,
        });
        self.phase = Phase::Open;
        if self.we_want() {
            self.push_pending(store)?;
            self.want_again(store)?;
        }
        Ok(())
    }

    fn want_again(&mut self, store: &(impl Replica + ?Sized)) -> Result<(), SyncError> {
        self.want_id += 1;
        self.want_open = true;
        self.caught = false;
        self.received.clear();
        let first_pending = if store.queues_mutations() {
            Some(store.pull_request()?.1).filter(|&id| id != u64::MAX)
        } else {
            None
        };
        self.out.push_back(Message::Want(Want {
            id: self.want_id,
            have: store.version_vector(),
            first_pending,
        }));
        Ok(())
    }

    /// Queues a `Push` of the pending mutations not pushed yet in this
    /// session, when this replica queues them and the peer takes changes.
    /// Returns whether it did.
    fn push_pending(&mut self, store: &(impl Replica + ?Sized)) -> Result<bool, SyncError> {
        let to_authority = self.peer.as_ref().is_some_and(|p| p.authority);
        if !store.queues_mutations() || !to_authority || !self.peer_wants() {
            return Ok(false);
        }
        let mutations: Vec<_> = store
            .pending_mutations()?
            .into_iter()
            .filter(|m| m.id > self.pushed_through)
            .collect();
        let Some(last) = mutations.last().map(|m| m.id) else {
            return Ok(false);
        };
        self.pushed_through = last;
        self.push_open = true;
        self.stats.mutations_pushed += mutations.len() as u64;
        self.out.push_back(Message::Push(Push {
            client: self.site,
            mutations,
        }));
        Ok(true)
    }

    fn on_push(
        &mut self,
        store: &mut (impl Replica + ?Sized),
        push: Push,
    ) -> Result<(), SyncError> {
        if self.access == Access::ReadOnly {
            return Err(SyncError::ReadOnly {
                sent: format!("{} mutations", push.mutations.len()),
            });
        }
        let Some(peer) = self.peer.as_ref().filter(|_| self.authority) else {
            return Err(SyncError::Unexpected {
                got: "Push",
                during: "on a replica that is not the authority",
            });
        };
        if let Some(identity) = &self.identity {
            if push.client != peer.site {
                return Err(IdentityRefusal::OtherSite {
                    token: identity.token().to_owned(),
                    claimed: push.client,
                    session: peer.site,
                }
                .into());
            }
        }
        // The mutations are the session's peer's, whatever the message says,
        // and their state is kept under the peer's token.
        let token = self.identity.as_ref().map_or("", Identity::token);
        let result = store.process_push(
            token,
            &self.writer,
            &Push {
                client: peer.site,
                mutations: push.mutations,
            },
        )?;
        self.stats.mutations_processed += (result.applied.len() + result.rejected.len()) as u64;
        if let Some(metrics) = &self.metrics {
            let refused = result.rejected.len() as u64;
            metrics.mutations(result.applied.len() as u64 + refused, refused);
        }
        self.out.push_back(Message::PushAck(result));
        Ok(())
    }

    fn on_want(&mut self, store: &(impl Replica + ?Sized), want: Want) -> Result<(), SyncError> {
        // A newer Want supersedes whatever of an older answer is unsent.
        self.queue.clear();
        self.answer = None;
        self.peer_had = Some(want.have.clone());
        self.peer_has = Some(want.have.clone());
        self.answering = Some((want.id, None));
        self.peer_caught = false;
        let authority = self.authority;
        let token = self.identity.as_ref().map_or("", Identity::token);
        match (want.first_pending, &self.peer) {
            (Some(first), Some(peer)) if authority => {
                // The authority's answer comes with its word on the
                // asker's mutations, read in one step: held whole.
                let mut pull = store.pull_for(token, peer.site, &want.have, first)?;
                if !self.may_read_rejections_of(peer.site) {
                    pull.notices.clear();
                }
                if !pull.notices.is_empty() {
                    self.stats.rejections_sent += pull.notices.len() as u64;
                    self.queue.push_back(Outgoing::Rejections(pull.notices));
                }
                let processed = Processed {
                    last_processed: pull.last_processed,
                    rejected: pull.rejected,
                };
                let answer = batches(
                    pull.changes,
                    self.config.batch_rows,
                    self.config.batch_bytes,
                );
                self.queue_batches(answer, Some(want.id));
                self.queue.push_back(Outgoing::Sent {
                    want: want.id,
                    mutations: Some(processed),
                });
                self.note_held(0);
                Ok(())
            }
            _ => {
                self.queue_rejections(store, &want.have)?;
                let cut = Batcher::new(
                    store.site_id(),
                    self.config.batch_rows,
                    self.config.batch_bytes,
                );
                self.answer = Some(Answer {
                    want: want.id,
                    have: want.have,
                    next: None,
                    cut,
                });
                self.read_answer(store)
            }
        }
    }

    /// Reads the answer being streamed on, a page at a time, until
    /// `window` of its batches wait to be sent or its last page is read
    /// (then its `Sent` is queued). What is held is bounded by the window
    /// and a page, never the whole answer: the rest stays in the replica
    /// until acknowledgements make room.
    fn read_answer(&mut self, store: &(impl Replica + ?Sized)) -> Result<(), SyncError> {
        let limit = self.config.batch_rows.max(1);
        while let Some(mut answer) = self.answer.take() {
            if self.queued_batches() >= self.config.window.max(1) {
                self.answer = Some(answer);
                return Ok(());
            }
            let page = store.changes_since(&answer.have, answer.next.as_ref(), limit)?;
            let next = page.next;
            // One that does not move on would read the same pages forever.
            if let (Some(cursor), Some(from)) = (next, answer.next) {
                if cursor <= from {
                    return Err(SyncError::StalledPages { cursor });
                }
            }
            let done = answer.cut.push_page_streamed(page.changes);
            self.note_held(answer.cut.held_rows() + done.iter().map(Changeset::len).sum::<usize>());
            self.queue_batches(done, Some(answer.want));
            if next.is_some() {
                answer.next = next;
                self.answer = Some(answer);
                continue;
            }
            let want = answer.want;
            self.queue_batches(answer.cut.finish_streamed(), Some(want));
            self.queue.push_back(Outgoing::Sent {
                want,
                mutations: None,
            });
        }
        Ok(())
    }

    /// Queues batches for sending, counting their covers as the peer's.
    fn queue_batches(&mut self, batches: impl IntoIterator<Item = Changeset>, want: Option<u64>) {
        for changes in batches {
            if let Some(peer_has) = &mut self.peer_has {
                add_covers(peer_has, &changes);
            }
            self.queue.push_back(Outgoing::Batch { changes, want });
        }
    }

    fn queued_batches(&self) -> usize {
        self.queue
            .iter()
            .filter(|queued| matches!(queued, Outgoing::Batch { .. }))
            .count()
    }

    /// Records what is held now: the queued batches' rows and `more`
    /// (rows cut, not yet queued).
    fn note_held(&mut self, more: usize) {
        let queued: usize = self
            .queue
            .iter()
            .map(|queued| match queued {
                Outgoing::Batch { changes, .. } => changes.len(),
                _ => 0,
            })
            .sum();
        self.stats.max_rows_held = self.stats.max_rows_held.max((queued + more) as u64);
    }

    fn on_batch(
        &mut self,
        store: &mut (impl Replica + ?Sized),
        batch: Batch,
    ) -> Result<(), SyncError> {
        if self.access == Access::ReadOnly {
            return Err(SyncError::ReadOnly {
                sent: format!("a batch of {} rows", batch.changes.len()),
            });
        }
        if let Some(identity) = &self.identity {
            identity.check_batch(store, &mut self.own_sites, &batch.changes)?;
        }
        let report = if store.queues_mutations() {
            // A client of an authority may have pending mutations whose
            // speculative effects sit on top of the canonical rows: the
            // batch goes under them (taken off, batch applied, replayed).
            // Which mutations the authority has processed is the mutator
            // layer's pull, not this batch's, so none is dropped here.
            store
                .apply_pull(&PullResponse {
                    changes: batch.changes.clone(),
                    last_processed: 0,
                    rejected: Vec::new(),
                    notices: Vec::new(),
                })?
                .apply
        } else {
            store.apply_from(&batch.changes, &self.writer)?
        };
        if let Some(peer_has) = &mut self.peer_has {
            add_covers(peer_has, &batch.changes);
        }
        if self.want_open {
            self.received.insert(batch.seq);
        }
        let applied = report.applied() as u64;
        self.stats.batches_received += 1;
        self.stats.rows_received += batch.changes.len() as u64;
        self.stats.rows_applied += applied;
        if let Some(metrics) = &self.metrics {
            metrics.batch_received(batch.changes.len() as u64, applied, &report);
        }
        self.out.push_back(Message::Ack(Ack {
            seq: batch.seq,
            applied,
        }));
        Ok(())
    }

    fn on_ack(&mut self, ack: Ack) -> Result<(), SyncError> {
        match self.in_flight.remove(&ack.seq) {
            Some(batch) => {
                self.stats.rows_acked += batch.rows;
                self.acknowledged.merge(&batch.covers);
                Ok(())
            }
            // A duplicate of an acknowledgement already counted.
            None if ack.seq < self.next_seq => Ok(()),
            None => Err(SyncError::UnknownAck { seq: ack.seq }),
        }
    }

    fn on_sent(
        &mut self,
        store: &mut (impl Replica + ?Sized),
        sent: Sent,
    ) -> Result<(), SyncError> {
        if !self.want_open || sent.want != self.want_id {
            return Ok(());
        }
        if !(sent.first..=sent.last).all(|seq| self.received.contains(&seq)) {
            return self.want_again(store);
        }
        if let (Some(processed), true) = (sent.mutations, store.queues_mutations()) {
            // Every batch of the answer is applied, so the effects of the
            // processed mutations are here: drop them, replay the rest.
            let report = store.apply_pull(&PullResponse {
                changes: Changeset::new(store.site_id()),
                last_processed: processed.last_processed,
                rejected: processed.rejected,
                notices: Vec::new(),
            })?;
            self.stats.mutations_acknowledged += report.acknowledged as u64;
            self.stats.mutations_rejected += report.rejected.len() as u64;
        }
        self.want_open = false;
        self.caught = true;
        self.received.clear();
        self.out.push_back(Message::Caught(sent.want));
        Ok(())
    }

    /// Whether the peer may read the rejection notices of writes by `site`
    /// (what was refused, and why): without tokens, anyone; with a token,
    /// only when the site is bound to it, so a token (a read-only one
    /// included) that says hello with another device's site id learns
    /// nothing of that device's refused writes.
    fn may_read_rejections_of(&self, site: SiteId) -> bool {
        self.identity.is_none() || self.own_sites.contains(&site)
    }

    /// Queues the rejection notices for the peer that a replica with `have`
    /// has not received (their corrections are not in `have`).
    fn queue_rejections(
        &mut self,
        store: &(impl Replica + ?Sized),
        have: &VersionVector,
    ) -> Result<(), SyncError> {
        let Some(peer) = &self.peer else {
            return Ok(());
        };
        if !self.may_read_rejections_of(peer.site) {
            return Ok(());
        }
        let list = store.rejections_for(peer.site, have)?;
        if !list.is_empty() {
            self.stats.rejections_sent += list.len() as u64;
            self.queue.push_back(Outgoing::Rejections(list));
        }
        Ok(())
    }

    /// Asks again for everything still missing, if an answer is
    /// outstanding: for a transport that noticed silence (a lost message).
    pub fn retry(&mut self, store: &(impl Replica + ?Sized)) -> Result<(), SyncError> {
        if self.phase == Phase::Open && self.want_open {
            self.want_again(store)?;
        }
        Ok(())
    }

    /// Refuses to queue `more` live batches beyond the lag bound: the
    /// session closes with a notice (the caller sends it) instead.
    fn check_lag(&mut self, more: &[Changeset]) -> Result<(), SyncError> {
        let batches = more.len();
        let bytes = more.iter().map(approx_changeset_bytes).sum::<usize>();
        let (max_batches, max_bytes) = (self.config.max_lag_batches, self.config.max_lag_bytes);
        if batches <= max_batches && bytes <= max_bytes {
            return Ok(());
        }
        let error = SyncError::from(LimitExceeded::Lagging {
            batches,
            bytes,
            max_batches,
            max_bytes,
        });
        self.fail(&error);
        Err(error)
    }

    /// Tells a live session the store changed: what the peer lacks is
    /// queued for sending. While batches still wait to be sent (the peer
    /// has not acknowledged enough of them), it is put off and read later
    /// in one go ([`Session::has_deferred_changes`]); one read of more
    /// than [`SessionConfig::max_lag_batches`] batches or
    /// [`SessionConfig::max_lag_bytes`] closes the session with a notice
    /// to send, and an error. Does nothing before the peer said what it has,
    /// when the peer does not accept changes, or outside live mode.
    pub fn local_changed(&mut self, store: &(impl Replica + ?Sized)) -> Result<(), SyncError> {
        if self.phase != Phase::Open || !self.config.live || !self.peer_wants() {
            return Ok(());
        }
        // New mutations go to the authority, and the answer to the Want
        // that follows brings back their canonical effects.
        if self.push_pending(store)? {
            self.want_again(store)?;
        }
        // A peer that said it is not live gets no unasked batches: it
        // asks (a `Want`) when it wants more.
        if !self.peer.as_ref().is_some_and(|p| p.live) {
            return Ok(());
        }
        // While an answer is streamed, or batches wait for the window,
        // the read is put off: the answer's later pages carry what was
        // written ahead of its cursor, and the read after it what was
        // written behind.
        if self.batch_waiting() || self.answer.is_some() {
            self.deferred = true;
            return Ok(());
        }
        let Some(peer_has) = &mut self.peer_has else {
            return Ok(());
        };
        let answer = read_batches(store, peer_has, &self.config)?;
        self.deferred = false;
        if answer.is_empty() {
            return Ok(());
        }
        let before = peer_has.clone();
        self.check_lag(&answer)?;
        self.queue_rejections(store, &before)?;
        self.queue_batches(answer, None);
        self.note_held(0);
        Ok(())
    }
}

/// What a replica with `have` lacks, read a page of `batch_rows` rows at a
/// time and cut into batches as the pages come: the batches are those of
/// the whole answer cut at once. All pages are read within one call, so a
/// session that holds its replica's lock for the call (the driver does)
/// reads them from one state.
fn read_batches(
    store: &(impl Replica + ?Sized),
    have: &VersionVector,
    config: &SessionConfig,
) -> Result<Vec<Changeset>, SyncError> {
    let limit = config.batch_rows.max(1);
    let mut page = store.changes_since(have, None, limit)?;
    let mut cut = Batcher::new(page.changes.origin, config.batch_rows, config.batch_bytes);
    let mut from: Option<ChangeCursor> = None;
    loop {
        let next = page.next;
        cut.push_page(page.changes);
        let Some(cursor) = next else {
            return Ok(cut.finish());
        };
        // One that does not move on would read the same pages forever.
        if from.is_some_and(|from| cursor <= from) {
            return Err(SyncError::StalledPages { cursor });
        }
        page = store.changes_since(have, Some(&cursor), limit)?;
        from = Some(cursor);
    }
}
