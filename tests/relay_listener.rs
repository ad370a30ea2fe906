//! The relay serves whatever a [`Listener`] accepts: here an in-memory
//! listener, no socket anywhere. Two clients sync through it both ways,
//! and the peer the listener names is the one the relay serves.

mod common;

use common::{inventory, site, Memory, TestResult};
use meldb::codec::MAX_MESSAGE_PAYLOAD;
use meldb::sync::SharedStore;
use meldb::sync::{sync_once, Connection, Relay, RelayConfig, SessionConfig};
use meldb::StoreOptions;
use tokio::sync::{mpsc, watch};

fn shared(n: u8) -> meldb::Result<SharedStore> {
    Ok(SharedStore::new(
        StoreOptions::new()
            .site_id(site(n))
            .open_in_memory(&inventory())?,
    ))
}

fn skus(store: &SharedStore) -> meldb::Result<Vec<String>> {
    let guard = store.lock();
    let mut stmt = guard.conn().prepare("SELECT sku FROM item ORDER BY sku")?;
    let rows = stmt.query_map([], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_over_an_in_memory_listener_serves_its_clients() -> TestResult {
    let relay_store = shared(10)?;
    let (connect, accepted) = mpsc::channel(4);
    let relay = Relay::new(
        relay_store.clone(),
        Memory(accepted),
        RelayConfig::default(),
    );
    let (stop, shutdown) = watch::channel(false);
    let server = tokio::spawn(relay.run(shutdown));

    let dial = || async {
        let (client_end, server_end) = tokio::io::duplex(1 << 16);
        connect
            .send(server_end)
            .await
            .map_err(|_| "the relay stopped accepting")?;
        Ok::<_, Box<dyn std::error::Error>>(Connection::new(client_end, MAX_MESSAGE_PAYLOAD))
    };
    let (a, b) = (shared(1)?, shared(2)?);
    a.write(|tx| tx.insert("item", &[("sku", "from-a".into())]))?;
    b.write(|tx| tx.insert("item", &[("sku", "from-b".into())]))?;
    sync_once(&a, &mut dial().await?, SessionConfig::default()).await?;
    sync_once(&b, &mut dial().await?, SessionConfig::default()).await?;
    sync_once(&a, &mut dial().await?, SessionConfig::default()).await?;

    let both = vec!["from-a".to_string(), "from-b".to_string()];
    assert_eq!(skus(&relay_store)?, both);
    assert_eq!(skus(&a)?, both);
    assert_eq!(skus(&b)?, both);
    assert_eq!(a.lock().digest()?, relay_store.lock().digest()?);

    stop.send(true)?;
    server.await??;
    Ok(())
}
