//! File databases across close and reopen: what must survive (rows, CRDT
//! state, site id, version vector, clock, held rows), what must never be
//! reused (seq numbers, timestamps), what a dropped transaction leaves
//! (nothing), and schema upgrades: compatible ones keep the data,
//! incompatible ones are refused without harm, and replicas on different
//! schema versions exchange what they can.

mod common;

use common::{
    assert_converged, column, inventory, query_one, replica, site, sync, view_rows, TestResult, T0,
};
use meldb::{
    ApplyError, Error, Hlc, ManualTime, OpenError, Schema, SchemaError, Store, StoreOptions, Value,
};
use std::{path::Path, sync::Arc, time::Duration};

fn open_file(path: &Path, schema: &Schema, n: u8, time: &ManualTime) -> meldb::Result<Store> {
    Ok(StoreOptions::new()
        .site_id(site(n))
        .time_source(Arc::new(time.clone()))
        .open(path, schema)?)
}

/// A few writes of every kind, one deleted row included.
fn stock_some_items(store: &mut Store) -> meldb::Result<()> {
    store.write(|tx| {
        tx.insert(
            "item",
            &[
                ("sku", "apple".into()),
                ("name", "Apple".into()),
                ("price", 0.5.into()),
                ("stock", 10.into()),
                ("tags", r#"["fruit","red"]"#.into()),
            ],
        )?;
        tx.insert("item", &[("sku", "pear".into()), ("stock", 3.into())])?;
        tx.insert("item", &[("sku", "plum".into())])?;
        tx.insert(
            "location",
            &[
                ("warehouse", "north".into()),
                ("sku", "apple".into()),
                ("quantity", 4.into()),
            ],
        )?;
        Ok(())
    })?;
    store.write(|tx| {
        tx.increment("item", "apple", "stock", -3)?;
        tx.increment("item", "apple", "sold", 3)?;
        tx.remove_from_set("item", "apple", "tags", "red")?;
        tx.set("item", "pear", "price", 1.25)?;
        tx.delete("item", "plum")
    })
}

const SHOP_V1: &str = r#"
name = "shop"
version = 1

[[table]]
name = "item"
primary_key = ["sku"]

[[table.column]]
name = "sku"
type = "text"

[[table.column]]
name = "name"
type = "text"
nullable = false
default = ""

[[table.column]]
name = "stock"
type = "integer"
kind = "pn_counter"

[[table.column]]
name = "tags"
type = "text"
kind = "or_set"
"#;

/// v1 plus a nullable `note` declared in the middle of `item`, and a new
/// table.
const SHOP_V2: &str = r#"
name = "shop"
version = 2

[[table]]
name = "item"
primary_key = ["sku"]

[[table.column]]
name = "sku"
type = "text"

[[table.column]]
name = "name"
type = "text"
nullable = false
default = ""

[[table.column]]
name = "note"
type = "text"
nullable = true

[[table.column]]
name = "stock"
type = "integer"
kind = "pn_counter"

[[table.column]]
name = "tags"
type = "text"
kind = "or_set"

[[table]]
name = "supplier"
primary_key = ["id"]

[[table.column]]
name = "id"
type = "text"

[[table.column]]
name = "phone"
type = "text"
nullable = true
"#;

fn shop(text: &str) -> Schema {
    match Schema::from_toml_str(text, "shop.toml") {
        Ok(schema) => schema,
        Err(e) => panic!("test schema must parse: {e}"),
    }
}

#[test]
fn everything_survives_reopen() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("shop.db");
    let time = ManualTime::new(T0);
    let schema = inventory();
    let mut store = open_file(&path, &schema, 1, &time)?;
    stock_some_items(&mut store)?;
    let rows = view_rows(&store)?;
    let digest = store.digest()?;
    let vv = store.version_vector();
    let clock = store.clock();
    assert_eq!(store.path(), path.display().to_string());
    drop(store);

    // A different site id in the options is ignored for an existing file.
    let store = open_file(&path, &schema, 9, &time)?;
    assert_eq!(store.site_id(), site(1));
    assert_eq!(view_rows(&store)?, rows);
    assert_eq!(store.digest()?, digest);
    assert_eq!(store.version_vector(), vv);
    assert_eq!(store.clock(), clock);
    assert_eq!(
        column(&store, "item", "apple", "stock")?,
        Some(Value::Integer(7))
    );
    assert_eq!(
        column(&store, "item", "apple", "tags")?,
        Some(r#"["fruit"]"#.into())
    );
    assert_eq!(store.get("item", "plum")?, None);
    Ok(())
}

#[test]
fn a_write_after_reopen_is_stamped_after_everything_before_even_if_time_went_back() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("shop.db");
    let time = ManualTime::new(T0 + 60_000);
    let schema = inventory();
    let mut peer = replica(&schema, 2, &time)?;
    let mut store = open_file(&path, &schema, 1, &time)?;
    store.write(|tx| tx.insert("item", &[("sku", "apple".into()), ("name", "old".into())]))?;
    sync(&store, &mut peer)?;
    let before_close = store.clock();
    drop(store);

    // The wall clock steps back a minute (NTP correction, a dead RTC battery).
    time.set_ms(T0);
    let mut store = open_file(&path, &schema, 1, &time)?;
    assert_eq!(store.clock(), before_close);
    store.write(|tx| tx.set("item", "apple", "name", "new"))?;
    let after = store.clock();
    assert!(after > before_close, "{after} must be after {before_close}");
    assert_eq!(after.physical_ms(), before_close.physical_ms());

    // So the newer write wins everywhere, though its wall clock is older.
    sync(&store, &mut peer)?;
    assert_eq!(column(&peer, "item", "apple", "name")?, Some("new".into()));
    Ok(())
}

#[test]
fn seq_numbers_are_not_reused_after_reopen() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("shop.db");
    let time = ManualTime::new(T0);
    let schema = inventory();
    let mut peer = replica(&schema, 2, &time)?;
    let mut store = open_file(&path, &schema, 1, &time)?;
    stock_some_items(&mut store)?; // 9 writes: seq 1..=9
    sync(&store, &mut peer)?;
    drop(store);

    let mut store = open_file(&path, &schema, 1, &time)?;
    store.write(|tx| tx.increment("item", "apple", "stock", 5))?;
    store.write(|tx| tx.insert("item", &[("sku", "plum".into()), ("stock", 1.into())]))?;
    let own = store.version_vector();
    assert_eq!(
        own.site(&site(1)).map(|r| r.ranges().to_vec()),
        Some(vec![(1, 11)])
    );
    sync(&store, &mut peer)?;
    assert_eq!(
        peer.version_vector()
            .site(&site(1))
            .map(|r| r.ranges().to_vec()),
        Some(vec![(1, 11)]),
        "the peer must cover one contiguous range of the reopened site's writes"
    );
    assert_eq!(
        column(&peer, "item", "apple", "stock")?,
        Some(Value::Integer(12))
    );
    assert_eq!(
        column(&peer, "item", "plum", "stock")?,
        Some(Value::Integer(1))
    );
    sync(&peer, &mut store)?;
    assert_converged(&[store, peer])?;
    Ok(())
}

#[test]
fn a_dropped_transaction_leaves_nothing_also_after_reopen() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("shop.db");
    let time = ManualTime::new(T0);
    let schema = inventory();
    let mut store = open_file(&path, &schema, 1, &time)?;
    store.write(|tx| tx.insert("item", &[("sku", "apple".into()), ("stock", 1.into())]))?;
    let mut peer = replica(&schema, 2, &time)?;
    peer.write(|tx| tx.insert("item", &[("sku", "kiwi".into()), ("stock", 9.into())]))?;
    let from_peer = peer.changes_since(&store.version_vector())?;
    let rows = view_rows(&store)?;
    let digest = store.digest()?;
    let vv = store.version_vector();
    {
        let mut tx = store.transaction()?;
        assert_eq!(tx.apply(&from_peer)?.applied(), 1);
        tx.insert("item", &[("sku", "pear".into()), ("stock", 3.into())])?;
        tx.increment("item", "apple", "stock", 10)?;
        tx.add_to_set("item", "apple", "tags", "gone")?;
        tx.delete("item", "apple")?;
        assert_eq!(tx.get("item", "pear")?.map(|r| r.len()), Some(6));
        // Dropped without commit.
    }
    let failed: meldb::Result<()> = store.write(|tx| {
        tx.insert("item", &[("sku", "fig".into())])?;
        tx.increment("item", "missing", "stock", 1)
    });
    assert!(failed.is_err());
    assert_eq!(view_rows(&store)?, rows);
    assert_eq!(store.digest()?, digest);
    assert_eq!(store.version_vector(), vv);
    drop(store);

    let mut store = open_file(&path, &schema, 1, &time)?;
    assert_eq!(view_rows(&store)?, rows);
    assert_eq!(store.digest()?, digest);
    assert_eq!(store.version_vector(), vv);
    // The next write takes the next seq, as if the dropped ones never were.
    store.write(|tx| tx.insert("item", &[("sku", "pear".into())]))?;
    assert_eq!(
        store
            .version_vector()
            .site(&site(1))
            .map(|r| r.ranges().to_vec()),
        Some(vec![(1, 2)])
    );
    Ok(())
}

#[test]
fn held_rows_survive_reopen_and_apply_once_the_clock_catches_up() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("shop.db");
    let here = ManualTime::new(T0);
    let ahead = ManualTime::new(T0 + 600_000); // ten minutes ahead: beyond 5 min
    let schema = inventory();
    let mut fast = replica(&schema, 2, &ahead)?;
    fast.write(|tx| tx.insert("item", &[("sku", "apple".into()), ("stock", 2.into())]))?;
    let mut store = open_file(&path, &schema, 1, &here)?;
    let clock_before = store.clock();
    let report = sync(&fast, &mut store)?;
    assert_eq!(report.held.len(), 1);
    assert_eq!(report.held[0].site, site(2));
    assert_eq!(report.held[0].offset_ms, 600_000);
    assert_eq!(store.get("item", "apple")?, None);
    assert_eq!(
        store.clock(),
        clock_before,
        "a held row must not move the clock"
    );
    assert_eq!(store.held_count()?, 1);
    drop(store);

    let mut store = open_file(&path, &schema, 1, &here)?;
    assert_eq!(store.held_count()?, 1);
    assert_eq!(store.release_held()?.released, 0);
    here.advance(Duration::from_secs(301));
    let report = store.release_held()?;
    assert_eq!(report.released, 1);
    assert_eq!(store.held_count()?, 0);
    assert_eq!(
        column(&store, "item", "apple", "stock")?,
        Some(Value::Integer(2))
    );
    assert_eq!(store.version_vector(), fast.version_vector());
    Ok(())
}

#[test]
fn upgrade_adds_a_nullable_column_and_a_table_and_keeps_the_data() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("shop.db");
    let time = ManualTime::new(T0);
    let mut store = open_file(&path, &shop(SHOP_V1), 1, &time)?;
    store.write(|tx| {
        tx.insert(
            "item",
            &[
                ("sku", "apple".into()),
                ("name", "Apple".into()),
                ("stock", 5.into()),
                ("tags", r#"["red"]"#.into()),
            ],
        )
    })?;
    let vv = store.version_vector();
    let clock = store.clock();
    drop(store);

    let mut store = open_file(&path, &shop(SHOP_V2), 1, &time)?;
    assert_eq!(store.schema().version, 2);
    assert_eq!(store.version_vector(), vv);
    assert_eq!(store.clock(), clock);
    assert_eq!(
        view_rows(&store)?["item"],
        vec![vec![
            "apple".into(),
            "Apple".into(),
            Value::Null,
            5.into(),
            r#"["red"]"#.into()
        ]],
        "old rows keep their values; the new column reads NULL, in the new schema's place"
    );
    assert!(view_rows(&store)?["supplier"].is_empty());
    store.write(|tx| {
        tx.set("item", "apple", "note", "crisp")?;
        tx.increment("item", "apple", "stock", 1)?;
        tx.insert(
            "supplier",
            &[("id", "acme".into()), ("phone", "555".into())],
        )
    })?;
    drop(store);

    // And the upgrade is stored: reopening with v2 again changes nothing.
    let store = open_file(&path, &shop(SHOP_V2), 1, &time)?;
    assert_eq!(
        column(&store, "item", "apple", "note")?,
        Some("crisp".into())
    );
    assert_eq!(
        column(&store, "item", "apple", "stock")?,
        Some(Value::Integer(6))
    );
    assert_eq!(
        column(&store, "supplier", "acme", "phone")?,
        Some("555".into())
    );
    Ok(())
}

/// Columns an upgrade adds must read like never-written columns of a new
/// row: the default, 0 for counters, `[]` for sets — also on old rows.
#[test]
fn upgrade_added_columns_read_their_default_on_old_rows() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("shop.db");
    let time = ManualTime::new(T0);
    let mut store = open_file(&path, &shop(SHOP_V1), 1, &time)?;
    store.write(|tx| tx.insert("item", &[("sku", "apple".into())]))?;
    drop(store);

    let v3 = SHOP_V1.replace("version = 1", "version = 3")
        + r#"
[[table.column]]
name = "rating"
type = "integer"
default = 3

[[table.column]]
name = "views"
type = "integer"
kind = "g_counter"

[[table.column]]
name = "labels"
type = "text"
kind = "or_set"
"#;
    let mut store = open_file(&path, &shop(&v3), 1, &time)?;
    // A replica created on v3 that receives the old row shows the defaults,
    // with the same digest: equal states must read the same.
    let mut fresh = replica(&shop(&v3), 2, &time)?;
    sync(&store, &mut fresh)?;
    assert_eq!(fresh.digest()?, store.digest()?);
    assert_eq!(
        view_rows(&store)?,
        view_rows(&fresh)?,
        "equal digests, different rows: the upgraded replica shows NULL where the fresh one shows defaults"
    );
    store.write(|tx| tx.insert("item", &[("sku", "pear".into())]))?;
    // A row inserted after the upgrade reads the defaults...
    let new_row = (
        column(&store, "item", "pear", "rating")?,
        column(&store, "item", "pear", "views")?,
        column(&store, "item", "pear", "labels")?,
    );
    assert_eq!(new_row, (Some(3.into()), Some(0.into()), Some("[]".into())));
    // ...and so must a row from before it.
    let old_row = (
        column(&store, "item", "apple", "rating")?,
        column(&store, "item", "apple", "views")?,
        column(&store, "item", "apple", "labels")?,
    );
    assert_eq!(old_row, new_row, "old row reads {old_row:?}");
    Ok(())
}

#[test]
fn an_incompatible_schema_is_refused_and_the_old_one_still_opens() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("shop.db");
    let time = ManualTime::new(T0);
    let mut store = open_file(&path, &shop(SHOP_V1), 1, &time)?;
    store.write(|tx| tx.insert("item", &[("sku", "apple".into()), ("stock", 5.into())]))?;
    let digest = store.digest()?;
    drop(store);

    // stock: pn_counter -> g_counter, together with a harmless new table.
    let changed_kind = SHOP_V2.replace("kind = \"pn_counter\"", "kind = \"g_counter\"");
    // The open says why (`OpenError::Schema`), and `?` carries it into the
    // crate's `Error` as `Error::Open`.
    let err = open_file(&path, &shop(&changed_kind), 1, &time).map(|_| ());
    match err {
        Err(Error::Open(open)) if matches!(*open, OpenError::Schema(_)) => {
            let OpenError::Schema(SchemaError::Incompatible {
                database, reason, ..
            }) = *open
            else {
                panic!("expected an incompatible-schema error, got {open:?}");
            };
            assert!(database.contains("shop.db"), "{database}");
            assert!(
                reason.contains("item") && reason.contains("stock"),
                "the reason must name the table and column: {reason}"
            );
        }
        other => panic!("expected an incompatible-schema error, got {other:?}"),
    }

    let store = open_file(&path, &shop(SHOP_V1), 1, &time)?;
    assert_eq!(store.digest()?, digest);
    assert_eq!(
        column(&store, "item", "apple", "stock")?,
        Some(Value::Integer(5))
    );
    let no_supplier = query_one(
        &store,
        "SELECT count(*) FROM sqlite_master WHERE name LIKE 'supplier%'",
    )?;
    assert_eq!(
        no_supplier,
        Value::Integer(0),
        "the refused upgrade left a table behind"
    );
    Ok(())
}

#[test]
fn old_and_new_schema_replicas_exchange_what_they_can() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("new.db");
    let time = ManualTime::new(T0);
    let mut old = replica(&shop(SHOP_V1), 1, &time)?;
    // `new` was created on v1 and upgraded: its base table has `note` last.
    let mut new = open_file(&path, &shop(SHOP_V1), 2, &time)?;
    drop(new);
    new = open_file(&path, &shop(SHOP_V2), 2, &time)?;
    // `fresh` was created on v2: `note` sits in the middle.
    let mut fresh = replica(&shop(SHOP_V2), 3, &time)?;

    old.write(|tx| {
        tx.insert("item", &[("sku", "apple".into()), ("stock", 5.into())])?;
        tx.insert("item", &[("sku", "pear".into()), ("name", "Pear".into())])
    })?;
    // old -> new applies fine.
    sync(&old, &mut new)?;
    sync(&old, &mut fresh)?;
    assert_eq!(column(&new, "item", "apple", "note")?, Some(Value::Null));
    assert_eq!(column(&new, "item", "pear", "name")?, Some("Pear".into()));

    // new -> old with rows that never set the new column: they apply (the
    // changeset lists only the columns its rows set).
    new.write(|tx| tx.set("item", "pear", "name", "Pear II"))?;
    sync(&new, &mut old)?;
    assert_eq!(
        column(&old, "item", "pear", "name")?,
        Some("Pear II".into())
    );

    // new -> old with a row touching the new column: a clear error, nothing changed.
    new.write(|tx| tx.set("item", "apple", "note", "crisp"))?;
    let changes = new.changes_since(&old.version_vector())?;
    let (digest, vv) = (old.digest()?, old.version_vector());
    match old.apply(&changes) {
        Err(Error::Apply(ApplyError::UnknownColumn { table, column, .. })) => {
            assert_eq!((table.as_str(), column.as_str()), ("item", "note"));
        }
        other => panic!("expected an unknown-column apply error, got {other:?}"),
    }
    let message = old
        .apply(&changes)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        message.contains("item") && message.contains("note"),
        "{message}"
    );
    assert_eq!(old.digest()?, digest);
    assert_eq!(old.version_vector(), vv);
    assert_eq!(
        column(&old, "item", "apple", "stock")?,
        Some(Value::Integer(5))
    );

    // Upgraded and fresh v2 replicas agree, whatever their physical column order.
    fresh.write(|tx| tx.increment("item", "pear", "stock", 2))?;
    sync(&new, &mut fresh)?;
    sync(&fresh, &mut new)?;
    assert_converged(&[new, fresh])?;
    Ok(())
}

/// Two handles on one file (an app and its background sync service, say)
/// must not hand out the same dot twice.
///
/// Each `Store` caches `last_seq` (and the clock and coverage) in memory at
/// open; the second handle's write reuses dot (site 1, seq 1) on the same
/// row, so peers that have seq 1 treat it as already seen and it never
/// propagates: the file and the peer disagree forever, with nothing left
/// to send.
#[test]
fn two_handles_on_one_file_do_not_reuse_seq_numbers() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("shop.db");
    let time = ManualTime::new(T0);
    let schema = inventory();
    let mut peer = replica(&schema, 2, &time)?;
    let mut first = open_file(&path, &schema, 1, &time)?;
    let second = open_file(&path, &schema, 1, &time);
    let mut second = match second {
        Ok(store) => store,
        // Refusing the second handle would be a fine answer too.
        Err(_) => return Ok(()),
    };
    first.write(|tx| tx.insert("item", &[("sku", "apple".into()), ("name", "one".into())]))?;
    sync(&first, &mut peer)?;
    time.advance(Duration::from_millis(5));
    second.write(|tx| tx.set("item", "apple", "name", "two"))?;
    assert_eq!(column(&first, "item", "apple", "name")?, Some("two".into()));
    sync(&second, &mut peer)?;
    assert_eq!(
        column(&peer, "item", "apple", "name")?,
        Some("two".into()),
        "the second handle's write never reached the peer: it reused dot (site 1, seq 1)"
    );
    drop(first);
    let hlc: Hlc = second.clock();
    assert!(hlc > Hlc::from_physical_ms(T0));
    Ok(())
}

/// A device restored from a backup file learns its own later writes back
/// from a peer. Its next writes must not reuse the seq numbers those
/// writes had, or peers take them for writes they already have.
/// meldb notices when a peer has seen writes of this site beyond what the
/// file holds, refuses to merge (its next writes would reuse those dots),
/// and after `rotate_site_id` the replica catches up and its new writes
/// reach the peer.
#[test]
fn a_replica_restored_from_backup_does_not_reuse_seq_numbers() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("shop.db");
    let backup = dir.path().join("backup.db");
    let time = ManualTime::new(T0);
    let schema = inventory();
    let mut peer = replica(&schema, 2, &time)?;
    let mut store = open_file(&path, &schema, 1, &time)?;
    store.write(|tx| tx.insert("item", &[("sku", "apple".into())]))?; // seq 1
    drop(store);
    std::fs::copy(&path, &backup)?;

    let mut store = open_file(&path, &schema, 1, &time)?;
    store.write(|tx| tx.insert("item", &[("sku", "pear".into())]))?; // seq 2
    store.write(|tx| tx.set("item", "pear", "name", "Pear"))?; // seq 3
    sync(&store, &mut peer)?;
    drop(store);

    // The disk dies; the backup comes back.
    std::fs::copy(&backup, &path)?;
    let mut store = open_file(&path, &schema, 1, &time)?;
    let before = store.digest()?;
    let refused = sync(&peer, &mut store);
    assert!(
        matches!(
            &refused,
            Err(meldb::Error::Apply(meldb::ApplyError::LostHistory {
                last: 1,
                seen: 3,
                ..
            }))
        ),
        "{refused:?}"
    );
    assert_eq!(store.digest()?, before, "a refused apply changes nothing");
    let old_site = store.site_id();
    let new_site = store.rotate_site_id()?;
    assert_ne!(old_site, new_site);
    sync(&peer, &mut store)?;
    assert_eq!(column(&store, "item", "pear", "name")?, Some("Pear".into()));
    time.advance(Duration::from_millis(1));
    store.write(|tx| tx.insert("item", &[("sku", "fig".into())]))?;
    sync(&store, &mut peer)?;
    assert!(
        peer.get("item", "fig")?.is_some(),
        "the restored replica's new row never reached the peer"
    );
    sync(&peer, &mut store)?;
    assert_eq!(store.digest()?, peer.digest()?);
    // The rotation survives a reopen.
    drop(store);
    let store = open_file(&path, &schema, 1, &time)?;
    assert_eq!(store.site_id(), new_site);
    Ok(())
}
