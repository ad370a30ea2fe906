//! The relay tests of `net_relay.rs`, each run over every transport from
//! one parameterized test: TCP and TLS in every run, WebSocket and
//! WebSocket over TLS too with `MELDB_FULL_TRANSPORTS=1` (they have end
//! to end tests of their own in `net_tls.rs`). Real sockets on 127.0.0.1
//! against the `meldb` binary; TLS with a CA made in the test.
#![cfg(all(feature = "tls", feature = "websocket"))]

mod common;
mod tls_kit;

use common::{site, TestResult};
use meldb::codec::{self, encode_message, HEADER_LEN, MAX_MESSAGE_PAYLOAD};
use meldb::sync::message::{Batch, Hello, Message, NoticeCode};
use meldb::sync::{
    sync_continuously_url, sync_once_url, Backoff, ClientTls, Connector, PeerUrl, SessionConfig,
    SharedStore,
};
use meldb::StoreOptions;
use std::path::Path;
use std::time::{Duration, Instant};
use tls_kit::{cli, relay, strings, transports, Pki, Server, Transport};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

fn client(dir: &Path, name: &str, n: u8) -> meldb::Result<SharedStore> {
    Ok(SharedStore::new(
        StoreOptions::new()
            .site_id(site(n))
            .open(dir.join(format!("{name}{n}.db")), &common::inventory())?,
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

/// A directory with a CA and a relay certificate for 127.0.0.1.
fn setup() -> Result<(tempfile::TempDir, Pki, Connector), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let pki = Pki::new(dir.path(), "relay", &["127.0.0.1", "localhost"])?;
    let connector = Connector::new().tls(ClientTls::with_ca_file(&pki.ca)?);
    Ok((dir, pki, connector))
}

#[test]
fn an_offline_client_catches_up_over_each_transport() -> TestResult {
    for t in transports() {
        offline_client_catches_up(t).map_err(|e| format!("over {}: {e}", t.scheme))?;
    }
    Ok(())
}

fn offline_client_catches_up(t: Transport) -> TestResult {
    let (dir, pki, _) = setup()?;
    let d = dir.path();
    let server = relay(d, &t.server_args(&pki), 1)?;
    cli(d, &strings(&["init", "--db", "a.db"]))?;
    cli(d, &strings(&["init", "--db", "c.db"]))?;
    let sync = |db: &str, token: &str| {
        let mut args = strings(&["sync", "--db", db, "--peer", server.url(), "--token", token]);
        args.extend(t.client_args(&pki));
        cli(d, &args)
    };
    assert_eq!(
        sync("c.db", "rw-token-3")?.trim(),
        "sent 0 rows, received 0 rows (0 changed this replica)"
    );
    for i in 0..10 {
        cli(
            d,
            &strings(&["insert", "--db", "a.db", "item", &format!("sku=A{i}")]),
        )?;
    }
    assert_eq!(
        sync("a.db", "rw-token-1")?.trim(),
        "sent 10 rows, received 0 rows (0 changed this replica)"
    );
    assert_eq!(
        sync("c.db", "rw-token-3")?.trim(),
        "sent 0 rows, received 10 rows (10 changed this replica)"
    );
    for i in 10..13 {
        cli(
            d,
            &strings(&["insert", "--db", "a.db", "item", &format!("sku=A{i}")]),
        )?;
    }
    cli(
        d,
        &strings(&[
            "increment",
            "--db",
            "a.db",
            "item",
            "--key",
            "A0",
            "stock",
            "2",
        ]),
    )?;
    sync("a.db", "rw-token-1")?;
    assert_eq!(
        sync("c.db", "rw-token-3")?.trim(),
        "sent 0 rows, received 4 rows (4 changed this replica)"
    );
    assert_eq!(
        cli(d, &strings(&["digest", "--db", "a.db"]))?,
        cli(d, &strings(&["digest", "--db", "c.db"]))?
    );
    Ok(())
}

#[test]
fn two_replicas_sync_directly_with_serve_and_sync_over_each_transport() -> TestResult {
    for t in transports() {
        serve_and_sync(t).map_err(|e| format!("over {}: {e}", t.scheme))?;
    }
    Ok(())
}

fn serve_and_sync(t: Transport) -> TestResult {
    let (dir, pki, _) = setup()?;
    let d = dir.path();
    cli(d, &strings(&["init", "--db", "a.db"]))?;
    cli(d, &strings(&["init", "--db", "b.db"]))?;
    cli(
        d,
        &strings(&["insert", "--db", "a.db", "item", "sku=A1", "stock=5"]),
    )?;
    cli(
        d,
        &strings(&["insert", "--db", "b.db", "item", "sku=B1", "stock=7"]),
    )?;
    let mut cmd = tls_kit::meldb();
    cmd.current_dir(d)
        .args(["serve", "--db", "a.db"])
        .args(t.server_args(&pki));
    let server = Server::start(cmd, 1)?;
    let mut args = strings(&["sync", "--db", "b.db", "--peer", server.url()]);
    args.extend(t.client_args(&pki));
    assert_eq!(
        cli(d, &args)?.trim(),
        "sent 1 rows, received 1 rows (1 changed this replica)"
    );
    cli(
        d,
        &strings(&[
            "increment",
            "--db",
            "b.db",
            "item",
            "--key",
            "A1",
            "stock",
            "-2",
        ]),
    )?;
    assert_eq!(
        cli(d, &args)?.trim(),
        "sent 1 rows, received 0 rows (0 changed this replica)"
    );
    drop(server);
    assert_eq!(
        cli(d, &strings(&["digest", "--db", "a.db"]))?,
        cli(d, &strings(&["digest", "--db", "b.db"]))?
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_clients_and_a_relay_killed_mid_traffic_over_each_transport() -> TestResult {
    for t in transports() {
        killed_mid_traffic(t)
            .await
            .map_err(|e| format!("over {}: {e}", t.scheme))?;
    }
    Ok(())
}

async fn killed_mid_traffic(t: Transport) -> TestResult {
    let (dir, pki, connector) = setup()?;
    let d = dir.path();
    let relay_args = |listen: &str| {
        let mut args = t.server_args(&pki);
        args[1] = listen.to_string();
        args
    };
    let server = relay(d, &relay_args(&t.listen()), 1)?;
    let url: PeerUrl = server.url().parse()?;
    let clients = [client(d, "c", 1)?, client(d, "c", 2)?, client(d, "c", 3)?];
    let (stop, shutdown) = watch::channel(false);
    let backoff = Backoff {
        initial: Duration::from_millis(20),
        max: Duration::from_millis(200),
    };
    let mut live = Vec::new();
    for (i, c) in clients.iter().enumerate().skip(1) {
        live.push(tokio::spawn(sync_continuously_url(
            c.clone(),
            url.clone(),
            connector.clone(),
            config(&format!("rw-token-{}", i + 1)),
            backoff,
            shutdown.clone(),
        )));
    }
    for (i, c) in clients.iter().enumerate() {
        insert(c, &format!("c{}-first", i + 1))?;
    }
    let start = Instant::now();
    loop {
        sync_once_url(&clients[0], &url, config("rw-token-1"), &connector).await?;
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

    // Traffic from every client; the relay dies (SIGKILL) during it.
    let killer = std::thread::spawn(move || {
        let mut server = server;
        std::thread::sleep(Duration::from_millis(300));
        let _ = server.child.kill();
        let _ = server.child.wait();
    });
    let (mut acked, mut written) = (0, 0);
    loop {
        insert(&clients[0], &format!("w{written}"))?;
        insert(&clients[1 + written % 2], &format!("live{written}"))?;
        written += 1;
        match sync_once_url(&clients[0], &url, config("rw-token-1"), &connector).await {
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

    // Restarted on the same port with the same database.
    let server = {
        let start = Instant::now();
        loop {
            match relay(d, &relay_args(&url.to_string()), 1) {
                Ok(s) => break s,
                Err(_) if start.elapsed() < Duration::from_secs(10) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => return Err(e),
            }
        }
    };
    let url: PeerUrl = server.url().parse()?;
    let fresh = client(d, "fresh", 9)?;
    sync_once_url(&fresh, &url, config("ro-token-1"), &connector).await?;
    for i in 0..acked {
        assert!(
            has(&fresh, &format!("w{i}"))?,
            "acknowledged write w{i} lost"
        );
    }
    let expected = 3 + 2 * written as i64;
    let start = Instant::now();
    loop {
        sync_once_url(&clients[0], &url, config("rw-token-1"), &connector).await?;
        let counts = clients
            .iter()
            .map(count)
            .collect::<meldb::Result<Vec<_>>>()?;
        let digests = clients
            .iter()
            .map(|c| c.lock().digest())
            .collect::<meldb::Result<Vec<_>>>()?;
        if counts == [expected; 3] && digests.iter().all(|x| *x == digests[0]) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no convergence after the restart: {counts:?}, {expected} expected"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.send(true)?;
    for task in live {
        task.await?;
    }
    Ok(())
}

/// Sends `bytes` over a fresh connection of `url`'s transport, closes the
/// sending side and returns every message the relay answered with.
async fn exchange(
    url: &PeerUrl,
    connector: &Connector,
    bytes: &[u8],
) -> Result<Vec<Message>, Box<dyn std::error::Error>> {
    let mut stream = connector.connect_stream(url).await?;
    // The relay may refuse (and stop reading) before everything is written.
    let _ = stream.write_all(bytes).await;
    let _ = stream.flush().await;
    // WebSocket has no half-close: a peer that got our close message may
    // send nothing more, so there the relay closes first.
    if !url.scheme().is_websocket() {
        let _ = stream.shutdown().await;
    }
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk)).await? {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            // A peer gone without TLS close_notify or a WebSocket close:
            // what arrived is what it said.
            Err(_) => break,
        }
    }
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_gets_a_clear_error_over_each_transport() -> TestResult {
    for t in transports() {
        hostile_input(t)
            .await
            .map_err(|e| format!("over {}: {e}", t.scheme))?;
    }
    Ok(())
}

async fn hostile_input(t: Transport) -> TestResult {
    let (dir, pki, connector) = setup()?;
    let server = relay(dir.path(), &t.server_args(&pki), 1)?;
    let url: PeerUrl = server.url().parse()?;
    let good = client(dir.path(), "c", 1)?;
    let (stop, shutdown) = watch::channel(false);
    let live = tokio::spawn(sync_continuously_url(
        good.clone(),
        url.clone(),
        connector.clone(),
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
    let random: Vec<u8> = (0..500u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let changes = {
        let source = client(dir.path(), "intruder", 7)?;
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
        if name == "truncated" && t.is_websocket() {
            // Truncation shows only at the end of the stream, and after a
            // WebSocket close message nothing may be sent back.
            continue;
        }
        let answer = exchange(&url, &connector, &bytes)
            .await
            .map_err(|e| format!("{name}: {e}"))?;
        let (got, message) = answer
            .iter()
            .find_map(|m| match m {
                Message::Notice(n) => Some((n.code, n.message.clone())),
                _ => None,
            })
            .ok_or_else(|| format!("{name}: no notice in {answer:?}"))?;
        assert_eq!(got, code, "{name}: {message}");
        assert!(
            message.contains(needle),
            "{name}: {message:?} lacks {needle:?}"
        );
    }

    // The good client still syncs; nothing of the intruder's arrived.
    insert(&good, "after-the-attacks")?;
    let probe = client(dir.path(), "probe", 8)?;
    let start = Instant::now();
    while !has(&probe, "after-the-attacks")? {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the good client's write never reached the relay"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
        sync_once_url(&probe, &url, config("ro-token-1"), &connector).await?;
    }
    assert!(!has(&probe, "intruder")?);
    stop.send(true)?;
    live.await?;
    Ok(())
}
