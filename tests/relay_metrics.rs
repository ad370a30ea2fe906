//! The relay's metrics and admin endpoint, over real sockets on 127.0.0.1:
//! clients do known things, a scrape of `/metrics` must count exactly
//! those; `/healthz` follows the relay's life; hostile scrapers (a header
//! that never ends, idle sockets, a huge head) never stop `/metrics`
//! answering someone else; `meldb relay --admin --log-format json` logs an
//! authentication failure with its reason and source and never the secret.
//!
//! Attackers that must look like other machines connect from 127.0.0.2 and
//! up (all of 127/8 is loopback on Linux). Waits have generous upper bounds;
//! assertions are on outcomes, never on durations.

mod common;

use common::{inventory, site, TestResult};
use meldb::codec::MAX_MESSAGE_PAYLOAD;
use meldb::sync::message::Batch;
use meldb::sync::{
    sync_once, AdminConfig, AdminServer, Connection, Grant, Message, NoticeCode, Relay,
    RelayConfig, RelayMetrics, Session, SessionConfig, SharedStore, SyncError, SyncReport, Tokens,
    WriteRate,
};
use meldb::{StoreOptions, VersionVector};
use std::collections::BTreeMap;
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

fn rename(store: &SharedStore, sku: &str, name: &str) -> meldb::Result<()> {
    store.write(|tx| tx.update("item", sku, &[("name", name.into())]))
}

fn tokens() -> Tokens {
    let mut tokens = Tokens::new();
    tokens.add("till-1", "rw-token-1", Grant::read_write());
    tokens.add("till-2", "rw-token-2", Grant::read_write());
    tokens.add("till-3", "rw-token-3", Grant::read_write());
    tokens.add("till-4", "rw-token-4", Grant::read_write());
    tokens.add("dashboard", "ro-token-1", Grant::read_only());
    tokens
}

fn token(t: Option<&str>) -> SessionConfig {
    SessionConfig::default().token(t.map(str::to_string))
}

/// A relay with metrics on 127.0.0.1, and its admin server; each stops
/// with its own watch.
struct Running {
    addr: String,
    admin: String,
    store: SharedStore,
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<(), SyncError>>,
    admin_stop: watch::Sender<bool>,
    admin_task: JoinHandle<Result<(), SyncError>>,
}

impl Running {
    async fn start(
        config: RelayConfig,
        admin: AdminConfig,
    ) -> Result<Running, Box<dyn std::error::Error>> {
        let store = shared(100)?;
        let metrics = Arc::new(RelayMetrics::new());
        let config = config.tokens(tokens()).metrics(Arc::clone(&metrics));
        let relay = Relay::bind(store.clone(), "127.0.0.1:0", config).await?;
        let addr = relay.local_addr()?.to_string();
        let server = AdminServer::bind("127.0.0.1:0", metrics, admin).await?;
        let admin = server.local_addr()?.to_string();
        let (stop, shutdown) = watch::channel(false);
        let task = tokio::spawn(relay.run(shutdown));
        let (admin_stop, admin_shutdown) = watch::channel(false);
        let admin_task = tokio::spawn(server.run(admin_shutdown));
        Ok(Running {
            addr,
            admin,
            store,
            stop,
            task,
            admin_stop,
            admin_task,
        })
    }

    /// Its sync and admin addresses.
    fn at(&self) -> (&str, &str) {
        (&self.addr, &self.admin)
    }

    async fn stop_relay(&mut self) -> TestResult {
        self.stop.send(true)?;
        tokio::time::timeout(PATIENCE, &mut self.task).await???;
        Ok(())
    }

    async fn stop(mut self) -> TestResult {
        if !self.task.is_finished() {
            self.stop_relay().await?;
        }
        self.admin_stop.send(true)?;
        tokio::time::timeout(PATIENCE, self.admin_task).await???;
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

/// Sends `request` from 127.0.0.1 and reads the whole answer: its status
/// and its body.
async fn http(addr: &str, request: &str) -> Result<(u16, String), Box<dyn std::error::Error>> {
    let mut stream = connect_from([127, 0, 0, 1], addr).await?;
    stream.write_all(request.as_bytes()).await?;
    let mut got = Vec::new();
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut got))
        .await
        .map_err(|_| "the admin server did not answer in time")??;
    let text = String::from_utf8(got)?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or("no blank line in the answer")?;
    let status = head
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .ok_or_else(|| format!("not an HTTP answer: {head:?}"))?
        .parse()?;
    Ok((status, body.to_string()))
}

/// One scrape of `/metrics`: each series (name and labels, as written) and
/// its value.
struct Scrape(BTreeMap<String, f64>);

impl Scrape {
    async fn of(admin: &str) -> Result<Scrape, Box<dyn std::error::Error>> {
        let (status, body) = http(admin, "GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n").await?;
        if status != 200 {
            return Err(format!("/metrics answered {status}: {body}").into());
        }
        let mut series = BTreeMap::new();
        for line in body
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let (name, value) = line
                .rsplit_once(' ')
                .ok_or_else(|| format!("bad line {line:?}"))?;
            series.insert(name.to_string(), value.parse()?);
        }
        Ok(Scrape(series))
    }

    /// The value of one series; a series the relay does not write fails.
    fn get(&self, series: &str) -> Result<u64, Box<dyn std::error::Error>> {
        let value = self
            .0
            .get(series)
            .ok_or_else(|| format!("no series {series}"))?;
        Ok(*value as u64)
    }
}

/// The `connections` gauge for `state`, scraped.
async fn gauge(admin: &str, state: &str) -> Result<u64, Box<dyn std::error::Error>> {
    Scrape::of(admin)
        .await?
        .get(&format!("meldb_relay_connections{{state=\"{state}\"}}"))
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

/// What the clients did, added up from their own side.
#[derive(Default)]
struct Did {
    connections: u64,
    /// Bytes the clients sent in sessions that succeeded (the relay read
    /// them all), and in all (of a refused session's, the relay may stop
    /// reading before the last frames).
    bytes_ok: u64,
    bytes_all: u64,
    reports: Vec<SyncReport>,
}

impl Did {
    /// Syncs `client` once with `t` over a new connection, notes it, and
    /// waits for the relay's side of it to end: relay sessions are live,
    /// so one that outlived its client would push the next client's rows
    /// to a socket nobody reads, rows the relay sent and no client got.
    async fn sync(
        &mut self,
        client: &SharedStore,
        (addr, admin): (&str, &str),
        t: Option<&str>,
    ) -> Result<Result<(), SyncError>, Box<dyn std::error::Error>> {
        let mut conn = Connection::tcp(addr, MAX_MESSAGE_PAYLOAD).await?;
        self.connections += 1;
        let result = sync_once(client, &mut conn, token(t)).await;
        let sent = conn.counts().sent();
        self.bytes_all += sent;
        if result.is_ok() {
            self.bytes_ok += sent;
        }
        drop(conn);
        eventually("the relay's session to end", || async {
            let s = Scrape::of(admin).await?;
            Ok(s.get("meldb_relay_connections{state=\"pending\"}")? == 0
                && s.get("meldb_relay_connections{state=\"authorized\"}")? == 0)
        })
        .await?;
        Ok(result.map(|report| self.reports.push(report)))
    }

    fn sum(&self, of: impl Fn(&SyncReport) -> u64) -> u64 {
        self.reports.iter().map(of).sum()
    }
}

/// Three authorized clients sync 5 rows each and then a conflicting
/// edit; one client presents a bad token, one none, a read-only one sends
/// a batch anyway, and one writes past its rate (150 rows from a full
/// bucket of 100 pass and leave it in debt; one more row is refused).
/// Must not happen: any
/// counter differing from what those clients saw from their side, a
/// connection left in the gauge, a refusal counted under another reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_equal_what_the_clients_did() -> TestResult {
    let rate = WriteRate {
        per_second: 1,
        burst: 100,
    };
    let relay = Running::start(
        RelayConfig::default().write_rate(Some(rate)),
        AdminConfig::default(),
    )
    .await?;
    let mut did = Did::default();
    let clients = [shared(1)?, shared(2)?, shared(3)?];
    let names = ["rw-token-1", "rw-token-2", "rw-token-3"];
    for (i, (client, t)) in clients.iter().zip(names).enumerate() {
        insert(client, &format!("c{i}-"), 0..5)?;
        did.sync(client, relay.at(), Some(t)).await??;
    }
    // Each catches up on what the later ones sent.
    for (client, t) in clients.iter().zip(names) {
        did.sync(client, relay.at(), Some(t)).await??;
    }
    // A conflict: two clients rename one row without hearing of each other.
    rename(&clients[0], "c2-0", "from till 1")?;
    rename(&clients[1], "c2-0", "from till 2")?;
    did.sync(&clients[0], relay.at(), Some(names[0])).await??;
    did.sync(&clients[1], relay.at(), Some(names[1])).await??;

    // Refusals, each once.
    let outsider = shared(7)?;
    insert(&outsider, "x", 0..2)?;
    let bad = did.sync(&outsider, relay.at(), Some("not-a-token")).await?;
    assert!(
        matches!(
            bad,
            Err(SyncError::Refused {
                code: NoticeCode::Unauthorized,
                ..
            })
        ),
        "{bad:?}"
    );
    let none = did.sync(&outsider, relay.at(), None).await?;
    assert!(
        matches!(
            none,
            Err(SyncError::Refused {
                code: NoticeCode::Unauthorized,
                ..
            })
        ),
        "{none:?}"
    );
    read_only_writes_anyway(&mut did, &relay.addr).await?;
    let till = shared(4)?;
    insert(&till, "big-", 0..150)?;
    did.sync(&till, relay.at(), Some("rw-token-4")).await??;
    insert(&till, "one-more-", 0..1)?;
    let flood = did.sync(&till, relay.at(), Some("rw-token-4")).await?;
    assert!(
        matches!(
            flood,
            Err(SyncError::Refused {
                code: NoticeCode::Busy,
                ..
            })
        ),
        "{flood:?}"
    );

    // Every session is over once the gauge is back at zero. A refusal is
    // counted just after its session let go of its slot, so wait for the
    // refusals too (their exact counts are asserted below).
    eventually("every connection to end", || async {
        let s = Scrape::of(&relay.admin).await?;
        Ok(s.get("meldb_relay_connections{state=\"pending\"}")? == 0
            && s.get("meldb_relay_connections{state=\"authorized\"}")? == 0
            && s.get("meldb_relay_auth_failures_total{reason=\"bad_token\"}")? >= 1
            && s.get("meldb_relay_auth_failures_total{reason=\"no_token\"}")? >= 1
            && s.get("meldb_relay_write_refusals_total{reason=\"read_only\"}")? >= 1
            && s.get("meldb_relay_write_refusals_total{reason=\"rate\"}")? >= 1)
    })
    .await?;
    let s = Scrape::of(&relay.admin).await?;
    let rows_sent = did.sum(|r| r.stats.rows_sent);
    assert_eq!(rows_sent, 5 * 3 + 2 + 150, "the clients' own count");
    assert_eq!(s.get("meldb_relay_rows_received_total")?, rows_sent);
    assert_eq!(
        s.get("meldb_relay_batches_received_total")?,
        did.sum(|r| r.stats.batches_sent)
    );
    assert_eq!(
        s.get("meldb_relay_rows_sent_total")?,
        did.sum(|r| r.stats.rows_received)
    );
    assert_eq!(
        s.get("meldb_relay_batches_sent_total")?,
        did.sum(|r| r.stats.batches_received)
    );
    assert_eq!(
        s.get("meldb_relay_rows_applied_total")?,
        rows_sent,
        "every row the clients sent changed the relay"
    );
    assert_eq!(
        s.get("meldb_relay_connections_accepted_total")?,
        did.connections
    );
    let bytes = s.get("meldb_relay_bytes_received_total")?;
    assert!(
        (did.bytes_ok..=did.bytes_all).contains(&bytes),
        "{bytes} bytes received; the clients sent {} in good sessions, {} in all",
        did.bytes_ok,
        did.bytes_all
    );
    assert!(s.get("meldb_relay_bytes_sent_total")? > 0);
    assert_eq!(
        s.get("meldb_relay_auth_failures_total{reason=\"bad_token\"}")?,
        1
    );
    assert_eq!(
        s.get("meldb_relay_auth_failures_total{reason=\"no_token\"}")?,
        1
    );
    assert_eq!(
        s.get("meldb_relay_auth_failures_total{reason=\"site_taken\"}")?,
        0
    );
    assert_eq!(
        s.get("meldb_relay_write_refusals_total{reason=\"read_only\"}")?,
        1
    );
    assert_eq!(
        s.get("meldb_relay_write_refusals_total{reason=\"rate\"}")?,
        1
    );
    assert_eq!(
        s.get("meldb_relay_write_refusals_total{reason=\"quota\"}")?,
        0
    );
    for reason in [
        "unauthenticated_cap",
        "per_address_cap",
        "client_cap",
        "token_cap",
        "dropped_over_cap",
        "handshake_timeout",
    ] {
        let series = format!("meldb_relay_connections_refused_total{{reason=\"{reason}\"}}");
        assert_eq!(s.get(&series)?, 0, "{series}");
    }
    // One batch applied per batch received, each in the histogram.
    let applied = s.get("meldb_relay_apply_duration_seconds_count")?;
    assert_eq!(applied, did.sum(|r| r.stats.batches_sent));
    assert_eq!(
        s.get("meldb_relay_apply_duration_seconds_bucket{le=\"+Inf\"}")?,
        applied
    );
    // Conflicts: the relay's own log, table by table.
    let logged = relay.store.lock().conflict_counts()?;
    assert!(!logged.is_empty(), "the rename logged a conflict");
    for count in &logged {
        let series = format!(
            "meldb_relay_conflicts_total{{table=\"{}\",outcome=\"{}\"}}",
            count.table,
            count.outcome.name()
        );
        assert_eq!(s.get(&series)?, count.count, "{series}");
    }
    let conflicts: u64 =
        s.0.iter()
            .filter(|(k, _)| k.starts_with("meldb_relay_conflicts_total{"))
            .map(|(_, v)| *v as u64)
            .sum();
    assert_eq!(conflicts, logged.iter().map(|c| c.count).sum::<u64>());
    relay.stop().await
}

/// A socket that never says hello, then a live client. Must not happen:
/// either missing from the gauge while connected, or left in it after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gauge_counts_pending_and_authorized_connections() -> TestResult {
    // The silent socket stays pending for the whole test.
    let config = RelayConfig::default().handshake_timeout(PATIENCE * 4);
    let relay = Running::start(config, AdminConfig::default()).await?;
    let admin = relay.admin.as_str();
    let silent = connect_from([127, 0, 0, 2], &relay.addr).await?;
    eventually("the silent socket to be pending", || async {
        Ok(gauge(admin, "pending").await? == 1)
    })
    .await?;
    let client = shared(1)?;
    let (stop, shutdown) = watch::channel(false);
    let live = tokio::spawn(meldb::sync::sync_continuously(
        client,
        relay.addr.clone(),
        token(Some("rw-token-1")),
        meldb::sync::Backoff::default(),
        shutdown,
    ));
    eventually("the live client to be authorized", || async {
        Ok(gauge(admin, "authorized").await? == 1)
    })
    .await?;
    assert_eq!(
        gauge(admin, "pending").await?,
        1,
        "the silent socket is still pending"
    );
    stop.send(true)?;
    tokio::time::timeout(PATIENCE, live).await??;
    drop(silent);
    eventually("both to leave the gauge", || async {
        Ok(gauge(admin, "pending").await? == 0 && gauge(admin, "authorized").await? == 0)
    })
    .await?;
    relay.stop().await
}

/// The dashboard's read-only token says hello, then sends a batch anyway:
/// refused with a notice, nothing applied.
async fn read_only_writes_anyway(did: &mut Did, addr: &str) -> TestResult {
    let dashboard = shared(9)?;
    insert(&dashboard, "ro", 0..3)?;
    let mut conn = Connection::tcp(addr, MAX_MESSAGE_PAYLOAD).await?;
    did.connections += 1;
    let (hello, changes) = {
        let store = dashboard.lock();
        let mut session = Session::initiator(&*store, token(Some("ro-token-1")));
        let hello = session.poll_message().ok_or("no hello")?;
        (hello, store.changes_since(&VersionVector::new())?)
    };
    conn.send(&hello).await?;
    conn.send(&Message::Changes(Batch { seq: 1, changes }))
        .await?;
    let notice = tokio::time::timeout(PATIENCE, async {
        while let Some(message) = conn.recv().await {
            if let Message::Notice(n) = message? {
                return Ok::<_, SyncError>(Some(n));
            }
        }
        Ok(None)
    })
    .await??;
    did.bytes_all += conn.counts().sent();
    let notice = notice.ok_or("no notice")?;
    assert_eq!(notice.code, NoticeCode::ReadOnly, "{notice:?}");
    Ok(())
}

/// `/healthz` answers 200 while the relay serves, and 503 once it began
/// shutting down (the admin server outlives it here). Must not happen: a
/// 200 from a relay that drains.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_ok_while_serving_and_503_once_shutdown_began() -> TestResult {
    let mut relay = Running::start(RelayConfig::default(), AdminConfig::default()).await?;
    assert_eq!(
        http(&relay.admin, "GET /healthz HTTP/1.1\r\n\r\n").await?,
        (200, "ok\n".into())
    );
    let (status, _) = http(&relay.admin, "GET /nothing HTTP/1.1\r\n\r\n").await?;
    assert_eq!(status, 404);
    let (status, _) = http(&relay.admin, "POST /metrics HTTP/1.1\r\n\r\n").await?;
    assert_eq!(status, 405);
    assert_eq!(
        Scrape::of(&relay.admin)
            .await?
            .get("meldb_relay_shutting_down")?,
        0
    );
    relay.stop_relay().await?;
    let (status, body) = http(&relay.admin, "GET /healthz HTTP/1.1\r\n\r\n").await?;
    assert_eq!(status, 503, "{body}");
    assert_eq!(
        Scrape::of(&relay.admin)
            .await?
            .get("meldb_relay_shutting_down")?,
        1
    );
    relay.stop().await
}

/// Reads from an attacker's socket until the server closes it (EOF or a
/// reset), returning what arrived. Fails if it stays open past [`PATIENCE`].
async fn until_closed(stream: &mut TcpStream) -> Result<String, Box<dyn std::error::Error>> {
    let mut got = Vec::new();
    tokio::time::timeout(PATIENCE, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .map_err(|_| "the admin server kept an attacker's connection open")?;
    Ok(String::from_utf8_lossy(&got).into_owned())
}

/// Attackers: from 127.0.0.2, twenty idle sockets (more than its
/// per-address cap); from 127.0.0.3, a header sent one byte at a time that
/// never ends; from 127.0.0.4, an endless header as fast as it can. Must
/// not happen: `/metrics` not answering a scraper from 127.0.0.1
/// meanwhile, or any attacker's socket kept open past the deadlines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_scrapers_do_not_stop_metrics_answering_another() -> TestResult {
    let admin = AdminConfig::default()
        .max_connections(16, 4)
        .timeouts(Duration::from_secs(2), Duration::from_secs(2));
    let relay = Running::start(RelayConfig::default(), admin).await?;
    let mut idle = Vec::new();
    for _ in 0..20 {
        idle.push(connect_from([127, 0, 0, 2], &relay.admin).await?);
    }
    let mut slow = connect_from([127, 0, 0, 3], &relay.admin).await?;
    slow.write_all(b"GET /metrics HTTP/1.1\r\nX-Slow: ").await?;
    let (mut slow_read, mut slow_write) = slow.into_split();
    let dribble = tokio::spawn(async move {
        while slow_write.write_all(b"a").await.is_ok() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let flood = connect_from([127, 0, 0, 4], &relay.admin).await?;
    let (mut flood_read, mut flood_write) = flood.into_split();
    let pour = tokio::spawn(async move {
        let _ = flood_write
            .write_all(b"GET /metrics HTTP/1.1\r\nX-Flood: ")
            .await;
        let junk = [b'b'; 4096];
        while flood_write.write_all(&junk).await.is_ok() {}
    });

    // The scraper is answered while the attackers hold what they hold.
    for _ in 0..3 {
        let s = Scrape::of(&relay.admin).await?;
        assert_eq!(s.get("meldb_relay_connections_accepted_total")?, 0);
    }
    let (status, _) = http(&relay.admin, "GET /healthz HTTP/1.1\r\n\r\n").await?;
    assert_eq!(status, 200);

    // Each attacker is cut off: over the cap at once, the others at the
    // read deadline or the size limit.
    let mut flood_got = Vec::new();
    tokio::time::timeout(PATIENCE, async {
        let mut buf = [0u8; 4096];
        while let Ok(n) = flood_read.read(&mut buf).await {
            if n == 0 {
                break;
            }
            flood_got.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .map_err(|_| "the flood's connection stayed open")?;
    let mut slow_got = Vec::new();
    tokio::time::timeout(PATIENCE, slow_read.read_to_end(&mut slow_got))
        .await
        .map_err(|_| "the slow header's connection stayed open")?
        .ok();
    let slow_got = String::from_utf8_lossy(&slow_got);
    assert!(
        slow_got.is_empty() || slow_got.starts_with("HTTP/1.1 408 "),
        "{slow_got}"
    );
    let mut answered = 0;
    for stream in &mut idle {
        let got = until_closed(stream).await?;
        if !got.is_empty() {
            assert!(got.starts_with("HTTP/1.1 408 "), "{got}");
            answered += 1;
        }
    }
    assert!(
        answered <= 4,
        "at most the per-address cap was served: {answered}"
    );
    dribble.abort();
    pour.abort();
    let (status, _) = http(&relay.admin, "GET /metrics HTTP/1.1\r\n\r\n").await?;
    assert_eq!(status, 200);
    relay.stop().await
}

/// A client sends a 9 KiB request head (over the 8 KiB limit) and waits.
/// Must not happen: the server reading on, answering 200, or hanging.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_request_head_is_refused() -> TestResult {
    let relay = Running::start(RelayConfig::default(), AdminConfig::default()).await?;
    let mut request = b"GET /metrics HTTP/1.1\r\nX-Big: ".to_vec();
    request.resize(9 << 10, b'c');
    let mut stream = connect_from([127, 0, 0, 1], &relay.admin).await?;
    stream.write_all(&request).await?;
    let got = until_closed(&mut stream).await?;
    assert!(got.starts_with("HTTP/1.1 431 "), "{got}");
    assert!(got.contains("Connection: close\r\n"));
    relay.stop().await
}

/// The `meldb relay` process with `--admin 127.0.0.1:0 --log-format json`:
/// a client syncs, another presents a wrong secret. Must not happen: the
/// scrape missing either, an authentication failure logged without its
/// reason and source, or any secret in the logs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meldb_relay_serves_metrics_and_logs_auth_failures_as_json() -> TestResult {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    const GOOD: &str = "good-secret-3b1f9a";
    const WRONG: &str = "wrong-secret-7c2e4d";
    let dir = tempfile::tempdir()?;
    let tokens = dir.path().join("tokens.toml");
    std::fs::write(
        &tokens,
        format!("[[token]]\nname = \"till-1\"\ntoken = \"{GOOD}\"\naccess = \"read-write\"\n"),
    )?;
    let log = dir.path().join("relay.log");
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
            .args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
            .args(["--log-format", "json"])
            .env_remove("MELDB_LOG")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log)?)
            .spawn()?,
    );
    let stdout = child.0.stdout.take().ok_or("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let mut next = || -> Result<String, Box<dyn std::error::Error>> {
        Ok(lines.next().ok_or("stdout ended")??)
    };
    let first = next()?;
    let addr = first
        .strip_prefix("listening on ")
        .ok_or_else(|| format!("unexpected first line {first:?}"))?
        .to_string();
    let second = next()?;
    let admin = second
        .strip_prefix("admin listening on ")
        .ok_or_else(|| format!("unexpected second line {second:?}"))?
        .to_string();

    let client = shared(1)?;
    insert(&client, "c", 0..4)?;
    let mut did = Did::default();
    did.sync(&client, (&addr, &admin), Some(GOOD)).await??;
    let refused = did.sync(&client, (&addr, &admin), Some(WRONG)).await?;
    assert!(refused.is_err(), "{refused:?}");
    eventually("the refused session to end", || async {
        let s = Scrape::of(&admin).await?;
        Ok(s.get("meldb_relay_connections{state=\"pending\"}")? == 0)
    })
    .await?;
    let s = Scrape::of(&admin).await?;
    assert_eq!(s.get("meldb_relay_rows_received_total")?, 4);
    assert_eq!(
        s.get("meldb_relay_auth_failures_total{reason=\"bad_token\"}")?,
        1
    );
    assert_eq!(s.get("meldb_relay_connections_accepted_total")?, 2);
    let (status, body) = http(&admin, "GET /healthz HTTP/1.1\r\n\r\n").await?;
    assert_eq!((status, body.as_str()), (200, "ok\n"));

    let mut failure = None;
    eventually("the authentication failure in the log", || {
        let text = std::fs::read_to_string(&log);
        let found = text.ok().and_then(|text| {
            text.lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .find(|v| v["message"] == "authentication failed")
        });
        let seen = found.is_some();
        failure = found.or(failure.take());
        async move { Ok(seen) }
    })
    .await?;
    let failure = failure.ok_or("no failure line")?;
    assert_eq!(failure["reason"], "bad_token", "{failure}");
    let source = failure["source"].as_str().ok_or("no source")?;
    assert!(source.starts_with("127.0.0.1:"), "{failure}");
    assert_eq!(failure["level"], "WARN", "{failure}");
    drop(child);
    let text = std::fs::read_to_string(&log)?;
    for line in text.lines() {
        serde_json::from_str::<serde_json::Value>(line)
            .map_err(|e| format!("not a JSON line ({e}): {line}"))?;
    }
    assert!(
        !text.contains(WRONG),
        "the wrong secret is in the log:\n{text}"
    );
    assert!(!text.contains(GOOD), "the secret is in the log:\n{text}");
    Ok(())
}
