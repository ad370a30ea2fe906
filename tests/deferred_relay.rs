//! A deferred conflict over real sync: two clients and an embedded relay
//! that is the authority, over TCP on 127.0.0.1 with tokens. The writer's
//! change stays hidden on every replica while it waits, the writer is told
//! on its next sync, and a person's settlement at the relay reaches both.

mod common;

use common::{site, TestResult};
use meldb::sync::{sync_once_tcp, Relay, RelayConfig, SessionConfig, SharedStore, Tokens};
use meldb::{DeferredShows, Resolution, Resolver, Row, Schema, StoreOptions};
use tokio::sync::watch;

const SCHEMA: &str = r#"
name = "prices"
version = 1
[[table]]
name = "product"
primary_key = ["sku"]
authority = true
[[table.column]]
name = "sku"
type = "text"
[[table.column]]
name = "price"
type = "integer"
"#;

const TOKENS: &str = r#"
[[token]]
name = "alice"
token = "alice-secret"
access = "read-write"
[[token]]
name = "bob"
token = "bob-secret"
access = "read-write"
"#;

fn price(store: &SharedStore) -> meldb::Result<Option<i64>> {
    let row = store.lock().get("product", "P1")?.map(Row::from);
    Ok(row.and_then(|r| r.integer("price")))
}

fn with(token: &str) -> SessionConfig {
    SessionConfig::default().token(Some(token.into()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deferred_change_waits_hidden_over_a_relay_and_its_writer_is_told() -> TestResult {
    let schema = Schema::from_toml_str(SCHEMA, "prices.toml")?;
    let mut relay_store = StoreOptions::new()
        .site_id(site(0x10))
        .authority(true)
        .open_in_memory(&schema)?;
    relay_store.add_resolver(
        "product",
        Resolver::new("price approval", |c| {
            let price = |r: Option<&Row>| r.and_then(|r| r.integer("price"));
            if price(c.local()) == price(c.incoming()) {
                Resolution::Pass
            } else {
                let who = c.writer().user.clone().unwrap_or_default();
                Resolution::Defer(format!("{who}'s price for {} needs approval", c.key()))
            }
        })
        .on_every_change(),
    )?;
    relay_store.write(|tx| tx.insert("product", &[("sku", "P1".into()), ("price", 10.into())]))?;
    let relay_store = SharedStore::new(relay_store);
    let config = RelayConfig::default().tokens(Tokens::from_toml_str(TOKENS, "tokens.toml")?);
    let relay = Relay::bind(relay_store.clone(), "127.0.0.1:0", config).await?;
    let addr = relay.local_addr()?.to_string();
    let (stop, shutdown) = watch::channel(false);
    let task = tokio::spawn(relay.run(shutdown));

    let client = |n: u8| -> meldb::Result<SharedStore> {
        Ok(SharedStore::new(
            StoreOptions::new()
                .site_id(site(n))
                .open_in_memory(&schema)?,
        ))
    };
    let (alice, bob) = (client(1)?, client(2)?);
    sync_once_tcp(&alice, &addr, with("alice-secret")).await?;
    sync_once_tcp(&bob, &addr, with("bob-secret")).await?;
    alice.write(|tx| tx.set("product", "P1", "price", 1))?;
    assert_eq!(price(&alice)?, Some(1));
    // The push, then a pull that brings the correction and the notice.
    sync_once_tcp(&alice, &addr, with("alice-secret")).await?;
    sync_once_tcp(&alice, &addr, with("alice-secret")).await?;
    sync_once_tcp(&bob, &addr, with("bob-secret")).await?;
    for store in [&relay_store, &alice, &bob] {
        assert_eq!(price(store)?, Some(10));
    }
    let notices = alice.lock().rejections()?;
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert!(
        notices[0]
            .reason
            .contains("alice's price for (\"P1\") needs approval"),
        "{notices:?}"
    );
    assert!(bob.lock().rejections()?.is_empty());

    let waiting = relay_store.lock().deferred_conflicts()?;
    assert_eq!(waiting.len(), 1, "{waiting:?}");
    assert_eq!(waiting[0].writer.user.as_deref(), Some("alice"));
    relay_store
        .lock()
        .keep_deferred(waiting[0].id, DeferredShows::Incoming)?;
    relay_store.notify_changed();
    sync_once_tcp(&alice, &addr, with("alice-secret")).await?;
    sync_once_tcp(&bob, &addr, with("bob-secret")).await?;
    for store in [&relay_store, &alice, &bob] {
        assert_eq!(price(store)?, Some(1));
    }
    let digest = relay_store.lock().digest()?;
    assert_eq!(alice.lock().digest()?, digest);
    assert_eq!(bob.lock().digest()?, digest);
    stop.send(true)?;
    task.await??;
    Ok(())
}
