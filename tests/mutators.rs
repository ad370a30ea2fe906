//! Optimistic mutators through real push and pull with an authority:
//! optimistic effects, the authority's verdict, rebase, durability.

mod common;

use common::{site, TestResult, T0};
use meldb::{
    ManualTime, MutatorError, PullReport, Schema, Store, StoreOptions, Transaction, Value,
};
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};

const TODO: &str = r#"
name = "todos"
version = 1
[[table]]
name = "todo"
primary_key = ["id"]
authority = true
[[table.column]]
name = "id"
type = "text"
[[table.column]]
name = "title"
type = "text"
[[table.column]]
name = "note"
type = "text"
[[table.column]]
name = "urgent"
type = "integer"
default = 0
[[table.column]]
name = "likes"
type = "integer"
kind = "g_counter"
[[table]]
name = "slot"
primary_key = ["time"]
authority = true
[[table.column]]
name = "time"
type = "text"
[[table.column]]
name = "booked_by"
type = "text"
"#;

#[derive(Serialize, Deserialize)]
struct SetText {
    id: String,
    column: String,
    text: String,
}

#[derive(Serialize, Deserialize)]
struct Book {
    time: String,
    user: String,
}

fn register(store: &mut Store) {
    store.register_mutator(
        "create",
        |tx: &mut Transaction<'_>, (id, title): (String, String)| {
            tx.insert("todo", &[("id", id.into()), ("title", title.into())])?;
            Ok(())
        },
    );
    store.register_mutator("set_text", |tx: &mut Transaction<'_>, a: SetText| {
        tx.set("todo", a.id.as_str(), &a.column, a.text.as_str())?;
        Ok(())
    });
    store.register_mutator("mark_urgent", |tx: &mut Transaction<'_>, id: String| {
        let row = tx.get("todo", id.as_str())?;
        let title = row
            .and_then(|cols| cols.into_iter().find(|(c, _)| c == "title"))
            .map(|(_, v)| v);
        if matches!(&title, Some(Value::Text(t)) if t.contains("urgent")) {
            tx.set("todo", id.as_str(), "urgent", 1)?;
        }
        Ok(())
    });
    store.register_mutator("like", |tx: &mut Transaction<'_>, id: String| {
        tx.increment("todo", id.as_str(), "likes", 1)?;
        Ok(())
    });
    store.register_mutator("book", |tx: &mut Transaction<'_>, b: Book| {
        if let Some(row) = tx.get("slot", b.time.as_str())? {
            return Err(MutatorError::app(format!(
                "slot {} is taken by {}",
                b.time, row[1].1
            )));
        }
        tx.insert(
            "slot",
            &[("time", b.time.into()), ("booked_by", b.user.into())],
        )?;
        Ok(())
    });
}

fn schema() -> Schema {
    match Schema::from_toml_str(TODO, "todos.toml") {
        Ok(s) => s,
        Err(e) => panic!("schema: {e}"),
    }
}

fn open(n: u8, time: &ManualTime, authority: bool) -> meldb::Result<Store> {
    let mut store = StoreOptions::new()
        .site_id(site(n))
        .time_source(Arc::new(time.clone()))
        .authority(authority)
        .open_in_memory(&schema())?;
    register(&mut store);
    Ok(store)
}

fn push(server: &mut Store, client: &Store) -> meldb::Result<()> {
    server.process_push(&client.push_request()?)?;
    Ok(())
}

fn pull(server: &Store, client: &mut Store) -> meldb::Result<PullReport> {
    let (vv, first) = client.pull_request()?;
    let response = server.pull_for(client.site_id(), &vv, first)?;
    client.apply_pull(&response)
}

fn col(store: &Store, table: &str, key: &str, column: &str) -> meldb::Result<Option<Value>> {
    Ok(store
        .get(table, key)?
        .and_then(|cols| cols.into_iter().find(|(c, _)| c == column))
        .map(|(_, v)| v))
}

#[test]
fn urgent_mark_reverts_when_the_authority_saw_the_title_change_first() -> TestResult {
    let time = ManualTime::new(T0);
    let mut server = open(1, &time, true)?;
    let mut a = open(2, &time, false)?;
    let mut b = open(3, &time, false)?;
    a.mutate("create", &("t1", "urgent: fix the boiler"))?;
    push(&mut server, &a)?;
    pull(&server, &mut a)?;
    pull(&server, &mut b)?;

    // B drops "urgent" and pushes first; A, not knowing, marks it urgent.
    b.mutate(
        "set_text",
        &SetText {
            id: "t1".into(),
            column: "title".into(),
            text: "fix the boiler".into(),
        },
    )?;
    push(&mut server, &b)?;
    a.mutate("mark_urgent", &"t1")?;
    assert_eq!(col(&a, "todo", "t1", "urgent")?, Some(Value::Integer(1)));
    assert_eq!(a.pending_mutations()?.len(), 1);

    push(&mut server, &a)?;
    assert_eq!(
        col(&server, "todo", "t1", "urgent")?,
        Some(Value::Integer(0))
    );
    let report = pull(&server, &mut a)?;
    assert_eq!(report.acknowledged, 1);
    assert!(a.pending_mutations()?.is_empty());
    assert_eq!(col(&a, "todo", "t1", "urgent")?, Some(Value::Integer(0)));
    assert_eq!(
        col(&a, "todo", "t1", "title")?,
        Some(Value::from("fix the boiler"))
    );
    pull(&server, &mut b)?;
    assert_eq!(a.digest()?, server.digest()?);
    assert_eq!(b.digest()?, server.digest()?);
    Ok(())
}

#[test]
fn second_booking_fails_at_the_authority_and_disappears_after_pull() -> TestResult {
    let time = ManualTime::new(T0);
    let mut server = open(1, &time, true)?;
    let mut a = open(2, &time, false)?;
    let mut b = open(3, &time, false)?;
    let book = |user: &str| Book {
        time: "09:00".into(),
        user: user.into(),
    };
    a.mutate("book", &book("ann"))?;
    let bid = b.mutate("book", &book("bea"))?;
    // Both see their own booking at once.
    assert_eq!(col(&a, "slot", "09:00", "booked_by")?, Some("ann".into()));
    assert_eq!(col(&b, "slot", "09:00", "booked_by")?, Some("bea".into()));
    push(&mut server, &a)?;
    push(&mut server, &b)?;
    let report = pull(&server, &mut b)?;
    assert_eq!(report.rejected.len(), 1, "{report:?}");
    assert_eq!(report.rejected[0].id, bid);
    let error = &report.rejected[0].error;
    assert!(
        error.contains("slot 09:00 is taken by") && error.contains("ann"),
        "{error}"
    );
    assert_eq!(col(&b, "slot", "09:00", "booked_by")?, Some("ann".into()));
    assert_eq!(b.mutation_failures()?.len(), 1);
    b.acknowledge_mutation_failure(bid)?;
    assert!(b.mutation_failures()?.is_empty());
    pull(&server, &mut a)?;
    assert_eq!(a.digest()?, server.digest()?);
    assert_eq!(b.digest()?, server.digest()?);
    Ok(())
}

#[test]
fn concurrent_likes_both_count_and_columns_both_survive() -> TestResult {
    let time = ManualTime::new(T0);
    let mut server = open(1, &time, true)?;
    let mut a = open(2, &time, false)?;
    let mut b = open(3, &time, false)?;
    a.mutate("create", &("t1", "water plants"))?;
    push(&mut server, &a)?;
    pull(&server, &mut a)?;
    pull(&server, &mut b)?;
    a.mutate("like", &"t1")?;
    b.mutate("like", &"t1")?;
    let note = |text: &str| SetText {
        id: "t1".into(),
        column: "note".into(),
        text: text.into(),
    };
    a.mutate("set_text", &note("every tuesday"))?;
    b.mutate(
        "set_text",
        &SetText {
            id: "t1".into(),
            column: "title".into(),
            text: "water the plants".into(),
        },
    )?;
    push(&mut server, &a)?;
    push(&mut server, &b)?;
    pull(&server, &mut a)?;
    pull(&server, &mut b)?;
    for store in [&server, &a, &b] {
        assert_eq!(col(store, "todo", "t1", "likes")?, Some(Value::Integer(2)));
        assert_eq!(
            col(store, "todo", "t1", "note")?,
            Some("every tuesday".into())
        );
        assert_eq!(
            col(store, "todo", "t1", "title")?,
            Some("water the plants".into())
        );
    }
    Ok(())
}

#[test]
fn pending_mutations_survive_reopen_and_a_double_push_runs_once() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("client.db");
    let time = ManualTime::new(T0);
    let mut server = open(1, &time, true)?;
    {
        let mut client = StoreOptions::new()
            .site_id(site(2))
            .time_source(Arc::new(time.clone()))
            .open(&path, &schema())?;
        register(&mut client);
        client.mutate("create", &("t1", "buy milk"))?;
        client.mutate("like", &"t1")?;
    }
    let mut client = StoreOptions::new()
        .time_source(Arc::new(time.clone()))
        .open(&path, &schema())?;
    register(&mut client);
    assert_eq!(client.pending_mutations()?.len(), 2);
    assert_eq!(
        col(&client, "todo", "t1", "likes")?,
        Some(Value::Integer(1))
    );
    // Nothing speculative is ever sent as a change.
    assert!(client.changes_since(&server.version_vector())?.is_empty());
    let first = server.process_push(&client.push_request()?)?;
    assert_eq!(first.applied.len(), 2);
    let again = server.process_push(&client.push_request()?)?;
    assert_eq!(again.duplicates, 2);
    assert!(again.applied.is_empty());
    assert_eq!(
        col(&server, "todo", "t1", "likes")?,
        Some(Value::Integer(1))
    );
    pull(&server, &mut client)?;
    assert!(client.pending_mutations()?.is_empty());
    assert_eq!(client.digest()?, server.digest()?);
    Ok(())
}

#[test]
fn subscribers_hear_of_rows_a_rebase_changed() -> TestResult {
    let time = ManualTime::new(T0);
    let mut server = open(1, &time, true)?;
    let mut a = open(2, &time, false)?;
    let mut b = open(3, &time, false)?;
    let heard: Arc<Mutex<Vec<String>>> = Arc::default();
    let sink = heard.clone();
    a.subscribe("slot", move |keys| {
        if let Ok(mut h) = sink.lock() {
            h.extend(keys.iter().map(|k| k.to_string()));
        }
    })?;
    b.mutate(
        "book",
        &Book {
            time: "10:00".into(),
            user: "bea".into(),
        },
    )?;
    push(&mut server, &b)?;
    a.mutate(
        "book",
        &Book {
            time: "10:00".into(),
            user: "ann".into(),
        },
    )?;
    a.mutate(
        "book",
        &Book {
            time: "11:00".into(),
            user: "ann".into(),
        },
    )?;
    push(&mut server, &a)?;
    let report = pull(&server, &mut a)?;
    let keys: Vec<String> = report.changed.iter().map(|(_, k)| k.to_string()).collect();
    // 10:00 went from ann to bea; 11:00 stayed ann's.
    assert_eq!(keys, vec![r#"("10:00")"#.to_owned()]);
    assert_eq!(heard.lock().map(|h| h.clone()).unwrap_or_default(), keys);
    Ok(())
}

/// What a client did, for the property test.
#[derive(Debug, Clone)]
enum Step {
    Mutate(usize, u8, u8),
    Push(usize),
    Pull(usize),
}

fn step() -> impl proptest::strategy::Strategy<Value = Step> {
    use proptest::prelude::*;
    prop_oneof![
        4 => (0..3usize, 0..4u8, 0..4u8).prop_map(|(c, m, k)| Step::Mutate(c, m, k)),
        2 => (0..3usize).prop_map(Step::Push),
        2 => (0..3usize).prop_map(Step::Pull),
    ]
}

/// A mutation by kind `m` on key `k`: creates, likes, edits and bookings,
/// some of which fail at the authority (a second booking, a like of a
/// todo that does not exist).
fn mutate(store: &mut Store, m: u8, k: u8) -> meldb::Result<()> {
    let id = format!("t{k}");
    let result = match m {
        0 => store.mutate("create", &(id.as_str(), "walk the dog")),
        1 => store.mutate("like", &id),
        2 => store.mutate(
            "set_text",
            &SetText {
                id,
                column: "title".into(),
                text: format!("urgent {k}"),
            },
        ),
        _ => store.mutate(
            "book",
            &Book {
                time: format!("{k}:00"),
                user: store.site_id().to_string(),
            },
        ),
    };
    match result {
        Ok(_) | Err(meldb::Error::Mutation(_)) => Ok(()),
        Err(e) => Err(e),
    }
}

/// The client's view as it must be: the authority's state at the client's
/// last pull, with the client's pending mutations run on top in order.
fn expected_view(
    base: &meldb::Changeset,
    pending: &[meldb::PendingMutation],
    time: &ManualTime,
) -> meldb::Result<std::collections::BTreeMap<String, Vec<Vec<Value>>>> {
    let mut scratch = open(9, time, true)?;
    scratch.apply(base)?;
    for m in pending {
        let args: serde_json::Value = serde_json::from_str(&m.args).unwrap_or_default();
        match scratch.mutate(&m.name, &args) {
            Ok(_) | Err(meldb::Error::Mutation(_)) => {}
            Err(e) => return Err(e),
        }
    }
    common::view_rows(&scratch)
}

proptest::proptest! {
    #![proptest_config(proptest::test_runner::Config::with_cases(common::cases()))]

    #[test]
    fn clients_see_the_canonical_state_plus_their_pending_mutations(
        steps in proptest::collection::vec(step(), 1..40)
    ) {
        let time = ManualTime::new(T0);
        let mut server = open(1, &time, true).map_err(|e| proptest::test_runner::TestCaseError::fail(e.to_string()))?;
        let mut clients: Vec<Store> = Vec::new();
        for n in 2..5 {
            clients.push(open(n, &time, false).map_err(|e| proptest::test_runner::TestCaseError::fail(e.to_string()))?);
        }
        let mut bases = vec![meldb::Changeset::new(site(1)); clients.len()];
        let check = |r: meldb::Result<()>| r.map_err(|e| proptest::test_runner::TestCaseError::fail(e.to_string()));
        for step in &steps {
            time.advance(std::time::Duration::from_millis(3));
            let c = match *step {
                Step::Mutate(c, m, k) => { check(mutate(&mut clients[c], m, k))?; c }
                Step::Push(c) => { check(push(&mut server, &clients[c]))?; c }
                Step::Pull(c) => {
                    check(pull(&server, &mut clients[c]).map(|_| ()))?;
                    bases[c] = server.changes_since(&meldb::VersionVector::new())
                        .map_err(|e| proptest::test_runner::TestCaseError::fail(e.to_string()))?;
                    c
                }
            };
            let pending = clients[c].pending_mutations()
                .map_err(|e| proptest::test_runner::TestCaseError::fail(e.to_string()))?;
            let want = expected_view(&bases[c], &pending, &time)
                .map_err(|e| proptest::test_runner::TestCaseError::fail(e.to_string()))?;
            let got = common::view_rows(&clients[c])
                .map_err(|e| proptest::test_runner::TestCaseError::fail(e.to_string()))?;
            proptest::prop_assert_eq!(got, want, "client {} after {:?}", c, step);
        }
        for client in &mut clients {
            check(push(&mut server, client))?;
        }
        for client in &mut clients {
            check(pull(&server, client).map(|_| ()))?;
            proptest::prop_assert!(client.pending_mutations().map(|p| p.is_empty()).unwrap_or(false));
        }
        let want = common::view_rows(&server)
            .map_err(|e| proptest::test_runner::TestCaseError::fail(e.to_string()))?;
        for client in &clients {
            let got = common::view_rows(client)
                .map_err(|e| proptest::test_runner::TestCaseError::fail(e.to_string()))?;
            proptest::prop_assert_eq!(&got, &want);
        }
    }
}

#[test]
fn a_storage_failure_under_a_mutator_decides_nothing() -> TestResult {
    use meldb::StorageError;
    use std::sync::atomic::{AtomicBool, Ordering};
    let time = ManualTime::new(T0);
    let mut server = open(1, &time, true)?;
    let mut client = open(2, &time, false)?;
    let disk_full = Arc::new(AtomicBool::new(true));
    let failing = disk_full.clone();
    server.register_mutator("like", move |tx: &mut Transaction<'_>, id: String| {
        if failing.load(Ordering::SeqCst) {
            return Err(MutatorError::Storage(StorageError::Aborted {
                reason: "disk full".into(),
            }));
        }
        tx.increment("todo", id.as_str(), "likes", 1)?;
        Ok(())
    });
    client.mutate("create", &("t1", "call mum"))?;
    client.mutate("like", &"t1")?;
    // The push fails as a whole: the like is neither applied nor rejected,
    // and the create before it is not committed either.
    assert!(matches!(
        server.process_push(&client.push_request()?),
        Err(meldb::Error::Storage(_))
    ));
    assert!(server.get("todo", "t1")?.is_none());
    disk_full.store(false, Ordering::SeqCst);
    let result = server.process_push(&client.push_request()?)?;
    assert_eq!(result.applied.len(), 2);
    assert!(result.rejected.is_empty());
    pull(&server, &mut client)?;
    assert_eq!(
        col(&client, "todo", "t1", "likes")?,
        Some(Value::Integer(1))
    );
    assert!(client.mutation_failures()?.is_empty());
    Ok(())
}

#[test]
fn sequence_numbers_of_undone_speculation_are_never_reused() -> TestResult {
    let time = ManualTime::new(T0);
    let server = open(1, &time, true)?;
    let mut client = open(2, &time, false)?;
    client.mutate("create", &("t1", "one"))?;
    client.mutate("create", &("t2", "two"))?;
    let used = client
        .version_vector()
        .site(&client.site_id())
        .map_or(0, |r| r.max());
    assert!(used >= 2, "speculative writes used sequence numbers");
    // The pull takes both speculative writes off (the server never saw
    // them) and replays them: with new numbers, never the old ones.
    pull(&server, &mut client)?;
    let after = client
        .version_vector()
        .site(&client.site_id())
        .map_or(0, |r| r.max());
    assert!(
        after >= used + 2,
        "replayed writes reused numbers: {used} then {after}"
    );
    assert!(client.get("todo", "t2")?.is_some());
    Ok(())
}
