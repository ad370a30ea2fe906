//! The compact batch layout on real changesets: every shape a store
//! produces (fresh rows, several writers on one row, counters, sets,
//! deletes and revivals, composite keys, NULLs) round-trips, costs what the
//! layout promises, and damaged input is an error, never a panic. Here, not
//! in the core, because the changesets come from real stores.

use crate::changeset::Changeset;
use crate::clock::ManualTime;
use crate::clock::SiteId;
use crate::codec::DecodeError;
use crate::crdt::ColumnState;
use crate::schema::Schema;
use crate::store::StoreOptions;
use crate::value::Value;
use crate::version::VersionVector;
use meldb_core::codec::compact::{decode, encode, values_len};
use std::sync::Arc;

type TestResult = Result<(), Box<dyn std::error::Error>>;

const SCHEMA: &str = r#"
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
[[table.column]]
name = "price"
type = "real"
[[table.column]]
name = "stock"
type = "integer"
kind = "pn_counter"
[[table.column]]
name = "sold"
type = "integer"
kind = "g_counter"
[[table.column]]
name = "tags"
type = "text"
kind = "or_set"
[[table]]
name = "cell"
primary_key = ["row", "col"]
[[table.column]]
name = "row"
type = "integer"
[[table.column]]
name = "col"
type = "blob"
[[table.column]]
name = "v"
type = "text"
"#;

/// A changeset with every shape: fresh rows, several writers on one
/// row, counters, sets, deletes and revivals, composite keys, NULLs.
fn varied() -> crate::Result<Changeset> {
    let schema = Schema::from_toml_str(SCHEMA, "shop.toml")?;
    let time = ManualTime::new(1_700_000_000_000);
    let open = |n: u8| {
        StoreOptions::new()
            .site_id(SiteId::from_bytes([n; 16]))
            .time_source(Arc::new(time.clone()))
            .open_in_memory(&schema)
    };
    let (mut a, mut b) = (open(1)?, open(2)?);
    a.write(|tx| {
        for i in 0..20 {
            tx.insert(
                "item",
                &[("sku", format!("k{i}").into()), ("name", "x".into())],
            )?;
        }
        tx.insert(
            "cell",
            &[
                ("row", 1.into()),
                ("col", Value::Blob(vec![0, 255])),
                ("v", Value::Null),
            ],
        )?;
        tx.increment("item", "k1", "stock", -3)?;
        tx.add_to_set("item", "k2", "tags", "red")?;
        Ok(())
    })?;
    b.apply(&a.changes_since(&b.version_vector())?)?;
    time.advance(std::time::Duration::from_secs(3));
    b.write(|tx| {
        tx.set("item", "k1", "price", 2.5)?;
        tx.increment("item", "k3", "sold", 7)?;
        tx.delete("item", "k4")?;
        tx.remove_from_set("item", "k2", "tags", "red")?;
        tx.add_to_set("item", "k2", "tags", "blue")?;
        Ok(())
    })?;
    a.write(|tx| tx.set("item", "k1", "name", "concurrent"))?;
    a.apply(&b.changes_since(&a.version_vector())?)?;
    a.changes_since(&VersionVector::new())
}

#[test]
fn every_shape_round_trips() -> TestResult {
    let cs = varied()?;
    assert!(cs.len() > 20);
    assert_eq!(decode(&encode(&cs))?, cs);
    let empty = Changeset::new(SiteId::from_bytes([3; 16]));
    assert_eq!(decode(&encode(&empty))?, empty);
    Ok(())
}

#[test]
fn fresh_rows_cost_about_four_bytes_beyond_their_encoded_values() -> TestResult {
    let schema = Schema::from_toml_str(
        r#"
        name = "t"
        version = 1
        [[table]]
        name = "t"
        primary_key = ["id"]
        [[table.column]]
        name = "id"
        type = "text"
        [[table.column]]
        name = "a"
        type = "text"
        [[table.column]]
        name = "b"
        type = "integer"
        [[table.column]]
        name = "c"
        type = "real"
        "#,
        "t.toml",
    )?;
    let mut store = StoreOptions::new().open_in_memory(&schema)?;
    store.write(|tx| {
        for i in 0..200i64 {
            tx.insert(
                "t",
                &[
                    ("id", format!("key-{i:05}").into()),
                    ("a", "some text".into()),
                    ("b", (i * 1000).into()),
                    ("c", (i as f64 / 3.0).into()),
                ],
            )?;
        }
        Ok(())
    })?;
    let cs = store.changes_since(&VersionVector::new())?;
    let bytes = encode(&cs);
    let values = values_len(cs.tables[0].rows.iter().flat_map(|row| {
        std::iter::once(&row.key[0]).chain(row.state.columns.iter().flatten().filter_map(
            |c| match c {
                ColumnState::Lww(l) => Some(&l.value),
                _ => None,
            },
        ))
    }));
    // origin, one site, table name and columns, arity, row count.
    let header = 16 + 1 + 16 + 1 + 2 + 1 + 2 + 2 + 2 + 2 + 1 + 2;
    let metadata = bytes.len() - values - header;
    // Flags, timestamp delta, sequence delta, cover: one byte each (a
    // timestamp delta across a millisecond boundary takes three).
    assert!(
        2 * metadata <= 9 * cs.len(),
        "{metadata} bytes of metadata for {} rows",
        cs.len()
    );
    assert_eq!(decode(&bytes)?, cs);
    Ok(())
}

#[test]
fn damaged_input_is_an_error_never_a_panic() -> TestResult {
    let bytes = encode(&varied()?);
    for cut in 0..bytes.len() {
        assert!(decode(&bytes[..cut]).is_err(), "cut at {cut}");
    }
    let mut seed = 7u64;
    for i in 0..bytes.len() {
        for flip in [0x01u8, 0x80, 0xff] {
            let mut bad = bytes.clone();
            bad[i] ^= flip;
            let _ = decode(&bad);
        }
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let mut bad = bytes.clone();
        bad.insert(i, (seed >> 33) as u8);
        let _ = decode(&bad);
    }
    // Counts that claim more than the input holds.
    let mut huge = vec![0u8; 16];
    huge.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
    assert!(matches!(decode(&huge), Err(DecodeError::Malformed { .. })));
    Ok(())
}
