//! One relay, many namespaces on disk: a `DirectoryProvider` keeps each
//! namespace in its own database under a data directory. Over real TCP
//! on 127.0.0.1, clients of namespaces `a` and `b` sync through one relay
//! and each namespace's file holds only its own rows; the attacker holds
//! a valid token and tries to reach a namespace it was not given, one
//! that does not exist, or a file outside the directory.

mod common;

use common::{inventory, site, Listening, TestResult};
use meldb::sync::{
    sync_once_tcp, Creation, DirectoryProvider, Grant, Namespace, NoticeCode, Relay, RelayConfig,
    ReplicaProvider, SessionConfig, SharedStore, SyncError, Tokens,
};
use meldb::{Store, StoreOptions};
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::watch;

type Outcome<T> = Result<T, Box<dyn std::error::Error>>;

fn client(n: u8) -> meldb::Result<SharedStore> {
    Ok(SharedStore::new(
        StoreOptions::new()
            .site_id(site(n))
            .open_in_memory(&inventory())?,
    ))
}

fn skus_of(store: &Store) -> meldb::Result<Vec<String>> {
    let mut stmt = store.conn().prepare("SELECT sku FROM item ORDER BY sku")?;
    let rows = stmt.query_map([], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The rows in a namespace's database file, read from a copy so the
/// relay's open handle is not disturbed.
fn skus_on_disk(path: &Path) -> Outcome<Vec<String>> {
    let copy = tempfile::tempdir()?;
    let target = copy.path().join("copy.db");
    let conn = meldb::rusqlite::Connection::open(path)?;
    conn.execute("VACUUM INTO ?1", [target.to_string_lossy()])?;
    Ok(skus_of(&Store::open(&target, &inventory())?)?)
}

fn tokens(grants: &[(&str, &str)]) -> Tokens {
    let mut tokens = Tokens::new();
    for (name, namespace) in grants {
        let grant = Grant::read_write().in_namespace(Namespace::new(*namespace));
        tokens.add(*name, &format!("token-of-{name}"), grant);
    }
    tokens
}

fn as_client(name: &str) -> SessionConfig {
    SessionConfig::default().token(Some(format!("token-of-{name}")))
}

struct Running {
    addr: String,
    stop: watch::Sender<bool>,
    server: tokio::task::JoinHandle<Result<(), SyncError>>,
}

async fn start(provider: DirectoryProvider, tokens: Tokens) -> Outcome<Running> {
    let relay = Relay::bind(
        provider,
        "127.0.0.1:0",
        RelayConfig::default().tokens(tokens),
    )
    .await?;
    let addr = relay.local_addr()?.to_string();
    let (stop, shutdown) = watch::channel(false);
    let server = tokio::spawn(relay.run(shutdown));
    Ok(Running { addr, stop, server })
}

impl Running {
    async fn stop(self) -> TestResult {
        self.stop.send(true)?;
        self.server.await??;
        Ok(())
    }
}

fn refused_as_unauthorized(result: &Result<meldb::sync::SyncReport, SyncError>) -> bool {
    matches!(
        result,
        Err(SyncError::Refused {
            code: NoticeCode::Unauthorized,
            ..
        })
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_namespace_is_its_own_database_and_clients_never_cross() -> TestResult {
    let dir = tempfile::tempdir()?;
    let provider =
        DirectoryProvider::open(dir.path(), &inventory(), StoreOptions::new())?.creation(
            Creation::Listed(BTreeSet::from([Namespace::new("a"), Namespace::new("b")])),
        );
    let relay = start(
        provider.clone(),
        tokens(&[("alice", "a"), ("bob", "b"), ("eve", "../outside")]),
    )
    .await?;

    let (alice, bob) = (client(1)?, client(2)?);
    alice.write(|tx| tx.insert("item", &[("sku", "a-secret".into())]))?;
    bob.write(|tx| tx.insert("item", &[("sku", "b-secret".into())]))?;
    sync_once_tcp(&alice, &relay.addr, as_client("alice")).await?;
    sync_once_tcp(&bob, &relay.addr, as_client("bob")).await?;
    // A second round: each receives only its own namespace's rows.
    sync_once_tcp(&alice, &relay.addr, as_client("alice")).await?;
    sync_once_tcp(&bob, &relay.addr, as_client("bob")).await?;
    assert_eq!(skus_of(&alice.lock())?, ["a-secret"]);
    assert_eq!(skus_of(&bob.lock())?, ["b-secret"]);

    let path = |n: &str| {
        provider
            .path_of(&Namespace::new(n))
            .ok_or("a valid namespace name")
    };
    assert_eq!(skus_on_disk(&path("a")?)?, ["a-secret"]);
    assert_eq!(skus_on_disk(&path("b")?)?, ["b-secret"]);
    assert!(skus_on_disk(&path(Namespace::DEFAULT_NAME)?)?.is_empty());
    let names: Vec<String> = provider
        .namespaces()?
        .iter()
        .map(Namespace::to_string)
        .collect();
    assert_eq!(names, ["a", "b", "default"]);

    // Eve's token grants a namespace whose name is a path: refused, and no
    // file appears outside (or inside) the data directory.
    let eve = client(3)?;
    eve.write(|tx| tx.insert("item", &[("sku", "eve-was-here".into())]))?;
    let refused = sync_once_tcp(&eve, &relay.addr, as_client("eve")).await;
    assert!(refused_as_unauthorized(&refused), "{refused:?}");
    let parent = dir.path().parent().ok_or("the data dir has a parent")?;
    assert!(!parent.join("outside.db").exists());
    assert_eq!(provider.namespaces()?.len(), 3);
    relay.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_is_created_only_when_the_policy_allows_it() -> TestResult {
    let dir = tempfile::tempdir()?;
    let grants = [("carol", "c"), ("dave", "d")];
    let provider = DirectoryProvider::open(dir.path(), &inventory(), StoreOptions::new())?;
    let relay = start(provider.clone(), tokens(&grants)).await?;

    // Carol's token names namespace c, which does not exist, and the relay
    // creates none: refused with nothing written.
    let carol = client(4)?;
    carol.write(|tx| tx.insert("item", &[("sku", "c-1".into())]))?;
    let refused = sync_once_tcp(&carol, &relay.addr, as_client("carol")).await;
    assert!(refused_as_unauthorized(&refused), "{refused:?}");
    assert!(!dir.path().join("c.db").exists());
    relay.stop().await?;

    // Listed in the config: created on first use, and served from the same
    // file after a restart; d is still not.
    let listed = Creation::Listed(BTreeSet::from([Namespace::new("c")]));
    let provider = DirectoryProvider::open(dir.path(), &inventory(), StoreOptions::new())?
        .creation(listed.clone());
    let relay = start(provider, tokens(&grants)).await?;
    sync_once_tcp(&carol, &relay.addr, as_client("carol")).await?;
    let dave = client(5)?;
    let refused = sync_once_tcp(&dave, &relay.addr, as_client("dave")).await;
    assert!(refused_as_unauthorized(&refused), "{refused:?}");
    relay.stop().await?;
    assert!(dir.path().join("c.db").exists());
    assert!(!dir.path().join("d.db").exists());

    // A relay that creates nothing still serves the namespace that exists.
    let provider = DirectoryProvider::open(dir.path(), &inventory(), StoreOptions::new())?;
    let relay = start(provider, tokens(&grants)).await?;
    let carol_again = client(6)?;
    sync_once_tcp(&carol_again, &relay.addr, as_client("carol")).await?;
    assert_eq!(skus_of(&carol_again.lock())?, ["c-1"]);
    relay.stop().await
}

/// Attacker: a holder of a valid token for a namespace whose database
/// the relay cannot open (here a corrupt file; in production a full disk,
/// a permission, a failing setup). Must not happen: the refusal shows the
/// relay's file paths or SQLite's error, the session gets anything, or the
/// relay stops serving other namespaces. The client is told the namespace
/// is unavailable, as a busy notice it retries later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_that_fails_to_open_is_unavailable_without_its_details() -> TestResult {
    let dir = tempfile::tempdir()?;
    std::fs::write(
        dir.path().join("broken.db"),
        b"this is not a database, at all",
    )?;
    let provider = DirectoryProvider::open(dir.path(), &inventory(), StoreOptions::new())?
        .creation(Creation::Any);
    let relay = start(provider, tokens(&[("erin", "broken"), ("frank", "fine")])).await?;
    let erin = client(7)?;
    erin.write(|tx| tx.insert("item", &[("sku", "e-1".into())]))?;
    let refused = sync_once_tcp(&erin, &relay.addr, as_client("erin")).await;
    let Err(SyncError::Refused {
        code: NoticeCode::Busy,
        message,
    }) = &refused
    else {
        return Err(format!("expected a busy notice, got {refused:?}").into());
    };
    assert!(message.contains("\"broken\" is unavailable"), "{message}");
    let shown = dir.path().display().to_string();
    assert!(
        !message.contains(&shown) && !message.contains(".db"),
        "a path leaked: {message}"
    );
    assert!(
        !message.contains("not a database"),
        "SQLite's error leaked: {message}"
    );
    // The relay still serves its other namespaces.
    let frank = client(8)?;
    frank.write(|tx| tx.insert("item", &[("sku", "f-1".into())]))?;
    sync_once_tcp(&frank, &relay.addr, as_client("frank")).await?;
    assert!(dir.path().join("fine.db").exists());
    relay.stop().await
}

#[test]
fn setup_runs_once_on_each_namespace_before_it_is_served() -> TestResult {
    let dir = tempfile::tempdir()?;
    let opened = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&opened);
    let provider = DirectoryProvider::open(dir.path(), &inventory(), StoreOptions::new())?
        .creation(Creation::Any)
        .setup(move |_namespace, store| {
            seen.fetch_add(1, Ordering::SeqCst);
            store.set_authority(true);
            Ok(())
        })?;
    // The default namespace was open already: set up at once.
    assert_eq!(opened.load(Ordering::SeqCst), 1);
    let first = provider.replica(&Namespace::new("team-1"))?;
    let again = provider.replica(&Namespace::new("team-1"))?;
    assert_eq!(opened.load(Ordering::SeqCst), 2);
    // Both sessions of a namespace share one handle (one lock at a time:
    // they are the same mutex).
    let first_site = first.lock().site_id();
    let again_site = again.lock().site_id();
    assert_eq!(first_site, again_site);
    let default_site = provider.replica(&Namespace::default())?.lock().site_id();
    assert_ne!(first_site, default_site);
    assert!(first.lock().is_authority());
    // Names that are paths are unknown even when anything may be created.
    for bad in ["../up", "a/b", ".hidden", ""] {
        let err = provider.replica(&Namespace::new(bad)).map(|_| ());
        assert!(
            matches!(err, Err(SyncError::UnknownNamespace(_))),
            "{bad:?}: {err:?}"
        );
    }
    Ok(())
}

/// `meldb relay --data-dir DIR --namespace a`: the tokens file names each
/// token's namespace; a's client syncs into `DIR/a.db`, b's token is
/// refused because namespace b was neither listed nor there, and no
/// `b.db` appears.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_command_serves_namespaces_from_a_data_directory() -> TestResult {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let tokens = dir.path().join("tokens.toml");
    std::fs::write(
        &tokens,
        "[[token]]\nname = \"alice\"\ntoken = \"token-of-alice\"\naccess = \"read-write\"\n\
         namespace = \"a\"\n\
         [[token]]\nname = \"bob\"\ntoken = \"token-of-bob\"\naccess = \"read-write\"\n\
         namespace = \"b\"\n\
         [[token]]\nname = \"carol\"\ntoken = \"token-of-carol\"\naccess = \"read-write\"\n\
         namespaces = [\"a\", \"c\"]\n",
    )?;
    let schema = Path::new(env!("CARGO_MANIFEST_DIR")).join("schema/inventory.toml");
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_meldb"));
    cmd.env_remove("MELDB_LOG")
        .args(["relay", "--listen", "127.0.0.1:0", "--namespace", "a"])
        .args(["--namespace", "c"])
        .arg("--data-dir")
        .arg(&data)
        .arg("--schema")
        .arg(&schema)
        .arg("--tokens")
        .arg(&tokens);
    let relay = Listening::start(cmd)?;
    // Carol's token covers a and c; `meldb sync --namespace` picks one.
    let meldb = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_meldb"))
            .current_dir(dir.path())
            .env_remove("MELDB_LOG")
            .env("CAROL_TOKEN", "token-of-carol")
            .args(args)
            .arg("--schema")
            .arg(&schema)
            .output()
    };
    let schema_ok = meldb(&["init", "--db", "carol.db"])?;
    assert!(schema_ok.status.success(), "{schema_ok:?}");
    let inserted = meldb(&["insert", "--db", "carol.db", "item", "sku=c-1"])?;
    assert!(inserted.status.success(), "{inserted:?}");
    let carol = ["sync", "--db", "carol.db", "--peer", &relay.addr];
    let carol = [&carol[..], &["--token-env", "CAROL_TOKEN", "--namespace"]].concat();
    let synced = meldb(&[&carol[..], &["c"]].concat())?;
    assert!(synced.status.success(), "{synced:?}");
    let refused = meldb(&[&carol[..], &["b"]].concat())?;
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("may not sync namespace \"b\""), "{stderr}");
    assert_eq!(skus_on_disk(&data.join("c.db"))?, ["c-1"]);
    let alice = client(7)?;
    alice.write(|tx| tx.insert("item", &[("sku", "a-1".into())]))?;
    sync_once_tcp(&alice, &relay.addr, as_client("alice")).await?;
    let bob = client(8)?;
    bob.write(|tx| tx.insert("item", &[("sku", "b-1".into())]))?;
    let refused = sync_once_tcp(&bob, &relay.addr, as_client("bob")).await;
    assert!(refused_as_unauthorized(&refused), "{refused:?}");
    drop(relay);
    assert_eq!(skus_on_disk(&data.join("a.db"))?, ["a-1"]);
    assert!(!data.join("b.db").exists());

    // One database for namespaced tokens would mix their data: refused at
    // start, naming the namespaces and the flag that keeps them apart.
    let one_db = std::process::Command::new(env!("CARGO_BIN_EXE_meldb"))
        .env_remove("MELDB_LOG")
        .args(["relay", "--listen", "127.0.0.1:0"])
        .arg("--db")
        .arg(dir.path().join("one.db"))
        .arg("--schema")
        .arg(&schema)
        .arg("--tokens")
        .arg(&tokens)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .output()?;
    assert!(!one_db.status.success());
    let stderr = String::from_utf8_lossy(&one_db.stderr);
    assert!(
        stderr.contains("\"a\"") && stderr.contains("\"b\"") && stderr.contains("--data-dir"),
        "{stderr}"
    );

    // A namespace that is a path is a usage error before anything listens.
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_meldb"))
        .env_remove("MELDB_LOG")
        .args(["relay", "--listen", "127.0.0.1:0", "--namespace", "../up"])
        .arg("--data-dir")
        .arg(&data)
        .arg("--schema")
        .arg(&schema)
        .arg("--tokens")
        .arg(&tokens)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .output()?;
    assert!(!status.status.success());
    let stderr = String::from_utf8_lossy(&status.stderr);
    assert!(
        stderr.contains("../up") && stderr.contains("namespace"),
        "{stderr}"
    );
    Ok(())
}

/// A token may cover several namespaces; the client names the one it
/// syncs in its hello (protocol version 2). The attacker holds a valid
/// token for `team-a` and `team-b` and names `team-c` (which exists, for
/// another token) and `ghost` (which does not): both are refused with the
/// same kind of notice, nothing of its batch is written anywhere, and no
/// file is created. A hello that names none syncs the token's first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_names_its_namespace_among_those_its_token_covers() -> TestResult {
    let dir = tempfile::tempdir()?;
    let names = ["team-a", "team-b", "team-c"].map(Namespace::new);
    let provider = DirectoryProvider::open(dir.path(), &inventory(), StoreOptions::new())?
        .creation(Creation::Listed(BTreeSet::from(names.clone())));
    let mut tokens = Tokens::new();
    let both = Grant::read_write()
        .in_namespace(names[0].clone())
        .also_in(names[1].clone());
    assert_eq!(both.namespace_for(None), Some(names[0].clone()));
    assert_eq!(both.namespace_for(Some("team-b")), Some(names[1].clone()));
    assert_eq!(both.namespace_for(Some("team-c")), None);
    tokens.add("mallory", "token-of-mallory", both);
    tokens.add(
        "carol",
        "token-of-carol",
        Grant::read_write().in_namespace(names[2].clone()),
    );
    let relay = start(provider.clone(), tokens).await?;
    let named = |ns: Option<&str>| as_client("mallory").namespace(ns.map(str::to_owned));

    // Carol's namespace holds her row.
    let carol = client(9)?;
    carol.write(|tx| tx.insert("item", &[("sku", "c-secret".into())]))?;
    sync_once_tcp(&carol, &relay.addr, as_client("carol")).await?;

    let device = client(1)?;
    device.write(|tx| tx.insert("item", &[("sku", "for-b".into())]))?;
    sync_once_tcp(&device, &relay.addr, named(Some("team-b"))).await?;
    let other = client(2)?;
    other.write(|tx| tx.insert("item", &[("sku", "for-a".into())]))?;
    sync_once_tcp(&other, &relay.addr, named(None)).await?;

    let attacker = client(3)?;
    attacker.write(|tx| tx.insert("item", &[("sku", "planted".into())]))?;
    for target in ["team-c", "ghost", "Team-A", "../team-a"] {
        let result = sync_once_tcp(&attacker, &relay.addr, named(Some(target))).await;
        assert!(refused_as_unauthorized(&result), "{target}: {result:?}");
        let Err(SyncError::Refused { message, .. }) = &result else {
            unreachable!()
        };
        assert!(message.contains("may not sync namespace"), "{message}");
    }
    assert_eq!(skus_of(&attacker.lock())?, ["planted"]);

    let path = |n: &str| provider.path_of(&Namespace::new(n)).ok_or("a plain name");
    assert_eq!(skus_on_disk(&path("team-a")?)?, ["for-a"]);
    assert_eq!(skus_on_disk(&path("team-b")?)?, ["for-b"]);
    assert_eq!(skus_on_disk(&path("team-c")?)?, ["c-secret"]);
    assert!(!path("ghost")?.exists(), "a refused name created a file");
    relay.stop().await
}

/// A tokens file lists a token's namespaces with `namespaces = [...]`;
/// one that gives both `namespace` and `namespaces`, or a name twice, or
/// a name with capitals (two names for one file on macOS), is refused.
#[test]
fn a_tokens_file_lists_several_namespaces_and_refuses_ambiguous_ones() -> TestResult {
    let file = |entry: &str| {
        format!(
            "[[token]]\nname = \"t\"\ntoken = \"0123456789\"\naccess = \"read-write\"\n{entry}\n"
        )
    };
    let tokens = Tokens::from_toml_str(&file("namespaces = [\"x\", \"y\"]"), "t.toml")?;
    let (_, grant) = tokens.check(Some("0123456789")).ok_or("the token")?;
    assert_eq!(grant.namespace_for(None), Some(Namespace::new("x")));
    assert_eq!(grant.namespace_for(Some("y")), Some(Namespace::new("y")));
    assert_eq!(
        tokens.namespaces(),
        BTreeSet::from([Namespace::new("x"), Namespace::new("y")])
    );
    for (bad, says) in [
        (
            "namespace = \"x\"\nnamespaces = [\"y\"]",
            "both namespace and namespaces",
        ),
        ("namespaces = [\"x\", \"x\"]", "listed twice"),
        ("namespace = \"Team\"", "lowercase"),
    ] {
        let Err(e) = Tokens::from_toml_str(&file(bad), "t.toml") else {
            panic!("{bad} was accepted");
        };
        assert!(e.to_string().contains(says), "{bad}: {e}");
    }
    Ok(())
}
