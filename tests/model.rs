//! The store against the reference model in `meldb::testing`.
//!
//! Random op sequences (decoded from random bytes with the fuzz targets'
//! decoder, with deletes followed by re-inserts of the same key mixed in
//! heavily) must be accepted or rejected alike by the store and the model,
//! and leave the same rows in every table after every step, in single-op
//! transactions and in multi-op ones that commit or roll back. A full export
//! must rebuild the same state in a fresh replica, whole or in pieces.
//!
//! `MELDB_PROPTEST_CASES=N` raises the number of cases per property
//! (default 64, a few seconds in all).

use meldb::testing::{
    check_ops_bytes, export_to_fresh, fixed_store, op_from_bytes, reinsert_from_bytes, run_op,
    same_rows, sql_rows, Harness, Model, Op, Rejection,
};
use meldb::{Schema, Value, VersionVector};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

fn cases() -> u32 {
    std::env::var("MELDB_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64)
}

/// One step: a decoded op (three times in four) or a delete and re-insert
/// of one key.
fn step() -> impl Strategy<Value = Vec<Op>> {
    prop_oneof![
        3 => vec(any::<u8>(), 1..12)
            .prop_map(|bytes| op_from_bytes(&mut bytes.as_slice()).into_iter().collect()),
        1 => vec(any::<u8>(), 1..10).prop_map(|bytes| {
            reinsert_from_bytes(&mut bytes.as_slice()).map_or_else(Vec::new, Vec::from)
        }),
    ]
}

fn ops(max_steps: usize) -> impl Strategy<Value = Vec<Op>> {
    vec(step(), 1..max_steps).prop_map(|steps| steps.into_iter().flatten().collect())
}

fn run_all(ops: &[Op]) -> Result<Harness, TestCaseError> {
    let mut h = Harness::new().map_err(TestCaseError::fail)?;
    for op in ops {
        h.step(op).map_err(TestCaseError::fail)?;
    }
    Ok(h)
}

proptest! {
    #![proptest_config(ProptestConfig {
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("proptest-regressions"))),
        ..ProptestConfig::with_cases(cases())
    })]

    #[test]
    fn store_matches_model_after_every_op(ops in ops(80)) {
        let h = run_all(&ops)?;
        prop_assert_eq!(h.steps(), ops.len());
    }

    #[test]
    fn transactions_commit_or_roll_back_like_the_model(
        batches in vec((ops(5), any::<bool>()), 1..20),
    ) {
        let mut h = Harness::new().map_err(TestCaseError::fail)?;
        for (ops, commit) in &batches {
            h.batch(ops, *commit).map_err(TestCaseError::fail)?;
        }
    }

    #[test]
    fn full_export_rebuilds_the_same_state(ops in ops(60), max_rows in 1usize..4) {
        let h = run_all(&ops)?;
        let copy = export_to_fresh(&h.store).map_err(TestCaseError::fail)?;

        // The same export cut into pieces and applied last piece first.
        let changes = h.store.changes_since(&VersionVector::new())?;
        let mut pieces = fixed_store(0xDD)?;
        for piece in changes.split(max_rows).iter().rev() {
            pieces.apply(piece)?;
        }
        prop_assert_eq!(pieces.digest()?, h.store.digest()?);

        for table in ["item", "location"] {
            let want = h.model.rows(table);
            prop_assert!(same_rows(&sql_rows(&copy, table)?, &want), "{table} in the copy");
            prop_assert!(same_rows(&sql_rows(&pieces, table)?, &want), "{table} from pieces");
        }
        // Nothing left to send to a replica that has everything.
        prop_assert!(h.store.changes_since(&copy.version_vector())?.is_empty());
    }

    #[test]
    fn fuzz_body_holds_on_random_bytes(data in vec(any::<u8>(), 0..200)) {
        check_ops_bytes(&data).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn every_nonempty_input_decodes_and_is_consumed(data in vec(any::<u8>(), 1..64)) {
        let mut rest = data.as_slice();
        let mut n = 0;
        while !rest.is_empty() {
            let before = rest.len();
            prop_assert!(op_from_bytes(&mut rest).is_some());
            prop_assert!(rest.len() < before);
            n += 1;
        }
        prop_assert!(n >= 1);
        prop_assert!(op_from_bytes(&mut rest).is_none());
    }
}

fn key(parts: &[&str]) -> Vec<Value> {
    parts.iter().map(|&p| p.into()).collect()
}

fn vals(pairs: &[(&str, Value)]) -> Vec<(String, Value)> {
    pairs
        .iter()
        .map(|(n, v)| ((*n).to_owned(), v.clone()))
        .collect()
}

fn insert(table: &str, k: &[&str], values: &[(&str, Value)]) -> Op {
    Op::Insert {
        table: table.into(),
        key: key(k),
        values: vals(values),
    }
}

fn upsert(table: &str, k: &[&str], values: &[(&str, Value)]) -> Op {
    Op::Upsert {
        table: table.into(),
        key: key(k),
        values: vals(values),
    }
}

fn update(table: &str, k: &[&str], values: &[(&str, Value)]) -> Op {
    Op::Update {
        table: table.into(),
        key: key(k),
        values: vals(values),
    }
}

fn increment(table: &str, k: &[&str], column: &str, amount: i64) -> Op {
    Op::Increment {
        table: table.into(),
        key: key(k),
        column: column.into(),
        amount,
    }
}

fn delete(table: &str, k: &[&str]) -> Op {
    Op::Delete {
        table: table.into(),
        key: key(k),
    }
}

/// Runs each op on both sides; the model's verdict must be the expected
/// one (and the harness checks that the store's is the same).
fn expect_verdicts(h: &mut Harness, cases: &[(Op, Option<Rejection>)]) -> Result<(), String> {
    for (op, expected) in cases {
        let verdict = h.model.clone().apply(op).err().map(|e| e.rejection);
        if verdict != *expected {
            return Err(format!(
                "{op:?}: model says {verdict:?}, expected {expected:?}"
            ));
        }
        h.step(op)?;
    }
    Ok(())
}

#[test]
fn documented_rejections_agree() -> Result<(), String> {
    use Rejection::*;
    let mut h = Harness::new()?;
    expect_verdicts(
        &mut h,
        &[
            (insert("item", &["k0"], &[("name", "pear".into())]), None),
            (insert("item", &["k0"], &[]), Some(RowExists)),
            (
                upsert("item", &["k0"], &[("stock", 1.into())]),
                Some(WrongKind),
            ),
            // Refused even when the row is new: an upsert never assigns counters.
            (
                upsert("item", &["k9"], &[("stock", 1.into())]),
                Some(WrongKind),
            ),
            (
                update("item", &["k0"], &[("sold", 1.into())]),
                Some(WrongKind),
            ),
            (
                increment("item", &["k0"], "sold", -1),
                Some(NegativeIncrement),
            ),
            (
                insert("item", &["k1"], &[("sold", (-1).into())]),
                Some(NegativeIncrement),
            ),
            (
                insert("item", &["k1"], &[("stock", "2".into())]),
                Some(TypeMismatch),
            ),
            (
                update("item", &["k0"], &[("name", Value::Null)]),
                Some(NullNotAllowed),
            ),
            (update("item", &["k0"], &[("price", Value::Null)]), None),
            (
                update("item", &["k0"], &[("price", f64::NAN.into())]),
                Some(NotANumber),
            ),
            (
                update("item", &["k0"], &[("price", "one".into())]),
                Some(TypeMismatch),
            ),
            // An integer in a REAL column is stored as a real, as in SQLite.
            (update("item", &["k0"], &[("price", 1.into())]), None),
            (update("item", &["k0"], &[("price", (-0.0).into())]), None),
            (
                update("item", &["k0"], &[("sku", "k5".into())]),
                Some(KeyUpdate),
            ),
            (
                update("item", &["k0"], &[("colour", "red".into())]),
                Some(UnknownColumn),
            ),
            (
                update(
                    "item",
                    &["k0"],
                    &[("name", "a".into()), ("name", "b".into())],
                ),
                Some(DuplicateColumn),
            ),
            (
                insert("item", &["k1"], &[("sku", "k1".into())]),
                Some(DuplicateColumn),
            ),
            (
                update("item", &["k0"], &[("tags", "not json".into())]),
                Some(BadSetValue),
            ),
            (
                update("item", &["k0"], &[("tags", 3.into())]),
                Some(BadSetValue),
            ),
            (
                update("item", &["k0"], &[("tags", r#"["b","a","b"]"#.into())]),
                None,
            ),
            (increment("item", &["k0"], "tags", 1), Some(WrongKind)),
            (increment("item", &["k0"], "stock", 0), None),
            (increment("item", &["k8"], "stock", 0), Some(RowNotFound)),
            (
                increment("location", &["w0"], "quantity", 1),
                Some(KeyArity),
            ),
            (delete("shipment", &["k0"]), Some(UnknownTable)),
            (delete("item", &["k0"]), None),
            (delete("item", &["k0"]), Some(RowNotFound)),
            (update("item", &["k0"], &[]), Some(RowNotFound)),
            (increment("item", &["k0"], "stock", 0), Some(RowNotFound)),
            (insert("item", &["k0"], &[("stock", 5.into())]), None),
            (increment("item", &["k0"], "stock", i64::MAX - 5), None),
            (
                increment("item", &["k0"], "stock", i64::MAX),
                Some(CounterOverflow),
            ),
            (increment("item", &["k0"], "stock", i64::MIN), None),
        ],
    )?;
    // The re-inserted row starts fresh: default name, price and set, only
    // the new counter amounts. Stock is 5 + (2^63 - 6) - 2^63 = -1.
    let want = vec![
        Value::from("k0"),
        Value::from(""),
        Value::Real(0.0),
        Value::Integer(-1),
        Value::Integer(0),
        Value::from("[]"),
    ];
    let got = h.model.row("item", &key(&["k0"]));
    if got.as_ref() != Some(&want) {
        return Err(format!("re-inserted row is {got:?}, expected {want:?}"));
    }
    h.check_export()
}

#[test]
fn counter_sums_stay_within_64_bits() -> Result<(), String> {
    let mut h = Harness::new()?;
    expect_verdicts(
        &mut h,
        &[
            (insert("item", &["k0"], &[("sold", i64::MAX.into())]), None),
            // The sum SQL shows must stay an INTEGER: one more is refused.
            (
                increment("item", &["k0"], "sold", 1),
                Some(Rejection::CounterOverflow),
            ),
            (insert("item", &["k1"], &[("stock", i64::MIN.into())]), None),
            (
                increment("item", &["k1"], "stock", -1),
                Some(Rejection::CounterOverflow),
            ),
            (increment("item", &["k1"], "stock", i64::MAX), None),
        ],
    )?;
    let sold = h.model.row("item", &key(&["k0"])).map(|row| row[4].clone());
    if sold != Some(Value::Integer(i64::MAX)) {
        return Err(format!("sold shows {sold:?}"));
    }
    let stock = h.model.row("item", &key(&["k1"])).map(|row| row[3].clone());
    if stock != Some(Value::Integer(-1)) {
        return Err(format!("stock shows {stock:?}"));
    }
    Ok(())
}

/// The inventory schema has no NOT NULL column without a default, so the
/// MissingValue rule is checked on a schema that has one.
#[test]
fn required_columns_are_checked_before_existence() -> Result<(), Box<dyn std::error::Error>> {
    let schema = Schema::from_toml_str(
        r#"
        name = "notes"
        version = 1
        [[table]]
        name = "note"
        primary_key = ["id"]
        [[table.column]]
        name = "id"
        type = "text"
        [[table.column]]
        name = "body"
        type = "text"
        nullable = false
        [[table.column]]
        name = "reads"
        type = "integer"
        kind = "pn_counter"
        "#,
        "notes.toml",
    )?;
    let mut store = meldb::Store::open_in_memory(&schema)?;
    let mut model = Model::new(&schema);
    let cases = [
        (insert("note", &["n"], &[]), Some(Rejection::MissingValue)),
        (insert("note", &["n"], &[("body", "hi".into())]), None),
        // The insert of an existing key misses `body` first.
        (
            insert("note", &["n"], &[("reads", 1.into())]),
            Some(Rejection::MissingValue),
        ),
        (
            insert("note", &["n"], &[("body", "again".into())]),
            Some(Rejection::RowExists),
        ),
        (upsert("note", &["n"], &[]), None),
        (upsert("note", &["m"], &[]), Some(Rejection::MissingValue)),
        (delete("note", &["n"]), None),
        (upsert("note", &["n"], &[]), Some(Rejection::MissingValue)),
    ];
    for (op, expected) in &cases {
        let verdict = model.apply(op).err().map(|e| e.rejection);
        assert_eq!(verdict, *expected, "model on {op:?}");
        let store_verdict = run_op(&mut store, op)
            .err()
            .map(|e| meldb::testing::rejection_of(&e));
        assert_eq!(store_verdict, expected.map(Some), "store on {op:?}");
        assert!(same_rows(&sql_rows(&store, "note")?, &model.rows("note")));
    }
    Ok(())
}

/// The decoder's domains are small enough that random bytes reach every
/// kind of op both accepted and rejected, and nearly every rejection.
#[test]
fn random_bytes_reach_every_outcome() -> Result<(), String> {
    use std::collections::BTreeMap;
    // A fixed xorshift stream: deterministic, no test-only dependency.
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let bytes: Vec<u8> = (0..40_000)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect();
    let mut h = Harness::new()?;
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    let mut rest = bytes.as_slice();
    while let Some(op) = op_from_bytes(&mut rest) {
        let kind = format!("{op:?}");
        let kind = kind
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_owned();
        let verdict = match h.model.clone().apply(&op) {
            Ok(()) => format!("{kind} ok"),
            Err(e) => format!("{:?}", e.rejection),
        };
        *outcomes.entry(verdict).or_default() += 1;
        h.step(&op)?;
    }
    let expected = [
        "Insert ok",
        "Upsert ok",
        "Update ok",
        "Increment ok",
        "AddToSet ok",
        "RemoveFromSet ok",
        "Delete ok",
        "UnknownTable",
        "UnknownColumn",
        "TypeMismatch",
        "NullNotAllowed",
        "NotANumber",
        "KeyArity",
        "DuplicateColumn",
        "RowExists",
        "RowNotFound",
        "KeyUpdate",
        "WrongKind",
        "NegativeIncrement",
        "CounterOverflow",
        "BadSetValue",
    ];
    let missing: Vec<&str> = expected
        .into_iter()
        .filter(|o| !outcomes.contains_key(*o))
        .collect();
    if !missing.is_empty() {
        return Err(format!("never reached: {missing:?}; reached: {outcomes:?}"));
    }
    println!("{outcomes:?}");
    Ok(())
}
