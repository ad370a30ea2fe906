//! Rebase after a pull: a client with P pending mutations pulls C canonical
//! changes; `apply_pull` takes the speculative effects off, applies the
//! changes, and replays the P mutations, in one transaction.
//!
//! Each run copies a closed client database (file, WAL, `synchronous =
//! FULL`) that already holds the pending mutations, opens it, and times
//! `apply_pull` alone. The same run times plain SQLite doing the writes the
//! pull and the replay amount to (C row updates and P row updates, one
//! transaction) for the ratio, and `apply_pull` with no canonical changes
//! (the rebase alone: undo and replay). `MELDB_BENCH_CHANGES` sets C
//! (default 1,000), `MELDB_BENCH_PENDING` the list of P (default
//! `10,100,1000`), `MELDB_BENCH_PAIRS` the timed runs per figure (default
//! 9; 1 under `--test`).

use criterion::{BatchSize, BenchmarkId, Criterion};
use meldb::{MutatorError, PullResponse, Schema, Store, StoreOptions, Transaction};
use rusqlite::Connection;
use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};
use tempfile::TempDir;

const SCHEMA: &str = r#"
name = "rebase"
version = 1
[[table]]
name = "item"
primary_key = ["id"]
authority = true
[[table.column]]
name = "id"
type = "text"
[[table.column]]
name = "title"
type = "text"
[[table.column]]
name = "n"
type = "integer"
kind = "pn_counter"
"#;

fn register(store: &mut Store) {
    store.register_mutator(
        "rename",
        |tx: &mut Transaction<'_>, (id, title): (String, String)| {
            tx.set("item", id.as_str(), "title", title.as_str())?;
            Ok::<(), MutatorError>(())
        },
    );
    store.register_mutator("bump", |tx: &mut Transaction<'_>, id: String| {
        tx.increment("item", id.as_str(), "n", 1)?;
        Ok(())
    });
}

fn id(i: usize) -> String {
    format!("item-{i:06}")
}

/// A closed client database holding P pending mutations, and what it pulls.
struct Fixture {
    client: PathBuf,
    full: PullResponse,
    empty: PullResponse,
    _dir: TempDir,
}

fn fixture(schema: &Schema, changes: usize, pending: usize) -> Fixture {
    let rows = changes.max(pending);
    let mut server = StoreOptions::new()
        .authority(true)
        .open_in_memory(schema)
        .expect("open server");
    register(&mut server);
    server
        .write(|tx| {
            for i in 0..rows {
                tx.insert("item", &[("id", id(i).into()), ("title", "new".into())])?;
            }
            Ok(())
        })
        .expect("fill server");
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("client.db");
    let mut client = Store::open(&path, schema).expect("open client");
    register(&mut client);
    let (vv, first) = client.pull_request().expect("pull request");
    client
        .apply_pull(&server.pull_for(client.site_id(), &vv, first).expect("pull"))
        .expect("first pull");
    for i in 0..pending {
        client.mutate("bump", &id(i)).expect("mutate");
    }
    let (vv, first) = client.pull_request().expect("pull request");
    let empty = server.pull_for(client.site_id(), &vv, first).expect("pull");
    server
        .write(|tx| {
            for i in 0..changes {
                tx.set("item", id(i).as_str(), "title", "renamed")?;
            }
            Ok(())
        })
        .expect("server changes");
    let full = server.pull_for(client.site_id(), &vv, first).expect("pull");
    assert_eq!(full.changes.len(), changes);
    client
        .conn()
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .expect("checkpoint");
    drop(client);
    Fixture {
        client: path,
        full,
        empty,
        _dir: dir,
    }
}

/// A fresh copy of the client, opened and ready.
fn client_copy(schema: &Schema, template: &Path) -> (Store, TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("client.db");
    std::fs::copy(template, &path).expect("copy client");
    let mut store = Store::open(&path, schema).expect("open client copy");
    register(&mut store);
    (store, dir)
}

/// Plain SQLite doing the same row writes in one transaction.
fn plain_copy(rows: usize) -> (Connection, TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let conn = Connection::open(dir.path().join("plain.db")).expect("open plain");
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA cache_size = -32768;
         CREATE TABLE item (id TEXT PRIMARY KEY, title TEXT, n INTEGER NOT NULL DEFAULT 0);",
    )
    .expect("plain schema");
    let tx = conn.unchecked_transaction().expect("begin");
    for i in 0..rows {
        tx.execute("INSERT INTO item (id, title) VALUES (?1, 'new')", [id(i)])
            .expect("insert");
    }
    tx.commit().expect("commit");
    (conn, dir)
}

fn plain_work(conn: &Connection, changes: usize, pending: usize) {
    let tx = conn.unchecked_transaction().expect("begin");
    {
        let mut rename = tx
            .prepare_cached("UPDATE item SET title = 'renamed' WHERE id = ?1")
            .expect("prepare");
        for i in 0..changes {
            rename.execute([id(i)]).expect("rename");
        }
        let mut bump = tx
            .prepare_cached("UPDATE item SET n = n + 1 WHERE id = ?1")
            .expect("prepare");
        for i in 0..pending {
            bump.execute([id(i)]).expect("bump");
        }
    }
    tx.commit().expect("commit");
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let test_mode = args.iter().any(|a| a == "--test") || !args.iter().any(|a| a == "--bench");
    let changes = env_usize("MELDB_BENCH_CHANGES", if test_mode { 100 } else { 1_000 });
    let pendings: Vec<usize> = std::env::var("MELDB_BENCH_PENDING")
        .unwrap_or_else(|_| "10,100,1000".into())
        .split(',')
        .filter_map(|p| p.trim().parse().ok())
        .collect();
    let pairs = env_usize("MELDB_BENCH_PAIRS", if test_mode { 1 } else { 9 }).max(1);
    let schema = Schema::from_toml_str(SCHEMA, "rebase.toml").expect("bench schema");
    let mut c = Criterion::default().configure_from_args();
    let mut lines = Vec::new();
    for &pending in &pendings {
        let fx = fixture(&schema, changes, pending);
        let mut group = c.benchmark_group("rebase");
        group.sample_size(10);
        group.bench_with_input(
            BenchmarkId::new(format!("pull_{changes}_changes"), pending),
            &pending,
            |b, _| {
                b.iter_batched(
                    || client_copy(&schema, &fx.client),
                    |(mut store, dir)| {
                        let report = store.apply_pull(&fx.full).expect("apply_pull");
                        assert_eq!(report.replayed, pending);
                        (store, dir)
                    },
                    BatchSize::PerIteration,
                )
            },
        );
        group.finish();

        // The figures: medians of alternating timed runs outside criterion.
        let (mut full, mut empty, mut plain) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..pairs {
            for (times, response) in [(&mut full, &fx.full), (&mut empty, &fx.empty)] {
                let (mut store, _dir) = client_copy(&schema, &fx.client);
                let start = Instant::now();
                let report = store.apply_pull(response).expect("apply_pull");
                times.push(start.elapsed());
                assert_eq!(report.replayed, pending);
            }
            let (conn, _dir) = plain_copy(changes.max(pending));
            let start = Instant::now();
            plain_work(&conn, changes, pending);
            plain.push(start.elapsed());
        }
        let (full, empty, plain) = (median(full), median(empty), median(plain));
        let line = format!(
            "{pending} pending over a {changes}-change pull: {:.2} ms (rebase alone, no \
             changes: {:.2} ms); plain SQLite writing the same rows: {:.2} ms, ratio {:.2}x",
            full.as_secs_f64() * 1e3,
            empty.as_secs_f64() * 1e3,
            plain.as_secs_f64() * 1e3,
            full.as_secs_f64() / plain.as_secs_f64()
        );
        println!("{line}");
        lines.push(line);
    }
    println!();
    println!(
        "rebase summary (median of {pairs} run(s){}):",
        if test_mode { ", smoke test" } else { "" }
    );
    for line in &lines {
        println!("  {line}");
    }
    c.final_summary();
}
