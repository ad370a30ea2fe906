//! A relay serves the replica its provider returns for the namespace a
//! token grants: two clients with tokens for namespaces `a` and `b` sync
//! through one relay, and each one's rows land in its namespace's replica
//! only. The provider records what it was asked; a token granting a
//! namespace the provider does not serve is refused.

mod common;

use common::{inventory, site, Memory, TestResult};
use meldb::codec::MAX_MESSAGE_PAYLOAD;
use meldb::sync::{
    sync_once, Connection, Grant, Namespace, NoticeCode, Relay, RelayConfig, ReplicaProvider,
    SessionConfig, SharedStore, SyncError, Tokens,
};
use meldb::StoreOptions;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, watch};

/// One store per namespace it knows, and every namespace it was asked for.
#[derive(Clone)]
struct PerNamespace {
    replicas: BTreeMap<Namespace, SharedStore>,
    asked: Arc<Mutex<Vec<Namespace>>>,
}

impl ReplicaProvider for PerNamespace {
    type Replica = SharedStore;

    fn replica(&self, namespace: &Namespace) -> Result<SharedStore, SyncError> {
        self.asked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(namespace.clone());
        self.replicas
            .get(namespace)
            .cloned()
            .ok_or_else(|| SyncError::UnknownNamespace(namespace.clone()))
    }
}

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

fn token(namespace: &str) -> SessionConfig {
    SessionConfig::default().token(Some(format!("token-{namespace}")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_token_syncs_the_replica_of_its_namespace() -> TestResult {
    let (default, a, b) = (shared(10)?, shared(11)?, shared(12)?);
    let provider = PerNamespace {
        replicas: BTreeMap::from([
            (Namespace::default(), default.clone()),
            (Namespace::new("a"), a.clone()),
            (Namespace::new("b"), b.clone()),
        ]),
        asked: Arc::default(),
    };
    let mut tokens = Tokens::new();
    for namespace in ["a", "b", "x"] {
        let grant = Grant::read_write().in_namespace(Namespace::new(namespace));
        tokens.add(namespace, &format!("token-{namespace}"), grant);
    }
    let (connect, accepted) = mpsc::channel(4);
    let relay = Relay::new(
        provider.clone(),
        Memory(accepted),
        RelayConfig::default().tokens(tokens),
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

    let (client_a, client_b) = (shared(1)?, shared(2)?);
    client_a.write(|tx| tx.insert("item", &[("sku", "from-a".into())]))?;
    client_b.write(|tx| tx.insert("item", &[("sku", "from-b".into())]))?;
    let report = sync_once(&client_a, &mut dial().await?, token("a")).await?;
    assert_eq!(report.stats.rows_sent, 1);
    // The relay's side of the session was namespace a's replica.
    assert_eq!(report.peer.map(|p| p.site), Some(site(11)));
    sync_once(&client_b, &mut dial().await?, token("b")).await?;
    sync_once(&client_a, &mut dial().await?, token("a")).await?;

    assert_eq!(skus(&a)?, ["from-a"]);
    assert_eq!(skus(&b)?, ["from-b"]);
    assert_eq!(skus(&default)?, Vec::<String>::new());
    assert_eq!(skus(&client_a)?, ["from-a"]);
    assert_eq!(skus(&client_b)?, ["from-b"]);
    assert_eq!(client_a.lock().digest()?, a.lock().digest()?);

    // A namespace the provider does not serve: refused, nothing moved.
    let client_x = shared(3)?;
    client_x.write(|tx| tx.insert("item", &[("sku", "from-x".into())]))?;
    let refused = sync_once(&client_x, &mut dial().await?, token("x")).await;
    assert!(
        matches!(
            refused,
            Err(SyncError::Refused {
                code: NoticeCode::Unauthorized,
                ..
            })
        ),
        "{refused:?}"
    );
    for replica in [&default, &a, &b] {
        assert!(!skus(replica)?.contains(&"from-x".to_string()));
    }

    // Each connection was greeted by the default namespace's replica, then
    // served the one its token grants.
    let asked: Vec<String> = provider
        .asked
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .iter()
        .map(|n| n.to_string())
        .collect();
    let greeted_then_served = |n: &str| [Namespace::DEFAULT_NAME.to_string(), n.to_string()];
    let expected: Vec<String> = ["a", "b", "a", "x"]
        .into_iter()
        .flat_map(greeted_then_served)
        .collect();
    assert_eq!(asked, expected);

    stop.send(true)?;
    server.await??;
    Ok(())
}
