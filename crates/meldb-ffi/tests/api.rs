//! The FFI-shaped API driven from Rust, as a foreign language drives it:
//! callbacks are trait objects, values cross as `DbValue`s. The Python
//! suite (crates/meldb-ffi/python/tests) runs the same shapes through the
//! generated bindings; these pin the Rust side's rules without a wheel.

use meldb_ffi::{
    CallbackError, ConflictInfo, ConflictResolver, Database, DbSchema, DbValue, Decision,
    MeldbError, MutationTx, Mutator, WriteOp,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

const SEATS: &str = r#"
name = "seats"
version = 1
[[table]]
name = "seat"
primary_key = ["seat"]
authority = true
[[table.column]]
name = "seat"
type = "text"
[[table.column]]
name = "booked_by"
type = "text"
"#;

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn text(s: &str) -> DbValue {
    DbValue::Text { value: s.into() }
}

fn book(seat: &str, who: &str) -> WriteOp {
    WriteOp::Insert {
        table: "seat".into(),
        values: HashMap::from([("seat".into(), text(seat)), ("booked_by".into(), text(who))]),
    }
}

fn open() -> Result<Arc<Database>, MeldbError> {
    Database::open_in_memory(DbSchema::from_toml(SEATS.into())?, None)
}

struct Failing;

impl ConflictResolver for Failing {
    fn resolve(&self, _: ConflictInfo) -> Result<Decision, CallbackError> {
        Err(CallbackError::Failed {
            message: "rules service down".into(),
        })
    }
}

#[test]
fn a_resolver_that_fails_fails_the_apply_and_the_authority_keeps_its_state() -> TestResult {
    let authority = open()?;
    authority.set_authority(true)?;
    authority.write(vec![book("A1", "alice")])?;
    let before = authority.digest()?;
    authority.add_resolver("seat".into(), "down".into(), Box::new(Failing), 0, true)?;
    let server = authority.serve("127.0.0.1:0".into(), None)?;
    let bob = open()?;
    bob.write(vec![book("A2", "bob")])?;
    let failed = bob.sync_once(server.url(), None);
    assert!(
        matches!(&failed, Err(MeldbError::Sync { .. })),
        "{failed:?}"
    );
    assert_eq!(authority.digest()?, before);
    assert!(authority.get("seat".into(), vec![text("A2")])?.is_none());
    // The relay survived the failed apply: without the resolver it takes
    // the same change.
    assert!(authority.remove_resolver("seat".into(), "down".into())?);
    bob.sync_once(server.url(), None)?;
    assert!(authority.get("seat".into(), vec![text("A2")])?.is_some());
    server.stop()?;
    Ok(())
}

/// A mutator that calls into its own database, and keeps its handle.
struct Reenters {
    db: Mutex<Option<Arc<Database>>>,
    seen: Mutex<Vec<String>>,
    kept: Mutex<Option<Arc<MutationTx>>>,
}

impl Mutator for Reenters {
    fn run(&self, tx: Arc<MutationTx>, _args: String) -> Result<(), CallbackError> {
        if let Some(db) = self.db.lock().map_err(|_| unexpected())?.as_ref() {
            let outcome = match db.digest() {
                Ok(_) => "allowed".to_owned(),
                Err(e) => format!("{e:?}"),
            };
            self.seen.lock().map_err(|_| unexpected())?.push(outcome);
        }
        tx.write(book("M1", "mutator"))
            .map_err(|e| CallbackError::Failed {
                message: e.to_string(),
            })?;
        *self.kept.lock().map_err(|_| unexpected())? = Some(tx);
        Ok(())
    }
}

fn unexpected() -> CallbackError {
    CallbackError::Unexpected {
        message: "poisoned".into(),
    }
}

#[test]
fn a_mutator_cannot_call_its_own_database_and_its_handle_closes_after() -> TestResult {
    let db = open()?;
    let mutator = Arc::new(Reenters {
        db: Mutex::new(Some(db.clone())),
        seen: Mutex::default(),
        kept: Mutex::default(),
    });
    struct Shared(Arc<Reenters>);
    impl Mutator for Shared {
        fn run(&self, tx: Arc<MutationTx>, args: String) -> Result<(), CallbackError> {
            self.0.run(tx, args)
        }
    }
    db.register_mutator("reenter".into(), Box::new(Shared(mutator.clone())))?;
    db.mutate("reenter".into(), "null".into(), None)?;
    let seen = mutator.seen.lock().map_err(|_| "poisoned")?.clone();
    assert_eq!(seen.len(), 1);
    assert!(seen[0].starts_with("Reentrant"), "{seen:?}");
    assert!(db.get("seat".into(), vec![text("M1")])?.is_some());
    let kept = mutator.kept.lock().map_err(|_| "poisoned")?.take();
    let late = kept
        .ok_or("the mutator kept no handle")?
        .write(book("M2", "late"));
    assert!(matches!(late, Err(MeldbError::Closed { .. })), "{late:?}");
    assert!(db.get("seat".into(), vec![text("M2")])?.is_none());
    // Break the cycle (database → mutator → database) before closing.
    mutator.db.lock().map_err(|_| "poisoned")?.take();
    db.close();
    Ok(())
}

#[test]
fn a_transaction_open_when_its_database_closes_commits_nothing() -> TestResult {
    let db = open()?;
    let tx = db.clone().begin()?;
    tx.add(book("T1", "tx"))?;
    db.close();
    assert!(matches!(tx.commit(), Err(MeldbError::Closed { .. })));
    Ok(())
}

#[test]
fn a_failing_operation_names_its_position_and_writes_nothing() -> TestResult {
    let db = open()?;
    let failed = db.write(vec![book("X", "a"), book("Y", "b"), book("X", "c")]);
    match failed {
        Err(MeldbError::Write { message }) => assert!(message.contains("operation 3"), "{message}"),
        other => panic!("expected a write error, got {other:?}"),
    }
    assert!(db.get("seat".into(), vec![text("Y")])?.is_none());
    Ok(())
}
