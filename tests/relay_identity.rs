//! Identities bound to tokens, over real sockets on 127.0.0.1: one test per
//! attack on a relay (issue 12), each saying who attacks, what they send,
//! and what must not happen.
//!
//! The relay is embedded (`Relay::bind`) over a file store, so a test can
//! restart it; it is the authority for the `stock` table and runs the
//! `add` mutator. Tokens come from a tokens file's text.

mod common;

use common::{site, TestResult};
use meldb::codec::MAX_MESSAGE_PAYLOAD;
use meldb::sync::message::{Batch, Hello};
use meldb::sync::{
    sync_once, sync_once_tcp, Connection, Message, NoticeCode, Relay, RelayConfig, SessionConfig,
    SharedStore, SyncError, Tokens,
};
use meldb::SiteId;
use meldb::{PendingMutation, Push};
use meldb::{Schema, Store, StoreOptions, VersionVector};
use std::path::Path;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

const SCHEMA: &str = r#"
name = "shop"
version = 1
[[table]]
name = "item"
primary_key = ["sku"]
[[table.column]]
name = "sku"
type = "text"
[[table.column]]
name = "price"
type = "integer"
[[table]]
name = "stock"
primary_key = ["sku"]
authority = true
[[table.column]]
name = "sku"
type = "text"
[[table.column]]
name = "n"
type = "integer"
kind = "pn_counter"
"#;

/// Tokens: alice and bob (read-write, up to `max_sites` sites each), and
/// two forwarders, one granted and one not.
fn tokens_file(max_sites: usize) -> String {
    format!(
        r#"
        [[token]]
        name = "alice"
        token = "alice-secret"
        access = "read-write"
        max_sites = {max_sites}
        [[token]]
        name = "bob"
        token = "bob-secret"
        access = "read-write"
        max_sites = {max_sites}
        [[token]]
        name = "hub"
        token = "hub-secret"
        access = "read-write"
        forward = true
        [[token]]
        name = "plain-hub"
        token = "plain-hub-secret"
        access = "read-write"
        [[token]]
        name = "reader"
        token = "reader-secret"
        access = "read-only"
        "#
    )
}

fn schema() -> meldb::Result<Schema> {
    Ok(Schema::from_toml_str(SCHEMA, "shop.toml")?)
}

fn register(store: &mut Store) {
    store.register_mutator("add", |tx, (sku, n): (String, i64)| {
        tx.increment("stock", sku.as_str(), "n", n)?;
        Ok(())
    });
}

/// A relay serving the file store `relay.db` in `dir`, with its tasks.
struct Running {
    addr: String,
    store: SharedStore,
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<(), SyncError>>,
}

impl Running {
    async fn start(dir: &Path, tokens: &str) -> Result<Running, Box<dyn std::error::Error>> {
        let mut store = StoreOptions::new()
            .site_id(site(0x10))
            .authority(true)
            .open(dir.join("relay.db"), &schema()?)?;
        register(&mut store);
        store.add_resolver(
            "stock",
            meldb::Resolver::new("no oversell", |c| {
                match c.merged().and_then(|r| r.integer("n")) {
                    Some(n) if n < 0 => {
                        meldb::Resolution::Reject(format!("{} is sold out", c.key()))
                    }
                    _ => meldb::Resolution::Accept,
                }
            }),
        )?;
        if store.write(|tx| tx.get("stock", "A1"))?.is_none() {
            store.write(|tx| tx.insert("stock", &[("sku", "A1".into())]))?;
        }
        let store = SharedStore::new(store);
        let config = RelayConfig::default().tokens(Tokens::from_toml_str(tokens, "tokens.toml")?);
        let relay = Relay::bind(store.clone(), "127.0.0.1:0", config).await?;
        let addr = relay.local_addr()?.to_string();
        let (stop, shutdown) = watch::channel(false);
        let task = tokio::spawn(relay.run(shutdown));
        Ok(Running {
            addr,
            store,
            stop,
            task,
        })
    }

    async fn stop(self) -> TestResult {
        self.stop.send(true)?;
        self.task.await??;
        Ok(())
    }
}

fn client(n: u8) -> meldb::Result<SharedStore> {
    client_with_site(site(n))
}

fn client_with_site(site: SiteId) -> meldb::Result<SharedStore> {
    let mut store = StoreOptions::new()
        .site_id(site)
        .open_in_memory(&schema()?)?;
    register(&mut store);
    Ok(SharedStore::new(store))
}

fn with(token: &str) -> SessionConfig {
    SessionConfig::default().token(Some(token.into()))
}

fn set_price(store: &SharedStore, sku: &str, price: i64) -> meldb::Result<()> {
    store.write(|tx| tx.upsert("item", &[("sku", sku.into()), ("price", price.into())]))
}

fn price(store: &SharedStore, sku: &str) -> meldb::Result<Option<i64>> {
    let guard = store.lock();
    let mut stmt = guard
        .conn()
        .prepare("SELECT price FROM item WHERE sku = ?1")?;
    let mut rows = stmt.query([sku])?;
    Ok(match rows.next()? {
        Some(row) => row.get(0)?,
        None => None,
    })
}

fn stock(store: &SharedStore, sku: &str) -> meldb::Result<i64> {
    let guard = store.lock();
    let n: Option<i64> = guard
        .conn()
        .query_row("SELECT n FROM stock WHERE sku = ?1", [sku], |r| r.get(0))
        .ok();
    Ok(n.unwrap_or(0))
}

/// The refusal a sync ended with, as (code, message).
fn refusal<T: std::fmt::Debug>(result: Result<T, SyncError>) -> (NoticeCode, String) {
    match result {
        Err(SyncError::Refused { code, message }) => (code, message),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// Opens a raw session as `site` with `token` and returns the connection
/// once the relay has answered the hello (its Hello and Want read).
async fn raw_session(
    addr: &str,
    token: &str,
    site: SiteId,
) -> Result<Connection, Box<dyn std::error::Error>> {
    let mut conn = Connection::tcp(addr, MAX_MESSAGE_PAYLOAD).await?;
    conn.send(&Message::Hello(Hello {
        site,
        schema: "shop".into(),
        schema_version: 1,
        token: Some(token.into()),
        accepts_changes: true,
        live: false,
        authority: false,
        namespace: None,
        compression: vec![],
    }))
    .await?;
    match conn.recv().await {
        Some(Ok(Message::Hello(_))) => Ok(conn),
        other => Err(format!("expected the relay's Hello, got {other:?}").into()),
    }
}

/// Reads until the relay's notice (or the end) and returns it.
async fn notice_after(
    conn: &mut Connection,
) -> Result<(NoticeCode, String), Box<dyn std::error::Error>> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let next = tokio::time::timeout_at(deadline, conn.recv()).await?;
        match next {
            Some(Ok(Message::Notice(n))) => return Ok((n.code, n.message)),
            Some(Ok(_)) => continue,
            other => return Err(format!("no notice: {other:?}").into()),
        }
    }
}

/// (a) Row impersonation. Attacker: bob's token. Sends: a hello with
/// alice's site id and rows written "as" her (price 100 → 666); then, with
/// its own site, a batch carrying new writes of alice's site. Must not
/// happen: any of it applied; alice's next sync failing; her data changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_cannot_write_as_another_tokens_site() -> TestResult {
    let dir = tempfile::tempdir()?;
    let relay = Running::start(dir.path(), &tokens_file(4)).await?;
    let alice = client(1)?;
    set_price(&alice, "A1", 100)?;
    sync_once_tcp(&alice, &relay.addr, with("alice-secret")).await?;
    let before = relay.store.lock().digest()?;

    // Bob's copy of a database with alice's site id.
    let forged = client_with_site(alice.lock().site_id())?;
    set_price(&forged, "A1", 100)?;
    set_price(&forged, "A1", 666)?;
    let (code, message) = refusal(sync_once_tcp(&forged, &relay.addr, with("bob-secret")).await);
    assert_eq!(code, NoticeCode::Unauthorized);
    assert!(message.contains("belongs to another token"), "{message}");
    assert!(
        !message.contains("alice"),
        "the owner is not named: {message}"
    );
    assert_eq!(relay.store.lock().digest()?, before);

    // Bob's own site, carrying new writes of alice's site in a batch.
    let changes = forged.lock().changes_since(&VersionVector::new())?;
    let mut conn = raw_session(&relay.addr, "bob-secret", site(2)).await?;
    conn.send(&Message::Changes(Batch { seq: 1, changes }))
        .await?;
    let (code, message) = notice_after(&mut conn).await?;
    assert_eq!(code, NoticeCode::Unauthorized);
    assert!(message.contains("not bound to it"), "{message}");
    assert_eq!(relay.store.lock().digest()?, before);
    assert_eq!(price(&relay.store, "A1")?, Some(100));

    // Alice syncs on as if nothing happened.
    set_price(&alice, "A2", 5)?;
    let report = sync_once_tcp(&alice, &relay.addr, with("alice-secret")).await?;
    assert_eq!(report.stats.rows_sent, 1);
    assert_eq!(alice.lock().digest()?, relay.store.lock().digest()?);
    assert_eq!(price(&alice, "A1")?, Some(100));
    relay.stop().await
}

/// (b) Mutation impersonation. Attacker: bob's token. Sends: a hello with
/// alice's site and a queued mutation of id 1000; then, with its own site,
/// a push naming alice's site. Must not happen: the authority answering
/// alice with `last_processed` 1000, so that she drops her three queued
/// mutations unrun.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_cannot_push_or_acknowledge_another_sites_mutations() -> TestResult {
    let dir = tempfile::tempdir()?;
    let relay = Running::start(dir.path(), &tokens_file(4)).await?;
    let alice = client(1)?;
    sync_once_tcp(&alice, &relay.addr, with("alice-secret")).await?;
    for _ in 0..3 {
        alice.lock().mutate("add", &("A1", 1))?;
    }

    let forged = client_with_site(alice.lock().site_id())?;
    forged.lock().conn().execute(
        "INSERT INTO meldb_pending (id, name, args, at_ms) VALUES (1000, 'add', '[\"A1\", 100]', 0)",
        [],
    )?;
    let (code, _) = refusal(sync_once_tcp(&forged, &relay.addr, with("bob-secret")).await);
    assert_eq!(code, NoticeCode::Unauthorized);

    let alice_site = alice.lock().site_id();
    let mut conn = raw_session(&relay.addr, "bob-secret", site(2)).await?;
    conn.send(&Message::Push(Push {
        client: alice_site,
        mutations: vec![PendingMutation {
            id: 1000,
            name: "add".into(),
            args: "[\"A1\", 100]".into(),
            meta: None,
        }],
    }))
    .await?;
    let (code, message) = notice_after(&mut conn).await?;
    assert_eq!(code, NoticeCode::Unauthorized);
    assert!(message.contains("nothing was run"), "{message}");
    assert_eq!(stock(&relay.store, "A1")?, 0);

    let report = sync_once_tcp(&alice, &relay.addr, with("alice-secret")).await?;
    assert_eq!(report.stats.mutations_pushed, 3);
    assert_eq!(report.stats.mutations_acknowledged, 3);
    assert!(alice.lock().pending_mutations()?.is_empty());
    assert_eq!(
        stock(&relay.store, "A1")?,
        3,
        "every queued mutation ran once"
    );
    assert_eq!(stock(&alice, "A1")?, 3);
    relay.stop().await
}

/// (c) Two devices share alice's token: each keeps its own mutation state.
/// Both queue mutations with the same local ids (1, 2, ...); neither's
/// push may count as the other's, and none is dropped unrun.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_sharing_a_token_keep_their_own_mutation_state() -> TestResult {
    let dir = tempfile::tempdir()?;
    let relay = Running::start(dir.path(), &tokens_file(4)).await?;
    let (phone, laptop) = (client(1)?, client(2)?);
    for device in [&phone, &laptop] {
        sync_once_tcp(device, &relay.addr, with("alice-secret")).await?;
    }
    for _ in 0..3 {
        phone.lock().mutate("add", &("A1", 1))?;
    }
    for _ in 0..2 {
        laptop.lock().mutate("add", &("A1", 10))?;
    }
    let report = sync_once_tcp(&phone, &relay.addr, with("alice-secret")).await?;
    assert_eq!(report.stats.mutations_acknowledged, 3);
    let report = sync_once_tcp(&laptop, &relay.addr, with("alice-secret")).await?;
    assert_eq!(
        report.stats.mutations_acknowledged, 2,
        "ids 1 and 2 are the laptop's, not duplicates of the phone's"
    );
    sync_once_tcp(&phone, &relay.addr, with("alice-secret")).await?;
    assert_eq!(stock(&relay.store, "A1")?, 23);
    assert_eq!(stock(&phone, "A1")?, 23);
    assert_eq!(stock(&laptop, "A1")?, 23);
    let rows: i64 = relay.store.lock().conn().query_row(
        "SELECT count(*) FROM meldb_clients WHERE token = 'alice'",
        [],
        |r| r.get(0),
    )?;
    assert_eq!(rows, 2);
    relay.stop().await
}

/// (d) A token binds at most `max_sites` sites, and its bindings survive a
/// restart: after it, the third site is still refused, the first two still
/// served, and another token still cannot take one of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binding_limit_holds_and_survives_a_restart() -> TestResult {
    let dir = tempfile::tempdir()?;
    let relay = Running::start(dir.path(), &tokens_file(2)).await?;
    let devices = [client(1)?, client(2)?, client(3)?];
    for d in &devices[..2] {
        sync_once_tcp(d, &relay.addr, with("alice-secret")).await?;
    }
    let (code, message) =
        refusal(sync_once_tcp(&devices[2], &relay.addr, with("alice-secret")).await);
    assert_eq!(code, NoticeCode::Unauthorized);
    assert!(message.contains("its limit"), "{message}");
    relay.stop().await?;

    let relay = Running::start(dir.path(), &tokens_file(2)).await?;
    let (_, message) = refusal(sync_once_tcp(&devices[2], &relay.addr, with("alice-secret")).await);
    assert!(message.contains("its limit"), "{message}");
    for d in &devices[..2] {
        set_price(d, "A1", 1)?;
        sync_once_tcp(d, &relay.addr, with("alice-secret")).await?;
    }
    let taker = client(1)?;
    let (_, message) = refusal(sync_once_tcp(&taker, &relay.addr, with("bob-secret")).await);
    assert!(message.contains("belongs to another token"), "{message}");
    relay.stop().await
}

/// (e) A client that rotates its site id binds the new one while its token
/// is under the limit, and its writes under both ids reach the relay; at
/// the limit, the rotated site is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_site_binds_while_under_the_limit() -> TestResult {
    let dir = tempfile::tempdir()?;
    let relay = Running::start(dir.path(), &tokens_file(2)).await?;
    let till = client(1)?;
    set_price(&till, "A1", 1)?;
    sync_once_tcp(&till, &relay.addr, with("alice-secret")).await?;
    let new = till.lock().rotate_site_id()?;
    set_price(&till, "A2", 2)?;
    sync_once_tcp(&till, &relay.addr, with("alice-secret")).await?;
    assert_eq!(
        relay.store.lock().site_owner(new)?.as_deref(),
        Some("alice")
    );
    assert_eq!(price(&relay.store, "A2")?, Some(2));
    assert_eq!(till.lock().digest()?, relay.store.lock().digest()?);

    // Two sites bound: a second rotation is over the limit.
    till.lock().rotate_site_id()?;
    let (_, message) = refusal(sync_once_tcp(&till, &relay.addr, with("alice-secret")).await);
    assert!(message.contains("its limit"), "{message}");
    relay.stop().await
}

/// (g) Forwarding: a hub syncs directly with a shop that never talks to the
/// relay, then brings the shop's writes to the relay. With `forward =
/// true` they are taken; without, refused and nothing applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_others_writes_needs_the_grant() -> TestResult {
    let dir = tempfile::tempdir()?;
    let relay = Running::start(dir.path(), &tokens_file(4)).await?;
    let shop = client(5)?;
    set_price(&shop, "S1", 7)?;
    let plain_hub = client(6)?;
    let hub = client(7)?;
    for h in [&plain_hub, &hub] {
        // Shop and hub sync peer to peer, in memory.
        let (a, b) = tokio::io::duplex(1 << 16);
        let serve = {
            let shop = shop.clone();
            tokio::spawn(async move {
                let mut conn = Connection::new(b, MAX_MESSAGE_PAYLOAD);
                meldb::sync::accept_once(
                    &shop,
                    &mut conn,
                    SessionConfig::default(),
                    std::sync::Arc::new(|_| Some(meldb::sync::Grant::read_write())),
                )
                .await
            })
        };
        sync_once(
            h,
            &mut Connection::new(a, MAX_MESSAGE_PAYLOAD),
            SessionConfig::default(),
        )
        .await?;
        serve.await??;
        assert_eq!(price(h, "S1")?, Some(7));
    }

    let before = relay.store.lock().digest()?;
    let (code, message) =
        refusal(sync_once_tcp(&plain_hub, &relay.addr, with("plain-hub-secret")).await);
    assert_eq!(code, NoticeCode::Unauthorized);
    assert!(message.contains("forward = true"), "{message}");
    assert_eq!(relay.store.lock().digest()?, before);

    sync_once_tcp(&hub, &relay.addr, with("hub-secret")).await?;
    assert_eq!(price(&relay.store, "S1")?, Some(7));
    // The shop's site is not the hub's: forwarding binds nothing.
    assert_eq!(relay.store.lock().site_owner(site(5))?, None);
    relay.stop().await
}

/// (f) The same secret under two names is refused when the relay starts,
/// naming both entries.
#[test]
fn a_duplicate_secret_is_refused_at_start() -> TestResult {
    let dir = tempfile::tempdir()?;
    let tokens = dir.path().join("tokens.toml");
    std::fs::write(
        &tokens,
        "[[token]]\nname = \"till-1\"\ntoken = \"same-secret\"\naccess = \"read-write\"\n\
         [[token]]\nname = \"dashboard\"\ntoken = \"same-secret\"\naccess = \"read-only\"\n",
    )?;
    let schema = Path::new(env!("CARGO_MANIFEST_DIR")).join("schema/inventory.toml");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_meldb"))
        .env_remove("MELDB_LOG")
        .arg("relay")
        .arg("--schema")
        .arg(&schema)
        .arg("--db")
        .arg(dir.path().join("relay.db"))
        .args(["--listen", "127.0.0.1:0", "--tokens"])
        .arg(&tokens)
        .output()?;
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr)?;
    assert!(
        stderr.contains("\"till-1\" (read-write) and \"dashboard\" (read-only)"),
        "{stderr}"
    );
    assert!(stderr.contains("tokens.toml"), "{stderr}");
    assert!(out.stdout.is_empty(), "it never listened");
    Ok(())
}

/// Rows a client received, sent back to the relay by another token, are
/// not new writes: they are taken (and change nothing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_the_relay_has_may_come_back_through_any_token() -> TestResult {
    let dir = tempfile::tempdir()?;
    let relay = Running::start(dir.path(), &tokens_file(4)).await?;
    let (alice, bob) = (client(1)?, client(2)?);
    set_price(&alice, "A1", 100)?;
    sync_once_tcp(&alice, &relay.addr, with("alice-secret")).await?;
    sync_once_tcp(&bob, &relay.addr, with("bob-secret")).await?;
    // Bob edits alice's row: its clock names alice's write, which the
    // relay has for that row.
    set_price(&bob, "A1", 120)?;
    sync_once_tcp(&bob, &relay.addr, with("bob-secret")).await?;
    assert_eq!(price(&relay.store, "A1")?, Some(120));
    // And bob sends everything he has once more, alice's rows included.
    let all = bob.lock().changes_since(&VersionVector::new())?;
    let mut conn = raw_session(&relay.addr, "bob-secret", site(2)).await?;
    conn.send(&Message::Changes(Batch {
        seq: 1,
        changes: all,
    }))
    .await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline, conn.recv()).await? {
            Some(Ok(Message::Ack(ack))) if ack.seq == 1 => break,
            Some(Ok(Message::Notice(n))) => panic!("refused: {n:?}"),
            Some(Ok(_)) => {}
            other => panic!("no ack: {other:?}"),
        }
    }
    sync_once_tcp(&alice, &relay.addr, with("alice-secret")).await?;
    assert_eq!(alice.lock().digest()?, relay.store.lock().digest()?);
    relay.stop().await
}

/// The attacker holds bob's read-write token and has read a site id from
/// a row clock: the shop's, whose writes reached the relay through a hub
/// (so no token has bound it; the same holds for every site after an
/// upgrade from format 1). Bob says hello as the shop's site. That must be
/// refused and bind nothing: only the tokens file can give a site that
/// already has writes to a token, after which its owner syncs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_with_writes_but_no_owner_cannot_be_claimed_by_the_first_token() -> TestResult {
    let dir = tempfile::tempdir()?;
    let relay = Running::start(dir.path(), &tokens_file(4)).await?;
    let shop = client(5)?;
    set_price(&shop, "S1", 7)?;
    let hub = client(7)?;
    let (a, b) = tokio::io::duplex(1 << 16);
    let serve = {
        let shop = shop.clone();
        tokio::spawn(async move {
            let mut conn = Connection::new(b, MAX_MESSAGE_PAYLOAD);
            meldb::sync::accept_once(
                &shop,
                &mut conn,
                SessionConfig::default(),
                std::sync::Arc::new(|_| Some(meldb::sync::Grant::read_write())),
            )
            .await
        })
    };
    sync_once(
        &hub,
        &mut Connection::new(a, MAX_MESSAGE_PAYLOAD),
        SessionConfig::default(),
    )
    .await?;
    serve.await??;
    sync_once_tcp(&hub, &relay.addr, with("hub-secret")).await?;
    assert_eq!(price(&relay.store, "S1")?, Some(7));
    assert_eq!(relay.store.lock().site_owner(site(5))?, None);

    let attacker = client(5)?;
    set_price(&attacker, "S1", 666)?;
    let before = relay.store.lock().digest()?;
    let (code, message) = refusal(sync_once_tcp(&attacker, &relay.addr, with("bob-secret")).await);
    assert_eq!(code, NoticeCode::Unauthorized);
    assert!(message.contains("bound to no token"), "{message}");
    assert_eq!(relay.store.lock().digest()?, before);
    assert_eq!(relay.store.lock().site_owner(site(5))?, None);
    relay.stop().await?;

    // The operator gives the shop's site to alice in the tokens file; the
    // shop (alice's device) syncs, and bob still cannot.
    let listed = tokens_file(4).replacen(
        "max_sites = 4",
        &format!("max_sites = 4\n        sites = [\"{}\"]", site(5)),
        1,
    );
    let relay = Running::start(dir.path(), &listed).await?;
    set_price(&shop, "S2", 8)?;
    sync_once_tcp(&shop, &relay.addr, with("alice-secret")).await?;
    assert_eq!(price(&relay.store, "S2")?, Some(8));
    let (code, _) = refusal(sync_once_tcp(&attacker, &relay.addr, with("bob-secret")).await);
    assert_eq!(code, NoticeCode::Unauthorized);
    assert_eq!(price(&relay.store, "S1")?, Some(7));
    relay.stop().await
}

/// Reads the relay's answer to a `Want` of everything, up to its `Sent`,
/// and returns the rejection notices among it.
async fn rejections_in_answer(
    conn: &mut Connection,
) -> Result<Vec<meldb::Rejection>, Box<dyn std::error::Error>> {
    conn.send(&Message::Want(meldb::sync::message::Want {
        id: 1,
        have: VersionVector::new(),
        first_pending: None,
    }))
    .await?;
    let mut found = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline, conn.recv()).await? {
            Some(Ok(Message::Rejections(list))) => found.extend(list),
            Some(Ok(Message::Sent(_))) => return Ok(found),
            Some(Ok(_)) => continue,
            other => return Err(format!("no Sent: {other:?}").into()),
        }
    }
}

/// (h) Reading another device's refusals. Attacker: a read-only token (and
/// a read-write one), saying hello with bob's site id and asking for
/// everything. Must not happen: the relay sends it bob's rejection
/// notices (which row, what was refused and why). Bob's own token gets
/// them (so the test can fail).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_cannot_read_another_sites_rejections() -> TestResult {
    let dir = tempfile::tempdir()?;
    let relay = Running::start(dir.path(), &tokens_file(4)).await?;
    relay
        .store
        .write(|tx| tx.increment("stock", "A1", "n", 1))?;
    let (alice, bob) = (client(1)?, client(2)?);
    sync_once_tcp(&alice, &relay.addr, with("alice-secret")).await?;
    sync_once_tcp(&bob, &relay.addr, with("bob-secret")).await?;
    // Both sell the last one; bob's arrives second and is refused.
    alice.write(|tx| tx.increment("stock", "A1", "n", -1))?;
    bob.write(|tx| tx.increment("stock", "A1", "n", -1))?;
    sync_once_tcp(&alice, &relay.addr, with("alice-secret")).await?;
    sync_once_tcp(&bob, &relay.addr, with("bob-secret")).await?;
    assert_eq!(stock(&relay.store, "A1")?, 0);
    let bobs_site = bob.lock().site_id();

    for token in ["reader-secret", "alice-secret"] {
        let Ok(mut conn) = raw_session(&relay.addr, token, bobs_site).await else {
            // Refused at hello (bob's site is bound to bob): nothing leaked.
            continue;
        };
        assert_eq!(
            rejections_in_answer(&mut conn).await?,
            [],
            "{token} read bob's rejections"
        );
    }
    let mut own = raw_session(&relay.addr, "bob-secret", bobs_site).await?;
    let notices = rejections_in_answer(&mut own).await?;
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert!(notices[0].reason.contains("sold out"), "{notices:?}");
    relay.stop().await
}
