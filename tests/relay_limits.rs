//! Limits that hold under attack, over real sockets on 127.0.0.1 against
//! a relay embedded in-process with short timeouts. Each test names the
//! attacker, what it sends, and what must not happen. Waits have generous
//! upper bounds and the assertions are on outcomes, never on durations.
//!
//! Attackers that must look like other machines connect from 127.0.0.2
//! and up (all of 127/8 is loopback on Linux).

mod common;

use common::{inventory, site, TestResult};
use meldb::codec::{self, decode_message, encode_message, HEADER_LEN, MAX_MESSAGE_PAYLOAD};
use meldb::sync::message::{Hello, Want};
use meldb::sync::WriteRate;
use meldb::sync::{
    sync_continuously, sync_once, sync_once_tcp, Backoff, Connection, Grant, ListenOptions,
    Message, NoticeCode, PeerUrl, Relay, RelayConfig, RelayMetrics, SessionConfig, SharedStore,
    SyncError, Tokens, UrlListener,
};
use meldb::{StoreOptions, VersionVector};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The longest any wait in these tests may take before it fails.
const PATIENCE: Duration = Duration::from_secs(30);

fn shared(n: u8) -> meldb::Result<SharedStore> {
    Ok(SharedStore::new(
        StoreOptions::new()
            .site_id(site(n))
            .open_in_memory(&inventory())?,
    ))
}

fn insert(store: &SharedStore, prefix: &str, range: std::ops::Range<usize>) -> meldb::Result<()> {
    store.write(|tx| {
        for i in range {
            tx.insert("item", &[("sku", format!("{prefix}{i}").into())])?;
        }
        Ok(())
    })
}

fn rows(store: &SharedStore) -> meldb::Result<i64> {
    Ok(store
        .lock()
        .conn()
        .query_row("SELECT count(*) FROM item", [], |r| r.get(0))?)
}

fn has(store: &SharedStore, sku: &str) -> meldb::Result<bool> {
    Ok(store
        .lock()
        .conn()
        .query_row("SELECT count(*) FROM item WHERE sku = ?1", [sku], |r| {
            r.get::<_, i64>(0)
        })?
        == 1)
}

fn tokens() -> Tokens {
    let mut tokens = Tokens::new();
    tokens.add("till-1", "rw-token-1", Grant::read_write());
    tokens.add("till-2", "rw-token-2", Grant::read_write());
    tokens.add("till-3", "rw-token-3", Grant::read_write());
    tokens.add("dashboard", "ro-token-1", Grant::read_only());
    tokens
}

fn token(t: &str) -> SessionConfig {
    SessionConfig::default().token(Some(t.into()))
}

/// A relay on 127.0.0.1 with the test tokens, and its store.
struct Running {
    addr: String,
    store: SharedStore,
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<(), SyncError>>,
}

impl Running {
    async fn start(config: RelayConfig) -> Result<Running, Box<dyn std::error::Error>> {
        let store = shared(100)?;
        let relay = Relay::bind(store.clone(), "127.0.0.1:0", config.tokens(tokens())).await?;
        let addr = relay.local_addr()?.to_string();
        let (stop, shutdown) = watch::channel(false);
        let task = tokio::spawn(relay.run(shutdown));
        Ok(Running {
            addr,
            store,
            stop,
            task,
        })
    }

    async fn stop(self) -> TestResult {
        self.stop.send(true)?;
        tokio::time::timeout(PATIENCE, self.task).await???;
        Ok(())
    }
}

/// A TCP connection to `addr` from the loopback address `from`.
async fn connect_from(from: [u8; 4], addr: &str) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((from, 0)))?;
    let addr: SocketAddr = addr
        .parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    socket.connect(addr).await
}

/// Waits until `done` says yes, failing after [`PATIENCE`].
async fn eventually<F, Fut>(what: &str, mut done: F) -> TestResult
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<bool, Box<dyn std::error::Error>>>,
{
    let start = Instant::now();
    while !done().await? {
        if start.elapsed() > PATIENCE {
            return Err(format!("gave up waiting for {what}").into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Reads what the relay sends on a raw socket until it closes it, and
/// returns the notice among it, if any. Fails if it stays open past
/// [`PATIENCE`].
async fn until_closed(
    stream: &mut (impl tokio::io::AsyncRead + Unpin),
) -> Result<Option<Message>, Box<dyn std::error::Error>> {
    let mut got = Vec::new();
    let read = tokio::time::timeout(PATIENCE, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    read.map_err(|_| "the relay kept the connection open")?;
    Ok(frames(&got)?
        .into_iter()
        .find(|m| matches!(m, Message::Notice(_))))
}

/// The messages in bytes read from the relay.
fn frames(mut rest: &[u8]) -> Result<Vec<Message>, Box<dyn std::error::Error>> {
    let mut messages = Vec::new();
    // One connection's frames: a later Want is a diff against the one before.
    let mut incoming = codec::Incoming::default();
    while !rest.is_empty() {
        let len = codec::message_payload_len(rest, MAX_MESSAGE_PAYLOAD)?;
        let (frame, tail) = rest.split_at(HEADER_LEN + len);
        messages.push(codec::decode_message_on(frame, MAX_MESSAGE_PAYLOAD, &mut incoming)?.1);
        rest = tail;
    }
    Ok(messages)
}

fn notice_of(message: Option<Message>) -> Result<(NoticeCode, String), Box<dyn std::error::Error>> {
    match message {
        Some(Message::Notice(n)) => Ok((n.code, n.message)),
        other => Err(format!("expected a notice, got {other:?}").into()),
    }
}

/// Syncs `client` once with `token`, retrying while the relay is busy or
/// the connection fails, until it succeeds.
async fn sync_until_ok(client: &SharedStore, addr: &str, t: &str) -> TestResult {
    let start = Instant::now();
    loop {
        match sync_once_tcp(client, addr, token(t)).await {
            Ok(_) => return Ok(()),
            Err(e) if start.elapsed() < PATIENCE => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

fn hello_bytes(t: &str, site_byte: u8, live: bool) -> Vec<u8> {
    encode_message(&Message::Hello(Hello {
        site: site(site_byte),
        schema: "inventory".into(),
        schema_version: 1,
        token: Some(t.into()),
        accepts_changes: true,
        live,
        authority: false,
        namespace: None,
        compression: vec![],
    }))
}

/// Attacker: no token, opens idle sockets and sends nothing; more than the
/// relay has client slots. Must not happen: a real client is locked out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_unauthenticated_sockets_do_not_lock_out_a_real_client() -> TestResult {
    let relay = Running::start(
        RelayConfig::default()
            .max_connections(2)
            // All on 127.0.0.1: the cap per address is not the one tested.
            .max_unauthenticated(8, 16)
            .handshake_timeout(Duration::from_secs(120)),
    )
    .await?;
    insert(&relay.store, "r", 0..3)?;
    // Before the fix, two of these took both slots.
    let mut idle = Vec::new();
    for _ in 0..6 {
        idle.push(TcpStream::connect(relay.addr.as_str()).await?);
    }
    let client = shared(1)?;
    insert(&client, "c", 0..2)?;
    sync_until_ok(&client, &relay.addr, "rw-token-1").await?;
    assert_eq!(rows(&client)?, 5);
    assert_eq!(rows(&relay.store)?, 5);

    // The attacker fills every unauthenticated slot: the next socket is told
    // the relay is busy, and a live client that was already in keeps syncing.
    let live = shared(2)?;
    let (stop, shutdown) = watch::channel(false);
    let live_task = tokio::spawn(sync_continuously(
        live.clone(),
        relay.addr.clone(),
        token("rw-token-2"),
        Backoff::default(),
        shutdown,
    ));
    eventually("the live client's first sync", || async {
        Ok(rows(&live)? == 5)
    })
    .await?;
    for _ in 0..2 {
        idle.push(TcpStream::connect(relay.addr.as_str()).await?);
    }
    let mut one_more = TcpStream::connect(relay.addr.as_str()).await?;
    let (code, message) = notice_of(until_closed(&mut one_more).await?)?;
    assert_eq!(code, NoticeCode::Busy);
    assert!(
        message.contains("8 connections waiting to authenticate"),
        "{message}"
    );
    insert(&relay.store, "while-full", 0..1)?;
    eventually("a write to reach the live client", || async {
        Ok(has(&live, "while-full0")?)
    })
    .await?;
    insert(&live, "from-live", 0..1)?;
    eventually("the live client's write to reach the relay", || async {
        Ok(has(&relay.store, "from-live0")?)
    })
    .await?;
    stop.send(true)?;
    live_task.await?;
    drop(idle);
    relay.stop().await
}

/// Attacker: no token, idle sockets, while other clients write
/// continuously through the relay. Must not happen: the writers' traffic
/// keeps the idle sockets alive (the idle timer was re-armed by every
/// change), or the writers are slowed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sockets_are_dropped_at_the_deadline_while_others_write() -> TestResult {
    let relay = Running::start(
        RelayConfig::default()
            .max_connections(8)
            .max_unauthenticated(4, 4)
            .handshake_timeout(Duration::from_millis(500))
            .idle(Duration::from_secs(1)),
    )
    .await?;
    let (stop, shutdown) = watch::channel(false);
    let writers: Vec<_> = (1..=2u8)
        .map(|n| -> meldb::Result<_> {
            let store = shared(n)?;
            let task = tokio::spawn(sync_continuously(
                store.clone(),
                relay.addr.clone(),
                token(&format!("rw-token-{n}")),
                Backoff {
                    initial: Duration::from_millis(20),
                    max: Duration::from_millis(200),
                },
                shutdown.clone(),
            ));
            Ok((store, task))
        })
        .collect::<Result<_, _>>()?;
    let writing = {
        let stores: Vec<_> = writers.iter().map(|(s, _)| s.clone()).collect();
        let mut stop = stop.subscribe();
        tokio::spawn(async move {
            let mut i = 0;
            while !*stop.borrow_and_update() {
                for (n, store) in stores.iter().enumerate() {
                    insert(store, &format!("w{n}-"), i..i + 1)?;
                }
                i += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Ok::<_, meldb::Error>(i)
        })
    };
    // Let traffic flow, then open the idle sockets into it.
    eventually("the writers to reach the relay", || async {
        Ok(rows(&relay.store)? > 20)
    })
    .await?;
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(TcpStream::connect(relay.addr.as_str()).await?);
    }
    for socket in &mut idle {
        let (code, message) = notice_of(until_closed(socket).await?)?;
        assert_eq!(code, NoticeCode::Protocol);
        assert!(message.contains("no hello within"), "{message}");
    }
    // The slots are free again: a new client gets in, while writes go on.
    let late = shared(3)?;
    let before = rows(&relay.store)?;
    sync_until_ok(&late, &relay.addr, "rw-token-3").await?;
    assert!(rows(&late)? >= before);
    stop.send(true)?;
    let written = writing.await??;
    for (_, task) in writers {
        task.await?;
    }
    assert!(written > 0);
    relay.stop().await
}

/// Attacker: no token, sends a hello one byte at a time (slowloris), on
/// more sockets than there are client slots. Must not happen: the hello
/// completes, a slot is held past the handshake deadline, or a real
/// client is blocked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_is_dropped_at_the_handshake_deadline() -> TestResult {
    let relay = Running::start(
        RelayConfig::default()
            .max_connections(1)
            .max_unauthenticated(8, 8)
            .handshake_timeout(Duration::from_millis(700)),
    )
    .await?;
    insert(&relay.store, "r", 0..2)?;
    let hello = hello_bytes("rw-token-1", 66, false);
    let mut attackers = Vec::new();
    for _ in 0..3 {
        let hello = hello.clone();
        let stream = TcpStream::connect(relay.addr.as_str()).await?;
        attackers.push(tokio::spawn(async move {
            let (mut read, mut write) = stream.into_split();
            let sent = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let counter = std::sync::Arc::clone(&sent);
            // A byte every 100 ms, never the last: the hello would take
            // seconds and never complete.
            let dribble = tokio::spawn(async move {
                for byte in &hello[..hello.len() - 1] {
                    if write.write_all(&[*byte]).await.is_err() {
                        return;
                    }
                    counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                // Then hang on to the socket.
                std::future::pending::<()>().await;
            });
            let notice = until_closed(&mut read).await.map_err(|e| e.to_string());
            let sent_when_closed = sent.load(std::sync::atomic::Ordering::SeqCst);
            dribble.abort();
            (sent_when_closed, notice)
        }));
    }
    // While they dribble, a real client syncs through the only slot.
    let client = shared(1)?;
    sync_until_ok(&client, &relay.addr, "rw-token-1").await?;
    assert_eq!(rows(&client)?, 2);
    for attacker in attackers {
        let (sent, notice) = attacker.await?;
        assert!(
            sent < hello.len() - 1,
            "the relay waited for the whole dribble ({sent} bytes) instead of its deadline"
        );
        let (code, message) = notice_of(notice?)?;
        assert_eq!(code, NoticeCode::Protocol);
        assert!(message.contains("no hello within 700ms"), "{message}");
    }
    relay.stop().await
}

/// Attacker: one machine (127.0.0.2), no token, opens many sockets. Must
/// not happen: it takes more than its share of the unauthenticated slots,
/// or clients from other addresses are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_gets_only_its_share_of_unauthenticated_slots() -> TestResult {
    let relay = Running::start(
        RelayConfig::default()
            .max_unauthenticated(10, 3)
            .handshake_timeout(Duration::from_secs(120)),
    )
    .await?;
    insert(&relay.store, "r", 0..2)?;
    let attacker = [127, 0, 0, 2];
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(connect_from(attacker, &relay.addr).await?);
    }
    let mut fourth = connect_from(attacker, &relay.addr).await?;
    let (code, message) = notice_of(until_closed(&mut fourth).await?)?;
    assert_eq!(code, NoticeCode::Busy);
    assert!(
        message.contains("3 connections from 127.0.0.2 are waiting to authenticate"),
        "{message}"
    );
    // Another address is not affected.
    let client = shared(1)?;
    sync_until_ok(&client, &relay.addr, "rw-token-1").await?;
    assert_eq!(rows(&client)?, 2);
    // A socket the attacker closes gives its share back: a client on the
    // same address then gets in (retrying until the relay saw the close).
    drop(held.pop());
    let neighbour = shared(2)?;
    let start = Instant::now();
    loop {
        let stream = connect_from(attacker, &relay.addr).await?;
        let mut conn = Connection::new(stream, MAX_MESSAGE_PAYLOAD);
        match sync_once(&neighbour, &mut conn, token("rw-token-2")).await {
            Ok(report) => {
                assert_eq!(report.stats.rows_received, 2);
                break;
            }
            Err(SyncError::Refused {
                code: NoticeCode::Busy,
                ..
            }) if start.elapsed() < PATIENCE => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
    drop(held);
    relay.stop().await
}

/// Attacker: a client with a valid read-write token that writes faster
/// than its rate. Must not happen: the excess is written, other tokens
/// are slowed, or the token stays refused after its bucket refilled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_over_its_write_rate_is_refused_and_admitted_after_refill() -> TestResult {
    // 20 rows at once, then 4 a second: the second 20 wait 5 s for a refill.
    let relay = Running::start(RelayConfig::default().write_rate(Some(WriteRate {
        per_second: 4,
        burst: 20,
    })))
    .await?;
    let flood = shared(1)?;
    insert(&flood, "a", 0..20)?;
    sync_once_tcp(&flood, &relay.addr, token("rw-token-1")).await?;
    assert_eq!(rows(&relay.store)?, 20, "the burst is admitted");
    insert(&flood, "b", 0..20)?;
    let refused = sync_once_tcp(&flood, &relay.addr, token("rw-token-1"))
        .await
        .expect_err("the bucket is empty");
    match &refused {
        SyncError::Refused {
            code: NoticeCode::Busy,
            message,
        } => {
            assert!(
                message.contains("\"till-1\" may write 4 rows per second"),
                "{message}"
            );
            assert!(message.contains("nothing of them was written"), "{message}");
        }
        other => return Err(format!("expected a busy notice, got {other}").into()),
    }
    assert_eq!(rows(&relay.store)?, 20, "nothing of the refused batch");
    // Another token has its own bucket.
    let other = shared(2)?;
    insert(&other, "o", 0..5)?;
    sync_once_tcp(&other, &relay.addr, token("rw-token-2")).await?;
    assert!(has(&relay.store, "o4")?);
    // After the refill the same write is accepted.
    sync_until_ok(&flood, &relay.addr, "rw-token-1").await?;
    assert!(has(&relay.store, "b19")?);
    assert_eq!(rows(&relay.store)?, 45);
    relay.stop().await
}

/// Attacker: a client with a valid read-write token that sends empty
/// batches as fast as it can (each one a locked apply on the relay, and
/// before the fix, free of the write rate). Must not happen: the flood
/// goes on past the token's burst, or another token is held up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_empty_batches_is_held_to_the_write_rate() -> TestResult {
    let relay = Running::start(RelayConfig::default().write_rate(Some(WriteRate {
        per_second: 1,
        burst: 5,
    })))
    .await?;
    let mut flood = Connection::tcp(relay.addr.as_str(), MAX_MESSAGE_PAYLOAD).await?;
    flood
        .send(&Message::Hello(Hello {
            site: site(7),
            schema: "inventory".into(),
            schema_version: 1,
            token: Some("rw-token-1".into()),
            accepts_changes: true,
            live: false,
            authority: false,
            namespace: None,
            compression: vec![],
        }))
        .await?;
    let empty = meldb::Changeset::new(site(7));
    for seq in 1..=20 {
        let sent = flood
            .send(&Message::Changes(meldb::sync::message::Batch {
                seq,
                changes: empty.clone(),
            }))
            .await;
        if sent.is_err() {
            break;
        }
    }
    let notice = tokio::time::timeout(PATIENCE, async {
        while let Some(message) = flood.recv().await {
            if let Message::Notice(n) = message? {
                return Ok::<_, SyncError>(Some(n));
            }
        }
        Ok(None)
    })
    .await??
    .ok_or("the flood was never refused")?;
    assert_eq!(notice.code, NoticeCode::Busy, "{}", notice.message);
    assert!(notice.message.contains("\"till-1\""), "{}", notice.message);
    // Another token writes as usual.
    let other = shared(2)?;
    insert(&other, "o", 0..3)?;
    sync_once_tcp(&other, &relay.addr, token("rw-token-2")).await?;
    assert_eq!(rows(&relay.store)?, 3);
    relay.stop().await
}

/// Attacker: a client with a valid read-write token that tries to fill
/// the disk. Must not happen: anything of a batch over the quota is
/// written, or the relay stops serving others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_over_the_storage_quota_is_refused_with_nothing_written() -> TestResult {
    let sizing = shared(99)?;
    let empty: i64 = sizing.lock().conn().query_row(
        "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()",
        [],
        |r| r.get(0),
    )?;
    let quota = u64::try_from(empty)? + 64 * 1024;
    let relay = Running::start(RelayConfig::default().namespace_quota(Some(quota))).await?;
    insert(&relay.store, "r", 0..2)?;
    let filler = shared(1)?;
    filler.write(|tx| {
        for i in 0..2_000 {
            tx.insert(
                "item",
                &[
                    ("sku", format!("fill{i}").into()),
                    ("name", "x".repeat(200).into()),
                ],
            )?;
        }
        Ok(())
    })?;
    let refused = sync_once_tcp(&filler, &relay.addr, token("rw-token-1"))
        .await
        .expect_err("over the quota");
    match &refused {
        SyncError::Refused {
            code: NoticeCode::Apply,
            message,
        } => {
            assert!(message.contains("storage quota"), "{message}");
            assert!(message.contains("nothing of it was written"), "{message}");
        }
        other => return Err(format!("expected a quota notice, got {other}").into()),
    }
    assert_eq!(rows(&relay.store)?, 2, "nothing of the batch");
    // Small writes under the quota still go in, and readers are served.
    let small = shared(2)?;
    insert(&small, "s", 0..1)?;
    sync_once_tcp(&small, &relay.addr, token("rw-token-2")).await?;
    assert!(has(&relay.store, "s0")?);
    let reader = shared(3)?;
    sync_once_tcp(&reader, &relay.addr, token("ro-token-1")).await?;
    assert_eq!(rows(&reader)?, 3);
    relay.stop().await
}

/// Attacker: a client with a valid token that asks for changes, reads
/// what it is sent and never acknowledges, while another client writes
/// continuously. Must not happen: the relay queues ever more for it, or
/// keeps it connected, or the writer and other readers are held up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_never_acknowledges_gets_a_bounded_window_and_is_dropped() -> TestResult {
    let window = 4;
    let relay = Running::start(
        RelayConfig::default()
            .idle(Duration::from_millis(400))
            .session(SessionConfig::default().window(window)),
    )
    .await?;
    let mut slow = TcpStream::connect(relay.addr.as_str()).await?;
    slow.write_all(&hello_bytes("rw-token-3", 77, true)).await?;
    slow.write_all(&encode_message(&Message::Want(Want {
        id: 1,
        have: VersionVector::new(),
        first_pending: None,
    })))
    .await?;
    // A healthy live reader, and a writer with many small transactions.
    let (stop, shutdown) = watch::channel(false);
    let reader = shared(2)?;
    let reader_task = tokio::spawn(sync_continuously(
        reader.clone(),
        relay.addr.clone(),
        token("ro-token-1"),
        Backoff::default(),
        shutdown.clone(),
    ));
    let writer = shared(1)?;
    let writer_task = tokio::spawn(sync_continuously(
        writer.clone(),
        relay.addr.clone(),
        token("rw-token-1"),
        Backoff::default(),
        shutdown,
    ));
    // The writer writes until the slow reader is gone: its traffic must
    // not keep the slow reader's session alive.
    let (done, mut finished) = watch::channel(false);
    let writing = {
        let writer = writer.clone();
        tokio::spawn(async move {
            let mut i = 0;
            while !*finished.borrow_and_update() {
                insert(&writer, "w", i..i + 1)?;
                i += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Ok::<_, meldb::Error>(i)
        })
    };
    let mut got = Vec::new();
    let read = tokio::time::timeout(PATIENCE, async {
        let mut buf = [0u8; 4096];
        loop {
            match slow.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    done.send(true)?;
    read.map_err(|_| "the relay kept the slow reader connected while others wrote")?;
    let batches = frames(&got)?
        .iter()
        .filter(|m| matches!(m, Message::Changes(_)))
        .count();
    assert!(
        batches <= window,
        "{batches} batches sent to a reader that acknowledged none"
    );
    let writes = writing.await??;
    assert!(writes > 0);
    eventually("every write to reach the healthy reader", || async {
        Ok(rows(&reader)? == i64::try_from(writes)?)
    })
    .await?;
    stop.send(true)?;
    reader_task.await?;
    writer_task.await?;
    relay.stop().await
}

/// Attacker: a live client that acknowledges so slowly that one catch-up
/// exceeds the lag bound. Must not happen: the relay holds an unbounded
/// backlog for it, or it loses anything: it is told to resync and does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_over_the_lag_bound_is_a_notice_and_a_resync() -> TestResult {
    let relay = Running::start(
        RelayConfig::default().session(SessionConfig::default().batch_rows(50).max_lag(2, 1 << 30)),
    )
    .await?;
    let mut lagging = Connection::tcp(relay.addr.as_str(), MAX_MESSAGE_PAYLOAD).await?;
    let client = shared(5)?;
    lagging
        .send(&Message::Hello(Hello {
            site: site(5),
            schema: "inventory".into(),
            schema_version: 1,
            token: Some("rw-token-3".into()),
            accepts_changes: true,
            live: true,
            authority: false,
            namespace: None,
            compression: vec![],
        }))
        .await?;
    lagging
        .send(&Message::Want(Want {
            id: 1,
            have: VersionVector::new(),
            first_pending: None,
        }))
        .await?;
    // Once the (empty) answer is in, 200 rows in one transaction: a live
    // read of 4 batches, over the bound of 2.
    tokio::time::timeout(PATIENCE, async {
        while let Some(message) = lagging.recv().await {
            if let Message::Sent(_) = message? {
                return Ok::<_, SyncError>(());
            }
        }
        Err(SyncError::Closed { during: "test" })
    })
    .await??;
    insert(&relay.store, "big", 0..200)?;
    let notice = tokio::time::timeout(PATIENCE, async {
        while let Some(message) = lagging.recv().await {
            if let Message::Notice(n) = message? {
                return Ok::<_, SyncError>(Some(n));
            }
        }
        Ok(None)
    })
    .await??
    .ok_or("closed without a notice")?;
    assert_eq!(notice.code, NoticeCode::Busy);
    assert!(
        notice.message.contains("fell behind") && notice.message.contains("resync"),
        "{}",
        notice.message
    );
    // Resyncing brings everything.
    sync_once_tcp(&client, &relay.addr, token("rw-token-3")).await?;
    assert_eq!(rows(&client)?, 200);
    relay.stop().await
}

/// The `meldb relay` process with short limits from its flags. Attacker:
/// one address, no token, idle sockets. Must not happen: the flags are
/// ignored (the second socket admitted, the first kept past 500 ms), or a
/// real client is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meldb_relay_takes_its_limits_from_flags() -> TestResult {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir()?;
    let tokens = dir.path().join("tokens.toml");
    std::fs::write(
        &tokens,
        "[[token]]\nname = \"till-1\"\ntoken = \"rw-token-1\"\naccess = \"read-write\"\n",
    )?;
    /// Killed when dropped, a failed assertion included.
    struct Process(std::process::Child);
    impl Drop for Process {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = Process(
        Command::new(env!("CARGO_BIN_EXE_meldb"))
            .arg("relay")
            .arg("--db")
            .arg(dir.path().join("relay.db"))
            .arg("--schema")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/schema/inventory.toml"
            ))
            .arg("--tokens")
            .arg(&tokens)
            .args(["--listen", "127.0.0.1:0"])
            .args(["--max-unauthenticated-per-address", "1"])
            .args(["--handshake-timeout", "500ms", "--idle-timeout", "5s"])
            .args(["--write-rate", "100", "--write-burst", "200"])
            .args(["--namespace-quota", "64MiB", "--quiet-timeout", "0"])
            .env_remove("MELDB_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?,
    );
    let stdout = child.0.stdout.take().ok_or("no stdout")?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .ok_or_else(|| format!("unexpected first line {line:?}"))?
        .to_string();
    let attacker = [127, 0, 0, 2];
    let mut first = connect_from(attacker, &addr).await?;
    let mut second = connect_from(attacker, &addr).await?;
    let (code, message) = notice_of(until_closed(&mut second).await?)?;
    assert_eq!(code, NoticeCode::Busy);
    assert!(
        message.contains("1 connections from 127.0.0.2"),
        "{message}"
    );
    let (code, message) = notice_of(until_closed(&mut first).await?)?;
    assert_eq!(code, NoticeCode::Protocol);
    assert!(message.contains("no hello within 500ms"), "{message}");
    let client = shared(1)?;
    insert(&client, "c", 0..3)?;
    sync_until_ok(&client, &addr, "rw-token-1").await?;
    drop(child);
    Ok(())
}

/// One series of `metrics` (its name and labels as rendered), e.g.
/// `meldb_relay_connections_refused_total{reason="token_cap"}`.
fn metric(metrics: &RelayMetrics, series: &str) -> Result<u64, Box<dyn std::error::Error>> {
    let text = metrics.render();
    let value = text
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .ok_or_else(|| format!("no series {series} in\n{text}"))?;
    Ok(value.trim().parse()?)
}

fn refused(metrics: &RelayMetrics, reason: &str) -> Result<u64, Box<dyn std::error::Error>> {
    metric(
        metrics,
        &format!("meldb_relay_connections_refused_total{{reason=\"{reason}\"}}"),
    )
}

/// Attacker: one address (127.0.0.2), no token, opens many more sockets to
/// a WebSocket listener than the caps allow and never sends the HTTP
/// upgrade, so every `Busy` notice it is owed waits on a handshake. Must
/// not happen: more than `REFUSALS_IN_FLIGHT` refusals (tasks and
/// handshakes) at once, a socket past those left uncounted, or a real
/// client locked out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_over_the_caps_is_dropped_past_a_bound_on_refusals() -> TestResult {
    let bound = meldb::sync::REFUSALS_IN_FLIGHT;
    let long = Duration::from_secs(120);
    let metrics = Arc::new(RelayMetrics::new());
    let urls: Vec<PeerUrl> = vec![
        "ws://127.0.0.1:0/sync".parse()?,
        "tcp://127.0.0.1:0".parse()?,
    ];
    let listener = UrlListener::bind(&urls, &ListenOptions::new().handshake_timeout(long)).await?;
    let bound_urls = listener.local_urls();
    let (ws, tcp) = (bound_urls[0].authority(), bound_urls[1].authority());
    let store = shared(100)?;
    insert(&store, "r", 0..2)?;
    let config = RelayConfig::default()
        .tokens(tokens())
        .max_unauthenticated(8, 2)
        .handshake_timeout(long)
        .write_timeout(long)
        .metrics(Arc::clone(&metrics));
    let relay = Relay::new(store.clone(), listener, config);
    let (stop, shutdown) = watch::channel(false);
    let task = tokio::spawn(relay.run(shutdown));

    // Two take the address's pending slots, `bound` stall their refusal's
    // handshake, and the rest find no room even for that.
    let extra = 30;
    let total = 2 + bound + extra;
    let attacker = [127, 0, 0, 2];
    let mut flood = Vec::new();
    for _ in 0..total {
        flood.push(connect_from(attacker, &ws).await?);
    }
    eventually("the relay to accept the flood", || async {
        Ok(metric(&metrics, "meldb_relay_connections_accepted_total")? == total as u64)
    })
    .await?;
    assert_eq!(refused(&metrics, "dropped_over_cap")?, extra as u64);
    assert_eq!(refused(&metrics, "per_address_cap")?, bound as u64);
    let peak = metric(&metrics, "meldb_relay_refusals_in_flight_peak")?;
    assert!(peak <= bound as u64, "{peak} refusals at once");
    assert_eq!(
        metric(&metrics, "meldb_relay_refusals_in_flight")?,
        bound as u64
    );
    // A socket dropped over the cap is closed with nothing sent.
    let mut last = flood.pop().ok_or("no flood")?;
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(PATIENCE, last.read(&mut buf)).await?;
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");

    // A real client from another address still syncs.
    let client = shared(1)?;
    sync_until_ok(&client, &tcp, "rw-token-1").await?;
    assert_eq!(rows(&client)?, 2);
    drop(flood);
    eventually("the stalled refusals to end", || async {
        Ok(metric(&metrics, "meldb_relay_refusals_in_flight")? == 0)
    })
    .await?;
    stop.send(true)?;
    tokio::time::timeout(PATIENCE, task).await???;
    Ok(())
}

/// Opens a live session with `t` on a raw socket and returns it with the
/// first message the relay answers (its `Hello`, or a notice).
async fn live_session(
    addr: &str,
    t: &str,
    site_byte: u8,
) -> Result<(TcpStream, Message), Box<dyn std::error::Error>> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.write_all(&hello_bytes(t, site_byte, true)).await?;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(PATIENCE, async {
        loop {
            if got.len() >= HEADER_LEN {
                let len = codec::message_payload_len(&got, MAX_MESSAGE_PAYLOAD)?;
                if got.len() >= HEADER_LEN + len {
                    let first = decode_message(&got[..HEADER_LEN + len], MAX_MESSAGE_PAYLOAD)?;
                    return Ok::<_, Box<dyn std::error::Error>>(first);
                }
            }
            match stream.read(&mut buf).await? {
                0 => return Err("the relay closed before answering".into()),
                n => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await?
    .map(|first| (stream, first))
}

/// Attacker: a holder of one valid token (till-1) opening live sessions
/// until the relay is full. Must not happen: that token holds more than
/// its cap of client slots, another token is locked out, the refusal
/// shows the token's secret, or a slot stays taken after its session
/// closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_token_holds_at_most_its_cap_of_connections() -> TestResult {
    let metrics = Arc::new(RelayMetrics::new());
    let relay = Running::start(
        RelayConfig::default()
            .max_connections_per_token(2)
            .metrics(Arc::clone(&metrics)),
    )
    .await?;
    let (a1, first) = live_session(&relay.addr, "rw-token-1", 1).await?;
    assert!(matches!(first, Message::Hello(_)), "{first:?}");
    let (_a2, first) = live_session(&relay.addr, "rw-token-1", 2).await?;
    assert!(matches!(first, Message::Hello(_)), "{first:?}");
    let (_a3, first) = live_session(&relay.addr, "rw-token-1", 3).await?;
    let (code, message) = notice_of(Some(first))?;
    assert_eq!(code, NoticeCode::Busy);
    assert!(
        message.contains("token \"till-1\" already has 2 connections open"),
        "{message}"
    );
    assert!(
        !message.contains("rw-token-1"),
        "the secret leaked: {message}"
    );
    // The relay counts a refusal when the session ends, just after the
    // notice went out, so the count may trail the notice by a moment.
    eventually("the token cap refusal to be counted", || async {
        Ok(refused(&metrics, "token_cap")? >= 1)
    })
    .await?;
    assert_eq!(refused(&metrics, "token_cap")?, 1);
    // Another token is not affected.
    let (_b, first) = live_session(&relay.addr, "rw-token-2", 4).await?;
    assert!(matches!(first, Message::Hello(_)), "{first:?}");
    // One of till-1's sessions closes: till-1 gets in again (once the
    // relay saw the close).
    drop(a1);
    let start = Instant::now();
    let _again = loop {
        let (stream, first) = live_session(&relay.addr, "rw-token-1", 5).await?;
        match first {
            Message::Hello(_) => break stream,
            _ if start.elapsed() < PATIENCE => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => return Err(format!("still refused: {other:?}").into()),
        }
    };
    relay.stop().await
}
