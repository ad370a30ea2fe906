//! Every bad write and every bad changeset: the right error variant, a
//! message naming the table and column (and key), and no trace left — the
//! digest, the version vector and the rows are as before, whether the
//! failed write ran alone or inside a transaction that then commits.

mod common;

use common::{booking, column, inventory, replica, site, todo, view_rows, TestResult, T0};
use meldb::{
    codec::{self, DecodeError},
    crdt::{ColumnState, GCounter},
    ApplyError, Changeset, Cover, Error, Key, Kind, ManualTime, SqlType, Store, Transaction, Value,
    VersionVector, WriteError,
};
use std::collections::BTreeMap;

type Snapshot = ([u8; 32], VersionVector, BTreeMap<String, Vec<Vec<Value>>>);

fn snapshot(store: &Store) -> meldb::Result<Snapshot> {
    Ok((store.digest()?, store.version_vector(), view_rows(store)?))
}

/// Runs a write that must fail, twice: alone (the transaction rolls back),
/// and inside a transaction that commits after it. Both times nothing may
/// change. Returns the error and checks its message names every needle.
fn rejected(
    store: &mut Store,
    needles: &[&str],
    write: impl Fn(&mut Transaction<'_>) -> meldb::Result<()>,
) -> Error {
    let before = snapshot(store).expect("snapshot");
    let err = match store.write(|tx| write(tx)) {
        Err(e) => e,
        Ok(()) => panic!("the write succeeded; expected an error naming {needles:?}"),
    };
    assert_eq!(
        snapshot(store).expect("snapshot"),
        before,
        "{err}: left a trace"
    );
    let mut tx = store.transaction().expect("transaction");
    let again = write(&mut tx).expect_err("the write must fail inside a transaction too");
    tx.commit().expect("commit");
    assert_eq!(again.to_string(), err.to_string());
    assert_eq!(
        snapshot(store).expect("snapshot"),
        before,
        "{err}: left a trace in a committed transaction"
    );
    let message = err.to_string();
    for needle in needles {
        assert!(
            message.contains(needle),
            "message {message:?} does not name {needle:?}"
        );
    }
    err
}

/// An inventory replica with a live item "apple", a deleted item "plum"
/// and a location ("north", "apple").
fn shop() -> meldb::Result<Store> {
    let mut store = replica(&inventory(), 1, &ManualTime::new(T0))?;
    store.write(|tx| {
        tx.insert(
            "item",
            &[
                ("sku", "apple".into()),
                ("stock", 5.into()),
                ("sold", 1.into()),
                ("tags", r#"["red"]"#.into()),
            ],
        )?;
        tx.insert("item", &[("sku", "plum".into())])?;
        tx.delete("item", "plum")?;
        tx.insert(
            "location",
            &[("warehouse", "north".into()), ("sku", "apple".into())],
        )
    })?;
    Ok(store)
}

fn is_write(err: &Error, check: impl Fn(&WriteError) -> bool) -> bool {
    matches!(err, Error::Write(w) if check(w))
}

#[test]
fn unknown_tables_and_columns() -> TestResult {
    let mut s = shop()?;
    let unknown_table =
        |e: &WriteError| matches!(e, WriteError::UnknownTable { table } if table == "nope");
    let err = rejected(&mut s, &["nope"], |tx| {
        tx.insert("nope", &[("sku", "x".into())])
    });
    assert!(is_write(&err, unknown_table), "{err:?}");
    let err = rejected(&mut s, &["nope"], |tx| tx.update("nope", "apple", &[]));
    assert!(is_write(&err, unknown_table), "{err:?}");
    let err = rejected(&mut s, &["nope"], |tx| {
        tx.increment("nope", "apple", "stock", 1)
    });
    assert!(is_write(&err, unknown_table), "{err:?}");
    let err = rejected(&mut s, &["nope"], |tx| tx.delete("nope", "apple"));
    assert!(is_write(&err, unknown_table), "{err:?}");
    // The base table behind a view is not a table users write.
    let err = rejected(&mut s, &["item__meldb"], |tx| {
        tx.delete("item__meldb", "apple")
    });
    assert!(
        is_write(&err, |e| matches!(e, WriteError::UnknownTable { .. })),
        "{err:?}"
    );
    assert!(matches!(
        s.get("nope", "apple"),
        Err(Error::Write(WriteError::UnknownTable { .. }))
    ));

    let unknown_column = |e: &WriteError| matches!(e, WriteError::UnknownColumn { table, column } if table == "item" && column == "colour");
    let needles = ["item", "colour"];
    for write in [
        &(|tx: &mut Transaction<'_>| {
            tx.insert(
                "item",
                &[("sku", "kiwi".into()), ("colour", "green".into())],
            )
        }) as &dyn Fn(&mut Transaction<'_>) -> meldb::Result<()>,
        &|tx| {
            tx.upsert(
                "item",
                &[("sku", "apple".into()), ("colour", "green".into())],
            )
        },
        &|tx| tx.update("item", "apple", &[("colour", "green".into())]),
        &|tx| tx.set("item", "apple", "colour", "green"),
        &|tx| tx.increment("item", "apple", "colour", 1),
        &|tx| tx.add_to_set("item", "apple", "colour", "green"),
        &|tx| tx.remove_from_set("item", "apple", "colour", "green"),
    ] {
        let err = rejected(&mut s, &needles, write);
        assert!(is_write(&err, unknown_column), "{err:?}");
    }
    Ok(())
}

#[test]
fn values_of_the_wrong_type() -> TestResult {
    let mut s = replica(&todo(), 1, &ManualTime::new(T0))?;
    s.write(|tx| tx.insert("todo", &[("id", "t1".into())]))?;
    let mismatch = |column: &'static str, expected: SqlType, found: &'static str| {
        move |e: &WriteError| {
            matches!(e, WriteError::TypeMismatch { table, column: c, expected: x, found: f }
                if table == "todo" && c == column && *x == expected && *f == found)
        }
    };
    // text into integer, integer into text, real into integer
    let err = rejected(&mut s, &["todo", "done"], |tx| {
        tx.set("todo", "t1", "done", "yes")
    });
    assert!(
        is_write(&err, mismatch("done", SqlType::Integer, "text")),
        "{err:?}"
    );
    let err = rejected(&mut s, &["todo", "title"], |tx| {
        tx.set("todo", "t1", "title", 5)
    });
    assert!(
        is_write(&err, mismatch("title", SqlType::Text, "integer")),
        "{err:?}"
    );
    let err = rejected(&mut s, &["todo", "urgent"], |tx| {
        tx.set("todo", "t1", "urgent", 1.5)
    });
    assert!(
        is_write(&err, mismatch("urgent", SqlType::Integer, "real")),
        "{err:?}"
    );
    let err = rejected(&mut s, &["todo", "note"], |tx| {
        tx.insert(
            "todo",
            &[("id", "t2".into()), ("note", vec![1u8, 2].into())],
        )
    });
    assert!(
        is_write(&err, mismatch("note", SqlType::Text, "blob")),
        "{err:?}"
    );
    // A counter's initial amount must be an integer.
    let err = rejected(&mut s, &["todo", "likes"], |tx| {
        tx.insert("todo", &[("id", "t2".into()), ("likes", "many".into())])
    });
    assert!(
        is_write(&err, mismatch("likes", SqlType::Integer, "text")),
        "{err:?}"
    );
    // Key of the wrong type, on insert and on update.
    let err = rejected(&mut s, &["todo", "id"], |tx| {
        tx.insert("todo", &[("id", 7.into())])
    });
    assert!(
        is_write(&err, mismatch("id", SqlType::Text, "integer")),
        "{err:?}"
    );
    let err = rejected(&mut s, &["todo", "id"], |tx| {
        tx.set("todo", 7i64, "title", "x")
    });
    assert!(
        is_write(&err, mismatch("id", SqlType::Text, "integer")),
        "{err:?}"
    );
    Ok(())
}

#[test]
fn null_nan_and_missing_values() -> TestResult {
    let mut s = shop()?;
    let null = |e: &WriteError| matches!(e, WriteError::NullNotAllowed { table, column } if table == "item" && column == "name");
    let err = rejected(&mut s, &["item", "name"], |tx| {
        tx.set("item", "apple", "name", Value::Null)
    });
    assert!(is_write(&err, null), "{err:?}");
    let err = rejected(&mut s, &["item", "name"], |tx| {
        tx.insert("item", &[("sku", "kiwi".into()), ("name", Value::Null)])
    });
    assert!(is_write(&err, null), "{err:?}");
    let err = rejected(&mut s, &["item", "sku"], |tx| {
        tx.insert("item", &[("sku", Value::Null)])
    });
    assert!(
        is_write(
            &err,
            |e| matches!(e, WriteError::NullNotAllowed { column, .. } if column == "sku")
        ),
        "{err:?}"
    );

    let nan = |e: &WriteError| matches!(e, WriteError::NotANumber { table, column } if table == "item" && column == "price");
    let err = rejected(&mut s, &["item", "price"], |tx| {
        tx.set("item", "apple", "price", f64::NAN)
    });
    assert!(is_write(&err, nan), "{err:?}");
    let err = rejected(&mut s, &["item", "price"], |tx| {
        tx.upsert(
            "item",
            &[("sku", "apple".into()), ("price", f64::NAN.into())],
        )
    });
    assert!(is_write(&err, nan), "{err:?}");

    // Missing key column on insert.
    let err = rejected(&mut s, &["location", "sku"], |tx| {
        tx.insert("location", &[("warehouse", "north".into())])
    });
    assert!(
        is_write(
            &err,
            |e| matches!(e, WriteError::MissingValue { table, column } if table == "location" && column == "sku")
        ),
        "{err:?}"
    );
    // Missing NOT NULL column without default on insert (and upsert of a new row).
    let mut b = replica(&booking(), 1, &ManualTime::new(T0))?;
    let missing =
        |e: &WriteError| matches!(e, WriteError::MissingValue { table, .. } if table == "booking");
    let err = rejected(&mut b, &["booking", "show"], |tx| {
        tx.insert(
            "booking",
            &[
                ("id", "b1".into()),
                ("seat", "A1".into()),
                ("customer", "ann".into()),
            ],
        )
    });
    assert!(is_write(&err, missing), "{err:?}");
    let err = rejected(&mut b, &["booking", "customer"], |tx| {
        tx.upsert(
            "booking",
            &[
                ("id", "b1".into()),
                ("show", "s".into()),
                ("seat", "A1".into()),
            ],
        )
    });
    assert!(is_write(&err, missing), "{err:?}");
    Ok(())
}

#[test]
fn keys_of_the_wrong_arity_and_duplicate_columns() -> TestResult {
    let mut s = shop()?;
    let arity = |expected: usize, found: usize| move |e: &WriteError| matches!(e, WriteError::KeyArity { expected: x, found: f, .. } if *x == expected && *f == found);
    let err = rejected(&mut s, &["location", "north"], |tx| {
        tx.set("location", "north", "shelf", "A")
    });
    assert!(is_write(&err, arity(2, 1)), "{err:?}");
    let err = rejected(&mut s, &["item", "apple", "extra"], |tx| {
        tx.delete("item", vec!["apple".into(), "extra".into()])
    });
    assert!(is_write(&err, arity(1, 2)), "{err:?}");
    let err = rejected(&mut s, &["item"], |tx| {
        tx.increment("item", Vec::<Value>::new(), "stock", 0)
    });
    assert!(is_write(&err, arity(1, 0)), "{err:?}");
    assert!(matches!(
        s.get("location", "north"),
        Err(Error::Write(WriteError::KeyArity { .. }))
    ));

    let duplicate = |column: &'static str| move |e: &WriteError| matches!(e, WriteError::DuplicateColumn { table, column: c } if table == "item" && c == column);
    let err = rejected(&mut s, &["item", "sku"], |tx| {
        tx.insert("item", &[("sku", "kiwi".into()), ("sku", "kiwi".into())])
    });
    assert!(is_write(&err, duplicate("sku")), "{err:?}");
    let err = rejected(&mut s, &["item", "name"], |tx| {
        tx.insert(
            "item",
            &[
                ("sku", "kiwi".into()),
                ("name", "a".into()),
                ("name", "b".into()),
            ],
        )
    });
    assert!(is_write(&err, duplicate("name")), "{err:?}");
    let err = rejected(&mut s, &["item", "tags"], |tx| {
        tx.update(
            "item",
            "apple",
            &[("tags", "[]".into()), ("tags", r#"["x"]"#.into())],
        )
    });
    assert!(is_write(&err, duplicate("tags")), "{err:?}");

    // Key columns cannot change.
    let err = rejected(&mut s, &["item", "sku"], |tx| {
        tx.set("item", "apple", "sku", "pear")
    });
    assert!(
        is_write(
            &err,
            |e| matches!(e, WriteError::KeyUpdate { column, .. } if column == "sku")
        ),
        "{err:?}"
    );
    let err = rejected(&mut s, &["location", "warehouse"], |tx| {
        tx.increment(
            "location",
            vec!["north".into(), "apple".into()],
            "warehouse",
            1,
        )
    });
    assert!(
        is_write(&err, |e| matches!(e, WriteError::KeyUpdate { .. })),
        "{err:?}"
    );
    Ok(())
}

#[test]
fn rows_that_exist_or_do_not() -> TestResult {
    let mut s = shop()?;
    let err = rejected(&mut s, &["item", "apple"], |tx| {
        tx.insert("item", &[("sku", "apple".into())])
    });
    assert!(
        is_write(
            &err,
            |e| matches!(e, WriteError::RowExists { table, key } if table == "item" && *key == Key::from("apple"))
        ),
        "{err:?}"
    );
    let err = rejected(&mut s, &["location", "north", "apple"], |tx| {
        tx.insert(
            "location",
            &[("warehouse", "north".into()), ("sku", "apple".into())],
        )
    });
    assert!(
        is_write(&err, |e| matches!(e, WriteError::RowExists { .. })),
        "{err:?}"
    );

    // Missing ("ghost") and deleted ("plum") rows, for every kind of change.
    for key in ["ghost", "plum"] {
        let not_found = |e: &WriteError| matches!(e, WriteError::RowNotFound { table, key: k } if table == "item" && *k == Key::from(key));
        let needles = ["item", key];
        for write in [
            &(|tx: &mut Transaction<'_>| tx.update("item", key, &[("name", "x".into())]))
                as &dyn Fn(&mut Transaction<'_>) -> meldb::Result<()>,
            &|tx| tx.update("item", key, &[]),
            &|tx| tx.set("item", key, "price", 2.0),
            &|tx| tx.increment("item", key, "stock", 1),
            &|tx| tx.increment("item", key, "stock", 0),
            &|tx| tx.increment("item", key, "sold", 0),
            &|tx| tx.add_to_set("item", key, "tags", "x"),
            &|tx| tx.remove_from_set("item", key, "tags", "x"),
            &|tx| tx.delete("item", key),
        ] {
            let err = rejected(&mut s, &needles, write);
            assert!(is_write(&err, not_found), "{err:?}");
        }
    }
    Ok(())
}

#[test]
fn operations_that_do_not_fit_the_column_kind() -> TestResult {
    let mut s = shop()?;
    let wrong_kind = |column: &'static str, kind: Kind| move |e: &WriteError| matches!(e, WriteError::WrongKind { table, column: c, kind: k, .. } if table == "item" && c == column && *k == kind);
    let negative = |e: &WriteError| matches!(e, WriteError::NegativeIncrement { table, column, amount } if table == "item" && column == "sold" && *amount < 0);
    let err = rejected(&mut s, &["item", "sold", "-1"], |tx| {
        tx.increment("item", "apple", "sold", -1)
    });
    assert!(is_write(&err, negative), "{err:?}");
    let err = rejected(&mut s, &["item", "sold"], |tx| {
        tx.insert("item", &[("sku", "kiwi".into()), ("sold", (-2).into())])
    });
    assert!(is_write(&err, negative), "{err:?}");

    // Counters are incremented, never assigned, once the row exists.
    let err = rejected(&mut s, &["item", "stock"], |tx| {
        tx.update("item", "apple", &[("stock", 3.into())])
    });
    assert!(
        is_write(&err, wrong_kind("stock", Kind::PnCounter)),
        "{err:?}"
    );
    let err = rejected(&mut s, &["item", "sold"], |tx| {
        tx.set("item", "apple", "sold", 3)
    });
    assert!(
        is_write(&err, wrong_kind("sold", Kind::GCounter)),
        "{err:?}"
    );
    let err = rejected(&mut s, &["item", "stock"], |tx| {
        tx.upsert("item", &[("sku", "apple".into()), ("stock", 3.into())])
    });
    assert!(
        is_write(&err, wrong_kind("stock", Kind::PnCounter)),
        "{err:?}"
    );

    let err = rejected(&mut s, &["item", "name"], |tx| {
        tx.increment("item", "apple", "name", 1)
    });
    assert!(is_write(&err, wrong_kind("name", Kind::Lww)), "{err:?}");
    let err = rejected(&mut s, &["item", "tags"], |tx| {
        tx.increment("item", "apple", "tags", 1)
    });
    assert!(is_write(&err, wrong_kind("tags", Kind::OrSet)), "{err:?}");
    let err = rejected(&mut s, &["item", "name"], |tx| {
        tx.add_to_set("item", "apple", "name", "x")
    });
    assert!(is_write(&err, wrong_kind("name", Kind::Lww)), "{err:?}");
    let err = rejected(&mut s, &["item", "stock"], |tx| {
        tx.remove_from_set("item", "apple", "stock", "x")
    });
    assert!(
        is_write(&err, wrong_kind("stock", Kind::PnCounter)),
        "{err:?}"
    );

    let bad_set = |e: &WriteError| matches!(e, WriteError::BadSetValue { table, column, .. } if table == "item" && column == "tags");
    for value in [
        Value::from("not json"),
        Value::from("[1, 2]"),
        Value::from(r#"{"a": 1}"#),
        Value::from(r#"["a", null]"#),
        Value::from(r#"["a""#),
        Value::Integer(3),
        Value::Null,
    ] {
        let err = rejected(&mut s, &["item", "tags"], |tx| {
            tx.set("item", "apple", "tags", value.clone())
        });
        assert!(is_write(&err, bad_set), "{value:?}: {err:?}");
    }
    let err = rejected(&mut s, &["item", "tags"], |tx| {
        tx.insert("item", &[("sku", "kiwi".into()), ("tags", "red".into())])
    });
    assert!(is_write(&err, bad_set), "{err:?}");
    Ok(())
}

/// Counters keep per-site u64 totals of increments and of decrements, so a
/// site may add `i64::MAX` twice; the third time its total would pass
/// `u64::MAX` and the write is refused.
#[test]
fn counter_overflow_is_refused_per_site_total() -> TestResult {
    // The sum SQL shows must stay an INTEGER: a write that would take it
    // outside i64 is refused (and so is one that would overflow a site's
    // u64 total, which cannot happen before the sum overflows).
    let mut s = shop()?;
    s.write(|tx| tx.insert("item", &[("sku", "big".into())]))?;
    s.write(|tx| tx.increment("item", "big", "stock", i64::MAX))?;
    let overflow = |column: &'static str| move |e: &WriteError| matches!(e, WriteError::CounterOverflow { table, column: c } if table == "item" && c == column);
    let err = rejected(&mut s, &["item", "stock"], |tx| {
        tx.increment("item", "big", "stock", 1)
    });
    assert!(is_write(&err, overflow("stock")), "{err:?}");
    // Decrements bring it back into range: MAX + MIN = -1.
    s.write(|tx| tx.increment("item", "big", "stock", i64::MIN))?;
    let err = rejected(&mut s, &["item", "stock"], |tx| {
        tx.increment("item", "big", "stock", i64::MIN)
    });
    assert!(is_write(&err, overflow("stock")), "{err:?}");
    assert_eq!(
        column(&s, "item", "big", "stock")?,
        Some(Value::Integer(-1))
    );

    s.write(|tx| tx.increment("item", "big", "sold", i64::MAX))?;
    let err = rejected(&mut s, &["item", "sold"], |tx| {
        tx.increment("item", "big", "sold", 2)
    });
    assert!(is_write(&err, overflow("sold")), "{err:?}");
    Ok(())
}

/// What SQL shows must be the counter's value: a write that takes the sum
/// beyond what an INTEGER holds should be refused, not shown clamped.
#[test]
fn a_counter_never_shows_a_clamped_value() -> TestResult {
    let mut s = shop()?;
    s.write(|tx| tx.insert("item", &[("sku", "big".into())]))?;
    s.write(|tx| tx.increment("item", "big", "stock", i64::MAX))?;
    let second = s.write(|tx| tx.increment("item", "big", "stock", 1));
    let shown = column(&s, "item", "big", "stock")?;
    // Today: Ok(()) and Some(Integer(i64::MAX)), though the sum is 2^63.
    assert!(
        second.is_err(),
        "the increment was accepted and SQL shows {shown:?} for a sum of 2^63"
    );
    Ok(())
}

// ---- changesets that cannot be applied ------------------------------------

/// A real changeset from another replica: apple (stock, sold, tags), pear,
/// and a deleted row.
fn real_changes() -> meldb::Result<Changeset> {
    let mut other = replica(&inventory(), 2, &ManualTime::new(T0))?;
    other.write(|tx| {
        tx.insert(
            "item",
            &[
                ("sku", "apple".into()),
                ("name", "Apple".into()),
                ("stock", 3.into()),
                ("sold", 2.into()),
                ("tags", r#"["green"]"#.into()),
            ],
        )?;
        tx.insert("item", &[("sku", "pear".into())])?;
        tx.insert("item", &[("sku", "gone".into())])?;
        tx.delete("item", "gone")
    })?;
    other.changes_since(&VersionVector::new())
}

/// Applies a changeset that must be refused; nothing may change.
fn refused(store: &mut Store, changes: &Changeset, needles: &[&str]) -> Error {
    let before = snapshot(store).expect("snapshot");
    let err = match store.apply(changes) {
        Err(e) => e,
        Ok(report) => panic!("applied ({report:?}); expected an error naming {needles:?}"),
    };
    assert_eq!(
        snapshot(store).expect("snapshot"),
        before,
        "{err}: left a trace"
    );
    assert_eq!(store.held_count().expect("held"), 0);
    // The same bytes through the codec give the same refusal.
    let again = store
        .apply_bytes(&codec::encode_changeset(changes))
        .expect_err("refused as bytes too");
    assert_eq!(again.to_string(), err.to_string());
    let message = err.to_string();
    for needle in needles {
        assert!(
            message.contains(needle),
            "message {message:?} does not name {needle:?}"
        );
    }
    err
}

fn row_mut<'c>(changes: &'c mut Changeset, sku: &str) -> &'c mut meldb::RowChange {
    changes.tables[0]
        .rows
        .iter_mut()
        .find(|r| r.key == [Value::from(sku)])
        .expect("row in changeset")
}

fn column_index(changes: &Changeset, name: &str) -> usize {
    changes.tables[0]
        .columns
        .iter()
        .position(|c| c == name)
        .expect("column in changeset")
}

#[test]
fn changesets_that_break_the_schema_are_refused_whole() -> TestResult {
    let mut s = shop()?;
    let good = real_changes()?;
    let origin = site(2).to_string();
    assert_eq!(good.tables[0].table, "item");

    let mut c = good.clone();
    c.tables[0].table = "nope".into();
    let err = refused(&mut s, &c, &["nope", &origin]);
    assert!(
        matches!(&err, Error::Apply(ApplyError::UnknownTable { table, .. }) if table == "nope"),
        "{err:?}"
    );

    let mut c = good.clone();
    c.tables[0].columns[0] = "colour".into();
    let err = refused(&mut s, &c, &["item", "colour"]);
    assert!(
        matches!(&err, Error::Apply(ApplyError::UnknownColumn { column, .. }) if column == "colour"),
        "{err:?}"
    );

    let mut c = good.clone();
    let tags = column_index(&c, "tags");
    c.tables[0].columns[tags] = "name".into();
    let err = refused(&mut s, &c, &["item", "name"]);
    assert!(
        matches!(&err, Error::Apply(ApplyError::DuplicateColumn { table, column, .. }) if table == "item" && column == "name"),
        "{err:?}"
    );

    // Column states of the wrong kind: stock and sold swapped.
    let mut c = good.clone();
    let (stock, sold) = (column_index(&c, "stock"), column_index(&c, "sold"));
    row_mut(&mut c, "apple").state.columns.swap(stock, sold);
    let err = refused(&mut s, &c, &["item", "apple"]);
    assert!(
        matches!(&err, Error::Apply(ApplyError::InvalidRow { table, key, .. }) if table == "item" && *key == Key::from("apple")),
        "{err:?}"
    );

    // A g_counter where a register belongs.
    let mut c = good.clone();
    let name = column_index(&c, "name");
    row_mut(&mut c, "apple").state.columns[name] = Some(ColumnState::GCounter(GCounter::default()));
    let err = refused(&mut s, &c, &["item", "apple"]);
    assert!(
        matches!(err, Error::Apply(ApplyError::InvalidRow { .. })),
        "{err:?}"
    );

    // Keys of the wrong arity and of the wrong type.
    let mut c = good.clone();
    row_mut(&mut c, "pear").key.push("extra".into());
    let err = refused(&mut s, &c, &["item", "pear"]);
    assert!(
        matches!(err, Error::Apply(ApplyError::InvalidRow { .. })),
        "{err:?}"
    );
    let mut c = good.clone();
    c.tables[0].rows[0].key = vec![Value::Integer(5)];
    let err = refused(&mut s, &c, &["item"]);
    assert!(
        matches!(err, Error::Apply(ApplyError::InvalidRow { .. })),
        "{err:?}"
    );

    // A register holding a value its column cannot (NULL in NOT NULL name).
    let mut c = good.clone();
    if let Some(ColumnState::Lww(lww)) = &mut row_mut(&mut c, "apple").state.columns[name] {
        lww.value = Value::Null;
    }
    let err = refused(&mut s, &c, &["item", "apple", "name"]);
    assert!(
        matches!(err, Error::Apply(ApplyError::InvalidRow { .. })),
        "{err:?}"
    );

    // A deleted row that carries column states.
    let mut c = good.clone();
    row_mut(&mut c, "apple").state.cl = 2;
    let err = refused(&mut s, &c, &["item", "apple"]);
    assert!(
        matches!(err, Error::Apply(ApplyError::InvalidRow { .. })),
        "{err:?}"
    );

    // An empty row clock, and a cover starting at 0.
    let mut c = good.clone();
    row_mut(&mut c, "pear").state.clock = meldb::crdt::RowClock::new();
    let err = refused(&mut s, &c, &["item", "pear"]);
    assert!(
        matches!(err, Error::Apply(ApplyError::InvalidRow { .. })),
        "{err:?}"
    );
    let mut c = good.clone();
    row_mut(&mut c, "pear").covers.push(Cover {
        site: site(2),
        first: 0,
        last: 3,
    });
    let err = refused(&mut s, &c, &["item", "pear"]);
    assert!(
        matches!(err, Error::Apply(ApplyError::InvalidRow { .. })),
        "{err:?}"
    );

    // Two rows claiming the same write (dot): the second one is refused.
    let mut c = good.clone();
    let mut twin = row_mut(&mut c, "pear").clone();
    twin.key = vec!["pear twin".into()];
    c.tables[0].rows.push(twin);
    let err = refused(&mut s, &c, &["item", "pear twin"]);
    assert!(
        matches!(err, Error::Apply(ApplyError::InvalidRow { .. })),
        "{err:?}"
    );

    // Only the last row is bad: the good rows before it are not applied either.
    let mut c = good.clone();
    let last = c.tables[0].rows.len() - 1;
    c.tables[0].rows[last].key.push("extra".into());
    refused(&mut s, &c, &["item"]);

    // And the untouched changeset applies.
    let report = s.apply(&good)?;
    assert_eq!(report.applied(), 3);
    assert_eq!(
        column(&s, "item", "apple", "stock")?,
        Some(Value::Integer(8))
    );
    Ok(())
}

/// A refused changeset must not move the clock either: a timestamp from a
/// changeset that was rejected must not stamp later local writes.
#[test]
fn a_refused_changeset_does_not_move_the_clock() -> TestResult {
    let time = ManualTime::new(T0);
    let mut s = replica(&inventory(), 1, &time)?;
    let ahead = ManualTime::new(T0 + 120_000); // two minutes: inside the drift bound
    let mut other = replica(&inventory(), 2, &ahead)?;
    other.write(|tx| {
        tx.insert("item", &[("sku", "apple".into())])?;
        tx.insert("item", &[("sku", "pear".into())])
    })?;
    let mut bad = other.changes_since(&VersionVector::new())?;
    let last = bad.tables[0].rows.len() - 1;
    bad.tables[0].rows[last].key.push("extra".into());
    let clock = s.clock();
    assert!(s.apply(&bad).is_err());
    assert_eq!(
        s.clock(),
        clock,
        "the refused changeset moved the clock to {}",
        s.clock()
    );
    Ok(())
}

type DecodeCheck = fn(&DecodeError) -> bool;

#[test]
fn bytes_that_are_not_a_frame_are_decode_errors() -> TestResult {
    let mut s = shop()?;
    let before = snapshot(&s)?;
    let good = codec::encode_changeset(&real_changes()?);

    let mut flipped = good.clone();
    let at = flipped.len() - 3;
    flipped[at] ^= 0x40;
    let mut newer = good.clone();
    newer[4] = 0xff;
    let garbage_payload = codec::frame(b"\xff\xff\xff\xff\xff\xff\xff\xff\xff garbage");
    let mut trailing = good.clone();
    trailing.push(0);
    let cases: Vec<(&str, Vec<u8>, DecodeCheck)> = vec![
        ("empty", vec![], |e| {
            matches!(e, DecodeError::Truncated { .. })
        }),
        (
            "text",
            b"hello, this is not a meldb frame at all!!!!!".to_vec(),
            |e| matches!(e, DecodeError::BadMagic { .. }),
        ),
        ("truncated", good[..good.len() - 1].to_vec(), |e| {
            matches!(e, DecodeError::Truncated { .. })
        }),
        ("flipped", flipped, |e| matches!(e, DecodeError::Checksum)),
        ("newer", newer, |e| {
            matches!(e, DecodeError::UnsupportedVersion { .. })
        }),
        ("garbage payload", garbage_payload, |e| {
            matches!(e, DecodeError::Malformed { .. })
        }),
        ("trailing", trailing, |e| {
            matches!(
                e,
                DecodeError::TrailingBytes { .. } | DecodeError::Truncated { .. }
            )
        }),
    ];
    for (what, bytes, check) in cases {
        match s.apply_bytes(&bytes) {
            Err(Error::Decode(e)) => assert!(check(&e), "{what}: {e:?}"),
            other => panic!("{what}: expected a decode error, got {other:?}"),
        }
        assert_eq!(snapshot(&s)?, before, "{what}: left a trace");
    }
    // The intact frame applies.
    assert_eq!(s.apply_bytes(&good)?.applied(), 3);
    Ok(())
}

/// A file that is SQLite but not meldb's is refused on open with an
/// `OpenError` that names it, and the file is left as it was.
#[test]
fn opening_a_database_that_is_not_meldb_is_an_open_error() -> meldb::Result<()> {
    let dir = tempfile::tempdir().map_err(|e| meldb::StorageError::Corrupt {
        what: "tempdir".into(),
        problem: e.to_string(),
    })?;
    let path = dir.path().join("other.db");
    {
        let conn = meldb::rusqlite::Connection::open(&path)?;
        conn.execute_batch(
            "CREATE TABLE meldb_meta (key TEXT PRIMARY KEY, value); \
             CREATE TABLE notes (body TEXT); INSERT INTO notes VALUES ('keep me');",
        )?;
    }
    let err = Store::open(&path, &common::inventory()).expect_err("not meldb's");
    assert!(
        matches!(&err, meldb::OpenError::NotMeldb { path: p, .. } if p.ends_with("other.db")),
        "{err}"
    );
    // The open error converts into the crate's error, so `?` works in a
    // function returning `meldb::Result`.
    let as_crate: meldb::Error = err.into();
    assert!(matches!(as_crate, meldb::Error::Open(_)), "{as_crate}");
    let conn = meldb::rusqlite::Connection::open(&path)?;
    let kept: String = conn.query_row("SELECT body FROM notes", [], |r| r.get(0))?;
    assert_eq!(kept, "keep me");
    Ok(())
}
