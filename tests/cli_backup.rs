//! `meldb backup` against a live `meldb relay --data-dir` process: a
//! namespace is copied while a client keeps writing to it through the
//! relay, and the copy holds every row acknowledged before the backup
//! began and passes SQLite's integrity check. The careless operator
//! (the attacker here) points it at an existing file, which must stay
//! untouched, or at a namespace that does not exist, which must be a
//! clear error that creates nothing.

mod common;

use common::{inventory, site, Listening, TestResult};
use meldb::sync::{sync_once_tcp, SessionConfig, SharedStore};
use meldb::{Store, StoreOptions};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

const TOKENS: &str = r#"
[[token]]
name = "till-1"
token = "rw-token-1"
access = "read-write"
namespace = "shop"
"#;

fn schema_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("schema/inventory.toml")
}

fn meldb() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_meldb"));
    cmd.env_remove("MELDB_LOG").env_remove("MELDB_SCHEMA");
    cmd
}

fn backup(args: &[&str], to: &Path) -> std::io::Result<Output> {
    meldb()
        .arg("backup")
        .args(args)
        .arg("--to")
        .arg(to)
        .output()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn insert(store: &SharedStore, sku: &str) -> meldb::Result<()> {
    store.write(|tx| tx.insert("item", &[("sku", sku.into()), ("stock", 1.into())]))
}

fn skus(store: &Store) -> meldb::Result<Vec<String>> {
    let mut stmt = store.conn().prepare("SELECT sku FROM item")?;
    let rows = stmt.query_map([], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_is_backed_up_while_a_client_keeps_writing() -> TestResult {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let tokens = dir.path().join("tokens.toml");
    std::fs::write(&tokens, TOKENS)?;
    let mut cmd = meldb();
    cmd.arg("relay")
        .arg("--data-dir")
        .arg(&data)
        .args(["--namespace", "shop", "--listen", "127.0.0.1:0"])
        .arg("--schema")
        .arg(schema_path())
        .arg("--tokens")
        .arg(&tokens);
    let relay = Listening::start(cmd)?;
    let addr = relay.addr.clone();
    let client = SharedStore::new(
        StoreOptions::new()
            .site_id(site(1))
            .open(dir.path().join("client.db"), &inventory())?,
    );
    let config = SessionConfig::default().token(Some("rw-token-1".into()));
    for i in 0..100 {
        insert(&client, &format!("before-{i}"))?;
    }
    let report = sync_once_tcp(&client, &addr, config.clone()).await?;
    assert_eq!(report.stats.rows_acked, 100, "{report:?}");

    // A client keeps writing and syncing through the relay while the
    // backup runs; every sync it completes is acknowledged by the relay.
    let stop = Arc::new(AtomicBool::new(false));
    let synced = Arc::new(AtomicU64::new(0));
    let writer = {
        let (client, stop, synced, config, addr) = (
            client.clone(),
            stop.clone(),
            synced.clone(),
            config.clone(),
            addr.clone(),
        );
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                insert(&client, &format!("during-{n}"))?;
                n += 1;
                sync_once_tcp(&client, &addr, config.clone()).await?;
                synced.store(n, Ordering::Relaxed);
            }
            Ok::<u64, Box<dyn std::error::Error + Send + Sync>>(n)
        })
    };
    // Wait until the writer is under way, then note what was acknowledged.
    let start = std::time::Instant::now();
    while synced.load(Ordering::Relaxed) < 5 {
        assert!(start.elapsed().as_secs() < 30, "the writer never got going");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let acknowledged = synced.load(Ordering::Relaxed);
    let out = dir.path().join("backups").join("shop-1.db");
    std::fs::create_dir(dir.path().join("backups"))?;
    let data_arg = data.display().to_string();
    let args = ["--data-dir", data_arg.as_str(), "--namespace", "shop"];
    let ran = tokio::task::spawn_blocking({
        let (out, owned) = (out.clone(), args.map(String::from));
        move || backup(&owned.each_ref().map(String::as_str), &out)
    })
    .await??;
    let after = synced.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    let written = writer.await?.map_err(|e| e.to_string())?;
    assert!(ran.status.success(), "backup failed: {}", text(&ran.stderr));
    let printed = text(&ran.stdout);
    assert!(printed.starts_with("backed up "), "{printed}");
    assert!(
        printed.contains("shop.db") && printed.contains("integrity ok"),
        "{printed}"
    );
    assert!(printed.contains("pages"), "{printed}");
    // The writer ran throughout; how many of its syncs completed inside
    // the backup's window is the machine's timing, so it is shown, not
    // asserted.
    eprintln!("syncs acknowledged: {acknowledged} before the backup, {after} when it ended");
    assert!(after >= acknowledged);

    // The copy: whole, checked, a meldb store of the same schema, holding
    // every row the relay acknowledged before the backup began.
    let copy = Store::open(&out, &inventory())?;
    let verdict: String = copy
        .conn()
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
    assert_eq!(verdict, "ok");
    let rows = skus(&copy)?;
    for i in 0..100 {
        assert!(
            rows.contains(&format!("before-{i}")),
            "before-{i} is missing"
        );
    }
    for n in 0..acknowledged {
        assert!(
            rows.contains(&format!("during-{n}")),
            "during-{n} was acknowledged before the backup, and is missing"
        );
    }
    assert!(rows.len() as u64 <= 100 + written);
    let rows_line = format!("item {}", rows.len());
    assert!(printed.contains(&rows_line), "{printed} lacks {rows_line}");
    drop(copy);

    // The careless operator runs it again to the same name: refused, and
    // the first backup is untouched.
    let before = std::fs::read(&out)?;
    let again = backup(&args, &out)?;
    assert_eq!(again.status.code(), Some(1));
    let err = text(&again.stderr);
    assert!(
        err.contains("already exists") && err.contains("shop-1.db"),
        "{err}"
    );
    assert_eq!(std::fs::read(&out)?, before);
    // No temporary file is left beside it.
    let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("backups"))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()?;
    assert_eq!(leftovers.len(), 1, "{leftovers:?}");

    // A namespace that does not exist: a clear error, nothing created.
    let ghost_out = dir.path().join("backups").join("ghost.db");
    let ghost = backup(
        &["--data-dir", data_arg.as_str(), "--namespace", "ghost"],
        &ghost_out,
    )?;
    assert_eq!(ghost.status.code(), Some(1));
    let err = text(&ghost.stderr);
    assert!(err.contains("namespace \"ghost\" has no database"), "{err}");
    assert!(!ghost_out.exists() && !data.join("ghost.db").exists());
    // A name that is not a namespace name at all.
    let bad = backup(
        &["--data-dir", data_arg.as_str(), "--namespace", "../shop"],
        &ghost_out,
    )?;
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        text(&bad.stderr).contains("--namespace \"../shop\""),
        "{}",
        text(&bad.stderr)
    );

    // The --db form, on the same live file, with JSON output.
    let by_file = dir.path().join("backups").join("shop-2.db");
    let shop_db = data.join("shop.db").display().to_string();
    let json = backup(&["--db", shop_db.as_str(), "--json"], &by_file)?;
    assert!(json.status.success(), "{}", text(&json.stderr));
    let value: serde_json::Value = serde_json::from_slice(&json.stdout)?;
    assert_eq!(value["integrity"], "ok");
    assert_eq!(value["schema"]["name"], "inventory");
    assert!(value["rows"]["item"]
        .as_u64()
        .is_some_and(|n| n >= 100 + acknowledged));
    // Not a meldb database: refused by name.
    let stranger = dir.path().join("tokens.toml").display().to_string();
    let refused = backup(&["--db", stranger.as_str()], &dir.path().join("x.db"))?;
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        text(&refused.stderr).contains("not a meldb database"),
        "{}",
        text(&refused.stderr)
    );
    drop(relay);
    Ok(())
}
