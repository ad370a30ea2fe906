//! TLS, WebSocket and WebSocket over TLS on real sockets on 127.0.0.1,
//! with a CA and certificates made in the test (rcgen): end to end through
//! the library (one relay, a listener per transport) and through the CLI
//! (`meldb relay` and `meldb sync`); and every way a transport can be
//! wrong failing with an error that says so while the relay serves the
//! others: plain TCP on a TLS or WebSocket port, TLS on a plain port, an
//! untrusted certificate, a wrong host name, bad PEM files, a WebSocket
//! text message, a client that never finishes its handshake.
#![cfg(all(feature = "tls", feature = "websocket"))]

mod common;
mod tls_kit;

use common::{inventory, site, TestResult};
use meldb::sync::{
    sync_continuously_url, sync_once_tcp, sync_once_url, Backoff, ClientTls, Connector,
    ListenOptions, PeerUrl, Relay, RelayConfig, ServerTls, SessionConfig, SharedStore, SyncError,
    Tokens, UrlListener,
};
use meldb::StoreOptions;
use std::path::Path;
use std::time::{Duration, Instant};
use tls_kit::{cli, cli_fails, relay, strings, Pki};
use tokio::io::AsyncReadExt;
use tokio::sync::watch;

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

fn skus(store: &SharedStore) -> meldb::Result<Vec<String>> {
    let guard = store.lock();
    let mut stmt = guard.conn().prepare("SELECT sku FROM item ORDER BY sku")?;
    let rows = stmt.query_map([], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

fn tokens() -> Result<Tokens, SyncError> {
    Tokens::from_toml_str(tls_kit::TOKENS, "tokens.toml")
}

fn token(t: &str) -> SessionConfig {
    SessionConfig::default().token(Some(t.into()))
}

/// A relay in this process on one port per URL; stops when `stop` turns
/// true.
async fn start_relay(
    urls: &[&str],
    options: ListenOptions,
) -> Result<(Vec<PeerUrl>, watch::Sender<bool>, SharedStore), Box<dyn std::error::Error>> {
    let urls = urls
        .iter()
        .map(|u| u.parse())
        .collect::<Result<Vec<PeerUrl>, _>>()?;
    let listener = UrlListener::bind(&urls, &options).await?;
    let bound = listener.local_urls();
    let store = shared(100)?;
    let relay = Relay::new(
        store.clone(),
        listener,
        RelayConfig::default().tokens(tokens()?),
    );
    let (stop, shutdown) = watch::channel(false);
    tokio::spawn(relay.run(shutdown));
    Ok((bound, stop, store))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_tls_ws_and_wss_end_to_end_through_the_library() -> TestResult {
    let dir = tempfile::tempdir()?;
    let pki = Pki::new(dir.path(), "relay", &["127.0.0.1", "localhost"])?;
    let options = ListenOptions::new().tls(ServerTls::from_pem_files(&pki.cert, &pki.key)?);
    let (urls, stop, relay_store) = start_relay(
        &[
            "tcp://127.0.0.1:0",
            "tls://127.0.0.1:0",
            "ws://127.0.0.1:0/sync",
            "wss://127.0.0.1:0/sync",
        ],
        options,
    )
    .await?;
    let connector = Connector::new().tls(ClientTls::with_ca_file(&pki.ca)?);
    let clients = [shared(1)?, shared(2)?, shared(3)?, shared(4)?];
    for (i, (client, url)) in clients.iter().zip(&urls).enumerate() {
        insert(client, &format!("over-{}", url.scheme()))?;
        let report = sync_once_url(
            client,
            url,
            token(&format!("rw-token-{}", 1 + i % 3)),
            &connector,
        )
        .await
        .map_err(|e| format!("{url}: {e}"))?;
        assert_eq!(report.stats.rows_sent, 1, "{url}");
    }
    // A second round brings every client what the others sent.
    for (client, url) in clients.iter().zip(&urls) {
        sync_once_url(client, url, token("ro-token-1"), &connector).await?;
    }
    let all = vec!["over-tcp", "over-tls", "over-ws", "over-wss"];
    assert_eq!(skus(&relay_store)?, all);
    for client in &clients {
        assert_eq!(skus(client)?, all);
        assert_eq!(client.lock().digest()?, relay_store.lock().digest()?);
    }

    // A live client over wss receives a write pushed over ws at once.
    let live = shared(5)?;
    let (live_stop, live_shutdown) = watch::channel(false);
    let task = tokio::spawn(sync_continuously_url(
        live.clone(),
        urls[3].clone(),
        connector.clone(),
        token("ro-token-1"),
        Backoff::default(),
        live_shutdown,
    ));
    insert(&clients[2], "pushed-over-ws")?;
    sync_once_url(&clients[2], &urls[2], token("rw-token-3"), &connector).await?;
    let start = Instant::now();
    while !skus(&live)?.contains(&"pushed-over-ws".to_string()) {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the live wss client never received the write"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    live_stop.send(true)?;
    task.await?;
    stop.send(true)?;
    Ok(())
}

fn message(result: Result<impl std::fmt::Debug, SyncError>) -> String {
    match result {
        Ok(ok) => format!("unexpected success: {ok:?}"),
        Err(e) => e.to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_transports_and_certificates_fail_clearly_and_the_relay_serves_the_rest() -> TestResult
{
    let dir = tempfile::tempdir()?;
    let pki = Pki::new(dir.path(), "relay", &["127.0.0.1", "localhost"])?;
    let stranger = Pki::new(dir.path(), "stranger", &["127.0.0.1"])?;
    let elsewhere = Pki::new(dir.path(), "elsewhere", &["relay.elsewhere.example"])?;
    let options = ListenOptions::new().tls(ServerTls::from_pem_files(&pki.cert, &pki.key)?);
    let (urls, stop, _relay_store) = start_relay(
        &[
            "tcp://127.0.0.1:0",
            "tls://127.0.0.1:0",
            "ws://127.0.0.1:0/sync",
            "wss://127.0.0.1:0/sync",
        ],
        options,
    )
    .await?;
    let (tcp, tls, ws, wss) = (&urls[0], &urls[1], &urls[2], &urls[3]);
    let trusted = Connector::new().tls(ClientTls::with_ca_file(&pki.ca)?);
    let untrusted = Connector::new().tls(ClientTls::with_ca_file(&stranger.ca)?);
    let client = shared(1)?;
    insert(&client, "good")?;

    // Plain TCP on the TLS and WebSocket ports: told which URL to use.
    for url in [tls, ws, wss] {
        let err = message(sync_once_tcp(&client, &url.authority(), token("rw-token-1")).await);
        let scheme = url.scheme().as_str();
        assert!(
            err.contains(&format!("this port speaks {scheme}://, not plain TCP")),
            "{url}: {err}"
        );
    }
    // TLS on the plain TCP port, and on the ws port.
    for url in [tcp, ws] {
        let plain: PeerUrl = format!("tls://{}", url.authority()).parse()?;
        let err = message(sync_once_url(&client, &plain, token("rw-token-1"), &trusted).await);
        assert!(
            err.contains("does not answer in TLS")
                || err.contains("closed the connection during the handshake"),
            "{plain}: {err}"
        );
        assert!(err.contains(&plain.to_string()), "names the URL: {err}");
    }
    // WebSocket on the plain TCP port.
    let ws_on_tcp: PeerUrl = format!("ws://{}/sync", tcp.authority()).parse()?;
    let err = message(sync_once_url(&client, &ws_on_tcp, token("rw-token-1"), &trusted).await);
    assert!(err.contains("WebSocket with ws://"), "{err}");
    // A certificate no trusted CA signed, over tls and wss.
    for url in [tls, wss] {
        let err = message(sync_once_url(&client, url, token("rw-token-1"), &untrusted).await);
        assert!(
            err.contains("not signed by a CA this client trusts")
                && err.contains("stranger-ca.pem"),
            "{url}: {err}"
        );
    }
    // The system's roots do not know the test CA either.
    if let Ok(system) = ClientTls::system_roots() {
        let err = message(
            sync_once_url(
                &client,
                tls,
                token("rw-token-1"),
                &Connector::new().tls(system),
            )
            .await,
        );
        assert!(err.contains("not signed by a CA"), "{err}");
    }
    // A WebSocket path the listener does not serve.
    let wrong_path: PeerUrl = format!("ws://{}/elsewhere", ws.authority()).parse()?;
    let err = message(sync_once_url(&client, &wrong_path, token("rw-token-1"), &trusted).await);
    assert!(err.contains("404") && err.contains("/elsewhere"), "{err}");

    // A certificate for another name.
    let (other_urls, other_stop, _) = start_relay(
        &["tls://127.0.0.1:0"],
        ListenOptions::new().tls(ServerTls::from_pem_files(&elsewhere.cert, &elsewhere.key)?),
    )
    .await?;
    let by_ca = Connector::new().tls(ClientTls::with_ca_file(&elsewhere.ca)?);
    let err = message(sync_once_url(&client, &other_urls[0], token("rw-token-1"), &by_ca).await);
    assert!(
        err.contains("not valid for the name \"127.0.0.1\""),
        "{err}"
    );
    other_stop.send(true)?;

    // Through all of that the relay kept serving: each transport syncs.
    for url in [tcp, tls, ws, wss] {
        let report = sync_once_url(&client, url, token("rw-token-1"), &trusted)
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        assert_eq!(report.stats.rows_acked, report.stats.rows_sent);
    }
    stop.send(true)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_client_holds_up_no_one_and_is_dropped_after_the_handshake_timeout() -> TestResult
{
    let dir = tempfile::tempdir()?;
    let pki = Pki::new(dir.path(), "relay", &["127.0.0.1"])?;
    let options = ListenOptions::new()
        .tls(ServerTls::from_pem_files(&pki.cert, &pki.key)?)
        .handshake_timeout(Duration::from_millis(300));
    let (urls, stop, _) =
        start_relay(&["tls://127.0.0.1:0", "wss://127.0.0.1:0/"], options).await?;
    // Connections that never say anything, on both ports.
    let mut silent = Vec::new();
    for url in &urls {
        for _ in 0..3 {
            silent.push(tokio::net::TcpStream::connect(url.authority()).await?);
        }
    }
    // Real clients are served while they hang.
    let connector = Connector::new().tls(ClientTls::with_ca_file(&pki.ca)?);
    let client = shared(1)?;
    insert(&client, "served")?;
    for url in &urls {
        let report = sync_once_url(&client, url, token("rw-token-1"), &connector).await?;
        assert_eq!(report.stats.rows_acked, report.stats.rows_sent);
    }
    // The relay closes each once its handshake deadline passed (the read
    // ends; the timeout here only stops a broken test).
    for mut s in silent {
        let mut buf = [0u8; 16];
        let n = tokio::time::timeout(Duration::from_secs(30), s.read(&mut buf)).await??;
        assert_eq!(n, 0, "the relay sent bytes to a silent client");
    }
    stop.send(true)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_text_message_is_a_protocol_error() -> TestResult {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let (urls, stop, _) = start_relay(&["ws://127.0.0.1:0/sync"], ListenOptions::new()).await?;
    let tcp = tokio::net::TcpStream::connect(urls[0].authority()).await?;
    let (mut ws, _) = tokio_tungstenite::client_async(urls[0].to_string(), tcp).await?;
    ws.send(Message::text("hello, relay")).await?;
    let mut notice = None;
    while let Some(message) = ws.next().await {
        if let Message::Binary(bytes) = message? {
            notice = Some(meldb::codec::decode_message(&bytes, 1 << 20)?);
            break;
        }
    }
    match notice {
        Some(meldb::sync::Message::Notice(n)) => {
            assert_eq!(n.code, meldb::sync::NoticeCode::Protocol);
            assert!(n.message.contains("text message"), "{}", n.message);
        }
        other => return Err(format!("expected a notice, got {other:?}").into()),
    }
    stop.send(true)?;
    Ok(())
}

#[test]
fn unreadable_and_invalid_pem_files_are_named() -> TestResult {
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let pki = Pki::new(d, "relay", &["127.0.0.1"])?;
    let missing = d.join("missing.pem");
    let garbage = d.join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n")?;
    let broken = d.join("broken.pem");
    std::fs::write(&broken, "-----BEGIN CERTIFICATE-----\nMIIB!!!\n")?;
    let cases: Vec<(Result<ServerTls, _>, &Path, &str)> = vec![
        (
            ServerTls::from_pem_files(&missing, &pki.key),
            &missing,
            "cannot read it",
        ),
        (
            ServerTls::from_pem_files(&garbage, &pki.key),
            &garbage,
            "no CERTIFICATE in it",
        ),
        (
            ServerTls::from_pem_files(&broken, &pki.key),
            &broken,
            "not valid PEM",
        ),
        (
            ServerTls::from_pem_files(&pki.cert, &missing),
            &missing,
            "TLS private key file",
        ),
        (
            ServerTls::from_pem_files(&pki.cert, &pki.cert),
            &pki.cert,
            "no PRIVATE KEY in it",
        ),
    ];
    for (result, path, needle) in cases {
        let err = result
            .map(|_| ())
            .expect_err("bad PEM accepted")
            .to_string();
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(err.contains(needle), "{needle}: {err}");
    }
    let other = Pki::new(d, "other", &["127.0.0.1"])?;
    let err = ServerTls::from_pem_files(&pki.cert, &other.key)
        .map(|_| ())
        .expect_err("a key that is not the certificate's")
        .to_string();
    assert!(
        err.contains("relay-cert.pem") && err.contains("other-key.pem"),
        "{err}"
    );
    for (path, needle) in [(&missing, "cannot read it"), (&garbage, "no CERTIFICATE")] {
        let err = ClientTls::with_ca_file(path)
            .map(|_| ())
            .expect_err("bad CA file")
            .to_string();
        assert!(
            err.starts_with("CA certificate file") && err.contains(needle),
            "{err}"
        );
    }

    // The same through the CLI: exit 1 before listening, the file named.
    cli(d, &strings(&["init", "--db", "a.db"]))?;
    let err = cli_fails(
        d,
        &strings(&[
            "serve",
            "--db",
            "a.db",
            "--listen",
            "tls://127.0.0.1:0",
            "--tls-cert",
            "missing.pem",
            "--tls-key",
            "relay-key.pem",
        ]),
    )?;
    assert!(
        err.contains("TLS certificate file missing.pem: cannot read it"),
        "{err}"
    );
    let err = cli_fails(
        d,
        &strings(&["serve", "--db", "a.db", "--listen", "wss://127.0.0.1:0/"]),
    )?;
    assert!(
        err.contains("needs a certificate and key (--tls-cert FILE --tls-key FILE)"),
        "{err}"
    );
    let err = cli_fails(
        d,
        &strings(&[
            "sync",
            "--db",
            "a.db",
            "--peer",
            "tls://127.0.0.1:1",
            "--ca",
            "garbage.pem",
        ]),
    )?;
    assert!(
        err.contains("CA certificate file garbage.pem: no CERTIFICATE"),
        "{err}"
    );
    let err = cli_fails(
        d,
        &strings(&["sync", "--db", "a.db", "--peer", "http://relay:80"]),
    )?;
    assert!(err.contains("unknown scheme \"http\""), "{err}");
    Ok(())
}

#[test]
fn websocket_and_websocket_over_tls_through_the_cli() -> TestResult {
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let pki = Pki::new(d, "relay", &["127.0.0.1", "localhost"])?;
    let server = relay(
        d,
        &strings(&[
            "--listen",
            "ws://127.0.0.1:0/sync",
            "--listen",
            "wss://127.0.0.1:0/sync",
            "--tls-cert",
            &pki.cert.display().to_string(),
            "--tls-key",
            &pki.key.display().to_string(),
        ]),
        2,
    )?;
    let (ws, wss) = (server.urls[0].clone(), server.urls[1].clone());
    assert!(
        ws.starts_with("ws://127.0.0.1:") && ws.ends_with("/sync"),
        "{ws}"
    );
    assert!(
        wss.starts_with("wss://127.0.0.1:") && wss.ends_with("/sync"),
        "{wss}"
    );
    for db in ["a.db", "b.db"] {
        cli(d, &strings(&["init", "--db", db]))?;
    }
    cli(
        d,
        &strings(&["insert", "--db", "a.db", "item", "sku=A1", "stock=5"]),
    )?;
    // The token from a file over ws; from the environment over wss.
    std::fs::write(d.join("till-1.token"), "rw-token-1\n")?;
    let out = cli(
        d,
        &strings(&[
            "sync",
            "--db",
            "a.db",
            "--peer",
            &ws,
            "--token-file",
            "till-1.token",
        ]),
    )?;
    assert_eq!(
        out.trim(),
        "sent 1 rows, received 0 rows (0 changed this replica)"
    );
    let ca = pki.ca.display().to_string();
    let out = tls_kit::meldb()
        .current_dir(d)
        .env("TILL_2_TOKEN", "rw-token-2")
        .args([
            "sync",
            "--db",
            "b.db",
            "--peer",
            &wss,
            "--ca",
            &ca,
            "--token-env",
            "TILL_2_TOKEN",
        ])
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8(out.stdout)?.trim(),
        "sent 0 rows, received 1 rows (1 changed this replica)"
    );
    assert_eq!(
        cli(d, &strings(&["digest", "--db", "a.db"]))?,
        cli(d, &strings(&["digest", "--db", "b.db"]))?
    );

    // Token sources: one at most, none empty, a variable that is set.
    std::fs::write(d.join("empty.token"), "\n")?;
    let err = cli_fails(
        d,
        &strings(&[
            "sync",
            "--db",
            "a.db",
            "--peer",
            &ws,
            "--token-file",
            "empty.token",
        ]),
    )?;
    assert!(
        err.contains("token file empty.token holds no token"),
        "{err}"
    );
    let err = cli_fails(
        d,
        &strings(&[
            "sync",
            "--db",
            "a.db",
            "--peer",
            &ws,
            "--token-env",
            "MELDB_TEST_NO_SUCH_VAR",
        ]),
    )?;
    assert!(
        err.contains("--token-env MELDB_TEST_NO_SUCH_VAR: the variable is not set"),
        "{err}"
    );
    let out = tls_kit::meldb()
        .current_dir(d)
        .args([
            "sync",
            "--db",
            "a.db",
            "--peer",
            &ws,
            "--token",
            "x",
            "--token-file",
            "f",
        ])
        .output()?;
    assert_eq!(
        out.status.code(),
        Some(2),
        "conflicting token flags are a usage error"
    );
    // A wrong CA through the CLI.
    let stranger = Pki::new(d, "stranger", &["127.0.0.1"])?;
    let err = cli_fails(
        d,
        &strings(&[
            "sync",
            "--db",
            "a.db",
            "--peer",
            &wss,
            "--ca",
            &stranger.ca.display().to_string(),
            "--token",
            "rw-token-1",
        ]),
    )?;
    assert!(
        err.contains("not signed by a CA this client trusts"),
        "{err}"
    );
    Ok(())
}
