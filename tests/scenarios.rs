//! Stories from the field, through the public API only: each test is a
//! small, readable case of what the merge rules promise.

mod common;

use common::{
    assert_converged, column, inventory, replica, row_values, site, sync, sync_all, todo,
    TestResult, T0,
};
use meldb::{ManualTime, Schema, Value};
use std::time::Duration;

/// Stock kept twice: as a last-writer-wins integer (what a naive app does)
/// and as a counter.
const SHOP: &str = r#"
name = "shop"
version = 1

[[table]]
name = "item"
primary_key = ["sku"]

[[table.column]]
name = "sku"
type = "text"

[[table.column]]
name = "stock_lww"
type = "integer"
nullable = false
default = 0

[[table.column]]
name = "stock"
type = "integer"
kind = "pn_counter"
"#;

#[test]
fn two_clerks_sell_the_last_items_offline() -> TestResult {
    let schema = Schema::from_toml_str(SHOP, "shop.toml")?;
    let time = ManualTime::new(T0);
    let mut north = replica(&schema, 1, &time)?;
    let mut south = replica(&schema, 2, &time)?;
    north.write(|tx| {
        tx.insert(
            "item",
            &[
                ("sku", "lamp".into()),
                ("stock_lww", 2.into()),
                ("stock", 2.into()),
            ],
        )
    })?;
    sync(&north, &mut south)?;

    // Offline, each clerk sells one lamp: read the stock, write it back less one.
    for (store, seconds) in [(&mut north, 1), (&mut south, 2)] {
        time.set_ms(T0 + seconds * 1000);
        store.write(|tx| {
            let Some(Value::Integer(seen)) = column_of(tx.get("item", "lamp")?, "stock_lww") else {
                return Ok(());
            };
            tx.set("item", "lamp", "stock_lww", seen - 1)?;
            tx.increment("item", "lamp", "stock", -1)
        })?;
    }
    sync(&north, &mut south)?;
    sync(&south, &mut north)?;

    for store in [&north, &south] {
        // The counter counts both sales: no lamps left.
        assert_eq!(column(store, "item", "lamp", "stock")?, Some(0.into()));
        // Last-writer-wins kept only the later sale: it still shows one lamp.
        assert_eq!(column(store, "item", "lamp", "stock_lww")?, Some(1.into()));
    }
    assert_converged(&[north, south])?;
    Ok(())
}

fn column_of(row: Option<Vec<(String, Value)>>, name: &str) -> Option<Value> {
    row?.into_iter().find(|(c, _)| c == name).map(|(_, v)| v)
}

#[test]
fn a_tag_added_while_another_replica_removes_it_stays() -> TestResult {
    let time = ManualTime::new(T0);
    let mut phone = replica(&todo(), 1, &time)?;
    let mut laptop = replica(&todo(), 2, &time)?;
    phone.write(|tx| {
        tx.insert(
            "todo",
            &[
                ("id", "t1".into()),
                ("title", "pay rent".into()),
                ("tags", r#"["home","money","urgent"]"#.into()),
            ],
        )
    })?;
    sync(&phone, &mut laptop)?;

    time.advance(Duration::from_secs(1));
    phone.write(|tx| {
        tx.remove_from_set("todo", "t1", "tags", "home")?;
        tx.remove_from_set("todo", "t1", "tags", "urgent")
    })?;
    time.advance(Duration::from_secs(1));
    laptop.write(|tx| {
        // The laptop tags it "home" again (it never saw the removal) and adds "bills".
        tx.add_to_set("todo", "t1", "tags", "home")?;
        tx.add_to_set("todo", "t1", "tags", "bills")
    })?;
    let mut stores = [phone, laptop];
    sync_all(&mut stores)?;

    for store in &stores {
        // "home": added concurrently with its removal, so the add wins.
        // "urgent": removed after being seen, and nobody re-added it.
        assert_eq!(
            column(store, "todo", "t1", "tags")?,
            Some(r#"["bills","home","money"]"#.into())
        );
    }
    assert_converged(&stores)?;
    Ok(())
}

#[test]
fn concurrent_title_edits_go_to_the_later_clock_then_the_greater_site() -> TestResult {
    let time = ManualTime::new(T0);
    let mut one = replica(&todo(), 1, &time)?;
    let mut two = replica(&todo(), 2, &time)?;
    one.write(|tx| tx.insert("todo", &[("id", "t1".into()), ("title", "draft".into())]))?;
    sync(&one, &mut two)?;

    // Site 2 edits first, site 1 a second later: the later edit wins,
    // though site 2 is the greater site and syncs last.
    time.set_ms(T0 + 10_000);
    two.write(|tx| tx.set("todo", "t1", "title", "earlier"))?;
    time.set_ms(T0 + 11_000);
    one.write(|tx| tx.set("todo", "t1", "title", "later"))?;
    sync(&one, &mut two)?;
    sync(&two, &mut one)?;
    assert_eq!(column(&one, "todo", "t1", "title")?, Some("later".into()));
    assert_eq!(column(&two, "todo", "t1", "title")?, Some("later".into()));

    // Both edit within the same millisecond, with nothing newer seen: equal
    // timestamps. The greater site id wins, whatever the values.
    time.set_ms(T0 + 20_000);
    one.write(|tx| tx.set("todo", "t1", "title", "zebra"))?;
    two.write(|tx| tx.set("todo", "t1", "title", "apple"))?;
    assert_eq!(
        one.clock(),
        two.clock(),
        "the two edits must tie on timestamp"
    );
    sync(&one, &mut two)?;
    sync(&two, &mut one)?;
    assert!(site(2) > site(1));
    assert_eq!(column(&one, "todo", "t1", "title")?, Some("apple".into()));
    assert_eq!(column(&two, "todo", "t1", "title")?, Some("apple".into()));
    assert_converged(&[one, two])?;
    Ok(())
}

#[test]
fn a_delete_wins_over_a_concurrent_update() -> TestResult {
    let time = ManualTime::new(T0);
    let mut a = replica(&todo(), 1, &time)?;
    let mut b = replica(&todo(), 2, &time)?;
    a.write(|tx| tx.insert("todo", &[("id", "t1".into()), ("title", "old".into())]))?;
    sync(&a, &mut b)?;

    a.write(|tx| tx.delete("todo", "t1"))?;
    // b edits a second *later*: timestamps do not matter, the delete wins.
    time.advance(Duration::from_secs(1));
    b.write(|tx| {
        tx.set("todo", "t1", "title", "edited")?;
        tx.increment("todo", "t1", "likes", 3)?;
        tx.add_to_set("todo", "t1", "tags", "keep")
    })?;
    let report = sync(&b, &mut a)?;
    assert_eq!(report.concurrent, 1, "a real conflict: {report:?}");
    sync(&a, &mut b)?;
    assert_eq!(a.get("todo", "t1")?, None);
    assert_eq!(b.get("todo", "t1")?, None);
    // And the row cannot be edited any more, on either side.
    assert!(b.write(|tx| tx.set("todo", "t1", "title", "x")).is_err());
    assert_converged(&[a, b])?;
    Ok(())
}

#[test]
fn a_row_deleted_then_inserted_again_comes_back_fresh() -> TestResult {
    let time = ManualTime::new(T0);
    let mut a = replica(&todo(), 1, &time)?;
    let mut b = replica(&todo(), 2, &time)?;
    let mut c = replica(&todo(), 3, &time)?;
    a.write(|tx| {
        tx.insert(
            "todo",
            &[
                ("id", "t1".into()),
                ("title", "first life".into()),
                ("note", "remember".into()),
                ("likes", 5.into()),
                ("tags", r#"["old"]"#.into()),
            ],
        )
    })?;
    let mut stores = [a, b, c];
    sync_all(&mut stores)?;
    [a, b, c] = stores;

    a.write(|tx| tx.delete("todo", "t1"))?;
    // c has not seen the delete and likes the old row once more.
    c.write(|tx| tx.increment("todo", "t1", "likes", 1))?;
    // b sees the delete, then inserts the key again.
    sync(&a, &mut b)?;
    assert_eq!(b.get("todo", "t1")?, None);
    time.advance(Duration::from_millis(1));
    b.write(|tx| {
        tx.insert(
            "todo",
            &[
                ("id", "t1".into()),
                ("title", "second life".into()),
                ("likes", 1.into()),
            ],
        )
    })?;
    let mut stores = [a, b, c];
    sync_all(&mut stores)?;
    for store in &stores {
        // The insert's values only: the old note, likes and tags are gone,
        // and so is c's like of the deleted row.
        assert_eq!(
            row_values(store, "todo", "t1")?,
            Some(vec![
                "t1".into(),
                "second life".into(),
                0.into(),
                0.into(),
                Value::Null,
                1.into(),
                "[]".into()
            ])
        );
    }
    assert_converged(&stores)?;
    Ok(())
}

#[test]
fn concurrent_inserts_of_one_key_merge_column_by_column() -> TestResult {
    let time = ManualTime::new(T0);
    let mut north = replica(&inventory(), 1, &time)?;
    let mut south = replica(&inventory(), 2, &time)?;
    north.write(|tx| {
        tx.insert(
            "item",
            &[
                ("sku", "lamp".into()),
                ("name", "Lamp".into()),
                ("stock", 3.into()),
                ("sold", 1.into()),
                ("tags", r#"["light"]"#.into()),
            ],
        )
    })?;
    time.advance(Duration::from_millis(1));
    south.write(|tx| {
        tx.insert(
            "item",
            &[
                ("sku", "lamp".into()),
                ("price", 19.5.into()),
                ("stock", 4.into()),
                ("tags", r#"["desk","light"]"#.into()),
            ],
        )
    })?;
    let report = sync(&south, &mut north)?;
    assert_eq!(report.concurrent, 1);
    sync(&north, &mut south)?;
    for store in [&north, &south] {
        assert_eq!(
            row_values(store, "item", "lamp")?,
            Some(vec![
                "lamp".into(),
                "Lamp".into(), // only north named it
                19.5.into(),   // only south priced it
                7.into(),      // both stocks count
                1.into(),
                r#"["desk","light"]"#.into(),
            ])
        );
    }
    assert_converged(&[north, south])?;
    Ok(())
}

#[test]
fn an_intermediary_forwards_writes_it_did_not_make() -> TestResult {
    let time = ManualTime::new(T0);
    let mut phone = replica(&todo(), 1, &time)?;
    let mut relay = replica(&todo(), 2, &time)?;
    let mut laptop = replica(&todo(), 3, &time)?;
    phone.write(|tx| tx.insert("todo", &[("id", "t1".into()), ("likes", 1.into())]))?;
    laptop.write(|tx| tx.insert("todo", &[("id", "t2".into()), ("likes", 2.into())]))?;
    sync(&phone, &mut relay)?;
    sync(&laptop, &mut relay)?;
    sync(&relay, &mut phone)?;
    sync(&relay, &mut laptop)?;
    // Phone and laptop never talked, yet each has the other's dots.
    assert_eq!(laptop.version_vector(), phone.version_vector());
    assert_eq!(column(&laptop, "todo", "t1", "likes")?, Some(1.into()));
    assert_eq!(column(&phone, "todo", "t2", "likes")?, Some(2.into()));
    assert!(phone.changes_since(&laptop.version_vector())?.is_empty());
    assert_converged(&[phone, relay, laptop])?;
    Ok(())
}

#[test]
fn sync_sends_each_changed_row_once_and_is_idempotent() -> TestResult {
    let time = ManualTime::new(T0);
    let mut a = replica(&todo(), 1, &time)?;
    let mut b = replica(&todo(), 2, &time)?;
    a.write(|tx| tx.insert("todo", &[("id", "t1".into())]))?;
    for i in 0..20 {
        time.advance(Duration::from_millis(3));
        a.write(|tx| {
            tx.set("todo", "t1", "title", format!("edit {i}"))?;
            tx.increment("todo", "t1", "likes", 1)
        })?;
    }
    // Forty-one writes, one row: the delta carries the row's latest state once.
    let changes = a.changes_since(&b.version_vector())?;
    assert_eq!(changes.len(), 1);
    let first = b.apply(&changes)?;
    assert_eq!(first.fast_forward, 1);
    let digest = b.digest()?;
    let again = b.apply(&changes)?;
    assert_eq!((again.applied(), again.already_seen), (0, 1));
    assert_eq!(b.digest()?, digest);
    assert_eq!(column(&b, "todo", "t1", "title")?, Some("edit 19".into()));
    assert_eq!(column(&b, "todo", "t1", "likes")?, Some(20.into()));
    assert!(a.changes_since(&b.version_vector())?.is_empty());
    assert_converged(&[a, b])?;
    Ok(())
}

#[test]
fn a_replica_whose_clock_runs_ahead_is_held_until_time_catches_up() -> TestResult {
    let here = ManualTime::new(T0);
    let ahead = ManualTime::new(T0 + 10 * 60_000);
    let mut office = replica(&todo(), 1, &here)?;
    let mut kiosk = replica(&todo(), 2, &ahead)?;
    kiosk.write(|tx| {
        tx.insert(
            "todo",
            &[("id", "t1".into()), ("title", "from the future".into())],
        )
    })?;

    let report = sync(&kiosk, &mut office)?;
    assert_eq!(report.applied(), 0);
    assert_eq!(report.held.len(), 1);
    assert_eq!(
        (report.held[0].site, report.held[0].offset_ms),
        (site(2), 600_000)
    );
    assert_eq!(office.get("todo", "t1")?, None);
    // Not covered, so the kiosk offers it again on the next sync.
    assert!(!kiosk.changes_since(&office.version_vector())?.is_empty());

    // Five minutes and a second later the kiosk is within the bound.
    here.advance(Duration::from_secs(301));
    let report = sync(&kiosk, &mut office)?;
    assert!(report.held.is_empty());
    assert_eq!(
        column(&office, "todo", "t1", "title")?,
        Some("from the future".into())
    );
    assert_eq!(office.held_count()?, 0);
    // The office's clock has moved up to the kiosk's: its next edit wins.
    office.write(|tx| tx.set("todo", "t1", "title", "fixed"))?;
    sync(&office, &mut kiosk)?;
    assert_eq!(column(&kiosk, "todo", "t1", "title")?, Some("fixed".into()));
    assert_converged(&[office, kiosk])?;
    Ok(())
}

/// A row held back is offered again by every sync until it can apply;
/// each offer should not add another held copy.
#[test]
fn re_offered_held_rows_are_held_once() -> TestResult {
    let here = ManualTime::new(T0);
    let ahead = ManualTime::new(T0 + 10 * 60_000);
    let mut office = replica(&todo(), 1, &here)?;
    let mut kiosk = replica(&todo(), 2, &ahead)?;
    kiosk.write(|tx| tx.insert("todo", &[("id", "t1".into())]))?;
    for _ in 0..5 {
        sync(&kiosk, &mut office)?;
    }
    assert_eq!(office.held_count()?, 1, "held copies of one row");
    Ok(())
}
