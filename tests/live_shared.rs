//! Live queries on a `SharedStore`: callbacks run after the store's lock is
//! released, so one that reads or writes through the same handle does not
//! deadlock; applies fire them too; dropping the handle stops them.

mod common;

use common::TestResult;
use meldb::sync::SharedStore;
use meldb::{Origin, Schema, Store, Update, Value};
use std::sync::mpsc;
use std::time::Duration;

const SCHEMA: &str = r#"
name = "live"
version = 1
[[table]]
name = "task"
primary_key = ["id"]
[[table.column]]
name = "id"
type = "text"
[[table.column]]
name = "title"
type = "text"
[[table]]
name = "note"
primary_key = ["id"]
[[table.column]]
name = "id"
type = "text"
[[table.column]]
name = "body"
type = "text"
"#;

const WAIT: Duration = Duration::from_secs(20);

fn schema() -> Result<Schema, Box<dyn std::error::Error>> {
    Ok(Schema::from_toml_str(SCHEMA, "live.toml")?)
}

fn add_task(shared: &SharedStore, id: &str) -> meldb::Result<()> {
    shared.write(|tx| tx.insert("task", &[("id", id.into()), ("title", "x".into())]))
}

/// What a reentrant watch reports: (rows, whether it read the note).
type Reports = mpsc::Receiver<(usize, bool)>;

/// Registers a watch on tasks whose callback reads a note and writes one
/// through `shared` itself, reporting (rows, note it read) on a channel.
fn reentrant_watch(
    shared: &SharedStore,
) -> Result<(meldb::WatchHandle, Reports), Box<dyn std::error::Error>> {
    let (tx, rx) = mpsc::channel();
    let inner = shared.clone();
    let handle = shared.watch(
        "SELECT id FROM task ORDER BY id",
        &[],
        move |update: Update<Vec<Value>>| {
            let note = inner.get("note", "log").ok().flatten().is_some();
            let written = inner.write(|tx| {
                tx.upsert(
                    "note",
                    &[
                        ("id", "log".into()),
                        ("body", format!("{} tasks", update.rows.len()).into()),
                    ],
                )
            });
            assert!(written.is_ok(), "{written:?}");
            let _ = tx.send((update.rows.len(), note));
        },
    )?;
    Ok((handle, rx))
}

/// Runs `f` on a thread and fails (rather than hang) if it does not finish.
fn within_deadline(f: impl FnOnce() -> TestResult + Send + 'static) -> TestResult {
    let (done, finished) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(f().map_err(|e| e.to_string()));
    });
    match finished.recv_timeout(WAIT) {
        Ok(result) => Ok(result?),
        Err(_) => Err("deadlock: the scenario did not finish".into()),
    }
}

#[test]
fn a_callback_reads_and_writes_through_the_shared_handle_of_a_file_store() -> TestResult {
    within_deadline(|| {
        let dir = tempfile::tempdir()?;
        let shared = SharedStore::new(Store::open(dir.path().join("live.db"), &schema()?)?);
        assert!(shared.has_readers());
        let (_handle, seen) = reentrant_watch(&shared)?;
        assert_eq!(seen.recv_timeout(WAIT)?, (0, false));
        add_task(&shared, "t1")?;
        assert_eq!(seen.recv_timeout(WAIT)?, (1, true));
        add_task(&shared, "t2")?;
        assert_eq!(seen.recv_timeout(WAIT)?.0, 2);
        let body = shared.get("note", "log")?.ok_or("the callback's write")?;
        assert!(format!("{body:?}").contains("2 tasks"), "{body:?}");
        Ok(())
    })
}

#[test]
fn a_callback_reads_through_the_writer_of_an_in_memory_store() -> TestResult {
    within_deadline(|| {
        let shared = SharedStore::new(Store::open_in_memory(&schema()?)?);
        assert!(!shared.has_readers(), "reads take the writer's lock");
        let (handle, seen) = reentrant_watch(&shared)?;
        assert_eq!(seen.recv_timeout(WAIT)?, (0, false));
        add_task(&shared, "t1")?;
        assert_eq!(seen.recv_timeout(WAIT)?, (1, true));
        drop(handle);
        add_task(&shared, "t2")?;
        assert!(seen.try_recv().is_err(), "no call after the handle dropped");
        Ok(())
    })
}

#[derive(Debug, serde::Deserialize)]
struct Task {
    id: String,
}

#[test]
fn an_apply_through_the_handle_fires_typed_watches_and_the_feed() -> TestResult {
    within_deadline(|| {
        let mut phone = Store::open_in_memory(&schema()?)?;
        let shared = SharedStore::new(Store::open_in_memory(&schema()?)?);
        let feed = shared.changes();
        let (tx, seen) = mpsc::channel();
        let _handle = shared.watch_as::<Task>("SELECT id FROM task", &[], move |update| {
            let ids: Vec<String> = update.diff.added.into_iter().map(|t| t.id).collect();
            let _ = tx.send(ids);
        })?;
        assert!(seen.recv_timeout(WAIT)?.is_empty());
        phone.write(|tx| tx.insert("task", &[("id", "p1".into()), ("title", "x".into())]))?;
        shared.apply(&phone.changes_since(&meldb::VersionVector::new())?)?;
        assert_eq!(seen.recv_timeout(WAIT)?, ["p1"]);
        let change = feed.recv_timeout(WAIT)?;
        assert_eq!(
            (change.table.as_str(), change.origin),
            ("task", Origin::Remote)
        );
        Ok(())
    })
}

#[test]
fn a_sync_batch_through_with_replica_and_a_guard_write_then_notify_fire_after_the_lock(
) -> TestResult {
    use meldb::sync::SharedReplica;
    within_deadline(|| {
        let mut phone = Store::open_in_memory(&schema()?)?;
        let shared = SharedStore::new(Store::open_in_memory(&schema()?)?);
        let (tx, seen) = mpsc::channel();
        let inner = shared.clone();
        let _handle = shared.watch("SELECT id FROM task", &[], move |update| {
            // Locks the store: only possible once the writer let go.
            let n = inner
                .lock()
                .conn()
                .query_row("SELECT count(*) FROM task", [], |r| r.get::<_, i64>(0));
            let _ = tx.send((update.rows.len(), n.ok()));
        })?;
        assert_eq!(seen.recv_timeout(WAIT)?, (0, Some(0)));
        phone.write(|tx| tx.insert("task", &[("id", "p1".into()), ("title", "x".into())]))?;
        let batch = phone.changes_since(&meldb::VersionVector::new())?;
        // What the sync driver does with a batch.
        shared.with_replica(|store| store.apply(&batch))?;
        assert_eq!(seen.recv_timeout(WAIT)?, (1, Some(1)));
        // A write through the guard waits for the next notify.
        shared
            .lock()
            .write(|tx| tx.insert("task", &[("id", "g1".into()), ("title", "y".into())]))?;
        assert!(seen.try_recv().is_err());
        shared.notify_changed();
        assert_eq!(seen.recv_timeout(WAIT)?, (2, Some(2)));
        Ok(())
    })
}

/// The async feed hears what the plain one hears (a local write, then an
/// apply from another replica, each with its origin and keys), and
/// commits after its receiver was dropped still succeed (its sink answers
/// `false` and is pruned; nothing observable checks the pruning itself).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_async_changes_feed_carries_local_and_remote_changes() -> TestResult {
    let mut phone = Store::open_in_memory(&schema()?)?;
    let shared = SharedStore::new(Store::open_in_memory(&schema()?)?);
    let mut feed = shared.changes_async();
    let writer = shared.clone();
    tokio::task::spawn_blocking(move || add_task(&writer, "t1")).await??;
    let local = tokio::time::timeout(WAIT, feed.recv())
        .await?
        .ok_or("the feed closed")?;
    assert_eq!(
        (local.table.as_str(), local.origin, local.keys.clone()),
        ("task", Origin::Local, vec![meldb::Key::from("t1")])
    );
    phone.write(|tx| tx.insert("note", &[("id", "n1".into()), ("body", "hi".into())]))?;
    let changes = phone.changes_since(&meldb::VersionVector::new())?;
    let applier = shared.clone();
    tokio::task::spawn_blocking(move || applier.apply(&changes)).await??;
    let remote = tokio::time::timeout(WAIT, feed.recv())
        .await?
        .ok_or("the feed closed")?;
    assert_eq!(
        (remote.table.as_str(), remote.origin, remote.keys.clone()),
        ("note", Origin::Remote, vec![meldb::Key::from("n1")])
    );
    drop(feed);
    let writer = shared.clone();
    tokio::task::spawn_blocking(move || add_task(&writer, "t2")).await??;
    tokio::task::spawn_blocking(move || add_task(&shared, "t3")).await??;
    Ok(())
}

/// A shared store's callback that panics is caught on the thread that
/// drains: the write returns Ok and later callbacks still run.
#[test]
fn a_panicking_shared_callback_does_not_stop_later_callbacks() -> TestResult {
    within_deadline(|| {
        let shared = SharedStore::new(Store::open_in_memory(&schema()?)?);
        let mut calls = 0;
        let _bad = shared.watch("SELECT id FROM task", &[], move |_| {
            calls += 1;
            if calls > 1 {
                panic!("the app's bug");
            }
        })?;
        let (tx, seen) = mpsc::channel();
        let _good = shared.watch("SELECT id FROM task", &[], move |u: Update<Vec<Value>>| {
            let _ = tx.send(u.rows.len());
        })?;
        assert_eq!(seen.recv_timeout(WAIT)?, 0);
        add_task(&shared, "t1")?;
        assert_eq!(seen.recv_timeout(WAIT)?, 1);
        add_task(&shared, "t2")?;
        assert_eq!(seen.recv_timeout(WAIT)?, 2);
        Ok(())
    })
}
