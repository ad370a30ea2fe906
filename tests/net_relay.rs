//! Real sockets on 127.0.0.1 against the `meldb` binary: a relay process
//! with three clients, a relay killed with SIGKILL mid-traffic and
//! restarted, an offline client catching up, `meldb serve` / `meldb sync`
//! peer to peer, and hostile input that must get a clear error while the
//! relay keeps serving everyone else. Ports are ephemeral: the servers
//! bind port 0 and print `listening on ADDR`.

mod common;

use common::{site, TestResult};
use meldb::codec::{self, encode_message, HEADER_LEN, MAX_MESSAGE_PAYLOAD};
use meldb::sync::message::{Batch, Hello, Message, NoticeCode};
use meldb::sync::{sync_continuously, sync_once_tcp, Backoff, SessionConfig, SharedStore};
use meldb::StoreOptions;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::sync::watch;

const TOKENS: &str = r#"
[[token]]
name = "till-1"
token = "rw-token-1"
access = "read-write"
[[token]]
name = "till-2"
token = "rw-token-2"
access = "read-write"
[[token]]
name = "till-3"
token = "rw-token-3"
access = "read-write"
[[token]]
name = "dashboard"
token = "ro-token-1"
access = "read-only"
"#;

fn schema_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("schema/inventory.toml")
}

fn meldb() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_meldb"));
    cmd.env("MELDB_SCHEMA", schema_path())
        .env_remove("MELDB_LOG");
    cmd
}

/// A server process, killed when dropped.
struct Server {
    child: Child,
    addr: String,
}

impl Server {
    fn start(mut cmd: Command) -> Result<Server, Box<dyn std::error::Error>> {
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::null()).spawn()?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .ok_or_else(|| format!("unexpected first line {line:?}"))?
            .to_string();
        Ok(Server { child, addr })
    }

    fn relay(dir: &Path, listen: &str) -> Result<Server, Box<dyn std::error::Error>> {
        let tokens = dir.join("tokens.toml");
        std::fs::write(&tokens, TOKENS)?;
        let mut cmd = meldb();
        cmd.arg("relay")
            .arg("--db")
            .arg(dir.join("relay.db"))
            .args(["--listen", listen, "--max-message", "1048576"])
            .arg("--tokens")
            .arg(tokens);
        Server::start(cmd)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn client(dir: &Path, n: u8) -> meldb::Result<SharedStore> {
    Ok(SharedStore::new(
        StoreOptions::new()
            .site_id(site(n))
            .open(dir.join(format!("client{n}.db")), &common::inventory())?,
    ))
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

fn count(store: &SharedStore) -> meldb::Result<i64> {
    Ok(store
        .lock()
        .conn()
        .query_row("SELECT count(*) FROM item", [], |r| r.get(0))?)
}

fn config(token: &str) -> SessionConfig {
    SessionConfig::default().token(Some(token.into()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_clients_and_a_relay_killed_mid_traffic() -> TestResult {
    let dir = tempfile::tempdir()?;
    let relay = Server::relay(dir.path(), "127.0.0.1:0")?;
    let addr = relay.addr.clone();
    let clients = [
        client(dir.path(), 1)?,
        client(dir.path(), 2)?,
        client(dir.path(), 3)?,
    ];
    let (stop, shutdown) = watch::channel(false);
    let backoff = Backoff {
        initial: Duration::from_millis(20),
        max: Duration::from_millis(200),
    };
    // Clients 2 and 3 stay connected; client 1 syncs once per write, so
    // it knows exactly which of its writes the relay acknowledged.
    let mut live = Vec::new();
    for (i, c) in clients.iter().enumerate().skip(1) {
        live.push(tokio::spawn(sync_continuously(
            c.clone(),
            addr.clone(),
            config(&format!("rw-token-{}", i + 1)),
            backoff,
            shutdown.clone(),
        )));
    }
    for (i, c) in clients.iter().enumerate().skip(1) {
        insert(c, &format!("c{}-first", i + 1))?;
    }
    insert(&clients[0], "c1-first")?;
    // Client 1 syncs until it also has what 2 and 3 pushed after its sync.
    let start = Instant::now();
    loop {
        sync_once_tcp(&clients[0], &addr, config("rw-token-1")).await?;
        if clients
            .iter()
            .map(count)
            .collect::<meldb::Result<Vec<_>>>()?
            == [3, 3, 3]
        {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the first writes never spread"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Traffic from every client; the relay dies at a random point of it.
    let killer = std::thread::spawn(move || {
        let mut relay = relay;
        std::thread::sleep(Duration::from_millis(300));
        // Child::kill is SIGKILL on Unix: no chance to flush or say goodbye.
        let _ = relay.child.kill();
        let _ = relay.child.wait();
    });
    let mut acked = 0;
    let mut written = 0;
    loop {
        insert(&clients[0], &format!("w{written}"))?;
        insert(&clients[1 + written % 2], &format!("live{written}"))?;
        written += 1;
        match sync_once_tcp(&clients[0], &addr, config("rw-token-1")).await {
            Ok(report) => {
                assert_eq!(report.stats.rows_acked, report.stats.rows_sent);
                acked = written;
            }
            Err(_) => break,
        }
        assert!(written < 100_000, "the relay was never killed");
    }
    killer.join().map_err(|_| "killer thread panicked")?;
    assert!(acked > 0, "no write was acknowledged before the kill");
    println!("relay killed after {acked} acknowledged syncs, {written} writes");

    // Restart on the same port with the same database.
    let relay = {
        let start = Instant::now();
        loop {
            match Server::relay(dir.path(), &addr) {
                Ok(r) => break r,
                Err(e) if start.elapsed() < Duration::from_secs(10) => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => return Err(e),
            }
        }
    };
    // A newcomer sees every write the relay acknowledged before it died.
    let fresh = client(dir.path(), 9)?;
    sync_once_tcp(&fresh, &relay.addr, config("ro-token-1")).await?;
    for i in 0..acked {
        assert!(
            has(&fresh, &format!("w{i}"))?,
            "acknowledged write w{i} lost (acked {acked})"
        );
    }

    // Everyone converges: clients 2 and 3 reconnect by themselves, client 1
    // syncs again (until it has what they pushed after its last sync).
    let expected = 3 + 2 * written as i64;
    let start = Instant::now();
    loop {
        sync_once_tcp(&clients[0], &relay.addr, config("rw-token-1")).await?;
        let counts = clients
            .iter()
            .map(count)
            .collect::<meldb::Result<Vec<_>>>()?;
        let digests = clients
            .iter()
            .map(|c| c.lock().digest())
            .collect::<meldb::Result<Vec<_>>>()?;
        if counts == [expected; 3] && digests.iter().all(|d| *d == digests[0]) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no convergence after the restart: {counts:?} rows, {expected} expected"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.send(true)?;
    for t in live {
        t.await?;
    }
    Ok(())
}

fn cli(args: &[&str], dir: &Path) -> Result<String, Box<dyn std::error::Error>> {
    let out = meldb().current_dir(dir).args(args).output()?;
    if !out.status.success() {
        return Err(format!(
            "meldb {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(String::from_utf8(out.stdout)?)
}

#[test]
fn an_offline_client_catches_up_with_only_what_it_missed() -> TestResult {
    let dir = tempfile::tempdir()?;
    let relay = Server::relay(dir.path(), "127.0.0.1:0")?;
    let d = dir.path();
    cli(&["init", "--db", "a.db"], d)?;
    cli(&["init", "--db", "c.db"], d)?;
    let sync = |db: &str, token: &str| {
        cli(
            &["sync", "--db", db, "--peer", &relay.addr, "--token", token],
            d,
        )
    };
    assert_eq!(
        sync("c.db", "rw-token-3")?.trim(),
        "sent 0 rows, received 0 rows (0 changed this replica)"
    );
    for i in 0..30 {
        cli(&["insert", "--db", "a.db", "item", &format!("sku=A{i}")], d)?;
    }
    assert_eq!(
        sync("a.db", "rw-token-1")?.trim(),
        "sent 30 rows, received 0 rows (0 changed this replica)"
    );
    assert_eq!(
        sync("c.db", "rw-token-3")?.trim(),
        "sent 0 rows, received 30 rows (30 changed this replica)"
    );
    // Offline while a writes five more and changes one.
    for i in 30..35 {
        cli(&["insert", "--db", "a.db", "item", &format!("sku=A{i}")], d)?;
    }
    cli(
        &[
            "increment",
            "--db",
            "a.db",
            "item",
            "--key",
            "A0",
            "stock",
            "2",
        ],
        d,
    )?;
    sync("a.db", "rw-token-1")?;
    assert_eq!(
        sync("c.db", "rw-token-3")?.trim(),
        "sent 0 rows, received 6 rows (6 changed this replica)"
    );
    assert_eq!(
        cli(&["digest", "--db", "a.db"], d)?,
        cli(&["digest", "--db", "c.db"], d)?
    );
    Ok(())
}

#[test]
fn two_replicas_sync_directly_with_serve_and_sync() -> TestResult {
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    cli(&["init", "--db", "a.db"], d)?;
    cli(&["init", "--db", "b.db"], d)?;
    cli(&["insert", "--db", "a.db", "item", "sku=A1", "stock=5"], d)?;
    cli(&["insert", "--db", "b.db", "item", "sku=B1", "stock=7"], d)?;
    let mut cmd = meldb();
    cmd.current_dir(d)
        .args(["serve", "--db", "a.db", "--listen", "127.0.0.1:0"]);
    let server = Server::start(cmd)?;
    let out = cli(&["sync", "--db", "b.db", "--peer", &server.addr], d)?;
    assert_eq!(
        out.trim(),
        "sent 1 rows, received 1 rows (1 changed this replica)"
    );
    cli(
        &[
            "increment",
            "--db",
            "b.db",
            "item",
            "--key",
            "A1",
            "stock",
            "-2",
        ],
        d,
    )?;
    let out = cli(&["sync", "--db", "b.db", "--peer", &server.addr], d)?;
    assert_eq!(
        out.trim(),
        "sent 1 rows, received 0 rows (0 changed this replica)"
    );
    drop(server);
    assert_eq!(
        cli(&["digest", "--db", "a.db"], d)?,
        cli(&["digest", "--db", "b.db"], d)?
    );
    let stock = cli(
        &[
            "query",
            "--db",
            "a.db",
            "--json",
            "SELECT stock FROM item WHERE sku = 'A1'",
        ],
        d,
    )?;
    assert!(stock.contains('3'), "{stock}");
    Ok(())
}

/// Sends `bytes` on a fresh connection, closes the sending side and
/// returns every message the relay answered with before closing.
fn exchange(addr: &str, bytes: &[u8]) -> Result<Vec<Message>, Box<dyn std::error::Error>> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    // The relay may refuse (and stop reading) before everything is written.
    let _ = stream.write_all(bytes);
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let mut got = Vec::new();
    stream.read_to_end(&mut got)?;
    let mut messages = Vec::new();
    // One connection's frames: a later Want is a diff against the one before.
    let mut incoming = codec::Incoming::default();
    let mut rest = &got[..];
    while !rest.is_empty() {
        let len = codec::message_payload_len(rest, MAX_MESSAGE_PAYLOAD)?;
        let (frame, tail) = rest.split_at(HEADER_LEN + len);
        messages.push(codec::decode_message_on(frame, MAX_MESSAGE_PAYLOAD, &mut incoming)?.1);
        rest = tail;
    }
    Ok(messages)
}

fn hello(token: Option<&str>, site_byte: u8) -> Vec<u8> {
    encode_message(&Message::Hello(Hello {
        site: site(site_byte),
        schema: "inventory".into(),
        schema_version: 1,
        token: token.map(str::to_string),
        accepts_changes: true,
        live: false,
        authority: false,
        namespace: None,
        compression: vec![],
    }))
}

fn notice(messages: &[Message]) -> Option<(NoticeCode, String)> {
    messages.iter().find_map(|m| match m {
        Message::Notice(n) => Some((n.code, n.message.clone())),
        _ => None,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_gets_a_clear_error_and_the_relay_keeps_serving() -> TestResult {
    let dir = tempfile::tempdir()?;
    let relay = Server::relay(dir.path(), "127.0.0.1:0")?;
    let addr = relay.addr.clone();
    // A well-behaved client stays connected throughout.
    let good = client(dir.path(), 1)?;
    let (stop, shutdown) = watch::channel(false);
    let live = tokio::spawn(sync_continuously(
        good.clone(),
        addr.clone(),
        config("rw-token-1"),
        Backoff::default(),
        shutdown,
    ));

    let valid = hello(Some("rw-token-2"), 42);
    let mut corrupt = valid.clone();
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0x01;
    let mut newer = valid.clone();
    newer[4..6].copy_from_slice(&(codec::PROTOCOL_VERSION + 1).to_le_bytes());
    let mut oversized_hello = valid[..HEADER_LEN].to_vec();
    oversized_hello[6..10].copy_from_slice(&(100u32 << 20).to_le_bytes());
    let mut oversized_after_hello = valid.clone();
    let mut big_header = valid[..HEADER_LEN].to_vec();
    big_header[6..10].copy_from_slice(&(2u32 << 20).to_le_bytes());
    oversized_after_hello.extend_from_slice(&big_header);
    let random: Vec<u8> = (0..500u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let changes = {
        let source = client(dir.path(), 7)?;
        insert(&source, "intruder")?;
        let cs = source.lock().changes_since(&meldb::VersionVector::new())?;
        encode_message(&Message::Changes(Batch {
            seq: 1,
            changes: cs,
        }))
    };
    let mut ro_writes = hello(Some("ro-token-1"), 43);
    ro_writes.extend_from_slice(&changes);

    let cases: Vec<(&str, Vec<u8>, NoticeCode, &str)> = vec![
        (
            "truncated",
            valid[..valid.len() - 3].to_vec(),
            NoticeCode::Protocol,
            "truncated",
        ),
        ("corrupted", corrupt, NoticeCode::Protocol, "checksum"),
        ("newer version", newer, NoticeCode::Protocol, "newer"),
        (
            "oversized first frame",
            oversized_hello,
            NoticeCode::Protocol,
            "exceeds the limit",
        ),
        (
            "oversized later frame",
            oversized_after_hello,
            NoticeCode::Protocol,
            "exceeds the limit",
        ),
        ("random bytes", random, NoticeCode::Protocol, "magic"),
        (
            "changes before hello",
            changes.clone(),
            NoticeCode::Protocol,
            "before Hello",
        ),
        (
            "missing token",
            hello(None, 44),
            NoticeCode::Unauthorized,
            "no token",
        ),
        (
            "wrong token",
            hello(Some("guess-guess"), 45),
            NoticeCode::Unauthorized,
            "unknown token",
        ),
        (
            "read-only token writes",
            ro_writes,
            NoticeCode::ReadOnly,
            "read-only",
        ),
    ];
    for (name, bytes, code, needle) in cases {
        let answer = exchange(&addr, &bytes).map_err(|e| format!("{name}: {e}"))?;
        let (got, message) =
            notice(&answer).ok_or_else(|| format!("{name}: no notice in {answer:?}"))?;
        assert_eq!(got, code, "{name}: {message}");
        assert!(
            message.contains(needle),
            "{name}: {message:?} lacks {needle:?}"
        );
        if code == NoticeCode::Unauthorized {
            assert!(
                answer.iter().all(|m| matches!(m, Message::Notice(_))),
                "{name}: the relay said more than no: {answer:?}"
            );
        }
    }

    // The good client still syncs, and nothing of the intruder's arrived.
    insert(&good, "after-the-attacks")?;
    let probe = client(dir.path(), 8)?;
    let start = Instant::now();
    while !has(&probe, "after-the-attacks")? {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the good client's write never reached the relay"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
        sync_once_tcp(&probe, &addr, config("ro-token-1")).await?;
    }
    assert!(!has(&probe, "intruder")?);
    stop.send(true)?;
    live.await?;
    Ok(())
}
