//! Conflict scenarios from the field, through the public API and real sync
//! between replicas: resolvers, column policies, the authority's
//! rejections, deferred conflicts and the conflict log.

mod common;

use common::{site, TestResult, T0};
use meldb::clock::ManualTime;
use meldb::resolve::{Outcome, Resolution, Resolver, Writer};
use meldb::{Schema, Store, StoreOptions, Value};
use std::sync::Arc;
use std::time::Duration;

fn schema(text: &str) -> Schema {
    match Schema::from_toml_str(text, "test.toml") {
        Ok(s) => s,
        Err(e) => panic!("test schema must parse: {e}"),
    }
}

fn open(schema: &Schema, n: u8, time: &ManualTime, authority: bool) -> meldb::Result<Store> {
    StoreOptions::new()
        .site_id(site(n))
        .time_source(Arc::new(time.clone()))
        .authority(authority)
        .open_in_memory(schema)
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
