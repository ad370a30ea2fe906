//! Running a [`Session`] over a [`Connection`]: the loop every transport
//! and the relay share, plus the client calls built on it.
//!
//! The loop sends whatever the session has to say, then waits for the
//! first of: a message from the peer, a change to the local store (live
//! sessions push it), silence longer than the idle limit (an outstanding
//! request is asked again; a second silence ends the session), or
//! shutdown (the peer gets a notice). Replica work runs on the blocking
//! pool.
//!
//! It runs against any [`SharedReplica`]. Which one is fixed when the loop
//! starts, except on a relay: there the peer's `Hello`, before the session
//! sees it, may hand the loop another replica and a fresh session
//! ([`Rebind`]), and from then on that one alone is read and written.

use super::backoff::{seed_for, Delays};
use super::error::SyncError;
use super::limits::{LimitExceeded, WriteGate};
use super::message::{Hello, Message, NoticeCode};
use super::metrics::RelayMetrics;
use super::replica::Replica;
use super::session::{Access, PeerInfo, Session, SessionConfig, SyncStats};
use super::shared::{blocking, SharedReplica};
use super::status::{SyncFailure, SyncStatus, Tracker};
use super::transport::Connection;
use super::wire::MAX_MESSAGE_PAYLOAD;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// What a finished session did, and with whom.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SyncReport {
    /// What moved.
    pub stats: SyncStats,
    /// The peer, if it said hello.
    pub peer: Option<PeerInfo>,
}

impl SyncReport {
    fn of(session: &Session) -> SyncReport {
        SyncReport {
            stats: session.stats(),
            peer: session.peer().cloned(),
        }
    }
}

/// How a session is run.
#[derive(Debug, Clone)]
pub(crate) struct DriveOptions {
    /// Stop once both sides caught up (one-shot sync).
    pub until_caught_up: bool,
    /// Silence after which an outstanding request is repeated, and after
    /// twice which the session ends.
    pub idle: Duration,
    /// The peer's `Hello` must have arrived this long after the loop
    /// started (a relay's handshake deadline); `None`: only `idle` applies.
    pub handshake: Option<Duration>,
    /// A live session that is caught up and has heard nothing from its
    /// peer this long ends quietly (the peer reconnects); `None`: never.
    pub quiet: Option<Duration>,
    /// A write the peer does not take within this long ends the session.
    pub write_timeout: Duration,
    /// A relay's counters: how long each batch from the peer took to apply.
    pub metrics: Option<Arc<RelayMetrics>>,
    /// When the `handshake` deadline started, if before the loop (a
    /// relay's accept, so the TLS and WebSocket handshakes count against
    /// it); `None`: when the loop started.
    pub handshake_from: Option<Instant>,
}

impl DriveOptions {
    /// A client's: no handshake deadline, writes given 30 s.
    pub(crate) fn client(until_caught_up: bool, idle: Duration) -> DriveOptions {
        DriveOptions {
            until_caught_up,
            idle,
            handshake: None,
            quiet: None,
            write_timeout: Duration::from_secs(30),
            metrics: None,
            handshake_from: None,
        }
    }
}

/// Picks the replica a session serves once the peer's `Hello` arrives.
pub(crate) trait Rebind<H>: Send {
    /// Called with each `Hello` from the peer before the session sees it.
    /// `Some`: the replica to serve from now on, and a session over it to
    /// replace the current one (neither has seen a `Hello` yet).
    /// An error ends the session with the notice it calls for.
    fn on_hello(
        &mut self,
        hello: &Hello,
    ) -> impl Future<Output = Result<Option<(H, Session)>, SyncError>> + Send;

    /// What a batch or push from the peer is checked against before it is
    /// applied (on the blocking pool, the replica locked); a refusal ends
    /// the session with nothing of it written. `None`: nothing.
    fn write_gate(&self) -> Option<WriteGate> {
        None
    }

    /// Resolves when the peer's authorization may have changed (a relay's
    /// tokens were replaced); by default, never.
    fn reauthorized(&mut self) -> impl Future<Output = ()> + Send {
        std::future::pending()
    }

    /// Why the peer is no longer authorized (its token revoked), if it is
    /// not. Asked before anything is sent and before each event is
    /// handled: `Some` ends the session with the error's notice, nothing
    /// more of the peer's applied.
    fn revoked(&mut self) -> Option<SyncError> {
        None
    }
}

/// Keeps the replica the loop started with (clients, [`accept_once`]).
pub(crate) struct Fixed;

impl<H: Send> Rebind<H> for Fixed {
    async fn on_hello(&mut self, _hello: &Hello) -> Result<Option<(H, Session)>, SyncError> {
        Ok(None)
    }
}

/// Sees the session each time round the loop, once what it had to say is
/// sent (a continuous sync's status, [`super::status`]). It must be quick:
/// the session waits for it.
pub(crate) trait Observe: Send {
    /// The session as it stands.
    fn progress(&mut self, session: &Session);
}

/// Observes nothing (the relay, one-shot syncs).
impl Observe for () {
    fn progress(&mut self, _session: &Session) {}
}

/// Runs `session` until it is caught up (one-shot), the peer closes, an
/// error, or `shutdown` turns true.
///
/// Deadlines are the connection's own: measured from when the loop
/// started (the handshake) and from the last frame this peer sent (idle,
/// quiet), never re-armed by anything else, so other clients' traffic on
/// the same replica cannot keep a silent connection alive.
pub(crate) async fn drive<H: SharedReplica>(
    store: H,
    session: Session,
    conn: &mut Connection,
    options: &DriveOptions,
    shutdown: &mut watch::Receiver<bool>,
    rebind: &mut impl Rebind<H>,
) -> Result<SyncReport, SyncError> {
    drive_observed(store, session, conn, options, shutdown, rebind, &mut ()).await
}

/// [`drive`], reporting the session's progress to `observer`.
async fn drive_observed<H: SharedReplica>(
    mut store: H,
    session: Session,
    conn: &mut Connection,
    options: &DriveOptions,
    shutdown: &mut watch::Receiver<bool>,
    rebind: &mut impl Rebind<H>,
    observer: &mut impl Observe,
) -> Result<SyncReport, SyncError> {
    let mut session = Some(session);
    let mut changes = store.subscribe();
    let started = Instant::now();
    // The last frame from the peer, and the start of the current silence
    // (moved on when a live, caught-up session is found healthy).
    let mut heard = started;
    let mut quiet_since = started;
    let mut silent = 0u32;
    let mut watching = true;
    loop {
        let s = session
            .as_mut()
            .ok_or(SyncError::Closed { during: "sync" })?;
        if let Some(e) = rebind.revoked() {
            return Err(end_with(s, e, conn, options).await);
        }
        while let Some(message) = s.poll_message() {
            send(conn, &message, options).await?;
        }
        if s.is_closed() {
            shut(conn, options).await;
            return Err(SyncError::Closed {
                during: "after a notice",
            });
        }
        observer.progress(s);
        if s.has_deferred_changes() {
            let (back, result) =
                with_store(&store, session.take(), |s, st| s.local_changed(st)).await?;
            session = Some(back);
            if let (Err(e), Some(s)) = (result, session.as_mut()) {
                flush(s, conn, options).await;
                return Err(e);
            }
            continue;
        }
        if options.until_caught_up && s.is_caught_up() {
            shut(conn, options).await;
            return Ok(SyncReport::of(s));
        }
        let greeting = s.peer().is_none();
        let live_and_quiet = !options.until_caught_up && s.is_caught_up();
        let idle = later(quiet_since, options.idle.saturating_mul(silent + 1));
        let deadline = match (options.handshake, options.quiet) {
            (Some(limit), _) if greeting => hello_deadline(started, options.handshake_from, limit),
            (_, Some(quiet)) if live_and_quiet => idle.min(later(heard, quiet)),
            _ => idle,
        };
        let event = tokio::select! {
            message = conn.recv() => Event::Message(message),
            // Nothing to push before the peer said hello.
            changed = changes.changed(), if watching && !greeting => match changed {
                Ok(()) => Event::LocalChange,
                Err(_) => Event::Unwatched,
            },
            () = tokio::time::sleep_until(deadline.into()) => Event::Idle,
            _ = shutdown.wait_for(|stop| *stop) => Event::Shutdown,
            () = rebind.reauthorized() => Event::Reauthorized,
        };
        // Whatever came, a revoked peer gets nothing more done.
        if let Some(e) = rebind.revoked() {
            return Err(end_with(s, e, conn, options).await);
        }
        match event {
            // The peer left after both sides caught up: a normal end.
            Event::Message(None) if s.is_caught_up() => return Ok(SyncReport::of(s)),
            Event::Message(None) => return Err(SyncError::Closed { during: "mid-sync" }),
            Event::Message(Some(Err(e))) => {
                // A bad frame: tell the peer, then end this connection only.
                s.close(NoticeCode::Protocol, notice_text(&e));
                flush(s, conn, options).await;
                return Err(e);
            }
            Event::Message(Some(Ok(message))) => {
                silent = 0;
                heard = Instant::now();
                quiet_since = heard;
                if let Message::Hello(hello) = &message {
                    match rebind.on_hello(hello).await {
                        Ok(None) => {}
                        Ok(Some((replica, fresh))) => {
                            // The same replica keeps its subscription, so no
                            // change it signalled is missed.
                            let signal = replica.subscribe();
                            if !signal.same_channel(&changes) {
                                changes = signal;
                                watching = true;
                            }
                            store = replica;
                            session = Some(fresh);
                        }
                        Err(e) => {
                            if let Some(s) = session.as_mut() {
                                if let Some(code) = e.notice_code() {
                                    s.close(code, e.to_string());
                                }
                                flush(s, conn, options).await;
                            }
                            return Err(e);
                        }
                    }
                }
                let applies = matches!(message, Message::Changes(_) | Message::Push(_));
                // An empty batch or push changes nothing: it wakes no one.
                let writes = match &message {
                    Message::Changes(batch) => !batch.changes.is_empty(),
                    Message::Push(push) => !push.mutations.is_empty(),
                    _ => false,
                };
                let gate = if applies { rebind.write_gate() } else { None };
                let timed = matches!(message, Message::Changes(_))
                    .then(|| options.metrics.clone())
                    .flatten();
                let (back, result) = with_store(&store, session.take(), move |s, st| {
                    if let Some(gate) = gate.filter(|_| s.access() == Access::ReadWrite) {
                        if let Err(e) = gate.check(&message, &*st) {
                            if let Some(code) = e.notice_code() {
                                s.close(code, e.to_string());
                            }
                            return Err(e);
                        }
                    }
                    let started = Instant::now();
                    let received = s.receive(st, message);
                    if let (Some(metrics), Ok(())) = (timed, &received) {
                        metrics.apply_took(started.elapsed());
                    }
                    received
                })
                .await?;
                session = Some(back);
                if let Err(e) = result {
                    if let Some(s) = session.as_mut() {
                        flush(s, conn, options).await;
                    }
                    return Err(e);
                }
                if writes {
                    store.notify_changed();
                }
            }
            Event::LocalChange => {
                let (back, result) =
                    with_store(&store, session.take(), |s, st| s.local_changed(st)).await?;
                session = Some(back);
                if let (Err(e), Some(s)) = (result, session.as_mut()) {
                    flush(s, conn, options).await;
                    return Err(e);
                }
            }
            // The replica is gone: nothing more will change.
            Event::Unwatched => watching = false,
            // Still authorized (checked above).
            Event::Reauthorized => {}
            Event::Idle => {
                if let (true, Some(after)) = (greeting, options.handshake) {
                    let e = SyncError::from(LimitExceeded::Handshake { after });
                    if let Some(code) = e.notice_code() {
                        s.close(code, e.to_string());
                    }
                    flush(s, conn, options).await;
                    return Err(e);
                }
                let now = Instant::now();
                if let Some(quiet) = options.quiet {
                    if live_and_quiet && now >= later(heard, quiet) {
                        // Nothing owed either way: end without a notice,
                        // and the peer reconnects when it wants to.
                        shut(conn, options).await;
                        return Ok(SyncReport::of(s));
                    }
                }
                if now < idle {
                    continue;
                }
                silent += 1;
                if silent > 1 {
                    if live_and_quiet {
                        silent = 0;
                        quiet_since = now;
                        continue;
                    }
                    return Err(SyncError::Timeout {
                        seconds: options.idle.as_secs().saturating_mul(2),
                    });
                }
                let (back, result) =
                    with_store(&store, session.take(), |s, st| s.retry(st)).await?;
                session = Some(back);
                result?;
            }
            Event::Shutdown => {
                s.close(NoticeCode::Shutdown, "shutting down");
                flush(s, conn, options).await;
                return Ok(SyncReport::of(s));
            }
        }
    }
}

/// `at + limit`, or a time decades away for a limit too large to add.
/// When a peer's `Hello` is due: `limit` after `from` (the relay's
/// accept) if given, else after `started`, so time spent before the loop
/// (a TLS or WebSocket handshake) comes out of the hello's share rather
/// than adding to it.
fn hello_deadline(started: Instant, from: Option<Instant>, limit: Duration) -> Instant {
    later(from.map_or(started, |from| from.min(started)), limit)
}

fn later(at: Instant, limit: Duration) -> Instant {
    const FAR: Duration = Duration::from_secs(30 * 365 * 24 * 3600);
    at.checked_add(limit)
        .or_else(|| at.checked_add(FAR))
        .unwrap_or(at)
}

enum Event {
    Message(Option<Result<Message, SyncError>>),
    LocalChange,
    Unwatched,
    Idle,
    Shutdown,
    Reauthorized,
}

/// Closes the session with `e`'s notice, sends it, and hands `e` back.
async fn end_with(
    session: &mut Session,
    e: SyncError,
    conn: &mut Connection,
    options: &DriveOptions,
) -> SyncError {
    if let Some(code) = e.notice_code() {
        session.close(code, e.to_string());
    }
    flush(session, conn, options).await;
    e
}

/// Sends one message, giving the peer `write_timeout` to take it.
async fn send(
    conn: &mut Connection,
    message: &Message,
    options: &DriveOptions,
) -> Result<(), SyncError> {
    let after = options.write_timeout;
    tokio::time::timeout(after, conn.send(message))
        .await
        .map_err(|_| LimitExceeded::WriteStalled { after })?
}

/// Flushes and closes the sending side, giving up after `write_timeout`.
async fn shut(conn: &mut Connection, options: &DriveOptions) {
    let _ = tokio::time::timeout(options.write_timeout, conn.shutdown()).await;
}

/// Sends what is left (a closing notice), ignoring a peer that is gone.
async fn flush(session: &mut Session, conn: &mut Connection, options: &DriveOptions) {
    while let Some(message) = session.poll_message() {
        if send(conn, &message, options).await.is_err() {
            return;
        }
    }
    shut(conn, options).await;
}

/// Runs `f` with the session and the locked replica on the blocking pool.
async fn with_store<H, T, F>(
    store: &H,
    session: Option<Session>,
    f: F,
) -> Result<(Session, T), SyncError>
where
    H: SharedReplica,
    F: FnOnce(&mut Session, &mut H::Replica) -> T + Send + 'static,
    T: Send + 'static,
{
    let mut session = session.ok_or(SyncError::Closed { during: "sync" })?;
    blocking(store, "sync", move |st| {
        let out = f(&mut session, st);
        (session, out)
    })
    .await
}

/// Syncs once, both ways, over an open connection as the side that
/// connected, and returns what moved.
///
/// The connection can be anything that carries bytes; here it is an
/// in-memory pipe to a peer that runs [`accept_once`]:
///
/// ```
/// use meldb::sync::{accept_once, sync_once, Connection, Grant, SessionConfig, SharedStore};
/// use meldb::{codec::MAX_MESSAGE_PAYLOAD, Schema, Store};
/// use std::sync::Arc;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let schema = Schema::from_toml_str(r#"
///     name = "notes"
///     version = 1
///     [[table]]
///     name = "note"
///     primary_key = ["id"]
///     [[table.column]]
///     name = "id"
///     type = "text"
///     [[table.column]]
///     name = "body"
///     type = "text"
/// "#, "notes.toml")?;
/// let phone = SharedStore::new(Store::open_in_memory(&schema)?);
/// let laptop = SharedStore::new(Store::open_in_memory(&schema)?);
/// phone.write(|tx| tx.insert("note", &[("id", "n1".into()), ("body", "hi".into())]))?;
///
/// // The accepting side decides what a token may do.
/// let authorize = Arc::new(|token: Option<&str>| {
///     (token == Some("s3cret")).then(Grant::read_write)
/// });
/// let runtime = tokio::runtime::Runtime::new()?;
/// let (sent, accepted) = runtime.block_on(async {
///     let (mut here, mut there) = Connection::pair(MAX_MESSAGE_PAYLOAD);
///     tokio::join!(
///         sync_once(&phone, &mut here, SessionConfig::default().token(Some("s3cret".into()))),
///         accept_once(&laptop, &mut there, SessionConfig::default(), authorize),
///     )
/// });
/// assert_eq!(sent?.stats.rows_sent, 1);
/// accepted?;
/// assert_eq!(phone.lock().digest()?, laptop.lock().digest()?);
/// # Ok(()) }
/// ```
pub async fn sync_once<H: SharedReplica>(
    store: &H,
    conn: &mut Connection,
    config: SessionConfig,
) -> Result<SyncReport, SyncError> {
    let session = blocking(store, "session start", move |r| {
        Session::initiator(&*r, config.live(false))
    })
    .await?;
    let (_never, mut shutdown) = watch::channel(false);
    drive(
        store.clone(),
        session,
        conn,
        &DriveOptions::client(true, Duration::from_secs(30)),
        &mut shutdown,
        &mut Fixed,
    )
    .await
}

/// Syncs once as the side that accepted the connection: checks the peer's
/// token with `authorize`, then runs until both sides caught up.
pub async fn accept_once<H: SharedReplica>(
    store: &H,
    conn: &mut Connection,
    config: SessionConfig,
    authorize: super::session::Authorize,
) -> Result<SyncReport, SyncError> {
    conn.set_accepting();
    let session = blocking(store, "session start", move |r| {
        Session::responder(&*r, config.live(false), authorize)
    })
    .await?;
    let (_never, mut shutdown) = watch::channel(false);
    drive(
        store.clone(),
        session,
        conn,
        &DriveOptions::client(true, Duration::from_secs(30)),
        &mut shutdown,
        &mut Fixed,
    )
    .await
}

/// Connects to `addr` over TCP and syncs once (see [`sync_once`]).
pub async fn sync_once_tcp<H: SharedReplica>(
    store: &H,
    addr: &str,
    config: SessionConfig,
) -> Result<SyncReport, SyncError> {
    let mut conn = Connection::tcp(addr, MAX_MESSAGE_PAYLOAD).await?;
    sync_once(store, &mut conn, config).await
}

/// Reconnection delays: doubling from `initial` up to `max` while
/// connecting or sessions fail, back to `initial` after a session that
/// lasted at least `max`. Each wait is drawn at random from the upper half
/// of the current delay (`[d/2, d]`, "equal jitter"), so clients cut off
/// together do not reconnect together.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// The first delay.
    pub initial: Duration,
    /// The largest delay.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(30),
        }
    }
}

/// Stays connected to `addr` and syncs continuously (live mode):
/// reconnects with [`Backoff`] after any failure, until `shutdown` turns
/// true. Returns the report of every session that ended cleanly. For its
/// status as it goes, use [`ContinuousSync`](super::ContinuousSync).
pub async fn sync_continuously<H: SharedReplica>(
    store: H,
    addr: String,
    config: SessionConfig,
    backoff: Backoff,
    shutdown: watch::Receiver<bool>,
) -> Vec<SyncReport> {
    let connect = || Connection::tcp(addr.clone(), MAX_MESSAGE_PAYLOAD);
    let status = Arc::new(watch::channel(SyncStatus::starting()).0);
    let reconnect = Reconnect {
        backoff,
        seed: None,
        status,
    };
    reconnecting(store, &addr, connect, config, reconnect, shutdown).await
}

/// How [`reconnecting`] waits and reports.
pub(crate) struct Reconnect {
    pub backoff: Backoff,
    /// The jitter's seed; `None`: from the site id and the clock.
    pub seed: Option<u64>,
    /// Where the status goes.
    pub status: Arc<watch::Sender<SyncStatus>>,
}

/// [`sync_continuously`] over whatever `connect` opens (a TCP address, a
/// peer URL), keeping `reconnect.status` up to date.
pub(crate) async fn reconnecting<H, F, C>(
    store: H,
    addr: &str,
    mut connect: F,
    config: SessionConfig,
    reconnect: Reconnect,
    mut shutdown: watch::Receiver<bool>,
) -> Vec<SyncReport>
where
    H: SharedReplica,
    F: FnMut() -> C,
    C: Future<Output = Result<Connection, SyncError>>,
{
    let backoff = reconnect.backoff;
    let seed = match reconnect.seed {
        Some(seed) => seed,
        // A replica that panics telling its site id still gets a seed: the
        // clock's part of it.
        None => seed_for(
            blocking(&store, "site id", |r| r.site_id())
                .await
                .unwrap_or(crate::clock::SiteId::from_bytes([0; 16])),
        ),
    };
    let mut delays = Delays::new(backoff, seed);
    let mut tracker = Tracker::new(store.clone(), reconnect.status);
    let mut all = Vec::new();
    let options = DriveOptions::client(false, Duration::from_secs(15));
    while !*shutdown.borrow() {
        tracker.connecting();
        let ended = match connect().await {
            Ok(mut conn) => {
                tracker.connected();
                let live = config.clone().live(true);
                let started = Instant::now();
                let drove = match blocking(&store, "session start", move |r| {
                    Session::initiator(&*r, live)
                })
                .await
                {
                    Ok(session) => {
                        drive_observed(
                            store.clone(),
                            session,
                            &mut conn,
                            &options,
                            &mut shutdown,
                            &mut Fixed,
                            &mut tracker,
                        )
                        .await
                    }
                    Err(e) => Err(e),
                };
                // A session that lasted was healthy: reconnect soon. One
                // that failed at once keeps backing off, so a broken peer
                // is not hammered.
                if started.elapsed() >= backoff.max {
                    delays.reset();
                }
                match drove {
                    Ok(stats) => {
                        all.push(stats);
                        None
                    }
                    Err(e) => {
                        tracing::warn!(peer = %addr, error = %e, "sync session ended");
                        // A refused token stays refused; keep trying
                        // slowly in case the relay's tokens change.
                        if let SyncError::Refused {
                            code: NoticeCode::Unauthorized,
                            ..
                        } = e
                        {
                            delays.slowest();
                        }
                        Some(SyncFailure::new(e, false))
                    }
                }
            }
            Err(e) => {
                tracing::debug!(peer = %addr, error = %e, "connect failed");
                Some(SyncFailure::new(e, true))
            }
        };
        if *shutdown.borrow() {
            break;
        }
        let delay = delays.next_delay();
        tracker.offline(ended, delay);
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            _ = shutdown.wait_for(|stop| *stop) => {}
        }
    }
    tracker.stopped().await;
    all
}

/// What the peer is told about a frame this side could not read: a
/// version this build does not speak is put from the peer's side (which
/// versions to use instead), anything else as the error says.
fn notice_text(e: &SyncError) -> String {
    use super::wire::ProtocolVersion;
    use meldb_core::codec::DecodeError;
    let ours = ProtocolVersion::VERSIONS;
    match e {
        SyncError::Decode(DecodeError::UnsupportedVersion { found, .. }) => format!(
            "your sync protocol version {found} is newer than this peer speaks (versions {} to {}); \
             connect with a meldb that speaks one of those (relays are upgraded before their clients)",
            ours.oldest, ours.newest
        ),
        SyncError::Decode(DecodeError::ObsoleteVersion { found, .. }) => format!(
            "your sync protocol version {found} is older than this peer speaks (versions {} to {}); \
             upgrade to a meldb that speaks one of those",
            ours.oldest, ours.newest
        ),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Attacker: a client that spends most of the handshake deadline on a
    /// slow TLS handshake, then sends its hello late. Must not happen: the
    /// hello gets a fresh full deadline after the upgrade (twice the limit
    /// in all).
    #[test]
    fn the_hello_deadline_counts_from_accept_not_from_the_upgrade() {
        let accepted = Instant::now();
        let limit = Duration::from_secs(10);
        // The upgrade took 8 s: 2 s are left for the hello.
        let upgraded = accepted + Duration::from_secs(8);
        assert_eq!(
            hello_deadline(upgraded, Some(accepted), limit),
            accepted + limit
        );
        // An upgrade that took the whole deadline leaves nothing.
        let late = accepted + Duration::from_secs(12);
        assert!(hello_deadline(late, Some(accepted), limit) <= late);
        // Without an accept time (a direct peer), the loop's start counts.
        assert_eq!(hello_deadline(upgraded, None, limit), upgraded + limit);
    }
}
