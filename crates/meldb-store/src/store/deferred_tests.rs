//! Unit tests of deferred conflicts (what the row shows while one waits,
//! the writer's notice, settling one) and of registering resolvers.

use crate::clock::{ManualTime, SiteId};
use crate::error::{Error, ResolveError, Result, WriteError};
use crate::resolve::{Outcome, Resolution, Resolver, Row, Writer};
use crate::schema::{DeferredShows, Schema};
use crate::store::{Store, StoreOptions};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A price list decided by an authority; `shows` is its `deferred_shows`
/// line (or "").
fn prices(shows: &str) -> Schema {
    let text = format!(
        r#"
        name = "prices"
        version = 1
        [[table]]
        name = "item"
        primary_key = ["sku"]
        authority = true
        {shows}
        [[table.column]]
        name = "sku"
        type = "text"
        [[table.column]]
        name = "price"
        type = "integer"
        [[table.column]]
        name = "stock"
        type = "integer"
        kind = "pn_counter"
        "#
    );
    match Schema::from_toml_str(&text, "prices.toml") {
        Ok(schema) => schema,
        Err(e) => panic!("test schema: {e}"),
    }
}

fn open(schema: &Schema, n: u8, time: &ManualTime, authority: bool) -> Result<Store> {
    Ok(StoreOptions::new()
        .site_id(SiteId::from_bytes([n; 16]))
        .time_source(Arc::new(time.clone()))
        .authority(authority)
        .open_in_memory(schema)?)
}

/// Defers every price change for review.
fn review_prices() -> Resolver {
    Resolver::new("review prices", |c| {
        let price = |r: Option<&Row>| r.and_then(|r| r.integer("price"));
        if price(c.local()) != price(c.incoming()) {
            Resolution::Defer(format!("price of {} needs approval", c.key()))
        } else {
            Resolution::Pass
        }
    })
}

/// The authority (site 1) and a client (site 2) that both have item A1 at
/// price 10, stock 5; the authority then sells one and the client, offline,
/// sets the price to 99 and restocks 3, and pushes as bob.
struct Setup {
    authority: Store,
    client: Store,
}

fn setup(shows: &str) -> Result<Setup> {
    let schema = prices(shows);
    let time = ManualTime::new(1_000_000);
    let mut authority = open(&schema, 1, &time, true)?;
    let mut client = open(&schema, 2, &time, false)?;
    authority.add_resolver("item", review_prices())?;
    authority.write(|tx| {
        tx.insert(
            "item",
            &[
                ("sku", "A1".into()),
                ("price", 10.into()),
                ("stock", 5.into()),
            ],
        )
    })?;
    client.apply(&authority.changes_since(&client.version_vector())?)?;
    time.advance(Duration::from_millis(10));
    authority.write(|tx| tx.increment("item", "A1", "stock", -1))?;
    time.advance(Duration::from_millis(10));
    client.write(|tx| {
        tx.set("item", "A1", "price", 99)?;
        tx.increment("item", "A1", "stock", 3)
    })?;
    let push = client.changes_since(&authority.version_vector())?;
    authority.apply_from(&push, &Writer::user("bob"))?;
    Ok(Setup { authority, client })
}

/// The client's pull: the authority's changes and the notices for it.
fn pull(s: &mut Setup) -> Result<()> {
    let vv = s.client.version_vector();
    let notices = s.authority.rejections_for(s.client.site_id(), &vv)?;
    s.client.apply(&s.authority.changes_since(&vv)?)?;
    s.client.receive_rejections(&notices)?;
    Ok(())
}

fn price_and_stock(store: &Store) -> Result<(Option<i64>, Option<i64>)> {
    let row = store.get("item", "A1")?.map(Row::from);
    Ok((
        row.as_ref().and_then(|r| r.integer("price")),
        row.as_ref().and_then(|r| r.integer("stock")),
    ))
}

#[test]
fn by_default_the_authority_shows_its_row_from_before_the_deferred_change() -> Result<()> {
    let mut s = setup("")?;
    let open = s.authority.deferred_conflicts()?;
    assert_eq!(open.len(), 1, "{open:?}");
    let record = &open[0];
    assert_eq!(record.outcome, Outcome::Deferred);
    // Nothing unreviewed is visible: not the price, not the restock.
    assert_eq!(price_and_stock(&s.authority)?, (Some(10), Some(4)));
    assert_eq!(
        record.result.as_ref().and_then(|r| r.integer("price")),
        Some(10)
    );
    assert_eq!(
        record.incoming.as_ref().and_then(|r| r.integer("price")),
        Some(99)
    );
    pull(&mut s)?;
    assert_eq!(price_and_stock(&s.client)?, (Some(10), Some(4)));
    // The writer is told its change waits, with the resolver's reason.
    let notices = s.client.rejections()?;
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert!(notices[0].reason.contains("needs approval"), "{notices:?}");
    assert_eq!(
        notices[0].rejected_row().and_then(|r| r.integer("price")),
        Some(99)
    );

    // A person approves the incoming version: price and restock return.
    s.authority
        .keep_deferred(record.id, DeferredShows::Merged)?;
    assert!(s.authority.deferred_conflicts()?.is_empty());
    assert_eq!(price_and_stock(&s.authority)?, (Some(99), Some(7)));
    pull(&mut s)?;
    assert_eq!(price_and_stock(&s.client)?, (Some(99), Some(7)));
    assert_eq!(s.client.digest()?, s.authority.digest()?);
    // Settled once.
    assert!(matches!(
        s.authority.keep_deferred(record.id, DeferredShows::Local),
        Err(Error::Resolve(ResolveError::NotDeferred { .. }))
    ));
    assert!(matches!(
        s.authority.keep_deferred(77, DeferredShows::Local),
        Err(Error::Resolve(ResolveError::UnknownConflict { id: 77 }))
    ));
    Ok(())
}

#[test]
fn a_table_may_show_the_incoming_or_the_merged_row_while_it_waits() -> Result<()> {
    for (shows, expected) in [
        // The writer's row as it sent it: its stock did not see the sale.
        ("incoming", (Some(99), Some(8))),
        ("merged", (Some(99), Some(7))),
        ("local", (Some(10), Some(4))),
    ] {
        let mut s = setup(&format!("deferred_shows = \"{shows}\""))?;
        assert_eq!(price_and_stock(&s.authority)?, expected, "{shows}");
        pull(&mut s)?;
        assert_eq!(price_and_stock(&s.client)?, expected, "{shows}");
        // A notice whichever row is shown.
        assert_eq!(s.client.rejections()?.len(), 1, "{shows}");
        let id = s.authority.deferred_conflicts()?[0].id;
        s.authority.keep_deferred(id, DeferredShows::Local)?;
        assert_eq!(
            price_and_stock(&s.authority)?,
            (Some(10), Some(4)),
            "{shows}"
        );
        pull(&mut s)?;
        assert_eq!(s.client.digest()?, s.authority.digest()?, "{shows}");
    }
    Ok(())
}

#[test]
fn an_upgrade_may_change_what_a_table_shows() -> Result<()> {
    let dir = match tempfile::tempdir() {
        Ok(dir) => dir,
        Err(e) => panic!("tempdir: {e}"),
    };
    let path = dir.path().join("prices.db");
    let time = ManualTime::new(1_000_000);
    let options = || {
        StoreOptions::new()
            .site_id(SiteId::from_bytes([1; 16]))
            .time_source(Arc::new(time.clone()))
            .authority(true)
    };
    drop(options().open(&path, &prices(""))?);
    let mut v2 = prices("deferred_shows = \"incoming\"");
    v2.version = 2;
    let store = options().open(&path, &v2)?;
    let item = store.table("item").map(|l| l.table.shown_while_deferred());
    assert_eq!(item, Some(DeferredShows::Incoming));
    Ok(())
}

#[test]
fn a_resolver_is_replaced_by_name_and_removed_by_name() -> Result<()> {
    let time = ManualTime::new(1_000_000);
    let schema = prices("");
    let mut authority = open(&schema, 1, &time, true)?;
    let mut client = open(&schema, 2, &time, false)?;
    let calls = Arc::new(AtomicUsize::new(0));
    let counting = |answer: Resolution| {
        let calls = calls.clone();
        Resolver::new("gate", move |_| {
            calls.fetch_add(1, Ordering::SeqCst);
            answer.clone()
        })
    };
    authority.add_resolver("item", counting(Resolution::Reject("closed".into())))?;
    // Same name, same table (spelt another way): replaced, not added.
    authority.add_resolver("ITEM", counting(Resolution::Accept))?;
    authority.write(|tx| tx.insert("item", &[("sku", "A1".into()), ("price", 1.into())]))?;
    client.apply(&authority.changes_since(&client.version_vector())?)?;
    assert_eq!(
        conflict(&mut authority, &mut client, &time, 10)?,
        Some(Outcome::Accepted)
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert!(authority.remove_resolver("item", "gate")?);
    assert!(!authority.remove_resolver("item", "gate")?);
    assert_eq!(
        conflict(&mut authority, &mut client, &time, 20)?,
        Some(Outcome::AutoMerged)
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert!(matches!(
        authority.remove_resolver("nope", "gate"),
        Err(Error::Write(WriteError::UnknownTable { table })) if table == "nope"
    ));
    Ok(())
}

/// Both sides set A1's price at once; the client pushes as bob. Returns the
/// outcome the authority logged last.
fn conflict(
    authority: &mut Store,
    client: &mut Store,
    time: &ManualTime,
    n: i64,
) -> Result<Option<Outcome>> {
    time.advance(Duration::from_millis(10));
    authority.write(|tx| tx.set("item", "A1", "price", n))?;
    client.write(|tx| tx.set("item", "A1", "price", n + 1))?;
    let push = client.changes_since(&authority.version_vector())?;
    authority.apply_from(&push, &Writer::user("bob"))?;
    client.apply(&authority.changes_since(&client.version_vector())?)?;
    Ok(authority
        .conflicts(None, None, 1)?
        .first()
        .map(|c| c.outcome))
}
