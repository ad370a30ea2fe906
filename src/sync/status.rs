//! What a continuous sync is doing, for an app to show: [`SyncStatus`]
//! (a [`SyncState`] and the counts of what is still to deliver), and the
//! [`Tracker`] that keeps it up to date from the reconnect loop and the
//! session loop.
//!
//! Invariants:
//!
//! - The status is the latest only (a `watch` channel): an app that looks
//!   now and then sees the current state, not a backlog. States move
//!   `Connecting` → `Connected` (transport open, hello under way) →
//!   `Syncing` / `Idle` while a session runs, `Offline` between attempts
//!   (with the error that ended the last one and when the next begins),
//!   `Stopped` at the end, and no other way round.
//! - Counting never holds up a session: the counts are recomputed by a
//!   task of their own (on the blocking pool) when the store changes or
//!   the peer acknowledges something, and only the latest request is
//!   counted. They are eventually exact: once nothing moves, they are
//!   what the store and the peer's acknowledgements say.
//! - Errors are values: [`SyncFailure`] holds the [`SyncError`] itself
//!   (shared, so the status stays cheap to clone) and the notice code a
//!   refusal carried.

use super::driver::Observe;
use super::error::SyncError;
use super::message::NoticeCode;
use super::replica::Replica;
use super::session::Session;
use super::shared::SharedReplica;
use crate::version::VersionVector;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What a continuous sync is doing, and what it still has to deliver.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SyncStatus {
    /// Where it is.
    pub state: SyncState,
    /// Rows with local writes the peer has not acknowledged yet (written
    /// offline, or sent and not yet committed there). `None` until a peer
    /// said what it has in this run (the first session's `Want`), and
    /// while its token does not let it take changes.
    pub pending_changes: Option<u64>,
    /// Mutations queued for the authority and not yet settled by it.
    pub pending_mutations: u64,
}

impl SyncStatus {
    /// The status a sync starts in: connecting, nothing counted yet.
    pub fn starting() -> SyncStatus {
        SyncStatus {
            state: SyncState::Connecting,
            pending_changes: None,
            pending_mutations: 0,
        }
    }

    /// Whether nothing is waiting to be delivered: the local changes are
    /// known to be acknowledged and no mutation is queued.
    pub fn is_settled(&self) -> bool {
        self.pending_changes == Some(0) && self.pending_mutations == 0
    }
}

impl Default for SyncStatus {
    fn default() -> SyncStatus {
        SyncStatus::starting()
    }
}

/// Where a continuous sync is.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum SyncState {
    /// Opening a connection (TCP, then any TLS and WebSocket handshakes).
    Connecting,
    /// Connected; the peer has not answered the hello yet.
    Connected,
    /// Exchanging batches: catching up, or delivering new changes.
    Syncing,
    /// Live and caught up both ways: new changes go out as they happen.
    Idle,
    /// Not connected; the next attempt begins at `retry_at`.
    Offline {
        /// What ended the last attempt: a connection that failed, a
        /// session that failed or was refused. `None`: the peer ended the
        /// session cleanly (a relay's quiet timeout).
        error: Option<SyncFailure>,
        /// When the next attempt begins.
        retry_at: Instant,
        /// How long the wait was when it began (with jitter).
        retry_in: Duration,
    },
    /// Stopped by its shutdown signal; it will not reconnect.
    Stopped,
}

impl SyncState {
    /// The state's name: `connecting`, `connected`, `syncing`, `idle`,
    /// `offline` or `stopped`.
    pub fn name(&self) -> &'static str {
        match self {
            SyncState::Connecting => "connecting",
            SyncState::Connected => "connected",
            SyncState::Syncing => "syncing",
            SyncState::Idle => "idle",
            SyncState::Offline { .. } => "offline",
            SyncState::Stopped => "stopped",
        }
    }

    /// The error of an `Offline` state.
    pub fn error(&self) -> Option<&SyncFailure> {
        match self {
            SyncState::Offline { error, .. } => error.as_ref(),
            _ => None,
        }
    }
}

impl fmt::Display for SyncState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SyncState::Connected => f.write_str("connected, waiting for the peer's hello"),
            SyncState::Idle => f.write_str("idle, up to date"),
            SyncState::Offline {
                error, retry_in, ..
            } => {
                match error {
                    Some(e) => write!(f, "offline: {e}")?,
                    None => f.write_str("offline: the peer ended the session")?,
                }
                write!(f, "; retrying in {:.1} s", retry_in.as_secs_f64())
            }
            other => f.write_str(other.name()),
        }
    }
}

impl fmt::Display for SyncStatus {
    /// One line: the state, then what is pending.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (pending: ", self.state)?;
        match self.pending_changes {
            Some(n) => write!(f, "{n} changes")?,
            None => f.write_str("? changes")?,
        }
        write!(f, ", {} mutations)", self.pending_mutations)
    }
}

/// Why an attempt ended: the error, shared.
#[derive(Debug, Clone)]
pub struct SyncFailure {
    error: Arc<SyncError>,
    connecting: bool,
}

impl SyncFailure {
    pub(crate) fn new(error: SyncError, connecting: bool) -> SyncFailure {
        SyncFailure {
            error: Arc::new(error),
            connecting,
        }
    }

    /// The error.
    pub fn error(&self) -> &SyncError {
        &self.error
    }

    /// The notice code of the refusal: the peer's (an unknown token is
    /// [`NoticeCode::Unauthorized`]), or the one this side sent before
    /// closing. `None` for a connection or transport failure, a timeout, a
    /// peer that just went away.
    pub fn notice(&self) -> Option<NoticeCode> {
        match &*self.error {
            SyncError::Refused { code, .. } => Some(*code),
            other => other.notice_code(),
        }
    }

    /// Whether no session began: connecting, or a TLS or WebSocket
    /// handshake, failed.
    pub fn while_connecting(&self) -> bool {
        self.connecting
    }
}

impl fmt::Display for SyncFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.error, f)
    }
}

/// What the counts are counted against: the peer's acknowledged version
/// vector as last known, and a tick that asks for a recount.
#[derive(Debug, Clone, Default)]
struct CountInput {
    peer_has: Option<VersionVector>,
    tick: u64,
}

/// Keeps a [`SyncStatus`] up to date: the reconnect loop sets the states
/// around sessions, the session loop reports progress ([`Observe`]).
pub(crate) struct Tracker {
    status: Arc<watch::Sender<SyncStatus>>,
    input: Option<watch::Sender<CountInput>>,
    counter: Option<JoinHandle<()>>,
    /// What the last progress report saw (a recount is asked when it
    /// changes): acknowledged rows, settled mutations, received batches,
    /// pushed mutations, and whether the session was caught up.
    seen: Option<(u64, u64, u64, u64, bool)>,
    recount: Arc<dyn Fn(Option<VersionVector>) -> Counted + Send + Sync>,
}

/// Counts, or nothing when the store could not count.
type Counted = Option<(Option<u64>, u64)>;

impl Tracker {
    /// Tracks into `status`, counting what `store` has to deliver. Spawns
    /// the counting task (needs a tokio runtime).
    pub(crate) fn new<H: SharedReplica>(
        store: H,
        status: Arc<watch::Sender<SyncStatus>>,
    ) -> Tracker {
        let (input, rx) = watch::channel(CountInput::default());
        let counting = store.clone();
        let recount: Arc<dyn Fn(Option<VersionVector>) -> Counted + Send + Sync> =
            Arc::new(move |peer_has| counting.with_replica(|r| counts(&*r, peer_has.as_ref())));
        let counter = tokio::spawn(count_loop(
            store.subscribe(),
            rx,
            Arc::clone(&status),
            Arc::clone(&recount),
        ));
        Tracker {
            status,
            input: Some(input),
            counter: Some(counter),
            seen: None,
            recount,
        }
    }

    /// Moves to `state` (a change of state only: counts are the counter's).
    fn set(&self, state: SyncState) {
        self.status.send_if_modified(|s| {
            let same = match (&s.state, &state) {
                (SyncState::Offline { .. }, SyncState::Offline { .. }) => false,
                (a, b) => a.name() == b.name(),
            };
            if !same {
                s.state = state;
            }
            !same
        });
    }

    /// An attempt begins.
    pub(crate) fn connecting(&mut self) {
        self.seen = None;
        self.set(SyncState::Connecting);
        self.ask_recount(None);
    }

    /// The transport is open; the session begins.
    pub(crate) fn connected(&mut self) {
        self.set(SyncState::Connected);
    }

    /// Waiting `delay` before the next attempt, after `error`.
    pub(crate) fn offline(&mut self, error: Option<SyncFailure>, delay: Duration) {
        self.set(SyncState::Offline {
            error,
            retry_at: Instant::now() + delay,
            retry_in: delay,
        });
    }

    /// The loop ended: counts once more, for good, then `Stopped`.
    pub(crate) async fn stopped(&mut self) {
        let peer_has = self
            .input
            .take()
            .and_then(|input| input.borrow().peer_has.clone());
        if let Some(counter) = self.counter.take() {
            // Its input is gone: it ends after the count under way.
            let _ = counter.await;
        }
        let recount = Arc::clone(&self.recount);
        if let Ok(Some(counted)) = tokio::task::spawn_blocking(move || recount(peer_has)).await {
            apply_counts(&self.status, counted);
        }
        self.set(SyncState::Stopped);
    }

    /// Asks the counter for a recount, against `peer_has` if given.
    fn ask_recount(&self, peer_has: Option<VersionVector>) {
        if let Some(input) = &self.input {
            input.send_modify(|c| {
                if peer_has.is_some() {
                    c.peer_has = peer_has;
                }
                c.tick = c.tick.wrapping_add(1);
            });
        }
    }
}

impl Observe for Tracker {
    fn progress(&mut self, session: &Session) {
        let state = match (session.peer(), session.is_caught_up()) {
            (None, _) => SyncState::Connected,
            (Some(_), true) => SyncState::Idle,
            (Some(_), false) => SyncState::Syncing,
        };
        let stats = session.stats();
        let seen = (
            stats.rows_acked,
            stats.mutations_acknowledged,
            stats.batches_received,
            stats.mutations_pushed,
            session.is_caught_up(),
        );
        if self.seen != Some(seen) {
            self.seen = Some(seen);
            self.ask_recount(session.peer_acknowledged());
        }
        self.set(state);
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        if let Some(counter) = &self.counter {
            counter.abort();
        }
    }
}

/// Recounts whenever asked or the store changes, the latest request only.
async fn count_loop(
    mut changes: watch::Receiver<u64>,
    mut input: watch::Receiver<CountInput>,
    status: Arc<watch::Sender<SyncStatus>>,
    recount: Arc<dyn Fn(Option<VersionVector>) -> Counted + Send + Sync>,
) {
    let mut watching = true;
    loop {
        let peer_has = input.borrow_and_update().peer_has.clone();
        let recount = Arc::clone(&recount);
        match tokio::task::spawn_blocking(move || recount(peer_has)).await {
            Ok(Some(counted)) => apply_counts(&status, counted),
            Ok(None) => {}
            Err(_) => return,
        }
        tokio::select! {
            asked = input.changed() => if asked.is_err() { return },
            changed = changes.changed(), if watching => if changed.is_err() { watching = false },
        }
    }
}

fn apply_counts(status: &watch::Sender<SyncStatus>, (changes, mutations): (Option<u64>, u64)) {
    status.send_if_modified(|s| {
        let modified = s.pending_changes != changes || s.pending_mutations != mutations;
        s.pending_changes = changes;
        s.pending_mutations = mutations;
        modified
    });
}

/// What `replica` has to deliver to a peer that has `peer_has`; `None`
/// when the replica could not say (the error surfaces in the session).
fn counts<R: Replica + ?Sized>(replica: &R, peer_has: Option<&VersionVector>) -> Counted {
    let changes = match peer_has {
        Some(vv) => Some(replica.local_changes_missing_from(vv).ok()?),
        None => None,
    };
    let mutations = if replica.queues_mutations() {
        replica.pending_mutations().ok()?.len() as u64
    } else {
        0
    };
    Some((changes, mutations))
}
