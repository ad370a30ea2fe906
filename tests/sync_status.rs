//! The status stream of a continuous sync, over real sockets on 127.0.0.1
//! against a library relay: `Connecting` → `Connected`/`Syncing` →
//! `Idle`; `Offline` with the last error and the next retry once the
//! relay stops; `Idle` again once it is back on the same port; pending
//! changes counted while offline and back to 0 once acknowledged; a
//! refused token shown as `Offline` with its notice code. Deadlines are
//! generous "must happen within" bounds, never timing asserts.

mod common;

use common::{site, TestResult};
use meldb::sync::{
    Backoff, ContinuousSync, NoticeCode, PeerUrl, Relay, RelayConfig, SessionConfig, SharedStore,
    SyncState, SyncStatus, Tokens,
};
use meldb::StoreOptions;
use std::time::{Duration, Instant};
use tokio::sync::watch;

const WITHIN: Duration = Duration::from_secs(30);

fn tokens() -> Tokens {
    let mut tokens = Tokens::new();
    tokens.add("till-1", "rw-token-1", meldb::sync::Grant::read_write());
    tokens
}

fn backoff() -> Backoff {
    Backoff {
        initial: Duration::from_millis(20),
        max: Duration::from_millis(300),
    }
}

fn insert(store: &SharedStore, sku: &str) -> meldb::Result<()> {
    store.write(|tx| tx.insert("item", &[("sku", sku.into()), ("stock", 1.into())]))
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

/// A library relay on `addr` over `store`, until its stop is sent.
struct Running {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<(), meldb::sync::SyncError>>,
    addr: std::net::SocketAddr,
}

async fn start_relay(
    store: &SharedStore,
    addr: &str,
) -> Result<Running, Box<dyn std::error::Error>> {
    let config = RelayConfig::default()
        .tokens(tokens())
        .idle(Duration::from_secs(5));
    // The port was just freed by the relay before: a moment may pass
    // before it can be bound again.
    let start = Instant::now();
    let relay = loop {
        match Relay::bind(store.clone(), addr, config.clone()).await {
            Ok(relay) => break relay,
            Err(e) if start.elapsed() < WITHIN => {
                eprintln!("binding {addr} again: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => return Err(e.into()),
        }
    };
    let addr = relay.local_addr()?;
    let (stop, shutdown) = watch::channel(false);
    let task = tokio::spawn(relay.run(shutdown));
    Ok(Running { stop, task, addr })
}

impl Running {
    async fn stop(self) -> TestResult {
        let _ = self.stop.send(true);
        self.task.await??;
        Ok(())
    }
}

/// Waits until `status` satisfies `done`, recording each state seen.
async fn until(
    status: &mut watch::Receiver<SyncStatus>,
    seen: &mut Vec<&'static str>,
    what: &str,
    done: impl Fn(&SyncStatus) -> bool,
) -> Result<SyncStatus, Box<dyn std::error::Error>> {
    let wait = async {
        loop {
            {
                let now = status.borrow_and_update();
                if seen.last() != Some(&now.state.name()) {
                    seen.push(now.state.name());
                }
                if done(&now) {
                    return Ok::<_, Box<dyn std::error::Error>>(now.clone());
                }
            }
            status.changed().await?;
        }
    };
    match tokio::time::timeout(WITHIN, wait).await {
        Ok(result) => result,
        Err(_) => Err(format!(
            "never {what}: states seen {seen:?}, now {}",
            *status.borrow()
        )
        .into()),
    }
}

fn rank(state: &str) -> usize {
    ["connecting", "connected", "syncing", "idle"]
        .iter()
        .position(|s| *s == state)
        .unwrap_or(usize::MAX)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_follows_a_relay_that_stops_and_comes_back() -> TestResult {
    let dir = tempfile::tempdir()?;
    let relay_store = SharedStore::new(
        StoreOptions::new()
            .site_id(site(100))
            .open(dir.path().join("relay.db"), &common::inventory())?,
    );
    let relay = start_relay(&relay_store, "127.0.0.1:0").await?;
    let addr = relay.addr;
    let client = SharedStore::new(
        StoreOptions::new()
            .site_id(site(1))
            .open(dir.path().join("client.db"), &common::inventory())?,
    );
    for sku in ["a", "b", "c"] {
        insert(&client, sku)?;
    }
    let url: PeerUrl = format!("tcp://{addr}").parse()?;
    let sync = ContinuousSync::new(client.clone(), url)
        .config(SessionConfig::default().token(Some("rw-token-1".into())))
        .backoff(backoff())
        .seed(7);
    let mut status = sync.status();
    assert!(matches!(status.borrow().state, SyncState::Connecting));
    assert_eq!(
        status.borrow().pending_changes,
        None,
        "no peer said what it has yet"
    );
    let handle = sync.spawn();

    // Up: the states only move forward until the first catch-up, and the
    // three rows written before are delivered and acknowledged.
    let mut seen = vec!["connecting"];
    let idle = until(&mut status, &mut seen, "idle with nothing pending", |s| {
        matches!(s.state, SyncState::Idle) && s.is_settled()
    })
    .await?;
    assert_eq!(idle.pending_changes, Some(0));
    assert_eq!(seen.first(), Some(&"connecting"), "{seen:?}");
    let first_idle = seen.iter().position(|s| *s == "idle").ok_or("never idle")?;
    assert!(
        seen[..=first_idle]
            .windows(2)
            .all(|w| rank(w[0]) < rank(w[1])),
        "states went backwards before the first catch-up: {seen:?}"
    );
    for sku in ["a", "b", "c"] {
        assert!(has(&relay_store, sku)?, "{sku} never reached the relay");
    }

    // A live write goes out and is acknowledged.
    insert(&client, "live")?;
    until(&mut status, &mut seen, "idle after a live write", |s| {
        matches!(s.state, SyncState::Idle) && s.is_settled()
    })
    .await?;
    let start = Instant::now();
    while !has(&relay_store, "live")? {
        assert!(
            start.elapsed() < WITHIN,
            "the live write never reached the relay"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Down: the relay stops (its sessions get a shutdown notice), then
    // nothing listens. The status says offline, why, and when it retries.
    let stopped_at = Instant::now();
    relay.stop().await?;
    let offline = until(&mut status, &mut seen, "offline", |s| {
        matches!(s.state, SyncState::Offline { .. })
    })
    .await?;
    let SyncState::Offline {
        error,
        retry_at,
        retry_in,
    } = &offline.state
    else {
        unreachable!("until checked it");
    };
    let error = error
        .as_ref()
        .ok_or("offline without the error that ended the session")?;
    assert!(
        error.notice() == Some(NoticeCode::Shutdown) || error.while_connecting(),
        "unexpected last error: {error}"
    );
    assert!(*retry_in <= backoff().max, "{retry_in:?}");
    assert!(*retry_at >= stopped_at, "the next retry is in the past");
    // Reconnect attempts fail while nothing listens: still offline, now
    // with a connection error, and a write made offline is pending.
    insert(&client, "offline")?;
    let waiting = until(
        &mut status,
        &mut seen,
        "offline with a connection error and 1 pending",
        |s| s.state.error().is_some_and(|e| e.while_connecting()) && s.pending_changes == Some(1),
    )
    .await?;
    assert!(waiting.to_string().contains("offline"), "{waiting}");

    // Back on the same port: idle again, the offline write delivered.
    let relay = start_relay(&relay_store, &addr.to_string()).await?;
    until(
        &mut status,
        &mut seen,
        "idle after the relay came back",
        |s| matches!(s.state, SyncState::Idle) && s.is_settled(),
    )
    .await?;
    let start = Instant::now();
    while !has(&relay_store, "offline")? {
        assert!(
            start.elapsed() < WITHIN,
            "the offline write never reached the relay"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Stopped: the handle ends the sync, and the status says so.
    let reports = handle.stop().await?;
    assert!(
        matches!(status.borrow().state, SyncState::Stopped),
        "{}",
        *status.borrow()
    );
    assert!(status.borrow().is_settled());
    let sent: u64 = reports.iter().map(|r| r.stats.rows_sent).sum();
    assert!(
        sent >= 1,
        "the stopped session's report is missing: {reports:?}"
    );
    relay.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_token_shows_offline_with_the_refusal() -> TestResult {
    // The attacker is a client with a made-up token: it must be told it is
    // unauthorized, as a value in its status, and back off to the slowest
    // retry rather than hammer the relay.
    let dir = tempfile::tempdir()?;
    let relay_store = SharedStore::new(
        StoreOptions::new()
            .site_id(site(100))
            .open(dir.path().join("relay.db"), &common::inventory())?,
    );
    let relay = start_relay(&relay_store, "127.0.0.1:0").await?;
    let client = SharedStore::new(
        StoreOptions::new()
            .site_id(site(2))
            .open(dir.path().join("client.db"), &common::inventory())?,
    );
    insert(&client, "never")?;
    let sync = ContinuousSync::new(client.clone(), format!("tcp://{}", relay.addr).parse()?)
        .config(SessionConfig::default().token(Some("made-up".into())))
        .backoff(Backoff {
            initial: Duration::from_millis(20),
            max: Duration::from_secs(60),
        })
        .seed(11);
    let mut status = sync.status();
    let handle = sync.spawn();
    let mut seen = Vec::new();
    let refused = until(&mut status, &mut seen, "offline as unauthorized", |s| {
        s.state
            .error()
            .is_some_and(|e| e.notice() == Some(NoticeCode::Unauthorized))
    })
    .await?;
    let SyncState::Offline {
        error: Some(error),
        retry_in,
        ..
    } = &refused.state
    else {
        unreachable!("until checked it");
    };
    assert!(!error.while_connecting(), "the connection itself worked");
    assert!(
        matches!(
            error.error(),
            meldb::sync::SyncError::Refused {
                code: NoticeCode::Unauthorized,
                ..
            }
        ),
        "{:?}",
        error.error()
    );
    assert!(
        *retry_in >= Duration::from_secs(30),
        "a refused token retried after {retry_in:?}"
    );
    assert!(
        !has(&relay_store, "never")?,
        "a refused client's row was written"
    );
    handle.stop().await?;
    assert!(matches!(status.borrow().state, SyncState::Stopped));
    relay.stop().await?;
    Ok(())
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meldb_sync_continuous_prints_one_line_per_status_change() -> TestResult {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir()?;
    let relay_store = SharedStore::new(
        StoreOptions::new()
            .site_id(site(100))
            .open(dir.path().join("relay.db"), &common::inventory())?,
    );
    let relay = start_relay(&relay_store, "127.0.0.1:0").await?;
    let schema = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schema/inventory.toml");
    let db = dir.path().join("client.db");
    {
        let client = SharedStore::new(
            StoreOptions::new()
                .site_id(site(3))
                .open(&db, &common::inventory())?,
        );
        insert(&client, "from-cli")?;
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_meldb"))
        .args(["sync", "--continuous", "--token-env", "STATUS_TEST_TOKEN"])
        .arg("--db")
        .arg(&db)
        .arg("--schema")
        .arg(&schema)
        .arg("--peer")
        .arg(relay.addr.to_string())
        .env("STATUS_TEST_TOKEN", "rw-token-1")
        .env_remove("MELDB_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let stderr = child.stderr.take().ok_or("no stderr")?;
    let pid = child.id().to_string();
    // Read status lines on a thread until idle with nothing pending, then
    // stop it the way an operator would (SIGTERM) and read the rest.
    let reader = std::thread::spawn(move || -> std::io::Result<Vec<String>> {
        let mut lines = Vec::new();
        let mut signalled = false;
        for line in BufReader::new(stderr).lines() {
            let line = line?;
            if !signalled && line.contains(": idle") && line.contains("pending: 0 changes") {
                Command::new("kill").args(["-TERM", &pid]).status()?;
                signalled = true;
            }
            lines.push(line);
        }
        Ok(lines)
    });
    let waited = tokio::task::spawn_blocking(move || child.wait_with_output()).await??;
    let lines = reader.join().map_err(|_| "the reader panicked")??;
    assert!(
        waited.status.success(),
        "meldb sync --continuous failed: {lines:?}"
    );
    let states: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|rest| rest.split([' ', ',', ';', ':']).next().unwrap_or(""))
        .collect();
    assert_eq!(states.first(), Some(&"connecting"), "{lines:?}");
    assert!(states.contains(&"idle"), "{lines:?}");
    assert_eq!(states.last(), Some(&"stopped"), "{lines:?}");
    assert!(
        lines.iter().all(|l| l.starts_with("sync tcp://")),
        "{lines:?}"
    );
    // One line per change: no line repeats the one before it.
    assert!(lines.windows(2).all(|w| w[0] != w[1]), "{lines:?}");
    let stdout = String::from_utf8_lossy(&waited.stdout);
    assert!(stdout.contains("sent 1 rows"), "{stdout}");
    assert!(has(&relay_store, "from-cli")?);
    relay.stop().await?;
    Ok(())
}
