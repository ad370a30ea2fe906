//! Live queries and the changes feed: a watch fires at registration and
//! after each commit that changed its result (local writes, mutations,
//! applies, pushes and pulls), never for another table or an unchanged
//! result; its diff is by key; it stops when its handle drops; its callback
//! can read. The feed names table, keys and origin, and never a rollback.

mod common;

use common::{site, TestResult, T0};
use meldb::{
    Change, Key, ManualTime, Origin, Schema, Store, StoreOptions, Transaction, Update, Value,
};
use serde::Deserialize;
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};

const SCHEMA: &str = r#"
name = "live"
version = 1
[[table]]
name = "task"
primary_key = ["id"]
authority = true
[[table.column]]
name = "id"
type = "text"
[[table.column]]
name = "title"
type = "text"
[[table.column]]
name = "done"
type = "integer"
default = 0
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

const OPEN_TASKS: &str = "SELECT id, title FROM task WHERE done = 0 ORDER BY id";

fn schema() -> Result<Schema, Box<dyn std::error::Error>> {
    Ok(Schema::from_toml_str(SCHEMA, "live.toml")?)
}

fn open(n: u8, time: &ManualTime, authority: bool) -> Result<Store, Box<dyn std::error::Error>> {
    let mut store = StoreOptions::new()
        .site_id(site(n))
        .time_source(Arc::new(time.clone()))
        .authority(authority)
        .open_in_memory(&schema()?)?;
    store.register_mutator(
        "add",
        |tx: &mut Transaction<'_>, (id, title): (String, String)| {
            tx.insert("task", &[("id", id.into()), ("title", title.into())])?;
            Ok(())
        },
    );
    Ok(store)
}

fn text(s: &str) -> Value {
    Value::Text(s.into())
}

fn row(id: &str, title: &str) -> Vec<Value> {
    vec![text(id), text(title)]
}

/// Every update a watch delivered, shared with its callback.
type Seen = Arc<Mutex<Vec<Update<Vec<Value>>>>>;

fn recorder() -> (
    Seen,
    impl FnMut(&meldb::Reader<'_>, Update<Vec<Value>>) + Send + 'static,
) {
    let seen: Seen = Arc::default();
    let sink = seen.clone();
    (seen, move |_: &meldb::Reader<'_>, u| {
        sink.lock().unwrap_or_else(|e| e.into_inner()).push(u)
    })
}

fn taken(seen: &Seen) -> Vec<Update<Vec<Value>>> {
    std::mem::take(&mut *seen.lock().unwrap_or_else(|e| e.into_inner()))
}

fn drained(feed: &Receiver<Change>) -> Vec<Change> {
    feed.try_iter().collect()
}

fn add_task(store: &mut Store, id: &str, title: &str) -> meldb::Result<()> {
    store.write(|tx| tx.insert("task", &[("id", id.into()), ("title", title.into())]))
}

#[test]
fn a_watch_fires_at_registration_then_on_each_local_change_with_its_diff() -> TestResult {
    let time = ManualTime::new(T0);
    let mut store = open(1, &time, false)?;
    add_task(&mut store, "t0", "Existing")?;
    let (seen, callback) = recorder();
    let handle = store.watch(OPEN_TASKS, &[], callback)?;
    assert_eq!(handle.tables(), ["task".to_string()]);

    let first = taken(&seen);
    assert_eq!(first.len(), 1, "fires once at registration");
    assert_eq!(first[0].columns, ["id", "title"]);
    assert_eq!(first[0].rows, vec![row("t0", "Existing")]);
    assert_eq!(first[0].diff.added, vec![row("t0", "Existing")]);

    store.write(|tx| {
        tx.insert("task", &[("id", "t1".into()), ("title", "Call".into())])?;
        tx.insert("task", &[("id", "t2".into()), ("title", "Pay".into())])
    })?;
    let added = taken(&seen);
    assert_eq!(added.len(), 1, "one commit, one call");
    assert_eq!(
        added[0].diff.added,
        vec![row("t1", "Call"), row("t2", "Pay")]
    );
    assert!(added[0].diff.removed.is_empty() && added[0].diff.changed.is_empty());
    assert_eq!(added[0].rows.len(), 3);

    store.write(|tx| tx.set("task", "t1", "title", "Call mum"))?;
    let changed = taken(&seen);
    assert_eq!(
        changed[0].diff.changed,
        vec![(row("t1", "Call"), row("t1", "Call mum"))]
    );
    assert!(changed[0].diff.added.is_empty() && changed[0].diff.removed.is_empty());

    store.write(|tx| tx.set("task", "t2", "done", 1))?;
    store.write(|tx| tx.delete("task", "t0"))?;
    let removed = taken(&seen);
    assert_eq!(removed.len(), 2);
    assert_eq!(removed[0].diff.removed, vec![row("t2", "Pay")]);
    assert_eq!(removed[1].diff.removed, vec![row("t0", "Existing")]);
    assert_eq!(removed[1].rows, vec![row("t1", "Call mum")]);
    Ok(())
}

#[test]
fn a_watch_stays_quiet_for_other_tables_unchanged_results_and_rollbacks() -> TestResult {
    let time = ManualTime::new(T0);
    let mut store = open(1, &time, false)?;
    add_task(&mut store, "t1", "Call")?;
    let (seen, callback) = recorder();
    let _handle = store.watch(OPEN_TASKS, &[], callback)?;
    taken(&seen);

    store.write(|tx| tx.insert("note", &[("id", "n1".into()), ("body", "hi".into())]))?;
    // Touches the table, but not the result: a done task's title.
    store.write(|tx| {
        tx.insert(
            "task",
            &[
                ("id", "t9".into()),
                ("title", "Old".into()),
                ("done", 1.into()),
            ],
        )
    })?;
    store.write(|tx| tx.set("task", "t9", "title", "Older"))?;
    // Rolled back: never seen.
    let refused = store.write(|tx| {
        tx.set("task", "t1", "title", "Never")?;
        tx.set("task", "t1", "colour", "red")
    });
    assert!(refused.is_err());
    assert!(
        taken(&seen).is_empty(),
        "no call without a change of result"
    );
    Ok(())
}

/// A callback that panics (application code) is caught: the write that
/// triggered it returns Ok with its commit kept, the other watches and the
/// feed still hear of it, and the panicking watch shows the panic as its
/// failure.
#[test]
fn a_panicking_callback_leaves_the_write_the_other_watches_and_the_feed_alone() -> TestResult {
    let time = ManualTime::new(T0);
    let mut store = open(1, &time, false)?;
    let feed = store.changes();
    let mut calls = 0;
    let bad = store.watch(OPEN_TASKS, &[], move |_, _| {
        calls += 1;
        if calls > 1 {
            panic!("the app's bug");
        }
    })?;
    let (seen, callback) = recorder();
    let _good = store.watch(OPEN_TASKS, &[], callback)?;
    add_task(&mut store, "t1", "Call")?;
    assert_eq!(taken(&seen).len(), 2, "registration, then the write");
    let failure = bad.failure().ok_or("the panic is the watch's failure")?;
    assert!(failure.contains("the app's bug"), "{failure}");
    assert_eq!(drained(&feed).len(), 1);
    add_task(&mut store, "t2", "Pay")?;
    assert_eq!(taken(&seen).len(), 1, "the good watch still runs");
    assert!(store.get("task", "t2")?.is_some(), "the write was kept");
    Ok(())
}

#[test]
fn dropping_the_handle_stops_the_watch() -> TestResult {
    let time = ManualTime::new(T0);
    let mut store = open(1, &time, false)?;
    let (seen, callback) = recorder();
    let handle = store.watch(OPEN_TASKS, &[], callback)?;
    add_task(&mut store, "t1", "Call")?;
    assert_eq!(taken(&seen).len(), 2);
    drop(handle);
    add_task(&mut store, "t2", "Pay")?;
    add_task(&mut store, "t3", "Go")?;
    assert!(taken(&seen).is_empty());
    Ok(())
}

#[test]
fn the_callback_reads_the_store_it_watches() -> TestResult {
    let time = ManualTime::new(T0);
    let mut store = open(1, &time, false)?;
    let notes: Arc<Mutex<Vec<Option<String>>>> = Arc::default();
    let sink = notes.clone();
    let _handle = store.watch(OPEN_TASKS, &[], move |reader, update| {
        // The rows of another table, and the watched one, as committed.
        let body = reader
            .get("note", "n1")
            .ok()
            .flatten()
            .and_then(|cols| cols.into_iter().find(|(c, _)| c == "body"))
            .map(|(_, v)| v.to_string());
        let count: i64 = reader
            .conn()
            .query_row("SELECT count(*) FROM task", [], |r| r.get(0))
            .unwrap_or(-1);
        assert_eq!(count as usize, update.rows.len());
        sink.lock().unwrap_or_else(|e| e.into_inner()).push(body);
    })?;
    store.write(|tx| {
        tx.insert("note", &[("id", "n1".into()), ("body", "milk".into())])?;
        tx.insert("task", &[("id", "t1".into()), ("title", "Shop".into())])
    })?;
    let notes = notes.lock().unwrap_or_else(|e| e.into_inner()).clone();
    assert_eq!(notes.len(), 2);
    assert_eq!(notes[0], None);
    assert!(
        notes[1].as_deref().is_some_and(|b| b.contains("milk")),
        "{notes:?}"
    );
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
struct Task {
    id: String,
    title: String,
}

#[test]
fn watch_as_delivers_typed_rows_and_diffs() -> TestResult {
    let time = ManualTime::new(T0);
    let mut store = open(1, &time, false)?;
    let seen: Arc<Mutex<Vec<Update<Task>>>> = Arc::default();
    let sink = seen.clone();
    let _handle = store.watch_as::<Task>(OPEN_TASKS, &[], move |_, u| {
        sink.lock().unwrap_or_else(|e| e.into_inner()).push(u)
    })?;
    add_task(&mut store, "t1", "Call")?;
    store.write(|tx| tx.set("task", "t1", "title", "Call mum"))?;
    let seen = seen.lock().unwrap_or_else(|e| e.into_inner()).clone();
    assert_eq!(seen.len(), 3);
    let call = Task {
        id: "t1".into(),
        title: "Call".into(),
    };
    let mum = Task {
        id: "t1".into(),
        title: "Call mum".into(),
    };
    assert_eq!(seen[1].diff.added, vec![call.clone()]);
    assert_eq!(seen[2].diff.changed, vec![(call, mum.clone())]);
    assert_eq!(seen[2].rows, vec![mum]);
    Ok(())
}

#[test]
fn a_query_without_key_columns_diffs_whole_rows() -> TestResult {
    let time = ManualTime::new(T0);
    let mut store = open(1, &time, false)?;
    add_task(&mut store, "t1", "Call")?;
    let (seen, callback) = recorder();
    let _handle = store.watch("SELECT title FROM task", &[], callback)?;
    store.write(|tx| tx.set("task", "t1", "title", "Call mum"))?;
    let updates = taken(&seen);
    assert_eq!(updates.len(), 2);
    assert_eq!(updates[1].diff.removed, vec![vec![text("Call")]]);
    assert_eq!(updates[1].diff.added, vec![vec![text("Call mum")]]);
    assert!(updates[1].diff.changed.is_empty());
    Ok(())
}

#[test]
fn a_watch_with_params_and_a_join_learns_both_tables() -> TestResult {
    let time = ManualTime::new(T0);
    let mut store = open(1, &time, false)?;
    let (seen, callback) = recorder();
    let handle = store.watch(
        "SELECT task.id, note.body FROM task JOIN note ON note.id = task.id WHERE task.title = ?1",
        &[text("Call")],
        callback,
    )?;
    let mut tables = handle.tables().to_vec();
    tables.sort();
    assert_eq!(tables, ["note", "task"]);
    add_task(&mut store, "x", "Call")?;
    store.write(|tx| tx.insert("note", &[("id", "x".into()), ("body", "ring".into())]))?;
    let updates = taken(&seen);
    assert_eq!(updates.len(), 2, "the task alone joins nothing");
    assert_eq!(updates[1].diff.added, vec![vec![text("x"), text("ring")]]);
    Ok(())
}

/// meldb's own tables change without a feed entry: a watch over one is
/// refused at registration instead of never firing.
#[test]
fn a_watch_over_meldbs_own_tables_is_refused() -> TestResult {
    let time = ManualTime::new(T0);
    let mut store = open(1, &time, false)?;
    let (_, callback) = recorder();
    let refused = store.watch("SELECT count(*) FROM meldb_conflicts", &[], callback);
    let message = refused
        .err()
        .ok_or("a watch over meldb_conflicts must be refused")?
        .to_string();
    assert!(
        message.contains("\"meldb_conflicts\", meldb's own table"),
        "{message}"
    );
    Ok(())
}

#[test]
fn a_statement_that_writes_is_refused() -> TestResult {
    let time = ManualTime::new(T0);
    let mut store = open(1, &time, false)?;
    let (_seen, callback) = recorder();
    let refused = store.watch("CREATE TABLE scratch (a)", &[], callback);
    assert!(matches!(refused, Err(meldb::Error::Typed(_))));
    Ok(())
}

#[test]
fn the_feed_carries_table_keys_and_origin_of_local_writes_and_mutations() -> TestResult {
    let time = ManualTime::new(T0);
    let mut store = open(1, &time, false)?;
    let feed = store.changes();
    let dropped = store.changes();
    drop(dropped);
    store.write(|tx| {
        tx.insert("task", &[("id", "t1".into()), ("title", "Call".into())])?;
        tx.set("task", "t1", "title", "Call mum")?;
        tx.insert("note", &[("id", "n1".into()), ("body", "hi".into())])
    })?;
    let changes = drained(&feed);
    assert_eq!(changes.len(), 2);
    assert_eq!(
        (
            changes[0].table.as_str(),
            &changes[0].keys,
            changes[0].origin
        ),
        ("task", &vec![Key::from("t1")], Origin::Local),
        "one key however often it was written"
    );
    assert_eq!(changes[1].table, "note");

    let refused = store.write(|tx| {
        tx.insert("note", &[("id", "n2".into()), ("body", "x".into())])?;
        tx.insert("note", &[("id", "n1".into()), ("body", "dup".into())])
    });
    assert!(refused.is_err());
    assert!(drained(&feed).is_empty(), "a rollback is never published");

    // A mutation with no authority in sight runs as an ordinary write.
    let (seen, callback) = recorder();
    let _handle = store.watch(OPEN_TASKS, &[], callback)?;
    taken(&seen);
    store.mutate("add", &("t2".to_string(), "Pay".to_string()))?;
    assert_eq!(taken(&seen)[0].diff.added, vec![row("t2", "Pay")]);
    let changes = drained(&feed);
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].keys, vec![Key::from("t2")]);
    assert_eq!(changes[0].origin, Origin::Local);
    Ok(())
}

#[test]
fn an_apply_from_another_store_fires_as_remote() -> TestResult {
    let time = ManualTime::new(T0);
    let mut phone = open(1, &time, false)?;
    let mut laptop = open(2, &time, false)?;
    let feed = laptop.changes();
    let (seen, callback) = recorder();
    let _handle = laptop.watch(OPEN_TASKS, &[], callback)?;
    taken(&seen);

    add_task(&mut phone, "t1", "Call")?;
    phone.write(|tx| tx.insert("note", &[("id", "n1".into()), ("body", "hi".into())]))?;
    let changes = phone.changes_since(&laptop.version_vector())?;
    laptop.apply(&changes)?;
    let updates = taken(&seen);
    assert_eq!(updates.len(), 1);
    assert_eq!(updates[0].diff.added, vec![row("t1", "Call")]);
    let mut feed_now = drained(&feed);
    feed_now.sort_by(|a, b| a.table.cmp(&b.table));
    assert_eq!(feed_now.len(), 2);
    assert!(feed_now.iter().all(|c| c.origin == Origin::Remote));
    assert_eq!(feed_now[0].table, "note");
    assert_eq!(feed_now[1].keys, vec![Key::from("t1")]);

    // Applying it again changes nothing: no event, no call.
    laptop.apply(&changes)?;
    assert!(drained(&feed).is_empty());
    assert!(taken(&seen).is_empty());
    Ok(())
}

#[test]
fn push_and_pull_fire_at_the_authority_and_as_a_rebase_on_the_client() -> TestResult {
    let time = ManualTime::new(T0);
    let mut server = open(1, &time, true)?;
    let mut client = open(2, &time, false)?;
    let mut other = open(3, &time, false)?;
    let server_feed = server.changes();
    let client_feed = client.changes();
    let (server_seen, callback) = recorder();
    let _server_watch = server.watch(OPEN_TASKS, &[], callback)?;
    let (client_seen, callback) = recorder();
    let _client_watch = client.watch(OPEN_TASKS, &[], callback)?;
    taken(&server_seen);
    taken(&client_seen);

    // The client's speculative effect is a local change at once.
    client.mutate("add", &("t1".to_string(), "Call".to_string()))?;
    assert_eq!(taken(&client_seen)[0].diff.added, vec![row("t1", "Call")]);
    assert_eq!(drained(&client_feed)[0].origin, Origin::Local);

    // At the authority the pushed mutation is another replica's change.
    server.process_push(&client.push_request()?)?;
    assert_eq!(taken(&server_seen)[0].diff.added, vec![row("t1", "Call")]);
    let at_server = drained(&server_feed);
    assert_eq!(at_server.len(), 1);
    assert_eq!(
        (at_server[0].origin, &at_server[0].keys),
        (Origin::Remote, &vec![Key::from("t1")])
    );

    // Another client's mutation reaches the server, then the client pulls:
    // its own effect comes off and back (a rebase, the same result: no
    // call for it), the other client's task is new.
    other.mutate("add", &("t2".to_string(), "Pay".to_string()))?;
    server.process_push(&other.push_request()?)?;
    client.mutate("add", &("t3".to_string(), "Go".to_string()))?;
    taken(&client_seen);
    drained(&client_feed);
    let (vv, first) = client.pull_request()?;
    let response = server.pull_for(client.site_id(), &vv, first)?;
    client.apply_pull(&response)?;
    let updates = taken(&client_seen);
    assert_eq!(updates.len(), 1, "one pull, one call");
    assert_eq!(updates[0].diff.added, vec![row("t2", "Pay")]);
    assert!(updates[0].diff.removed.is_empty(), "{:?}", updates[0].diff);
    let pulled = drained(&client_feed);
    let origins: Vec<Origin> = pulled.iter().map(|c| c.origin).collect();
    assert!(origins.contains(&Origin::Rebase), "{pulled:?}");
    assert!(origins.contains(&Origin::Remote), "{pulled:?}");
    let rebased: Vec<&Key> = pulled
        .iter()
        .filter(|c| c.origin == Origin::Rebase)
        .flat_map(|c| &c.keys)
        .collect();
    assert!(rebased.contains(&&Key::from("t3")), "{pulled:?}");
    Ok(())
}
