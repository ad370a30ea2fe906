//! Reads on a `SharedStore` go through reader connections: they complete
//! while a batch is being applied, and see the state before that apply
//! (one snapshot), never a half-applied batch.

mod common;

use common::site;
use meldb::sync::SharedStore;
use meldb::{Resolution, Resolver, Schema, Store, StoreOptions, Value, VersionVector};
use std::sync::mpsc;
use std::sync::Mutex;
use std::time::Duration;

const SCHEMA: &str = r#"
name = "readers"
version = 1

[[table]]
name = "t"
primary_key = ["id"]

[[table.column]]
name = "id"
type = "text"

[[table.column]]
name = "v"
type = "integer"
"#;

/// Rows in the batch being applied (`MELDB_READERS_ROWS`; 100,000 for the
/// issue's figure, fewer by default to keep debug runs short).
fn rows() -> usize {
    std::env::var("MELDB_READERS_ROWS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(20_000)
}

fn v(store_row: Option<Vec<(String, Value)>>) -> Option<Value> {
    store_row?
        .into_iter()
        .find(|(c, _)| c == "v")
        .map(|(_, v)| v)
}

#[test]
fn a_read_completes_during_an_apply_and_sees_the_state_before_it(
) -> Result<(), Box<dyn std::error::Error>> {
    let schema = Schema::from_toml_str(SCHEMA, "readers.toml")?;
    let dir = tempfile::tempdir()?;
    let mut here = StoreOptions::new()
        .site_id(site(1))
        .open(dir.path().join("here.db"), &schema)?;
    let mut there = StoreOptions::new()
        .site_id(site(2))
        .open_in_memory(&schema)?;

    // Both write row k0 without seeing each other (a real conflict, so the
    // apply calls the resolver); `there` also writes many new rows.
    here.write(|tx| tx.insert("t", &[("id", "k0".into()), ("v", 1i64.into())]))?;
    there.write(|tx| {
        tx.insert("t", &[("id", "k0".into()), ("v", 2i64.into())])?;
        for i in 1..=rows() {
            tx.insert("t", &[("id", format!("k{i}").into()), ("v", 7i64.into())])?;
        }
        Ok(())
    })?;
    let batch = there.changes_since(&here.version_vector())?;
    assert!(batch.len() > rows());

    // The resolver holds the apply, mid-transaction, until told to go on.
    let (inside_tx, inside) = mpsc::channel::<()>();
    let (go, go_rx) = mpsc::channel::<()>();
    let inside_tx = Mutex::new(Some(inside_tx));
    let go_rx = Mutex::new(go_rx);
    here.add_resolver(
        "t",
        Resolver::new("gate", move |_| {
            if let Some(tx) = inside_tx.lock().map(|mut t| t.take()).unwrap_or(None) {
                let _ = tx.send(());
                let _ = go_rx.lock().map(|rx| rx.recv());
            }
            Resolution::Pass
        }),
    )?;
    let before = here.digest()?;
    let shared = SharedStore::new(here);
    assert!(shared.has_readers(), "a file store gets reader connections");

    let applier = shared.clone();
    let (done_tx, done) = mpsc::channel();
    let apply = std::thread::spawn(move || {
        let report = applier.apply(&batch);
        let _ = done_tx.send(());
        report
    });
    inside
        .recv_timeout(Duration::from_secs(120))
        .map_err(|e| format!("the apply never reached the resolver: {e}"))?;

    // The writer is inside the apply, holding the store's lock; these
    // reads do not wait for it, and see none of the batch.
    assert_eq!(v(shared.get("t", "k0")?), Some(Value::Integer(1)));
    assert_eq!(shared.get("t", "k1")?, None);
    assert_eq!(shared.digest()?, before);
    let counted: i64 = shared.read(|r| {
        Ok(r.conn()
            .query_row("SELECT count(*) FROM t", [], |row| row.get(0))?)
    })?;
    assert_eq!(counted, 1);
    assert!(
        done.try_recv().is_err(),
        "the apply finished before the reads"
    );

    go.send(())?;
    let report = apply.join().map_err(|_| "the apply panicked")??;
    assert_eq!(report.concurrent, 1);

    // After the commit, readers see all of it, as the writer does.
    assert!(shared.get("t", "k1")?.is_some());
    assert_eq!(shared.digest()?, shared.lock().digest()?);
    assert_ne!(shared.digest()?, before);
    let counted: i64 = shared.read(|r| {
        Ok(r.conn()
            .query_row("SELECT count(*) FROM t", [], |row| row.get(0))?)
    })?;
    assert_eq!(counted as usize, rows() + 1);
    assert!(shared.lock().version_vector() != VersionVector::new());
    Ok(())
}

#[test]
fn an_in_memory_store_reads_through_its_writer() -> Result<(), Box<dyn std::error::Error>> {
    let schema = Schema::from_toml_str(SCHEMA, "readers.toml")?;
    let shared = SharedStore::new(Store::open_in_memory(&schema)?);
    assert!(!shared.has_readers());
    shared.write(|tx| tx.insert("t", &[("id", "a".into()), ("v", 3i64.into())]))?;
    assert_eq!(v(shared.get("t", "a")?), Some(Value::Integer(3)));
    assert_eq!(shared.digest()?, shared.lock().digest()?);
    Ok(())
}
