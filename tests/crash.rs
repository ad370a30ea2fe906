//! Crash safety: a writer process is killed with SIGKILL at an arbitrary
//! point, many times over; after each kill the database opens, every write
//! whose commit the writer had acknowledged is there, nothing half-written
//! is visible, and the replica still syncs and converges with a peer.
//!
//! The test binary re-runs itself as the writer (`MELDB_CRASH_WRITER` set):
//! it commits one transaction per round (an insert, a counter increment, a
//! set add, a delete of an older row) and prints the round number only after
//! `commit` returned.

#[path = "common/kill.rs"]
mod kill;

use meldb::{Schema, Store, VersionVector};
use std::io::Write;
use std::path::Path;

const SCHEMA: &str = include_str!("../schema/inventory.toml");

fn schema() -> Schema {
    match Schema::from_toml_str(SCHEMA, "inventory.toml") {
        Ok(s) => s,
        Err(e) => panic!("shipped schema must parse: {e}"),
    }
}

/// The writer's loop: runs until killed.
fn writer(path: &Path, start: u64) -> meldb::Result<()> {
    let mut store = Store::open(path, &schema())?;
    let stdout = std::io::stdout();
    for round in start.. {
        store.write(|tx| {
            let sku = format!("sku-{round}");
            tx.insert("item", &[("sku", sku.as_str().into()), ("stock", 1.into())])?;
            tx.increment("item", "counter", "stock", 1)?;
            tx.add_to_set("item", "counter", "tags", &format!("t{round}"))?;
            if round >= 3 {
                tx.delete("item", format!("sku-{}", round - 3))?;
            }
            Ok(())
        })?;
        let mut out = stdout.lock();
        // Acknowledged only once commit has returned.
        let _ = writeln!(out, "ack {round}");
        let _ = out.flush();
    }
    Ok(())
}

#[test]
fn killed_writers_lose_no_acknowledged_write() -> Result<(), Box<dyn std::error::Error>> {
    if let Some(path) = std::env::var_os("MELDB_CRASH_WRITER") {
        let start = std::env::var("MELDB_CRASH_START")?.parse()?;
        writer(Path::new(&path), start)?;
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("crash.db");
    {
        let mut store = Store::open(&path, &schema())?;
        store.write(|tx| tx.insert("item", &[("sku", "counter".into())]))?;
    }
    let mut acknowledged: Vec<u64> = Vec::new();
    let mut next = 0u64;
    for kill_after in [1usize, 7, 3, 25, 12, 40] {
        let acks = kill::acks_until_killed(
            "killed_writers_lose_no_acknowledged_write",
            &[
                ("MELDB_CRASH_WRITER", path.display().to_string()),
                ("MELDB_CRASH_START", next.to_string()),
            ],
            kill_after,
        )?;
        next = acks.last().map_or(next, |last| last + 1);
        acknowledged.extend(acks);

        // Every acknowledged round is there, in full; the store is consistent.
        let store = Store::open(&path, &schema())?;
        let last = *acknowledged.last().ok_or("no rounds")?;
        let count: i64 =
            store
                .conn()
                .query_row("SELECT stock FROM item WHERE sku = 'counter'", [], |r| {
                    r.get(0)
                })?;
        // A round past the last acknowledged one may have committed just
        // before the kill: never fewer, at most one more.
        let done = acknowledged.len() as i64;
        assert!(
            count == done || count == done + 1,
            "counter {count}, acknowledged {done}"
        );
        let tags: String =
            store
                .conn()
                .query_row("SELECT tags FROM item WHERE sku = 'counter'", [], |r| {
                    r.get(0)
                })?;
        for round in &acknowledged {
            assert!(
                tags.contains(&format!("\"t{round}\"")),
                "tag of round {round} lost: {tags} {acknowledged:?} count {count}"
            );
        }
        // Round r deletes row r - 3: if the unacknowledged round last + 1
        // committed, row last - 2 is legitimately gone.
        let newest = if count == done + 1 { last + 1 } else { last };
        for round in newest.saturating_sub(2)..=last {
            assert!(
                store.get("item", format!("sku-{round}"))?.is_some(),
                "row of round {round} lost"
            );
        }
        // It still syncs: a fresh peer converges to it.
        let mut peer = Store::open_in_memory(&schema())?;
        peer.apply(&store.changes_since(&VersionVector::new())?)?;
        assert_eq!(peer.digest()?, store.digest()?);
        if count == done + 1 {
            // The unacknowledged round did commit; continue after it.
            next = last + 2;
            acknowledged.push(last + 1);
        }
    }
    Ok(())
}
