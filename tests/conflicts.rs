//! Conflict scenarios from the field, through the public API and real sync
//! between replicas: resolvers, column policies, the authority's
//! rejections, deferred conflicts and the conflict log.

mod common;

use common::{replica_as as open, tick};

use common::{assert_converged, query, query_one, sync, sync_all, view_rows, TestResult, T0};
use meldb::{
    Changeset, ConflictCount, DeferredShows, Error, Key, ManualTime, Outcome, Resolution,
    ResolveError, Resolver, Row, Schema, Store, Value, VersionVector, WriteError, Writer,
};
use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

fn schema(text: &str) -> Schema {
    match Schema::from_toml_str(text, "test.toml") {
        Ok(s) => s,
        Err(e) => panic!("test schema must parse: {e}"),
    }
}

/// A client's sync with the authority: push its changes (as `writer`), then
/// pull the authority's, with any rejection notices addressed to it.
fn sync_with(authority: &mut Store, client: &mut Store, writer: &Writer) -> meldb::Result<()> {
    let push = client.changes_since(&authority.version_vector())?;
    authority.apply_from(&push, writer)?;
    let vv = client.version_vector();
    let notices = authority.rejections_for(client.site_id(), &vv)?;
    client.apply(&authority.changes_since(&vv)?)?;
    client.receive_rejections(&notices)?;
    Ok(())
}

/// Leaderless sync between two replicas, both directions.
fn exchange(a: &mut Store, b: &mut Store) -> meldb::Result<()> {
    sync(a, b)?;
    sync(b, a)?;
    Ok(())
}

/// Leaderless sync from `stores[from]` to `stores[to]`.
fn deliver(stores: &mut [Store], from: usize, to: usize) -> meldb::Result<meldb::ApplyReport> {
    let changes = stores[from].changes_since(&stores[to].version_vector())?;
    stores[to].apply(&changes)
}

/// A live row as resolvers see it.
fn row(store: &Store, table: &str, key: impl Into<Key>) -> meldb::Result<Option<Row>> {
    Ok(store.get(table, key)?.map(Row::from))
}

/// A live row that must exist.
fn live(store: &Store, table: &str, key: &str) -> meldb::Result<Row> {
    Ok(row(store, table, key)?.unwrap_or_else(|| panic!("{table} row {key} must be live")))
}

fn text_of(store: &Store, table: &str, key: &str, column: &str) -> meldb::Result<Option<String>> {
    Ok(live(store, table, key)?.text(column).map(str::to_owned))
}

fn int_of(store: &Store, table: &str, key: &str, column: &str) -> meldb::Result<Option<i64>> {
    Ok(live(store, table, key)?.integer(column))
}

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

#[test]
fn seat_booking_second_booker_is_rejected_with_the_first_bookers_name() -> TestResult {
    let s = schema(SEATS);
    let time = ManualTime::new(T0);
    let mut server = open(&s, 1, &time, true)?;
    server.add_resolver(
        "seat",
        Resolver::new("one booking per seat", |c| {
            match (c.local().and_then(|r| r.text("booked_by")), c.incoming()) {
                (Some(first), Some(inc)) if inc.text("booked_by") != Some(first) => {
                    Resolution::Reject(format!("Seat {} already booked by {first}", c.key()))
                }
                _ => Resolution::Accept,
            }
        }),
    )?;
    let mut alice = open(&s, 2, &time, false)?;
    let mut bob = open(&s, 3, &time, false)?;
    // Both book A1 offline; bob's write is even the later one.
    alice.write(|tx| {
        tx.insert(
            "seat",
            &[("seat", "A1".into()), ("booked_by", "alice".into())],
        )
    })?;
    time.advance(Duration::from_millis(10));
    bob.write(|tx| {
        tx.insert(
            "seat",
            &[("seat", "A1".into()), ("booked_by", "bob".into())],
        )
    })?;
    time.advance(Duration::from_millis(10));
    sync_with(&mut server, &mut alice, &Writer::user("alice"))?;
    sync_with(&mut server, &mut bob, &Writer::user("bob"))?;
    sync_with(&mut server, &mut alice, &Writer::user("alice"))?;

    for store in [&server, &alice, &bob] {
        let row = store.get("seat", "A1")?.expect("seat row");
        assert_eq!(row[1].1, Value::from("alice"));
    }
    let notices = bob.rejections()?;
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert!(
        notices[0].reason.contains("already booked by alice"),
        "{}",
        notices[0].reason
    );
    assert_eq!(
        notices[0]
            .rejected_row()
            .and_then(|r| r.text("booked_by").map(str::to_owned)),
        Some("bob".to_owned())
    );
    assert!(alice.rejections()?.is_empty());
    let log = server.conflicts(Some("seat"), None, 10)?;
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].outcome, Outcome::Rejected);
    assert_eq!(log[0].writer.user.as_deref(), Some("bob"));
    // The notice is delivered once.
    sync_with(&mut server, &mut bob, &Writer::user("bob"))?;
    assert_eq!(bob.rejections()?.len(), 1);
    bob.acknowledge_rejection(&notices[0])?;
    assert!(bob.rejections()?.is_empty());
    assert_eq!(server.digest()?, bob.digest()?);
    assert_eq!(server.digest()?, alice.digest()?);
    Ok(())
}

// ---------------------------------------------------------------------------
// A hold record edited concurrently from two regions.

const HOLDS: &str = r#"
name = "holds"
version = 1
[[table]]
name = "hold"
primary_key = ["id"]
[[table.column]]
name = "id"
type = "text"
[[table.column]]
name = "status"
type = "text"
nullable = false
default = "active"
order = ["active < confirmed"]
absorbing = ["confirmed", "released"]
[[table.column]]
name = "expires_at"
type = "integer"
[[table.column]]
name = "booking_id"
type = "text"
"#;

fn holds(authority: bool) -> Schema {
    if authority {
        schema(&HOLDS.replace(
            "primary_key = [\"id\"]",
            "primary_key = [\"id\"]\nauthority = true",
        ))
    } else {
        schema(HOLDS)
    }
}

const HOUR: i64 = 3_600_000;

/// Region 2 extends hold H1 while region 3 confirms it; replica 1 (the
/// authority, or a third peer) receives the two in the given order.
fn confirm_against_extension(authority: bool, confirm_first: bool) -> TestResult {
    let s = holds(authority);
    let time = ManualTime::new(T0);
    let mut origin = open(&s, 1, &time, authority)?;
    let mut extender = open(&s, 2, &time, false)?;
    let mut confirmer = open(&s, 3, &time, false)?;
    let expires = T0 as i64 + HOUR;
    origin.write(|tx| {
        tx.insert(
            "hold",
            &[("id", "H1".into()), ("expires_at", expires.into())],
        )
    })?;
    sync(&origin, &mut extender)?;
    sync(&origin, &mut confirmer)?;
    tick(&time);
    confirmer.write(|tx| {
        tx.update(
            "hold",
            "H1",
            &[("status", "confirmed".into()), ("booking_id", "B-7".into())],
        )
    })?;
    // The extension is the later write, and re-states "active": a plain
    // last-writer-wins status would fall back from "confirmed".
    tick(&time);
    extender.write(|tx| {
        tx.update(
            "hold",
            "H1",
            &[
                ("status", "active".into()),
                ("expires_at", (expires + HOUR).into()),
            ],
        )
    })?;
    tick(&time);
    let region = |n| Writer::user(&format!("region-{n}"));
    if authority {
        if confirm_first {
            sync_with(&mut origin, &mut confirmer, &region(3))?;
            sync_with(&mut origin, &mut extender, &region(2))?;
        } else {
            sync_with(&mut origin, &mut extender, &region(2))?;
            sync_with(&mut origin, &mut confirmer, &region(3))?;
        }
        sync_with(&mut origin, &mut confirmer, &region(3))?;
        sync_with(&mut origin, &mut extender, &region(2))?;
    } else if confirm_first {
        sync(&confirmer, &mut origin)?;
        sync(&extender, &mut origin)?;
    } else {
        sync(&extender, &mut origin)?;
        sync(&confirmer, &mut origin)?;
    }
    // What the first receiver holds, before anyone else syncs further.
    let first = live(&origin, "hold", "H1")?;
    assert_eq!(first.text("status"), Some("confirmed"), "{first:?}");
    assert_eq!(first.text("booking_id"), Some("B-7"), "{first:?}");
    let mut stores = [origin, extender, confirmer];
    sync_all(&mut stores)?;
    assert_converged(&stores)?;
    for store in &stores {
        let row = live(store, "hold", "H1")?;
        assert_eq!(row.text("status"), Some("confirmed"), "{row:?}");
        assert_eq!(row.text("booking_id"), Some("B-7"), "{row:?}");
        assert_eq!(row.integer("expires_at"), Some(expires + HOUR), "{row:?}");
        assert!(store.rejections()?.is_empty());
    }
    Ok(())
}

#[test]
fn hold_confirmation_absorbs_a_concurrent_extension_leaderless_either_order() -> TestResult {
    confirm_against_extension(false, true)?;
    confirm_against_extension(false, false)
}

#[test]
fn hold_confirmation_absorbs_a_concurrent_extension_at_an_authority_either_order() -> TestResult {
    confirm_against_extension(true, true)?;
    confirm_against_extension(true, false)
}

/// A conforming leaderless resolver: the later of the two expiries, a
/// function of the versions' values only.
fn latest_expiry() -> Resolver {
    Resolver::new("latest expiry", |c| {
        let [a, b] = c.versions();
        let expiry = |v: &meldb::Version| v.row.as_ref().and_then(|r| r.integer("expires_at"));
        match (expiry(a), expiry(b)) {
            (Some(x), Some(y)) => Resolution::Merge(Row::new(vec![]).with("expires_at", x.max(y))),
            _ => Resolution::Pass,
        }
    })
}

#[test]
fn two_concurrent_extensions_keep_the_later_expiry() -> TestResult {
    let s = holds(false);
    let time = ManualTime::new(T0);
    let mut stores = Vec::new();
    for n in 1..=3 {
        let mut store = open(&s, n, &time, false)?;
        store.add_resolver("hold", latest_expiry())?;
        stores.push(store);
    }
    let [mut a, mut b, mut c] = <[Store; 3]>::try_from(stores).map_err(|_| "three stores")?;
    let expires = T0 as i64 + HOUR;
    a.write(|tx| {
        tx.insert(
            "hold",
            &[("id", "H1".into()), ("expires_at", expires.into())],
        )
    })?;
    sync(&a, &mut b)?;
    sync(&a, &mut c)?;
    // The longer extension is the earlier write: last-writer-wins would
    // keep the shorter one.
    tick(&time);
    a.write(|tx| tx.set("hold", "H1", "expires_at", expires + 5 * HOUR))?;
    tick(&time);
    b.write(|tx| tx.set("hold", "H1", "expires_at", expires + 2 * HOUR))?;
    tick(&time);
    let report = sync(&b, &mut a)?;
    assert_eq!(
        report.outcomes.get(&Outcome::Merged),
        Some(&1),
        "{report:?}"
    );
    assert_eq!(
        int_of(&a, "hold", "H1", "expires_at")?,
        Some(expires + 5 * HOUR)
    );
    // c hears of both extensions, b's first.
    sync(&b, &mut c)?;
    sync(&a, &mut c)?;
    sync(&a, &mut b)?;
    let mut stores = [a, b, c];
    sync_all(&mut stores)?;
    assert_converged(&stores)?;
    for store in &stores {
        assert_eq!(
            int_of(store, "hold", "H1", "expires_at")?,
            Some(expires + 5 * HOUR)
        );
    }
    let log = stores[0].conflicts(Some("hold"), Some(Outcome::Merged), 10)?;
    let first = log.last().expect("a merged conflict on a");
    assert_eq!(first.resolver.as_deref(), Some("latest expiry"));
    assert_eq!(
        first.result.as_ref().and_then(|r| r.integer("expires_at")),
        Some(expires + 5 * HOUR)
    );
    Ok(())
}

/// Defers a hold released in one region while another kept it active.
fn review_releases() -> Resolver {
    Resolver::new("review releases", |c| {
        let statuses: BTreeSet<&str> = c
            .versions()
            .iter()
            .filter_map(|v| v.row.as_ref().and_then(|r| r.text("status")))
            .collect();
        if statuses == BTreeSet::from(["active", "released"]) {
            Resolution::Defer(format!(
                "hold {} was released in one region and kept active in another",
                c.key()
            ))
        } else {
            Resolution::Pass
        }
    })
}

#[test]
fn released_against_active_is_deferred_for_review_and_the_choice_syncs() -> TestResult {
    let s = holds(false);
    let time = ManualTime::new(T0);
    let mut a = open(&s, 1, &time, false)?;
    let mut b = open(&s, 2, &time, false)?;
    a.add_resolver("hold", review_releases())?;
    b.add_resolver("hold", review_releases())?;
    let expires = T0 as i64 + HOUR;
    a.write(|tx| {
        tx.insert(
            "hold",
            &[("id", "H2".into()), ("expires_at", expires.into())],
        )
    })?;
    sync(&a, &mut b)?;
    tick(&time);
    a.write(|tx| tx.set("hold", "H2", "status", "released"))?;
    tick(&time);
    b.write(|tx| {
        tx.update(
            "hold",
            "H2",
            &[
                ("status", "active".into()),
                ("expires_at", (expires + HOUR).into()),
            ],
        )
    })?;
    tick(&time);
    // b hears of the release first: the conflict is found (and logged) on
    // b; a then receives b's merged row, which descends from its own.
    exchange(&mut a, &mut b)?;

    let log = b.conflicts(Some("hold"), None, 10)?;
    assert_eq!(log.len(), 1, "{log:?}");
    let record = &log[0];
    assert_eq!(record.outcome, Outcome::Deferred);
    assert!(record.open);
    assert_eq!(record.resolver.as_deref(), Some("review releases"));
    assert!(
        record
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("released")),
        "{record:?}"
    );
    assert_eq!(
        record.local.as_ref().and_then(|r| r.text("status")),
        Some("active")
    );
    assert_eq!(
        record.incoming.as_ref().and_then(|r| r.text("status")),
        Some("released")
    );
    let waiting = b.deferred_conflicts()?;
    assert_eq!(
        waiting.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![record.id]
    );
    assert!(a.deferred_conflicts()?.is_empty());
    // The log's JSON columns are queryable.
    let both = query(
        &b,
        "SELECT json_extract(local, '$.status'), json_extract(incoming, '$.status'), \
         json_extract(local, '$.expires_at') FROM meldb_conflicts WHERE outcome = 'deferred'",
    )?;
    assert_eq!(
        both,
        vec![vec![
            Value::from("active"),
            Value::from("released"),
            Value::from(expires + HOUR)
        ]]
    );

    // A decision the table cannot hold changes nothing.
    let before = b.digest()?;
    assert!(matches!(
        b.resolve_deferred(record.id, Some(Row::new(vec![]).with("expires_at", "soon"))),
        Err(Error::Resolve(ResolveError::InvalidRow { .. }))
    ));
    assert_eq!(b.digest()?, before);
    assert_eq!(b.deferred_conflicts()?.len(), 1);
    // A person keeps the release (and the extended expiry the merge kept).
    b.resolve_deferred(record.id, Some(Row::new(vec![]).with("status", "released")))?;
    assert!(b.deferred_conflicts()?.is_empty());
    let settled = b.conflicts(Some("hold"), None, 10)?;
    assert!(!settled[0].open);
    assert_eq!(
        settled[0].result.as_ref().and_then(|r| r.text("status")),
        Some("released")
    );
    assert!(matches!(
        b.resolve_deferred(record.id, None),
        Err(Error::Resolve(ResolveError::NotDeferred { .. }))
    ));
    assert!(matches!(
        b.resolve_deferred(9_999, None),
        Err(Error::Resolve(ResolveError::UnknownConflict { id: 9_999 }))
    ));
    exchange(&mut a, &mut b)?;
    for store in [&a, &b] {
        let row = live(store, "hold", "H2")?;
        assert_eq!(row.text("status"), Some("released"), "{row:?}");
        assert_eq!(row.integer("expires_at"), Some(expires + HOUR));
    }
    assert_converged(&[a, b])?;
    Ok(())
}

/// Region A releases hold H4 while region B extends it; both sync with
/// the authority, which defers the clash. The merge would be a hybrid
/// neither region wrote (released, with B's later expiry): while it waits,
/// every replica shows the hold as the authority had it, and B is told.
#[test]
fn a_deferred_hold_shows_the_authoritys_row_everywhere_and_its_writer_is_told() -> TestResult {
    let s = holds(true);
    let time = ManualTime::new(T0);
    let mut authority = open(&s, 1, &time, true)?;
    let mut ana = open(&s, 2, &time, false)?;
    let mut ben = open(&s, 3, &time, false)?;
    authority.add_resolver("hold", review_releases())?;
    let expires = T0 as i64 + HOUR;
    authority.write(|tx| {
        tx.insert(
            "hold",
            &[("id", "H4".into()), ("expires_at", expires.into())],
        )
    })?;
    sync_with(&mut authority, &mut ana, &Writer::user("ana"))?;
    sync_with(&mut authority, &mut ben, &Writer::user("ben"))?;
    tick(&time);
    ana.write(|tx| tx.set("hold", "H4", "status", "released"))?;
    tick(&time);
    ben.write(|tx| tx.set("hold", "H4", "expires_at", expires + HOUR))?;
    tick(&time);
    sync_with(&mut authority, &mut ana, &Writer::user("ana"))?;
    sync_with(&mut authority, &mut ben, &Writer::user("ben"))?;
    sync_with(&mut authority, &mut ana, &Writer::user("ana"))?;

    let waiting = authority.deferred_conflicts()?;
    assert_eq!(waiting.len(), 1, "{waiting:?}");
    let record = &waiting[0];
    let hybrid = record.merged.as_ref().ok_or("a merged row")?;
    assert_eq!(
        (hybrid.text("status"), hybrid.integer("expires_at")),
        (Some("released"), Some(expires + HOUR)),
        "the merge is a hybrid"
    );
    for store in [&authority, &ana, &ben] {
        let row = live(store, "hold", "H4")?;
        assert_eq!(
            (row.text("status"), row.integer("expires_at")),
            (Some("released"), Some(expires)),
            "{row:?}"
        );
    }
    assert_eq!(
        record.result.as_ref().and_then(|r| r.integer("expires_at")),
        Some(expires)
    );
    // The writer whose change waits is told, with the resolver's reason;
    // the other region is not.
    let notices = ben.rejections()?;
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert!(
        notices[0].reason.contains("released in one region"),
        "{notices:?}"
    );
    assert_eq!(
        notices[0]
            .rejected_row()
            .and_then(|r| r.integer("expires_at")),
        Some(expires + HOUR)
    );
    assert!(ana.rejections()?.is_empty());

    // A person keeps the merge: release and extension both stand.
    authority.keep_deferred(record.id, DeferredShows::Merged)?;
    assert!(authority.deferred_conflicts()?.is_empty());
    sync_with(&mut authority, &mut ana, &Writer::user("ana"))?;
    sync_with(&mut authority, &mut ben, &Writer::user("ben"))?;
    for store in [&authority, &ana, &ben] {
        let row = live(store, "hold", "H4")?;
        assert_eq!(
            (row.text("status"), row.integer("expires_at")),
            (Some("released"), Some(expires + HOUR)),
            "{row:?}"
        );
    }
    assert_converged(&[authority, ana, ben])?;
    Ok(())
}

const PRICE_LIST: &str = r#"
name = "prices"
version = 1
[[table]]
name = "product"
primary_key = ["sku"]
authority = true
deferred_shows = "local"
[[table.column]]
name = "sku"
type = "text"
[[table.column]]
name = "price"
type = "integer"
[[table.column]]
name = "title"
type = "text"
"#;

/// A price change by anyone but a manager waits for approval; it runs on
/// every change, conflict or not.
fn price_approval() -> Resolver {
    Resolver::new("price approval", |c| {
        let price = |r: Option<&Row>| r.and_then(|r| r.integer("price"));
        if price(c.local()) == price(c.incoming()) || c.writer().has_role("manager") {
            Resolution::Pass
        } else {
            Resolution::Defer(format!(
                "{} wants price {:?} for {}",
                c.writer().user.as_deref().unwrap_or("someone"),
                price(c.incoming()),
                c.key()
            ))
        }
    })
    .on_every_change()
}

#[test]
fn a_deferred_price_stays_hidden_until_approved_and_its_writer_is_told() -> TestResult {
    let s = schema(PRICE_LIST);
    let time = ManualTime::new(T0);
    let mut authority = open(&s, 1, &time, true)?;
    let mut alice = open(&s, 2, &time, false)?;
    let mut bob = open(&s, 3, &time, false)?;
    authority.add_resolver("product", price_approval())?;
    authority.write(|tx| {
        tx.insert(
            "product",
            &[
                ("sku", "P1".into()),
                ("price", 10.into()),
                ("title", "Mug".into()),
            ],
        )
    })?;
    sync_with(&mut authority, &mut alice, &Writer::user("alice"))?;
    sync_with(&mut authority, &mut bob, &Writer::user("bob"))?;
    tick(&time);
    // Alice reprices (a fast-forward: nobody else touched P1).
    alice.write(|tx| tx.set("product", "P1", "price", 1))?;
    assert_eq!(int_of(&alice, "product", "P1", "price")?, Some(1));
    sync_with(&mut authority, &mut alice, &Writer::user("alice"))?;
    sync_with(&mut authority, &mut bob, &Writer::user("bob"))?;
    for store in [&authority, &alice, &bob] {
        assert_eq!(int_of(store, "product", "P1", "price")?, Some(10));
    }
    let waiting = authority.deferred_conflicts()?;
    assert_eq!(waiting.len(), 1, "{waiting:?}");
    assert_eq!(waiting[0].writer.user.as_deref(), Some("alice"));
    let notices = alice.rejections()?;
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert!(
        notices[0].reason.contains("alice wants price Some(1)"),
        "{notices:?}"
    );
    assert!(bob.rejections()?.is_empty());
    // Delivered once.
    sync_with(&mut authority, &mut alice, &Writer::user("alice"))?;
    assert_eq!(alice.rejections()?.len(), 1);

    // A manager's own change passes; the waiting one is approved.
    tick(&time);
    bob.write(|tx| tx.set("product", "P1", "title", "Big mug"))?;
    sync_with(
        &mut authority,
        &mut bob,
        &Writer::user("bob").with_role("manager"),
    )?;
    authority.keep_deferred(waiting[0].id, DeferredShows::Incoming)?;
    sync_with(&mut authority, &mut alice, &Writer::user("alice"))?;
    sync_with(&mut authority, &mut bob, &Writer::user("bob"))?;
    for store in [&authority, &alice, &bob] {
        assert_eq!(int_of(store, "product", "P1", "price")?, Some(1));
        assert_eq!(
            text_of(store, "product", "P1", "title")?.as_deref(),
            Some("Big mug")
        );
    }
    assert_converged(&[authority, alice, bob])?;
    Ok(())
}

#[test]
fn a_table_without_an_authority_cannot_show_one_side_of_a_deferral() {
    let text = PRICE_LIST.replace("authority = true\n", "");
    let err = match Schema::from_toml_str(&text, "prices.toml") {
        Ok(schema) => panic!("accepted {schema:?}"),
        Err(e) => e,
    };
    let message = err.to_string();
    assert!(message.contains("\"product\""), "{message}");
    assert!(message.contains("needs an authority"), "{message}");
}

// ---------------------------------------------------------------------------
// Inventory: two clerks sell the same item offline.

#[test]
fn inventory_two_offline_sales_both_count() -> TestResult {
    let s = common::inventory();
    let time = ManualTime::new(T0);
    let mut a = open(&s, 1, &time, false)?;
    let mut b = open(&s, 2, &time, false)?;
    a.write(|tx| tx.insert("item", &[("sku", "W1".into()), ("stock", 10.into())]))?;
    sync(&a, &mut b)?;
    tick(&time);
    a.write(|tx| {
        tx.increment("item", "W1", "stock", -1)?;
        tx.increment("item", "W1", "sold", 1)
    })?;
    tick(&time);
    b.write(|tx| {
        tx.increment("item", "W1", "stock", -2)?;
        tx.increment("item", "W1", "sold", 2)
    })?;
    let report = sync(&b, &mut a)?;
    assert_eq!(
        report.outcomes.get(&Outcome::AutoMerged),
        Some(&1),
        "{report:?}"
    );
    sync(&a, &mut b)?;
    for store in [&a, &b] {
        assert_eq!(int_of(store, "item", "W1", "stock")?, Some(7));
        assert_eq!(int_of(store, "item", "W1", "sold")?, Some(3));
    }
    // Logged where the conflict was found; b's merge was a fast-forward.
    assert_eq!(
        a.conflict_counts()?,
        vec![ConflictCount {
            table: "item".into(),
            outcome: Outcome::AutoMerged,
            count: 1
        }]
    );
    assert!(b.conflict_counts()?.is_empty());
    let stock = query(
        &a,
        "SELECT json_extract(local, '$.stock'), json_extract(incoming, '$.stock'), \
         json_extract(merged, '$.stock'), json_extract(result, '$.stock') FROM meldb_conflicts",
    )?;
    assert_eq!(stock, vec![vec![9.into(), 8.into(), 7.into(), 7.into()]]);
    assert_converged(&[a, b])?;
    Ok(())
}

/// Both regions send before either receives, so each finds the conflict
/// and defers it; a person settles it on one of them.
#[test]
#[ignore = "design gap: a deferral found on two leaderless replicas stays open on the \
            one where nobody settled it, though the settlement has arrived there"]
fn a_deferral_settled_on_one_replica_is_closed_on_the_others() -> TestResult {
    let s = holds(false);
    let time = ManualTime::new(T0);
    let mut a = open(&s, 1, &time, false)?;
    let mut b = open(&s, 2, &time, false)?;
    a.add_resolver("hold", review_releases())?;
    b.add_resolver("hold", review_releases())?;
    a.write(|tx| tx.insert("hold", &[("id", "H3".into())]))?;
    sync(&a, &mut b)?;
    tick(&time);
    a.write(|tx| tx.set("hold", "H3", "status", "released"))?;
    b.write(|tx| tx.set("hold", "H3", "expires_at", T0 as i64 + HOUR))?;
    let to_b = a.changes_since(&b.version_vector())?;
    let to_a = b.changes_since(&a.version_vector())?;
    a.apply(&to_a)?;
    b.apply(&to_b)?;
    let open_on_a = a.deferred_conflicts()?;
    assert_eq!(open_on_a.len(), 1);
    assert_eq!(b.deferred_conflicts()?.len(), 1);
    a.resolve_deferred(
        open_on_a[0].id,
        Some(Row::new(vec![]).with("status", "released")),
    )?;
    exchange(&mut a, &mut b)?;
    assert_eq!(
        text_of(&b, "hold", "H3", "status")?.as_deref(),
        Some("released")
    );
    assert!(
        b.deferred_conflicts()?.is_empty(),
        "b still asks a person about a conflict a person settled on a"
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// The last item sold twice: the authority refuses the second sale, and its
// correction moves the counter back.

const STOCK: &str = r#"
name = "stock"
version = 1
[[table]]
name = "item"
primary_key = ["sku"]
authority = true
[[table.column]]
name = "sku"
type = "text"
[[table.column]]
name = "stock"
type = "integer"
kind = "pn_counter"
"#;

#[test]
fn authority_refuses_an_oversell_and_compensates_the_counter() -> TestResult {
    let s = schema(STOCK);
    let time = ManualTime::new(T0);
    let mut server = open(&s, 1, &time, true)?;
    server.add_resolver(
        "item",
        Resolver::new("no oversell", |c| {
            match c.merged().and_then(|r| r.integer("stock")) {
                Some(n) if n < 0 => Resolution::Reject(format!("{} is sold out", c.key())),
                _ => Resolution::Accept,
            }
        }),
    )?;
    let mut a = open(&s, 2, &time, false)?;
    let mut b = open(&s, 3, &time, false)?;
    server.write(|tx| tx.insert("item", &[("sku", "W1".into()), ("stock", 1.into())]))?;
    sync_with(&mut server, &mut a, &Writer::user("a"))?;
    sync_with(&mut server, &mut b, &Writer::user("b"))?;
    tick(&time);
    a.write(|tx| tx.increment("item", "W1", "stock", -1))?;
    b.write(|tx| tx.increment("item", "W1", "stock", -1))?;
    tick(&time);
    sync_with(&mut server, &mut a, &Writer::user("a"))?;
    sync_with(&mut server, &mut b, &Writer::user("b"))?;
    sync_with(&mut server, &mut a, &Writer::user("a"))?;
    for store in [&server, &a, &b] {
        assert_eq!(int_of(store, "item", "W1", "stock")?, Some(0));
    }
    assert_eq!(b.rejections()?.len(), 1);
    assert!(a.rejections()?.is_empty());
    assert_converged(&[server, a, b])?;
    Ok(())
}

// ---------------------------------------------------------------------------
// A shipped order rejects later edits and deletes.

const SHOP: &str = r#"
name = "shop"
version = 1
[[table]]
name = "orders"
primary_key = ["id"]
authority = true
[[table.column]]
name = "id"
type = "text"
[[table.column]]
name = "status"
type = "text"
[[table.column]]
name = "address"
type = "text"
"#;

fn frozen_once_shipped() -> Resolver {
    Resolver::new("frozen once shipped", |c| {
        let shipped = c.local().and_then(|r| r.text("status")) == Some("shipped");
        match c.incoming() {
            None if shipped && !c.writer().has_role("admin") => Resolution::Reject(format!(
                "order {} has shipped; only an admin may delete it",
                c.key()
            )),
            None => Resolution::Accept,
            Some(_) if shipped => {
                Resolution::Reject(format!("order {} has shipped and cannot change", c.key()))
            }
            Some(_) => Resolution::Accept,
        }
    })
    .on_every_change()
}

#[test]
fn shipped_order_rejects_edits_and_non_admin_deletes_but_not_an_admin_delete() -> TestResult {
    let s = schema(SHOP);
    let time = ManualTime::new(T0);
    let mut server = open(&s, 1, &time, true)?;
    server.add_resolver("orders", frozen_once_shipped())?;
    let mut clerk = open(&s, 2, &time, false)?;
    let mut admin = open(&s, 3, &time, false)?;
    let carol = Writer::user("carol");
    let root = Writer::user("root").with_role("admin");
    server.write(|tx| {
        tx.insert(
            "orders",
            &[
                ("id", "O1".into()),
                ("status", "paid".into()),
                ("address", "1 Main St".into()),
            ],
        )
    })?;
    sync_with(&mut server, &mut clerk, &carol)?;
    sync_with(&mut server, &mut admin, &root)?;
    tick(&time);
    server.write(|tx| tx.set("orders", "O1", "status", "shipped"))?;
    tick(&time);
    // Offline, before hearing of the shipment: a real conflict.
    clerk.write(|tx| tx.set("orders", "O1", "address", "2 Side St"))?;
    tick(&time);
    sync_with(&mut server, &mut clerk, &carol)?;
    let expect_shipped = |store: &Store| -> meldb::Result<()> {
        let row = live(store, "orders", "O1")?;
        assert_eq!(row.text("status"), Some("shipped"), "{row:?}");
        assert_eq!(row.text("address"), Some("1 Main St"), "{row:?}");
        Ok(())
    };
    expect_shipped(&server)?;
    expect_shipped(&clerk)?;
    assert_eq!(clerk.rejections()?.len(), 1);
    // After seeing the shipment: a fast-forward, refused all the same.
    clerk.write(|tx| tx.set("orders", "O1", "address", "3 Late Ave"))?;
    tick(&time);
    sync_with(&mut server, &mut clerk, &carol)?;
    expect_shipped(&server)?;
    expect_shipped(&clerk)?;
    // A delete without the admin role is refused and the row comes back.
    clerk.write(|tx| tx.delete("orders", "O1"))?;
    tick(&time);
    sync_with(&mut server, &mut clerk, &carol)?;
    expect_shipped(&server)?;
    expect_shipped(&clerk)?;
    let notices = clerk.rejections()?;
    assert_eq!(notices.len(), 3, "{notices:?}");
    assert!(
        notices[..2]
            .iter()
            .all(|n| n.reason.contains("cannot change")),
        "{notices:?}"
    );
    assert!(notices[2].reason.contains("only an admin"), "{notices:?}");
    let refused: Vec<Option<String>> = notices
        .iter()
        .map(|n| {
            n.rejected_row()
                .and_then(|r| r.text("address").map(str::to_owned))
        })
        .collect();
    assert_eq!(
        refused,
        vec![Some("2 Side St".into()), Some("3 Late Ave".into()), None]
    );
    assert_eq!(server.digest()?, clerk.digest()?);
    assert_eq!(
        server.conflict_counts()?,
        vec![ConflictCount {
            table: "orders".into(),
            outcome: Outcome::Rejected,
            count: 3
        }]
    );
    assert_eq!(
        query(
            &server,
            "SELECT json_extract(incoming, '$.address') FROM meldb_conflicts \
             WHERE outcome = 'rejected' ORDER BY id"
        )?,
        vec![
            vec![Value::from("2 Side St")],
            vec![Value::from("3 Late Ave")],
            vec![Value::Null]
        ]
    );

    // An admin's delete stands.
    sync_with(&mut server, &mut admin, &root)?;
    admin.write(|tx| tx.delete("orders", "O1"))?;
    tick(&time);
    sync_with(&mut server, &mut admin, &root)?;
    sync_with(&mut server, &mut clerk, &carol)?;
    for store in [&server, &clerk, &admin] {
        assert_eq!(store.get("orders", "O1")?, None);
    }
    assert!(admin.rejections()?.is_empty());
    assert_eq!(clerk.rejections()?.len(), 3);
    assert_converged(&[server, clerk, admin])?;
    Ok(())
}

// ---------------------------------------------------------------------------
// A shopping cart merged by a resolver that unions the items.

const CARTS: &str = r#"
name = "carts"
version = 1
[[table]]
name = "cart"
primary_key = ["owner"]
[[table.column]]
name = "owner"
type = "text"
[[table.column]]
name = "items"
type = "text"
nullable = false
default = "[]"
"#;

fn union_items() -> Resolver {
    Resolver::new("union items", |c| {
        let mut items = BTreeSet::new();
        for v in c.versions() {
            match &v.row {
                Some(row) => items.extend(row.set("items")),
                None => return Resolution::Pass,
            }
        }
        let items: Vec<String> = items.into_iter().collect();
        Resolution::Merge(Row::new(vec![]).with_set("items", &items))
    })
}

fn add_item(store: &mut Store, owner: &str, item: &str) -> meldb::Result<()> {
    let mut items = row(store, "cart", owner)?
        .map(|r| r.set("items"))
        .unwrap_or_default();
    items.push(item.to_owned());
    let text = Row::new(vec![]).with_set("items", &items);
    let value = text.get("items").cloned().unwrap_or(Value::Null);
    store.write(|tx| tx.upsert("cart", &[("owner", owner.into()), ("items", value)]))
}

#[test]
fn shopping_cart_resolver_unions_the_items_of_three_replicas() -> TestResult {
    let s = schema(CARTS);
    let time = ManualTime::new(T0);
    let mut stores = Vec::new();
    for n in 1..=3 {
        let mut store = open(&s, n, &time, false)?;
        store.add_resolver("cart", union_items())?;
        stores.push(store);
    }
    add_item(&mut stores[0], "alice", "apple")?;
    sync_all(&mut stores)?;
    for (i, item) in ["bread", "milk", "eggs"].into_iter().enumerate() {
        tick(&time);
        add_item(&mut stores[i], "alice", item)?;
    }
    tick(&time);
    add_item(&mut stores[1], "alice", "jam")?;
    // Scattered deliveries first, then everyone with everyone.
    deliver(&mut stores, 1, 0)?;
    deliver(&mut stores, 2, 1)?;
    deliver(&mut stores, 0, 2)?;
    deliver(&mut stores, 0, 2)?;
    sync_all(&mut stores)?;
    assert_converged(&stores)?;
    for store in &stores {
        assert_eq!(
            live(store, "cart", "alice")?.set("items"),
            vec!["apple", "bread", "eggs", "jam", "milk"]
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Per-field policies in one table.

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
name = "note"
type = "text"
[[table.column]]
name = "price"
type = "integer"
policy = "conditional"
[[table.column]]
name = "tags"
type = "text"
kind = "or_set"
"#;

#[test]
fn per_field_policies_note_lww_price_conditional_tags_union() -> TestResult {
    // Per column: ben's refused price does not take his note and tag along
    // (`conditional` would refuse his whole change to the row).
    let s = schema(&LISTINGS.replace("\"conditional\"", "\"conditional_column\""));
    let time = ManualTime::new(T0);
    let mut server = open(&s, 1, &time, true)?;
    let mut ann = open(&s, 2, &time, false)?;
    let mut ben = open(&s, 3, &time, false)?;
    server.write(|tx| {
        tx.insert(
            "listing",
            &[
                ("id", "L1".into()),
                ("note", "".into()),
                ("price", 100.into()),
            ],
        )
    })?;
    sync_with(&mut server, &mut ann, &Writer::user("ann"))?;
    sync_with(&mut server, &mut ben, &Writer::user("ben"))?;
    tick(&time);
    ann.write(|tx| {
        tx.update(
            "listing",
            "L1",
            &[("note", "ann".into()), ("price", 120.into())],
        )?;
        tx.add_to_set("listing", "L1", "tags", "sale")
    })?;
    tick(&time);
    ben.write(|tx| {
        tx.update(
            "listing",
            "L1",
            &[("note", "ben".into()), ("price", 90.into())],
        )?;
        tx.add_to_set("listing", "L1", "tags", "new")
    })?;
    tick(&time);
    sync_with(&mut server, &mut ann, &Writer::user("ann"))?;
    sync_with(&mut server, &mut ben, &Writer::user("ben"))?;
    sync_with(&mut server, &mut ann, &Writer::user("ann"))?;
    for store in [&server, &ann, &ben] {
        let row = live(store, "listing", "L1")?;
        assert_eq!(
            row.text("note"),
            Some("ben"),
            "note is last-writer-wins: {row:?}"
        );
        assert_eq!(
            row.integer("price"),
            Some(120),
            "ben's price came too late: {row:?}"
        );
        assert_eq!(row.set("tags"), vec!["new", "sale"], "{row:?}");
    }
    let notices = ben.rejections()?;
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert!(notices[0].reason.contains("price"), "{}", notices[0].reason);
    assert!(ann.rejections()?.is_empty());
    let log = server.conflicts(Some("listing"), None, 10)?;
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(log[0].outcome, Outcome::Rejected);
    assert_eq!(log[0].writer.user.as_deref(), Some("ben"));
    assert!(log[0]
        .resolver
        .as_deref()
        .is_some_and(|r| r.contains("conditional")));

    // Having seen ann's price, ben's next change is no conflict.
    tick(&time);
    ben.write(|tx| tx.set("listing", "L1", "price", 95))?;
    tick(&time);
    sync_with(&mut server, &mut ben, &Writer::user("ben"))?;
    sync_with(&mut server, &mut ann, &Writer::user("ann"))?;
    for store in [&server, &ann, &ben] {
        assert_eq!(int_of(store, "listing", "L1", "price")?, Some(95));
    }
    assert_eq!(ben.rejections()?.len(), 1);
    assert_converged(&[server, ann, ben])?;
    Ok(())
}

/// As above, but ben's concurrent price is the *earlier* write: the
/// register merge keeps ann's price by itself, and the authority must still
/// tell ben that his change was refused.
#[test]
fn conditional_write_that_loses_the_merge_is_still_rejected_with_a_notice() -> TestResult {
    let s = schema(LISTINGS);
    let time = ManualTime::new(T0);
    let mut server = open(&s, 1, &time, true)?;
    let mut ann = open(&s, 2, &time, false)?;
    let mut ben = open(&s, 3, &time, false)?;
    server.write(|tx| tx.insert("listing", &[("id", "L1".into()), ("price", 100.into())]))?;
    sync_with(&mut server, &mut ann, &Writer::user("ann"))?;
    sync_with(&mut server, &mut ben, &Writer::user("ben"))?;
    tick(&time);
    ben.write(|tx| tx.set("listing", "L1", "price", 90))?;
    tick(&time);
    ann.write(|tx| tx.set("listing", "L1", "price", 120))?;
    tick(&time);
    sync_with(&mut server, &mut ann, &Writer::user("ann"))?;
    sync_with(&mut server, &mut ben, &Writer::user("ben"))?;
    assert_eq!(int_of(&ben, "listing", "L1", "price")?, Some(120));
    assert_eq!(
        ben.rejections()?.len(),
        1,
        "ben's 90 was refused: he must be told"
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// A resolver that reads other rows: a budget.

const EXPENSES: &str = r#"
name = "expenses"
version = 1
[[table]]
name = "budget"
primary_key = ["owner"]
[[table.column]]
name = "owner"
type = "text"
[[table.column]]
name = "cap"
type = "integer"
nullable = false
default = 0
[[table]]
name = "expense"
primary_key = ["id"]
authority = true
[[table.column]]
name = "id"
type = "text"
[[table.column]]
name = "owner"
type = "text"
nullable = false
default = ""
[[table.column]]
name = "amount"
type = "integer"
nullable = false
default = 0
"#;

fn within_budget() -> Resolver {
    Resolver::new("within budget", |c| {
        let Some(row) = c.incoming() else {
            return Resolution::Accept;
        };
        let (Some(owner), Some(amount)) = (row.text("owner"), row.integer("amount")) else {
            return Resolution::Pass;
        };
        let cap = match c.get("budget", owner) {
            Ok(budget) => budget.and_then(|b| b.integer("cap")).unwrap_or(0),
            Err(e) => return Resolution::Reject(format!("cannot read the budget: {e}")),
        };
        let id = match c.key().values() {
            [Value::Text(id)] => id.clone(),
            _ => return Resolution::Pass,
        };
        // The merged row is already in the table: count the others.
        let others = c
            .query(
                "SELECT coalesce(sum(amount), 0) FROM expense WHERE owner = ?1 AND id <> ?2",
                &[owner.into(), id.as_str().into()],
            )
            .map(|rows| match rows.first().and_then(|r| r.first()) {
                Some(Value::Integer(n)) => *n,
                _ => 0,
            });
        match others {
            Ok(others) if others + amount > cap => Resolution::Reject(format!(
                "{owner}'s expenses would reach {} of a budget of {cap}",
                others + amount
            )),
            Ok(_) => Resolution::Accept,
            Err(e) => Resolution::Reject(format!("cannot sum the expenses: {e}")),
        }
    })
    .on_every_change()
}

#[test]
fn budget_resolver_reads_other_rows_to_reject_an_expense() -> TestResult {
    let s = schema(EXPENSES);
    let time = ManualTime::new(T0);
    let mut server = open(&s, 1, &time, true)?;
    server.add_resolver("expense", within_budget())?;
    let mut phone = open(&s, 2, &time, false)?;
    let mut laptop = open(&s, 3, &time, false)?;
    let alice = Writer::user("alice");
    server.write(|tx| tx.insert("budget", &[("owner", "alice".into()), ("cap", 100.into())]))?;
    sync_with(&mut server, &mut phone, &alice)?;
    sync_with(&mut server, &mut laptop, &alice)?;
    fn expense(store: &mut Store, id: &str, amount: i64) -> meldb::Result<()> {
        store.write(|tx| {
            tx.insert(
                "expense",
                &[
                    ("id", id.into()),
                    ("owner", "alice".into()),
                    ("amount", amount.into()),
                ],
            )
        })
    }
    tick(&time);
    expense(&mut phone, "E1", 60)?;
    tick(&time);
    expense(&mut laptop, "E2", 50)?;
    tick(&time);
    sync_with(&mut server, &mut phone, &alice)?;
    sync_with(&mut server, &mut laptop, &alice)?;
    assert!(server.get("expense", "E2")?.is_none());
    assert!(
        laptop.get("expense", "E2")?.is_none(),
        "the refused expense is undone"
    );
    let notices = laptop.rejections()?;
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert_eq!(
        notices[0].reason,
        "alice's expenses would reach 110 of a budget of 100"
    );
    assert_eq!(notices[0].key, Key::from("E2"));
    // What is left of the budget can still be spent.
    expense(&mut laptop, "E3", 40)?;
    tick(&time);
    sync_with(&mut server, &mut laptop, &alice)?;
    sync_with(&mut server, &mut phone, &alice)?;
    assert_eq!(
        query_one(&server, "SELECT sum(amount) FROM expense")?,
        Value::from(100)
    );
    assert!(phone.rejections()?.is_empty());
    assert_eq!(laptop.rejections()?.len(), 1);
    assert_converged(&[server, phone, laptop])?;
    Ok(())
}

// ---------------------------------------------------------------------------
// Resolver errors leave the database unchanged.

const DOCS: &str = r#"
name = "docs"
version = 1
[[table]]
name = "doc"
primary_key = ["id"]
[[table.column]]
name = "id"
type = "text"
[[table.column]]
name = "title"
type = "text"
[[table.column]]
name = "views"
type = "integer"
kind = "pn_counter"
"#;

type Snapshot = (
    [u8; 32],
    VersionVector,
    BTreeMap<String, Vec<Vec<Value>>>,
    usize,
);

fn snapshot(store: &Store) -> meldb::Result<Snapshot> {
    Ok((
        store.digest()?,
        store.version_vector(),
        view_rows(store)?,
        store.conflicts(None, None, 1000)?.len(),
    ))
}

/// Applies a concurrent edit of doc D1 to a replica that runs `resolver`;
/// the apply must fail and change nothing. Returns the error.
fn failing_apply(resolver: Resolver) -> meldb::Result<Error> {
    let s = schema(DOCS);
    let time = ManualTime::new(T0);
    let mut a = open(&s, 1, &time, false)?;
    let mut b = open(&s, 2, &time, false)?;
    a.write(|tx| tx.insert("doc", &[("id", "D1".into()), ("title", "draft".into())]))?;
    sync(&a, &mut b)?;
    tick(&time);
    a.write(|tx| {
        tx.set("doc", "D1", "title", "from a")?;
        tx.increment("doc", "D1", "views", 1)
    })?;
    tick(&time);
    b.write(|tx| tx.set("doc", "D1", "title", "from b"))?;
    b.add_resolver("doc", resolver)?;
    let changes: Changeset = a.changes_since(&b.version_vector())?;
    let before = snapshot(&b)?;
    let err = match b.apply(&changes) {
        Ok(report) => panic!("the apply must fail, got {report:?}"),
        Err(e) => e,
    };
    assert_eq!(
        snapshot(&b)?,
        before,
        "a failed resolution changed the store ({err})"
    );
    assert_eq!(
        text_of(&b, "doc", "D1", "title")?.as_deref(),
        Some("from b")
    );
    Ok(err)
}

#[test]
fn a_panicking_resolver_fails_the_apply_and_changes_nothing() -> TestResult {
    let err = failing_apply(Resolver::new("boom", |_| panic!("kaboom")))?;
    match err {
        Error::Resolve(ResolveError::Panicked {
            resolver,
            table,
            message,
            ..
        }) => {
            assert_eq!((resolver.as_str(), table.as_str()), ("boom", "doc"));
            assert!(message.contains("kaboom"), "{message}");
        }
        other => panic!("expected Panicked, got {other:?}"),
    }
    Ok(())
}

const PANIC_CHILD: &str = "MELDB_CONFLICTS_PANIC_CHILD";

/// Runs in a child process (below): a panicking resolver and a panicking
/// mutator fail with their errors; a panic elsewhere still reaches the
/// process's hook (the default one, which prints it).
#[test]
fn child_quiet_resolver_and_mutator_panics() -> TestResult {
    if std::env::var_os(PANIC_CHILD).is_none() {
        return Ok(());
    }
    let err = failing_apply(Resolver::new("boom", |_| panic!("resolver kaboom")))?;
    assert!(
        matches!(&err, Error::Resolve(ResolveError::Panicked { message, .. }) if message == "resolver kaboom"),
        "{err:?}"
    );
    let time = ManualTime::new(T0);
    let mut store = open(&schema(DOCS), 1, &time, false)?;
    store.register_mutator("explode", |_, (): ()| panic!("mutator kaboom"));
    let err = match store.mutate("explode", &()) {
        Ok(id) => panic!("the mutation must fail, got {id}"),
        Err(e) => e,
    };
    assert!(err.to_string().contains("mutator kaboom"), "{err}");
    assert!(std::panic::catch_unwind(|| panic!("app kaboom")).is_err());
    Ok(())
}

#[test]
fn caught_resolver_and_mutator_panics_print_nothing_and_other_panics_still_do() -> TestResult {
    if std::env::var_os(PANIC_CHILD).is_some() {
        return Ok(());
    }
    let output = std::process::Command::new(std::env::current_exe()?)
        .args([
            "--exact",
            "child_quiet_resolver_and_mutator_panics",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(PANIC_CHILD, "1")
        .output()?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("1 passed"), "{stdout}");
    assert!(!stderr.contains("resolver kaboom"), "{stderr}");
    assert!(!stderr.contains("mutator kaboom"), "{stderr}");
    assert!(stderr.contains("app kaboom"), "{stderr}");
    Ok(())
}

#[test]
fn a_resolver_cannot_write_through_its_queries() -> TestResult {
    let err = failing_apply(Resolver::new("vandal", |c| {
        match c.query("DELETE FROM doc__meldb", &[]) {
            Ok(_) => Resolution::Accept,
            Err(e) => panic!("{e}"),
        }
    }))?;
    match err {
        Error::Resolve(ResolveError::Panicked { message, .. }) => {
            assert!(
                message.contains("could write: DELETE FROM doc__meldb"),
                "{message}"
            );
        }
        other => panic!("expected the refused write to surface, got {other:?}"),
    }
    Ok(())
}

#[test]
fn an_invalid_resolver_row_fails_the_apply_and_changes_nothing() -> TestResult {
    let rows = [
        ("wrong type", Row::new(vec![]).with("title", 5)),
        ("key changed", Row::new(vec![]).with("id", "D2")),
        ("unknown column", Row::new(vec![]).with("colour", "red")),
        ("negative set", Row::new(vec![]).with("views", "many")),
    ];
    for (name, bad) in rows {
        let err = failing_apply(Resolver::new(name, move |_| Resolution::Merge(bad.clone())))?;
        match err {
            Error::Resolve(ResolveError::InvalidRow { resolver, .. }) => assert_eq!(resolver, name),
            other => panic!("{name}: expected InvalidRow, got {other:?}"),
        }
    }
    Ok(())
}

#[test]
fn leaderless_reject_or_keep_local_needs_an_authority() -> TestResult {
    for (answer, resolution) in [
        ("Reject", Resolution::Reject("no".into())),
        ("KeepLocal", Resolution::KeepLocal),
    ] {
        let err = failing_apply(Resolver::new("picky", move |_| resolution.clone()))?;
        match err {
            Error::Resolve(ResolveError::NeedsAuthority {
                answer: got,
                resolver,
                ..
            }) => {
                assert_eq!((got, resolver.as_str()), (answer, "picky"));
            }
            other => panic!("expected NeedsAuthority, got {other:?}"),
        }
    }
    Ok(())
}

#[test]
fn a_leaderless_merge_that_moves_a_counter_is_not_convergent() -> TestResult {
    let err = failing_apply(Resolver::new("reset views", |_| {
        Resolution::Merge(Row::new(vec![]).with("views", 100))
    }))?;
    assert!(
        matches!(err, Error::Resolve(ResolveError::NotConvergent { ref table, .. }) if table == "doc"),
        "{err:?}"
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// First write wins, immutable.

const ACCOUNTS: &str = r#"
name = "accounts"
version = 1
[[table]]
name = "account"
primary_key = ["id"]
[[table.column]]
name = "id"
type = "text"
[[table.column]]
name = "handle"
type = "text"
policy = "first_write_wins"
[[table.column]]
name = "ssn"
type = "text"
policy = "immutable"
[[table.column]]
name = "bio"
type = "text"
"#;

fn accounts(authority: bool) -> Schema {
    if authority {
        schema(&ACCOUNTS.replace(
            "primary_key = [\"id\"]",
            "primary_key = [\"id\"]\nauthority = true",
        ))
    } else {
        schema(ACCOUNTS)
    }
}

#[test]
fn first_write_wins_and_immutable_refuse_local_overwrites() -> TestResult {
    let s = accounts(false);
    let time = ManualTime::new(T0);
    let mut a = open(&s, 1, &time, false)?;
    a.write(|tx| {
        tx.insert(
            "account",
            &[
                ("id", "A1".into()),
                ("handle", "ann".into()),
                ("ssn", "111".into()),
            ],
        )
    })?;
    for (column, value) in [("handle", "bob"), ("ssn", "222")] {
        let err = a.write(|tx| tx.set("account", "A1", column, value));
        match err {
            Err(Error::Write(WriteError::Policy {
                table, column: c, ..
            })) => assert_eq!((table.as_str(), c.as_str()), ("account", column)),
            other => panic!("overwriting {column} must be refused, got {other:?}"),
        }
    }
    // Rewriting the same value, and other columns, is fine.
    a.write(|tx| {
        tx.update(
            "account",
            "A1",
            &[("handle", "ann".into()), ("bio", "hi".into())],
        )
    })?;
    let row = live(&a, "account", "A1")?;
    assert_eq!(
        (row.text("handle"), row.text("ssn"), row.text("bio")),
        (Some("ann"), Some("111"), Some("hi"))
    );
    Ok(())
}

#[test]
fn concurrent_first_writes_keep_the_earliest_everywhere() -> TestResult {
    let s = accounts(false);
    let time = ManualTime::new(T0);
    let mut stores = Vec::new();
    for n in 1..=3 {
        stores.push(open(&s, n, &time, false)?);
    }
    stores[0].write(|tx| tx.insert("account", &[("id", "A2".into())]))?;
    sync_all(&mut stores)?;
    tick(&time);
    // Site 2 writes first, site 1 (a smaller site id) later.
    stores[1].write(|tx| {
        tx.update(
            "account",
            "A2",
            &[("handle", "early".into()), ("ssn", "E".into())],
        )
    })?;
    // A new key inserted on two replicas.
    stores[1].write(|tx| tx.insert("account", &[("id", "A3".into()), ("handle", "x".into())]))?;
    tick(&time);
    stores[0].write(|tx| {
        tx.update(
            "account",
            "A2",
            &[("handle", "late".into()), ("ssn", "L".into())],
        )
    })?;
    stores[0].write(|tx| tx.insert("account", &[("id", "A3".into()), ("handle", "y".into())]))?;
    tick(&time);
    // The later write reaches replica 3 first.
    deliver(&mut stores, 0, 2)?;
    assert_eq!(
        text_of(&stores[2], "account", "A2", "handle")?.as_deref(),
        Some("late")
    );
    deliver(&mut stores, 1, 2)?;
    sync_all(&mut stores)?;
    assert_converged(&stores)?;
    for store in &stores {
        let row = live(store, "account", "A2")?;
        assert_eq!(
            (row.text("handle"), row.text("ssn")),
            (Some("early"), Some("E"))
        );
        assert_eq!(
            text_of(store, "account", "A3", "handle")?.as_deref(),
            Some("x")
        );
    }
    Ok(())
}

/// Two clients set the immutable `ssn` of an account offline; the
/// authority keeps the one that reached it first and refuses the other,
/// whichever of the two was written earlier.
fn immutable_at_authority(refused_writes_earlier: bool) -> TestResult {
    let s = accounts(true);
    let time = ManualTime::new(T0);
    let mut server = open(&s, 1, &time, true)?;
    let mut first = open(&s, 2, &time, false)?;
    let mut second = open(&s, 3, &time, false)?;
    server.write(|tx| tx.insert("account", &[("id", "A1".into())]))?;
    sync_with(&mut server, &mut first, &Writer::user("first"))?;
    sync_with(&mut server, &mut second, &Writer::user("second"))?;
    fn set_ssn(store: &mut Store, ssn: &str) -> meldb::Result<()> {
        store.write(|tx| tx.set("account", "A1", "ssn", ssn))
    }
    tick(&time);
    if refused_writes_earlier {
        set_ssn(&mut second, "222")?;
        tick(&time);
        set_ssn(&mut first, "111")?;
    } else {
        set_ssn(&mut first, "111")?;
        tick(&time);
        set_ssn(&mut second, "222")?;
    }
    tick(&time);
    sync_with(&mut server, &mut first, &Writer::user("first"))?;
    sync_with(&mut server, &mut second, &Writer::user("second"))?;
    sync_with(&mut server, &mut first, &Writer::user("first"))?;
    for store in [&server, &first, &second] {
        assert_eq!(
            text_of(store, "account", "A1", "ssn")?.as_deref(),
            Some("111")
        );
    }
    let notices = second.rejections()?;
    assert_eq!(
        notices.len(),
        1,
        "the refused writer must be told: {notices:?}"
    );
    assert!(notices[0].reason.contains("ssn"), "{}", notices[0].reason);
    assert!(first.rejections()?.is_empty());
    let log = server.conflicts(Some("account"), None, 10)?;
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(log[0].outcome, Outcome::Rejected);
    assert_converged(&[server, first, second])?;
    Ok(())
}

#[test]
fn immutable_column_change_is_rejected_at_the_authority_with_a_notice() -> TestResult {
    immutable_at_authority(true)
}

#[test]
fn immutable_column_change_written_later_is_rejected_with_a_notice_too() -> TestResult {
    immutable_at_authority(false)
}

// ---------------------------------------------------------------------------
// Authority wins.

const PROFILES: &str = r#"
name = "profiles"
version = 1
[[table]]
name = "profile"
primary_key = ["id"]
authority = true
[[table.column]]
name = "id"
type = "text"
[[table.column]]
name = "plan"
type = "text"
policy = "authority_wins"
[[table.column]]
name = "nickname"
type = "text"
"#;

#[test]
fn authority_wins_keeps_the_authoritys_value_and_merges_the_rest() -> TestResult {
    let s = schema(PROFILES);
    let time = ManualTime::new(T0);
    let mut server = open(&s, 1, &time, true)?;
    let mut client = open(&s, 2, &time, false)?;
    let user = Writer::user("zoe");
    server.write(|tx| {
        tx.insert(
            "profile",
            &[
                ("id", "P1".into()),
                ("plan", "basic".into()),
                ("nickname", "z".into()),
            ],
        )
    })?;
    sync_with(&mut server, &mut client, &user)?;
    tick(&time);
    server.write(|tx| tx.set("profile", "P1", "plan", "pro"))?;
    tick(&time);
    client.write(|tx| {
        tx.update(
            "profile",
            "P1",
            &[("plan", "free".into()), ("nickname", "zed".into())],
        )
    })?;
    tick(&time);
    sync_with(&mut server, &mut client, &user)?;
    for store in [&server, &client] {
        let row = live(store, "profile", "P1")?;
        assert_eq!(
            (row.text("plan"), row.text("nickname")),
            (Some("pro"), Some("zed"))
        );
    }
    let log = server.conflicts(Some("profile"), None, 10)?;
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(log[0].outcome, Outcome::KeptLocal);
    assert!(log[0]
        .resolver
        .as_deref()
        .is_some_and(|r| r.contains("authority_wins")));
    // Part of the client's change was dropped: it is told, with the reason.
    let told = client.rejections()?;
    assert_eq!(told.len(), 1, "{told:?}");
    assert!(
        told[0].reason.contains("keeps the authority's value"),
        "{}",
        told[0].reason
    );
    // A change made after seeing the authority's value is no conflict.
    tick(&time);
    client.write(|tx| tx.set("profile", "P1", "plan", "team"))?;
    tick(&time);
    sync_with(&mut server, &mut client, &user)?;
    assert_eq!(
        text_of(&server, "profile", "P1", "plan")?.as_deref(),
        Some("team")
    );
    assert_converged(&[server, client])?;
    Ok(())
}
