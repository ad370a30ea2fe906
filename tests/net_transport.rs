//! The transports in-process: an in-memory pair, and a relay on
//! 127.0.0.1 with live clients (the relay as a library, as an app embeds
//! it). The relay as a separate process is `tests/net_relay.rs`.

mod common;

use common::{inventory, site, TestResult};
use meldb::{
    codec::MAX_MESSAGE_PAYLOAD,
    sync::{
        accept_once, sync_continuously, sync_once, Backoff, Connection, Grant, Relay, RelayConfig,
        SessionConfig, SharedStore,
    },
    StoreOptions,
};
use std::{
    sync::Arc,
    time::{Duration, Instant},
};
use tokio::sync::watch;

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

fn digest(store: &SharedStore) -> meldb::Result<[u8; 32]> {
    store.lock().digest()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_pair_syncs_both_ways_in_batches() -> TestResult {
    let (a, b) = (shared(1)?, shared(2)?);
    insert(&a, "a", 0..300)?;
    insert(&b, "b", 0..120)?;
    let (mut ca, mut cb) = Connection::pair(MAX_MESSAGE_PAYLOAD);
    let config = SessionConfig::default().batch_rows(50);
    let b2 = b.clone();
    let server = tokio::spawn(async move {
        accept_once(
            &b2,
            &mut cb,
            SessionConfig::default().batch_rows(50),
            Arc::new(|_| Some(Grant::read_write())),
        )
        .await
    });
    let stats = sync_once(&a, &mut ca, config).await?.stats;
    let server_stats = server.await??.stats;
    assert_eq!((stats.rows_sent, stats.rows_received), (300, 120));
    assert_eq!(stats.batches_sent, 6);
    assert_eq!(server_stats.rows_applied, 300);
    assert_eq!(digest(&a)?, digest(&b)?);
    assert!(ca.counts().sent() > 0 && ca.counts().received() > 0);
    Ok(())
}

async fn wait_until(what: &str, mut done: impl FnMut() -> meldb::Result<bool>) -> TestResult {
    let start = Instant::now();
    while !done()? {
        if start.elapsed() > Duration::from_secs(20) {
            return Err(format!("timed out waiting for {what}").into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_clients_see_each_others_writes_through_an_embedded_relay() -> TestResult {
    let relay_store = shared(10)?;
    let relay = Relay::bind(relay_store.clone(), "127.0.0.1:0", RelayConfig::default()).await?;
    let addr = relay.local_addr()?.to_string();
    let (stop, shutdown) = watch::channel(false);
    let server = tokio::spawn(relay.run(shutdown.clone()));

    let clients = [shared(1)?, shared(2)?, shared(3)?];
    let mut tasks = Vec::new();
    for c in &clients {
        tasks.push(tokio::spawn(sync_continuously(
            c.clone(),
            addr.clone(),
            SessionConfig::default(),
            Backoff::default(),
            shutdown.clone(),
        )));
    }
    for (i, c) in clients.iter().enumerate() {
        insert(c, &format!("c{i}-"), 0..20)?;
    }
    wait_until("every write everywhere", || {
        Ok(clients
            .iter()
            .map(rows)
            .collect::<meldb::Result<Vec<_>>>()?
            == [60, 60, 60])
    })
    .await?;

    // One more write reaches the others within a few milliseconds.
    let start = Instant::now();
    insert(&clients[0], "late", 0..1)?;
    wait_until("the late write", || Ok(rows(&clients[2])? == 61)).await?;
    let latency = start.elapsed();
    assert!(latency < Duration::from_secs(2), "{latency:?}");

    wait_until("equal digests", || {
        let d = digest(&relay_store)?;
        Ok(clients
            .iter()
            .map(digest)
            .collect::<meldb::Result<Vec<_>>>()?
            .iter()
            .all(|x| *x == d))
    })
    .await?;
    stop.send(true)?;
    server.await??;
    // Every client stops on shutdown (whether its own signal or the
    // relay's notice reached it first).
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(10), t).await??;
    }
    Ok(())
}

const SEATS: &str = r#"
name = "seats"
version = 1
[[table]]
name = "seat"
primary_key = ["seat"]
authority = true
[[table.column]]
name = "seat"
type = "text"
[[table.column]]
name = "booked_by"
type = "text"
"#;

/// The app opens the relay's store itself, registers its mutators and a
/// resolver on it, and serves it: the relay is the authority.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedded_relay_runs_the_apps_mutators_as_the_authority() -> TestResult {
    use meldb::{Resolution, Resolver, Transaction};
    let schema = meldb::Schema::from_toml_str(SEATS, "seats.toml")?;
    let open = |n: u8, authority: bool| -> meldb::Result<meldb::Store> {
        let mut store = StoreOptions::new()
            .site_id(site(n))
            .authority(authority)
            .open_in_memory(&schema)?;
        store.register_mutator(
            "book",
            |tx: &mut Transaction<'_>, (seat, who): (String, String)| {
                tx.insert("seat", &[("seat", seat.into()), ("booked_by", who.into())])?;
                Ok(())
            },
        );
        Ok(store)
    };
    let mut authority = open(1, true)?;
    authority.add_resolver(
        "seat",
        Resolver::new("first booking wins", |c| match (c.local(), c.incoming()) {
            (Some(_), Some(_)) => Resolution::Reject("already booked".into()),
            _ => Resolution::Accept,
        }),
    )?;
    let relay_store = SharedStore::new(authority);
    let relay = Relay::bind(relay_store.clone(), "127.0.0.1:0", RelayConfig::default()).await?;
    let addr = relay.local_addr()?.to_string();
    let (stop, shutdown) = watch::channel(false);
    let server = tokio::spawn(relay.run(shutdown));

    let (alice, bob) = (
        SharedStore::new(open(2, false)?),
        SharedStore::new(open(3, false)?),
    );
    alice.lock().mutate("book", &("A1", "alice"))?;
    bob.lock().mutate("book", &("A1", "bob"))?;
    let first = meldb::sync::sync_once_tcp(&alice, &addr, SessionConfig::default()).await?;
    let second = meldb::sync::sync_once_tcp(&bob, &addr, SessionConfig::default()).await?;
    assert_eq!(
        (
            first.stats.mutations_acknowledged,
            first.stats.mutations_rejected
        ),
        (1, 0)
    );
    assert_eq!(
        (
            second.stats.mutations_acknowledged,
            second.stats.mutations_rejected
        ),
        (1, 1)
    );
    assert!(alice.lock().pending_mutations()?.is_empty());
    assert_eq!(bob.lock().mutation_failures()?.len(), 1);
    let booked = |s: &SharedStore| -> meldb::Result<String> {
        Ok(s.lock()
            .conn()
            .query_row("SELECT booked_by FROM seat WHERE seat = 'A1'", [], |r| {
                r.get(0)
            })?)
    };
    assert_eq!(booked(&bob)?, "alice");
    assert_eq!(booked(&relay_store)?, "alice");
    stop.send(true)?;
    server.await??;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_over_the_limit_is_told_the_relay_is_busy() -> TestResult {
    use meldb::sync::{Message, NoticeCode};
    let relay_store = shared(10)?;
    insert(&relay_store, "r", 0..3)?;
    let config = RelayConfig::default().max_connections(1);
    let relay = Relay::bind(relay_store, "127.0.0.1:0", config).await?;
    let addr = relay.local_addr()?.to_string();
    let (stop, shutdown) = watch::channel(false);
    let server = tokio::spawn(relay.run(shutdown));

    // The only slot is taken by a client that said hello; one that has
    // not said hello yet takes none (tests/relay_limits.rs).
    let hello = |n: u8| {
        Message::Hello(meldb::sync::message::Hello {
            site: site(n),
            schema: "inventory".into(),
            schema_version: 1,
            token: None,
            accepts_changes: true,
            live: true,
            authority: false,
            namespace: None,
            compression: vec![],
        })
    };
    let mut first = Connection::tcp(addr.as_str(), MAX_MESSAGE_PAYLOAD).await?;
    first.send(&hello(7)).await?;
    match first.recv().await {
        Some(Ok(Message::Hello(_))) => {}
        other => return Err(format!("expected the relay's hello, got {other:?}").into()),
    }
    let mut second = Connection::tcp(addr.as_str(), MAX_MESSAGE_PAYLOAD).await?;
    second.send(&hello(8)).await?;
    match second.recv().await {
        Some(Ok(Message::Notice(n))) => {
            assert_eq!(n.code, NoticeCode::Busy);
            assert!(n.message.contains("at most 1 connections"), "{}", n.message);
        }
        other => return Err(format!("expected a busy notice, got {other:?}").into()),
    }
    // Once the slot is free, syncing works.
    drop(first);
    let client = shared(1)?;
    let start = Instant::now();
    loop {
        match meldb::sync::sync_once_tcp(&client, &addr, SessionConfig::default()).await {
            Ok(report) => {
                assert_eq!(report.stats.rows_received, 3);
                break;
            }
            Err(e) if start.elapsed() < Duration::from_secs(10) => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
    stop.send(true)?;
    server.await??;
    Ok(())
}
