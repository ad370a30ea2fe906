//! Reloading a running relay's tokens and TLS certificate, over real
//! sockets on 127.0.0.1: through the library (`Relay::reloader`) and
//! through `meldb relay` and SIGHUP.
//!
//! The attacker in these tests is a *revoked device*: a client whose token
//! the operator removed (a lost phone, an employee who left) while it was
//! connected. It keeps its open session and writes; it reconnects with
//! the old secret. None of its writes after the reload may reach the
//! relay, its session must end, and it must not get back in; every other
//! client keeps syncing. A *bad edit* of the tokens file or a broken
//! certificate must change nothing: the relay keeps serving with what it
//! had, and opens up to no one.

mod common;
mod tls_kit;

use common::{inventory, site, TestResult};
use meldb::codec::MAX_MESSAGE_PAYLOAD;
use meldb::sync::{
    sync_once_tcp, sync_once_url, ClientTls, Connection, Connector, NoticeCode, PeerUrl, Relay,
    RelayConfig, Session, SessionConfig, SharedStore, SyncError, Tokens,
};
use meldb::StoreOptions;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tls_kit::Pki;
use tokio::sync::watch;

type Error = Box<dyn std::error::Error>;

/// How long anything here may take: a bound, never a measurement.
const DEADLINE: Duration = Duration::from_secs(20);

const ALICE_AND_BOB: &str = r#"
[[token]]
name = "alice"
token = "alice-secret"
access = "read-write"
[[token]]
name = "bob"
token = "bob-secret"
access = "read-write"
"#;

const BOB_ONLY: &str = r#"
[[token]]
name = "bob"
token = "bob-secret"
access = "read-write"
"#;

fn shared(n: u8) -> meldb::Result<SharedStore> {
    Ok(SharedStore::new(
        StoreOptions::new()
            .site_id(site(n))
            .open_in_memory(&inventory())?,
    ))
}

fn insert(store: &SharedStore, sku: &str) -> meldb::Result<()> {
    store.write(|tx| tx.insert("item", &[("sku", sku.into())]))
}

fn has(store: &SharedStore, sku: &str) -> meldb::Result<bool> {
    Ok(store.write(|tx| tx.get("item", sku))?.is_some())
}

fn with(token: &str) -> SessionConfig {
    SessionConfig::default().token(Some(token.into()))
}

/// Waits until `check` holds, failing after the deadline.
async fn eventually(what: &str, mut check: impl FnMut() -> Result<bool, Error>) -> TestResult {
    let start = Instant::now();
    while !check()? {
        if start.elapsed() > DEADLINE {
            return Err(format!("not within {DEADLINE:?}: {what}").into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// A connected device, its live session driven by hand so a test decides
/// when it writes and what it sends.
struct Device {
    store: SharedStore,
    session: Session,
    conn: Connection,
}

impl Device {
    /// Connects, says hello with `token` and syncs until caught up.
    async fn connect(conn: Connection, store: SharedStore, token: &str) -> Result<Device, Error> {
        let config = with(token).live(true);
        let session = Session::initiator(&*store.lock(), config);
        let mut device = Device {
            store,
            session,
            conn,
        };
        device.pump_until(|s| s.is_caught_up()).await?;
        Ok(device)
    }

    async fn tcp(addr: &str, store: SharedStore, token: &str) -> Result<Device, Error> {
        let conn = Connection::tcp(addr, MAX_MESSAGE_PAYLOAD).await?;
        Device::connect(conn, store, token).await
    }

    /// Sends what the session has to say.
    async fn flush(&mut self) -> Result<(), SyncError> {
        while let Some(message) = self.session.poll_message() {
            self.conn.send(&message).await?;
        }
        Ok(())
    }

    /// Writes a row and sends it at once.
    async fn write(&mut self, sku: &str) -> Result<(), Error> {
        insert(&self.store, sku)?;
        self.session.local_changed(&*self.store.lock())?;
        Ok(self.flush().await?)
    }

    /// Handles what the relay sends until `done` holds; an error is how
    /// the session ended.
    async fn pump_until(&mut self, done: impl Fn(&Session) -> bool) -> Result<(), SyncError> {
        self.flush().await?;
        let start = Instant::now();
        while !done(&self.session) {
            let left = DEADLINE.saturating_sub(start.elapsed());
            let message = match tokio::time::timeout(left, self.conn.recv()).await {
                Ok(Some(message)) => message?,
                Ok(None) => return Err(SyncError::Closed { during: "pumping" }),
                Err(_) => return Err(SyncError::Timeout { seconds: 20 }),
            };
            self.session.receive(&mut *self.store.lock(), message)?;
            self.flush().await?;
        }
        Ok(())
    }

    /// Handles what the relay sends until the session ends: how it ended.
    async fn until_ended(&mut self) -> SyncError {
        match self.pump_until(|_| false).await {
            Err(e) => e,
            Ok(()) => SyncError::Closed { during: "never" },
        }
    }

    /// Handles what the relay sends until this replica has `sku`.
    async fn until_has(&mut self, sku: &str) -> TestResult {
        let store = self.store.clone();
        let sku = sku.to_string();
        self.pump_until(move |_| has(&store, &sku).unwrap_or(false))
            .await?;
        Ok(())
    }
}

/// The revocation notice a session ended with.
fn assert_revoked(ended: &SyncError) {
    match ended {
        SyncError::Refused {
            code: NoticeCode::Unauthorized,
            message,
        } => assert!(message.contains("token revoked"), "{message}"),
        other => panic!("expected a token-revoked notice, got {other:?}"),
    }
}

/// A refusal for a bad token.
fn assert_unauthorized<T: std::fmt::Debug>(result: Result<T, SyncError>) {
    match result {
        Err(SyncError::Refused {
            code: NoticeCode::Unauthorized,
            ..
        }) => {}
        other => panic!("expected an Unauthorized refusal, got {other:?}"),
    }
}

/// Attacker: alice's device, connected live when the operator drops her
/// token with `Reloader::set_tokens`. It writes right after the reload on
/// its open session, then reconnects with its old secret. Must not
/// happen: that write reaching the relay, the session going on, the
/// reconnect being let in, or bob (still listed) noticing anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_tokens_cuts_off_a_revoked_device_and_keeps_the_others() -> TestResult {
    let relay_store = shared(0x10)?;
    let config = RelayConfig::default().tokens(Tokens::from_toml_str(ALICE_AND_BOB, "t.toml")?);
    let relay = Relay::bind(relay_store.clone(), "127.0.0.1:0", config).await?;
    let addr = relay.local_addr()?.to_string();
    let reloader = relay.reloader();
    let (stop, shutdown) = watch::channel(false);
    let task = tokio::spawn(relay.run(shutdown));

    let mut alice = Device::tcp(&addr, shared(1)?, "alice-secret").await?;
    let mut bob = Device::tcp(&addr, shared(2)?, "bob-secret").await?;
    alice.write("alice-before").await?;
    bob.write("bob-before").await?;
    eventually("both writes reach the relay", || {
        Ok(has(&relay_store, "alice-before")? && has(&relay_store, "bob-before")?)
    })
    .await?;

    reloader.set_tokens(Tokens::from_toml_str(BOB_ONLY, "t.toml")?);
    // The revoked device writes on its open session after the reload.
    alice.write("alice-after").await.ok();
    let ended = alice.until_ended().await;
    assert_revoked(&ended);

    // Bob keeps syncing both ways on his session; once his later write
    // is in, alice's (sent before it) would have been too.
    bob.write("bob-after").await?;
    eventually("bob's later write reaches the relay", || {
        has(&relay_store, "bob-after").map_err(Into::into)
    })
    .await?;
    insert(&relay_store, "from-relay")?;
    relay_store.notify_changed();
    bob.until_has("from-relay").await?;
    assert!(
        !has(&relay_store, "alice-after")?,
        "a write the revoked device sent after the reload was applied"
    );

    // Its old secret no longer gets in, and a new connection of bob's does.
    assert_unauthorized(sync_once_tcp(&alice.store, &addr, with("alice-secret")).await);
    assert!(!has(&relay_store, "alice-after")?);
    let report = sync_once_tcp(&shared(3)?, &addr, with("bob-secret")).await?;
    assert!(report.stats.rows_received >= 3, "{report:?}");

    stop.send(true)?;
    task.await??;
    Ok(())
}

/// A read-write device whose token becomes read-only, or moves to another
/// namespace, no longer has what its session was given: it is cut off
/// too (and may reconnect with what it has now).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_narrowed_grant_ends_the_session_and_the_same_grant_keeps_it() -> TestResult {
    let relay_store = shared(0x10)?;
    let config = RelayConfig::default().tokens(Tokens::from_toml_str(ALICE_AND_BOB, "t.toml")?);
    let relay = Relay::bind(relay_store.clone(), "127.0.0.1:0", config).await?;
    let addr = relay.local_addr()?.to_string();
    let reloader = relay.reloader();
    let (stop, shutdown) = watch::channel(false);
    let task = tokio::spawn(relay.run(shutdown));

    let mut alice = Device::tcp(&addr, shared(1)?, "alice-secret").await?;
    let mut bob = Device::tcp(&addr, shared(2)?, "bob-secret").await?;
    // The same tokens, read again: nobody is cut off.
    reloader.set_tokens(Tokens::from_toml_str(ALICE_AND_BOB, "t.toml")?);
    alice.write("a1").await?;
    bob.write("b1").await?;
    alice.until_has("b1").await?;
    bob.until_has("a1").await?;

    let read_only = ALICE_AND_BOB.replacen(
        "token = \"alice-secret\"\naccess = \"read-write\"",
        "token = \"alice-secret\"\naccess = \"read-only\"",
        1,
    );
    assert_ne!(read_only, ALICE_AND_BOB);
    reloader.set_tokens(Tokens::from_toml_str(&read_only, "t.toml")?);
    alice.write("a2").await.ok();
    assert_revoked(&alice.until_ended().await);
    bob.write("b2").await?;
    eventually("bob's write reaches the relay", || {
        has(&relay_store, "b2").map_err(Into::into)
    })
    .await?;
    assert!(
        !has(&relay_store, "a2")?,
        "a read-only token's write landed"
    );

    // Reconnecting, alice reads as read-only now.
    let report = sync_once_tcp(&alice.store, &addr, with("alice-secret")).await?;
    assert!(report.peer.is_some_and(|p| !p.accepts_changes));
    assert!(!has(&relay_store, "a2")?);

    stop.send(true)?;
    task.await??;
    Ok(())
}

/// A `meldb relay` process, its stdout's `listening on` lines read and its
/// log in a file; killed when dropped.
struct Process {
    child: Child,
    urls: Vec<String>,
    log: PathBuf,
}

impl Process {
    fn start(mut cmd: Command, listeners: usize, log: PathBuf) -> Result<Process, Error> {
        let mut child = cmd
            .env("MELDB_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log)?)
            .spawn()?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut reader = BufReader::new(stdout);
        let mut urls = Vec::new();
        for _ in 0..listeners {
            let mut line = String::new();
            reader.read_line(&mut line)?;
            match line.trim().strip_prefix("listening on ") {
                Some(url) => urls.push(url.to_string()),
                None => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let log = std::fs::read_to_string(&log).unwrap_or_default();
                    return Err(format!("unexpected line {line:?}; log:\n{log}").into());
                }
            }
        }
        Ok(Process { child, urls, log })
    }

    /// Sends SIGHUP (with the system's `kill`).
    fn hangup(&self) -> TestResult {
        let status = Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()?;
        assert!(status.success(), "kill -HUP failed: {status}");
        Ok(())
    }

    /// How many log lines hold `needle`.
    fn logged(&self, needle: &str) -> Result<usize, Error> {
        let log = std::fs::read_to_string(&self.log)?;
        Ok(log.lines().filter(|l| l.contains(needle)).count())
    }

    /// Sends SIGHUP and waits until the log has one more line with
    /// `needle` than before.
    async fn hangup_and_wait(&self, needle: &str) -> TestResult {
        let before = self.logged(needle)?;
        self.hangup()?;
        eventually(&format!("the log says {needle:?}"), || {
            Ok(self.logged(needle)? > before)
        })
        .await
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn relay_command(dir: &Path) -> Command {
    let mut cmd = tls_kit::meldb();
    cmd.current_dir(dir)
        .args(["relay", "--db", "relay.db"])
        .args(["--tokens", "tokens.toml"]);
    cmd
}

/// Attacker: alice's device, connected to `meldb relay`, when the operator
/// edits the tokens file. First two bad edits (a syntax error, the same
/// secret twice) and SIGHUP: must not happen: the relay stopping, alice
/// or bob being cut off or refused. Then alice's entry removed and SIGHUP:
/// must not happen: alice's open session going on, her write after it
/// landing, her reconnect getting in, or bob noticing anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_tokens_file_and_a_bad_edit_keeps_the_old_tokens() -> TestResult {
    let dir = tempfile::tempdir()?;
    let tokens = dir.path().join("tokens.toml");
    std::fs::write(&tokens, ALICE_AND_BOB)?;
    let mut cmd = relay_command(dir.path());
    cmd.args(["--listen", "127.0.0.1:0"]);
    let relay = Process::start(cmd, 1, dir.path().join("relay.log"))?;
    let addr = relay.urls[0].clone();

    let mut alice = Device::tcp(&addr, shared(1)?, "alice-secret").await?;
    let mut bob = Device::tcp(&addr, shared(2)?, "bob-secret").await?;
    let watcher = shared(9)?;

    // Bad edits: the old tokens stay, everyone keeps syncing.
    for (n, broken) in [
        "[[token]]\nname = \"bob\"\ntoken = \"bob-secret\nx".to_string(),
        format!("{BOB_ONLY}[[token]]\nname = \"mallory\"\ntoken = \"bob-secret\"\naccess = \"read-write\"\n"),
    ]
    .into_iter()
    .enumerate()
    {
        std::fs::write(&tokens, broken)?;
        relay
            .hangup_and_wait("tokens not reloaded: keeping the old ones")
            .await?;
        let sku = format!("alice-still-{n}");
        alice.write(&sku).await?;
        bob.until_has(&sku).await?;
        sync_once_tcp(&shared(3)?, &addr, with("alice-secret")).await?;
    }

    // Alice removed: her session is cut off, her later write never lands.
    std::fs::write(&tokens, BOB_ONLY)?;
    relay.hangup_and_wait("tokens reloaded").await?;
    alice.write("alice-after").await.ok();
    assert_revoked(&alice.until_ended().await);
    assert_unauthorized(sync_once_tcp(&alice.store, &addr, with("alice-secret")).await);
    bob.write("bob-after").await?;
    // A reader (bob's token, a new connection each time) gets bob's later
    // write, and never alice's.
    let mut seen = false;
    let start = Instant::now();
    while !seen && start.elapsed() < DEADLINE {
        sync_once_tcp(&watcher, &addr, with("bob-secret")).await?;
        seen = has(&watcher, "bob-after")?;
    }
    assert!(seen, "bob's write after the reload never reached the relay");
    assert!(
        !has(&watcher, "alice-after")?,
        "a write the revoked device sent after the reload was applied"
    );
    assert_eq!(relay.logged("tokens reloaded")?, 1);
    Ok(())
}

/// The operator renews the relay's certificate under a new CA and sends
/// SIGHUP. Must happen: a client that trusts only the new CA connects; one
/// that trusts only the old CA fails. A broken certificate file and SIGHUP
/// after that must not change what is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_tls_certificate() -> TestResult {
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    std::fs::write(d.join("tokens.toml"), ALICE_AND_BOB)?;
    let old = Pki::new(d, "old", &["127.0.0.1"])?;
    let new = Pki::new(d, "new", &["127.0.0.1"])?;
    let (cert, key) = (d.join("cert.pem"), d.join("key.pem"));
    std::fs::copy(&old.cert, &cert)?;
    std::fs::copy(&old.key, &key)?;
    let mut cmd = relay_command(d);
    cmd.args(["--listen", "tls://127.0.0.1:0"])
        .arg("--tls-cert")
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key);
    let relay = Process::start(cmd, 1, d.join("relay.log"))?;
    let url: PeerUrl = relay.urls[0].parse()?;
    let trusting = |ca: &Path| -> Result<Connector, Error> {
        Ok(Connector::new()
            .tls(ClientTls::with_ca_file(ca)?)
            .timeout(Duration::from_secs(10)))
    };
    let (by_old, by_new) = (trusting(&old.ca)?, trusting(&new.ca)?);
    let client = shared(1)?;
    sync_once_url(&client, &url, with("alice-secret"), &by_old).await?;
    assert!(sync_once_url(&client, &url, with("alice-secret"), &by_new)
        .await
        .is_err());

    std::fs::copy(&new.cert, &cert)?;
    std::fs::copy(&new.key, &key)?;
    relay.hangup_and_wait("TLS certificate reloaded").await?;
    sync_once_url(&client, &url, with("alice-secret"), &by_new).await?;
    let refused = sync_once_url(&client, &url, with("alice-secret"), &by_old).await;
    match refused {
        Err(SyncError::Transport(e)) => {
            assert!(e.to_string().contains("not signed by a CA"), "{e}")
        }
        other => panic!("a client trusting only the old CA connected: {other:?}"),
    }

    // A broken certificate (half written, say): the new one stays.
    std::fs::write(&cert, "-----BEGIN CERTIFICATE-----\nnot base64\n")?;
    relay
        .hangup_and_wait("TLS certificate not reloaded: keeping the old one")
        .await?;
    sync_once_url(&client, &url, with("alice-secret"), &by_new).await?;
    Ok(())
}
