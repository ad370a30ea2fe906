//! Unit tests of the store against a small programmatic schema.

use crate::clock::{ManualTime, SiteId};
use crate::error::{Error, Result, WriteError};
use crate::schema::{Column, Kind, Schema, SqlType, Table};
use crate::store::{Store, StoreOptions};
use crate::value::Value;
use crate::version::VersionVector;
use std::sync::Arc;
use std::time::Duration;

fn col(name: &str, sql_type: SqlType, kind: Kind, nullable: bool) -> Column {
    Column {
        name: name.into(),
        sql_type,
        kind,
        nullable,
        default: None,
        policy: Default::default(),
        rules: Default::default(),
    }
}

/// An item table with one column of each kind.
pub(crate) fn test_schema() -> Schema {
    Schema {
        name: "shop".into(),
        version: 1,
        tables: vec![Table {
            name: "item".into(),
            columns: vec![
                col("sku", SqlType::Text, Kind::Lww, false),
                col("name", SqlType::Text, Kind::Lww, true),
                col("stock", SqlType::Integer, Kind::PnCounter, false),
                col("likes", SqlType::Integer, Kind::GCounter, false),
                col("tags", SqlType::Text, Kind::OrSet, false),
            ],
            primary_key: vec![0],
            authority: false,
            deferred_shows: None,
            rules: Default::default(),
        }],
    }
}

fn replica(n: u8, time: &ManualTime) -> Result<Store> {
    Ok(StoreOptions::new()
        .site_id(SiteId::from_bytes([n; 16]))
        .time_source(Arc::new(time.clone()))
        .open_in_memory(&test_schema())?)
}

fn read(store: &Store, sql: &str) -> Result<Vec<Vec<Value>>> {
    let mut stmt = store.conn().prepare(sql)?;
    let n = stmt.column_count();
    let rows = stmt.query_map([], |r| {
        (0..n).map(|i| r.get_ref(i).map(Value::from)).collect()
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

fn sync(from: &Store, to: &mut Store) -> Result<()> {
    let cs = from.changes_since(&to.version_vector())?;
    to.apply(&cs)?;
    Ok(())
}

#[test]
fn writes_are_visible_through_plain_sql() -> Result<()> {
    let time = ManualTime::new(1_000_000);
    let mut a = replica(1, &time)?;
    a.write(|tx| {
        tx.insert(
            "item",
            &[
                ("sku", "A1".into()),
                ("name", "Apple".into()),
                ("stock", 5.into()),
                ("tags", r#"["red","fruit"]"#.into()),
            ],
        )?;
        tx.increment("item", "A1", "stock", -2)?;
        tx.increment("item", "A1", "likes", 3)?;
        tx.add_to_set("item", "A1", "tags", "fresh")?;
        tx.remove_from_set("item", "A1", "tags", "red")
    })?;
    let rows = read(&a, "SELECT sku, name, stock, likes, tags FROM item")?;
    assert_eq!(
        rows,
        vec![vec![
            "A1".into(),
            "Apple".into(),
            3.into(),
            3.into(),
            r#"["fresh","fruit"]"#.into()
        ]]
    );
    Ok(())
}

#[test]
fn concurrent_sales_both_count_and_replicas_converge() -> Result<()> {
    let time = ManualTime::new(1_000_000);
    let (mut a, mut b) = (replica(1, &time)?, replica(2, &time)?);
    a.write(|tx| tx.insert("item", &[("sku", "A1".into()), ("stock", 10.into())]))?;
    sync(&a, &mut b)?;
    a.write(|tx| tx.increment("item", "A1", "stock", -1))?;
    b.write(|tx| tx.increment("item", "A1", "stock", -1))?;
    time.advance(Duration::from_millis(5));
    b.write(|tx| tx.set("item", "A1", "name", "Apple"))?;
    sync(&a, &mut b)?;
    sync(&b, &mut a)?;
    assert_eq!(a.digest()?, b.digest()?);
    assert_eq!(
        read(&a, "SELECT stock, name FROM item")?,
        vec![vec![8.into(), "Apple".into()]]
    );
    assert_eq!(a.version_vector(), b.version_vector());
    // Nothing left to send either way.
    assert!(a.changes_since(&b.version_vector())?.is_empty());
    Ok(())
}

#[test]
fn rejected_write_changes_nothing() -> Result<()> {
    let time = ManualTime::new(1_000_000);
    let mut a = replica(1, &time)?;
    let before = a.digest()?;
    let err = a.write(|tx| {
        tx.insert("item", &[("sku", "A1".into())])?;
        tx.increment("item", "A1", "likes", -1)
    });
    assert!(
        matches!(err, Err(Error::Write(WriteError::NegativeIncrement { .. }))),
        "{err:?}"
    );
    assert_eq!(a.digest()?, before);
    // Nothing was written: the version vector is still empty.
    assert_eq!(a.version_vector(), VersionVector::new());
    Ok(())
}

#[test]
fn delete_wins_over_concurrent_update_and_reinsert_revives() -> Result<()> {
    let time = ManualTime::new(1_000_000);
    let (mut a, mut b) = (replica(1, &time)?, replica(2, &time)?);
    a.write(|tx| tx.insert("item", &[("sku", "A1".into()), ("stock", 4.into())]))?;
    sync(&a, &mut b)?;
    a.write(|tx| tx.delete("item", "A1"))?;
    b.write(|tx| tx.increment("item", "A1", "stock", 1))?;
    sync(&a, &mut b)?;
    sync(&b, &mut a)?;
    assert_eq!(a.digest()?, b.digest()?);
    assert!(read(&a, "SELECT * FROM item")?.is_empty());
    b.write(|tx| tx.insert("item", &[("sku", "A1".into()), ("stock", 1.into())]))?;
    sync(&b, &mut a)?;
    assert_eq!(read(&a, "SELECT stock FROM item")?, vec![vec![1.into()]]);
    Ok(())
}

#[test]
fn far_future_change_is_held_then_released() -> Result<()> {
    let time_a = ManualTime::new(1_000_000 + 600_000);
    let time_b = ManualTime::new(1_000_000);
    let mut a = replica(1, &time_a)?;
    let mut b = replica(2, &time_b)?;
    a.write(|tx| tx.insert("item", &[("sku", "A1".into())]))?;
    let report = b.apply(&a.changes_since(&b.version_vector())?)?;
    assert_eq!(report.held.len(), 1);
    assert_eq!(report.held[0].site, a.site_id());
    assert_eq!(report.held[0].offset_ms, 600_000);
    assert!(b.clock().physical_ms() < 1_000_000 + 1);
    assert!(read(&b, "SELECT * FROM item")?.is_empty());
    assert_eq!(b.held_count()?, 1);
    // Offered again while still ahead: reported again, stored once.
    let again = b.apply(&a.changes_since(&b.version_vector())?)?;
    assert_eq!(again.held.len(), 1);
    assert_eq!(b.held_count()?, 1);
    time_b.advance(Duration::from_secs(400));
    let released = b.release_held()?;
    assert_eq!(released.released, 1);
    assert_eq!(read(&b, "SELECT sku FROM item")?, vec![vec!["A1".into()]]);
    // The held row was not covered, so a later sync offers it again: harmless.
    sync(&a, &mut b)?;
    assert_eq!(a.digest()?, b.digest()?);
    Ok(())
}

#[test]
fn changesets_round_trip_through_frames() -> Result<()> {
    let time = ManualTime::new(1_000_000);
    let (mut a, mut b) = (replica(1, &time)?, replica(2, &time)?);
    a.write(|tx| {
        tx.insert(
            "item",
            &[
                ("sku", "A1".into()),
                ("name", "x".into()),
                ("stock", 3.into()),
                ("likes", 2.into()),
                ("tags", r#"["a","b"]"#.into()),
            ],
        )?;
        tx.insert("item", &[("sku", "B2".into())])?;
        tx.delete("item", "B2")
    })?;
    sync(&a, &mut b)?;
    time.advance(Duration::from_millis(3));
    b.write(|tx| tx.increment("item", "A1", "stock", -1))?;
    a.write(|tx| tx.set("item", "A1", "name", "y"))?;
    sync(&b, &mut a)?;
    let cs = a.changes_since(&VersionVector::new())?;
    let bytes = meldb_core::codec::encode_changeset(&cs);
    assert_eq!(meldb_core::codec::decode_changeset(&bytes)?, cs);
    let mut c = replica(3, &time)?;
    c.apply_bytes(&bytes)?;
    assert_eq!(c.digest()?, a.digest()?);
    Ok(())
}

#[test]
fn site_index_outside_the_table_is_a_decode_error() -> Result<()> {
    let time = ManualTime::new(1_000_000);
    let mut a = replica(1, &time)?;
    a.write(|tx| tx.insert("item", &[("sku", "A1".into())]))?;
    let bytes = meldb_core::codec::encode_changeset(&a.changes_since(&VersionVector::new())?);
    let payload = meldb_core::codec::unframe(&bytes)?.to_vec();
    // The payload starts with the origin (1 length byte + 16) and the site
    // table (1 count byte, then 1 length byte + 16 per site): shrink the
    // table to zero sites by rewriting the count and dropping the entry.
    assert_eq!(payload[17], 1);
    let mut hostile = payload[..17].to_vec();
    hostile.push(0);
    hostile.extend_from_slice(&payload[18 + 17..]);
    let err = meldb_core::codec::decode_changeset(&meldb_core::codec::frame(&hostile));
    assert!(
        matches!(err, Err(meldb_core::codec::DecodeError::Malformed { .. })),
        "{err:?}"
    );
    Ok(())
}

#[test]
fn a_held_row_that_no_longer_applies_is_dropped_not_wedging_apply() -> Result<()> {
    use crate::changeset::{Changeset, RowChange, TableChanges};
    use crate::clock::Hlc;
    use crate::crdt::RowClock;
    use crate::merge::RowState;
    let time = ManualTime::new(1_000_000);
    let mut b = replica(2, &time)?;
    let mut a = replica(1, &time)?;
    a.write(|tx| tx.insert("item", &[("sku", "A1".into())]))?;
    b.apply(&a.changes_since(&b.version_vector())?)?;
    // A far-future row claiming the dot (site 1, seq 1) that row A1 owns.
    let hostile = Changeset {
        origin: SiteId::from_bytes([9; 16]),
        tables: vec![TableChanges {
            table: "item".into(),
            columns: vec!["name".into(), "stock".into(), "likes".into(), "tags".into()],
            rows: vec![RowChange {
                key: vec!["H".into()],
                state: RowState {
                    cl: 1,
                    clock: RowClock::from_entries([(a.site_id(), 1)]),
                    hlc: Hlc::from_physical_ms(1_000_000 + 600_000),
                    writer: SiteId::from_bytes([9; 16]),
                    columns: vec![None; 4],
                    meta: None,
                },
                covers: vec![],
            }],
        }],
    };
    assert_eq!(b.apply(&hostile)?.held.len(), 1);
    time.advance(Duration::from_secs(600));
    let report = b.apply(&a.changes_since(&b.version_vector())?)?;
    assert_eq!(report.discarded.len(), 1, "{report:?}");
    assert!(
        report.discarded[0].contains("already belongs"),
        "{report:?}"
    );
    assert_eq!(b.held_count()?, 0);
    // And applies keep working.
    a.write(|tx| tx.set("item", "A1", "name", "x"))?;
    b.apply(&a.changes_since(&b.version_vector())?)?;
    assert_eq!(a.digest()?, b.digest()?);
    Ok(())
}

#[test]
fn names_are_case_insensitive_and_integers_fit_real_columns() -> Result<()> {
    let time = ManualTime::new(1_000_000);
    let mut a = replica(1, &time)?;
    a.write(|tx| {
        tx.insert("ITEM", &[("SKU", "A1".into()), ("Stock", 2.into())])?;
        tx.increment("Item", "A1", "STOCK", 1)
    })?;
    assert_eq!(read(&a, "SELECT stock FROM item")?, vec![vec![3.into()]]);
    Ok(())
}

/// A set tag the row's clock has not seen cannot come from a write or a
/// merge; such metadata is reported as corrupt, naming the table, rather
/// than read and merged into something no peer has.
#[test]
fn a_stored_state_out_of_canonical_form_is_corrupt() -> Result<()> {
    use crate::crdt::{ColumnState, Dot, OrSet};
    use meldb_core::codec::stored;
    let time = ManualTime::new(1_000_000);
    let mut a = replica(1, &time)?;
    a.write(|tx| {
        tx.insert(
            "item",
            &[("sku", "A1".into()), ("tags", r#"["red"]"#.into())],
        )
    })?;
    let blob: Vec<u8> = a
        .conn()
        .query_row("SELECT _meldb_state FROM item__meldb", [], |r| r.get(0))?;
    let site = a.site_id();
    let meta = stored::decode_meta(&blob, |_| Some(site), Vec::new())
        .map_err(|e| panic_free(e.to_string()))?;
    let mut state = crate::merge::RowState {
        cl: 1,
        clock: crate::crdt::RowClock::from_entries(meta.clock.iter().map(|d| (d.site, d.seq))),
        hlc: meta.hlc,
        writer: meta.writer,
        columns: meta.columns,
        meta: None,
    };
    let unseen = Dot { site, seq: 99 };
    state.columns[3] = Some(ColumnState::OrSet(OrSet::from_entries(vec![(
        "red".into(),
        vec![unseen],
    )])));
    let Ok(forged) = stored::encode_meta(&state, |_| Ok::<u32, std::convert::Infallible>(1));
    a.conn()
        .execute("UPDATE item__meldb SET _meldb_state = ?1", [forged])?;
    match a.write(|tx| tx.set("item", "A1", "name", "Apple")) {
        Err(Error::Storage(e)) => {
            let message = e.to_string();
            assert!(
                message.contains("\"item\"") && message.contains("not canonical"),
                "{message}"
            );
        }
        other => panic!("expected a corruption error, got {other:?}"),
    }
    Ok(())
}

fn panic_free(message: String) -> Error {
    Error::Storage(crate::error::StorageError::Corrupt {
        what: "test blob".into(),
        problem: message,
    })
}

/// Conflict-log entries whose writer or row image does not read are
/// reported as corrupt, naming the entry, rather than read as the default
/// writer or as a missing row.
#[test]
fn a_corrupt_conflict_log_entry_is_reported() -> Result<()> {
    let time = ManualTime::new(1_000_000);
    let a = replica(1, &time)?;
    let forge = |writer: &str, local: &str| -> Result<()> {
        a.conn().execute("DELETE FROM meldb_conflicts", [])?;
        a.conn().execute(
            "INSERT INTO meldb_conflicts (at_ms, tbl, key, local, outcome, writer, writer_site) \
             VALUES (1, 'item', '[\"A1\"]', ?1, 'auto_merged', ?2, zeroblob(16))",
            [local, writer],
        )?;
        Ok(())
    };
    let sound = serde_json::to_string(&crate::resolve::Writer::default())
        .map_err(|e| panic_free(e.to_string()))?;
    forge(&sound, r#"{"sku":"A1"}"#)?;
    let read = a.conflicts(None, None, 10)?;
    assert_eq!(read.len(), 1, "the well-formed entry reads");
    for (writer, local, what) in [
        ("{not json", r#"{"sku":"A1"}"#, "writer"),
        (sound.as_str(), "[not a row", "local row"),
    ] {
        forge(writer, local)?;
        match a.conflicts(None, None, 10) {
            Err(Error::Storage(e)) => {
                let message = e.to_string();
                assert!(
                    message.contains(what) && message.contains("meldb_conflicts"),
                    "{message}"
                );
            }
            other => panic!("{what}: expected a corruption error, got {other:?}"),
        }
    }
    Ok(())
}

#[test]
fn local_changes_missing_from_counts_rows_a_peer_lacks() -> Result<()> {
    let time = ManualTime::new(1_000_000);
    let (mut a, mut b) = (replica(1, &time)?, replica(2, &time)?);
    assert_eq!(a.local_changes_missing_from(&b.version_vector())?, 0);
    a.write(|tx| {
        tx.insert("item", &[("sku", "A1".into()), ("stock", 1.into())])?;
        tx.insert("item", &[("sku", "A2".into()), ("stock", 1.into())])?;
        tx.insert("item", &[("sku", "A3".into()), ("stock", 1.into())])
    })?;
    // A row written twice is one change to send.
    a.write(|tx| tx.increment("item", "A1", "stock", 2))?;
    assert_eq!(a.local_changes_missing_from(&b.version_vector())?, 3);
    assert_eq!(a.local_changes_missing_from(&VersionVector::new())?, 3);
    // The peer's own writes are not this replica's changes.
    b.write(|tx| tx.insert("item", &[("sku", "B1".into()), ("stock", 1.into())]))?;
    sync(&b, &mut a)?;
    assert_eq!(a.local_changes_missing_from(&b.version_vector())?, 3);
    sync(&a, &mut b)?;
    assert_eq!(a.local_changes_missing_from(&b.version_vector())?, 0);
    assert_eq!(a.local_changes_missing_from(&a.version_vector())?, 0);
    a.write(|tx| tx.set("item", "A2", "name", "pear"))?;
    assert_eq!(a.local_changes_missing_from(&b.version_vector())?, 1);
    // A peer that has only this replica's first write (and all of b's)
    // lacks exactly the rows changes_since sends it: A1's first dot was
    // superseded by its increment, so every row counts.
    let mut first = VersionVector::new();
    first.insert(a.site_id(), 1, 1);
    first.insert(b.site_id(), 1, 1);
    assert_eq!(
        a.local_changes_missing_from(&first)?,
        a.changes_since(&first)?.len() as u64
    );
    Ok(())
}

/// A table with every local row-level rule: `status` frozen when final
/// with declared transitions, admin-only deletes, an owned `stamp`.
const RULED: &str = r#"
name = "shop"
version = 1
[[table]]
name = "orders"
primary_key = ["id"]
authority = true
frozen_when_final = "status"
delete_roles = ["admin"]
[[table.column]]
name = "id"
type = "text"
[[table.column]]
name = "status"
type = "text"
nullable = false
default = "pending"
order = ["pending < processing < shipped"]
absorbing = ["shipped"]
transitions = { pending = ["processing"], processing = ["shipped"] }
[[table.column]]
name = "note"
type = "text"
[[table.column]]
name = "stamp"
type = "integer"
owner = "authority"
"#;

fn ruled(authority: bool) -> Result<Store> {
    let schema = Schema::from_toml_str(RULED, "shop.toml")?;
    Ok(StoreOptions::new()
        .authority(authority)
        .open_in_memory(&schema)?)
}

#[test]
fn a_write_a_row_rule_refuses_writes_nothing() -> Result<()> {
    let mut client = ruled(false)?;
    client.write(|tx| tx.insert("orders", &[("id", "o1".into())]))?;
    let vv = client.version_vector();
    let before = client.digest()?;
    let refusals = [
        client.write(|tx| {
            tx.set("orders", "o1", "note", "first")?;
            tx.set("orders", "o1", "status", "shipped")
        }),
        client.write(|tx| tx.upsert("orders", &[("id", "o1".into()), ("stamp", 1.into())])),
        client.write(|tx| tx.delete("orders", "o1")),
    ];
    for refused in refusals {
        assert!(
            matches!(
                refused,
                Err(Error::Write(
                    WriteError::Transition { .. }
                        | WriteError::AuthorityOwned { .. }
                        | WriteError::DeleteRefused { .. }
                ))
            ),
            "{refused:?}"
        );
    }
    assert_eq!(client.digest()?, before);
    assert_eq!(client.version_vector(), vv);
    // With the role, the delete goes through.
    client.set_writer(crate::resolve::Writer::user("ann").with_role("admin"));
    client.write(|tx| tx.delete("orders", "o1"))?;
    assert!(client.get("orders", "o1")?.is_none());
    Ok(())
}

#[test]
fn the_authority_writes_owned_columns_and_meets_the_other_rules() -> Result<()> {
    let mut server = ruled(true)?;
    server.write(|tx| tx.insert("orders", &[("id", "o1".into()), ("stamp", 7.into())]))?;
    server.write(|tx| tx.set("orders", "o1", "status", "processing"))?;
    server.write(|tx| tx.set("orders", "o1", "status", "shipped"))?;
    let refused = server.write(|tx| tx.set("orders", "o1", "stamp", 8));
    assert!(
        matches!(&refused, Err(Error::Write(WriteError::Frozen { column, .. })) if column == "status"),
        "{refused:?}"
    );
    Ok(())
}

#[test]
fn a_mutators_writes_meet_the_row_rules() -> Result<()> {
    let mut client = ruled(false)?;
    client.register_mutator("stamp", |tx, id: String| {
        tx.insert("orders", &[("id", id.as_str().into())])?;
        tx.set("orders", id.as_str(), "stamp", 1)?;
        Ok(())
    });
    let refused = client.mutate("stamp", &"o1");
    let message = match refused {
        Err(e) => e.to_string(),
        Ok(id) => panic!("mutation {id} went through"),
    };
    assert!(message.contains("authority only"), "{message}");
    assert!(client.get("orders", "o1")?.is_none());
    assert_eq!(client.version_vector(), VersionVector::new());
    Ok(())
}

/// A commit saves the ranges of the sites it received from and leaves the
/// others' stored rows alone; what is stored is the version vector the
/// store had, across commits, a rolled-back apply and a reopen.
#[test]
fn coverage_is_saved_per_site_and_reopens_whole(
) -> std::result::Result<(), Box<dyn std::error::Error>> {
    let time = ManualTime::new(1_000_000);
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("cov.db");
    let mut a = StoreOptions::new()
        .site_id(SiteId::from_bytes([1; 16]))
        .time_source(Arc::new(time.clone()))
        .open(&path, &test_schema())?;
    let (mut b, mut c) = (replica(2, &time)?, replica(3, &time)?);
    for (i, peer) in [&mut b, &mut c].into_iter().enumerate() {
        peer.write(|tx| tx.insert("item", &[("sku", format!("s{i}").into())]))?;
    }
    sync(&b, &mut a)?;
    sync(&c, &mut a)?;
    b.write(|tx| tx.insert("item", &[("sku", "b2".into())]))?;
    sync(&b, &mut a)?;
    // A rolled-back apply (a batch whose row is of no known table) saves
    // nothing of its sites.
    c.write(|tx| tx.insert("item", &[("sku", "c2".into())]))?;
    let mut bad = c.changes_since(&a.version_vector())?;
    bad.tables[0].table = "nope".into();
    assert!(a.apply(&bad).is_err());
    let had = a.version_vector();
    let rows = read(&a, "SELECT count(*) FROM meldb_coverage")?;
    assert_eq!(
        rows,
        vec![vec![Value::Integer(2)]],
        "one range per remote site"
    );
    drop(a);
    let a = StoreOptions::new()
        .time_source(Arc::new(time.clone()))
        .open(&path, &test_schema())?;
    assert_eq!(a.version_vector(), had);
    assert!(
        !had.contains(&c.site_id(), 2),
        "the rolled-back dot is not claimed"
    );
    assert!(had.contains(&b.site_id(), 2));
    Ok(())
}
