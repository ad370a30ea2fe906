//! One decision path for every write (issue 13): a pushed mutation's
//! effects meet the same policies and resolvers at the authority as the
//! same change written directly, with the pushing client's token as the
//! writer; a resolver tightens a policy's refusal but never loosens it;
//! a writer is told whenever part of its change was dropped.
//!
//! The booking story runs over real sync: an embedded relay on 127.0.0.1
//! that is the authority, clients that connect with tokens naming their
//! user and roles. The smaller cases sync stores directly, as
//! `tests/conflicts.rs` does.

mod common;

use common::{replica_as as open, tick};

use common::{site, TestResult, T0};
use meldb::sync::{sync_once_tcp, Relay, RelayConfig, SessionConfig, SharedStore, Tokens};
use meldb::{
    ManualTime, MutatorError, Outcome, Resolution, Resolver, Row, Schema, Store, StoreOptions,
    Writer,
};
use tokio::sync::watch;

const BOOKINGS: &str = r#"
name = "bookings"
version = 1
[[table]]
name = "booking"
primary_key = ["seat"]
authority = true
[[table.column]]
name = "seat"
type = "text"
[[table.column]]
name = "user"
type = "text"
"#;

const TOKENS: &str = r#"
[[token]]
name = "alice"
token = "alice-secret"
access = "read-write"
user = "alice"
[[token]]
name = "bob"
token = "bob-secret"
access = "read-write"
user = "bob"
[[token]]
name = "admin"
token = "admin-secret"
access = "read-write"
user = "carol"
roles = ["admin"]
"#;

fn schema(text: &str) -> Schema {
    match Schema::from_toml_str(text, "test.toml") {
        Ok(s) => s,
        Err(e) => panic!("test schema must parse: {e}"),
    }
}

/// "One booking per seat": a booking may not replace another user's.
fn one_booking_per_seat() -> Resolver {
    Resolver::new("one booking per seat", |c| {
        let (Some(local), Some(incoming)) = (c.local(), c.incoming()) else {
            return Resolution::Pass;
        };
        match (local.text("user"), incoming.text("user")) {
            (Some(holder), Some(new)) if holder != new => Resolution::Reject(format!(
                "seat {} is already booked by {holder}",
                incoming.text("seat").unwrap_or("?")
            )),
            _ => Resolution::Pass,
        }
    })
}

/// Only admins may cancel a booking, whatever the writer had seen.
fn admin_only_delete() -> Resolver {
    Resolver::new("admin-only delete", |c| {
        if c.incoming().is_none() && c.local().is_some() && !c.writer().has_role("admin") {
            Resolution::Reject("only an admin may cancel a booking".into())
        } else {
            Resolution::Pass
        }
    })
    .priority(10)
    .on_every_change()
}

fn register(store: &mut Store) {
    store.register_mutator("book", |tx, (seat, user): (String, String)| {
        // No check here: the authority's resolvers judge the effect.
        tx.upsert("booking", &[("seat", seat.into()), ("user", user.into())])?;
        Ok(())
    });
    store.register_mutator("cancel", |tx, seat: String| {
        tx.delete("booking", seat.as_str())?;
        Ok(())
    });
    store.register_mutator("cancel_as_admin", |tx, seat: String| {
        // "Who may do this", written once in the mutator.
        if !tx.writer().has_role("admin") {
            return Err(MutatorError::app(format!(
                "{} is not an admin",
                tx.writer().user.as_deref().unwrap_or("anonymous")
            )));
        }
        tx.delete("booking", seat.as_str())?;
        Ok(())
    });
}

struct Authority {
    addr: String,
    store: SharedStore,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<(), meldb::sync::SyncError>>,
}

async fn authority() -> Result<Authority, Box<dyn std::error::Error>> {
    let mut store = StoreOptions::new()
        .site_id(site(0x10))
        .authority(true)
        .open_in_memory(&schema(BOOKINGS))?;
    register(&mut store);
    store.add_resolver("booking", one_booking_per_seat())?;
    store.add_resolver("booking", admin_only_delete())?;
    let store = SharedStore::new(store);
    let config = RelayConfig::default().tokens(Tokens::from_toml_str(TOKENS, "tokens.toml")?);
    let relay = Relay::bind(store.clone(), "127.0.0.1:0", config).await?;
    let addr = relay.local_addr()?.to_string();
    let (stop, shutdown) = watch::channel(false);
    let task = tokio::spawn(relay.run(shutdown));
    Ok(Authority {
        addr,
        store,
        stop,
        task,
    })
}

fn client(n: u8) -> meldb::Result<SharedStore> {
    let mut store = StoreOptions::new()
        .site_id(site(n))
        .open_in_memory(&schema(BOOKINGS))?;
    register(&mut store);
    Ok(SharedStore::new(store))
}

async fn sync(store: &SharedStore, addr: &str, token: &str) -> TestResult {
    let config = SessionConfig::default().token(Some(token.into()));
    sync_once_tcp(store, addr, config).await?;
    Ok(())
}

fn holder(store: &SharedStore, seat: &str) -> meldb::Result<Option<String>> {
    let row = store.lock().get("booking", seat)?;
    Ok(row
        .map(Row::from)
        .and_then(|r| r.text("user").map(str::to_owned)))
}

fn mutation_failures(store: &SharedStore) -> meldb::Result<Vec<String>> {
    Ok(store
        .lock()
        .mutation_failures()?
        .into_iter()
        .map(|f| f.error)
        .collect())
}

fn rejections(store: &SharedStore) -> meldb::Result<Vec<String>> {
    Ok(store
        .lock()
        .rejections()?
        .into_iter()
        .map(|r| r.reason)
        .collect())
}

/// The booking story with mutators: the second booking is refused with the
/// resolver's reason and reported as a mutation failure; a non-admin's
/// cancel is refused, an admin's stands.
#[tokio::test]
async fn bookings_through_mutators_meet_the_resolvers() -> TestResult {
    let relay = authority().await?;
    let (alice, bob, admin) = (client(1)?, client(2)?, client(3)?);

    // Both book seat 7 offline; each sees its own booking at once.
    alice
        .lock()
        .mutate("book", &("7".to_owned(), "alice".to_owned()))?;
    bob.lock()
        .mutate("book", &("7".to_owned(), "bob".to_owned()))?;
    assert_eq!(holder(&bob, "7")?.as_deref(), Some("bob"));

    sync(&alice, &relay.addr, "alice-secret").await?;
    sync(&bob, &relay.addr, "bob-secret").await?;
    assert_eq!(holder(&relay.store, "7")?.as_deref(), Some("alice"));
    assert_eq!(holder(&bob, "7")?.as_deref(), Some("alice"));
    assert_eq!(
        mutation_failures(&bob)?,
        ["seat 7 is already booked by alice"]
    );
    assert!(bob.lock().pending_mutations()?.is_empty());

    // Bob cancels alice's booking through a mutator: refused.
    bob.lock().mutate("cancel", &"7".to_owned())?;
    sync(&bob, &relay.addr, "bob-secret").await?;
    assert_eq!(holder(&relay.store, "7")?.as_deref(), Some("alice"));
    assert_eq!(holder(&bob, "7")?.as_deref(), Some("alice"));
    let failures = mutation_failures(&bob)?;
    assert_eq!(
        failures.last().map(String::as_str),
        Some("only an admin may cancel a booking")
    );

    // The admin's cancel stands and reaches alice.
    sync(&admin, &relay.addr, "admin-secret").await?;
    admin.lock().mutate("cancel", &"7".to_owned())?;
    sync(&admin, &relay.addr, "admin-secret").await?;
    assert_eq!(holder(&relay.store, "7")?, None);
    assert!(mutation_failures(&admin)?.is_empty());
    sync(&alice, &relay.addr, "alice-secret").await?;
    assert_eq!(holder(&alice, "7")?, None);

    relay.stop.send(true)?;
    relay.task.await??;
    Ok(())
}

/// The same outcomes when the same changes are written directly.
#[tokio::test]
async fn bookings_written_directly_meet_the_same_resolvers() -> TestResult {
    let relay = authority().await?;
    let (alice, bob, admin) = (client(1)?, client(2)?, client(3)?);
    let book = |store: &SharedStore, user: &str| {
        store.write(|tx| tx.upsert("booking", &[("seat", "7".into()), ("user", user.into())]))
    };
    book(&alice, "alice")?;
    book(&bob, "bob")?;
    sync(&alice, &relay.addr, "alice-secret").await?;
    sync(&bob, &relay.addr, "bob-secret").await?;
    // Bob's next sync brings his notice.
    sync(&bob, &relay.addr, "bob-secret").await?;
    assert_eq!(holder(&relay.store, "7")?.as_deref(), Some("alice"));
    assert_eq!(holder(&bob, "7")?.as_deref(), Some("alice"));
    assert_eq!(rejections(&bob)?, ["seat 7 is already booked by alice"]);

    bob.write(|tx| tx.delete("booking", "7"))?;
    sync(&bob, &relay.addr, "bob-secret").await?;
    sync(&bob, &relay.addr, "bob-secret").await?;
    assert_eq!(holder(&relay.store, "7")?.as_deref(), Some("alice"));
    assert_eq!(holder(&bob, "7")?.as_deref(), Some("alice"));
    assert_eq!(
        rejections(&bob)?.last().map(String::as_str),
        Some("only an admin may cancel a booking")
    );

    sync(&admin, &relay.addr, "admin-secret").await?;
    admin.write(|tx| tx.delete("booking", "7"))?;
    sync(&admin, &relay.addr, "admin-secret").await?;
    assert_eq!(holder(&relay.store, "7")?, None);
    assert!(rejections(&admin)?.is_empty());

    relay.stop.send(true)?;
    relay.task.await??;
    Ok(())
}

/// A mutator sees the writer the token vouches for, not what the client
/// claims for itself: bob says he is an admin, his token says otherwise.
#[tokio::test]
async fn a_mutator_sees_the_tokens_writer_not_the_clients_claim() -> TestResult {
    let relay = authority().await?;
    let (alice, bob, admin) = (client(1)?, client(2)?, client(3)?);
    alice
        .lock()
        .mutate("book", &("9".to_owned(), "alice".to_owned()))?;
    sync(&alice, &relay.addr, "alice-secret").await?;
    sync(&bob, &relay.addr, "bob-secret").await?;

    bob.lock()
        .set_writer(Writer::user("bob").with_role("admin"));
    // Bob's own claim lets the optimistic run pass here...
    bob.lock().mutate("cancel_as_admin", &"9".to_owned())?;
    assert_eq!(holder(&bob, "9")?, None);
    // ...and the authority, judging by his token, refuses it.
    sync(&bob, &relay.addr, "bob-secret").await?;
    assert_eq!(holder(&relay.store, "9")?.as_deref(), Some("alice"));
    assert_eq!(holder(&bob, "9")?.as_deref(), Some("alice"));
    assert_eq!(mutation_failures(&bob)?, ["bob is not an admin"]);

    admin
        .lock()
        .set_writer(Writer::user("carol").with_role("admin"));
    sync(&admin, &relay.addr, "admin-secret").await?;
    admin.lock().mutate("cancel_as_admin", &"9".to_owned())?;
    sync(&admin, &relay.addr, "admin-secret").await?;
    assert_eq!(holder(&relay.store, "9")?, None);

    relay.stop.send(true)?;
    relay.task.await??;
    Ok(())
}

// ---------------------------------------------------------------------------
// Without a network: the authority and clients synced directly.

/// A client's sync with the authority: push its changes and mutations (as
/// `writer`), then pull what it lacks with its notices.
fn sync_with(authority: &mut Store, client: &mut Store, writer: &Writer) -> meldb::Result<()> {
    let push = client.changes_since(&authority.version_vector())?;
    authority.apply_from(&push, writer)?;
    authority.process_push_from("", writer, &client.push_request()?)?;
    let (vv, first) = client.pull_request()?;
    let pull = authority.pull_for(client.site_id(), &vv, first)?;
    client.apply_pull(&pull)?;
    Ok(())
}

fn text(store: &Store, table: &str, key: &str, column: &str) -> meldb::Result<Option<String>> {
    Ok(store
        .get(table, key)?
        .map(Row::from)
        .and_then(|r| r.text(column).map(str::to_owned)))
}

const LISTINGS: &str = r#"
name = "listings"
version = 1
[[table]]
name = "listing"
primary_key = ["id"]
authority = true
[[table.column]]
name = "id"
type = "text"
[[table.column]]
name = "title"
type = "text"
[[table.column]]
name = "price"
type = "integer"
policy = "conditional"
"#;

/// A resolver's `Accept` does not swallow a `conditional` refusal: the log
/// says rejected, the writer is told, and the refusal covers the writer's
/// whole change to the row (its title too).
#[test]
fn accept_over_a_conditional_refusal_is_still_a_refusal_of_the_whole_row() -> TestResult {
    let s = schema(LISTINGS);
    let time = ManualTime::new(T0);
    let mut server = open(&s, 1, &time, true)?;
    server.add_resolver("listing", Resolver::new("yes", |_| Resolution::Accept))?;
    let mut ann = open(&s, 2, &time, false)?;
    let mut ben = open(&s, 3, &time, false)?;
    server.write(|tx| {
        tx.insert(
            "listing",
            &[
                ("id", "L1".into()),
                ("title", "Bike".into()),
                ("price", 100.into()),
            ],
        )
    })?;
    sync_with(&mut server, &mut ann, &Writer::user("ann"))?;
    sync_with(&mut server, &mut ben, &Writer::user("ben"))?;
    tick(&time);
    ann.write(|tx| tx.set("listing", "L1", "price", 120))?;
    tick(&time);
    ben.write(|tx| {
        tx.update(
            "listing",
            "L1",
            &[("price", 90.into()), ("title", "Red bike".into())],
        )
    })?;
    sync_with(&mut server, &mut ann, &Writer::user("ann"))?;
    sync_with(&mut server, &mut ben, &Writer::user("ben"))?;
    sync_with(&mut server, &mut ben, &Writer::user("ben"))?;

    assert_eq!(
        text(&server, "listing", "L1", "title")?.as_deref(),
        Some("Bike")
    );
    assert_eq!(
        text(&ben, "listing", "L1", "title")?.as_deref(),
        Some("Bike")
    );
    let log = server.conflicts(Some("listing"), None, 10)?;
    assert_eq!(
        log.first().map(|r| r.outcome),
        Some(Outcome::Rejected),
        "{log:?}"
    );
    let told = ben.rejections()?;
    assert_eq!(told.len(), 1, "{told:?}");
    assert!(
        told[0].reason.contains("\"price\" was changed"),
        "{}",
        told[0].reason
    );
    Ok(())
}

const DOCS: &str = r#"
name = "docs"
version = 1
[[table]]
name = "doc"
primary_key = ["id"]
authority = true
[[table.column]]
name = "id"
type = "text"
[[table.column]]
name = "title"
type = "text"
[[table.column]]
name = "owner"
type = "text"
"#;

/// `KeepLocal` tells the overruled writer, with the resolver's name.
#[test]
fn keep_local_tells_the_overruled_writer() -> TestResult {
    let s = schema(DOCS);
    let time = ManualTime::new(T0);
    let mut server = open(&s, 1, &time, true)?;
    server.add_resolver(
        "doc",
        Resolver::new("owner decides", |c| {
            let owner = c.local().and_then(|r| r.text("owner")).unwrap_or_default();
            if c.writer().user.as_deref() == Some(owner) {
                Resolution::Pass
            } else {
                Resolution::KeepLocal
            }
        }),
    )?;
    let mut ann = open(&s, 2, &time, false)?;
    let mut ben = open(&s, 3, &time, false)?;
    ann.write(|tx| {
        tx.insert(
            "doc",
            &[
                ("id", "d".into()),
                ("title", "a".into()),
                ("owner", "ann".into()),
            ],
        )
    })?;
    sync_with(&mut server, &mut ann, &Writer::user("ann"))?;
    sync_with(&mut server, &mut ben, &Writer::user("ben"))?;
    tick(&time);
    ann.write(|tx| tx.set("doc", "d", "title", "ann's"))?;
    tick(&time);
    ben.write(|tx| tx.set("doc", "d", "title", "ben's"))?;
    sync_with(&mut server, &mut ann, &Writer::user("ann"))?;
    sync_with(&mut server, &mut ben, &Writer::user("ben"))?;
    sync_with(&mut server, &mut ben, &Writer::user("ben"))?;
    assert_eq!(text(&ben, "doc", "d", "title")?.as_deref(), Some("ann's"));
    let told = ben.rejections()?;
    assert_eq!(told.len(), 1, "{told:?}");
    assert!(
        told[0].reason.contains("owner decides"),
        "{}",
        told[0].reason
    );
    assert!(ann.rejections()?.is_empty());
    Ok(())
}

/// A mutation's effect that a resolver amends (`Merge`) stands, amended, as
/// a correction: the mutation is not refused.
#[test]
fn a_merge_of_a_mutation_effect_stands_as_a_correction() -> TestResult {
    let s = schema(DOCS);
    let time = ManualTime::new(T0);
    let mut server = open(&s, 1, &time, true)?;
    let mut ann = open(&s, 2, &time, false)?;
    for store in [&mut server, &mut ann] {
        store.register_mutator("create", |tx, (id, title): (String, String)| {
            tx.insert("doc", &[("id", id.into()), ("title", title.into())])?;
            Ok(())
        });
    }
    server.add_resolver(
        "doc",
        Resolver::new("stamp owner", |c| match (c.mutation(), c.incoming()) {
            (Some("create"), Some(row)) => Resolution::Merge(
                row.clone()
                    .with("owner", c.writer().user.clone().unwrap_or_default()),
            ),
            _ => Resolution::Pass,
        }),
    )?;
    ann.mutate("create", &("d".to_owned(), "notes".to_owned()))?;
    sync_with(&mut server, &mut ann, &Writer::user("ann"))?;
    assert!(ann.mutation_failures()?.is_empty());
    assert_eq!(text(&server, "doc", "d", "owner")?.as_deref(), Some("ann"));
    assert_eq!(text(&ann, "doc", "d", "owner")?.as_deref(), Some("ann"));
    assert_eq!(text(&ann, "doc", "d", "title")?.as_deref(), Some("notes"));
    Ok(())
}

// ---------------------------------------------------------------------------
// The law: mutations passing through resolvers, in random delivery orders
// with duplicates, end where a model of the authority says, and every
// mutation is either applied or reported refused, never lost.

/// What a client did.
#[derive(Debug, Clone)]
enum Step {
    /// Client `c` books seat `s` (`false`) or cancels it (`true`).
    Mutate { c: usize, seat: u8, cancel: bool },
    /// Client `c` pushes its pending mutations (again, if it did before).
    Push(usize),
    /// Client `c` pulls.
    Pull(usize),
}

fn step() -> impl proptest::strategy::Strategy<Value = Step> {
    use proptest::prelude::*;
    prop_oneof![
        4 => (0..3usize, 0..3u8, proptest::bool::weighted(0.3))
            .prop_map(|(c, seat, cancel)| Step::Mutate { c, seat, cancel }),
        2 => (0..3usize).prop_map(Step::Push),
        2 => (0..3usize).prop_map(Step::Pull),
    ]
}

/// Client 0 is an admin; 1 and 2 are not.
fn writer_of(c: usize) -> Writer {
    let writer = Writer::user(&format!("u{c}"));
    if c == 0 {
        writer.with_role("admin")
    } else {
        writer
    }
}

/// The authority as the law says: a booking stands if the seat is free or
/// already the same user's; a cancel stands if the writer is an admin and
/// the seat is booked.
#[derive(Default)]
struct Model {
    seats: std::collections::BTreeMap<String, String>,
    /// Per client: mutations made, and how many the authority processed.
    made: Vec<Vec<(u64, String, bool)>>,
    processed: Vec<usize>,
    refused: Vec<std::collections::BTreeSet<u64>>,
}

impl Model {
    fn push(&mut self, c: usize) {
        while self.processed[c] < self.made[c].len() {
            let (id, seat, cancel) = self.made[c][self.processed[c]].clone();
            self.processed[c] += 1;
            let user = format!("u{c}");
            let stands = match (cancel, self.seats.get(&seat)) {
                (false, None) => true,
                (false, Some(holder)) => *holder == user,
                (true, Some(_)) => c == 0,
                (true, None) => false,
            };
            if !stands {
                self.refused[c].insert(id);
            } else if cancel {
                self.seats.remove(&seat);
            } else {
                self.seats.insert(seat, user);
            }
        }
    }
}

fn seats_of(store: &Store) -> meldb::Result<std::collections::BTreeMap<String, String>> {
    let mut stmt = store.conn().prepare("SELECT seat, user FROM booking")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

fn push_from(server: &mut Store, client: &Store, c: usize) -> meldb::Result<()> {
    server.process_push_from("", &writer_of(c), &client.push_request()?)?;
    Ok(())
}

fn pull_into(server: &Store, client: &mut Store) -> meldb::Result<()> {
    let (vv, first) = client.pull_request()?;
    client.apply_pull(&server.pull_for(client.site_id(), &vv, first)?)?;
    Ok(())
}

fn run_steps(steps: &[Step]) -> meldb::Result<Result<(), String>> {
    let s = schema(BOOKINGS);
    let time = ManualTime::new(T0);
    let mut server = open(&s, 1, &time, true)?;
    register(&mut server);
    server.add_resolver("booking", one_booking_per_seat())?;
    server.add_resolver("booking", admin_only_delete())?;
    let mut clients = Vec::new();
    for c in 0..3u8 {
        let mut client = open(&s, 2 + c, &time, false)?;
        register(&mut client);
        client.set_writer(writer_of(usize::from(c)));
        clients.push(client);
    }
    let mut model = Model {
        made: vec![Vec::new(); 3],
        processed: vec![0; 3],
        refused: vec![Default::default(); 3],
        ..Model::default()
    };
    for step in steps {
        tick(&time);
        match *step {
            Step::Mutate { c, seat, cancel } => {
                let seat = format!("s{seat}");
                let user = format!("u{c}");
                let made = if cancel {
                    clients[c].mutate("cancel", &seat)
                } else {
                    clients[c].mutate("book", &(seat.clone(), user))
                };
                match made {
                    Ok(id) => model.made[c].push((id, seat, cancel)),
                    // Refused on the client's own view: nothing queued.
                    Err(meldb::Error::Mutation(_)) => {}
                    Err(e) => return Err(e),
                }
            }
            Step::Push(c) => {
                push_from(&mut server, &clients[c], c)?;
                model.push(c);
            }
            Step::Pull(c) => pull_into(&server, &mut clients[c])?,
        }
    }
    for (c, client) in clients.iter().enumerate() {
        push_from(&mut server, client, c)?;
        model.push(c);
    }
    for client in &mut clients {
        pull_into(&server, client)?;
    }
    let want = model.seats.clone();
    if seats_of(&server)? != want {
        return Ok(Err(format!(
            "authority {:?}, model {want:?}",
            seats_of(&server)?
        )));
    }
    for (c, client) in clients.iter().enumerate() {
        if seats_of(client)? != want {
            return Ok(Err(format!(
                "client {c} {:?}, model {want:?}",
                seats_of(client)?
            )));
        }
        if !client.pending_mutations()?.is_empty() {
            return Ok(Err(format!("client {c} still has pending mutations")));
        }
        let refused: std::collections::BTreeSet<u64> = client
            .mutation_failures()?
            .into_iter()
            .map(|f| f.id)
            .collect();
        if refused != model.refused[c] {
            return Ok(Err(format!(
                "client {c} was told {refused:?} were refused, the model {:?}",
                model.refused[c]
            )));
        }
    }
    Ok(Ok(()))
}

proptest::proptest! {
    #![proptest_config(proptest::test_runner::Config::with_cases(common::cases()))]

    #[test]
    fn mutations_through_resolvers_end_where_the_model_says(
        steps in proptest::collection::vec(step(), 1..40)
    ) {
        match run_steps(&steps) {
            Ok(Ok(())) => {}
            Ok(Err(problem)) => proptest::prop_assert!(false, "{}", problem),
            Err(e) => proptest::prop_assert!(false, "storage: {}", e),
        }
    }
}
